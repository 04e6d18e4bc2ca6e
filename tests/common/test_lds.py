"""Kernel windows and LDS / inverse-frequency re-weighting, docs/methods.md §2 and golden values §9 G8.

Expected numbers come from the §2.4 table, §2.7 and G8, or from the loops ``lds_kernel_window_loop`` /
``lds_prepare_weights_loop`` of ``tests/reference_loops.py`` (written from §2.1 and §2.4).
"""
import numpy as np
import pytest
import torch

from common.bins import AGE_BINS, LabelBins
from common.lds import get_lds_kernel_window, kernel_window, prepare_weights
from reference_loops import lds_kernel_window_loop, lds_prepare_weights_loop


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _sym(half):  # the table lists the first half of symmetric windows
    return list(half) + list(half[-2::-1])


# ---- §2.4 table ----------------------------------------------------------------------------------------------------
TABLE = [
    ("gaussian", 5, 2, _sym([0.858285, 0.945828, 1]), _sym([0.186251, 0.205248, 0.217003])),
    ("gaussian", 9, 1, _sym([0.000335, 0.011109, 0.135335, 0.606531, 1]),
     _sym([0.000134, 0.004432, 0.053991, 0.241971, 0.398944])),
    ("gaussian", 5, 1, _sym([0.146444, 0.606866, 1]), _sym([0.058423, 0.242105, 0.398944])),
    ("gaussian", 3, 1, _sym([0.72607, 1]), _sym([0.296096, 0.407807])),
    ("triang", 5, 2, _sym([1 / 3, 2 / 3, 1]), _sym([1 / 9, 2 / 9, 3 / 9])),
    ("laplace", 5, 2, _sym([0.367879, 0.606531, 1]), _sym([0.124755, 0.205686, 0.339119])),
    ("gaussian", 1, 2, [1.0], [1.0]),
    ("triang", 1, 1, [1.0], [1.0]),
    ("laplace", 1, 3, [1.0], [1.0]),
]


@pytest.mark.parametrize("kernel,ks,sigma,lds_col,fds_col", TABLE)
def test_kernel_window_table(kernel, ks, sigma, lds_col, fds_col):
    lds = get_lds_kernel_window(kernel, ks, sigma)
    assert isinstance(lds, np.ndarray) and lds.dtype == np.float64 and lds.shape == (ks,)
    np.testing.assert_allclose(lds, lds_col, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_np(kernel_window(kernel, ks, sigma, normalise="max")), lds_col, rtol=0, atol=1e-6)
    fds = _np(kernel_window(kernel, ks, sigma, normalise="sum"))
    assert fds.shape == (ks,)
    np.testing.assert_allclose(fds, fds_col, rtol=0, atol=1e-6)
    assert fds.sum() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_window_is_not_a_sampled_gaussian():
    # §2.4: the reflections fold mass back in; a sampled Gaussian (5, 2) would be 0.6065 0.8825 1 …
    lds = get_lds_kernel_window("gaussian", 5, 2)
    assert abs(lds[0] - 0.6065) > 0.2 and abs(lds[1] - 0.8825) > 0.05


@pytest.mark.parametrize("kernel", ["gaussian", "triang", "laplace"])
@pytest.mark.parametrize("ks", [1, 3, 5, 7, 9, 11])
@pytest.mark.parametrize("sigma", [0.5, 1, 2, 3.5])
def test_kernel_window_matches_loop(kernel, ks, sigma):
    expected_max = lds_kernel_window_loop(kernel, ks, sigma, "max")
    np.testing.assert_allclose(get_lds_kernel_window(kernel, ks, sigma), expected_max, rtol=1e-12, atol=1e-15)
    expected_sum = lds_kernel_window_loop(kernel, ks, sigma, "sum")
    np.testing.assert_allclose(_np(kernel_window(kernel, ks, sigma, normalise="sum")).astype(np.float64),
                               expected_sum, rtol=1e-6, atol=1e-7)


