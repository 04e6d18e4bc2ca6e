"""Tests of ACCon (common/losses/accon.py) against a loop written from the formula of methods-2025.md §4.1–4.2
(float64 values and gradients), its invariants (§4.4), the authors' head and the term's wiring."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from common.losses.accon import ACCon, ACConHead, ACConTerm, METHOD, TAU, accon_loss
from common.method import LabelView, Step

D64 = torch.float64


def accon_loop(features, labels, temperature=0.05, base_temperature=None, label_range=100.0, variant="age",
               reference_casts=False):
    """The spec's formula, one pair at a time. ``features`` (N, d) rows (already stacked), ``labels`` (N,)."""
    base = temperature if base_temperature is None else base_temperature
    z = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = z.shape[0]
    y = [float(v) for v in labels]
    c = [[(z[r] @ z[s]).clamp(-1.0, 1.0) for s in range(n)] for r in range(n)]

    def positive(r, s):
        if variant == "stsb":
            return round(y[r] * 10) == round(y[s] * 10)         # the self pair included
        return r != s and y[r] == y[s]

    def angle(r, s):
        delta = y[r] - y[s]
        if reference_casts:
            delta = torch.tensor(delta, dtype=torch.float32)
            phi = math.pi * (1 - delta / label_range)             # a float32 tensor, as the authors' cast
            return torch.cos(phi).item(), abs(torch.sin(phi).item())
        phi = math.pi * (1 - delta / label_range)
        return math.cos(phi), abs(math.sin(phi))

    total_lp, total_pos, anchors = 0.0, 0.0, []
    for r in range(n):
        m_r = max(c[r][s].item() for s in range(n)) / temperature
        logit = [c[r][s] / temperature - m_r for s in range(n)]
        terms = []
        for s in range(n):
            if s == r:
                continue
            if positive(r, s):
                terms.append(logit[s])
            else:
                cos_phi, sin_phi = angle(r, s)
                sigma = torch.sqrt(1 - c[r][s] ** 2 + TAU)
                terms.append((c[r][s] * cos_phi - sigma * sin_phi) / temperature)
        log_den = torch.log(sum(torch.exp(t) for t in terms))
        lp = sum((logit[s] - log_den) for s in range(n) if positive(r, s)) if any(
            positive(r, s) for s in range(n)) else torch.zeros((), dtype=features.dtype)
        count = sum(positive(r, s) for s in range(n))
        if reference_casts:
            count = torch.tensor(float(count), dtype=torch.float32)
        total_lp, total_pos = total_lp + lp, total_pos + count
        anchors.append((lp + TAU) / (count + TAU))
    if variant == "stsb":
        return -(temperature / base) * (total_lp + TAU) / (total_pos + TAU)
    return -(temperature / base) * sum(anchors) / n


def case(n=8, d=5, seed=0, label_range=4, offset=20.0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g, dtype=D64)
    y = torch.randint(0, label_range, (n,), generator=g).to(D64) + offset
    return f, y


