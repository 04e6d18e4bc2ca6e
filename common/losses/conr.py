"""ConR: contrastive regularizer for deep imbalanced regression (Keramati et al., ICLR 2024).

Two variants, kept as the reference code computes them:

* :func:`conr_loss`, the age variant (AgeDB-DIR, IMDB-WIKI-DIR): features of the two augmented views
  ``(2B, D)``, exponential pushing weight ``ω_i·exp(η·Δ_ij)``, anchor-weighted mean.
* :func:`conr_dense_loss`, the depth variant (NYUD2-DIR): one vector per image (the whole feature map),
  linear pushing weight ``η·Δ_ij·ω̄_i``, ``|P_i| + 1`` normaliser, unweighted mean.

For anchor ``i`` with cosine logits ``s_ij = z_i·z_j/τ``, positives ``P_i = {j ≠ i : Δ_ij ≤ w}`` and negatives
``N_i = {j : Δ_ij > w, δ_ij ≤ w}`` (label-far but prediction-close, "confusions"), the denominator is

    D_i = Σ_{j∈P_i} exp(s_ij) + (M − |P_i|) + Σ_{j∈N_i} π_ij exp(s_ij)

where the middle constant is an artefact of the reference code (every masked-out entry, the diagonal
included, adds exp(0) = 1); ``denominator='paper'`` drops it. ``ℓ_i = mean_{j∈P_i} (log D_i − s_ij)``.
Anchors without a negative contribute 0; anchors without a positive are skipped too (the reference returns
NaN for the whole batch, ``docs/reference-differences.md``); both still count in the ``1/M`` mean.
The denominator is evaluated as a log-sum-exp, so small temperatures do not overflow.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.method import Method, Step, Term, flag

DENOMINATORS = ("reference", "paper")


def _pairwise_distance(values: torch.Tensor) -> torch.Tensor:
    """(M, K) → (M, M) Euclidean distances; exactly ``|v_i − v_j|`` for K = 1 (threshold tests rely on it)."""
    if values.shape[1] == 1:
        return (values - values.T).abs()
    return (values[:, None, :] - values[None, :, :]).norm(dim=-1)


class _ConRSum(torch.autograd.Function):
    """``Σ_i c_i (|P_i| log D_i − Σ_{j∈P_i} s_ij)`` with ``s = cos/τ``, differentiable in ``cos`` only.

    Written out because autograd would spend about twice as many (M, M) passes: the forward exponentiates in
    place and keeps the exponentials, and the gradient ``c_i (|P_i| e_ij / Σ_k e_ik − P_ij) / τ`` is two passes.
    """

    @staticmethod
    def forward(ctx, cosine, inv_temperature, log_factor, positives, log_constant, anchor_coef, num_positives):
        logits = torch.add(log_factor, cosine, alpha=inv_temperature)       # −inf where left out
        row_max = logits.amax(1)
        if log_constant is not None:
            row_max = torch.maximum(row_max, log_constant)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        exps = logits.sub_(row_max[:, None]).exp_()
        total = exps.sum(1)
        if log_constant is not None:
            total = total + torch.exp(log_constant - row_max)
        # Rows with an empty sum are inactive (coefficient 0); keep their log finite.
        total = torch.where(total > 0, total, torch.ones_like(total))
        log_denominator = row_max + torch.log(total)
        positive_logits = (cosine * positives).sum(1) * inv_temperature
        ctx.save_for_backward(exps, positives, anchor_coef * num_positives / total, anchor_coef)
        ctx.inv_temperature = inv_temperature
        return (anchor_coef * (num_positives * log_denominator - positive_logits)).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        exps, positives, exp_coef, positive_coef = ctx.saved_tensors
        scale = grad * ctx.inv_temperature
        grad_cosine = exps * (exp_coef * scale)[:, None]
        grad_cosine.addcmul_(positives, (positive_coef * scale)[:, None], value=-1)
        return grad_cosine, None, None, None, None, None, None


def _conr_from_cosine(cosine, temperature, label_distance, pred_distance, anchor_weights, *, window, eta,
                      linear_pushing, plus_one_normaliser, anchor_weighted, denominator):
    """The ConR loss from the (M, M) cosine matrix ``z zᵀ`` and (M, M) label/prediction distances.

    ``label_distance`` and ``pred_distance`` are scratch: they are overwritten.
    """
    m = cosine.shape[0]
    with torch.no_grad():
        close = label_distance <= window
        negatives = (pred_distance <= window).logical_and_(~close)
        positives = close.fill_diagonal_(False)
        num_positives = positives.sum(1).to(cosine.dtype)
        if linear_pushing:
            log_factor = label_distance.mul_(eta * anchor_weights[:, None]).log_()
        else:
            log_factor = label_distance.mul_(eta).add_(torch.log(anchor_weights)[:, None])
        # log of the factor each entry of the row enters the denominator with (−inf: left out).
        log_factor.masked_fill_(~negatives, -torch.inf).masked_fill_(positives, 0.0)
        active = (num_positives > 0) & negatives.any(1)
        normaliser = num_positives + 1 if plus_one_normaliser else num_positives.clamp(min=1)
        anchor_coef = torch.where(active, (anchor_weights if anchor_weighted else 1.0) / (normaliser * m), 0.0)
        log_constant = torch.log(m - num_positives) if denominator == "reference" else None  # ≥ log 1: diagonal
    return _ConRSum.apply(cosine, 1.0 / temperature, log_factor, positives.to(cosine.dtype), log_constant,
                          anchor_coef, num_positives)


def _check_hyper(where, window, temperature, eta, denominator):
    checks.check_positive(where, "temperature", temperature)
    checks.check_positive(where, "window", window, allow_zero=True)
    checks.check_positive(where, "eta", eta, allow_zero=True)
    checks.check_choice(where, "denominator", denominator, DENOMINATORS)


def conr_loss(features, targets, preds, weights=None, *, window=1.0, temperature=0.07, eta=0.01,
              denominator="reference") -> torch.Tensor:
    """ConR, age variant (docs/methods.md §4.1).

    Args:
        features: (M, D) encodings of the contrastive views (M = 2B in the age loop), un-normalised.
        targets: (M,), (M, 1) or (M, K) labels; distances are Euclidean over K (``|·|`` for K = 1).
        preds: predictions of the same views, shape of ``targets``; only compared, never differentiated.
        weights: per-anchor sample weights ω: None (ones), a scalar, (M,) or (M, 1).
        window: ``w``, the label/prediction closeness threshold (years).
        temperature: ``τ`` of the cosine logits, honoured as passed (the age CLI default is 0.07).
        eta: ``η`` of the pushing weight ``ω_i·exp(η Δ_ij)``.
        denominator: ``'reference'`` (with the ``M − |P_i|`` constant) or ``'paper'``.

    Returns:
        0-d loss; float64 for float64 features, float32 otherwise.
    """
    where = "conr_loss"
    _check_hyper(where, window, temperature, eta, denominator)
    features = checks.feature_batch(where, "features", features, 2)
    m = features.shape[0]
    targets = checks.labels_2d(where, "targets", checks.as_tensor(where, "targets", targets), m, "features")
    preds = checks.as_tensor(where, "preds", preds)
    checks.check_ndim(where, "preds", preds, (1, 2))
    checks.check_rows(where, "preds", preds, "features", m)
    preds = preds.reshape(m, -1)
    if preds.shape != targets.shape:
        raise ValueError(f"{where}: `preds` {tuple(preds.shape)} and `targets` {tuple(targets.shape)} must "
                         "have the same label dimension.")
    checks.check_finite(where, "features", features)
    checks.check_finite(where, "targets", targets)
    checks.check_finite(where, "preds", preds)
    dtype = checks.compute_dtype(features)
    with torch.autocast(features.device.type, enabled=False):
        features = features.to(dtype)
        anchor_weights = checks.sample_weights(where, weights, m, features, "features")
        z = F.normalize(features, dim=1)
        with torch.no_grad():
            label_distance = _pairwise_distance(targets.detach().to(dtype))
            pred_distance = _pairwise_distance(preds.detach().to(dtype))
        return _conr_from_cosine(z @ z.T, temperature, label_distance, pred_distance, anchor_weights.detach(),
                                     window=window, eta=eta, linear_pushing=False, plus_one_normaliser=False,
                                     anchor_weighted=True, denominator=denominator)


def conr_dense_loss(features, depth, output, weights=None, *, window=0.2, temperature=0.2, eta=0.2,
                    denominator="reference") -> torch.Tensor:
    """ConR, depth variant (docs/methods.md §4.2): one contrastive sample per image.

    Args:
        features: (B, C, H, W) feature map (NYUD2: the 128-channel map before the last conv); each image's
            whole map is flattened and L2-normalised as one vector.
        depth: (B, 1, H, W) ground-truth depth (metres); pooled to the image mean.
        output: (B, 1, H, W) predicted depth; pooled to the image mean, compared only.
        weights: None or (B, 1, H, W) pixel weights (LDS map); pooled to the image mean.
        window, temperature, eta, denominator: as :func:`conr_loss`; the pushing weight is linear,
            ``π_ij = η·Δ_ij·ω̄_i``, the normaliser ``|P_i| + 1``, and the mean is not anchor-weighted.
    """
    where = "conr_dense_loss"
    _check_hyper(where, window, temperature, eta, denominator)
    features, depth = checks.depth_maps(where, features, depth)
    b, _, h, w = features.shape
    checks.check_same_shape(where, "output", checks.as_tensor(where, "output", output), "depth", depth)
    if weights is not None:
        checks.check_same_shape(where, "weights", checks.as_tensor(where, "weights", weights), "depth", depth)
        checks.check_non_negative(where, "weights", weights)
    checks.check_finite(where, "features", features)
    checks.check_finite(where, "depth", depth)
    checks.check_finite(where, "output", output)
    dtype = checks.compute_dtype(features)
    with torch.autocast(features.device.type, enabled=False):
        z = F.normalize(features.to(dtype).reshape(b, -1), dim=1)
        with torch.no_grad():
            label_distance = _pairwise_distance(depth.detach().to(dtype).mean(dim=(1, 2, 3))[:, None])
            pred_distance = _pairwise_distance(output.detach().to(dtype).mean(dim=(1, 2, 3))[:, None])
            image_weights = (torch.ones(b, dtype=dtype, device=z.device) if weights is None
                             else weights.detach().to(dtype).mean(dim=(1, 2, 3)))
        return _conr_from_cosine(z @ z.T, temperature, label_distance, pred_distance, image_weights,
                                     window=window, eta=eta, linear_pushing=True, plus_one_normaliser=True,
                                     anchor_weighted=False, denominator=denominator)


class ConR(nn.Module):
    """:func:`conr_loss` with its hyper-parameters (CLI ``-w``, ``-t``, ``-e``)."""

    def __init__(self, window=1.0, temperature=0.07, eta=0.01, denominator="reference"):
        super().__init__()
        _check_hyper("ConR", window, temperature, eta, denominator)
        self.window, self.temperature, self.eta, self.denominator = window, temperature, eta, denominator

    def forward(self, features, targets, preds, weights=None):
        return conr_loss(features, targets, preds, weights, window=self.window, temperature=self.temperature,
                         eta=self.eta, denominator=self.denominator)

    def extra_repr(self):
        return (f"window={self.window}, temperature={self.temperature}, eta={self.eta}, "
                f"denominator={self.denominator!r}")


class ConRDense(ConR):
    """:func:`conr_dense_loss` with its hyper-parameters (NYUD2 defaults)."""

    def __init__(self, window=0.2, temperature=0.2, eta=0.2, denominator="reference"):
        super().__init__(window, temperature, eta, denominator)

    def forward(self, features, depth, output, weights=None):
        return conr_dense_loss(features, depth, output, weights, window=self.window,
                               temperature=self.temperature, eta=self.eta, denominator=self.denominator)


# -- wiring ---------------------------------------------------------------------------------------------------
class ConRTerm(Term):
    """β · ConR on the extra views when the batch has them (the age protocol, forwarded without FDS), else on the
    main pass; the dense per-image variant on per-pixel maps (NYUD2)."""

    reads_views = True

    def __init__(self, weight: float, loss: ConR, dense: bool = False):
        super().__init__()
        self.weight, self.loss, self.dense = weight, loss, dense

    def forward(self, step: Step) -> dict:
        if step.views_out is not None:
            out, labels, weights = step.views_out, step.view_targets, step.view_weights
        else:
            out, labels, weights = step.out, step.targets, step.weights
        # The dense variant compares float32 depth maps (the references' per-pixel output).
        preds = out["pred"].float() if self.dense else out["pred"]
        weights = step.share(weights, False) if weights is not None else None
        return {"conr": self.weight * self.loss(step.share(out["encoding"]), step.share(labels, False),
                                                step.share(preds.detach(), False), weights)}


class ConRMethod(Method):
    """ConR (Keramati et al., ICLR 2024), with ``--conr`` at weight β (``--beta``)."""

    name = "conr"
    switch = "--conr"
    positive = ("conr_temperature",)
    non_negative = ("conr_window", "conr_beta", "conr_eta")

    def add_args(self, parser, *, window=1.0, beta=4.0, temperature=0.07, eta=0.01, views=True) -> None:
        """``views=False`` leaves out ``--conr_views`` (a benchmark whose ConR runs on one view: NYUD2, STS-B)."""
        g = parser.add_argument_group("ConR (Keramati et al., ICLR 2024)")
        g.add_argument("--conr", action="store_true", help="contrastive regularizer")
        g.add_argument("-w", dest="conr_window", type=float, default=window, help="label window")
        g.add_argument("--beta", dest="conr_beta", type=float, default=beta, help="ConR weight")
        g.add_argument("-t", dest="conr_temperature", type=float, default=temperature, help="temperature")
        g.add_argument("-e", dest="conr_eta", type=float, default=eta, help="pushing strength")
        g.add_argument("--conr_denominator", default="reference", choices=["reference", "paper"])
        if views:
            g.add_argument("--conr_views", type=int, default=3, choices=[3, 2],
                           help="forward passes per image with ConR: 3 (the references: the image and two views) or "
                                "2 (the regression loss also on the two views)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "conr"))

    def check(self, parser, args) -> None:
        if self.enabled(args) and args.conr_temperature <= 0:
            parser.error("-t (ConR temperature) must be positive.")
        if self.enabled(args) and flag(args, "batch_size", 2) == 1:
            print("warning: --conr with --batch_size 1 has no pair of samples to contrast: ConR adds nothing to the "
                  "loss (raise --batch_size).", file=sys.stderr)

    def tag(self, args):
        return f"conr_{args.conr_beta:g}_w{args.conr_window:g}_t{args.conr_temperature:g}_e{args.conr_eta:g}"

    def term(self, args, data):
        if not args.conr_beta:
            return None
        dense = data.view.dense
        loss = (ConRDense if dense else ConR)(args.conr_window, args.conr_temperature, args.conr_eta,
                                              flag(args, "conr_denominator", "reference"))
        return ConRTerm(args.conr_beta, loss, dense)


METHOD = ConRMethod()
