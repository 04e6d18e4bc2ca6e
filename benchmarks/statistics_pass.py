"""The epoch-end statistics pass of FDS, VIR and SRL as a share of the training epoch, with the references' second
pass over the training set and with ``--stats_from_training`` (the epoch's own training features).

    python benchmarks/statistics_pass.py [--device cpu|cuda] [--n 2000] [--img_size 32] [--model resnet18]
                                         [--width 8] [--batch_size 64] [--epochs 3] [--workers 1]
                                         [--methods FDS VIR SRL]

Each row is a short AgeDB-DIR run on synthetic data (``python -m common.synthetic agedb``) through ``train.py``;
the trainer measures the time of its training epochs (steps, their data loading and the statistics passes, not
validation) and, of it, the statistics passes (``results.json``'s ``cost.statistics_share``; on CUDA the device is
synchronised once at each pass's end, so the pass's own work is counted). The table gives that share and each
run's training seconds per epoch against vanilla's, all measured in the one invocation.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

#: row label: the method's flags at its AgeDB-DIR defaults (VIR with its re-weighting, LDS and FDS, as its README).
METHODS = {
    "vanilla": [],
    "FDS": ["--fds"],
    "VIR": ["--vir", "--reweight", "sqrt_inv", "--lds", "--fds"],
    "SRL": ["--srl"],
}


def run(data: Path, store: Path, name: str, flags: list[str], args) -> dict:
    """One run of ``agedb-dir/train.py``; its ``results.json``'s cost."""
    command = [sys.executable, "train.py", "--data_dir", str(data), "--store_root", str(store), "--store_name", name,
               "--device", args.device, "--model", args.model, "--width", str(args.width), "--stem", "cifar",
               "--img_size", str(args.img_size), "--batch_size", str(args.batch_size), "--epoch", str(args.epochs),
               "--workers", str(args.workers), "--print_freq", "100000", "--many_shot_thr", "17",
               "--low_shot_thr", "4", *flags]
    done = subprocess.run(command, cwd=ROOT / "agedb-dir", capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"statistics_pass: the {name} run failed:\n{done.stderr[-2000:]}")
    return json.loads((store / name / "results.json").read_text())["cost"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=2000, help="synthetic training images")
    parser.add_argument("--img_size", type=int, default=32)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=int, default=8, help="the ResNet's first width (64: the standard one)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--methods", nargs="+", choices=[m for m in METHODS if m != "vanilla"],
                        default=[m for m in METHODS if m != "vanilla"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data, store = Path(tmp) / "data", Path(tmp) / "runs"
        subprocess.run([sys.executable, "-m", "common.synthetic", "agedb", "--out", str(data), "--n", str(args.n),
                        "--img_size", str(args.img_size), "--seed", "0"], cwd=ROOT, check=True,
                       capture_output=True)
        rows = []
        vanilla = run(data, store, "vanilla", [], args)["wall_seconds"] / args.epochs
        for label in args.methods:
            flags = METHODS[label]
            for collect, extra in (("second pass", []), ("--stats_from_training", ["--stats_from_training"])):
                cost = run(data, store, f"{label}_{len(extra)}", flags + extra, args)
                per_epoch = cost["wall_seconds"] / args.epochs
                rows.append((label, collect, 100 * cost["statistics_share"], per_epoch, per_epoch / vanilla))
    print(f"# {args.device} ({platform.processor() or platform.machine()}; torch {torch.__version__}), synthetic "
          f"AgeDB-DIR {args.n} images of {args.img_size} px, {args.model} width {args.width}, batch "
          f"{args.batch_size}, {args.epochs} epochs, {args.workers} loader process(es)")
    print("| method | statistics from | statistics share of the epoch | s / epoch | epoch vs vanilla |")
    print("|---|---|---:|---:|---:|")
    print(f"| vanilla | — | — | {vanilla:.2f} | 1.00× |")
    for label, collect, share, per_epoch, ratio in rows:
        print(f"| {label} | {collect} | {share:.1f} % | {per_epoch:.2f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
