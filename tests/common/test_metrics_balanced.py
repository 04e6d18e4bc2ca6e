"""Balanced metrics (bMAE, bMSE), SERA and the density relevance, per shot (common/metrics.py, common/depth.py), and
model selection on them (--select_on).

Each metric is checked against hand-computed golden values and against a direct re-statement of its definition:
loops over the test labels for bMAE/bMSE, and for SERA both a numerical integration of SER_t on a fine grid and the
exact integral of the step function between its jumps.
"""
import argparse
import math

import numpy as np
import pytest

from common.bins import STSB_BINS
from common.errors import RunError
from common.metrics import (Selection, balanced_shot_metrics, balanced_table, correlation_shot_metrics, relevance,
                            selection_from_args, sera, shot_metrics, shot_table)

SHOTS = ("all", "many", "medium", "few")
# Labels 1 (150 training samples: many), 2 (50: medium), 3 (5: few) and 4 (none: few).
TRAIN = np.array([1] * 150 + [2] * 50 + [3] * 5, dtype=np.float64)
LABELS = np.array([1, 1, 2, 2, 3, 3, 4], dtype=np.float64)
PREDS = np.array([1.5, 0, 2, 4, 3.25, 1, 4], dtype=np.float64)


def ser(t: float, errors, phi) -> float:
    """SER_t of Ribeiro & Moniz: the squared errors of the samples whose relevance is at least t."""
    return float(sum(e * e for e, p in zip(errors, phi) if p >= t))


def sera_by_steps(errors, phi) -> float:
    """∫₀¹ SER_t dt of the step function, summed exactly between the distinct relevance values: on (v_{k-1}, v_k]
    SER_t is SER_{v_k}."""
    edges = [0.0] + sorted(set(float(p) for p in phi if p > 0))
    return sum((hi - lo) * ser(hi, errors, phi) for lo, hi in zip(edges[:-1], edges[1:]))


def sera_by_grid(errors, phi, points: int = 200_001) -> float:
    """∫₀¹ SER_t dt by the trapezoid rule on an even grid (``points`` values of t)."""
    grid = np.linspace(0.0, 1.0, points)
    errors, phi = np.asarray(errors, np.float64), np.asarray(phi, np.float64)
    order = np.argsort(phi)
    squared = (errors ** 2)[order]
    # SER at each grid point: the squared errors of the samples with φ ≥ t (a suffix sum over the sorted φ).
    suffix = np.concatenate([np.cumsum(squared[::-1])[::-1], [0.0]])
    values = suffix[np.searchsorted(phi[order], grid, side="left")]
    return float(np.sum((values[1:] + values[:-1]) / 2) * (grid[1] - grid[0]))


def balanced_by_loop(preds, labels, train, many=100, few=20):
    """bMAE/bMSE per shot: the mean over the shot's distinct test labels of each label's mean |e| and e²."""
    count = {label: int((train.astype(np.int64) == label).sum()) for label in np.unique(labels)}
    shot_of = lambda c: "many" if c > many else "few" if c < few else "medium"
    out = {}
    for shot in SHOTS:
        chosen = [label for label in count if shot == "all" or shot_of(count[label]) == shot]
        l1 = [np.mean(np.abs(preds[labels == label] - label)) for label in chosen]
        mse = [np.mean((preds[labels == label] - label) ** 2) for label in chosen]
        out[shot] = (np.mean(l1) if chosen else math.nan, np.mean(mse) if chosen else math.nan, len(chosen))
    return out


# ---- golden values ------------------------------------------------------------------------------------------
def test_golden_values_by_hand():
    """Per label |e| means 0.75, 1, 1.125, 0 and e² means 0.625, 2, 2.03125, 0; relevance 0, 2/3, 29/30, 1."""
    m = shot_metrics(PREDS, LABELS, TRAIN, balanced=True)
    assert m["all"]["bmae"] == pytest.approx((0.75 + 1 + 1.125 + 0) / 4, rel=1e-15)
    assert m["all"]["bmse"] == pytest.approx((0.625 + 2 + 2.03125 + 0) / 4, rel=1e-15)
    assert m["all"]["sera"] == pytest.approx(0 * 1.25 + 2 / 3 * 4 + 29 / 30 * 4.0625 + 1 * 0, rel=1e-14)
    assert m["all"]["bins"] == 4
    assert (m["many"]["bmae"], m["many"]["bmse"], m["many"]["sera"], m["many"]["bins"]) == (0.75, 0.625, 0.0, 1)
    assert m["medium"]["bmae"] == 1.0 and m["medium"]["bmse"] == 2.0 and m["medium"]["bins"] == 1
    # few: label 3 (mean |e| 1.125) and the label 4 without training samples (error 0): two bins.
    assert m["few"]["bmae"] == pytest.approx(0.5625) and m["few"]["bmse"] == pytest.approx(1.015625)
    assert m["few"]["bins"] == 2 and m["few"]["sera"] == pytest.approx(29 / 30 * 4.0625)
    # the sample metrics are those without balanced=True
    plain = shot_metrics(PREDS, LABELS, TRAIN)
    assert set(plain["all"]) == {"mse", "l1", "gmean", "count"}
    for shot in SHOTS:
        assert {k: m[shot][k] for k in plain[shot]} == plain[shot]


