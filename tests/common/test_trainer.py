"""The shared trainer with small fake tasks: vector, per-pixel (B,1,H,W) and token batches.

Nothing here knows about ages or images: these tasks are what a new benchmark would plug in.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from common import checkpointing
from common.bins import LabelBins
from common.errors import RunError
from common.fds import FDS
from common.trainer import Task, Trainer
from tb_events import scalars_of_run


# -- a vector task ---------------------------------------------------------------------------------------------
class VectorData(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 5).unsqueeze(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input": self.x[i], "target": self.y[i], "weight": torch.ones(1)}


class VectorModel(nn.Module):
    def __init__(self, dropout=0.0, batch_norm=False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8) if batch_norm else nn.Identity(), nn.ReLU(),
                                  nn.Dropout(dropout))
        self.head = nn.Linear(8, 1)

    def forward(self, x, targets=None, smooth=True):
        encoding = self.body(x)
        return {"encoding": encoding, "pred": self.head(encoding)}


class MSEObjective(nn.Module):
    def forward(self, model, batch, epoch):
        out = model(batch["input"], batch["target"])
        return {"mse": ((out["pred"] - batch["target"]) ** 2).mean()}


class VectorTask(Task):
    selection_name = "val mse"

    def __init__(self, n_train=64, dropout=0.0, batch_norm=False, scores=None, lr=1e-2):
        self.n_train, self.dropout, self.batch_norm, self.scores, self.lr = n_train, dropout, batch_norm, scores, lr
        self.validations = 0

    def datasets(self):
        return {"train": VectorData(self.n_train, 0), "val": VectorData(16, 1), "test": VectorData(16, 2)}

    def build_model(self):
        return VectorModel(self.dropout, self.batch_norm)

    def build_objective(self):
        return MSEObjective()

    def build_optimizer(self, model, objective):
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)

    def predict(self, model, batch):
        return model(batch["input"])["pred"].reshape(-1), batch["target"].reshape(-1)

    def metrics(self, preds, labels):
        return {"all": {"mse": float(np.mean((preds - labels) ** 2)), "count": int(len(labels))}}

    def selection_score(self, preds, labels, metrics):
        if self.scores is None:
            return metrics["all"]["mse"]
        self.validations += 1
        return self.scores[self.validations - 1]


def trainer(task, tmp_path, name="run", **kw):
    settings = dict(run_dir=tmp_path / name, epochs=3, batch_size=16, seed=1, print_freq=100)
    settings.update(kw)
    return Trainer(task, **settings)


def test_epoch_validation_selects_and_tests_the_best_checkpoint(tmp_path):
    task = VectorTask()
    result = trainer(task, tmp_path).fit()
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "results.json").read_text())
    log = (run_dir / "training.log").read_text()
    # One validation per epoch, scores logged; the best is the lowest.
    scores = [float(line.split("val mse ")[1].split()[0]) for line in log.splitlines() if ": val mse " in line]
    assert len(scores) == 3 and saved["epoch"] == int(np.argmin(scores))
    # The test metrics are those of the best checkpoint's model.
    best = checkpointing.load_checkpoint(run_dir / "ckpt.best.pth.tar")
    model = VectorModel()
    model.load_state_dict(best["state_dict"])
    data = VectorData(16, 2)
    with torch.no_grad():
        preds = model(data.x)["pred"].reshape(-1).numpy()
    assert saved["test"]["all"]["mse"] == pytest.approx(float(np.mean((preds - data.y.reshape(-1).numpy()) ** 2)),
                                                        rel=1e-6)
    assert result["test"] == saved["test"]
    # What the trainer writes to tensorboard: the epoch's mean loss and the validation metrics.
    scalars = scalars_of_run(run_dir)
    assert [step for step, _ in scalars["train/mse"]] == [0, 1, 2]
    assert [step for step, _ in scalars["val/all/mse"]] == [4, 8, 12]      # global steps: 64 / 16 per epoch
    assert [round(v, 4) for _, v in scalars["val/all/mse"]] == pytest.approx(scores, abs=1e-4)
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([1e-2, 5e-3, 5e-3])


def test_iteration_validation_with_patience_stops_where_it_should(tmp_path):
    # Scores of successive validations: best at the 2nd, then 3 worse ones → patience 3 stops at the 5th.
    task = VectorTask(scores=[5.0, 4.0, 4.5, 4.6, 4.7, 1.0, 1.0])
    result = trainer(task, tmp_path, epochs=10, val_interval=3, patience=3).fit()
    assert task.validations == 5
    assert (result["step"], result["epoch"]) == (6, 1)      # 2nd validation at global step 6, in epoch 1 (4/epoch)
    checkpoint = checkpointing.load_checkpoint(tmp_path / "run" / "ckpt.pth.tar")
    assert checkpoint["trainer"]["global_step"] == 15 and checkpoint["trainer"]["bad_vals"] == 3
    assert (checkpoint["epoch"], checkpoint["trainer"]["next_step"]) == (3, 3)    # stopped after step 15 = 3·4+3
    assert "early stop" in (tmp_path / "run" / "training.log").read_text()


def test_max_vals_stops(tmp_path):
    task = VectorTask(scores=[3.0, 2.0, 1.0, 0.5, 0.1])
    result = trainer(task, tmp_path, epochs=10, val_interval=2, max_vals=3).fit()
    assert task.validations == 3 and result["step"] == 6


def test_mid_epoch_resume_is_exact(tmp_path):
    """Stop at a validation inside an epoch (max_vals), resume from there: the same numbers as one run.

    Dropout draws from the global RNG, so this holds only if the sample order and the RNG streams continue."""
    full = trainer(VectorTask(dropout=0.3), tmp_path, "full", epochs=3, val_interval=3).fit()
    trainer(VectorTask(dropout=0.3), tmp_path, "part", epochs=3, val_interval=3, max_vals=2).fit()
    part = checkpointing.load_checkpoint(tmp_path / "part" / "ckpt.pth.tar")
    assert (part["epoch"], part["trainer"]["next_step"]) == (1, 2)         # step 6 = epoch 1, after its 2nd batch
    resumed = trainer(VectorTask(dropout=0.3), tmp_path, epochs=3, val_interval=3,
                      resume=tmp_path / "part" / "ckpt.pth.tar").fit()
    assert json.dumps(resumed["test"]) == json.dumps(full["test"])
    assert (resumed["epoch"], resumed["step"]) == (full["epoch"], full["step"])
    a = checkpointing.load_checkpoint(tmp_path / "full" / "ckpt.pth.tar")["state_dict"]
    b = checkpointing.load_checkpoint(tmp_path / "part" / "ckpt.pth.tar")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_last_batch_of_one_is_skipped_not_fatal(tmp_path):
    """33 samples with batch 16 leave a batch of one, which BatchNorm cannot train on: skipped and said once."""
    trainer(VectorTask(n_train=33, batch_norm=True), tmp_path, epochs=1).fit()
    log = (tmp_path / "run" / "training.log").read_text()
    assert log.count("leaves a last batch of one") == 1


def test_only_non_finite_errors_are_called_divergence(tmp_path):
    class Broken(MSEObjective):
        def forward(self, model, batch, epoch):
            raise ValueError("Expected more than 1 value per channel when training")

    task = VectorTask()
    task.build_objective = Broken
    with pytest.raises(ValueError, match="Expected more than 1 value"):
        trainer(task, tmp_path).fit()

    task = VectorTask(lr=1e30)
    with pytest.raises(RunError, match="non-finite at epoch 0"):
        trainer(task, tmp_path, "diverged", overwrite=True).fit()


def test_a_non_finite_step_between_printing_steps_is_named_and_never_checkpointed(tmp_path):
    """The loop reads the loss only on printing steps and before checkpoints; a NaN at epoch 1, step 0 (of 4, printing
    every 3) is still named, and no checkpoint after epoch 0's holds the model it poisoned."""
    class NaNAt(MSEObjective):
        calls = 0

        def forward(self, model, batch, epoch):
            loss = super().forward(model, batch, epoch)
            NaNAt.calls += 1
            return {"mse": loss["mse"], "spike": torch.tensor(math.nan if NaNAt.calls == 4 + 1 else 0.0)}

    task = VectorTask()
    task.build_objective = NaNAt
    run = trainer(task, tmp_path, epochs=3, print_freq=3)
    with pytest.raises(RunError) as raised:
        run.fit()
    message = str(raised.value)
    assert message.startswith("the spike loss became non-finite at epoch 1, step 0; training stopped and the last "
                              f"good checkpoint is {tmp_path / 'run' / 'ckpt.pth.tar'}")
    saved = checkpointing.load_checkpoint(tmp_path / "run" / "ckpt.pth.tar")
    assert saved["epoch"] == 1 and not checkpointing.non_finite_tensors(saved)


