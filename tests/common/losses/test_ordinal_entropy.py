"""Tests of Ordinal Entropy (common/losses/ordinal_entropy.py) against a loop over the distinct labels written from
the formula (docs/methods.md §12.5), in float64: values and gradients, the invariants, the quirks and the wiring."""
import math

import numpy as np
import pytest
import torch

from common import cli
from common.bins import AGE_BINS, DEPTH_BINS, STSB_BINS
from common.losses.ordinal_entropy import (OrdinalEntropy, OrdinalEntropyDense, _oe_parts, bin_keys,
                                           ordinal_entropy_dense_loss, ordinal_entropy_loss, ordinal_entropy_parts)
from common.method import LabelView, Step
from common.objective import ObjectiveData
from common.losses import ordinal_entropy as oe_module

D64 = torch.float64


# -- the loop ---------------------------------------------------------------------------------------------------
def _dist(a, b):
    return torch.sqrt(torch.clamp((a * a).sum() + (b * b).sum() - 2 * (a * b).sum(), min=1e-12))


def oe_loop(z, y, tightness="sqrt", empty="zero", label_distance="direct"):
    """(L_d, L_t) by the formula: sorted distinct labels, one centre each, every pair k < l and every sample."""
    labels = [float(v) for v in y.reshape(-1)]
    unique = sorted(set(labels))
    centres = []
    for u in unique:
        members = [z[i] for i in range(len(labels)) if labels[i] == u]
        centres.append(sum(members) / len(members))
    p = [c / c.norm() for c in centres]
    gaps = {}
    for k in range(len(unique)):
        for l in range(k + 1, len(unique)):
            a, b = unique[k], unique[l]
            if label_distance == "direct":
                gaps[k, l] = abs(a - b)
            else:
                gaps[k, l] = math.sqrt(max(a * a + b * b - 2 * a * b, 1e-12))
    if gaps:
        low, high = min(gaps.values()), max(gaps.values())
        terms = [(g - low) / high * _dist(p[k], p[l]) for (k, l), g in gaps.items()]
        diversity = sum(terms) / len(terms)
    else:
        diversity = z.sum() * 0
    ts = [((z[i] / z[i].norm() - p[unique.index(labels[i])]) ** 2).sum() for i in range(len(labels))]
    if tightness == "squared":
        return diversity, sum(ts) / len(ts)
    alone = {u for u in unique if labels.count(u) == 1}
    roots = [t.sqrt() for t, v in zip(ts, labels) if v not in alone and t.item() > 0]
    if not roots:
        return diversity, (z.sum() * 0 + (math.nan if empty == "nan" else 0.0))
    return diversity, sum(roots) / len(roots)


def case(n=10, c=4, seed=0, label_range=5, offset=20.0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.randint(0, label_range, (n,), generator=g) + offset).to(D64)
    z = torch.randn(n, c, generator=g, dtype=D64)
    return z, y


def value_and_grad(fn, z):
    leaf = z.clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value, grad


# -- values and gradients against the loop ---------------------------------------------------------------------
@pytest.mark.parametrize("n, label_range, seed", [(6, 3, 0), (10, 5, 1), (16, 12, 2), (9, 2, 3), (12, 4, 4)])
@pytest.mark.parametrize("tightness", ["sqrt", "squared"])
@pytest.mark.parametrize("label_distance", ["direct", "expanded"])
def test_matches_the_loop_in_value_and_gradient(n, label_range, seed, tightness, label_distance):
    z, y = case(n, seed=seed, label_range=label_range)
    options = dict(tightness=tightness, label_distance=label_distance)
    for part in (0, 1):
        got, grad = value_and_grad(lambda x: ordinal_entropy_parts(x, y, **options)[part], z)
        want, want_grad = value_and_grad(lambda x: oe_loop(x, y, tightness, "zero", label_distance)[part], z)
        assert got.dtype == D64 and got.dim() == 0
        assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-14)
        assert torch.allclose(grad, want_grad, rtol=1e-10, atol=1e-13)
    whole = ordinal_entropy_loss(z, y, **options)
    d, t = oe_loop(z, y, tightness, "zero", label_distance)
    assert whole.item() == pytest.approx((t - d).item(), rel=1e-12, abs=1e-14)


