"""BSAM: balanced sharpness-aware minimisation (Liu, Wang, Duan, Li, ICCV 2025), a step rule of the training loop.

The loss of a step is the run's whole objective, ``L(θ) = (1/B) Σ_i w_i ℓ(f_θ(x_i), y_i)`` plus any terms; the
authors' is the L1 loss with ``w_i = 1/√n(y_i)``, ``n`` the training count of the sample's integer label, **not**
rescaled to mean 1 (AgeDB-DIR's mean weight is about 0.076). One step on a batch:

1. ``g = ∇L(θ)``; ``‖g‖ = ‖(‖g_p‖₂)_p‖₂`` over every parameter that has a gradient (biases and BatchNorm's affine
   parameters too); ``ε_p = ρ·g_p / (‖g‖ + 1e-16)``, so ``‖ε‖₂ = ρ‖g‖/(‖g‖ + 1e-16)``;
2. ``θ ← θ + ε``; the forward and backward pass again on the same batch: ``g̃ = ∇L(θ + ε)``;
3. ``θ ← θ − ε`` (a subtraction, not a copy of θ: θ may come back an ulp away, as the authors'); the base
   optimiser steps with ``g̃`` (its weight decay, momentum or moments, and the loop's ``--grad_clip``, act on
   ``g̃`` only).

ρ = 0 is the base optimiser's step, bit for bit, at twice the cost. The functions below work on lists of
tensors (any shapes, one per parameter), in place where they say so, on the tensors' device and with no host
read: a gradient that is not finite (an fp16 overflow under ``--amp fp16``) gives ε = 0 through ``torch.where``,
so the parameters come back exactly and the gradient scaler's own check skips the step. Under the scaler the
first pass's gradients are ``s·g``; ε is computed from them as ``ρ·(s g_p)/(‖s g‖ + s·1e-16)``, the same number
(bit for bit for the scaler's powers of two), so ``scaler.unscale_`` is left to the loop's clipping, once.

The loop runs it through :class:`BSAMStep` (a :class:`~common.method.StepRule`, ``common/trainer.py``); the
weights are the benchmark's, as :func:`weighting` says (``--bsam_weights``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from common.method import Method, StepRule, flag

#: ``--bsam_weights``: BSAM's own 1/√n, raw (the authors') or rescaled to mean 1; or the run's ``--reweight``/LDS.
WEIGHTS = ("raw", "sqrt_inv", "reweight")


def gradient_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """``‖(‖g_p‖₂)_p‖₂``, a 0-d tensor: the norm of the per-tensor norms (the whole gradient's L2 norm), in the
    gradients' promoted floating dtype (at least float32). ``grads``: a non-empty list of tensors, any shapes."""
    if not grads:
        raise ValueError("gradient_norm: `grads` is empty; pass the gradients of the parameters that have one.")
    dtype = functools.reduce(torch.promote_types, (g.dtype for g in grads))
    dtype = torch.promote_types(dtype, torch.float32)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=dtype) for g in grads]))


