"""Weighted regression losses: MSE, L1, focal-MSE, focal-L1 and Huber (Yang et al., ICML 2021, "DIR").

Every loss is ``mean(w ⊙ ℓ(ŷ − y))`` over all elements: the batch mean of weighted terms, not normalised
by ``Σ w``. The weights (from ``--reweight``/LDS) are honoured by every loss; the ConR/RankSim/SRL copies of
the reference code silently drop them for focal and Huber (a positional-argument bug, see
``docs/reference-differences.md``).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from common import checks
from common.method import Method, Step, Term, flag

REGRESSION_LOSSES = ("mse", "l1", "focal_mse", "focal_l1", "huber")


def _prepare(where: str, pred, target, weights):
    pred = checks.as_tensor(where, "pred", pred)
    target = checks.as_tensor(where, "target", target)
    checks.check_floating(where, "pred", pred)
    checks.check_nonempty(where, "pred", pred)
    checks.check_same_shape(where, "target", target, "pred", pred)
    checks.check_finite(where, "pred", pred)
    checks.check_finite(where, "target", target)
    if weights is None:
        return pred, target, None
    weights = checks.as_tensor(where, "weights", weights)
    n = pred.shape[0]
    if weights.dim() == 1 and weights.shape[0] == n and pred.dim() > 1:
        # One weight per sample: (N,) → (N, 1, ...) so that it broadcasts over the other dimensions.
        weights = weights.reshape((n,) + (1,) * (pred.dim() - 1))
    try:
        ok = torch.broadcast_shapes(weights.shape, pred.shape) == pred.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{where}: `weights` of shape {tuple(weights.shape)} does not match `pred` "
                         f"{tuple(pred.shape)}; pass one weight per sample ({n},) or per element.")
    checks.check_non_negative(where, "weights", weights)      # finite and ≥ 0, one host read
    return pred, target, weights


def _reduce(loss: torch.Tensor, weights) -> torch.Tensor:
    if weights is not None:
        loss = loss * weights
    return loss.mean()


def _check_focal(where: str, activate: str, beta: float, gamma: float) -> None:
    """β ≤ 0 makes the focal factor ≤ 0 (a zero or negative loss), γ < 0 makes it infinite at a zero error."""
    checks.check_choice(where, "activate", activate, ("sigmoid", "tanh"))
    checks.check_positive(where, "beta", beta)
    checks.check_positive(where, "gamma", gamma, allow_zero=True)


def _focal_factor(where: str, abs_error: torch.Tensor, activate: str, beta: float, gamma: float):
    _check_focal(where, activate, beta, gamma)
    if activate == "tanh":
        return torch.tanh(beta * abs_error) ** gamma
    return (2 * torch.sigmoid(beta * abs_error) - 1) ** gamma


def elementwise_loss(name: str, pred: torch.Tensor, target: torch.Tensor, **keywords) -> torch.Tensor:
    """``ℓ(ŷ − y)`` per element, unreduced: the term every weighted loss below averages. ``name`` is one of
    :data:`REGRESSION_LOSSES`, ``keywords`` its hyper-parameters (focal ``activate``, ``beta``, ``gamma``; Huber
    ``beta``). Shapes broadcast; the tensors' values are not checked here (no host read): a loss term that calls
    it inside a training step (Dist Loss's sorted term) relies on the main loss's checks of the same batch."""
    where = "elementwise_loss"
    checks.check_choice(where, "name", name, REGRESSION_LOSSES)
    error = pred - target
    if name == "mse":
        return error ** 2
    if name == "l1":
        return error.abs()
    if name == "huber":
        beta = keywords.get("beta", 1.0)
        checks.check_positive(where, "beta", beta)
        a = error.abs()
        return torch.where(a < beta, 0.5 * a ** 2 / beta, a - 0.5 * beta)
    options = {"activate": "sigmoid", "beta": 0.2, "gamma": 1, **keywords}
    # The focal factor is differentiated through, as in the reference.
    factor = _focal_factor(where, error.abs(), options["activate"], options["beta"], options["gamma"])
    return (error ** 2 if name == "focal_mse" else error.abs()) * factor


def weighted_mse_loss(pred, target, weights=None) -> torch.Tensor:
    """``mean(w ⊙ (ŷ − y)²)``. pred, target: (N, ...); weights: None, (N,) or broadcastable to pred."""
    pred, target, weights = _prepare("weighted_mse_loss", pred, target, weights)
    return _reduce(elementwise_loss("mse", pred, target), weights)


def weighted_l1_loss(pred, target, weights=None) -> torch.Tensor:
    """``mean(w ⊙ |ŷ − y|)``. Shapes as :func:`weighted_mse_loss`."""
    pred, target, weights = _prepare("weighted_l1_loss", pred, target, weights)
    return _reduce(elementwise_loss("l1", pred, target), weights)


def weighted_focal_mse_loss(pred, target, weights=None, activate="sigmoid", beta=0.2, gamma=1) -> torch.Tensor:
    """``mean(w ⊙ e² ⊙ g(|e|))`` with ``g(a) = (2σ(βa) − 1)^γ`` (sigmoid) or ``tanh(βa)^γ``.

    The focal factor is differentiated through, as in the reference.
    """
    pred, target, weights = _prepare("weighted_focal_mse_loss", pred, target, weights)
    return _reduce(elementwise_loss("focal_mse", pred, target, activate=activate, beta=beta, gamma=gamma), weights)


def weighted_focal_l1_loss(pred, target, weights=None, activate="sigmoid", beta=0.2, gamma=1) -> torch.Tensor:
    """``mean(w ⊙ |e| ⊙ g(|e|))``; see :func:`weighted_focal_mse_loss`."""
    pred, target, weights = _prepare("weighted_focal_l1_loss", pred, target, weights)
    return _reduce(elementwise_loss("focal_l1", pred, target, activate=activate, beta=beta, gamma=gamma), weights)


def weighted_huber_loss(pred, target, weights=None, beta=1.0) -> torch.Tensor:
    """Smooth-L1 form: ``0.5 a²/β`` if ``a < β`` else ``a − 0.5 β`` (``a = |ŷ − y|``), weighted mean.

    This equals ``F.smooth_l1_loss(beta=β)`` (``F.huber_loss(delta=β) / β``), as the reference computes it.
    """
    where = "weighted_huber_loss"
    checks.check_positive(where, "beta", beta)
    pred, target, weights = _prepare(where, pred, target, weights)
    return _reduce(elementwise_loss("huber", pred, target, beta=beta), weights)


_FUNCTIONS = {
    "mse": weighted_mse_loss,
    "l1": weighted_l1_loss,
    "focal_mse": weighted_focal_mse_loss,
    "focal_l1": weighted_focal_l1_loss,
    "huber": weighted_huber_loss,
}


class RegressionLoss(nn.Module):
    """One of :data:`REGRESSION_LOSSES` with its hyper-parameters fixed.

    ``RegressionLoss('focal_l1', beta=0.2, gamma=1)(pred, target, weights)``.
    """

    def __init__(self, name: str = "l1", **keywords):
        super().__init__()
        checks.check_choice("RegressionLoss", "name", name, REGRESSION_LOSSES)
        self.name = name
        self.keywords = keywords
        self._function = _FUNCTIONS[name]
        # The hyper-parameters are checked once here, not first at the first training step.
        accepted = [k for k in inspect.signature(self._function).parameters if k not in ("pred", "target", "weights")]
        for key in keywords:
            if key not in accepted:
                raise ValueError(f"RegressionLoss: `{key}` is not a hyper-parameter of the {name!r} loss; it takes "
                                 f"{', '.join(f'`{k}`' for k in accepted) or 'none'}.")
        if name.startswith("focal"):
            options = {"activate": "sigmoid", "beta": 0.2, "gamma": 1, **keywords}
            _check_focal("RegressionLoss", options["activate"], options["beta"], options["gamma"])
        elif name == "huber":
            checks.check_positive("RegressionLoss", "beta", keywords.get("beta", 1.0))

    def forward(self, pred, target, weights=None):
        return self._function(pred, target, weights, **self.keywords)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.name)] + [f"{k}={v}" for k, v in self.keywords.items()])


# -- wiring ---------------------------------------------------------------------------------------------------
class RegressionTerm(Term):
    """The main loss of a run without Balanced MSE, UVOTE or VIR: ``--loss`` on the model's ``pred``, weighted
    by the batch's sample (pixel) weights, on the view's label scale; its component is named after the loss."""

    def __init__(self, name: str = "l1", **keywords):
        super().__init__()
        self.name = name
        self.loss = RegressionLoss(name, **keywords)

    def forward(self, step: Step) -> dict:
        pred, targets, scale = step.out["pred"].float(), step.targets, step.view.label_scale
        if scale != 1:
            pred, targets = pred / scale, targets / scale
        return {self.name: self.loss(pred, targets, step.weights)}


class Regression(Method):
    """The regression loss (Yang et al., ICML 2021: weighted L1, MSE, focal, Huber). Its flag ``--loss`` is in
    the optimisation group (each benchmark lists the losses it trains); it is the main loss unless another
    method brings one."""

    name = "regression"

    def enabled(self, args) -> bool:
        return True

    def main_loss(self, args, data):
        return RegressionTerm(flag(args, "loss", "l1"), **data.loss_options)


METHOD = Regression()
