"""Group-DIR: group-aware contrastive learning for imbalanced regression (Pu, Xu, Fang, Bao, Ling, Wang, AAAI 2025).

The label range is cut into G groups of width r, ``g = min(⌊y / r⌋, G − 1)`` (here ``r = R / G`` with R the
benchmark's label range: ages 100, STS-B scores 5, NYUD2 depths 10 m; labels at or beyond R fall in the last
group). One layer maps the encoding z to 2G outputs: ``ℓ = o[:G]`` the group logits and ``u = o[G:]`` one
regressor output per group. Training regresses the regressor of the true group, test reads the regressor of the
predicted group, ``ŷ = u_{argmax ℓ}``.

The objective, for a batch of B samples (``docs/methods.md``, section 12, Group-DIR):

    L = σ · mean_i w_i ρ(u_{i,g_i} − y_i)  +  λ_c · L_grc  +  L_soft  [+ L_ce]

* ρ the regression loss (``'mse'``, AgeDB; ``'l1'``, IMDB-WIKI), w the sample weights (re-weighting, LDS);
* descending soft labels: ``a_j = s·(G − 1)`` at ``j = g``, else ``(G − step − |j − g|) / s``, clamped to
  [0, G − 1] (the STS-B variant does not clamp), ``q = softmax(a)``; with ``s = step = 1`` ``q_j ∝ e^(−|j−g|)``;
  ``L_soft = −Σ_i Σ_j q_ij log softmax(ℓ_i)_j``, summed over the batch as the authors (``reduction='mean'``:
  averaged), so its balance with the (mean) regression term changes with B;
* the group contrastive loss: Rank-N-Contrast (:mod:`common.losses.rnc`) on the unit-normalised encodings
  ``ẑ = z / ‖z‖`` with the group ids as labels, ``S_ij = −‖ẑ_i − ẑ_j‖ / τ``,
  ``L_grc = −1/(B(B−1)) Σ_i Σ_{k≠i} [S_ik − log Σ_{j≠i, |g_i−g_j| ≥ |g_i−g_k|} e^(S_ij)]`` — computed by RnC's
  sorted cumulative log-sum-exp (O(B² log B)), not the authors' cubic loop;
* optional (``--ce``): the logit-adjusted cross-entropy ``CE(ℓ + τ_la log π, g)``, π the training groups'
  frequencies (τ_la = 0: plain CE), reduced as ``L_soft``.

Nothing here reads a tensor back to the host: every shape is fixed by the batch, never by its values.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.losses.rnc import _l2_distance, rnc_from_logits
from common.method import Method, Step, Term, flag, flat_rows

REG_LOSSES = ("mse", "l1")
REDUCTIONS = ("sum", "mean")


# -- the maths --------------------------------------------------------------------------------------------------
def group_index(labels: torch.Tensor, width: float, groups: int) -> torch.Tensor:
    """``g = min(⌊y / r⌋, G − 1)`` (and ≥ 0), a long tensor of ``labels``' shape.

    Computed in float64 so that a label on a boundary (age 20 with r = 100/15) falls where the exact quotient
    says, whatever the labels' dtype.
    """
    quotient = torch.floor(labels.detach().to(torch.float64) / width)
    return quotient.clamp(0, groups - 1).long()


def soft_labels(group: torch.Tensor, groups: int, scale: float = 1.0, step: int = 1, clamp: bool = True,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Descending soft labels ``q`` (N, G) of the group ids ``group`` (N,): ``a_j = s(G − 1)`` at the true group,
    ``(G − step − |j − g|) / s`` elsewhere, clamped to [0, G − 1] unless ``clamp`` is off (STS-B), then a softmax
    over j. Rows sum to 1; in ``dtype``."""
    j = torch.arange(groups, device=group.device)
    distance = (j[None, :] - group[:, None]).abs().to(dtype)
    logits = torch.where(distance == 0, scale * (groups - 1), (groups - step - distance) / scale)
    if clamp:
        logits = logits.clamp(0, groups - 1)
    return torch.softmax(logits, dim=1)


def _reduce(rows: torch.Tensor, batch: int, reduction: str) -> torch.Tensor:
    """Per-row losses (N,) → the batch's: ``'sum'`` is B × the row mean (the sum over samples; on a per-pixel
    map, the sum over images of each image's pixel mean), ``'mean'`` the row mean."""
    mean = rows.mean()
    return mean * batch if reduction == "sum" else mean


