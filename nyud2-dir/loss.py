"""The NYUD2-DIR training objective: per-pixel losses plus image-level regularisers, any combination.

* regression: per-pixel weighted MSE (``--reweight``/``--lds`` give each pixel its depth bin's weight), or
  Balanced MSE (``--bmse --imp gai|bni``) on the pixels at or beyond 0.7 m, flattened into one column (BMC's
  N×N logits over ~10⁵ pixels per batch are refused);
* ConR (``--conr``): the depth variant, one contrastive sample per image — the whole 128-channel map, the mean
  depth as its label, linear pushing weight, a single view (docs/methods.md §4.2);
* RankSim (``--regularization_weight``) on the same flattened maps with the mean depth, and SRL (``--srl``) on a
  projection of the spatially averaged map with the mean depth's 0.1-m bin as its slot: new here, no reference
  runs them on depth;
* RnC (``--rnc``), also per image as ConR and RankSim: the flattened map of each image, its mean depth as the
  label (the paper defines RnC for one label per sample; a dense per-pixel RnC would contrast ~10⁵ pixels per
  batch and is not defined by it);
* UVOTE (``--uvote``) and VIR (``--vir``) per pixel, in place of the MSE: R's last convolution outputs every
  head's location and log scale (UVOTE) or the NIG parameters (VIR) at each pixel, each pixel weighted by its
  depth bin (UVOTE: per head, from the training pixel histogram; VIR: the LDS weight scales its pseudo-count).
"""
from __future__ import annotations

import torch

from common.bins import DEPTH_BINS
from common.method import LabelView
from common.objective import ObjectiveData, objective_from_args

BMSE_MIN_DEPTH = 0.7   # metres: Balanced MSE sees the pixels of the FDS/test bins 7…99


class DepthView(LabelView):
    """NYUD2's outputs as the terms see them. A batch holds ``input`` (B, 3, H, W), ``target`` and ``weight``
    (B, 1, h, w); the model returns ``pred`` (B, 1, h, w), ``encoding`` (B, C, h, w) and, for SRL, ``projection``
    (B, P). The main loss is per pixel; ConR is its dense variant on the maps; RankSim and RnC see one sample per
    image (its flattened map, its mean depth); SRL's slot is the 0.1-m bin of the image's mean depth."""

    dense = True
    srl_num_labels = DEPTH_BINS.num_bins     # fixed by the slots' bins: no --srl_num_labels on NYUD2

    def main_rows(self, pred, depth):
        # Every pixel, the mean over those at or beyond 0.7 m (the reference selects them; a mask keeps the shapes).
        return pred.reshape(-1, 1), depth.reshape(-1, 1), (depth >= BMSE_MIN_DEPTH).reshape(-1)

    def per_sample(self, features, depth):
        return features.flatten(1), depth.mean(dim=(1, 2, 3))[:, None]

    def srl_slot(self, depth: torch.Tensor, num_labels: int) -> torch.Tensor:
        """(B, 1, h, w) depth → (B,) SRL slot: the 0.1-m bin of the image's mean depth."""
        return DEPTH_BINS.index(depth.mean(dim=(1, 2, 3)).float())


def build_objective(args, *, gmm_file=None, bni_prior=None, pixel_counts=None):
    """The run's objective (:func:`common.objective.objective_from_args`) seen through :class:`DepthView`.

    ``gmm_file`` is the GAI mixture's file, ``bni_prior`` BNI's ``(centres (100,), weights (100,))``; only the
    one ``--imp`` names is read. ``pixel_counts``: the (100,) training pixel histogram on the depth bins (UVOTE's
    per-pixel head weights, unbounded).
    """
    if args.loss != "mse":
        raise ValueError(f"build_objective: depth trains the per-pixel weighted MSE, got loss {args.loss!r}.")
    if args.bmse and args.imp not in ("gai", "bni"):
        raise ValueError(f"build_objective: depth Balanced MSE is 'gai' or 'bni', got {args.imp!r}.")
    return objective_from_args(args, ObjectiveData(view=DepthView(), label_bins=DEPTH_BINS,
                                                   label_counts=pixel_counts, count_clip=None, gmm_file=gmm_file,
                                                   bni_prior=bni_prior))
