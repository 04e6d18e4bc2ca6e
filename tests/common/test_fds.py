"""FDS (feature distribution smoothing), docs/methods.md §3 (age variant) and golden values §9 G4, G9.

Expected numbers are the G4/G9 golden values or the output of the loops ``fds_*_loop`` in
``tests/reference_loops.py`` (written from §3.2–§3.5), run side by side with the module.
"""
import copy

import numpy as np
import pytest
import torch

from common.fds import FDS
from reference_loops import (fds_groups_loop, fds_smooth_loop, fds_smooth_stats_loop,
                                   fds_update_running_stats_loop, lds_kernel_window_loop)
from common.bins import LabelBins
from common.fds import ProbabilisticFDS
from common.lds import kernel_window

F64 = torch.float64
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BUFFERS = ["running_mean", "running_var", "running_mean_last_epoch", "running_var_last_epoch",
           "smoothed_mean_last_epoch", "smoothed_var_last_epoch", "num_samples_tracked"]


def _set(fds, **buffers):
    with torch.no_grad():
        for name, value in buffers.items():
            buf = getattr(fds, name)
            buf.copy_(torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(buf.shape).to(buf.dtype))
    fds.refresh_calibration()


def _lists(t):
    return t.detach().double().cpu().tolist()


def _set_running_and_roll(fds, running_mean, running_var):
    """Public path to non-trivial calibration: running stats, then the epoch 0 → 1 roll-over (start_update=0)."""
    _set(fds, running_mean=running_mean, running_var=running_var)
    fds.update_last_epoch_stats(1)


# ---- §9 G9 --------------------------------------------------------------------------------------------------------
def _g9_fds():
    fds = FDS(1, bucket_num=5, bucket_start=0, start_update=0, start_smooth=1, kernel="gaussian", ks=3, sigma=1)
    _set(fds, running_mean=[0, 1, 2, 3, 10], running_var=[1, 1, 4, 1, 9])
    fds.update_last_epoch_stats(1)
    return fds


def test_golden_g9_smoothed_stats():
    fds = _g9_fds()
    np.testing.assert_allclose(_lists(fds.smoothed_mean_last_epoch.reshape(-1)),
                               [0.592193, 1, 2, 4.776579, 5.854650], rtol=0, atol=2e-6)
    np.testing.assert_allclose(_lists(fds.smoothed_var_last_epoch.reshape(-1)),
                               [1, 1.888289, 2.223422, 4.257061, 4.262457], rtol=0, atol=2e-6)
    np.testing.assert_allclose(_lists(fds.running_mean_last_epoch.reshape(-1)), [0, 1, 2, 3, 10])
    np.testing.assert_allclose(_lists(fds.running_var_last_epoch.reshape(-1)), [1, 1, 4, 1, 9])


def test_golden_g9_smooth_output():
    fds = _g9_fds()
    x = torch.tensor([[5.0], [0.0], [-1.0]])
    out = fds.smooth(x, torch.tensor([4.0, 2.0, 0.0]), 1)
    assert out.shape == (3, 1) and out.dtype == torch.float32
    np.testing.assert_allclose(_lists(out.reshape(-1)), [2.413697, 0.508886, -0.407807], rtol=0, atol=2e-6)


def test_update_last_epoch_stats_acts_only_on_next_epoch():  # §3.4
    fds = FDS(1, bucket_num=5, bucket_start=0, start_update=0, ks=3, sigma=1)
    _set(fds, running_mean=[0, 1, 2, 3, 10], running_var=[1, 1, 4, 1, 9])
    for epoch in (0, 2, 5):
        fds.update_last_epoch_stats(epoch)
        assert torch.equal(fds.running_mean_last_epoch, torch.zeros(5, 1))
        assert torch.equal(fds.smoothed_var_last_epoch, torch.ones(5, 1))
    fds.update_last_epoch_stats(1)
    np.testing.assert_allclose(_lists(fds.running_mean_last_epoch.reshape(-1)), [0, 1, 2, 3, 10])


# ---- §9 G4 (age calibration) through smooth() ----------------------------------------------------------------------------
G4_X = [[1, 2, 3], [3, 0, -1]]
G4_M1, G4_M2, G4_V2 = [2, 1, 1], [0, 1, 2], [1, 100, 2]


def _set_g4_statistics(fds, v1):
    """§9 G4's last-epoch statistics in bucket 5 (label 5), with running variance ``v1``; other buckets trivial."""
    row = 5
    m1 = np.zeros((10, 3)); m1[row] = G4_M1
    var1 = np.ones((10, 3)); var1[row] = v1
    m2 = np.zeros((10, 3)); m2[row] = G4_M2
    var2 = np.ones((10, 3)); var2[row] = G4_V2
    _set(fds, running_mean_last_epoch=m1, running_var_last_epoch=var1, smoothed_mean_last_epoch=m2,
         smoothed_var_last_epoch=var2)


@pytest.mark.parametrize("v1,expected", [
    ([4, 1, 0], [[-0.5, 4.16227766016838, 3.0], [0.5, -2.1622776601683795, -1.0]]),
    ([4, 1, 0.25], [[-0.5, 4.16227766016838, 7.656854249492381], [0.5, -2.1622776601683795, -3.6568542494923806]]),
])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_golden_g4_calibration(v1, expected, dtype):
    fds = FDS(3, bucket_num=10, bucket_start=0, start_smooth=1, ks=5, sigma=2).to(dtype)
    _set_g4_statistics(fds, v1)
    out = fds.smooth(torch.tensor(G4_X, dtype=dtype), torch.tensor([5.0, 5.0], dtype=dtype), 1)
    tol = 1e-12 if dtype == F64 else 2e-6
    np.testing.assert_allclose(_lists(out), expected, rtol=tol, atol=tol)


def test_calibration_skips_bucket_with_zero_total_variance_and_clips_low():  # §3.5
    fds = FDS(2, bucket_num=4, bucket_start=0, start_smooth=0, ks=3, sigma=1).double()
    _set(fds, running_mean_last_epoch=[[0, 0], [1, 1], [5, 5], [0, 0]],
         running_var_last_epoch=[[1, 1], [0, 0], [4, 4], [1, 1]],
         smoothed_mean_last_epoch=[[0, 0], [9, 9], [-1, 2], [0, 0]],
         smoothed_var_last_epoch=[[1, 1], [3, 3], [0.0004, 400], [1, 1]])
    x = torch.tensor([[2.0, -3.0], [7.0, 9.0]], dtype=F64)
    out = fds.smooth(x, torch.tensor([1.0, 2.0], dtype=F64), 0)
    # bucket 1: Σ v1 = 0 < 1e-10 ⇒ untouched; bucket 2: factor clipped to 0.1 and 10
    expected = [[2.0, -3.0], [(7 - 5) * np.sqrt(0.1) - 1, (9 - 5) * np.sqrt(10) + 2]]
    np.testing.assert_allclose(_lists(out), expected, rtol=1e-12)


