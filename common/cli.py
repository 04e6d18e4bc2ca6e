"""The command line shared by the benchmarks, with the reference flag names so published command lines run.

``build_parser(defaults)`` returns the full age parser; each dataset's ``train.py`` passes its own defaults
(``lds_ks``, ``bucket_start``, ``lr``, …). ``parse_args`` also rejects flag combinations that cannot work,
with one sentence each, before anything is built.
"""
from __future__ import annotations

import argparse

from common.lds import KERNELS, REWEIGHTS
from common.losses import REGRESSION_LOSSES

# Defaults of the DIR base flag set (datasets.md §4.1), shared by both age datasets.
AGE_DEFAULTS = dict(
    dataset="imdb_wiki", data_dir="./data", model="resnet50", store_root="checkpoint", store_name="",
    optimizer="adam", loss="l1", lr=1e-3, epoch=90, momentum=0.9, weight_decay=1e-4, schedule=[60, 80],
    batch_size=256, print_freq=10, img_size=224, workers=32,
    lds_kernel="gaussian", lds_ks=5, lds_sigma=1.0, fds_kernel="gaussian", fds_ks=5, fds_sigma=1.0,
    start_update=0, start_smooth=1, bucket_num=100, bucket_start=0, fds_mmt=0.9,
    conr_window=1.0, conr_beta=4.0, conr_temperature=0.07, conr_eta=0.01,
    srl_num_labels=121, srl_homogeneity_alpha=-1.0,
)


# Shot thresholds of the age benchmarks (methods.md §10.1); --evaluate keeps a checkpoint's own unless given.
SHOT_THRESHOLDS = {"many_shot_thr": 100, "low_shot_thr": 20}