def test_cases_hold_singletons_and_shared_labels():
    # guard for the design above: the random cases mix labels seen once (left out of the tightness) with shared ones
    for n, label_range, seed in [(10, 5, 1), (16, 12, 2)]:
        _, y = case(n, seed=seed, label_range=label_range)
        counts = torch.unique(y, return_counts=True)[1]
        assert (counts == 1).any() and (counts > 1).any() and len(counts) >= 3


def test_gradcheck():
    z, y = case(7, c=3, seed=5, label_range=4)
    assert torch.autograd.gradcheck(lambda x: ordinal_entropy_loss(x, y), (z.clone().requires_grad_(True),))


def test_batch_order_does_not_matter():
    # the first occurrence of a label stands for it: any order of the rows gives the same loss
    z, y = case(12, seed=6, label_range=5)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert ordinal_entropy_loss(z, y).item() == pytest.approx(ordinal_entropy_loss(z[order], y[order]).item(),
                                                              rel=1e-13)


# -- the spec's invariants ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e4])
def test_invariant_to_positive_rescaling_of_the_features(scale):
    z, y = case(12, seed=7, label_range=6)
    for part in (0, 1):
        assert ordinal_entropy_parts(z * scale, y)[part].item() == pytest.approx(
            ordinal_entropy_parts(z, y)[part].item(), rel=1e-12)


@pytest.mark.parametrize("a, b", [(2.0, 0.0), (0.25, -3.0), (10.0, 100.0)])
def test_invariant_to_affine_label_maps(a, b):
    z, y = case(12, seed=8, label_range=6)
    for part in (0, 1):
        assert ordinal_entropy_parts(z, a * y + b)[part].item() == pytest.approx(
            ordinal_entropy_parts(z, y)[part].item(), rel=1e-12)


def test_two_distinct_labels_give_no_diversity():
    z, y = case(10, seed=9, label_range=2)
    assert len(set(y.tolist())) == 2
    d, t = ordinal_entropy_parts(z, y)
    assert d.item() == 0.0
    assert ordinal_entropy_loss(z, y).item() == t.item() > 0


@pytest.mark.parametrize("seed", range(5))
def test_bounds(seed):
    z, y = case(24, c=3, seed=seed, label_range=8)
    d, t = ordinal_entropy_parts(z, y)
    assert 0 <= t.item() <= 2 and 0 <= d.item() < 2
    # the extremes: the centres of labels 0 and 2 opposite (w = 1/2 is the largest weight with min W = 1): L_d → 1/3
    z = torch.tensor([[1.0, 0], [0, 1], [-1, 0]], dtype=D64)
    assert ordinal_entropy_parts(z, torch.tensor([0.0, 1, 2], dtype=D64))[0].item() == pytest.approx(
        (0 + 0 + 0.5 * 2) / 3)


# -- the quirks ---------------------------------------------------------------------------------------------
def test_all_labels_distinct_gives_zero_tightness_or_the_authors_nan():
    z, y = case(8, seed=10, label_range=1000)
    assert len(set(y.tolist())) == 8
    d, t = ordinal_entropy_parts(z, y)
    assert t.item() == 0.0 and d.item() > 0
    _, grad = value_and_grad(lambda x: ordinal_entropy_loss(x, y), z)
    assert torch.isfinite(grad).all()
    d_nan, t_nan = ordinal_entropy_parts(z, y, empty_tightness="nan")
    assert math.isnan(t_nan.item()) and d_nan.item() == d.item()
    assert math.isnan(oe_loop(z, y, empty="nan")[1].item())
    # the 2023-01 variant has no NaN: a mean of zeros
    assert ordinal_entropy_parts(z, y, tightness="squared")[1].item() == 0.0