# ---- bucketing rule (§3.2) -----------------------------------------------------------------------------------------------
def _distinct_stats(k, d, seed):
    g = torch.Generator().manual_seed(seed)
    return dict(running_mean_last_epoch=torch.randn(k, d, generator=g, dtype=F64),
                running_var_last_epoch=torch.rand(k, d, generator=g, dtype=F64) + 0.5,
                smoothed_mean_last_epoch=torch.randn(k, d, generator=g, dtype=F64),
                smoothed_var_last_epoch=torch.rand(k, d, generator=g, dtype=F64) + 0.5)


@pytest.mark.parametrize("labels,changed", [
    ([1, 2, 5, 9, 12], [False, False, True, True, True]),   # 9 present: 12 joins row K−1; 3 absent: 1, 2 skipped
    ([1, 3, 5, 12, 0], [True, True, True, False, True]),    # 3 present: 0, 1 join row 0; 9 absent: 12 skipped
    ([1, 2, 10, 11], [False, False, False, False]),          # nothing in range
])
def test_boundary_buckets_in_smooth(labels, changed):
    fds = FDS(2, bucket_num=10, bucket_start=3, start_smooth=1, ks=3, sigma=1).double()
    stats = _distinct_stats(7, 2, 0)
    _set(fds, **{k: v.numpy() for k, v in stats.items()})
    x = torch.randn(len(labels), 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = fds.smooth(x, torch.tensor(labels, dtype=F64), 1)
    for i, ch in enumerate(changed):
        assert (not torch.equal(out[i], x[i])) == ch, f"sample {i} (label {labels[i]})"
    expected = fds_smooth_loop(x.tolist(), labels, *(stats[k].tolist() for k in
                               ["running_mean_last_epoch", "running_var_last_epoch",
                                "smoothed_mean_last_epoch", "smoothed_var_last_epoch"]),
                               bucket_start=3, bucket_num=10)
    np.testing.assert_allclose(_lists(out), expected, rtol=1e-12, atol=1e-12)


def test_boundary_buckets_in_update_running_stats():
    fds = FDS(2, bucket_num=10, bucket_start=3, momentum=0.9)
    x = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    fds.update_running_stats(x, torch.tensor([1.0, 2.0, 5.0, 9.0, 12.0, 12.0, 7.0]), 0)
    tracked = fds.num_samples_tracked.tolist()
    assert tracked == [0, 0, 1, 0, 1, 0, 3]  # rows 0 (label 3 absent), 2 (5), 4 (7), 6 (9, 12, 12)
    torch.testing.assert_close(fds.running_mean[6], x[[3, 4, 5]].mean(0))
    torch.testing.assert_close(fds.running_var[6], x[[3, 4, 5]].var(0, unbiased=True))
    torch.testing.assert_close(fds.running_var[2], torch.zeros(2))  # one sample ⇒ biased variance 0
    assert torch.equal(fds.running_mean[0], torch.zeros(2)) and torch.equal(fds.running_var[0], torch.ones(2))


# ---- loop implementation over several epochs ----------------------------------------------------------------------------
def _epoch_batches(seed, d, sizes, low=0, high=14):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        labels = torch.randint(low, high, (n,), generator=g).double()
        if n > 3:
            labels[: n // 3] = labels[0]  # duplicates
        out.append((torch.randn(n, d, generator=g, dtype=F64) * 2 + labels[:, None] * 0.3, labels))
    return out


@pytest.mark.parametrize("momentum", [0.9, 0.0, None])
@pytest.mark.parametrize("sizes", [[1, 2, 7], [33, 1, 16]])
def test_update_and_smooth_match_loop(momentum, sizes):
    d, bucket_num, bucket_start, ks, sigma = 3, 12, 2, 5, 2
    K = bucket_num - bucket_start
    fds = FDS(d, bucket_num=bucket_num, bucket_start=bucket_start, start_update=0, start_smooth=1,
              kernel="gaussian", ks=ks, sigma=sigma, momentum=momentum)
    window = lds_kernel_window_loop("gaussian", ks, sigma, "sum")
    mean, var, tracked = [[0.0] * d for _ in range(K)], [[1.0] * d for _ in range(K)], [0.0] * K
    last_m, last_v = copy.deepcopy(mean), copy.deepcopy(var)
    sm_m, sm_v = copy.deepcopy(mean), copy.deepcopy(var)
    batches = _epoch_batches(sum(sizes), d, sizes * 2)
    for step, (x, y) in enumerate(batches):
        epoch = step // len(sizes)  # each epoch sees len(sizes) batches
        fds.update_last_epoch_stats(epoch)
        if epoch == 1 and step % len(sizes) == 0:
            last_m, last_v = copy.deepcopy(mean), copy.deepcopy(var)
            sm_m, sm_v = fds_smooth_stats_loop(mean, window), fds_smooth_stats_loop(var, window)
        # smoothing uses the last-epoch statistics, before this batch updates the running ones
        got = fds.smooth(x.float(), y.float(), epoch)
        if epoch >= 1:
            expected = fds_smooth_loop(x.tolist(), y.tolist(), last_m, last_v, sm_m, sm_v,
                                       bucket_start=bucket_start, bucket_num=bucket_num)
        else:
            expected = x.tolist()
        np.testing.assert_allclose(_lists(got), expected, rtol=1e-5, atol=1e-5)
        fds.update_running_stats(x.float(), y.float(), epoch)
        mean, var, tracked = fds_update_running_stats_loop(
            mean, var, tracked, x.tolist(), y.tolist(), epoch, start_update=0, momentum=momentum,
            bucket_start=bucket_start, bucket_num=bucket_num)
        np.testing.assert_allclose(_lists(fds.running_mean), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_lists(fds.running_var), var, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_lists(fds.num_samples_tracked), tracked)
        np.testing.assert_allclose(_lists(fds.running_mean_last_epoch), last_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_lists(fds.smoothed_var_last_epoch), sm_v, rtol=1e-5, atol=1e-5)


# ---- §3.8 invariants ---------------------------------------------------------------------------------------------------------
def _group_stats(x, labels, bucket_start, bucket_num):
    out = {}
    for row, idx in fds_groups_loop(labels.tolist(), bucket_start, bucket_num).items():
        g = x[idx]
        out[row] = (g.mean(0), g.var(0, unbiased=True) if len(idx) > 1 else torch.zeros(x.shape[1], dtype=x.dtype))
    return out


@pytest.mark.parametrize("momentum", [0.0, 0.9, None])
def test_first_epoch_stats_are_plain_bucket_stats(momentum):  # §3.8.1 (epoch == start_update ⇒ f = 0)
    fds = FDS(3, bucket_num=8, bucket_start=0, start_update=2, momentum=momentum).double()
    (x, y), = _epoch_batches(5, 3, [20], high=8)
    fds.update_running_stats(x, y, 2)
    for row, (m, v) in _group_stats(x, y, 0, 8).items():
        torch.testing.assert_close(fds.running_mean[row], m)
        torch.testing.assert_close(fds.running_var[row], v)


def test_momentum_zero_and_ema():  # §3.8.1
    for momentum in (0.0, 0.9):
        fds = FDS(2, bucket_num=6, bucket_start=0, start_update=0, momentum=momentum).double()
        (x0, y0), (x1, y1) = _epoch_batches(6, 2, [15, 15], high=6)
        fds.update_running_stats(x0, y0, 0)
        before_m, before_v = fds.running_mean.clone(), fds.running_var.clone()
        fds.update_last_epoch_stats(1)
        fds.update_running_stats(x1, y1, 1)
        stats1 = _group_stats(x1, y1, 0, 6)
        for row in range(6):
            if row in stats1:
                m, v = stats1[row]
                torch.testing.assert_close(fds.running_mean[row], (1 - momentum) * m + momentum * before_m[row])
                torch.testing.assert_close(fds.running_var[row], (1 - momentum) * v + momentum * before_v[row])
            else:  # absent buckets keep their values
                assert torch.equal(fds.running_mean[row], before_m[row])


def test_momentum_none_is_sample_weighted_average():  # §3.8.2
    fds = FDS(2, bucket_num=4, bucket_start=0, start_update=0, momentum=None).double()
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(3, 2, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64) + 1
    fds.update_running_stats(x0, torch.full((3,), 2.0, dtype=F64), 0)
    fds.update_last_epoch_stats(1)
    fds.update_running_stats(x1, torch.full((5,), 2.0, dtype=F64), 1)
    torch.testing.assert_close(fds.running_mean[2], (3 * x0.mean(0) + 5 * x1.mean(0)) / 8)
    torch.testing.assert_close(fds.running_var[2], (3 * x0.var(0) + 5 * x1.var(0)) / 8)
    assert fds.num_samples_tracked[2].item() == 8


def test_update_skipped_for_past_epoch():  # §3.3
    fds = FDS(2, bucket_num=4, bucket_start=0, start_update=0).double()
    fds.update_last_epoch_stats(1)
    (x, y), = _epoch_batches(1, 2, [6], high=4)
    fds.update_running_stats(x, y, 0)
    assert torch.equal(fds.running_mean, torch.zeros(4, 2, dtype=F64))
    assert bool((fds.num_samples_tracked == 0).all())


def test_ks_one_is_identity():  # §3.8.3
    fds = FDS(3, bucket_num=7, bucket_start=0, ks=1, sigma=2)
    (x, y), = _epoch_batches(2, 3, [40], high=7)
    fds.update_running_stats(x.float(), y.float(), 0)
    fds.update_last_epoch_stats(1)
    assert torch.equal(fds.smoothed_mean_last_epoch, fds.running_mean_last_epoch)
    assert torch.equal(fds.smoothed_var_last_epoch, fds.running_var_last_epoch)
    torch.testing.assert_close(fds.smooth(x.float(), y.float(), 1), x.float(), rtol=1e-6, atol=1e-6)


def test_constant_stats_unchanged_by_smoothing():  # §3.8.5
    fds = FDS(3, bucket_num=9, bucket_start=1, ks=9, sigma=1)
    _set(fds, running_mean=np.tile([1.5, -2.0, 0.25], (8, 1)), running_var=np.tile([0.5, 3.0, 1.0], (8, 1)))
    fds.update_last_epoch_stats(1)
    torch.testing.assert_close(fds.smoothed_mean_last_epoch, fds.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fds.smoothed_var_last_epoch, fds.running_var, rtol=1e-6, atol=1e-6)


def test_before_start_smooth_is_identity():  # §3.8.6
    fds = FDS(2, bucket_num=6, bucket_start=0, start_update=0, start_smooth=3, ks=3, sigma=1).double()
    stats = _distinct_stats(6, 2, 3)
    _set_running_and_roll(fds, stats["running_mean_last_epoch"].numpy(), stats["running_var_last_epoch"].numpy())
    (x, y), = _epoch_batches(3, 2, [9], high=6)
    for epoch in (0, 1, 2):
        assert torch.equal(fds.smooth(x, y, epoch), x)
    assert not torch.equal(fds.smooth(x, y, 3), x)


def test_calibration_identity_and_mean_shift():  # §3.8.4, §3.8.7
    fds = FDS(3, bucket_num=6, bucket_start=0, start_smooth=1).double()
    stats = _distinct_stats(6, 3, 4)
    (x, y), = _epoch_batches(4, 3, [12], high=6)
    _set(fds, running_mean_last_epoch=stats["running_mean_last_epoch"].numpy(),
         running_var_last_epoch=stats["running_var_last_epoch"].numpy(),
         smoothed_mean_last_epoch=stats["running_mean_last_epoch"].numpy(),
         smoothed_var_last_epoch=stats["running_var_last_epoch"].numpy())
    torch.testing.assert_close(fds.smooth(x, y, 1), x, rtol=1e-12, atol=1e-12)  # (m1,v1) = (m2,v2)
    _set(fds, smoothed_mean_last_epoch=stats["smoothed_mean_last_epoch"].numpy())
    rows = y.long()
    shift = stats["smoothed_mean_last_epoch"][rows] - stats["running_mean_last_epoch"][rows]
    torch.testing.assert_close(fds.smooth(x, y, 1), x + shift, rtol=1e-12, atol=1e-12)  # v1 = v2
    _set(fds, smoothed_var_last_epoch=stats["smoothed_var_last_epoch"].numpy())
    out = fds.smooth(x, y, 1)
    assert out.shape == x.shape
    m1, v1 = stats["running_mean_last_epoch"][rows], stats["running_var_last_epoch"][rows]
    m2, v2 = stats["smoothed_mean_last_epoch"][rows], stats["smoothed_var_last_epoch"][rows]
    torch.testing.assert_close((out - m2).abs(), torch.sqrt(torch.clamp(v2 / v1, 0.1, 10)) * (x - m1).abs())


# ---- deliberate fixes: copies, no in-place writes ----------------------------------------------------------------------------
def test_last_epoch_stats_are_copies_not_aliases():  # §3.4, §8.2
    fds = FDS(2, bucket_num=5, bucket_start=0, start_update=0, momentum=0.5)
    (x0, y0), (x1, y1) = _epoch_batches(7, 2, [10, 10], high=5)
    fds.update_running_stats(x0.float(), y0.float(), 0)
    fds.update_last_epoch_stats(1)
    saved_m, saved_v = fds.running_mean_last_epoch.clone(), fds.running_var_last_epoch.clone()
    torch.testing.assert_close(saved_m, fds.running_mean)
    fds.update_running_stats(x1.float(), y1.float(), 1)
    assert torch.equal(fds.running_mean_last_epoch, saved_m)
    assert torch.equal(fds.running_var_last_epoch, saved_v)
    assert not torch.equal(fds.running_mean, saved_m)
    assert fds.running_mean_last_epoch.data_ptr() != fds.running_mean.data_ptr()


def test_smooth_does_not_modify_input():  # §8.2
    fds = FDS(3, bucket_num=6, bucket_start=0, start_update=0, start_smooth=1, ks=3, sigma=1).double()
    stats = _distinct_stats(6, 3, 5)
    _set_running_and_roll(fds, stats["running_mean_last_epoch"].numpy(), stats["running_var_last_epoch"].numpy())
    (x, y), = _epoch_batches(5, 3, [8], high=6)
    before = x.clone()
    out = fds.smooth(x, y, 1)
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()
    assert not torch.equal(out, x)


# ---- gradient -----------------------------------------------------------------------------------------------------------------
def test_smooth_gradient_is_per_dimension_scale():
    fds = FDS(3, bucket_num=8, bucket_start=2, start_update=0, start_smooth=1, ks=3, sigma=1).double()
    stats = _distinct_stats(6, 3, 6)
    running_var = stats["running_var_last_epoch"].clone()
    running_var[1, 2] = 0.0  # an invalid (zero-variance) dimension stays unscaled
    running_var[2] = 0.01  # much smaller than its neighbours: the smoothed/raw ratio is clipped at 10
    _set_running_and_roll(fds, stats["running_mean_last_epoch"].numpy(), running_var.numpy())
    v1_all, v2_all = fds.running_var_last_epoch.clone(), fds.smoothed_var_last_epoch.clone()
    assert bool((v2_all[2] / v1_all[2] > 10).all())
    y = torch.tensor([2.0, 3.0, 3.0, 4.0, 0.0, 7.0, 9.0], dtype=F64)  # 0 joins row 0, 9 joins row 5
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: fds.smooth(f, y, 1), (x,))
    upstream = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    fds.smooth(x, y, 1).backward(upstream)
    rows = [0, 1, 1, 2, 0, 5, 5]
    scale = torch.ones(7, 3, dtype=F64)
    for i, r in enumerate(rows):
        for d in range(3):
            if v1_all[r, d] != 0:
                scale[i, d] = torch.sqrt(torch.clamp(v2_all[r, d] / v1_all[r, d], 0.1, 10))
    assert scale[3].tolist() == pytest.approx([10 ** 0.5] * 3) and scale[1, 2] == 1
    torch.testing.assert_close(x.grad, upstream * scale, rtol=1e-12, atol=1e-12)


# ---- state_dict ------------------------------------------------------------------------------------------------------------------
def _trained_fds(**kw):
    fds = FDS(3, bucket_num=9, bucket_start=1, start_update=0, start_smooth=1, ks=5, sigma=2, **kw)
    for epoch, (x, y) in enumerate(_epoch_batches(8, 3, [25, 25, 25], high=9)):
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(x.float(), y.float(), epoch)
    return fds


def test_state_dict_round_trip_smooths_identically():
    fds = _trained_fds()
    fresh = FDS(3, bucket_num=9, bucket_start=1, start_update=0, start_smooth=1, ks=5, sigma=2)
    fresh.load_state_dict(fds.state_dict())
    for name in BUFFERS:
        assert torch.equal(getattr(fresh, name), getattr(fds, name)), name
    (x, y), = _epoch_batches(9, 3, [11], high=9)
    assert torch.equal(fresh.smooth(x.float(), y.float(), 2), fds.smooth(x.float(), y.float(), 2))


def test_state_dict_round_trip_resumes_epoch_counter():
    fds = _trained_fds()
    fresh = FDS(3, bucket_num=9, bucket_start=1, start_update=0, start_smooth=1, ks=5, sigma=2)
    fresh.load_state_dict(fds.state_dict())
    (x, y), = _epoch_batches(10, 3, [11], high=9)
    for module in (fds, fresh):
        module.update_last_epoch_stats(3)
        module.update_running_stats(x.float(), y.float(), 3)
    for name in BUFFERS:
        assert torch.equal(getattr(fresh, name), getattr(fds, name)), name
    assert not torch.equal(fresh.running_mean_last_epoch, fresh.running_mean)  # still copies after loading


# ---- bad inputs ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["update_running_stats", "smooth"])
def test_bad_inputs_raise(method):
    fds = FDS(3, bucket_num=10, bucket_start=0, start_update=0, start_smooth=0)
    call = getattr(fds, method)
    x, y = torch.randn(4, 3), torch.tensor([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="features"):
        call(torch.randn(4, 5), y, 0)
    with pytest.raises(ValueError, match="labels"):
        call(x, torch.tensor([1.0, 2.0, 3.0]), 0)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="features"):
        call(bad, y, 0)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="features"):
        call(bad, y, 0)
    with pytest.raises(ValueError, match="labels"):
        call(x, torch.tensor([1.0, -1.0, 3.0, 4.0]), 0)


