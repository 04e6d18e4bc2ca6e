"""The command line, as argument groups that each benchmark's ``train.py`` assembles; reference flag names.

Each ``add_*`` function adds one group (run and i/o, optimisation, images, and one per method) with the
defaults the caller passes, so a benchmark's defaults live in its own folder. :func:`check_args` rejects
combinations that cannot work, one sentence each, and only for the flags the parser has. Nothing heavy is
imported here: ``train.py --help`` and flag errors answer before torch loads.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

# The choices of the method flags; tests/test_cli.py checks them against common.lds and common.losses.
KERNELS = ("gaussian", "triang", "laplace")
REWEIGHTS = ("none", "inverse", "sqrt_inv")
REGRESSION_LOSSES = ("mse", "l1", "focal_mse", "focal_l1", "huber")


class Parser(argparse.ArgumentParser):
    """No abbreviations (``--ep`` is not ``--epoch``); a flag error is one sentence and a pointer to ``--help``."""

    def __init__(self, description: str, **kwargs):
        super().__init__(description=description, allow_abbrev=False,
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def format_help(self) -> str:
        # The defaults formatter only annotates flags that have a help text: give each one, so every default shows.
        for action in self._actions:
            if action.help is None:
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


def add_reweight_args(p: argparse.ArgumentParser, *, lds_ks=5, lds_sigma=1.0, rrt=True) -> None:
    """Re-weighting/LDS flags; ``--lds_truncate`` reproduces the reference's integer smoothing of ``inverse``."""
    g = p.add_argument_group("re-weighting and LDS (Yang et al., ICML 2021)")
    g.add_argument("--reweight", default="none", choices=list(REWEIGHTS), help="inverse-frequency re-weighting")
    g.add_argument("--lds", action="store_true", help="label distribution smoothing of the re-weighting")
    g.add_argument("--lds_kernel", default="gaussian", choices=list(KERNELS))
    g.add_argument("--lds_ks", type=int, default=lds_ks, help="LDS kernel size (odd)")
    g.add_argument("--lds_sigma", type=float, default=lds_sigma)
    g.add_argument("--lds_truncate", action="store_true",
                   help="reproduce the reference: smooth the integer `inverse` counts in integer arithmetic "
                        "(truncating); off: smoothed in floating point (docs/reference-differences.md)")
    if rrt:
        g.add_argument("--retrain_fc", action="store_true", help="RRT: retrain only the last layer of --pretrained")
        g.add_argument("--pretrained", default="", help="checkpoint whose trunk initialises RRT")


def add_fds_args(p: argparse.ArgumentParser, *, fds_ks=5, fds_sigma=1.0, bucket_num=100, bucket_start=0,
                 stats_from_training=True) -> None:
    """FDS flags; ``stats_from_training=False`` leaves that flag out (a benchmark that collects its statistics on
    a subset of its own, NYUD2)."""
    g = p.add_argument_group("FDS (Yang et al., ICML 2021)")
    g.add_argument("--fds", action="store_true", help="feature distribution smoothing")
    g.add_argument("--fds_kernel", default="gaussian", choices=list(KERNELS))
    g.add_argument("--fds_ks", type=int, default=fds_ks, help="FDS kernel size (odd)")
    g.add_argument("--fds_sigma", type=float, default=fds_sigma)
    g.add_argument("--start_update", type=int, default=0, help="first epoch whose statistics are collected")
    g.add_argument("--start_smooth", type=int, default=1, help="first epoch that calibrates features")
    g.add_argument("--bucket_num", type=int, default=bucket_num, help="label bins tracked: up to this one")
    g.add_argument("--bucket_start", type=int, default=bucket_start, help="label bins tracked: from this one")
    g.add_argument("--fds_mmt", type=float, default=0.9, help="momentum of the running statistics")
    g.add_argument("--fds_alias_last_epoch", action="store_true",
                   help="reproduce the reference: the last-epoch statistics alias the running ones (one epoch "
                        "apart from the smoothed ones); off: copied (docs/reference-differences.md)")
    if stats_from_training:
        g.add_argument("--stats_from_training", action="store_true",
                       help="collect the FDS/SRL statistics from the epoch's training passes instead of a second "
                            "pass over the training set after it (the references' protocol, the default)")
    g.add_argument("--fds_skip_invalid_buckets", action="store_true",
                   help="reproduce the NYUD2/STS-B references: a bucket with any zero-variance dimension is not "
                        "calibrated at all; off: its valid dimensions are (docs/reference-differences.md)")


