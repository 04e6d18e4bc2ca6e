"""Faster protocol variants against the references' protocol, on synthetic AgeDB-DIR, several seeds.

    python benchmarks/protocol_variants.py [--out /tmp/variants] [--seeds 0 1 2] [--n 3000] [--epoch 8]

Pairs of runs that differ in one switch, each with every seed (the demo's model: a width-8 ResNet-18 on 32-px
images, batch 64, lr 2e-3):

* ConR with three forward passes per image (the references) against ``--conr_views 2``;
* FDS + SRL with the statistics pass after each epoch (the references) against ``--stats_from_training``;
* float32 against ``--amp bf16``.

Prints, per variant, the mean ± standard deviation over seeds of the test MAE (all and few-shot) and of the wall
seconds per run and per training step, and writes every run to ``benchmarks/results/protocol_variants.json``.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {
    "ConR views": {"3 passes (reference)": ["--conr"], "--conr_views 2": ["--conr", "--conr_views", "2"]},
    "FDS/SRL statistics": {"second pass (reference)": ["--fds", "--srl"],
                           "--stats_from_training": ["--fds", "--srl", "--stats_from_training"]},
    "precision": {"float32": [], "--amp bf16": ["--amp", "bf16"]},
}


def run(data, out, name, flags, seed, epoch):
    common = ["--data_dir", str(data), "--store_root", str(out), "--store_name", name, "--overwrite", "--model",
              "resnet18", "--width", "8", "--stem", "cifar", "--img_size", "32", "--batch_size", "64", "--lr", "2e-3",
              "--epoch", str(epoch), "--schedule", str(int(epoch * 0.8)), "--workers", "2", "--seed", str(seed),
              "--print_freq", "1000", "--many_shot_thr", "25", "--low_shot_thr", "5"]
    start = time.time()
    subprocess.run([sys.executable, "train.py", *common, *flags], cwd=ROOT / "agedb-dir", check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.time() - start
    log = (out / name / "training.log").read_text()
    steps = sum(int(m) for m in re.findall(r"epoch \d+ \[(\d+)/\d+\]", log) if m)  # last line of each epoch
    test = json.loads((out / name / "results.json").read_text())["test"]
    return {"seconds": seconds, "steps": steps, "mae_all": test["all"]["l1"], "mae_few": test["few"]["l1"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/variants")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epoch", type=int, default=8)
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    if not (data / "agedb.csv").is_file():
        subprocess.run([sys.executable, "-m", "common.synthetic", "agedb", "--out", str(data), "--n", str(args.n),
                        "--img_size", "32", "--seed", "0"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    results = {}
    for pair, variants in PAIRS.items():
        for variant, flags in variants.items():
            key = f"{pair} | {variant}"
            results[key] = [run(data, out / "runs", f"{pair}_{variant}_{seed}".replace(" ", "").replace("/", ""),
                                flags, seed, args.epoch) for seed in args.seeds]
            print(key, results[key], flush=True)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "protocol_variants.json").write_text(json.dumps(
        {"command": "python benchmarks/protocol_variants.py " + " ".join(argv or sys.argv[1:]), "seeds": args.seeds,
         "n": args.n, "epoch": args.epoch, "runs": results}, indent=1))
    stat = lambda values, f: f"{f.format(statistics.mean(values))} ± {f.format(statistics.stdev(values))}" \
        if len(values) > 1 else f.format(values[0])
    print("\n| comparison | variant | MAE all | MAE few | s / run | ms / step |")
    print("|---|---|---:|---:|---:|---:|")
    for key, runs in results.items():
        pair, variant = key.split(" | ")
        print(f"| {pair} | {variant} | {stat([r['mae_all'] for r in runs], '{:.3f}')} | "
              f"{stat([r['mae_few'] for r in runs], '{:.3f}')} | {stat([r['seconds'] for r in runs], '{:.0f}')} | "
              f"{stat([1000 * r['seconds'] / r['steps'] for r in runs], '{:.0f}')} |")


if __name__ == "__main__":
    main()
