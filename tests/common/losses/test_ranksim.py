"""Tests of RankSim (docs/methods.md §6): ranking operator, blackbox gradient, regularizer; golden values §9 G6."""
import itertools

import pytest
import torch

import common.losses.ranksim as ranksim_module
from common.losses import RankSim, ranksim_loss
from common.losses.ranksim import rank_normalised
from reference_loops import ranksim_loop, ranksim_rank_loop, ranksim_rank_normalised_loop

D64 = torch.float64
F32 = torch.float32
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def loss_and_grad(features, targets, lam=2.0, generator=None):
    x = features.clone().requires_grad_(True)
    loss = ranksim_loss(x, targets, interpolation_lambda=lam, generator=generator)
    if loss.requires_grad:
        (g,) = torch.autograd.grad(loss, x)
    else:
        g = torch.zeros_like(x)
    return loss.detach(), g


def g6():
    x = torch.tensor([[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8], [-1, 0.1]], dtype=F32)
    y = torch.tensor([1, 3, 4, 9, 20], dtype=F32)
    return x, y


# ------------------------------------------------------------------------------------------ ranking operator
def test_rank_normalised_doc_example():
    s = torch.tensor([0.3, 0.9, -0.1, 0.9, 0.5])
    assert ranksim_rank_loop(s.tolist()) == [3, 1, 4, 0, 2]  # the doc's ranks (checks the loop helper)
    got = rank_normalised(s)
    want = (torch.tensor([3, 1, 4, 0, 2], dtype=F32) + 1) / 5
    assert got.dtype == F32 and got.shape == s.shape
    assert torch.allclose(got, want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [F32, D64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (4, 9), (2, 3, 6)])
def test_rank_normalised_matches_loop_with_ties(dtype, shape):
    g = torch.Generator().manual_seed(sum(shape))
    s = (torch.randint(0, 4, shape, generator=g).to(D64) * 0.25).to(dtype)  # many exact ties
    got = rank_normalised(s)
    assert got.dtype == F32 and got.shape == s.shape
    rows = s.reshape(-1, shape[-1]).double().tolist()
    want = torch.tensor([ranksim_rank_normalised_loop(r) for r in rows], dtype=D64).reshape(shape)
    assert torch.allclose(got.double(), want, rtol=0, atol=1e-7)


def test_rank_normalised_continuous_values():
    s = torch.randn(5, 11, generator=torch.Generator().manual_seed(3), dtype=D64)
    got = rank_normalised(s)
    want = torch.tensor([ranksim_rank_normalised_loop(r) for r in s.tolist()], dtype=D64)
    assert torch.allclose(got.double(), want, rtol=0, atol=1e-7)
    # each row is a permutation of {1/n, ..., 1}
    assert torch.allclose(got.sort(dim=-1).values, (torch.arange(11, dtype=F32) + 1).expand(5, 11) / 11, atol=1e-7)


# ------------------------------------------------------------------------------- TrueRanker gradient formula
def _true_ranker():
    fn = getattr(ranksim_module, "true_ranker", None)
    if fn is None:
        pytest.skip("common.losses.ranksim exposes no true_ranker; the formula is tested through ranksim_loss")
    return fn


@pytest.mark.parametrize("lam", [0.5, 2.0, 7.0])
@pytest.mark.parametrize("dtype", [F32, D64])
def test_true_ranker_forward_and_blackbox_gradient(lam, dtype):
    true_ranker = _true_ranker()
    g = torch.Generator().manual_seed(int(lam * 10))
    s = torch.randn(4, 6, generator=g, dtype=D64).to(dtype).requires_grad_(True)
    up = torch.randn(4, 6, generator=g, dtype=D64).to(dtype) * 0.3
    out = true_ranker(s, lam)
    want_fwd = torch.tensor([ranksim_rank_normalised_loop(r) for r in s.detach().double().tolist()], dtype=D64)
    assert torch.allclose(out.detach().double(), want_fwd, rtol=0, atol=1e-7)
    (grad,) = torch.autograd.grad(out, s, grad_outputs=up.to(out.dtype))
    # §6.1: grad = -(rn(s) - rn(s + lam * g)) / (lam + 1e-8), row by row
    want = []
    for srow, grow in zip(s.detach().double().tolist(), up.double().tolist()):
        r0 = ranksim_rank_normalised_loop(srow)
        r1 = ranksim_rank_normalised_loop([a + lam * b for a, b in zip(srow, grow)])
        want.append([-(a - b) / (lam + 1e-8) for a, b in zip(r0, r1)])
    want = torch.tensor(want, dtype=D64)
    assert want.abs().max() > 0  # the perturbation changes some ranks
    assert torch.allclose(grad.double(), want, rtol=1e-6, atol=1e-7)