def value_and_grad(fn, f):
    leaf = f.clone().requires_grad_(True)
    value = fn(leaf)
    if not value.requires_grad:             # the loop of a batch without any positive: a constant
        return value, torch.zeros_like(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value, grad


# ------------------------------------------------------------------------------------------- against the loop
@pytest.mark.parametrize("n", [2, 3, 6, 9])
@pytest.mark.parametrize("temperature, base, label_range", [(0.05, None, 100.0), (0.5, 0.07, 10.0), (1.0, 1.0, 3.0)])
@pytest.mark.parametrize("variant", ["age", "stsb"])
def test_matches_loop_value_and_gradient(n, temperature, base, label_range, variant):
    f, y = case(n, seed=n)
    if variant == "stsb":
        y = y / 10 + torch.tensor([0.0, 0.04, 0.26, 0.0, 0.13, 0.0, 0.01, 0.3, 0.07][:n], dtype=D64)
    kw = dict(temperature=temperature, base_temperature=base, label_range=label_range, variant=variant)
    got, grad = value_and_grad(lambda x: accon_loss(x, y, **kw), f)
    want, want_grad = value_and_grad(lambda x: accon_loop(x, y, **kw), f)
    assert got.dtype == D64 and got.dim() == 0
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-12)
    assert torch.allclose(grad, want_grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", ["age", "stsb"])
def test_reference_casts_match_the_float32_details_at_1e_12(variant):
    # The authors' float32 Δ and positive counts: with the casts both sides agree at 1e-12; without, only at
    # about 1e-7 relative (the spec's 1e-6).
    f, y = case(7, seed=11, offset=0.0)
    y = y * 13.7 / 3
    kw = dict(temperature=0.05, label_range=100.0, variant=variant)
    cast = accon_loss(f, y, reference_casts=True, **kw)
    assert cast.item() == pytest.approx(accon_loop(f, y, reference_casts=True, **kw).item(), rel=1e-12)
    plain = accon_loss(f, y, **kw)
    assert plain.item() == pytest.approx(accon_loop(f, y, **kw).item(), rel=1e-12)
    assert cast.item() != plain.item() and cast.item() == pytest.approx(plain.item(), rel=1e-6)


def test_gradcheck():
    f, y = case(5, d=3, seed=4)
    leaf = f.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: accon_loss(x, y, temperature=0.3, label_range=5.0), (leaf,))
    assert torch.autograd.gradcheck(lambda x: accon_loss(x, y / 10, temperature=1.0, label_range=5.0,
                                                         variant="stsb"), (leaf,))


def test_views_are_stacked_view_major():
    # (B, V, d) → rows v·B + b with the sample's label; the same as passing the stacked rows.
    g = torch.Generator().manual_seed(2)
    f = torch.randn(4, 2, 6, generator=g, dtype=D64)
    y = torch.tensor([30.0, 31.0, 30.0, 45.0], dtype=D64)
    stacked = torch.cat([f[:, 0], f[:, 1]])
    assert accon_loss(f, y[:, None]).item() == pytest.approx(accon_loss(stacked, y.repeat(2)).item(), rel=1e-14)
    assert accon_loss(f, y).item() == pytest.approx(accon_loop(stacked, y.repeat(2)).item(), rel=1e-12)


# -------------------------------------------------------------------------------------------------- invariants
def test_equal_labels_make_it_supcon_over_all_pairs_times_t_over_tb():
    # Every other row is a positive: the shift cancels and A_r is the mean SupCon log-probability (with τ).
    f, _ = case(6, seed=5)
    y = torch.full((6,), 40.0, dtype=D64)
    t, tb = 0.1, 0.07
    z = F.normalize(f, dim=1)
    s = z @ z.T / t
    off = ~torch.eye(6, dtype=torch.bool)
    log_prob = [s[r][off[r]] - torch.logsumexp(s[r][off[r]], 0) for r in range(6)]
    supcon = -torch.stack([(lp.sum() + TAU) / (5 + TAU) for lp in log_prob]).mean()
    assert accon_loss(f, y, temperature=t, base_temperature=tb).item() == pytest.approx((t / tb) * supcon.item(),
                                                                                       rel=1e-12)


def test_shift_invariant_not_scale_invariant():
    f, y = case(8, seed=6)
    base = accon_loss(f, y)
    assert accon_loss(f, y + 17.0).item() == pytest.approx(base.item(), rel=1e-13)
    assert abs(accon_loss(f, 2 * y).item() - base.item()) > 1e-3


