"""What the training loop accumulates on the device between the steps that print: the running losses and the
health of the loss, so that a step never makes the host wait for the GPU.

A step's loss is a device tensor; reading it on the host (``.item()``, ``float``, ``bool``) blocks until the GPU
has finished the step, which on the small models of the age benchmarks costs a large share of the throughput.
:class:`DeviceMeters` sums the losses on the device and :class:`StepHealth` records the first step whose loss was
non-finite or grew past ``divergence_factor`` times the first one; the loop reads both only on the steps that
print, at the end of an epoch and before every checkpoint (one host read each time), and still names the step
that went wrong.
"""
from __future__ import annotations

import math

import torch


class DeviceMeters:
    """Sample-weighted running means of named 0-d tensors, summed on their device.

    ``update({'regression': loss, ...}, n)`` adds ``n·loss`` (detached, in float64 so that a long epoch's sum does
    not lose digits); :meth:`averages` reads every mean with one host read.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def update(self, values: dict[str, torch.Tensor], n: int) -> None:
        for name, value in values.items():
            scaled = value.detach().to(torch.float64) * n
            if name in self.sums:
                self.sums[name] += scaled
            else:
                self.sums[name] = scaled
        self.count += n

    def averages(self) -> dict[str, float]:
        """``{name: mean}`` as floats (NaN before the first update)."""
        if not self.sums or not self.count:
            return {name: math.nan for name in self.sums}
        totals = torch.stack(list(self.sums.values())).tolist()
        return {name: total / self.count for name, total in zip(self.sums, totals)}


class StepHealth:
    """The first training step whose total loss was non-finite or whose magnitude exceeded ``factor`` times the
    first step's (``max(|loss₀|, 1e-6)``), whichever came first, kept on the loss's device.

    :meth:`update` costs a few element-wise operations per step and reads nothing; :meth:`problem` reads the record
    once and returns the sentence that ends the run (``None`` while the loss is healthy).
    """

    def __init__(self, factor: float):
        self.factor = factor
        self.names: list[str] | None = None
        self._state: torch.Tensor | None = None

    # _state (float64, on the loss's device):
    #   [0] the first loss magnitude (NaN until the first step)
    #   [1] epoch, [2] step of the first non-finite total (−1: none)
    #   [3] epoch, [4] step, [5] magnitude of the first divergence (−1: none)
    #   [6:] which components were non-finite at the first non-finite step (1/0)
    def update(self, components: dict[str, torch.Tensor], total: torch.Tensor, epoch: int, step: int) -> None:
        """Record the step (``epoch``, ``step`` of the epoch) if its ``total`` is non-finite or diverged."""
        values = torch.stack([value.detach().to(torch.float64) for value in components.values()])
        size = total.detach().to(torch.float64).abs()
        if self._state is None:
            self.names = list(components)
            self._state = torch.full((6 + len(self.names),), -1.0, dtype=torch.float64, device=total.device)
            self._state[0] = math.nan
            self._state[6:] = 0.0
        state = self._state
        first, seen_bad, seen_growth = state[0], state[1] >= 0, state[3] >= 0
        bad = ~torch.isfinite(size)
        new_bad = bad & ~seen_bad & ~seen_growth      # only the first problem of either kind is kept
        grew = torch.isfinite(first) & (size > self.factor * first) & ~bad & ~seen_growth & ~seen_bad
        # masked_fill_ takes the epoch and step as kernel arguments: nothing is copied either way.
        state[1].masked_fill_(new_bad, epoch)
        state[2].masked_fill_(new_bad, step)
        state[6:] = torch.where(new_bad, (~torch.isfinite(values)).to(torch.float64), state[6:])
        state[3].masked_fill_(grew, epoch)
        state[4].masked_fill_(grew, step)
        state[5] = torch.where(grew, size, state[5])
        state[0] = torch.where(torch.isnan(first), size.clamp_min(1e-6), first)

    def problem(self) -> dict | None:
        """The first bad step so far (one host read), else None: ``{'kind': 'non-finite', 'epoch', 'step',
        'names'}`` (the components that were non-finite) or ``{'kind': 'diverged', 'epoch', 'step', 'first',
        'size'}``."""
        if self._state is None:
            return None
        first, bad_epoch, bad_step, grew_epoch, grew_step, size, *parts = self._state.tolist()
        if bad_epoch >= 0:
            return {"kind": "non-finite", "epoch": int(bad_epoch), "step": int(bad_step),
                    "names": [name for name, flag in zip(self.names, parts) if flag]}
        if grew_epoch >= 0:
            return {"kind": "diverged", "epoch": int(grew_epoch), "step": int(grew_step), "first": first,
                    "size": size}
        return None
