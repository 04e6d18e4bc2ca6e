"""The command line, as argument groups that each benchmark's ``train.py`` assembles; reference flag names.

Each ``add_*`` function adds one group of the run (run and i/o, optimisation, images, shots) with the defaults
the caller passes, so a benchmark's defaults live in its own folder; the methods' groups come from the method
list (:func:`common.methods.add_arguments`). :func:`check_args` rejects combinations that cannot work, one
sentence each, and only for the flags the parser has.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys

from common import methods
from common.losses.regression import REGRESSION_LOSSES


class Parser(argparse.ArgumentParser):
    """No abbreviations (``--ep`` is not ``--epoch``); a flag error is one sentence and a pointer to ``--help``; the
    help states every flag's default once (:class:`Parser.Formatter`). The tools in ``common/`` use it too, with
    ``formatter_class=Parser.RawFormatter`` to keep their description's line breaks."""

    class Formatter(argparse.ArgumentDefaultsHelpFormatter):
        """Appends ``(default: …)`` to a flag's help unless the help already says its default (the word
        "default" or ``%(default)s``) or the flag is required, so no flag shows two."""

        def _get_help_string(self, action):
            text = action.help or ""
            if action.required or "%(default)" in text or re.search(r"\bdefault\b", text, re.IGNORECASE):
                return text
            return super()._get_help_string(action)

    class RawFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
        """:class:`Formatter` that prints the description as written (a module docstring)."""

    def __init__(self, description: str, **kwargs):
        kwargs.setdefault("formatter_class", Parser.Formatter)
        super().__init__(description=description, allow_abbrev=False, **kwargs)

    def format_help(self) -> str:
        # The defaults formatter only annotates flags that have a help text: give each one, so every default shows.
        for action in self._actions:
            if action.help is None and not action.required:
                action.help = "(default: %(default)s)"
        return super().format_help()

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(run `{self.prog} --help` for every flag)\n")


