"""The IMDB-WIKI-DIR training objective (``common.objective.objective_from_args``), the same wiring as AgeDB-DIR;
SRL's 187 label slots are the ages 0–186.

One difference from the reference: ConR's weight ``--beta`` is applied once (the reference adds the ConR term
twice on this dataset; ``--beta 8`` reproduces it, see docs/reference-differences.md).
"""
from common.bins import AGE_BINS
from common.objective import ObjectiveData, objective_from_args


def build_objective(args, gmm_file=None, bni_prior=None, label_counts=None, train_labels=None):
    """``label_counts``: the training histogram on the age grid (UVOTE's head weights; the counts of its
    exponents ≥ 1 bounded to 5–1000, the age rule); SRL's slots are the integer ages, the last one shared;
    ``train_labels``: the training ages (Dist Loss's KDE)."""
    return objective_from_args(args, ObjectiveData(label_bins=AGE_BINS, label_counts=label_counts,
                                                   count_clip=(5, 1000), gmm_file=gmm_file, bni_prior=bni_prior,
                                                   train_labels=train_labels))
