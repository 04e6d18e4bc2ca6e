"""Tests of ConR, age variant (docs/methods.md §4.1) and depth variant (§4.2); golden values §9 G1, G2."""
import math

import pytest
import torch

from common.losses import ConR, ConRDense, conr_dense_loss, conr_loss
from reference_loops import conr_dense_loop, conr_loop

D64 = torch.float64
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------------------------------------ fixtures
def g1(dtype=D64):
    f = torch.tensor([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0.2], [0, 0, 1], [0.5, 0.5, 0.5], [0.2, 0, 1]],
                     dtype=dtype)
    y = torch.tensor([20, 20, 21, 30, 30, 45, 46], dtype=dtype).reshape(7, 1)
    yh = torch.tensor([22, 25, 21.5, 21, 29, 44.5, 30], dtype=dtype).reshape(7, 1)
    w = torch.tensor([1, 2, 0.5, 1, 1.5, 1, 3], dtype=dtype).reshape(7, 1)
    return f, y, yh, w


def g2(dtype=D64):
    feat = torch.empty(4, 2, 3, 1, dtype=dtype)
    for b in range(4):
        for c in range(2):
            for h in range(3):
                feat[b, c, h, 0] = math.sin(6 * b + 3 * c + h)
    base = [1.0, 1.1, 1.6, 2.5]
    off = [0.03, -0.03, 0.0, 0.06]
    depth = torch.empty(4, 1, 3, 1, dtype=dtype)
    for b in range(4):
        depth[b] = base[b]
        depth[b, 0, 0, 0] = base[b] + off[b]
    out = torch.tensor([1.0, 1.05, 1.12, 1.3], dtype=dtype).reshape(4, 1, 1, 1).expand(4, 1, 3, 1).clone()
    wt = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=dtype).reshape(4, 1, 1, 1).expand(4, 1, 3, 1).clone()
    return feat, depth, out, wt


