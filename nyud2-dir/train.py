"""Train or evaluate a monocular depth model on NYUD2-DIR.

    python train.py --reweight inverse --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2 --fds
    python train.py --conr -w 0.2 --beta 0.2 -e 0.2
    python train.py --bmse --imp bni --init_noise_sigma 1.0 --fix_noise_sigma
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar      (or: python test.py --eval_model CKPT)

Flags and defaults are the references' (Adam 1e-4, weight decay 1e-4, lr × 0.1 every 5 epochs, batch 32, 10
epochs, FDS buckets 7–99 of 0.1 m); the data are this folder's ``dataset.py``, the encoder–decoder its
``resnet.py``, the losses its ``loss.py``, ``task.py`` wires them for the shared training loop
(``common/trainer.py``).
The best epoch is selected on a validation split of held-out training scenes; ``--select_on_test`` selects on
the test set, as the references do.
"""
import sys

try:
    from common import cli, methods
except ImportError:
    sys.exit("error: the repo's `common` package is not installed in this Python; run `make venv` in the repo "
             "root and use .venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")

def build_parser():
    p = cli.Parser(__doc__.splitlines()[0])
    run = cli.add_run_args(p, workers=8, print_freq=10)
    run.add_argument("--eval_model", default="", help="the references' test.py flag: evaluate this checkpoint")
    g = p.add_argument_group("model and images")
    g.add_argument("--encoder", default="resnet50", choices=["resnet18", "resnet34", "resnet50"])
    g.add_argument("--pretrained_encoder", default="imagenet",
                   help="imagenet (torchvision's V1 weights, as the references), none, or a ResNet state dict file")
    g.add_argument("--scale", type=int, default=240, help="images are resized to this shorter side")
    g.add_argument("--data_format", default="png", choices=["png", "hdf5"],
                   help="hdf5: read the scaled image/depth pairs packed by data/pack_nyud2.py (with --select_on_test)")
    g.add_argument("--crop", type=int, nargs=2, default=(304, 228), metavar=("W", "H"),
                   help="centre crop (W H, each divisible by 4); the training depth is half of it")
    g.add_argument("--val_fraction", type=float, default=0.05,
                   help="fraction of the training scenes held out to select the best epoch")
    g.add_argument("--select_on_test", action="store_true",
                   help="select the best epoch on the test set, as the references (no validation split)")
    g.add_argument("--pixel_histogram", default="data", choices=["data", "reference"],
                   help="training pixels per bin for re-weighting, LDS, BNI and shots: computed from the data "
                        "(cached) or the references' table (equal on the real data)")
    g.add_argument("--many_shot_fraction", type=float, default=0.0077,
                   help="many-shot bins hold more than this fraction of the training pixels")
    g.add_argument("--low_shot_fraction", type=float, default=0.003,
                   help="few-shot bins hold less than this fraction of the training pixels")
    g.add_argument("--rrt_head", default="R", choices=["R", "conv2"],
                   help="with --retrain_fc: R re-initialises and trains the whole head R on the frozen E, D and MFF "
                        "of --pretrained (the references); conv2 keeps the checkpoint's R and trains its last "
                        "convolution only")
    # Only what depth can run is on the command line, so anything else is argparse's own flag error: the
    # references' per-pixel weighted MSE (--loss takes only mse), lr × 0.1 every 5 epochs (no --schedule), FDS
    # statistics on the FDS subset (no --stats_from_training), Balanced MSE as GAI or BNI (BMC's N×N matrix over
    # the ~10⁵ pixels of a batch does not fit) selected on RMSE (no --balanced_metric), ConR on one view (no
    # --conr_views) and SRL slots that are the 100 depth bins (no --srl_num_labels).
    cli.add_optim_args(p, optimizer="adam", loss="mse", losses=("mse",), lr=1e-4, epoch=10, weight_decay=1e-4,
                       schedule=None, batch_size=32, aliases={"epoch": ["--epochs"], "lr": ["--learning-rate"],
                                                              "weight_decay": ["--wd"]},
                       weight_decay_help="Adam weight decay")
    methods.add_arguments(p, reweight=dict(lds_ks=5, lds_sigma=2.0),
                          fds=dict(fds_ks=5, fds_sigma=2.0, bucket_num=100, bucket_start=7, stats_from_training=False),
                          bmse=dict(imps=("gai", "bni"), balanced_metric=False, reweighted_prior=True),
                          ranksim=dict(ties="stable"),
                          conr=dict(window=0.2, beta=0.2, temperature=0.2, eta=0.2, views=False),
                          rnc=dict(views=False),
                          srl=dict(num_labels=None), uvote=dict(num_branch=2),
                          # Group-DIR has no depth run: 10 groups of 1 m over 0–10 m, the per-pixel MSE (untuned).
                          group_dir=dict(groups=10, sigma=1.0, temperature=0.07, label_range=10.0, reg_loss="mse"),
                          # ACCon on each image's features (one view): untuned, docs/methods.md §12.4.
                          accon=dict(weight=1.0, temperature=1.0, label_range=10.0, variant="stsb", head=False),
                          dist=dict(min_label=0.0, max_label=10.0, step=0.1, pixels=1024),
                          # BSAM has no depth run: ρ 0.05 (untuned) and 1/√n of the pixel counts rescaled to mean 1
                          # (raw, they would scale the loss down ~10³-fold under Adam: docs/methods.md §12.2).
                          bsam=dict(rho=0.05, weights="sqrt_inv"))
    return p


def check(parser, args):
    """NYUD2's own flags, one sentence each (``parser.error``), before anything loads."""
    if args.scale <= 0:
        parser.error(f"--scale must be > 0 (the shorter image side in pixels), got {args.scale}.")
    if min(args.crop) <= 0:
        parser.error(f"--crop must be > 0 on both sides, got {args.crop[0]} {args.crop[1]}.")
    if args.crop[0] % 4 or args.crop[1] % 4:
        parser.error(f"--crop {args.crop[0]} {args.crop[1]}: both sides must be divisible by 4.")
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val_fraction must be in (0, 1) (the share of training scenes held out), got "
                     f"{args.val_fraction}.")
    for flag in ("many_shot_fraction", "low_shot_fraction"):
        if not 0 < getattr(args, flag) < 1:
            parser.error(f"--{flag} must be in (0, 1) (a share of the training pixels), got {getattr(args, flag)}.")
    if args.low_shot_fraction > args.many_shot_fraction:
        parser.error(f"--low_shot_fraction ({args.low_shot_fraction}) must not exceed --many_shot_fraction "
                     f"({args.many_shot_fraction}): few-shot bins hold fewer training pixels than many-shot ones.")
    if args.rrt_head != "R" and not args.retrain_fc:
        parser.error("--rrt_head chooses what --retrain_fc retrains: add --retrain_fc --pretrained CKPT, or drop it.")
    return args


def main(argv=None) -> dict:
    parser = build_parser()
    args = cli.parse(parser, argv, check=check)
    if args.eval_model:
        args.evaluate, args.resume = True, args.eval_model
    from task import NYUD2Task      # this folder's task.py: flags → data, model, objective, metrics
    from common.launch import run
    return run(args, NYUD2Task)


if __name__ == "__main__":
    main()
