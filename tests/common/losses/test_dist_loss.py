"""Dist Loss (docs/methods.md §12.1): the KDE against scipy, the pseudo-label counts against a loop of the spec's four
steps (both residual rules), the loss against a loop of its formula (values and gradients, float64), the
invariants, the term on per-sample and per-pixel views without host reads, and the flags' checks."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde

from common import cli
from common.losses.dist_loss import (METHOD, DistLoss, DistTerm, dist_loss, dist_term, kde_density, label_grid,
                                     pseudo_label_counts, pseudo_labels, sample_pixels, training_labels)
from common.method import LabelView, Step
from common.objective import ObjectiveData
from test_softsort import soft_sort_loop

D64 = torch.float64
# AgeDB-DIR's published training split, age:count (docs/datasets.md §2).
AGEDB_TRAIN = dict(map(int, pair.split(":")) for pair in (
    "1:1 3:4 4:2 5:2 6:4 7:5 8:4 9:2 10:5 11:8 12:6 13:8 14:9 15:15 16:18 17:28 18:60 19:50 20:101 21:103 22:123 "
    "23:152 24:199 25:224 26:215 27:244 28:287 29:253 30:325 31:256 32:318 33:278 34:302 35:353 36:287 37:310 "
    "38:322 39:261 40:326 41:260 42:296 43:265 44:221 45:282 46:227 47:229 48:251 49:207 50:257 51:227 52:250 "
    "53:190 54:198 55:234 56:167 57:183 58:186 59:153 60:185 61:147 62:178 63:158 64:133 65:171 66:117 67:117 "
    "68:155 69:90 70:156 71:85 72:115 73:96 74:78 75:98 76:49 77:44 78:46 79:26 80:31 81:26 82:24 83:19 84:15 "
    "85:20 86:13 87:10 88:7 89:7 90:7 91:7 92:5 93:5 94:3 95:3 96:2 97:1 98:2 99:1 100:2 101:1").split())


# ------------------------------------------------------------------------------------------------ slow loops
def counts_loop(density, batch, residual):
    """The spec's steps 1–3 (methods-2025 §1.1) in plain Python: Python's round() is NumPy's half to even, and
    ``range(K)[a:b]`` selects the bins Python slicing selects."""
    size = len(density)
    c = [batch * d for d in density]
    cumulative, total = [], 0.0
    for value in c:
        total += value
        cumulative.append(total)
    tail, total = [0.0] * size, 0.0
    for k in reversed(range(size)):
        total += c[k]
        tail[k] = total
    f = next((k for k in range(size) if cumulative[k] >= 1), size - 1)
    b = next((k for k in reversed(range(size)) if tail[k] >= 1), 0)
    n = [0] * size
    for k in range(f + 1, b):
        n[k] = round(c[k])
    n[f] = round(cumulative[f])
    n[b] = round(tail[b])
    r, half = batch - sum(n), int(0.5 * size)
    mode = max(range(size), key=lambda k: (n[k], -k))
    sign = (r > 0) - (r < 0)
    if residual == "reference":
        if abs(r) <= half:
            for k in range(size)[mode - abs(r) // 2:mode - abs(r) // 2 + abs(r)]:
                n[k] += sign
        else:
            for k in range(size)[mode - half // 2:mode - half // 2 + half]:
                n[k] += (r // half) * sign
            n[mode] += r % half
        return n
    run = abs(r) if abs(r) <= half else half
    start = min(max(mode - run // 2, 0), size - run)
    step = sign if abs(r) <= half else sign * (abs(r) // half)
    for k in range(start, start + run):
        n[k] += step
    if abs(r) > half:
        n[mode] += sign * (abs(r) % half)
    if min(n) < 0 or sum(n) != batch:
        n = [max(v, 0) for v in n]
        while sum(n) < batch:
            k = max(range(size), key=lambda j: (c[j] - n[j], -j))
            n[k] += 1
        while sum(n) > batch:
            k = max((j for j in range(size) if n[j] > 0), key=lambda j: (n[j] - c[j], -j))
            n[k] -= 1
    return n


def point_loss(name, e):
    """(ℓ(e), ℓ'(e)) of the spec's losses (methods-2025 §1.1)."""
    a, sign = abs(e), (e > 0) - (e < 0)
    if name == "l1":
        return a, sign
    if name == "mse":
        return e * e, 2 * e
    if name == "huber":
        return (0.5 * e * e, e) if a < 1 else (a - 0.5, sign)
    sig = 1 / (1 + math.exp(-0.2 * a))
    return a * (2 * sig - 1), sign * ((2 * sig - 1) + a * 2 * sig * (1 - sig) * 0.2)      # focal_l1


def loss_loop(pred, target, pseudo, weights, lam, eps, name, positional):
    """(L, ∂L/∂ŷ) of L = mean_i[λ ℓ(s_i, q_i) w_i + ℓ(ŷ_i, y_i) w_i], s the soft sort (PAV loop), the weight of
    sorted position i the i-th sample's (``positional``) or that of the sample sorted there."""
    n = len(pred)
    s, jac = soft_sort_loop(pred, eps)
    order = sorted(range(n), key=lambda i: pred[i])
    total, grad = 0.0, [0.0] * n
    for i in range(n):
        w_sorted = weights[i] if positional else weights[order[i]]
        value, slope = point_loss(name, s[i] - pseudo[i])
        total += lam * value * w_sorted
        for j in range(n):
            grad[j] += lam * slope * w_sorted * jac[i][j] / n
        value, slope = point_loss(name, pred[i] - target[i])
        total += value * weights[i]
        grad[i] += slope * weights[i] / n
    return total / n, grad


# ------------------------------------------------------------------------------------------------ pseudo-labels
def test_kde_is_scipys_gaussian_kde_of_the_labels_in_range():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.round(rng.normal(40, 12, 300)), [-3.0, 130.0, 150.0]])   # three outside [0, 120]
    grid = label_grid(0, 120, 1)
    values, counts = np.unique(labels, return_counts=True)
    inside = labels[(labels >= 0) & (labels <= 120)]
    want = gaussian_kde(inside, bw_method=0.5)(grid)
    assert np.allclose(kde_density(values, counts, grid, 0.5, 0, 120), want / want.sum(), rtol=1e-12, atol=0)
    scores = rng.uniform(0, 5, 200)
    grid = label_grid(0, 5, 0.1)
    want = gaussian_kde(scores, bw_method=0.3)(grid)
    assert grid.size == 51 and grid[3] == 0.1 + 0.1 + 0.1          # repeated addition, as the reference
    assert np.allclose(kde_density(scores, np.ones(200), grid, 0.3, 0, 5), want / want.sum(), rtol=1e-12, atol=0)