def test_one_distinct_label_gives_zero_diversity_and_finite_gradients():
    z, _ = case(6, seed=11)
    y = torch.full((6,), 3.0, dtype=D64)
    d, t = ordinal_entropy_parts(z, y)
    assert d.item() == 0.0 and t.item() == pytest.approx(oe_loop(z, y)[1].item(), rel=1e-12)
    _, grad = value_and_grad(lambda x: ordinal_entropy_loss(x, y), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_identical_samples_of_a_label_are_left_out_as_exact_zeros():
    z, y = case(6, seed=12, label_range=2)
    y = torch.tensor([0.0, 0, 0, 1, 1, 2], dtype=D64)
    z[4] = z[3]             # label 1: both samples identical, t = 0 exactly for each, left out
    got, grad = value_and_grad(lambda x: ordinal_entropy_parts(x, y)[1], z)
    want, want_grad = value_and_grad(lambda x: oe_loop(x, y)[1], z)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.isfinite(grad).all() and torch.allclose(grad, want_grad, rtol=1e-9, atol=1e-12)


def test_direct_label_gaps_avoid_the_float32_cancellation_of_the_expanded_form():
    # depth-like float32 labels: the expanded u² + v² − 2uv loses the millimetre gaps, |u − v| keeps them
    g = torch.Generator().manual_seed(13)
    z = torch.randn(8, 4, generator=g)
    y = torch.tensor([3.001, 3.002, 3.004, 3.001, 3.002, 3.004, 3.1, 3.1])
    exact = ordinal_entropy_parts(z.double(), y.double())[0].item()
    direct = ordinal_entropy_parts(z, y)[0].item()
    expanded = ordinal_entropy_parts(z, y, label_distance="expanded")[0].item()
    assert direct == pytest.approx(exact, rel=1e-4)
    assert abs(expanded - exact) > 1e-3 * exact


def test_a_step_reads_no_data_dependent_shape():
    # meta tensors have no values: any host read (.item(), bool(tensor)) or data-dependent shape (nonzero, masked
    # indexing, unique) raises here
    z, y = torch.randn(2, 9, 5, device="meta"), torch.randn(2, 9, device="meta")
    for tightness in ("sqrt", "squared"):
        d, t = _oe_parts(z, y, y > 0, tightness=tightness, empty_tightness="nan", label_distance="expanded")
        assert d.shape == t.shape == (2,)
    for bins in (AGE_BINS, DEPTH_BINS, STSB_BINS):
        assert bin_keys(bins, y).shape == (2, 9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_step_synchronises_nothing():
    z, y = case(32, c=16, seed=19, label_range=8)
    features = torch.randn(2, 8, 16, 16, device="cuda", requires_grad=True)
    depth = (torch.rand(2, 1, 16, 16, device="cuda") * 4).round() / 2
    z, y = z.float().to("cuda").requires_grad_(True), y.float().to("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        (OrdinalEntropy(empty_tightness="nan", bins=STSB_BINS).to("cuda")(z, y) + ordinal_entropy_loss(z, y)
         + ordinal_entropy_dense_loss(features, depth, DEPTH_BINS)).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# -- groups: STS-B's 0.1 bins and depth ------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", [AGE_BINS, DEPTH_BINS, STSB_BINS])
def test_bin_keys_are_the_grid_index(bins):
    g = torch.Generator().manual_seed(14)
    values = torch.cat([torch.rand(400, generator=g) * bins.stop * 1.1 - 0.05 * bins.stop,
                        torch.tensor(bins.edges(), dtype=torch.float32),
                        torch.round(torch.rand(200, generator=g) * 50) / 10])
    assert np.array_equal(bin_keys(bins, values).long().numpy(), bins.index(values.numpy()))


def test_scores_in_one_bin_share_a_centre():
    z, _ = case(8, seed=15)
    scores = torch.tensor([3.8, 3.85, 1.2, 1.24, 4.6, 4.667, 0.0, 5.0], dtype=D64)
    loss = OrdinalEntropy(bins=STSB_BINS)
    want = ordinal_entropy_loss(z, torch.tensor(STSB_BINS.index(scores.numpy()), dtype=D64))
    assert loss(z, scores).item() == pytest.approx(want.item(), rel=1e-13)
    assert loss(z, scores).item() != pytest.approx(ordinal_entropy_loss(z, scores).item(), rel=1e-3)


def dense_loop(features, depth, bins=None):
    """The depth variant by loops: nearest pixels of the (h//4, w//4) grid (source index ⌊i·h/(h//4)⌋), depth
    > 0.001 kept, the loop formula per image, mean over images."""
    b, c, h, w = features.shape
    hh, ww = h // 4, w // 4
    total = 0
    for n in range(b):
        rows, labels = [], []
        for i in range(hh):
            for j in range(ww):
                si, sj = (i * h) // hh, (j * w) // ww
                value = depth[n, 0, si, sj]
                if value > 0.001:
                    rows.append(features[n, :, si, sj])
                    labels.append(float(value) if bins is None else float(bins.index(np.float64(value))))
        if rows:
            d, t = oe_loop(torch.stack(rows), torch.tensor(labels, dtype=D64))
            total = total + t - d
    return total / b


@pytest.mark.parametrize("bins", [None, DEPTH_BINS])
def test_depth_variant_matches_the_loop(bins):
    g = torch.Generator().manual_seed(16)
    features = torch.randn(3, 4, 18, 13, generator=g, dtype=D64)
    depth = (torch.randint(1, 6, (3, 1, 18, 13), generator=g) / 4).to(D64)     # few distinct depths: groups
    depth[0, 0, :9] = 0.0                              # pixels without depth: left out
    depth[2] = 0.0                                     # an image without depth: adds 0
    got, grad = value_and_grad(lambda x: ordinal_entropy_dense_loss(x, depth, bins), features)
    want, want_grad = value_and_grad(lambda x: dense_loop(x, depth, bins), features)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.allclose(grad, want_grad, rtol=1e-10, atol=1e-13)
    assert OrdinalEntropyDense(bins=bins)(features, depth).item() == got.item()


def test_depth_variant_refuses_a_map_smaller_than_its_stride():
    with pytest.raises(ValueError, match="smaller than 4 pixels"):
        ordinal_entropy_dense_loss(torch.randn(1, 2, 3, 8), torch.rand(1, 1, 3, 8))


def test_options_are_checked():
    with pytest.raises(ValueError, match="tightness"):
        OrdinalEntropy(tightness="cube")
    with pytest.raises(ValueError, match="label_distance"):
        ordinal_entropy_loss(torch.randn(3, 2), torch.arange(3.0), label_distance="l1")


# -- the wiring --------------------------------------------------------------------------------------------------
def test_the_term_is_the_weighted_loss_on_the_encoding():
    args = cli.parse(cli.build_age_parser("t"), ["--ordinal_entropy", "--oe_weight", "0.5"])
    assert "oe_0.5" in cli.method_tags(args)
    term = oe_module.METHOD.term(args, ObjectiveData(label_bins=AGE_BINS))
    z, y = case(10, seed=17)
    out = term(Step({"encoding": z, "pred": z[:, :1]}, y[:, None], None, 0, LabelView()))
    assert out["oe"].item() == pytest.approx(0.5 * ordinal_entropy_loss(z, y).item(), rel=1e-13)


def test_the_depth_term_is_the_dense_variant():
    class Dense(LabelView):
        dense = True
    args = cli.parse(cli.build_age_parser("t"), ["--ordinal_entropy"])
    term = oe_module.METHOD.term(args, ObjectiveData(view=Dense()))
    g = torch.Generator().manual_seed(18)
    features, depth = torch.randn(2, 3, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    depth = (depth * 4).round() / 2
    out = term(Step({"encoding": features}, depth, None, 0, Dense()))
    assert out["oe"].item() == pytest.approx(ordinal_entropy_dense_loss(features, depth).item(), rel=1e-6)


@pytest.mark.parametrize("flags, sentence", [
    (["--ordinal_entropy", "--retrain_fc", "--pretrained", "x.pth.tar"],
     "--retrain_fc trains only the head of --pretrained, whose features Ordinal Entropy cannot change: drop "
     "--ordinal_entropy."),
    (["--ordinal_entropy", "--rnc_stage", "linear", "--pretrained", "x.pth.tar"],
     "--rnc_stage linear trains a head on a frozen trunk, whose features Ordinal Entropy cannot change: drop "
     "--ordinal_entropy."),
    (["--ordinal_entropy", "--oe_weight", "-1"], "--oe_weight must be ≥ 0, got -1.0."),
])
def test_combinations_that_cannot_work_are_refused_in_one_sentence(flags, sentence, capsys):
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), flags)
    assert sentence in capsys.readouterr().err


def test_it_stacks_with_the_other_methods():
    args = cli.parse(cli.build_age_parser("t"), ["--ordinal_entropy", "--reweight", "sqrt_inv", "--lds", "--fds",
                                                 "--conr", "--regularization_weight", "1", "--rnc", "--srl"])
    tags = "_".join(cli.method_tags(args))
    assert "oe_1" in tags and "conr" in tags and "ranksim" in tags and "rnc" in tags


def test_flags_without_the_switch_are_said_to_change_nothing(capsys):
    cli.parse(cli.build_age_parser("t"), ["--oe_weight", "2"])
    assert "--oe_weight has no effect without --ordinal_entropy" in capsys.readouterr().err
