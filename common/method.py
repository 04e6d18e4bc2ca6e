"""What one DIR method is to the rest of the repo: its command line, checks, run-name tag and what it builds.

Each method's file (``common/losses/conr.py``, ``common/fds.py``, …) holds its maths and, beside it, one
:class:`Method` that wires the maths into a run. :mod:`common.methods` lists those entries in one explicit order,
and the parsers, the objective, the optimiser builder and the run names go through that list and nothing else,
so adding a method is its file and one line there.

A method may give any of:

* an argument group (:meth:`Method.add_args`, the authors' flag names; a benchmark's ``train.py`` passes its own
  defaults as keywords), parse-time checks (:meth:`Method.check`) and numeric ranges (:attr:`Method.positive`,
  :attr:`Method.non_negative`, :attr:`Method.unit_interval`);
* a run-name part (:meth:`Method.tag`);
* the main loss (:meth:`Method.main_loss`: Balanced MSE, UVOTE, VIR; else the regression loss) or a term added
  to it (:meth:`Method.term`: RankSim, ConR, RnC, SRL); both are :class:`Term` modules, called the same way;
* the regression head's kind (:meth:`Method.head`) and the flags that define the model (:attr:`model_flags`);
* a change to the built model (:meth:`Method.prepare_model`: RRT's trunk and frozen layers, RnC's probe);
* optimiser groups of its own (:meth:`Method.param_groups`);
* a change to the optimisation step itself (:meth:`Method.step_rule`: BSAM's second pass at perturbed
  parameters), at most one per run.

docs/adding-a-method.md walks through it; ``tests/helpers/toy_regularizer.py`` and ``toy_head.py`` are two
complete examples of one file each.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn as nn

from common import distributed


class Method:
    """One method's wiring; every hook does nothing by default."""

    #: the method's name in logs and in :data:`common.methods.METHODS` lookups.
    name = ""
    #: what turns it on, for messages (``"--conr"``).
    switch = ""
    #: flags that define the model: an evaluated checkpoint keeps its own values of them.
    model_flags: tuple[str, ...] = ()
    #: numeric flags that must be > 0 and ≥ 0 (checked for the flags the benchmark's parser has).
    positive: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()
    unit_interval: tuple[str, ...] = ()
    #: flags whose parsed value is None unless given: an evaluated checkpoint's value, else this default.
    eval_defaults: dict = {}
    #: flags of the method's group that act without the method (another method or the benchmark reads them):
    #: given while the method is off, they are not said to be ignored.
    independent: tuple[str, ...] = ()

    def add_args(self, parser: argparse.ArgumentParser, **options) -> None:
        """The method's argument group; ``options`` are the benchmark's defaults and switches."""

    def enabled(self, args) -> bool:
        """Whether the parsed flags turn the method on."""
        return False

    def check(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Refuse (``parser.error``, one sentence) what cannot work with this method; only flags the parser has."""

    def tag(self, args) -> str | None:
        """The run folder's name part of an enabled method (the references' naming)."""
        return None

    def main_loss(self, args, data):
        """A :class:`Term` that replaces the regression loss, or None."""
        return None

    def term(self, args, data):
        """A :class:`Term` added to the main loss, or None."""
        return None

    def reuses_views(self, args) -> bool:
        """Whether, when the batch has extra views, they are the main pass of an enabled method (the regression
        loss on every view, one pass serving every loss) instead of a main pass plus a pass of the views."""
        return False

    def head(self, args) -> dict | None:
        """Keywords of the model's regression head (``head``, …) when this method brings its own, else None."""
        return None

    def prepare_model(self, args, model, spec: "ModelSpec", log) -> None:
        """Change the benchmark's freshly built model as the flags say (RRT loads a trunk and freezes it; RnC's
        encoder stage detaches the head); called for every method in the list's order, enabled or not."""

    def param_groups(self, args, model, objective) -> list[dict]:
        """Optimiser groups of the method's own parameters (``params``, ``name``, ``lr``; ``follows_lr``: scaled
        and scheduled with the model's learning rate, else fixed); they leave the model's group."""
        return []

    def step_rule(self, args) -> "StepRule | None":
        """A :class:`StepRule` that changes the loop's optimisation step (BSAM), or None; at most one enabled method
        of a run gives one."""
        return None