def test_relevance_is_one_minus_the_normalised_training_density():
    phi = relevance(np.array([1.0, 2.0, 3.0, 4.0, 2.5]), TRAIN)
    # label 1 is the most frequent (150): 0; label 2: 1 − 50/150; 3: 1 − 5/150; 4 and 2.5 have no training sample: 1
    assert phi.tolist() == pytest.approx([0.0, 1 - 50 / 150, 1 - 5 / 150, 1.0, 1.0], rel=1e-15)
    assert relevance(np.array([3.0]), np.array([], dtype=np.float64)).tolist() == [1.0]
    # with bins: the training samples of each label's bin (STS-B's 0.1-wide bins)
    train = np.array([0.01, 0.02, 0.05, 0.12, 4.99])
    assert relevance(np.array([0.03, 0.15, 2.0, 5.0]), train, STSB_BINS).tolist() == \
        pytest.approx([0.0, 1 - 1 / 3, 1.0, 1 - 1 / 3])


# ---- against direct re-statements -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_metrics_against_a_loop_over_labels(seed):
    rng = np.random.default_rng(seed)
    train = np.repeat(np.arange(12), [150, 120, 60, 40, 25, 19, 5, 1, 0, 300, 101, 100]).astype(np.float64)
    labels = rng.integers(0, 14, 300).astype(np.float64)
    labels[:2] = [13, 12]                              # bins of one sample each (no training samples: few)
    labels[labels == 13] = 12
    labels[0] = 13
    preds = labels + rng.normal(0, 2, labels.size)
    got = shot_metrics(preds, labels, train, balanced=True)
    for shot, (l1, mse, bins) in balanced_by_loop(preds, labels, train).items():
        assert got[shot]["bmae"] == pytest.approx(l1, rel=1e-12)
        assert got[shot]["bmse"] == pytest.approx(mse, rel=1e-12)
        assert got[shot]["bins"] == bins


def test_an_empty_shot_is_nan_with_no_bins():
    train = np.array([5.0] * 200)
    m = shot_metrics(np.array([5.5, 4.0]), np.array([5.0, 5.0]), train, balanced=True)
    for shot in ("medium", "few"):
        assert math.isnan(m[shot]["bmae"]) and math.isnan(m[shot]["bmse"]) and math.isnan(m[shot]["sera"])
        assert m[shot]["bins"] == 0 and m[shot]["count"] == 0
    # one label holding every sample: its balanced error is the sample error; it is the peak, relevance 0
    assert m["all"]["bmae"] == m["all"]["l1"] == 0.75 and m["all"]["sera"] == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_sera_is_the_integral_of_ser_t(seed):
    rng = np.random.default_rng(seed)
    train = np.repeat(np.arange(30), np.resize([5, 150, 60, 0, 250, 19, 20, 101, 40], 30)).astype(np.float64)
    labels = rng.integers(0, 35, 400).astype(np.float64)
    preds = labels + rng.normal(0, 3, 400)
    m = shot_metrics(preds, labels, train, balanced=True)
    phi, errors = relevance(labels, train), preds - labels
    assert m["all"]["sera"] == pytest.approx(sera_by_steps(errors, phi), rel=1e-12)
    assert m["all"]["sera"] == pytest.approx(sera_by_grid(errors, phi), rel=1e-4)
    assert m["all"]["sera"] == pytest.approx(sera(preds, labels, phi), rel=1e-15)
    # per shot: the same integral over that shot's samples
    counts = np.array([(train.astype(np.int64) == label).sum() for label in labels])
    for shot, keep in (("many", counts > 100), ("medium", (counts >= 20) & (counts <= 100)), ("few", counts < 20)):
        assert keep.any()
        assert m[shot]["sera"] == pytest.approx(sera_by_steps(errors[keep], phi[keep]), rel=1e-12)


