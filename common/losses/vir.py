"""VIR: variational imbalanced regression (Wang & Wang, NeurIPS 2023), the Normal-Inverse-Gamma head's loss.

The predictor outputs, per sample, the four parameters of a Normal-Inverse-Gamma (NIG) distribution over the
label's mean and variance, ``(γ, ν, α, β)`` with ν > 0, α > 1, β > 0. Its marginal likelihood of a label is a
Student-t with 2α degrees of freedom, location γ and squared scale ``β(1 + ν) / (να)``, whose negative log is
(deep evidential regression, Amini et al., NeurIPS 2020; ``Ω = 2β(1 + ν)``)

    NLL = ½ log(π/ν) − α log Ω + (α + ½) log((y − γ)² ν + Ω) + log Γ(α) − log Γ(α + ½)

and the evidence regulariser ``R = |y − γ| (2ν + α)`` penalises confidence (ν, α: pseudo-counts of the
observations behind the mean and the variance) where the mean is wrong. The loss is ``mean(w ⊙ (NLL + λR))``,
λ = 0.01.

VIR makes the head imbalance-aware through the pseudo-counts: in training, a sample whose label is rare adds
more pseudo-observations, ``ν = ν₀ + n``, ``α = α₀ + n/2`` with n the sample's LDS re-weighting weight
(:func:`vir_nig_update`: the NIG conjugate update with n observations). The predictions are the mean γ, the
aleatoric variance ``E[σ²] = β/(α − 1)`` and the epistemic variance ``Var[μ] = β/(ν(α − 1))``
(:func:`vir_predict`).

VIR's head (:func:`vir_nig_params`) does not output (ν, α) directly: it outputs a pseudo-count n ≥ 2 and
sets ``ν = n·w``, ``α = α₀ + n·w/2`` (α₀ = 0.3), the conjugate update of an improper prior (ν = 0, α = α₀) with
n·w observations, w being the sample's LDS weight in training (1 in evaluation). Its probabilistic FDS lives in
:class:`common.fds.ProbabilisticFDS`, the head in :class:`common.models.heads.VIRHead`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.method import Method, Step, Term, flag, flat_rows

_LOG_PI = math.log(math.pi)
#: α of VIR's improper NIG prior (ν₀ = 0, α₀ = 0.3), and the least pseudo-count its head predicts.
VIR_ALPHA0, VIR_MIN_EVIDENCE = 0.3, 2.0
#: β of the softplus that makes the head's pseudo-count and β positive (VIR's ``Softplus(beta=0.1)``).
VIR_SOFTPLUS_BETA = 0.1
#: the test-time uncertainty saved as ``sigma``: √ of the epistemic variance β/(ν(α − 1)) (the authors') or the
#: Student-t predictive standard deviation √(β(1 + ν)/(ν(α − 1))) (this repo's earlier choice).
VIR_UNCERTAINTIES = ("epistemic", "predictive")


def _vector(where, name, value, like):
    """(N,) or (N, 1) → finite (N,) in ``like``'s dtype and device, N = ``len(like)``."""
    value = checks.finite_labels_1d(where, name, value, like.shape[0], "gamma")
    return value.to(device=like.device, dtype=like.dtype)


def _nig(where, gamma, nu, alpha, beta=None, target=None):
    """The NIG parameters given (and the labels) as (N,) tensors of one compute dtype and device; ν, α, β
    must be > 0."""
    gamma = checks.as_tensor(where, "gamma", gamma)
    checks.check_floating(where, "gamma", gamma)
    checks.check_nonempty(where, "gamma", gamma)
    like = torch.empty(gamma.shape[0], dtype=checks.compute_dtype(gamma), device=gamma.device)
    parts = []
    for name, value in (("gamma", gamma), ("nu", nu), ("alpha", alpha), ("beta", beta), ("target", target)):
        if value is None:
            continue
        value = _vector(where, name, value, like)
        if name in ("nu", "alpha", "beta") and checks.values_checked() and bool((value <= 0).any()):
            raise ValueError(f"{where}: `{name}` must be > 0 (an NIG parameter), got minimum {value.min().item()}.")
        parts.append(value)
    return parts


