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
