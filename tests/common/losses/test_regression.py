"""Tests of the plain weighted regression losses (docs/methods.md §1, golden values §9 G3)."""

import pytest
import torch
import torch.nn.functional as F

from common.losses import (
    RegressionLoss,
    weighted_focal_l1_loss,
    weighted_focal_mse_loss,
    weighted_huber_loss,
    weighted_l1_loss,
    weighted_mse_loss,
)
from reference_loops import regression_loop

FUNCS = {
    "mse": weighted_mse_loss,
    "l1": weighted_l1_loss,
    "focal_mse": weighted_focal_mse_loss,
    "focal_l1": weighted_focal_l1_loss,
    "huber": weighted_huber_loss,
}
NAMES = list(FUNCS)
FOCAL = ["focal_mse", "focal_l1"]
D64 = torch.float64

# Keyword variants per loss (defaults first): the focal factor (activate, beta, gamma), the Huber beta.
VARIANTS = {
    "mse": [{}],
    "l1": [{}],
    "focal_mse": [{}, {"activate": "tanh", "beta": 1.0, "gamma": 2}, {"activate": "sigmoid", "beta": 0.7, "gamma": 3}],
    "focal_l1": [{}, {"activate": "tanh", "beta": 1.0, "gamma": 2}, {"activate": "sigmoid", "beta": 0.7, "gamma": 3}],
    "huber": [{}, {"beta": 0.5}, {"beta": 2.5}],
}
CASES = [(n, kw) for n in NAMES for kw in VARIANTS[n]]
CASE_IDS = [n + ("-" + "-".join(f"{k}={v}" for k, v in kw.items()) if kw else "") for n, kw in CASES]


def g3(dtype=D64):
    pred = torch.tensor([1.0, 2.5, -1.0, 4.0], dtype=dtype).reshape(4, 1)
    target = torch.tensor([1.5, 2.0, 1.0, 0.0], dtype=dtype).reshape(4, 1)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=dtype).reshape(4, 1)
    return pred, target, weights


# Golden values §9 G3: (weighted, unweighted).
G3 = {
    "mse": (4.6875, 5.125),
    "l1": (1.625, 1.75),
    "focal_mse": (1.6278507044379547, 1.723415966115539),
    "focal_l1": (0.448027182920656, 0.491126216107147),
    "huber": (1.15625, 1.3125),
}