def test_kernel_window_bad_arguments():
    with pytest.raises(ValueError, match="kernel"):
        get_lds_kernel_window("box", 5, 2)
    with pytest.raises(ValueError, match="kernel"):
        kernel_window("Gaussian ", 5, 2, normalise="sum")
    for ks in (4, 0, -1, -3):
        with pytest.raises(ValueError, match="ks"):
            get_lds_kernel_window("gaussian", ks, 2)
        with pytest.raises(ValueError, match="ks"):
            kernel_window("triang", ks, 2, normalise="sum")
    for kernel in ("gaussian", "laplace"):
        for sigma in (0, -1.0):
            with pytest.raises(ValueError, match="sigma"):
                get_lds_kernel_window(kernel, 5, sigma)
            with pytest.raises(ValueError, match="sigma"):
                kernel_window(kernel, 5, sigma, normalise="sum")


# ---- prepare_weights: §9 G8 ----------------------------------------------------------------------------------------------
G8_AGES = np.array([1, 1, 1, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 9], dtype=np.float32)
G8 = {
    ("inverse", False): {1: 1.230769, 2: 1.230769, 3: 1.230769, 5: 0.769231, 9: 1.230769},
    ("inverse+truncated", True): {1: 1.275543, 2: 0.998251, 3: 0.918391, 5: 0.883068, 9: 0.998251},
    ("sqrt_inv", False): {1: 0.970563, 2: 1.941125, 3: 1.372583, 5: 0.686291, 9: 1.941125},
    ("sqrt_inv", True): {1: 0.857699, 2: 0.843577, 3: 0.548523, 5: 0.882609, 9: 3.567706},
}


def _check_per_label(weights, ages, expected):
    assert isinstance(weights, np.ndarray) and weights.dtype == np.float32 and weights.shape == (len(ages),)
    for a, w in zip(ages, weights):
        assert w == pytest.approx(expected[int(a)], abs=1e-6), f"age {a}"


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("row", [("inverse", False), ("sqrt_inv", False), ("sqrt_inv", True)])
def test_golden_g8_rows_hold_with_and_without_truncation(row, truncate):
    reweight, lds = row
    w = prepare_weights(G8_AGES, reweight=reweight, lds=lds, lds_kernel="gaussian", lds_ks=5, lds_sigma=2,
                        truncate_smoothed_counts=truncate)
    _check_per_label(w, G8_AGES, G8[row])


def test_golden_g8_inverse_lds_truncated():
    w = prepare_weights(G8_AGES, reweight="inverse", lds=True, lds_kernel="gaussian", lds_ks=5, lds_sigma=2,
                        truncate_smoothed_counts=True)
    _check_per_label(w, G8_AGES, G8[("inverse+truncated", True)])


def test_inverse_lds_default_keeps_floating_point_counts():
    w = prepare_weights(G8_AGES, reweight="inverse", lds=True, lds_kernel="gaussian", lds_ks=5, lds_sigma=2)
    expected = lds_prepare_weights_loop(G8_AGES, "inverse", True, "gaussian", 5, 2, truncate=False)
    np.testing.assert_allclose(w, expected, rtol=2e-6)
    # the fix changes the numbers: age 1 gets 1.2450 instead of the truncated reference's 1.275543
    assert abs(w[0] - 1.275543) > 1e-2


# ---- §2.7 invariants ----------------------------------------------------------------------------------------------------------
def test_uniform_histogram_with_lds_example():  # §2.7.3
    ages = np.repeat(np.arange(20, 61), 5).astype(np.float32)
    w = prepare_weights(ages, reweight="sqrt_inv", lds=True, lds_kernel="gaussian", lds_ks=5, lds_sigma=2)
    per_age = {int(a): float(x) for a, x in zip(ages, w)}
    for age, value in [(20, 1.5763), (21, 1.1787), (22, 0.9592), (58, 0.9592), (59, 1.1787), (60, 1.5763)]:
        assert per_age[age] == pytest.approx(value, abs=6e-5)
    interior = [per_age[a] for a in range(22, 59)]
    assert max(interior) - min(interior) < 1e-6