def test_bad_kernel_arguments_raise():
    with pytest.raises(ValueError, match="ks"):
        FDS(3, ks=4)
    with pytest.raises(ValueError, match="kernel"):
        FDS(3, kernel="box")
    with pytest.raises(ValueError, match="sigma"):
        FDS(3, sigma=0)


# ---- CUDA --------------------------------------------------------------------------------------------------------------------------
@cuda
@needs_cuda
def test_cuda_matches_cpu():
    cpu = FDS(3, bucket_num=9, bucket_start=1, start_update=0, start_smooth=1, ks=5, sigma=2)
    gpu = FDS(3, bucket_num=9, bucket_start=1, start_update=0, start_smooth=1, ks=5, sigma=2).to("cuda")
    batches = _epoch_batches(11, 3, [25, 25, 25], high=9)
    for epoch, (x, y) in enumerate(batches):
        for fds, dev in ((cpu, "cpu"), (gpu, "cuda")):
            fds.update_last_epoch_stats(epoch)
            fds.update_running_stats(x.float().to(dev), y.float().to(dev), epoch)
    for name in BUFFERS:
        assert getattr(gpu, name).device.type == "cuda"
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=1e-5, atol=1e-5)
    (x, y), = _epoch_batches(12, 3, [17], high=9)
    out = gpu.smooth(x.float().to("cuda"), y.float().to("cuda"), 2)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu.smooth(x.float(), y.float(), 2), rtol=1e-5, atol=1e-5)


