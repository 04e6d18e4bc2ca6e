"""STS-B-DIR evaluation and label bins: correlations, shots (the reference's hard-coded lists and the split's counts),
LDS weights on the 0.1 bins, and FDS's neighbour filling of empty buckets."""
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from common.bins import STSB_BINS
from common.fds import FDS
from common.lds import get_lds_kernel_window, prepare_weights
from common.metrics import correlation_shot_metrics, pearson, spearman, shot_counts
from folders import folder_module

read_pair_tsv = folder_module("sts-b-dir", "text").read_pair_tsv
ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "sts-b-dir"
needs_real_split = pytest.mark.skipif(not (REAL / "test_new.tsv").is_file(), reason=f"no STS-B-DIR split at {REAL}")

# DIR's train_new per 0.1 bin (docs/datasets.md §1.4) and the reference's hard-coded shot lists (util.STSShotAverage).
TRAIN_PER_BIN = [428, 4, 96, 2, 98, 9, 86, 14, 97, 1, 203, 1, 139, 7, 117, 22, 111, 17, 118, 1, 186, 3, 192, 7, 111,
                 27, 150, 35, 143, 1, 357, 6, 332, 22, 239, 55, 209, 71, 257, 5, 352, 3, 229, 4, 126, 20, 115, 25, 133,
                 263]
MANY = [0] + list(range(10, 49, 2)) + [49]
MEDIUM = [2, 4, 6, 8, 27, 35, 37]
FEW = sorted(set(range(50)) - set(MANY) - set(MEDIUM))


def labels_from_histogram(counts):
    """Scores at each bin's lower edge + 0.05 (inside the bin whatever the float rounding), bin 49 at 5.0."""
    values = [min(5.0, 0.1 * b + 0.05) if b < 49 else 5.0 for b in range(50)]
    return np.repeat(np.float32(values), counts)


def test_thresholds_100_30_give_the_reference_shot_lists():
    train = labels_from_histogram(TRAIN_PER_BIN)
    assert STSB_BINS.histogram(train).tolist() == TRAIN_PER_BIN
    centres = labels_from_histogram([1] * 50)
    counts = shot_counts(centres, train, STSB_BINS)
    assert np.flatnonzero(counts > 100).tolist() == MANY
    assert np.flatnonzero((counts >= 30) & (counts <= 100)).tolist() == MEDIUM
    assert np.flatnonzero(counts < 30).tolist() == FEW


@needs_real_split
def test_real_split_shot_counts_and_histogram():
    train, dev, test = (read_pair_tsv(REAL / f"{name}_new.tsv") for name in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (5249, 1000, 1000)
    assert STSB_BINS.histogram(train.scores).tolist() == TRAIN_PER_BIN
    for split, expected in ((test, (756, 170, 74)), (dev, (758, 177, 65))):
        metrics = correlation_shot_metrics(split.scores + 0.1, split.scores, train.scores, 100, 30, STSB_BINS)
        assert (metrics["many"]["count"], metrics["medium"]["count"], metrics["few"]["count"]) == expected
        # The same counts from the hard-coded lists.
        bins = STSB_BINS.index(split.scores)
        assert (np.isin(bins, MANY).sum(), np.isin(bins, MEDIUM).sum(), np.isin(bins, FEW).sum()) == expected
        assert metrics["all"]["mse"] == pytest.approx(0.01, rel=1e-5)
        assert metrics["all"]["pearson"] == pytest.approx(1.0)


def test_pearson_and_spearman_against_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)            # many ties
    y = x + rng.normal(0, 1.5, 200)
    assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    assert spearman(y, np.round(y)) == pytest.approx(scipy.stats.spearmanr(y, np.round(y))[0], abs=1e-12)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and spearman([1, 2, 3], [9, 4, 1]) == pytest.approx(-1)
    # Undefined: fewer than two samples, or a constant input.
    assert math.isnan(pearson([1.0], [2.0])) and math.isnan(pearson([], [])) and math.isnan(pearson([1, 1], [1, 2]))
    assert math.isnan(spearman([3.0], [1.0]))


def test_correlation_shot_metrics_per_shot_and_empty_shots():
    train = labels_from_histogram(TRAIN_PER_BIN)
    labels = np.float32([0.0, 1.0, 1.2, 0.25, 0.45, 0.15])        # bins 0, 10, 12 many; 2, 4 medium; 1 few
    preds = labels + np.float32([0.1, -0.2, 0.3, 0.0, 0.5, -0.1])
    metrics = correlation_shot_metrics(preds, labels, train, 100, 30, STSB_BINS)
    assert [metrics[s]["count"] for s in ("all", "many", "medium", "few")] == [6, 3, 2, 1]
    many = [0, 1, 2]
    assert metrics["many"]["mse"] == pytest.approx(np.mean((preds[many] - labels[many]) ** 2))
    assert metrics["many"]["pearson"] == pytest.approx(scipy.stats.pearsonr(preds[many], labels[many])[0])
    assert math.isnan(metrics["few"]["pearson"]) and math.isnan(metrics["few"]["spearman"])   # one sample
    only_many = correlation_shot_metrics(preds[:3], labels[:3], train, 100, 30, STSB_BINS)
    assert only_many["medium"]["count"] == 0 and math.isnan(only_many["medium"]["mse"])
    assert math.isnan(only_many["medium"]["pearson"])


