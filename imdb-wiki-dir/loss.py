"""The IMDB-WIKI-DIR training objective (``common.objective.build_objective``), the same wiring as AgeDB-DIR.

One difference from the reference: ConR's weight ``--beta`` is applied once (the reference adds the ConR term
twice on this dataset, see docs/reference-differences.md).
"""
from common.objective import build_objective  # noqa: F401