# -- label grids and per-pixel features ----------------------------------------------------------------------------
def test_per_pixel_features_equal_the_flattened_vectors():
    """(B, C, H, W) features with (B, 1, H, W) depths are FDS over the B·H·W pixel vectors, shape kept."""
    from common.bins import DEPTH_BINS
    torch.manual_seed(0)
    make = lambda: FDS(3, bucket_num=100, bucket_start=7, ks=5, sigma=2, bins=DEPTH_BINS, edge_rule="clamp",
                       start_update=0, start_smooth=1).double()
    pixel, flat = make(), make()
    features = torch.rand(2, 3, 4, 5, dtype=F64) + 0.1
    depth = torch.rand(2, 1, 4, 5, dtype=F64) * 10
    vectors, labels = features.permute(0, 2, 3, 1).reshape(-1, 3), depth.reshape(-1)
    for epoch in range(3):
        pixel.update_last_epoch_stats(epoch)
        pixel.update_running_stats(features * (epoch + 1), depth, epoch)
        flat.update_last_epoch_stats(epoch)
        flat.update_running_stats(vectors * (epoch + 1), labels, epoch)
    for name in BUFFERS:
        assert torch.equal(getattr(pixel, name), getattr(flat, name)), name
    x = features.clone().requires_grad_()
    out = pixel.smooth(x, depth, 2)
    assert out.shape == features.shape
    torch.testing.assert_close(out.permute(0, 2, 3, 1).reshape(-1, 3), flat.smooth(vectors, labels, 2))
    out.sum().backward()
    assert x.grad.shape == features.shape


