"""Dist Loss (Nie, Tang, Hong, ICLR 2025, "Dist Loss: Enhancing Regression in Few-Shot Region through
Distribution Distance Constraint"): the batch's predictions, soft-sorted, are pulled towards pseudo-labels that
follow the training label distribution.

* **Pseudo-labels** (once per batch size, NumPy on the host): a Gaussian KDE of the training labels in
  ``[lo, hi]`` (kernel σ = ``bw`` × the labels' standard deviation, scipy's ``gaussian_kde`` with a scalar
  ``bw_method``) on the grid ``x_k = lo + k·step`` gives ``d_k`` (sum 1); a batch of ``B`` gets integer counts
  ``n_k`` (first and last bins take the rounded cumulative tails, NumPy's half-to-even rounding, the residual
  spread around the mode) and the labels ``x_k`` repeated ``n_k`` times, ascending (docs/methods.md §12.1.2).
* **Loss** ``L = mean_i [λ·ℓ(s_i, q_i)·w_i + ℓ(ŷ_i, y_i)·w_i]`` with ``s`` the ascending L2 soft sort of ``ŷ``
  (:mod:`common.softsort`, strength ε), ``q`` the pseudo-labels and ``ℓ`` the run's ``--loss``. In a run the
  second term is the regression loss; :class:`DistTerm` adds the first. By default ``w`` follows its sample
  through the sort (``w_{π(i)}`` for the sample at sorted position ``i``); the reference multiplies the i-th
  sorted position by the i-th sample's weight (``positional_weights=True``, docs/reference-differences.md).

NYUD2 (dense maps): each step soft-sorts ``K`` pixels drawn uniformly without replacement among the batch's
valid pixels (depth > 0) with the global torch generator (seeded per epoch and saved with the checkpoint, so a
resume is exact) against ``K`` pseudo-labels from the training pixel histogram. STS-B: the pseudo-labels and the
predictions are divided by the view's ``label_scale`` (score / 5), as the regression loss sees them.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn as nn

from common import checks
from common.losses.regression import REGRESSION_LOSSES, elementwise_loss
from common.method import Method, Step, Term, flag
from common.softsort import soft_sort

RESIDUALS = ("fixed", "reference")


# -- pseudo-labels (host, once per batch size) ----------------------------------------------------------------
def label_grid(lo: float, hi: float, step: float) -> np.ndarray:
    """(K,) float64 grid ``lo, lo + step, …, hi`` by repeated addition, as the reference accumulates it
    (``K = (hi − lo)/step + 1``; ``hi − lo`` must be a multiple of ``step``)."""
    where = "label_grid"
    checks.check_positive(where, "step", step)
    if not hi > lo:
        raise ValueError(f"{where}: `hi` ({hi}) must be above `lo` ({lo}).")
    size = (hi - lo) / step
    if abs(size - round(size)) > 1e-6:
        raise ValueError(f"{where}: `hi − lo` ({hi - lo:g}) must be a multiple of `step` ({step:g}).")
    grid = np.empty(int(round(size)) + 1)
    value = float(lo)
    for k in range(grid.size):
        grid[k] = value
        value += step
    return grid


def kde_density(values, counts, grid, bw: float, lo: float, hi: float) -> np.ndarray:
    """Gaussian KDE of the labels ``values`` (each seen ``counts`` times) restricted to ``[lo, hi]``, on ``grid``,
    normalised to sum 1: scipy's ``gaussian_kde(labels, bw_method=bw)`` of the expanded labels, whose kernel
    variance is ``bw²`` times the labels' unbiased variance (ddof 1).

    values, counts: (U,) label values and their multiplicities (a histogram's bin values and counts, or the
    distinct labels); grid: (K,). Returns (K,) float64.
    """
    where = "kde_density"
    checks.check_positive(where, "bw", bw)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if values.shape != counts.shape:
        raise ValueError(f"{where}: `values` {values.shape} and `counts` {counts.shape} must have one count per value.")
    keep = (values >= lo) & (values <= hi) & (counts > 0)
    values, counts = values[keep], counts[keep]
    total = counts.sum()
    if total < 2:
        raise ValueError(f"{where}: Dist Loss's KDE needs at least two training labels in [{lo:g}, {hi:g}], got "
                         f"{total:g}; check --min_label and --max_label.")
    mean = (counts * values).sum() / total
    variance = (counts * (values - mean) ** 2).sum() / (total - 1)
    if not variance > 0:
        raise ValueError(f"{where}: every training label in [{lo:g}, {hi:g}] is {mean:g}: a KDE of one value has no "
                         "width (scipy's gaussian_kde refuses it too).")
    kernel_variance = bw ** 2 * variance
    grid = np.asarray(grid, dtype=np.float64)
    density = (counts[None, :] * np.exp(-0.5 * (grid[:, None] - values[None, :]) ** 2 / kernel_variance)).sum(1)
    if not density.sum() > 0:
        raise ValueError(f"{where}: the KDE is 0 on the whole grid [{grid[0]:g}, {grid[-1]:g}] (labels far from "
                         "it); check --min_label, --max_label and --bw_method.")
    return density / density.sum()


def pseudo_label_counts(density, batch_size: int, residual: str = "fixed") -> np.ndarray:
    """(K,) int64 number of pseudo-labels per grid point for a batch of ``batch_size`` (docs/methods.md §12.1.2).

    1. ``c = B·d``; ``f`` the first bin whose cumulative sum reaches 1, ``b`` the last whose tail sum does;
    2. ``n_f = round(cumsum_f)``, ``n_b = round(tail_b)``, ``n_k = round(c_k)`` between them (half to even);
    3. the residual ``r = B − Σn`` is spread around the mode ``m`` (first argmax of ``n``), ``R = int(K/2)``:
       ``sign(r)`` on the ``|r|`` bins from ``m − ⌊|r|/2⌋``, or for ``|r| > R`` its quotient on ``R`` bins from
       ``m − ⌊R/2⌋`` and the remainder on ``m``.

    ``residual='fixed'`` (default) keeps those runs inside the grid, splits ``|r|`` (not ``r``) into quotient and
    remainder, and, should a count still be negative or the total not ``B``, moves single labels to or from the
    bins furthest from their share ``c_k``: the counts are ≥ 0 and sum to ``B``. ``'reference'`` does what the
    reference code does: Python slicing (a run starting below bin 0 wraps to the end or vanishes, one past the
    end is cut), floor division and modulo of a negative ``r`` (which moves counts the wrong way).
    """
    where = "pseudo_label_counts"
    checks.check_choice(where, "residual", residual, RESIDUALS)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"{where}: `batch_size` must be a positive integer, got {batch_size}.")
    d = np.asarray(density, dtype=np.float64)
    size = d.size
    c = batch_size * d
    cumulative = np.cumsum(c)
    tail = np.cumsum(c[::-1])[::-1]
    # float rounding may leave the total a hair below 1 for B = 1: then the last (first) bin.
    f = int(np.argmax(cumulative >= 1)) if (cumulative >= 1).any() else size - 1
    b = int(size - 1 - np.argmax(tail[::-1] >= 1)) if (tail >= 1).any() else 0
    n = np.zeros(size, dtype=np.int64)
    n[f + 1:b] = np.round(c[f + 1:b]).astype(np.int64)
    n[f] = int(np.round(cumulative[f]))
    n[b] = int(np.round(tail[b]))
    r = int(batch_size - n.sum())
    half = int(0.5 * size)
    mode = int(np.argmax(n))
    sign = int(np.sign(r))
    if residual == "reference":
        if abs(r) <= half:
            start = mode - abs(r) // 2
            n[start:start + abs(r)] += sign
        else:
            start = mode - half // 2
            n[start:start + half] += (r // half) * sign
            n[mode] += r % half
        return n
    if abs(r) <= half:
        start = min(max(mode - abs(r) // 2, 0), size - abs(r))
        n[start:start + abs(r)] += sign
    else:
        quotient, remainder = divmod(abs(r), half)
        start = min(max(mode - half // 2, 0), size - half)
        n[start:start + half] += sign * quotient
        n[mode] += sign * remainder
    if (n < 0).any() or n.sum() != batch_size:
        n = np.maximum(n, 0)
        while n.sum() < batch_size:
            n[int(np.argmax(c - n))] += 1
        while n.sum() > batch_size:
            n[int(np.argmax(np.where(n > 0, n - c, -np.inf)))] -= 1
    return n


def pseudo_labels(density, grid, batch_size: int, residual: str = "fixed") -> np.ndarray:
    """(B,) float64 ascending pseudo-labels: ``grid[k]`` repeated ``n_k`` times (:func:`pseudo_label_counts`).
    With ``residual='reference'`` counts that do not sum to ``B`` zero-pad or truncate the vector (a negative
    count repeats nothing), as the reference does."""
    counts = pseudo_label_counts(density, batch_size, residual)
    labels = np.repeat(np.asarray(grid, dtype=np.float64), np.maximum(counts, 0))[:batch_size]
    return np.concatenate((labels, np.zeros(batch_size - labels.size)))


# -- the loss -------------------------------------------------------------------------------------------------
def dist_term(pred, pseudo, weights=None, regularization_strength: float = 0.1, loss: str = "l1",
              positional_weights: bool = False, **keywords) -> torch.Tensor:
    """``mean_i ℓ(s_i, q_i)·w_i``, ``s = soft_sort(ŷ)`` ascending: Dist Loss's distribution term (without λ).

    Args:
        pred: (N,) or (N, 1) predictions ``ŷ``.
        pseudo: (N,) or (N, 1) pseudo-labels ``q``, ascending.
        weights: None or (N,)/(N, 1) sample weights; by default the weight of the sample at sorted position ``i``
            multiplies position ``i``; ``positional_weights`` multiplies it by the i-th sample's weight (the
            reference).
        regularization_strength: ε of the soft sort (in the units of ``pred``).
        loss: ``ℓ``, one of :data:`~common.losses.regression.REGRESSION_LOSSES`; ``keywords`` its hyper-parameters.

    Returns a 0-d tensor in ``pred``'s dtype (float32 for half precision); the sort is computed in float64, as
    the reference computes it. Only shapes are checked: no host read.
    """
    where = "dist_term"
    checks.check_choice(where, "loss", loss, REGRESSION_LOSSES)
    checks.check_positive(where, "regularization_strength", regularization_strength)
    pred = checks.as_tensor(where, "pred", pred)
    checks.check_floating(where, "pred", pred)
    checks.check_nonempty(where, "pred", pred)
    n = pred.shape[0]
    pred = checks.labels_1d(where, "pred", pred, n, "pred")
    pseudo = checks.labels_1d(where, "pseudo", checks.as_tensor(where, "pseudo", pseudo), n, "pred")
    out_dtype = checks.compute_dtype(pred)
    s, order = soft_sort(pred.double(), regularization_strength, return_order=True)
    terms = elementwise_loss(loss, s, pseudo.to(device=pred.device, dtype=torch.float64), **keywords)
    if weights is not None:
        w = checks.labels_1d(where, "weights", checks.as_tensor(where, "weights", weights), n, "pred")
        w = w.to(device=pred.device, dtype=torch.float64)
        terms = terms * (w if positional_weights else w[order])
    return terms.mean().to(out_dtype)


def dist_loss(pred, target, pseudo, weights=None, loss_weight: float = 1.0, regularization_strength: float = 0.1,
              loss: str = "l1", positional_weights: bool = False, **keywords) -> torch.Tensor:
    """Dist Loss as the reference's ``DistLoss`` computes it: ``λ·dist_term + mean_i ℓ(ŷ_i, y_i)·w_i``.

    pred, target, pseudo: (N,) or (N, 1); weights: None or (N,)/(N, 1). See :func:`dist_term`.
    """
    where = "dist_loss"
    checks.check_positive(where, "loss_weight", loss_weight, allow_zero=True)
    pred = checks.as_tensor(where, "pred", pred)
    n = pred.shape[0] if pred.dim() else 0
    flat = checks.labels_1d(where, "pred", pred, n, "pred")
    target = checks.labels_1d(where, "target", checks.as_tensor(where, "target", target), n, "pred")
    plain = elementwise_loss(loss, flat, target.to(flat.dtype), **keywords)
    if weights is not None:
        plain = plain * checks.labels_1d(where, "weights", checks.as_tensor(where, "weights", weights), n,
                                         "pred").to(flat.dtype)
    distribution = dist_term(pred, pseudo, weights, regularization_strength, loss, positional_weights, **keywords)
    return loss_weight * distribution + plain.mean().to(distribution.dtype)


class DistLoss(nn.Module):
    """Dist Loss's term with its pseudo-labels: ``DistLoss(values, counts, lo=0, hi=120, step=1)(pred, weights)``
    gives ``mean_i ℓ(s_i, q_i)·w_i`` for a batch of any size (the pseudo-labels of each batch size are computed
    once on the host and copied once to each device).

    Args:
        values, counts: the training labels (distinct values and multiplicities, or a histogram's bin values and
            counts) whose KDE the pseudo-labels follow.
        lo, hi, step: the pseudo-label grid (``--min_label``, ``--max_label``, ``--dist_step``).
        bw: the KDE's bandwidth factor (``--bw_method``).
        regularization_strength: ε of the soft sort (``--regularization_strength``).
        loss, loss_options: ``ℓ`` and its hyper-parameters.
        residual: :func:`pseudo_label_counts`'s rule; positional_weights: see :func:`dist_term`.
        scale: predictions and pseudo-labels are divided by it (STS-B's score / 5).
    """

    def __init__(self, values, counts, lo=0.0, hi=120.0, step=1.0, bw=0.5, regularization_strength=0.1,
                 loss="l1", loss_options=None, residual="fixed", positional_weights=False, scale=1.0):
        super().__init__()
        checks.check_positive("DistLoss", "regularization_strength", regularization_strength)
        checks.check_choice("DistLoss", "loss", loss, REGRESSION_LOSSES)
        checks.check_choice("DistLoss", "residual", residual, RESIDUALS)
        self.grid = label_grid(lo, hi, step)
        self.density = kde_density(values, counts, self.grid, bw, lo, hi)
        self.regularization_strength, self.loss, self.loss_options = regularization_strength, loss, loss_options or {}
        self.residual, self.positional_weights, self.scale = residual, positional_weights, scale
        self._cache = {}

    def pseudo(self, batch_size: int, device, dtype=torch.float64) -> torch.Tensor:
        """(B,) ascending pseudo-labels on ``device`` (divided by ``scale``), from the cache after the first call."""
        key = (batch_size, torch.device(device), dtype)
        if key not in self._cache:
            labels = pseudo_labels(self.density, self.grid, batch_size, self.residual) / self.scale
            self._cache[key] = torch.as_tensor(labels, dtype=dtype).to(device)   # one host → device copy
        return self._cache[key]

    def forward(self, pred, weights=None):
        pred = checks.as_tensor("DistLoss", "pred", pred)
        checks.check_nonempty("DistLoss", "pred", pred)
        pseudo = self.pseudo(pred.shape[0], pred.device)
        return dist_term(pred / self.scale if self.scale != 1 else pred, pseudo, weights,
                         self.regularization_strength, self.loss, self.positional_weights, **self.loss_options)

    def extra_repr(self):
        return (f"grid=[{self.grid[0]:g}, {self.grid[-1]:g}] ({self.grid.size}), regularization_strength="
                f"{self.regularization_strength}, loss={self.loss!r}, residual={self.residual!r}, "
                f"positional_weights={self.positional_weights}, scale={self.scale:g}")


def sample_pixels(depth: torch.Tensor, size: int) -> torch.Tensor:
    """(size,) long indices of ``size`` pixels of the flattened ``depth`` (N,), drawn uniformly without
    replacement among the valid ones (depth > 0; invalid ones only when fewer than ``size`` are valid), from the
    global generator of ``depth``'s device: fixed shapes, no host read."""
    scores = torch.rand(depth.shape, device=depth.device) + (depth > 0).to(torch.float32)
    return torch.topk(scores, size, sorted=False).indices


# -- wiring ---------------------------------------------------------------------------------------------------
class DistTerm(Term):
    """λ · Dist Loss's distribution term on the model's ``pred`` and the step's sample (pixel) weights; on dense
    maps (NYUD2) on ``pixels`` pixels drawn per step (:func:`sample_pixels`)."""

    def __init__(self, weight: float, loss: DistLoss, pixels: int | None = None):
        super().__init__()
        self.weight, self.loss, self.pixels = weight, loss, pixels

    def forward(self, step: Step) -> dict:
        pred, weights = step.share(step.out["pred"]), step.weights
        weights = step.share(weights, False) if weights is not None else None
        pred = pred.float().reshape(-1)
        weights = weights.reshape(-1) if weights is not None else None
        if step.view.dense:
            depth = step.share(step.targets, False).reshape(-1)
            keep = sample_pixels(depth, min(self.pixels or depth.numel(), depth.numel()))
            valid = (depth[keep] > 0).to(pred.dtype)           # 0 only when fewer pixels than asked are valid
            pred, weights = pred[keep], (weights[keep] if weights is not None else 1.0) * valid
        return {"dist": self.weight * self.loss(pred, weights)}


class DistMethod(Method):
    """Dist Loss (Nie, Tang, Hong, ICLR 2025), with ``--dist_loss`` at weight λ
    (``--distribution_loss_term_weight``)."""

    name = "dist"
    switch = "--dist_loss"
    positive = ("regularization_strength", "bw_method", "dist_step", "dist_pixels")
    non_negative = ("distribution_loss_term_weight",)

    def add_args(self, parser, *, min_label=0.0, max_label=120.0, step=1.0, pixels=None) -> None:
        """The benchmark's pseudo-label grid (the ages' 0–120 by 1 by default); ``pixels``: the dense benchmark's
        default number of pixels soft-sorted per step (adds ``--dist_pixels``)."""
        g = parser.add_argument_group("Dist Loss (Nie, Tang, Hong, ICLR 2025)")
        g.add_argument("--dist_loss", action="store_true",
                       help="pull the soft-sorted predictions towards pseudo-labels from the training labels' KDE")
        g.add_argument("--distribution_loss_term_weight", type=float, default=1.0,
                       help="λ; 0 trains the plain loss (the reference's first stage)")
        g.add_argument("--regularization_strength", type=float, default=0.1,
                       help="ε of the soft sort, in label units (score/5 on STS-B): predictions further apart than "
                            "1/ε are pooled; small ε is the hard sort")
        g.add_argument("--bw_method", type=float, default=0.5, help="KDE bandwidth: this factor × the labels' std")
        g.add_argument("--min_label", type=float, default=min_label, help="lowest pseudo-label (KDE grid start)")
        g.add_argument("--max_label", type=float, default=max_label, help="highest pseudo-label (KDE grid end)")
        g.add_argument("--dist_step", type=float, default=step, help="KDE grid spacing (the reference's --step)")
        g.add_argument("--dist_residual", default="fixed", choices=list(RESIDUALS),
                       help="spreading the rounding residual of the pseudo-label counts: fixed (counts ≥ 0 summing to "
                            "the batch) or reference (its wrap-around and sign slips)")
        g.add_argument("--dist_positional_weights", action="store_true",
                       help="the reference's weighting: the i-th sample's weight on the i-th sorted position "
                            "(default: each weight follows its sample through the sort)")
        if pixels is not None:
            g.add_argument("--dist_pixels", type=int, default=pixels,
                           help="pixels of a batch drawn per step and soft-sorted against as many pseudo-labels")

    def enabled(self, args) -> bool:
        return bool(flag(args, "dist_loss"))

    def check(self, parser, args) -> None:
        if not self.enabled(args):
            return
        on = lambda name: bool(flag(args, name))   # noqa: E731
        if on("uvote") or on("vir"):
            parser.error("--dist_loss adds a point-loss term on the prediction; --uvote and --vir train a "
                         "likelihood of their own heads instead: drop one of them.")
        if flag(args, "rnc_stage", "none") == "encoder":
            parser.error("--rnc_stage encoder trains the trunk with RnC alone (Dist Loss would only train its "
                         "detached probe): add --dist_loss to the linear stage instead.")
        try:
            label_grid(args.min_label, args.max_label, args.dist_step)
        except ValueError:
            parser.error(f"--min_label {args.min_label:g} --max_label {args.max_label:g} --dist_step "
                         f"{args.dist_step:g}: the maximum must lie above the minimum by a whole number of steps.")
        if args.distribution_loss_term_weight == 0:
            print("warning: --dist_loss with --distribution_loss_term_weight 0 trains the plain loss (the "
                  "reference's first stage); no soft sort is computed.", file=sys.stderr)

    def tag(self, args):
        return f"dist_{args.distribution_loss_term_weight:g}_e{args.regularization_strength:g}"

    def term(self, args, data):
        if not args.distribution_loss_term_weight:
            return None
        values, counts = training_labels(data)
        loss = DistLoss(values, counts, args.min_label, args.max_label, args.dist_step, args.bw_method,
                        args.regularization_strength, flag(args, "loss", "l1"), data.loss_options,
                        flag(args, "dist_residual", "fixed"), bool(flag(args, "dist_positional_weights")),
                        data.view.label_scale)
        return DistTerm(args.distribution_loss_term_weight, loss, flag(args, "dist_pixels"))


def training_labels(data) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of the training labels the KDE follows: the labels themselves when the benchmark gives
    them (``data.train_labels``: ages, STS-B scores), else its histogram with each bin at its centre (NYUD2's
    pixel depths on the 0.1-m bins)."""
    if getattr(data, "train_labels", None) is not None:
        return np.unique(np.asarray(data.train_labels, dtype=np.float64).reshape(-1), return_counts=True)
    if data.label_counts is not None and data.label_bins is not None:
        return data.label_bins.centers(), np.asarray(data.label_counts)
    raise ValueError("Dist Loss needs the training labels (or their histogram) for its pseudo-labels; this "
                     "benchmark's objective was built without them.")


METHOD = DistMethod()
