"""Age shot metrics, docs/methods.md §10.1 and golden values §9 G10.

Expected numbers are the G10 golden values, or computed by ``metrics_shot_loop`` (loops written from §10.1 in
``tests/reference_loops.py``) and ``scipy.stats.gmean``.
"""
import math

import numpy as np
import pytest
import torch
from scipy.stats import gmean

from common.metrics import shot_metrics
from reference_loops import metrics_shot_loop
import scipy.stats
from common.metrics import ause, calibration_bins, uncertainty_metrics

SHOTS = ("all", "many", "medium", "few")
KEYS = ("mse", "l1", "gmean", "count")

# ---- §9 G10 ---------------------------------------------------------------------------------------------------
G10_TRAIN = [1] * 150 + [2] * 50 + [3] * 5
G10_LABELS = [1, 1, 2, 2, 3, 3]
G10_PREDS = [1.5, 0, 2, 4, 3.25, 1]
# the document calls the medium shot "median" and the few shot "low"
G10 = {"many": (0.625, 0.75, 0.707107), "medium": (2.0, 1.0, 0.0), "few": (2.03125, 1.125, 0.707107)}


def _check_structure(out):
    assert set(out) == set(SHOTS)
    for shot in SHOTS:
        assert set(out[shot]) == set(KEYS), shot


def _assert_same(out, expected, rtol=1e-10):
    for shot in SHOTS:
        assert int(out[shot]["count"]) == expected[shot]["count"], shot
        for key in ("mse", "l1", "gmean"):
            got, exp = float(out[shot][key]), expected[shot][key]
            if math.isnan(exp):
                assert math.isnan(got), (shot, key)
            else:
                assert got == pytest.approx(exp, rel=rtol, abs=1e-12), (shot, key)


@pytest.mark.parametrize("kind", ["numpy", "tensor", "tensor-2d", "list-like"])
def test_golden_g10(kind):
    if kind == "numpy":
        args = (np.array(G10_PREDS), np.array(G10_LABELS, dtype=np.float32), np.array(G10_TRAIN, dtype=np.float32))
    elif kind == "tensor":
        args = (torch.tensor(G10_PREDS), torch.tensor(G10_LABELS, dtype=torch.float32), torch.tensor(G10_TRAIN))
    elif kind == "tensor-2d":  # [N,1] predictions and labels, as the validation loop collects them
        args = (torch.tensor(G10_PREDS).view(-1, 1), torch.tensor(G10_LABELS, dtype=torch.float32).view(-1, 1),
                np.array(G10_TRAIN, dtype=np.float32).reshape(-1, 1))
    else:
        args = (np.array(G10_PREDS).reshape(2, 3), np.array(G10_LABELS).reshape(3, 2), np.array(G10_TRAIN))
    out = shot_metrics(*args)
    _check_structure(out)
    for shot, (mse, l1, gm) in G10.items():
        assert float(out[shot]["mse"]) == pytest.approx(mse, rel=1e-6)
        assert float(out[shot]["l1"]) == pytest.approx(l1, rel=1e-6)
        assert float(out[shot]["gmean"]) == pytest.approx(gm, abs=1e-6)
        assert int(out[shot]["count"]) == 2
    # overall metrics over all six test samples (one zero error ⇒ G-mean 0)
    _assert_same(out, metrics_shot_loop(G10_PREDS, G10_LABELS, G10_TRAIN), rtol=1e-6)
    assert float(out["all"]["gmean"]) == 0.0
    assert float(out["medium"]["gmean"]) == 0.0


def test_empty_shots_give_nan_and_zero_count():
    train = [5] * 150 + [6] * 150
    out = shot_metrics(np.array([5.5, 6.0, 4.0]), np.array([5.0, 6.0, 6.0]), np.array(train))
    _check_structure(out)
    for shot in ("medium", "few"):
        assert int(out[shot]["count"]) == 0
        for key in ("mse", "l1", "gmean"):
            assert math.isnan(float(out[shot][key])), (shot, key)
    assert int(out["many"]["count"]) == 3
    _assert_same(out, metrics_shot_loop([5.5, 6.0, 4.0], [5, 6, 6], train))


def test_single_shot_all_few():
    out = shot_metrics(np.array([1.0, 2.0]), np.array([10.0, 11.0]), np.array([10, 11, 12]))
    assert int(out["few"]["count"]) == 2 and int(out["many"]["count"]) == 0 and int(out["medium"]["count"]) == 0
    assert math.isnan(float(out["many"]["mse"])) and math.isnan(float(out["medium"]["l1"]))
    assert float(out["few"]["gmean"]) == pytest.approx(gmean([9.0, 9.0]), rel=1e-12)