def test_clamp_rule_puts_every_depth_in_buckets_7_to_99():
    from common.bins import DEPTH_BINS
    fds = FDS(1, bucket_num=100, bucket_start=7, bins=DEPTH_BINS, edge_rule="clamp")
    depth = torch.tensor([0.05, 0.69, 0.7, 0.75, 5.0, 9.89, 9.9, 12.0])
    assert fds.bucketize(depth).tolist() == [0, 0, 0, 0, 43, 91, 92, 92]


def test_per_pixel_label_shape_is_checked():
    fds = FDS(3, bucket_num=10, bucket_start=0)
    with pytest.raises(ValueError, match=r"per-pixel `labels` must have shape \(2, 1, 4, 5\)"):
        fds.smooth(torch.rand(2, 3, 4, 5), torch.rand(2, 4, 5), 1)


def test_calibration_tables_follow_load_state_dict():
    """Tables are rebuilt on load (no private version counters): a loaded FDS calibrates like the saved one."""
    source = FDS(2, bucket_num=6, bucket_start=0, start_update=0, start_smooth=1, ks=3, sigma=1).double()
    g = torch.Generator().manual_seed(0)
    for epoch in range(3):
        source.update_last_epoch_stats(epoch)
        source.update_running_stats(torch.rand(40, 2, generator=g, dtype=F64) * (epoch + 1),
                                    torch.randint(0, 6, (40,), generator=g).double(), epoch)
    target = FDS(2, bucket_num=6, bucket_start=0, start_update=0, start_smooth=1, ks=3, sigma=1).double()
    x, y = torch.rand(8, 2, dtype=F64), torch.arange(8).double() % 6
    assert torch.equal(target.smooth(x, y, 3), x)            # fresh: identity
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.smooth(x, y, 3), source.smooth(x, y, 3))
    assert not torch.equal(source.smooth(x, y, 3), x)


@pytest.mark.parametrize("v1, expected", [
    # NYUD2's reference value (all dimensions valid, clip 0.2/5), docs/methods.md §9 G4.
    ([4, 1, 0.25], [[-0.5, 3.2360680103302, 6.4721360206604], [0.5, -1.2360680103302002, -2.4721360206604004]]),
    # One invalid dimension: the reference skips the whole bucket (its mask bug); here the valid ones calibrate.
    ([4, 1, 0], [[-0.5, 3.23606797749979, 3.0], [0.5, -1.2360679774997898, -1.0]]),
])
def test_golden_g4_depth_clip_bounds(v1, expected):
    fds = FDS(3, bucket_num=10, bucket_start=0, start_smooth=1, ks=5, sigma=2, clip_min=0.2, clip_max=5).double()
    _set_g4_statistics(fds, v1)
    out = fds.smooth(torch.tensor(G4_X, dtype=F64), torch.tensor([5.0, 5.0], dtype=F64), 1)
    np.testing.assert_allclose(_lists(out), expected, rtol=1e-7, atol=1e-7)   # the reference's row is float32


