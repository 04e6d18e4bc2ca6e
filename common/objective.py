"""The training objective of a DIR run: one regression loss plus any stack of regularisers.

A benchmark builds :class:`DIRObjective` from explicit modules (``loss.py`` in its folder) and the trainer calls
it on every batch. It reads the model's output dictionary: ``pred`` (the regression output), ``encoding`` (the
features RankSim, ConR and RnC regularise), with SRL ``projection``, and the raw outputs of a UVOTE or VIR head
(``mus``/``log_sigmas``, ``vir``; :mod:`common.models.heads`). The components come back named and already
weighted, so they can be logged one by one.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from common.models.heads import flat_rows


def uvote_component(uvote, table, label_bins, out, targets, epoch: int, scale: float = 1.0) -> torch.Tensor:
    """UVOTE's loss of a batch: the heads' ``mus``/``log_sigmas`` (B, M[, H, W]) against ``targets`` (B, 1[, H,
    W]) / ``scale``, each sample (pixel) weighted per head by ``table`` (bins, M) at its label's bin."""
    labels = flat_rows(targets)
    head_weights = table.to(device=labels.device)[label_bins.index(labels.detach())[:, 0]]
    return uvote(flat_rows(out["mus"]).float(), flat_rows(out["log_sigmas"]).float(), labels.float() / scale,
                 head_weights, epoch=epoch)


def vir_component(vir, out, targets, weights, scale: float = 1.0) -> torch.Tensor:
    """VIR's NIG loss of a batch: the head's ``vir = (mean, evidence, omega)`` (B, 1[, H, W]) with the pseudo-count
    scaled by ``weights`` (the LDS weights; ones without re-weighting), against ``targets`` / ``scale``."""
    from common.losses import vir_nig_params
    gamma, nu, alpha, beta = vir_nig_params(*(part.float() for part in out["vir"]), weights)
    return vir(flat_rows(gamma), flat_rows(nu), flat_rows(alpha), flat_rows(beta), flat_rows(targets).float() / scale)


