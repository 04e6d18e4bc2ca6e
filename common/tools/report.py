"""Compare runs: a markdown table of their test metrics and the per-label error plot DIR papers show.

    python -m common.tools.report RUN_DIR [RUN_DIR ...] [--metric l1] [--plot report.png]

Reads ``results.json`` and ``test_predictions.npz`` from each run folder (written at the end of training).
The plot shows each run's test error per label over the training label histogram, with the Many/Medium/Few
label ranges shaded.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from common.metrics import SHOTS, shot_counts

METRIC_NAMES = {"l1": "MAE", "mse": "MSE", "gmean": "G-Mean"}


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
    results["name"] = run_dir.name
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


def depth_markdown_table(runs: list[dict], split: str = "test") -> str:
    """One row per depth run: RMSE and δ1 for All / Many / Medium / Few, and the evaluated pixels."""
    header = ["run"] + [f"RMSE {shot}" for shot in SHOTS] + [f"δ1 {shot}" for shot in SHOTS] + ["pixels"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for run in runs:
        metrics = run[split]
        value = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
        cells = [run["name"]] + [value(metrics[s]["rmse"]) for s in SHOTS] + [value(metrics[s]["delta1"])
                                                                             for s in SHOTS]
        lines.append("| " + " | ".join(cells + [str(metrics["all"]["count"])]) + " |")
    return "\n".join(lines)


def depth_plot(runs: list[dict], path) -> None:
    """RMSE per 0.1-m ground-truth bin of each depth run, over the training pixel histogram, shots shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from common.bins import DEPTH_BINS

    runs = [r for r in runs if "predictions" in r]
    if not runs:
        raise SystemExit("error: no run folder has test_predictions.npz; nothing to plot.")
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
    for run in runs:
        preds, labels = run["predictions"]["preds"], run["predictions"]["labels"]
        bins = DEPTH_BINS.index(labels)
        present = np.unique(bins)
        rmse = [math.sqrt(float(np.mean((preds[bins == b] - labels[bins == b]) ** 2))) for b in present]
        ax.plot(present / 10 + 0.05, rmse, marker=".", lw=1.2, label=run["name"])
    ax.set_zorder(hist_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("ground-truth depth (m)")
    ax.set_ylabel("test RMSE per bin (m)")
    legend = ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8, ncol=3, frameon=False)
    ax.add_artist(legend)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in colours.values()]
    ax.legend(handles, [f"{s}-shot" for s in colours], loc="upper right", bbox_to_anchor=(1, -0.15), fontsize=8,
              ncol=3, frameon=False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(runs: list[dict], split: str = "test") -> str:
    """One row per run: MAE, MSE and G-Mean for All / Many / Medium / Few (depth runs: RMSE and δ1)."""
    if runs and all(is_depth(run) for run in runs):
        return depth_markdown_table(runs, split)
    if any(is_depth(run) for run in runs):
        raise SystemExit("error: these runs mix depth and age/text benchmarks; report them separately.")
    header = ["run"] + [f"{METRIC_NAMES[m]} {shot}" for m in ("l1", "mse", "gmean") for shot in SHOTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for run in runs:
        metrics = run[split]
        cells = [run["name"]]
        for m in ("l1", "mse", "gmean"):
            for shot in SHOTS:
                value = metrics[shot][m]
                cells.append("—" if value is None or (isinstance(value, float) and math.isnan(value))
                             else f"{value:.3f}")
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


def plot(runs: list[dict], path, metric: str = "l1") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if "predictions" in r]
    if not runs:
        raise SystemExit("error: no run folder has test_predictions.npz; nothing to plot.")
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
    for run in runs:
        values, errors = per_label_error(run["predictions"], metric)
        ax.plot(values, errors, marker=".", lw=1.2, label=run["name"])
    ax.set_zorder(hist_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("label")
    ax.set_ylabel(f"test {METRIC_NAMES[metric]} per label")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in colours.values()]
    shots_present = {("many" if c > many else "few" if c < low else "medium") for c in label_counts}
    # Both legends below the axes, where they cannot cover a curve.
    legend = ax.legend(loc="upper left", bbox_to_anchor=(0, -0.15), fontsize=8, ncol=3, frameon=False)
    ax.add_artist(legend)
    ax.legend(handles, [f"{s}-shot" for s in colours], loc="upper right", bbox_to_anchor=(1, -0.15), fontsize=8,
              ncol=3, frameon=False)
    if len(shots_present) == 1:
        ax.set_title(f"every test label is {shots_present.pop()}-shot: the thresholds (> {many:g}, < {low:g} "
                     "training samples) do not fit this data's counts", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (each with results.json)")
    parser.add_argument("--metric", default="l1", choices=list(METRIC_NAMES))
    parser.add_argument("--plot", default="report.png", help="where to save the per-label error plot")
    args = parser.parse_args(argv)
    runs = [load_run(r) for r in args.runs]
    print(markdown_table(runs))
    note = shot_note(runs)
    if note:
        print(f"\n{note}")
    if is_depth(runs[0]):
        depth_plot(runs, args.plot)
    else:
        plot(runs, args.plot, args.metric)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