def test_alias_last_epoch_reproduces_the_reference_aliasing():
    """With alias_last_epoch, FDS behaves as the reference's `last = running` assignment: written out here with
    real aliasing (one tensor under two names) and per-bucket row writes."""
    k, d, start_update = 6, 2, 0
    fds = FDS(d, bucket_num=k, bucket_start=0, start_update=start_update, start_smooth=1, ks=3, sigma=1,
              alias_last_epoch=True).double()
    helper = FDS(d, bucket_num=k, bucket_start=0, ks=3, sigma=1).double()     # only its smoothing across buckets
    ref = {"mean": torch.zeros(k, d, dtype=F64), "var": torch.ones(k, d, dtype=F64)}
    ref.update(last_mean=torch.zeros(k, d, dtype=F64), last_var=torch.ones(k, d, dtype=F64),
               smoothed_mean=torch.zeros(k, d, dtype=F64), smoothed_var=torch.ones(k, d, dtype=F64), epoch=start_update)
    g = torch.Generator().manual_seed(4)
    for epoch in range(4):
        if epoch == ref["epoch"] + 1:                     # reference update_last_epoch_stats: aliasing assignment
            ref["epoch"] += 1
            ref["last_mean"], ref["last_var"] = ref["mean"], ref["var"]
            ref["smoothed_mean"] = helper._smooth_across_buckets(ref["last_mean"])
            ref["smoothed_var"] = helper._smooth_across_buckets(ref["last_var"])
        features = torch.rand(30, d, generator=g, dtype=F64) * (epoch + 1)
        labels = torch.randint(0, k, (30,), generator=g).double()
        for bucket in labels.unique().tolist():             # reference update_running_stats: in-place row writes
            rows = features[labels == bucket]
            factor = 0.0 if epoch == start_update else 0.9
            ref["mean"][int(bucket)] = (1 - factor) * rows.mean(0) + factor * ref["mean"][int(bucket)]
            variance = rows.var(0) if len(rows) > 1 else torch.zeros(d, dtype=F64)
            ref["var"][int(bucket)] = (1 - factor) * variance + factor * ref["var"][int(bucket)]
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(features, labels, epoch)
        for name, key in (("running_mean_last_epoch", "last_mean"), ("running_var_last_epoch", "last_var"),
                          ("smoothed_mean_last_epoch", "smoothed_mean"), ("smoothed_var_last_epoch", "smoothed_var")):
            torch.testing.assert_close(getattr(fds, name), ref[key], rtol=1e-12, atol=1e-12)
    x, y = torch.rand(8, d, dtype=F64), torch.arange(8).double() % k
    m1, v1, m2, v2 = ref["last_mean"][y.long()], ref["last_var"][y.long()], ref["smoothed_mean"][y.long()], \
        ref["smoothed_var"][y.long()]
    expected = (x - m1) * torch.sqrt((v2 / v1).clamp(0.1, 10)) + m2
    torch.testing.assert_close(fds.smooth(x, y, 4), expected, rtol=1e-12, atol=1e-12)


def test_skip_invalid_buckets_reproduces_the_depth_mask_bug():
    """One dead dimension (v1 = 0) leaves the whole bucket uncalibrated with the switch; the valid dims move without."""
    def calibrated(skip):
        fds = FDS(3, bucket_num=10, bucket_start=0, start_smooth=1, ks=5, sigma=2, clip_min=0.2, clip_max=5,
                  skip_invalid_buckets=skip).double()
        m1 = np.zeros((10, 3)); m1[5] = G4_M1
        var1 = np.ones((10, 3)); var1[5] = [4, 1, 0]
        m2 = np.zeros((10, 3)); m2[5] = G4_M2
        var2 = np.ones((10, 3)); var2[5] = G4_V2
        _set(fds, running_mean_last_epoch=m1, running_var_last_epoch=var1, smoothed_mean_last_epoch=m2,
             smoothed_var_last_epoch=var2)
        return fds.smooth(torch.tensor(G4_X, dtype=F64), torch.tensor([5.0, 5.0], dtype=F64), 1)
    assert torch.equal(calibrated(True), torch.tensor(G4_X, dtype=F64))            # the reference: unchanged
    assert not torch.equal(calibrated(False), torch.tensor(G4_X, dtype=F64))


# -- VIR's probabilistic FDS --------------------------------------------------------------------------------------
def _smooth(stats, window):
    """Reflect-padded convolution along the buckets, written as a loop."""
    k, half = stats.shape[0], len(window) // 2
    out = np.zeros_like(stats)
    for b in range(k):
        for j, w in enumerate(window):
            source = b + j - half
            source = -source if source < 0 else 2 * (k - 1) - source if source >= k else source
            out[b] += w * stats[source]
    return out


def test_probabilistic_fds_mixture_statistics_and_calibration_against_loops():
    """``smoothing='mixture'``, this repo's earlier reading, computes what it did."""
    rng = np.random.default_rng(0)
    k, d, start = 12, 3, 2
    labels = rng.integers(start, start + k, 400).astype(np.float64)
    means = rng.normal(size=(400, d)) + labels[:, None] * 0.1
    variances = rng.uniform(0.1, 2.0, size=(400, d))
    fds = ProbabilisticFDS(d, start + k, start, start_update=0, start_smooth=1, ks=5, sigma=2, clip_min=0.1,
                           clip_max=10, smoothing="mixture").double()
    tensor = lambda x: torch.from_numpy(x)  # noqa: E731
    fds.update_last_epoch_stats(0)
    fds.update_running_stats(tensor(means), tensor(labels), 0, latent_var=tensor(variances))
    fds.update_last_epoch_stats(1)
    m1 = np.stack([means[labels == start + b].mean(0) for b in range(k)])
    u1 = np.stack([means[labels == start + b].var(0, ddof=1) for b in range(k)])
    s1 = np.stack([variances[labels == start + b].mean(0) for b in range(k)])
    assert np.allclose(fds.running_mean_last_epoch.numpy(), m1)
    assert np.allclose(fds.running_var_last_epoch.numpy(), u1)
    assert np.allclose(fds.latent.running_mean_last_epoch.numpy(), s1)
    window = kernel_window("gaussian", 5, 2, normalise="sum", dtype="float64")
    m2, u2, s2 = _smooth(m1, window), _smooth(u1, window ** 2), _smooth(s1, window ** 2)
    assert np.allclose(fds.smoothed_mean_last_epoch.numpy(), m2, rtol=1e-6)
    assert np.allclose(fds.smoothed_var_last_epoch.numpy(), u2, rtol=1e-6)
    factor = np.clip((u2 + s2) / (u1 + s1), 0.1, 10)
    z, s, y = means[:5], variances[:5], labels[:5]
    rows = (y - start).astype(int)
    calibrated, spread = fds.smooth(tensor(z), tensor(y), 1, latent_var=tensor(s))
    assert np.allclose(calibrated.numpy(), (z - m1[rows]) * np.sqrt(factor[rows]) + m2[rows], rtol=1e-6)
    assert np.allclose(spread.numpy(), s * factor[rows], rtol=1e-6)
    same, unchanged = fds.smooth(tensor(z), tensor(y), 0, latent_var=tensor(s))     # before start_smooth
    assert torch.equal(same, tensor(z)) and torch.equal(unchanged, tensor(s))