def positive_float(text: str) -> float:
    """A finite float (``nan``/``inf`` are refused at parse time)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_run_args(p: argparse.ArgumentParser, *, data_dir="./data", store_root="checkpoint", workers=32,
                 print_freq=10, seed=0):
    """Run and i/o flags; returns the group, so a benchmark can add its own data flags to it."""
    g = p.add_argument_group("data and run")
    g.add_argument("--data_dir", default=data_dir, help="folder holding the benchmark's data")
    g.add_argument("--store_root", default=store_root, help="root folder of the run folders")
    g.add_argument("--store_name", default="", help="run folder name, used verbatim; empty: built from the flags")
    g.add_argument("--overwrite", nargs="?", const=True, default=False, metavar="RUN_NAME", help="reuse the folder "
                   "of an unfinished run; a finished one (results.json) only when named: --overwrite RUN_NAME")
    g.add_argument("--seed", type=int, default=seed, help="seeds Python, NumPy and torch (and every epoch)")
    g.add_argument("--select_on", default=None, metavar="METRIC",
                   choices=["l1", "mse", "gmean", "bmae", "bmse", "sera", "pearson", "spearman", "rmse", "mae",
                            "absrel", "log10", "delta1", "delta2", "delta3"],
                   help="the overall validation metric that selects the best checkpoint (lowest wins; pearson, "
                        "spearman and delta* highest): l1, mse, gmean, bmae, bmse (balanced: the mean over label "
                        "bins), sera; STS-B also pearson, spearman; depth rmse, mse, mae, absrel, log10, delta1-3, "
                        "bmae, bmse, sera (default: the benchmark's own, l1 or mse for ages, mse for STS-B, rmse for "
                        "depth)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when a GPU is visible, else CPU")
    g.add_argument("--gpu", type=int, default=None, help="CUDA device index (reference flag)")
    g.add_argument("--amp", nargs="?", const="auto", default="none", choices=["none", "auto", "bf16", "fp16"],
                   help="mixed precision: bf16 or fp16 autocast (fp16 with a gradient scaler); `--amp` alone is "
                        "auto: fp16 on CUDA, bf16 on CPU. The DIR losses compute in float32 either way")
    g.add_argument("--channels_last", action="store_true", help="channels-last memory format for image models")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (off by default: compiling "
                   "takes minutes and needs a C++ compiler on CPU)")
    g.add_argument("--workers", type=int, default=workers, help="data loading processes (0: in the main process)")
    g.add_argument("--persistent_workers", action="store_true",
                   help="keep the training loader's worker processes between epochs (faster epochs; their random "
                        "streams then carry over epochs, so a resumed run no longer repeats them exactly)")
    g.add_argument("--prefetch", type=int, default=2, help="batches each loader process prepares ahead")
    g.add_argument("--print_freq", type=int, default=print_freq, help="progress line every N iterations")
    g.add_argument("--full_tables", action="store_true",
                   help="print every validation's and the test's full tables (balanced rows, SERA) on the console "
                        "too; off: they are in the run's training.log, and the console ends with a short block")
    g.add_argument("--resume", default="", help="checkpoint to continue training from (or to evaluate)")
    g.add_argument("--evaluate", action="store_true", help="evaluate --resume on the test split and exit")
    g.add_argument("--gather_features", action="store_true",
                   help="under torchrun: ConR, RankSim and SRL see the features of the whole global batch (off: "
                        "each process regularises its own share)")
    g.add_argument("--sync_bn", action="store_true", help="under torchrun on GPUs: BatchNorm over the global batch")
    return g


def add_optim_args(p: argparse.ArgumentParser, *, optimizer="adam", loss="l1", lr=1e-3, epoch=90, momentum=0.9,
                   weight_decay=1e-4, schedule=(60, 80), batch_size=256, val_interval=0, patience=None,
                   max_vals=None, grad_clip=None, aliases=None, weight_decay_help="SGD only",
                   losses=REGRESSION_LOSSES, patience_rule="best"):
    """Optimisation flags. ``aliases`` adds a benchmark's own names for them (NYUD2: ``{'epoch': ['--epochs'],
    'lr': ['--learning-rate'], 'weight_decay': ['--wd']}``). ``losses`` are the ``--loss`` choices the benchmark
    trains (NYUD2: only ``mse``); ``schedule=None`` leaves ``--schedule`` out, for a benchmark whose learning-rate
    schedule is fixed."""
    names = lambda flag: [f"--{flag}", *(aliases or {}).get(flag, [])]
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=optimizer, choices=["adam", "sgd"])
    g.add_argument("--loss", default=loss, choices=list(losses), help="regression loss")
    g.add_argument(*names("lr"), dest="lr", type=positive_float, default=lr, help="learning rate")
    g.add_argument(*names("epoch"), dest="epoch", type=int, default=epoch, help="training epochs")
    g.add_argument("--momentum", type=float, default=momentum, help="SGD only")
    g.add_argument(*names("weight_decay"), dest="weight_decay", type=float, default=weight_decay,
                   help=weight_decay_help)
    if schedule is not None:
        g.add_argument("--schedule", type=int, nargs="*", default=list(schedule), help="lr × 0.1 at these epochs")
        g.add_argument("--lr_schedule", default="step", choices=["step", "cosine"],
                       help="step: lr × 0.1 at each --schedule epoch (the DIR references); cosine: from lr down to "
                            "lr·0.1³ over --epoch, as RnC's and BSAM's code (--schedule is then not used)")
    g.add_argument("--batch_size", type=int, default=batch_size)
    g.add_argument("--val_interval", type=int, default=val_interval,
                   help="validate every N training iterations (0: after every epoch)")
    g.add_argument("--patience", type=int, default=patience,
                   help="stop after N validations without improvement (default: never)")
    g.add_argument("--patience_rule", default=patience_rule, choices=["best", "window"],
                   help="best: stop after --patience validations in a row without a better score; window (the STS-B "
                        "reference): stop at a validation at least as bad as each of the --patience before it")
    g.add_argument("--max_vals", type=int, default=max_vals, help="stop after N validations (default: no limit)")
    g.add_argument("--save_every_minutes", type=float, default=30.0,
                   help="with --val_interval: between validations, the resumable checkpoint is also written at an "
                        "epoch end once this many minutes have passed since the last write (0: every epoch end)")
    g.add_argument("--grad_clip", type=float, default=grad_clip, help="clip the gradient norm (default: off)")
    return g


def add_image_args(p: argparse.ArgumentParser, *, model="resnet50", img_size=224) -> None:
    g = p.add_argument_group("model and images")
    g.add_argument("--model", default=model, choices=["resnet18", "resnet34", "resnet50"])
    g.add_argument("--width", type=int, default=64, help="channels of the first ResNet stage (64 = standard)")
    g.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"],
                   help="ResNet stem: imagenet (7×7/2 + max-pool, the reference) or cifar (3×3/1, small images)")
    g.add_argument("--img_size", type=int, default=img_size, help="images are resized to this square size")
    g.add_argument("--data_format", default="jpeg", choices=["jpeg", "hdf5"],
                   help="hdf5: read the decoded, resized images packed by `python -m common.tools.pack`")


def add_shot_args(p: argparse.ArgumentParser, *, many=100, few=20):
    """The shot thresholds (None unless given: the checkpoint's, else these defaults); returns the group."""
    g = p.add_argument_group("evaluation")
    g.add_argument("--many_shot_thr", type=int, default=None,
                   help=f"many-shot: more training samples than this (default {many}, or the checkpoint's)")
    g.add_argument("--low_shot_thr", type=int, default=None,
                   help=f"few-shot: fewer training samples than this (default {few}, or the checkpoint's)")
    return g


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject combinations that cannot work, one sentence each (``parser.error`` exits with status 2): every
    method's own checks (:func:`common.methods.check`), then the run's.

    Only the flags the parser defines are checked, so every benchmark can use this."""
    has = lambda flag: hasattr(args, flag)   # noqa: E731
    on = lambda flag: bool(getattr(args, flag, False))   # noqa: E731
    methods.check(parser, args)
    if on("evaluate") and not args.resume:
        parser.error("--evaluate needs the checkpoint to evaluate: add --resume CKPT.")
    if on("balanced_metric") and getattr(args, "select_on", None) is not None:
        parser.error("--balanced_metric means --select_on bmae (bmse with --loss mse): pass only one of them.")
    for flag in ("lr", "batch_size", "epoch", "img_size"):
        if has(flag) and getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}.")
    for flag in ("val_interval", "workers"):
        if has(flag) and getattr(args, flag) < 0:
            parser.error(f"--{flag} must be ≥ 0, got {getattr(args, flag)}.")
    for flag in ("patience", "max_vals"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be ≥ 1, got {getattr(args, flag)}.")
    check_ranges(parser, args)
    check_schedule(args)
    return args


def check_schedule(args) -> None:
    """Say (stderr, one line) when ``--schedule`` lowers the learning rate at no epoch of the run: milestones at or
    beyond ``--epoch`` never apply (``--epoch 2`` with the references' ``60 80``). Milestones out of order apply in
    order."""
    milestones, epochs = getattr(args, "schedule", None), getattr(args, "epoch", None)
    if not milestones or epochs is None or getattr(args, "resume", ""):   # a resumed run keeps its own schedule
        return
    if getattr(args, "lr_schedule", "step") == "cosine":                  # the milestones are not used
        return
    late = [m for m in milestones if m >= epochs]
    if late:
        kept = sorted(m for m in milestones if m < epochs)
        print(f"warning: --schedule {' '.join(map(str, late))} lies at or beyond --epoch {epochs}: the learning rate "
              "is never lowered there" + (f" (it is lowered at epoch {', '.join(map(str, kept))})" if kept else
                                         " and stays at --lr for the whole run")
              + "; pass milestones below --epoch to decay it.", file=sys.stderr)
    elif list(milestones) != sorted(milestones):
        print(f"warning: --schedule {' '.join(map(str, milestones))} is out of order; the learning rate is lowered at "
              f"epochs {', '.join(map(str, sorted(milestones)))}.", file=sys.stderr)


# The valid range of every numeric flag of the run (the methods name theirs: common.methods.ranges), checked for
# the flags a benchmark's parser has (None: not given).
POSITIVE = ("lr", "batch_size", "epoch", "img_size", "width", "grad_clip", "print_freq", "prefetch")
NON_NEGATIVE = ("val_interval", "workers", "weight_decay", "save_every_minutes", "many_shot_thr", "low_shot_thr",
                "gpu")
UNIT_INTERVAL = ("momentum",)


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One sentence for a numeric flag out of its range (a width of 0, a σ of 0, a negative λ or clip norm, a
    momentum above 1, shot thresholds in the wrong order), before anything loads."""
    names = option_names(parser)
    value = lambda flag: getattr(args, flag, None)   # noqa: E731
    positive, non_negative, unit_interval = methods.ranges()
    for flags, bad, rule in ((POSITIVE + positive, lambda v: v <= 0, "> 0"),
                             (NON_NEGATIVE + non_negative, lambda v: v < 0, "≥ 0"),
                             (UNIT_INTERVAL + unit_interval, lambda v: not 0 <= v <= 1, "in [0, 1]")):
        for flag in flags:
            if value(flag) is not None and bad(value(flag)):
                parser.error(f"{names.get(flag, '--' + flag)} must be {rule}, got {value(flag)}.")
    for milestone in value("schedule") or ():
        if milestone < 0:
            parser.error(f"--schedule epochs must be ≥ 0, got {milestone}.")
    many, few = value("many_shot_thr"), value("low_shot_thr")
    if many is not None and few is not None and many < few:
        parser.error(f"--many_shot_thr ({many}) must be at least --low_shot_thr ({few}): many-shot labels have more "
                     "training samples than few-shot ones.")


def given_flags(parser: argparse.ArgumentParser, argv=None) -> list[str]:
    """The destinations the command line sets explicitly (a resumed or evaluated run keeps the checkpoint's value
    of every other one)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return sorted(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


# How a run is executed, not what it trains: a resumed or evaluated run takes them from the command line.
RUN_FLAGS = ("resume", "evaluate", "eval_model", "workers", "device", "gpu", "cuda", "print_freq", "prefetch",
             "full_tables",
             "persistent_workers", "compile", "channels_last", "store_root", "store_name", "overwrite", "log_file")
# What a resumed run may change; each applies from where the run continues (the lr rescales its schedule).
CHANGEABLE_ON_RESUME = ("epoch", "lr", "patience", "patience_rule", "max_vals", "save_every_minutes")


def _same(flag: str, a, b) -> bool:
    """Flag values equal as the command line means them (a list and a tuple of the same numbers are equal; two
    spellings of one folder are the same ``--data_dir``)."""
    if flag.endswith("_dir") and isinstance(a, str) and isinstance(b, str):
        return os.path.realpath(a) == os.path.realpath(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12))


def restore_flags(args, checkpoint_args: dict, model_flags, defaults: dict, given=None, names=None):
    """The flags a run continues or evaluates with.

    ``--resume``: the checkpoint's flags; of those ``given`` on the command line (None, for a namespace built in
    code: every run flag and changeable flag it holds, and nothing else is checked), the
    :data:`RUN_FLAGS` and :data:`CHANGEABLE_ON_RESUME` apply, and any other whose value differs from the
    checkpoint's is refused with one sentence (:class:`~common.errors.RunError`): a run cannot continue with
    another objective, model or data. ``--evaluate``: the checkpoint's ``model_flags`` (the architecture it was
    trained with) and, unless given, its ``batch_size`` (batching changes float summation order, so the numbers
    then equal the run's own test to the last digit) and ``data_dir``. Flags in ``defaults`` that are still None
    take the checkpoint's value, else the default (the shot thresholds a run was reported with). ``names`` maps a
    flag's destination to its option string for messages (``conr_window`` → ``-w``)."""
    from common.errors import RunError
    kept = RUN_FLAGS + CHANGEABLE_ON_RESUME
    if given is None:
        given = {flag for flag in kept + ("batch_size", "data_dir") if hasattr(args, flag)}
    given = set(given)
    if args.evaluate:
        for flag in model_flags:
            if flag in checkpoint_args:
                setattr(args, flag, checkpoint_args[flag])
        for flag in ("batch_size", "data_dir"):
            if flag not in given and flag in checkpoint_args:
                setattr(args, flag, checkpoint_args[flag])
    elif args.resume:
        changed = [flag for flag in sorted(given - set(kept)) if flag in checkpoint_args
                   and not _same(flag, getattr(args, flag), checkpoint_args[flag])]
        if changed:
            flag = changed[0]
            option = (names or {}).get(flag, f"--{flag}")
            raise RunError(f"{option} cannot change on resume (the checkpoint {args.resume} was trained with "
                           f"{checkpoint_args[flag]!r}, the command line says {getattr(args, flag)!r}): drop it to "
                           "continue the run, or start a new run from these weights with --pretrained.")
        saved = {**vars(args), **checkpoint_args}
        saved.update({flag: getattr(args, flag) for flag in kept
                      if hasattr(args, flag) and (flag in given or flag in ("resume", "evaluate"))})
        args = argparse.Namespace(**saved)
    for flag, default in defaults.items():
        if getattr(args, flag, None) is None:
            setattr(args, flag, checkpoint_args.get(flag) or default)
    return args


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each destination's first option string (``conr_window`` → ``-w``), for messages about flags."""
    names = {}
    for action in parser._actions:       # the first action of a destination is its main flag; later ones alias it
        if action.option_strings:
            names.setdefault(action.dest, action.option_strings[0])
    return names


def parse(parser: argparse.ArgumentParser, argv=None, check=None) -> argparse.Namespace:
    """Parse and check (:func:`check_args`, then the benchmark's own ``check(parser, args)``, which may rewrite
    flags such as a reference alias).

    ``args.given_flags`` lists the flags set on the command line (see :func:`given_flags`)."""
    args = parser.parse_args(argv)
    if check is not None:
        args = check(parser, args) or args
    args = check_args(parser, args)
    args.given_flags = given_flags(parser, argv)
    args.option_names = option_names(parser)
    if not getattr(args, "resume", ""):      # a resumed or evaluated run takes its methods from the checkpoint
        for method, flags in methods.ignored_flags(parser, args, set(args.given_flags)):
            names = ", ".join(args.option_names.get(flag, f"--{flag}") for flag in flags)
            print(f"warning: {names} {'has' if len(flags) == 1 else 'have'} no effect without {method.switch} "
                  f"(add {method.switch.split()[0]}, or drop {names}).", file=sys.stderr)
    return args


# -- the age benchmarks ---------------------------------------------------------------------------------------
# Defaults of the reference DIR base flag set (docs/datasets.md §4.1), shared by both age datasets.
AGE_DEFAULTS = dict(
    dataset="imdb_wiki", data_dir="./data", model="resnet50", store_root="checkpoint",
    optimizer="adam", loss="l1", lr=1e-3, epoch=90, momentum=0.9, weight_decay=1e-4, schedule=(60, 80),
    batch_size=256, print_freq=10, img_size=224, workers=32,
    lds_ks=5, lds_sigma=1.0, fds_ks=5, fds_sigma=1.0, bucket_num=100, bucket_start=0,
    conr_window=1.0, conr_beta=4.0, conr_temperature=0.07, conr_eta=0.01,
    srl_num_labels=121, srl_homogeneity_alpha=-1.0, num_branch=2, accon_augment="main",
    group_sigma=1.0, reg_loss="l1",   # Group-DIR's IMDB-WIKI values (imdb_wiki/train.py)
    bsam_rho=0.05,   # BSAM's IMDB-WIKI ρ (the authors' README; their code's default is AgeDB's 0.2)
)


def build_age_parser(description: str, **overrides) -> argparse.ArgumentParser:
    """The full age command line (both age benchmarks), with a benchmark's ``overrides`` of AGE_DEFAULTS."""
    d = {**AGE_DEFAULTS, **overrides}
    unknown = set(overrides) - set(AGE_DEFAULTS)
    if unknown:
        raise TypeError(f"build_age_parser: unknown defaults {sorted(unknown)}")
    p = Parser(description)
    run = add_run_args(p, data_dir=d["data_dir"], store_root=d["store_root"], workers=d["workers"],
                       print_freq=d["print_freq"])
    run.add_argument("--dataset", default=d["dataset"], help="name of the split CSV: <data_dir>/<dataset>.csv")
    run.add_argument("--swap_val_test", action="store_true",
                     help="select the best checkpoint on the test split and report the validation split as "
                          "'test' (Group-DIR's AgeDB code unpacks its splits this way; off: the usual roles)")
    add_shot_args(p)
    add_image_args(p, model=d["model"], img_size=d["img_size"])
    add_optim_args(p, optimizer=d["optimizer"], loss=d["loss"], lr=d["lr"], epoch=d["epoch"],
                   momentum=d["momentum"], weight_decay=d["weight_decay"], schedule=d["schedule"],
                   batch_size=d["batch_size"])
    methods.add_arguments(
        p, reweight=dict(lds_ks=d["lds_ks"], lds_sigma=d["lds_sigma"]),
        fds=dict(fds_ks=d["fds_ks"], fds_sigma=d["fds_sigma"], bucket_num=d["bucket_num"],
                 bucket_start=d["bucket_start"]),
        ranksim=dict(ties="reference"),
        conr=dict(window=d["conr_window"], beta=d["conr_beta"], temperature=d["conr_temperature"], eta=d["conr_eta"]),
        srl=dict(num_labels=d["srl_num_labels"], homogeneity_alpha=d["srl_homogeneity_alpha"]),
        uvote=dict(num_branch=d["num_branch"]),
        group_dir=dict(groups=10, sigma=d["group_sigma"], temperature=0.07, label_range=100.0,
                       reg_loss=d["reg_loss"]),
        accon=dict(augment=d["accon_augment"]),
        bsam=dict(rho=d["bsam_rho"], weights="raw"))
    return p


def method_tags(args) -> list[str]:
    """Run-name parts for the methods a run uses (the references' naming; only the flags the parser has), and
    the seed."""
    return methods.tags(args) + [f"seed{args.seed}"]
