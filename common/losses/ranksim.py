"""RankSim: ranking similarity regularizer (Gong et al., ICML 2022).

For each anchor row of the batch's cosine-similarity matrix, the ranks of the feature similarities are pulled
towards the ranks of the label similarities ``−|y_i − y_j|``. Ranks are made differentiable with blackbox
differentiation (Vlastelica et al., ICLR 2020): the backward pass ranks a perturbed input ``s + λ·g``.
The per-row mean squared rank differences are **summed** over rows, as the reference does.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.method import Method, Step, Term, flag


TIES = ("stable", "reference")


def rank_normalised(scores: torch.Tensor, ties: str = "stable", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise descending ranks, ``(rank + 1) / n`` in float32 (largest value → 1/n).

    scores: (..., n). ``ties='stable'``: the higher index gets the smaller rank (a stable ascending sort,
    flipped), so ``[0.3, 0.9, −0.1, 0.9, 0.5]`` ranks ``[3, 1, 4, 0, 2]`` (0-based), identically on every
    device (the STS-B reference's NumPy rule). ``ties='reference'``: the age references' rule, PyTorch's
    default (unstable) ``argsort`` flipped, so ties fall as that sort places them on this device.

    valid: optional bool mask broadcastable to ``scores`` (e.g. (1, n), the columns to rank). The entries off
    the mask are ranked as −∞ (after every valid one, so the valid entries' ranks and their ties are those of
    the valid entries alone, in their order), ``n`` becomes the count of valid entries of the row, and the
    entries off the mask are 0. Fixed shapes: nothing is read on the host.
    """
    n = scores.shape[-1]
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    order = torch.argsort(scores, dim=-1, stable=ties == "stable").flip(-1)
    positions = torch.arange(1, n + 1, device=scores.device, dtype=torch.float32).expand(order.shape)
    ranks = torch.empty(order.shape, device=scores.device, dtype=torch.float32).scatter_(-1, order, positions)
    if valid is None:
        return ranks / n
    # The same float32 division as ``/ n`` above with the count in place of n: bit-for-bit the ranks of the subset.
    count = valid.expand(scores.shape).sum(dim=-1, keepdim=True).to(torch.float32)
    return torch.where(valid, ranks / count, 0.0)


class _TrueRanker(torch.autograd.Function):
    """Forward: :func:`rank_normalised`. Backward: ``−(rank(s) − rank(s + λ g)) / (λ + 1e-8)``.

    With a ``valid`` mask both ranks are 0 off the mask, so those entries get exactly zero gradient and the
    valid ones exactly the gradient of the ranker applied to the valid entries alone."""

    @staticmethod
    def forward(ctx, scores, interpolation_lambda, ties="stable", valid=None):
        ranks = rank_normalised(scores, ties, valid)
        ctx.save_for_backward(scores, ranks, valid)
        ctx.interpolation_lambda, ctx.ties = interpolation_lambda, ties
        return ranks

    @staticmethod
    def backward(ctx, grad_output):
        scores, ranks, valid = ctx.saved_tensors
        lam = ctx.interpolation_lambda
        perturbed = rank_normalised(scores + lam * grad_output.to(scores.dtype), ctx.ties, valid)
        grad = -(ranks - perturbed) / (lam + 1e-8)
        return grad.to(scores.dtype), None, None, None


