"""Input checks shared by the losses: one clear ``ValueError`` naming the argument, never an index error
(:class:`~common.errors.NonFiniteError`, a ``ValueError``, for NaN or ±inf).

Each check costs one reduction at most; finiteness checks synchronise with the GPU, which is the price of
failing with a readable message instead of a NaN several steps later. :func:`check_non_negative` checks
finiteness and sign with that same one host read.

Inside the training loop's step those value checks are off (:func:`values_unchecked`): the loop keeps the loss's
health on the device and names the step whose loss went non-finite (:mod:`common.meters`), so a step never waits
for the GPU; a loss called on its own (the API, a test, evaluation) checks its values as before. Shape, dtype and
argument checks read nothing from the device and always run.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import torch

_unchecked = threading.local()


@contextmanager
def values_unchecked():
    """Skip the checks that read a tensor's values (:func:`check_finite`, :func:`check_non_negative`) inside
    the block (this thread only): the training step, whose loop checks the loss itself without a host read."""
    previous = getattr(_unchecked, "on", False)
    _unchecked.on = True
    try:
        yield
    finally:
        _unchecked.on = previous


def values_checked() -> bool:
    """False inside :func:`values_unchecked`."""
    return not getattr(_unchecked, "on", False)

from common.errors import NonFiniteError


def _describe(name: str, tensor: torch.Tensor) -> str:
    return f"`{name}` (shape {tuple(tensor.shape)}, dtype {tensor.dtype})"


def as_tensor(where: str, name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where}: `{name}` must be a torch.Tensor, got {type(value).__name__}.")
    return value


def check_floating(where: str, name: str, tensor: torch.Tensor) -> None:
    if not tensor.is_floating_point():
        raise ValueError(f"{where}: {_describe(name, tensor)} must be a floating-point tensor.")


def check_finite(where: str, name: str, tensor: torch.Tensor) -> None:
    # The sum is non-finite whenever an element is, and one reduction is much cheaper than isfinite over
    # every element; the exact test runs only to rule out an overflowing sum of finite values.
    if tensor.numel() == 0 or not tensor.is_floating_point() or not values_checked():
        return
    if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"{where}: {_describe(name, tensor)} contains NaN or infinite values.")


def check_non_negative(where: str, name: str, tensor: torch.Tensor, what: str = "a weight") -> None:
    """NaN or ±inf (:class:`NonFiniteError`) or a negative value in ``tensor`` (``ValueError``): one host read for
    both, the sum and the minimum fetched together, so a weight check costs what :func:`check_finite` costs."""
    if tensor.numel() == 0 or tensor.dtype == torch.bool or not values_checked():
        return
    if not tensor.is_floating_point():           # integer weights: finite, only the sign to check
        total, low = 0, tensor.amin().item()
    else:
        total, low = torch.stack((tensor.sum(), tensor.amin())).tolist()
    if not math.isfinite(total):
        check_finite(where, name, tensor)        # the exact test: a sum of finite values may overflow
    if low < 0:
        raise ValueError(f"{where}: `{name}` must be ≥ 0 ({what}; a negative one turns its term of the loss "
                         f"negative, which training then drives to −∞), got minimum {low:g}.")


def check_ndim(where: str, name: str, tensor: torch.Tensor, ndims: tuple[int, ...]) -> None:
    if tensor.dim() not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{where}: {_describe(name, tensor)} must be {wanted}.")


def check_nonempty(where: str, name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() == 0 or tensor.shape[0] == 0:
        raise ValueError(f"{where}: {_describe(name, tensor)} is an empty batch; pass at least one sample.")


def check_rows(where: str, name: str, tensor: torch.Tensor, ref_name: str, n: int) -> None:
    if tensor.dim() == 0 or tensor.shape[0] != n:
        raise ValueError(f"{where}: {_describe(name, tensor)} must have {n} rows, like `{ref_name}`.")


def check_same_shape(where: str, name: str, tensor: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if tensor.shape != ref.shape:
        raise ValueError(
            f"{where}: {_describe(name, tensor)} must have the shape of `{ref_name}` {tuple(ref.shape)}.")


def check_positive(where: str, name: str, value: float, *, allow_zero: bool = False) -> None:
    bad = value < 0 if allow_zero else value <= 0
    if bad or value != value:
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{where}: `{name}` must be {bound}, got {value}.")


def check_choice(where: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{where}: `{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}.")


def feature_batch(where: str, name: str, value, ndim: int) -> torch.Tensor:
    """A non-empty floating-point batch tensor with ``ndim`` dimensions (features, predictions)."""
    tensor = as_tensor(where, name, value)
    check_ndim(where, name, tensor, (ndim,))
    check_floating(where, name, tensor)
    check_nonempty(where, name, tensor)
    return tensor


def depth_maps(where: str, features, depth) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel features (B, C, H, W) and the depth map (B, 1, H, W) at their resolution (NYUD2's dense
    losses)."""
    features = feature_batch(where, "features", features, 4)
    b, _, h, w = features.shape
    depth = as_tensor(where, "depth", depth)
    if depth.shape != (b, 1, h, w):
        raise ValueError(f"{where}: `depth` has shape {tuple(depth.shape)}; expected {(b, 1, h, w)} to match "
                         f"`features` {tuple(features.shape)}.")
    return features, depth


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (autocast), else the input's dtype: logits up to 1/τ and cosine tables
    need float32's mantissa; float64 stays float64 (gradcheck)."""
    return torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.dtype


def labels_1d(where: str, name: str, labels, n: int, ref_name: str) -> torch.Tensor:
    """Labels of shape (N,) or (N, 1) as an (N,) tensor."""
    labels = as_tensor(where, name, labels)
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    check_ndim(where, name, labels, (1,))
    check_rows(where, name, labels, ref_name, n)
    return labels


def finite_labels_1d(where: str, name: str, labels, n: int, ref_name: str) -> torch.Tensor:
    """:func:`labels_1d`, refusing NaN and ±inf."""
    labels = labels_1d(where, name, labels, n, ref_name)
    check_finite(where, name, labels)
    return labels


def labels_2d(where: str, name: str, labels: torch.Tensor, n: int, ref_name: str) -> torch.Tensor:
    """Labels of shape (N,), (N,1) or (N,K) as an (N,K) tensor."""
    check_ndim(where, name, labels, (1, 2))
    check_rows(where, name, labels, ref_name, n)
    return labels.reshape(n, -1)


def sample_weights(where: str, weights, n: int, like: torch.Tensor, ref_name: str) -> torch.Tensor:
    """Per-sample weights as an (N,) tensor on ``like``'s device and dtype.

    Accepts ``None`` (all ones), a Python/0-d scalar, or a tensor of shape (N,) or (N,1).
    Weights must be finite and non-negative.
    """
    if weights is None:
        return torch.ones(n, device=like.device, dtype=like.dtype)
    if not isinstance(weights, torch.Tensor):
        weights = torch.tensor(float(weights))
    if weights.dim() == 0:
        weights = weights.expand(n)
    elif weights.dim() > 2 or weights.shape[0] != n or weights.numel() != n:
        raise ValueError(f"{where}: {_describe('weights', weights)} must be a scalar, ({n},) or ({n}, 1), "
                         f"one weight per row of `{ref_name}`.")
    weights = weights.reshape(n).to(device=like.device, dtype=like.dtype)
    check_non_negative(where, "weights", weights)
    return weights