def test_divergence_is_recognised_by_its_exception_type_not_its_wording(tmp_path):
    """A loss's NonFiniteError ends the run with one sentence; a plain ValueError that happens to say "NaN or
    infinite" (a bug elsewhere) keeps its traceback."""
    from common.checks import check_finite
    from common.errors import NonFiniteError

    class Reporting(MSEObjective):
        def forward(self, model, batch, epoch):
            # The value checks are off inside the step (the loop's health record replaces them); a NonFiniteError
            # raised by a loss all the same ends the run with its sentence.
            try:
                check_finite("loss", "features", torch.full((2, 2), float("nan")))
            except NonFiniteError:
                raise
            raise NonFiniteError("loss: `features` (shape (2, 2), dtype torch.float32) contains NaN or infinite "
                                 "values.")

    class Worded(MSEObjective):
        def forward(self, model, batch, epoch):
            raise ValueError("a lookup table holds NaN or infinite values")

    with pytest.raises(NonFiniteError):
        Reporting()(None, None, 0)
    task = VectorTask()
    task.build_objective = Reporting
    with pytest.raises(RunError, match=r"training stopped at epoch 0, step 0: loss: `features` .* NaN or infinite"):
        trainer(task, tmp_path).fit()
    task.build_objective = Worded
    with pytest.raises(ValueError, match="a lookup table") as raised:
        trainer(task, tmp_path, "worded").fit()
    assert not isinstance(raised.value, RunError)