def add_bmse_args(p: argparse.ArgumentParser, *, imps=("gai", "bmc", "bni"), balanced_metric=True) -> None:
    """Balanced MSE flags; ``imps`` are the ``--imp`` choices the benchmark can run (NYUD2: gai and bni, BMC's
    N×N matrix over a batch's pixels does not fit), ``balanced_metric=False`` leaves that selection flag out."""
    g = p.add_argument_group("Balanced MSE (Ren et al., CVPR 2022)")
    g.add_argument("--bmse", action="store_true", help="Balanced MSE instead of --loss")
    g.add_argument("--imp", default="gai", choices=list(imps), help="implementation")
    g.add_argument("--gmm", default="", help="GMM file from data/preprocess_gmm.py (default <data_dir>/gmm.npz)")
    g.add_argument("--init_noise_sigma", type=float, default=1.0)
    g.add_argument("--sigma_lr", type=float, default=1e-2)
    g.add_argument("--fix_noise_sigma", action="store_true")
    if balanced_metric:
        g.add_argument("--balanced_metric", action="store_true",
                       help="select checkpoints by the balanced (per-label mean) val metric")


def add_ranksim_args(p: argparse.ArgumentParser, *, ties="stable") -> None:
    """RankSim flags; ``ties`` is the benchmark's default tie rule (the age benchmarks pass ``reference``)."""
    g = p.add_argument_group("RankSim (Gong et al., ICML 2022)")
    g.add_argument("--regularization_weight", type=float, default=0.0, help="γ; 0 turns RankSim off")
    g.add_argument("--interpolation_lambda", type=float, default=1.0)
    g.add_argument("--ranksim_ties", default=ties, choices=["reference", "stable"],
                   help="rank ties: reference (PyTorch's default argsort on this device, the age references) or "
                        "stable (the same on every device, the STS-B reference)")


def add_conr_args(p: argparse.ArgumentParser, *, window=1.0, beta=4.0, temperature=0.07, eta=0.01,
                  views=True) -> None:
    """ConR flags; ``views=False`` leaves out ``--conr_views`` (a benchmark whose ConR runs on one view, NYUD2)."""
    g = p.add_argument_group("ConR (Keramati et al., ICLR 2024)")
    g.add_argument("--conr", action="store_true", help="contrastive regularizer")
    g.add_argument("-w", dest="conr_window", type=float, default=window, help="label window")
    g.add_argument("--beta", dest="conr_beta", type=float, default=beta, help="ConR weight")
    g.add_argument("-t", dest="conr_temperature", type=float, default=temperature, help="temperature")
    g.add_argument("-e", dest="conr_eta", type=float, default=eta, help="pushing strength")
    g.add_argument("--conr_denominator", default="reference", choices=["reference", "paper"])
    if views:
        g.add_argument("--conr_views", type=int, default=3, choices=[3, 2],
                       help="forward passes per image with ConR: 3 (the references: the image and two views) or 2 "
                            "(the regression loss also on the two views)")


def add_srl_args(p: argparse.ArgumentParser, *, num_labels=121, homogeneity_alpha=-1.0, temp_alias=False) -> None:
    """SRL flags; ``temp_alias`` also accepts ``--temp`` for ``--temperature`` (the STS-B reference's name);
    ``num_labels=None`` leaves out ``--srl_num_labels`` (a benchmark whose slots are fixed: NYUD2's depth bins)."""
    g = p.add_argument_group("SRL (Dong, Wu et al., CVPR 2025)")
    g.add_argument("--srl", "--dfr", dest="srl", action="store_true", help="geometric losses with a surrogate")
    g.add_argument("--w1", "--loss_w1", dest="w1", type=float, default=10.0, help="contrastive weight")
    g.add_argument("--w2", "--loss_w2", dest="w2", type=float, default=100.0, help="enveloping weight")
    g.add_argument("--w3", "--loss_w3", dest="w3", type=float, default=0.01, help="homogeneity weight")
    g.add_argument("--temperature", *(["--temp"] if temp_alias else []), dest="temperature", type=float, default=0.3)
    # `--n` is the flag of the reference's age scripts: an explicit alias, not an abbreviation.
    g.add_argument("--n_points", "--n", dest="n_points", type=int, default=2000, help="random points")
    g.add_argument("--embedding_dim", type=int, default=128, help="projection size")
    if num_labels is not None:
        g.add_argument("--srl_num_labels", type=int, default=num_labels, help="label slots L")
    g.add_argument("--srl_homogeneity_alpha", type=float, default=homogeneity_alpha)


RNC_STAGES = ("none", "encoder", "linear")
UVOTE_RULES = ("minvar", "avg", "avgvar")


