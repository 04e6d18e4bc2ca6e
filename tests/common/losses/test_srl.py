"""SRL geometric losses (contrastive / enveloping / homogeneity), docs/methods.md §7 and golden values §9 G7.

Expected numbers are either the G7 golden values or the output of ``srl_losses_loop`` (written with loops
from §7.2 in ``tests/reference_loops.py``).
"""
import pytest
import torch
import torch.nn.functional as F

from common.losses import SRL, srl_losses, srl_random_points
from reference_loops import srl_centroid_table_loop, srl_losses_loop

F64 = torch.float64
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# ---- §9 G7 inputs (agedb copy, L = 6, τ = 0.3, α = −1, β = 0.1) ------------------------------------------------
G7_H = [[1, 0, 0], [0.8, 0.2, 0], [0, 1, 0], [0, 0.6, 0.8], [0, 0, 1]]
G7_LABELS = [0, 0, 2, 3, 3]
G7_SURROGATE = [[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1], [1, 0, 1]]
G7_POINTS = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [1, 1, 1]]
G7_CON, G7_ENV, G7_HOM = 0.7747231890130816, 0.3737187607231428, -3.200576608581438
G7_TOTAL = 45.087102196359275


def _g7(dtype=F64):
    points = F.normalize(torch.tensor(G7_POINTS, dtype=dtype), dim=1)
    return (torch.tensor(G7_H, dtype=dtype), torch.tensor(G7_LABELS), torch.tensor(G7_SURROGATE, dtype=dtype),
            points)


def _random_case(seed, n, num_labels=7, dim=4, n_points=9, duplicates=False, zero_rows=(5,)):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g, dtype=F64) * 3
    labels = torch.randint(0, num_labels, (n,), generator=g)
    if duplicates:
        labels[::2] = labels[0]
        features[1] = features[0]  # duplicate feature rows as well
    surrogate = torch.randn(num_labels, dim, generator=g, dtype=F64)
    for r in zero_rows:  # labels never seen in training keep zero surrogate rows
        surrogate[r] = 0
    points = F.normalize(torch.randn(n_points, dim, generator=g, dtype=F64), dim=1)
    return features, labels, surrogate, points


def _terms(out):
    con, env, hom = out
    for t in (con, env, hom):
        assert t.dim() == 0
    return con, env, hom


# ---- golden values ----------------------------------------------------------------------------------------------
def test_golden_g7_float64():
    h, labels, surrogate, points = _g7()
    con, env, hom = _terms(srl_losses(h, labels, surrogate, points, temperature=0.3))
    assert con.item() == pytest.approx(G7_CON, rel=1e-12)
    assert env.item() == pytest.approx(G7_ENV, rel=1e-12)
    assert hom.item() == pytest.approx(G7_HOM, rel=1e-12)
    total = 10 * con + 100 * env + 0.01 * hom
    assert total.item() == pytest.approx(G7_TOTAL, rel=1e-12)


def test_golden_g7_defaults_are_agedb_copy():
    # default temperature 0.3, α = −1, β = 0.1 (§8.6)
    h, labels, surrogate, points = _g7()
    con, env, hom = srl_losses(h, labels, surrogate, points)
    assert (con.item(), env.item(), hom.item()) == pytest.approx((G7_CON, G7_ENV, G7_HOM), rel=1e-12)


def test_golden_g7_float32():
    h, labels, surrogate, points = _g7(torch.float32)
    con, env, hom = srl_losses(h, labels, surrogate, points, temperature=0.3)
    assert con.dtype == torch.float32
    assert (con.item(), env.item(), hom.item()) == pytest.approx((G7_CON, G7_ENV, G7_HOM), rel=1e-5)


def test_golden_g7_alpha_plus_one_matches_loop():
    h, labels, surrogate, points = _g7()
    got = srl_losses(h, labels, surrogate, points, temperature=0.3, homogeneity_alpha=1.0)
    expected = srl_losses_loop(h, labels, surrogate, points, 0.3, 1.0, 0.1)
    for g, e in zip(got, expected):
        assert g.item() == pytest.approx(e.item(), rel=1e-12)
    # only the homogeneity term depends on α, and it changes
    assert got[0].item() == pytest.approx(G7_CON, rel=1e-12)
    assert got[1].item() == pytest.approx(G7_ENV, rel=1e-12)
    assert got[2].item() != pytest.approx(G7_HOM, rel=1e-3)


def test_golden_g7_through_module():
    h, labels, surrogate, points = _g7(torch.float32)
    mod = SRL(num_labels=6, embedding_dim=3, n_points=6, temperature=0.3)
    assert mod.points.shape == (6, 3)
    with torch.no_grad():
        mod.points.copy_(points)
    con, env, hom = mod(h, labels, surrogate)
    assert (con.item(), env.item(), hom.item()) == pytest.approx((G7_CON, G7_ENV, G7_HOM), rel=1e-5)