def test_stsb_lds_weights_match_the_reference_formula():
    """np.histogram over 50 bins, no clipping of `inverse`, constant-padded convolution, 1/n, mean 1 (methods §2.2)."""
    rng = np.random.default_rng(1)
    labels = np.round(rng.uniform(0, 5, 300) / 0.2) * 0.2
    labels[:3] = 5.0
    counts, edges = np.histogram(labels, bins=50, range=(0.0, 5.0))
    window = get_lds_kernel_window("gaussian", 5, 2)
    smoothed = np.array([sum(window[j] * counts[b + j - 2] for j in range(5) if 0 <= b + j - 2 < 50)
                         for b in range(50)])
    for reweight, table in (("inverse", counts.astype(float)), ("sqrt_inv", np.sqrt(counts)), ("lds", smoothed)):
        bins = [49 if y == 5.0 else int(np.flatnonzero(edges > y)[0]) - 1 for y in labels]
        expected = np.array([1 / table[b] for b in bins])
        expected *= len(expected) / expected.sum()
        got = prepare_weights(labels, "inverse" if reweight == "lds" else reweight, reweight == "lds", "gaussian", 5,
                              2, bins=STSB_BINS, clip=None)
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def fill_loop(stats, absent):
    """The reference's neighbour filling, written from docs/methods.md §3.3 (row by row, in order)."""
    stats = [row.clone() for row in stats]
    k = len(stats)
    for b in range(k):
        if absent[b]:
            stats[b] = stats[1].clone() if b == 0 else stats[b - 1].clone() if b == k - 1 else \
                (stats[b - 1] + stats[b + 1]) / 2
    return torch.stack(stats)


def test_fds_fill_empty_buckets_from_neighbours():
    torch.manual_seed(0)
    fds = FDS(3, bucket_num=50, bucket_start=0, bins=STSB_BINS, edge_rule="clamp", clip_min=0.5, clip_max=2,
              momentum=0.9, fill_empty=True)
    plain = FDS(3, bucket_num=50, bucket_start=0, bins=STSB_BINS, edge_rule="clamp", clip_min=0.5, clip_max=2,
                momentum=0.9)
    # Epoch 0: buckets 0, 1, 3, 4, 5, 6 (and 49, from a score of 5.0) are present, among them runs of absent ones.
    labels = torch.tensor([0.0, 0.05, 0.15, 0.35, 0.45, 0.55, 0.65, 0.65, 5.0])
    features = torch.randn(len(labels), 3)
    for epoch, (x, y) in enumerate([(features, labels), (torch.randn(4, 3), torch.tensor([0.05, 2.0, 2.05, 4.95]))]):
        before_mean, before_var = plain.running_mean.clone(), plain.running_var.clone()
        plain.update_running_stats(x, y, epoch)
        fds.running_mean.copy_(before_mean), fds.running_var.copy_(before_var)
        fds.update_running_stats(x, y, epoch)
        absent = (STSB_BINS.histogram(y.numpy()) == 0).tolist()
        torch.testing.assert_close(fds.running_mean, fill_loop(plain.running_mean, absent))
        torch.testing.assert_close(fds.running_var, fill_loop(plain.running_var, absent))
        plain.running_mean.copy_(fds.running_mean), plain.running_var.copy_(fds.running_var)
    # The first bucket copies bucket 1 when absent; the last copies bucket 48.
    fds.update_running_stats(torch.randn(2, 3), torch.tensor([0.15, 2.5]), 2)
    torch.testing.assert_close(fds.running_mean[0], fds.running_mean[1])
    torch.testing.assert_close(fds.running_mean[49], fds.running_mean[48])


def test_an_exact_zero_error_counts_as_1e_10_in_the_stsb_gmean():
    """The STS-B reference replaces zero errors by 1e-10 before the G-mean; the age references let one make it 0."""
    from common.metrics import shot_metrics
    train = labels_from_histogram(TRAIN_PER_BIN)
    labels = np.float32([2.0, 3.0, 4.0])
    preds = labels + np.float32([0.0, 0.5, -0.2])
    errors = np.abs(preds.astype(np.float64) - labels)        # the float32 sums, as the metrics see them
    text = correlation_shot_metrics(preds, labels, train, bins=STSB_BINS)["all"]["gmean"]
    assert text == pytest.approx(scipy.stats.gmean(np.where(errors == 0, 1e-10, errors)), rel=1e-12)
    assert text == pytest.approx((1e-10 * 0.5 * 0.2) ** (1 / 3), rel=1e-6)      # 2.154e-4
    assert shot_metrics(preds, labels, train, bins=STSB_BINS)["all"]["gmean"] == 0.0


