"""Tests of VIR's NIG loss (common/losses/vir.py): scipy's Student-t, the loop statement (reference_loops.vir_loop),
the conjugate update."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from common.losses import VIRLoss, nig_nll, nig_regularizer, vir_loss, vir_nig_update, vir_predict
from reference_loops import vir_loop

D64 = torch.float64
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def nig_case(n, seed=0):
    """Random NIG parameters as an evidential head gives them (ν, β > 0, α > 1) and labels around γ."""
    g = torch.Generator().manual_seed(seed)
    gamma = 3 * torch.randn(n, generator=g, dtype=D64)
    nu = torch.rand(n, generator=g, dtype=D64) * 5 + 0.05
    alpha = 1 + torch.rand(n, generator=g, dtype=D64) * 4 + 0.01
    beta = torch.rand(n, generator=g, dtype=D64) * 3 + 0.05
    target = gamma + 2 * torch.randn(n, generator=g, dtype=D64)
    weights = torch.rand(n, generator=g, dtype=D64) * 2 + 0.1
    return gamma, nu, alpha, beta, target, weights


# ------------------------------------------------------------------------------------------ the Student-t NLL
def test_nll_is_minus_log_student_t():
    # −log St(y; 2α, γ, β(1 + ν)/(να)), the NIG marginal, checked against scipy
    gamma, nu, alpha, beta, target, _ = nig_case(50, seed=1)
    alpha = alpha - 0.9                                # α > 0 suffices for the likelihood: test 0.11 … 4.1
    scale = np.sqrt((beta * (1 + nu) / (nu * alpha)).numpy())
    want = -stats.t.logpdf(target.numpy(), df=2 * alpha.numpy(), loc=gamma.numpy(), scale=scale)
    got = nig_nll(gamma, nu, alpha, beta, target)
    assert got.shape == (50,) and got.dtype == D64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    # (N, 1) columns are the same
    np.testing.assert_allclose(nig_nll(*(t[:, None] for t in (gamma, nu, alpha, beta, target))).numpy(), want,
                               rtol=1e-12, atol=1e-12)


def test_regulariser():
    gamma, nu, alpha, _, target, _ = nig_case(7, seed=2)
    got = nig_regularizer(gamma, nu, alpha, target)
    assert torch.allclose(got, (target - gamma).abs() * (2 * nu + alpha), rtol=1e-15)


# ---------------------------------------------------------------------------------------- the loss vs the loop
@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reg_weight", [0.0, 0.01, 0.5])
def test_loss_matches_loop_value_and_gradient(n, weighted, reg_weight):
    gamma, nu, alpha, beta, target, w = nig_case(n, seed=10 + n)
    weights = w if weighted else None
    leaves = [t.clone().requires_grad_(True) for t in (gamma, nu, alpha, beta)]
    got = vir_loss(*leaves, target, weights, reg_weight=reg_weight)
    loop_leaves = [t.clone().requires_grad_(True) for t in (gamma, nu, alpha, beta)]
    want = vir_loop(*loop_leaves, target, weights, reg_weight=reg_weight)
    assert got.dim() == 0 and got.dtype == D64
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for g, wg in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, loop_leaves)):
        assert torch.allclose(g, wg, rtol=1e-10, atol=1e-13)


def test_gradcheck():
    gamma, nu, alpha, beta, target, w = nig_case(5, seed=3)
    leaves = tuple(t.clone().requires_grad_(True) for t in (gamma, nu, alpha, beta))
    assert torch.autograd.gradcheck(lambda *p: vir_loss(*p, target, w, counts=w), leaves, eps=1e-6, atol=1e-8)


def test_loss_defaults_and_module_twin():
    gamma, nu, alpha, beta, target, w = nig_case(6, seed=4)
    want = (nig_nll(gamma, nu, alpha, beta, target) + 0.01 * nig_regularizer(gamma, nu, alpha, target)).mean()
    assert vir_loss(gamma, nu, alpha, beta, target).item() == pytest.approx(want.item(), rel=1e-14)
    assert VIRLoss()(gamma, nu, alpha, beta, target).item() == pytest.approx(want.item(), rel=1e-14)
    module = VIRLoss(0.1)
    assert module(gamma, nu, alpha, beta, target, w, 2.0).item() == pytest.approx(
        vir_loss(gamma, nu, alpha, beta, target, w, 2.0, 0.1).item(), rel=1e-15)
    assert "0.1" in repr(module)


def test_evidence_lowers_the_nll_only_where_the_mean_is_right():
    # more pseudo-counts sharpen the Student-t: better where y ≈ γ, and the regulariser grows where it is not
    gamma = torch.zeros(2, dtype=D64)
    nu, alpha, beta = torch.ones(2, dtype=D64), torch.full((2,), 2.0, dtype=D64), torch.ones(2, dtype=D64)
    target = torch.tensor([0.0, 6.0], dtype=D64)
    before = nig_nll(gamma, nu, alpha, beta, target)
    after = nig_nll(gamma, nu * 10, alpha * 10, beta, target)
    assert after[0] < before[0] and after[1] > before[1]


# ----------------------------------------------------------------------------------------- pseudo-count update
def test_update_adds_pseudo_counts():
    gamma, nu, alpha, beta, _, w = nig_case(6, seed=5)
    g, v, a, b = vir_nig_update(gamma, nu, alpha, beta, w)
    assert torch.equal(g, gamma) and torch.equal(b, beta)
    assert torch.allclose(v, nu + w, rtol=0) and torch.allclose(a, alpha + w / 2, rtol=0)
    g, v, a, b = vir_nig_update(gamma[:, None], nu[:, None], alpha[:, None], beta[:, None], 3.0)
    assert v.shape == (6,) and torch.allclose(v, nu + 3) and torch.allclose(a, alpha + 1.5)
    assert torch.equal(vir_nig_update(gamma, nu, alpha, beta, 0)[1], nu)


def test_loss_with_counts_is_the_loss_of_the_updated_head():
    gamma, nu, alpha, beta, target, w = nig_case(8, seed=6)
    got = vir_loss(gamma, nu, alpha, beta, target, counts=w)
    want = vir_loop(gamma, nu + w, alpha + w / 2, beta, target)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert got.item() != pytest.approx(vir_loss(gamma, nu, alpha, beta, target).item(), rel=1e-3)


def test_update_with_observations_is_conjugate():
    # Bayes with real data: one update with all n observations equals n updates with one observation each,
    # and equals two updates with two halves (so the formulas are the NIG posterior, not just close to it)
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.normal(2.0, 1.5, size=(3, 6)))          # 3 samples, 6 observations each
    prior = nig_case(3, seed=7)[:4]
    batch = vir_nig_update(*prior, 6.0, x.mean(1), x.var(1, unbiased=False))
    one_by_one = prior
    for j in range(6):
        one_by_one = vir_nig_update(*one_by_one, 1.0, x[:, j])
    halves = vir_nig_update(*prior, 4.0, x[:, :4].mean(1), x[:, :4].var(1, unbiased=False))
    halves = vir_nig_update(*halves, 2.0, x[:, 4:].mean(1), x[:, 4:].var(1, unbiased=False))
    for a, b, c in zip(batch, one_by_one, halves):
        assert torch.allclose(a, b, rtol=1e-12) and torch.allclose(a, c, rtol=1e-12)


def test_update_and_nll_give_an_exchangeable_marginal_likelihood():
    # −log p(x_1 … x_n) by the chain rule, Σ_j NLL(x_j | NIG updated with x_1 … x_{j−1}), must not depend on the
    # order of the observations: true only if the update is the exact posterior of the NLL's model
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.normal(-1.0, 2.0, size=(4, 5)))
    prior = nig_case(4, seed=8)[:4]

    def chain(obs):
        total, head = 0.0, prior
        for j in range(obs.shape[1]):
            total = total + nig_nll(*head, obs[:, j])
            head = vir_nig_update(*head, 1.0, obs[:, j])
        return total

    base = chain(x)
    for seed in range(3):
        order = torch.randperm(5, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(chain(x[:, order]), base, rtol=1e-12)
    # a wrong update (β left unchanged) breaks it: the test can fail
    def chain_without_beta(obs):
        total, head = 0.0, prior
        for j in range(obs.shape[1]):
            total = total + nig_nll(*head, obs[:, j])
            g, v, a, _ = vir_nig_update(*head, 1.0, obs[:, j])
            head = (g, v, a, head[3])
        return total
    assert not torch.allclose(chain_without_beta(x.flip(1)), chain_without_beta(x), rtol=1e-6)


# -------------------------------------------------------------------------------------------------- predictions
def test_predict_mean_and_variances():
    gamma, nu, alpha, beta, _, _ = nig_case(20, seed=8)
    mean, aleatoric, epistemic = vir_predict(gamma, nu, alpha, beta)
    assert torch.equal(mean, gamma)
    assert torch.allclose(aleatoric, beta / (alpha - 1), rtol=1e-15)
    assert torch.allclose(epistemic, beta / (nu * (alpha - 1)), rtol=1e-15)
    # their sum is the variance of the Student-t predictive
    scale = np.sqrt((beta * (1 + nu) / (nu * alpha)).numpy())
    t_var = stats.t.var(df=2 * alpha.numpy(), loc=gamma.numpy(), scale=scale)
    np.testing.assert_allclose((aleatoric + epistemic).numpy(), t_var, rtol=1e-12)


def test_predict_variance_undefined_below_alpha_one():
    gamma = torch.zeros(3, dtype=D64)
    nu, beta = torch.ones(3, dtype=D64), torch.ones(3, dtype=D64)
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=D64)
    _, aleatoric, epistemic = vir_predict(gamma, nu, alpha, beta)
    assert aleatoric.tolist() == [math.inf, math.inf, 1.0] and epistemic.tolist() == [math.inf, math.inf, 1.0]


# ---------------------------------------------------------------------------------------- dtypes, autocast
@pytest.mark.parametrize("dtype,want", [(D64, D64), (torch.float32, torch.float32), (torch.float16, torch.float32),
                                        (torch.bfloat16, torch.float32)])
def test_output_dtypes(dtype, want):
    gamma, nu, alpha, beta, target, w = (t.to(dtype) for t in nig_case(6, seed=9))
    assert vir_loss(gamma, nu, alpha, beta, target, w, w).dtype == want
    assert nig_nll(gamma, nu, alpha, beta, target).dtype == want
    assert all(t.dtype == want for t in vir_predict(gamma, nu, alpha, beta))
    assert all(t.dtype == want for t in vir_nig_update(gamma, nu, alpha, beta, w, target))


def test_autocast_bfloat16_is_finite_and_equal():
    parts = [t.float() for t in nig_case(32, seed=10)]
    leaves = [t.clone().requires_grad_(True) for t in parts[:4]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vir_loss(*leaves, parts[4], counts=parts[5])
        grads = torch.autograd.grad(got, leaves)
    assert got.dtype == torch.float32 and torch.isfinite(got) and all(torch.isfinite(g).all() for g in grads)
    assert got.item() == pytest.approx(vir_loss(*parts[:5], counts=parts[5]).item(), rel=1e-6)


def test_float32_large_evidence_is_finite():
    gamma = torch.zeros(3)
    nu, alpha, beta = torch.tensor([1e-6, 1e4, 1.0]), torch.tensor([1.01, 1e4, 300.0]), torch.tensor([1e-4, 1e3, 5.0])
    target = torch.tensor([100.0, -1.0, 1e3])
    leaves = [t.clone().requires_grad_(True) for t in (gamma, nu, alpha, beta)]
    got = vir_loss(*leaves, target)
    assert torch.isfinite(got) and all(torch.isfinite(g).all() for g in torch.autograd.grad(got, leaves))
    want = vir_loss(*(t.double() for t in (gamma, nu, alpha, beta, target)))
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


# ----------------------------------------------------------------------------------------------- bad input
def _ok():
    gamma, nu, alpha, beta, target, w = nig_case(5, seed=11)
    return dict(gamma=gamma, nu=nu, alpha=alpha, beta=beta, target=target, weights=w)


@pytest.mark.parametrize("change,match", [
    (dict(gamma=torch.zeros(5, 2, dtype=D64)), "gamma"),
    (dict(gamma=torch.zeros(0, dtype=D64)), "gamma"),
    (dict(gamma=torch.zeros(5, dtype=torch.long)), "gamma"),
    (dict(gamma=[0.0] * 5), "gamma"),
    (dict(nu=torch.ones(4, dtype=D64)), "nu"),
    (dict(nu=torch.zeros(5, dtype=D64)), "nu"),
    (dict(alpha=-torch.ones(5, dtype=D64)), "alpha"),
    (dict(beta=torch.zeros(5, dtype=D64)), "beta"),
    (dict(beta=torch.full((5,), math.nan, dtype=D64)), "beta"),
    (dict(target=torch.ones(6, dtype=D64)), "target"),
    (dict(target=torch.full((5,), math.inf, dtype=D64)), "target"),
    (dict(weights=-torch.ones(5, dtype=D64)), "weights"),
    (dict(weights=torch.ones(3, dtype=D64)), "weights"),
])
def test_loss_bad_input(change, match):
    kw = _ok()
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        vir_loss(**kw)


def test_other_bad_input():
    kw = _ok()
    p = [kw[k] for k in ("gamma", "nu", "alpha", "beta")]
    with pytest.raises(ValueError, match="reg_weight"):
        vir_loss(*p, kw["target"], reg_weight=-0.1)
    with pytest.raises(ValueError, match="reg_weight"):
        VIRLoss(-1.0)
    with pytest.raises(ValueError, match="counts"):
        vir_loss(*p, kw["target"], counts=-1.0)
    with pytest.raises(ValueError, match="counts"):
        vir_nig_update(*p, torch.ones(4, dtype=D64))
    with pytest.raises(ValueError, match="counts"):
        vir_nig_update(*p, math.nan)
    with pytest.raises(ValueError, match="counts"):
        vir_nig_update(*p, "one")
    with pytest.raises(ValueError, match="obs_mean"):
        vir_nig_update(*p, 1.0, obs_var=torch.ones(5, dtype=D64))
    with pytest.raises(ValueError, match="obs_var"):
        vir_nig_update(*p, 1.0, torch.ones(5, dtype=D64), -torch.ones(5, dtype=D64))
    with pytest.raises(ValueError, match="alpha"):
        vir_predict(p[0], p[1], torch.zeros(5, dtype=D64), p[3])
    with pytest.raises(ValueError, match="target"):
        nig_regularizer(p[0], p[1], p[2], torch.zeros(2, dtype=D64))


# ----------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@cuda_only
def test_cuda_matches_cpu():
    parts = nig_case(33, seed=12)
    cpu = vir_loss(*parts[:5], counts=parts[5])
    gpu = vir_loss(*(t.cuda() for t in parts[:5]), counts=parts[5].cuda())
    assert gpu.device.type == "cuda" and gpu.item() == pytest.approx(cpu.item(), rel=1e-12)
    assert all(t.device.type == "cuda" for t in vir_predict(*(t.cuda() for t in parts[:4])))