def test_run_folder_rules(tmp_path):
    trainer(VectorTask(), tmp_path, epochs=1).fit()
    with pytest.raises(RunError, match="--overwrite to reuse it, --resume"):
        trainer(VectorTask(), tmp_path, epochs=1).fit()
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "training.log").write_text("an earlier start that died\n")
    (failed / "ckpt.pth.tar.abc.tmp").write_bytes(b"partial")
    with pytest.raises(RunError, match="holds no checkpoint") as info:
        trainer(VectorTask(), tmp_path, "failed", epochs=1).fit()
    assert "--resume" not in str(info.value)
    trainer(VectorTask(), tmp_path, "failed", epochs=1, overwrite=True).fit()
    assert not list(failed.glob("*.tmp"))                 # a stale temporary checkpoint is cleaned at start


# -- per-pixel labels (B, 1, H, W) with per-pixel FDS ---------------------------------------------------------------
class PixelData(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.depth = 0.5 + 9 * torch.rand(n, 1, 6, 8, generator=g)
        self.image = torch.cat([self.depth / 10, torch.rand(n, 2, 6, 8, generator=g)], 1)

    def __len__(self):
        return len(self.depth)

    def __getitem__(self, i):
        return {"input": self.image[i], "target": self.depth[i]}


class PixelModel(nn.Module):
    def __init__(self, fds):
        super().__init__()
        self.features, self.fds, self.head = nn.Conv2d(3, 4, 3, padding=1), fds, nn.Conv2d(4, 1, 1)

    def forward(self, x, targets=None, smooth=True):
        features = torch.relu(self.features(x))
        if self.training and smooth and targets is not None:
            features = self.fds.smooth(features, targets)
        return {"encoding": features, "pred": self.head(features)}


DEPTH = LabelBins(0, 0.1, 100)


class PixelTask(Task):
    selection_name = "val rmse"

    def datasets(self):
        return {"train": PixelData(24, 0), "val": PixelData(8, 1), "test": PixelData(8, 2), "stats": PixelData(6, 3)}

    def build_model(self):
        return PixelModel(FDS(4, bucket_num=100, bucket_start=7, ks=5, sigma=2, bins=DEPTH, edge_rule="clamp",
                              clip_min=0.2, clip_max=5))

    def build_objective(self):
        return MSEObjective()

    def build_optimizer(self, model, objective):
        return torch.optim.Adam(model.parameters(), 1e-2), None

    @torch.no_grad()
    def statistics_pass(self, model, objective, batches, epoch):
        model.train()
        features, depths = zip(*[(model(b["input"], b["target"], smooth=False)["encoding"], b["target"])
                                 for b in batches])
        model.fds.update_last_epoch_stats(epoch)
        model.fds.update_running_stats(torch.cat(features), torch.cat(depths), epoch)

    def predict(self, model, batch):
        return model(batch["input"])["pred"].reshape(-1), batch["target"].reshape(-1)

    def metrics(self, preds, labels):
        return {"rmse": float(np.sqrt(np.mean((preds - labels) ** 2)))}

    def selection_score(self, preds, labels, metrics):
        return metrics["rmse"]


def test_per_pixel_task_collects_fds_statistics_per_pixel(tmp_path):
    result = trainer(PixelTask(), tmp_path, epochs=2, batch_size=4).fit()
    assert math.isfinite(result["test"]["rmse"])
    # The statistics of the last epoch (momentum 0.9 over two epochs) against a loop over pixels: recompute the
    # per-bucket means of epoch 1 with the final model on the 'stats' split, fold in epoch 0's from the buffers.
    checkpoint = checkpointing.load_checkpoint(tmp_path / "run" / "ckpt.pth.tar")
    model = PixelTask().build_model()
    model.load_state_dict(checkpoint["state_dict"])
    data = PixelData(6, 3)
    with torch.no_grad():
        features = torch.relu(model.features(data.image))                       # (6, 4, 6, 8)
    sums, counts = {}, {}
    for b in range(6):
        for i in range(6):
            for j in range(8):
                bucket = min(max(int(float(data.depth[b, 0, i, j]) * 10), 7), 99) - 7
                sums[bucket] = sums.get(bucket, 0) + features[b, :, i, j].double()
                counts[bucket] = counts.get(bucket, 0) + 1
    previous = model.fds.running_mean_last_epoch            # epoch 0's running mean, copied before epoch 1's update
    for bucket, total in sums.items():
        expected = 0.1 * total / counts[bucket] + 0.9 * previous[bucket].double()
        torch.testing.assert_close(model.fds.running_mean[bucket].double(), expected, rtol=1e-5, atol=1e-6)
    assert int(model.fds.num_samples_tracked.sum()) == 2 * 6 * 6 * 8


# -- token batches ---------------------------------------------------------------------------------------------
class Sentences(Dataset):
    """Variable-length token sequences; the label is the mean token id / 10."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.tokens = [torch.from_numpy(rng.integers(1, 20, rng.integers(2, 9))) for _ in range(n)]

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"input": self.tokens[i], "target": self.tokens[i].float().mean().reshape(1) / 10}


def pad(samples):
    lengths = torch.tensor([len(s["input"]) for s in samples])
    tokens = torch.zeros(len(samples), int(lengths.max()), dtype=torch.long)
    for row, sample in enumerate(samples):
        tokens[row, :len(sample["input"])] = sample["input"]
    return {"input": (tokens, lengths), "target": torch.stack([s["target"] for s in samples])}


class BagModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.head = nn.Embedding(20, 8, padding_idx=0), nn.Linear(8, 1)

    def forward(self, inputs, targets=None, smooth=True):
        tokens, lengths = inputs
        encoding = self.embedding(tokens).sum(1) / lengths[:, None]
        return {"encoding": encoding, "pred": self.head(encoding)}


class TokenTask(VectorTask):
    collate_fn = staticmethod(pad)

    def datasets(self):
        return {"train": Sentences(50, 0), "val": Sentences(20, 1), "test": Sentences(20, 2)}

    def build_model(self):
        return BagModel()


def test_token_batches_through_the_trainer(tmp_path):
    task = TokenTask(lr=0.5)
    result = trainer(task, tmp_path, epochs=4, batch_size=8, val_interval=5, grad_clip=5.0).fit()
    best = checkpointing.load_checkpoint(tmp_path / "run" / "ckpt.best.pth.tar")
    model = BagModel()
    model.load_state_dict(best["state_dict"])
    batch = pad([Sentences(20, 2)[i] for i in range(20)])
    with torch.no_grad():
        preds = model(batch["input"])["pred"].reshape(-1).numpy()
    expected = float(np.mean((preds - batch["target"].reshape(-1).numpy()) ** 2))
    assert result["test"]["all"]["mse"] == pytest.approx(expected, rel=1e-6)
    assert result["step"] % 5 == 0 and result["step"] > 0


def test_bf16_and_channels_last_runs_stay_close_to_float32(tmp_path):
    full = trainer(PixelTask(), tmp_path, "fp32", epochs=1, batch_size=4).fit()["test"]["rmse"]
    bf16 = trainer(PixelTask(), tmp_path, "bf16", epochs=1, batch_size=4, amp_dtype=torch.bfloat16).fit()
    last = trainer(PixelTask(), tmp_path, "cl", epochs=1, batch_size=4, channels_last=True).fit()
    assert math.isfinite(bf16["test"]["rmse"]) and bf16["test"]["rmse"] != full
    assert bf16["test"]["rmse"] == pytest.approx(full, rel=0.05)
    assert last["test"]["rmse"] == pytest.approx(full, rel=1e-4)


def test_compiled_model_trains_and_saves_the_plain_state(tmp_path):
    """torch.compile (the fast 'eager' backend here) wraps the model; checkpoints keep the plain module's keys."""
    result = trainer(VectorTask(), tmp_path, "compiled", epochs=1, compile_model="eager").fit()
    plain = trainer(VectorTask(), tmp_path, "plain", epochs=1).fit()
    state = checkpointing.load_checkpoint(tmp_path / "compiled" / "ckpt.pth.tar")["state_dict"]
    assert set(state) == set(VectorModel().state_dict())
    assert result["test"]["all"]["mse"] == pytest.approx(plain["test"]["all"]["mse"], rel=1e-5)


def test_a_compile_failure_is_one_sentence(tmp_path, monkeypatch):
    import torch._dynamo

    class Broken(nn.Module):          # what torch.compile returns, failing at its first call as on a bare machine
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *args, **kwargs):
            raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler found"), None)

    monkeypatch.setattr(torch, "compile", lambda model, backend=None: Broken(model))
    with pytest.raises(RunError, match=r"--compile could not compile this model here .*; drop --compile\."):
        trainer(VectorTask(), tmp_path, epochs=1, compile_model=True).fit()


