"""The STS-B-DIR training objective: ``--loss`` (MSE by default) on score/5, or Balanced MSE, plus RankSim, ConR
and SRL, built by ``common.objective.build_objective``.

The model returns scores (0–5). The reference computes its loss between the linear output and score/5
(docs/datasets.md §2.3), so the regression loss and Balanced MSE here see ``pred / 5`` and ``target / 5``
(:class:`ScoreScale`); RankSim, ConR and SRL see the raw scores, so rank ties, ConR's window ``-w`` and the
0.1-wide SRL slots are in score units. The focal losses use β = 20 and Huber ``--huber_beta``, the STS-B
reference's values.
"""
from __future__ import annotations

import torch.nn as nn

from common.bins import STSB_BINS
from common.losses import RegressionLoss
from common.objective import build_objective as build_common_objective

SCORE_SCALE = 5.0
FOCAL_BETA = 20.0      # the STS-B reference's focal β (the age references use 0.2)


class ScoreScale(nn.Module):
    """``loss(pred / scale, target / scale, *rest)``: a loss on the reference's score/5 scale."""

    def __init__(self, loss: nn.Module, scale: float = SCORE_SCALE):
        super().__init__()
        self.loss, self.scale = loss, scale

    def forward(self, pred, target, *rest):
        return self.loss(pred / self.scale, target / self.scale, *rest)


def srl_slot(labels):
    """SRL label slot of a score: its 0.1-wide bin (the FDS bucket; docs/methods.md §7.5)."""
    return STSB_BINS.index(labels)


def build_objective(*, loss: str = "mse", huber_beta: float = 0.3, bmse=None, bni_prior=None, **settings):
    """``common.objective.build_objective`` with the STS-B scales; ``bni_prior`` centres are in score units."""
    if bni_prior is not None:
        bni_prior = (bni_prior[0] / SCORE_SCALE, bni_prior[1])
    objective = build_common_objective(loss=loss, bmse=bmse, bni_prior=bni_prior, srl_slot=srl_slot, **settings)
    if bmse is not None:
        objective.bmse = ScoreScale(objective.bmse)
    else:
        keywords = {"beta": FOCAL_BETA} if loss.startswith("focal") else {"beta": huber_beta} if loss == "huber" else {}
        objective.regression = ScoreScale(RegressionLoss(loss, **keywords))
    return objective
