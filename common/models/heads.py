"""The regression heads every benchmark's model ends with: a point head, UVOTE's M heads, VIR's NIG head.

A model computes its features (an encoding (B, E), or a per-pixel map (B, C, H, W) for depth) and hands them to
:func:`run_head` with its head module, which it keeps under the name ``linear`` for every kind (so RRT's
``--retrain_fc``, ``--pretrained`` trunk loading and the released checkpoints' ``linear.*`` keys treat all
kinds alike):

* ``'point'`` (every reference): ``nn.Linear(E, 1)`` or ``nn.Conv2d(C, 1, k)`` (:class:`PointLinear`,
  :class:`PointConv2d`: the same layers and keys, with a head start); returns ``pred``.
* ``'uvote'`` (:class:`UVOTEHead`, Jiang et al., GCPR 2024): M (``--num_branch``) location and log-scale
  outputs, ``mus`` and ``log_sigmas`` (B, M[, H, W]); ``pred`` is their vote (``'minvar'``: the head of least
  σ, per sample or pixel) and ``sigma`` the predictive standard deviation ``√2 σ`` of that Laplace.
* ``'vir'`` (:class:`VIRHead`, Wang & Wang, NeurIPS 2023): a latent variance per feature, VIR's probabilistic
  smoothing of (mean, variance) in training (:class:`~common.fds.ProbabilisticFDS`), a sampled latent, and the
  NIG head's ``(mean, evidence, omega)`` (``vir``); ``pred`` is the NIG mean and ``sigma`` the square root of
  the epistemic variance ``β/(ν(α − 1))``, as the authors report it (``uncertainty='predictive'``: the Student-t
  predictive standard deviation).

``pred`` and ``sigma`` are (B, 1[, H, W]) in the head's units (STS-B's model multiplies both by 5). Every head
has ``start_at_labels(mean, std)`` (:mod:`common.head_start`): its initial prediction is the training labels'
mean, its spread their standard deviation, given in the head's units.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.method import flat_rows
from common.losses.uvote import LOG_SIGMA_MAX, LOG_SIGMA_MIN, RULES, VOTES, uvote_exponents, uvote_predict
from common.losses.vir import (VIR_ALPHA0, VIR_MIN_EVIDENCE, VIR_SOFTPLUS_BETA, VIR_UNCERTAINTIES,
                               vir_nig_params)

HEADS = ("point", "uvote", "vir")


def _layer(in_dim: int, out_dim: int, kernel_size: int | None, bias: bool = True) -> nn.Module:
    """``nn.Linear(in_dim, out_dim)`` for vectors, or a same-padding ``nn.Conv2d`` of ``kernel_size`` for maps."""
    if kernel_size is None:
        return nn.Linear(in_dim, out_dim, bias=bias)
    return nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias)


def _positive_std(where: str, std: float) -> float:
    std = float(std)
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"{where}.start_at_labels: `std` must be a finite positive label spread, got {std}.")
    return std


class PointLinear(nn.Linear):
    """The references' point head ``nn.Linear(E, 1)`` (same initialisation, same ``weight``/``bias`` keys) with
    a head start."""

    @torch.no_grad()
    def start_at_labels(self, mean: float, std: float) -> None:
        """bias = the label mean: the prediction of a zero feature is the mean (``std`` is not used)."""
        self.bias.fill_(float(mean))


class PointConv2d(nn.Conv2d):
    """The per-pixel point head ``nn.Conv2d(C, 1, k)`` (NYUD2's last convolution) with a head start."""

    @torch.no_grad()
    def start_at_labels(self, mean: float, std: float) -> None:
        """bias = the label mean (per pixel, as :class:`PointLinear`)."""
        self.bias.fill_(float(mean))


def _point(in_dim: int, kernel_size: int | None) -> nn.Module:
    if kernel_size is None:
        return PointLinear(in_dim, 1)
    return PointConv2d(in_dim, 1, kernel_size, padding=kernel_size // 2)


def _unrows(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) → (B, 1) or (B, 1, H, W) in ``like``'s layout (the inverse of :func:`flat_rows` for one column)."""
    if like.dim() == 2:
        return x[:, None]
    batch, _, height, width = like.shape
    return x.reshape(batch, height, width)[:, None]


class UVOTEHead(nn.Module):
    """M heads on shared features: ``mu`` (→ M locations) and ``log_sigma`` (→ M log Laplace scales).

    Args:
        in_dim: E (vectors) or C (maps).
        num_heads: M (``--num_branch``; UVOTE's default 2).
        rule: how :meth:`forward` combines the heads into ``pred``: ``'minvar'`` (UVOTE), ``'avg'`` or
            ``'avgvar'`` (:func:`~common.losses.uvote_predict`).
        kernel_size: None for (B, E) features; the convolution size for (B, C, H, W) maps (depth: 5, as ``R``).

    The optimiser trains ``log_sigma`` at ``--uvote_var_lr`` times the learning rate (0.1, as UVOTE); its
    parameters are found by the name ``log_sigma``.
    """

    def __init__(self, in_dim: int, num_heads: int = 2, rule: str = "minvar", kernel_size: int | None = None,
                 vote: str = "raw"):
        super().__init__()
        uvote_exponents(num_heads)
        if rule not in RULES:
            raise ValueError(f"UVOTEHead: `rule` must be one of {', '.join(RULES)}, got {rule!r}.")
        if vote not in VOTES:
            raise ValueError(f"UVOTEHead: `vote` must be one of {', '.join(VOTES)}, got {vote!r}.")
        self.num_heads, self.rule, self.vote = int(num_heads), rule, vote
        self.mu = _layer(in_dim, self.num_heads, kernel_size)
        self.log_sigma = _layer(in_dim, self.num_heads, kernel_size)

    @torch.no_grad()
    def init_as_authors(self) -> None:
        """The authors' start of every head layer: weights drawn from N(0, 0.01²), biases 0 (``--uvote_init
        authors``; built, the layers have PyTorch's default)."""
        for layer in (self.mu, self.log_sigma):
            layer.weight.normal_(0.0, 0.01)
            layer.bias.zero_()

    @torch.no_grad()
    def start_at_labels(self, mean: float, std: float) -> None:
        """Every head's location bias = the label mean, its log-scale bias = ``log(std/√2)``: the Laplace
        scale whose standard deviation ``√2 σ`` is the labels' (the saved ``sigma`` then starts at ``std``);
        clamped to UVOTE's log-scale range."""
        std = _positive_std("UVOTEHead", std)
        self.mu.bias.fill_(float(mean))
        log_scale = min(max(math.log(std / math.sqrt(2.0)), LOG_SIGMA_MIN), LOG_SIGMA_MAX)
        self.log_sigma.bias.fill_(log_scale)

    def forward(self, features: torch.Tensor) -> dict:
        mus, log_sigmas = self.mu(features), self.log_sigma(features)
        pred, scale = uvote_predict(flat_rows(mus), flat_rows(log_sigmas), self.rule, self.vote)
        return {"pred": _unrows(pred, mus), "sigma": _unrows(math.sqrt(2.0) * scale, mus), "mus": mus,
                "log_sigmas": log_sigmas}

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, rule={self.rule!r}, vote={self.vote!r}, "
                f"log_sigma clamp=[{LOG_SIGMA_MIN}, {LOG_SIGMA_MAX}]")


class VIRHead(nn.Module):
    """VIR's probabilistic encoder end and its Normal-Inverse-Gamma head.

    The features are the latent mean ``z̄`` (B, E) or (B, C, H, W). A per-dimension variance
    ``s = softplus(a ⊙ z̄ + b) + 1e-6`` (``latent_var``, one scale and offset per dimension or channel, b = −5 at
    the start: a latent standard deviation of about 0.08) makes the latent a distribution; in training
    :class:`~common.fds.ProbabilisticFDS` (``--fds`` with ``--vir``) calibrates ``(z̄, s)`` to the smoothed
    statistics of the label's bucket and the head reads a sample ``z = z̄ + √s ε``; in evaluation it reads
    ``z̄``. ``nig`` maps z to ``(mean, evidence, omega)`` (3 outputs); :func:`~common.losses.vir_nig_params`
    turns them into (γ, ν, α, β) with the pseudo-count scaled by the sample's LDS weight.
    """

    def __init__(self, in_dim: int, kernel_size: int | None = None, uncertainty: str = "epistemic"):
        super().__init__()
        if uncertainty not in VIR_UNCERTAINTIES:
            raise ValueError(f"VIRHead: `uncertainty` must be one of {', '.join(VIR_UNCERTAINTIES)}, got "
                             f"{uncertainty!r}.")
        self.uncertainty = uncertainty
        shape = (1, in_dim) if kernel_size is None else (1, in_dim, 1, 1)
        self.latent_scale = nn.Parameter(torch.zeros(shape))
        self.latent_offset = nn.Parameter(torch.full(shape, -5.0))
        self.nig = _layer(in_dim, 3, kernel_size)

    def latent_variance(self, features: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.latent_scale * features + self.latent_offset) + 1e-6

    @torch.no_grad()
    def start_at_labels(self, mean: float, std: float) -> None:
        """The NIG biases so that a zero latent predicts γ = the label mean with the Student-t predictive
        standard deviation ``√(β(1 + ν)/(ν(α − 1)))`` = the labels' ``std`` (evaluation's ν = n, α = 0.3 + n/2;
        the evidence bias 0 gives n = 2 + 10 log 2). The saved ``sigma`` (epistemic) then starts at
        ``std/√(1 + ν)``."""
        std = _positive_std("VIRHead", std)
        evidence = F.softplus(torch.zeros((), dtype=torch.float64), beta=VIR_SOFTPLUS_BETA) + VIR_MIN_EVIDENCE
        nu, alpha = evidence, VIR_ALPHA0 + evidence / 2
        beta = std ** 2 * nu * (alpha - 1) / (1 + nu)
        # softplus₀.₁⁻¹(β) = β + 10 log(1 − e^(−β/10)), without overflow for a large β.
        omega = beta + torch.log(-torch.expm1(-beta * VIR_SOFTPLUS_BETA)) / VIR_SOFTPLUS_BETA
        self.nig.bias.copy_(torch.tensor([float(mean), 0.0, float(omega)]))

    def forward(self, features, targets=None, fds=None, smooth: bool = False) -> dict:
        """The head's dict: ``pred``, ``sigma``, ``vir``, ``latent_var`` and ``latent`` (the latent mean and
        variance the statistics pass reads: calibrated when the FDS says so, :attr:`~common.fds.ProbabilisticFDS
        .reads_calibrated`, as FDS's in-place write; :func:`run_head` takes ``latent`` out)."""
        variance = self.latent_variance(features)
        latent, seen = features, (features, variance)
        if self.training:
            mean, spread = features, variance
            if smooth and fds is not None and targets is not None:
                mean, spread = fds.smooth(features, targets, latent_var=variance)
                if getattr(fds, "reads_calibrated", False):
                    seen = (mean, spread)
            latent = mean + spread.sqrt() * torch.randn_like(mean)
        raw = self.nig(latent)
        mean, evidence, omega = raw[:, 0:1], raw[:, 1:2], raw[:, 2:3]
        gamma, nu, alpha, beta = vir_nig_params(mean, evidence, omega)
        # The authors report the epistemic variance Var[μ] = β/(ν(α − 1)); the Student-t's is (1 + ν)·Var[μ]
        # (computed in its earlier order, to the last bit).
        if self.uncertainty == "predictive":
            variance_out = beta * (1 + nu) / (nu * (alpha - 1))
        else:
            variance_out = beta / (nu * (alpha - 1))
        return {"pred": gamma, "sigma": variance_out.sqrt(), "vir": (mean, evidence, omega), "latent_var": seen[1],
                "latent": seen[0]}

    def extra_repr(self):
        return f"alpha0={VIR_ALPHA0}, uncertainty={self.uncertainty!r}"


def regression_head(kind: str, in_dim: int, *, num_heads: int = 2, rule: str = "minvar",
                    kernel_size: int | None = None) -> nn.Module:
    """The head of ``kind`` (``'point'``, ``'uvote'``, ``'vir'``, or a method's factory ``kind(in_dim,
    kernel_size=...)``) on ``in_dim`` features; ``kernel_size`` for per-pixel maps (None: vectors)."""
    if kind == "point":
        return _point(in_dim, kernel_size)
    if kind == "uvote":
        return UVOTEHead(in_dim, num_heads, rule, kernel_size)
    if kind == "vir":
        return VIRHead(in_dim, kernel_size)
    if callable(kind):
        # A method's own head (its Method.head gives the factory): ``kind(in_dim, kernel_size=...)``.
        return kind(in_dim, kernel_size=kernel_size)
    raise ValueError(f"regression_head: `kind` must be one of {', '.join(HEADS)}, got {kind!r}.")


def run_head(head: nn.Module, features: torch.Tensor, *, fds=None, targets=None, smooth: bool = False,
             detach: bool = False) -> tuple[dict, torch.Tensor]:
    """The tail of a model: [FDS] → head.

    Args:
        head: a :func:`regression_head`.
        features: (B, E) or (B, C, H, W).
        fds: the model's FDS (:class:`~common.fds.FDS`; with a VIR head its
            :class:`~common.fds.ProbabilisticFDS`), or None.
        targets: what FDS buckets by (FDS knows the epoch: :meth:`~common.fds.FDS.set_epoch`).
        smooth: calibrate (the model is training, its FDS smoothing is on and ``targets`` are given).
        detach: the head reads the features without passing a gradient back (RnC's encoder stage: the head is
            a linear probe that only tracks the encoder).

    Returns:
        ``(outputs, calibrated)``: the head's dict (``pred``; ``sigma`` and the method's raw outputs for UVOTE
        and VIR) and the features the head read before any sampling (FDS-calibrated for point and UVOTE heads;
        for VIR the latent mean, calibrated when its FDS's statistics read the calibrated latent, the authors'
        ``--vir_smoothing``, with the head's ``latent_var`` likewise).
    """
    if isinstance(head, VIRHead):
        source = features.detach() if detach else features
        out = head(source, targets, fds, smooth)
        latent = out.pop("latent")
        return out, (features if latent is source else latent)
    calibrated = features
    if smooth and fds is not None and targets is not None:
        calibrated = fds.smooth(features, targets)
    source = calibrated.detach() if detach else calibrated
    out = head(source)
    # A point head returns the prediction; UVOTE's and a method's own head their dictionary (``pred``, …).
    return (out if isinstance(out, dict) else {"pred": out}), calibrated
