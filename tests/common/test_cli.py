"""The command line: published age command lines parse with their meaning, defaults per folder, refusals.

The parsers are the ones the folders' train.py build (``build_age_parser`` with each folder's defaults), read
from the folders themselves.
"""
import shlex
import subprocess
import sys

import pytest

from common import cli, methods
from folders import ROOT, folder_module

AGEDB = folder_module("agedb-dir", "train").AGEDB_DEFAULTS
IMDB = folder_module("imdb-wiki-dir", "train").IMDB_WIKI_DEFAULTS


def agedb(line: str):
    parser = cli.build_age_parser("t", **AGEDB)
    return cli.check_args(parser, parser.parse_args(shlex.split(line)))


# (published line, the values it must set). Lines from the DIR, BMSE, RankSim and ConR READMEs.
PUBLISHED = [
    ("--data_dir ./data --reweight none", dict(data_dir="./data", reweight="none", lds=False)),
    ("--reweight inverse", dict(reweight="inverse", lds=False)),
    ("--reweight sqrt_inv", dict(reweight="sqrt_inv")),
    ("--loss focal_l1", dict(loss="focal_l1")),
    ("--loss huber", dict(loss="huber")),
    ("--reweight sqrt_inv --retrain_fc --pretrained ckpt.pth.tar",
     dict(reweight="sqrt_inv", retrain_fc=True, pretrained="ckpt.pth.tar")),
    ("--reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2",
     dict(reweight="sqrt_inv", lds=True, lds_kernel="gaussian", lds_ks=5, lds_sigma=2.0)),
    ("--fds --fds_kernel gaussian --fds_ks 5 --fds_sigma 2",
     dict(fds=True, fds_kernel="gaussian", fds_ks=5, fds_sigma=2.0, bucket_start=3, bucket_num=100)),
    ("--reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2 --fds --fds_kernel gaussian "
     "--fds_ks 5 --fds_sigma 2", dict(lds=True, lds_ks=5, lds_sigma=2.0, fds=True, fds_ks=5, fds_sigma=2.0)),
    ("--evaluate --resume ckpt.best.pth.tar", dict(evaluate=True, resume="ckpt.best.pth.tar")),
    ("--balanced_metric --bmse --imp gai --init_noise_sigma 10. --gmm gmm.pkl --sigma_lr 0.01 --retrain_fc "
     "--pretrained base.pth.tar --lr 0.0001 --epoch 10",
     dict(balanced_metric=True, bmse=True, imp="gai", init_noise_sigma=10.0, gmm="gmm.pkl", sigma_lr=0.01,
          retrain_fc=True, pretrained="base.pth.tar", lr=1e-4, epoch=10)),
    ("--balanced_metric --bmse --imp bmc --init_noise_sigma 10. --retrain_fc --pretrained base.pth.tar --lr 0.0001 "
     "--epoch 10", dict(bmse=True, imp="bmc", init_noise_sigma=10.0, lr=1e-4, epoch=10)),
    ("--batch_size 256 --lr 1e-3 --regularization_weight=100.0 --interpolation_lambda=2.0",
     dict(batch_size=256, lr=1e-3, regularization_weight=100.0, interpolation_lambda=2.0)),
    ("--loss focal_l1 --batch_size 256 --lr 1e-3 --regularization_weight=100.0 --interpolation_lambda=2.0",
     dict(loss="focal_l1", regularization_weight=100.0, interpolation_lambda=2.0)),
    ("--batch_size 64 --lr 2.5e-4 --reweight sqrt_inv --regularization_weight=100.0 --interpolation_lambda=2.0",
     dict(batch_size=64, lr=2.5e-4, reweight="sqrt_inv", regularization_weight=100.0)),
    ("--batch_size 64 --lr 2.5e-4 --conr -w 1.0 --beta 4.0 -e 0.01",
     dict(batch_size=64, lr=2.5e-4, conr=True, conr_window=1.0, conr_beta=4.0, conr_eta=0.01,
          conr_temperature=0.07)),
    ("--dfr --n 50 --loss_w1 1 --loss_w2 2 --loss_w3 3", dict(srl=True, n_points=50, w1=1.0, w2=2.0, w3=3.0)),
]


@pytest.mark.parametrize("line, expected", PUBLISHED, ids=[line[:40] for line, _ in PUBLISHED])
def test_published_lines_parse_with_their_meaning(line, expected):
    args = agedb(line)
    assert {key: getattr(args, key) for key in expected} == expected
    # Methods not named on the line stay off.
    methods = {"lds": False, "fds": False, "bmse": False, "conr": False, "srl": False, "regularization_weight": 0.0,
               "retrain_fc": False}
    for flag, off in methods.items():
        if flag not in expected and f"--{flag}" not in line and not (flag == "srl" and "--dfr" in line):
            assert getattr(args, flag) == off, flag