@pytest.mark.parametrize("smoothing", ["authors", "mixture"])
def test_probabilistic_fds_streaming_statistics_equal_one_update_and_survive_a_state_dict(smoothing):
    torch.manual_seed(0)
    maps, depth = torch.randn(4, 3, 5, 6, dtype=torch.float64), torch.rand(4, 1, 5, 6, dtype=torch.float64) * 2
    variance = torch.rand(4, 3, 5, 6, dtype=torch.float64)
    make = lambda: ProbabilisticFDS(3, 20, 2, bins=LabelBins(0, 0.1, 20), edge_rule="clamp",  # noqa: E731
                                    smoothing=smoothing).double()
    whole, streamed = make(), make()
    whole.update_last_epoch_stats(0)
    whole.update_running_stats(maps, depth, 0, latent_var=variance)
    moments = streamed.statistics()
    for i in range(4):
        moments.add(maps[i:i + 1], depth[i:i + 1], variance[i:i + 1])
    moments.commit(0)
    for name, value in whole.state_dict().items():
        assert torch.allclose(value.double(), streamed.state_dict()[name].double()), name
    whole.update_last_epoch_stats(1)
    copy = make()
    copy.load_state_dict(whole.state_dict())
    a, b = whole.smooth(maps, depth, 1, latent_var=variance), copy.smooth(maps, depth, 1, latent_var=variance)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="latent_var"):
        whole.update_running_stats(maps, depth, 1)


# -- VIR's probabilistic FDS as the authors' code computes it (docs/methods.md §11.3) -----------------------------
def _authors_buckets(labels, start, last):
    """Rows of each bucket as the authors gather them: a bucket's own label, the first bucket also every label
    below it and the last every label above it, each only when that exact end value is in the call."""
    rows = {}
    for value in np.unique(labels):
        if value > last or value < start:
            continue
        if value == start:
            rows[int(value) - start] = np.flatnonzero(labels <= value)
        elif value == last:
            rows[int(value) - start] = np.flatnonzero(labels >= value)
        else:
            rows[int(value) - start] = np.flatnonzero(labels == value)
    return rows


def _authors_update(state, means, variances, labels, start, last, first, momentum=0.9):
    """One statistics update of (m, v, w) per bucket, from the statements: m = mean z̄, v = Σ(z̄ − m)²/n +
    (1 − 1/n)·mean s, w = Σ s/n², folded with the momentum (replaced at the first update)."""
    m, v, w = (x.copy() for x in state)
    for b, idx in _authors_buckets(labels, start, last).items():
        n = len(idx)
        mean = means[idx].mean(0)
        spread = ((means[idx] - mean) ** 2).sum(0) / n + (1 - 1 / n) * variances[idx].mean(0)
        var_of_mean = variances[idx].sum(0) / n ** 2
        factor = 0.0 if first else momentum
        m[b] = (1 - factor) * mean + factor * m[b]
        v[b] = (1 - factor) * spread + factor * v[b]
        w[b] = (1 - factor) * var_of_mean + factor * w[b]
    return m, v, w


def _authors_calibrate(state, window, means, variances, labels, start, last, clip):
    """``window``: (k, k²). The calibration of each sample, from the statements: f = clamp(k∗v / v),
    z̄ ← (z̄ − m)√f + k∗m, s ← (s + w)√f + k²∗w, where the bucket's spreads sum to ≥ 1e-10 and the dimension's
    v ≠ 0."""
    m, v, w = state
    window, squared = window
    m2, v2, w2 = _smooth(m, window), _smooth(v, window), _smooth(w, squared)
    z, s = means.copy(), variances.copy()
    for b, idx in _authors_buckets(labels, start, last).items():
        if v[b].sum() < 1e-10:
            continue
        for i in idx:
            for j in range(means.shape[1]):
                if v[b, j] == 0:
                    continue
                f = min(max(v2[b, j] / v[b, j], clip[0]), clip[1])
                z[i, j] = (means[i, j] - m[b, j]) * np.sqrt(f) + m2[b, j]
                s[i, j] = (variances[i, j] + w[b, j]) * np.sqrt(f) + w2[b, j]
    return z, s


def _authors_data(rng, start, last, n, d, ends=True):
    labels = rng.integers(start, last + 1, n).astype(np.float64)
    labels[:3] = [start + 3, start + 3, start + 5]          # bucket start + 5 …
    labels[labels == start + 5] = start + 6                  # … is a singleton (its spread is 0)
    labels[2] = start + 5
    beyond = np.array([start - 2, start - 1, last + 1, last + 4], dtype=np.float64)   # below and above the buckets
    if not ends:
        labels[(labels == start) | (labels == last)] = start + 1
    labels = np.concatenate([labels, beyond])
    means = rng.normal(size=(len(labels), d)) * rng.uniform(0.2, 3, size=d) + labels[:, None] * 0.3
    variances = rng.uniform(0.01, 1.5, size=(len(labels), d))
    return means, variances, labels


@pytest.mark.parametrize("ends", [True, False], ids=["ends-present", "ends-absent"])
def test_probabilistic_fds_authors_statistics_and_calibration_against_loops(ends):
    """Two updates (the second with the momentum), the roll-over and the calibration, in float64, against the
    loops above: singleton bucket, empty buckets (m 0, v w 1), labels beyond both ends, clipped factors."""
    rng = np.random.default_rng(1)
    k, d, start = 12, 4, 2
    last = start + k - 1
    clip = (0.7, 1.3)
    fds = ProbabilisticFDS(d, start + k, start, start_update=0, start_smooth=1, ks=5, sigma=2, clip_min=clip[0],
                           clip_max=clip[1]).double()
    state = (np.zeros((k, d)), np.ones((k, d)), np.ones((k, d)))
    tensor = torch.from_numpy
    for epoch in (0, 1):
        means, variances, labels = _authors_data(rng, start, last, 150 if epoch == 0 else 60, d, ends)
        if epoch == 1:
            labels[labels == start + 9] = start + 8              # bucket start + 9: updated once only
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(tensor(means), tensor(labels), epoch, latent_var=tensor(variances))
        state = _authors_update(state, means, variances, labels, start, last, first=epoch == 0)
    fds.update_last_epoch_stats(2)
    m, v, w = state
    assert np.allclose(fds.running_mean_last_epoch.numpy(), m, rtol=1e-12)
    assert np.allclose(fds.running_var_last_epoch.numpy(), v, rtol=1e-12)
    assert np.allclose(fds.latent.running_mean_last_epoch.numpy(), w, rtol=1e-12)
    window = kernel_window("gaussian", 5, 2, normalise="sum", dtype="float64")
    assert np.allclose(fds.kernel_window.numpy(), window, rtol=1e-6)
    # The module's windows (k, and k² squared in float32) from here on: the rest exactly.
    window, squared = fds.kernel_window.numpy(), fds.latent.kernel_window.numpy()
    assert np.allclose(squared, window ** 2, rtol=1e-6)
    assert np.allclose(fds.smoothed_var_last_epoch.numpy(), _smooth(v, window), rtol=1e-12)      # v with k
    assert np.allclose(fds.latent.smoothed_mean_last_epoch.numpy(), _smooth(w, squared), rtol=1e-12)  # w with k²
    means, variances, labels = _authors_data(rng, start, last, 80, d, ends)
    z, s = fds.smooth(tensor(means), tensor(labels), 2, latent_var=tensor(variances))
    want_z, want_s = _authors_calibrate(state, (window, squared), means, variances, labels, start, last, clip)
    assert np.allclose(z.numpy(), want_z, rtol=1e-12, atol=1e-12)
    assert np.allclose(s.numpy(), want_s, rtol=1e-12, atol=1e-12)
    ratio = _smooth(v, window)[v > 0] / v[v > 0]
    assert (ratio < clip[0]).any() and (ratio > clip[1]).any() and ((ratio > clip[0]) & (ratio < clip[1])).any()
    single = labels == start + 5
    assert np.array_equal(z.numpy()[single], means[single])         # the singleton bucket: v = 0, left alone
    beyond = (labels < start) | (labels > last)
    assert np.array_equal(z.numpy()[beyond], means[beyond]) != ends     # beyond the ends: with an end value only


