"""Label distribution smoothing (LDS) and inverse-frequency re-weighting (Yang et al., ICML 2021).

Weights are computed once from the training label histogram: counts per bin are transformed (``sqrt_inv``:
square root; ``inverse``: clipped to [5, 1000]), optionally convolved with a symmetric kernel (LDS), inverted,
and rescaled so that the mean weight over the training samples is 1.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve1d, gaussian_filter1d
from scipy.signal.windows import triang

from common.bins import LabelBins
from common.method import Method, flag

KERNELS = ("gaussian", "triang", "laplace")
REWEIGHTS = ("none", "inverse", "sqrt_inv")


def kernel_window(kernel: str, ks: int, sigma: float, normalise: str = "max", dtype=np.float64) -> np.ndarray:
    """A symmetric smoothing window of odd length ``ks``.

    gaussian: ``scipy.ndimage.gaussian_filter1d`` of a centred delta (reflect mode, truncate 4), which folds
    mass back in at the ends when ``4σ > (ks − 1)/2``, exactly as the reference; triang:
    ``scipy.signal.windows.triang(ks)``; laplace: ``exp(−|x|/σ)/(2σ)`` at ``x = −h…h``.
    ``normalise='max'`` (LDS) scales the peak to 1, ``'sum'`` (FDS) the total to 1.
    ``dtype``: the delta's dtype (the reference's LDS uses float64, its FDS float32).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel_window: `kernel` must be one of {', '.join(KERNELS)}, got {kernel!r}.")
    if int(ks) != ks or ks < 1 or ks % 2 == 0:
        raise ValueError(f"kernel_window: `ks` (kernel size) must be a positive odd integer, got {ks}.")
    if normalise not in ("max", "sum"):
        raise ValueError(f"kernel_window: `normalise` must be 'max' or 'sum', got {normalise!r}.")
    ks = int(ks)
    half = (ks - 1) // 2
    if kernel == "gaussian":
        if not sigma > 0:
            raise ValueError(f"kernel_window: `sigma` must be > 0 for the gaussian kernel, got {sigma}.")
        delta = np.zeros(ks, dtype=dtype)
        delta[half] = 1.0
        window = gaussian_filter1d(delta, sigma=sigma)
    elif kernel == "triang":
        window = triang(ks).astype(dtype)
    else:
        if not sigma > 0:
            raise ValueError(f"kernel_window: `sigma` must be > 0 for the laplace kernel, got {sigma}.")
        x = np.arange(-half, half + 1, dtype=dtype)
        window = np.exp(-np.abs(x) / sigma) / (2.0 * sigma)
    return window / (window.max() if normalise == "max" else window.sum())


def get_lds_kernel_window(kernel: str, ks: int, sigma: float) -> np.ndarray:
    """The LDS window (ks,), float64, peak 1 (docs/methods.md §2.4)."""
    return kernel_window(kernel, ks, sigma, normalise="max", dtype=np.float64)


def check_clip(where: str, clip) -> None:
    """``clip`` is None or ``(low, high)`` with ``0 ≤ low ≤ high``: ``np.clip`` with ``low > high`` would give every
    bin the count ``high`` (uniform weights, silently)."""
    if clip is None:
        return
    try:
        low, high = (float(bound) for bound in clip)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `clip` must be None or two count bounds (low, high), got {clip!r}.") from None
    if not 0 <= low <= high:          # also false for NaN
        raise ValueError(f"{where}: `clip` must be None or (low, high) with 0 ≤ low ≤ high, got {clip!r}; the "
                         "references clip the age counts to (5, 1000).")


def smoothed_bin_counts(counts, reweight: str, lds: bool = False, lds_kernel: str = "gaussian", lds_ks: int = 5,
                        lds_sigma: float = 2, *, clip=(5, 1000), mode: str = "constant",
                        truncate_smoothed_counts: bool = False) -> np.ndarray:
    """Effective per-bin counts whose inverse is the bin weight.

    counts: (B,) training samples per bin. ``sqrt_inv`` takes square roots; ``inverse`` clips to ``clip``
    (None: no clipping, as STS-B and NYUD2); ``none`` leaves them as they are. LDS convolves with the
    max-normalised window (``mode``: scipy boundary mode; ``constant`` pads with zeros). The reference convolves
    the integer counts of ``inverse`` in integer arithmetic, truncating the result; ``truncate_smoothed_counts=True``
    reproduces that.
    """
    where = "smoothed_bin_counts"
    if reweight not in REWEIGHTS:
        raise ValueError(f"{where}: `reweight` must be one of {', '.join(REWEIGHTS)}, got {reweight!r}.")
    check_clip(where, clip)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"{where}: `counts` must be a non-empty (B,) histogram, got shape {counts.shape}.")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"{where}: `counts` must be finite and ≥ 0 (samples per bin), got minimum {counts.min():g}.")
    if reweight == "sqrt_inv":
        counts = np.sqrt(counts)
    elif reweight == "inverse" and clip is not None:
        counts = np.clip(counts, *clip)
    if lds:
        window = get_lds_kernel_window(lds_kernel, lds_ks, lds_sigma)
        if reweight == "inverse" and truncate_smoothed_counts:
            counts = convolve1d(counts.astype(np.int64), window, mode=mode).astype(np.float64)
        else:
            counts = convolve1d(counts, window, mode=mode)
    return counts


