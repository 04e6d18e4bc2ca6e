"""common/tools/report.py on hand-written run folders: figure titles and axes per benchmark, the calibration
axes over the data's σ range, correlations of fewer than three samples as n/a, and the compute-cost columns."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from common.bins import DEPTH_BINS, STSB_BINS  # noqa: E402
from common.metrics import correlation_shot_metrics, correlation_table  # noqa: E402
from common.tools import report  # noqa: E402

SHOTS = ("all", "many", "medium", "few")


def write_run(folder: Path, name: str, test: dict, args: dict, predictions: dict | None = None,
              cost: dict | None = None, **extra) -> Path:
    run = folder / name
    run.mkdir(parents=True)
    results = {"val": test, "test": test, "epoch": 1, "step": 1, "args": args, **extra}
    if cost is not None:
        results["cost"] = cost
    (run / "results.json").write_text(json.dumps(results))
    np.savez(run / "test_predictions.npz", **(age_predictions() if predictions is None else predictions))
    return run


def age_metrics(l1: float = 2.0, count: int = 4) -> dict:
    return {s: {"l1": l1, "mse": l1 * l1, "gmean": 1.0, "count": count} for s in SHOTS}


def age_predictions(sigma=None) -> dict:
    labels = np.array([20.0, 30.0, 30.0, 40.0, 60.0])
    out = {"preds": labels + np.array([1.0, -2.0, 2.0, 3.0, -5.0]), "labels": labels,
           "train_labels": np.array([20.0] * 30 + [30.0] * 120 + [40.0] * 25 + [60.0] * 2),
           "many_shot_thr": 100, "low_shot_thr": 20}
    if sigma is not None:
        out["sigma"] = sigma
    return out


def load(path: Path) -> dict:
    return report.load_run(path)


# ----------------------------------------------------------------------------- titles and axes

def test_age_figure_names_agedb_the_test_split_and_age(tmp_path):
    run = load(write_run(tmp_path, "vanilla", age_metrics(), {"dataset": "agedb", "seed": 0}, age_predictions()))
    assert report.benchmark_of(run) == "agedb-dir"
    fig = report.per_label_figure([run])
    ax = fig.axes[0]
    assert ax.get_title() == "AgeDB-DIR, test split: MAE per age"
    assert ax.get_xlabel() == "age" and ax.get_ylabel() == "test MAE per age"
    plt.close(fig)
    imdb = load(write_run(tmp_path, "imdb", age_metrics(), {"dataset": "imdb_wiki", "seed": 0}, age_predictions()))
    fig = report.per_label_figure([imdb], "mse")
    assert fig.axes[0].get_title() == "IMDB-WIKI-DIR, test split: MSE per age"
    plt.close(fig)


def test_stsb_figure_says_score(tmp_path):
    test = {s: {"mse": 1.0, "l1": 0.8, "gmean": 0.5, "pearson": 0.7, "spearman": 0.7, "count": 5} for s in SHOTS}
    labels = np.array([0.5, 1.2, 2.5, 3.3, 4.8])
    train = np.r_[np.full(50, 0.55), np.full(50, 1.25), np.full(3, 2.55), 3.35]     # many, many, medium, few
    run = load(write_run(tmp_path, "sts", test, {"seed": 111}, {
        "preds": labels + 0.3, "labels": labels, "train_labels": train, "many_shot_thr": 5, "low_shot_thr": 2,
        "bins_start": STSB_BINS.start, "bins_width": STSB_BINS.width, "bins_num": STSB_BINS.num_bins,
        "bins_rule": STSB_BINS.rule}))
    fig = report.per_label_figure([run])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "score" and ax.get_title() == "STS-B-DIR, test split: MAE per score"
    plt.close(fig)


def test_depth_figure_says_depth_in_metres(tmp_path):
    test = {s: {"rmse": 0.5, "delta1": 0.8, "count": 100} for s in SHOTS}
    labels = np.array([1.05, 2.05, 2.15, 3.55])
    run = load(write_run(tmp_path, "depth", test, {"seed": 0}, {
        "preds": labels + 0.1, "labels": labels, "train_pixel_counts": np.arange(DEPTH_BINS.num_bins) * 10,
        "many_bins": np.array([20, 21]), "medium_bins": np.array([10]), "few_bins": np.array([35])}))
    fig = report.depth_figure([run])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "depth (m)" and ax.get_title() == "NYUD2-DIR, test split: RMSE per ground-truth depth bin"
    plt.close(fig)


def test_a_custom_task_keeps_label_and_says_runs(tmp_path):
    run = load(write_run(tmp_path, "mine", age_metrics(), {"seed": 0, "csv": "x.csv"}, age_predictions()))
    assert report.benchmark_of(run) is None
    fig = report.per_label_figure([run])
    assert fig.axes[0].get_xlabel() == "label" and fig.axes[0].get_title() == "runs, test split: MAE per label"
    plt.close(fig)
    saved = load(write_run(tmp_path, "named", age_metrics(), {"seed": 0}, age_predictions(), benchmark="sts-b-dir"))
    assert report.benchmark_of(saved) == "sts-b-dir"                    # a results.json that names it wins


def test_calibration_axes_span_the_sigma_range_not_zero(tmp_path):
    rng = np.random.default_rng(0)
    sigma = rng.uniform(1.0, 9.0, 400)
    labels = rng.uniform(0, 100, 400)
    preds = labels + sigma * rng.standard_normal(400)                 # calibrated: error of scale σ
    test = {**age_metrics(), "uncertainty": {"nll": 1.0, "ence": 0.1, "ause": 0.2, "mean_sigma": 5.0}}
    run = load(write_run(tmp_path, "vir", test, {"dataset": "agedb", "seed": 0, "vir": True}, {
        **age_predictions(), "preds": preds, "labels": labels, "sigma": sigma}))
    fig = report.calibration_figure([run])
    ax = fig.axes[0]
    lo, hi = sigma.min(), sigma.max()
    assert ax.get_xlim() == pytest.approx((lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    assert 0.5 < ax.get_xlim()[0] < 1.0 and 9.0 < ax.get_xlim()[1] < 9.5
    y_lo, y_hi = ax.get_ylim()
    rmv, rmse, _ = report.calibration_bins(preds, labels, sigma)
    assert y_lo <= min(lo, rmse.min()) and y_hi >= max(hi, rmse.max()) and y_lo > 0
    assert ax.get_title() == "AgeDB-DIR, test split: calibration"
    plt.close(fig)


def test_main_writes_both_figures_atomically(tmp_path, capsys):
    sigma = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    test = {**age_metrics(), "uncertainty": {"nll": 1.0, "ence": 0.1, "ause": 0.2, "mean_sigma": 3.0}}
    run = write_run(tmp_path, "uvote", test, {"dataset": "agedb", "seed": 0}, age_predictions(sigma))
    report.main([str(run), "--plot", str(tmp_path / "out" / "report.png"),
                 "--calibration", str(tmp_path / "out" / "calibration.png")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["calibration.png", "report.png"]
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- correlations of < 3 samples

def test_a_shot_of_two_samples_has_no_correlation():
    # Bins 0 and 10 are many-shot (> 2 training pairs), bin 20 few-shot with two test pairs, bin 30 with three.
    train = np.array([0.05] * 5 + [1.05] * 5 + [2.05] * 1 + [3.05] * 2)
    labels = np.array([0.01, 0.05, 1.0, 1.05, 1.09, 2.01, 2.07])
    preds = labels + np.array([0.1, -0.1, 0.2, 0.0, -0.2, 0.3, -0.3])
    metrics = correlation_shot_metrics(preds, labels, train, many_shot_thr=2, low_shot_thr=2, bins=STSB_BINS)
    assert metrics["few"]["count"] == 2 and math.isnan(metrics["few"]["pearson"])
    assert math.isnan(metrics["few"]["spearman"])
    assert metrics["many"]["count"] == 5 and metrics["many"]["pearson"] == pytest.approx(
        np.corrcoef(preds[:5], labels[:5])[0, 1])
    three = correlation_shot_metrics(np.r_[preds, 3.1], np.r_[labels, 3.05], train, 3, 3, STSB_BINS)
    assert three["few"]["count"] == 3 and math.isfinite(three["few"]["pearson"])
    rows = {line.split()[0]: line.split() for line in correlation_table("test", metrics).splitlines()[1:5]}
    assert rows["few"][4:7] == ["n/a", "n/a", "2"]                         # not ±100
    assert rows["many"][4] == f"{100 * metrics['many']['pearson']:.2f}"


def test_the_report_prints_n_a_for_old_runs_with_two_sample_correlations(tmp_path, capsys):
    """Runs written before the rule hold ±1 for a two-sample shot: the report shows n/a, per run and per group."""
    def sts(seed):
        test = {s: {"mse": 1.0, "l1": 0.8, "gmean": 0.5, "pearson": 0.5, "spearman": 0.4, "count": 9}
                for s in SHOTS}
        test["few"].update(pearson=-1.0, spearman=-1.0, count=2)
        return write_run(tmp_path, f"sts_seed{seed}", test, {"seed": seed, "lr": 1e-4})
    runs = [str(sts(0)), str(sts(1))]
    report.main([*runs, "--per_run", "--columns", "pearson", "--plot", str(tmp_path / "p.png")])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| sts")]
    assert [c.strip() for c in rows[0]] == ["sts_seed0", "0.500", "0.500", "0.500", "n/a"]
    report.main([*runs, "--columns", "pearson", "--plot", str(tmp_path / "p.png")])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| sts")]
    assert [c.strip() for c in rows[0]] == ["sts", "0, 1", "2", "0.500 ± 0.000", "0.500 ± 0.000", "0.500 ± 0.000",
                                            "n/a"]


# ----------------------------------------------------------------------------- compute cost

def cost(wall, rate, host, cuda=None, device="cpu", processes=1):
    return {"wall_seconds": wall, "train_samples_per_second": rate, "peak_host_memory_mib": host,
            "peak_cuda_memory_mib": cuda, "device": device, "processes": processes}


def cells_of(out: str) -> dict:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ")]
    return {row[0]: row for row in rows}


def test_cost_columns_are_seed_aggregated_and_absent_for_old_runs(tmp_path, capsys):
    runs = [write_run(tmp_path, "conr_seed0", age_metrics(2.0), {"seed": 0, "conr": True}, cost=cost(100.0, 50.0,
                                                                                                        1000.0)),
            write_run(tmp_path, "conr_seed1", age_metrics(4.0), {"seed": 1, "conr": True}, cost=cost(140.0, 30.0,
                                                                                                        1200.0)),
            write_run(tmp_path, "old_seed0", age_metrics(3.0), {"seed": 0}),
            write_run(tmp_path, "old_seed1", age_metrics(5.0), {"seed": 1})]
    report.main([*map(str, runs), "--columns", "l1", "--shots", "all", "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    rows = cells_of(out)
    assert rows["run"] == ["run", "seeds", "n", "MAE all", "wall s", "samples/s", "peak host MiB"]   # no CUDA used
    # wall 100, 140 → 120 ± √800; samples/s 50, 30 → 40 ± √200; memory 1000, 1200 → 1100 ± √20000
    assert rows["conr"][3:] == ["3.000 ± 1.414", f"120.0 ± {math.sqrt(800):.1f}", f"40.0 ± {math.sqrt(200):.1f}",
                                f"1100 ± {math.sqrt(20000):.0f}"]
    assert rows["old"][3:] == ["4.000 ± 1.414", "—", "—", "—"]
    assert "ran on cpu (1 process); 2 run(s) recorded no cost" in out
    report.main([*map(str, runs[2:]), "--columns", "l1", "--plot", str(tmp_path / "p.png")])
    assert "wall s" not in capsys.readouterr().out                                     # no run has a cost


def test_the_cuda_memory_column_appears_where_a_run_used_cuda(tmp_path, capsys):
    gpu = write_run(tmp_path, "gpu", age_metrics(), {"seed": 0, "lr": 0.1},
                    cost=cost(60.0, 900.0, 3000.0, cuda=5120.4, device="cuda:0", processes=2))
    cpu = write_run(tmp_path, "cpu", age_metrics(), {"seed": 0, "lr": 0.2}, cost=cost(600.0, 90.0, 2000.0))
    report.main([str(gpu), str(cpu), "--columns", "l1", "--shots", "all", "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    rows = cells_of(out)
    assert rows["run"][-4:] == ["wall s", "samples/s", "peak host MiB", "peak CUDA MiB"]
    assert rows["gpu"][-4:] == ["60.0", "900.0", "3000", "5120"] and rows["cpu"][-1] == "—"
    assert "ran on cuda:0 (2 processes), cpu (1 process)" in out
