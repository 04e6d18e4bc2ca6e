"""The method list (common/methods.py): what the parsers, run names, objective and optimiser go through; and the
claim it makes, shown: a regulariser and a head, each one file under tests/, added to the list inside a test
only, train and evaluate on all four benchmarks with nothing else changed."""
import json

import pytest
import torch

import toy_head
import toy_regularizer
from common import cli, methods
from common.method import LabelView
from common.objective import ObjectiveData, objective_from_flags
from folders import folder_main, folder_module
from test_method_runs import data  # noqa: F401  (the four benchmarks' synthetic data, written once: a fixture)


@pytest.fixture
def toys(monkeypatch):
    """The two toy methods appended to the list, for this test only."""
    monkeypatch.setattr(methods, "METHODS", methods.METHODS + (toy_regularizer.METHOD, toy_head.METHOD))


def test_the_list_names_each_method_once_in_the_documented_order():
    names = [method.name for method in methods.METHODS]
    assert names == ["reweight", "fds", "bmse", "ranksim", "conr", "srl", "rnc", "uvote", "vir", "dist", "group_dir",
                     "ordinal_entropy", "accon", "bsam", "head_start", "rrt"]
    assert methods.REGRESSION.name == "regression" and methods.REGRESSION not in methods.METHODS


def test_run_names_keep_the_references_order_of_parts():
    """The run folder's name is built as before the list existed: re-weighting, LDS, FDS, Balanced MSE, RankSim,
    ConR, SRL, RnC, RRT, then the seed (a folder named by an older version is found again)."""
    args = cli.parse(cli.build_age_parser("t"), [
        "--reweight", "sqrt_inv", "--lds", "--fds", "--bmse", "--imp", "bni", "--regularization_weight", "2",
        "--conr", "--srl", "--rnc", "--retrain_fc", "--pretrained", "p.pth.tar", "--seed", "3"])
    assert "_".join(cli.method_tags(args)) == (
        "sqrt_inv_lds_gau_5_1_fds_gau_5_1_0_1_0.9_bmse_bni_1_ranksim_2_1_conr_4_w1_t0.07_e0.01_srl_10_100_0.01_t0.3_"
        "rnc_1_t2_rrt_seed3")


def test_every_numeric_method_flag_is_range_checked_by_its_method(capsys):
    positive, non_negative, unit_interval = methods.ranges()
    assert {"conr_temperature", "rnc_temp", "uvote_var_lr", "init_noise_sigma", "fds_sigma"} <= set(positive)
    assert {"regularization_weight", "conr_beta", "w1", "rnc_weight", "vir_reg_weight"} <= set(non_negative)
    assert unit_interval == ("fds_mmt",)
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), ["--fds_mmt", "1.5"])
    assert "--fds_mmt must be in [0, 1], got 1.5." in capsys.readouterr().err


def test_a_method_added_to_the_list_has_its_flags_checks_and_name(toys, capsys):
    parser = cli.build_age_parser("t")
    args = cli.parse(parser, ["--toy_reg_weight", "0.5", "--toy_head"])
    assert (args.toy_reg_weight, args.toy_head) == (0.5, True)
    assert cli.method_tags(args)[-3:] == ["toyreg_0.5", "toyhead", "seed0"]
    assert methods.head_options(args) == {"head": toy_head.GaussianHead}
    assert "toy_head" in methods.model_flags()
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), ["--toy_reg_weight", "-1"])
    assert "--toy_reg_weight must be ≥ 0, got -1.0." in capsys.readouterr().err


class _Fixed(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, targets=None, smooth=True):
        return self.out


def test_the_toy_term_is_its_formula_per_sample_and_per_image(toys):
    torch.manual_seed(0)
    encoding, targets = torch.randn(6, 5, dtype=torch.float64), torch.rand(6, 1)
    objective = objective_from_flags(loss="l1", toy_reg_weight=0.25)
    parts = objective(_Fixed({"pred": torch.zeros(6, 1), "encoding": encoding}), {"input": None, "target": targets,
                                                                                   "weight": None}, 0)
    assert set(parts) == {"l1", "toy_reg"}
    assert parts["toy_reg"].item() == pytest.approx(0.25 * sum((row ** 2).sum().item() / 5 for row in encoding) / 6)
    # NYUD2's view: each image's flattened map (B, C·h·w), whatever the per-pixel layout.
    view = folder_module("nyud2-dir", "loss").DepthView()
    maps, depth = torch.randn(2, 3, 4, 5), torch.rand(2, 1, 4, 5) + 1
    dense = objective_from_flags(ObjectiveData(view=view), loss="mse", toy_reg_weight=1.0)
    parts = dense(_Fixed({"pred": depth, "encoding": maps}), {"input": None, "target": depth, "weight": None}, 0)
    assert parts["toy_reg"].item() == pytest.approx(sum((m ** 2).sum().item() for m in maps) / maps.numel(),
                                                    rel=1e-6)


def test_the_toy_head_is_the_main_loss_on_the_views_scale(toys):
    torch.manual_seed(0)
    head = toy_head.GaussianHead(4)
    features, targets = torch.randn(5, 4), torch.rand(5, 1) * 5
    out = head(features)
    view = LabelView()
    view.label_scale = 5.0
    objective = objective_from_flags(ObjectiveData(view=view), toy_head=True)
    parts = objective(_Fixed({**out, "encoding": features}), {"input": None, "target": targets, "weight": None}, 0)
    mean, log_var = out["toy_head"]
    expected = sum(0.5 * (lv + (t / 5 - m) ** 2 / lv.exp()) for m, lv, t in zip(mean[:, 0], log_var[:, 0],
                                                                               targets[:, 0])) / 5
    assert set(parts) == {"toy_nll"} and parts["toy_nll"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["agedb-dir", "imdb-wiki-dir", "nyud2-dir", "sts-b-dir"])
