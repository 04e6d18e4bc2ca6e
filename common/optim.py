"""The optimiser of every benchmark: Adam or SGD on the trainable parameters, the methods' own groups beside them.

The references differ in two ways, each a keyword here rather than a copy of the builder: whether Adam gets the
weight decay (the age references pass it to SGD only; NYUD2 and STS-B give it to Adam) and the learning-rate
schedule (a factor per epoch). A method that trains some parameters otherwise names its group
(:meth:`common.method.Method.param_groups`: Balanced MSE's σ at ``--sigma_lr``, never scheduled; UVOTE's
log-scale heads at a fraction of the learning rate, on the model's schedule); every group inherits the
optimiser's weight decay, as in every reference.
"""
from __future__ import annotations

import math

import torch


def step_decay(milestones):
    """lr × 0.1 at each milestone epoch (the age references' ``--schedule``)."""
    milestones = sorted(milestones)
    return lambda epoch: 0.1 ** sum(epoch >= m for m in milestones)


def cosine_decay(epochs: int, floor: float = 1e-3):
    """RnC's and BSAM's cosine schedule (``--lr_schedule cosine``): the factor ``r + (1 − r)(1 + cos(π e/E))/2`` of
    the learning rate in the authors' epoch ``e = 1..E`` (this loop's 0-based epoch + 1; ``E`` = ``epochs``), from
    just under 1 in the first epoch to ``r`` = ``floor`` in the last (their ``η_min = η·0.1³``)."""
    if epochs < 1:
        raise ValueError(f"cosine_decay: `epochs` must be ≥ 1, got {epochs}.")
    return lambda epoch: floor + (1 - floor) * (1 + math.cos(math.pi * (epoch + 1) / epochs)) / 2


def build_optimizer(model, *, name: str = "adam", lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    adam_weight_decay: bool = True, groups=(), lr_factor=None):
    """``(optimizer, scheduler)`` for ``model``'s trainable parameters.

    Args:
        name: ``'adam'`` or ``'sgd'`` (with ``momentum``).
        weight_decay: L2 weight decay of SGD, and of Adam when ``adam_weight_decay``.
        groups: further groups (``params``, ``name``, ``lr``, ``follows_lr``); their parameters leave the model's
            group. A group that ``follows_lr`` is on the model's schedule (and rescaled with it on resume); the
            others keep their learning rate.
        lr_factor: ``epoch → factor`` of the learning rates that follow the model's (a ``LambdaLR``, stepped once
            per epoch); None: no scheduler.
    """
    groups = [dict(group) for group in groups]
    claimed = {id(p) for group in groups for p in group["params"]}
    model_group = {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in claimed],
                   "name": "model", "follows_lr": True}
    groups = [model_group] + groups
    if name == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay if adam_weight_decay else 0.0)
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise ValueError(f"build_optimizer: `name` must be 'adam' or 'sgd', got {name!r}.")
    if lr_factor is None:
        return optimizer, None
    constant = lambda epoch: 1.0   # noqa: E731
    factors = [lr_factor if group.get("follows_lr") else constant for group in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def optimizer_from_args(args, model, objective, *, adam_weight_decay: bool = True, lr_factor=None):
    """:func:`build_optimizer` from parsed flags (``--optimizer --lr --momentum --weight_decay``) with the groups
    of the enabled methods (:func:`common.methods.param_groups`); the benchmark says whether Adam decays and
    gives its schedule."""
    from common import methods
    return build_optimizer(model, name=getattr(args, "optimizer", "adam"), lr=args.lr,
                           momentum=getattr(args, "momentum", 0.9), weight_decay=args.weight_decay,
                           adam_weight_decay=adam_weight_decay, groups=methods.param_groups(args, model, objective),
                           lr_factor=lr_factor)