def perturbation(grads: list[torch.Tensor], rho: float, scale=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(ε, finite)``: ``ε_p = ρ·g_p/(‖g‖ + 1e-16)`` for each gradient (same shapes and dtypes), and whether
    ``‖g‖`` is finite (0-d bool tensor); ε = 0 where it is not.

    ``scale``: the gradients are ``s·g`` (the gradient scaler's scale, a 0-d tensor or a number; None: 1); ε is
    the unscaled gradient's, ``ρ·(s g_p)/(‖s g‖ + s·1e-16)``.
    """
    if not rho >= 0 or not math.isfinite(rho):
        raise ValueError(f"perturbation: `rho` (the perturbation radius ρ) must be finite and ≥ 0, got {rho}.")
    norm = gradient_norm(grads)
    # 1e-16 is the unscaled gradient's guard: scaled with the gradients, so ε does not depend on the scale.
    guard = 1e-16 if scale is None else scale * 1e-16
    finite = torch.isfinite(norm)
    factor = torch.where(finite, rho / (norm + guard), 0.0)
    # g·0 is NaN for an infinite g: the mask, not the factor, makes ε = 0 there.
    return [torch.where(finite, g * factor, 0.0) for g in grads], finite


@torch.no_grad()
def perturb_(parameters: list[torch.Tensor], eps: list[torch.Tensor]) -> None:
    """``θ_p ← θ_p + ε_p`` in place."""
    for parameter, step in zip(parameters, eps, strict=True):
        parameter.add_(step)


@torch.no_grad()
def restore_(parameters: list[torch.Tensor], eps: list[torch.Tensor]) -> None:
    """``θ_p ← θ_p − ε_p`` in place (the authors' subtraction: ``θ + ε − ε`` may differ from θ by an ulp)."""
    for parameter, step in zip(parameters, eps, strict=True):
        parameter.sub_(step)


class BSAMStep(StepRule):
    """The loop's step with BSAM's second pass at ``θ + ε`` (ρ = ``rho``): between the first backward pass and the
    base optimiser's step, the parameters with a gradient move by ε, the batch runs again, and they move back; the
    optimiser then steps with the second pass's gradients. Under torchrun both gradients are the processes'
    averages, so ε is the global batch's and every process moves its parameters alike."""

    def __init__(self, rho: float):
        if not rho >= 0 or not math.isfinite(rho):
            raise ValueError(f"BSAMStep: `rho` must be finite and ≥ 0, got {rho}.")
        self.rho = float(rho)

    def between(self, parameters, scale, again) -> None:
        moved = [p for p in parameters if p.grad is not None]
        if not moved:           # nothing has a gradient (an empty model): the plain step
            return
        with torch.no_grad():
            eps, finite = perturbation([p.grad for p in moved], self.rho, scale)
            perturb_(moved, eps)
        again()
        with torch.no_grad():
            restore_(moved, eps)
            # A first pass whose gradient was not finite (ε = 0) keeps the step's gradient non-finite, so the
            # scaler skips it and lowers its scale as it would without BSAM, even when the second pass is finite.
            poison = torch.where(finite, 0.0, float("nan"))
            for p in parameters:
                if p.grad is not None:
                    p.grad.add_(poison)

    def __repr__(self) -> str:
        return f"BSAMStep(rho={self.rho:g})"


# -- weights --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Weighting:
    """What a benchmark builds its training weights with: ``reweight`` (none, inverse, sqrt_inv) and ``lds`` as its
    weight builder takes them, ``rescale`` to mean 1 (DIR's normalisation) or not, and ``own``: BSAM's own 1/√n
    (the ages count each integer label, as the authors' table, rather than DIR's ages ≥ 120 in one bin)."""

    reweight: str
    lds: bool
    rescale: bool = True
    own: bool = False


def weighting(args) -> Weighting:
    """The weights a run trains with: the run's ``--reweight``/``--lds`` (DIR's, rescaled to mean 1), unless
    ``--bsam`` brings its own (``--bsam_weights raw``: 1/√n not rescaled, the authors'; ``sqrt_inv``: 1/√n
    rescaled to mean 1). ``--lds`` without ``--reweight`` smooths what UVOTE's heads or BNI's prior count, not
    sample weights."""
    mode = flag(args, "bsam_weights", "reweight") if flag(args, "bsam") else "reweight"
    if mode == "reweight":
        reweight = flag(args, "reweight", "none")
        return Weighting(reweight, bool(flag(args, "lds")) and reweight != "none")
    return Weighting("sqrt_inv", False, rescale=mode == "sqrt_inv", own=True)


def weights_note(args, weights, counts=None) -> str:
    """The log line of BSAM's own weights: what they are and their range and mean (over the training samples, or
    over ``counts`` per bin: NYUD2's pixels)."""
    import numpy as np
    weights = np.asarray(weights, dtype=np.float64)
    mean = weights.mean() if counts is None else (weights * counts).sum() / np.sum(counts)
    kind = "not rescaled (the authors')" if args.bsam_weights == "raw" else "rescaled to mean 1"
    return (f"BSAM's sample weights (--bsam_weights {args.bsam_weights}): 1/√n of each training label's count, "
            f"{kind}: mean {mean:.4g}, from {weights.min():.4g} to {weights.max():.4g}; ρ {args.rho:g}")


# -- wiring ---------------------------------------------------------------------------------------------------
class BSAMMethod(Method):
    """BSAM (Liu et al., ICCV 2025): ``--bsam`` with radius ``--rho``, the base optimiser whichever the run has;
    the weights of ``--bsam_weights`` in both passes."""

    name = "bsam"
    switch = "--bsam"
    non_negative = ("rho",)

    def add_args(self, parser, *, rho=0.2, weights="raw") -> None:
        """``rho`` and ``weights`` are the benchmark's defaults (the authors': AgeDB 0.2, IMDB-WIKI 0.05, raw
        weights; NYUD2 and STS-B have no published run)."""
        g = parser.add_argument_group("BSAM (Liu et al., ICCV 2025)")
        g.add_argument("--bsam", action="store_true",
                       help="balanced sharpness-aware minimisation: each step's gradient is taken at the parameters "
                            "moved ρ along the normalised gradient (a second forward and backward pass per step, "
                            "about twice the cost)")
        g.add_argument("--rho", type=float, default=rho, help="ρ, the perturbation's radius (the authors' name)")
        g.add_argument("--bsam_weights", default=weights, choices=list(WEIGHTS),
                       help="the sample weights of both passes: raw 1/√n of the label's training count (the authors', "
                            "not rescaled), sqrt_inv (the same rescaled to mean 1, DIR's --reweight sqrt_inv), or "
                            "reweight (the run's --reweight/--lds; none: plain SAM)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "bsam"))

    def check(self, parser, args) -> None:
        if not self.enabled(args):
            return
        if not (args.rho >= 0 and math.isfinite(args.rho)):
            parser.error(f"--rho must be a finite number ≥ 0 (the perturbation's radius), got {args.rho}.")
        mode = args.bsam_weights
        if mode == "reweight":
            return
        reweight = flag(args, "reweight", "none")
        if reweight != "none":
            parser.error(f"--bsam_weights {mode} gives every sample BSAM's own 1/√n weight in place of --reweight "
                         f"{reweight}: drop --reweight (and --lds), or pass --bsam_weights reweight to train on its "
                         "weights.")
        for switch in ("bmse", "uvote"):
            if flag(args, switch):
                parser.error(f"--{switch} takes no sample weights, so --bsam_weights {mode} would change nothing: "
                             "pass --bsam_weights reweight.")

    def tag(self, args):
        return f"bsam_{args.rho:g}_{args.bsam_weights}"

    def step_rule(self, args):
        return BSAMStep(args.rho) if self.enabled(args) else None


METHOD = BSAMMethod()
