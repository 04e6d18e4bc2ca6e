"""RnC: Rank-N-Contrast (Zha, Cao, Son, Yang, Katabi, NeurIPS 2023), the representation loss.

Each sample of a batch comes in V augmented views (V = 2 in the paper), M = N·V feature rows in all. With the
feature similarity ``s_ij`` (``'l2'``: ``−‖f_i − f_j‖₂ / τ``, the paper's choice; ``'cosine'``: ``cos(f_i, f_j)
/ τ``) and the label distance ``d_ij = Σ_k |y_ik − y_jk|`` (L1 over the label dimensions), every ordered pair
(i, j ≠ i) is a positive whose negatives are the rows at least as far from the anchor in label space:

    L = −1 / (M(M − 1)) · Σ_i Σ_{j≠i} log[ exp(s_ij) / Σ_{k≠i : d_ik ≥ d_ij} exp(s_ik) ]

(the paper's L_RnC, averaged over anchors and positives). The positive itself is in its denominator, so every
term is ≤ 0 and L ≥ 0; rows with the same label as j (``d_ik == d_ij``) are negatives of j too.

The direct statement costs O(M³): one masked sum over k for every pair. Here each anchor row is sorted once by
label distance, farthest first, and a cumulative log-sum-exp along the sorted row gives, at position r, the
log-sum over the r + 1 farthest rows. The denominator of pair (i, j) is that cumulative sum at the *end of j's
tie group* (the last sorted position r with ``d_ir == d_ij``: every row at least as far as j is at or before
it), so tied rows share one denominator that contains all of them. The sum over pairs is taken in the sorted
order itself. O(M² log M) time (the sort) and O(M²) memory.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.method import Method, Step, Term, flag

FEATURE_SIMS = ("l2", "cosine")


def _l2_distance(features: torch.Tensor) -> torch.Tensor:
    """(M, D) → (M, M) Euclidean distances through the Gram matrix, with a zero gradient at distance 0.

    The batch mean is removed first: distances do not change, and the cancellation in ``‖a‖² + ‖b‖² − 2a·b``
    is relative to the centred norms, not to a common offset of the features (the error of a distance is still
    about ``sqrt(ε)·‖f‖``, as with ``torch.cdist``'s matrix-product path). Where the squared distance is 0
    (the diagonal, duplicated rows) the square root is not differentiable; the double ``where`` gives 0 there
    instead of NaN (the subgradient torch's own norms use).
    """
    centred = features - features.mean(0, keepdim=True)
    gram = centred @ centred.T
    # The norms from the Gram matrix's own diagonal: identical rows then cancel to exactly 0.
    squares = gram.diagonal()
    squared = (squares[:, None] + squares[None, :] - 2 * gram).clamp_min(0)
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)


def _label_distance(labels: torch.Tensor) -> torch.Tensor:
    """(M, K) → (M, M) L1 label distances ``Σ_k |y_ik − y_jk|``."""
    if labels.shape[1] == 1:
        return (labels - labels.T).abs()
    return (labels[:, None, :] - labels[None, :, :]).abs().sum(-1)


class _RnCSorted(torch.autograd.Function):
    """``−Σ_i Σ_r (S_ir − D_ir) / P`` over each anchor's row sorted farthest first, differentiable in ``logits``.

    ``S = logits.gather(1, order)`` (M, M − 1) holds each row's off-diagonal logits in that order,
    ``C = logcumsumexp(S)`` and ``D_ir = C_{i, end(r)}``, the cumulative sum at the end of r's tie group.
    Written out because the gradient is one more cumulative pass: with ``start(p)`` the first position of p's
    group, ``∂/∂S_ip = −(1 − Σ_{r ≥ start(p)} exp(S_ip − D_ir)) / P``, the sum being a reverse cumulative
    log-sum-exp of ``−D``; every exponent is ≤ 0 (``D_ir`` contains ``S_ip``), so no temperature overflows it.
    Autograd through ``logcumsumexp`` would spend about three times as many (M, M) passes.
    """

    @staticmethod
    def forward(ctx, logits, order, group_end, group_start, num_pairs):
        ordered = logits.gather(1, order)
        log_denominator = torch.logcumsumexp(ordered, dim=1).gather(1, group_end)
        ctx.save_for_backward(ordered, log_denominator, order, group_start)
        ctx.num_pairs, ctx.size = num_pairs, logits.shape
        return (log_denominator - ordered).sum() / num_pairs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        ordered, log_denominator, order, group_start = ctx.saved_tensors
        tail = torch.logcumsumexp(log_denominator.neg().flip(1), dim=1).flip(1)     # log Σ_{r' ≥ r} e^(−D)
        pushed = torch.exp(ordered + tail.gather(1, group_start))
        grad_ordered = (pushed - 1) * (grad / ctx.num_pairs)
        grad_logits = grad_ordered.new_zeros(ctx.size).scatter_(1, order, grad_ordered)   # diagonal: 0
        return grad_logits, None, None, None, None


def rnc_from_logits(logits: torch.Tensor, label_distance: torch.Tensor) -> torch.Tensor:
    """The RnC loss from an (M, M) logit table ``s`` and (M, M) label distances ``d`` (M ≥ 2).

    Differentiable in ``logits``; ``label_distance`` is only compared. The diagonal of both is ignored.
    """
    m = logits.shape[0]
    with torch.no_grad():
        # The anchor itself gets distance −inf: it sorts last and is cut off, leaving M − 1 columns.
        distance = label_distance.masked_fill(torch.eye(m, dtype=torch.bool, device=logits.device), -torch.inf)
        farthest, order = torch.sort(distance, dim=1, descending=True)
        farthest, order = farthest[:, :-1], order[:, :-1]
        position = torch.arange(m - 1, device=logits.device).expand(m, m - 1)
        changes = farthest[:, 1:] != farthest[:, :-1]                  # a new tie group starts at r + 1
        edge = torch.ones(m, 1, dtype=torch.bool, device=logits.device)
        is_start, is_end = torch.cat([edge, changes], 1), torch.cat([changes, edge], 1)
        group_start = torch.where(is_start, position, 0).cummax(1).values
        group_end = torch.where(is_end, position, m - 2).flip(1).cummin(1).values.flip(1)
    return _RnCSorted.apply(logits, order, group_end, group_start, m * (m - 1))


def _check_hyper(where, temperature, feature_sim):
    checks.check_positive(where, "temperature", temperature)
    checks.check_choice(where, "feature_sim", feature_sim, FEATURE_SIMS)


def rnc_loss(features, labels, temperature: float = 2.0, feature_sim: str = "l2") -> torch.Tensor:
    """Rank-N-Contrast (module docstring).

    Args:
        features: either (N, V, D), the V augmented views of N samples (the paper: V = 2), or (M, D) rows that
            already are the views (for instance ``torch.cat([view1, view2])``); un-normalised encodings.
        labels: for (N, V, D) features one label per sample, (N,), (N, 1) or (N, K), shared by its views; for
            (M, D) features one per row, (M,), (M, 1) or (M, K). Only compared (never differentiated).
        temperature: τ of the similarity (the paper's default 2).
        feature_sim: ``'l2'`` (``−‖f_i − f_j‖₂ / τ``, the paper) or ``'cosine'`` (``cos / τ``).

    Returns:
        0-d loss; float64 for float64 features, float32 otherwise (half precision and autocast included).
        At least two rows (M = N·V ≥ 2) are needed.
    """
    where = "rnc_loss"
    _check_hyper(where, temperature, feature_sim)
    features = checks.as_tensor(where, "features", features)
    checks.check_ndim(where, "features", features, (2, 3))
    features = checks.feature_batch(where, "features", features, features.dim())
    labels = checks.as_tensor(where, "labels", labels)
    labels = checks.labels_2d(where, "labels", labels, features.shape[0], "features")
    if features.dim() == 3:
        # Row n·V + v is view v of sample n; the loss does not depend on the order of the rows.
        views = features.shape[1]
        features = features.reshape(-1, features.shape[2])
        labels = labels.repeat_interleave(views, dim=0)
    m = features.shape[0]
    if m < 2:
        raise ValueError(f"{where}: `features` holds {m} row; RnC contrasts pairs and needs at least 2 "
                         "(two views of one sample, or two samples).")
    checks.check_finite(where, "features", features)
    checks.check_finite(where, "labels", labels)
    dtype = checks.compute_dtype(features)
    with torch.autocast(features.device.type, enabled=False):
        features = features.to(dtype)
        if feature_sim == "l2":
            logits = _l2_distance(features) / -temperature
        else:
            z = F.normalize(features, dim=1)
            logits = z @ z.T / temperature
        with torch.no_grad():
            label_distance = _label_distance(labels.detach().to(device=features.device, dtype=dtype))
        return rnc_from_logits(logits, label_distance)


class RnC(nn.Module):
    """:func:`rnc_loss` with its temperature and feature similarity (paper defaults: τ = 2, ``'l2'``)."""

    def __init__(self, temperature: float = 2.0, feature_sim: str = "l2"):
        super().__init__()
        _check_hyper("RnC", temperature, feature_sim)
        self.temperature, self.feature_sim = temperature, feature_sim

    def forward(self, features, labels):
        return rnc_loss(features, labels, self.temperature, self.feature_sim)

    def extra_repr(self):
        return f"temperature={self.temperature}, feature_sim={self.feature_sim!r}"


# -- wiring ---------------------------------------------------------------------------------------------------
RNC_STAGES = ("none", "encoder", "linear")


class RnCTerm(Term):
    """RnC's weight times RnC on the extra views when the batch has them (two per sample, 2N rows), else on the
    main pass; one label per sample as the view gives them (NYUD2: each image's flattened map and mean depth)."""

    reads_views = True

    def __init__(self, weight: float, loss: RnC):
        super().__init__()
        self.weight, self.loss = weight, loss

    def forward(self, step: Step) -> dict:
        if step.views_out is not None:
            features, labels = step.views_out["encoding"], step.view_targets
        else:
            features, labels = step.out["encoding"], step.targets
        features, labels = step.view.per_sample(step.share(features), step.share(labels, False))
        return {"rnc": self.weight * self.loss(features.float(), labels)}


class RnCMethod(Method):
    """RnC (Zha et al., NeurIPS 2023): one stage (``--rnc``, a regulariser beside the regression loss) or the
    paper's two (``--rnc_stage encoder``, then ``linear`` on the frozen trunk)."""

    name = "rnc"
    switch = "--rnc"
    # The linear stage trains a head without RnC, on RnC's augmentation (the crop's source and its own flag).
    independent = ("rnc_stage", "rnc_crop", "rnc_linear_aug")
    positive = ("rnc_temp",)
    non_negative = ("rnc_weight",)

    def add_args(self, parser, *, views: bool = True) -> None:
        """``views=False`` leaves out the augmentation flags (a benchmark without RnC's image augmentation: NYUD2,
        STS-B)."""
        g = parser.add_argument_group("RnC (Zha et al., NeurIPS 2023)")
        g.add_argument("--rnc", action="store_true", help="Rank-N-Contrast on the encoding, weighted by --rnc_weight")
        g.add_argument("--rnc_weight", type=float, default=1.0, help="weight of RnC beside the regression loss")
        g.add_argument("--rnc_temp", type=float, default=2.0,
                       help="τ of the similarity −‖f_i − f_j‖ / τ (RnC's --temp)")
        g.add_argument("--rnc_feature_sim", default="l2", choices=["l2", "cosine"], help="RnC's --feature_sim")
        g.add_argument("--rnc_stage", default="none", choices=list(RNC_STAGES),
                       help="the paper's two stages: 'encoder' trains the trunk with RnC alone (the head is a linear "
                            "probe on detached features), 'linear' trains the head on the frozen trunk of "
                            "--pretrained")
        if views:
            g.add_argument("--rnc_crop", default="original", choices=["original", "resized"],
                           help="where RnC's random resized crops come from: the original image (the authors') or "
                                "the image already resized to --img_size (this repo's earlier views)")
            g.add_argument("--rnc_linear_aug", default="rnc", choices=["rnc", "light"],
                           help="the augmentation of --rnc_stage linear: RnC's strong one, as the encoder stage (the "
                                "authors'), or the age benchmarks' light crop and flip (this repo's earlier)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "rnc"))

    def check(self, parser, args) -> None:
        on = lambda name: bool(flag(args, name))   # noqa: E731
        stage = flag(args, "rnc_stage", "none")
        if stage == "encoder":
            args.rnc = True
            if flag(args, "rnc_weight", 1.0) <= 0:
                parser.error("--rnc_stage encoder trains the trunk with RnC alone: --rnc_weight must be > 0.")
        if stage != "none" and (on("uvote") or on("vir") or on("bmse")):
            parser.error(f"--rnc_stage {stage} is RnC's two-stage protocol with an L1 linear head: drop --uvote, "
                         "--vir and --bmse (or use --rnc alone, the one-stage regulariser).")
        if stage == "encoder" and on("retrain_fc"):
            parser.error("--rnc_stage encoder trains the trunk; --retrain_fc trains the head of --pretrained: pass "
                         "--rnc_stage linear for RnC's second stage.")
        if stage == "linear":
            if not flag(args, "pretrained", ""):
                parser.error("--rnc_stage linear trains a head on a frozen RnC encoder: add --pretrained CKPT (the "
                             "ckpt.pth.tar of an --rnc_stage encoder run).")
            if on("rnc"):
                parser.error("--rnc_stage linear trains the head on a frozen trunk, which RnC cannot change: drop "
                             "--rnc.")
            args.retrain_fc = True

    def tag(self, args):
        stage = flag(args, "rnc_stage", "none")
        return (f"rnc_{args.rnc_weight:g}_t{args.rnc_temp:g}" + ("" if stage == "none" else f"_{stage}")
                + ("_resized" if flag(args, "rnc_crop") == "resized" else ""))

    def prepare_model(self, args, model, spec, log) -> None:
        # The encoder stage: the head is a linear probe on detached features (it tracks the encoder, so
        # validation means something, and passes no gradient back).
        model.detach_head = flag(args, "rnc_stage", "none") == "encoder"

    def term(self, args, data):
        if not args.rnc_weight:
            return None
        return RnCTerm(args.rnc_weight, RnC(args.rnc_temp, flag(args, "rnc_feature_sim", "l2")))


METHOD = RnCMethod()
