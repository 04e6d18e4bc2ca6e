"""Compare runs: a markdown table of their test metrics and the per-label error plot DIR papers show.

    python -m common.tools.report RUN_DIR [RUN_DIR ...] [--metric l1] [--plot report.png]
        [--columns l1 bmae mse sera] [--shots all few] [--per_run] [--calibration calibration.png]

Reads ``results.json`` and ``test_predictions.npz`` from each run folder (written at the end of training).
The plot shows each run's test error per label over the training label histogram, with the Many/Medium/Few
label ranges shaded.

Runs whose flags (``results.json``'s ``args``) differ only in ``--seed`` and in how they were run
(``common.cli.RUN_FLAGS``: the folder, workers, device, …) form a group: when a group has more than one run, the
table has one row per group with the mean ± sample standard deviation over its runs and their number n (a run
whose value is NaN, e.g. an empty shot, is left out of that cell's mean), and the plot draws each group's mean
error per label with a band of ± one standard deviation. ``--per_run`` lists every run instead.

Where ``results.json`` holds the run's compute cost (``cost``: ``wall_seconds``, ``train_samples_per_second``,
``peak_host_memory_mib``, ``peak_cuda_memory_mib``, ``device``, ``processes``), the table adds wall time,
samples/s and peak memory columns (aggregated over seeds like the metrics; ``—`` for a run without them). A
correlation (``--columns pearson spearman``) over fewer than three samples of a shot is n/a. The figures are titled
with the benchmark and split, their x axis named for the label (age, depth (m), score).

Runs whose predictions carry a standard deviation per sample (UVOTE, VIR: ``sigma`` in test_predictions.npz)
also get a calibration figure (``--calibration``): per bin of predicted σ (ten equal-count bins), the expected
error (root mean predicted variance) against the observed RMSE, the diagonal being perfect calibration
(``common.metrics.calibration_bins``), and their uncertainty metrics (NLL, ENCE, AUSE) in a second table.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from common.cli import RUN_FLAGS
from common.errors import RunError
from common.metrics import MIN_CORRELATION_SAMPLES, SHOTS, calibration_bins, shot_counts

METRIC_NAMES = {"l1": "MAE", "mse": "MSE", "gmean": "G-Mean"}
#: table headers of every metric a results.json can hold.
COLUMN_NAMES = {**METRIC_NAMES, "bmae": "bMAE", "bmse": "bMSE", "sera": "SERA", "bins": "bins", "count": "count",
                "pearson": "Pearson", "spearman": "Spearman", "rmse": "RMSE", "mae": "MAE", "absrel": "AbsRel",
                "log10": "log10", "delta1": "δ1", "delta2": "δ2", "delta3": "δ3"}
# The default columns: the first group always, the second where the runs hold it.
DEFAULT_COLUMNS = (("l1", "mse", "gmean"), ("bmae", "bmse", "sera"))
DEFAULT_DEPTH_COLUMNS = (("rmse", "delta1"), ("bmae", "bmse", "sera"))
#: flags that do not make runs different settings: the seed, and how a run is executed.
NOT_SETTINGS = frozenset({"seed", *RUN_FLAGS})


def load_run(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; pass run folders of finished training runs.")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {path} is not valid JSON ({error.msg} at line {error.lineno}); the run was "
                         "interrupted while writing it: evaluate its ckpt.best.pth.tar with --evaluate --resume.")
    if not isinstance(results, dict) or "test" not in results:
        raise SystemExit(f"error: {path} holds no 'test' metrics; it is not the results.json of a finished run.")
    results["name"], results["path"] = run_dir.name, str(run_dir.resolve())
    predictions = run_dir / "test_predictions.npz"
    if predictions.is_file():
        try:
            with np.load(predictions) as data:
                results["predictions"] = {k: data[k] for k in data.files}
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: {predictions} could not be read ({error}); delete it to report without "
                             "the plot, or re-run --evaluate.")
    return results


def shot_note(runs: list[dict]) -> str | None:
    """A sentence when the test labels all fall in one shot group (small data with the real thresholds)."""
    for run in runs:
        shots = [shot for shot in SHOTS[1:] if run["test"][shot]["count"]]
        if len(shots) == 1 and not is_depth(run):
            thresholds = run.get("args", {})
            return (f"note: every test label of {run['name']} is {shots[0]}-shot: the shot thresholds (many > "
                    f"{thresholds.get('many_shot_thr')}, few < {thresholds.get('low_shot_thr')} training samples) "
                    "do not fit this data's counts; pass --many_shot_thr/--low_shot_thr scaled to the data size.")
    return None


def is_depth(run: dict) -> bool:
    return "rmse" in run["test"]["all"]


#: what the figures call each benchmark and its label axis.
BENCHMARK_NAMES = {"agedb-dir": "AgeDB-DIR", "imdb-wiki-dir": "IMDB-WIKI-DIR", "nyud2-dir": "NYUD2-DIR",
                   "sts-b-dir": "STS-B-DIR"}
LABEL_AXES = {"agedb-dir": "age", "imdb-wiki-dir": "age", "nyud2-dir": "depth (m)", "sts-b-dir": "score"}


def benchmark_of(run: dict) -> str | None:
    """The run's benchmark folder (``agedb-dir``, …): ``results.json``'s ``benchmark`` where it has one, else from
    its flags (NYUD2's ``--encoder``, STS-B's ``--d_hid``), its metrics (depth: RMSE; STS-B: Pearson) or its
    ``--dataset`` flag (agedb…, imdb_wiki…); None for another task (``examples/custom_regression.py``)."""
    saved = run.get("benchmark")
    if saved in BENCHMARK_NAMES:
        return saved
    args = run.get("args") if isinstance(run.get("args"), dict) else {}
    if "encoder" in args:                 # flags only one benchmark has: NYUD2's --encoder, STS-B's --d_hid
        return "nyud2-dir"
    if "d_hid" in args:
        return "sts-b-dir"
    if is_depth(run):
        return "nyud2-dir"
    if "pearson" in run["test"]["all"]:
        return "sts-b-dir"
    dataset = str(args.get("dataset", ""))
    return "agedb-dir" if dataset.startswith("agedb") else "imdb-wiki-dir" if dataset.startswith("imdb_wiki") else None


def figure_title(runs: list[dict], what: str, split: str = "test") -> str:
    """``"AgeDB-DIR, test split: <what>"`` (several benchmarks joined by " / "; "runs" for an unknown one)."""
    names = list(dict.fromkeys(BENCHMARK_NAMES.get(benchmark_of(run), "runs") for run in runs))
    return f"{' / '.join(names)}, {split} split: {what}"


def label_axis(runs: list[dict]) -> str:
    """The x axis of the per-label figure: ``age``, ``depth (m)`` or ``score`` (``label`` where unknown or mixed)."""
    axes = {LABEL_AXES.get(benchmark_of(run), "label") for run in runs}
    return axes.pop() if len(axes) == 1 else "label"


def depth_markdown_table(runs: list[dict], split: str = "test", columns=None, shots=SHOTS) -> str:
    """One row per depth run: RMSE and δ1 (and, where the runs hold them, bMAE, bMSE, SERA) for All / Many /
    Medium / Few, and the evaluated pixels."""
    columns = default_columns(runs, split) if columns is None else columns
    costs = cost_columns(runs)
    header = (["run"] + [f"{COLUMN_NAMES[m]} {shot}" for m in columns for shot in shots] + ["pixels"]
              + [name for _, name, _ in costs])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for run in runs:
        metrics = run[split]
        cells = [run["name"]] + [_metric_cell(metrics[s], m) for m in columns for s in shots]
        cells += [str(metrics["all"]["count"])] + [_number(cost_value(run, key), fmt) for key, _, fmt in costs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value, fmt: str = ".3f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{fmt}}"


CORRELATIONS = ("pearson", "spearman")


def metric_value(shot_metrics: dict, metric: str):
    """One shot's ``metric``; a correlation over fewer than ``MIN_CORRELATION_SAMPLES`` samples is NaN (runs
    written before that rule hold ±1 for a shot of two)."""
    value = shot_metrics.get(metric)
    if metric in CORRELATIONS and value is not None and shot_metrics.get("count", 0) < MIN_CORRELATION_SAMPLES:
        return math.nan
    return value


def _metric_cell(shot_metrics: dict, metric: str) -> str:
    """A table cell: the value, ``n/a`` for an undefined correlation, ``—`` for a missing or NaN value."""
    value = metric_value(shot_metrics, metric)
    if metric in CORRELATIONS and isinstance(value, float) and math.isnan(value):
        return "n/a"
    return _number(value)


# -- compute cost (results.json's "cost", written by the trainer where it measures it) ---------------------------
#: (key in results["cost"], column header, number format); the CUDA column only where a run used CUDA.
COST_COLUMNS = (("wall_seconds", "wall s", ".1f"), ("train_samples_per_second", "samples/s", ".1f"),
                ("peak_host_memory_mib", "peak host MiB", ".0f"), ("peak_cuda_memory_mib", "peak CUDA MiB", ".0f"))


def cost_columns(runs: list[dict]) -> list[tuple[str, str, str]]:
    """The cost columns the runs have: none when no run has ``cost``, the CUDA one only where a value is given."""
    costs = [run["cost"] for run in runs if isinstance(run.get("cost"), dict)]
    if not costs:
        return []
    return [column for column in COST_COLUMNS
            if column[0] != "peak_cuda_memory_mib" or any(c.get(column[0]) is not None for c in costs)]


def cost_value(run: dict, key: str):
    """``run["cost"][key]`` as a float, or None (an older run without ``cost``, a null CUDA peak)."""
    cost = run.get("cost")
    value = cost.get(key) if isinstance(cost, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cost_note(runs: list[dict]) -> str | None:
    """What the cost columns are, and where the runs ran (``device`` and ``processes`` of their ``cost``)."""
    costs = [run["cost"] for run in runs if isinstance(run.get("cost"), dict)]
    if not costs:
        return None
    where = list(dict.fromkeys(f"{c.get('device', '?')} ({c.get('processes', '?')} "
                               f"process{'' if c.get('processes') == 1 else 'es'})" for c in costs))
    missing = sum(not isinstance(run.get("cost"), dict) for run in runs)
    return ("cost: wall s is the whole run's wall time, samples/s the training samples per second, peak MiB the "
            f"peak memory; ran on {', '.join(where)}"
            + (f"; {missing} run(s) recorded no cost (—)" if missing else ""))


def default_columns(runs: list[dict], split: str = "test") -> tuple[str, ...]:
    """The table's metrics: MAE, MSE, G-mean (depth: RMSE, δ1), then bMAE, bMSE and SERA when every run has
    them (runs written before they existed do not)."""
    first, extra = DEFAULT_DEPTH_COLUMNS if runs and is_depth(runs[0]) else DEFAULT_COLUMNS
    present = all("bmae" in run[split]["all"] for run in runs)
    return first + (extra if present else ())


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> None:
    """Write a figure atomically (complete or not at all: :func:`common.runtime.write_atomic`) and close it; a
    ``path`` without a suffix gets ``.png``, as matplotlib gives it. A full disk is one sentence (RunError)."""
    from common.runtime import write_atomic
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".")),
                     advice="free space, or pass --plot/--calibration on another disk")
    finally:
        _pyplot().close(fig)


def depth_plot(runs: list[dict], path) -> None:
    """Save :func:`depth_figure` to ``path``."""
    _save(depth_figure(runs), path)


def plottable(runs: list[dict]) -> list[dict]:
    """The runs a figure can draw: of one benchmark and shot thresholds (:func:`check_same_kind`), each with its
    test predictions; none is one sentence."""
    check_same_kind(runs)
    runs = [r for r in runs if "predictions" in r]
    if not runs:
        raise SystemExit("error: no run folder has test_predictions.npz; nothing to plot.")
    return runs


def depth_figure(runs: list[dict]):
    """RMSE per 0.1-m ground-truth bin of each depth run, over the training pixel histogram, shots shaded."""
    plt = _pyplot()
    from common.bins import DEPTH_BINS

    runs = plottable(runs)
    first = runs[0]["predictions"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    hist_ax = ax.twinx()
    centres = DEPTH_BINS.lower_edges() + 0.05
    hist_ax.bar(centres, first["train_pixel_counts"], width=0.1, color="0.85", zorder=0)
    hist_ax.set_ylabel("training pixels per 0.1-m bin")
    colours = {"many": "tab:green", "medium": "tab:orange", "few": "tab:red"}
    for shot, colour in colours.items():
        for b in first[f"{shot}_bins"]:
            ax.axvspan(b / 10, b / 10 + 0.1, color=colour, alpha=0.08, lw=0, zorder=0)
    def rmse_per_bin(run):
        preds, labels = run["predictions"]["preds"], run["predictions"]["labels"]
        bins = DEPTH_BINS.index(labels)
        present = np.unique(bins)
        rmse = [math.sqrt(float(np.mean((preds[bins == b] - labels[bins == b]) ** 2))) for b in present]
        return present / 10 + 0.05, np.array(rmse)

    draw_groups(ax, runs, rmse_per_bin)
    ax.set_zorder(hist_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel(label_axis(runs))
    ax.set_ylabel("test RMSE per 0.1-m bin (m)")
    ax.set_title(figure_title(runs, "RMSE per ground-truth depth bin"), fontsize=10)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8, ncol=3, frameon=False)
    ax.add_artist(legend)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in colours.values()]
    ax.legend(handles, [f"{s}-shot" for s in colours], loc="upper right", bbox_to_anchor=(1, -0.15), fontsize=8,
              ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def check_same_kind(runs: list[dict]) -> None:
    """Refuse runs that one table and one histogram cannot hold (one sentence naming two of them): depth beside
    age or text runs, runs of two benchmarks, runs whose shot thresholds differ (their Many/Medium/Few columns
    would hold different labels). The report does not split them into several tables: run it once per kind."""
    if any(is_depth(run) for run in runs) and not all(is_depth(run) for run in runs):
        raise SystemExit("error: these runs mix depth and age/text benchmarks; report them separately.")
    known = [run for run in runs if benchmark_of(run)]
    for run in known[1:]:
        if benchmark_of(run) != benchmark_of(known[0]):
            raise SystemExit(f"error: {run.get('path', run['name'])} is a run of {benchmark_of(run)} and "
                             f"{known[0].get('path', known[0]['name'])} of {benchmark_of(known[0])}: the metrics of "
                             "two benchmarks cannot share one table and one label histogram; report each benchmark's "
                             "runs separately.")
    known = [run for run in runs if shot_thresholds(run)]
    for run in known[1:]:
        (flags, mine), (_, first) = shot_thresholds(run), shot_thresholds(known[0])
        if not np.allclose(mine, first, rtol=1e-9, atol=0):
            what = "labels" if flags[0] == "many_shot_thr" else "bins"
            unit = "training samples" if what == "labels" else "of the training pixels"
            raise SystemExit(f"error: {run.get('path', run['name'])} counts many-shot {what} as > {mine[0]:g} and "
                             f"few-shot as < {mine[1]:g} {unit}, {known[0].get('path', known[0]['name'])} as > "
                             f"{first[0]:g} and < {first[1]:g}: their Many/Medium/Few columns hold different "
                             f"{what}; report them separately, or evaluate both with the same --{flags[0]} and "
                             f"--{flags[1]}.")


#: the flags of the shot thresholds: counts of training samples (ages, STS-B), fractions of pixels (NYUD2).
SHOT_FLAGS = (("many_shot_thr", "low_shot_thr"), ("many_shot_fraction", "low_shot_fraction"))


def shot_thresholds(run: dict):
    """``((many flag, few flag), (many, few))`` of a run, from its flags or its saved predictions; None if unknown."""
    args = run.get("args") if isinstance(run.get("args"), dict) else {}
    for flags in SHOT_FLAGS:
        if all(isinstance(args.get(flag), (int, float)) for flag in flags):
            return flags, tuple(float(args[flag]) for flag in flags)
    saved = run.get("predictions") or {}
    if all(flag in saved for flag in SHOT_FLAGS[0]):
        return SHOT_FLAGS[0], tuple(float(saved[flag]) for flag in SHOT_FLAGS[0])
    return None


def unique_folders(folders) -> list[str]:
    """The run folders once each (a folder given twice, by another spelling or through a link, would count as a
    second seed), in the order given; each repeat is said on stderr."""
    first: dict[str, list[str]] = {}
    for folder in folders:
        first.setdefault(os.path.realpath(folder), []).append(str(folder))
    for given in first.values():
        if len(given) > 1:
            again = " and ".join([", ".join(given[1:-1]), given[-1]] if len(given) > 2 else given[1:])
            print(f"note: {again} {'is' if len(given) == 2 else 'are'} {given[0]} again; each run counts once",
                  file=sys.stderr)
    return [given[0] for given in first.values()]


def markdown_table(runs: list[dict], split: str = "test", columns=None, shots=SHOTS) -> str:
    """One row per run: MAE, MSE and G-Mean (and bMAE, bMSE, SERA where the runs hold them) for All / Many /
    Medium / Few (depth runs: RMSE and δ1, …); ``columns`` and ``shots`` choose others."""
    check_same_kind(runs)
    if runs and is_depth(runs[0]):
        return depth_markdown_table(runs, split, columns, shots)
    columns = default_columns(runs, split) if columns is None else columns
    costs = cost_columns(runs)
    header = ["run"] + [f"{COLUMN_NAMES[m]} {shot}" for m in columns for shot in shots] + [n for _, n, _ in costs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for run in runs:
        metrics = run[split]
        cells = [run["name"]] + [_metric_cell(metrics[s], m) for m in columns for s in shots]
        cells += [_number(cost_value(run, key), fmt) for key, _, fmt in costs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- seeds ------------------------------------------------------------------------------------------------------
def settings_key(run: dict) -> str:
    """What a run trained, as text: its flags without :data:`NOT_SETTINGS` (a run without saved flags is its own
    group)."""
    flags = run.get("args")
    if not isinstance(flags, dict):
        return f"folder {run.get('path', run['name'])}"
    return json.dumps({k: v for k, v in flags.items() if k not in NOT_SETTINGS}, sort_keys=True, default=str)


def group_runs(runs: list[dict]) -> list[list[dict]]:
    """The runs grouped by :func:`settings_key`, groups and runs in the order given."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(settings_key(run), []).append(run)
    return list(groups.values())