def age_case(m, k=1, d=4, seed=0, dup_features=True):
    """Random age batch: integer labels from a small range (duplicates, |Δ| == window ties), predictions on
    a 0.5 grid near the labels but sometimes far (confusions), features with a duplicated row."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4 if k == 1 else 3, (m, k), generator=g).to(D64)
    yh = 2.0 + torch.randint(-2, 3, (m, k), generator=g).to(D64) * 0.5
    f = torch.randn(m, d, generator=g, dtype=D64)
    if dup_features and m >= 3:
        f[2] = f[0]
    w = torch.rand(m, generator=g, dtype=D64) * 2 + 0.1
    return f, y, yh, w


def weights_variant(kind, w):
    m = w.shape[0]
    return {"none": None, "scalar": 2.5, "scalar_t": torch.tensor(2.5, dtype=D64), "vec": w,
            "col": w.reshape(m, 1)}[kind]


def loop_weights(kind, w):
    return {"none": None, "scalar": 2.5, "scalar_t": 2.5, "vec": w, "col": w}[kind]


def labels_variant(y, k):
    # (M,) for K = 1 given as 1-D, otherwise (M,K)
    return y.reshape(-1) if k == 1 else y


# ------------------------------------------------------------------------------------------ golden values G1
@pytest.mark.parametrize("temperature,want", [(0.07, 8.306345728511092), (0.2, 3.3813070623333767)])
def test_g1_golden(temperature, want):
    f, y, yh, w = g1()
    got = conr_loss(f, y, yh, w, window=1.0, temperature=temperature, eta=0.01)
    assert got.dim() == 0 and got.dtype == D64
    assert got.item() == pytest.approx(want, abs=1e-12, rel=1e-12)
    # label/prediction/weight shapes (M,) and (M,1) are equivalent
    got_flat = conr_loss(f, y.reshape(-1), yh.reshape(-1), w.reshape(-1), window=1.0, temperature=temperature, eta=0.01)
    assert got_flat.item() == pytest.approx(want, abs=1e-12, rel=1e-12)


def test_g1_golden_defaults():
    # defaults: window=1, temperature=0.07 (the age CLI default), eta=0.01, denominator='reference'
    f, y, yh, w = g1()
    assert conr_loss(f, y, yh, w).item() == pytest.approx(8.306345728511092, abs=1e-12, rel=1e-12)


@pytest.mark.parametrize("weights", [1, 1.0, None, "ones_vec", "ones_col", "zero_dim"])
def test_g1_golden_unit_weights(weights):
    f, y, yh, _ = g1()
    if weights == "ones_vec":
        weights = torch.ones(7, dtype=D64)
    elif weights == "ones_col":
        weights = torch.ones(7, 1, dtype=D64)
    elif weights == "zero_dim":
        weights = torch.tensor(1.0, dtype=D64)
    got = conr_loss(f, y, yh, weights, window=1.0, temperature=0.2, eta=0.01)
    assert got.item() == pytest.approx(2.4438685187398748, abs=1e-12, rel=1e-12)


def test_g1_golden_module_twin():
    f, y, yh, w = g1()
    assert ConR()(f, y, yh, w).item() == pytest.approx(8.306345728511092, abs=1e-12, rel=1e-12)
    mod = ConR(window=1.0, temperature=0.2, eta=0.01, denominator="reference")
    assert mod(f, y, yh, w).item() == pytest.approx(3.3813070623333767, abs=1e-12, rel=1e-12)
    assert mod(f, y, yh).item() == pytest.approx(2.4438685187398748, abs=1e-12, rel=1e-12)


@pytest.mark.parametrize("temperature", [0.07, 0.2])
def test_g1_last_sample_dropped_is_finite_and_skips_anchor(temperature):
    # §4.5 Q5 / §8: label 45 then has no positive; the reference gives NaN, this repo skips the anchor.
    f, y, yh, w = g1()
    f.requires_grad_(True)
    got = conr_loss(f[:6], y[:6], yh[:6], w[:6], temperature=temperature)
    want = conr_loop(f[:6].detach(), y[:6], yh[:6], w[:6], temperature=temperature)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(want.item(), abs=1e-12, rel=1e-12)
    (grad,) = torch.autograd.grad(got, f)
    assert torch.isfinite(grad).all()


def test_g1_dropped_sample_anchor_with_negatives_but_no_positive():
    # Make sample 5 (label 45, no positive) have negatives: it must still be skipped (not NaN, not counted).
    f, y, yh, w = g1()
    f6, y6, yh6, w6 = f[:6], y[:6], yh[:6], w[:6].clone()
    yh6 = yh6.clone()
    yh6[5] = 21.0  # prediction close to other predictions -> anchor 5 has negatives but no positives
    got = conr_loss(f6, y6, yh6, w6, temperature=0.2)
    want = conr_loop(f6, y6, yh6, w6, temperature=0.2)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(want.item(), abs=1e-12, rel=1e-12)


# ------------------------------------------------------------------------------------- loop reference, random
@pytest.mark.parametrize("m", [1, 2, 5, 7, 9])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("wkind", ["none", "scalar", "scalar_t", "vec", "col"])
@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_matches_loop_value_and_gradient(m, k, wkind, denominator):
    f, y, yh, w = age_case(m, k=k, seed=100 * m + 10 * k)
    if m == 7:
        y[0] = 10.0  # anchor 0 has no positive but (prediction 2.0) has negatives: skipped, counted in 1/M
        yh[0] = 2.0
    kw = dict(window=1.0, temperature=0.2, eta=0.05, denominator=denominator)
    want = conr_loop(f.clone().requires_grad_(True), y, yh, loop_weights(wkind, w), **kw)
    fg = f.clone().requires_grad_(True)
    got = conr_loss(fg, labels_variant(y, k), labels_variant(yh, k), weights_variant(wkind, w), **kw)
    assert got.dtype == D64 and got.dim() == 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)
    # gradient of the vectorised loss vs autograd through the loop
    fl = f.clone().requires_grad_(True)
    want_l = conr_loop(fl, y, yh, loop_weights(wkind, w), **kw)
    if want_l.requires_grad:
        (gw,) = torch.autograd.grad(want_l, fl)
    else:
        gw = torch.zeros_like(f)
    (gg,) = torch.autograd.grad(got, fg) if got.requires_grad else (torch.zeros_like(f),)
    assert torch.allclose(gg, gw, rtol=1e-10, atol=1e-12)
    if m == 1:
        assert got.item() == 0.0  # a single anchor has no positive: skipped


def test_random_cases_are_not_trivial():
    # guard for the test design: the random batches above must exercise positives and negatives
    for m in (5, 7, 9):
        for k in (1, 2):
            f, y, yh, w = age_case(m, k=k, seed=100 * m + 10 * k)
            if m == 7:
                y[0], yh[0] = 10.0, 2.0
            assert conr_loop(f, y, yh, w, window=1.0, temperature=0.2, eta=0.05).item() > 0


@pytest.mark.parametrize("window,temperature,eta", [(0.0, 0.1, 0.01), (2.5, 0.07, 0.3), (1.0, 0.5, 0.0),
                                                    (0.75, 1.3, 1.0)])
@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_matches_loop_hyperparameters(window, temperature, eta, denominator):
    f, y, yh, w = age_case(11, k=1, seed=7)
    y[4] = y[3]  # exact duplicate labels
    kw = dict(window=window, temperature=temperature, eta=eta, denominator=denominator)
    got = conr_loss(f, y, yh, w, **kw)
    want = conr_loop(f, y, yh, w, **kw)
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)
    assert ConR(**kw)(f, y, yh, w).item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_g1_matches_loop_all_options(denominator):
    f, y, yh, w = g1()
    for t in (0.07, 0.2, 0.9):
        got = conr_loss(f, y, yh, w, temperature=t, denominator=denominator)
        want = conr_loop(f, y, yh, w, temperature=t, denominator=denominator)
        assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)


def test_reference_denominator_exceeds_paper():
    # the (M - |P_i|) >= 1 constant only enlarges D_i, so every contributing anchor loses more
    f, y, yh, w = g1()
    ref = conr_loss(f, y, yh, w, temperature=0.2, denominator="reference")
    pap = conr_loss(f, y, yh, w, temperature=0.2, denominator="paper")
    assert ref.item() > pap.item() > 0


# -------------------------------------------------------------------------------------------- invariants §4.6
def test_no_confusions_gives_zero():
    # §4.6.1: every anchor has a positive and no pair is label-far but prediction-close
    y = torch.tensor([0.0, 0.5, 10.0, 10.5, 20.0, 20.3], dtype=D64)
    yh = y * 1.0
    f = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=D64, requires_grad=True)
    w = torch.rand(6, generator=torch.Generator().manual_seed(4), dtype=D64) + 0.5
    got = conr_loss(f, y, yh, w, window=1.0, temperature=0.1)
    assert got.item() == 0.0
    if got.requires_grad:
        (grad,) = torch.autograd.grad(got, f)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_row_scaling_and_orthogonal_invariance():
    f, y, yh, w = age_case(9, k=1, seed=11)
    base = conr_loss(f, y, yh, w, temperature=0.2)
    assert base.item() > 0
    scale = torch.rand(9, 1, generator=torch.Generator().manual_seed(12), dtype=D64) * 10 + 0.01
    assert conr_loss(f * scale, y, yh, w, temperature=0.2).item() == pytest.approx(base.item(), rel=1e-11)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(13), dtype=D64))
    assert conr_loss(f @ q, y, yh, w, temperature=0.2).item() == pytest.approx(base.item(), rel=1e-11)


@pytest.mark.parametrize("k", [1, 3])
def test_shift_and_permutation_invariance(k):
    f, y, yh, w = age_case(9, k=k, seed=21 + k)
    base = conr_loss(f, y, yh, w, temperature=0.2).item()
    assert base > 0
    shift_y = torch.arange(1, k + 1, dtype=D64) * 7.0  # exact shifts: labels integers, predictions on a 0.5 grid
    shift_p = torch.arange(1, k + 1, dtype=D64) * -3.5
    assert conr_loss(f, y + shift_y, yh, w, temperature=0.2).item() == pytest.approx(base, rel=1e-12)
    assert conr_loss(f, y, yh + shift_p, w, temperature=0.2).item() == pytest.approx(base, rel=1e-12)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(5))
    assert conr_loss(f[perm], y[perm], yh[perm], w[perm], temperature=0.2).item() == pytest.approx(base, rel=1e-12)


def test_unit_weights_equal_scalar_and_none_random():
    # §4.6.5 (the loss is not linear in the weights; test the unit case instead)
    f, y, yh, _ = age_case(9, k=1, seed=31)
    a = conr_loss(f, y, yh, torch.ones(9, dtype=D64), temperature=0.2).item()
    b = conr_loss(f, y, yh, 1, temperature=0.2).item()
    c = conr_loss(f, y, yh, None, temperature=0.2).item()
    assert a > 0
    assert a == pytest.approx(b, rel=1e-14) and a == pytest.approx(c, rel=1e-14)


def test_eta_zero_pushing_weight_equals_anchor_weight():
    # §4.6.6: e = 0 -> pi_ij = omega_i; with unit weights the negatives then enter D_i with weight 1
    f, y, yh, w = age_case(9, k=1, seed=41)
    got = conr_loss(f, y, yh, w, eta=0.0, temperature=0.2)
    assert got.item() == pytest.approx(conr_loop(f, y, yh, w, eta=0.0, temperature=0.2).item(), rel=1e-12)
    # eta > 0 strictly increases the push (exp(eta*Delta) > 1) -> larger loss
    assert conr_loss(f, y, yh, w, eta=0.5, temperature=0.2).item() > got.item()


def test_duplicate_labels_and_features_give_finite_gradient():
    # §4.6.7
    f = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [-1.0, 0.5], [-1.0, 0.5]], dtype=D64, requires_grad=True)
    y = torch.tensor([3.0, 3.0, 3.0, 7.0, 7.0], dtype=D64)
    yh = torch.tensor([5.0, 5.0, 5.0, 5.0, 5.0], dtype=D64)
    got = conr_loss(f, y, yh, temperature=0.07)
    want = conr_loop(f.detach(), y, yh, temperature=0.07)
    assert torch.isfinite(got) and got.item() > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    (grad,) = torch.autograd.grad(got, f)
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("denominator", ["reference", "paper"])
@pytest.mark.parametrize("k", [1, 2])
def test_gradcheck(denominator, k):
    f, y, yh, w = age_case(6, k=k, d=3, seed=51 + k, dup_features=False)
    fr = f.clone().requires_grad_(True)
    assert conr_loop(f, y, yh, w, window=1.0, temperature=0.3, eta=0.1).item() > 0
    assert torch.autograd.gradcheck(
        lambda x: conr_loss(x, y, yh, w, window=1.0, temperature=0.3, eta=0.1, denominator=denominator), (fr,),
        eps=1e-6, atol=1e-8)


def test_gradcheck_g1():
    f, y, yh, w = g1()
    fr = f.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: conr_loss(x, y, yh, w, temperature=0.2), (fr,), eps=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------- dtypes / precision
def test_tiny_temperature_float32_is_stable():
    # log-sum-exp: 1/tau = 200 overflows a naive float32 exp; the float32 result must equal float64
    f, y, yh, w = g1()
    f32 = f.float()
    got = conr_loss(f32, y.float(), yh.float(), w.float(), temperature=0.005)
    want = conr_loss(f32.double(), y, yh, w, temperature=0.005)
    loop = conr_loop(f32.double(), y, yh, w, temperature=0.005)
    assert got.dtype == torch.float32
    assert torch.isfinite(got)
    assert want.item() == pytest.approx(loop.item(), rel=1e-12)
    assert got.item() == pytest.approx(loop.item(), rel=1e-5)


def test_tiny_temperature_float32_gradient_finite():
    f, y, yh, w = g1(torch.float32)
    f.requires_grad_(True)
    got = conr_loss(f, y, yh, w, temperature=0.005)
    (grad,) = torch.autograd.grad(got, f)
    assert torch.isfinite(grad).all()
    fd = f.detach().double().requires_grad_(True)
    (grad64,) = torch.autograd.grad(conr_loop(fd, y.double(), yh.double(), w.double(), temperature=0.005), fd)
    assert torch.allclose(grad.double(), grad64, rtol=1e-3, atol=1e-3 * grad64.abs().max().item())


@pytest.mark.parametrize("dtype,want_dtype", [(D64, D64), (torch.float32, torch.float32),
                                              (torch.float16, torch.float32), (torch.bfloat16, torch.float32)])
def test_output_dtype(dtype, want_dtype):
    f, y, yh, w = g1()
    got = conr_loss(f.to(dtype), y.to(dtype), yh.to(dtype), w.to(dtype), temperature=0.2)
    assert got.dtype == want_dtype and got.dim() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_close_to_float32(dtype):
    # labels are integers and predictions on a 0.5 grid: exact in bf16/fp16, so the masks are unchanged
    f, y, yh, w = age_case(16, k=1, d=8, seed=61)
    fl, yl, yhl, wl = f.to(dtype), y.to(dtype), yh.to(dtype), w.to(dtype)
    ref = conr_loss(fl.float(), yl.float(), yhl.float(), wl.float(), temperature=0.2)
    fr = fl.clone().requires_grad_(True)
    got = conr_loss(fr, yl, yhl, wl, temperature=0.2)
    assert ref.item() > 0
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(ref.item(), rel=1e-2)
    (grad,) = torch.autograd.grad(got, fr)
    assert torch.isfinite(grad.float()).all()


def test_autocast_bfloat16_close_to_float32():
    f, y, yh, w = age_case(16, k=1, d=8, seed=62)
    f32, y32, yh32, w32 = f.float(), y.float(), yh.float(), w.float()
    ref = conr_loss(f32, y32, yh32, w32, temperature=0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conr_loss(f32, y32, yh32, w32, temperature=0.2)
    assert ref.item() > 0
    assert torch.isfinite(got)
    assert got.float().item() == pytest.approx(ref.item(), rel=5e-2)


def test_float32_matches_float64():
    f, y, yh, w = age_case(12, k=2, d=6, seed=63)
    f32 = f.float()
    got = conr_loss(f32, y.float(), yh.float(), w.float(), temperature=0.1)
    want = conr_loop(f32.double(), y, yh, w, temperature=0.1)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ bad inputs
def _ok():
    f, y, yh, w = g1()
    return dict(features=f, targets=y, preds=yh, weights=w)


@pytest.mark.parametrize("change,match", [
    (dict(features=torch.zeros(7, dtype=D64)), "features"),
    (dict(features=torch.zeros(7, 3, 1, dtype=D64)), "features"),
    (dict(targets=torch.zeros(6, 1, dtype=D64)), "targets"),
    (dict(preds=torch.zeros(8, 1, dtype=D64)), "preds"),
    (dict(weights=torch.ones(6, 1, dtype=D64)), "weights"),
    (dict(weights=torch.ones(7, 2, dtype=D64)), "weights"),
    (dict(preds=torch.zeros(7, 2, dtype=D64)), "preds"),
])
def test_bad_shapes_raise(change, match):
    kw = _ok()
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        conr_loss(kw["features"], kw["targets"], kw["preds"], kw["weights"])


def test_targets_preds_shape_mismatch_raises():
    f, y, yh, w = age_case(5, k=2, seed=71)
    with pytest.raises(ValueError, match="preds|targets"):
        conr_loss(f, y, yh[:, :1], w)
    with pytest.raises(ValueError, match="preds|targets"):
        conr_loss(f, y[:, :1], yh, w)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_weights_raise(bad):
    kw = _ok()
    kw["weights"] = kw["weights"].clone()
    kw["weights"][3, 0] = bad
    with pytest.raises(ValueError, match="weights"):
        conr_loss(kw["features"], kw["targets"], kw["preds"], kw["weights"])


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_bad_scalar_weight_raises(bad):
    kw = _ok()
    with pytest.raises(ValueError, match="weights"):
        conr_loss(kw["features"], kw["targets"], kw["preds"], bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_raise(bad):
    kw = _ok()
    kw["features"] = kw["features"].clone()
    kw["features"][1, 2] = bad
    with pytest.raises(ValueError, match="features"):
        conr_loss(kw["features"], kw["targets"], kw["preds"], kw["weights"])


@pytest.mark.parametrize("hyper,match", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-0.1), "temperature"),
    (dict(window=-0.01), "window"),
    (dict(denominator="papers"), "denominator"),
])
def test_bad_hyperparameters_raise(hyper, match):
    kw = _ok()
    with pytest.raises(ValueError, match=match):
        conr_loss(kw["features"], kw["targets"], kw["preds"], kw["weights"], **hyper)


def test_empty_batch_raises():
    with pytest.raises(ValueError, match="features"):
        conr_loss(torch.zeros(0, 3, dtype=D64), torch.zeros(0, dtype=D64), torch.zeros(0, dtype=D64))


def test_window_zero_is_allowed():
    # window >= 0 is valid; with window 0 only exact duplicates are positives
    f, y, yh, w = g1()
    got = conr_loss(f, y, yh, w, window=0.0, temperature=0.2)
    assert got.item() == pytest.approx(conr_loop(f, y, yh, w, window=0.0, temperature=0.2).item(), rel=1e-12)


# ====================================================================================== depth variant (§4.2)
@pytest.mark.parametrize("temperature,want", [(0.07, 0.025094745682180657), (0.2, 0.036174837737230285)])
def test_g2_golden(temperature, want):
    feat, depth, out, wt = g2()
    got = conr_dense_loss(feat, depth, out, wt, window=0.2, temperature=temperature, eta=0.2)
    assert got.dim() == 0 and got.dtype == D64
    assert got.item() == pytest.approx(want, abs=1e-12, rel=1e-12)


def test_g2_golden_defaults_and_module_twin():
    feat, depth, out, wt = g2()
    assert conr_dense_loss(feat, depth, out, wt).item() == pytest.approx(0.036174837737230285, abs=1e-12, rel=1e-12)
    assert ConRDense()(feat, depth, out, wt).item() == pytest.approx(0.036174837737230285, abs=1e-12, rel=1e-12)
    mod = ConRDense(window=0.2, temperature=0.07, eta=0.2)
    assert mod(feat, depth, out, wt).item() == pytest.approx(0.025094745682180657, abs=1e-12, rel=1e-12)


def test_g2_matches_loop():
    feat, depth, out, wt = g2()
    for t in (0.07, 0.2):
        want = conr_dense_loop(feat, depth, out, wt, temperature=t)
        assert want.item() == pytest.approx({0.07: 0.025094745682180657, 0.2: 0.036174837737230285}[t], rel=1e-12)


def dense_case(b, c=2, h=3, w=2, seed=0):
    """Per-image depth constants on a 0.25 grid with zero-mean dyadic pixel offsets (exact pooled means, so
    |Delta| == window ties are exact); outputs on a 0.125 grid; per-pixel weights."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(b, c, h, w, generator=g, dtype=D64)
    base = torch.randint(4, 8, (b,), generator=g).to(D64) * 0.25
    depth = base.reshape(b, 1, 1, 1).expand(b, 1, h, w).clone()
    outb = 1.5 + torch.randint(-1, 2, (b,), generator=g).to(D64) * 0.125
    output = outb.reshape(b, 1, 1, 1).expand(b, 1, h, w).clone()
    if h * w >= 2:
        depth.view(b, -1)[:, 0] += 0.125
        depth.view(b, -1)[:, -1] -= 0.125
        output.view(b, -1)[:, 0] += 0.25
        output.view(b, -1)[:, 1] -= 0.25
    weights = torch.rand(b, 1, h, w, generator=g, dtype=D64) * 3 + 0.1
    return feat, depth, output, weights


