"""Evaluation metrics: MSE, L1 and G-mean, their balanced forms and SERA, overall and per shot (docs/methods.md §10).

A test label's shot is decided by how many *training* samples carry it: many-shot above ``many_shot_thr``
(100), few-shot below ``low_shot_thr`` (20), medium-shot otherwise. MSE, L1 and G-mean are averaged over samples.

The balanced metrics weigh the test *label bins* equally instead (an exact label for ages, a bin of the label grid
for STS-B and depth): ``bmae`` and ``bmse`` are the mean over the test bins of a shot of each bin's mean |e| and
e², as Balanced MSE (Ren et al., CVPR 2022), HCA and Dist Loss report them; ``bins`` is how many bins that is.
``sera`` is Ribeiro & Moniz's squared error–relevance area (Machine Learning 109, 2020),

    SERA = ∫₀¹ SER_t dt,   SER_t = Σ_{i: φ(y_i) ≥ t} (ŷ_i − y_i)²,

with the density relevance φ(y) = 1 − n(y) / max_b n(b), n the training histogram the shots count (a label
without training samples has φ = 1, the most frequent one φ = 0): DenseWeight's relevance (Steininger et al.,
Machine Learning 110, 2021; α = 1, ε = 0) on that histogram instead of a kernel density estimate, normalised
by its maximum. (Ribeiro & Moniz's own φ interpolates box-plot control points and marks only the extremes as
relevant; DIR's rare labels are rare by density, interior gaps included.) SER_t is a step function of t, so the
integral is exact as a finite sum: ∫₀¹ 1[t ≤ φ_i] dt = φ_i, hence SERA = Σ_i φ(y_i) (ŷ_i − y_i)². It is a sum,
so it grows with the number of test samples: compare it between runs on the same test set only.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SHOTS = ("all", "many", "medium", "few")
#: what :func:`add_balanced` adds to each shot's metrics.
BALANCED_KEYS = ("bmae", "bmse", "sera", "bins")
#: the overall metrics ``--select_on`` can name, per kind of metrics (:func:`selection_from_args`).
SHOT_SELECTABLE = ("l1", "mse", "gmean", "bmae", "bmse", "sera")
CORRELATION_SELECTABLE = SHOT_SELECTABLE + ("pearson", "spearman")
#: metrics where higher is better: their selection score is the negated value.
HIGHER_IS_BETTER = ("pearson", "spearman", "delta1", "delta2", "delta3")


def _flat(name: str, values, where: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `{name}` must be numbers (an array, a list or a tensor), got "
                         f"{type(values).__name__}.") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: `{name}` contains NaN or infinite values.")
    return array


def _same_length(where: str, arrays: dict) -> None:
    """One value per sample in every array of ``{name: array}``, and at least one sample."""
    (first, reference), *others = arrays.items()
    for name, array in others:
        if array.size != reference.size:
            raise ValueError(f"{where}: `{name}` has {array.size} values but `{first}` has {reference.size}; pass one "
                             "value per sample.")
    if reference.size == 0:
        raise ValueError(f"{where}: `{first}` is empty; pass at least one sample.")


def _training_labels(where: str, train_labels) -> np.ndarray:
    train = _flat("train_labels", train_labels, where)
    if train.size == 0:
        raise ValueError(f"{where}: `train_labels` is empty; the shots count the training samples of each label, so "
                         "pass the training labels.")
    return train


def check_shot_thresholds(where: str, many_shot_thr, low_shot_thr) -> None:
    """Both thresholds numbers ≥ 0 and many-shot at least few-shot (the command line's rule)."""
    for name, value in (("many_shot_thr", many_shot_thr), ("low_shot_thr", low_shot_thr)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= 0:
            raise ValueError(f"{where}: `{name}` must be a number ≥ 0 (a count of training samples), got {value!r}.")
    if many_shot_thr < low_shot_thr:
        raise ValueError(f"{where}: `many_shot_thr` ({many_shot_thr}) must be at least `low_shot_thr` "
                         f"({low_shot_thr}): many-shot labels have more training samples than few-shot ones.")


def _sigma_inputs(where: str, preds, labels, sigma, positive: bool = True):
    """Predictions, labels and predicted standard deviations: one finite value each per sample, σ > 0 (unless
    ``positive`` is False: :func:`ause` only ranks the samples by σ)."""
    preds, labels = _flat("preds", preds, where), _flat("labels", labels, where)
    sigma = _flat("sigma", sigma, where)
    _same_length(where, {"preds": preds, "labels": labels, "sigma": sigma})
    if positive and (sigma <= 0).any():
        first = int(np.flatnonzero(sigma <= 0)[0])
        raise ValueError(f"{where}: `sigma` holds {sigma[first]:g} (sample {first}); predicted standard deviations "
                         "must be > 0.")
    return preds, labels, sigma


def _positive_count(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: `{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _errors_summary(errors: np.ndarray, zero_error: float = 0.0) -> dict:
    if errors.size == 0:
        return {"mse": math.nan, "l1": math.nan, "gmean": math.nan, "count": 0}
    abs_errors = np.abs(errors)
    # Geometric mean of |e|, an exact zero counted as `zero_error`: 0 makes the mean 0, as scipy.stats.gmean (and
    # the age references) give; the STS-B reference counts it as 1e-10.
    logged = np.where(abs_errors == 0, zero_error, abs_errors)
    gmean = 0.0 if (logged == 0).any() else float(np.exp(np.mean(np.log(logged))))
    return {"mse": float(np.mean(errors ** 2)), "l1": float(np.mean(abs_errors)), "gmean": gmean,
            "count": int(errors.size)}


def shot_counts(labels, train_labels, bins=None) -> np.ndarray:
    """(N,) number of training samples with each test label.

    Without ``bins`` (ages): training labels cast to int, matched exactly (as the reference). With ``bins``
    (a :class:`~common.bins.LabelBins`; depth, STS-B): the training samples in each test label's bin.
    """
    labels = _flat("labels", labels, "shot_counts")
    if bins is not None:
        return bins.histogram(_flat("train_labels", train_labels, "shot_counts"))[bins.index(labels)]
    train = _flat("train_labels", train_labels, "shot_counts").astype(np.int64)
    values, counts = np.unique(train, return_counts=True)
    if values.size == 0:
        return np.zeros(labels.shape, dtype=np.int64)
    position = np.minimum(np.searchsorted(values, labels), values.size - 1)
    # Exact float comparison: a non-integer test label matches no (integer) training label, as the reference.
    return np.where(values[position] == labels, counts[position], 0)


def shot_masks(counts: np.ndarray, many_shot_thr, low_shot_thr) -> dict[str, np.ndarray]:
    """Boolean masks of the samples (or labels) in each shot, from their training counts."""
    check_shot_thresholds("shot_masks", many_shot_thr, low_shot_thr)
    return {"all": np.ones_like(counts, dtype=bool), "many": counts > many_shot_thr,
            "medium": (counts >= low_shot_thr) & (counts <= many_shot_thr), "few": counts < low_shot_thr}


def training_peak(train_labels, bins=None) -> int:
    """The largest training count of one label (without ``bins``: integer-cast labels, as :func:`shot_counts`) or
    of one bin: the n(b) that normalises the relevance."""
    train = _flat("train_labels", train_labels, "training_peak")
    if bins is not None:
        return int(np.max(bins.histogram(train), initial=0))
    return int(np.max(np.unique(train.astype(np.int64), return_counts=True)[1], initial=0))


def relevance(labels, train_labels, bins=None) -> np.ndarray:
    """(N,) density relevance φ(y) = 1 − n(y) / max_b n(b) of each test label, in [0, 1] (the module docstring).

    ``n(y)`` is the training count :func:`shot_counts` gives the label (its bin's with ``bins``). Without training
    labels every φ is 1."""
    return _phi(shot_counts(labels, train_labels, bins), training_peak(train_labels, bins))


def _phi(counts: np.ndarray, peak: int) -> np.ndarray:
    return np.ones(counts.shape) if peak == 0 else 1.0 - counts / peak


def sera(preds, labels, phi) -> float:
    """Squared error–relevance area ∫₀¹ SER_t dt, exactly: Σ_i φ_i (ŷ_i − y_i)² (the module docstring).

    ``phi``: (N,) relevance of each sample in [0, 1] (:func:`relevance`)."""
    preds, labels, phi = _flat("preds", preds, "sera"), _flat("labels", labels, "sera"), _flat("phi", phi, "sera")
    if not preds.shape == labels.shape == phi.shape:
        raise ValueError(f"sera: `preds`, `labels` and `phi` must have one value per sample, got {preds.size}, "
                         f"{labels.size} and {phi.size}.")
    if ((phi < 0) | (phi > 1)).any():
        raise ValueError("sera: `phi` must lie in [0, 1] (a relevance).")
    return float(np.sum(phi * (preds - labels) ** 2))


def add_balanced(metrics: dict, errors: np.ndarray, groups: np.ndarray, phi: np.ndarray, masks: dict) -> dict:
    """Add ``bmae``, ``bmse``, ``sera`` and ``bins`` to each shot's entry of ``metrics`` (in place; returned).

    ``errors``, ``groups`` (each sample's label bin: any sortable value), ``phi`` (each sample's relevance) are
    (N,); ``masks`` maps each shot to its (N,) sample mask. A bin belongs to a shot when one of its samples does
    (every sample of a bin shares its shot); bins without test samples do not count. An empty shot has NaN values
    and 0 bins."""
    values, inverse = np.unique(groups, return_inverse=True)
    per_bin_count = np.bincount(inverse)
    per_bin_mse = np.bincount(inverse, weights=errors ** 2) / per_bin_count
    per_bin_l1 = np.bincount(inverse, weights=np.abs(errors)) / per_bin_count
    for shot, mask in masks.items():
        present = np.zeros(len(values), dtype=bool)
        present[inverse[mask]] = True
        empty = not present.any()
        metrics[shot].update(bmae=math.nan if empty else float(per_bin_l1[present].mean()),
                             bmse=math.nan if empty else float(per_bin_mse[present].mean()),
                             sera=math.nan if empty else float(np.sum(phi[mask] * errors[mask] ** 2)),
                             bins=int(present.sum()))
    return metrics


def _shot_inputs(where: str, preds, labels, train_labels, many_shot_thr, low_shot_thr):
    """The checked inputs of a per-shot metric: thresholds in order, ``preds`` and ``labels`` as flat arrays of one
    size, a non-empty training-label array (one ValueError naming ``where`` and the argument otherwise)."""
    check_shot_thresholds(where, many_shot_thr, low_shot_thr)
    preds, labels = _flat("preds", preds, where), _flat("labels", labels, where)
    if preds.shape != labels.shape:
        raise ValueError(f"{where}: `preds` has {preds.size} values but `labels` has {labels.size}.")
    return preds, labels, _training_labels(where, train_labels)


def shot_metrics(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=20, bins=None,
                 zero_error: float = 0.0, balanced: bool = False) -> dict:
    """MSE, L1, G-mean and sample count, their balanced forms and SERA, overall and per shot.

    Args:
        preds, labels: predictions and test labels, any shapes with N elements (numpy or torch).
        train_labels: the training labels that define the shots.
        many_shot_thr, low_shot_thr: a label is many-shot if its training count > many_shot_thr, few-shot if
            < low_shot_thr, medium-shot otherwise.
        bins: count training samples per label bin instead of per exact label (see :func:`shot_counts`).
        zero_error: the value an exact zero error takes in the G-mean (0: the G-mean is 0, as the age
            references; STS-B's reference uses 1e-10).
        balanced: also ``bmae``, ``bmse``, ``sera`` and ``bins`` (the module docstring; the label bins are the
            exact labels without ``bins``, else its bins). Every benchmark's task asks for them.

    Returns:
        ``{'all' | 'many' | 'medium' | 'few': {'mse', 'l1', 'gmean', 'count'[, 'bmae', 'bmse', 'sera', 'bins']}}``;
        an empty shot has NaN values and counts 0.
    """
    where = "shot_metrics"
    preds, labels, train_labels = _shot_inputs(where, preds, labels, train_labels, many_shot_thr, low_shot_thr)
    counts = shot_counts(labels, train_labels, bins)
    errors = preds - labels
    masks = shot_masks(counts, many_shot_thr, low_shot_thr)
    metrics = {shot: _errors_summary(errors[mask], zero_error) for shot, mask in masks.items()}
    if not balanced:
        return metrics
    groups = labels if bins is None else bins.index(labels)
    return add_balanced(metrics, errors, groups, _phi(counts, training_peak(train_labels, bins)), masks)


def balanced_shot_metrics(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=20) -> dict:
    """Balanced MSE/L1 (Ren et al., CVPR 2022): per shot, the mean over labels of each label's mean error.

    Same shots and return shape as :func:`shot_metrics` (``gmean`` stays the sample G-mean); ``mse``, ``l1`` and
    ``count`` are :func:`shot_metrics`' ``bmse``, ``bmae`` and ``bins`` (the number of distinct labels in the shot).
    """
    metrics = shot_metrics(preds, labels, train_labels, many_shot_thr, low_shot_thr, balanced=True)
    for shot in metrics.values():
        shot.update(mse=shot["bmse"], l1=shot["bmae"], count=shot["bins"])
    return metrics


def shot_table(name: str, metrics: dict, balanced: bool = True) -> str:
    """The metrics of :func:`shot_metrics` as a small text table (MSE, L1, G-mean, count per shot), followed by
    :func:`balanced_table` when they hold the balanced metrics and ``balanced``."""
    rows = [f" * {name:5s}  {'MSE':>8s} {'L1':>8s} {'G-Mean':>8s} {'count':>6s}"]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} {m['mse']:8.3f} {m['l1']:8.3f} {m['gmean']:8.3f} {m['count']:6d}")
    return "\n".join(rows) + (balanced_table(name, metrics) if balanced else "")


def balanced_table(name: str, metrics: dict) -> str:
    """The balanced rows of a metrics dict (bMAE, bMSE, SERA, label bins per shot), each line starting with a
    newline; empty when the metrics have no ``bmae``."""
    if "bmae" not in metrics["all"]:
        return ""
    rows = [f" * {name:5s}  {'bMAE':>8s} {'bMSE':>8s} {'SERA':>12s} {'bins':>6s}"]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} {m['bmae']:8.3f} {m['bmse']:8.3f} {m['sera']:12.3f} {m['bins']:6d}")
    return "".join("\n" + row for row in rows)


# -- correlations (STS-B-DIR, docs/methods.md §10.3) ---------------------------------------------------------------
def pearson(x, y) -> float:
    """Pearson's r of two (N,) arrays; NaN when N < 2 or either is constant (undefined; the reference gives 0)."""
    x, y = _flat("x", x, "pearson"), _flat("y", y, "pearson")
    if y.size != x.size:
        raise ValueError(f"pearson: `y` has {y.size} values but `x` has {x.size}; pass one pair per sample.")
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denominator if denominator > 0 else math.nan


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (scipy.stats.rankdata's 'average')."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Runs of equal values: each run gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman's ρ: Pearson's r of the tie-averaged ranks; NaN where :func:`pearson` is."""
    x, y = _flat("x", x, "spearman"), _flat("y", y, "spearman")
    if y.size != x.size:
        raise ValueError(f"spearman: `y` has {y.size} values but `x` has {x.size}; pass one pair per sample.")
    if x.size < 2:
        return math.nan
    return pearson(_ranks(x), _ranks(y))


#: fewest samples a shot's Pearson / Spearman is reported over: two points always correlate ±1, a meaningless value.
MIN_CORRELATION_SAMPLES = 3


def correlation_shot_metrics(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=30, bins=None,
                             zero_error: float = 1e-10, shot_bins: dict | None = None, balanced: bool = False) -> dict:
    """:func:`shot_metrics` plus ``pearson`` and ``spearman`` per shot (STS-B: ``bins=STSB_BINS``, 100 / 30; an
    exact zero error counts as 1e-10 in the G-mean, as in the STS-B reference).

    ``shot_bins`` (``{'many': bin indices, 'medium': …, 'few': …}`` of ``bins``) gives the shots as fixed bin
    lists instead of training counts (the references' hard-coded lists, which RankSim applies to its own split).
    A shot with fewer than :data:`MIN_CORRELATION_SAMPLES` (3) samples has NaN correlations, printed n/a (the
    reference: 0 for fewer than two, ±1 for two). ``balanced``: the
    balanced metrics and SERA too, per bin of ``bins`` (:func:`shot_metrics`).
    """
    where = "correlation_shot_metrics"
    preds, labels, train_labels = _shot_inputs(where, preds, labels, train_labels, many_shot_thr, low_shot_thr)
    if shot_bins is not None and bins is None:
        raise ValueError(f"{where}: `shot_bins` lists bins of a label grid; pass that grid as `bins` too (STS-B: "
                         "common.bins.STSB_BINS).")
    if shot_bins is None:
        metrics = shot_metrics(preds, labels, train_labels, many_shot_thr, low_shot_thr, bins, zero_error, balanced)
        masks = shot_masks(shot_counts(labels, train_labels, bins), many_shot_thr, low_shot_thr)
    else:
        label_bins = bins.index(labels)
        masks = {"all": np.ones(labels.shape, dtype=bool),
                 **{shot: np.isin(label_bins, shot_bins[shot]) for shot in ("many", "medium", "few")}}
        errors = preds - labels
        metrics = {shot: _errors_summary(errors[mask], zero_error) for shot, mask in masks.items()}
        if balanced:
            add_balanced(metrics, errors, label_bins, relevance(labels, train_labels, bins), masks)
    for shot, mask in masks.items():
        enough = int(mask.sum()) >= MIN_CORRELATION_SAMPLES
        metrics[shot]["pearson"] = pearson(preds[mask], labels[mask]) if enough else math.nan
        metrics[shot]["spearman"] = spearman(preds[mask], labels[mask]) if enough else math.nan
    return metrics


def _percent(value: float) -> str:
    """A correlation × 100 in an 8-wide cell, ``n/a`` where it is undefined (NaN)."""
    return f"{'n/a':>8s}" if math.isnan(value) else f"{100 * value:8.2f}"


def correlation_table(name: str, metrics: dict, balanced: bool = True) -> str:
    """:func:`shot_table` with Pearson and Spearman columns (× 100, as the papers print them; n/a where a shot has
    fewer than :data:`MIN_CORRELATION_SAMPLES` samples); ``balanced``: then the balanced rows."""
    rows = [f" * {name:5s}  {'MSE':>8s} {'L1':>8s} {'G-Mean':>8s} {'Pearson':>8s} {'Spearman':>8s} {'count':>6s}"]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} {m['mse']:8.3f} {m['l1']:8.3f} {m['gmean']:8.3f} {_percent(m['pearson'])} "
                    f"{_percent(m['spearman'])} {m['count']:6d}")
    return "\n".join(rows) + (balanced_table(name, metrics) if balanced else "")


# -- model selection (--select_on) ----------------------------------------------------------------------------------
class Selection:
    """The validation metric that selects the best checkpoint: the overall ``metric`` of a split's metrics, negated
    where higher is better (the trainer keeps the lowest score)."""

    def __init__(self, metric: str, split: str = "val", name: str | None = None):
        self.metric, self.split = metric, split
        self.sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
        self.name = name or f"{split} {'-' if self.sign < 0 else ''}{metric}"

    def score(self, metrics: dict) -> float:
        return self.sign * float(metrics["all"][self.metric])


def selection_from_args(args, default: str, available, split: str = "val", name: str | None = None) -> Selection:
    """The :class:`Selection` of a run: ``--select_on`` when given, else the benchmark's ``default``; every
    benchmark's task reads the flag here. ``available`` are the metric names this benchmark reports; another one
    is refused with one sentence (:class:`~common.errors.RunError`). ``name``: the log's name of the default."""
    from common.errors import RunError
    chosen = getattr(args, "select_on", None)
    if chosen is None:
        return Selection(default, split, name)
    if chosen not in available:
        raise RunError(f"--select_on {chosen}: this benchmark does not report {chosen}; choose one of "
                       f"{', '.join(available)}.")
    return Selection(chosen, split)


# -- predictive uncertainty (UVOTE, VIR) -------------------------------------------------------------------------
#: quantile bins of the predicted σ in :func:`calibration_bins`, ENCE and the report's calibration figure.
CALIBRATION_BINS = 10


def calibration_bins(preds, labels, sigma, num_bins: int = CALIBRATION_BINS):
    """Expected vs observed error per bin of predicted σ.

    The samples are sorted by σ and cut into ``num_bins`` groups of (nearly) equal size; per group, the expected
    error is the root mean predicted variance ``RMV = √mean(σ²)`` and the observed error the ``RMSE`` of the
    predictions. A calibrated model has ``RMSE = RMV`` in every group (Levi et al., "Evaluating and calibrating
    uncertainty prediction in regression tasks", Sensors 2022).

    Args:
        preds, labels, sigma: (N,) predictions, labels and predicted standard deviations (label units).

    Returns:
        ``(rmv, rmse, count)``, three (G,) arrays, G = min(num_bins, N).
    """
    num_bins = _positive_count("calibration_bins", "num_bins", num_bins)
    preds, labels, sigma = _sigma_inputs("calibration_bins", preds, labels, sigma)
    order = np.argsort(sigma, kind="stable")
    groups = np.array_split(order, min(num_bins, preds.size))
    rmv = np.array([math.sqrt(float(np.mean(sigma[g] ** 2))) for g in groups])
    rmse = np.array([math.sqrt(float(np.mean((preds[g] - labels[g]) ** 2))) for g in groups])
    return rmv, rmse, np.array([len(g) for g in groups])


def ause(preds, labels, sigma, steps: int = 100) -> float:
    """Area under the sparsification error of the absolute error (Ilg et al., ECCV 2018): removing the fraction f
    of the samples with the largest σ, the MAE of the rest, minus the same curve when the largest *errors* are
    removed (the oracle), both divided by the full MAE, integrated over f ∈ [0, 1) with the trapezoidal rule on
    ``steps`` points. 0: σ ranks the errors perfectly."""
    steps = _positive_count("ause", "steps", steps)
    preds, labels, sigma = _sigma_inputs("ause", preds, labels, sigma, positive=False)
    errors = np.abs(preds - labels)
    total = errors.mean()
    if total == 0:
        return 0.0
    fractions = np.arange(steps) / steps
    by_sigma = errors[np.argsort(-sigma, kind="stable")]
    by_error = np.sort(errors)[::-1]

    def curve(ordered):
        kept_sums = np.cumsum(ordered[::-1])[::-1]          # sum of ordered[k:]
        starts = np.floor(fractions * errors.size).astype(int)
        return kept_sums[starts] / (errors.size - starts) / total

    gap = curve(by_sigma) - curve(by_error)
    return float(np.sum((gap[1:] + gap[:-1]) / 2) / steps)


def uncertainty_metrics(preds, labels, sigma) -> dict:
    """How good the predicted standard deviations ``sigma`` (N,) are: ``nll`` the Gaussian negative
    log-likelihood ``mean(½ log 2πσ² + e²/(2σ²))``, ``ence`` the expected normalised calibration error
    ``mean_g |RMV_g − RMSE_g| / RMV_g`` over :func:`calibration_bins`, ``ause`` (:func:`ause`), and
    ``mean_sigma``. Every σ must be finite and > 0 (a ValueError naming the first other one)."""
    preds, labels, sigma = _sigma_inputs("uncertainty_metrics", preds, labels, sigma)
    variance = sigma ** 2
    nll = float(np.mean(0.5 * np.log(2 * np.pi * variance) + (preds - labels) ** 2 / (2 * variance)))
    rmv, rmse, _ = calibration_bins(preds, labels, sigma)
    return {"nll": nll, "ence": float(np.mean(np.abs(rmv - rmse) / rmv)), "ause": ause(preds, labels, sigma),
            "mean_sigma": float(np.mean(sigma))}


def uncertainty(sigma) -> dict:
    """``{'sigma': sigma as float32}`` for a predictions file, or ``{}`` without it."""
    return {} if sigma is None else {"sigma": np.asarray(sigma, dtype=np.float32)}