def _nll(gamma, nu, alpha, beta, target):
    omega = 2 * beta * (1 + nu)
    return (0.5 * (_LOG_PI - torch.log(nu)) - alpha * torch.log(omega)
            + (alpha + 0.5) * torch.log((target - gamma) ** 2 * nu + omega)
            + torch.lgamma(alpha) - torch.lgamma(alpha + 0.5))


def nig_nll(gamma, nu, alpha, beta, target) -> torch.Tensor:
    """Per-sample NIG negative log-likelihood (module docstring), ``−log St(y; 2α, γ, β(1 + ν)/(να))``.

    Args:
        gamma, nu, alpha, beta: (N,) or (N, 1) NIG parameters; ν, α, β > 0 (α > 0 suffices here).
        target: (N,) or (N, 1) labels.

    Returns:
        (N,) NLL, float32 (half precision, autocast) or the inputs' dtype.
    """
    gamma, nu, alpha, beta, target = _nig("nig_nll", gamma, nu, alpha, beta, target)
    with torch.autocast(gamma.device.type, enabled=False):
        return _nll(gamma, nu, alpha, beta, target)


def nig_regularizer(gamma, nu, alpha, target) -> torch.Tensor:
    """Per-sample evidence regulariser ``|y − γ| (2ν + α)``; shapes as :func:`nig_nll`, (N,) result."""
    gamma, nu, alpha, target = _nig("nig_regularizer", gamma, nu, alpha, target=target)
    with torch.autocast(gamma.device.type, enabled=False):
        return (target - gamma).abs() * (2 * nu + alpha)


def vir_nig_update(gamma, nu, alpha, beta, counts, obs_mean=None, obs_var=None):
    """The NIG conjugate update with n (possibly fractional) pseudo-observations per sample.

    ``ν = ν₀ + n`` and ``α = α₀ + n/2`` always. VIR passes the sample's LDS weight as n and no observation
    statistics: γ and β are then returned unchanged. With the n observations' mean ``x̄`` (``obs_mean``) and
    biased variance ``s²`` (``obs_var``, i.e. ``Σ(x − x̄)² / n``), the full update also moves

        γ = (ν₀ γ₀ + n x̄) / (ν₀ + n),        β = β₀ + n s² / 2 + n ν₀ (x̄ − γ₀)² / (2 (ν₀ + n)),

    so that updating with two sets of observations in turn equals one update with their union.

    Args:
        gamma, nu, alpha, beta: (N,) or (N, 1) prior parameters (ν₀, α₀, β₀ > 0).
        counts: n ≥ 0, a scalar, (N,) or (N, 1) (the LDS weights of the batch).
        obs_mean: None, or (N,)/(N, 1) observation means (with it, ``obs_var`` defaults to 0).
        obs_var: None, or (N,)/(N, 1) non-negative biased observation variances (needs ``obs_mean``).

    Returns:
        ``(gamma, nu, alpha, beta)``, four (N,) tensors (differentiable in every input).
    """
    where = "vir_nig_update"
    gamma, nu, alpha, beta = _nig(where, gamma, nu, alpha, beta)
    n = gamma.shape[0]
    if isinstance(counts, torch.Tensor) and counts.dim() > 0:
        counts = _vector(where, "counts", counts, gamma)
    else:
        if not isinstance(counts, (int, float, torch.Tensor)):
            raise ValueError(f"{where}: `counts` must be a number or a tensor, got {type(counts).__name__}.")
        counts = torch.as_tensor(float(counts), dtype=gamma.dtype, device=gamma.device).expand(n)
        checks.check_finite(where, "counts", counts)
    if bool((counts < 0).any()):
        raise ValueError(f"{where}: `counts` (pseudo-observations per sample) must be ≥ 0.")
    if obs_var is not None and obs_mean is None:
        raise ValueError(f"{where}: `obs_var` needs `obs_mean` (the observations' mean).")
    with torch.autocast(gamma.device.type, enabled=False):
        new_nu, new_alpha = nu + counts, alpha + counts / 2
        if obs_mean is None:
            return gamma, new_nu, new_alpha, beta
        mean = _vector(where, "obs_mean", obs_mean, gamma)
        var = torch.zeros_like(mean) if obs_var is None else _vector(where, "obs_var", obs_var, gamma)
        if bool((var < 0).any()):
            raise ValueError(f"{where}: `obs_var` must be ≥ 0 (a biased variance of the observations).")
        new_gamma = (nu * gamma + counts * mean) / new_nu
        new_beta = beta + counts * var / 2 + counts * nu * (mean - gamma) ** 2 / (2 * new_nu)
        return new_gamma, new_nu, new_alpha, new_beta