def prepare_weights(labels, reweight: str = "none", lds: bool = False, lds_kernel: str = "gaussian",
                    lds_ks: int = 5, lds_sigma: float = 2, max_target: int = 121, *, bins=None,
                    clip=(5, 1000), truncate_smoothed_counts: bool = False, rescale: bool = True):
    """Per-sample training weights (docs/methods.md §2.1 for ages, §2.2 for STS-B's 0.1-wide bins).

    Args:
        labels: (N,) training labels. Without ``bins``, whole numbers in [0, max_target − 1], each its own bin;
            another label is a ValueError (a fractional label would share ``int(y)``'s bin, one above the grid
            the last bin, silently). With ``bins``, the grid's rule: ``AGE_BINS`` bins ``min(120, int(y))``, the
            references' rule for ages (IMDB-WIKI's ages above 120 share bin 120).
        reweight: ``'none'`` (returns None), ``'inverse'`` or ``'sqrt_inv'``.
        lds, lds_kernel, lds_ks, lds_sigma: label distribution smoothing of the bin counts.
        max_target: number of integer bins (the age grid ``LabelBins(0, 1, max_target)``), unless ``bins``.
        bins: the label grid (:class:`~common.bins.LabelBins`); overrides ``max_target``.
        clip: bounds of the ``inverse`` counts before smoothing (ages: (5, 1000); STS-B and NYUD2: None).
        truncate_smoothed_counts: reproduce the reference's integer truncation of ``inverse`` + LDS
            (off by default: a bug fix, see docs/reference-differences.md).
        rescale: rescale the weights to mean 1 over the samples (DIR's); off, the raw ``1/n'`` (BSAM's
            ``--bsam_weights raw``: ``1/√n`` with ``sqrt_inv``).

    Returns:
        (N,) float32 weights (mean 1 with ``rescale``), or None when ``reweight='none'``.
    """
    if reweight not in REWEIGHTS:
        raise ValueError(f"prepare_weights: `reweight` must be one of {', '.join(REWEIGHTS)}, got {reweight!r}.")
    if lds and reweight == "none":
        raise ValueError("prepare_weights: `lds` smooths the re-weighting histogram; set `reweight` to "
                         "'inverse' or 'sqrt_inv' (it is 'none').")
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if labels.size == 0:
        raise ValueError("prepare_weights: `labels` is empty; pass the training labels.")
    if not np.isfinite(labels).all() or (labels < 0).any():
        raise ValueError("prepare_weights: `labels` must be finite and non-negative "
                         f"(got min {labels.min()}, max {labels.max()}).")
    check_clip("prepare_weights", clip)
    if reweight == "none":
        return None
    if bins is None:
        _check_integer_grid(labels, max_target)
    grid = LabelBins(0, 1, max_target) if bins is None else bins
    index = grid.index(labels)
    counts = np.bincount(index, minlength=grid.num_bins)
    effective = smoothed_bin_counts(counts, reweight, lds, lds_kernel, lds_ks, lds_sigma, clip=clip,
                                    truncate_smoothed_counts=truncate_smoothed_counts)
    weights = (1.0 / effective[index]).astype(np.float32)
    if not rescale:
        return weights
    return (weights * (len(weights) / weights.sum())).astype(np.float32)


