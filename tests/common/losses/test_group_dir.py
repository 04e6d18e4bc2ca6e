"""Tests of Group-DIR (common/losses/group_dir.py): every part against a float64 loop written from the spec's
formulas (docs/methods.md, section 12), values and gradients; the spec's invariants; the head; the method's flags."""
import math

import numpy as np
import pytest
import torch

from common import cli, methods
from common.bins import AGE_BINS
from common.losses.group_dir import (GroupDIRHead, GroupDIRLoss, group_contrastive_loss, group_frequencies,
                                     group_index, group_predict, group_regression_loss, soft_label_loss, soft_labels)
from common.method import LabelView, Step
from common.objective import ObjectiveData, objective_from_flags
from folders import folder_module

D64 = torch.float64


# -- the loops: the spec's formulas, one number at a time ---------------------------------------------------
def loop_group(y, r, G):
    return min(math.floor(y / r), G - 1)


def loop_q(g, G, s=1.0, step=1, clamp=True):
    a = []
    for j in range(G):
        v = s * (G - 1) if j == g else (G - step - abs(j - g)) / s
        a.append(min(max(v, 0), G - 1) if clamp else v)
    top = max(a)
    e = [math.exp(v - top) for v in a]
    return [v / sum(e) for v in e]


def loop_soft(logits, labels, r, s=1.0, step=1, clamp=True):
    B, G = logits.shape
    total = 0
    for i in range(B):
        q = loop_q(loop_group(float(labels[i]), r, G), G, s, step, clamp)
        log_p = logits[i] - torch.logsumexp(logits[i], 0)
        total = total - sum(q[j] * log_p[j] for j in range(G))
    return total


def loop_grc(z, labels, r, G, tau):
    B = z.shape[0]
    g = [loop_group(float(y), r, G) for y in labels]
    zh = [z[i] / z[i].norm() for i in range(B)]
    S = [[-(zh[i] - zh[j]).norm() / tau for j in range(B)] for i in range(B)]
    total = 0
    for i in range(B):
        for k in range(B):
            if k == i:
                continue
            negatives = [S[i][j] for j in range(B) if j != i and abs(g[i] - g[j]) >= abs(g[i] - g[k])]
            total = total - (S[i][k] - torch.logsumexp(torch.stack(negatives), 0))
    return total / (B * (B - 1))


def loop_reg(values, labels, r, weights, sigma, kind, targets=None):
    B, G = values.shape
    targets = labels if targets is None else targets
    total = 0
    for i in range(B):
        e = values[i, loop_group(float(labels[i]), r, G)] - targets[i]
        total = total + float(weights[i]) * (e * e if kind == "mse" else e.abs())
    return sigma * total / B


def loop_ce(logits, labels, r, prior):
    B, G = logits.shape
    total = 0
    for i in range(B):
        adjusted = logits[i] + prior
        total = total - (adjusted[loop_group(float(labels[i]), r, G)] - torch.logsumexp(adjusted, 0))
    return total


def case(B=7, G=5, D=4, seed=0, top=60.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, G, generator=gen, dtype=D64)
    values = 30 * torch.randn(B, G, generator=gen, dtype=D64)
    z = torch.randn(B, D, generator=gen, dtype=D64)
    labels = torch.randint(0, int(top), (B, 1), generator=gen).to(D64)
    weights = torch.rand(B, 1, generator=gen, dtype=D64) + 0.5
    return logits, values, z, labels, weights