def test_defaults_live_in_each_folder():
    agedb_defaults = agedb("")
    assert (agedb_defaults.dataset, agedb_defaults.lds_ks, agedb_defaults.fds_ks, agedb_defaults.bucket_start,
            agedb_defaults.lds_sigma, agedb_defaults.srl_num_labels) == ("agedb", 9, 9, 3, 1.0, 102)
    assert (agedb_defaults.loss, agedb_defaults.lr, agedb_defaults.epoch, agedb_defaults.batch_size,
            agedb_defaults.schedule) == ("l1", 1e-3, 90, 256, [60, 80])
    assert (agedb_defaults.val_interval, agedb_defaults.patience, agedb_defaults.max_vals) == (0, None, None)
    assert not agedb_defaults.conr               # the reference's AgeDB store_true default=True is not kept
    imdb = cli.build_age_parser("t", **IMDB).parse_args([])
    assert (imdb.dataset, imdb.lds_ks, imdb.fds_ks, imdb.bucket_start, imdb.srl_num_labels) == \
        ("imdb_wiki", 5, 5, 0, 187)


def test_groups_compose_and_checks_skip_absent_flags():
    """A benchmark with only some groups (no FDS, no RRT) parses and checks without the others' flags."""
    parser = cli.Parser("t")
    cli.add_run_args(parser)
    cli.add_optim_args(parser, val_interval=10, patience=3)
    methods.add_arguments(parser, methods=("reweight",))
    args = cli.check_args(parser, parser.parse_args(["--reweight", "inverse", "--lds"]))
    assert (args.val_interval, args.patience, args.lds) == (10, 3, True)
    assert not hasattr(args, "fds") and not hasattr(args, "retrain_fc")


def test_groups_leave_out_what_a_benchmark_cannot_use(capsys):
    """The keyword options drop a flag (or narrow its choices), so it is argparse's own one-sentence error."""
    parser = cli.Parser("t")
    cli.add_optim_args(parser, losses=("mse",), loss="mse", schedule=None)
    methods.add_arguments(parser, methods=("fds", "bmse", "conr", "srl"), fds=dict(stats_from_training=False),
                          bmse=dict(imps=("gai", "bni"), balanced_metric=False), conr=dict(views=False),
                          srl=dict(num_labels=None))
    args = parser.parse_args([])
    for flag in ("schedule", "stats_from_training", "balanced_metric", "conr_views", "srl_num_labels"):
        assert not hasattr(args, flag), flag
    assert (args.loss, args.imp) == ("mse", "gai")
    for line, words in (("--imp bmc", "argument --imp: invalid choice: 'bmc'"),
                        ("--loss l1", "argument --loss: invalid choice: 'l1'"),
                        ("--conr_views 2", "unrecognized arguments: --conr_views 2")):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(line.split())
        err = capsys.readouterr().err
        assert info.value.code == 2 and words in err and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("line, words", [
    ("--lds", "--reweight"),
    ("--resume a --pretrained b", "only one"),
    ("--fds_ks 4", "odd"),
    ("--bmse --loss focal_l1", "--bmse replaces"),
    ("--lerning_rate 1", "unrecognized"),
    ("--ep 3", "unrecognized"),                  # no abbreviations: --ep is not --epoch
    ("--lr nan", "not a finite number"),
    ("--patience 0", "--patience must be ≥ 1"),
])
def test_bad_combinations_are_one_sentence(line, words, capsys):
    with pytest.raises(SystemExit) as info:
        agedb(line)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err
    assert "usage:" not in err and "--help" in err and len(err.strip().splitlines()) == 2


def test_help_shows_defaults():
    """--help shows each flag's default (the method groups come from the method list, each with its own)."""
    done = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT / "agedb-dir", capture_output=True,
                          text=True)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    for flag, default in (("--model {", "resnet50"), ("--epoch EPOCH", "90"), ("--batch_size BATCH_SIZE", "256"),
                          ("--lr LR", "0.001"), ("--img_size IMG_SIZE", "224"), ("--workers WORKERS", "32"),
                          ("--srl_homogeneity_alpha", "-1.0")):
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(flag))
        assert f"(default: {default})" in " ".join(lines[at:at + 3]), flag


