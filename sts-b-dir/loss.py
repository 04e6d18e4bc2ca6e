"""The STS-B-DIR training objective: ``--loss`` (MSE by default) on score/5, or Balanced MSE, plus RankSim, ConR
and SRL, built from the flags by ``common.objective.objective_from_args``.

The model returns scores (0–5). The reference computes its loss between the linear output and score/5
(docs/datasets.md §2.3), so the regression loss and Balanced MSE here see ``pred / 5`` and ``target / 5``
(:class:`ScoreView`), and UVOTE's and VIR's heads work on score/5 too (its ``label_scale``); RankSim, ConR,
RnC and SRL see the raw scores, so rank ties, ConR's window ``-w`` and the 0.1-wide SRL slots are in score
units. The focal losses use β = 20 and Huber ``--huber_beta``, the STS-B reference's values.
"""
from __future__ import annotations

from common.bins import STSB_BINS
from common.method import LabelView
from common.objective import ObjectiveData, objective_from_args

SCORE_SCALE = 5.0
FOCAL_BETA = 20.0      # the STS-B reference's focal β (the age references use 0.2)


class ScoreView(LabelView):
    """STS-B's pair features, one per sample; the main loss and the heads on score/5, SRL's slots the 0.1-wide
    score bins (the FDS buckets; docs/methods.md §7.5)."""

    label_scale = SCORE_SCALE

    def srl_slot(self, labels, num_labels):
        return STSB_BINS.index(labels)


def loss_options(args) -> dict:
    """``RegressionLoss`` keywords of ``--loss``: the STS-B reference's focal β and ``--huber_beta`` (on score/5)."""
    if args.loss.startswith("focal"):
        return {"beta": FOCAL_BETA}
    return {"beta": args.huber_beta} if args.loss == "huber" else {}


def build_objective(args, *, gmm_file=None, bni_prior=None, label_counts=None, label_bins=STSB_BINS,
                    train_labels=None):
    """The objective of the parsed flags, with the regression loss, Balanced MSE, UVOTE or VIR on score/5.
    ``gmm_file``: GAI's mixture, fitted on score/5; ``bni_prior = (centres (K,), weights (K,))``: BNI's bins with
    centres in score units, divided by 5 here; ``label_counts``: the training histogram on ``label_bins`` (the
    score bins; UVOTE's head weights, unbounded); ``train_labels``: the training scores (Dist Loss's KDE, in score
    units; its pseudo-labels are divided by 5 with the predictions)."""
    if bni_prior is not None:
        bni_prior = (bni_prior[0] / SCORE_SCALE, bni_prior[1])
    return objective_from_args(args, ObjectiveData(
        view=ScoreView(), label_bins=label_bins, label_counts=label_counts, count_clip=None, gmm_file=gmm_file,
        bni_prior=bni_prior, loss_options=loss_options(args), train_labels=train_labels))