def build_parser(description: str, **overrides) -> argparse.ArgumentParser:
    d = {**AGE_DEFAULTS, **overrides}
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and run")
    g.add_argument("--dataset", default=d["dataset"], help="name of the split CSV: <data_dir>/<dataset>.csv")
    g.add_argument("--data_dir", default=d["data_dir"], help="folder holding the CSV and the images")
    g.add_argument("--model", default=d["model"], choices=["resnet18", "resnet34", "resnet50"])
    g.add_argument("--width", type=int, default=64, help="channels of the first ResNet stage (64 = standard)")
    g.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"],
                   help="ResNet stem: imagenet (7×7/2 + max-pool, the reference) or cifar (3×3/1, small images)")
    g.add_argument("--store_root", default=d["store_root"], help="root folder of the run folders")
    g.add_argument("--store_name", default=d["store_name"],
                   help="run folder name, used verbatim; empty: built from the flags")
    g.add_argument("--overwrite", action="store_true", help="reuse an existing run folder")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--gpu", type=int, default=None, help="CUDA device index (reference flag)")
    g.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    g.add_argument("--workers", type=int, default=d["workers"])
    g.add_argument("--print_freq", type=int, default=d["print_freq"])
    g.add_argument("--img_size", type=int, default=d["img_size"])
    g.add_argument("--many_shot_thr", type=int, default=None,
                   help="many-shot: more training samples than this (default 100, or the checkpoint's)")
    g.add_argument("--low_shot_thr", type=int, default=None,
                   help="few-shot: fewer training samples than this (default 20, or the checkpoint's)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=d["optimizer"], choices=["adam", "sgd"])
    g.add_argument("--loss", default=d["loss"], choices=list(REGRESSION_LOSSES))
    g.add_argument("--lr", type=float, default=d["lr"])
    g.add_argument("--epoch", type=int, default=d["epoch"])
    g.add_argument("--momentum", type=float, default=d["momentum"], help="SGD only")
    g.add_argument("--weight_decay", type=float, default=d["weight_decay"], help="SGD only")
    g.add_argument("--schedule", type=int, nargs="*", default=d["schedule"], help="lr × 0.1 at these epochs")
    g.add_argument("--batch_size", type=int, default=d["batch_size"])
    g.add_argument("--resume", default="", help="checkpoint to continue training from (or to evaluate)")
    g.add_argument("--pretrained", default="", help="checkpoint whose trunk initialises RRT")
    g.add_argument("--evaluate", action="store_true", help="evaluate --resume on the test split and exit")

    g = p.add_argument_group("re-weighting and LDS (Yang et al., ICML 2021)")
    g.add_argument("--reweight", default="none", choices=list(REWEIGHTS))
    g.add_argument("--lds", action="store_true")
    g.add_argument("--lds_kernel", default=d["lds_kernel"], choices=list(KERNELS))
    g.add_argument("--lds_ks", type=int, default=d["lds_ks"])
    g.add_argument("--lds_sigma", type=float, default=d["lds_sigma"])
    g.add_argument("--retrain_fc", action="store_true", help="RRT: retrain only the last layer of --pretrained")

    g = p.add_argument_group("FDS (Yang et al., ICML 2021)")
    g.add_argument("--fds", action="store_true")
    g.add_argument("--fds_kernel", default=d["fds_kernel"], choices=list(KERNELS))
    g.add_argument("--fds_ks", type=int, default=d["fds_ks"])
    g.add_argument("--fds_sigma", type=float, default=d["fds_sigma"])
    g.add_argument("--start_update", type=int, default=d["start_update"])
    g.add_argument("--start_smooth", type=int, default=d["start_smooth"])
    g.add_argument("--bucket_num", type=int, default=d["bucket_num"])
    g.add_argument("--bucket_start", type=int, default=d["bucket_start"])
    g.add_argument("--fds_mmt", type=float, default=d["fds_mmt"])

    g = p.add_argument_group("Balanced MSE (Ren et al., CVPR 2022)")
    g.add_argument("--bmse", action="store_true")
    g.add_argument("--imp", default="gai", choices=["gai", "bmc", "bni"])
    g.add_argument("--gmm", default="", help="GMM file from data/preprocess_gmm.py (default <data_dir>/gmm.npz)")
    g.add_argument("--init_noise_sigma", type=float, default=1.0)
    g.add_argument("--sigma_lr", type=float, default=1e-2)
    g.add_argument("--fix_noise_sigma", action="store_true")
    g.add_argument("--balanced_metric", action="store_true",
                   help="select checkpoints by the balanced (per-label mean) val metric")

    g = p.add_argument_group("RankSim (Gong et al., ICML 2022)")
    g.add_argument("--regularization_weight", type=float, default=0.0, help="γ; 0 turns RankSim off")
    g.add_argument("--interpolation_lambda", type=float, default=1.0)

    g = p.add_argument_group("ConR (Keramati et al., ICLR 2024)")
    g.add_argument("--conr", action="store_true")
    g.add_argument("-w", dest="conr_window", type=float, default=d["conr_window"], help="label window")
    g.add_argument("--beta", dest="conr_beta", type=float, default=d["conr_beta"], help="ConR weight")
    g.add_argument("-t", dest="conr_temperature", type=float, default=d["conr_temperature"])
    g.add_argument("-e", dest="conr_eta", type=float, default=d["conr_eta"], help="pushing strength")
    g.add_argument("--conr_denominator", default="reference", choices=["reference", "paper"])

    g = p.add_argument_group("SRL (Dong, Wu et al., CVPR 2025)")
    g.add_argument("--srl", "--dfr", dest="srl", action="store_true")
    g.add_argument("--w1", "--loss_w1", dest="w1", type=float, default=10.0, help="contrastive weight")
    g.add_argument("--w2", "--loss_w2", dest="w2", type=float, default=100.0, help="enveloping weight")
    g.add_argument("--w3", "--loss_w3", dest="w3", type=float, default=0.01, help="homogeneity weight")
    g.add_argument("--temperature", type=float, default=0.3)
    g.add_argument("--n_points", "--n", dest="n_points", type=int, default=2000)
    g.add_argument("--embedding_dim", type=int, default=128)
    g.add_argument("--srl_num_labels", type=int, default=d["srl_num_labels"], help="label slots L")
    g.add_argument("--srl_homogeneity_alpha", type=float, default=d["srl_homogeneity_alpha"])
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject combinations that cannot work, one sentence each (``parser.error`` exits with status 2)."""
    if args.lds and args.reweight == "none":
        parser.error("--lds smooths the re-weighting histogram: add --reweight inverse or --reweight sqrt_inv.")
    if args.retrain_fc and not args.pretrained:
        parser.error("--retrain_fc retrains the last layer of a trained model: pass it with --pretrained CKPT.")
    if args.retrain_fc and args.reweight == "none" and not args.bmse:
        parser.error("--retrain_fc (RRT) needs a balanced objective: add --reweight or --bmse.")
    if args.evaluate and not args.resume:
        parser.error("--evaluate needs the checkpoint to evaluate: add --resume CKPT.")
    if args.resume and args.pretrained:
        parser.error("--resume continues a run and --pretrained starts a new one: pass only one of them.")
    if args.bmse and args.loss != "l1" and args.loss != "mse":
        parser.error("--bmse replaces the regression loss: drop --loss.")
    for flag in ("lds_ks", "fds_ks"):
        if getattr(args, flag) < 1 or getattr(args, flag) % 2 == 0:
            parser.error(f"--{flag} must be a positive odd kernel size, got {getattr(args, flag)}.")
    if args.bucket_num - args.bucket_start < 2:
        parser.error("--bucket_num must exceed --bucket_start by at least 2.")
    for flag in ("lr", "batch_size", "epoch", "img_size"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}.")
    if args.workers < 0:
        parser.error("--workers must be ≥ 0.")
    if args.conr and args.conr_temperature <= 0:
        parser.error("-t (ConR temperature) must be positive.")
    if args.bmse and args.init_noise_sigma <= 0:
        parser.error("--init_noise_sigma must be positive.")
    return args
