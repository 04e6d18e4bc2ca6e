"""The label grid of a benchmark: equal-width bins shared by LDS weights, FDS buckets, the BNI prior and shots.

Bin ``k`` covers ``[start + k·width, start + (k+1)·width)``; labels below the grid go to bin 0 and labels above
it to the last bin (``clip``). The three benchmarks' grids (docs/methods.md §2, §3.2, §10):

* ages:   ``LabelBins(0, 1, 121)``   — ``min(120, int(age))``;
* depth:  ``LabelBins(0, 0.1, 100)`` — ``min(99, int(10·d))``, the product taken in float32 as the reference;
* STS-B:  ``LabelBins(0, 0.1, 50, rule='histogram')`` — ``np.histogram(y, 50, range=(0, 5))`` with its float32
  edges, so a score of exactly 5 lands in bin 49.

``rule='scale'`` computes ``floor((y − start) · (1/width))`` in the labels' own dtype (the references' ``int(d·10)``
and ``int(age)``); ``rule='histogram'`` places labels between float32 edges as ``np.histogram`` does. The two
differ only for labels within a rounding error of an edge, which is why each benchmark names its rule.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

RULES = ("scale", "histogram")


@dataclass(frozen=True)
class LabelBins:
    """Equal-width label bins.

    Args:
        start: lower edge of bin 0, in label units (years, metres, score points).
        width: bin width in label units.
        num_bins: number of bins B.
        rule: ``'scale'`` or ``'histogram'`` (see the module docstring).
    """

    start: float = 0.0
    width: float = 1.0
    num_bins: int = 121
    rule: str = "scale"

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"LabelBins: `width` must be > 0, got {self.width}.")
        if int(self.num_bins) != self.num_bins or self.num_bins < 1:
            raise ValueError(f"LabelBins: `num_bins` must be a positive integer, got {self.num_bins}.")
        if self.rule not in RULES:
            raise ValueError(f"LabelBins: `rule` must be one of {', '.join(RULES)}, got {self.rule!r}.")

    @property
    def stop(self) -> float:
        """Upper edge of the last bin."""
        return self.start + self.num_bins * self.width

    def edges(self) -> np.ndarray:
        """(B+1,) float64 bin edges."""
        return self.start + self.width * np.arange(self.num_bins + 1, dtype=np.float64)

    def centers(self) -> np.ndarray:
        """(B,) float64 bin centres (integer ages: ``k + 0.5``; use :meth:`lower_edges` for the reference's ``k``)."""
        return self.start + self.width * (np.arange(self.num_bins, dtype=np.float64) + 0.5)

    def lower_edges(self) -> np.ndarray:
        """(B,) float64 lower edges: the value a bin stands for in the references (age k, depth k/10 m)."""
        return self.edges()[:-1]

    def index(self, labels):
        """Bin of each label, clipped to [0, B−1]: int64 numpy array or long tensor of the labels' shape.

        A tensor is binned on its own device by the same rule in the same dtype (bit-equal to the NumPy path; the
        training step's UVOTE weights, FDS slots and SRL slots read nothing back to the host)."""
        if isinstance(labels, torch.Tensor):
            return self._index_tensor(labels.detach())
        values = np.asarray(labels)
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        if self.rule == "histogram":
            edges = np.linspace(self.start, self.stop, self.num_bins + 1).astype(np.float32)
            bins = np.searchsorted(edges, values.astype(np.float32), side="right") - 1
        else:
            scale = values.dtype.type(1.0 / self.width)
            shifted = values - values.dtype.type(self.start) if self.start else values
            bins = np.floor(shifted * scale)
        return np.clip(bins, 0, self.num_bins - 1).astype(np.int64)

    def _index_tensor(self, labels: torch.Tensor) -> torch.Tensor:
        if not labels.is_floating_point():
            labels = labels.to(torch.float64)
        if self.rule == "histogram":
            edges = _float32_edges(self.start, self.stop, self.num_bins, labels.device)
            bins = torch.searchsorted(edges, labels.to(torch.float32).contiguous(), right=True) - 1
            return bins.clamp_(0, self.num_bins - 1)
        # The constants rounded to the labels' dtype on the host first, as NumPy's dtype.type(…) does: a Python
        # scalar would enter a half-precision product at float32.
        dtype = _NUMPY_DTYPES[labels.dtype]
        scale = float(dtype(1.0 / self.width))
        shifted = labels - float(dtype(self.start)) if self.start else labels
        return torch.floor(shifted * scale).clamp_(0, self.num_bins - 1).to(torch.int64)

    def histogram(self, labels) -> np.ndarray:
        """(B,) int64 number of labels per bin."""
        return np.bincount(self.index(np.asarray(labels).reshape(-1)), minlength=self.num_bins)

    def check_range(self, labels, where: str, error: type[Exception] = ValueError) -> None:
        """Raise ``error`` naming ``where`` if a label is non-finite or outside [start, stop] (a run passes
        :class:`~common.errors.RunError`, which ends it with that one sentence)."""
        values = np.asarray(labels, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(values) | (values < self.start) | (values > self.stop)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise error(f"{where}: label {values[first]} (position {first}) is outside the range "
                             f"[{self.start:g}, {self.stop:g}] of this benchmark's label bins.")


_NUMPY_DTYPES = {torch.float16: np.float16, torch.bfloat16: np.float32, torch.float32: np.float32,
                 torch.float64: np.float64}


@functools.lru_cache(maxsize=None)
def _float32_edges(start: float, stop: float, num_bins: int, device: torch.device) -> torch.Tensor:
    """``np.histogram``'s float32 edges, copied to ``device`` once (a per-step copy would be one more transfer)."""
    return torch.from_numpy(np.linspace(start, stop, num_bins + 1).astype(np.float32)).to(device)


AGE_BINS = LabelBins(0, 1, 121)
DEPTH_BINS = LabelBins(0, 0.1, 100)
STSB_BINS = LabelBins(0, 0.1, 50, rule="histogram")