def test_probabilistic_fds_authors_invariants():
    """The authors' statistics: v is the expected biased variance of the bucket's sampled latents z̄ + √s ε and w
    the variance of their mean (Monte Carlo); v ≥ 0, w > 0 and a calibrated variance > 0 everywhere; with the
    identity kernel f = 1, means are unchanged and s ← s + 2w."""
    rng = np.random.default_rng(2)
    n, d = 5, 3
    means, variances = rng.normal(size=(n, d)), rng.uniform(0.1, 2, size=(n, d))
    labels = np.full(n, 4.0)
    fds = ProbabilisticFDS(d, 10, 0, ks=1, sigma=1).double()
    fds.update_last_epoch_stats(0)
    fds.update_running_stats(torch.from_numpy(means), torch.from_numpy(labels), 0,
                             latent_var=torch.from_numpy(variances))
    fds.update_last_epoch_stats(1)
    draws = means + np.sqrt(variances) * rng.normal(size=(200_000, n, d))
    spread = draws.var(axis=1).mean(0)                 # biased variance within the bucket, averaged over draws
    var_of_mean = draws.mean(axis=1).var(0)
    assert np.allclose(fds.running_var_last_epoch[4].numpy(), spread, rtol=0.02)
    assert np.allclose(fds.latent.running_mean_last_epoch[4].numpy(), var_of_mean, rtol=0.02)
    assert (fds.running_var_last_epoch >= 0).all() and (fds.latent.running_mean_last_epoch > 0).all()
    z, s = fds.smooth(torch.from_numpy(means), torch.from_numpy(labels), 1, latent_var=torch.from_numpy(variances))
    w = fds.latent.running_mean_last_epoch[4].numpy()
    assert np.allclose(z.numpy(), means, rtol=1e-12) and np.allclose(s.numpy(), variances + 2 * w, rtol=1e-12)
    wide = ProbabilisticFDS(d, 10, 0, ks=5, sigma=2, clip_min=0.1, clip_max=10).double()
    spread_labels = np.array([2.0, 2.0, 3.0, 3.0, 3.0])          # two buckets of 2 and 3
    wide.update_last_epoch_stats(0)
    wide.update_running_stats(torch.from_numpy(means), torch.from_numpy(spread_labels), 0,
                              latent_var=torch.from_numpy(variances))
    wide.update_last_epoch_stats(1)
    _, s = wide.smooth(torch.from_numpy(means), torch.from_numpy(spread_labels), 1,
                       latent_var=torch.from_numpy(variances))
    assert (s > 0).all() and (wide.running_var_last_epoch >= 0).all()
    assert (wide.latent.running_mean_last_epoch > 0).all()


def test_probabilistic_fds_authors_factor_sits_near_one_where_the_mixture_shrinks():
    """The issue's measurement: on a smooth label trend the authors' f is near 1, the earlier (k² on both
    variances) near Σk² ≈ 0.2."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(20.0), 30)
    means = rng.normal(size=(600, 2)) + labels[:, None] * 0.05
    variances = rng.uniform(0.5, 1.0, size=(600, 2))
    factors = {}
    for smoothing in ("authors", "mixture"):
        fds = ProbabilisticFDS(2, 20, 0, ks=5, sigma=2, clip_min=0.01, clip_max=100, smoothing=smoothing).double()
        fds.update_last_epoch_stats(0)
        fds.update_running_stats(torch.from_numpy(means), torch.from_numpy(labels), 0,
                                 latent_var=torch.from_numpy(variances))
        fds.update_last_epoch_stats(1)
        factors[smoothing] = float(fds._scale[2:18].square().mean())
    sum_k2 = float((kernel_window("gaussian", 5, 2, normalise="sum", dtype="float64") ** 2).sum())
    assert abs(factors["authors"] - 1) < 0.1
    assert abs(factors["mixture"] - sum_k2) < 0.05


def test_probabilistic_fds_before_the_first_roll_over_calibrates_with_the_starting_statistics():
    """Until the first roll-over the authors calibrate with the starting statistics (m 0, v 1, w 1): f = 1, the
    means unchanged and s ← (s + 1) + 1; the earlier 'mixture' start is the identity. A loaded state agrees."""
    z, s, y = torch.randn(6, 3, dtype=F64), torch.rand(6, 3, dtype=F64), torch.arange(6.0, dtype=F64) + 2
    for smoothing, shift in (("authors", 2.0), ("mixture", 0.0)):
        fds = ProbabilisticFDS(3, 10, 0, smoothing=smoothing).double()
        means, variances = fds.smooth(z, y, 1, latent_var=s)
        assert torch.equal(means, z) and torch.allclose(variances, s + shift, rtol=1e-15)
        copy = ProbabilisticFDS(3, 10, 0, smoothing=smoothing).double()
        copy.load_state_dict(fds.state_dict())
        assert torch.equal(copy.smooth(z, y, 1, latent_var=s)[1], variances)