def test_agedb_split_at_the_published_batch_sizes():
    """The spec's check (methods-2025 §1.2): at B = 512 the pseudo-labels run from 4 to 97; the residual rules
    agree at B = 32, 64, 256, 512 (none of the reference's slips fires, §1.5)."""
    grid = label_grid(0, 120, 1)
    density = kde_density(list(AGEDB_TRAIN), list(AGEDB_TRAIN.values()), grid, 0.5, 0, 120)
    for batch in (32, 64, 256, 512):
        fixed = pseudo_labels(density, grid, batch)
        assert np.array_equal(fixed, pseudo_labels(density, grid, batch, "reference"))
        assert fixed.size == batch and (np.diff(fixed) >= 0).all()
        assert pseudo_label_counts(density, batch).tolist() == counts_loop(density.tolist(), batch, "fixed")
    labels = pseudo_labels(density, grid, 512)
    assert labels[0] == 4 and labels[-1] == 97


@pytest.mark.parametrize("seed", range(40))
def test_counts_match_the_loop_and_the_fix_keeps_the_batch(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 30))
    density = rng.dirichlet(np.full(size, [0.1, 0.5, 3.0][seed % 3]))
    if seed % 4 == 0:
        density = np.sort(density)[::-1].copy()          # the mode at bin 0: the run would start below it
    batch = int(rng.integers(1, 200))
    for residual in ("fixed", "reference"):
        counts = pseudo_label_counts(density, batch, residual)
        assert counts.tolist() == counts_loop(density.tolist(), batch, residual), residual
    counts = pseudo_label_counts(density, batch)
    assert (counts >= 0).all() and counts.sum() == batch


def test_the_reference_residual_rule_wraps_around_where_the_fix_does_not():
    # c = (3.5, 1.5, 1.5, 1.5) at B = 8: n = (4, 2, 2, 2) rounds half to even up to 10, r = −2 and the mode is bin 0:
    # the reference's run starts at bin −1, Python's slice [−1:1] is empty, and the 10 labels are cut to 8 (no 3
    # left); the fix moves the run inside the grid, (3, 1, 2, 2).
    density = np.array([3.5, 1.5, 1.5, 1.5]) / 8
    assert pseudo_label_counts(density, 8, "reference").tolist() == [4, 2, 2, 2]
    assert pseudo_label_counts(density, 8).tolist() == [3, 1, 2, 2]
    assert pseudo_labels(density, np.arange(4.0), 8, "reference").tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    # c = (3, .5, .5, .5, 2.5, 0) at B = 7: five counted, r = +2 from bin −1: nothing added, two zeros padded.
    density = np.array([3, 0.5, 0.5, 0.5, 2.5, 0]) / 7
    assert pseudo_labels(density, np.arange(6.0) + 10, 7, "reference").tolist() == [10, 10, 10, 14, 14, 0, 0]
    assert pseudo_labels(density, np.arange(6.0) + 10, 7).tolist() == [10, 10, 10, 10, 11, 14, 14]