def test_true_ranker_zero_lambda_zero_gradient():
    true_ranker = _true_ranker()
    s = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = true_ranker(s, 0.0)
    (grad,) = torch.autograd.grad(out, s, grad_outputs=torch.randn(3, 5, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(grad, torch.zeros_like(grad))


# ------------------------------------------------------------------------------------------------ golden G6
def test_g6_golden_value():
    x, y = g6()
    loss, _ = loss_and_grad(x, y, 2.0)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(0.14399999380111694, rel=1e-6, abs=1e-7)
    assert loss.item() == pytest.approx(ranksim_loop(x, y, 2.0)[0], rel=1e-6)
    # targets as (B,1) and the module twin give the same number
    assert ranksim_loss(x, y.reshape(5, 1), 2.0).item() == pytest.approx(0.14399999380111694, rel=1e-6, abs=1e-7)
    assert RankSim(interpolation_lambda=2.0)(x, y).item() == pytest.approx(0.14399999380111694, rel=1e-6, abs=1e-7)


def test_g6_golden_swapped_value_and_gradient():
    x, y = g6()
    xs = x[[0, 1, 2, 4, 3]]
    loss, grad = loss_and_grad(xs, y, 2.0)
    assert loss.item() == pytest.approx(0.2719999849796295, rel=1e-6, abs=1e-7)
    doc = torch.tensor([[0, -0.14], [0.132, -0.176], [-0.54, 0], [0, 0], [0.144, 0.108]], dtype=D64)
    # Rows 1 and 3 of the documented gradient do not depend on any tie.
    assert torch.allclose(grad.double()[[1, 3]], doc[[1, 3]], rtol=0, atol=1e-6)
    # Rows 0, 2, 4 do: in row 2 of S the perturbed scores s' = s + lam*g are, in exact arithmetic,
    # s'_20 = 0 + 2*0.16 = 0.32 and s'_24 = 0.8 - 2*0.24 = 0.32 (an exact tie; also equal in float32). The
    # tie rule of §6.1 (higher index -> smaller rank) ranks column 4 first; the documented numbers
    # (-0.54, 0.144, 0.108 ...) correspond to the opposite order, i.e. the reference's unstable argsort.
    # The gradient must follow the tie rule, computed by the loop with exact ties restored:
    _, tie_rule = ranksim_loop(xs, y, 2.0, tie_decimals=6)
    assert torch.allclose(tie_rule[[1, 3]], doc[[1, 3]], rtol=0, atol=1e-6)
    assert torch.allclose(grad.double(), tie_rule, rtol=0, atol=1e-6)
    # with the tie split the other way (float64 rounding here) the loop reproduces the documented numbers
    loop_value, loop_grad = ranksim_loop(xs, y, 2.0)
    assert loop_value == pytest.approx(0.272, rel=1e-12)
    assert torch.allclose(loop_grad, doc, rtol=0, atol=1e-7)


def test_g6_gradient_matches_loop():
    x, y = g6()
    _, grad = loss_and_grad(x, y, 2.0)
    _, want = ranksim_loop(x, y, 2.0)
    assert torch.allclose(grad.double(), want, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------ loop reference, random
def unique_case(b, d, seed, ties=True, dtype=F32):
    g = torch.Generator().manual_seed(seed)
    if ties:
        y = torch.arange(b, dtype=D64) * 2 + 1  # equally spaced: many symmetric label-distance ties
    else:
        y = torch.sort(torch.randperm(40, generator=g)[:b].to(D64) * 1.5).values
    x = torch.randn(b, d, generator=g, dtype=D64).to(dtype)
    return x, y.to(dtype)


@pytest.mark.parametrize("b", [1, 2, 5, 8])
@pytest.mark.parametrize("d", [2, 3, 16])
@pytest.mark.parametrize("lam", [0.5, 2.0])
@pytest.mark.parametrize("ties", [True, False])
def test_matches_loop_unique_labels(b, d, lam, ties):
    x, y = unique_case(b, d, seed=b * 100 + d, ties=ties)
    loss, grad = loss_and_grad(x, y, lam)
    want, want_grad = ranksim_loop(x, y, lam)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert torch.allclose(grad.double(), want_grad, rtol=1e-4, atol=1e-5)
    if b <= 2:
        assert loss.item() == 0.0  # one or two rows: the ranks always agree


def test_random_cases_are_not_trivial():
    for d in (2, 3, 16):
        x, y = unique_case(8, d, seed=800 + d)
        value, grad = ranksim_loop(x, y, 2.0)
        assert value > 0 and grad.abs().max() > 0


@pytest.mark.parametrize("b", [5, 9])
def test_matches_loop_float64_features(b):
    x, y = unique_case(b, 4, seed=b, dtype=D64)
    loss, grad = loss_and_grad(x, y, 2.0)
    want, want_grad = ranksim_loop(x, y, 2.0)
    assert loss.item() == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert torch.allclose(grad.double(), want_grad, rtol=1e-6, atol=1e-7)


def test_matches_loop_with_exact_feature_ties():
    # axis-aligned unit features: cosine similarities are exactly 0 or 1 -> tied feature ranks (tie rule)
    x = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=F32)
    y = torch.tensor([0, 1, 2, 3, 4, 5], dtype=F32)
    loss, _ = loss_and_grad(x, y, 2.0)
    want, _ = ranksim_loop(x, y, 2.0)
    assert want > 0
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_unique_labels_keep_original_row_order():
    # §6.2 step 1: with unique labels every row is kept, in the batch order; the tie rule (higher index ->
    # smaller rank) then depends on that order (labels with symmetric distance ties, unsorted).
    g = torch.Generator().manual_seed(77)
    y = torch.tensor([3.0, 1.0, 5.0, 2.0, 4.0, 0.0])
    x = torch.randn(6, 4, generator=g)
    loss, grad = loss_and_grad(x, y, 2.0)
    want, want_grad = ranksim_loop(x, y, 2.0)
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert torch.allclose(grad.double(), want_grad, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------- duplicates/generator
def _dup_case():
    y = torch.tensor([2.0, 0.0, 3.0, 2.0, 1.0, 0.0, 2.0])  # labels 0 x2, 1, 2 x3, 3 (unsorted)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(5))
    groups = [[i for i in range(7) if y[i].item() == u] for u in sorted(set(y.tolist()))]
    options = list(itertools.product(*groups))  # one index per unique label, rows by ascending label
    return x, y, options


def test_duplicates_result_is_one_valid_selection_and_generator_is_used():
    x, y, options = _dup_case()
    refs = [ranksim_loop(x, y, 2.0, keep=list(opt)) for opt in options]
    # design guard: the selections are distinguishable by their gradients
    for a in range(len(refs)):
        for c in range(a + 1, len(refs)):
            assert not torch.allclose(refs[a][1], refs[c][1], atol=1e-4)
    seen = set()
    for seed in range(30):
        loss, grad = loss_and_grad(x, y, 2.0, generator=torch.Generator().manual_seed(seed))
        matches = [k for k, (v, gr) in enumerate(refs)
                   if abs(v - loss.item()) <= 1e-5 * max(1.0, abs(v)) and torch.allclose(grad.double(), gr, atol=1e-5)]
        assert len(matches) == 1, f"seed {seed}: result matches no selection (rows by ascending label)"
        seen.add(matches[0])
        # unselected rows get no gradient
        unselected = [i for i in range(7) if i not in options[matches[0]]]
        assert torch.equal(grad[unselected], torch.zeros_like(grad[unselected]))
    assert len(seen) >= 2, "the generator never changes which duplicate is kept"


def test_duplicates_same_seed_same_result():
    x, y, _ = _dup_case()
    l1, g1 = loss_and_grad(x, y, 2.0, generator=torch.Generator().manual_seed(123))
    l2, g2 = loss_and_grad(x, y, 2.0, generator=torch.Generator().manual_seed(123))
    assert torch.equal(l1, l2) and torch.equal(g1, g2)
    mod = RankSim(interpolation_lambda=2.0)(x, y, generator=torch.Generator().manual_seed(123))
    assert mod.item() == l1.item()


def test_duplicates_with_default_generator_are_a_valid_selection():
    x, y, options = _dup_case()
    values = [ranksim_loop(x, y, 2.0, keep=list(opt))[0] for opt in options]
    torch.manual_seed(0)
    got = ranksim_loss(x, y, 2.0).item()
    assert min(abs(got - v) for v in values) <= 1e-5 * max(1.0, abs(got))


def test_duplicates_with_identical_features_are_deterministic():
    # all samples of a label share their feature row: every selection gives the same loss
    y = torch.tensor([4.0, 1.0, 4.0, 2.0, 1.0, 8.0, 4.0])
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    idx = {1.0: 0, 2.0: 1, 4.0: 2, 8.0: 3}
    x = torch.stack([base[idx[v]] for v in y.tolist()])
    want, _ = ranksim_loop(base, torch.tensor([1.0, 2.0, 4.0, 8.0]), 2.0)
    assert want > 0
    for seed in range(5):
        got = ranksim_loss(x, y, 2.0, generator=torch.Generator().manual_seed(seed)).item()
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_one_unique_label_gives_zero():
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    y = torch.full((6,), 3.0)
    loss, grad = loss_and_grad(x, y, 2.0, generator=torch.Generator().manual_seed(0))
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


# ------------------------------------------------------------------------------------------ invariants §6.5
def _ordered_case(n=7, dtype=F32, shuffle=True):
    y = torch.tensor([2.0 ** k for k in range(n)], dtype=D64)  # all label distances distinct
    c = 3.0 / y.max().item()  # angles within (0, pi)
    theta = c * y
    radius = torch.linspace(0.5, 3.0, n, dtype=D64)
    x = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], dim=1)
    if shuffle:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
        x, y = x[perm], y[perm]
    return x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("dtype", [F32, D64])
@pytest.mark.parametrize("n", [3, 7])
def test_perfect_order_gives_zero_loss_and_gradient(dtype, n):
    x, y = _ordered_case(n, dtype)
    loss, grad = loss_and_grad(x, y, 2.0)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))
    assert ranksim_loop(x, y, 2.0)[0] == 0.0


