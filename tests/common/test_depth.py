"""The dense-label pieces (common/depth.py): depth metrics against hand-computed values, the balanced test mask, the
raw (unrescaled) pixel weights."""
import math
import warnings

import numpy as np
import pytest

from common.bins import DEPTH_BINS
from common.depth import balanced_mask, depth_metrics, pixel_bucket_weights


def test_depth_metrics_against_hand_computed_values():
    pred = np.array([1.0, 2.2, 3.9, 0.8, 5.5], dtype=np.float32)
    true = np.array([1.1, 2.0, 3.0, 1.0, 9.95], dtype=np.float32)
    shots = {"many": np.array([10, 20]), "medium": np.array([30]), "few": np.array([8, 99])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = depth_metrics(pred, true, shots)
    p, t = pred.astype(np.float64), true.astype(np.float64)
    e = p - t
    assert m["all"]["mse"] == pytest.approx(np.mean(e ** 2), rel=1e-6)
    assert m["all"]["rmse"] == pytest.approx(math.sqrt(np.mean(e ** 2)), rel=1e-6)
    assert m["all"]["mae"] == pytest.approx(np.mean(abs(e)), rel=1e-6)
    assert m["all"]["absrel"] == pytest.approx(np.mean(abs(e) / t), rel=1e-6)
    assert m["all"]["log10"] == pytest.approx(np.mean(abs(np.log10(p) - np.log10(t))), rel=1e-6)
    ratio = np.maximum(p / t, t / p)
    for k in (1, 2, 3):
        assert m["all"][f"delta{k}"] == pytest.approx(np.mean(ratio <= 1.25 ** k), abs=1e-7)
    # bins: 1.1 → 11 (in no shot list), 2.0 → 20, 3.0 → 30, 1.0 → 10, 9.95 → 99
    assert (m["many"]["count"], m["medium"]["count"], m["few"]["count"]) == (2, 1, 1)
    assert m["few"]["rmse"] == pytest.approx(abs(5.5 - 9.95), rel=1e-6)
    assert not caught
    # Degenerate: an empty shot and a non-positive prediction give NaN with warnings, no exception.
    with pytest.warns(UserWarning):
        m = depth_metrics(np.array([-0.5, 2.0], np.float32), np.array([1.5, 2.0], np.float32), shots)
    assert math.isnan(m["all"]["log10"]) and m["few"]["count"] == 0 and math.isnan(m["few"]["rmse"])


def test_balanced_mask_takes_the_same_count_from_every_bin_from_0_7_m():
    rng = np.random.default_rng(0)
    depths = rng.gamma(3.0, 1.0, (6, 20, 30)).clip(0.1, 9.99).astype(np.float32)
    mask = balanced_mask(depths, seed=1)
    bins = DEPTH_BINS.index(depths)
    counts = np.bincount(bins.reshape(-1), minlength=100)
    per_bin = counts[counts > 0].min()
    chosen = np.bincount(bins[mask.astype(bool)], minlength=100)
    assert mask.dtype == np.uint8 and mask.shape == depths.shape
    assert (chosen[:7] == 0).all()
    assert all(chosen[b] == (per_bin if counts[b] else 0) for b in range(7, 100))
    assert np.array_equal(mask, balanced_mask(depths, seed=1))


@pytest.mark.parametrize("reweight", ["inverse", "sqrt_inv"])
def test_pixel_weights_without_rescaling_are_the_raw_inverse_counts(reweight):
    """``rescale=False`` (BSAM's ``--bsam_weights raw``): ``1/n'_b``, the bins below ``bucket_start`` copying the
    first tracked one, without the pixel-weighted mean-1 factor."""
    counts = np.array([0, 3, 40, 900, 1600, 250, 9, 0, 4], dtype=np.float64)
    effective = np.sqrt(counts) if reweight == "sqrt_inv" else counts.copy()
    effective[:2] = effective[2]
    expected = np.where(effective > 0, 1.0 / np.where(effective > 0, effective, 1), 0.0)
    raw = pixel_bucket_weights(counts, reweight, bucket_start=2, rescale=False)
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    rescaled = pixel_bucket_weights(counts, reweight, bucket_start=2)
    np.testing.assert_allclose(rescaled, raw * (counts.sum() / (counts * raw).sum()), rtol=1e-6)
