"""Several processes (gloo on CPU): gathered regularisers, FDS statistics, sharded evaluation, torchrun resume.

Each test starts 2 processes; they agree with one process on the concatenated data to float tolerance.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import checkpointing, distributed
from common.fds import FDS
from common.models.mlp import MLPRegressor
from common.objective import objective_from_flags
from common.synthetic import write_synthetic
from common.trainer import Trainer
from folders import ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.randperm(40, generator=g)[:n].float().reshape(-1, 1)       # distinct labels: no RankSim sampling
    return {"input": x, "target": y, "weight": torch.rand(n, 1, generator=g) + 0.5}


def one_step(share, gather: bool):
    """One SGD step of MLP + L1 + RankSim + ConR + SRL on ``share``; the losses and the parameters after it."""
    torch.manual_seed(0)
    model = MLPRegressor(5, hidden=16)
    objective = objective_from_flags(loss="l1", regularization_weight=2.0, interpolation_lambda=2.0, conr=True,
                                     conr_beta=0.5, conr_window=2.0, srl=True, w1=1.0, w2=1.0, w3=1.0,
                                     srl_num_labels=40, embedding_dim=16, n_points=20, temperature=0.3,
                                     gather_features=gather)
    # SRL projects the encoding itself here (the MLP has no projector): an identity projection.
    forward = model.forward
    model.forward = lambda x, t=None, e=0, smooth=True: {**forward(x, t, e), "projection": forward(x, t, e)["encoding"]}
    optimizer = torch.optim.SGD(list(model.parameters()) + list(objective.parameters()), lr=0.1)
    components = objective(model, share, 0)
    sum(components.values()).backward()
    distributed.average_gradients(list(model.parameters()) + list(objective.parameters()))
    optimizer.step()
    return {k: v.item() for k, v in components.items()}, [p.detach().clone() for p in model.parameters()]


def _step_worker(rank, world, port, out):
    join(rank, world, port)
    full = batch()
    share = {k: v[rank * 4:(rank + 1) * 4] for k, v in full.items()}
    losses, params = one_step(share, gather=True)
    torch.save({"losses": losses, "params": params}, f"{out}/rank{rank}.pt")
    distributed.shutdown()


def test_gathered_step_equals_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_step_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    losses, params = one_step(batch(), gather=False)
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in ("ranksim", "conr", "srl_contrastive", "srl_enveloping", "srl_homogeneity"):
            assert saved["losses"][name] == pytest.approx(losses[name], rel=1e-5, abs=1e-6), name
        for mine, single in zip(saved["params"], params):
            torch.testing.assert_close(mine, single, rtol=1e-5, atol=1e-6)


def _fds_worker(rank, world, port, out):
    join(rank, world, port)
    g = torch.Generator().manual_seed(rank)
    features, labels = torch.rand(10 + rank, 3, generator=g).double(), torch.randint(3, 12, (10 + rank,),
                                                                                  generator=g).double()
    fds = FDS(3, bucket_num=14, bucket_start=3, ks=3, sigma=1).double()
    for epoch in range(2):
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(distributed.gather_cat(features * (epoch + 1)), distributed.gather_cat(labels), epoch)
    streamed = FDS(3, bucket_num=14, bucket_start=3, ks=3, sigma=1, edge_rule="clamp").double()
    moments = streamed.statistics()
    moments.add(features, labels)
    moments.all_reduce()
    moments.commit(0)
    torch.save({"fds": fds.state_dict(), "streamed": streamed.state_dict()}, f"{out}/fds{rank}.pt")
    distributed.shutdown()


def test_fds_statistics_are_identical_on_every_process_and_equal_one_process(tmp_path):
    mp.spawn(_fds_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = []
    for rank in (0, 1):
        g = torch.Generator().manual_seed(rank)
        parts.append((torch.rand(10 + rank, 3, generator=g).double(),
                      torch.randint(3, 12, (10 + rank,), generator=g).double()))
    features, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    single = FDS(3, bucket_num=14, bucket_start=3, ks=3, sigma=1).double()
    for epoch in range(2):
        single.update_last_epoch_stats(epoch)
        single.update_running_stats(features * (epoch + 1), labels, epoch)
    streamed = FDS(3, bucket_num=14, bucket_start=3, ks=3, sigma=1, edge_rule="clamp").double()
    streamed.update_last_epoch_stats(0)
    streamed.update_running_stats(features, labels, 0)
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"fds{rank}.pt", weights_only=True)
        for key, value in single.state_dict().items():
            assert torch.equal(saved["fds"][key], value), key
        for key, value in streamed.state_dict().items():
            torch.testing.assert_close(saved["streamed"][key], value, rtol=1e-10, atol=1e-12)


def _fit_worker(rank, world, port, out):
    join(rank, world, port)
    from test_trainer import VectorTask
    Trainer(VectorTask(n_train=64), run_dir=f"{out}/run", epochs=2, batch_size=16, seed=3, print_freq=100).fit()
    distributed.shutdown()


def test_two_process_results_equal_one_process_evaluation(tmp_path):
    mp.spawn(_fit_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    from test_trainer import VectorTask
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    log = (tmp_path / "run" / "training.log").read_text()
    assert "processes 2 (global batch 16 = 2 × 8)" in log
    metrics = Trainer(VectorTask(), run_dir=tmp_path / "eval", epochs=1, batch_size=16).evaluate(
        tmp_path / "run" / "ckpt.best.pth.tar")
    assert json.dumps(metrics) == json.dumps(saved["test"])


def torchrun(args, port):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "train.py", *args], cwd=ROOT / "agedb-dir", capture_output=True, text=True)


def test_torchrun_training_resumes_exactly(tmp_path):
    data = tmp_path / "data"
    write_synthetic("agedb", data, n=130, img_size=16, seed=2)
    tiny = ["--data_dir", str(data), "--store_root", str(tmp_path), "--model", "resnet18", "--width", "4",
            "--img_size", "16", "--stem", "cifar", "--batch_size", "32", "--workers", "0", "--print_freq", "100",
            "--lr", "1e-2", "--conr", "--fds", "--gather_features"]
    done = torchrun([*tiny, "--store_name", "full", "--epoch", "2"], free_port())
    assert done.returncode == 0, done.stderr[-2000:]
    done = torchrun([*tiny, "--store_name", "part", "--epoch", "1"], free_port())
    assert done.returncode == 0, done.stderr[-2000:]
    done = torchrun(["--resume", str(tmp_path / "part" / "ckpt.pth.tar"), "--epoch", "2", "--data_dir", str(data),
                     "--workers", "0"], free_port())
    assert done.returncode == 0, done.stderr[-2000:]
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    resumed = json.loads((tmp_path / "part" / "results.json").read_text())
    assert json.dumps(full["test"], sort_keys=True) == json.dumps(resumed["test"], sort_keys=True)
    # One log, written by rank 0; a checkpoint of the 2-process run loads in one process.
    assert (tmp_path / "full" / "training.log").read_text().count("test of the best checkpoint") == 1
    state = checkpointing.load_checkpoint(tmp_path / "full" / "ckpt.best.pth.tar")["state_dict"]
    assert np.isfinite(state["linear.weight"].numpy()).all()