def group_name(group: list[dict]) -> str:
    """The group's run folder name without its ``seed<k>`` part (``conr_seed1`` → ``conr``), or the first run's
    name when that leaves the names different or nothing."""
    stripped = {re.sub(r"[_.-]?seed\d+", "", run["name"]).strip("_.-") for run in group}
    return stripped.pop() if len(stripped) == 1 and "" not in stripped else group[0]["name"]


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite values; sd is NaN for n < 2, both NaN for n = 0."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan, 0
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else math.nan, int(finite.size)


def _mean_sd_cell(values, fmt: str = ".3f", empty: str = "—") -> str:
    mean, sd, n = mean_sd(values)
    if n == 0:
        return empty
    return f"{mean:{fmt}}" if n == 1 else f"{mean:{fmt}} ± {sd:{fmt}}"


def seed_table(groups: list[list[dict]], split: str = "test", columns=None, shots=SHOTS) -> str:
    """One row per group of :func:`group_runs`: its seeds, n, and mean ± sample sd over its runs of each metric
    per shot."""
    runs = [run for group in groups for run in group]
    check_same_kind(runs)
    if columns is None:
        columns = default_columns(runs, split)
    costs = cost_columns(runs)
    header = (["run", "seeds", "n"] + [f"{COLUMN_NAMES[m]} {shot}" for m in columns for shot in shots]
              + [name for _, name, _ in costs])
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (len(header) - 3)]
    for group in groups:
        seeds = ", ".join(str(run.get("args", {}).get("seed", "?")) for run in group)
        cells = [group_name(group), seeds, str(len(group))]
        cells += [_mean_sd_cell([metric_value(run[split][s], m) for run in group],
                                empty="n/a" if m in CORRELATIONS else "—") for m in columns for s in shots]
        cells += [_mean_sd_cell([cost_value(run, key) for run in group], fmt) for key, _, fmt in costs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saved_bins(predictions: dict):
    """The label grid a run saved with its predictions (``bins_start``, ``bins_width``, ``bins_num``,
    ``bins_rule``), or None for exact-label shots (ages)."""
    if "bins_width" not in predictions:
        return None
    from common.bins import LabelBins
    return LabelBins(float(predictions["bins_start"]), float(predictions["bins_width"]), int(predictions["bins_num"]),
                     str(predictions["bins_rule"]))


def per_label_error(predictions: dict, metric: str = "l1"):
    """(labels, error per label) of the test predictions."""
    preds, labels = predictions["preds"], predictions["labels"]
    errors = np.abs(preds - labels) if metric == "l1" else (preds - labels) ** 2
    values = np.unique(labels)
    return values, np.array([errors[labels == v].mean() for v in values])


def draw_groups(ax, runs: list[dict], curve) -> None:
    """One line per group of :func:`group_runs`: a lone run's ``curve(run)`` (x, y), or, for several runs, the
    mean of their y at each x with a band of ± one sample standard deviation (where two or more runs have it)."""
    for group in group_runs(runs):
        curves = [curve(run) for run in group]
        if len(curves) == 1:
            ax.plot(*curves[0], marker=".", lw=1.2, label=group[0]["name"])
            continue
        xs = np.unique(np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in curves]))
        table = np.full((len(curves), len(xs)), np.nan)
        for row, (x, y) in zip(table, curves):
            row[np.searchsorted(xs, np.asarray(x, dtype=np.float64))] = y
        present = np.isfinite(table)
        n = present.sum(axis=0)
        mean = np.where(present, table, 0).sum(axis=0) / np.maximum(n, 1)
        spread = np.where(present, (table - mean) ** 2, 0).sum(axis=0) / np.maximum(n - 1, 1)
        sd = np.where(n > 1, np.sqrt(spread), 0.0)
        line, = ax.plot(xs, mean, marker=".", lw=1.2, label=f"{group_name(group)} (mean ± sd, {len(group)} seeds)")
        ax.fill_between(xs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)


