"""Tests of UVOTE (common/losses/uvote.py) against loop statements (reference_loops.uvote_*)."""
import math

import numpy as np
import pytest
import torch

from common.bins import AGE_BINS, LabelBins
from common.lds import prepare_weights
from common.losses import (UVOTELoss, laplace_nll, uvote_exponents, uvote_head_losses, uvote_head_weights,
                           uvote_loss, uvote_predict)
from reference_loops import uvote_head_weights_loop, uvote_loop, uvote_predict_loop
from common.lds import smoothed_bin_counts
from common.losses import uvote_weight_table

D64 = torch.float64
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def heads_case(n, m, seed=0, spread=3.0):
    """N samples, M heads; log σ spread past the clamp [−5, 5] on some entries."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 60, (n,), generator=g).to(D64)
    mus = y[:, None] + 4 * torch.randn(n, m, generator=g, dtype=D64)
    log_sigmas = spread * torch.randn(n, m, generator=g, dtype=D64)
    if n >= 2 and m >= 1:
        log_sigmas[0, 0], log_sigmas[1, -1] = 6.5, -7.0          # outside the clamp
    weights = torch.rand(n, m, generator=g, dtype=D64) * 2 + 0.1
    return mus, log_sigmas, y, weights


def train_labels(seed=0, n=400):
    """An imbalanced age histogram: many labels near 30, few above 70, bins with one label, empty bins."""
    rng = np.random.default_rng(seed)
    ages = np.clip(np.round(rng.gamma(6.0, 5.0, size=n)), 0, 120)
    return np.concatenate([ages, [95.0, 101.0]])


# ------------------------------------------------------------------------------------------- exponents, weights
def test_exponents():
    assert uvote_exponents(1) == [0.0]
    assert uvote_exponents(2) == [0.0, 1.0]
    assert uvote_exponents(5) == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("num_heads", [1, 2, 3, 5])
@pytest.mark.parametrize("lds", [False, True])
def test_head_weights_match_loop(num_heads, lds):
    train = train_labels(1)
    labels = np.concatenate([train[:4], [95.0, 101.0, train[0]]])   # occupied bins, singletons, a repeat
    got = uvote_head_weights(train, labels, num_heads, lds=lds, lds_ks=5, lds_sigma=2)
    want = np.array(uvote_head_weights_loop(train, labels, num_heads, lds=lds, ks=5, sigma=2.0))
    assert got.dtype == np.float32 and got.shape == (7, num_heads)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(got[:, 0] == 1.0)                          # r = 0: the plain head


@pytest.mark.parametrize("kernel", ["gaussian", "triang", "laplace"])
def test_head_weights_extend_prepare_weights(kernel):
    # r = 1/2 is the repo's sqrt_inv re-weighting, r = 1 its inverse (clipped to [5, 1000]), LDS included
    train = train_labels(2)
    got = uvote_head_weights(train, None, 3, lds=True, lds_kernel=kernel, lds_ks=7, lds_sigma=1.5)
    for column, reweight in ((1, "sqrt_inv"), (2, "inverse")):
        want = prepare_weights(train, reweight, lds=True, lds_kernel=kernel, lds_ks=7, lds_sigma=1.5)
        np.testing.assert_allclose(got[:, column], want, rtol=1e-5)
    np.testing.assert_allclose(got.mean(0), 1.0, rtol=1e-5)  # mean 1 per head over the training labels


def test_head_weights_are_lookups_of_the_training_weights():
    # the weights of other labels are those of training labels in the same bin: not renormalised per call
    train = train_labels(3)
    all_train = uvote_head_weights(train, None, 4)
    some = uvote_head_weights(train, train[[5, 17, 17, 200]], 4)
    np.testing.assert_array_equal(some, all_train[[5, 17, 17, 200]])
    # a rarer label gets a larger weight in every re-weighted head
    counts = AGE_BINS.histogram(train)
    rare, common = int(np.argmin(np.where(counts > 5, counts, 10 ** 9))), int(np.argmax(counts))
    w = uvote_head_weights(train, np.array([float(rare), float(common)]), 4)
    assert np.all(w[0, 1:] > w[1, 1:]) and w[0, 0] == w[1, 0] == 1.0


def test_head_weights_other_grid():
    bins = LabelBins(0, 0.1, 50, rule="histogram")
    train = np.random.default_rng(4).uniform(0, 5, size=300)
    got = uvote_head_weights(train, None, 3, bins)
    want = prepare_weights(train, "sqrt_inv", bins=bins)
    np.testing.assert_allclose(got[:, 1], want, rtol=1e-5)


def test_head_weights_of_an_empty_bin():
    train = np.array([10.0, 10.0, 11.0, 12.0])
    # r = 1: the count is clipped up to 5, the weight finite
    w = uvote_head_weights(train, np.array([50.0]), 2)
    assert np.isfinite(w).all()
    # 0 < r < 1 is unclipped: an empty bin's weight would be infinite
    with pytest.raises(ValueError, match="labels"):
        uvote_head_weights(train, np.array([50.0]), 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(labels=None, train_labels=[], num_heads=2), "train_labels"),
    (dict(labels=None, train_labels=[1.0, math.nan], num_heads=2), "train_labels"),
    (dict(train_labels=[1.0, 2.0], labels=[math.inf], num_heads=2), "labels"),
    (dict(labels=None, train_labels=[1.0, 2.0], num_heads=0), "num_heads"),
    (dict(labels=None, train_labels=[1.0, 2.0], num_heads=2.5), "num_heads"),
    (dict(labels=None, train_labels=[1.0, 2.0], num_heads=2, lds_kernel="box"), "lds_kernel"),
])
def test_head_weights_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        uvote_head_weights(**kwargs)


# ------------------------------------------------------------------------------------------------ Laplace NLL
def test_laplace_nll_is_the_laplace_log_density():
    mus, log_sigmas, y, w = heads_case(9, 1, seed=5, spread=1.0)
    mu, s = mus[:, 0], log_sigmas[:, 0].clamp(-5, 5)
    want = -torch.distributions.Laplace(mu, s.exp()).log_prob(y)
    assert laplace_nll(mu, log_sigmas[:, 0], y).item() == pytest.approx(want.mean().item(), rel=1e-12)
    assert laplace_nll(mu[:, None], log_sigmas, y[:, None], w[:, 0]).item() == pytest.approx(
        (w[:, 0] * want).mean().item(), rel=1e-12)
    assert laplace_nll(mu, log_sigmas[:, 0], y, 2.0).item() == pytest.approx(2 * want.mean().item(), rel=1e-12)


def test_log_sigma_clamp_bounds_value_and_stops_gradient():
    mu = torch.zeros(2, dtype=D64)
    y = torch.tensor([1.0, 1.0], dtype=D64)
    s = torch.tensor([9.0, -9.0], dtype=D64, requires_grad=True)
    got = laplace_nll(mu, s, y)
    want = ((math.log(2) + 5 + math.exp(-5)) + (math.log(2) - 5 + math.exp(5))) / 2
    assert got.item() == pytest.approx(want, rel=1e-12)
    (grad,) = torch.autograd.grad(got, s)
    assert torch.equal(grad, torch.zeros(2, dtype=D64))


# ------------------------------------------------------------------------------------------------ UVOTE loss
@pytest.mark.parametrize("n,m", [(1, 1), (5, 1), (6, 2), (7, 4)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("schedule", [None, (0, 10), (3, 10), (10, 10)])
def test_loss_matches_loop_value_and_gradient(n, m, weighted, schedule):
    mus, log_sigmas, y, w = heads_case(n, m, seed=10 * n + m)
    weights = w if weighted else None
    kw = dict(dynamic=schedule is not None, epoch=None if schedule is None else schedule[0],
              epochs=None if schedule is None else schedule[1])
    leaves = [mus.clone().requires_grad_(True), log_sigmas.clone().requires_grad_(True)]
    got = uvote_loss(leaves[0], leaves[1], y, weights, **kw)
    loop_leaves = [mus.clone().requires_grad_(True), log_sigmas.clone().requires_grad_(True)]
    want = uvote_loop(loop_leaves[0], loop_leaves[1], y, weights, **kw)
    assert got.dtype == D64 and got.dim() == 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for g, wg in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, loop_leaves)):
        assert torch.allclose(g, wg, rtol=1e-10, atol=1e-14)


def test_one_head_with_exponent_zero_is_a_laplace_nll():
    mus, log_sigmas, y, _ = heads_case(8, 1, seed=20)
    head_weights = torch.from_numpy(uvote_head_weights(train_labels(5), y.numpy(), 1)).to(D64)
    assert torch.equal(head_weights, torch.ones(8, 1, dtype=D64))
    want = laplace_nll(mus[:, 0], log_sigmas[:, 0], y)
    for dynamic in (False, True):
        got = uvote_loss(mus, log_sigmas, y, head_weights, epoch=2, epochs=5, dynamic=dynamic)
        assert got.item() == pytest.approx(want.item(), rel=1e-14)


def test_dynamic_schedule():
    mus, log_sigmas, y, w = heads_case(6, 3, seed=21)
    heads = uvote_head_losses(mus, log_sigmas, y, w)
    assert heads.shape == (3,)
    assert uvote_loss(mus, log_sigmas, y, w).item() == pytest.approx(heads.sum().item(), rel=1e-14)
    start = uvote_loss(mus, log_sigmas, y, w, epoch=0, epochs=8, dynamic=True)
    middle = uvote_loss(mus, log_sigmas, y, w, epoch=2, epochs=8, dynamic=True)
    end = uvote_loss(mus, log_sigmas, y, w, epoch=8, epochs=8, dynamic=True)
    assert start.item() == pytest.approx(heads[0].item(), rel=1e-14)            # α = 1: the plain head only
    assert middle.item() == pytest.approx((heads[0] + heads[1:].sum() / 16).item(), rel=1e-14)   # 1 − α = 1/16
    assert end.item() == pytest.approx(heads.sum().item(), rel=1e-14)            # α = 0


def test_head_weights_reach_each_head():
    mus, log_sigmas, y, w = heads_case(6, 3, seed=22)
    heads = uvote_head_losses(mus, log_sigmas, y, w)
    for i in range(3):
        assert heads[i].item() == pytest.approx(laplace_nll(mus[:, i], log_sigmas[:, i], y, w[:, i]).item(),
                                                rel=1e-14)


def test_module_twin():
    mus, log_sigmas, y, w = heads_case(6, 3, seed=23)
    module = UVOTELoss(3, dynamic=True, epochs=4)
    assert module.exponents == [0.0, 0.5, 1.0]
    assert module(mus, log_sigmas, y, w, epoch=1).item() == pytest.approx(
        uvote_loss(mus, log_sigmas, y, w, epoch=1, epochs=4, dynamic=True).item(), rel=1e-15)
    assert UVOTELoss(3)(mus, log_sigmas, y).item() == pytest.approx(uvote_loss(mus, log_sigmas, y).item())
    pred, sigma = module.predict(mus, log_sigmas, "avgvar")
    want = uvote_predict(mus, log_sigmas, "avgvar")
    assert torch.equal(pred, want[0]) and torch.equal(sigma, want[1])
    assert "num_heads=3" in repr(module)
    pred, sigma = module.predict(mus, log_sigmas, "avgvar", "clamped")
    want = uvote_predict(mus, log_sigmas, "avgvar", "clamped")
    assert torch.equal(pred, want[0]) and torch.equal(sigma, want[1])
    with pytest.raises(ValueError, match="mus"):
        module(mus[:, :2], log_sigmas[:, :2], y, epoch=1)
    with pytest.raises(ValueError, match="epochs"):
        UVOTELoss(3, dynamic=True)


# ---------------------------------------------------------------------------------------------------- predict
def _spread_and_clamped_heads(n, m, seed):
    """Heads whose log σ spread over [−8, 8]: about a third beyond the training clamp [−5, 5]."""
    mus, _, _, _ = heads_case(n, m, seed=seed)
    log_sigmas = torch.from_numpy(np.random.default_rng(seed).uniform(-8, 8, size=(n, m)))
    return mus, log_sigmas


@pytest.mark.parametrize("vote", ["raw", "clamped"])
@pytest.mark.parametrize("rule", ["minvar", "avg", "avgvar"])
def test_predict_matches_loop(rule, vote):
    for mus, log_sigmas in (heads_case(9, 4, seed=30)[:2], _spread_and_clamped_heads(40, 3, seed=32)):
        pred, sigma = uvote_predict(mus, log_sigmas, rule, vote)
        want_pred, want_sigma = uvote_predict_loop(mus, log_sigmas, rule, vote)
        assert pred.shape == sigma.shape == (mus.shape[0],)
        np.testing.assert_allclose(pred.numpy(), want_pred, rtol=1e-12)
        np.testing.assert_allclose(sigma.numpy(), want_sigma, rtol=1e-12)
        scale = (log_sigmas if vote == "raw" else log_sigmas.clamp(-5, 5)).exp()
        assert torch.all(sigma >= scale.min(1).values * (1 - 1e-12))
        assert torch.all(sigma <= scale.max(1).values * (1 + 1e-12))
        assert torch.all(pred >= mus.min(1).values - 1e-12) and torch.all(pred <= mus.max(1).values + 1e-12)


def test_default_vote_is_the_authors_and_differs_from_the_clamped_one():
    """On heads beyond the clamp the two votes differ (the issue: up to years on random heads); the default is
    the raw one."""
    mus, log_sigmas = _spread_and_clamped_heads(200, 3, seed=33)
    mus = mus * 30
    for rule in ("minvar", "avg", "avgvar"):
        assert torch.equal(uvote_predict(mus, log_sigmas, rule)[1], uvote_predict(mus, log_sigmas, rule, "raw")[1])
        raw, clamped = uvote_predict(mus, log_sigmas, rule, "raw"), uvote_predict(mus, log_sigmas, rule, "clamped")
        assert not torch.allclose(raw[1], clamped[1])
        if rule != "avg":
            assert (raw[0] - clamped[0]).abs().max() > 1


@pytest.mark.parametrize("vote", ["raw", "clamped"])
def test_minvar_picks_the_most_certain_head_and_the_first_on_ties(vote):
    mus = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=D64)
    log_sigmas = torch.tensor([[0.0, -1.0, 0.5], [0.2, 0.2, 0.3], [-6.0, -8.0, 1.0]], dtype=D64)
    pred, sigma = uvote_predict(mus, log_sigmas, vote=vote)
    if vote == "raw":
        # row 3: −8 is the least raw log σ
        assert pred.tolist() == [2.0, 4.0, 8.0]
        assert sigma.tolist() == pytest.approx([math.exp(-1), math.exp(0.2), math.exp(-8)], rel=1e-15)
    else:
        # row 3: both −6 and −8 clamp to −5, a tie: the first head
        assert pred.tolist() == [2.0, 4.0, 7.0]
        assert sigma.tolist() == pytest.approx([math.exp(-1), math.exp(0.2), math.exp(-5)], rel=1e-15)


def test_avg_scale_is_the_geometric_mean_and_avgvar_weights_by_inverse_sigma():
    mus = torch.tensor([[0.0, 10.0]], dtype=D64)
    log_sigmas = torch.tensor([[math.log(1.0), math.log(4.0)]], dtype=D64)
    pred, sigma = uvote_predict(mus, log_sigmas, "avg")
    assert pred.item() == 5.0 and sigma.item() == pytest.approx(2.0, rel=1e-15)      # √(1·4), not (1 + 4)/2
    pred, sigma = uvote_predict(mus, log_sigmas, "avgvar")
    assert pred.item() == pytest.approx(10 * 0.25 / 1.25, rel=1e-15)                   # weights 1 and 1/4
    assert sigma.item() == pytest.approx(math.exp(0.25 / 1.25 * math.log(4.0)), rel=1e-15)
    pred, _ = uvote_predict(mus, log_sigmas, "avgvar", "clamped")
    assert pred.item() == pytest.approx(10 * (1 / 16) / (1 + 1 / 16), rel=1e-15)       # weights σ⁻²


def test_avgvar_with_equal_scales_is_the_average():
    mus, _, _, _ = heads_case(5, 3, seed=31)
    same = torch.full((5, 3), 0.7, dtype=D64)
    a, b = uvote_predict(mus, same, "avgvar"), uvote_predict(mus, same, "avg")
    assert torch.allclose(a[0], b[0], rtol=1e-14) and torch.allclose(a[1], b[1], rtol=1e-14)


# ------------------------------------------------------------------------------------------ dtypes, autocast
@pytest.mark.parametrize("dtype,want", [(D64, D64), (torch.float32, torch.float32), (torch.float16, torch.float32),
                                        (torch.bfloat16, torch.float32)])
def test_output_dtypes(dtype, want):
    mus, log_sigmas, y, w = heads_case(6, 3, seed=40)
    args = [t.to(dtype) for t in (mus, log_sigmas, y, w)]
    assert uvote_loss(*args).dtype == want
    assert laplace_nll(args[0][:, 0], args[1][:, 0], args[2], args[3][:, 0]).dtype == want
    pred, sigma = uvote_predict(args[0], args[1])
    assert pred.dtype == sigma.dtype == want


def test_autocast_bfloat16_is_finite_and_equal():
    mus, log_sigmas, y, w = heads_case(16, 4, seed=41)
    args = [t.float() for t in (mus, log_sigmas, y, w)]
    leaf = args[0].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = uvote_loss(leaf, args[1], args[2], args[3], epoch=1, epochs=3, dynamic=True)
        (grad,) = torch.autograd.grad(got, leaf)
        pred, sigma = uvote_predict(leaf, args[1], "avgvar")
    assert got.dtype == torch.float32 and torch.isfinite(got) and torch.isfinite(grad).all()
    assert torch.isfinite(pred).all() and torch.isfinite(sigma).all()
    assert got.item() == pytest.approx(uvote_loss(*args, epoch=1, epochs=3, dynamic=True).item(), rel=1e-6)


def test_extreme_log_sigma_float32_is_finite():
    mus = torch.zeros(3, 2)
    log_sigmas = torch.tensor([[80.0, -80.0], [0.0, 1e4], [-1e4, 3.0]])
    y = torch.tensor([1e3, -1e3, 0.0])
    got = uvote_loss(mus.requires_grad_(), log_sigmas, y)
    assert torch.isfinite(got)
    assert torch.isfinite(torch.cat(uvote_predict(mus, log_sigmas, "avgvar"))).all()


# ------------------------------------------------------------------------------------------------- bad input
def _ok():
    mus, log_sigmas, y, w = heads_case(5, 3, seed=50)
    return dict(mus=mus, log_sigmas=log_sigmas, target=y, head_weights=w)


@pytest.mark.parametrize("change,match", [
    (dict(mus=torch.zeros(5, dtype=D64)), "mus"),
    (dict(mus=torch.zeros(5, 3, dtype=torch.long)), "mus"),
    (dict(mus=torch.zeros(0, 3, dtype=D64)), "mus"),
    (dict(log_sigmas=torch.zeros(5, 2, dtype=D64)), "log_sigmas"),
    (dict(target=torch.zeros(4, dtype=D64)), "target"),
    (dict(target=torch.zeros(5, 2, dtype=D64)), "target"),
    (dict(head_weights=torch.ones(5, dtype=D64)), "head_weights"),
    (dict(head_weights=-torch.ones(5, 3, dtype=D64)), "head_weights"),
    (dict(head_weights=torch.full((5, 3), math.nan, dtype=D64)), "head_weights"),
    (dict(mus=torch.full((5, 3), math.inf, dtype=D64)), "mus"),
    (dict(log_sigmas=torch.full((5, 3), math.nan, dtype=D64)), "log_sigmas"),
    (dict(target=torch.full((5,), math.nan, dtype=D64)), "target"),
    (dict(mus=[[0.0] * 3] * 5), "mus"),
])
def test_loss_bad_input(change, match):
    kw = _ok()
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        uvote_loss(**kw)


@pytest.mark.parametrize("kwargs,match", [(dict(dynamic=True), "epoch"), (dict(dynamic=True, epoch=1), "epochs"),
                                          (dict(dynamic=True, epoch=-1, epochs=5), "epoch"),
                                          (dict(dynamic=True, epoch=6, epochs=5), "epoch"),
                                          (dict(dynamic=True, epoch=0, epochs=0), "epochs")])
def test_schedule_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        uvote_loss(**_ok(), **kwargs)


def test_predict_and_nll_bad_input():
    kw = _ok()
    with pytest.raises(ValueError, match="rule"):
        uvote_predict(kw["mus"], kw["log_sigmas"], "median")
    with pytest.raises(ValueError, match="vote"):
        uvote_predict(kw["mus"], kw["log_sigmas"], "avg", "sigma")
    with pytest.raises(ValueError, match="log_sigmas"):
        uvote_predict(kw["mus"], kw["log_sigmas"][:, :1])
    with pytest.raises(ValueError, match="target"):
        laplace_nll(kw["mus"][:, 0], kw["log_sigmas"][:, 0], kw["target"][:3])
    with pytest.raises(ValueError, match="weights"):
        laplace_nll(kw["mus"][:, 0], kw["log_sigmas"][:, 0], kw["target"], -torch.ones(5, dtype=D64))
    with pytest.raises(ValueError, match="mu"):
        laplace_nll(kw["mus"], kw["log_sigmas"], kw["target"])


# ------------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@cuda_only
def test_cuda_matches_cpu():
    mus, log_sigmas, y, w = heads_case(33, 4, seed=60)
    cpu = uvote_loss(mus, log_sigmas, y, w, epoch=2, epochs=5, dynamic=True)
    gpu = uvote_loss(mus.cuda(), log_sigmas.cuda(), y.cuda(), w.cuda(), epoch=2, epochs=5, dynamic=True)
    assert gpu.device.type == "cuda" and gpu.item() == pytest.approx(cpu.item(), rel=1e-12)
    pred, sigma = uvote_predict(mus.cuda(), log_sigmas.cuda())
    assert pred.device.type == "cuda"
    assert torch.allclose(pred.cpu(), uvote_predict(mus, log_sigmas)[0])


# -- UVOTE's per-bin head weights ----------------------------------------------------------------------------------
@pytest.mark.parametrize("heads, lds", [(2, False), (3, False), (4, True), (1, False)])
def test_uvote_weight_table_against_its_statement(heads, lds):
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 400, 30).astype(float)
    counts[[3, 17]] = 0
    table = uvote_weight_table(counts, heads, lds=lds, lds_ks=5, lds_sigma=2, clip=(5, 1000))
    for i in range(heads):
        r = 0.0 if heads == 1 else i / (heads - 1)
        if r == 0:
            expected = np.ones(30)
        else:
            base = np.clip(counts, 5, 1000) if r >= 1 else counts
            effective = smoothed_bin_counts(base ** r, "none", lds, "gaussian", 5, 2)
            with np.errstate(divide="ignore"):
                raw = 1 / effective
            trained = counts > 0
            expected = raw * counts.sum() / (counts[trained] * raw[trained]).sum()
        assert np.allclose(table[:, i], expected, rtol=1e-12)
        trained = counts > 0
        assert math.isclose((counts[trained] * table[trained, i]).sum(), counts.sum(), rel_tol=1e-12)


def test_uvote_weight_table_heads_are_the_repo_reweightings():
    labels = np.random.default_rng(1).integers(0, 100, 3000).astype(float)
    table = uvote_weight_table(AGE_BINS.histogram(labels), 3)
    rows = AGE_BINS.index(labels)
    assert np.allclose(table[rows, 1], prepare_weights(labels, "sqrt_inv"), rtol=1e-6)
    assert np.allclose(table[rows, 2], prepare_weights(labels, "inverse"), rtol=1e-6)
    assert np.allclose(table[rows], uvote_head_weights(labels, None, 3), rtol=1e-6)


def test_uvote_weight_table_gives_empty_bins_infinite_weight_only_where_nothing_fills_them():
    counts = np.array([10.0, 0.0, 40.0, 5.0])
    table = uvote_weight_table(counts, 3, clip=None)
    assert np.isinf(table[1, 1]) and np.isinf(table[1, 2]) and table[1, 0] == 1
    clipped = uvote_weight_table(counts, 2, clip=(5, 1000))
    assert np.isfinite(clipped).all()
    with pytest.raises(ValueError, match="non-empty"):
        uvote_weight_table(np.zeros((2, 2)), 2)