def test_given_flags_are_the_ones_on_the_command_line():
    """A resumed run keeps the checkpoint's value of every flag the command line does not set (e.g. --epoch)."""
    from common.cli import restore_flags
    parser = cli.build_age_parser("t", **AGEDB)
    argv = ["--resume", "ck.pth.tar", "--workers", "0", "-w", "2"]
    assert cli.given_flags(parser, argv) == ["conr_window", "resume", "workers"]
    assert parser.parse_args([]).epoch == 90                          # the defaults are back afterwards
    saved = {**vars(parser.parse_args([])), "epoch": 4, "workers": 8, "lr": 0.5}
    argv = ["--resume", "ck.pth.tar", "--workers", "0"]
    resumed = restore_flags(parser.parse_args(argv), saved, (), {}, cli.given_flags(parser, argv))
    assert (resumed.epoch, resumed.workers, resumed.lr, resumed.resume) == (4, 0, 0.5, "ck.pth.tar")
    again = restore_flags(parser.parse_args(argv + ["--epoch", "6"]), saved, (), {},
                          cli.given_flags(parser, argv + ["--epoch", "6"]))
    assert again.epoch == 6


@pytest.mark.parametrize("extra, refused", [
    (["-w", "2"], "-w cannot change on resume (the checkpoint ck.pth.tar was trained with 1.0, the command line "
                  "says 2.0)"),
    (["--conr"], "--conr cannot change on resume"),
    (["--reweight", "inverse"], "--reweight cannot change on resume"),
    (["--batch_size", "8"], "--batch_size cannot change on resume"),
    (["--data_dir", "elsewhere"], "--data_dir cannot change on resume"),
])
def test_a_resumed_run_refuses_a_flag_it_cannot_honour(extra, refused, monkeypatch):
    """A flag that would change what is trained cannot apply to a run half done: one sentence, not ignored."""
    from common.cli import restore_flags
    from common.errors import RunError
    parser = cli.build_age_parser("t", **AGEDB)
    saved = vars(parser.parse_args([]))
    argv = ["--resume", "ck.pth.tar", *extra]
    with pytest.raises(RunError) as info:
        restore_flags(parser.parse_args(argv), saved, (), {}, cli.given_flags(parser, argv), cli.option_names(parser))
    assert refused in str(info.value) and "--pretrained" in str(info.value)
    # The same flag with the checkpoint's own value is no change, and run flags always apply.
    same = ["--resume", "ck.pth.tar", "-w", "1.0", "--workers", "3", "--lr", "0.01", "--store_name", "b",
            "--data_dir", str(ROOT / "agedb-dir" / "data")]                   # "./data" from the folder, spelt out
    monkeypatch.chdir(ROOT / "agedb-dir")
    resumed = restore_flags(parser.parse_args(same), saved, (), {}, cli.given_flags(parser, same))
    assert (resumed.conr_window, resumed.workers, resumed.lr, resumed.store_name) == (1.0, 3, 0.01, "b")


# docs/methods.md §1–§7 hyper-parameter tables: each benchmark's method defaults, as its references set them.
AGE_METHOD_DEFAULTS = dict(lds_kernel="gaussian", lds_sigma=1.0, fds_kernel="gaussian", fds_sigma=1.0,
                           bucket_num=100, fds_mmt=0.9, start_update=0, start_smooth=1, conr_window=1.0,
                           conr_beta=4.0, conr_eta=0.01, conr_temperature=0.07, interpolation_lambda=1.0, imp="gai",
                           init_noise_sigma=1.0, sigma_lr=1e-2, w1=10.0, w2=100.0, w3=0.01, temperature=0.3,
                           n_points=2000, embedding_dim=128)


@pytest.mark.parametrize("defaults", [AGEDB, IMDB], ids=["agedb", "imdb_wiki"])
def test_age_method_defaults_are_the_references(defaults):
    args = cli.build_age_parser("t", **defaults).parse_args([])
    assert {key: getattr(args, key) for key in AGE_METHOD_DEFAULTS} == AGE_METHOD_DEFAULTS


def test_depth_and_text_method_defaults_are_the_references():
    nyud2 = folder_module("nyud2-dir", "train").build_parser().parse_args([])
    expected = dict(lds_ks=5, lds_sigma=2.0, fds_ks=5, fds_sigma=2.0, bucket_num=100, bucket_start=7,
                    conr_window=0.2, conr_beta=0.2, conr_eta=0.2, conr_temperature=0.2)
    assert {key: getattr(nyud2, key) for key in expected} == expected
    # NYUD2's SRL slots are its 100 depth bins, not a flag (tests/nyud2-dir/test_nyud2.py::test_srl_slots_are_the_100_depth_bins)
    assert not hasattr(nyud2, "srl_num_labels")
    stsb = folder_module("sts-b-dir", "train").build_parser().parse_args([])
    assert stsb.huber_beta == 0.3