def _soft_rows(logits, group, scale, step, clamp):
    q = soft_labels(group, logits.shape[1], scale, step, clamp, logits.dtype)
    return -(q * torch.log_softmax(logits, dim=1)).sum(1)


def _grc(features, group, temperature):
    unit = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    logits = _l2_distance(unit) / -temperature
    g = group.to(features.dtype)
    return rnc_from_logits(logits, (g[:, None] - g[None, :]).abs())


def soft_label_loss(logits, labels, width: float, scale: float = 1.0, step: int = 1, clamp: bool = True,
                    reduction: str = "sum") -> torch.Tensor:
    """``L_soft`` (module docstring).

    Args:
        logits: (N, G) group logits ℓ.
        labels: (N,) or (N, 1) labels in the units of ``width``.
        width: r, the groups' width.
        scale, step, clamp: s, step and the clamp of the soft labels (:func:`soft_labels`).
        reduction: ``'sum'`` over the batch (the authors) or ``'mean'``.

    Returns:
        0-d loss, float32 for half-precision logits, else their dtype.
    """
    where = "soft_label_loss"
    logits = checks.feature_batch(where, "logits", logits, 2)
    labels = checks.finite_labels_1d(where, "labels", labels, logits.shape[0], "logits")
    checks.check_positive(where, "width", width)
    checks.check_positive(where, "scale", scale)
    checks.check_choice(where, "reduction", reduction, REDUCTIONS)
    logits = logits.to(checks.compute_dtype(logits))
    rows = _soft_rows(logits, group_index(labels, width, logits.shape[1]), scale, step, clamp)
    return _reduce(rows, logits.shape[0], reduction)


def group_contrastive_loss(features, labels, width: float, groups: int, temperature: float = 0.07) -> torch.Tensor:
    """``L_grc``: Rank-N-Contrast of the unit-normalised ``features`` (N, D) with the group ids of ``labels`` (N,)
    or (N, 1) as labels (module docstring). N ≥ 2; float32 for half precision, else the features' dtype."""
    where = "group_contrastive_loss"
    features = checks.feature_batch(where, "features", features, 2)
    labels = checks.finite_labels_1d(where, "labels", labels, features.shape[0], "features")
    checks.check_positive(where, "width", width)
    checks.check_positive(where, "temperature", temperature)
    if features.shape[0] < 2:
        raise ValueError(f"{where}: `features` holds {features.shape[0]} row; the contrast needs at least 2.")
    checks.check_finite(where, "features", features)
    features = features.to(checks.compute_dtype(features))
    return _grc(features, group_index(labels, width, groups), temperature)


def group_regression_loss(values, labels, width: float, targets=None, weights=None,
                          reg_loss: str = "mse") -> torch.Tensor:
    """``mean_i w_i ρ(u_{i,g_i} − y_i)``: the regressor of each sample's true group against its label.

    Args:
        values: (N, G) the group regressors u.
        labels: (N,) or (N, 1) labels in the units of ``width`` (they pick the group).
        targets: what the regressors predict, (N,) or (N, 1) (None: ``labels``; STS-B: score / 5).
        weights: None or (N,) / (N, 1) sample weights.
        reg_loss: ``'mse'`` or ``'l1'``.
    """
    where = "group_regression_loss"
    values = checks.feature_batch(where, "values", values, 2)
    n = values.shape[0]
    labels = checks.finite_labels_1d(where, "labels", labels, n, "values")
    targets = labels if targets is None else checks.finite_labels_1d(where, "targets", targets, n, "values")
    checks.check_choice(where, "reg_loss", reg_loss, REG_LOSSES)
    if weights is not None:
        weights = checks.sample_weights(where, weights, n, values, "values")
    picked = values.gather(1, group_index(labels, width, values.shape[1])[:, None])[:, 0]
    return _regression(picked, targets.to(picked.dtype), weights, reg_loss)


def _regression(picked, targets, weights, reg_loss):
    error = picked - targets
    rows = error ** 2 if reg_loss == "mse" else error.abs()
    return (rows if weights is None else rows * weights.reshape(rows.shape)).mean()


