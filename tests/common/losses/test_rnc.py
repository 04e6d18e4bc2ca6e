"""Tests of Rank-N-Contrast (common/losses/rnc.py) against its O(M³) loop statement (reference_loops.rnc_loop)."""
import math

import pytest
import torch

from common.losses import RnC, rnc_loss
from reference_loops import rnc_loop

D64 = torch.float64
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rnc_case(m, k=1, d=4, seed=0, label_range=4, dup_features=True):
    """M rows with integer labels from a small range (many label-distance ties, on both sides of an anchor)
    and random features, one row duplicated (a zero feature distance off the diagonal)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, label_range, (m, k), generator=g).to(D64)
    f = torch.randn(m, d, generator=g, dtype=D64)
    if dup_features and m >= 3:
        f[2] = f[0]
    return f, y


def value_and_grad(fn, f):
    leaf = f.clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value, grad


# ------------------------------------------------------------------------------------------- the loop, random
@pytest.mark.parametrize("m", [2, 3, 5, 8])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("feature_sim", ["l2", "cosine"])
@pytest.mark.parametrize("temperature", [2.0, 0.3])
def test_matches_loop_value_and_gradient(m, k, feature_sim, temperature):
    f, y = rnc_case(m, k, seed=10 * m + k)
    labels = y.reshape(-1) if k == 1 else y
    got, grad = value_and_grad(lambda x: rnc_loss(x, labels, temperature, feature_sim), f)
    want, want_grad = value_and_grad(lambda x: rnc_loop(x, y, temperature, feature_sim), f)
    assert got.dtype == D64 and got.dim() == 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)
    assert torch.allclose(grad, want_grad, rtol=1e-10, atol=1e-12)


def test_random_cases_have_ties():
    # guard for the test design: the cases above must contain label-distance ties across an anchor
    f, y = rnc_case(8, 1, seed=81)
    d = (y - y.T).abs()
    tied_rows = sum(len(set(row.tolist())) < 7 for row in d)
    assert tied_rows == 8


def test_ties_share_one_denominator():
    # All labels equal: every k ≠ i is a negative of every pair, so
    # L = mean_i [log Σ_{k≠i} exp s_ik − mean_{j≠i} s_ij]. A cumulative sum that ignored ties would give
    # each tied positive a different (smaller) denominator.
    f, _ = rnc_case(6, seed=3)
    y = torch.full((6,), 7.0, dtype=D64)
    s = -torch.cdist(f, f) / 2.0
    off = ~torch.eye(6, dtype=torch.bool)
    want = sum(torch.logsumexp(s[i][off[i]], 0) - s[i][off[i]].mean() for i in range(6)) / 6
    assert rnc_loss(f, y).item() == pytest.approx(want.item(), rel=1e-12)


def test_distinct_distances_nest_the_denominators():
    # Labels 0, 1, 3 (no ties): from anchor 0 the distances are 1 (row 1) and 3 (row 2), so the pair (0, 2)
    # has only itself as negative and (0, 1) has {1, 2}; likewise for the other anchors.
    f, _ = rnc_case(3, seed=4, dup_features=False)
    y = torch.tensor([0.0, 1.0, 3.0], dtype=D64)
    s = -torch.cdist(f, f) / 2.0

    def log_p(i, j, negatives):
        return s[i, j] - torch.logsumexp(s[i, negatives], 0)

    want = -(log_p(0, 2, [2]) + log_p(0, 1, [1, 2]) + log_p(1, 2, [2]) + log_p(1, 0, [0, 2])
             + log_p(2, 0, [0]) + log_p(2, 1, [0, 1])) / 6
    assert rnc_loss(f, y).item() == pytest.approx(want.item(), rel=1e-12)


def test_value_is_non_negative_and_not_trivial():
    for seed in range(4):
        f, y = rnc_case(7, 1, seed=seed)
        assert rnc_loss(f, y).item() > 0


# ------------------------------------------------------------------------------------------------- views input
@pytest.mark.parametrize("label_shape", ["flat", "column", "vector"])
def test_views_tensor_equals_flattened_rows(label_shape):
    g = torch.Generator().manual_seed(5)
    views = torch.randn(5, 2, 3, generator=g, dtype=D64)
    y = torch.randint(0, 3, (5, 2 if label_shape == "vector" else 1), generator=g).to(D64)
    labels = y.reshape(-1) if label_shape == "flat" else y
    got = rnc_loss(views, labels, 2.0)
    rows = torch.cat([views[:, 0], views[:, 1]])           # the view-major order; the loss ignores the order
    want = rnc_loop(rows, torch.cat([y, y]), 2.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert rnc_loss(rows, torch.cat([y, y])).item() == pytest.approx(want.item(), rel=1e-12)


def test_three_views_and_one_sample_two_views():
    g = torch.Generator().manual_seed(6)
    views = torch.randn(4, 3, 2, generator=g, dtype=D64)
    y = torch.tensor([1.0, 2.0, 2.0, 5.0], dtype=D64)
    want = rnc_loop(views.reshape(12, 2), y.repeat_interleave(3))
    assert rnc_loss(views, y).item() == pytest.approx(want.item(), rel=1e-12)
    # one sample, two views: the only pair's denominator is the positive itself, L = 0
    assert rnc_loss(views[:1, :2], y[:1]).item() == pytest.approx(0.0, abs=1e-15)


# -------------------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("scale,shift", [(3.0, -11.0), (-0.5, 4.0), (1.0, 1e3)])
def test_affine_relabelling_invariance(scale, shift):
    # a y + b (a ≠ 0) scales every label distance by |a|: each anchor's distance order, so the loss, stays
    f, y = rnc_case(9, 1, seed=7)
    base = rnc_loss(f, y).item()
    assert rnc_loss(f, y * scale + shift).item() == pytest.approx(base, rel=1e-12)


def test_increasing_relabelling_that_keeps_distance_orders_is_invariant():
    # The loss sees labels only through each anchor's order of label distances. A strictly increasing map
    # keeps the order on each side of an anchor, and across sides only where no two distances are close:
    # with labels in generic position (all |y_i − y_j| − |y_i − y_k| well away from 0), a small non-linear
    # increasing map keeps every order, so the loss is unchanged.
    f, _ = rnc_case(7, 1, seed=8)
    y = torch.tensor([0.0, 1.3, 3.1, 7.2, 8.0, 11.9, 17.4], dtype=D64)
    d = (y[:, None] - y).abs()
    off = ~torch.eye(7, dtype=torch.bool)
    gaps = torch.stack([(d[i][off[i]][:, None] - d[i][off[i]][None, :]).abs() + torch.eye(6) for i in range(7)])
    assert gaps.min() >= 0.5                      # no two distances from an anchor within 0.5
    g = y + 0.01 * torch.sin(y)                   # derivative ≥ 0.99 > 0; moves each distance by ≤ 0.02
    dg = (g[:, None] - g).abs()
    assert all(torch.equal(torch.argsort(d[i]), torch.argsort(dg[i])) for i in range(7))
    assert not torch.allclose(dg, d * (dg[0, 1] / d[0, 1]))      # and the map is not affine
    assert rnc_loss(f, g).item() == pytest.approx(rnc_loss(f, y).item(), rel=1e-12)


def test_increasing_relabelling_that_reorders_across_an_anchor_changes_the_loss():
    # Why the invariance above needs the orders kept: exp is strictly increasing, but from anchor 0 it makes
    # label −1 nearer than label +1 (|e⁻¹ − 1| < |e − 1|): anchor 0's negatives change, and with them L.
    f, _ = rnc_case(3, 1, seed=9, dup_features=False)
    y = torch.tensor([0.0, 1.0, -1.0], dtype=D64)
    assert rnc_loss(f, y.exp()).item() != pytest.approx(rnc_loss(f, y).item(), rel=1e-6)
    assert rnc_loss(f, y.exp()).item() == pytest.approx(rnc_loop(f, y.exp()).item(), rel=1e-12)


def test_permutation_translation_rotation_invariance():
    f, y = rnc_case(9, 2, seed=10)
    base = rnc_loss(f, y).item()
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    assert rnc_loss(f[perm], y[perm]).item() == pytest.approx(base, rel=1e-12)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=D64))
    assert rnc_loss(f @ q + 5.0, y).item() == pytest.approx(base, rel=1e-11)


def test_features_ordered_like_labels_score_lower():
    # the loss rewards feature distances that rank like label distances
    y = torch.arange(10, dtype=D64)
    aligned = torch.stack([y, torch.zeros(10, dtype=D64)], 1)
    shuffled = aligned[torch.randperm(10, generator=torch.Generator().manual_seed(3))]
    assert rnc_loss(aligned, y, 0.5).item() < rnc_loss(shuffled, y, 0.5).item()


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("feature_sim", ["l2", "cosine"])
def test_gradcheck(feature_sim):
    f, y = rnc_case(6, 1, d=3, seed=11, dup_features=False)
    assert torch.autograd.gradcheck(lambda x: rnc_loss(x, y, 0.7, feature_sim), (f.clone().requires_grad_(),),
                                    eps=1e-6, atol=1e-8)


def test_duplicate_features_give_a_finite_gradient():
    f = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [-1.0, 0.5]], dtype=D64)
    y = torch.tensor([3.0, 3.0, 4.0, 7.0], dtype=D64)
    got, grad = value_and_grad(lambda x: rnc_loss(x, y), f)
    assert torch.isfinite(got) and torch.isfinite(grad).all()
    assert got.item() == pytest.approx(rnc_loop(f, y).item(), rel=1e-12)


# ---------------------------------------------------------------------------------------- dtypes / precision
@pytest.mark.parametrize("dtype,want", [(D64, D64), (torch.float32, torch.float32), (torch.float16, torch.float32),
                                        (torch.bfloat16, torch.float32)])
def test_output_dtype(dtype, want):
    f, y = rnc_case(6, 1, seed=12)
    got = rnc_loss(f.to(dtype), y.to(dtype))
    assert got.dtype == want and got.dim() == 0 and got.device == f.device


def test_float32_matches_float64_and_small_temperature_is_stable():
    f, y = rnc_case(12, 2, d=6, seed=13)
    f = f * 10
    for t in (2.0, 0.01):                         # 1/τ = 100 on distances ~ 30: logits ~ −3000
        got = rnc_loss(f.float(), y.float(), t)
        want = rnc_loop(f, y, t)
        assert torch.isfinite(got)
        assert got.item() == pytest.approx(want.item(), rel=1e-4)
    leaf = f.float().requires_grad_(True)
    (grad,) = torch.autograd.grad(rnc_loss(leaf, y.float(), 0.01), leaf)
    assert torch.isfinite(grad).all()


def test_large_common_offset_keeps_float32_distances():
    # the batch mean is removed before the Gram matrix: an offset of 1e4 would otherwise cancel catastrophically
    f, y = rnc_case(10, 1, d=8, seed=14)
    want = rnc_loop(f, y).item()
    assert rnc_loss((f + 1e4).float(), y.float()).item() == pytest.approx(want, rel=1e-4)


def test_autocast_bfloat16_is_finite_and_close():
    f, y = rnc_case(16, 1, d=8, seed=15)
    f32, y32 = f.float(), y.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        leaf = f32.clone().requires_grad_(True)
        got = rnc_loss(leaf, y32)
        (grad,) = torch.autograd.grad(got, leaf)
    assert got.dtype == torch.float32 and torch.isfinite(got) and torch.isfinite(grad).all()
    assert got.item() == pytest.approx(rnc_loss(f32, y32).item(), rel=1e-5)


def test_module_twin():
    f, y = rnc_case(7, 1, seed=16)
    assert RnC()(f, y).item() == pytest.approx(rnc_loss(f, y, 2.0, "l2").item(), rel=1e-15)
    module = RnC(0.5, "cosine")
    assert module(f, y).item() == pytest.approx(rnc_loop(f, y, 0.5, "cosine").item(), rel=1e-12)
    assert "cosine" in repr(module)


# --------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("features,labels,match", [
    (torch.zeros(6, dtype=D64), torch.zeros(6, dtype=D64), "features"),
    (torch.zeros(2, 2, 2, 2, dtype=D64), torch.zeros(2, dtype=D64), "features"),
    (torch.zeros(6, 3, dtype=torch.long), torch.zeros(6, dtype=D64), "features"),
    (torch.zeros(0, 3, dtype=D64), torch.zeros(0, dtype=D64), "features"),
    (torch.zeros(1, 3, dtype=D64), torch.zeros(1, dtype=D64), "features"),
    (torch.zeros(1, 1, 3, dtype=D64), torch.zeros(1, dtype=D64), "features"),
    (torch.zeros(6, 3, dtype=D64), torch.zeros(5, dtype=D64), "labels"),
    (torch.zeros(4, 2, 3, dtype=D64), torch.zeros(8, dtype=D64), "labels"),
    (torch.zeros(6, 3, dtype=D64), torch.zeros(6, 1, 1, dtype=D64), "labels"),
    (torch.zeros(6, 3, dtype=D64), [0.0] * 6, "labels"),
])
def test_bad_shapes_raise(features, labels, match):
    with pytest.raises(ValueError, match=match):
        rnc_loss(features, labels)


@pytest.mark.parametrize("name", ["features", "labels"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_inputs_raise(name, bad):
    f, y = rnc_case(5, 1, seed=17)
    (f if name == "features" else y)[1, 0] = bad
    with pytest.raises(ValueError, match=name):
        rnc_loss(f, y)


@pytest.mark.parametrize("kwargs,match", [(dict(temperature=0.0), "temperature"), (dict(temperature=-1.0),
                                          "temperature"), (dict(temperature=math.nan), "temperature"),
                                          (dict(feature_sim="l1"), "feature_sim")])
def test_bad_hyperparameters_raise(kwargs, match):
    f, y = rnc_case(5, 1, seed=18)
    with pytest.raises(ValueError, match=match):
        rnc_loss(f, y, **kwargs)
    with pytest.raises(ValueError, match=match):
        RnC(**kwargs)


# ------------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@cuda_only
def test_cuda_matches_cpu():
    f, y = rnc_case(40, 2, d=16, seed=19)
    cpu, cpu_grad = value_and_grad(lambda x: rnc_loss(x, y), f)
    gpu, gpu_grad = value_and_grad(lambda x: rnc_loss(x, y.cuda()), f.cuda())
    assert gpu.device.type == "cuda" and gpu_grad.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-10)
    assert torch.allclose(gpu_grad.cpu(), cpu_grad, rtol=1e-8, atol=1e-12)
