"""The AgeDB-DIR training objective: ``--loss`` (weighted L1 by default, focal β 0.2) or Balanced MSE, plus
RankSim, ConR, RnC and SRL (or UVOTE's or VIR's likelihood), from the flags (``common.objective.objective_from_args``).

ConR runs on two extra augmentations of every image (forwarded without FDS), as the reference; SRL's label
slots are the integer ages 0…``--srl_num_labels`` − 1 (102 here: ages 0–101), the last slot shared by older ages.
"""
from common.bins import AGE_BINS
from common.objective import ObjectiveData, objective_from_args


def build_objective(args, gmm_file=None, bni_prior=None, label_counts=None, train_labels=None):
    """The objective module; ``gmm_file`` is GAI's mixture, ``bni_prior`` BNI's ``(ages, frequencies)``,
    ``label_counts`` the training histogram on the age grid (UVOTE's head weights, counts bounded to 5–1000),
    ``train_labels`` the training ages (Dist Loss's KDE)."""
    return objective_from_args(args, ObjectiveData(label_bins=AGE_BINS, label_counts=label_counts,
                                                   count_clip=(5, 1000), gmm_file=gmm_file, bni_prior=bni_prior,
                                                   train_labels=train_labels))
