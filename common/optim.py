"""The optimiser of every benchmark: Adam or SGD on the trainable parameters, Balanced MSE's σ in its own group.

The references differ in three ways, each a keyword here rather than a copy of the builder: whether Adam gets
the weight decay (the age references pass it to SGD only; NYUD2 and STS-B give it to Adam), the learning-rate
schedule (a factor per epoch), and nothing else: σ's group always inherits the optimiser's weight decay and is
never scheduled, as in every reference.
"""
from __future__ import annotations

import torch


def step_decay(milestones):
    """lr × 0.1 at each milestone epoch (the age references' ``--schedule``)."""
    milestones = sorted(milestones)
    return lambda epoch: 0.1 ** sum(epoch >= m for m in milestones)


def build_optimizer(model, *, name: str = "adam", lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    adam_weight_decay: bool = True, noise_sigma=None, sigma_lr: float = 1e-2, lr_factor=None,
                    log_sigma_lr_factor: float = 1.0):
    """``(optimizer, scheduler)`` for ``model``'s trainable parameters.

    Args:
        name: ``'adam'`` or ``'sgd'`` (with ``momentum``).
        weight_decay: L2 weight decay of SGD, and of Adam when ``adam_weight_decay``.
        noise_sigma: Balanced MSE's learnable σ (or None): its own group at ``sigma_lr``, same weight decay,
            unscheduled.
        lr_factor: ``epoch → factor`` of the model group's learning rate (a ``LambdaLR``, stepped once per epoch);
            None: no scheduler.
        log_sigma_lr_factor: UVOTE's log-scale heads (parameters named ``…log_sigma…``) in their own group at
            ``lr × log_sigma_lr_factor``, on the same schedule (UVOTE: 0.1); 1: no such group.
    """
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    slow = [p for n, p in trained if "log_sigma" in n] if log_sigma_lr_factor != 1 else []
    slow_ids = {id(p) for p in slow}
    groups = [{"params": [p for _, p in trained if id(p) not in slow_ids], "name": "model"}]
    if slow:
        groups.append({"params": slow, "lr": lr * log_sigma_lr_factor, "name": "log_sigma"})
    if noise_sigma is not None:
        groups.append({"params": [noise_sigma], "lr": sigma_lr, "name": "noise_sigma"})
    if name == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay if adam_weight_decay else 0.0)
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise ValueError(f"build_optimizer: `name` must be 'adam' or 'sgd', got {name!r}.")
    if lr_factor is None:
        return optimizer, None
    constant = lambda epoch: 1.0   # noqa: E731
    factors = [lr_factor if group["name"] in ("model", "log_sigma") else constant for group in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def optimizer_from_args(args, model, objective, *, adam_weight_decay: bool = True, lr_factor=None):
    """:func:`build_optimizer` from parsed flags (``--optimizer --lr --momentum --weight_decay --sigma_lr``,
    Balanced MSE's σ when it trains); the benchmark says whether Adam decays and gives its schedule."""
    # σ is trained unless --fix_noise_sigma froze it (requires_grad off); a benchmark may wrap the Balanced MSE
    # module (STS-B's score scale), so it is found by name.
    sigma = next((p for name, p in objective.named_parameters() if name.endswith("noise_sigma") and p.requires_grad),
                 None)
    return build_optimizer(model, name=getattr(args, "optimizer", "adam"), lr=args.lr,
                           momentum=getattr(args, "momentum", 0.9), weight_decay=args.weight_decay,
                           adam_weight_decay=adam_weight_decay, noise_sigma=sigma,
                           sigma_lr=getattr(args, "sigma_lr", 1e-2), lr_factor=lr_factor,
                           log_sigma_lr_factor=getattr(args, "uvote_var_lr", 0.1) if getattr(args, "uvote", False)
                           else 1.0)
