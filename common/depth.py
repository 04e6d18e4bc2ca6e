"""Depth regression pieces shared by any depth benchmark: per-pixel bucket weights, shot bins, depth metrics.

Depth is in metres on the 0.1-m grid ``common.bins.DEPTH_BINS`` (bin ``min(⌊10·d⌋, 99)``, the product in float32).
Re-weighting and LDS act on a per-bin histogram of training **pixels** (docs/methods.md §2.3); shots are sets
of bins chosen by their training pixel counts; metrics are computed over masked pixels (docs/methods.md §10.2).

Everything here stays shared because it takes the histogram, the bins and the pixels as arguments, so any
dense-label task reuses it: the effective bin counts and pixel weights, the shot bins, the metrics and their
table, and the balanced test mask (also written by the synthetic NYUD2 of ``common/synthetic/depth.py``, and
common/ imports no dataset folder). What only NYUD2-DIR uses (its reference pixel table, shot fractions, file
layout, transforms and BNI prior) lives in ``nyud2-dir/dataset.py``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.ndimage import convolve1d

from common.bins import DEPTH_BINS, LabelBins
from common.lds import get_lds_kernel_window
from common.metrics import check_shot_thresholds

DEPTH_METRICS = ("rmse", "mse", "mae", "absrel", "log10", "delta1", "delta2", "delta3", "count")
#: the overall depth metrics ``--select_on`` can name (``common.metrics.selection_from_args``).
DEPTH_SELECTABLE = DEPTH_METRICS[:-1] + ("bmae", "bmse", "sera")
SHOTS = ("all", "many", "medium", "few")


def effective_bin_counts(pixel_counts, sqrt: bool = False, lds: bool = False, kernel: str = "gaussian", ks: int = 5,
                         sigma: float = 2.0, bucket_start: int = 7, truncate: bool = False) -> np.ndarray:
    """(B,) float64 effective training pixels per bin from the (B,) pixel histogram: the references' recipe
    behind both the pixel weights and the BNI prior on depth.

    Bins ``bucket_start…B−1`` keep their counts (square roots with ``sqrt``), LDS convolves them with the peak-1
    window (``reflect`` padding), and the bins below copy the first tracked one. ``truncate``
    (``--lds_truncate``) reproduces the references, whose integer table comes back from the smoothing as
    integers (truncated); square roots are floats there too, so they are never truncated.
    """
    tracked = np.asarray(pixel_counts, dtype=np.float64)[bucket_start:]
    if sqrt:
        tracked = np.sqrt(tracked)
    if lds:
        tracked = convolve1d(tracked, get_lds_kernel_window(kernel, ks, sigma), mode="reflect")
        if truncate and not sqrt:
            tracked = np.trunc(tracked)
    return np.concatenate([np.full(bucket_start, tracked[0]), tracked])


def pixel_bucket_weights(pixel_counts, reweight: str, lds: bool = False, kernel: str = "gaussian", ks: int = 5,
                         sigma: float = 2.0, bucket_start: int = 7, truncate: bool = False,
                         rescale: bool = True) -> np.ndarray | None:
    """Per-bin pixel weights (B,) float32 from the training pixel histogram, as the NYUD2 references compute them.

    The effective counts ``n'_b`` are :func:`effective_bin_counts` (square roots for ``sqrt_inv``, LDS, the bins
    below ``bucket_start`` copying the first tracked one, ``truncate``); no clipping. Weights ``s / n'_b`` with
    ``s = Σ N_b / Σ (N_b / n'_b)``, so the pixel-count-weighted mean weight is 1 (a bin whose effective count is 0
    holds no training pixel and gets weight 0). ``rescale=False`` leaves out ``s`` (the raw ``1/n'_b``, BSAM's
    ``--bsam_weights raw``). None for ``reweight='none'``.
    """
    if reweight not in ("none", "inverse", "sqrt_inv"):
        raise ValueError(f"pixel_bucket_weights: `reweight` must be none, inverse or sqrt_inv, got {reweight!r}.")
    if lds and reweight == "none":
        raise ValueError("pixel_bucket_weights: LDS smooths the re-weighting histogram; set `reweight`.")
    if reweight == "none":
        return None
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if not bucket_start < len(counts) or counts[bucket_start] <= 0:
        raise ValueError(f"pixel_bucket_weights: bin {bucket_start} (bucket_start) must hold training pixels.")
    effective = effective_bin_counts(counts, reweight == "sqrt_inv", lds, kernel, ks, sigma, bucket_start, truncate)
    # A bin without training pixels (possible on small data, never on NYUD2) weighs no training pixel: weight 0.
    present = effective > 0
    inverse = np.zeros_like(effective)
    inverse[present] = 1.0 / effective[present]
    if not rescale:
        return inverse.astype(np.float32)
    scale = counts.sum() / (counts * inverse).sum()
    return (scale * inverse).astype(np.float32)


def shot_bins(pixel_counts, many_shot_thr: float, low_shot_thr: float) -> dict[str, np.ndarray]:
    """Bins per shot from their training pixel counts: many > many_shot_thr, few < low_shot_thr, medium between."""
    check_shot_thresholds("shot_bins", many_shot_thr, low_shot_thr)
    counts = np.asarray(pixel_counts)
    bins = np.arange(len(counts))
    return {"many": bins[counts > many_shot_thr], "medium": bins[(counts >= low_shot_thr) & (counts <= many_shot_thr)],
            "few": bins[counts < low_shot_thr]}


def _summary(pred: np.ndarray, target: np.ndarray) -> dict:
    """The depth metrics over a set of pixels; NaN for an empty set.

    Computed as the reference's ``Evaluator.evaluate`` does, in float32 torch sums (so the digits match its
    ``test.py`` on the same device): δ_k counts ``max(ŷ/d, d/ŷ) ≤ 1.25^k``, log10 is ``ln(x)/ln(10)``, and a
    non-positive prediction makes log10 NaN.
    """
    n = int(target.size)
    if n == 0:
        return {key: (0 if key == "count" else math.nan) for key in DEPTH_METRICS}
    pred, target = torch.from_numpy(np.ascontiguousarray(pred, np.float32)), \
        torch.from_numpy(np.ascontiguousarray(target, np.float32))
    diff = (pred - target).abs()
    mse = float(diff.pow(2).sum() / n)
    log10 = lambda x: torch.log(x) / math.log(10)
    ratio = torch.maximum(pred / target, target / pred)
    return {"rmse": float(np.sqrt(mse)), "mse": mse, "mae": float(diff.sum() / n),
            "absrel": float((diff / target).sum() / n),
            "log10": float((log10(pred) - log10(target)).abs().sum() / n) if bool((pred > 0).all()) else math.nan,
            "delta1": float(ratio.le(1.25).float().sum() / n), "delta2": float(ratio.le(1.25 ** 2).float().sum() / n),
            "delta3": float(ratio.le(1.25 ** 3).float().sum() / n), "count": n}


def depth_metrics(preds, labels, shots: dict[str, np.ndarray], bins: LabelBins = DEPTH_BINS,
                  pixel_counts=None) -> dict:
    """RMSE, MSE, MAE, AbsRel, log10, δ1–δ3 and the pixel count, overall and per shot.

    Args:
        preds, labels: (P,) predicted and ground-truth depths (metres) of the evaluated (masked) pixels.
        shots: ``{'many', 'medium', 'few'}`` → bin indices (:func:`shot_bins`); a pixel's shot is its
            ground-truth bin's.
        pixel_counts: the (B,) training pixel histogram over ``bins``. Given, each shot also has the per-pixel
            balanced metrics of ``common.metrics``: ``bmae`` and ``bmse`` (the mean over the depth bins that hold
            evaluated pixels of each bin's mean |e| and e², in float64), ``sera`` (Σ φ e² over the pixels, φ = 1 −
            n_b / max n the bin's relevance from this histogram) and ``bins`` (how many depth bins).

    An empty shot, or log10 with a non-positive prediction, is NaN with a warning, never an exception.
    """
    preds = np.asarray(preds, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"depth_metrics: {preds.size} predictions for {labels.size} labels.")
    if (labels <= 0).any():
        raise ValueError("depth_metrics: ground-truth depths must be positive (mask out invalid pixels first).")
    label_bins = bins.index(labels)
    out = {"all": _summary(preds, labels)}
    for shot in SHOTS[1:]:
        keep = np.isin(label_bins, shots[shot])
        out[shot] = _summary(preds[keep], labels[keep])
    if pixel_counts is not None:
        _add_balanced_depth(out, preds, labels, label_bins, shots, pixel_counts)
    empty = [shot for shot in SHOTS if out[shot]["count"] == 0]
    if empty:
        warnings.warn(f"depth_metrics: no evaluated pixel is {', '.join(empty)}-shot; those metrics are NaN.")
    if (preds <= 0).any():
        warnings.warn("depth_metrics: some predicted depths are ≤ 0, so log10 is NaN.")
    return out


def _add_balanced_depth(out: dict, preds, labels, label_bins, shots, pixel_counts) -> None:
    """``bmae``, ``bmse``, ``sera`` and ``bins`` of every shot into ``out`` (see :func:`depth_metrics`)."""
    from common.metrics import add_balanced
    counts = np.asarray(pixel_counts, dtype=np.float64).reshape(-1)
    if counts.size <= int(label_bins.max(initial=0)) or (counts < 0).any():
        raise ValueError(f"depth_metrics: `pixel_counts` must hold one non-negative count per depth bin, got "
                         f"{counts.size} values for bins up to {int(label_bins.max(initial=0))}.")
    peak = counts.max(initial=0.0)
    phi = np.ones(label_bins.shape) if peak == 0 else 1.0 - counts[label_bins] / peak
    masks = {"all": np.ones(label_bins.shape, dtype=bool),
             **{shot: np.isin(label_bins, shots[shot]) for shot in SHOTS[1:]}}
    errors = preds.astype(np.float64) - labels.astype(np.float64)
    add_balanced(out, errors, label_bins, phi, masks)


def depth_table(name: str, metrics: dict, balanced: bool = True) -> str:
    """The metrics of :func:`depth_metrics` as a text table, one row per shot (then, with ``balanced``, the
    balanced rows, if any)."""
    from common.metrics import balanced_table
    head = f" * {name:5s}  " + " ".join(f"{k.upper():>7s}" for k in DEPTH_METRICS[:-1]) + f" {'pixels':>9s}"
    rows = [head]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} " + " ".join(f"{m[k]:7.4f}" for k in DEPTH_METRICS[:-1]) + f" {m['count']:9d}")
    return "\n".join(rows) + (balanced_table(name, metrics) if balanced else "")


def balanced_mask(depths, first_bin: int = 7, bins: LabelBins = DEPTH_BINS, seed: int = 0) -> np.ndarray:
    """The balanced test mask (docs/datasets.md §1.3): the same number of pixels from every bin ≥ ``first_bin``.

    depths: (N, H, W) test depths in metres after the test transform. The count is the smallest non-zero bin
    count over all bins; each bin from ``first_bin`` on gives that many pixels, drawn without replacement
    (seeded; the references drew without a seed). Returns (N, H, W) uint8.
    """
    depths = np.asarray(depths, dtype=np.float32)
    flat_bins = bins.index(depths.reshape(-1))
    counts = np.bincount(flat_bins, minlength=bins.num_bins)
    per_bin = int(counts[counts > 0].min())
    rng = np.random.default_rng(seed)
    mask = np.zeros(flat_bins.size, dtype=np.uint8)
    for b in range(first_bin, bins.num_bins):
        where = np.flatnonzero(flat_bins == b)
        if where.size:
            mask[rng.choice(where, size=per_bin, replace=False)] = 1
    return mask.reshape(depths.shape)