@pytest.mark.parametrize("seed", range(12))
def test_bounds(seed):
    g = torch.Generator().manual_seed(seed)
    b = int(torch.randint(3, 17, (1,), generator=g))
    y = torch.randint(0, 30, (b,), generator=g).float()
    x = torch.randn(b, 5, generator=g)
    loss = ranksim_loss(x, y, 2.0, generator=torch.Generator().manual_seed(seed)).item()
    n = len(set(y.tolist()))
    assert 0.0 <= loss <= n * ((n - 1) / n) ** 2 + 1e-6
    assert loss < n


def test_reversed_order_is_large_and_bounded():
    # features ordered against the labels: strictly positive, within the bound
    x, y = _ordered_case(7, shuffle=False)
    loss = ranksim_loss(x, y.flip(0), 2.0).item()
    assert 0 < loss < 7 * (6 / 7) ** 2 + 1e-6
    assert loss == pytest.approx(ranksim_loop(x, y.flip(0), 2.0)[0], rel=1e-6)


@pytest.mark.parametrize("a,b,ties", [(3.0, -5.0, True), (0.5, 100.0, True), (-2.0, 7.0, False), (-0.25, 1.0, False)])
def test_label_affine_invariance(a, b, ties):
    if ties:
        x, y = unique_case(8, 4, seed=31, ties=True)  # exact in float32 for these a, b
    else:
        x, y = _ordered_case(8, shuffle=True)
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(32))  # unordered features, no label ties
    base, gbase = loss_and_grad(x, y, 2.0)
    assert base.item() > 0
    got, ggot = loss_and_grad(x, a * y + b, 2.0)
    assert got.item() == pytest.approx(base.item(), rel=1e-6)
    assert torch.allclose(ggot, gbase, atol=1e-6)