# ---- loop implementation on random inputs -----------------------------------------------------------------------
CASES = [(1, False), (2, False), (7, False), (12, True)]


def _grad(value, wrt):
    """d value / d wrt; zeros when value does not depend on wrt (e.g. no batch row is an argmax in L_env)."""
    if not (isinstance(value, torch.Tensor) and value.requires_grad):
        return torch.zeros_like(wrt)
    (g,) = torch.autograd.grad(value, wrt, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


@pytest.mark.parametrize("n,dup", CASES)
@pytest.mark.parametrize("alpha,beta,tau", [(-1.0, 0.1, 0.3), (1.0, 0.1, 0.3), (-1.0, 0.5, 0.1)])
def test_matches_loop_values_and_gradients(n, dup, alpha, beta, tau):
    features, labels, surrogate, points = _random_case(n * 31 + int(10 * tau), n, duplicates=dup)
    f1 = features.clone().requires_grad_(True)
    f2 = features.clone().requires_grad_(True)
    got = srl_losses(f1, labels, surrogate, points, temperature=tau, homogeneity_alpha=alpha,
                     homogeneity_beta=beta)
    expected = srl_losses_loop(f2, labels, surrogate, points, tau, alpha, beta)
    for idx, (g, e) in enumerate(zip(got, expected)):
        assert g.item() == pytest.approx(e.item(), rel=1e-10, abs=1e-12)
        torch.testing.assert_close(_grad(g, f1), _grad(e, f2), rtol=1e-8, atol=1e-10, msg=f"term {idx}")


@pytest.mark.parametrize("n,dup", [(1, False), (6, True)])
def test_gradcheck_float64(n, dup):
    features, labels, surrogate, points = _random_case(7 + n, n, duplicates=dup)
    features.requires_grad_(True)
    # L_env and L_hom only: L_con uses sg(C), so finite differences (which move C too) differ from its
    # gradient by design; its gradient is checked against a frozen table in the next test.
    for alpha in (-1.0, 1.0):
        assert torch.autograd.gradcheck(
            lambda f: srl_losses(f, labels, surrogate, points, temperature=0.3, homogeneity_alpha=alpha)[1:],
            (features,))


# ---- §7.7 invariants -----------------------------------------------------------------------------------------------
def test_contrastive_equals_cross_entropy_on_detached_table():  # §7.7.1
    features, labels, surrogate, points = _random_case(3, 10, duplicates=True)
    _, table = srl_centroid_table_loop(features, labels, surrogate)
    C = torch.stack([r.detach() for r in table])
    u = F.normalize(features, dim=1)
    expected = F.cross_entropy(u @ C.T / 0.25, labels)
    con, _, _ = srl_losses(features, labels, surrogate, points, temperature=0.25)
    assert con.item() == pytest.approx(expected.item(), rel=1e-12)


def test_contrastive_gradient_only_through_anchors():  # §7.7.4
    features, labels, surrogate, points = _random_case(12, 9, duplicates=True)
    _, table = srl_centroid_table_loop(features, labels, surrogate)
    C = torch.stack([r.detach() for r in table])  # frozen table
    f1 = features.clone().requires_grad_(True)
    F.cross_entropy(F.normalize(f1, dim=1) @ C.T / 0.3, labels).backward()
    f2 = features.clone().requires_grad_(True)
    srl_losses(f2, labels, surrogate, points, temperature=0.3)[0].backward()
    torch.testing.assert_close(f2.grad, f1.grad, rtol=1e-9, atol=1e-12)


def test_invariant_to_positive_scaling_of_features():  # §7.7.1
    features, labels, surrogate, points = _random_case(4, 9)
    scale = torch.linspace(0.05, 20.0, 9, dtype=F64).unsqueeze(1)
    for alpha in (-1.0, 1.0):
        base = srl_losses(features, labels, surrogate, points, homogeneity_alpha=alpha)
        scaled = srl_losses(features * scale, labels, surrogate, points, homogeneity_alpha=alpha)
        for b, s in zip(base, scaled):
            assert s.item() == pytest.approx(b.item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_bounds_on_random_inputs(seed):  # §7.7.2, §7.7.3
    n = [1, 2, 5, 8, 13][seed]
    features, labels, surrogate, points = _random_case(50 + seed, n, num_labels=6, n_points=40)
    for alpha in (-1.0, 1.0):
        _, env, hom = srl_losses(features, labels, surrogate, points, homogeneity_alpha=alpha)
        assert 0.0 <= env.item() <= 2.0
        assert hom.item() >= -(6 - 1) - 1e-12


def test_enveloping_zero_iff_points_on_table_rows():  # §7.7.2
    features = torch.tensor([[2.0, 1.0, 0.5], [0.3, -1.0, 2.0]], dtype=F64)
    labels = torch.tensor([0, 2])
    surrogate = torch.tensor([[0, 0, 0], [1.0, -1.0, 0.2], [0, 0, 0], [-0.5, 0.5, 3.0]], dtype=F64)
    rows = F.normalize(torch.cat([features[:1], surrogate[1:2], features[1:2], surrogate[3:4]]), dim=1)
    _, env, _ = srl_losses(features, labels, surrogate, rows)
    assert env.item() == pytest.approx(0.0, abs=1e-12)
    other = F.normalize(rows + torch.tensor([0.0, 0.3, 0.0], dtype=F64), dim=1)
    _, env, _ = srl_losses(features, labels, surrogate, other)
    assert env.item() > 1e-6


def test_enveloping_two_for_antipodal_points():  # §7.7.2 upper bound reached
    v = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    surrogate = v.repeat(4, 1)
    features = torch.stack([3 * v, 0.5 * v])
    labels = torch.tensor([1, 3])
    points = F.normalize(-v, dim=0).repeat(3, 1)
    _, env, _ = srl_losses(features, labels, surrogate, points)
    assert env.item() == pytest.approx(2.0, rel=1e-12)


def test_homogeneity_lower_bound_reached():  # §7.7.3
    v = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    L = 5
    # α = −1: every slot the same unit vector ⇒ a_c ≡ 1 ⇒ L_hom = −(L−1)
    _, _, hom = srl_losses((2 * v).unsqueeze(0), torch.tensor([2]), v.repeat(L, 1), F.normalize(v, dim=0)[None],
                           homogeneity_alpha=-1.0, homogeneity_beta=0.1)
    assert hom.item() == pytest.approx(-(L - 1), rel=1e-12)
    # α = +1: consecutive slots antipodal ⇒ a_c ≡ −1 ⇒ L_hom = −(L−1)
    alternating = torch.stack([v if c % 2 == 0 else -v for c in range(L)])
    _, _, hom = srl_losses((3 * v).unsqueeze(0), torch.tensor([0]), alternating, F.normalize(v, dim=0)[None],
                           homogeneity_alpha=1.0, homogeneity_beta=0.1)
    assert hom.item() == pytest.approx(-(L - 1), rel=1e-12)
    # …and the α = −1 value of that antipodal table is the opposite extreme
    _, _, hom = srl_losses((3 * v).unsqueeze(0), torch.tensor([0]), alternating, F.normalize(v, dim=0)[None],
                           homogeneity_alpha=-1.0, homogeneity_beta=0.1)
    assert hom.item() == pytest.approx(L - 1, rel=1e-12)


def test_no_gradient_reaches_surrogate():  # §7.7.4
    features, labels, surrogate, points = _random_case(5, 8, duplicates=True)
    surrogate.requires_grad_(True)
    features.requires_grad_(True)
    con, env, hom = srl_losses(features, labels, surrogate, points)
    (con + env + hom).backward()
    assert surrogate.grad is None or bool((surrogate.grad == 0).all())
    assert features.grad is not None and bool(torch.isfinite(features.grad).all())


def test_gradient_finite_with_duplicate_labels_and_features():  # §7.7.5
    features = torch.tensor([[1.0, 2.0, 3.0]] * 4 + [[0.5, -1.0, 2.0]], requires_grad=True)
    labels = torch.tensor([3, 3, 3, 3, 1])
    surrogate = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    points = srl_random_points(11, 3, generator=torch.Generator().manual_seed(1))
    con, env, hom = srl_losses(features, labels, surrogate, points)
    (10 * con + 100 * env + 0.01 * hom).backward()
    assert bool(torch.isfinite(features.grad).all())
    assert features.grad.abs().sum().item() > 0


def test_float_labels_are_truncated():
    features, _, surrogate, points = _random_case(6, 5)
    float_labels = torch.tensor([0.7, 2.9, 3.0, 3.99, 6.5])
    long_labels = torch.tensor([0, 2, 3, 3, 6])
    for a, b in zip(srl_losses(features, float_labels, surrogate, points),
                    srl_losses(features, long_labels, surrogate, points)):
        assert a.item() == pytest.approx(b.item(), rel=1e-12)


@pytest.mark.parametrize("bad", [[0, 1, 7], [0, -1, 2], [0, 1, 100]])
def test_labels_out_of_range_raise(bad):
    features, _, surrogate, points = _random_case(7, 3)  # L = 7 label slots
    with pytest.raises(ValueError, match="labels"):
        srl_losses(features, torch.tensor(bad), surrogate, points)


# ---- random points and the module -------------------------------------------------------------------------------------
def test_random_points_unit_norm_and_deterministic():
    a = srl_random_points(50, 8, generator=torch.Generator().manual_seed(3))
    b = srl_random_points(50, 8, generator=torch.Generator().manual_seed(3))
    c = srl_random_points(50, 8, generator=torch.Generator().manual_seed(4))
    assert a.shape == (50, 8) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=1), torch.ones(50), rtol=0, atol=1e-6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    d = srl_random_points(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert d.dtype == torch.float64
    torch.testing.assert_close(d.norm(dim=1), torch.ones(4, dtype=F64), rtol=0, atol=1e-12)


def test_random_points_uniform_on_sphere():
    # uniform on S^{d-1}: mean ≈ 0 and E[x_j²] = 1/d for every coordinate
    p = srl_random_points(6000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert p.mean(0).norm().item() < 0.05
    torch.testing.assert_close((p ** 2).mean(0), torch.full((3,), 1 / 3, dtype=F64), rtol=0, atol=0.03)


def test_module_points_buffer_and_forward():
    mod = SRL(num_labels=7, embedding_dim=4, n_points=30, temperature=0.2, homogeneity_alpha=1.0,
              homogeneity_beta=0.3, seed=5)
    assert "points" in dict(mod.named_buffers())
    assert mod.points.shape == (30, 4)
    torch.testing.assert_close(mod.points.norm(dim=1), torch.ones(30), rtol=0, atol=1e-6)
    assert torch.equal(mod.points, SRL(7, embedding_dim=4, n_points=30, seed=5).points)
    assert not torch.allclose(mod.points, SRL(7, embedding_dim=4, n_points=30, seed=6).points)
    features, labels, surrogate, _ = _random_case(8, 9, num_labels=7, dim=4)
    features, surrogate = features.float(), surrogate.float()
    got = mod(features, labels, surrogate)
    expected = srl_losses(features, labels, surrogate, mod.points, temperature=0.2, homogeneity_alpha=1.0,
                          homogeneity_beta=0.3)
    for g, e in zip(got, expected):
        assert g.item() == pytest.approx(e.item(), rel=1e-6)
    loop = srl_losses_loop(features.double(), labels, surrogate.double(), mod.points.double(), 0.2, 1.0, 0.3)
    for g, e in zip(got, loop):
        assert g.item() == pytest.approx(e.item(), rel=1e-5, abs=1e-6)


# ---- CUDA ----------------------------------------------------------------------------------------------------------------
@cuda
@needs_cuda
def test_cuda_matches_cpu():
    features, labels, surrogate, points = _random_case(9, 12, duplicates=True)
    cpu = srl_losses(features, labels, surrogate, points)
    f = features.to("cuda").requires_grad_(True)
    out = srl_losses(f, labels.to("cuda"), surrogate.to("cuda"), points.to("cuda"))
    for o, c in zip(out, cpu):
        assert o.device.type == "cuda"
        assert o.item() == pytest.approx(c.item(), rel=1e-10, abs=1e-12)
    sum(out).backward()
    assert f.grad.device.type == "cuda"
    mod = SRL(7, embedding_dim=4, n_points=20).to("cuda")
    assert mod.points.device.type == "cuda"
    got = mod(features.float().to("cuda"), labels.to("cuda"), surrogate.float().to("cuda"))
    ref = srl_losses(features.float(), labels, surrogate.float(), mod.points.cpu())
    for g, r in zip(got, ref):
        assert g.device.type == "cuda" and g.item() == pytest.approx(r.item(), rel=1e-5, abs=1e-6)


# -- the surrogate -----------------------------------------------------------------------------------------------
def test_surrogate_is_a_per_label_running_mean():
    """First update replaces, later ones are an EMA with momentum; absent labels keep their rows (loop check)."""
    from common.losses import SRLSurrogate
    surrogate = SRLSurrogate(5, 3, start_update=1, momentum=0.9).double()
    g = torch.Generator().manual_seed(0)
    expected = torch.zeros(5, 3, dtype=torch.float64)
    surrogate.update(torch.rand(6, 3, generator=g, dtype=torch.float64), torch.zeros(6), epoch=0)  # before start
    assert torch.equal(surrogate.running_mean, expected)
    for epoch in (1, 2, 3):
        features = torch.rand(10, 3, generator=g, dtype=torch.float64)
        labels = torch.tensor([0, 0, 1, 3, 3, 3, 1, 0, 3, 1][: 10 - epoch] + [1] * epoch).double().reshape(-1, 1)
        surrogate.update(features, labels, epoch)
        for slot in range(5):
            rows = features[labels[:, 0] == slot]
            if len(rows):
                factor = 0.0 if epoch == 1 else 0.9
                expected[slot] = (1 - factor) * rows.mean(0) + factor * expected[slot]
        torch.testing.assert_close(surrogate.running_mean, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(surrogate.running_mean[[2, 4]], torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\]"):
        surrogate.update(torch.rand(2, 3), torch.tensor([0.0, 5.0]), epoch=4)
