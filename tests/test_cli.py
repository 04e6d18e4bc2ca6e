"""The published age command lines (DIR, BMSE, RankSim, ConR READMEs) parse unchanged, with their meaning."""
import shlex

import pytest

from common.cli import build_parser, check_args

PUBLISHED = [
    "--data_dir ./data --reweight none",
    "--reweight inverse",
    "--reweight sqrt_inv",
    "--loss focal_l1",
    "--loss huber",
    "--reweight sqrt_inv --retrain_fc --pretrained ckpt.pth.tar",
    "--reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2",
    "--fds --fds_kernel gaussian --fds_ks 5 --fds_sigma 2",
    "--reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2 --fds --fds_kernel gaussian "
    "--fds_ks 5 --fds_sigma 2",
    "--evaluate --resume ckpt.best.pth.tar",
    "--balanced_metric --bmse --imp gai --init_noise_sigma 10. --gmm gmm.pkl --sigma_lr 0.01 --retrain_fc "
    "--pretrained base.pth.tar --lr 0.0001 --epoch 10",
    "--balanced_metric --bmse --imp bmc --init_noise_sigma 10. --retrain_fc --pretrained base.pth.tar --lr 0.0001 "
    "--epoch 10",
    "--batch_size 256 --lr 1e-3 --regularization_weight=100.0 --interpolation_lambda=2.0",
    "--loss focal_l1 --batch_size 256 --lr 1e-3 --regularization_weight=100.0 --interpolation_lambda=2.0",
    "--batch_size 64 --lr 2.5e-4 --reweight sqrt_inv --regularization_weight=100.0 --interpolation_lambda=2.0",
    "--batch_size 64 --lr 2.5e-4 --conr -w 1.0 --beta 4.0 -e 0.01",
]


@pytest.mark.parametrize("line", PUBLISHED)
def test_published_lines_parse(line):
    parser = build_parser("t", dataset="agedb", lds_ks=9, fds_ks=9, bucket_start=3)
    check_args(parser, parser.parse_args(shlex.split(line)))


def test_flag_meanings_and_defaults():
    agedb = build_parser("t", dataset="agedb", lds_ks=9, fds_ks=9, bucket_start=3)
    args = agedb.parse_args(shlex.split("--batch_size 64 --lr 2.5e-4 --conr -w 1.0 --beta 4.0 -e 0.01 "
                                        "--regularization_weight=100.0 --interpolation_lambda=2.0 --dfr --n 50"))
    assert (args.conr, args.conr_window, args.conr_beta, args.conr_eta) == (True, 1.0, 4.0, 0.01)
    assert args.conr_temperature == 0.07          # the value the published AgeDB run really used
    assert (args.regularization_weight, args.interpolation_lambda) == (100.0, 2.0)
    assert args.srl and args.n_points == 50
    defaults = agedb.parse_args([])
    assert (defaults.lds_ks, defaults.fds_ks, defaults.bucket_start, defaults.lds_sigma) == (9, 9, 3, 1.0)
    assert (defaults.loss, defaults.lr, defaults.epoch, defaults.batch_size, defaults.schedule) == \
        ("l1", 1e-3, 90, 256, [60, 80])
    assert not defaults.conr                      # the reference's AgeDB store_true default=True is not kept
    imdb = build_parser("t", dataset="imdb_wiki").parse_args([])
    assert (imdb.lds_ks, imdb.fds_ks, imdb.bucket_start) == (5, 5, 0)


@pytest.mark.parametrize("line, words", [
    ("--lds", "--reweight"),
    ("--retrain_fc --pretrained x", "balanced objective"),
    ("--resume a --pretrained b", "only one"),
    ("--fds_ks 4", "odd"),
    ("--bmse --loss focal_l1", "--bmse replaces"),
    ("--lerning_rate 1", "unrecognized"),
])
def test_bad_combinations_are_one_sentence(line, words, capsys):
    parser = build_parser("t")
    with pytest.raises(SystemExit) as info:
        check_args(parser, parser.parse_args(shlex.split(line)))
    assert info.value.code == 2
    assert words in capsys.readouterr().err