def true_ranker(scores: torch.Tensor, interpolation_lambda: float, ties: str = "stable",
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable normalised ranks of ``scores`` (..., n), optionally over the ``valid`` entries only (a bool
    mask broadcastable to ``scores``; 0 and zero gradient elsewhere); see :class:`_TrueRanker`."""
    return _TrueRanker.apply(scores, interpolation_lambda, ties, valid)


def _label_groups(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's index among the distinct rows of ``labels`` (B, K) in ascending lexicographic order (the
    ``inverse`` of ``torch.unique(labels, dim=0)``), (B,) int64, and the count of distinct rows as a 0-d tensor;
    fixed shapes (sorts and a cumulative sum, no ``unique``), so nothing is read on the host."""
    b, k = labels.shape
    # Lexicographic order: stable sorts from the last column to the first.
    perm = torch.arange(b, device=labels.device)
    for column in reversed(range(k)):
        perm = perm[torch.argsort(labels[perm, column], stable=True)]
    ordered = labels[perm]
    starts = torch.ones(b, dtype=torch.bool, device=labels.device)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(dim=1)
    group = torch.empty(b, dtype=torch.long, device=labels.device).scatter_(0, perm, starts.cumsum(0) - 1)
    return group, starts.sum()


def _one_per_label(labels: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random sample per distinct label, as a reordering of the whole batch and a mask (fixed shapes).

    labels: (B, K). Returns ``order`` (B,) int64, a permutation of the rows, and ``keep`` (B,) bool over the
    permuted rows. With a duplicated label, ``order`` sorts the rows by (label, random key) and ``keep`` marks
    the first of each label, so the kept rows are one uniform draw per label in ascending label order; with all
    labels distinct, ``order`` is the batch order and every row is kept. The keys are ``torch.rand(B)`` in
    float64 from ``generator`` (the CPU default generator when None), drawn on every call.
    """
    b = labels.shape[0]
    group, distinct = _label_groups(labels)
    keys = torch.rand(b, generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else "cpu")
    # A non-blocking copy from (pageable) host memory to the device does not wait for the device; a copy to the
    # host must block until the values are there.
    keys = keys.to(labels.device, non_blocking=labels.device.type != "cpu")
    # Sort by (label group, random key): the first entry of each group is a uniform draw from the group.
    order = torch.argsort(group.double() + keys, stable=True)
    sorted_group = group[order]
    first = torch.ones(b, dtype=torch.bool, device=labels.device)
    first[1:] = sorted_group[1:] != sorted_group[:-1]
    # All labels distinct: the batch order, as before (the stable tie rule ranks by position).
    all_distinct = distinct == b
    order = torch.where(all_distinct, torch.arange(b, device=labels.device), order)
    return order, first | all_distinct


def ranksim_loss(features, targets, interpolation_lambda=1.0, generator=None, ties="stable") -> torch.Tensor:
    """RankSim (docs/methods.md §6.2).

    Args:
        features: (B, D) encodings (the main forward's, FDS-smoothed when FDS is on).
        targets: (B,), (B, 1) or (B, K) labels; label similarity is ``−‖y_i − y_j‖``.
        interpolation_lambda: ``λ`` of the blackbox rank gradient.
        generator: optional ``torch.Generator`` driving the choice of one sample per duplicated label (the CPU
            default generator when None); it draws B float64 keys on every call.
        ties: the rank tie rule of :func:`rank_normalised` (``'stable'`` or ``'reference'``).

    Returns:
        0-d loss ``Σ_i mean_j (rank(S_i)_j − rank(−|y_i − y|)_j)²`` over the U kept rows (one per distinct
        label) and, for each, the U kept columns; the other rows get zero gradient.
    """
    where = "ranksim_loss"
    features = checks.feature_batch(where, "features", features, 2)
    checks.check_positive(where, "interpolation_lambda", interpolation_lambda, allow_zero=True)
    checks.check_choice(where, "ties", ties, TIES)
    n = features.shape[0]
    targets = checks.labels_2d(where, "targets", checks.as_tensor(where, "targets", targets), n, "features")
    checks.check_finite(where, "features", features)
    checks.check_finite(where, "targets", targets)
    # The kept subset (one row per label) is a mask over the permuted batch, not an index of data-dependent
    # length: the duplicates rank last at −∞ and leave the sums, so a GPU step never waits for the host.
    order, keep = _one_per_label(targets.detach(), generator)
    features, targets = features[order], targets[order]
    with torch.autocast(features.device.type, enabled=False):
        z = F.normalize(features.to(checks.compute_dtype(features)), dim=1)
        similarity = z @ z.T
        columns = keep.unsqueeze(0)
        with torch.no_grad():
            t = targets.detach().to(z.dtype)
            # The direct distance (not the matrix-product form torch.cdist takes above 25 rows): the same
            # numbers whatever the batch size, so a label's ties do not depend on how many duplicates it has.
            label_distance = (t - t.T).abs() if t.shape[1] == 1 else \
                torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist")
            label_ranks = rank_normalised(-label_distance, ties, columns)
        feature_ranks = true_ranker(similarity, interpolation_lambda, ties, columns)
        kept = keep.sum().to(feature_ranks.dtype)
        rows = ((feature_ranks - label_ranks) ** 2).sum(dim=1) / kept
        return torch.where(keep, rows, 0.0).sum()


class RankSim(nn.Module):
    """:func:`ranksim_loss` with ``λ`` (CLI ``--interpolation_lambda``) and the tie rule (``--ranksim_ties``);
    the weight γ is applied by the caller."""

    def __init__(self, interpolation_lambda=1.0, ties="stable"):
        super().__init__()
        checks.check_positive("RankSim", "interpolation_lambda", interpolation_lambda, allow_zero=True)
        checks.check_choice("RankSim", "ties", ties, TIES)
        self.interpolation_lambda, self.ties = interpolation_lambda, ties

    def forward(self, features, targets, generator=None):
        return ranksim_loss(features, targets, self.interpolation_lambda, generator, self.ties)

    def extra_repr(self):
        return f"interpolation_lambda={self.interpolation_lambda}, ties={self.ties}"


# -- wiring ---------------------------------------------------------------------------------------------------
class RankSimTerm(Term):
    """γ · RankSim on the encoding and the labels, one per sample as the view gives them (NYUD2: each image's
    flattened map and mean depth)."""

    def __init__(self, weight: float, loss: RankSim):
        super().__init__()
        self.weight, self.loss = weight, loss

    def forward(self, step: Step) -> dict:
        features, labels = step.view.per_sample(step.share(step.out["encoding"]), step.share(step.targets, False))
        return {"ranksim": self.weight * self.loss(features, labels)}


class RankSimMethod(Method):
    """RankSim (Gong et al., ICML 2022), on while its weight γ (``--regularization_weight``) is above 0."""

    name = "ranksim"
    switch = "--regularization_weight > 0"
    non_negative = ("regularization_weight", "interpolation_lambda")

    def add_args(self, parser, *, ties="stable") -> None:
        """``ties`` is the benchmark's default tie rule (the age benchmarks pass ``reference``)."""
        g = parser.add_argument_group("RankSim (Gong et al., ICML 2022)")
        g.add_argument("--regularization_weight", type=float, default=0.0, help="γ; 0 turns RankSim off")
        g.add_argument("--interpolation_lambda", type=float, default=1.0)
        g.add_argument("--ranksim_ties", default=ties, choices=["reference", "stable"],
                       help="rank ties: reference (PyTorch's default argsort on this device, the age references) or "
                            "stable (the same on every device, the STS-B reference)")

    def enabled(self, args) -> bool:
        return flag(args, "regularization_weight", 0.0) > 0

    def tag(self, args):
        return f"ranksim_{args.regularization_weight:g}_{args.interpolation_lambda:g}"

    def term(self, args, data):
        return RankSimTerm(args.regularization_weight,
                           RankSim(args.interpolation_lambda, flag(args, "ranksim_ties", "stable")))


METHOD = RankSimMethod()
