"""The one training objective of every benchmark: a main loss plus any stack of terms, each called the same way.

The methods of a run (:data:`common.methods.METHODS`) each give at most one :class:`~common.method.Term`: the
main loss (Balanced MSE, UVOTE's or VIR's likelihood, else the regression loss) and the terms added to it
(RankSim, ConR, RnC, SRL). Every one of them is called with the step's :class:`Step` and returns its named,
weighted components, so they are logged one by one.

A benchmark says once, in a :class:`LabelView`, how its model's outputs map onto what a term sees: per sample (the
age and text benchmarks, the default), or per pixel with image-level regularisers (NYUD2's view in
``nyud2-dir/loss.py``: the flattened map of each image and its mean depth, a dense ConR, Balanced MSE on the
pixels at or beyond 0.7 m); the scale the main loss and the heads see (STS-B: score / 5); SRL's label slots.

The model's output dictionary: ``pred`` (the regression output), ``encoding`` (the features RankSim, ConR and
RnC regularise), with SRL ``projection``, and the raw outputs of a UVOTE or VIR head (``mus``/``log_sigmas``,
``vir``; :mod:`common.models.heads`).
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from common import distributed, methods
from common.method import LabelView, Term, Step


@dataclass
class ObjectiveData:
    """What the flags do not hold and the methods need, from the benchmark's training data.

    Args:
        view: the benchmark's :class:`LabelView`.
        label_bins: the label grid (:class:`~common.bins.LabelBins`) that UVOTE's head weights index.
        label_counts: the training histogram on ``label_bins`` (UVOTE's heads are weighted by it).
        count_clip: bounds of the counts of UVOTE's exponents ≥ 1 (the age rule ``(5, 1000)``; None: none).
        gmm_file, bni_prior: Balanced MSE's priors (GAI's mixture file; BNI's ``(centres, weights)`` in the
            units the loss sees).
        loss_options: keywords of :class:`~common.losses.RegressionLoss` (STS-B's focal β).
        dense_conr: ConR's dense per-image variant (NYUD2).
        train_labels: the training labels themselves (ages, STS-B scores; None where only a histogram is kept,
            NYUD2's pixels): Dist Loss's KDE.
    """

    view: LabelView = field(default_factory=LabelView)
    label_bins: object = None
    label_counts: object = None
    count_clip: tuple | None = (5, 1000)
    gmm_file: object = None
    bni_prior: tuple | None = None
    loss_options: dict = field(default_factory=dict)
    train_labels: object = None


class Objective(nn.Module):
    """The main loss plus the terms, in the order of :data:`common.methods.METHODS`.

    Args:
        main: the main-loss :class:`Term` (registered under its method's name, e.g. ``bmse``).
        terms: ``{method name: Term}``.
        view: the benchmark's :class:`LabelView`.
        gather: under torchrun, the terms see the features of every process's share of the batch
            (:func:`common.distributed.gather_features`); off, each process regularises its own share.
        reuse_views: with ``views`` in the batch, one pass over the views serves every loss (``--conr_views 2``,
            RnC's encoder stage, ACCon) instead of a main pass and a pass of the views.
        record: keep each training pass's features for the epoch-end statistics (``--stats_from_training``).
        main_name: the method whose main loss ``main`` is.
        start_update: the first epoch whose statistics are collected (``--start_update``).
    """

    def __init__(self, main: Term, terms: dict | None = None, view: LabelView | None = None, gather: bool = False,
                 reuse_views: bool = False, record: bool = False, main_name: str = "regression",
                 start_update: int = 0):
        super().__init__()
        self.main_name = main_name
        self.add_module(main_name, main)
        self.term_names = list(terms or {})
        for name, term in (terms or {}).items():
            self.add_module(name, term)
        self.view = view or LabelView()
        self.gather, self.reuse_views, self.start_update = gather, reuse_views, start_update
        self.recorded = [] if record else None
        self.reads_views = any(term.reads_views for term in (terms or {}).values())
        # Checkpoints written before the one objective kept SRL's surrogate beside SRL, and STS-B's Balanced MSE
        # inside its score-scale wrapper.
        self._register_load_state_dict_pre_hook(_legacy_keys)

    @property
    def main(self) -> Term:
        return getattr(self, self.main_name)

    def terms(self) -> list[Term]:
        return [getattr(self, name) for name in self.term_names]

    def part(self, name: str):
        """The main loss or the term of method ``name``, or None."""
        return getattr(self, name) if name == self.main_name or name in self.term_names else None

    @contextlib.contextmanager
    def repeated_pass(self):
        """A second forward of the step's batch (BSAM's pass at perturbed parameters, run by the trainer under this
        context): with ``--stats_from_training`` the step's features are recorded once, from its first pass, so the
        epoch's FDS/SRL statistics count every sample once."""
        recorded, self.recorded = self.recorded, None
        try:
            yield
        finally:
            self.recorded = recorded

    def srl_slot(self, labels: torch.Tensor) -> torch.Tensor:
        """SRL's label slots of ``labels`` (the statistics pass folds projections in by them)."""
        return self.part("srl").slot(labels)

    def forward(self, model, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        targets, weights = batch["target"], batch.get("weight")
        views = batch.get("views")
        reuse = bool(self.reuse_views and self.reads_views and views)
        if reuse:
            # One pass over the two views serves every loss (two forward passes per image instead of three);
            # FDS calibrates it as it would the main pass.
            repeat = len(views)
            targets = targets.repeat(repeat, 1)
            weights = weights.repeat(repeat, 1) if weights is not None else None
            out = model(torch.cat(list(views)), targets)
        else:
            out = model(batch["input"], targets)
        if self.recorded is not None:
            # --stats_from_training: keep this pass's features for the epoch-end FDS/SRL update.
            self.recorded.append((out["encoding"].detach().float(), targets.detach(),
                                  out["projection"].detach().float() if "projection" in out else None,
                                  out["latent_var"].detach().float() if "latent_var" in out else None))
        step = Step(out, targets, weights, epoch, self.view, gather=self.gather)
        components = dict(self.main(step))
        if views and not reuse and self.reads_views:
            # The extra views, forwarded once without FDS, serve every term that reads them.
            repeat = len(views)
            step.views_out = model(torch.cat(list(views)), None, smooth=False)
            step.view_targets = batch["target"].repeat(repeat, 1)
            step.view_weights = weights.repeat(repeat, 1) if weights is not None else None
        for term in self.terms():
            components.update(term(step))
        return components

    @torch.no_grad()
    def statistics_pass(self, model, batches, epoch: int) -> None:
        """After each epoch ≥ ``start_update``: the model's FDS statistics (VIR's latent means and variances with
        its probabilistic smoothing) and SRL's surrogate, over one pass of ``batches``, with the model in train
        mode as the references (BN batch statistics, augmentation or dropout, FDS smoothing on: the collected
        ``encoding`` is the calibrated one, as the references' in-place write made it).

        The FDS moments are streamed batch by batch (:meth:`common.fds.FDS.statistics`), so vector features and
        per-pixel maps take the same path; SRL gathers the projections (one per sample or image). With
        ``recorded`` (``--stats_from_training``) the epoch's own training passes are used instead of a second
        pass over the data (``batches`` is then not read). Under torchrun every process collects its shard and
        all update with the whole pass, so the FDS buffers and the surrogate are identical on every process.
        """
        fds = getattr(getattr(model, "module", model), "fds", None)
        srl = self.part("srl")
        surrogate = srl.surrogate if srl is not None else None
        recorded = self.recorded
        if (fds is None and surrogate is None) or epoch < self.start_update:
            if recorded is not None:
                recorded.clear()
            return
        moments = fds.statistics() if fds is not None else None
        projections, slots = [], []

        def fold(encoding, targets, projection, latent_var):
            if moments is not None:
                moments.add(encoding, targets, *([] if latent_var is None else [latent_var]))
            if surrogate is not None:
                projections.append(projection.float())
                slots.append(self.srl_slot(targets))

        if recorded is not None:
            for entry in recorded:
                fold(*entry)
            recorded.clear()
        else:
            model.train()
            for batch in batches:
                out = model(batch["input"], batch["target"])
                fold(out["encoding"], batch["target"], out.get("projection"), out.get("latent_var"))
        if moments is not None:
            moments.all_reduce()            # under torchrun: every process folds the whole pass's moments
            moments.commit(epoch)
        if surrogate is not None:
            surrogate.update(distributed.gather_cat(torch.cat(projections)), distributed.gather_cat(torch.cat(slots)),
                             epoch)


def _legacy_keys(state_dict, prefix, *_):
    """Objective states saved before the one objective: Balanced MSE's and SRL's modules sat directly on it (STS-B's
    Balanced MSE inside a score-scale wrapper), SRL's surrogate beside SRL."""
    for key in list(state_dict):
        local = key[len(prefix):]
        if not key.startswith(prefix):
            continue
        if local.startswith("surrogate."):
            state_dict[prefix + "srl." + local] = state_dict.pop(key)
        elif local.startswith(("bmse.", "srl.")) and local.split(".")[1] not in ("loss", "surrogate"):
            name, rest = local.split(".", 1)
            state_dict[f"{prefix}{name}.loss.{rest}"] = state_dict.pop(key)


def objective_from_args(args, data: ObjectiveData | None = None) -> Objective:
    """The run's :class:`Objective` from parsed flags: the main loss of the first method that gives one (else
    the regression loss of ``--loss``) and every enabled method's term, in the list's order. ``data`` holds what
    the flags do not (:class:`ObjectiveData`). ``--conr_views 2``, RnC's encoder stage and a method whose
    :meth:`~common.method.Method.reuses_views` says so (ACCon) reuse the views for every loss;
    ``--stats_from_training`` records the training passes' features."""
    data = data or ObjectiveData()
    main_name, main = None, None
    for method in methods.enabled(args):
        loss = method.main_loss(args, data)
        if loss is not None:
            main_name, main = method.name, loss
            break
    if main is None:
        main_name, main = "regression", methods.REGRESSION.main_loss(args, data)
    terms = {}
    for method in methods.enabled(args):
        term = method.term(args, data)
        if term is not None:
            terms[method.name] = term
    reuse = (getattr(args, "conr_views", 3) == 2 or getattr(args, "rnc_stage", "none") == "encoder"
             or any(method.reuses_views(args) for method in methods.enabled(args)))
    return Objective(main, terms, data.view, gather=bool(getattr(args, "gather_features", False)), reuse_views=reuse,
                     record=bool(getattr(args, "stats_from_training", False)), main_name=main_name,
                     start_update=getattr(args, "start_update", 0))


def objective_from_flags(data: ObjectiveData | None = None, **flags) -> Objective:
    """:func:`objective_from_args` for flags given in code: every method flag at its default unless named
    (``objective_from_flags(loss='l1', conr=True, conr_beta=0.5)``; the flags' destinations, as ``train.py
    --help`` lists them)."""
    defaults = methods.default_flags()
    unknown = set(flags) - set(defaults)
    if unknown:
        raise ValueError(f"objective_from_flags: unknown flags {sorted(unknown)} (see train.py --help for the "
                         "destinations).")
    return objective_from_args(argparse.Namespace(**{**defaults, **flags}), data)