def vir_loss(gamma, nu, alpha, beta, target, weights=None, counts=None, reg_weight: float = 0.01) -> torch.Tensor:
    """VIR's NIG loss ``mean_n w_n (NLL_n + λ R_n)`` (module docstring).

    Args:
        gamma, nu, alpha, beta: (N,) or (N, 1) NIG parameters from the head.
        target: (N,) or (N, 1) labels.
        weights: None (ones), a scalar, (N,) or (N, 1) per-sample loss weights (VIR re-weights through
            ``counts`` instead; the two can be combined).
        counts: None, or the pseudo-counts n of :func:`vir_nig_update` (scalar, (N,) or (N, 1)), added to
            ν and α/2 before the loss (γ and β unchanged).
        reg_weight: λ of the evidence regulariser (0.01).

    Returns:
        0-d loss, float32 (half precision, autocast) or the inputs' dtype.
    """
    where = "vir_loss"
    checks.check_positive(where, "reg_weight", reg_weight, allow_zero=True)
    if counts is not None:
        gamma, nu, alpha, beta = vir_nig_update(gamma, nu, alpha, beta, counts)
    gamma, nu, alpha, beta, target = _nig(where, gamma, nu, alpha, beta, target)
    with torch.autocast(gamma.device.type, enabled=False):
        weights = checks.sample_weights(where, weights, gamma.shape[0], gamma, "gamma")
        per_sample = _nll(gamma, nu, alpha, beta, target) + reg_weight * (target - gamma).abs() * (2 * nu + alpha)
        return (weights * per_sample).mean()


def vir_predict(gamma, nu, alpha, beta):
    """Prediction and uncertainties of an NIG head.

    Returns:
        ``(mean, aleatoric, epistemic)``: γ, ``β/(α − 1)`` and ``β/(ν(α − 1))``, three (N,) tensors; the two
        variances are +inf where α ≤ 1 (undefined). Their sum is the Student-t predictive variance
        ``β(1 + ν)/(ν(α − 1))``.
    """
    gamma, nu, alpha, beta = _nig("vir_predict", gamma, nu, alpha, beta)
    with torch.autocast(gamma.device.type, enabled=False):
        excess = alpha - 1
        aleatoric = torch.where(excess > 0, beta / excess.clamp_min(torch.finfo(beta.dtype).tiny), torch.inf)
        return gamma, aleatoric, aleatoric / nu


def vir_nig_params(mean, evidence_logit, omega_logit, weights=None):
    """VIR's NIG parameters from its head's three outputs.

    ``n = softplus₀.₁(evidence_logit) + 2`` (a pseudo-count, ≥ 2), scaled by the sample's LDS weight ``w`` in
    training (``weights``; None in evaluation); ``γ = mean``, ``ν = n·w``, ``α = 0.3 + n·w/2``,
    ``β = softplus₀.₁(omega_logit)``, where ``softplus₀.₁(x) = 10 log(1 + e^(x/10))``.

    Args:
        mean, evidence_logit, omega_logit: tensors of one shape, (B, 1) or (B, 1, H, W).
        weights: None, or the batch's per-sample (or per-pixel) LDS weights, broadcastable to that shape.

    Returns:
        ``(gamma, nu, alpha, beta)``, four tensors of that shape, differentiable.
    """
    evidence = F.softplus(evidence_logit, beta=VIR_SOFTPLUS_BETA) + VIR_MIN_EVIDENCE
    if weights is not None:
        evidence = evidence * weights.to(evidence.dtype)
    return mean, evidence, VIR_ALPHA0 + evidence / 2, F.softplus(omega_logit, beta=VIR_SOFTPLUS_BETA)


