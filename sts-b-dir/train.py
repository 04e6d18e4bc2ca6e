"""Train or evaluate a sentence-pair regressor on STS-B-DIR (BiLSTM + GloVe).

    python data/download_sts.py                          # DIR's split files (--split ranksim: RankSim/SRL's)
    python train.py --reweight inverse --lds --fds --word_embs_file glove-6b-50d
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar      # or --evaluate --eval_model CKPT

Flags and defaults are the DIR reference's (docs/datasets.md §4.3: Adam 1e-4 with weight decay 1e-5, batch 128,
a validation every 400 iterations, patience 10, at most 100 validations, gradient norm clipped at 5, seed 111,
MSE on score/5); its other flag names are accepted too (``--random_seed``, ``--max_grad_norm``, ``--cuda``,
``--eval_model``, ``--dfr``, ``--temp``, ``--projector_dim``). ``python train.py --help`` lists them all. The data,
model and loss are this folder's ``dataset.py``, ``models.py`` and ``loss.py``; the loop is common/trainer.py.
"""
import argparse
import sys

try:
    from common import cli
except ImportError:
    sys.exit("error: the repo's `common` package is not installed in this Python; run `make venv` in the repo "
             "root and use .venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(__doc__.splitlines()[0])
    run = cli.add_run_args(p, data_dir="./data", store_root="checkpoint", workers=0, print_freq=50, seed=111)
    run.add_argument("--random_seed", dest="seed", type=int, default=argparse.SUPPRESS, help="alias of --seed")
    run.add_argument("--eval_model", default="", help="with --evaluate: the checkpoint (the reference's name)")
    run.add_argument("--cuda", type=int, default=None,
                     help="the reference's GPU index: N uses GPU N when CUDA is present (else the CPU), -1 the CPU")
    run.add_argument("--suffix", default="", help="appended to the run folder name")
    run.add_argument("--task", default="sts-b", choices=["sts-b"], help="the reference's only task")
    run.add_argument("--log_file", default="training.log", help="accepted; the log is <run folder>/training.log")
    cli.add_shot_args(p, many=100, few=30)
    text = cli.add_text_args(p)
    text.add_argument("--d_hid", type=int, default=1500, help="LSTM hidden size per direction")
    text.add_argument("--n_layers_enc", type=int, default=2, help="BiLSTM layers")
    text.add_argument("--n_layers_highway", type=int, default=0, help="highway layers on the embeddings")
    text.add_argument("--dropout", type=float, default=0.2, help="after the embeddings and after the BiLSTM")
    text.add_argument("--dropout_embs", type=float, default=0.2, help="accepted; unused, as in the reference")
    cli.add_optim_args(p, optimizer="adam", loss="mse", lr=1e-4, epoch=1000, weight_decay=1e-5, schedule=(),
                       batch_size=128, val_interval=400, patience=10, max_vals=100, grad_clip=5.0)
    p.add_argument("--max_grad_norm", dest="grad_clip", type=float, default=argparse.SUPPRESS,
                   help="alias of --grad_clip")
    p.add_argument("--huber_beta", type=float, default=0.3, help="β of --loss huber (on score/5)")
    cli.add_reweight_args(p, lds_ks=5, lds_sigma=2.0)
    cli.add_fds_args(p, fds_ks=5, fds_sigma=2.0, bucket_num=50, bucket_start=0)
    cli.add_bmse_args(p)
    cli.add_ranksim_args(p, ties="stable")
    # ConR has no STS-B reference: a window of 0.2 score points (one step of the averaged ratings), untuned.
    cli.add_conr_args(p, window=0.2, beta=0.01, temperature=0.07, eta=0.01)
    cli.add_srl_args(p, num_labels=50, homogeneity_alpha=1.0, temp_alias=True)
    p.add_argument("--projector_dim", dest="embedding_dim", type=int, default=argparse.SUPPRESS,
                   help="alias of --embedding_dim (SRL's projector)")
    # SRL's STS-B values (docs/methods.md §7.4): w1 1e-4, w2 1e-2, w3 1e-4, τ 0.1, 1,000 random points.
    p.set_defaults(w1=1e-4, w2=1e-2, w3=1e-4, temperature=0.1, n_points=1000)
    return p


def parse(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.eval_model:
        if not args.evaluate:
            parser.error("--eval_model names the checkpoint to evaluate: add --evaluate.")
        if args.resume and args.resume != args.eval_model:
            parser.error("--eval_model and --resume name different checkpoints: pass one of them.")
        args.resume = args.eval_model
    if args.cuda is not None:
        args.device, args.gpu = ("cpu", None) if args.cuda < 0 else ("auto", args.cuda)
    cli.check_text_args(parser, args)
    if args.srl and args.srl_num_labels < args.bucket_num:
        parser.error(f"--srl_num_labels must be at least {args.bucket_num} (one slot per 0.1-wide score bin), got "
                     f"{args.srl_num_labels}.")
    args = cli.check_args(parser, args)
    args.given_flags = cli.given_flags(parser, argv)
    try:
        import torch  # noqa: F401  (after parsing, so --help stays fast)
    except ImportError:
        sys.exit("error: PyTorch is not installed in this Python; run `make venv` in the repo root and use "
                 ".venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    import dataset
    import loss
    import models
    from common.text import stsb
    return stsb.main(args, dataset, models, loss)


if __name__ == "__main__":
    main()