def test_feature_scaling_and_orthogonal_invariance():
    x, y = unique_case(9, 5, seed=41, dtype=D64)
    base, gbase = loss_and_grad(x, y, 2.0)
    assert base.item() > 0
    scale = torch.rand(9, 1, generator=torch.Generator().manual_seed(42), dtype=D64) * 4 + 0.25
    assert ranksim_loss(x * scale, y, 2.0).item() == pytest.approx(base.item(), rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(43), dtype=D64))
    got, ggot = loss_and_grad(x @ q, y, 2.0)
    assert got.item() == pytest.approx(base.item(), rel=1e-6)
    # gradient transforms covariantly: d/dX L(XQ) = (dL/dX')(XQ) Q^T
    assert torch.allclose(ggot, gbase @ q, atol=1e-6)


def test_permutation_invariance_without_ties():
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(51))
    y = torch.tensor([2.0 ** k for k in range(8)])
    base, gbase = loss_and_grad(x, y, 2.0)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(52))
    got, ggot = loss_and_grad(x[perm], y[perm], 2.0)
    assert got.item() == pytest.approx(base.item(), rel=1e-6)
    assert torch.allclose(ggot, gbase[perm], atol=1e-6)


def test_value_independent_of_lambda_and_zero_lambda_zero_gradient():
    x, y = unique_case(8, 3, seed=61)
    l2, g2 = loss_and_grad(x, y, 2.0)
    l0, g0 = loss_and_grad(x, y, 0.0)
    lh, _ = loss_and_grad(x, y, 0.5)
    assert l2.item() > 0 and g2.abs().max() > 0
    assert l0.item() == l2.item() == lh.item()
    assert torch.equal(g0, torch.zeros_like(g0))


