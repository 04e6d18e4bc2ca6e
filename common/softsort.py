"""Differentiable soft sort with the L2 regulariser (Blondel, Teboul, Berthet, Djolonga, ICML 2020, "Fast
Differentiable Sorting and Ranking"), on the tensor's own device, batched, without a host read.

For ``θ ∈ R^n`` and strength ``ε > 0`` the ascending soft sort is ``s = v − w`` with ``a = sort(θ)`` ascending,
``w_k = (n + 1 − k)/ε`` (k = 1..n) and ``v`` the **decreasing** isotonic regression (L2, unweighted) of ``w + a``
(docs/methods.md §12.1.1). Neighbours of the sorted order are pooled where their gap exceeds ``1/ε``; a pooled
block becomes its mean plus a ramp of spacing ``1/ε`` (``(0, 100)`` at ε = 0.1 → ``(45, 55)``); ε → 0 is the hard
sort and ``Σ s = Σ θ`` for every ε.

The isotonic regression is not computed by pool-adjacent-violators (a data-dependent loop, one host read per
pooling decision) but by its closed min–max form: for a decreasing fit of ``z``

    v_i = min_{j ≤ i} max_{k ≥ i} mean(z_j … z_k),

evaluated from prefix sums as an (n, n) table of block means, a reverse running maximum along ``k`` and a masked
minimum along ``j``: O(n²) time and memory, fixed shapes, every batch row at once. Autograd through the selected
minimum and maximum gives each output the gradient of the one block mean it equals, i.e. the cotangent averaged
within each block of the fit, as PAV's backward does (Blondel et al., Prop. 4); the sort scatters it back through
the permutation. At exact ties of block means either choice is a valid (sub)gradient.
"""
from __future__ import annotations

import torch

from common import checks


def isotonic_decreasing(z: torch.Tensor) -> torch.Tensor:
    """The L2, unweighted, non-increasing isotonic regression of each row: ``argmin_{v_1 ≥ … ≥ v_n} ‖v − z‖²``.

    z: (..., n) floating point. Returns (..., n) in ``z``'s dtype. Differentiable; O(n²) memory per row.
    """
    n = z.shape[-1]
    zero = torch.zeros(z.shape[:-1] + (1,), dtype=z.dtype, device=z.device)
    prefix = torch.cat((zero, torch.cumsum(z, dim=-1)), dim=-1)                  # (..., n + 1)
    j = torch.arange(n, device=z.device)
    length = (j[None, :] - j[:, None] + 1).clamp(min=1).to(z.dtype)          # [j, k] → k − j + 1 (≥ 1 to stay finite)
    # means[..., j, k] = mean(z_j … z_k) for k ≥ j; below the diagonal it is a finite number that is never chosen.
    means = (prefix[..., None, 1:] - prefix[..., :-1, None]) / length
    upper = j[None, :] >= j[:, None]                                            # k ≥ j
    means = torch.where(upper, means, torch.full_like(means, -torch.inf))
    # best[..., j, i] = max_{k ≥ i} means[j, k]: a running maximum from the right along k.
    best = torch.cummax(means.flip(-1), dim=-1).values.flip(-1)
    # v_i = min_{j ≤ i} best[j, i]; rows j > i are masked with +inf (there best[j, i] would be block means that
    # do not contain i).
    best = torch.where(upper, best, torch.full_like(best, torch.inf))
    return best.amin(dim=-2)


def soft_sort(theta: torch.Tensor, regularization_strength: float = 1.0, descending: bool = False,
              return_order: bool = False):
    """Row-wise soft sort with the L2 regulariser (Blondel et al. 2020), ascending unless ``descending``.

    Args:
        theta: (..., n) floating-point values (the last dimension is sorted).
        regularization_strength: ε > 0, in the units of ``theta``: neighbours further apart than ``1/ε`` are
            pooled; ε → 0 gives the hard sort.
        descending: ``s = w − iso_dec(w − d)`` with ``d`` sorted descending (the same pooling rule).
        return_order: also return the (..., n) long permutation: position ``i`` of the output holds (the soft
            version of) ``theta[..., order[..., i]]``; ties keep their input order (a stable sort).

    Returns:
        (..., n) in ``theta``'s dtype (half precision is computed in float32), and the order when asked.
    """
    where = "soft_sort"
    theta = checks.as_tensor(where, "theta", theta)
    checks.check_floating(where, "theta", theta)
    checks.check_positive(where, "regularization_strength", regularization_strength)
    if theta.dim() == 0 or theta.shape[-1] == 0:
        raise ValueError(f"{where}: `theta` (shape {tuple(theta.shape)}) must have at least one value to sort in "
                         "its last dimension.")
    n = theta.shape[-1]
    dtype = checks.compute_dtype(theta)
    values, order = torch.sort(theta.to(dtype), dim=-1, descending=descending, stable=True)
    # w_k = (n + 1 − k)/ε, k = 1..n: a strictly decreasing ramp of spacing 1/ε.
    ramp = torch.arange(n, 0, -1, device=theta.device, dtype=dtype) / regularization_strength
    if descending:
        out = ramp - isotonic_decreasing(ramp - values)
    else:
        out = isotonic_decreasing(ramp + values) - ramp
    out = out.to(theta.dtype)
    return (out, order) if return_order else out