def test_sera_with_ties_at_the_thresholds():
    """Several samples share a relevance, relevances sit on the grid's points, and 0 and 1 are present."""
    phi = np.array([0.0, 0.25, 0.25, 0.5, 0.5, 0.5, 1.0, 1.0])
    errors = np.array([3.0, 1.0, -2.0, 0.5, 0.5, -1.0, 2.0, 0.0])
    exact = 0.25 * (1 + 4) + 0.5 * (0.25 + 0.25 + 1) + 1.0 * (4 + 0)
    assert sera(errors, np.zeros(8), phi) == pytest.approx(exact, rel=1e-15)
    assert sera_by_steps(errors, phi) == pytest.approx(exact, rel=1e-15)
    assert sera_by_grid(errors, phi, points=400_001) == pytest.approx(exact, rel=1e-5)
    with pytest.raises(ValueError, match="must lie in"):
        sera(errors, np.zeros(8), phi + 0.5)


def test_balanced_shot_metrics_is_the_balanced_part_of_shot_metrics():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 11, 200).astype(np.float64)
    preds = labels + rng.normal(0, 2, 200)
    train = np.repeat(np.arange(10), [150, 120, 60, 40, 25, 19, 5, 1, 0, 300]).astype(np.float64)
    old = balanced_shot_metrics(preds, labels, train)
    new = shot_metrics(preds, labels, train, balanced=True)
    for shot in SHOTS:
        assert (old[shot]["mse"], old[shot]["l1"], old[shot]["count"]) == \
            (new[shot]["bmse"], new[shot]["bmae"], new[shot]["bins"])
        assert old[shot]["gmean"] == new[shot]["gmean"]


def test_binned_labels_are_balanced_per_bin():
    """STS-B: a bin (0.1 wide) is one label of the balanced mean, also with the references' shot lists."""
    rng = np.random.default_rng(5)
    train = np.round(np.concatenate([rng.uniform(0, 2, 3000), rng.uniform(2, 5, 1000)]), 2)   # many to few
    labels = np.round(rng.uniform(0, 5, 500), 2)
    preds = labels + rng.normal(0, 0.4, 500)
    lists = {"many": list(range(0, 20)), "medium": list(range(20, 30)), "few": list(range(30, 50))}
    index, train_index = STSB_BINS.index(labels), STSB_BINS.index(train)
    by_count = {"many": lambda b: (train_index == b).sum() > 100, "medium": lambda b: 30 <= (train_index == b).sum()
                <= 100, "few": lambda b: (train_index == b).sum() < 30}
    for shot_bins in (None, lists):
        got = correlation_shot_metrics(preds, labels, train, bins=STSB_BINS, shot_bins=shot_bins, balanced=True)
        for shot in SHOTS:
            in_shot = (lambda b: True) if shot == "all" else (lambda b: b in lists[shot]) if shot_bins else \
                by_count[shot]
            chosen = [b for b in sorted(set(index)) if in_shot(b)]
            assert chosen, shot
            l1 = np.mean([np.mean(np.abs(preds - labels)[index == b]) for b in chosen])
            assert got[shot]["bmae"] == pytest.approx(l1, rel=1e-12) and got[shot]["bins"] == len(chosen)
            keep = np.isin(index, chosen)
            phi = relevance(labels, train, STSB_BINS)
            assert got[shot]["sera"] == pytest.approx(sera_by_steps((preds - labels)[keep], phi[keep]), rel=1e-12)
        assert "pearson" in got["all"] and "bmse" in got["few"]
    plain = correlation_shot_metrics(preds, labels, train, bins=STSB_BINS)
    assert "bmae" not in plain["all"]


def test_depth_balanced_metrics_per_depth_bin():
    from common.bins import DEPTH_BINS
    from common.depth import depth_metrics
    rng = np.random.default_rng(6)
    labels = rng.uniform(0.7, 6.0, 3000).astype(np.float32)
    preds = (labels + rng.normal(0, 0.3, 3000)).astype(np.float32)
    counts = rng.integers(0, 10_000, 100)
    shots = {"many": np.arange(7, 30), "medium": np.arange(30, 45), "few": np.arange(45, 100)}
    plain = depth_metrics(preds, labels, shots)
    assert "bmae" not in plain["all"]
    got = depth_metrics(preds, labels, shots, pixel_counts=counts)
    index = DEPTH_BINS.index(labels)
    errors = preds.astype(np.float64) - labels.astype(np.float64)
    phi = 1 - counts[index] / counts.max()
    for shot in SHOTS:
        chosen = [b for b in sorted(set(index)) if shot == "all" or b in shots[shot]]
        assert got[shot]["bmae"] == pytest.approx(np.mean([np.abs(errors[index == b]).mean() for b in chosen]),
                                                  rel=1e-12)
        assert got[shot]["bmse"] == pytest.approx(np.mean([(errors[index == b] ** 2).mean() for b in chosen]),
                                                  rel=1e-12)
        keep = np.isin(index, chosen)
        assert got[shot]["sera"] == pytest.approx(sera_by_steps(errors[keep], phi[keep]), rel=1e-12)
        assert got[shot]["bins"] == len(chosen)
        assert {k: got[shot][k] for k in plain[shot]} == plain[shot] or math.isnan(plain[shot]["log10"])
    with pytest.raises(ValueError, match="one non-negative count per depth bin"):
        depth_metrics(preds, labels, shots, pixel_counts=counts[:10])


