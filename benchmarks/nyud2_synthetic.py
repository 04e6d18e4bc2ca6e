"""A short NYUD2-DIR run on synthetic data: vanilla vs LDS+FDS vs ConR, one table (nyud2-dir/README.md).

    python benchmarks/nyud2_synthetic.py [--out /tmp/nyud2_bench] [--epochs 8] [--n 240] [--seed 0] [--fresh]

Writes a synthetic NYUD2 (80×60 images, 76×56 crops), trains each configuration with nyud2-dir/train.py
(ResNet-18 encoder from scratch, Adam 5e-4, batch 16, selection on the 15 % held-out training scenes), and
prints the test RMSE and δ1 per shot with the wall time of each run. The shot thresholds are the benchmark's fractions of the
training pixels; on this small data some shots can be empty (shown as —). The runs are a ``common.tools.sweep``
grid under ``--out``/runs (folders ``<run>_seed<k>``): one finished there before is read, not trained again (its
time is the one the sweep recorded), a half-finished one resumes; ``--fresh`` trains every run again.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common.tools import sweep

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"vanilla": [], "LDS + FDS": ["--reweight", "inverse", "--lds", "--fds"],
        "ConR": ["--conr", "-w", "0.2", "--beta", "0.2", "-e", "0.2"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/nyud2_bench")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="train every run again, also those finished in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    if not (data / "nyu2_train.csv").is_file():
        subprocess.run([sys.executable, "-m", "common.synthetic", "nyud2", "--out", str(data), "--n", str(args.n),
                        "--seed", str(args.seed)], check=True, cwd=ROOT)
    common = ["--data_dir", str(data), "--scale", "60", "--crop", "76", "56", "--encoder", "resnet18",
              "--pretrained_encoder", "none", "--batch_size", "16", "--lr", "5e-4", "--val_fraction", "0.15",
              "--epochs", str(args.epochs), "--workers", "2", "--print_freq", "50"]
    names = {name.replace(" ", "").replace("+", "_"): name for name in RUNS}
    jobs = sweep.plan("nyud2-dir", {slug: RUNS[name] for slug, name in names.items()}, [args.seed], common,
                      out / "runs", fresh=args.fresh)
    rows = []
    for job in jobs:
        try:
            seconds = sweep.wall_seconds(sweep.run_job(job))
        except RuntimeError as error:
            raise SystemExit(f"error: {error}") from None
        test = json.loads((job.run_dir / "results.json").read_text())["test"]
        rows.append((names[job.name], RUNS[names[job.name]], test, seconds))
    fmt = lambda v: "—" if v != v else f"{v:.3f}"
    print("| run | flags | RMSE all | many | medium | few | δ1 all | many | medium | few | time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, flags, test, seconds in rows:
        cells = [fmt(test[s]["rmse"]) for s in ("all", "many", "medium", "few")]
        cells += [fmt(test[s]["delta1"]) for s in ("all", "many", "medium", "few")]
        time = "—" if seconds is None else f"{seconds:.0f} s"
        print(f"| {name} | `{' '.join(flags) or '(none)'}` | " + " | ".join(cells) + f" | {time} |")


if __name__ == "__main__":
    main()
