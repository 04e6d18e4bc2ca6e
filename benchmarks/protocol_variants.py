"""Faster protocol variants against the references' protocol, on synthetic AgeDB-DIR, several seeds.

    python benchmarks/protocol_variants.py [--out /tmp/variants] [--seeds 0 1 2] [--n 3000] [--epoch 8] [--fresh]

Pairs of runs that differ in one switch, each with every seed (the demo's model: a width-8 ResNet-18 on 32-px
images, batch 64, lr 2e-3):

* ConR with three forward passes per image (the references) against ``--conr_views 2``;
* FDS + SRL with the statistics pass after each epoch (the references) against ``--stats_from_training``;
* float32 against ``--amp bf16``.

Prints, per variant, the mean ± standard deviation over seeds of the test MAE (all and few-shot) and of the wall
seconds per run and per training step, and writes every run to ``benchmarks/results/protocol_variants.json``.
The runs are a ``common.tools.sweep`` grid under ``--out``/runs (folders ``<pair>_<variant>_seed<k>``): a run
finished there before is read, not trained again (its seconds are those the sweep recorded), a half-finished one
resumes; ``--fresh`` trains every run again, as timing comparisons want.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

from common import runtime
from common.tools import sweep

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {
    "ConR views": {"3 passes (reference)": ["--conr"], "--conr_views 2": ["--conr", "--conr_views", "2"]},
    "FDS/SRL statistics": {"second pass (reference)": ["--fds", "--srl"],
                           "--stats_from_training": ["--fds", "--srl", "--stats_from_training"]},
    "precision": {"float32": [], "--amp bf16": ["--amp", "bf16"]},
}


def setting(pair: str, variant: str) -> str:
    """The sweep's name of a variant (its run folders are ``<name>_seed<k>``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "", f"{pair}_{variant}".replace(" ", ""))


def run(job) -> dict:
    """Train (or read, finished) one run of the sweep; its seconds, training steps and test MAE."""
    try:
        record = sweep.run_job(job)
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None
    log = (job.run_dir / "training.log").read_text()
    steps = sum(int(m) for m in re.findall(r"epoch \d+ \[(\d+)/\d+\]", log) if m)  # last line of each epoch
    test = json.loads((job.run_dir / "results.json").read_text())["test"]
    return {"seconds": sweep.wall_seconds(record), "steps": steps, "mae_all": test["all"]["l1"],
            "mae_few": test["few"]["l1"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/variants")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epoch", type=int, default=8)
    parser.add_argument("--fresh", action="store_true", help="train every run again, also those finished in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    if not (data / "agedb.csv").is_file():
        subprocess.run([sys.executable, "-m", "common.synthetic", "agedb", "--out", str(data), "--n", str(args.n),
                        "--img_size", "32", "--seed", "0"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    common = ["--data_dir", str(data), "--model", "resnet18", "--width", "8", "--stem", "cifar", "--img_size", "32",
              "--batch_size", "64", "--lr", "2e-3", "--epoch", str(args.epoch), "--schedule", str(int(args.epoch * 0.8)),
              "--workers", "2", "--print_freq", "1000", "--many_shot_thr", "25", "--low_shot_thr", "5"]
    keys = {setting(pair, variant): f"{pair} | {variant}" for pair, variants in PAIRS.items() for variant in variants}
    grid = {setting(pair, variant): flags for pair, variants in PAIRS.items() for variant, flags in variants.items()}
    jobs = sweep.plan("agedb-dir", grid, args.seeds, common, out / "runs", fresh=args.fresh)
    # Each variant's seeds one after another, as before: a partial benchmark has whole variants.
    results = {}
    for name, key in keys.items():
        results[key] = [run(job) for job in jobs if job.name == name]
        print(key, results[key], flush=True)
    runtime.write_json({"command": "python benchmarks/protocol_variants.py " + " ".join(argv or sys.argv[1:]),
                        "seeds": args.seeds, "n": args.n, "epoch": args.epoch, "runs": results},
                       ROOT / "benchmarks" / "results" / "protocol_variants.json")      # atomic, folder made
    def stat(values, f):    # runs the sweep did not time (finished elsewhere) have no seconds
        values = [v for v in values if v is not None]
        if not values:
            return "—"
        return f"{f.format(statistics.mean(values))} ± {f.format(statistics.stdev(values))}" if len(values) > 1 \
            else f.format(values[0])

    print("\n| comparison | variant | MAE all | MAE few | s / run | ms / step |")
    print("|---|---|---:|---:|---:|---:|")
    for key, runs in results.items():
        pair, variant = key.split(" | ")
        print(f"| {pair} | {variant} | {stat([r['mae_all'] for r in runs], '{:.3f}')} | "
              f"{stat([r['mae_few'] for r in runs], '{:.3f}')} | {stat([r['seconds'] for r in runs], '{:.0f}')} | "
              f"{stat([1000 * r['seconds'] / r['steps'] for r in runs if r['seconds'] is not None], '{:.0f}')} |")


if __name__ == "__main__":
    main()
