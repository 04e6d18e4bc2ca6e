"""Issue 27, "nothing lost, nothing silent", for ``python -m common.tools.sweep``.

Lost work: a second copy of a running sweep is refused (the first holds its store root), a run folder whose lock
is held is read as running, never as stopped, ``--overwrite`` never deletes a finished run unless it names it, and
``sweep.json`` updates merge. Flags: the sweep's own flags after ``--`` are refused, every planned command is parsed
by the benchmark's parser before anything runs or prints, and a record of a sweep that never started binds nothing.

The stand-in benchmark's ``train.py`` takes the real run-folder lock (``common.runtime.RunLock``) and, with
``--hold FILE``, keeps it until FILE exists: a run that is training, as long as the test needs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import runtime
from common.errors import RunError
from common.tools import sweep
from test_trainer import VectorTask, trainer

REPO = Path(__file__).resolve().parents[3]
HOLDING_TRAIN = '''
import argparse, json, pathlib, sys, time
import numpy as np
from common.errors import RunError
from common.runtime import RunLock
p = argparse.ArgumentParser()
for flag in ("--store_root", "--store_name", "--resume", "--hold"):
    p.add_argument(flag, default="")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--overwrite", nargs="?", const=True, default=False)
a = p.parse_args()
run = pathlib.Path(a.store_root) / a.store_name
run.mkdir(parents=True, exist_ok=True)
lock = RunLock(run)
try:
    lock.acquire()
except RunError as error:
    sys.exit(f"error: {error}")
try:
    (run / "training.log").write_text("started\\n")
    while a.hold and not pathlib.Path(a.hold).exists():
        time.sleep(0.05)
    test = {s: {"l1": 1.0 + a.seed, "mse": 1.0, "gmean": 1.0, "count": 2} for s in ("all", "many", "medium", "few")}
    np.savez(run / "test_predictions.npz", preds=np.array([1.0, 2.0 + a.seed]), labels=np.array([1.0, 2.0]),
             train_labels=np.array([1.0, 2.0]), many_shot_thr=1, low_shot_thr=0)
    (run / "results.json").write_text(json.dumps({"test": test, "args": {"seed": a.seed}}))
finally:
    lock.release()
'''


@pytest.fixture
def bench(tmp_path) -> Path:
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "train.py").write_text(HOLDING_TRAIN)
    return folder


def sweep_command(bench, root, *own, common=()):
    return [sys.executable, "-m", "common.tools.sweep", "--folder", str(bench), "--store_root", str(root),
            "--grid", "a=", "--seeds", "0", "1", *own, "--", *common]


def records(root: Path) -> dict:
    return json.loads((root / "sweep.json").read_text())["runs"]


# ---- lost work -------------------------------------------------------------------------------------------------
@pytest.mark.slow          # three Python processes that import torch: about 40 s on 2 busy cores
def test_a_second_copy_of_a_running_sweep_is_refused_and_the_first_loses_nothing(bench, tmp_path):
    root, go = tmp_path / "runs", tmp_path / "go"
    command = sweep_command(bench, root, common=("--hold", str(go)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock, deadline = root / "a_seed0" / "run.lock", time.time() + 120
        while not lock.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert lock.exists(), first.communicate()
        for extra in ((), ("--print",)):          # a second sweep, or a job array printed from the same root
            second = subprocess.run(sweep_command(bench, root, *extra, common=("--hold", str(go))), cwd=REPO,
                                    env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 1 and second.stdout == ""
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                f"error: --store_root {root} is in use by the sweep of process {first.pid} on ")
            assert "wait for it to end (the same command then continues what is left)" in lines[0]
        assert first.poll() is None and (root / "a_seed0" / "training.log").read_text() == "started\n"
        go.write_text("")
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    assert "a_seed0: new" in out and "a_seed1: new" in out and "| a | 0, 1 | 2 |" in out
    for seed in (0, 1):
        assert json.loads((root / f"a_seed{seed}" / "results.json").read_text())["test"]["all"]["l1"] == 1.0 + seed
    saved = records(root)
    assert set(saved) == {"a_seed0", "a_seed1"}
    assert [[(c["mode"], c["returncode"]) for c in saved[r]["invocations"]] for r in saved] == [[("new", 0)]] * 2
    assert not (root / "sweep.lock").exists()


def test_a_run_whose_lock_is_held_is_running_not_stopped(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "a_seed0").mkdir(parents=True)
    held = runtime.RunLock(root / "a_seed0")
    held.acquire()                                  # this process trains a_seed0 (a job of a job array)
    try:
        argv = ["--folder", str(bench), "--store_root", str(root), "--grid", "a=", "--seeds", "0", "1"]
        jobs = sweep.main([*argv, "--print"])
        captured = capsys.readouterr()
        assert [(j.run_dir.name, j.state) for j in jobs] == [("a_seed0", "running"), ("a_seed1", "new")]
        assert captured.out.splitlines() == [jobs[1].command(sys.executable)]
        assert f"note: a_seed0 is running (process {os.getpid()} on " in captured.err
        sweep.main(argv)
        out = capsys.readouterr().out
        assert f"a_seed0: running in process {os.getpid()} on " in out and "left to it" in out
        assert "1 run(s) still running elsewhere (a_seed0)" in out and "| a |" not in out
        assert (root / "a_seed1" / "results.json").is_file() and held.held
        assert sorted(p.name for p in (root / "a_seed0").iterdir()) == ["run.lock"]     # nothing of it touched
    finally:
        held.release()
    sweep.main(argv)                                 # once it has stopped, the sweep takes it on
    assert (root / "a_seed0" / "results.json").is_file() and "| a | 0, 1 | 2 |" in capsys.readouterr().out


def test_overwrite_deletes_a_finished_run_only_when_it_names_it(tmp_path):
    trainer(VectorTask(), tmp_path, epochs=1).fit()
    run_dir = tmp_path / "run"
    before = (run_dir / "results.json").read_text()
    for overwrite in (True, "other"):
        with pytest.raises(RunError, match="pass --overwrite run to replace it") as info:
            trainer(VectorTask(), tmp_path, epochs=1, overwrite=overwrite).fit()
        assert "\n" not in str(info.value)
        assert (run_dir / "results.json").read_text() == before and not (run_dir / "run.lock").exists()
    (run_dir / "results.json").unlink()                  # an unfinished run: a bare --overwrite reuses it
    trainer(VectorTask(), tmp_path, epochs=1, overwrite=True).fit()
    trainer(VectorTask(), tmp_path, epochs=1, overwrite="run").fit()      # named: replaced
    assert (run_dir / "results.json").is_file()


def test_fresh_replaces_a_finished_run_by_naming_it(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    argv = ["--folder", str(bench), "--store_root", str(root), "--grid", "a=", "--seeds", "0"]
    sweep.main(argv)
    jobs = sweep.main([*argv, "--fresh", "--print"])
    assert jobs[0].state == "replace" and jobs[0].argv()[-2:] == ["--overwrite", "a_seed0"]


def test_sweep_json_updates_merge_and_a_corrupt_record_is_refused(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    one, two = (sweep.plan(bench, {"a": []}, [0, 1], [], root)[k] for k in (0, 1))
    sweep.write_record(one)
    sweep.write_record(two, {"mode": "new", "wall_s": 1.0, "returncode": 0})
    sweep.write_record(one, {"mode": "new", "wall_s": 2.0, "returncode": 0})   # one's plan-time record is stale
    saved = records(root)
    assert [c["wall_s"] for c in saved["a_seed0"]["invocations"]] == [2.0]
    assert [c["wall_s"] for c in saved["a_seed1"]["invocations"]] == [1.0]
    (root / "sweep.json").write_text('{"runs": {"a_seed0": ')
    with pytest.raises(SystemExit) as info:
        sweep.main(["--folder", str(bench), "--store_root", str(root), "--grid", "a=", "--seeds", "0"])
    assert info.value.code == 2 and not (root / "a_seed0").exists()
    assert f"{root / 'sweep.json'} cannot be read as a sweep record" in capsys.readouterr().err
    assert (root / "sweep.json").read_text() == '{"runs": {"a_seed0": '


# ---- flags ---------------------------------------------------------------------------------------------------
def test_the_sweeps_own_flags_after_the_separator_are_refused(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    for misplaced in (["--print"], ["--fresh"], ["--seeds", "3"]):
        with pytest.raises(SystemExit) as info:
            sweep.main(["--folder", str(bench), "--store_root", str(root), "--grid", "a=", "--", *misplaced])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"error: {misplaced[0]} in the common flags (after --) is a flag of the " \
            "sweep itself, which would be passed to train.py there; put it before --" in err
    with pytest.raises(SystemExit):
        sweep.main(["--folder", str(bench), "--store_root", str(root), "--grid", "a=--print"])
    assert "--print in --grid a is a flag of the sweep itself" in capsys.readouterr().err
    assert not root.exists() or not any(root.iterdir())        # nothing ran, nothing was recorded


def test_a_planned_sweep_that_never_started_does_not_block_the_corrected_command(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    stale = {"flags": ["--print", "--seed", "0", "--store_root", str(root.resolve()), "--store_name", "a_seed0"],
             "invocations": [{"mode": "new", "wall_s": 0.1, "returncode": 2}]}
    (root / "sweep.json").write_text(json.dumps({"runs": {"a_seed0": stale}}))
    sweep.main(["--folder", str(bench), "--store_root", str(root), "--grid", "a=", "--seeds", "0"])
    saved = records(root)["a_seed0"]
    assert saved["flags"][0] == "--seed" and [c["returncode"] for c in saved["invocations"]] == [0]
    assert (root / "a_seed0" / "results.json").is_file()


@pytest.mark.parametrize("grid, words", [
    ("e=--epochs 3", "unrecognized arguments: --epochs 3"),
    ("l=--lds", "--lds smooths the re-weighting histogram: add --reweight inverse or --reweight sqrt_inv"),
])
def test_every_planned_command_is_parsed_by_the_benchmark_before_anything_runs_or_prints(tmp_path, capsys, grid,
                                                                                          words):
    root = tmp_path / "runs"
    for extra in (["--print"], []):
        with pytest.raises(SystemExit) as info:
            sweep.main(["--folder", "agedb-dir", "--store_root", str(root), f"--grid={grid}", "--seeds", "0", "1",
                        *extra, "--", "--data_dir", str(tmp_path / "nowhere"), "--workers", "0"])
        captured = capsys.readouterr()
        assert info.value.code == 2 and captured.out == ""
        name = grid.split("=")[0]
        assert f"error: agedb-dir/train.py refuses the flags of run {name}_seed0 ({words}): fix --grid {name} or " \
               "the flags after --; nothing has run or been recorded." in captured.err
        assert not (root / "sweep.json").exists() and not (root / f"{name}_seed0").exists()


def test_flags_the_benchmark_accepts_are_printed(tmp_path, capsys):
    root = tmp_path / "runs"
    jobs = sweep.main(["--folder", "agedb-dir", "--store_root", str(root), "--grid", "v=", "--grid",
                       "c=--conr -w 1", "--seeds", "0", "--print", "--", "--epoch", "2", "--workers", "0"])
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [job.command(sys.executable) for job in jobs] and captured.err == ""