@pytest.mark.parametrize("b", [1, 2, 5, 8])
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_dense_matches_loop_value_and_gradient(b, use_weights, denominator):
    feat, depth, output, weights = dense_case(b, seed=b)
    wts = weights if use_weights else None
    kw = dict(window=0.25, temperature=0.2, eta=0.2, denominator=denominator)
    fl = feat.clone().requires_grad_(True)
    want = conr_dense_loop(fl, depth, output, wts, **kw)
    fg = feat.clone().requires_grad_(True)
    got = conr_dense_loss(fg, depth, output, wts, **kw)
    assert got.dtype == D64 and got.dim() == 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)
    gw = torch.autograd.grad(want, fl)[0] if want.requires_grad else torch.zeros_like(feat)
    gg = torch.autograd.grad(got, fg)[0] if got.requires_grad else torch.zeros_like(feat)
    assert torch.allclose(gg, gw, rtol=1e-10, atol=1e-12)
    if b == 1:
        assert got.item() == 0.0


def test_dense_random_cases_are_not_trivial():
    for b in (5, 8):
        feat, depth, output, weights = dense_case(b, seed=b)
        assert conr_dense_loop(feat, depth, output, weights, window=0.25).item() > 0


@pytest.mark.parametrize("window,temperature,eta", [(0.0, 0.1, 0.2), (0.5, 0.07, 1.5), (0.25, 0.3, 0.0)])
def test_dense_matches_loop_hyperparameters(window, temperature, eta):
    feat, depth, output, weights = dense_case(9, seed=17)
    kw = dict(window=window, temperature=temperature, eta=eta)
    got = conr_dense_loss(feat, depth, output, weights, **kw)
    want = conr_dense_loop(feat, depth, output, weights, **kw)
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)
    assert ConRDense(**kw)(feat, depth, output, weights).item() == pytest.approx(want.item(), rel=1e-12, abs=1e-13)


