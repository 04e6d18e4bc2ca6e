"""Bad input and faults (docs/bad-input.md): each gives one clear sentence or correct behaviour, never a traceback
or a silent wrong result. Runs are one epoch of a 4-channel ResNet-18 on 16×16 synthetic AgeDB-DIR images."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from common import checkpointing
from common.tools import report
from common.errors import RunError
from common.synthetic import write_synthetic
from folders import ROOT, folder_main

pytestmark = pytest.mark.slow

agedb_main = folder_main("agedb-dir")
TINY = ["--model", "resnet18", "--width", "4", "--img_size", "16", "--batch_size", "64", "--workers", "0",
        "--print_freq", "100", "--epoch", "1", "--lr", "1e-2", "--stem", "cifar"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("agedb") / "data"
    write_synthetic("agedb", out, n=200, img_size=16, seed=1)
    return out


def error_of(argv) -> str:
    with pytest.raises(SystemExit) as info:
        agedb_main(argv)
    message = str(info.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


def run_args(data_dir, tmp_path, name, *flags):
    return ["--data_dir", str(data_dir), "--store_root", str(tmp_path), "--store_name", name, *TINY, *flags]


@pytest.mark.parametrize("bad, shown", [("500", "'500'"), ("abc", "'abc'"), ("", "''"), ("-3", "'-3'")])
def test_a_bad_age_names_the_file_the_row_and_the_range(bad, shown, data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    lines = (broken / "agedb.csv").read_text().splitlines()
    age, path, split = lines[5].split(",")
    lines[5] = f"{bad},{path},{split}"
    (broken / "agedb.csv").write_text("\n".join(lines) + "\n")
    message = error_of(run_args(broken, tmp_path, "bad_age"))
    assert f"{broken / 'agedb.csv'}, data row 5 (line 6): age {shown}" in message
    assert "allowed range 0–120" in message


def test_rrt_refuses_a_trunk_of_another_architecture_and_counts_what_it_loads(data_dir, tmp_path, capsys):
    agedb_main(run_args(data_dir, tmp_path, "r34", "--model", "resnet34"))
    agedb_main(run_args(data_dir, tmp_path, "r18"))
    rrt = ["--retrain_fc", "--reweight", "sqrt_inv", "--pretrained"]
    message = error_of(run_args(data_dir, tmp_path, "rrt34", *rrt, str(tmp_path / "r34" / "ckpt.best.pth.tar")))
    assert "does not fit --model resnet18" in message and "--model, --width" in message
    capsys.readouterr()
    agedb_main(run_args(data_dir, tmp_path, "rrt18", *rrt, str(tmp_path / "r18" / "ckpt.best.pth.tar")))
    own = len(torch.load(tmp_path / "r18" / "ckpt.pth.tar", weights_only=True)["state_dict"])
    assert f"loaded {own - 2} of the model's {own} tensors (the trunk)" in capsys.readouterr().out


def test_a_diverging_run_stops_with_a_sentence(data_dir, tmp_path):
    message = error_of(run_args(data_dir, tmp_path, "lr1e6", "--lr", "1e6", "--epoch", "3"))
    assert "diverged" in message and "lower --lr" in message


def test_a_run_that_learns_nothing_is_reported(data_dir, tmp_path, capsys):
    agedb_main(run_args(data_dir, tmp_path, "frozen", "--lr", "1e-12"))
    shown = capsys.readouterr()
    warning = "no better than predicting the training-label mean"
    # once on stderr (not again on stdout), and in the run's log file
    assert shown.err.count(warning) == 1 and warning not in shown.out
    assert (tmp_path / "frozen" / "training.log").read_text().count(warning) == 1


def test_disk_full_during_a_checkpoint_is_one_sentence_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth.tar"
    checkpointing.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunError, match=r"the disk holding .* is full \(the checkpoint needs about 4 MiB") as info:
        checkpointing.save_checkpoint({"state_dict": {"w": torch.zeros(2 ** 20)}}, path)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert not list(tmp_path.glob("*.tmp"))


def test_report_plot_folder_is_created_and_bad_results_are_named(data_dir, tmp_path, capsys):
    agedb_main(run_args(data_dir, tmp_path, "one"))
    report.main([str(tmp_path / "one"), "--plot", str(tmp_path / "new" / "folder" / "plot.png")])
    out = capsys.readouterr().out
    assert (tmp_path / "new" / "folder" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    # 200 images with the real thresholds (100 / 20): every label is few-shot, and the report says why.
    assert "every test label of one is few-shot" in out and "--many_shot_thr" in out
    results = tmp_path / "one" / "results.json"
    results.write_text(results.read_text()[:200])
    with pytest.raises(SystemExit, match="results.json is not valid JSON"):
        report.main([str(tmp_path / "one")])


def test_flag_errors_are_one_sentence_from_the_command_line(tmp_path):
    for argv, words in ((["--lr", "nan"], "not a finite number"), (["--ep", "3"], "unrecognized arguments: --ep"),
                        (["--bmse", "--loss", "huber"], "--bmse replaces")):
        done = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT / "agedb-dir", capture_output=True,
                              text=True)
        assert done.returncode == 2 and words in done.stderr
        assert done.stderr.count("\n") == 2 and "usage" not in done.stderr


def test_bmse_says_what_loss_does(data_dir, tmp_path, capsys):
    agedb_main(run_args(data_dir, tmp_path, "bmc", "--bmse", "--imp", "bmc"))
    assert "--bmse replaces the regression loss; --loss l1 only chooses the validation metric" in \
        capsys.readouterr().out


def test_a_csv_without_a_column_is_named(data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    text = (broken / "agedb.csv").read_text().replace("age,path,split", "years,path,split", 1)
    (broken / "agedb.csv").write_text(text)
    assert "lacks the column(s) age; expected age,path,split" in error_of(run_args(broken, tmp_path, "col"))


def test_srl_slots_below_the_training_ages(data_dir, tmp_path):
    message = error_of(run_args(data_dir, tmp_path, "srl", "--srl", "--srl_num_labels", "50"))
    assert "--srl_num_labels 50 is too small" in message and "raise it to" in message


def test_evaluating_a_checkpoint_of_another_model_names_the_flags(data_dir, tmp_path):
    agedb_main(run_args(data_dir, tmp_path, "plain"))
    checkpoint = torch.load(tmp_path / "plain" / "ckpt.best.pth.tar", weights_only=True)
    checkpoint["args"]["model"] = "resnet34"            # the flags say one model, the weights are another
    checkpointing.save_checkpoint(checkpoint, tmp_path / "odd" / "ckpt.pth.tar")
    message = error_of(["--evaluate", "--resume", str(tmp_path / "odd" / "ckpt.pth.tar"), "--data_dir",
                        str(data_dir), "--workers", "0"])
    assert "does not fit this model" in message and "--model" in message


def test_report_of_a_folder_without_results(tmp_path):
    with pytest.raises(SystemExit, match="results.json does not exist; pass run folders of finished"):
        report.main([str(tmp_path)])


def test_kill_minus_9_then_resume_gives_the_uninterrupted_numbers(data_dir, tmp_path):
    """A real SIGKILL in the middle of training: the last checkpoint resumes to the same test metrics."""
    import signal
    import time
    argv = run_args(data_dir, tmp_path, "killed", "--epoch", "4")
    process = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT / "agedb-dir",
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "ckpt.pth.tar"
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run ended before its first checkpoint"
    stopped_at = torch.load(checkpoint, weights_only=True)["epoch"]
    resumed = agedb_main(["--resume", str(checkpoint), "--data_dir", str(data_dir), "--workers", "0"])
    full = agedb_main(run_args(data_dir, tmp_path, "full", "--epoch", "4"))
    assert json.dumps(resumed["test"], sort_keys=True) == json.dumps(full["test"], sort_keys=True)
    assert 1 <= stopped_at <= 4
