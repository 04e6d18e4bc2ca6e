"""The STS-B-DIR model and objective: packing and masked max-pool, the pair feature, FDS placement, SRL's projector,
the score/5 loss scale, and the published command lines (parsed, not run)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.bins import STSB_BINS
from common.fds import FDS
from folders import ROOT, folder_module

models = folder_module("sts-b-dir", "models")
loss = folder_module("sts-b-dir", "loss")
train = folder_module("sts-b-dir", "train")
dataset = folder_module("sts-b-dir", "dataset")
task = folder_module("sts-b-dir", "task")


def flags(*argv):
    """The parsed ``train.py`` flags of a command line (unchecked: the objective alone is under test)."""
    return train.build_parser().parse_args(argv)


def batch_of(sentences1, sentences2):
    return dataset.collate([{"input": (np.asarray(a), np.asarray(b)), "target": torch.tensor([1.0]),
                             "weight": torch.tensor([1.0])} for a, b in zip(sentences1, sentences2)])["input"]


def test_each_sentence_is_encoded_as_if_alone_and_the_pair_feature_is_u_v_diff_prod():
    torch.manual_seed(0)
    model = models.build_model(30, 6, 5, n_layers=2, dropout=0.0, embeddings=torch.randn(30, 6)).eval()
    s1 = [[3, 4, 5, 6, 7], [8, 9], [10]]
    s2 = [[11, 12], [13, 14, 15, 16, 17, 18, 19], [2, 2, 3]]
    with torch.no_grad():
        pair = model.pair_feature(batch_of(s1, s2))
        out = model(batch_of(s1, s2))
        for row in range(3):
            # One sentence alone: no padding, so no packing question. Max over its LSTM states by a loop.
            alone = []
            for tokens in (s1[row], s2[row]):
                states, _ = model.lstm(model.embedding(torch.tensor([tokens])))
                alone.append(torch.stack([states[0, t] for t in range(len(tokens))]).max(0).values)
            u, v = alone
            torch.testing.assert_close(pair[row], torch.cat([u, v, (u - v).abs(), u * v]), rtol=1e-5, atol=1e-6)
    assert pair.shape == (3, 8 * 5) and out["encoding"].shape == (3, 40)
    torch.testing.assert_close(out["pred"], 5 * model.linear(pair))
    assert not model.embedding.weight.requires_grad                   # frozen GloVe, as --train_words 0


def test_fds_calibrates_only_in_training_with_targets_and_srl_projection_is_unit():
    torch.manual_seed(1)
    fds = FDS(16, 50, 0, start_smooth=0, bins=STSB_BINS, edge_rule="clamp", clip_min=0.5, clip_max=2)
    fds.running_mean_last_epoch.normal_()
    fds.smoothed_mean_last_epoch.normal_()
    fds.refresh_calibration()
    model = models.build_model(20, 4, 2, dropout=0.0, fds=fds, projection_dim=3)
    inputs = batch_of([[2, 3], [4]], [[5], [6, 7, 8]])
    targets = torch.tensor([[0.4], [3.2]])
    model.train()
    fds.set_epoch(0)
    smoothed = model(inputs, targets)
    pair = model.pair_feature(inputs)
    torch.testing.assert_close(smoothed["encoding"], fds.smooth(pair, targets, 0))
    assert not torch.allclose(smoothed["encoding"], pair)
    torch.testing.assert_close(model(inputs, targets, smooth=False)["encoding"], pair)
    model.eval()
    torch.testing.assert_close(model(inputs, targets)["encoding"], pair)
    torch.testing.assert_close(smoothed["projection"].norm(dim=1), torch.ones(2))
    torch.testing.assert_close(smoothed["projection"],
                               torch.nn.functional.normalize(model.projector(pair), dim=1))      # from the raw pair


class Fixed(torch.nn.Module):
    """A model returning given outputs, to check what the objective computes from them."""

    def __init__(self, pred, encoding, projection=None):
        super().__init__()
        self.out = {"pred": pred, "encoding": encoding, "projection": projection}

    def forward(self, inputs, targets=None, smooth=True):
        return self.out


def test_losses_are_on_score_over_5_with_the_stsb_focal_and_huber_parameters():
    pred = torch.tensor([[4.0], [1.0], [2.5]])
    target = torch.tensor([[3.2], [1.6], [2.5]])
    weight = torch.tensor([[1.0], [2.0], [0.5]])
    e = (pred - target) / 5
    batch = {"input": None, "target": target, "weight": weight}
    model = Fixed(pred, torch.randn(3, 4))
    expected = {
        "mse": (weight * e ** 2).mean(),
        "l1": (weight * e.abs()).mean(),
        "focal_mse": (weight * e ** 2 * (2 * torch.sigmoid(20 * e.abs()) - 1)).mean(),
        "focal_l1": (weight * e.abs() * (2 * torch.sigmoid(20 * e.abs()) - 1)).mean(),
        "huber": (weight * torch.where(e.abs() < 0.3, 0.5 * e ** 2 / 0.3, e.abs() - 0.15)).mean(),
    }
    for name, value in expected.items():
        objective = loss.build_objective(flags("--loss", name, "--huber_beta", "0.3"))
        torch.testing.assert_close(objective(model, batch, 0)[name], value)
    # Balanced MSE (BMC) on score/5 too: σ = 1 → the noise variance term sees the /5 errors.
    bmc = loss.build_objective(flags("--loss", "mse", "--bmse", "--imp", "bmc", "--init_noise_sigma", "1.0"))
    from common.losses import bmc_loss
    torch.testing.assert_close(bmc(model, batch, 0)["bmse"], bmc_loss(pred / 5, target / 5, torch.tensor(1.0)))


def test_srl_slots_are_the_0_1_bins_and_ranksim_conr_see_scores():
    labels = torch.tensor([[0.0], [0.1], [0.19], [2.6], [4.95], [5.0]])
    assert loss.ScoreView().srl_slot(labels, 50).reshape(-1).tolist() == [0, 1, 1, 26, 49, 49]
    torch.manual_seed(2)
    encoding = torch.randn(6, 5)
    projection = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    pred = labels + 0.05
    batch = {"input": None, "target": labels, "weight": None}
    objective = loss.build_objective(flags(
        "--loss", "mse", "--regularization_weight", "1.0", "--interpolation_lambda", "2.0", "--conr", "--beta", "1.0",
        "-w", "0.2", "--srl", "--w1", "1.0", "--w2", "1.0", "--w3", "1.0", "--srl_num_labels", "50",
        "--embedding_dim", "8", "--n_points", "20", "--temperature", "0.1", "--srl_homogeneity_alpha", "1.0",
        "--seed", "0"))
    parts = objective(Fixed(pred, encoding, projection), batch, 0)
    from common.losses import conr_loss, ranksim_loss, srl_losses
    torch.testing.assert_close(parts["ranksim"], ranksim_loss(encoding, labels, 2.0))
    torch.testing.assert_close(parts["conr"], conr_loss(encoding, labels, pred, None, window=0.2))
    con, env, hom = srl_losses(projection, STSB_BINS.index(labels), objective.srl.surrogate.running_mean,
                               objective.srl.loss.points, temperature=0.1, homogeneity_alpha=1.0)
    torch.testing.assert_close(parts["srl_contrastive"], con)
    torch.testing.assert_close(parts["srl_homogeneity"], hom)


# -- the command line ------------------------------------------------------------------------------------------
PUBLISHED = {   # datasets.md §3.4, as published (DIR, RankSim, SRL READMEs); the values they must set
    "python train.py --cuda 0 --reweight none": {"reweight": "none", "gpu": 0, "device": "auto"},
    "python train.py --reweight inverse": {"reweight": "inverse"},
    "python train.py --reweight sqrt_inv": {"reweight": "sqrt_inv"},
    "python train.py --loss focal_mse": {"loss": "focal_mse"},
    "python train.py --loss huber --huber_beta 0.3": {"loss": "huber", "huber_beta": 0.3},
    "python train.py --reweight inverse --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2":
        {"reweight": "inverse", "lds": True, "lds_kernel": "gaussian", "lds_ks": 5, "lds_sigma": 2.0},
    "python train.py --fds --fds_kernel gaussian --fds_ks 5 --fds_sigma 2":
        {"fds": True, "fds_ks": 5, "fds_sigma": 2.0, "bucket_num": 50, "bucket_start": 0},
    "python train.py --reweight inverse --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2 --fds --fds_kernel "
    "gaussian --fds_ks 5 --fds_sigma 2": {"lds": True, "fds": True},
    "python train.py --evaluate --eval_model run/ckpt.best.pth.tar": {"evaluate": True,
                                                                      "resume": "run/ckpt.best.pth.tar"},
    "python train.py --regularization_weight=3e-4 --interpolation_lambda=2":
        {"regularization_weight": 3e-4, "interpolation_lambda": 2.0, "ranksim_ties": "stable"},
    "python train.py --reweight inverse --regularization_weight=3e-4 --interpolation_lambda=2": {"reweight": "inverse"},
    "python train.py --loss focal_mse --regularization_weight=3e-4 --interpolation_lambda=2": {"loss": "focal_mse"},
    "python train.py --dfr --w1 1e-4 --w2 1e-2 --w3 1e-4 --temp 0.1":
        {"srl": True, "w1": 1e-4, "w2": 1e-2, "w3": 1e-4, "temperature": 0.1, "srl_num_labels": 50},
    "python train.py --reweight inverse --retrain_fc --pretrained run/ckpt.best.pth.tar":
        {"retrain_fc": True, "pretrained": "run/ckpt.best.pth.tar"},
    "python train.py --random_seed 7 --max_grad_norm 3 --projector_dim 64 --cuda -1":
        {"seed": 7, "grad_clip": 3.0, "embedding_dim": 64, "device": "cpu"},
}
DEFAULTS = {"lr": 1e-4, "batch_size": 128, "weight_decay": 1e-5, "optimizer": "adam", "loss": "mse", "seed": 111,
            "val_interval": 400, "patience": 10, "max_vals": 100, "grad_clip": 5.0, "max_seq_len": 40,
            "max_word_v_size": 30000, "d_hid": 1500, "n_layers_enc": 2, "n_layers_highway": 0, "dropout": 0.2,
            "word_embs_file": "glove/glove.840B.300d.txt", "glove": 1, "train_words": 0, "lds_ks": 5,
            "lds_sigma": 2.0, "fds_ks": 5, "fds_sigma": 2.0, "bucket_num": 50, "bucket_start": 0,
            "n_points": 1000, "embedding_dim": 128, "srl_homogeneity_alpha": 1.0, "temperature": 0.1}


@pytest.mark.parametrize("line", list(PUBLISHED))
def test_published_command_lines_parse_unchanged(line):
    args = train.parse(line.split()[2:])
    for flag, value in {**DEFAULTS, **PUBLISHED[line]}.items():
        if flag in PUBLISHED[line] or flag not in ("seed", "grad_clip", "embedding_dim", "loss"):
            assert getattr(args, flag) == value, flag


@pytest.mark.parametrize("argv, message", [
    (["--eval_model", "x.pth.tar"], "--eval_model names the checkpoint to evaluate: add --evaluate."),
    (["--lds"], "--lds smooths the re-weighting histogram"),
    (["--d_hid", "0"], "--d_hid must be ≥ 1"),
    (["--dropout", "1"], "--dropout must be in"),
    (["--glove", "2"], "invalid choice"),
    (["--dfr", "--srl_num_labels", "20"], "--srl_num_labels must be at least 50"),
])
def test_bad_flags_are_one_sentence(argv, message, capsys):
    with pytest.raises(SystemExit):
        train.parse(argv)
    assert message in capsys.readouterr().err


def test_help_lists_the_text_flags_and_every_method_group():
    done = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT / "sts-b-dir", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--word_embs_file" in done.stdout
    for title in ("re-weighting and LDS", "FDS", "Balanced MSE", "RankSim", "ConR", "SRL", "RnC", "UVOTE", "VIR",
                  "RRT"):
        assert f"\n{title}" in done.stdout, title


def test_the_task_builds_fds_with_the_stsb_rules_and_the_reference_switches():
    args = train.parse(["--fds", "--fds_alias_last_epoch", "--fds_skip_invalid_buckets", "--d_hid", "3",
                        "--d_word", "4", "--dfr", "--embedding_dim", "5", "--glove", "0"])
    sts = object.__new__(task.STSTask)          # the model part only: no data files needed
    sts.args, sts.vocabulary, sts.embeddings, sts.bins = args, ["p", "u", "a"], None, STSB_BINS
    model = sts.build_model()
    fds = model.fds
    assert (fds.feature_dim, fds.num_buckets, fds.bins, fds.edge_rule) == (24, 50, STSB_BINS, "clamp")
    assert (fds.clip_min, fds.clip_max, fds.fill_empty) == (0.5, 2.0, True)
    assert fds.alias_last_epoch and fds.skip_invalid_buckets and model.projector[0].out_features == 5
    assert model.embedding.weight.requires_grad                  # --glove 0: trained from scratch
    assert task.STSTask.run_name(args) == ("sts_d3_adam_mse_0.0001_128_valint400_patience10_noglove_fds_gau_5_2_0_1_0.9_"
                              "srl_0.0001_0.01_0.0001_t0.1_seed111")
