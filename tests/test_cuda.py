"""On a CUDA GPU (skipped without one): checkpoints move between devices, bf16 training stays finite.

The per-loss CUDA-against-CPU checks live beside each loss's tests (marked ``cuda``). Without a GPU, only the
prepared check script's own behaviour is tested here: it says so and exits 0.
"""
import json
import math
import subprocess

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
                          text=True, timeout=120)
    assert done.returncode == 0 and "no CUDA GPU visible" in done.stdout