# -- against the loops ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("G,r,s,step,clamp,kind,reduction", [
    (5, 10.0, 1.0, 1, True, "mse", "sum"),        # AgeDB, labels ≥ 50 in the last group
    (5, 12.5, 2.0, 2, True, "l1", "sum"),         # the clamp acts (s ≠ 1, step ≠ 1)
    (4, 7.0, 0.5, 1, False, "mse", "mean"),       # the STS-B variant: no clamp
    (1, 100.0, 1.0, 1, True, "l1", "sum"),        # one group
])
def test_every_part_matches_the_loop_values_and_gradients(G, r, s, step, clamp, kind, reduction):
    logits, values, z, labels, weights = case(G=G, seed=G)
    prior = 0.7 * torch.log(torch.softmax(torch.randn(G, generator=torch.Generator().manual_seed(1), dtype=D64), 0))
    loss = GroupDIRLoss(G, r, sigma=0.5, contrast_weight=0.8, temperature=0.3, scale=s, step=step, clamp=clamp,
                        reg_loss=kind, reduction=reduction, la_prior=prior)
    loss.la_prior = prior           # float64 as the loop
    leaves = [t.clone().requires_grad_(True) for t in (logits, values, z)]
    got = loss(leaves[0], leaves[1], labels, leaves[2], labels, weights=weights)
    B = logits.shape[0]
    per = 1 if reduction == "sum" else 1 / B
    want = {"group_reg": lambda lg, v, f: loop_reg(v, labels[:, 0], r, weights[:, 0], 0.5, kind),
            "group_soft": lambda lg, v, f: per * loop_soft(lg, labels[:, 0], r, s, step, clamp),
            "group_ce": lambda lg, v, f: per * loop_ce(lg, labels[:, 0], r, prior),
            "group_grc": lambda lg, v, f: 0.8 * loop_grc(f, labels[:, 0], r, G, 0.3)}
    assert set(got) == set(want)
    for name, fn in want.items():
        mine = torch.autograd.grad(got[name], leaves, allow_unused=True, retain_graph=True)
        loop_leaves = [t.clone().requires_grad_(True) for t in (logits, values, z)]
        value = fn(*loop_leaves)
        assert got[name].dtype == D64
        assert got[name].item() == pytest.approx(float(value), rel=1e-10, abs=1e-12), name
        theirs = torch.autograd.grad(value, loop_leaves, allow_unused=True) if value.requires_grad else [None] * 3
        for a, b in zip(mine, theirs):
            a = torch.zeros(1, dtype=D64) if a is None else a
            b = torch.zeros(1, dtype=D64) if b is None else b
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-11), name


def test_checked_functions_equal_the_module_and_pass_gradcheck():
    logits, values, z, labels, weights = case(B=5, G=4, seed=3)
    loss = GroupDIRLoss(4, 12.0, sigma=1.0, temperature=0.5, reg_loss="l1")
    parts = loss(logits, values, labels, z, labels, weights=weights)
    assert soft_label_loss(logits, labels, 12.0).item() == pytest.approx(parts["group_soft"].item(), rel=1e-12)
    assert group_contrastive_loss(z, labels, 12.0, 4, 0.5).item() == pytest.approx(parts["group_grc"].item(),
                                                                                    rel=1e-12)
    assert group_regression_loss(values, labels, 12.0, weights=weights, reg_loss="l1").item() == \
        pytest.approx(parts["group_reg"].item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: soft_label_loss(x, labels, 12.0, 2.0, 2), logits.clone()
                                    .requires_grad_(True))
    assert torch.autograd.gradcheck(lambda x: group_contrastive_loss(x, labels, 12.0, 4, 0.5), z.clone()
                                    .requires_grad_(True))


def test_groups_follow_floor_and_the_last_group_takes_the_rest():
    y = torch.tensor([0.0, 9.99, 10.0, 19.0, 99.0, 100.0, 150.0])
    assert group_index(y, 10.0, 10).tolist() == [0, 0, 1, 1, 9, 9, 9]
    # r = 100/15: 20/r = 3 exactly in float64; 6.9 m of depth with r = 1.
    assert group_index(torch.tensor([20.0, 13.0]), 100 / 15, 15).tolist() == [3, 1]
    assert group_index(torch.tensor([6.9, 0.0]), 1.0, 10).tolist() == [6, 0]


# -- the spec's invariants -----------------------------------------------------------------------------------
def test_one_group_has_q_one_and_no_soft_loss():
    logits, values, z, labels, _ = case(G=1, seed=4)
    assert torch.equal(soft_labels(group_index(labels[:, 0], 100.0, 1), 1), torch.ones(7, 1))
    parts = GroupDIRLoss(1, 100.0)(logits, values, labels, z, labels)
    assert parts["group_soft"].item() == 0.0
    assert parts["group_grc"].item() > 0                    # label-free, but not zero


@pytest.mark.parametrize("s,step,clamp", [(1.0, 1, True), (2.0, 1, True), (0.5, 3, False)])
def test_rows_of_q_sum_to_one_and_fall_by_e_per_group(s, step, clamp):
    G = 9
    q = soft_labels(torch.arange(G), G, s, step, clamp).double()
    assert torch.allclose(q.sum(1), torch.ones(G, dtype=D64), atol=1e-6)
    if (s, step) == (1.0, 1):
        for g in range(G):
            for j in range(g + 1, G - 1):            # the far side above g
                assert (q[g, j] / q[g, j + 1]).item() == pytest.approx(math.e, rel=1e-5)
            for j in range(1, g):                    # and below
                assert (q[g, j] / q[g, j - 1]).item() == pytest.approx(math.e, rel=1e-5)


