"""Faults a user meets (docs/bad-input.md): signals, checkpoints with non-finite weights, places that cannot be
written. Tiny synthetic AgeDB-DIR runs on CPU; the signals are sent to real processes."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from age_runs import agedb_main, error_of, run_args, synthetic_agedb
from common import checkpointing

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_agedb(tmp_path_factory.mktemp("agedb") / "data")


def as_in_a_terminal():
    """In the child before it starts: Ctrl-C's default action, as a shell in a terminal gives it. A test suite
    started in the background (``cmd &`` without job control, ``nohup``) ignores SIGINT, and a child inherits that,
    so Python would install no Ctrl-C handler and the run would go on to its end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum, name", [(signal.SIGINT, "Ctrl-C (SIGINT)"), (signal.SIGTERM, "SIGTERM")])
def test_a_signal_stops_the_run_with_one_line_and_the_resume_command(signum, name, data_dir, tmp_path):
    """Ctrl-C, or a scheduler's SIGTERM, after the first checkpoint: one line naming where the run stopped and the
    exact --resume command, no traceback; resuming it gives the uninterrupted run's numbers."""
    process = subprocess.Popen([sys.executable, "train.py", *run_args(data_dir, tmp_path, "stopped", "--epoch", "6")],
                               cwd=ROOT / "agedb-dir", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=as_in_a_terminal)
    checkpoint = tmp_path / "stopped" / "ckpt.pth.tar"
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)                       # into the next epoch
    process.send_signal(signum)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 1 and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: stopped by {name} at epoch ") and "\n" not in last
    assert last.endswith(f"is intact: continue with `python train.py --resume {checkpoint.resolve()}`.")
    assert (tmp_path / "stopped" / "training.log").read_text().strip().splitlines()[-1].endswith(last)
    assert not (tmp_path / "stopped" / "run.lock").exists()
    resumed = agedb_main(["--resume", str(checkpoint), "--data_dir", str(data_dir), "--workers", "0"])
    full = agedb_main(run_args(data_dir, tmp_path, "full", "--epoch", "6"))
    assert json.dumps(resumed["test"], sort_keys=True) == json.dumps(full["test"], sort_keys=True)


def test_evaluating_a_checkpoint_with_non_finite_weights_names_them(data_dir, tmp_path):
    agedb_main(run_args(data_dir, tmp_path, "run", "--epoch", "1"))
    checkpoint = torch.load(tmp_path / "run" / "ckpt.best.pth.tar", weights_only=False)
    checkpoint["state_dict"]["linear.weight"][0, 0] = float("nan")
    checkpoint["state_dict"]["linear.bias"][0] = float("inf")
    torch.save(checkpoint, tmp_path / "nan.pth.tar")
    message = error_of(["--evaluate", "--resume", str(tmp_path / "nan.pth.tar"), "--data_dir", str(data_dir),
                        "--workers", "0"])
    assert message == (f"error: checkpoint {tmp_path / 'nan.pth.tar'} holds non-finite weights (linear.weight, "
                       "linear.bias): the run that wrote it had diverged; evaluate an earlier checkpoint of that run.")


def test_a_store_root_that_cannot_hold_folders_is_one_sentence_before_training(data_dir, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    message = error_of(run_args(data_dir, tmp_path / "a_file" / "runs", "run", "--epoch", "1"))
    assert message.startswith(f"error: cannot write the run folder {tmp_path / 'a_file' / 'runs' / 'run'} (")
    assert message.endswith("pass a --store_root where this user can write.") and "\n" not in message


def test_evaluate_prints_the_metrics_even_when_eval_json_cannot_be_written(data_dir, tmp_path, capsys):
    result = agedb_main(run_args(data_dir, tmp_path, "run", "--epoch", "1"))
    (tmp_path / "run" / "eval.json").mkdir()          # in the way of the file, as a read-only folder would be
    capsys.readouterr()
    metrics = agedb_main(["--evaluate", "--resume", str(tmp_path / "run" / "ckpt.best.pth.tar"), "--workers", "0"])
    out, err = capsys.readouterr()
    assert json.dumps(metrics, sort_keys=True) == json.dumps(result["test"], sort_keys=True)
    assert "* test" in out and f"warning: could not write {tmp_path / 'run' / 'eval.json'}" in err
    assert checkpointing.non_finite_tensors(checkpointing.load_checkpoint(tmp_path / "run" / "ckpt.pth.tar")) == []


def test_fds_buckets_below_the_training_ages_are_said_once(data_dir, tmp_path):
    agedb_main(run_args(data_dir, tmp_path, "fds", "--epoch", "1", "--fds", "--bucket_num", "30"))
    log = (tmp_path / "fds" / "training.log").read_text()
    assert log.count("warning: --fds tracks ages 3–29 (--bucket_num 30); the training ages above, up to ") == 1
    assert "raise --bucket_num to" in log


def immutable(folder: Path) -> bool:
    """Make ``folder`` unwritable even for root (``chattr +i``, ext4); False where that is not possible."""
    import shutil
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def test_a_read_only_run_folder_is_one_sentence_on_resume_and_a_warning_on_evaluate(data_dir, tmp_path, capsys):
    result = agedb_main(run_args(data_dir, tmp_path, "run", "--epoch", "1"))
    run_dir = tmp_path / "run"
    if not immutable(run_dir):
        pytest.skip("chattr +i is not available here")
    try:
        message = error_of(["--resume", str(run_dir / "ckpt.pth.tar"), "--epoch", "2", "--data_dir", str(data_dir)])
        assert message.startswith(f"error: cannot write the run folder {run_dir} (") and "\n" not in message
        capsys.readouterr()
        metrics = agedb_main(["--evaluate", "--resume", str(run_dir / "ckpt.best.pth.tar"), "--workers", "0"])
        assert json.dumps(metrics, sort_keys=True) == json.dumps(result["test"], sort_keys=True)
        assert f"warning: could not write {run_dir / 'eval.json'}" in capsys.readouterr().err
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)])
