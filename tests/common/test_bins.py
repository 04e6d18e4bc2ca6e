"""Label bins: the three benchmarks' grids against the references' own bucketing rules, written out here."""
import numpy as np
import pytest
import torch

from common.bins import AGE_BINS, DEPTH_BINS, STSB_BINS, LabelBins


def test_age_bins_are_int_age_clipped_at_120():
    ages = np.array([0, 0.5, 1, 37.9, 119.99, 120, 121, 186])
    assert AGE_BINS.index(ages).tolist() == [min(120, int(a)) for a in ages]


def test_depth_bins_are_int_of_the_float32_product():
    rng = np.random.default_rng(0)
    # 8-bit training depths (value/255 × 10 m) and millimetre test depths: many values sit on bin edges.
    depths = np.concatenate([np.arange(256) / 255 * 10, np.arange(0, 10001, 7) / 1000,
                             rng.uniform(0, 10, 1000)]).astype(np.float32)
    expected = [min(99, int(np.float32(d) * np.float32(10))) for d in depths]
    assert DEPTH_BINS.index(depths).tolist() == expected
    assert DEPTH_BINS.index(torch.from_numpy(depths)).tolist() == expected


def test_stsb_bins_are_numpy_histogram_bins():
    scores = np.concatenate([np.round(np.arange(0, 5.0001, 0.2), 1), np.arange(0, 5.0001, 0.04),
                             np.random.default_rng(1).uniform(0, 5, 500)]).astype(np.float32)
    expected = [int(np.flatnonzero(np.histogram([s], bins=50, range=(0, 5))[0])[0]) for s in scores]
    assert STSB_BINS.index(scores).tolist() == expected
    np.testing.assert_array_equal(STSB_BINS.histogram(scores), np.histogram(scores, bins=50, range=(0, 5))[0])
    assert STSB_BINS.index(np.float32(5.0)) == 49


def test_histogram_edges_centres_and_range_check():
    bins = LabelBins(-1.0, 0.5, 4)
    np.testing.assert_allclose(bins.edges(), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(bins.centers(), [-0.75, -0.25, 0.25, 0.75])
    assert bins.histogram([-3, -0.75, 0.1, 0.2, 5]).tolist() == [2, 0, 2, 1]
    bins.check_range([-1, 0, 1], "labels")
    with pytest.raises(ValueError, match=r"label 1.5 \(position 1\) is outside the range \[-1, 1\]"):
        bins.check_range([0, 1.5], "labels")
    with pytest.raises(ValueError, match="width"):
        LabelBins(0, 0, 3)
    with pytest.raises(ValueError, match="rule"):
        LabelBins(rule="round")


@pytest.mark.parametrize("bins", [AGE_BINS, DEPTH_BINS, STSB_BINS, LabelBins(-1.5, 0.3, 17), LabelBins(2, 0.25, 9,
                                                                                                       rule="histogram")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
def test_tensor_binning_is_bit_equal_to_the_numpy_rule(bins, dtype):
    """Issue 30: a tensor is binned on its device with no host read, to the same bin as its NumPy values, for
    random labels, every edge and its neighbouring floats, and labels beyond both ends (±inf included)."""
    from host_reads import HostReads
    rng = np.random.default_rng(0)
    edges = bins.edges()
    span = bins.stop - bins.start
    values = np.concatenate([rng.uniform(bins.start - span / 4, bins.stop + span / 4, 5000), edges,
                             np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [-np.inf, np.inf, -1e30, 1e30],
                             np.round(rng.uniform(bins.start, bins.stop, 2000), 1)])
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
                torch.int64: np.int64}[dtype]
    if dtype == torch.int64:
        values = np.round(values[np.isfinite(values)])
    labels = values.astype(np_dtype)
    tensor = torch.from_numpy(labels.copy())
    with HostReads() as reads:
        binned = bins.index(tensor)
    assert reads.count == 0
    assert binned.dtype == torch.int64 and binned.shape == tensor.shape
    np.testing.assert_array_equal(binned.numpy(), bins.index(labels))
    # Shapes are kept: (N, 1) labels give (N, 1) bins.
    np.testing.assert_array_equal(bins.index(tensor.reshape(-1, 1)).numpy()[:, 0], bins.index(labels))
