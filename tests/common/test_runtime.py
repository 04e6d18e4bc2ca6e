"""Runs never overwrite each other: what --resume, --store_name, --overwrite and a second process do to which
folder (README "Run folders"). Tiny synthetic AgeDB-DIR runs on CPU; the lock is tested with two processes."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from age_runs import TINY, agedb_main, error_of, run_args, synthetic_agedb
from common import checkpointing
from common.synthetic import write_synthetic
from folders import folder_main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_agedb(tmp_path_factory.mktemp("agedb") / "data")


def train(data_dir, root, name, *flags):
    return agedb_main(run_args(data_dir, root, name, *flags))


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_with_a_new_store_name_branches_and_leaves_the_original_folder_alone(data_dir, tmp_path):
    full = train(data_dir, tmp_path, "full", "--epoch", "2")
    train(data_dir, tmp_path, "orig", "--epoch", "1")
    before = digests(tmp_path / "orig")
    branched = agedb_main(["--resume", str(tmp_path / "orig" / "ckpt.pth.tar"), "--store_root", str(tmp_path),
                           "--store_name", "branch", "--epoch", "2", "--data_dir", str(data_dir)])
    assert digests(tmp_path / "orig") == before                   # not one byte of the original run changed
    assert branched["run_dir"] == str(tmp_path / "branch")
    assert json.dumps(branched["test"], sort_keys=True) == json.dumps(full["test"], sort_keys=True)
    assert (tmp_path / "branch" / "results.json").is_file() and (tmp_path / "branch" / "ckpt.best.pth.tar").is_file()
    assert "a new run from" in (tmp_path / "branch" / "training.log").read_text()


def test_resume_refuses_a_flag_it_cannot_honour_and_applies_the_lr(data_dir, tmp_path):
    train(data_dir, tmp_path, "orig", "--epoch", "1")
    ckpt = str(tmp_path / "orig" / "ckpt.pth.tar")
    before = digests(tmp_path / "orig")
    for flags, words in ((["--conr"], "--conr cannot change on resume"),
                         (["--reweight", "inverse"], "--reweight cannot change on resume"),
                         (["--batch_size", "8"], "--batch_size cannot change on resume")):
        message = error_of(["--resume", ckpt, "--epoch", "2", *flags])
        assert words in message and "--pretrained" in message and "\n" not in message
    assert digests(tmp_path / "orig") == before
    agedb_main(["--resume", ckpt, "--epoch", "2", "--lr", "2e-3", "--data_dir", str(data_dir)])
    resumed = checkpointing.load_checkpoint(ckpt)
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-3)
    assert "--lr 0.002 (the checkpoint's was 0.01)" in (tmp_path / "orig" / "training.log").read_text()


def test_a_checkpoint_of_another_benchmark_is_refused(data_dir, tmp_path):
    train(data_dir, tmp_path, "age", "--epoch", "1")
    ckpt = tmp_path / "age" / "ckpt.pth.tar"
    checkpoint = torch.load(ckpt, weights_only=False)
    before = digests(tmp_path / "age")
    for source, argv in (("agedb-dir", ["--resume", str(ckpt)]), ("agedb-dir", ["--evaluate", "--resume", str(ckpt)])):
        with pytest.raises(SystemExit) as info:
            folder_main("imdb-wiki-dir")(argv + ["--data_dir", str(data_dir)])
        assert f"was trained by {source}/train.py, not imdb-wiki-dir/train.py; run it there" in str(info.value.code)
    # A checkpoint written before checkpoints named their benchmark: told by its flags.
    del checkpoint["benchmark"]
    torch.save(checkpoint, tmp_path / "old.pth.tar")
    with pytest.raises(SystemExit) as info:
        folder_main("nyud2-dir")(["--evaluate", "--resume", str(tmp_path / "old.pth.tar")])
    assert "was trained by agedb-dir/train.py, not nyud2-dir/train.py" in str(info.value.code)
    assert digests(tmp_path / "age") == before


def test_a_second_process_cannot_take_a_folder_in_use_and_a_stale_lock_is_taken_over(data_dir, tmp_path):
    argv = [sys.executable, "train.py", "--data_dir", str(data_dir), "--store_root", str(tmp_path), "--store_name",
            "busy", *TINY, "--epoch", "30", "--overwrite"]
    first = subprocess.Popen(argv, cwd=ROOT / "agedb-dir", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    lock = tmp_path / "busy" / "run.lock"
    try:
        deadline = time.time() + 120
        while not lock.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert lock.read_text().split()[0] == str(first.pid)
        second = subprocess.run(argv, cwd=ROOT / "agedb-dir", capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert f"run folder {tmp_path / 'busy'} is in use by process {first.pid} on" in second.stderr
        assert first.poll() is None                 # the first run was not disturbed
    finally:
        first.kill()
        first.wait()
    # The killed run left its lock; its process is gone, so the next run takes the folder over and says so.
    assert lock.exists()
    train(data_dir, tmp_path, "busy", "--epoch", "1", "--overwrite")
    log = (tmp_path / "busy" / "training.log").read_text()
    assert f"took over the stale lock {lock} of process {first.pid}" in log and not lock.exists()


def test_overwrite_clears_the_earlier_run_and_a_fatal_error_ends_the_log(data_dir, tmp_path):
    train(data_dir, tmp_path, "run", "--epoch", "1")
    assert (tmp_path / "run" / "results.json").is_file()
    (tmp_path / "elsewhere").mkdir()
    before = digests(tmp_path / "run")
    # A finished run is deleted only when --overwrite names it (issue 27: a bare --overwrite from a sweep that
    # thought the run had stopped deleted a run that had just finished).
    for overwrite in (["--overwrite"], ["--overwrite", "other"]):
        message = error_of(["--data_dir", str(data_dir), "--store_root", str(tmp_path), "--store_name", "run",
                            *overwrite, *TINY, "--epoch", "1"])
        assert "pass --overwrite run to replace it" in message and "\n" not in message
        assert digests(tmp_path / "run") == before and not (tmp_path / "run" / "run.lock").exists()
    message = error_of(["--data_dir", str(tmp_path / "elsewhere"), "--store_root", str(tmp_path), "--store_name",
                        "run", "--overwrite", "run", *TINY, "--epoch", "1"])
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert not names & {"results.json", "ckpt.pth.tar", "ckpt.best.pth.tar", "test_predictions.npz"}
    assert (tmp_path / "run" / "training.log").read_text().strip().splitlines()[-1].endswith(f"error: {message[7:]}")
    assert "agedb.csv does not exist" in message and not (tmp_path / "run" / "run.lock").exists()


def test_evaluate_reads_the_data_dir_it_was_trained_on(data_dir, tmp_path, monkeypatch):
    result = train(data_dir, tmp_path, "run", "--epoch", "1")
    monkeypatch.chdir(tmp_path)                   # ./data (the default --data_dir) does not exist here
    metrics = agedb_main(["--evaluate", "--resume", str(tmp_path / "run" / "ckpt.best.pth.tar"), "--workers", "0"])
    assert json.dumps(metrics, sort_keys=True) == json.dumps(result["test"], sort_keys=True)


def test_only_a_finite_checkpoint_is_called_the_last_good_one(tmp_path):
    from common.trainer import Trainer
    from test_trainer import VectorTask
    trainer = Trainer(VectorTask(), run_dir=tmp_path, epochs=1, batch_size=16)
    assert trainer._last_good_checkpoint() == "no checkpoint was written yet"
    state = {"linear.weight": torch.ones(2, 2)}
    checkpointing.save_checkpoint({"state_dict": state, "objective": {}}, tmp_path / "ckpt.pth.tar")
    assert trainer._last_good_checkpoint() == f"the last good checkpoint is {tmp_path / 'ckpt.pth.tar'}"
    state["linear.weight"][0, 1] = float("nan")
    checkpointing.save_checkpoint({"state_dict": state, "objective": {}}, tmp_path / "ckpt.pth.tar")
    assert "holds non-finite values too" in trainer._last_good_checkpoint()
    assert checkpointing.non_finite_tensors({"state_dict": state}) == ["state_dict.linear.weight"]


def test_the_custom_example_evaluates_with_the_runs_shot_thresholds(tmp_path):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.clip(x[:, 0] * 10 + 50, 0, 99)}).to_csv(
        tmp_path / "d.csv", index=False)
    base = [sys.executable, "examples/custom_regression.py", str(tmp_path / "d.csv"), "--store_root", str(tmp_path),
            "--device", "cpu"]
    subprocess.run(base + ["--epoch", "2", "--many_shot_thr", "7", "--low_shot_thr", "3"], cwd=ROOT, check=True,
                   capture_output=True)
    best = tmp_path / "custom" / "ckpt.best.pth.tar"
    subprocess.run(base + ["--evaluate", "--resume", str(best)], cwd=ROOT, check=True, capture_output=True)
    saved = json.loads((tmp_path / "custom" / "results.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "custom" / "eval.json").read_text())["test"]
    assert json.dumps(evaluated, sort_keys=True) == json.dumps(saved, sort_keys=True)
    assert os.path.getsize(best) > 0


def test_a_gai_prior_fitted_on_other_training_ages_is_refused(tmp_path):
    from common.gmm import fit_from_split_csv
    data = tmp_path / "data"
    write_synthetic("agedb", data, n=240, img_size=16, seed=3)
    fit_from_split_csv(data / "agedb.csv", 4, data / "gmm.npz")
    train(data, tmp_path, "gai", "--epoch", "1", "--bmse", "--imp", "gai")          # the prior fits: it trains
    write_synthetic("agedb", data, n=200, img_size=16, seed=4)                          # the data are re-generated
    message = error_of(["--data_dir", str(data), "--store_root", str(tmp_path), "--store_name", "stale", *TINY,
                        "--epoch", "1", "--bmse", "--imp", "gai"])
    assert message == (f"error: GMM file {data / 'gmm.npz'} was not fitted on this run's training ages (agedb.csv) "
                       "(the data changed since it was written); re-create it with `python data/preprocess_gmm.py "
                       f"--data_dir {data}`.")