def test_tables_show_the_balanced_rows():
    m = shot_metrics(PREDS, LABELS, TRAIN, balanced=True)
    table = shot_table("test", m)
    assert "bMAE" in table and f"{m['all']['bmae']:8.3f}" in table and f"{m['all']['sera']:12.3f}" in table
    plain = shot_table("test", shot_metrics(PREDS, LABELS, TRAIN))
    assert "bMAE" not in plain and table.startswith(plain)
    assert balanced_table("x", shot_metrics(PREDS, LABELS, TRAIN)) == ""


# ---- --select_on ----------------------------------------------------------------------------------------------
def test_selection_reads_select_on_and_negates_higher_is_better():
    metrics = {"all": {"l1": 2.0, "bmae": 3.0, "pearson": 0.8, "delta1": 0.9}}
    default = selection_from_args(argparse.Namespace(select_on=None), "l1", ("l1", "bmae"))
    assert default.score(metrics) == 2.0 and default.name == "val l1"
    chosen = selection_from_args(argparse.Namespace(select_on="bmae"), "l1", ("l1", "bmae"), split="test")
    assert chosen.score(metrics) == 3.0 and chosen.name == "test bmae"
    assert Selection("pearson").score(metrics) == -0.8 and Selection("delta1").name == "val -delta1"
    assert selection_from_args(argparse.Namespace(), "mse", ("mse",)).metric == "mse"     # old checkpoints' flags
    with pytest.raises(RunError, match=r"^--select_on pearson: this benchmark does not report pearson; choose one "
                                       r"of l1, bmae\.$"):
        selection_from_args(argparse.Namespace(select_on="pearson"), "l1", ("l1", "bmae"))


def age_task(**flags):
    from common.age import AgeTask
    args = argparse.Namespace(many_shot_thr=100, low_shot_thr=20, loss="l1", balanced_metric=False, select_on=None)
    vars(args).update(flags)
    task = AgeTask(args)
    task.train_labels = np.repeat(np.arange(10), [150, 120, 60, 40, 25, 19, 5, 1, 0, 300]).astype(np.float64)
    return task


def test_age_selection_keeps_balanced_metric_and_takes_select_on():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 11, 200).astype(np.float64)
    preds = labels + rng.normal(0, 2, 200)
    for loss, key in (("l1", "l1"), ("mse", "mse")):
        task = age_task(balanced_metric=True, loss=loss)
        old = balanced_shot_metrics(preds, labels, task.train_labels)["all"][key]     # --balanced_metric's score
        assert task.selection_score(preds, labels, task.metrics(preds, labels)) == old
        assert task.selection_name == f"val balanced {key}"
    plain = age_task()
    assert plain.selection_score(preds, labels, plain.metrics(preds, labels)) == \
        shot_metrics(preds, labels, plain.train_labels)["all"]["l1"]
    chosen = age_task(select_on="sera")
    assert chosen.selection_score(preds, labels, chosen.metrics(preds, labels)) == \
        chosen.metrics(preds, labels)["all"]["sera"] and chosen.selection_name == "val sera"
    with pytest.raises(RunError, match="does not report rmse"):
        age_task(select_on="rmse")


def test_select_on_on_the_command_line():
    from common import cli
    parser = cli.build_age_parser("test")
    assert cli.parse(parser, ["--select_on", "bmae"]).select_on == "bmae"
    assert cli.parse(parser, []).select_on is None
    with pytest.raises(SystemExit):
        cli.parse(parser, ["--select_on", "bmae", "--balanced_metric"])
    with pytest.raises(SystemExit):
        cli.parse(parser, ["--select_on", "accuracy"])


def test_select_on_errors_are_one_sentence(capsys):
    from common import cli
    parser = cli.build_age_parser("test")
    with pytest.raises(SystemExit):
        cli.parse(parser, ["--select_on", "bmse", "--balanced_metric"])
    err = capsys.readouterr().err
    assert "--balanced_metric means --select_on bmae (bmse with --loss mse): pass only one of them." in err
    assert err.count("\n") == 2
