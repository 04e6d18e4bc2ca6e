"""An opt-in start of every regression head at the training labels' statistics (``--head_start labels``).

A freshly built head predicts about 0, and the labels of a benchmark sit far from it (ages around 50): a short
run then measures how fast each method's head climbs to the label mean as much as the method. With the head
start, every head begins at the training labels' mean and spread, so short runs compare methods. No reference
or author's code starts a head this way; it is off by default.

The protocol: a head module that can start at the labels has ``start_at_labels(self, mean: float, std: float)``,
with the mean and standard deviation of the training labels in the head's own units (STS-B's heads see the
score / 5, NYUD2's the depth in metres, per pixel). :func:`start_heads_at_labels` walks a model's modules and
calls it on each such head (not on modules inside one). The heads of this repo
(:mod:`common.models.heads`):

* point head (:class:`~common.models.heads.PointLinear`, :class:`~common.models.heads.PointConv2d`): bias = mean;
* UVOTE: every location bias = mean, every log-scale bias = ``log(std/√2)`` (the Laplace scale whose standard
  deviation is std);
* VIR: the NIG biases of predictive mean γ = mean and Student-t predictive standard deviation = std.

The weights are left as built: the start is exact for a zero feature and, with the small initial weights, about
right for any. It is applied once, when a fresh model is built for training (:meth:`HeadStartMethod
.prepare_model`), never on ``--resume`` or ``--evaluate``, whose weights come from the checkpoint; before RRT's
``--pretrained`` loading, so a head that the checkpoint holds keeps the checkpoint's weights.
"""
from __future__ import annotations

import math

import torch.nn as nn

from common.method import Method, flag

HEAD_STARTS = ("none", "labels")


def start_heads_at_labels(model: nn.Module, mean: float, std: float) -> list[str]:
    """Call ``start_at_labels(mean, std)`` on every module of ``model`` that has it, outermost first (a head's
    own sub-layers are left to it).

    Args:
        model: any module.
        mean, std: the training labels' mean and standard deviation (> 0) in the heads' units.

    Returns:
        The names of the started modules (empty: ``model`` has no such head).
    """
    mean, std = float(mean), float(std)
    if not math.isfinite(mean):
        raise ValueError(f"start_heads_at_labels: `mean` must be finite, got {mean}.")
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"start_heads_at_labels: `std` must be a finite positive label spread, got {std}.")
    started = []
    for name, module in model.named_modules():
        if any(name.startswith(outer + ".") or outer == "" for outer in started):
            continue
        if callable(getattr(module, "start_at_labels", None)):
            module.start_at_labels(mean, std)
            started.append(name)
    return started


# -- wiring ---------------------------------------------------------------------------------------------------
class HeadStartMethod(Method):
    """``--head_start labels``: the heads of a fresh model start at the training labels' mean and spread (the
    benchmark gives them in its :class:`~common.method.ModelSpec`)."""

    name = "head_start"
    switch = "--head_start labels"

    def add_args(self, parser) -> None:
        g = parser.add_argument_group("Head start (this repo)")
        g.add_argument("--head_start", default="none", choices=list(HEAD_STARTS),
                       help="labels: every head of a new model starts at the training labels' mean (and UVOTE's and "
                            "VIR's spread at their standard deviation), so that short runs compare methods rather "
                            "than how fast a head climbs to the labels; none: as built (every reference and author)")

    def enabled(self, args) -> bool:
        return flag(args, "head_start", "none") == "labels"

    def tag(self, args):
        return "start_labels"

    def prepare_model(self, args, model, spec, log) -> None:
        if not self.enabled(args) or flag(args, "resume") or flag(args, "evaluate"):
            return
        if spec.label_mean is None or spec.label_std is None:
            raise ValueError("--head_start labels: this benchmark's ModelSpec gives no label_mean/label_std.")
        started = start_heads_at_labels(model, spec.label_mean, spec.label_std)
        if not started:     # a head without the protocol would train as built while the run says it started
            raise ValueError("--head_start labels: this model's head has no start_at_labels; drop --head_start.")
        log(f"head start: {', '.join(started)} at the training labels' mean {spec.label_mean:.4g} and "
            f"standard deviation {spec.label_std:.4g} (in the head's units)")


METHOD = HeadStartMethod()