# ------------------------------------------------------------------------------------------------ the loss
@pytest.mark.parametrize("name", ["l1", "mse", "focal_l1", "huber"])
@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize("eps", [0.1, 2.0])
def test_loss_matches_the_loop_values_and_gradients(name, positional, eps):
    g = torch.Generator().manual_seed(hash((name, positional, eps)) % 1000)
    n = 9
    pred = (torch.rand(n, 1, generator=g, dtype=D64) * 30 + 20).requires_grad_(True)
    target = torch.randint(20, 50, (n, 1), generator=g).to(D64)
    pseudo = torch.sort(torch.randint(18, 55, (n,), generator=g).to(D64)).values
    weights = torch.rand(n, 1, generator=g, dtype=D64) * 2 + 0.1
    got = dist_loss(pred, target, pseudo, weights, 0.7, eps, name, positional)
    got.backward()
    want, grad = loss_loop(pred.detach().flatten().tolist(), target.flatten().tolist(), pseudo.tolist(),
                           weights.flatten().tolist(), 0.7, eps, name, positional)
    assert math.isclose(got.item(), want, rel_tol=1e-12, abs_tol=1e-12)
    assert torch.allclose(pred.grad.flatten(), torch.tensor(grad, dtype=D64), rtol=1e-10, atol=1e-12)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(5)
    pred = (torch.rand(6, 1, generator=g, dtype=D64) * 10).requires_grad_(True)
    pseudo = torch.arange(6, dtype=D64) * 2
    weights = torch.rand(6, 1, generator=g, dtype=D64) + 0.5
    assert torch.autograd.gradcheck(lambda p: dist_term(p, pseudo, weights, 0.3, "huber"), (pred,))
    assert torch.autograd.gradcheck(lambda p: dist_term(p, pseudo, weights, 0.3, "focal_l1", True), (pred,))


def test_invariants():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(12, 1, generator=g, dtype=D64) * 40 + 10
    target = torch.rand(12, 1, generator=g, dtype=D64) * 40 + 10
    weights = torch.rand(12, 1, generator=g, dtype=D64) + 0.2
    pseudo = torch.sort(torch.rand(12, generator=g, dtype=D64) * 40 + 10).values
    # 1. λ = 0: the plain weighted loss, value and gradient.
    p1, p2 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    dist_loss(p1, target, pseudo, weights, 0.0, 0.1, "l1").backward()
    (weights * (p2 - target).abs()).mean().backward()
    assert torch.allclose(p1.grad, p2.grad)
    # 3. Unweighted: invariant to permuting the batch; 0 at a permutation of q with a near-hard sort.
    perm = torch.randperm(12, generator=g)
    assert torch.allclose(dist_term(pred, pseudo), dist_term(pred[perm], pseudo), rtol=0, atol=1e-12)
    assert dist_term(pseudo[perm], pseudo, None, 1e-3).abs().item() < 1e-9
    # Weighted: the weights follow their samples, so permuting samples and weights together changes nothing;
    # the reference's positional weights do change.
    same = dist_term(pred[perm], pseudo, weights[perm], 0.1, "mse")
    assert torch.allclose(dist_term(pred, pseudo, weights, 0.1, "mse"), same, rtol=1e-12, atol=0)
    assert not torch.allclose(dist_term(pred, pseudo, weights, 0.1, "mse", True),
                              dist_term(pred[perm], pseudo, weights[perm], 0.1, "mse", True))


def test_module_caches_pseudo_labels_per_batch_size_and_scales():
    values, counts = np.unique(np.round(np.random.default_rng(1).uniform(0, 5, 300), 1), return_counts=True)
    loss = DistLoss(values, counts, 0, 5, 0.1, 0.5, 0.1, "mse", scale=5.0)
    first = loss.pseudo(16, "cpu")
    assert loss.pseudo(16, "cpu") is first and loss.pseudo(17, "cpu").shape == (17,)
    grid = label_grid(0, 5, 0.1)
    assert torch.equal(first, torch.tensor(pseudo_labels(kde_density(values, counts, grid, 0.5, 0, 5), grid, 16) / 5))
    pred = torch.rand(16, 1, dtype=D64) * 5
    assert torch.allclose(loss(pred), dist_term(pred / 5, first, None, 0.1, "mse"), rtol=1e-12, atol=0)
    assert loss(pred.float()).dtype == torch.float32


class _Dense(LabelView):
    dense = True


