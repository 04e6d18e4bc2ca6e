"""The AgeDB-DIR training objective: ``--loss`` (weighted L1 by default) or Balanced MSE, plus RankSim, ConR
and SRL, built from plain values by ``common.objective.build_objective``.

ConR runs on two extra augmentations of every image (forwarded without FDS), as the reference; SRL's label
slots are the integer ages 0…``--srl_num_labels`` − 1.
"""
from common.objective import build_objective  # noqa: F401  (the age wiring is build_objective's default)
