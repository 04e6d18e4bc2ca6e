"""Evaluation metrics of the age benchmarks: MSE, L1 and G-mean, overall and per shot (docs/methods.md §10.1).

A test label's shot is decided by how many *training* samples carry it: many-shot above ``many_shot_thr``
(100), few-shot below ``low_shot_thr`` (20), medium-shot otherwise. Per shot the errors are averaged over
samples (not over labels).
"""
from __future__ import annotations

import math

import numpy as np
import torch

SHOTS = ("all", "many", "medium", "few")


def _flat(name: str, values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError(f"shot_metrics: `{name}` contains NaN or infinite values.")
    return array


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
    labels = _flat("labels", labels)
    if bins is not None:
        return bins.histogram(_flat("train_labels", train_labels))[bins.index(labels)]
    train = _flat("train_labels", train_labels).astype(np.int64)
    values, counts = np.unique(train, return_counts=True)
    if values.size == 0:
        return np.zeros(labels.shape, dtype=np.int64)
    position = np.minimum(np.searchsorted(values, labels), values.size - 1)
    # Exact float comparison: a non-integer test label matches no (integer) training label, as the reference.
    return np.where(values[position] == labels, counts[position], 0)


def shot_metrics(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=20, bins=None,
                 zero_error: float = 0.0) -> dict:
    """MSE, L1, G-mean and sample count, overall and per shot.

    Args:
        preds, labels: predictions and test labels, any shapes with N elements (numpy or torch).
        train_labels: the training labels that define the shots.
        many_shot_thr, low_shot_thr: a label is many-shot if its training count > many_shot_thr, few-shot if
            < low_shot_thr, medium-shot otherwise.
        bins: count training samples per label bin instead of per exact label (see :func:`shot_counts`).
        zero_error: the value an exact zero error takes in the G-mean (0: the G-mean is 0, as the age
            references; STS-B's reference uses 1e-10).

    Returns:
        ``{'all' | 'many' | 'medium' | 'few': {'mse', 'l1', 'gmean', 'count'}}``; an empty shot has NaN values
        and count 0.
    """
    preds, labels = _flat("preds", preds), _flat("labels", labels)
    if preds.shape != labels.shape:
        raise ValueError(f"shot_metrics: `preds` has {preds.size} values but `labels` has {labels.size}.")
    counts = shot_counts(labels, train_labels, bins)
    errors = preds - labels
    masks = {"all": np.ones_like(counts, dtype=bool), "many": counts > many_shot_thr,
             "medium": (counts >= low_shot_thr) & (counts <= many_shot_thr), "few": counts < low_shot_thr}
    return {shot: _errors_summary(errors[mask], zero_error) for shot, mask in masks.items()}


def balanced_shot_metrics(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=20) -> dict:
    """Balanced MSE/L1 (Ren et al., CVPR 2022): per shot, the mean over labels of each label's mean error.

    Same shots and return shape as :func:`shot_metrics` (``gmean`` stays the sample G-mean); ``count`` is the
    number of distinct labels in the shot.
    """
    preds, labels = _flat("preds", preds), _flat("labels", labels)
    metrics = shot_metrics(preds, labels, train_labels, many_shot_thr, low_shot_thr)
    values, inverse = np.unique(labels, return_inverse=True)
    errors = preds - labels
    per_label_count = np.bincount(inverse)
    per_label_mse = np.bincount(inverse, weights=errors ** 2) / per_label_count
    per_label_l1 = np.bincount(inverse, weights=np.abs(errors)) / per_label_count
    counts = shot_counts(values, train_labels)
    masks = {"all": np.ones(len(values), bool), "many": counts > many_shot_thr,
             "medium": (counts >= low_shot_thr) & (counts <= many_shot_thr), "few": counts < low_shot_thr}
    for shot, mask in masks.items():
        empty = not mask.any()
        metrics[shot].update(mse=math.nan if empty else float(per_label_mse[mask].mean()),
                             l1=math.nan if empty else float(per_label_l1[mask].mean()), count=int(mask.sum()))
    return metrics


def shot_table(name: str, metrics: dict) -> str:
    """The metrics of :func:`shot_metrics` as a small text table (MSE, L1, G-mean, count per shot)."""
    rows = [f" * {name:5s}  {'MSE':>8s} {'L1':>8s} {'G-Mean':>8s} {'count':>6s}"]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} {m['mse']:8.3f} {m['l1']:8.3f} {m['gmean']:8.3f} {m['count']:6d}")
    return "\n".join(rows)


# -- correlations (STS-B-DIR, docs/methods.md §10.3) ---------------------------------------------------------------
def pearson(x, y) -> float:
    """Pearson's r of two (N,) arrays; NaN when N < 2 or either is constant (undefined; the reference gives 0)."""
    x, y = _flat("x", x), _flat("y", y)
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
    x, y = _flat("x", x), _flat("y", y)
    if x.size < 2:
        return math.nan
    return pearson(_ranks(x), _ranks(y))


def correlation_shot_metrics(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=30, bins=None,
                             zero_error: float = 1e-10, shot_bins: dict | None = None) -> dict:
    """:func:`shot_metrics` plus ``pearson`` and ``spearman`` per shot (STS-B: ``bins=STSB_BINS``, 100 / 30; an
    exact zero error counts as 1e-10 in the G-mean, as in the STS-B reference).

    ``shot_bins`` (``{'many': bin indices, 'medium': …, 'few': …}`` of ``bins``) gives the shots as fixed bin
    lists instead of training counts (the references' hard-coded lists, which RankSim applies to its own split).
    An empty shot, or one with fewer than two samples, has NaN correlations (the reference: 0).
    """
    preds, labels = _flat("preds", preds), _flat("labels", labels)
    if shot_bins is None:
        metrics = shot_metrics(preds, labels, train_labels, many_shot_thr, low_shot_thr, bins, zero_error)
        counts = shot_counts(labels, train_labels, bins)
        masks = {"all": np.ones_like(counts, dtype=bool), "many": counts > many_shot_thr,
                 "medium": (counts >= low_shot_thr) & (counts <= many_shot_thr), "few": counts < low_shot_thr}
    else:
        label_bins = bins.index(labels)
        masks = {"all": np.ones(labels.shape, dtype=bool),
                 **{shot: np.isin(label_bins, shot_bins[shot]) for shot in ("many", "medium", "few")}}
        errors = preds - labels
        metrics = {shot: _errors_summary(errors[mask], zero_error) for shot, mask in masks.items()}
    for shot, mask in masks.items():
        metrics[shot]["pearson"] = pearson(preds[mask], labels[mask])
        metrics[shot]["spearman"] = spearman(preds[mask], labels[mask])
    return metrics


def correlation_table(name: str, metrics: dict) -> str:
    """:func:`shot_table` with Pearson and Spearman columns (× 100, as the papers print them)."""
    rows = [f" * {name:5s}  {'MSE':>8s} {'L1':>8s} {'G-Mean':>8s} {'Pearson':>8s} {'Spearman':>8s} {'count':>6s}"]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} {m['mse']:8.3f} {m['l1']:8.3f} {m['gmean']:8.3f} {100 * m['pearson']:8.2f} "
                    f"{100 * m['spearman']:8.2f} {m['count']:6d}")
    return "\n".join(rows)
