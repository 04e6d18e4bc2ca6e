"""The IMDB-WIKI-DIR training objective (``common.objective.objective_from_args``), the same wiring as AgeDB-DIR;
SRL's 187 label slots are the ages 0–186.

One difference from the reference: ConR's weight ``--beta`` is applied once (the reference adds the ConR term
twice on this dataset; ``--beta 8`` reproduces it, see docs/reference-differences.md).
"""
from common.bins import AGE_BINS
from common.objective import objective_from_args


def build_objective(args, gmm_file=None, bni_prior=None, uvote_table=None):
    """``uvote_table``: UVOTE's (121, M) head weights on the age grid."""
    return objective_from_args(args, gmm_file=gmm_file, bni_prior=bni_prior, uvote_table=uvote_table,
                               label_bins=AGE_BINS)