def test_dense_pooling_uses_image_means():
    # only the per-image means of depth, output and weights matter: rearranging pixels or replacing the maps by
    # their per-image means leaves the loss unchanged
    feat, depth, output, weights = dense_case(7, seed=23)
    base = conr_dense_loss(feat, depth, output, weights, window=0.25).item()
    assert base > 0
    flipped = [t.flip(dims=(2, 3)) for t in (depth, output, weights)]
    assert conr_dense_loss(feat, *flipped, window=0.25).item() == pytest.approx(base, rel=1e-12)
    means = [t.mean(dim=(1, 2, 3), keepdim=True).expand_as(t).clone() for t in (depth, output, weights)]
    assert conr_dense_loss(feat, *means, window=0.25).item() == pytest.approx(base, rel=1e-12)


def test_dense_image_level_normalisation():
    # the whole C*H*W map of an image is normalised at once: scaling one image's map is harmless ...
    feat, depth, output, weights = dense_case(7, seed=24)
    base = conr_dense_loss(feat, depth, output, weights, window=0.25).item()
    scale = torch.tensor([0.1, 3.0, 1.0, 7.5, 0.5, 2.0, 1.25], dtype=D64).reshape(7, 1, 1, 1)
    assert conr_dense_loss(feat * scale, depth, output, weights, window=0.25).item() == pytest.approx(base, rel=1e-11)
    # ... but scaling one pixel's channel vector changes the image direction (so the loss), exactly as the loop says
    feat2 = feat.clone()
    feat2[:, :, 0, 0] *= 5.0
    got = conr_dense_loss(feat2, depth, output, weights, window=0.25).item()
    assert got == pytest.approx(conr_dense_loop(feat2, depth, output, weights, window=0.25).item(), rel=1e-12)
    assert got != pytest.approx(base, rel=1e-6)