def test_loader_options(tmp_path):
    t = trainer(VectorTask(), tmp_path, workers=2, persistent_workers=True, prefetch=4)
    t.log = lambda message: None
    train_loader, _ = t._loader(VectorData(64, 0), train=True)
    test_loader, _ = t._loader(VectorData(16, 1), train=False)
    assert train_loader.persistent_workers and train_loader.prefetch_factor == 4
    assert not test_loader.persistent_workers and not train_loader.pin_memory      # pinned on CUDA only
    result = trainer(VectorTask(), tmp_path, "persistent", workers=2, persistent_workers=True, epochs=2).fit()
    assert math.isfinite(result["test"]["all"]["mse"])


def test_process_setup_refusals(tmp_path, monkeypatch):
    with pytest.raises(RunError, match="--sync_bn synchronises BatchNorm across CUDA processes"):
        trainer(VectorTask(), tmp_path, sync_bn=True)
    from common import distributed
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(RunError, match="--batch_size 16 .* is not divisible by the 3 processes"):
        trainer(VectorTask(), tmp_path)


def window_rule_stop(scores, patience):
    """The STS-B reference's rule, stated literally: append each validation score to the history; once the
    history is longer than patience + 1, stop at the first score at least the largest of the last patience + 1.
    Returns the number of validations run."""
    history = []
    for score in scores:
        history.append(score)
        if len(history) > patience + 1 and max(history[-(patience + 1):]) <= score:
            return len(history)
    return len(scores)