@pytest.mark.parametrize("count,shot", [(101, "many"), (100, "medium"), (20, "medium"), (19, "few"), (0, "few")])
def test_shot_thresholds(count, shot):  # many: > 100, few: < 20, medium otherwise
    train = [7] * count + [50] * 500
    out = shot_metrics(np.array([8.0, 7.5]), np.array([7.0, 7.0]), np.array(train))
    assert int(out[shot]["count"]) == 2
    assert float(out[shot]["mse"]) == pytest.approx((1.0 + 0.25) / 2, rel=1e-12)
    assert float(out[shot]["l1"]) == pytest.approx(0.75, rel=1e-12)
    assert float(out[shot]["gmean"]) == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_custom_thresholds():
    rng = np.random.default_rng(4)
    train = np.repeat(np.arange(10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    labels = rng.integers(0, 10, size=40).astype(np.float64)
    preds = labels + rng.normal(0, 1, size=40)
    out = shot_metrics(preds, labels, train, many_shot_thr=6, low_shot_thr=3)
    _assert_same(out, metrics_shot_loop(preds, labels, train, many_shot_thr=6, low_shot_thr=3))


def _random_case(seed, n):
    rng = np.random.default_rng(seed)
    counts = rng.choice([0, 3, 19, 20, 55, 100, 101, 240], size=25)
    train = np.repeat(np.arange(25), counts).astype(np.float32)
    labels = rng.integers(0, 25, size=n).astype(np.float32)
    labels[: n // 3] = labels[0]  # duplicate labels
    preds = labels + rng.normal(0, 3, size=n)
    return preds, labels, train


@pytest.mark.parametrize("n", [1, 2, 15, 500])
def test_random_matches_loop_and_scipy(n):
    preds, labels, train = _random_case(n, n)
    out = shot_metrics(preds, labels, train)
    _check_structure(out)
    _assert_same(out, metrics_shot_loop(preds, labels, train))
    # G-means against scipy on the same shot membership
    loop = metrics_shot_loop(preds, labels, train)
    assert float(out["all"]["gmean"]) == pytest.approx(gmean(np.abs(preds - labels)), rel=1e-10)
    counts = np.array([(train.astype(np.int64) == y).sum() for y in labels])
    for shot, mask in [("many", counts > 100), ("medium", (counts >= 20) & (counts <= 100)), ("few", counts < 20)]:
        assert int(out[shot]["count"]) == int(mask.sum()) == loop[shot]["count"]
        if mask.any():
            assert float(out[shot]["gmean"]) == pytest.approx(gmean(np.abs(preds - labels)[mask]), rel=1e-10)
    assert sum(int(out[s]["count"]) for s in ("many", "medium", "few")) == n == int(out["all"]["count"])


def test_tensor_and_numpy_inputs_agree():
    preds, labels, train = _random_case(7, 60)
    a = shot_metrics(preds, labels, train)
    b = shot_metrics(torch.tensor(preds).view(-1, 1), torch.tensor(labels).view(-1, 1), torch.tensor(train))
    for shot in SHOTS:
        assert int(a[shot]["count"]) == int(b[shot]["count"])
        for key in ("mse", "l1", "gmean"):
            x, y = float(a[shot][key]), float(b[shot][key])
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6)


def test_zero_error_gives_zero_gmean():
    preds = np.array([3.0, 4.5, 5.0])
    labels = np.array([3.0, 4.0, 6.0])
    out = shot_metrics(preds, labels, np.array([3] * 200 + [4] * 200 + [6] * 200))
    assert float(out["all"]["gmean"]) == 0.0 and float(out["many"]["gmean"]) == 0.0
    assert float(out["all"]["l1"]) == pytest.approx(0.5, rel=1e-12)


def test_train_labels_truncated_and_fractional_test_labels_are_few():  # §10.1
    # training ages 7.2 and 7.9 count as 7; a test label 7.5 matches no integer training label (count 0 → few)
    train = np.array([7.2] * 60 + [7.9] * 60 + [9.0] * 30)
    out = shot_metrics(np.array([7.0, 8.0, 9.5]), np.array([7.0, 7.5, 9.0]), train)
    assert int(out["many"]["count"]) == 1  # label 7: 120 training samples
    assert int(out["medium"]["count"]) == 1  # label 9: 30
    assert int(out["few"]["count"]) == 1  # label 7.5: 0
    assert float(out["few"]["l1"]) == pytest.approx(0.5, rel=1e-12)


def test_balanced_shot_metrics_against_a_loop():
    """Balanced MSE/L1 (BMSE's --balanced_metric): per shot, the mean over labels of per-label means."""
    from common.metrics import balanced_shot_metrics
    rng = np.random.default_rng(7)
    train = np.repeat(np.arange(10), [150, 120, 60, 40, 25, 19, 5, 1, 0, 300])
    labels = rng.integers(0, 11, 200).astype(float)
    preds = labels + rng.normal(0, 2, 200)
    got = balanced_shot_metrics(preds, labels, train)
    counts = {l: int((train == l).sum()) for l in np.unique(labels)}
    shot_of = lambda c: "many" if c > 100 else "few" if c < 20 else "medium"
    for shot in ("all", "many", "medium", "few"):
        chosen = [l for l in counts if shot == "all" or shot_of(counts[l]) == shot]
        mse = np.mean([np.mean((preds[labels == l] - l) ** 2) for l in chosen])
        l1 = np.mean([np.mean(np.abs(preds[labels == l] - l)) for l in chosen])
        assert got[shot]["mse"] == pytest.approx(mse, rel=1e-12)
        assert got[shot]["l1"] == pytest.approx(l1, rel=1e-12)
        assert got[shot]["count"] == len(chosen)


def test_binned_shots_count_training_samples_per_bin():
    """With label bins (STS-B: 0.1-wide), a test label's shot is its bin's training count (loop check)."""
    from common.bins import STSB_BINS
    rng = np.random.default_rng(0)
    train = np.round(rng.uniform(0, 5, 3000), 2).astype(np.float32)
    test = np.round(rng.uniform(0, 5, 400), 2).astype(np.float32)
    preds = test + rng.normal(0, 0.5, 400).astype(np.float32)
    metrics = shot_metrics(preds, test, train, 70, 55, bins=STSB_BINS)
    edges = np.linspace(0, 5, 51).astype(np.float32)
    bin_of = lambda y: min(49, int(np.searchsorted(edges, np.float32(y), side="right") - 1))
    per_bin = {}
    for y in train:
        per_bin[bin_of(y)] = per_bin.get(bin_of(y), 0) + 1
    count = [per_bin.get(bin_of(y), 0) for y in test]
    for shot, keep in (("many", lambda c: c > 70), ("medium", lambda c: 55 <= c <= 70), ("few", lambda c: c < 55)):
        chosen = [i for i in range(400) if keep(count[i])]
        assert metrics[shot]["count"] == len(chosen) > 0
        assert metrics[shot]["l1"] == pytest.approx(np.mean([abs(float(preds[i]) - float(test[i])) for i in chosen]))


# -- uncertainty metrics ----------------------------------------------------------------------------------------------
def test_calibration_bins_and_uncertainty_metrics_against_their_statements():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 3.0, 1000)
    labels = rng.normal(size=1000) * 10
    preds = labels + rng.normal(size=1000) * sigma
    rmv, rmse, count = calibration_bins(preds, labels, sigma)
    order = np.argsort(sigma, kind="stable")
    for g, part in enumerate(np.array_split(order, 10)):
        assert math.isclose(rmv[g], math.sqrt(np.mean(sigma[part] ** 2)))
        assert math.isclose(rmse[g], math.sqrt(np.mean((preds[part] - labels[part]) ** 2)))
        assert count[g] == len(part)
    metrics = uncertainty_metrics(preds, labels, sigma)
    assert math.isclose(metrics["nll"], -scipy.stats.norm.logpdf(labels, preds, sigma).mean(), rel_tol=1e-12)
    assert math.isclose(metrics["ence"], np.mean(np.abs(rmv - rmse) / rmv))
    assert metrics["ence"] < 0.15                              # the noise was drawn with these σ


def test_ause_is_zero_for_a_perfect_ranking_and_positive_for_a_reversed_one():
    errors = np.arange(1, 101, dtype=float)
    preds, labels = errors, np.zeros(100)
    assert ause(preds, labels, errors) == 0.0
    reversed_ = ause(preds, labels, -errors)
    # By hand: removing a fraction f of the smallest errors leaves the mean of the largest (1 − f), the oracle the
    # mean of the smallest (1 − f); both over the full mean, trapezoids over f = 0, 0.01, …, 0.99.
    fractions = np.arange(100) / 100
    worst = np.array([errors[int(f * 100):].mean() for f in fractions]) / errors.mean()
    best = np.array([errors[:100 - int(f * 100)].mean() for f in fractions]) / errors.mean()
    gap = worst - best
    assert math.isclose(reversed_, float(np.sum((gap[1:] + gap[:-1]) / 2) / 100))
    assert reversed_ > 0.5
