"""End to end on a tiny synthetic AgeDB-DIR: every method, checkpoints, resume, evaluation, bad input.

Each run is one or two epochs of a 4-channel ResNet-18 on 16×16 images, on CPU.
"""
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from common import checkpointing
from common.gmm import fit_gmm_1d, save_gmm
from common.metrics import shot_metrics
from common.synthetic import write_synthetic
from folders import folder_main
from tb_events import scalars_of_run
from training_log import logged_components

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "resnet18", "--width", "4", "--img_size", "16", "--batch_size", "64", "--workers", "0",
        "--print_freq", "100", "--epoch", "1", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("agedb") / "data"
    write_synthetic("agedb", out, n=240, img_size=16, seed=3)
    frame = pd.read_csv(out / "agedb.csv")
    save_gmm(fit_gmm_1d(frame.loc[frame.split == "train", "age"].to_numpy(), 4), out / "gmm.npz")
    return out


agedb_main = folder_main("agedb-dir")


def train(data_dir, store_root, name, *flags):
    argv = ["--data_dir", str(data_dir), "--store_root", str(store_root), "--store_name", name, *TINY, *flags]
    return agedb_main(argv)


def check_results(run_dir: Path, result: dict):
    """results.json has the promised schema and its test metrics are those of the saved predictions."""
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved) == {"val", "test", "epoch", "step", "cost", "benchmark", "provenance", "args"}
    assert set(saved["test"]) == {"all", "many", "medium", "few"}
    predictions = np.load(run_dir / "test_predictions.npz")
    recomputed = shot_metrics(predictions["preds"], predictions["labels"], predictions["train_labels"])
    for shot in ("all", "many", "medium", "few"):
        assert saved["test"][shot]["count"] == recomputed[shot]["count"]
        for key in ("mse", "l1", "gmean"):
            a, b = saved["test"][shot][key], recomputed[shot][key]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)
    assert saved["test"]["all"]["count"] == len(predictions["labels"])
    assert math.isfinite(saved["test"]["all"]["l1"])
    return saved