def test_inverse_lds_uniform_histogram_only_edges_differ():  # §2.7.3
    ages = np.repeat(np.arange(0, 121), 3).astype(np.float32)  # every bin clipped to 5
    w = prepare_weights(ages, reweight="inverse", lds=True, lds_kernel="gaussian", lds_ks=5, lds_sigma=2)
    per_age = {int(a): float(x) for a, x in zip(ages, w)}
    inner = [per_age[a] for a in range(2, 119)]
    assert max(inner) - min(inner) < 1e-6
    for edge in (0, 1, 119, 120):
        assert per_age[edge] > inner[0] * (1 + 1e-3)
    assert per_age[0] == pytest.approx(per_age[120], rel=1e-6)
    assert per_age[1] == pytest.approx(per_age[119], rel=1e-6)
    assert per_age[0] > per_age[1]


@pytest.mark.parametrize("reweight", ["inverse", "sqrt_inv"])
@pytest.mark.parametrize("per_bin", [1, 3, 7, 2000])
def test_uniform_histogram_without_lds_gives_ones(reweight, per_bin):  # §2.7.2
    ages = np.repeat(np.arange(10, 31), per_bin).astype(np.float32)
    w = prepare_weights(ages, reweight=reweight)
    np.testing.assert_allclose(w, np.ones_like(w), rtol=1e-6)