def test_rows_are_summed_not_averaged():
    # §6.2 step 4: L = sum over rows of the per-row mean squared rank difference (not the mean over rows)
    x, y = unique_case(6, 3, seed=71)
    loss = ranksim_loss(x, y, 2.0).item()
    rows = []
    yl = y.double().tolist()
    z = torch.nn.functional.normalize(x.double(), dim=1)
    s = (z @ z.T).tolist()
    for i in range(6):
        ry = ranksim_rank_normalised_loop([-abs(yl[i] - v) for v in yl])
        rf = ranksim_rank_normalised_loop(s[i])
        rows.append(sum((p - q) ** 2 for p, q in zip(rf, ry)) / 6)
    assert max(rows) > 0
    assert loss == pytest.approx(sum(rows), rel=1e-5)
    assert loss != pytest.approx(sum(rows) / 6, rel=1e-3)


# ---------------------------------------------------------------------------------------------- low precision
def _separated_case():
    # 2-D features at irregular angles: within every row the cosine similarities differ by > 0.05, so bf16
    # rounding cannot change any rank
    theta = torch.tensor([0.0, 0.74, 1.17, 1.79, 2.19, 3.03], dtype=D64)
    x = torch.stack([torch.cos(theta), torch.sin(theta)], 1) * torch.tensor([[1.0], [2.0], [0.5], [1.5], [3.0], [0.75]],
                                                                          dtype=D64)
    y = torch.tensor([5.0, 0.0, 12.0, 3.0, 7.0, 1.0], dtype=D64)
    cos = torch.cos(theta[:, None] - theta[None, :])
    for row in cos.tolist():
        srt = sorted(row)
        assert min(b - a for a, b in zip(srt, srt[1:])) > 0.05
    return x, y


def test_bfloat16_inputs_close_to_float32():
    x, y = _separated_case()
    xb, yb = x.bfloat16(), y.bfloat16()
    ref = ranksim_loss(xb.float(), yb.float(), 2.0)
    xr = xb.clone().requires_grad_(True)
    got = ranksim_loss(xr, yb, 2.0)
    assert ref.item() > 0
    assert torch.isfinite(got)
    assert got.float().item() == pytest.approx(ref.item(), rel=1e-3)
    (grad,) = torch.autograd.grad(got, xr)
    assert torch.isfinite(grad.float()).all()


def test_autocast_bfloat16_close_to_float32():
    x, y = _separated_case()
    x, y = x.float(), y.float()
    ref = ranksim_loss(x, y, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ranksim_loss(x, y, 2.0)
    assert ref.item() > 0
    assert torch.isfinite(got)
    assert got.float().item() == pytest.approx(ref.item(), rel=1e-3)


# ------------------------------------------------------------------------------------------------ bad inputs
def test_features_not_2d_raise():
    with pytest.raises(ValueError, match="features"):
        ranksim_loss(torch.randn(5), torch.arange(5.0))


@pytest.mark.parametrize("targets", [torch.arange(4.0), torch.arange(6.0).reshape(6, 1), torch.zeros(4, 1)])
def test_bad_targets_raise(targets):
    with pytest.raises(ValueError, match="targets"):
        ranksim_loss(torch.randn(5, 3), targets)


# ------------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@cuda_only
def test_cuda_matches_cpu():
    x, y = unique_case(12, 8, seed=91)
    cpu, gcpu = loss_and_grad(x, y, 2.0)
    xg = x.to("cuda").requires_grad_(True)
    gpu = ranksim_loss(xg, y.to("cuda"), 2.0)
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5, abs=1e-6)
    (ggpu,) = torch.autograd.grad(gpu, xg)
    assert ggpu.device.type == "cuda"
    assert torch.allclose(ggpu.cpu(), gcpu, atol=1e-5)
    # duplicates whose samples share features: the choice does not matter, CPU == CUDA
    yd = torch.tensor([1.0, 1.0, 2.0, 5.0, 5.0, 9.0])
    xd = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))[[0, 0, 1, 2, 2, 3]]
    expected = ranksim_loss(xd, yd, 2.0).item()
    assert ranksim_loss(xd.to("cuda"), yd.to("cuda"), 2.0).item() == pytest.approx(expected, rel=1e-5)


# -- the reference's tie rule ---------------------------------------------------------------------------------------
def reference_ranks(x: torch.Tensor) -> torch.Tensor:
    """The age references' rank, restated: ``argsort(argsort(x).flip(1))``, PyTorch's default sort, (r + 1) / n."""
    return (torch.argsort(torch.argsort(x).flip(1)).float() + 1) / x.shape[1]