def add_rnc_args(p: argparse.ArgumentParser) -> None:
    """RnC (Rank-N-Contrast), one stage (a regulariser beside the regression loss) or the paper's two stages."""
    g = p.add_argument_group("RnC (Zha et al., NeurIPS 2023)")
    g.add_argument("--rnc", action="store_true", help="Rank-N-Contrast on the encoding, weighted by --rnc_weight")
    g.add_argument("--rnc_weight", type=float, default=1.0, help="weight of RnC beside the regression loss")
    g.add_argument("--rnc_temp", type=float, default=2.0, help="τ of the similarity −‖f_i − f_j‖ / τ (RnC's --temp)")
    g.add_argument("--rnc_feature_sim", default="l2", choices=["l2", "cosine"], help="RnC's --feature_sim")
    g.add_argument("--rnc_stage", default="none", choices=list(RNC_STAGES),
                   help="the paper's two stages: 'encoder' trains the trunk with RnC alone (the head is a linear "
                        "probe on detached features), 'linear' trains the head on the frozen trunk of --pretrained")


def add_uvote_args(p: argparse.ArgumentParser, *, num_branch: int = 2) -> None:
    g = p.add_argument_group("UVOTE (Jiang et al., GCPR 2024)")
    g.add_argument("--uvote", action="store_true", help="M heads with Laplace NLL, head i re-weighted by n^(−i/(M−1))")
    g.add_argument("--num_branch", type=int, default=num_branch, help="M, the number of heads")
    g.add_argument("--dynamic_loss", action="store_true",
                   help="the re-weighted heads join with weight (epoch / epochs)²")
    g.add_argument("--uvote_rule", default=None, choices=list(UVOTE_RULES),
                   help="how the heads vote at inference: the head of least σ (minvar, UVOTE), the mean, or "
                        "σ⁻²-weighted (default: an evaluated checkpoint's, else minvar)")
    g.add_argument("--uvote_var_lr", type=float, default=0.1,
                   help="learning-rate factor of the log-scale heads (UVOTE's 0.1)")


def add_vir_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("VIR (Wang & Wang, NeurIPS 2023)")
    g.add_argument("--vir", action="store_true",
                   help="NIG head with LDS-scaled pseudo-counts; with --fds, VIR's probabilistic smoothing")
    g.add_argument("--vir_reg_weight", type=float, default=0.01, help="λ of the NIG evidence regulariser")