def test_contrast_is_invariant_to_feature_scale_and_group_shift():
    _, _, z, labels, _ = case(B=8, G=20, seed=5, top=100.0)
    base = group_contrastive_loss(z, labels, 10.0, 20, 0.07)
    assert group_contrastive_loss(3.7 * z, labels, 10.0, 20, 0.07).item() == pytest.approx(base.item(), rel=1e-12)
    assert group_contrastive_loss(z, labels + 50.0, 10.0, 20, 0.07).item() == pytest.approx(base.item(), rel=1e-12)


def test_test_readout_equals_the_training_gather_at_the_true_group():
    logits, values, _, labels, _ = case(G=6, seed=6)
    group = group_index(labels[:, 0], 10.0, 6)
    onehot = 5 * torch.nn.functional.one_hot(group, 6).to(D64)
    assert torch.equal(group_predict(onehot + 0.1 * logits, values)[:, 0], values.gather(1, group[:, None])[:, 0])


# -- the head -------------------------------------------------------------------------------------------------
def test_head_on_vectors_and_maps_reads_the_most_likely_group():
    torch.manual_seed(0)
    head = GroupDIRHead(6, groups=4)
    out = head(torch.randn(5, 6))
    assert out["group_logits"].shape == out["group_values"].shape == (5, 4) and out["pred"].shape == (5, 1)
    pick = out["group_logits"].argmax(1)
    assert torch.equal(out["pred"][:, 0], out["group_values"][torch.arange(5), pick])
    conv = GroupDIRHead(3, groups=4, kernel_size=5)
    maps = conv(torch.randn(2, 3, 7, 9))
    assert maps["group_logits"].shape == (2, 4, 7, 9) and maps["pred"].shape == (2, 1, 7, 9)
    pixel = maps["group_logits"][1, :, 3, 4].argmax()
    assert maps["pred"][1, 0, 3, 4] == maps["group_values"][1, pixel, 3, 4]


@pytest.mark.parametrize("kernel_size", [None, 3])
def test_start_at_labels_sets_every_regressor_and_keeps_the_logits(kernel_size):
    torch.manual_seed(1)
    head = GroupDIRHead(4, groups=3, kernel_size=kernel_size)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    head.start_at_labels(37.5, 12.0)
    assert torch.equal(head.layer.weight[:3], before["layer.weight"][:3])
    assert torch.equal(head.layer.bias[:3], before["layer.bias"][:3])
    assert (head.layer.bias[3:] == 37.5).all() and (head.layer.weight[3:] == 0).all()
    x = torch.randn(2, 4) if kernel_size is None else torch.randn(2, 4, 5, 5)
    assert (head(x)["pred"] == 37.5).all()


# -- the term, the view, the method --------------------------------------------------------------------------
class _Dense(LabelView):
    dense = True

    def per_sample(self, features, depth):
        return features.flatten(1), depth.mean(dim=(1, 2, 3))[:, None]


def test_dense_term_is_per_pixel_with_one_pooled_feature_per_image():
    torch.manual_seed(2)
    B, G, C, H, W = 3, 4, 5, 2, 3
    logits, values = torch.randn(B, G, H, W), torch.randn(B, G, H, W)
    depth, weights, encoding = 10 * torch.rand(B, 1, H, W), torch.rand(B, 1, H, W), torch.randn(B, C, H, W)
    objective = objective_from_flags(ObjectiveData(view=_Dense()), group_dir=True, groups=G, group_range=10.0,
                                     reg_loss="mse", group_sigma=0.5, group_temp=0.3)
    step_out = {"group_logits": logits, "group_values": values, "encoding": encoding, "pred": values[:, :1]}
    got = objective.main(Step(step_out, depth, weights, 0, _Dense()))
    rows = lambda x: x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double()   # noqa: E731
    labels = rows(depth)[:, 0]
    assert got["group_reg"].item() == pytest.approx(
        loop_reg(rows(values), labels, 2.5, rows(weights)[:, 0], 0.5, "mse").item(), rel=1e-5)
    # 'sum' over the batch: B images, each its pixel mean.
    assert got["group_soft"].item() == pytest.approx(B * loop_soft(rows(logits), labels, 2.5).item() / (B * H * W),
                                                     rel=1e-5)
    pooled = encoding.mean(dim=(2, 3)).double()
    assert got["group_grc"].item() == pytest.approx(
        loop_grc(pooled, depth.mean(dim=(1, 2, 3)).double(), 2.5, G, 0.3).item(), rel=1e-5)