def _check_integer_grid(labels: np.ndarray, max_target) -> None:
    """Without ``bins``, every label is a whole number below ``max_target`` (its own bin)."""
    where = "prepare_weights"
    if isinstance(max_target, bool) or not isinstance(max_target, (int, np.integer, float)) \
            or not float(max_target).is_integer() or max_target < 1:
        raise ValueError(f"{where}: `max_target` (the number of integer label bins) must be a positive integer, "
                         f"got {max_target!r}.")
    fractional = labels != np.floor(labels)
    if fractional.any():
        first = int(np.flatnonzero(fractional)[0])
        raise ValueError(f"{where}: `labels` holds {labels[first]:g} (position {first}), not a whole number; without "
                         "`bins` each integer label is one bin, so pass `bins=LabelBins(start, width, num_bins)` for "
                         "labels on another grid.")
    above = labels > max_target - 1
    if above.any():
        first = int(np.flatnonzero(above)[0])
        raise ValueError(f"{where}: `labels` holds {labels[first]:g} (position {first}), above the last of the "
                         f"`max_target` = {max_target:g} integer bins; raise `max_target` to {labels.max() + 1:g}, or "
                         "pass `bins=AGE_BINS` (common.bins) to fold the labels above 120 into bin 120 as the "
                         "age references do.")


# The age BNI prior's grid: integer ages 0…199, ages ≥ 199 in the last bin (the reference's max_target 200).
BNI_BINS = LabelBins(0, 1, 200)


def bucket_prior(train_labels, lds: bool, kernel: str, ks: int, sigma: float, bins: LabelBins = BNI_BINS,
                 truncate: bool = False):
    """BNI prior: the bins' values (ages) and their (LDS-smoothed) training frequencies, empty bins dropped.

    ``truncate`` reproduces the reference, which smooths the integer counts in integer arithmetic."""
    values = np.asarray(train_labels, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("bucket_prior: `train_labels` is empty; the prior is their histogram, pass the training "
                         "labels.")
    if not np.isfinite(values).all():
        raise ValueError("bucket_prior: `train_labels` must be finite.")
    counts = bins.histogram(values)
    if lds:
        # Raw counts ("inverse" without clipping) so that the reference's integer truncation can apply.
        counts = smoothed_bin_counts(counts, "inverse", True, kernel, ks, sigma, clip=None,
                                     truncate_smoothed_counts=truncate)
    counts = np.asarray(counts, dtype=np.float64)
    keep = counts > 0
    return bins.lower_edges()[keep], counts[keep] / counts[keep].sum()


# -- wiring ---------------------------------------------------------------------------------------------------
class ReweightMethod(Method):
    """Re-weighting and LDS (Yang et al., ICML 2021): each training sample's loss weight from the (smoothed)
    label histogram. The benchmark computes the weights from its data (:func:`prepare_weights`); with UVOTE,
    ``--lds`` smooths the heads' counts instead."""

    name = "reweight"
    switch = "--reweight"
    # --lds and its kernel also smooth UVOTE's head counts and BNI's prior (methods that are on without this one).
    independent = ("lds", "lds_kernel", "lds_ks", "lds_sigma", "lds_truncate")
    positive = ("lds_sigma",)

    def add_args(self, parser, *, lds_ks=5, lds_sigma=1.0) -> None:
        """``--lds_truncate`` reproduces the reference's integer smoothing of ``inverse``."""
        g = parser.add_argument_group("re-weighting and LDS (Yang et al., ICML 2021)")
        g.add_argument("--reweight", default="none", choices=list(REWEIGHTS), help="inverse-frequency re-weighting")
        g.add_argument("--lds", action="store_true", help="label distribution smoothing of the re-weighting")
        g.add_argument("--lds_kernel", default="gaussian", choices=list(KERNELS))
        g.add_argument("--lds_ks", type=int, default=lds_ks, help="LDS kernel size (odd)")
        g.add_argument("--lds_sigma", type=float, default=lds_sigma)
        g.add_argument("--lds_truncate", action="store_true",
                       help="reproduce the reference: smooth the integer `inverse` counts in integer arithmetic "
                            "(truncating); off: smoothed in floating point (docs/reference-differences.md)")

    def enabled(self, args) -> bool:
        return flag(args, "reweight", "none") != "none" or bool(flag(args, "lds"))

    def check(self, parser, args) -> None:
        # UVOTE's heads and BNI's prior are smoothed by --lds themselves.
        smooths_own = flag(args, "uvote") or (flag(args, "bmse") and flag(args, "imp") == "bni")
        if flag(args, "lds") and args.reweight == "none" and not smooths_own:
            parser.error("--lds smooths the re-weighting histogram: add --reweight inverse or --reweight sqrt_inv.")
        if hasattr(args, "lds_ks") and (args.lds_ks < 1 or args.lds_ks % 2 == 0):
            parser.error(f"--lds_ks must be a positive odd kernel size, got {args.lds_ks}.")

    def tag(self, args):
        parts = [args.reweight] if args.reweight != "none" else []
        if args.lds:
            parts.append(f"lds_{args.lds_kernel[:3]}_{args.lds_ks}_{args.lds_sigma:g}")
        return "_".join(parts) or None


METHOD = ReweightMethod()