def test_dense_linear_pushing_and_no_anchor_weight():
    # pi_ij = eta * Delta_ij * mean_weight_i and no anchor factor: scaling the weights by c equals scaling eta by c
    feat, depth, output, weights = dense_case(8, seed=25)
    a = conr_dense_loss(feat, depth, output, weights * 3.0, window=0.25, eta=0.2).item()
    b = conr_dense_loss(feat, depth, output, weights, window=0.25, eta=0.6).item()
    assert a > 0
    assert a == pytest.approx(b, rel=1e-12)
    # eta = 0: the weights disappear entirely (negatives leave D_i but still gate the anchor)
    z1 = conr_dense_loss(feat, depth, output, weights, window=0.25, eta=0.0).item()
    z2 = conr_dense_loss(feat, depth, output, None, window=0.25, eta=0.0).item()
    assert z1 == pytest.approx(z2, rel=1e-14)
    assert z1 == pytest.approx(conr_dense_loop(feat, depth, output, None, window=0.25, eta=0.0).item(), rel=1e-12)


def test_dense_anchor_without_positive_is_finite():
    # §4.6.2: the |P|+1 normaliser never divides by zero
    feat, depth, output, weights = dense_case(4, seed=26)
    depth = torch.tensor([1.0, 1.0, 3.0, 5.0], dtype=D64).reshape(4, 1, 1, 1).expand(4, 1, 3, 2).clone()
    output = torch.full((4, 1, 3, 2), 2.0, dtype=D64)
    fr = feat.clone().requires_grad_(True)
    got = conr_dense_loss(fr, depth, output, weights, window=0.25)
    want = conr_dense_loop(feat, depth, output, weights, window=0.25)
    assert torch.isfinite(got) and got.item() > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.isfinite(torch.autograd.grad(got, fr)[0]).all()