def test_the_reference_shot_lists_are_the_folders_and_the_counts_on_dirs_split():
    lists = folder_module("sts-b-dir", "dataset").REFERENCE_SHOT_BINS
    assert (lists["many"], lists["medium"], lists["few"]) == (MANY, MEDIUM, FEW)
    counts = np.asarray(TRAIN_PER_BIN)
    assert np.flatnonzero(counts > 100).tolist() == MANY and np.flatnonzero(counts < 30).tolist() == FEW


def test_shot_lists_decide_the_shots_where_the_counts_would_not():
    """Bin 25 with 35 training pairs (medium by count) that the lists call few, as on RankSim's split, and a made-up
    bin 44 with 5 (few by count) that they call many."""
    train = np.repeat([0.05, 2.55, 4.45], [150, 35, 5])           # bins 0 (150), 25 (35), 44 (5)
    labels = np.array([0.0, 0.05, 2.5, 2.55, 4.45, 4.4])
    preds = labels + np.array([0.1, -0.2, 0.3, 0.4, -0.5, 0.6])
    lists = {"many": MANY, "medium": MEDIUM, "few": FEW}
    by_lists = correlation_shot_metrics(preds, labels, train, bins=STSB_BINS, shot_bins=lists)
    by_counts = correlation_shot_metrics(preds, labels, train, bins=STSB_BINS)
    assert [by_counts[shot]["count"] for shot in ("many", "medium", "few")] == [2, 2, 2]
    assert [by_lists[shot]["count"] for shot in ("many", "medium", "few")] == [4, 0, 2]
    few = np.isin(STSB_BINS.index(labels), FEW)
    assert by_lists["few"]["mse"] == pytest.approx(float(np.mean((preds - labels)[few] ** 2)), rel=1e-12)
    many = np.isin(STSB_BINS.index(labels), MANY)
    assert by_lists["many"]["pearson"] == pytest.approx(pearson(preds[many], labels[many]), rel=1e-12)
    assert math.isnan(by_lists["few"]["pearson"])                  # two samples: no correlation (MIN 3)
    assert math.isnan(by_lists["medium"]["mse"]) and by_lists["all"] == by_counts["all"]


RANKSIM = REAL / "ranksim"
# RankSim's train_new per 0.1 bin, from the published files (../shared/data/sts-b-dir/ranksim/).
RANKSIM_TRAIN_PER_BIN = [428, 2, 98, 2, 98, 15, 80, 12, 97, 3, 195, 3, 145, 5, 119, 22, 111, 26, 109, 1, 190, 4, 188,
                         9, 108, 35, 143, 35, 141, 2, 347, 6, 346, 21, 236, 58, 206, 67, 260, 6, 350, 5, 233, 6, 120,
                         21, 114, 25, 132, 264]


@pytest.mark.skipif(not (RANKSIM / "test_new.tsv").is_file(), reason=f"no copy of RankSim's split at {RANKSIM}")
def test_ranksim_split_shot_counts_by_the_lists_and_by_the_training_counts():
    """RankSim/SRL's published split: the hard-coded lists (--shot_rule lists, what RankSim evaluates with) give
    test 775/175/50 and dev 764/177/59; the training counts give 775/181/44 and 764/184/52. The only bin where
    the two disagree is 25 (35 training pairs: medium by count, few in the lists), holding 6 test pairs."""
    train, dev, test = (read_pair_tsv(RANKSIM / f"{name}_new.tsv") for name in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (5249, 1000, 1000)
    assert STSB_BINS.histogram(train.scores).tolist() == RANKSIM_TRAIN_PER_BIN
    lists = folder_module("sts-b-dir", "dataset").REFERENCE_SHOT_BINS
    shots = ("many", "medium", "few")
    for split, by_lists, by_counts in ((test, (775, 175, 50), (775, 181, 44)), (dev, (764, 177, 59), (764, 184, 52))):
        listed = correlation_shot_metrics(split.scores + 0.1, split.scores, train.scores, bins=STSB_BINS,
                                          shot_bins=lists)
        counted = correlation_shot_metrics(split.scores + 0.1, split.scores, train.scores, 100, 30, STSB_BINS)
        assert tuple(listed[s]["count"] for s in shots) == by_lists
        assert tuple(counted[s]["count"] for s in shots) == by_counts
    assert int((STSB_BINS.index(test.scores) == 25).sum()) == 6