# Numeric flags out of range, on every benchmark whose parser has the flag: (flags, the sentence's words).
OUT_OF_RANGE = [
    ("--width 0", "--width must be > 0, got 0."),
    ("--fds_sigma 0", "--fds_sigma must be > 0, got 0.0."),
    ("--lds_sigma 0", "--lds_sigma must be > 0, got 0.0."),
    ("--interpolation_lambda -1", "--interpolation_lambda must be ≥ 0, got -1.0."),
    ("--grad_clip -1", "--grad_clip must be > 0, got -1.0."),
    ("--fds_mmt 1.5", "--fds_mmt must be in [0, 1], got 1.5."),
    ("--conr -t 0", "-t (ConR temperature) must be positive."),
    ("-e -0.1", "-e must be ≥ 0, got -0.1."),
    ("--srl --n_points 0", "--n_points must be > 0, got 0."),
    ("--many_shot_thr 5 --low_shot_thr 10", "--many_shot_thr (5) must be at least --low_shot_thr (10)"),
]


@pytest.mark.parametrize("folder", ["agedb-dir", "imdb-wiki-dir", "nyud2-dir", "sts-b-dir"])
@pytest.mark.parametrize("line, words", OUT_OF_RANGE)
def test_numeric_flags_out_of_range_are_one_sentence_on_every_benchmark(folder, line, words, capsys):
    from folders import folder_main
    with pytest.raises(SystemExit) as info:
        folder_main(folder)(shlex.split(line))
    err = capsys.readouterr().err
    if "unrecognized arguments" in err:           # the benchmark has no such flag (NYUD2: --width, shots)
        assert folder in ("nyud2-dir", "sts-b-dir") and info.value.code == 2
        return
    assert info.value.code == 2 and words in err and len(err.strip().splitlines()) == 2


def test_conr_on_a_batch_of_one_says_it_adds_nothing(capsys):
    agedb("--conr --batch_size 1")
    assert "warning: --conr with --batch_size 1 has no pair of samples to contrast" in capsys.readouterr().err


def test_a_schedule_beyond_the_run_is_said_and_one_out_of_order_too(capsys):
    cli.parse(cli.build_age_parser("t"), ["--epoch", "2"])
    assert capsys.readouterr().err == ("warning: --schedule 60 80 lies at or beyond --epoch 2: the learning rate is "
                                       "never lowered there and stays at --lr for the whole run; pass milestones "
                                       "below --epoch to decay it.\n")
    cli.parse(cli.build_age_parser("t"), ["--epoch", "70"])
    assert "--schedule 80 lies at or beyond --epoch 70" in capsys.readouterr().err
    cli.parse(cli.build_age_parser("t"), ["--epoch", "10", "--schedule", "5", "3"])
    assert "is out of order; the learning rate is lowered at epochs 3, 5." in capsys.readouterr().err
    cli.parse(cli.build_age_parser("t"), [])                      # the references' 90 epochs: nothing to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("folder,argv,refused", [
    ("agedb-dir", ["--bmse", "--imp", "gai", "--reweight", "sqrt_inv"], True),
    ("agedb-dir", ["--bmse", "--imp", "bmc", "--reweight", "inverse", "--lds"], True),
    ("agedb-dir", ["--bmse", "--imp", "bni", "--reweight", "sqrt_inv", "--lds"], False),   # --lds smooths BNI's prior
    ("agedb-dir", ["--bmse", "--imp", "bni", "--lds"], False),
    ("sts-b-dir", ["--bmse", "--imp", "gai", "--reweight", "inverse"], True),
    ("nyud2-dir", ["--bmse", "--imp", "bni", "--reweight", "sqrt_inv"], False),   # shapes NYUD2's BNI prior
    ("nyud2-dir", ["--bmse", "--imp", "gai", "--reweight", "sqrt_inv"], True),
])
def test_balanced_mse_refuses_a_reweighting_it_would_not_apply(folder, argv, refused, capsys):
    parse = (lambda a: cli.parse(folder_module(folder, "train").build_parser(), a)) if folder != "agedb-dir" else \
        (lambda a: cli.parse(cli.build_age_parser("t"), a))
    if refused:
        with pytest.raises(SystemExit):
            parse(argv)
        assert f"takes no sample weights, so --reweight {argv[argv.index('--reweight') + 1]} would have no effect" \
            in capsys.readouterr().err
    else:
        assert parse(argv).bmse