def test_dense_unit_weights_equal_none():
    feat, depth, output, _ = dense_case(6, seed=27)
    a = conr_dense_loss(feat, depth, output, torch.ones(6, 1, 3, 2, dtype=D64), window=0.25).item()
    b = conr_dense_loss(feat, depth, output, None, window=0.25).item()
    assert a == pytest.approx(b, rel=1e-14)


@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_dense_gradcheck(denominator):
    feat, depth, output, weights = dense_case(5, c=2, h=2, w=2, seed=28)
    assert conr_dense_loop(feat, depth, output, weights, window=0.25).item() > 0
    fr = feat.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: conr_dense_loss(x, depth, output, weights, window=0.25, temperature=0.3, denominator=denominator),
        (fr,), eps=1e-6, atol=1e-8)


def test_dense_bfloat16_close_to_float32():
    feat, depth, output, weights = dense_case(8, c=4, h=3, w=2, seed=29)
    fb = feat.bfloat16()
    dd, oo, ww = depth.float(), output.float(), weights.float()
    ref = conr_dense_loss(fb.float(), dd, oo, ww, window=0.25)
    got = conr_dense_loss(fb, dd.bfloat16(), oo.bfloat16(), ww.bfloat16(), window=0.25)
    assert ref.item() > 0
    assert torch.isfinite(got)
    assert got.float().item() == pytest.approx(ref.item(), rel=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_ac = conr_dense_loss(feat.float(), dd, oo, ww, window=0.25)
    assert torch.isfinite(got_ac)
    assert got_ac.float().item() == pytest.approx(conr_dense_loss(feat.float(), dd, oo, ww, window=0.25).item(),
                                                  rel=5e-2)


@pytest.mark.parametrize("change,match", [
    (dict(features=torch.zeros(4, 6, dtype=D64)), "features"),
    (dict(depth=torch.zeros(4, 1, 3, 2, dtype=D64)), "depth"),
    (dict(depth=torch.zeros(3, 1, 3, 1, dtype=D64)), "depth"),
    (dict(output=torch.zeros(4, 2, 3, 1, dtype=D64)), "output"),
    (dict(weights=torch.ones(4, 1, 2, 1, dtype=D64)), "weights"),
])
def test_dense_bad_shapes_raise(change, match):
    feat, depth, out, wt = g2()
    kw = dict(features=feat, depth=depth, output=out, weights=wt)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        conr_dense_loss(kw["features"], kw["depth"], kw["output"], kw["weights"])


@pytest.mark.parametrize("hyper,match", [(dict(temperature=0.0), "temperature"), (dict(window=-1.0), "window"),
                                         (dict(denominator="x"), "denominator")])
def test_dense_bad_hyperparameters_raise(hyper, match):
    feat, depth, out, wt = g2()
    with pytest.raises(ValueError, match=match):
        conr_dense_loss(feat, depth, out, wt, **hyper)


# ------------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_cuda_matches_cpu(denominator):
    f, y, yh, w = age_case(33, k=2, d=16, seed=91)
    cpu = conr_loss(f, y, yh, w, temperature=0.1, denominator=denominator)
    fg = f.to("cuda").requires_grad_(True)
    gpu = conr_loss(fg, y.to("cuda"), yh.to("cuda"), w.to("cuda"), temperature=0.1, denominator=denominator)
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-10)
    fc = f.clone().requires_grad_(True)
    (gc,) = torch.autograd.grad(conr_loss(fc, y, yh, w, temperature=0.1, denominator=denominator), fc)
    (gg,) = torch.autograd.grad(gpu, fg)
    assert gg.device.type == "cuda"
    assert torch.allclose(gg.cpu(), gc, rtol=1e-8, atol=1e-12)
    f32 = conr_loss(*(t.float().to("cuda") for t in (f, y, yh, w)), temperature=0.1, denominator=denominator)
    assert f32.dtype == torch.float32 and f32.item() == pytest.approx(cpu.item(), rel=1e-4)


@pytest.mark.cuda
@cuda_only
def test_cuda_dense_matches_cpu():
    feat, depth, output, weights = dense_case(9, c=3, h=4, w=3, seed=92)
    cpu = conr_dense_loss(feat, depth, output, weights, window=0.25)
    gpu = conr_dense_loss(feat.to("cuda"), depth.to("cuda"), output.to("cuda"), weights.to("cuda"), window=0.25)
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-10)
    ref = ConRDense(window=0.25)(feat.to("cuda"), depth.to("cuda"), output.to("cuda"), weights.to("cuda"))
    assert ref.device.type == "cuda" and ref.item() == pytest.approx(cpu.item(), rel=1e-10)