def test_a_new_regulariser_and_head_train_and_evaluate_on_every_benchmark(folder, toys, data, tmp_path):
    from test_method_runs import train
    result = train(folder, data, tmp_path, "run", "--toy_reg_weight", "0.01", "--toy_head")
    run = tmp_path / "run"
    log = (run / "training.log").read_text()
    assert "toy_reg" in log and "toy_nll" in log                          # both components trained
    saved = json.loads((run / "results.json").read_text())
    assert saved["args"]["toy_head"] is True and saved["args"]["toy_reg_weight"] == 0.01
    assert "uncertainty" in saved["test"]                                 # the head's σ reached the metrics
    state = torch.load(run / "ckpt.best.pth.tar", weights_only=True)["state_dict"]
    assert any(".layer.weight" in key for key in state)                   # the Gaussian head was built
    metrics = folder_main(folder)(["--evaluate", "--resume", str(run / "ckpt.best.pth.tar"),
                                   "--data_dir", str(data[folder][0]), "--workers", "0"])
    assert json.dumps(metrics, sort_keys=True) == json.dumps(result["test"], sort_keys=True)



def test_at_most_one_method_changes_the_step(monkeypatch, capsys):
    """A step rule (BSAM's) reaches the loop through :func:`methods.step_rule`; two methods that each bring one are
    one sentence at parse time."""
    from common.method import Method, StepRule

    class Other(Method):
        name, switch = "other_rule", "--other_rule"

        def add_args(self, parser, **options):
            parser.add_argument("--other_rule", action="store_true")

        def enabled(self, args):
            return bool(getattr(args, "other_rule", False))

        def step_rule(self, args):
            return StepRule()

    monkeypatch.setattr(methods, "METHODS", methods.METHODS + (Other(),))
    assert type(methods.step_rule(cli.parse(cli.build_age_parser("t"), ["--other_rule"]))) is StepRule
    assert methods.step_rule(cli.parse(cli.build_age_parser("t"), [])) is None
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), ["--other_rule", "--bsam"])
    assert "--bsam and --other_rule each change the optimisation step: pass only one of them." in \
        capsys.readouterr().err


def test_flags_of_a_method_left_off_are_said_to_change_nothing(capsys):
    cli.parse(cli.build_age_parser("t"), ["-w", "2", "--w1", "3", "--w2", "1", "--start_update", "2"])
    assert capsys.readouterr().err.splitlines() == [
        "warning: -w has no effect without --conr (add --conr, or drop -w).",
        "warning: --w1, --w2 have no effect without --srl (add --srl, or drop --w1, --w2).",
    ]                                             # --start_update also schedules SRL's surrogate: not said
    cli.parse(cli.build_age_parser("t"), ["--conr", "-w", "2", "--bmse", "--imp", "bni", "--lds", "--seed", "3"])
    assert capsys.readouterr().err == ""          # each flag acts (--lds smooths BNI's prior)
    cli.parse(cli.build_age_parser("t"), ["--resume", "r/ckpt.pth.tar", "-w", "2"])
    assert capsys.readouterr().err == ""          # a resumed run's methods are the checkpoint's: its cli refuses


@pytest.mark.parametrize("flags, sentence", [
    (["--uvote", "--vir"], "pass only one of them"),
    (["--uvote", "--bmse"], "drop --bmse"),
    (["--vir", "--bmse"], "drop --bmse"),
    (["--uvote", "--reweight", "sqrt_inv"], "drop --reweight"),
    (["--dynamic_loss"], "add --uvote"),
    (["--uvote", "--num_branch", "0"], "--num_branch must be ≥ 1"),
    (["--rnc_stage", "linear"], "add --pretrained CKPT"),
    (["--rnc_stage", "encoder", "--vir"], "drop --uvote, --vir and --bmse"),
    (["--rnc", "--rnc_temp", "0"], "--rnc_temp must be > 0"),
    (["--vir", "--fds", "--fds_alias_last_epoch"], "drop --fds_alias_last_epoch"),
    (["--rnc_stage", "encoder", "--rnc_weight", "0"], "--rnc_weight must be > 0"),
    (["--bsam", "--reweight", "sqrt_inv"], "or pass --bsam_weights reweight"),
])
def test_combinations_that_cannot_work_are_one_sentence(flags, sentence, capsys):
    parser = cli.build_age_parser("t")
    with pytest.raises(SystemExit):
        cli.parse(parser, flags)
    assert sentence in capsys.readouterr().err


def test_accepted_combinations_set_what_they_imply():
    parser = cli.build_age_parser("t")
    args = cli.parse(parser, ["--rnc_stage", "encoder", "--conr"])
    assert args.rnc and not args.retrain_fc
    args = cli.parse(cli.build_age_parser("t"), ["--rnc_stage", "linear", "--pretrained", "x.pth.tar"])
    assert not args.rnc and args.retrain_fc
    args = cli.parse(cli.build_age_parser("t"), ["--uvote", "--lds", "--fds", "--conr"])   # --lds, no --reweight
    assert args.uvote and args.lds
    assert "uvote_2" in "_".join(cli.method_tags(args))