class DIRObjective(nn.Module):
    """Regression (or Balanced MSE, UVOTE or VIR) + RankSim + ConR + RnC + SRL, each optional.

    Args:
        regression: ``loss(pred, target, weight)`` (``RegressionLoss``), used unless ``bmse``, ``uvote`` or
            ``vir`` is given.
        regression_name: the component's name in logs (``'l1'``, ``'mse'``, …).
        bmse: a Balanced MSE module ``loss(pred, target)`` (GAI, BMC or BNI); replaces ``regression``.
        uvote, uvote_table, label_bins: UVOTE's loss (:class:`~common.losses.UVOTELoss`) on a UVOTE head, its
            per-bin head weights (bins, M) (:func:`~common.losses.uvote_weight_table`) and the label grid that
            indexes them; replaces ``regression``.
        vir: VIR's NIG loss (:class:`~common.losses.VIRLoss`) on a VIR head; replaces ``regression``.
        target_scale: UVOTE and VIR see ``target / target_scale`` (STS-B's heads work on score/5).
        rnc, rnc_weight: RnC (:class:`~common.losses.RnC`) on ``encoding`` — the views' with ``views`` in the
            batch (two views per sample, 2N rows), else the main pass's (N rows) — and its weight.
        ranksim, ranksim_weight: RankSim on ``encoding`` and its weight γ.
        conr, conr_weight: ConR and its weight β. With ``views`` in the batch (the age protocol: two extra
            augmentations) ConR runs on the views' encodings, forwarded without FDS; without, on the main
            pass's encoding.
        srl, srl_weights, surrogate: SRL's three losses with weights ``(w1, w2, w3)`` and its per-label
            running-mean surrogate (:class:`~common.losses.SRLSurrogate`).
        srl_slot: maps labels (N, 1) to SRL label slots (N, 1) (age: clamp to the last slot).
        gather: under torchrun, RankSim, ConR and SRL see the features of every process's share of the batch
            (:func:`common.distributed.gather_features`); off, each process regularises its own share.
    """

    def __init__(self, regression=None, regression_name: str = "loss", bmse=None, ranksim=None,
                 ranksim_weight: float = 0.0, conr=None, conr_weight: float = 0.0, srl=None,
                 srl_weights=(10.0, 100.0, 0.01), surrogate=None, srl_slot=None, gather: bool = False,
                 uvote=None, uvote_table=None, label_bins=None, vir=None, target_scale: float = 1.0, rnc=None,
                 rnc_weight: float = 0.0):
        super().__init__()
        if sum(part is not None for part in (regression, bmse, uvote, vir)) != 1:
            raise ValueError("DIRObjective: pass exactly one of `regression`, `bmse`, `uvote` and `vir`.")
        if uvote is not None and (uvote_table is None or label_bins is None):
            raise ValueError("DIRObjective: UVOTE needs its `uvote_table` and the `label_bins` that index it.")
        self.uvote, self.vir, self.label_bins, self.target_scale = uvote, vir, label_bins, target_scale
        self.register_buffer("uvote_table", None if uvote_table is None else torch.as_tensor(uvote_table).float(),
                             persistent=False)
        self.rnc, self.rnc_weight = rnc, rnc_weight
        if (srl is None) != (surrogate is None):
            raise ValueError("DIRObjective: SRL needs both `srl` and its `surrogate`.")
        self.regression, self.regression_name, self.bmse = regression, regression_name, bmse
        self.ranksim, self.ranksim_weight = ranksim, ranksim_weight
        self.conr, self.conr_weight = conr, conr_weight
        self.srl, self.srl_weights, self.surrogate = srl, tuple(srl_weights), surrogate
        self.srl_slot = srl_slot or (lambda labels: labels)
        self.gather = gather
        self.reuse_views = False      # --conr_views 2
        self.recorded = None          # --stats_from_training: a list of (encoding, targets, projection) per step

    def _share(self, tensor, with_gradient: bool = True):
        """The global batch's ``tensor`` with ``gather`` under torchrun, else this process's."""
        from common import distributed
        return distributed.share(tensor, self.gather, with_gradient)

    def forward(self, model, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        targets, weights = batch["target"], batch.get("weight")
        views = batch.get("views")
        reuse = self.reuse_views and (self.conr is not None or self.rnc is not None) and views
        if reuse:
            # --conr_views 2: one pass over the two ConR views serves every loss (two forward passes per image
            # instead of three); FDS calibrates it as it would the main pass.
            repeat = len(views)
            out = model(torch.cat(list(views)), targets.repeat(repeat, 1), epoch)
            targets = targets.repeat(repeat, 1)
            weights = weights.repeat(repeat, 1) if weights is not None else None
        else:
            out = model(batch["input"], targets, epoch)
        pred = out["pred"]
        if self.recorded is not None:
            # --stats_from_training: keep this pass's features for the epoch-end FDS/SRL update.
            self.recorded.append((out["encoding"].detach().float(), targets.detach(),
                                  out["projection"].detach().float() if "projection" in out else None,
                                  out["latent_var"].detach().float() if "latent_var" in out else None))
        components = {}
        if self.bmse is not None:
            components["bmse"] = self.bmse(pred.float(), targets)
        elif self.uvote is not None:
            components["uvote"] = uvote_component(self.uvote, self.uvote_table, self.label_bins, out, targets, epoch,
                                                  self.target_scale)
        elif self.vir is not None:
            components["vir"] = vir_component(self.vir, out, targets, weights, self.target_scale)
        else:
            components[self.regression_name] = self.regression(pred.float(), targets, weights)
        share = self._share
        view_out = None
        if views and not reuse and (self.conr is not None or self.rnc is not None):
            # The extra views, forwarded once without FDS, serve ConR and RnC alike.
            view_out = model(torch.cat(list(views)), None, epoch, smooth=False)
        if self.ranksim is not None:
            components["ranksim"] = self.ranksim_weight * self.ranksim(share(out["encoding"]), share(targets, False))
        if self.conr is not None:
            if reuse:
                features, labels, preds, view_weights = out["encoding"], targets, pred, weights
            elif views:
                repeat = len(views)
                features, labels, preds = view_out["encoding"], targets.repeat(repeat, 1), view_out["pred"]
                view_weights = weights.repeat(repeat, 1) if weights is not None else None
            else:
                features, labels, preds, view_weights = out["encoding"], targets, pred, weights
            view_weights = share(view_weights, False) if view_weights is not None else None
            components["conr"] = self.conr_weight * self.conr(share(features), share(labels, False),
                                                              share(preds.detach(), False), view_weights)
        if self.rnc is not None:
            if view_out is not None:
                features, labels = view_out["encoding"], batch["target"].repeat(len(views), 1)
            else:
                features, labels = out["encoding"], targets
            components["rnc"] = self.rnc_weight * self.rnc(share(features.float()), share(labels, False))
        if self.srl is not None:
            contrastive, enveloping, homogeneity = self.srl(share(out["projection"]), share(self.srl_slot(targets),
                                                                                           False),
                                                            self.surrogate.running_mean)
            w1, w2, w3 = self.srl_weights
            components["srl_contrastive"] = w1 * contrastive
            components["srl_enveloping"] = w2 * enveloping
            components["srl_homogeneity"] = w3 * homogeneity
        return components


def settings_from_args(args) -> dict:
    """The objective's hyper-parameters from parsed flags: the one place where flags become the keyword arguments
    of :func:`build_parts` and :func:`build_objective`, for every benchmark. A flag the benchmark's parser does
    not have is left out, so that hyper-parameter keeps :func:`build_parts`' default (per-benchmark defaults are
    the parser's, set in each ``train.py``)."""
    a = vars(args)
    on = lambda flag: bool(a.get(flag, False))
    settings = dict(
        loss=a.get("loss"), bmse=a["imp"] if on("bmse") else None, init_noise_sigma=a.get("init_noise_sigma"),
        fix_noise_sigma=a.get("fix_noise_sigma"),
        ranksim_weight=a.get("regularization_weight"), interpolation_lambda=a.get("interpolation_lambda"),
        ranksim_ties=a.get("ranksim_ties"),
        conr_weight=a["conr_beta"] if on("conr") else 0.0, conr_window=a.get("conr_window"),
        conr_temperature=a.get("conr_temperature"), conr_eta=a.get("conr_eta"),
        conr_denominator=a.get("conr_denominator"),
        srl_weights=(a["w1"], a["w2"], a["w3"]) if on("srl") else None, srl_num_labels=a.get("srl_num_labels"),
        embedding_dim=a.get("embedding_dim"), n_points=a.get("n_points"), srl_temperature=a.get("temperature"),
        srl_homogeneity_alpha=a.get("srl_homogeneity_alpha"),
        start_update=a.get("start_update"), momentum=a.get("fds_mmt"), seed=a.get("seed"),
        gather=a.get("gather_features"),
        rnc_weight=a["rnc_weight"] if on("rnc") else 0.0, rnc_temperature=a.get("rnc_temp"),
        rnc_feature_sim=a.get("rnc_feature_sim"),
        uvote_heads=a["num_branch"] if on("uvote") else None, dynamic_loss=a.get("dynamic_loss"),
        epochs=a.get("epoch"), vir_reg_weight=a["vir_reg_weight"] if on("vir") else None)
    return {key: value for key, value in settings.items() if value is not None or key in ("bmse", "srl_weights")}


def uvote_table_from_args(args, counts, clip=(5, 1000)):
    """UVOTE's (bins, M) head weights from the training histogram ``counts`` (bins,) and the flags
    (``--num_branch``; ``--lds --lds_kernel --lds_ks --lds_sigma`` smooth the heads' counts); ``clip`` bounds the
    counts of exponents ≥ 1 (the age rule; None as STS-B's and NYUD2's re-weighting). None without ``--uvote``."""
    if not getattr(args, "uvote", False):
        return None
    from common.losses import uvote_weight_table
    return uvote_weight_table(counts, args.num_branch, lds=args.lds, lds_kernel=args.lds_kernel, lds_ks=args.lds_ks,
                              lds_sigma=args.lds_sigma, clip=clip)


def build_parts(*, bmse: str | None = None, init_noise_sigma: float = 1.0, fix_noise_sigma: bool = False,
                gmm_file=None, bni_prior=None, ranksim_weight: float = 0.0, interpolation_lambda: float = 1.0,
                ranksim_ties: str = "stable", conr_weight: float = 0.0, conr_window: float = 1.0,
                conr_temperature: float = 0.07, conr_eta: float = 0.01, conr_denominator: str = "reference",
                conr_class=None, srl_weights=None, srl_num_labels: int = 121, embedding_dim: int = 128,
                n_points: int = 2000, srl_temperature: float = 0.3, srl_homogeneity_alpha: float = -1.0,
                start_update: int = 0, momentum: float = 0.9, seed: int = 0, rnc_weight: float = 0.0,
                rnc_temperature: float = 2.0, rnc_feature_sim: str = "l2", uvote_heads: int | None = None,
                dynamic_loss: bool = False, epochs: int | None = None, uvote_table=None, label_bins=None,
                vir_reg_weight: float | None = None) -> dict:
    """The loss modules of every method a run stacks, by the keyword names of :class:`DIRObjective` (a depth
    objective takes the same names); 0 or None turns a method off.

    Args:
        bmse: ``'gai'``, ``'bmc'`` or ``'bni'`` for Balanced MSE; ``gmm_file`` (GAI) and ``bni_prior =
            (bucket_centers, bucket_weights)`` (BNI) are its priors; σ starts at ``init_noise_sigma`` and is
            frozen with ``fix_noise_sigma``.
        ranksim_weight, interpolation_lambda, ranksim_ties: RankSim's γ, λ and rank tie rule.
        conr_weight, conr_window, conr_temperature, conr_eta, conr_denominator: ConR's β, w, τ, η;
            ``conr_class`` is :class:`~common.losses.ConR` (default) or the dense :class:`~common.losses.ConRDense`.
        srl_weights: ``(w1, w2, w3)`` to turn SRL on; ``srl_num_labels`` slots, ``embedding_dim``, ``n_points``,
            ``srl_temperature``, ``srl_homogeneity_alpha``; its surrogate tracks from ``start_update`` with
            ``momentum``; ``seed`` draws its random points.
        rnc_weight, rnc_temperature, rnc_feature_sim: RnC's weight, τ and similarity.
        uvote_heads: M to turn UVOTE on, with ``dynamic_loss`` over ``epochs``, its (bins, M) ``uvote_table``
            and the ``label_bins`` that index it.
        vir_reg_weight: λ of VIR's evidence regulariser, to turn VIR on.
    """
    from common.gmm import load_gmm
    from common.losses import BMCLoss, BNILoss, ConR, GAILoss, RankSim, RnC, SRL, SRLSurrogate, UVOTELoss, VIRLoss

    parts = {}
    if bmse == "bmc":
        parts["bmse"] = BMCLoss(init_noise_sigma)
    elif bmse == "gai":
        parts["bmse"] = GAILoss(init_noise_sigma, load_gmm(gmm_file))
    elif bmse == "bni":
        parts["bmse"] = BNILoss(init_noise_sigma, *bni_prior)
    elif bmse is not None:
        raise ValueError(f"build_parts: `bmse` must be 'gai', 'bmc', 'bni' or None, got {bmse!r}.")
    if bmse is not None:
        parts["bmse"].noise_sigma.requires_grad_(not fix_noise_sigma)
    if ranksim_weight > 0:
        parts.update(ranksim=RankSim(interpolation_lambda, ranksim_ties), ranksim_weight=ranksim_weight)
    if conr_weight:
        conr = (conr_class or ConR)(conr_window, conr_temperature, conr_eta, conr_denominator)
        parts.update(conr=conr, conr_weight=conr_weight)
    if srl_weights is not None:
        parts.update(srl=SRL(srl_num_labels, embedding_dim, n_points, srl_temperature, srl_homogeneity_alpha,
                             seed=seed),
                     srl_weights=srl_weights, surrogate=SRLSurrogate(srl_num_labels, embedding_dim, start_update,
                                                                     momentum))
    if rnc_weight:
        parts.update(rnc=RnC(rnc_temperature, rnc_feature_sim), rnc_weight=rnc_weight)
    if uvote_heads is not None:
        if uvote_table is None or label_bins is None:
            raise ValueError("build_parts: UVOTE needs `uvote_table` (uvote_weight_table) and `label_bins`.")
        parts.update(uvote=UVOTELoss(uvote_heads, dynamic_loss, epochs if dynamic_loss else None),
                     uvote_table=uvote_table, label_bins=label_bins)
    if vir_reg_weight is not None:
        parts["vir"] = VIRLoss(vir_reg_weight)
    return parts


def build_objective(*, loss: str = "l1", loss_options: dict | None = None, srl_slot=None, gather: bool = False,
                    target_scale: float = 1.0, **methods) -> DIRObjective:
    """A :class:`DIRObjective` from plain values: the regression ``loss`` (``l1``, ``mse``, ``focal_l1``,
    ``focal_mse``, ``huber``; ``loss_options`` such as ``{'beta': 20.0}`` go to
    :class:`~common.losses.RegressionLoss`) unless ``methods`` has ``bmse``, plus the methods of
    :func:`build_parts` (its keyword arguments). ``srl_slot`` maps labels to SRL slots (default: age labels, the
    last slot shared by every age ≥ L − 1); ``gather`` regularises the global batch under torchrun
    (``--gather_features``)."""
    from common.losses import RegressionLoss

    parts = build_parts(**methods)
    if not {"bmse", "uvote", "vir"} & set(parts):
        parts.update(regression=RegressionLoss(loss, **(loss_options or {})), regression_name=loss)
    if "srl" in parts and srl_slot is None:
        last_slot = methods.get("srl_num_labels", 121) - 1
        srl_slot = lambda labels: labels.clamp(max=last_slot)   # noqa: E731
    return DIRObjective(**parts, srl_slot=srl_slot, gather=gather, target_scale=target_scale)


def objective_from_args(args, **data) -> DIRObjective:
    """:func:`build_objective` from parsed flags (:func:`settings_from_args`); ``data`` adds what the flags do not
    hold: ``gmm_file``, ``bni_prior``, ``srl_slot``, ``loss_options``, UVOTE's ``uvote_table`` and
    ``label_bins``, ``target_scale``. The run's protocol switches follow the flags too: ``--conr_views 2`` reuses
    the ConR views for every loss, and so does RnC's encoder stage (the paper's two passes per image: the views
    alone); ``--stats_from_training`` records the training passes' features for the FDS/SRL update."""
    objective = build_objective(**settings_from_args(args), **data)
    objective.reuse_views = getattr(args, "conr_views", 3) == 2 or getattr(args, "rnc_stage", "none") == "encoder"
    objective.recorded = [] if getattr(args, "stats_from_training", False) else None
    return objective


@torch.no_grad()
def statistics_pass(model, objective, batches, epoch: int, start_update: int) -> None:
    """After each epoch ≥ ``start_update``: the model's FDS statistics and the objective's SRL surrogate over one
    pass of ``batches``, model in train mode as the references (BN batch statistics, augmentation or dropout, FDS
    smoothing on: the collected ``encoding`` is the calibrated one, as the references' in-place write made it).

    With ``objective.recorded`` (``--stats_from_training``) the features of the epoch's own training passes are
    used instead of a second pass over the data (``batches`` is then not read). For vector features (age, text).
    Under torchrun every process collects its shard and all update with the whole pass, so the FDS buffers and
    the surrogate are identical on every process.
    """
    from common import distributed
    from common.fds import ProbabilisticFDS
    fds = getattr(getattr(model, "module", model), "fds", None)
    surrogate = getattr(objective, "surrogate", None)
    recorded = getattr(objective, "recorded", None)
    if (fds is None and surrogate is None) or epoch < start_update:
        if recorded is not None:
            recorded.clear()
        return
    probabilistic = isinstance(fds, ProbabilisticFDS)
    if recorded is not None:
        encodings = [r[0] for r in recorded]
        labels = [r[1] for r in recorded]
        projections = [r[2] for r in recorded] if surrogate is not None else []
        variances = [r[3] for r in recorded] if probabilistic else []
        recorded.clear()
    else:
        model.train()
        encodings, projections, labels, variances = [], [], [], []
        for batch in batches:
            out = model(batch["input"], batch["target"], epoch)
            if fds is not None:
                encodings.append(out["encoding"].float())
            if probabilistic:
                variances.append(out["latent_var"].float())
            if surrogate is not None:
                projections.append(out["projection"].float())
            labels.append(batch["target"])
    labels = distributed.gather_cat(torch.cat(labels))
    if fds is not None:
        fds.update_last_epoch_stats(epoch)
        extra = {"latent_var": distributed.gather_cat(torch.cat(variances))} if probabilistic else {}
        fds.update_running_stats(distributed.gather_cat(torch.cat(encodings)), labels, epoch, **extra)
    if surrogate is not None:
        surrogate.update(distributed.gather_cat(torch.cat(projections)), objective.srl_slot(labels), epoch)
