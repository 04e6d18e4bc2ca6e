"""The list of methods: what the parsers, the objective, the optimiser builder and the run names go through.

Each entry is a :class:`~common.method.Method` defined in its method's file, beside the maths. The order is the
order of the argument groups in ``--help``, of the run folder's name parts, and of the terms added to the main
loss. A method that is not in this list does not exist for a run: adding one is its file and one line here.
"""
from __future__ import annotations

import argparse

from common import bsam, fds, head_start, lds, rrt
from common.losses import (accon, balanced_mse, conr, dist_loss, group_dir, ordinal_entropy, ranksim, regression,
                           rnc, srl, uvote, vir)
from common.method import Method

METHODS: tuple[Method, ...] = (
    lds.METHOD,            # re-weighting and LDS
    fds.METHOD,            # FDS
    balanced_mse.METHOD,   # Balanced MSE: a main loss
    ranksim.METHOD,        # RankSim: a term
    conr.METHOD,           # ConR: a term
    srl.METHOD,            # SRL: a term
    rnc.METHOD,            # RnC: a term
    uvote.METHOD,          # UVOTE: a head and a main loss
    vir.METHOD,            # VIR: a head and a main loss
    dist_loss.METHOD,      # Dist Loss: a term
    group_dir.METHOD,      # Group-DIR: a head and a main loss
    ordinal_entropy.METHOD,  # Ordinal Entropy: a term
    accon.METHOD,          # ACCon: a head and a term
    bsam.METHOD,           # BSAM: a step rule (a second pass at perturbed parameters) and its weights
    head_start.METHOD,     # --head_start labels: after UVOTE's own start, before RRT loads --pretrained
    rrt.METHOD,            # RRT: the two-stage protocol
)
#: the main loss of a run whose methods bring none (``--loss``).
REGRESSION: Method = regression.METHOD


def add_arguments(parser: argparse.ArgumentParser, methods=None, **options) -> None:
    """Every method's argument group, in the list's order. ``options`` are a benchmark's defaults and switches
    per method name (``conr=dict(window=0.2, views=False)``); ``methods`` (names) limits the groups to those
    (a benchmark or example that runs only some)."""
    unknown = set(options) - {method.name for method in METHODS}
    if unknown:
        raise TypeError(f"add_arguments: no method named {sorted(unknown)}")
    owned = parser.__dict__.setdefault("method_flags", {})
    for method in METHODS:
        if methods is None or method.name in methods:
            before = {action.dest for action in parser._actions}
            method.add_args(parser, **options.get(method.name, {}))
            owned[method.name] = [action.dest for action in parser._actions if action.dest not in before]


def ignored_flags(parser: argparse.ArgumentParser, args, given) -> list[tuple[Method, list[str]]]:
    """``(method, [flags])`` of the flags given on the command line (``given``: their destinations) that
    belong to a method the command line leaves off, so they would change nothing (``-w 2`` without ``--conr``)."""
    owned = getattr(parser, "method_flags", {})
    out = []
    for method in METHODS:
        if method.name not in owned or method.enabled(args):
            continue
        flags = [dest for dest in owned[method.name] if dest in given and dest not in method.independent]
        if flags:
            out.append((method, flags))
    return out


def enabled(args) -> list[Method]:
    """The methods the parsed flags turn on, in the list's order."""
    return [method for method in METHODS if method.enabled(args)]


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every method's parse-time checks, in the list's order; then: at most one method changes the step."""
    for method in METHODS:
        method.check(parser, args)
    stepping = [method for method in enabled(args) if method.step_rule(args) is not None]
    if len(stepping) > 1:
        parser.error(f"{stepping[0].switch} and {stepping[1].switch} each change the optimisation step: pass only "
                     "one of them.")


def tags(args) -> list[str]:
    """The run folder's name parts of the enabled methods."""
    return [tag for tag in (method.tag(args) for method in enabled(args)) if tag]


def ranges() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The methods' numeric flags that must be > 0, ≥ 0 and in [0, 1]."""
    return (tuple(flag for method in METHODS for flag in method.positive),
            tuple(flag for method in METHODS for flag in method.non_negative),
            tuple(flag for method in METHODS for flag in method.unit_interval))


def model_flags() -> tuple[str, ...]:
    """The method flags that define a model (an evaluated checkpoint keeps its own values)."""
    return tuple(flag for method in METHODS for flag in method.model_flags)


def eval_defaults() -> dict:
    """Method flags that are None unless given: an evaluated checkpoint's value, else these."""
    return {name: value for method in METHODS for name, value in method.eval_defaults.items()}


def head_options(args) -> dict:
    """The regression head's keywords from parsed flags: the first enabled method's that brings a head, else a
    point head (``{'head': 'point'}``)."""
    for method in enabled(args):
        options = method.head(args)
        if options is not None:
            return options
    return {"head": "point"}


def prepare_model(args, model, spec, log=print):
    """The shared tail of every benchmark's ``build_model``: each method changes the built model as the flags say
    (:meth:`~common.method.Method.prepare_model`: RnC's detached probe, RRT's ``--pretrained`` trunk and
    ``--retrain_fc``); returns the model."""
    for method in METHODS:
        method.prepare_model(args, model, spec, log)
    return model


def param_groups(args, model, objective) -> list[dict]:
    """The optimiser groups the enabled methods bring (their parameters leave the model's group)."""
    return [group for method in enabled(args) for group in method.param_groups(args, model, objective)]


def step_rule(args):
    """The :class:`~common.method.StepRule` of the enabled method that changes the optimisation step (BSAM), or
    None: the loop's plain step (:func:`check` refuses two at parse time)."""
    rules = [rule for rule in (method.step_rule(args) for method in enabled(args)) if rule is not None]
    if len(rules) > 1:
        raise ValueError("step_rule: two enabled methods each change the optimisation step; pass only one of them.")
    return rules[0] if rules else None


def default_flags() -> dict:
    """Every method flag's default (the broadest parser: every group, every option), by destination."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--loss", default="l1")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epoch", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gather_features", action="store_true")
    add_arguments(parser)
    return vars(parser.parse_args([]))