class VIRLoss(nn.Module):
    """:func:`vir_loss` with its regulariser weight λ (0.01)."""

    def __init__(self, reg_weight: float = 0.01):
        super().__init__()
        checks.check_positive("VIRLoss", "reg_weight", reg_weight, allow_zero=True)
        self.reg_weight = reg_weight

    def forward(self, gamma, nu, alpha, beta, target, weights=None, counts=None):
        return vir_loss(gamma, nu, alpha, beta, target, weights, counts, self.reg_weight)

    def extra_repr(self):
        return f"reg_weight={self.reg_weight}"


# -- wiring ---------------------------------------------------------------------------------------------------
class VIRTerm(Term):
    """VIR's NIG loss as the main loss: the head's ``vir = (mean, evidence, omega)`` (B, 1[, H, W]) with the
    pseudo-count scaled by the batch's weights (the LDS weights; ones without re-weighting), against the labels
    on the view's scale."""

    def __init__(self, loss: VIRLoss):
        super().__init__()
        self.loss = loss

    def forward(self, step: Step) -> dict:
        gamma, nu, alpha, beta = vir_nig_params(*(part.float() for part in step.out["vir"]), step.weights)
        return {"vir": self.loss(flat_rows(gamma), flat_rows(nu), flat_rows(alpha), flat_rows(beta),
                                 flat_rows(step.targets).float() / step.view.label_scale)}


class VIRMethod(Method):
    """VIR (Wang & Wang, NeurIPS 2023): an NIG head with LDS-scaled pseudo-counts; with ``--fds``, VIR's
    probabilistic smoothing."""

    name = "vir"
    switch = "--vir"
    non_negative = ("vir_reg_weight",)
    # The smoothing decides what the FDS buffers of a checkpoint hold.
    model_flags = ("vir", "vir_smoothing")
    eval_defaults = {"vir_sigma": "epistemic"}

    def add_args(self, parser) -> None:
        g = parser.add_argument_group("VIR (Wang & Wang, NeurIPS 2023)")
        g.add_argument("--vir", action="store_true",
                       help="NIG head with LDS-scaled pseudo-counts; with --fds, VIR's probabilistic smoothing")
        g.add_argument("--vir_reg_weight", type=float, default=0.01, help="λ of the NIG evidence regulariser")
        g.add_argument("--vir_smoothing", default="authors", choices=["authors", "mixture"],
                       help="VIR's smoothing with --fds: authors (spread smoothed with the kernel k, the bucket "
                            "mean's variance with k², the variance calibrated as their code does, statistics from "
                            "the calibrated latent) or mixture (this repo's earlier reading: both variances with k², "
                            "s·f, statistics from the uncalibrated latent)")
        g.add_argument("--vir_sigma", default=None, choices=list(VIR_UNCERTAINTIES),
                       help="the saved test-time σ: epistemic (√(β/(ν(α − 1))), the authors') or predictive (the "
                            "Student-t standard deviation, this repo's earlier σ) (default: an evaluated checkpoint's, "
                            "else epistemic)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "vir"))

    def check(self, parser, args) -> None:
        if not self.enabled(args):
            return
        if flag(args, "bmse"):
            parser.error("--vir trains its own likelihood in place of the regression loss: drop --bmse.")
        for name in ("fds_alias_last_epoch", "fds_skip_invalid_buckets"):
            if flag(args, name):
                parser.error(f"--{name} reproduces a reference FDS's behaviour; with --vir, --fds is VIR's "
                             f"probabilistic smoothing, which has none: drop --{name}.")

    def tag(self, args):
        return f"vir_{args.vir_reg_weight:g}" + ("_mixture" if flag(args, "vir_smoothing") == "mixture" else "")

    def head(self, args) -> dict:
        return {"head": "vir"}

    def prepare_model(self, args, model, spec, log) -> None:
        """The heads' saved uncertainty (``--vir_sigma``)."""
        if not self.enabled(args):
            return
        # The heads are found by what they have (common.models.heads.VIRHead imports this file).
        for module in model.modules():
            if hasattr(module, "uncertainty") and callable(getattr(module, "latent_variance", None)):
                module.uncertainty = flag(args, "vir_sigma") or "epistemic"

    def main_loss(self, args, data):
        return VIRTerm(VIRLoss(args.vir_reg_weight))


METHOD = VIRMethod()