def test_the_shift_is_one_over_t_for_unit_rows():
    # With unit rows and one positive pair, LP = c/T − 1/T − log Σ exp(n): the shift is the row's own 1/T.
    z = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(7), dtype=D64), dim=1)
    y = torch.tensor([1.0, 1.0, 9.0], dtype=D64)
    t, m = 0.2, 10.0
    c = z @ z.T
    phi = math.pi * (1 - 8.0 / m)
    pushed = lambda r: (c[r, 2] * math.cos(phi) - torch.sqrt(1 - c[r, 2] ** 2 + TAU) * abs(math.sin(phi))) / t  # noqa
    lp = [c[0, 1] / t - 1 / t - torch.log(torch.exp(c[0, 1] / t - 1 / t) + torch.exp(pushed(r))) for r in (0, 1)]
    want = -((lp[0] + TAU) / (1 + TAU) + (lp[1] + TAU) / (1 + TAU) + 1.0) / 3      # row 2: no positive → 1
    assert accon_loss(z, y, temperature=t, label_range=m).item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("delta", [10.0, 25.0, 50.0, 80.0])
def test_the_loss_is_least_at_the_angle_pi_delta_over_m(delta):
    # Rows 0 and 1 share a label, row 2 is Δ away at angle θ from them: the loss is least at θ = π|Δ|/M.
    m = 100.0
    thetas = torch.linspace(0.01, math.pi - 0.01, 2001, dtype=D64)
    y = torch.tensor([20.0, 20.0, 20.0 + delta], dtype=D64)
    values = []
    for theta in thetas:
        f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [math.cos(theta), math.sin(theta)]], dtype=D64)
        values.append(accon_loss(f, y, temperature=0.1, label_range=m).item())
    best = thetas[int(torch.tensor(values, dtype=D64).argmin())].item()
    assert best == pytest.approx(math.pi * delta / m, abs=2e-3)


def test_an_anchor_without_positives_is_the_constant_minus_t_over_tb_without_gradient():
    f, _ = case(4, seed=8)
    y = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D64)
    value, grad = value_and_grad(lambda x: accon_loss(x, y, temperature=0.05, base_temperature=0.1), f)
    assert value.item() == pytest.approx(-0.5, rel=1e-14) and torch.count_nonzero(grad) == 0
    # The STS-B variant: each row is its own positive, so the angle term acts on distinct labels too.
    value, grad = value_and_grad(lambda x: accon_loss(x, y, temperature=1.0, label_range=5.0, variant="stsb"), f)
    assert grad.abs().sum() > 1e-3


def test_stsb_positives_are_labels_equal_at_one_decimal():
    f, _ = case(4, seed=9)
    near = torch.tensor([3.0, 3.04, 2.0, 4.4], dtype=D64)       # 3.0 and 3.04 round to the same 3.0
    far = torch.tensor([3.0, 3.16, 2.0, 4.4], dtype=D64)        # 3.16 rounds to 3.2
    kw = dict(temperature=1.0, label_range=5.0, variant="stsb")
    assert accon_loss(f, near, **kw).item() == pytest.approx(accon_loop(f, near, **kw).item(), rel=1e-12)
    # Only the positive mask changes between the two (Δ differs by 0.12 too, so compare with the loop's mask).
    assert accon_loss(f, far, **kw).item() == pytest.approx(accon_loop(f, far, **kw).item(), rel=1e-12)
    assert accon_loss(f, near, **kw).item() != pytest.approx(accon_loss(f, far, **kw).item(), rel=1e-3)


def test_module_float32_and_half_inputs():
    f, y = case(6, seed=10)
    loss = ACCon(0.05, None, 100.0)
    assert loss(f.float(), y.float()).dtype == torch.float32
    assert loss(f.float(), y.float()).item() == pytest.approx(accon_loss(f, y).item(), rel=1e-5)
    assert loss(f.half(), y).dtype == torch.float32
    with pytest.raises(ValueError, match="variant"):
        ACCon(variant="pixel")
    with pytest.raises(ValueError, match="temperature"):
        accon_loss(f, y, temperature=0.0)
    with pytest.raises(ValueError, match="labels"):
        accon_loss(f, y[:5])