def best_rule_stop(scores, patience):
    """The default rule: stop after ``patience`` validations in a row without a better score."""
    best, bad = math.inf, 0
    for count, score in enumerate(scores, start=1):
        best, bad = (score, 0) if score < best else (best, bad + 1)
        if bad >= patience:
            return count
    return len(scores)


def test_the_window_patience_rule_stops_where_its_literal_statement_does(tmp_path):
    """Random validation curves with many ties (scores from five values): the trainer's stop and best checkpoint
    equal the rule's, and the two rules disagree somewhere (so the test can tell them apart)."""
    rng = np.random.default_rng(0)
    differ = 0
    for case in range(12):
        patience = int(rng.integers(1, 4))
        scores = [float(s) for s in rng.integers(0, 5, size=30)]
        task = VectorTask(scores=scores)
        result = trainer(task, tmp_path, f"w{case}", epochs=100, val_interval=2, patience=patience,
                         patience_rule="window").fit()
        assert task.validations == window_rule_stop(scores, patience), (scores, patience)
        run_scores = scores[:task.validations]
        assert result["step"] == 2 * (1 + run_scores.index(min(run_scores)))   # the first lowest is the best
        differ += best_rule_stop(scores, patience) != task.validations
    assert differ > 0


def test_the_statistics_pass_sees_every_training_sample(tmp_path):
    """33 samples with batch 16: training skips the last sample (a batch of one), the statistics pass does not."""
    seen = []

    class Counting(VectorTask):
        def statistics_pass(self, model, objective, batches, epoch):
            seen.append(sum(len(batch["target"]) for batch in batches))

    trainer(Counting(n_train=33, batch_norm=True), tmp_path, epochs=2).fit()
    assert seen == [33, 33]