def group_predict(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``ŷ = u_{argmax ℓ}`` along dim 1: (B, G[, H, W]) → (B, 1[, H, W])."""
    return values.gather(1, logits.argmax(1, keepdim=True))


class GroupDIRLoss(nn.Module):
    """The Group-DIR objective's parts (module docstring), as named components.

    Args:
        groups: G.
        width: r, the groups' width in label units.
        sigma: σ, the regression term's weight.
        contrast_weight: λ_c (0: no contrastive term, as the authors' ``--ce`` runs).
        temperature: τ of the contrast.
        scale, step, clamp: the soft labels' s, step and clamp.
        reg_loss: ``'mse'`` or ``'l1'``.
        reduction: ``'sum'`` (the authors) or ``'mean'`` over the batch for ``L_soft`` and the CE.
        la_prior: None, or (G,) ``τ_la log π`` added to the logits of a cross-entropy on the group ids.
    """

    def __init__(self, groups: int, width: float, sigma: float = 1.0, contrast_weight: float = 1.0,
                 temperature: float = 0.07, scale: float = 1.0, step: int = 1, clamp: bool = True,
                 reg_loss: str = "mse", reduction: str = "sum", la_prior=None):
        super().__init__()
        where = "GroupDIRLoss"
        if int(groups) != groups or groups < 1:
            raise ValueError(f"{where}: `groups` must be an integer ≥ 1, got {groups}.")
        checks.check_positive(where, "width", width)
        checks.check_positive(where, "sigma", sigma, allow_zero=True)
        checks.check_positive(where, "contrast_weight", contrast_weight, allow_zero=True)
        checks.check_positive(where, "temperature", temperature)
        checks.check_positive(where, "scale", scale)
        checks.check_choice(where, "reg_loss", reg_loss, REG_LOSSES)
        checks.check_choice(where, "reduction", reduction, REDUCTIONS)
        self.groups, self.width, self.sigma, self.contrast_weight = int(groups), float(width), sigma, contrast_weight
        self.temperature, self.scale, self.step, self.clamp = temperature, scale, int(step), bool(clamp)
        self.reg_loss, self.reduction = reg_loss, reduction
        if la_prior is not None:
            la_prior = torch.as_tensor(la_prior, dtype=torch.float32)
            if la_prior.shape != (self.groups,):
                raise ValueError(f"{where}: `la_prior` has shape {tuple(la_prior.shape)}; pass one value per group "
                                 f"({self.groups},).")
        self.register_buffer("la_prior", la_prior, persistent=False)

    def forward(self, logits, values, labels, features=None, feature_labels=None, targets=None, weights=None,
                batch: int | None = None) -> dict:
        """Components ``group_reg``, ``group_soft``, ``group_grc`` (λ_c > 0 and ``features`` given) and
        ``group_ce`` (with a prior), each weighted.

        Args:
            logits, values: (N, G) rows (samples, or pixels).
            labels: (N, 1) labels in the units of ``width``; ``targets``: what the regressors predict (None:
                ``labels``); ``weights``: None or (N, 1).
            features, feature_labels: (B, D) and (B, 1): one row per sample for the contrast (None: no contrast).
            batch: B for the ``'sum'`` reduction (None: N).

        No checks and no host reads: the term calls it every step (the checked functions are above).
        """
        batch = logits.shape[0] if batch is None else batch
        group = group_index(labels[:, 0], self.width, self.groups)
        targets = labels if targets is None else targets
        picked = values.gather(1, group[:, None])[:, 0]
        out = {"group_reg": self.sigma * _regression(picked, targets[:, 0].to(picked.dtype),
                                                     None if weights is None else weights[:, 0], self.reg_loss),
               "group_soft": _reduce(_soft_rows(logits, group, self.scale, self.step, self.clamp), batch,
                                     self.reduction)}
        if self.la_prior is not None:
            adjusted = logits + self.la_prior.to(device=logits.device, dtype=logits.dtype)
            out["group_ce"] = _reduce(F.cross_entropy(adjusted, group, reduction="none"), batch, self.reduction)
        if self.contrast_weight and features is not None:
            if features.shape[0] < 2:       # a one-sample batch has no pair to contrast
                out["group_grc"] = features.sum() * 0
            else:
                out["group_grc"] = self.contrast_weight * _grc(
                    features, group_index(feature_labels[:, 0], self.width, self.groups), self.temperature)
        return out

    def extra_repr(self):
        return (f"groups={self.groups}, width={self.width:g}, sigma={self.sigma}, contrast_weight="
                f"{self.contrast_weight}, temperature={self.temperature}, scale={self.scale}, step={self.step}, "
                f"clamp={self.clamp}, reg_loss={self.reg_loss!r}, reduction={self.reduction!r}, "
                f"ce={self.la_prior is not None}")


class GroupDIRHead(nn.Module):
    """One layer ``z → 2G`` (``nn.Linear``, or a same-padding ``nn.Conv2d`` of ``kernel_size`` on maps): the G
    group logits ``group_logits`` and the G group regressors ``group_values`` (B, G[, H, W]); ``pred`` (B, 1[, H,
    W]) is the regressor of the most likely group. Kept under the model's name ``linear``/``conv2`` as every head.
    """

    def __init__(self, in_dim: int, groups: int = 10, kernel_size: int | None = None):
        super().__init__()
        if int(groups) != groups or groups < 1:
            raise ValueError(f"GroupDIRHead: `groups` must be an integer ≥ 1, got {groups}.")
        self.groups = int(groups)
        self.layer = nn.Linear(in_dim, 2 * self.groups) if kernel_size is None else \
            nn.Conv2d(in_dim, 2 * self.groups, kernel_size, padding=kernel_size // 2)

    def forward(self, features: torch.Tensor) -> dict:
        out = self.layer(features)
        logits, values = out[:, :self.groups], out[:, self.groups:]
        return {"pred": group_predict(logits, values), "group_logits": logits, "group_values": values}

    @torch.no_grad()
    def start_at_labels(self, mean: float, std: float) -> None:
        """Start every group regressor at the training labels' ``mean`` (in the head's label scale): bias
        ``mean``, weights 0 (no draw from the random stream); the logits keep their initialisation. ``std`` is
        not needed: a regressor's weights start at zero and learn from the encoding."""
        weight, bias = self.layer.weight, self.layer.bias
        weight[self.groups:].zero_()
        bias[self.groups:].fill_(mean)

    def extra_repr(self):
        return f"groups={self.groups}"


# -- wiring ---------------------------------------------------------------------------------------------------
def group_frequencies(label_counts, label_bins, width: float, groups: int):
    """(G,) float64 training frequencies π of the groups from the histogram ``label_counts`` on ``label_bins``
    (each bin counted in the group of its lower edge, the value it stands for); empty groups get one count so
    that ``log π`` stays finite."""
    import numpy as np
    edges = torch.as_tensor(np.asarray(label_bins.lower_edges(), dtype=np.float64))
    counts = np.zeros(groups, dtype=np.float64)
    np.add.at(counts, group_index(edges, width, groups).numpy(), np.asarray(label_counts, dtype=np.float64))
    counts = np.maximum(counts, 1.0)
    return counts / counts.sum()


class GroupDIRTerm(Term):
    """Group-DIR's objective as the main loss: the head's ``group_logits``/``group_values`` per row (sample or
    pixel) against the labels, the regression term on the view's label scale and weighted by the batch's weights;
    the contrast on one row per sample (``view.per_sample``; NYUD2: each image's spatially pooled map with its
    mean depth), under torchrun on the global batch with ``--gather_features``."""

    def __init__(self, loss: GroupDIRLoss):
        super().__init__()
        self.loss = loss

    def forward(self, step: Step) -> dict:
        out, view = step.out, step.view
        labels = flat_rows(step.targets).float()
        weights = None if step.weights is None else flat_rows(step.weights).float()
        features = feature_labels = None
        if self.loss.contrast_weight:
            encoding = out["encoding"]
            if view.dense:
                encoding = encoding.mean(dim=(2, 3), keepdim=True)     # one pooled feature per image
            features, feature_labels = view.per_sample(step.share(encoding), step.share(step.targets, False))
            features, feature_labels = features.float(), feature_labels.float()
        return self.loss(flat_rows(out["group_logits"]).float(), flat_rows(out["group_values"]).float(), labels,
                         features, feature_labels, labels / view.label_scale, weights, batch=step.targets.shape[0])


class GroupDIRMethod(Method):
    """Group-DIR (Pu et al., AAAI 2025): G label groups, a 2G head (group logits and one regressor per group),
    descending soft labels and a group-wise Rank-N-Contrast; its objective replaces the regression loss."""

    name = "group_dir"
    switch = "--group_dir"
    positive = ("group_temp", "soft_scale", "group_width", "group_range")
    non_negative = ("group_sigma", "group_contrast_weight", "la_tau")
    model_flags = ("group_dir", "groups")

    def add_args(self, parser, *, groups: int = 10, sigma: float = 1.0, temperature: float = 0.07,
                 label_range: float = 100.0, reg_loss: str = "l1", clamp: bool = True) -> None:
        """``label_range``: R, the groups' span (r = R / G); ``clamp``: the soft labels' clamp (off on STS-B)."""
        g = parser.add_argument_group("Group-DIR (Pu et al., AAAI 2025)")
        g.add_argument("--group_dir", action="store_true",
                       help="G label groups, a 2G head, soft-label CE and group-wise Rank-N-Contrast in place of "
                            "the regression loss (--loss then only picks the validation metric)")
        g.add_argument("--groups", "--total_groups", dest="groups", type=int, default=groups, help="G, the groups")
        g.add_argument("--group_range", type=float, default=float(label_range),
                       help="R, the label range the G groups split (labels at or beyond R join the last group)")
        g.add_argument("--group_width", type=float, default=None,
                       help="r, the width of a group in label units (default: R / G; the authors' AgeDB code uses "
                            "int(100 / G))")
        g.add_argument("--group_sigma", type=float, default=sigma, help="σ, the regression term's weight")
        g.add_argument("--group_contrast_weight", type=float, default=1.0,
                       help="λ_c, the group contrastive term's weight (0: none, as the authors' --ce runs)")
        g.add_argument("--group_temp", type=float, default=temperature, help="τ of the group contrast (their --temp)")
        g.add_argument("--soft_scale", type=float, default=1.0, help="s of the descending soft labels (their --scale)")
        g.add_argument("--step", type=int, default=1, help="step of the descending soft labels")
        g.add_argument("--soft_clamp", type=int, default=int(clamp), choices=[0, 1],
                       help="clamp the soft labels' logits to [0, G − 1] (1; STS-B's variant: 0)")
        g.add_argument("--soft_reduction", default="sum", choices=list(REDUCTIONS),
                       help="the soft-label CE (and --ce) summed over the batch (the authors) or averaged")
        g.add_argument("--reg_loss", default=reg_loss, choices=list(REG_LOSSES),
                       help="the group regressor's loss (their --reg_loss)")
        g.add_argument("--ce", action="store_true",
                       help="add the logit-adjusted CE(ℓ + τ_la log π, g) on the group ids")
        g.add_argument("--la_tau", type=float, default=1.0, help="τ_la of --ce (0: plain CE)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "group_dir"))

    def check(self, parser, args) -> None:
        if not self.enabled(args):
            return
        if args.groups < 1:
            parser.error(f"--groups must be ≥ 1, got {args.groups}.")
        for other in ("uvote", "vir", "bmse"):
            if flag(args, other):
                parser.error(f"--group_dir brings its own head and replaces the regression loss, as --{other} does: "
                             "pass only one of them.")
        if flag(args, "rnc_stage", "none") != "none":
            parser.error("--rnc_stage trains RnC's two stages with an L1 head: drop it (--rnc stacks with "
                         "--group_dir as a regulariser).")

    def width(self, args) -> float:
        """r: ``--group_width``, else the benchmark's label range / G."""
        given = flag(args, "group_width")
        return given if given is not None else flag(args, "group_range", 100.0) / args.groups

    def tag(self, args):
        parts = [f"groupdir_g{args.groups}_s{args.group_sigma:g}_c{args.group_contrast_weight:g}_t{args.group_temp:g}"]
        if flag(args, "group_width") is not None:
            parts.append(f"r{args.group_width:g}")
        if (args.soft_scale, args.step) != (1.0, 1):
            parts.append(f"soft{args.soft_scale:g}_{args.step}")
        if args.soft_reduction == "mean":
            parts.append("mean")
        if args.ce:
            parts.append(f"ce{args.la_tau:g}")
        return "_".join(parts)

    def head(self, args) -> dict:
        return {"head": functools.partial(GroupDIRHead, groups=args.groups)}

    def main_loss(self, args, data):
        """With ``--ce`` the group frequencies π come from the training histogram ``data.label_counts`` on
        ``data.label_bins``."""
        width = self.width(args)
        prior = None
        if args.ce:
            pi = group_frequencies(data.label_counts, data.label_bins, width, args.groups)
            prior = args.la_tau * torch.log(torch.as_tensor(pi))
        return GroupDIRTerm(GroupDIRLoss(args.groups, width, args.group_sigma, args.group_contrast_weight,
                                         args.group_temp, args.soft_scale, args.step, bool(args.soft_clamp),
                                         args.reg_loss, args.soft_reduction, prior))


METHOD = GroupDIRMethod()