def random_case(n, cols=1, seed=0, dtype=D64, ties=True):
    """Random pred/target with duplicate targets, repeated errors and exact zeros (ties)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (n, cols), generator=g).to(dtype)  # duplicate labels
    err = (torch.rand(n, cols, generator=g, dtype=D64) * 6 - 3).to(dtype)
    if ties and n >= 3:
        err.view(-1)[0] = 0.0  # exact zero error
        err.view(-1)[1] = err.view(-1)[2]  # repeated error
    if ties and n >= 4:
        err.view(-1)[3] = 1.0  # |e| == default Huber beta (branch boundary)
    pred = target + err
    return pred, target


def make_weights(kind, n, cols, seed=1, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    if kind is None:
        return None
    if kind == "full":
        return (torch.rand(n, cols, generator=g, dtype=D64) * 3).to(dtype)
    if kind == "per_sample":
        return (torch.rand(n, generator=g, dtype=D64) * 3).to(dtype)
    raise KeyError(kind)


# ---------------------------------------------------------------------------------------------- golden values
@pytest.mark.parametrize("name", NAMES)
def test_golden_g3_weighted_and_unweighted(name):
    pred, target, weights = g3()
    got_w = FUNCS[name](pred, target, weights)
    got_u = FUNCS[name](pred, target)
    want_w, want_u = G3[name]
    assert got_w.dim() == 0 and got_w.dtype == D64
    assert got_w.item() == pytest.approx(want_w, abs=1e-12, rel=1e-12)
    assert got_u.item() == pytest.approx(want_u, abs=1e-12, rel=1e-12)
    # per-sample 1-D weights (length N for pred of shape (N,1)) give the same number
    got_1d = FUNCS[name](pred, target, weights.reshape(-1))
    assert got_1d.item() == pytest.approx(want_w, abs=1e-12, rel=1e-12)


def test_golden_g3_focal_l1_tanh_beta1_gamma2():
    pred, target, weights = g3()
    got = weighted_focal_l1_loss(pred, target, weights, activate="tanh", beta=1.0, gamma=2)
    assert got.item() == pytest.approx(1.3110784432414602, abs=1e-12, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_golden_g3_module_twin(name):
    pred, target, weights = g3()
    mod = RegressionLoss(name)
    assert mod(pred, target, weights).item() == pytest.approx(G3[name][0], abs=1e-12, rel=1e-12)
    assert mod(pred, target).item() == pytest.approx(G3[name][1], abs=1e-12, rel=1e-12)


def test_golden_g3_module_twin_keywords():
    pred, target, weights = g3()
    mod = RegressionLoss("focal_l1", activate="tanh", beta=1.0, gamma=2)
    assert mod(pred, target, weights).item() == pytest.approx(1.3110784432414602, abs=1e-12, rel=1e-12)


# ------------------------------------------------------------------------------------ loop reference, random
@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("wkind", [None, "full", "per_sample"])
def test_matches_loop_reference(name, kw, n, wkind):
    pred, target = random_case(n, seed=n)
    weights = make_weights(wkind, n, 1, seed=n + 11)
    got = FUNCS[name](pred, target, weights, **kw)
    want = regression_loop(name, pred, target, weights, **kw)
    assert got.dtype == D64 and got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-13)
    # the nn.Module twin gives the same number
    twin = RegressionLoss(name, **kw)(pred, target, weights)
    assert twin.item() == pytest.approx(want, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_matches_loop_reference_multi_column(name, kw):
    pred, target = random_case(5, cols=3, seed=3)
    weights = make_weights("full", 5, 3, seed=4)
    got = FUNCS[name](pred, target, weights, **kw)
    want = regression_loop(name, pred, target, weights, **kw)
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_matches_loop_reference_1d_inputs(name):
    pred, target = random_case(6, seed=8)
    pred, target = pred.reshape(-1), target.reshape(-1)
    weights = make_weights("per_sample", 6, 1, seed=9)
    got = FUNCS[name](pred, target, weights)
    want = regression_loop(name, pred.reshape(-1, 1), target.reshape(-1, 1), weights)
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_mean_is_not_normalised_by_weight_sum(name):
    # §1.1: result = mean(w * l), not sum(w * l) / sum(w): doubling every weight doubles the loss.
    pred, target = random_case(5, seed=21)
    w = make_weights("full", 5, 1, seed=22)
    base = FUNCS[name](pred, target, w)
    assert base.item() > 0
    assert FUNCS[name](pred, target, 2 * w).item() == pytest.approx(2 * base.item(), rel=1e-12)


# ------------------------------------------------------------------------------------------ invariants §1.3
@pytest.mark.parametrize("name", NAMES)
def test_unit_weights_equal_unweighted(name):
    pred, target = random_case(7, seed=5)
    plain = FUNCS[name](pred, target)
    ones_full = FUNCS[name](pred, target, torch.ones(7, 1, dtype=D64))
    ones_1d = FUNCS[name](pred, target, torch.ones(7, dtype=D64))
    want = regression_loop(name, pred, target, None)
    assert plain.item() == pytest.approx(want, rel=1e-12, abs=1e-13)
    assert ones_full.item() == pytest.approx(plain.item(), rel=1e-14, abs=1e-15)
    assert ones_1d.item() == pytest.approx(plain.item(), rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_linear_in_weights(name, kw):
    pred, target = random_case(7, seed=6)
    w1 = make_weights("full", 7, 1, seed=7)
    w2 = make_weights("full", 7, 1, seed=8)
    for a, b in [(0.3, 2.2), (1.75, 0.0), (0.0, 4.5)]:
        lhs = FUNCS[name](pred, target, a * w1 + b * w2, **kw).item()
        rhs = a * FUNCS[name](pred, target, w1, **kw).item() + b * FUNCS[name](pred, target, w2, **kw).item()
        assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("name", FOCAL)
@pytest.mark.parametrize("beta,gamma", [(0.2, 1), (0.9, 2), (3.0, 3)])
def test_sigmoid_focal_equals_tanh_focal_half_beta(name, beta, gamma):
    pred, target = random_case(9, seed=12)
    w = make_weights("full", 9, 1, seed=13)
    sig = FUNCS[name](pred, target, w, activate="sigmoid", beta=beta, gamma=gamma)
    tanh = FUNCS[name](pred, target, w, activate="tanh", beta=beta / 2, gamma=gamma)
    assert sig.item() > 0
    assert sig.item() == pytest.approx(tanh.item(), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("beta", [0.3, 1.0, 2.5])
def test_huber_equals_smooth_l1_and_scaled_huber(beta):
    pred, target = random_case(11, seed=14)
    got = weighted_huber_loss(pred, target, beta=beta)
    assert got.item() == pytest.approx(F.smooth_l1_loss(pred, target, beta=beta).item(), rel=1e-12, abs=1e-14)
    assert got.item() == pytest.approx(F.huber_loss(pred, target, delta=beta).item() / beta, rel=1e-12, abs=1e-14)
    ones = weighted_huber_loss(pred, target, torch.ones_like(pred), beta=beta)
    assert ones.item() == pytest.approx(got.item(), rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("name,kw", [c for c in CASES if c[0] in FOCAL] + [("l1", {}), ("mse", {})],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] in FOCAL] + ["l1", "mse"])
def test_value_and_gradient_vanish_at_zero_error(name, kw):
    target = torch.tensor([[0.5], [-2.0], [3.0], [7.25]], dtype=D64)
    pred = target.clone().requires_grad_(True)
    w = torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=D64)
    loss = FUNCS[name](pred, target, w, **kw)
    (grad,) = torch.autograd.grad(loss, pred)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_l1_gradient_is_weighted_sign_with_zero_at_zero_error():
    # d|e|/de = sign(e), with sign(0) = 0 (§1.3.4); weighted and divided by the element count.
    target = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=D64)
    pred = torch.tensor([[1.0], [2.5], [2.0], [4.0]], dtype=D64, requires_grad=True)
    w = torch.tensor([[2.0], [3.0], [0.5], [1.5]], dtype=D64)
    (grad,) = torch.autograd.grad(weighted_l1_loss(pred, target, w), pred)
    errors = (pred.detach() - target).reshape(-1).tolist()
    want = torch.tensor([[w[i, 0].item() * ((e > 0) - (e < 0)) / 4] for i, e in enumerate(errors)], dtype=D64)
    assert want[0, 0] == 0 and want[3, 0] == 0
    assert torch.allclose(grad, want, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------------- gradients
def _smooth_case(n=5, seed=30, huber_beta=1.0):
    """Errors away from 0 and from the Huber kink, so that finite differences are valid."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 1, generator=g, dtype=D64)
    mag = torch.rand(n, 1, generator=g, dtype=D64) * 2.5 + 0.3
    mag = torch.where((mag - huber_beta).abs() < 0.15, mag + 0.4, mag)
    sign = torch.where(torch.rand(n, 1, generator=g, dtype=D64) < 0.5, -1.0, 1.0).to(D64)
    pred = target + sign * mag
    w = torch.rand(n, 1, generator=g, dtype=D64) * 2 + 0.1
    return pred, target, w


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("wkind", ["none", "full", "per_sample"])
def test_gradcheck(name, kw, wkind):
    pred, target, w = _smooth_case(huber_beta=kw.get("beta", 1.0) if name == "huber" else 1.0)
    weights = {"none": None, "full": w, "per_sample": w.reshape(-1)}[wkind]
    pred = pred.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: FUNCS[name](p, target, weights, **kw), (pred,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_gradient_matches_analytic_loop_derivative(name, kw):
    # Central differences of the float64 loop reference vs autograd of the vectorised loss.
    pred, target, w = _smooth_case(n=4, seed=31, huber_beta=kw.get("beta", 1.0) if name == "huber" else 1.0)
    p = pred.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(FUNCS[name](p, target, w, **kw), p)
    h = 1e-6
    for i in range(pred.shape[0]):
        up, down = pred.clone(), pred.clone()
        up[i, 0] += h
        down[i, 0] -= h
        fd = (regression_loop(name, up, target, w, **kw) - regression_loop(name, down, target, w, **kw)) / (2 * h)
        assert grad[i, 0].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------- low precision (bf16)
def _lowp_case(n=64, seed=40):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 1, generator=g) * 3
    pred = target + (torch.rand(n, 1, generator=g) * 4 + 1) * torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
    w = torch.rand(n, 1, generator=g) * 2 + 0.1
    return pred, target, w


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_bfloat16_inputs_close_to_float32(name, kw):
    pred, target, w = _lowp_case()
    pb, tb, wb = pred.bfloat16(), target.bfloat16(), w.bfloat16()
    got = FUNCS[name](pb, tb, wb, **kw)
    ref = FUNCS[name](pb.float(), tb.float(), wb.float(), **kw)
    assert ref.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert got.float().item() == pytest.approx(ref.item(), rel=2e-2)


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_autocast_bfloat16_close_to_float32(name, kw):
    pred, target, w = _lowp_case(seed=41)
    ref = FUNCS[name](pred, target, w, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = FUNCS[name](pred, target, w, **kw)
    assert torch.isfinite(got).all()
    assert got.float().item() == pytest.approx(ref.item(), rel=2e-2)


# ------------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("name", NAMES)
def test_bad_shape_mismatch_raises(name):
    pred = torch.zeros(4, 1, dtype=D64)
    with pytest.raises(ValueError, match="target"):
        FUNCS[name](pred, torch.zeros(4, dtype=D64))  # (4,1) vs (4,): would broadcast to (4,4)
    with pytest.raises(ValueError, match="target"):
        FUNCS[name](pred, torch.zeros(3, 1, dtype=D64))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("wshape", [(3,), (4, 2), (2, 2), (3, 1), (1, 4)])
def test_bad_weight_shape_raises(name, wshape):
    pred, target = torch.zeros(4, 1, dtype=D64), torch.ones(4, 1, dtype=D64)
    with pytest.raises(ValueError, match="weights"):
        FUNCS[name](pred, target, torch.ones(wshape, dtype=D64))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("arg", ["pred", "target", "weights"])
def test_non_finite_inputs_raise(name, bad, arg):
    t = {k: torch.ones(4, 1, dtype=D64) for k in ("pred", "target", "weights")}
    t["target"] = t["target"] * 2
    t[arg][2, 0] = bad
    with pytest.raises(ValueError, match=arg):
        FUNCS[name](t["pred"], t["target"], t["weights"])


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_raises(name):
    with pytest.raises(ValueError, match="pred"):
        FUNCS[name](torch.zeros(0, 1, dtype=D64), torch.zeros(0, 1, dtype=D64))


@pytest.mark.parametrize("name", FOCAL)
def test_unknown_activate_raises(name):
    pred, target, w = g3()
    with pytest.raises(ValueError, match="activate"):
        FUNCS[name](pred, target, w, activate="relu")


def test_regression_module_unknown_name_raises():
    with pytest.raises(ValueError, match="name"):
        RegressionLoss("mae")


# ------------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_cuda_matches_cpu(name, kw):
    pred, target = random_case(33, seed=50)
    w = make_weights("full", 33, 1, seed=51)
    cpu = FUNCS[name](pred, target, w, **kw)
    gpu = FUNCS[name](pred.to("cuda"), target.to("cuda"), w.to("cuda"), **kw)
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-12, abs=1e-13)
    gpu1d = FUNCS[name](pred.to("cuda"), target.to("cuda"), w.reshape(-1).to("cuda"), **kw)
    assert gpu1d.item() == pytest.approx(cpu.item(), rel=1e-12, abs=1e-13)
