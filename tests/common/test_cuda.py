"""On a CUDA GPU (skipped without one): checkpoints move between devices, bf16 training stays finite.

The per-loss CUDA-against-CPU checks live beside each loss's tests (marked ``cuda``). Without a GPU, the prepared
check script is tested here: it says so and exits 0, and its dry run (every section on the CPU at toy sizes)
writes every figure into its report.
"""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from common.trainer import Trainer
from folders import ROOT

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
def test_a_checkpoint_saved_on_cuda_evaluates_on_cpu(tmp_path):
    from test_trainer import VectorTask
    cuda = Trainer(VectorTask(), run_dir=tmp_path / "run", epochs=2, batch_size=16, device=torch.device("cuda"))
    result = cuda.fit()
    cpu = Trainer(VectorTask(), run_dir=tmp_path / "eval", epochs=1, batch_size=16, device=torch.device("cpu"))
    metrics = cpu.evaluate(tmp_path / "run" / "ckpt.best.pth.tar")
    assert metrics["all"]["mse"] == pytest.approx(result["test"]["all"]["mse"], rel=1e-5)
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["test"] == json.loads(json.dumps(metrics))


@pytest.mark.cuda
@needs_cuda
def test_bf16_training_steps_stay_finite_on_cuda(tmp_path):
    from test_trainer import PixelTask
    result = Trainer(PixelTask(), run_dir=tmp_path / "bf16", epochs=2, batch_size=4, device=torch.device("cuda"),
                     amp_dtype=torch.bfloat16).fit()
    assert math.isfinite(result["test"]["rmse"])


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run its checks")
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--out", "/dev/null"], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHON": sys.executable}, text=True, timeout=120)
    assert done.returncode == 0 and "no CUDA GPU visible" in done.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_reports_every_figure(tmp_path):
    spec = importlib.util.spec_from_file_location("train_step", ROOT / "benchmarks" / "train_step.py")
    train_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_step)
    report = tmp_path / "report.txt"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry_run", "--out", str(report)], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    header, *sections = report.read_text().split("\n## ")
    assert "(dry run on the CPU)" in header and f"torch {torch.__version__} " in header
    titles = [section.split("\n", 1)[0] for section in sections]
    assert [title.split(" ", 2)[:2] for title in titles] == [["CUDA", "tests"], ["loss", "benchmark"],
                                                             ["training", "step"], ["statistics", "pass"],
                                                             ["bf16", "vs"], ["synthetic", "AgeDB-DIR:"]]
    cuda_tests, losses, steps, statistics, bf16, run = (section.split("\n", 1)[1] for section in sections)
    assert re.search(r"\b\d+ skipped, \d+ deselected", cuda_tests) and "error" not in cuda_tests.lower()
    for operation in ("ConR (M=512", "FDS smooth", "FDS update_running_stats", "RankSim (B=256", "BMC (N=256)"):
        assert re.search(rf"^\| {re.escape(operation)}[^|]*\| \d+\.\d+ \|", losses, re.M), operation
    for label, _ in train_step.VARIANTS.values():
        assert re.search(rf"^\| {re.escape(label)} \| \d+\.\d \| \d+\.\d\d× \| \d+\.\d\d× \|$", steps, re.M), label
    assert re.search(r"^\| vanilla \| [\d.]+ \| 1\.00× \| [\d.]+× \|$", steps, re.M)
    # the loop's overhead: vanilla's training-loop step against the same step in a bare PyTorch loop
    bare = re.search(r"^\| bare loop [^|]*\| ([\d.]+) \| ([\d.]+)× \| 1\.00× \|$", steps, re.M)
    vanilla = re.search(r"^\| vanilla \| ([\d.]+) \| 1\.00× \| ([\d.]+)× \|$", steps, re.M)
    assert bare and vanilla and float(vanilla[2]) == pytest.approx(float(bare[1]) / float(vanilla[1]), rel=0.05)
    assert re.search(r"^HDF5 / JPEG: \d+\.\d\d×$", steps, re.M)
    # the statistics pass's share of the epoch: FDS with the second pass, and from the training features
    vanilla_epoch = re.search(r"^\| vanilla \| — \| — \| ([\d.]+) \| 1\.00× \|$", statistics, re.M)
    assert vanilla_epoch, statistics
    for collect in ("second pass", "--stats_from_training"):
        row = re.search(rf"^\| FDS \| {collect} \| ([\d.]+) % \| ([\d.]+) \| ([\d.]+)× \|$", statistics, re.M)
        assert row and 0 < float(row[1]) < 100, collect
        assert float(row[3]) == pytest.approx(float(row[2]) / float(vanilla_epoch[1]), rel=0.05, abs=0.01)
    times = re.search(r"float32 ([\d.]+) ms/step, bf16 ([\d.]+) ms/step, speed-up ([\d.]+)x", bf16)
    assert times and float(times[3]) == pytest.approx(float(times[1]) / float(times[2]), abs=0.01)
    assert "(finite: True)" in bf16
    all_row = re.search(r"^ +all +([\d.]+) +([\d.]+) +([\d.]+) +(\d+)$", run, re.M)
    assert all_row and int(all_row[4]) > 0 and all(math.isfinite(float(v)) for v in all_row.groups()[:3])
    assert re.search(r"^wall: \d+ s$", run, re.M)
    assert not list(tmp_path.glob("gpu_check_dry_*"))        # its data and runs are removed