def check_methods(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The combinations of RnC, UVOTE and VIR with the other methods: one sentence for each that cannot work."""
    on = lambda flag: bool(getattr(args, flag, False))   # noqa: E731
    stage = getattr(args, "rnc_stage", "none")
    if on("uvote") and on("vir"):
        parser.error("--uvote and --vir each replace the regression head: pass only one of them.")
    for method in ("uvote", "vir"):
        if on(method) and on("bmse"):
            parser.error(f"--{method} trains its own likelihood in place of the regression loss: drop --bmse.")
    for flag in ("fds_alias_last_epoch", "fds_skip_invalid_buckets"):
        if on("vir") and on(flag):
            parser.error(f"--{flag} reproduces a reference FDS's behaviour; with --vir, --fds is VIR's probabilistic "
                         f"smoothing, which has none: drop --{flag}.")
    if on("uvote") and getattr(args, "reweight", "none") != "none":
        parser.error("--uvote re-weights each head itself (head i by n^(−i/(M−1))): drop --reweight (--lds then "
                     "smooths the heads' counts).")
    if on("dynamic_loss") and not on("uvote"):
        parser.error("--dynamic_loss schedules UVOTE's heads: add --uvote.")
    if getattr(args, "num_branch", 1) < 1:
        parser.error(f"--num_branch must be ≥ 1, got {args.num_branch}.")
    if stage == "encoder":
        args.rnc = True
        if getattr(args, "rnc_weight", 1.0) <= 0:
            parser.error("--rnc_stage encoder trains the trunk with RnC alone: --rnc_weight must be > 0.")
    if stage != "none":
        if on("uvote") or on("vir") or on("bmse"):
            parser.error(f"--rnc_stage {stage} is RnC's two-stage protocol with an L1 linear head: drop --uvote, "
                         "--vir and --bmse (or use --rnc alone, the one-stage regulariser).")
    if stage == "encoder" and on("retrain_fc"):
        parser.error("--rnc_stage encoder trains the trunk; --retrain_fc trains the head of --pretrained: pass "
                     "--rnc_stage linear for RnC's second stage.")
    if stage == "linear":
        if not getattr(args, "pretrained", ""):
            parser.error("--rnc_stage linear trains a head on a frozen RnC encoder: add --pretrained CKPT (the "
                         "ckpt.pth.tar of an --rnc_stage encoder run).")
        if on("rnc"):
            parser.error("--rnc_stage linear trains the head on a frozen trunk, which RnC cannot change: drop --rnc.")
        args.retrain_fc = True


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject combinations that cannot work, one sentence each (``parser.error`` exits with status 2).

    Only the flags the parser defines are checked, so every benchmark can use this."""
    has = lambda flag: hasattr(args, flag)
    on = lambda flag: bool(getattr(args, flag, False))
    check_methods(parser, args)
    if on("lds") and args.reweight == "none" and not on("uvote"):
        parser.error("--lds smooths the re-weighting histogram: add --reweight inverse or --reweight sqrt_inv.")
    if on("retrain_fc") and not args.pretrained:
        parser.error("--retrain_fc retrains the last layer of a trained model: pass it with --pretrained CKPT.")
    if on("retrain_fc") and getattr(args, "reweight", "none") == "none" and not on("bmse") \
            and getattr(args, "rnc_stage", "none") != "linear":
        # Allowed, as the NYUD2 and STS-B references allow it (the age ones assert a --reweight): said, not refused.
        print("warning: --retrain_fc without --reweight or --bmse retrains on the unweighted loss, which does not "
              "rebalance the head (RRT is meant for a balanced objective).", file=sys.stderr)
    if on("evaluate") and not args.resume:
        parser.error("--evaluate needs the checkpoint to evaluate: add --resume CKPT.")
    if on("resume") and on("pretrained"):
        parser.error("--resume continues a run and --pretrained starts a new one: pass only one of them.")
    if on("bmse") and has("loss") and args.loss not in ("l1", "mse"):
        parser.error("--bmse replaces the regression loss: drop --loss.")
    if on("balanced_metric") and getattr(args, "select_on", None) is not None:
        parser.error("--balanced_metric means --select_on bmae (bmse with --loss mse): pass only one of them.")
    for flag in ("lds_ks", "fds_ks"):
        if has(flag) and (getattr(args, flag) < 1 or getattr(args, flag) % 2 == 0):
            parser.error(f"--{flag} must be a positive odd kernel size, got {getattr(args, flag)}.")
    if has("bucket_num") and args.bucket_num - args.bucket_start < 2:
        parser.error("--bucket_num must exceed --bucket_start by at least 2.")
    for flag in ("lr", "batch_size", "epoch", "img_size"):
        if has(flag) and getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}.")
    for flag in ("val_interval", "workers"):
        if has(flag) and getattr(args, flag) < 0:
            parser.error(f"--{flag} must be ≥ 0, got {getattr(args, flag)}.")
    for flag in ("patience", "max_vals"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be ≥ 1, got {getattr(args, flag)}.")
    if on("conr") and args.conr_temperature <= 0:
        parser.error("-t (ConR temperature) must be positive.")
    if on("bmse") and args.init_noise_sigma <= 0:
        parser.error("--init_noise_sigma must be positive.")
    check_ranges(parser, args)
    if on("conr") and getattr(args, "batch_size", 2) == 1:
        print("warning: --conr with --batch_size 1 has no pair of samples to contrast: ConR adds nothing to the "
              "loss (raise --batch_size).", file=sys.stderr)
    return args


# The valid range of every numeric flag, checked for the flags a benchmark's parser has (None: not given).
POSITIVE = ("lr", "batch_size", "epoch", "img_size", "width", "lds_sigma", "fds_sigma", "conr_temperature",
            "temperature", "init_noise_sigma", "n_points", "embedding_dim", "grad_clip", "print_freq", "prefetch",
            "srl_num_labels", "rnc_temp", "uvote_var_lr")
NON_NEGATIVE = ("val_interval", "workers", "weight_decay", "save_every_minutes", "start_update", "start_smooth", "bucket_start",
                "sigma_lr", "regularization_weight", "interpolation_lambda", "conr_window", "conr_beta", "conr_eta",
                "w1", "w2", "w3", "many_shot_thr", "low_shot_thr", "gpu", "rnc_weight", "vir_reg_weight")
UNIT_INTERVAL = ("fds_mmt", "momentum")


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One sentence for a numeric flag out of its range (a width of 0, a σ of 0, a negative λ or clip norm, a
    momentum above 1, shot thresholds in the wrong order), before anything loads."""
    names = option_names(parser)
    value = lambda flag: getattr(args, flag, None)   # noqa: E731
    for flags, bad, rule in ((POSITIVE, lambda v: v <= 0, "> 0"), (NON_NEGATIVE, lambda v: v < 0, "≥ 0"),
                             (UNIT_INTERVAL, lambda v: not 0 <= v <= 1, "in [0, 1]")):
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
    flags such as a reference alias); outside the project's environment, one sentence saying how to set it up.

    ``args.given_flags`` lists the flags set on the command line (see :func:`given_flags`)."""
    args = parser.parse_args(argv)
    if check is not None:
        args = check(parser, args) or args
    args = check_args(parser, args)
    args.given_flags = given_flags(parser, argv)
    args.option_names = option_names(parser)
    try:
        import torch  # noqa: F401  (the heavy imports come after parsing, so --help stays fast)
    except ImportError:
        sys.exit("error: PyTorch is not installed in this Python; run `make venv` in the repo root and use "
                 ".venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")
    return args


# -- the age benchmarks ---------------------------------------------------------------------------------------
# Defaults of the reference DIR base flag set (docs/datasets.md §4.1), shared by both age datasets.
AGE_DEFAULTS = dict(
    dataset="imdb_wiki", data_dir="./data", model="resnet50", store_root="checkpoint",
    optimizer="adam", loss="l1", lr=1e-3, epoch=90, momentum=0.9, weight_decay=1e-4, schedule=(60, 80),
    batch_size=256, print_freq=10, img_size=224, workers=32,
    lds_ks=5, lds_sigma=1.0, fds_ks=5, fds_sigma=1.0, bucket_num=100, bucket_start=0,
    conr_window=1.0, conr_beta=4.0, conr_temperature=0.07, conr_eta=0.01,
    srl_num_labels=121, srl_homogeneity_alpha=-1.0, num_branch=2,
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
    add_shot_args(p)
    add_image_args(p, model=d["model"], img_size=d["img_size"])
    add_optim_args(p, optimizer=d["optimizer"], loss=d["loss"], lr=d["lr"], epoch=d["epoch"],
                   momentum=d["momentum"], weight_decay=d["weight_decay"], schedule=d["schedule"],
                   batch_size=d["batch_size"])
    add_reweight_args(p, lds_ks=d["lds_ks"], lds_sigma=d["lds_sigma"])
    add_fds_args(p, fds_ks=d["fds_ks"], fds_sigma=d["fds_sigma"], bucket_num=d["bucket_num"],
                 bucket_start=d["bucket_start"])
    add_bmse_args(p)
    add_ranksim_args(p, ties="reference")
    add_conr_args(p, window=d["conr_window"], beta=d["conr_beta"], temperature=d["conr_temperature"],
                  eta=d["conr_eta"])
    add_srl_args(p, num_labels=d["srl_num_labels"], homogeneity_alpha=d["srl_homogeneity_alpha"])
    add_rnc_args(p)
    add_uvote_args(p, num_branch=d["num_branch"])
    add_vir_args(p)
    return p


def method_tags(args) -> list[str]:
    """Run-name parts for the methods a run uses (the references' naming; only the flags the parser has)."""
    get = lambda flag, default=None: getattr(args, flag, default)
    tags = []
    if get("reweight", "none") != "none":
        tags.append(args.reweight)
    if get("lds"):
        tags.append(f"lds_{args.lds_kernel[:3]}_{args.lds_ks}_{args.lds_sigma:g}")
    if get("fds"):
        tags.append(f"fds_{args.fds_kernel[:3]}_{args.fds_ks}_{args.fds_sigma:g}_{args.start_update}_"
                    f"{args.start_smooth}_{args.fds_mmt:g}")
    if get("bmse"):
        tags.append(f"bmse_{args.imp}_{args.init_noise_sigma:g}")
    if get("regularization_weight", 0) > 0:
        tags.append(f"ranksim_{args.regularization_weight:g}_{args.interpolation_lambda:g}")
    if get("conr"):
        tags.append(f"conr_{args.conr_beta:g}_w{args.conr_window:g}_t{args.conr_temperature:g}_e{args.conr_eta:g}")
    if get("srl"):
        tags.append(f"srl_{args.w1:g}_{args.w2:g}_{args.w3:g}_t{args.temperature:g}")
    if get("rnc"):
        stage = get("rnc_stage", "none")
        tags.append(f"rnc_{args.rnc_weight:g}_t{args.rnc_temp:g}" + ("" if stage == "none" else f"_{stage}"))
    if get("uvote"):
        tags.append(f"uvote_{args.num_branch}" + ("_dyn" if get("dynamic_loss") else ""))
    if get("vir"):
        tags.append(f"vir_{args.vir_reg_weight:g}")
    if get("retrain_fc") and get("rnc_stage", "none") != "linear":
        tags.append("rrt")
    return tags + [f"seed{args.seed}"]