@pytest.mark.parametrize("batch", [32, 64, 100])
def test_reference_tie_rule_equals_the_two_argsort_restatement(batch):
    """Integer ages give many ties in −|y_i − y_j|; the 'reference' rule must give the reference's ranks exactly."""
    g = torch.Generator().manual_seed(batch)
    ages = torch.randperm(80, generator=g)[:min(batch, 80)].float() if batch <= 80 else \
        torch.randint(0, 80, (batch,), generator=g).float()
    distance = -(ages[:, None] - ages[None, :]).abs()
    torch.testing.assert_close(rank_normalised(distance, "reference"), reference_ranks(distance), rtol=0, atol=0)
    # The stable rule is a different, device-independent order: it agrees on the rank multiset, not the order.
    stable = rank_normalised(distance, "stable")
    assert torch.equal(stable.sort(1).values, reference_ranks(distance).sort(1).values)


def test_loss_with_reference_ties_uses_the_reference_ranks():
    """ranksim_loss(ties='reference') equals the loss written with the restated reference ranks."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(32, 16, generator=g, dtype=D64)
    ages = torch.randperm(60, generator=g)[:32].double().reshape(-1, 1)
    z = torch.nn.functional.normalize(features, dim=1)
    expected = ((reference_ranks(z @ z.T) - reference_ranks(-(ages - ages.T).abs())) ** 2).mean(1).sum()
    got = ranksim_loss(features, ages, 2.0, ties="reference")
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="ties"):
        ranksim_loss(features, ages, 2.0, ties="random")


# -- no host read: the kept subset as a mask ------------------------------------------------------------------------
def subset_ranks(scores, ties="stable"):
    """The ranks before the mask, restated: a sort flipped, positions scattered back, over n."""
    n = scores.shape[-1]
    order = torch.argsort(scores, dim=-1, stable=ties == "stable").flip(-1)
    positions = torch.arange(1, n + 1, dtype=F32).expand(order.shape)
    return torch.empty(order.shape, dtype=F32).scatter_(-1, order, positions) / n


class SubsetRanker(torch.autograd.Function):
    """The blackbox ranker on a subset, as before the mask."""

    @staticmethod
    def forward(ctx, scores, lam, ties):
        ranks = subset_ranks(scores, ties)
        ctx.save_for_backward(scores, ranks)
        ctx.lam, ctx.ties = lam, ties
        return ranks

    @staticmethod
    def backward(ctx, grad_output):
        scores, ranks = ctx.saved_tensors
        perturbed = subset_ranks(scores + ctx.lam * grad_output.to(scores.dtype), ctx.ties)
        return (-(ranks - perturbed) / (ctx.lam + 1e-8)).to(scores.dtype), None, None


def subset_ranksim(features, targets, lam=2.0, generator=None, ties="stable", direct_distance=False):
    """The algorithm before the mask (slow reference): ``unique`` on the host; with a duplicated label, keys
    ``torch.rand(B)`` (float64, from ``generator``), a stable sort by (label group, key), the first of each group
    kept, rows and columns subset in ascending label order; then RankSim on the subset. Returns (loss, kept rows)."""
    n = features.shape[0]
    t2 = targets.reshape(n, -1)
    unique, inverse = torch.unique(t2, dim=0, return_inverse=True)
    keep = torch.arange(n)
    if unique.shape[0] < n:
        keys = torch.rand(n, generator=generator, dtype=D64)
        order = torch.argsort(inverse.double() + keys, stable=True)
        counts = torch.bincount(inverse, minlength=unique.shape[0])
        keep = order[torch.cumsum(counts, 0) - counts]
    x, t = features[keep], t2[keep]
    z = torch.nn.functional.normalize(x.to(torch.float32 if x.dtype == torch.bfloat16 else x.dtype), dim=1)
    t = t.to(z.dtype)
    if t.shape[1] == 1:
        distance = (t - t.T).abs()
    else:
        distance = torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist" if direct_distance else
                               "use_mm_for_euclid_dist_if_necessary")
    label_ranks = subset_ranks(-distance, ties)
    feature_ranks = SubsetRanker.apply(z @ z.T, lam, ties)
    return ((feature_ranks - label_ranks) ** 2).mean(dim=1).sum(), keep.tolist()


def both(features, targets, lam=2.0, seed=None, ties="stable", direct_distance=False):
    """(new loss, new gradient, subset loss, subset gradient, kept rows), each from a generator seeded ``seed``."""
    gen = (lambda: torch.Generator().manual_seed(seed)) if seed is not None else (lambda: None)
    x = features.clone().requires_grad_(True)
    loss = ranksim_loss(x, targets, lam, generator=gen(), ties=ties)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    xr = features.clone().requires_grad_(True)
    ref, keep = subset_ranksim(xr, targets, lam, gen(), ties, direct_distance)
    (ref_grad,) = torch.autograd.grad(ref, xr, allow_unused=True)
    zero = torch.zeros_like(features)
    return loss.detach(), (zero if grad is None else grad), ref.detach(), (zero if ref_grad is None else ref_grad), keep


def assert_same(loss, grad, ref, ref_grad, dtype):
    """The loss is float32 (the ranks are) and sums over B rather than U entries: float32 rounding; the
    gradient, through the same ranks, matches to the features' rounding."""
    assert loss.dtype == ref.dtype == F32
    assert abs(loss.item() - ref.item()) <= 1e-6 * max(abs(ref.item()), 1e-6)
    rel = 1e-5 if dtype != D64 else 1e-12
    torch.testing.assert_close(grad, ref_grad, rtol=rel, atol=rel)