def test_log_and_results_begin_with_the_provenance(data_dir, tmp_path):
    """training.log starts with the git commit, the torch version, the device and every flag; results.json keeps
    the same provenance."""
    import subprocess

    import torch
    train(data_dir, tmp_path, "prov", "--lr", "0.002")
    saved = json.loads((tmp_path / "prov" / "results.json").read_text())["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    assert saved["git_commit"].split(" ")[0] == (head or "not")
    assert saved["torch"] == torch.__version__ and saved["device"].startswith("cpu")
    lines = [line.split(" ", 1)[1] for line in (tmp_path / "prov" / "training.log").read_text().splitlines()]
    assert lines[0] == f"git_commit: {saved['git_commit']}" and lines[1] == f"torch: {torch.__version__}"
    flags = lines[lines.index("flags:") + 1:lines.index("flags:") + 1 + len(saved_flags(tmp_path / "prov"))]
    assert "  --lr 0.002" in flags and "  --conr False" in flags and "  --dataset 'agedb'" in flags
    assert len(flags) == len(saved_flags(tmp_path / "prov")) and flags == sorted(flags)


def saved_flags(run_dir):
    return json.loads((run_dir / "results.json").read_text())["args"]


METHODS = {
    "vanilla": [],
    "mse": ["--loss", "mse"],
    "focal_l1": ["--loss", "focal_l1"],
    "focal_mse": ["--loss", "focal_mse"],
    "huber": ["--loss", "huber"],
    "inverse": ["--reweight", "inverse"],
    "sqrt_inv_lds": ["--reweight", "sqrt_inv", "--lds", "--lds_ks", "5", "--lds_sigma", "2"],
    "fds": ["--fds", "--fds_ks", "5", "--fds_sigma", "2", "--epoch", "2"],
    "ranksim": ["--regularization_weight", "100", "--interpolation_lambda", "2"],
    "conr": ["--conr", "-w", "1", "--beta", "4", "-e", "0.01"],
    "srl": ["--srl", "--n_points", "50", "--embedding_dim", "8", "--epoch", "2"],
    "bmse_gai": ["--bmse", "--imp", "gai", "--gmm", "gmm.pkl", "--balanced_metric"],  # the BMSE README line
    "bmse_bmc": ["--bmse", "--imp", "bmc"],
    "bmse_bni": ["--bmse", "--imp", "bni", "--reweight", "sqrt_inv", "--lds"],
    "amp": ["--amp", "--conr"],
    "all_together": ["--reweight", "sqrt_inv", "--lds", "--fds", "--conr", "--regularization_weight", "10",
                     "--srl", "--n_points", "50", "--embedding_dim", "8", "--epoch", "2"],
}


# The loss components each method must log (the progress line and tensorboard), besides "total".
COMPONENTS = {
    "mse": {"mse"}, "focal_l1": {"focal_l1"}, "focal_mse": {"focal_mse"}, "huber": {"huber"},
    "fds": {"l1"}, "ranksim": {"l1", "ranksim"}, "conr": {"l1", "conr"},
    "srl": {"l1", "srl_contrastive", "srl_enveloping", "srl_homogeneity"},
    "bmse_gai": {"bmse"}, "bmse_bmc": {"bmse"}, "bmse_bni": {"bmse"}, "amp": {"l1", "conr"},
    "all_together": {"l1", "ranksim", "conr", "srl_contrastive", "srl_enveloping", "srl_homogeneity"},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_and_reports(method, data_dir, tmp_path):
    result = train(data_dir, tmp_path, method, *METHODS[method])
    run_dir = tmp_path / method
    saved = check_results(run_dir, result)
    checkpoint = torch.load(run_dir / "ckpt.pth.tar", weights_only=True)
    assert checkpoint["epoch"] == saved["args"]["epoch"]
    assert {"state_dict", "objective", "optimizer", "scheduler", "rng", "args", "trainer"} <= set(checkpoint)
    log = (run_dir / "training.log").read_text()
    assert logged_components(log) == COMPONENTS.get(method, {"l1"})
    # tensorboard: one train scalar per component per epoch, and the validation metrics of the best epoch.
    scalars = scalars_of_run(run_dir)
    epochs = saved["args"]["epoch"]
    for name in COMPONENTS.get(method, {"l1"}) | {"total"}:
        assert [step for step, _ in scalars[f"train/{name}"]] == list(range(epochs))
    best_step = saved["step"]
    logged_val = dict(scalars["val/all/l1"])[best_step]
    assert logged_val == pytest.approx(saved["val"]["all"]["l1"], rel=1e-6)      # float32 in the event file
    if "--fds" in METHODS[method]:
        # The statistics pass ran: the running means hold real feature means (non-negative: post-ReLU pooling).
        mean = checkpoint["state_dict"]["fds.running_mean"]
        assert mean.abs().sum() > 0 and (mean >= 0).all()
        assert checkpoint["state_dict"]["fds.epoch"].item() == 1
    if "--srl" in METHODS[method]:
        assert checkpoint["objective"]["srl.loss.points"].shape == (50, 8)
        assert checkpoint["objective"]["srl.surrogate.running_mean"].abs().sum() > 0
    if method == "bmse_bmc":
        assert checkpoint["objective"]["bmse.loss.noise_sigma"].item() != 1.0   # σ learned (own lr group)


def test_rrt_retrains_only_the_last_layer(data_dir, tmp_path):
    train(data_dir, tmp_path, "base")
    base = torch.load(tmp_path / "base" / "ckpt.best.pth.tar", weights_only=True)["state_dict"]
    train(data_dir, tmp_path, "rrt", "--retrain_fc", "--pretrained", str(tmp_path / "base" / "ckpt.best.pth.tar"),
          "--reweight", "sqrt_inv")
    rrt = torch.load(tmp_path / "rrt" / "ckpt.pth.tar", weights_only=True)["state_dict"]
    for key, value in base.items():
        if key.startswith("linear."):
            assert not torch.equal(value, rrt[key])
        elif "running" not in key and "num_batches" not in key:   # BN statistics still move in train mode
            assert torch.equal(value, rrt[key]), key


def test_evaluate_round_trip_and_module_prefix(data_dir, tmp_path, capsys):
    # Non-default shot thresholds: --evaluate must keep the checkpoint's, so the shots match results.json.
    result = train(data_dir, tmp_path, "run", "--many_shot_thr", "4", "--low_shot_thr", "2")
    assert result["test"]["many"]["count"] > 0 and result["test"]["few"]["count"] > 0
    best = tmp_path / "run" / "ckpt.best.pth.tar"
    metrics = agedb_main(["--evaluate", "--resume", str(best), "--data_dir", str(data_dir),
                                  "--workers", "0"])
    # Same checkpoint, same data: identical numbers (compared as JSON so that empty shots' NaN compare equal).
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert same(metrics, result["test"])
    assert same(json.loads((tmp_path / "run" / "eval.json").read_text())["test"], result["test"])
    # A DataParallel/DDP checkpoint (keys prefixed with `module.`) evaluates the same.
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["state_dict"] = {f"module.{k}": v for k, v in checkpoint["state_dict"].items()}
    wrapped = tmp_path / "wrapped" / "ckpt.pth.tar"
    checkpointing.save_checkpoint(checkpoint, wrapped)
    again = agedb_main(["--evaluate", "--resume", str(wrapped), "--data_dir", str(data_dir),
                                "--workers", "0"])
    assert same(again, result["test"])


@pytest.mark.parametrize("flags", [[], ["--fds", "--conr", "--srl", "--n_points", "20", "--embedding_dim", "8",
                                        "--bmse", "--imp", "bmc"]])
def test_resume_is_exact(flags, data_dir, tmp_path):
    full = train(data_dir, tmp_path, "full", "--epoch", "2", *flags)
    train(data_dir, tmp_path, "part", "--epoch", "1", *flags)
    resumed = agedb_main(["--resume", str(tmp_path / "part" / "ckpt.pth.tar"), "--epoch", "2",
                                  "--data_dir", str(data_dir), "--workers", "0"])
    assert json.dumps(resumed["test"], sort_keys=True) == json.dumps(full["test"], sort_keys=True)
    assert resumed["epoch"] == full["epoch"]


def error_of(argv) -> str:
    with pytest.raises(SystemExit) as info:
        agedb_main(argv)
    return str(info.value.code)


def test_bad_inputs_give_one_sentence(data_dir, tmp_path, capsys):
    base = ["--store_root", str(tmp_path), *TINY]
    message = error_of(["--data_dir", str(tmp_path / "nowhere"), "--store_name", "a", *base])
    assert "nowhere/agedb.csv does not exist" in message and "\n" not in message

    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    first_image = broken / (broken / "agedb.csv").read_text().splitlines()[1].split(",")[1]
    first_image.unlink()
    message = error_of(["--data_dir", str(broken), "--store_name", "b", *base])
    assert str(first_image) in message and "does not exist" in message

    corrupt = tmp_path / "corrupt"
    shutil.copytree(data_dir, corrupt)
    rows = (corrupt / "agedb.csv").read_text().splitlines()
    victim = corrupt / next(r.split(",")[1] for r in rows[1:] if r.endswith(",train"))
    victim.write_bytes(b"not a jpeg")
    message = error_of(["--data_dir", str(corrupt), "--store_name", "c", *base])
    assert str(victim) in message and "could not be read" in message

    train(data_dir, tmp_path, "exists")
    message = error_of(["--data_dir", str(data_dir), "--store_name", "exists", *base])
    assert "already exists" in message and "--overwrite" in message

    bad_ckpt = tmp_path / "bad.pth.tar"
    bad_ckpt.write_bytes(b"garbage")
    message = error_of(["--evaluate", "--resume", str(bad_ckpt), "--data_dir", str(data_dir)])
    assert "bad.pth.tar could not be read" in message

    message = error_of(["--data_dir", str(data_dir), "--store_name", "nan", *base, "--lr", "1e30", "--loss", "mse"])
    assert "non-finite" in message or "NaN" in message
    assert "epoch 0" in message and "step" in message and "checkpoint" in message

    message = error_of(["--data_dir", str(data_dir), "--store_name", "gai", *base, "--bmse", "--imp", "gai",
                        "--gmm", str(tmp_path / "missing.npz")])
    assert "missing.npz does not exist" in message


@pytest.mark.parametrize("argv, words", [
    (["--lds"], "--reweight"),
    (["--retrain_fc"], "--pretrained"),
    (["--evaluate"], "--resume"),
    (["--lds_ks", "4"], "odd"),
])
def test_incompatible_flags_fail_at_parse_time(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        agedb_main(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_train_py_runs_from_its_folder_only_where_the_package_is_installed(data_dir, tmp_path):
    """`cd imdb-wiki-dir && python train.py ...` with the venv's Python finds `common` through the editable install
    (no PYTHONPATH, no sys.path edit); a Python without the install gets one sentence pointing to `make venv`."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    argv = ["train.py", "--evaluate", "--resume", str(tmp_path / "none.pth.tar"), "--data_dir", str(data_dir)]
    done = subprocess.run([sys.executable, "-s", *argv], cwd=ROOT / "imdb-wiki-dir", env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1
    assert "none.pth.tar does not exist" in done.stderr
    assert "Traceback" not in done.stderr

    base = Path(sys.base_prefix) / "bin" / "python3"
    outside = subprocess.run([str(base), "-s", "-E", *argv], cwd=ROOT / "imdb-wiki-dir", env=env,
                             capture_output=True, text=True)
    assert outside.returncode == 1
    assert "make venv" in outside.stderr and "Traceback" not in outside.stderr


def test_report_table_and_plot(data_dir, tmp_path, capsys):
    from common.tools import report
    train(data_dir, tmp_path, "one")
    train(data_dir, tmp_path, "two", "--conr")
    report.main([str(tmp_path / "one"), str(tmp_path / "two"), "--plot", str(tmp_path / "report.png")])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| one") or line.startswith("| two")]
    assert len(rows) == 2
    saved = json.loads((tmp_path / "two" / "results.json").read_text())
    assert f"{saved['test']['all']['l1']:.3f}" in rows[1]
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_imdb_wiki_train_py_end_to_end(tmp_path):
    """The IMDB-WIKI-DIR script on its own synthetic data, as a user runs it (a subprocess in its folder)."""
    import subprocess
    data = tmp_path / "data"
    write_synthetic("imdb_wiki", data, n=200, img_size=16, seed=1)
    done = subprocess.run([sys.executable, "train.py", "--data_dir", str(data), "--store_root", str(tmp_path),
                           "--store_name", "imdb", *TINY], cwd=ROOT / "imdb-wiki-dir", capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = check_results(tmp_path / "imdb", None)
    assert saved["args"]["dataset"] == "imdb_wiki" and saved["args"]["lds_ks"] == 5


def test_conr_views_2_runs_two_forward_passes_per_step(data_dir, tmp_path, monkeypatch):
    """--conr_views 2: the regression, RankSim and ConR losses all read one pass over the two views."""
    from common.models.resnet import ResNetRegressor
    calls = []
    forward = ResNetRegressor.forward
    monkeypatch.setattr(ResNetRegressor, "forward", lambda self, x, *a, **k: calls.append(x.shape[0]) or
                        forward(self, x, *a, **k))
    train(data_dir, tmp_path, "three", "--conr")
    three = list(calls)
    calls.clear()
    train(data_dir, tmp_path, "two", "--conr", "--conr_views", "2", "--regularization_weight", "1")
    # Training steps: two calls (the image batch B = 64, then its 2B views) by default; one call of 2B with
    # --conr_views 2 (the first steps of the epoch, before any validation pass).
    assert three[:4] == [64, 128, 64, 128] and calls[:3] == [128, 128, 128]
    log = (tmp_path / "two" / "training.log").read_text()
    assert logged_components(log) == {"l1", "conr", "ranksim"}


def test_stats_from_training_updates_fds_without_a_second_pass(data_dir, tmp_path, monkeypatch):
    from common.models.resnet import ResNetRegressor
    calls = []
    forward = ResNetRegressor.forward
    monkeypatch.setattr(ResNetRegressor, "forward", lambda self, x, *a, **k: calls.append(self.training) or
                        forward(self, x, *a, **k))
    result = train(data_dir, tmp_path, "fromtrain", "--fds", "--srl", "--n_points", "20", "--embedding_dim", "8",
                   "--epoch", "2", "--stats_from_training")
    checkpoint = torch.load(tmp_path / "fromtrain" / "ckpt.pth.tar", weights_only=True)
    n_train = sum(1 for line in (data_dir / "agedb.csv").read_text().splitlines() if line.endswith(",train"))
    assert checkpoint["state_dict"]["fds.num_samples_tracked"].sum() == 2 * n_train     # both epochs' passes
    assert checkpoint["objective"]["srl.surrogate.running_mean"].abs().sum() > 0
    assert math.isfinite(result["test"]["all"]["l1"])
    # Train-mode forward passes: the training steps only (4 a epoch), no second pass over the training set.
    n_steps = -(-n_train // 64)
    assert sum(calls) == 2 * n_steps
