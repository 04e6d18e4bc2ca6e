"""``make demo``: the repo's main job on built-in data, on a CPU in a few minutes.

1. Writes a synthetic AgeDB-DIR (``python -m common.synthetic agedb``: the real training-label histogram,
   scaled down to ``--n`` images of 32×32 px) into ``demo/agedb-dir/data``.
2. Trains a vanilla model and a ConR model on it with ``agedb-dir/train.py`` (a narrow ResNet-18 with the
   small-image stem, 10 epochs).
3. Prints the README's table (MAE per shot, MSE and G-Mean overall, training seconds) and writes the per-label
   error plot ``demo/report.png``; ``python -m common.tools.report`` of the two runs shows every metric.

The shot thresholds (100 / 20 training images on the real data) are scaled with the data size, so that the
Many/Medium/Few groups cover the same ages as on the real benchmark.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.tools import report
from common.synthetic import AGEDB_TRAIN_COUNTS, write_synthetic

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    from common.cli import Parser

    parser = Parser(__doc__, prog="python -m common.tools.demo", formatter_class=Parser.RawFormatter)
    parser.add_argument("--out", default=str(ROOT / "demo"), help="folder for the data, the runs and the plot")
    parser.add_argument("--n", type=int, default=4000, help="synthetic training images")
    parser.add_argument("--epoch", type=int, default=10, help="training epochs of each run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of both runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data_dir = out / "agedb-dir" / "data"
    if not (data_dir / "agedb.csv").is_file():
        write_synthetic("agedb", data_dir, n=args.n, img_size=32, seed=args.seed)
    scale = args.n / sum(AGEDB_TRAIN_COUNTS.values())
    common_flags = ["--data_dir", str(data_dir), "--store_root", str(out / "runs"),
                    "--model", "resnet18", "--width", "8", "--stem", "cifar", "--img_size", "32",
                    "--batch_size", "64", "--lr", "2e-3", "--epoch", str(args.epoch),
                    "--schedule", str(int(args.epoch * 0.8)),
                    "--workers", "2", "--seed", str(args.seed), "--print_freq", "20",
                    "--many_shot_thr", str(round(100 * scale)), "--low_shot_thr", str(round(20 * scale))]
    runs = {"vanilla": [], "conr": ["--conr", "-w", "1", "--beta", "4", "-e", "0.01"]}
    for name, flags in runs.items():
        print(f"\n=== training {name} ===", flush=True)
        subprocess.run([sys.executable, str(ROOT / "agedb-dir" / "train.py"), *common_flags,
                        "--store_name", name, "--overwrite", name, *flags], check=True, cwd=ROOT / "agedb-dir")
    results = [report.load_run(out / "runs" / name) for name in runs]
    print("\nTest metrics on the synthetic AgeDB-DIR (shot thresholds scaled to "
          f"{round(100 * scale)} / {round(20 * scale)} training images):\n")
    print(summary_table(results))
    report.plot(results, out / "report.png")
    folders = " ".join(str(out / "runs" / name) for name in runs)
    print(f"\nplot: {out / 'report.png'}\nevery metric (balanced, SERA, per shot): python -m common.tools.report "
          f"{folders}")


def summary_table(runs: list[dict]) -> str:
    """The README's table: MAE per shot, MSE and G-Mean over all test images, and what each run cost."""
    header = ["run", "MAE all", "MAE many", "MAE medium", "MAE few", "MSE all", "G-Mean all", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for run in runs:
        test, cost = run["test"], run.get("cost") or {}
        cells = [run["name"]] + [f"{test[shot]['l1']:.3f}" for shot in ("all", "many", "medium", "few")]
        cells += [f"{test['all']['mse']:.3f}", f"{test['all']['gmean']:.3f}",
                  f"{cost['wall_seconds']:.0f}" if cost.get("wall_seconds") else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