def duplicate_case(b, k, values, seed, dtype=F32, d=6):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, values, (b, k), generator=g).to(D64) * 1.5 - 2.0
    x = torch.randn(b, d, generator=g, dtype=D64)
    return x.to(dtype), (y.reshape(b) if k == 1 else y).to(dtype)


@pytest.mark.parametrize("dtype", [F32, D64])
@pytest.mark.parametrize("b,k,values", [(12, 1, 3), (16, 1, 6), (40, 1, 10), (64, 1, 80), (9, 2, 2), (20, 3, 2),
                                        (24, 2, 4), (1, 1, 1), (2, 1, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_equals_subset_with_duplicates(dtype, b, k, values, seed):
    x, y = duplicate_case(b, k, values, seed, dtype)
    loss, grad, ref, ref_grad, keep = both(x, y, 2.0, seed=seed + 10)
    assert_same(loss, grad, ref, ref_grad, dtype)
    dropped = sorted(set(range(b)) - set(keep))
    assert torch.equal(grad[dropped], torch.zeros_like(grad[dropped]))  # the duplicates left out get no gradient
    if b >= 12:
        assert ref.item() > 0 and ref_grad.abs().max() > 0  # not a trivial case


@pytest.mark.parametrize("dtype", [F32, D64])
@pytest.mark.parametrize("case", ["sorted", "shuffled", "symmetric", "rows"])
def test_mask_equals_subset_with_distinct_labels(dtype, case):
    g = torch.Generator().manual_seed(5)
    if case == "rows":
        y = torch.stack([torch.arange(10, dtype=D64) % 3, torch.arange(10, dtype=D64) // 3], 1)  # distinct rows
    else:
        y = torch.arange(10, dtype=D64) * 2.0  # equally spaced: symmetric distance ties, broken by position
        if case != "sorted":
            y = y[torch.randperm(10, generator=g)]
        if case == "symmetric":
            y = y - 9.0
    x = torch.randn(10, 5, generator=g, dtype=D64).to(dtype)
    loss, grad, ref, ref_grad, keep = both(x, y.to(dtype), 2.0, seed=3)
    assert keep == list(range(10)) and ref.item() > 0
    assert_same(loss, grad, ref, ref_grad, dtype)


def test_mask_equals_subset_with_default_generator():
    x, y = duplicate_case(30, 1, 7, 4)
    torch.manual_seed(11)
    loss = ranksim_loss(x, y, 2.0)
    torch.manual_seed(11)
    ref, _ = subset_ranksim(x, y, 2.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_mask_equals_subset_beyond_25_rows_of_vector_labels():
    """(B, K) labels on integer grids: many exact distance ties. ``cdist``'s matrix-product form (above 25 rows)
    rounds them apart; the mask form takes the direct distance on every batch size."""
    x, y = duplicate_case(60, 2, 6, 8, D64)
    loss, grad, ref, ref_grad, keep = both(x, y, 2.0, seed=1, direct_distance=True)
    assert len(keep) > 25
    assert_same(loss, grad, ref, ref_grad, D64)


@pytest.mark.parametrize("seed", range(8))
def test_same_generator_state_same_choice(seed):
    x, y = duplicate_case(14, 1, 4, seed)
    _, grad, _, _, keep = both(x, y, 2.0, seed=seed)
    kept_rows = [i for i in range(14) if grad[i].abs().max() > 0]
    assert kept_rows == sorted(keep) and len(keep) == len(set(y.tolist())) >= 3
    g = torch.Generator().manual_seed(seed)
    ranksim_loss(x, y, 2.0, generator=g)
    # B float64 keys drawn, on every call (also with all labels distinct, unlike the subset form)
    g2 = torch.Generator().manual_seed(seed)
    torch.rand(14, generator=g2, dtype=D64)
    assert torch.equal(g.get_state(), g2.get_state())
    g3 = torch.Generator().manual_seed(seed)
    ranksim_loss(x, torch.arange(14.0), 2.0, generator=g3)
    assert torch.equal(g3.get_state(), g2.get_state())


def test_choice_changes_with_the_generator():
    x, y = duplicate_case(14, 1, 4, 0)
    chosen = {tuple(sorted(both(x, y, 2.0, seed=s)[4])) for s in range(10)}
    assert len(chosen) >= 5


@pytest.mark.parametrize("ties", ["stable", "reference"])
def test_masked_true_ranker_is_the_subset_ranker_exactly(ties):
    """Ranks and blackbox gradient over the valid columns are bit-for-bit those of the ranker on the subset;
    the masked entries are 0 with zero gradient."""
    g = torch.Generator().manual_seed(9)
    n, keep = 11, torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    s = (torch.randint(0, 5, (n, n), generator=g).float() * 0.25).requires_grad_(True)  # many ties
    up = torch.randn(n, n, generator=g)
    out = ranksim_module.true_ranker(s, 2.0, ties, keep.unsqueeze(0))
    (grad,) = torch.autograd.grad(out, s, grad_outputs=up * keep)
    cols = keep.nonzero().flatten()
    sub = s.detach()[:, cols].requires_grad_(True)
    want = SubsetRanker.apply(sub, 2.0, ties)
    (want_grad,) = torch.autograd.grad(want, sub, grad_outputs=up[:, cols])
    if ties == "reference":  # PyTorch's unstable sort places ties as it may; on CPU it keeps them in order
        assert torch.equal(out.detach()[:, cols].sort(1).values, want.detach().sort(1).values)
        return  # the reference tie rule is the device's
    assert torch.equal(out.detach()[:, cols], want.detach())
    assert torch.equal(grad[:, cols], want_grad)
    assert want_grad.abs().max() > 0
    assert torch.equal(out.detach()[:, ~keep], torch.zeros(n, int((~keep).sum())))
    assert torch.equal(grad[:, ~keep].abs(), torch.zeros(n, int((~keep).sum())))


def test_reference_ties_equal_the_subset_without_ties_or_duplicates():
    """ties='reference' sorts B entries with the duplicates at −∞ where the subset form sorted U: where no tie is
    left to the unstable sort (no duplicates, or no tied value), both forms agree."""
    x, y = duplicate_case(30, 1, 1, 6)
    y = torch.randperm(60, generator=torch.Generator().manual_seed(6))[:30].float()  # distinct: equal rows
    loss, grad, ref, ref_grad, _ = both(x, y, 2.0, seed=2, ties="reference")
    assert_same(loss, grad, ref, ref_grad, F32)
    y = (2.0 ** torch.randint(0, 12, (30,), generator=torch.Generator().manual_seed(7))).float()  # no distance tie
    loss, grad, ref, ref_grad, keep = both(x, y, 2.0, seed=2, ties="reference")
    assert len(keep) < 30
    assert_same(loss, grad, ref, ref_grad, F32)


def test_no_host_read(monkeypatch):
    from host_reads import HostReads

    from common import checks
    unchecked = getattr(checks, "values_unchecked", None)
    if unchecked is None:  # the finiteness checks read values; the training step switches them off
        monkeypatch.setattr(checks, "check_finite", lambda *args, **kwargs: None)
        import contextlib
        unchecked = contextlib.nullcontext
    x, y = duplicate_case(24, 1, 5, 0)
    xr = x.clone().requires_grad_(True)
    with unchecked(), HostReads() as reads:
        ranksim_loss(xr, y, 2.0, generator=torch.Generator().manual_seed(0)).backward()
        RankSim(2.0, "reference")(xr, torch.stack([y, y * 2], 1)).backward()
        ranksim_loss(xr, torch.arange(24.0), 2.0).backward()
    assert reads.count == 0, reads.where
    # the counter sees the subset form's reads (unique, a size compared on the host)
    with HostReads() as reads:
        subset_ranksim(xr, y, 2.0, torch.Generator().manual_seed(0))
    assert reads.count > 0


@pytest.mark.cuda
@cuda_only
def test_cuda_same_choice_as_cpu():
    x, y = duplicate_case(40, 1, 8, 3)
    cpu, gcpu = loss_and_grad(x, y, 2.0, generator=torch.Generator().manual_seed(4))
    xg = x.to("cuda").requires_grad_(True)
    gpu = ranksim_loss(xg, y.to("cuda"), 2.0, generator=torch.Generator().manual_seed(4))
    (ggpu,) = torch.autograd.grad(gpu, xg)
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5)
    assert torch.equal(ggpu.cpu().abs().sum(1) > 0, gcpu.abs().sum(1) > 0)
    torch.testing.assert_close(ggpu.cpu(), gcpu, rtol=1e-4, atol=1e-5)
