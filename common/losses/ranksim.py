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


def rank_normalised(scores: torch.Tensor, ties: str = "stable") -> torch.Tensor:
    """Row-wise descending ranks, ``(rank + 1) / n`` in float32 (largest value → 1/n).

    scores: (..., n). ``ties='stable'``: the higher index gets the smaller rank (a stable ascending sort,
    flipped), so ``[0.3, 0.9, −0.1, 0.9, 0.5]`` ranks ``[3, 1, 4, 0, 2]`` (0-based), identically on every
    device (the STS-B reference's NumPy rule). ``ties='reference'``: the age references' rule, PyTorch's
    default (unstable) ``argsort`` flipped, so ties fall as that sort places them on this device.
    """
    n = scores.shape[-1]
    order = torch.argsort(scores, dim=-1, stable=ties == "stable").flip(-1)
    positions = torch.arange(1, n + 1, device=scores.device, dtype=torch.float32).expand(order.shape)
    return torch.empty(order.shape, device=scores.device, dtype=torch.float32).scatter_(-1, order, positions) / n


class _TrueRanker(torch.autograd.Function):
    """Forward: :func:`rank_normalised`. Backward: ``−(rank(s) − rank(s + λ g)) / (λ + 1e-8)``."""

    @staticmethod
    def forward(ctx, scores, interpolation_lambda, ties="stable"):
        ranks = rank_normalised(scores, ties)
        ctx.save_for_backward(scores, ranks)
        ctx.interpolation_lambda, ctx.ties = interpolation_lambda, ties
        return ranks

    @staticmethod
    def backward(ctx, grad_output):
        scores, ranks = ctx.saved_tensors
        lam = ctx.interpolation_lambda
        perturbed = rank_normalised(scores + lam * grad_output.to(scores.dtype), ctx.ties)
        grad = -(ranks - perturbed) / (lam + 1e-8)
        return grad.to(scores.dtype), None, None


def true_ranker(scores: torch.Tensor, interpolation_lambda: float, ties: str = "stable") -> torch.Tensor:
    """Differentiable normalised ranks of ``scores`` (..., n); see :class:`_TrueRanker`."""
    return _TrueRanker.apply(scores, interpolation_lambda, ties)


def _one_per_label(labels: torch.Tensor, generator) -> torch.Tensor | None:
    """Indices keeping one random sample per unique label (ascending label order); None if all unique."""
    unique, inverse = torch.unique(labels, dim=0, return_inverse=True)
    if unique.shape[0] == labels.shape[0]:
        return None
    keys = torch.rand(labels.shape[0], generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else "cpu")
    # Sort by (label group, random key): the first entry of each group is a uniform draw from the group.
    order = torch.argsort(inverse.cpu().double() + keys.cpu(), stable=True)
    counts = torch.bincount(inverse.cpu(), minlength=unique.shape[0])
    first = torch.cumsum(counts, 0) - counts
    return order[first].to(labels.device)


def ranksim_loss(features, targets, interpolation_lambda=1.0, generator=None, ties="stable") -> torch.Tensor:
    """RankSim (docs/methods.md §6.2).

    Args:
        features: (B, D) encodings (the main forward's, FDS-smoothed when FDS is on).
        targets: (B,), (B, 1) or (B, K) labels; label similarity is ``−‖y_i − y_j‖``.
        interpolation_lambda: ``λ`` of the blackbox rank gradient.
        generator: optional ``torch.Generator`` driving the choice of one sample per duplicated label.
        ties: the rank tie rule of :func:`rank_normalised` (``'stable'`` or ``'reference'``).

    Returns:
        0-d loss ``Σ_i mean_j (rank(S_i)_j − rank(−|y_i − y|)_j)²`` over the kept rows.
    """
    where = "ranksim_loss"
    features = checks.feature_batch(where, "features", features, 2)
    checks.check_positive(where, "interpolation_lambda", interpolation_lambda, allow_zero=True)
    checks.check_choice(where, "ties", ties, TIES)
    n = features.shape[0]
    targets = checks.labels_2d(where, "targets", checks.as_tensor(where, "targets", targets), n, "features")
    checks.check_finite(where, "features", features)
    checks.check_finite(where, "targets", targets)
    keep = _one_per_label(targets.detach(), generator)
    if keep is not None:
        features, targets = features[keep], targets[keep]
    with torch.autocast(features.device.type, enabled=False):
        z = F.normalize(features.to(checks.compute_dtype(features)), dim=1)
        similarity = z @ z.T
        with torch.no_grad():
            t = targets.detach().to(z.dtype)
            label_distance = (t - t.T).abs() if t.shape[1] == 1 else torch.cdist(t, t)
            label_ranks = rank_normalised(-label_distance, ties)
        feature_ranks = true_ranker(similarity, interpolation_lambda, ties)
        return ((feature_ranks - label_ranks) ** 2).mean(dim=1).sum()


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