def test_checkpoints_are_written_at_validations_and_the_best_one_is_small(tmp_path, monkeypatch):
    """Validating every 6 iterations of 4-iteration epochs: the resumable checkpoint at each validation and after
    the last epoch, not at every epoch end (unless --save_every_minutes 0); the best one without optimiser state."""
    from common import checkpointing as module
    writes = []
    save = module.save_checkpoint
    monkeypatch.setattr(module, "save_checkpoint", lambda state, path: writes.append(Path(path).name) or
                        save(state, path))
    trainer(VectorTask(), tmp_path, "timed", epochs=6, val_interval=6).fit()
    resumable = [name for name in writes if name == "ckpt.pth.tar"]
    assert len(resumable) == 4 + 1                   # validations at steps 6, 12, 18, 24, then after epoch 5
    writes.clear()
    trainer(VectorTask(), tmp_path, "every", epochs=6, val_interval=6, save_every_minutes=0).fit()
    assert writes.count("ckpt.pth.tar") == 4 + 6
    best = torch.load(tmp_path / "timed" / "ckpt.best.pth.tar", weights_only=True)
    assert set(best) == {"epoch", "state_dict", "objective", "trainer", "benchmark", "args", "data"}
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(torch.load(tmp_path / "timed" / "ckpt.pth.tar",
                                                                           weights_only=True))