def test_score_view_regresses_score_over_five_on_groups_of_raw_scores():
    stsb = folder_module("sts-b-dir", "loss")
    args = folder_module("sts-b-dir", "train").parse(["--group_dir", "--group_contrast_weight", "0"])
    assert (args.groups, args.group_temp, args.soft_clamp, args.reg_loss) == (5, 2.0, 0, "mse")
    objective = stsb.build_objective(args)
    logits, values, _, _, _ = case(B=6, G=5, seed=7)
    scores = torch.tensor([[0.0], [0.9], [1.0], [2.5], [4.99], [5.0]])
    got = objective.main(Step({"group_logits": logits.float(), "group_values": values.float()}, scores, None, 0,
                              stsb.ScoreView()))
    assert set(got) == {"group_reg", "group_soft"}
    want = loop_reg(values, scores[:, 0].double(), 1.0, torch.ones(6), 1.0, "mse", scores[:, 0].double() / 5)
    assert got["group_reg"].item() == pytest.approx(want.item(), rel=1e-5)


def test_benchmark_defaults_are_the_authors():
    agedb = cli.parse(cli.build_age_parser("t", **folder_module("agedb-dir", "train").AGEDB_DEFAULTS),
                      ["--group_dir"])
    imdb = cli.parse(cli.build_age_parser("t"), ["--group_dir"])
    nyud2 = cli.parse(folder_module("nyud2-dir", "train").build_parser(), ["--group_dir"],
                      check=folder_module("nyud2-dir", "train").check)
    for args, sigma, reg, width in ((agedb, 0.5, "mse", 10.0), (imdb, 1.0, "l1", 10.0), (nyud2, 1.0, "mse", 1.0)):
        assert (args.groups, args.group_sigma, args.reg_loss, args.group_temp) == (10, sigma, reg, 0.07)
        assert methods.METHODS[[m.name for m in methods.METHODS].index("group_dir")].width(args) == width
    assert cli.method_tags(agedb)[-2] == "groupdir_g10_s0.5_c1_t0.07"


@pytest.mark.parametrize("flags,message", [
    (["--uvote"], "--group_dir brings its own head and replaces the regression loss, as --uvote does"),
    (["--vir"], "as --vir does: pass only one of them."),
    (["--bmse"], "as --bmse does: pass only one of them."),
    (["--rnc_stage", "encoder"], "--rnc_stage trains RnC's two stages with an L1 head: drop it"),
    (["--groups", "0"], "--groups must be ≥ 1, got 0."),
    (["--group_temp", "0"], "--group_temp must be > 0, got 0.0."),
])
def test_combinations_that_cannot_work_are_one_sentence(flags, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), ["--group_dir", *flags])
    assert message in capsys.readouterr().err


def test_stacks_with_lds_ranksim_conr_and_fds():
    args = cli.parse(cli.build_age_parser("t"), ["--group_dir", "--reweight", "sqrt_inv", "--lds", "--fds",
                                                 "--conr", "--regularization_weight", "1", "--ce", "--la_tau", "0"])
    objective = objective_from_flags(ObjectiveData(label_bins=AGE_BINS, label_counts=np.ones(121)),
                                     **{k: v for k, v in vars(args).items() if k in methods.default_flags()})
    assert objective.main_name == "group_dir" and objective.term_names == ["ranksim", "conr"]
    assert torch.equal(objective.main.loss.la_prior, torch.zeros(10))          # τ_la = 0: plain CE


def test_group_frequencies_count_each_bin_in_its_group():
    counts = np.zeros(121)
    counts[[3, 15, 17, 99, 100, 120]] = [2, 1, 1, 4, 5, 7]
    pi = group_frequencies(counts, AGE_BINS, 10.0, 10)
    want = np.array([2, 2, 1, 1, 1, 1, 1, 1, 1, 16], float)      # empty groups count 1
    assert np.allclose(pi, want / want.sum())


def test_the_term_reads_nothing_back_to_the_host(monkeypatch):
    """Forward and backward of the term with every host read made to fail (on CUDA each would synchronise)."""
    objective = objective_from_flags(ObjectiveData(label_bins=AGE_BINS, label_counts=np.ones(121)), group_dir=True,
                                     ce=True)
    logits, values, z = (torch.randn(6, 10, requires_grad=True), (40 * torch.randn(6, 10)).requires_grad_(),
                         torch.randn(6, 8, requires_grad=True))
    step = Step({"group_logits": logits, "group_values": values, "encoding": z}, 90 * torch.rand(6, 1),
                torch.rand(6, 1), 0, LabelView())

    def host_read(*_, **__):
        raise AssertionError("a host read inside the term")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    monkeypatch.setattr(torch, "nonzero", host_read)
    parts = objective.main(step)
    sum(parts.values()).backward()
    monkeypatch.undo()
    assert set(parts) == {"group_reg", "group_soft", "group_ce", "group_grc"}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in (logits, values, z))
