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
import torch.nn as nn

from common.distributed import share
from common.bins import DEPTH_BINS
from common.losses import ConRDense, weighted_mse_loss
from common.objective import uvote_component, vir_component

BMSE_MIN_DEPTH = 0.7   # metres: Balanced MSE sees the pixels of the FDS/test bins 7…99


class DepthObjective(nn.Module):
    """Every enabled loss of one step, named and weighted. A batch holds ``input`` (B, 3, H, W), ``target`` and
    ``weight`` (B, 1, h, w); the model returns ``pred`` (B, 1, h, w), ``encoding`` (B, C, h, w) and, for SRL,
    ``projection`` (B, P)."""

    def __init__(self, bmse=None, conr=None, conr_weight=0.0, ranksim=None, ranksim_weight=0.0, srl=None,
                 srl_weights=(10.0, 100.0, 0.01), surrogate=None, gather: bool = False, uvote=None,
                 uvote_table=None, label_bins=None, vir=None, rnc=None, rnc_weight=0.0):
        super().__init__()
        if sum(part is not None for part in (bmse, uvote, vir)) > 1:
            raise ValueError("DepthObjective: pass at most one of `bmse`, `uvote` and `vir`.")
        self.gather = gather      # under torchrun: the image-level regularisers see the global batch
        self.uvote, self.label_bins, self.vir = uvote, label_bins, vir
        self.register_buffer("uvote_table", None if uvote_table is None else torch.as_tensor(uvote_table).float(),
                             persistent=False)
        self.rnc, self.rnc_weight = rnc, rnc_weight
        self.bmse, self.conr, self.conr_weight = bmse, conr, conr_weight
        self.ranksim, self.ranksim_weight = ranksim, ranksim_weight
        self.srl, self.srl_weights, self.surrogate = srl, tuple(srl_weights), surrogate

    @staticmethod
    def srl_slot(depth: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) depth → (B,) SRL slot: the 0.1-m bin of the image's mean depth."""
        return DEPTH_BINS.index(depth.mean(dim=(1, 2, 3)).float())

    def forward(self, model, batch, epoch):
        depth, weight = batch["target"], batch["weight"]
        out = model(batch["input"], depth, epoch)
        pred = out["pred"].float()
        components = {}
        if self.bmse is not None:
            keep = depth >= BMSE_MIN_DEPTH
            components["bmse"] = self.bmse(pred[keep].reshape(-1, 1), depth[keep].reshape(-1, 1))
        elif self.uvote is not None:
            components["uvote"] = uvote_component(self.uvote, self.uvote_table, self.label_bins, out, depth, epoch)
        elif self.vir is not None:
            components["vir"] = vir_component(self.vir, out, depth, weight)
        else:
            components["mse"] = weighted_mse_loss(pred, depth, weight)
        features = depth_share = None
        if self.conr is not None or self.ranksim is not None or self.rnc is not None:
            features = share(out["encoding"], self.gather)
            depth_share = share(depth, self.gather, False)
        if self.conr is not None:
            components["conr"] = self.conr_weight * self.conr(features, depth_share,
                                                              share(pred.detach(), self.gather, False),
                                                              share(weight, self.gather, False))
        if self.ranksim is not None:
            components["ranksim"] = self.ranksim_weight * self.ranksim(features.flatten(1),
                                                                       depth_share.mean(dim=(1, 2, 3))[:, None])
        if self.rnc is not None:
            components["rnc"] = self.rnc_weight * self.rnc(features.flatten(1).float(),
                                                           depth_share.mean(dim=(1, 2, 3))[:, None])
        if self.srl is not None:
            contrastive, enveloping, homogeneity = self.srl(share(out["projection"], self.gather),
                                                            share(self.srl_slot(depth), self.gather, False),
                                                            self.surrogate.running_mean)
            w1, w2, w3 = self.srl_weights
            components.update(srl_contrastive=w1 * contrastive, srl_enveloping=w2 * enveloping,
                              srl_homogeneity=w3 * homogeneity)
        return components


def build_objective(args, *, gmm_file=None, bni_prior=None, uvote_table=None) -> DepthObjective:
    """A :class:`DepthObjective` from parsed flags: the same flags → values mapping as every benchmark
    (:func:`common.objective.settings_from_args`), the same loss modules (:func:`common.objective.build_parts`)
    with the dense ConR and SRL slots that are the 100 depth bins (:meth:`DepthObjective.srl_slot`).

    ``gmm_file`` is the GAI mixture's file, ``bni_prior`` BNI's ``(centres (100,), weights (100,))``; only the
    one ``--imp`` names is read. ``uvote_table``: UVOTE's (100, M) per-pixel head weights on the depth bins.
    """
    from common.objective import build_parts, settings_from_args
    settings = settings_from_args(args)
    # build_parts takes the methods only: the regression loss and the gathering are DepthObjective's own.
    loss, gather = settings.pop("loss", "mse"), settings.pop("gather", False)
    if loss != "mse":
        raise ValueError(f"build_objective: depth trains the per-pixel weighted MSE, got loss {loss!r}.")
    if settings["bmse"] not in (None, "gai", "bni"):
        raise ValueError(f"build_objective: depth Balanced MSE is 'gai' or 'bni', got {settings['bmse']!r}.")
    # The slots are fixed by srl_slot's bins; an older checkpoint's saved --srl_num_labels must not override them.
    settings["srl_num_labels"] = DEPTH_BINS.num_bins
    parts = build_parts(**settings, gmm_file=gmm_file, bni_prior=bni_prior, conr_class=ConRDense,
                        uvote_table=uvote_table, label_bins=DEPTH_BINS)
    return DepthObjective(**parts, gather=gather)