def plot(runs: list[dict], path, metric: str = "l1") -> None:
    """Save :func:`per_label_figure` to ``path``."""
    _save(per_label_figure(runs, metric), path)


def per_label_figure(runs: list[dict], metric: str = "l1"):
    """Each run's (or seed group's) test error per label over the training histogram, the shots shaded; titled
    with the benchmark and split, the x axis named for the label (age, score)."""
    plt = _pyplot()
    runs = plottable(runs)
    first = runs[0]["predictions"]
    train_labels = first["train_labels"]
    many, low = float(first["many_shot_thr"]), float(first["low_shot_thr"])
    bins = saved_bins(first)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    hist_ax = ax.twinx()
    if bins is None:       # integer labels (ages): one bar and one shot per exact label
        values, counts = np.unique(train_labels.astype(np.int64), return_counts=True)
        hist_ax.bar(values, counts, width=1.0, color="0.85", zorder=0)
        width = 1.0
    else:                  # a label grid (STS-B's 0.1-wide score bins): one bar per bin
        width = bins.width
        hist_ax.bar(bins.lower_edges() + width / 2, bins.histogram(train_labels), width=width, color="0.85", zorder=0)
    hist_ax.set_ylabel("training samples per label" if bins is None else "training samples per bin")
    labels = np.unique(first["labels"])
    label_counts = shot_counts(labels, train_labels, bins)
    colours = {"many": "tab:green", "medium": "tab:orange", "few": "tab:red"}
    for label, count in zip(labels, label_counts):
        shot = "many" if count > many else "few" if count < low else "medium"
        left = label - width / 2 if bins is None else bins.start + bins.index(label) * width
        ax.axvspan(left, left + width, color=colours[shot], alpha=0.08, lw=0, zorder=0)
    draw_groups(ax, runs, lambda run: per_label_error(run["predictions"], metric))
    ax.set_zorder(hist_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    axis = label_axis(runs)
    ax.set_xlabel(axis)
    ax.set_ylabel(f"test {METRIC_NAMES[metric]} per {axis if axis in ('age', 'score') else 'label'}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in colours.values()]
    shots_present = {("many" if c > many else "few" if c < low else "medium") for c in label_counts}
    # Both legends below the axes, where they cannot cover a curve.
    legend = ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8, ncol=3, frameon=False)
    ax.add_artist(legend)
    ax.legend(handles, [f"{s}-shot" for s in colours], loc="upper right", bbox_to_anchor=(1, -0.15), fontsize=8,
              ncol=3, frameon=False)
    title = figure_title(runs, f"{METRIC_NAMES[metric]} per {axis}")
    if len(shots_present) == 1:
        title += (f"\nevery test label is {shots_present.pop()}-shot: the thresholds (> {many:g}, < {low:g} "
                  "training samples) do not fit this data's counts")
    ax.set_title(title, fontsize=9 if "\n" in title else 10)
    fig.tight_layout()
    return fig


def uncertainty_table(runs: list[dict]) -> str:
    """The runs' test uncertainty metrics (``results.json``'s ``test.uncertainty``), one row per run."""
    rows = ["| run | NLL | ENCE | AUSE | mean σ |", "|---|---|---|---|---|"]
    for run in runs:
        u = run["test"]["uncertainty"]
        rows.append(f"| {run['name']} | " + " | ".join(_number(u[k]) for k in ("nll", "ence", "ause", "mean_sigma"))
                    + " |")
    return "\n".join(rows)


def calibration_plot(runs: list[dict], path) -> None:
    """Save :func:`calibration_figure` to ``path``."""
    _save(calibration_figure(runs), path)


def _padded(lo: float, hi: float, share: float = 0.05) -> tuple[float, float]:
    pad = share * (hi - lo) if hi > lo else share * max(abs(hi), 1e-12)
    return lo - pad, hi + pad


def calibration_figure(runs: list[dict]):
    """Expected vs observed error per bin of predicted σ, one curve per run with ``sigma`` in its predictions.

    The x axis spans the predicted σ of the data (its smallest to its largest, 5 % margins), the y axis that range
    and the observed RMSEs; the diagonal (perfect calibration) crosses both."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    sigmas = np.concatenate([np.asarray(run["predictions"]["sigma"], dtype=np.float64).ravel() for run in runs])
    sigma_lo, sigma_hi = float(np.min(sigmas)), float(np.max(sigmas))
    low, high = sigma_lo, sigma_hi
    for run in runs:
        p = run["predictions"]
        rmv, rmse, _ = calibration_bins(p["preds"], p["labels"], p["sigma"])
        ax.plot(rmv, rmse, marker="o", lw=1.2, label=run["name"])
        if np.isfinite(rmse).any():
            low, high = min(low, float(np.nanmin(rmse))), max(high, float(np.nanmax(rmse)))
    ax.plot([low, high], [low, high], color="0.5", ls="--", lw=1, label="calibrated")
    ax.set_xlim(*_padded(sigma_lo, sigma_hi))
    ax.set_ylim(*_padded(low, high))
    ax.set_xlabel("expected error: √ mean predicted σ² per σ bin")
    ax.set_ylabel("observed test RMSE per σ bin")
    ax.set_title(figure_title(runs, "calibration"), fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def main(argv=None):
    try:
        return _main(argv)
    except RunError as error:        # a figure that could not be written (a full disk): its sentence
        raise SystemExit(f"error: {error}") from None


def _main(argv=None):
    from common.cli import Parser

    parser = Parser(__doc__, prog="python -m common.tools.report", formatter_class=Parser.RawFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (each with results.json)")
    parser.add_argument("--metric", default="l1", choices=list(METRIC_NAMES),
                        help="the plot's error per label")
    parser.add_argument("--plot", default="report.png", help="where to save the per-label error plot")
    parser.add_argument("--columns", nargs="+", default=None, choices=list(COLUMN_NAMES), metavar="METRIC",
                        help="the table's metrics (default: l1 mse gmean, depth rmse delta1, then bmae bmse sera "
                             "where the runs have them); any of " + ", ".join(COLUMN_NAMES))
    parser.add_argument("--shots", nargs="+", default=list(SHOTS), choices=list(SHOTS),
                        help=f"the table's shots (default: {' '.join(SHOTS)})")
    parser.add_argument("--per_run", action="store_true",
                        help="one row per run, also where runs differ only in --seed")
    parser.add_argument("--calibration", default="calibration.png",
                        help="where to save the calibration figure of runs with predicted σ (UVOTE, VIR)")
    args = parser.parse_args(argv)
    runs = [load_run(r) for r in unique_folders(args.runs)]
    check_same_kind(runs)
    missing = [(run["name"], m) for run in runs for m in args.columns or () if m not in run["test"]["all"]]
    if missing:
        raise SystemExit(f"error: {missing[0][0]} has no {missing[0][1]} in its test metrics; choose --columns "
                         f"among {', '.join(k for k in runs[0]['test']['all'] if k in COLUMN_NAMES)}.")
    groups = group_runs(runs)
    if args.per_run or all(len(group) == 1 for group in groups):
        print(markdown_table(runs, columns=args.columns, shots=args.shots))
    else:
        print(seed_table(groups, columns=args.columns, shots=args.shots))
        print("\nmean ± sample standard deviation over the n runs of each row (their flags differ only in --seed); "
              "--per_run lists every run")
    for note in (cost_note(runs), shot_note(runs)):
        if note:
            print(f"\n{note}")
    if is_depth(runs[0]):
        depth_plot(runs, args.plot)
    else:
        plot(runs, args.plot, args.metric)
    print(f"\nplot: {args.plot}")
    uncertain = [run for run in runs if "sigma" in run.get("predictions", {}) and "uncertainty" in run["test"]]
    if uncertain:
        print("\n" + uncertainty_table(uncertain))
        calibration_plot(uncertain, args.calibration)
        print(f"\ncalibration: {args.calibration}")


if __name__ == "__main__":
    main()