def _random_labels(seed, n):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 130, size=n).astype(np.float64)
    # duplicates, fractional ages (bin int(y)) and ages beyond 120 (shared bin 120)
    base[: n // 3] = base[0]
    base += rng.choice([0.0, 0.25, 0.75], size=n)
    return base.astype(np.float32)


CONFIGS = [
    ("inverse", False, "gaussian", 5, 2, False),
    ("sqrt_inv", False, "gaussian", 5, 2, False),
    ("inverse", True, "gaussian", 5, 2, False),
    ("inverse", True, "gaussian", 9, 1, True),
    ("inverse", True, "laplace", 5, 2, True),
    ("sqrt_inv", True, "gaussian", 9, 1, False),
    ("sqrt_inv", True, "triang", 7, 1, False),
    ("sqrt_inv", True, "laplace", 3, 0.5, True),
    ("inverse", True, "triang", 5, 2, False),
]


@pytest.mark.parametrize("n", [1, 2, 17, 400])
@pytest.mark.parametrize("config", CONFIGS)
def test_prepare_weights_matches_loop(n, config):
    reweight, lds, kernel, ks, sigma, truncate = config
    labels = _random_labels(n + ks, n)
    # The references' rule bin min(120, int(y)) is AGE_BINS' (without `bins` such labels are refused).
    w = prepare_weights(labels, reweight=reweight, lds=lds, lds_kernel=kernel, lds_ks=ks, lds_sigma=sigma,
                        truncate_smoothed_counts=truncate, bins=AGE_BINS)
    expected = lds_prepare_weights_loop(labels, reweight, lds, kernel, ks, sigma, truncate=truncate)
    assert w.dtype == np.float32 and w.shape == (n,)
    np.testing.assert_allclose(w, expected, rtol=2e-6)
    assert float(np.mean(w.astype(np.float64))) == pytest.approx(1.0, rel=1e-5)  # §2.7.1


@pytest.mark.parametrize("max_target", [10, 50])
def test_prepare_weights_max_target(max_target):
    labels = _random_labels(3, 60) % 70
    for reweight, lds in [("inverse", False), ("sqrt_inv", True)]:
        w = prepare_weights(labels, reweight=reweight, lds=lds, lds_kernel="gaussian", lds_ks=5, lds_sigma=2,
                            bins=LabelBins(0, 1, max_target))
        expected = lds_prepare_weights_loop(labels, reweight, lds, "gaussian", 5, 2, max_target=max_target)
        np.testing.assert_allclose(w, expected, rtol=2e-6)


def test_ages_beyond_120_share_the_last_bin():  # §2.1 step 1
    labels = np.array([30, 30, 120, 121, 150.5, 186, 40], dtype=np.float32)
    w = prepare_weights(labels, reweight="sqrt_inv", bins=AGE_BINS)
    assert w[2] == w[3] == w[4] == w[5]
    # four samples in bin 120 ⇒ weight 1/sqrt(4) relative to 1/sqrt(1) for age 40
    assert w[2] / w[6] == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("reweight", ["inverse", "sqrt_inv"])
def test_weights_monotone_in_clipped_count(reweight):  # §2.7.4
    labels = _random_labels(11, 3000)
    w = prepare_weights(labels, reweight=reweight, bins=AGE_BINS)
    bins = np.minimum(120, labels.astype(np.int64))
    counts = np.bincount(bins, minlength=121)
    eff = np.clip(counts, 5, 1000) if reweight == "inverse" else counts
    order = np.argsort(eff[bins], kind="stable")
    assert np.all(np.diff(w[order].astype(np.float64)) <= 1e-7)


def test_reweight_none_returns_none():
    assert prepare_weights(G8_AGES) is None
    assert prepare_weights(G8_AGES, reweight="none") is None


def test_prepare_weights_bad_arguments():
    with pytest.raises(ValueError, match="lds|reweight"):
        prepare_weights(G8_AGES, reweight="none", lds=True)
    with pytest.raises(ValueError, match="reweight"):
        prepare_weights(G8_AGES, reweight="sqrt")
    for bad in ([1.0, -2.0, 3.0], [1.0, np.nan], [np.inf, 3.0]):
        with pytest.raises(ValueError, match="labels"):
            prepare_weights(np.array(bad, dtype=np.float32), reweight="inverse")
    with pytest.raises(ValueError, match="labels"):
        prepare_weights(np.array([], dtype=np.float32), reweight="sqrt_inv")


def test_prepare_weights_on_a_float_grid_without_clipping():
    """STS-B style: 0.1-wide bins, `inverse` without the age clip: weight ∝ 1/count of the label's bin (loop)."""
    from common.bins import STSB_BINS
    labels = np.array([0.0, 0.05, 0.1, 0.1, 0.1, 2.5, 2.52, 5.0, 4.95, 4.95], dtype=np.float32)
    weights = prepare_weights(labels, "inverse", bins=STSB_BINS, clip=None)
    counts = {}
    for y in labels:
        counts[STSB_BINS.index(y)] = counts.get(STSB_BINS.index(y), 0) + 1
    raw = np.array([1 / counts[STSB_BINS.index(y)] for y in labels])
    np.testing.assert_allclose(weights, raw * len(raw) / raw.sum(), rtol=1e-6)
    clipped = prepare_weights(labels, "inverse", bins=STSB_BINS)          # the age clip makes every count 5
    np.testing.assert_allclose(clipped, np.ones(10), rtol=1e-6)


@pytest.mark.parametrize("reweight", ["inverse", "sqrt_inv"])
def test_prepare_weights_without_rescaling_are_the_raw_inverse_counts(reweight):
    """``rescale=False`` (BSAM's ``--bsam_weights raw``): ``1/n'`` of each sample's bin, not rescaled to mean 1."""
    labels = _random_labels(4, 300)
    counts = np.bincount(np.minimum(labels.astype(np.int64), 120), minlength=121).astype(np.float64)
    effective = np.sqrt(counts) if reweight == "sqrt_inv" else np.clip(counts, 5, 1000)
    expected = [1.0 / effective[min(120, int(y))] for y in labels]
    raw = prepare_weights(labels, reweight, bins=AGE_BINS, rescale=False)
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    rescaled = prepare_weights(labels, reweight, bins=AGE_BINS)
    np.testing.assert_allclose(rescaled, raw * (len(raw) / raw.astype(np.float64).sum()), rtol=1e-6)
    assert abs(raw.mean() - 1) > 0.1                         # the two differ: the raw mean is not 1