class StepRule:
    """A change to the training loop's step, between the first backward pass and the base optimiser's step.

    The loop (:meth:`common.trainer.Trainer.train_step`) runs the step's forward and backward pass (the logged
    losses and the health record are that pass's), averages the gradients over the processes, then calls
    :meth:`between` with the base optimiser's parameters; after it, it clips (``--grad_clip``) and steps the
    optimiser (through the gradient scaler) with the gradients then in place. Nothing here may read a tensor on the
    host (the step reads nothing; ``tests/common/test_trainer_host_reads.py``).
    """

    def between(self, parameters: list, scale, again) -> None:
        """Work on ``parameters`` (the optimiser's, in its groups' order; their ``.grad`` are the first pass's,
        averaged over the processes and multiplied by the gradient scaler's scale). ``scale``: that scale as a
        0-d tensor on the device, or None without a scaler (``--amp fp16`` only). ``again()`` clears the
        gradients, runs the forward and backward pass once more on the same batch (at the parameters as they are
        then) and averages the new gradients; the optimiser steps with whatever gradients ``between`` leaves."""
        raise NotImplementedError


@dataclass
class ModelSpec:
    """What a benchmark's model is to the methods that change it once built (:meth:`Method.prepare_model`).

    Args:
        head: the head's parameter-name prefixes: what ``--pretrained`` does not load (RRT's fresh head).
        retrained: what ``--retrain_fc`` trains (default: ``head``).
        part, fits, flags: the loaded part, the model it must fit and the flags that make it fit, for messages.
        label_mean, label_std: the training labels' mean and standard deviation in the head's units (STS-B's
            score / 5; NYUD2's training pixels), for ``--head_start labels`` (:mod:`common.head_start`); None
            where not computed (an evaluation).
    """

    head: tuple = ("linear.",)
    retrained: tuple | None = None
    part: str = "trunk"
    fits: str = "this model"
    flags: str = "the flags"
    label_mean: float | None = None
    label_std: float | None = None


def flat_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, M) → (B, M); (B, M, H, W) → (B·H·W, M), pixels in (b, h, w) order."""
    return x if x.dim() == 2 else x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def flag(args, name: str, default=None):
    """A flag's value, or ``default`` when the benchmark's parser does not have it."""
    return getattr(args, name, default)


class LabelView:
    """How a benchmark's outputs and labels reach the loss terms; this default is per sample.

    ``label_scale``: the main loss and the heads see ``pred / label_scale`` and ``target / label_scale`` (STS-B's
    score/5); ``dense``: the features are per-pixel maps (a term picks its dense variant, as ConR).
    """

    label_scale = 1.0
    dense = False
    #: SRL's number of label slots when the benchmark fixes it (NYUD2's depth bins); None: ``--srl_num_labels``.
    srl_num_labels = None

    def main_rows(self, pred: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """The (N, 1) predictions and labels that Balanced MSE compares and the (N,) bool rows its mean runs over
        (a fixed shape: a mask, not a selection; None: all). Per sample: as they are, every row."""
        return pred, targets, None

    def per_sample(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (N, E), labels (N, 1))`` that a one-label-per-sample term (RankSim, RnC) sees."""
        return features, labels

    def srl_slot(self, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
        """SRL's label slots of ``labels``: integer labels, every one ≥ L − 1 in the last slot (the ages)."""
        return labels.clamp(max=num_labels - 1)


@dataclass
class Step:
    """What every term of one training step sees.

    ``out``: the model's outputs of the main pass; ``targets``/``weights`` (N, 1[, h, w]) its labels and sample
    weights (repeated per view when the views are the main pass); ``epoch``; ``views_out``: the outputs of the
    extra views forwarded without FDS (None when the batch has none, or they are the main pass: ``reused``);
    ``view_targets``: their labels; ``gather``: under torchrun, regularise the global batch; ``view``: the
    benchmark's :class:`LabelView`.
    """

    out: dict
    targets: torch.Tensor
    weights: torch.Tensor | None
    epoch: int
    view: LabelView
    views_out: dict | None = None
    view_targets: torch.Tensor | None = None
    view_weights: torch.Tensor | None = None
    gather: bool = False

    def share(self, tensor, with_gradient: bool = True):
        """The global batch's ``tensor`` with ``gather`` under torchrun, else this process's."""
        return distributed.share(tensor, self.gather, with_gradient)


class Term(nn.Module):
    """A loss term: ``forward(step: Step) -> {name: weighted 0-d loss}``; ``reads_views``: it regularises the
    extra augmented views of a batch that has them (ConR, RnC)."""

    reads_views = False

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        raise NotImplementedError