# ---------------------------------------------------------------------------------------------------- the head
def test_head_is_projection_then_relu_of_a_linear_output():
    torch.manual_seed(0)
    head = ACConHead(6, proj_dims=4).double()
    x = torch.randn(5, 6, dtype=D64)
    out = head(x)
    p = x @ head.fc_ctr.weight.T + head.fc_ctr.bias
    assert torch.allclose(out["accon_projection"], p)
    assert torch.allclose(out["pred"], (p @ head.regressor.weight.T + head.regressor.bias).clamp_min(0))
    assert out["pred"].shape == (5, 1)
    stsb = ACConHead(6, proj_dims=4, relu=False, normalized=True).double()
    out = stsb(x)
    p = stsb.fc_ctr(x)
    assert torch.allclose(out["pred"], stsb.regressor(p / p.norm(dim=1, keepdim=True)))
    with pytest.raises(ValueError, match="own head"):
        ACConHead(6, kernel_size=5)


# ---------------------------------------------------------------------------------------------------- the term
class _Dense(LabelView):
    dense = True

    def per_sample(self, features, depth):
        return features.flatten(1), depth.mean(dim=(1, 2, 3))[:, None]


def test_term_reads_the_views_pass_else_the_main_pass_and_the_dense_view_per_image():
    f, y = case(6, seed=12)
    term = ACConTerm(2.0, ACCon(0.1, None, 50.0))
    step = Step({"accon_projection": f}, y[:, None], None, 0, LabelView())
    assert term(step)["accon"].item() == pytest.approx(2 * accon_loss(f, y, temperature=0.1,
                                                                      label_range=50.0).item(), rel=1e-14)
    other = f.flip(0)
    step.views_out, step.view_targets = {"accon_projection": other}, y[:, None]
    assert term(step)["accon"].item() == pytest.approx(2 * accon_loss(other, y, temperature=0.1,
                                                                      label_range=50.0).item(), rel=1e-14)
    maps = torch.randn(3, 2, 4, 5, dtype=D64)
    depth = torch.rand(3, 1, 4, 5, dtype=D64) * 5
    dense = ACConTerm(1.0, ACCon(1.0, None, 10.0, "stsb"), key="encoding")
    got = dense(Step({"encoding": maps}, depth, None, 0, _Dense()))["accon"]
    want = accon_loss(maps.flatten(1), depth.mean(dim=(1, 2, 3)), temperature=1.0, label_range=10.0, variant="stsb")
    assert got.item() == pytest.approx(want.item(), rel=1e-14)


def test_method_head_and_term_follow_the_flags():
    args = argparse.Namespace(accon=True, accon_weight=10.0, accon_temperature=1.0, accon_base_temperature=None,
                              accon_label_range=5.0, accon_variant="stsb", proj_dims=7, accon_relu=0,
                              accon_normalize=1)
    head = METHOD.head(args)["head"](12)
    assert isinstance(head, ACConHead) and head.fc_ctr.out_features == 7 and not head.relu and head.normalized
    term = METHOD.term(args, None)
    assert term.key == "accon_projection" and term.weight == 10.0 and term.loss.variant == "stsb"
    assert METHOD.tag(args) == "accon_10_t1_m5_stsb" and METHOD.reuses_views(args)
    del args.proj_dims                                  # NYUD2: no head of its own, the features per image
    assert METHOD.head(args) is None and METHOD.term(args, None).key == "encoding"


# ------------------------------------------------------------------------------------- the objective and the CLI
class _Recorder(torch.nn.Module):
    """A model that returns fixed rows and records what it was called with."""

    def __init__(self, projection, pred):
        super().__init__()
        self.projection, self.pred, self.calls = projection, pred, []

    def forward(self, x, targets=None, smooth=True):
        self.calls.append(x)
        return {"pred": self.pred, "accon_projection": self.projection, "encoding": self.projection}