def test_terms_read_no_host_value_per_sample_and_per_pixel(monkeypatch):
    g = torch.Generator().manual_seed(0)
    values, counts = np.arange(0.05, 10, 0.1), np.arange(1, 101)
    dense = DistTerm(2.0, DistLoss(values, counts, 0, 10, 0.1, 0.5, 0.1, "mse"), pixels=50)
    depth = torch.rand(2, 1, 6, 8, generator=g) * 9 + 0.5
    depth[0, 0, 0, :4] = 0.0                                              # unmeasured pixels: never drawn
    pred = (torch.rand(2, 1, 6, 8, generator=g) * 9).requires_grad_(True)
    weights = torch.rand(2, 1, 6, 8, generator=g) + 0.5
    step = Step({"pred": pred}, depth, weights, 0, _Dense())
    ages = DistTerm(0.5, DistLoss(list(AGEDB_TRAIN), list(AGEDB_TRAIN.values())))
    age_pred = (torch.rand(8, 1, generator=g) * 60).requires_grad_(True)
    age_step = Step({"pred": age_pred}, age_pred.detach().round(), torch.ones(8, 1), 0, LabelView())

    def refuse(*_, **__):
        raise AssertionError("host read inside a Dist Loss term")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    torch.manual_seed(3)
    got = dense(step)["dist"]
    age_value = ages(age_step)["dist"]
    got.backward()
    monkeypatch.undo()
    torch.manual_seed(3)
    keep = sample_pixels(depth.reshape(-1), 50)
    assert (depth.reshape(-1)[keep] > 0).all() and keep.unique().numel() == 50
    want = 2.0 * dense.loss(pred.reshape(-1)[keep], weights.reshape(-1)[keep])
    assert torch.allclose(got, want) and pred.grad.abs().sum() > 0
    assert torch.allclose(age_value, 0.5 * dist_term(age_pred, ages.loss.pseudo(8, "cpu"), torch.ones(8), 0.1))


def test_training_labels_prefer_the_labels_then_the_histogram():
    from common.bins import DEPTH_BINS
    values, counts = training_labels(ObjectiveData(train_labels=np.array([3.0, 1.0, 3.0])))
    assert values.tolist() == [1.0, 3.0] and counts.tolist() == [1, 2]
    values, counts = training_labels(ObjectiveData(label_bins=DEPTH_BINS, label_counts=np.ones(100)))
    assert np.allclose(values, np.arange(100) / 10 + 0.05)
    with pytest.raises(ValueError, match="needs the training labels"):
        training_labels(ObjectiveData())


# ------------------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("flags, sentence", [
    (["--dist_loss", "--uvote"], "drop one of them"),
    (["--dist_loss", "--vir"], "drop one of them"),
    (["--dist_loss", "--rnc_stage", "encoder"], "add --dist_loss to the linear stage"),
    (["--dist_loss", "--max_label", "0"], "by a whole number of steps"),
    (["--dist_loss", "--dist_step", "7"], "by a whole number of steps"),
    (["--dist_loss", "--regularization_strength", "0"], "--regularization_strength must be > 0"),
    (["--dist_loss", "--distribution_loss_term_weight", "-1"], "--distribution_loss_term_weight must be ≥ 0"),
    (["--dist_loss", "--bw_method", "0"], "--bw_method must be > 0"),
])
def test_combinations_that_cannot_work_are_one_sentence(flags, sentence, capsys):
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), flags)
    assert sentence in capsys.readouterr().err


def test_stacking_defaults_and_the_dense_flag(capsys):
    from folders import folder_module
    args = cli.parse(cli.build_age_parser("t"), ["--dist_loss", "--reweight", "inverse", "--lds", "--fds", "--conr",
                                                 "--regularization_weight", "1", "--srl"])
    assert (args.min_label, args.max_label, args.dist_step, args.bw_method, args.regularization_strength,
            args.distribution_loss_term_weight) == (0, 120, 1, 0.5, 0.1, 1.0)
    assert "dist_1_e0.1" in cli.method_tags(args) and METHOD.enabled(args)
    assert METHOD.enabled(cli.parse(cli.build_age_parser("t"), ["--dist_loss", "--bmse", "--rnc"]))
    args = cli.parse(cli.build_age_parser("t"), ["--dist_loss", "--distribution_loss_term_weight", "0"])
    assert METHOD.term(args, ObjectiveData()) is None and "no soft sort" in capsys.readouterr().err
    depth = folder_module("nyud2-dir", "train").build_parser()
    args = cli.parse(depth, ["--dist_loss"])
    assert (args.max_label, args.dist_step, args.dist_pixels) == (10, 0.1, 1024)
    with pytest.raises(SystemExit):
        cli.parse(folder_module("nyud2-dir", "train").build_parser(), ["--dist_loss", "--dist_pixels", "0"])
    assert "--dist_pixels must be > 0" in capsys.readouterr().err
    args = cli.parse(folder_module("sts-b-dir", "train").build_parser(), ["--dist_loss"])
    assert (args.min_label, args.max_label, args.dist_step) == (0, 5, 0.1) and not hasattr(args, "dist_pixels")
