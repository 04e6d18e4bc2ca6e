"""Ordinal Entropy: a feature-space regulariser for regression (Zhang, Yang, Mi, Zheng, Yao, ICLR 2023).

Features ``z`` (N, C), labels ``y`` (N,). With the distinct labels ``u_1 … u_U`` of the batch, the centre of label
``u_k`` is the mean of the *raw* features of its samples, ``c_k``, and ``p_k = c_k / ‖c_k‖``. With
``dist(a, b) = √max(‖a‖² + ‖b‖² − 2a·b, 1e-12)`` (identical points are 1e-6 apart) and, over the pairs k < l,

    W_kl = |u_k − u_l|,        w_kl = (W_kl − min W) / max W        (divided by max W, not by max − min),
    L_d  = mean_{k<l} w_kl · dist(p_k, p_l)                          (diversity: spread the centres by label gap),
    L_t  = mean_{i : t_i > 0} √t_i,   t_i = ‖z_i/‖z_i‖ − p_{k(i)}‖²    (tightness: pull samples to their centre),
    L_OE = L_t − L_d.

The closest pair of labels always gets weight 0, so a batch needs three distinct labels for ``L_d ≠ 0``.

**Fixed shapes.** Nothing here depends on how many labels are distinct, so no host read happens in a step: an
(N, N) same-label matrix gives every sample its group's centre (a matrix product), each label is represented by
its first occurrence in the batch (no earlier sample has it), and the means over pairs k < l are masked sums over
first occurrences divided by their counts.

**Quirks** (docs/reference-differences.md): a sample alone with its label is its own centre (``t_i = 0``) and is
left out of the tightness mean, as are exact zeros; when no sample is left (every label of the batch distinct)
the authors' mean of an empty set is NaN, which stops a run: here ``L_t = 0`` (``empty_tightness='nan'`` gives
the NaN back). One distinct label (the authors' code fails on the max of an empty set) gives ``L_d = 0``. Label
gaps are taken directly, ``|u_k − u_l|`` — the same number as the authors' ``dist(u_k, u_l)`` for 1-d labels,
without the float32 cancellation of ``u_k² + u_l² − 2u_k u_l`` on depth in metres (``label_distance='expanded'``
gives that form and its 1e-6 floor back). ``tightness='squared'`` is the first upload's (2023-01) mean of ``t_i``
over all samples, without the square root.

**Depth** (:func:`ordinal_entropy_dense_loss`): the map and the depth are nearest-downsampled to
``(h // 4, w // 4)``, pixels with depth ≤ 0.001 are left out, the formula is applied per image with its pixels as
the samples, and the images' losses are averaged.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.bins import LabelBins
from common.method import Method, Step, Term, flag

TIGHTNESS = ("sqrt", "squared")
EMPTY_TIGHTNESS = ("zero", "nan")
LABEL_DISTANCES = ("direct", "expanded")
GROUPS = ("labels", "bins")
DEPTH_STRIDE = 4        # the authors' depth variant works at a quarter of the map's resolution
MIN_DEPTH = 1e-3        # metres; pixels at or below it carry no depth (the authors' mask)
FLOOR = 1e-12           # of a squared distance: identical points are √1e-12 = 1e-6 apart, as the authors' dist


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(G, M, C), (G, M, C) → (G, M, M) ``√max(‖a_i‖² + ‖b_j‖² − 2 a_i·b_j, 1e-12)``: the authors' ``dist``."""
    squared = (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2 * a @ b.transpose(-1, -2)
    return squared.clamp_min(FLOOR).sqrt()


def _label_gap(labels: torch.Tensor, form: str) -> torch.Tensor:
    """(G, M) → (G, M, M) label distances: ``|u_i − u_j|`` (``direct``) or the authors' ``dist`` of 1-d labels,
    ``√max(u_i² + u_j² − 2u_i u_j, 1e-12)`` (``expanded``)."""
    if form == "direct":
        return (labels[..., :, None] - labels[..., None, :]).abs()
    return _distance(labels[..., None], labels[..., None])


def _oe_parts(z, labels, valid, *, tightness, empty_tightness, label_distance):
    """Diversity and tightness of G independent groups of samples, fixed shapes throughout.

    Args:
        z: (G, M, C) raw features. labels: (G, M) labels (or bin indices): equal values share a centre.
        valid: (G, M) bool, the samples that take part (all of them, or NYUD2's pixels with depth).

    Returns:
        ``(L_d (G,), L_t (G,))``.
    """
    m = z.shape[1]
    with torch.no_grad():
        same = (labels[..., :, None] == labels[..., None, :]) & valid[..., :, None] & valid[..., None, :]
        count = same.sum(-1)                                                          # (G, M); 0 if invalid
        earlier = torch.ones(m, m, dtype=torch.bool, device=z.device).tril(-1)       # [i, j]: j < i
        first = valid & ~(same & earlier).any(-1)                  # the first sample of each distinct label
        pairs = first[..., :, None] & first[..., None, :] & earlier.T                # k < l, distinct labels
        num_pairs = pairs.sum((-2, -1))
        gap = _label_gap(labels.to(z.dtype), label_distance)
        low = torch.where(pairs, gap, torch.inf).amin((-2, -1))
        high = torch.where(pairs, gap, -torch.inf).amax((-2, -1))
        high = torch.where(num_pairs > 0, high, 1.0)       # one distinct label: no pair, L_d = 0 below
        weight = torch.where(pairs, (gap - low[:, None, None]) / high[:, None, None], 0.0)
    centre = same.to(z.dtype) @ z / count.clamp(min=1)[..., None].to(z.dtype)
    p = F.normalize(centre, dim=-1)
    diversity = (weight * _distance(p, p)).sum((-2, -1)) / num_pairs.clamp(min=1)
    t = (F.normalize(z, dim=-1) - p).square().sum(-1)                                 # (G, M)
    if tightness == "squared":
        n = valid.sum(-1)
        return diversity, torch.where(valid, t, 0.0).sum(-1) / n.clamp(min=1)
    # A sample alone with its label is its own centre: left out by its count, whatever the rounding of the
    # matrix product that formed its centre; exact zeros (identical samples of one label) are left out too.
    kept = valid & (count > 1) & (t > 0)
    roots = torch.where(kept, torch.where(kept, t, 1.0).sqrt(), 0.0)               # no ∞ gradient at t = 0
    n = kept.sum(-1)
    tight = roots.sum(-1) / n.clamp(min=1)
    if empty_tightness == "nan":
        tight = torch.where(n > 0, tight, torch.nan)
    return diversity, tight


def _check_hyper(where, tightness, empty_tightness, label_distance):
    checks.check_choice(where, "tightness", tightness, TIGHTNESS)
    checks.check_choice(where, "empty_tightness", empty_tightness, EMPTY_TIGHTNESS)
    checks.check_choice(where, "label_distance", label_distance, LABEL_DISTANCES)


def bin_edges(bins: LabelBins) -> torch.Tensor:
    """The (B + 1,) float32 edges of a ``histogram`` grid, exactly as :meth:`~common.bins.LabelBins.index`'s."""
    return torch.from_numpy(np.linspace(bins.start, bins.stop, bins.num_bins + 1).astype(np.float32))


def bin_keys(bins: LabelBins, labels: torch.Tensor, edges: torch.Tensor | None = None) -> torch.Tensor:
    """``bins.index(labels)`` on the labels' device without a host read, as float labels (the bin index).

    The same rules as :meth:`~common.bins.LabelBins.index`: ``histogram``, float32 edges and a right-sided search;
    ``scale``, ``floor((y − start) / width)``; clipped to the grid. ``edges``: :func:`bin_edges` already on the
    labels' device (a module keeps them as a buffer: copying them in every step would wait for the GPU).
    """
    if bins.rule == "histogram":
        edges = (bin_edges(bins) if edges is None else edges).to(labels.device)
        index = torch.searchsorted(edges, labels.float().contiguous(), right=True) - 1
    else:
        shifted = labels - bins.start if bins.start else labels
        index = torch.floor(shifted * (1.0 / bins.width))
    return index.clamp(0, bins.num_bins - 1).to(checks.compute_dtype(labels) if labels.is_floating_point()
                                                 else torch.float32)


def ordinal_entropy_parts(features, labels, *, tightness="sqrt", empty_tightness="zero", label_distance="direct"):
    """``(L_d, L_t)``, the diversity and the tightness of one batch (module docstring).

    Args:
        features: (N, C) features (the encoding), un-normalised.
        labels: (N,) or (N, 1) labels; equal values share a centre (bin indices group a grid's bins).
        tightness: ``'sqrt'`` (the authors' current code) or ``'squared'`` (their 2023-01 upload).
        empty_tightness: ``'zero'`` or ``'nan'`` (the authors'), ``L_t`` when no sample shares its label.
        label_distance: ``'direct'`` (``|u_k − u_l|``) or ``'expanded'`` (the authors' floored expanded form).

    Returns:
        two 0-d tensors; float64 for float64 features, float32 otherwise.
    """
    where = "ordinal_entropy"
    _check_hyper(where, tightness, empty_tightness, label_distance)
    features = checks.feature_batch(where, "features", features, 2)
    labels = checks.labels_1d(where, "labels", checks.as_tensor(where, "labels", labels), features.shape[0],
                              "features")
    dtype = checks.compute_dtype(features)
    with torch.autocast(features.device.type, enabled=False):
        z = features.to(dtype)[None]
        y = labels.detach().to(device=z.device, dtype=dtype)[None]
        valid = torch.ones_like(y, dtype=torch.bool)
        diversity, tight = _oe_parts(z, y, valid, tightness=tightness, empty_tightness=empty_tightness,
                                     label_distance=label_distance)
    return diversity[0], tight[0]


def ordinal_entropy_loss(features, labels, **options) -> torch.Tensor:
    """``L_OE = L_t − L_d`` (:func:`ordinal_entropy_parts`, same arguments): a 0-d tensor in [−2, 2]."""
    diversity, tight = ordinal_entropy_parts(features, labels, **options)
    return tight - diversity


def ordinal_entropy_dense_loss(features, depth, bins: LabelBins | None = None, *, tightness="sqrt",
                               empty_tightness="zero", label_distance="direct", edges=None) -> torch.Tensor:
    """Ordinal Entropy, depth variant: ``(1/B) Σ_images (L_t − L_d)`` over each image's pixels.

    Args:
        features: (B, C, h, w) per-pixel features (NYUD2: the maps feeding ``R.conv2``).
        depth: (B, 1, h, w) depth in metres at the same resolution.
        bins: group the pixels by these depth bins instead of by exact depth (None: exact depth, the authors');
            ``edges``: their :func:`bin_edges` on the device, for a ``histogram`` grid.
        tightness, empty_tightness, label_distance: as :func:`ordinal_entropy_parts`.

    Both are nearest-downsampled to ``(h // 4, w // 4)``; pixels with depth ≤ 0.001 take no part. An image
    without such a pixel, or with one distinct depth, adds 0 diversity (and 0 tightness unless ``'nan'``).
    """
    where = "ordinal_entropy_dense_loss"
    _check_hyper(where, tightness, empty_tightness, label_distance)
    features, depth = checks.depth_maps(where, features, depth)
    b, _, h, w = features.shape
    if h < DEPTH_STRIDE or w < DEPTH_STRIDE:
        raise ValueError(f"{where}: `features` {tuple(features.shape)} is smaller than {DEPTH_STRIDE} pixels on a "
                         f"side; the depth variant works at (h // {DEPTH_STRIDE}, w // {DEPTH_STRIDE}).")
    dtype = checks.compute_dtype(features)
    size = (h // DEPTH_STRIDE, w // DEPTH_STRIDE)
    with torch.autocast(features.device.type, enabled=False):
        z = F.interpolate(features.to(dtype), size=size, mode="nearest").flatten(2).transpose(1, 2)   # (B, M, C)
        d = F.interpolate(depth.detach().to(device=z.device, dtype=dtype), size=size, mode="nearest").flatten(1)
        valid = d > MIN_DEPTH
        keys = d if bins is None else bin_keys(bins, d, edges).to(dtype)
        diversity, tight = _oe_parts(z, keys, valid, tightness=tightness, empty_tightness=empty_tightness,
                                     label_distance=label_distance)
    return (tight - diversity).mean()


class OrdinalEntropy(nn.Module):
    """:func:`ordinal_entropy_loss` with its options; ``bins`` (a :class:`~common.bins.LabelBins`) groups the
    labels by bin (STS-B's 0.1-wide score bins), None by exact value. The weight is applied by the caller."""

    def __init__(self, tightness="sqrt", empty_tightness="zero", label_distance="direct", bins=None):
        super().__init__()
        _check_hyper("OrdinalEntropy", tightness, empty_tightness, label_distance)
        self.tightness, self.empty_tightness, self.label_distance = tightness, empty_tightness, label_distance
        self.bins = bins
        histogram = bins is not None and bins.rule == "histogram"
        self.register_buffer("edges", bin_edges(bins) if histogram else None, persistent=False)

    def options(self) -> dict:
        return dict(tightness=self.tightness, empty_tightness=self.empty_tightness,
                    label_distance=self.label_distance)

    def forward(self, features, labels):
        if self.bins is not None:
            labels = bin_keys(self.bins, labels, self.edges)
        return ordinal_entropy_loss(features, labels, **self.options())

    def extra_repr(self):
        grid = "" if self.bins is None else f", bins=({self.bins.start:g}, {self.bins.width:g}, {self.bins.num_bins})"
        return (f"tightness={self.tightness!r}, empty_tightness={self.empty_tightness!r}, "
                f"label_distance={self.label_distance!r}{grid}")


class OrdinalEntropyDense(OrdinalEntropy):
    """:func:`ordinal_entropy_dense_loss` with its options (NYUD2)."""

    def forward(self, features, depth):
        return ordinal_entropy_dense_loss(features, depth, self.bins, edges=self.edges, **self.options())


# -- wiring ---------------------------------------------------------------------------------------------------
class OrdinalEntropyTerm(Term):
    """λ · Ordinal Entropy on the main pass's encoding (the features RankSim and ConR read: the pooled encoding,
    FDS-calibrated when FDS is on; STS-B's pair feature; NYUD2's per-pixel maps before FDS, per image)."""

    def __init__(self, weight: float, loss: OrdinalEntropy):
        super().__init__()
        self.weight, self.loss = weight, loss

    def forward(self, step: Step) -> dict:
        features, labels = step.share(step.out["encoding"]), step.share(step.targets, False)
        return {"oe": self.weight * self.loss(features, labels)}


class OrdinalEntropyMethod(Method):
    """Ordinal Entropy (Zhang et al., ICLR 2023), with ``--ordinal_entropy`` at weight λ (``--oe_weight``)."""

    name = "ordinal_entropy"
    switch = "--ordinal_entropy"
    non_negative = ("oe_weight",)

    def add_args(self, parser, *, groups="labels") -> None:
        """``groups`` is the benchmark's default grouping (STS-B passes ``bins``: averaged ratings are rarely
        equal, so exact scores would leave most samples alone with their label)."""
        g = parser.add_argument_group("Ordinal Entropy (Zhang et al., ICLR 2023)")
        g.add_argument("--ordinal_entropy", action="store_true",
                       help="Ordinal Entropy on the encoding, weighted by --oe_weight")
        g.add_argument("--oe_weight", type=float, default=1.0, help="λ beside the regression loss (the authors: 1)")
        g.add_argument("--oe_groups", default=groups, choices=list(GROUPS),
                       help="what shares a centre: equal labels, or labels in one bin of the benchmark's label grid "
                            "(STS-B: the 0.1-wide score bins)")
        g.add_argument("--oe_tightness", default="sqrt", choices=list(TIGHTNESS),
                       help="sqrt: mean of ‖n̂(z_i) − p_k‖ over samples sharing their label (the authors' current "
                            "code); squared: mean of its square over all samples (their 2023-01 upload)")
        g.add_argument("--oe_empty_tightness", default="zero", choices=list(EMPTY_TIGHTNESS),
                       help="the tightness of a batch whose labels are all distinct: zero, or nan (the authors' "
                            "mean of an empty set, which stops the run)")
        g.add_argument("--oe_label_distance", default="direct", choices=list(LABEL_DISTANCES),
                       help="label gaps: direct |u_k − u_l|, or expanded √max(u_k² + u_l² − 2u_k·u_l, 1e-12) (the "
                            "authors' form, which cancels in float32 for close depths)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "ordinal_entropy"))

    def check(self, parser, args) -> None:
        if not self.enabled(args):
            return
        if flag(args, "rnc_stage", "none") == "linear":
            parser.error("--rnc_stage linear trains a head on a frozen trunk, whose features Ordinal Entropy cannot "
                         "change: drop --ordinal_entropy.")
        if flag(args, "retrain_fc"):
            parser.error("--retrain_fc trains only the head of --pretrained, whose features Ordinal Entropy cannot "
                         "change: drop --ordinal_entropy.")

    def tag(self, args):
        return f"oe_{args.oe_weight:g}" + ("_bins" if flag(args, "oe_groups", "labels") == "bins" else "")

    def term(self, args, data):
        if not args.oe_weight:
            return None
        bins = data.label_bins if flag(args, "oe_groups", "labels") == "bins" else None
        if bins is not None and not isinstance(bins, LabelBins):
            raise ValueError("--oe_groups bins needs the benchmark's label grid (ObjectiveData.label_bins).")
        loss = (OrdinalEntropyDense if data.view.dense else OrdinalEntropy)(
            flag(args, "oe_tightness", "sqrt"), flag(args, "oe_empty_tightness", "zero"),
            flag(args, "oe_label_distance", "direct"), bins)
        return OrdinalEntropyTerm(args.oe_weight, loss)


METHOD = OrdinalEntropyMethod()