def test_the_two_views_are_the_main_pass_of_the_regression_loss_and_of_accon():
    from common.objective import objective_from_flags
    f, y = case(8, seed=13)
    targets = y[:4, None].float()
    pred = torch.rand(8, 1)
    model = _Recorder(f, pred)
    first, second = torch.zeros(4, 3), torch.ones(4, 3)
    objective = objective_from_flags(loss="l1", accon=True, accon_weight=0.5, accon_temperature=0.05,
                                     accon_label_range=100.0)
    parts = objective(model, {"input": torch.full((4, 3), 7.0), "target": targets, "weight": None,
                              "views": (first, second)}, 0)
    # One pass over the two views, view-major; the L1 loss on its 2B outputs with the labels repeated.
    assert len(model.calls) == 1 and torch.equal(model.calls[0], torch.cat([first, second]))
    assert parts["l1"].item() == pytest.approx((pred - targets.repeat(2, 1)).abs().mean().item(), rel=1e-6)
    assert parts["accon"].item() == pytest.approx(0.5 * accon_loss(f, targets.repeat(2, 1).double()).item(),
                                                  rel=1e-12)


def _parse(folder, argv):
    from common import cli
    from folders import folder_module
    return cli.parse(folder_module(folder, "train").build_parser(), argv)


@pytest.mark.parametrize("folder, flags, sentence", [
    ("agedb-dir", ["--accon", "--uvote"], "--accon brings its own head"),
    ("sts-b-dir", ["--accon", "--vir"], "pass only one of them"),
    ("agedb-dir", ["--accon", "--rnc_stage", "encoder"], "drop --accon"),
    ("nyud2-dir", ["--accon", "--accon_variant", "age"], "use --accon_variant stsb"),
    ("agedb-dir", ["--accon", "--accon_temperature", "0"], "--accon_temperature must be > 0"),
    ("sts-b-dir", ["--accon", "--accon_label_range", "-5"], "--accon_label_range must be > 0"),
    ("imdb-wiki-dir", ["--accon", "--accon_weight", "-1"], "--accon_weight must be ≥ 0"),
])
def test_combinations_that_cannot_work_are_one_sentence(folder, flags, sentence, capsys):
    with pytest.raises(SystemExit):
        _parse(folder, flags)
    err = capsys.readouterr().err
    assert sentence in err and len(err.strip().splitlines()) == 2


def test_benchmark_defaults_and_accepted_combinations(capsys):
    agedb = _parse("agedb-dir", ["--accon"])
    assert (agedb.accon_weight, agedb.accon_temperature, agedb.accon_label_range, agedb.accon_variant,
            agedb.proj_dims, agedb.accon_relu, agedb.accon_normalize, agedb.accon_augment) == \
        (1.0, 0.05, 100.0, "age", 512, 1, 0, "rnc")
    assert _parse("imdb-wiki-dir", ["--accon"]).accon_augment == "main"
    stsb = _parse("sts-b-dir", ["--accon"])
    assert (stsb.accon_weight, stsb.accon_temperature, stsb.accon_label_range, stsb.accon_variant, stsb.proj_dims,
            stsb.accon_relu, stsb.accon_normalize) == (10.0, 1.0, 5.0, "stsb", 2000, 0, 1)
    nyud2 = _parse("nyud2-dir", ["--accon", "--uvote"])      # NYUD2 keeps its own head: UVOTE's is fine
    assert (nyud2.accon_label_range, nyud2.accon_variant) == (10.0, "stsb") and not hasattr(nyud2, "proj_dims")
    capsys.readouterr()
    stacked = _parse("agedb-dir", ["--accon", "--conr", "--fds", "--lds", "--reweight", "sqrt_inv",
                                   "--regularization_weight", "1", "--srl", "--rnc"])
    assert stacked.conr_views == 2 and "ConR reads that same pass" in capsys.readouterr().err
    assert _parse("agedb-dir", ["--accon", "--bmse", "--imp", "bni", "--retrain_fc", "--pretrained", "x"]).accon