# -- what a run says and leaves (issues 27, 28) ----------------------------------------------------------------
def test_the_console_ends_with_a_short_block_and_the_log_keeps_the_flags_and_tables(tmp_path, capsys):
    run = trainer(VectorTask(), tmp_path, flags={"lr": 0.01, "seed": 1})
    run.fit()
    out = capsys.readouterr().out
    log = (tmp_path / "run" / "training.log").read_text()
    assert "flags:" not in out and "  --lr 0.01" in log and "flags:" in log       # the flag dump: the log only
    assert out.count("test:") == 1                                                # the final summary, once
    tail = out.strip().splitlines()[-3:]
    assert tail[0].startswith("cost: ") and "samples/s" in tail[0]
    assert tail[1].startswith(f"run folder {tmp_path / 'run'}: results.json")
    assert tail[2] == f"compare runs: python -m common.tools.report {tmp_path / 'run'} [other run folders]"
    cost = json.loads((tmp_path / "run" / "results.json").read_text())["cost"]
    assert set(cost) == {"wall_seconds", "statistics_share", "train_samples_per_second", "peak_host_memory_mib",
                         "peak_cuda_memory_mib", "device", "processes"}
    assert 0 <= cost["statistics_share"] < 0.05 and "statistics passes" not in tail[0]    # this task has none
    # 3 epochs of 64 samples in the measured training time, memory of this process, the CPU, one process.
    assert cost["wall_seconds"] > 0
    assert cost["train_samples_per_second"] == pytest.approx(3 * 64 / cost["wall_seconds"], rel=1e-3)
    assert cost["peak_host_memory_mib"] > 10 and cost["peak_cuda_memory_mib"] is None
    assert (cost["device"], cost["processes"]) == ("cpu", 1)


def test_the_statistics_passes_share_of_the_training_time_is_measured_and_kept_across_a_resume(tmp_path, capsys):
    class SlowStatistics(VectorTask):
        def statistics_pass(self, model, objective, batches, epoch):
            time.sleep(0.3)

    trainer(SlowStatistics(), tmp_path, epochs=2).fit()
    trainer(SlowStatistics(), tmp_path, epochs=3, resume=tmp_path / "run" / "ckpt.pth.tar").fit()
    cost = json.loads((tmp_path / "run" / "results.json").read_text())["cost"]
    # Three passes of at least 0.3 s each, over both invocations, inside the training time.
    assert 0.9 <= cost["statistics_share"] * cost["wall_seconds"] < cost["wall_seconds"]
    assert f"({100 * cost['statistics_share']:.0f} % in statistics passes)" in capsys.readouterr().out


def test_a_start_that_failed_before_its_first_checkpoint_does_not_block_the_same_command(tmp_path):
    class BrokenData(VectorTask):
        def datasets(self):
            raise RunError("the data are missing; write them first.")

    first = trainer(BrokenData(), tmp_path)
    with pytest.raises(RunError):
        first.fit()
    first.log_fatal("the data are missing; write them first.")      # as launch.run ends a run
    assert (tmp_path / "run" / "training.log").is_file()
    result = trainer(VectorTask(), tmp_path).fit()                  # the same folder, no --overwrite
    assert (tmp_path / "run" / "results.json").is_file() and result["epoch"] >= 0
    assert "held only a failed start" in (tmp_path / "run" / "training.log").read_text()
    # A folder holding a checkpoint or a finished run is not taken over.
    with pytest.raises(RunError, match="already exists"):
        trainer(VectorTask(), tmp_path).fit()


def test_evaluating_on_changed_data_is_said_and_an_earlier_evaluation_is_set_aside(tmp_path, capsys):
    class Fingerprinted(VectorTask):
        digest = "a" * 64

        def data_fingerprint(self):
            return {"split.csv": self.digest}

    trainer(Fingerprinted(), tmp_path, epochs=1).fit()
    best = tmp_path / "run" / "ckpt.best.pth.tar"
    assert checkpointing.load_checkpoint(best)["data"] == {"split.csv": "a" * 64}
    capsys.readouterr()
    trainer(Fingerprinted(), tmp_path, "eval").evaluate(best)
    assert "differs" not in capsys.readouterr().err
    changed = Fingerprinted()
    changed.digest = "b" * 64
    trainer(changed, tmp_path, "eval").evaluate(best)
    assert "warning: split.csv differs (SHA-256) from what the run trained and was tested with" in \
        capsys.readouterr().err
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert evaluation["data_changed"] == ["split.csv"] and evaluation["data"] == {"split.csv": "b" * 64}
    # The run goes on (resumed to more epochs): the final test is results.json, the earlier evaluation set aside.
    trainer(Fingerprinted(), tmp_path, epochs=2, resume=tmp_path / "run" / "ckpt.pth.tar").fit()
    assert not (tmp_path / "run" / "eval.json").exists()
    assert json.loads((tmp_path / "run" / "eval.earlier.json").read_text())["epoch"] == 1
