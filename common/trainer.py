"""The training loop every benchmark shares: a benchmark plugs in as a :class:`Task`, the :class:`Trainer` runs it.

The trainer owns what does not depend on the data: the run folder and its ``--overwrite``/``--resume`` rules,
seeding, the epoch loop with validation per epoch or every ``val_interval`` iterations (with ``patience`` and
``max_vals`` early stopping), the non-finite-loss guard, best-model selection on the score the task names,
atomic checkpoints and exact resume, the final test of the best checkpoint, ``results.json``/``eval.json``,
tensorboard scalars and the progress line. The task owns what does: its data sets, model, objective (the loss
terms), optimiser, the FDS/SRL statistics pass, how a batch becomes predictions and labels, and its metrics.

A batch is a mapping (``input``, ``target``, ``weight``, optionally ``views`` or anything the task's objective
reads); the trainer moves every tensor in it to the device, through nested tuples, lists and dicts. Under
``torchrun`` the same loop runs in every process (``common/distributed.py``): each takes its share of the global
batch, gradients are averaged, evaluation is gathered, and rank 0 writes the files.
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common import checkpointing, cli, distributed, runtime
from common.errors import RunError

CHECKPOINT = "ckpt.pth.tar"
BEST_CHECKPOINT = "ckpt.best.pth.tar"


class Task:
    """What a benchmark provides to the :class:`Trainer`. Subclass it and fill in the methods.

    The trainer calls, in this order: :meth:`datasets`, :meth:`build_model`, :meth:`build_objective`,
    :meth:`build_optimizer`; then per step the objective, per epoch :meth:`statistics_pass`, per validation
    :meth:`predict` on every batch and :meth:`metrics` / :meth:`selection_score` on the whole split.
    ``self.log`` is set by the trainer before any of them runs.
    """

    #: the benchmark folder whose ``train.py`` runs this task (``"agedb-dir"``); recorded in checkpoints.
    benchmark = ""
    #: flags that define the model: an evaluated checkpoint keeps its own values of them.
    model_flags: tuple[str, ...] = ()
    #: flags whose parsed value is None unless given: a checkpoint's value, else this default (shot thresholds).
    eval_defaults: dict = {}

    @classmethod
    def main(cls, args) -> dict:
        """Train (or with ``--evaluate`` test) this task from parsed flags: every ``train.py``'s last line."""
        return run(args, cls)

    @staticmethod
    def run_name(args) -> str:
        """The run folder's name when ``--store_name`` is not given (built from the flags)."""
        raise NotImplementedError

    #: shown in logs next to the selection score, e.g. ``"val L1"``.
    selection_name = "val l1"
    #: learning rate of the default optimiser.
    lr = 1e-3
    #: ``collate_fn`` of the data loaders (None: PyTorch's default, which stacks dicts of tensors).
    collate_fn = None
    log = staticmethod(print)

    def datasets(self) -> dict[str, Dataset]:
        """``{'train', 'val', 'test'}`` data sets; an optional ``'stats'`` one feeds :meth:`statistics_pass`
        (default: the training set)."""
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def build_objective(self) -> torch.nn.Module:
        """A module whose ``forward(model, batch, epoch)`` returns ``{name: weighted 0-d loss}``; its state (e.g.
        Balanced MSE's σ, SRL's surrogate) is checkpointed."""
        raise NotImplementedError

    def build_optimizer(self, model, objective):
        """``(optimizer, scheduler or None)``; the scheduler is stepped once per epoch. Default: Adam at
        ``self.lr`` on the trainable parameters of the model and the objective, no schedule."""
        params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr), None

    def statistics_pass(self, model, objective, batches, epoch: int) -> None:
        """After each training epoch: FDS/SRL statistics. ``batches`` yields device batches lazily, so a task
        with nothing to collect returns without loading data."""

    def predict(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predictions, labels)`` of one batch, model in eval mode and without gradients; any shapes that
        concatenate along dimension 0. Default: the model's ``pred`` and the batch's ``target``, flattened."""
        return model(batch["input"])["pred"].reshape(-1), batch["target"].reshape(-1)

    def metrics(self, preds: np.ndarray, labels: np.ndarray) -> dict:
        """The metrics of a whole split (a JSON-able nested dict)."""
        raise NotImplementedError

    def selection_score(self, preds: np.ndarray, labels: np.ndarray, metrics: dict) -> float:
        """Lower is better; the best checkpoint has the lowest validation score. Default: ``metrics['all']['l1']``
        (the shot metrics' overall L1)."""
        return metrics["all"]["l1"]

    def baseline_predictions(self, labels: np.ndarray) -> np.ndarray | None:
        """Predictions of a trivial model (e.g. the training-label mean) for ``labels``; a best validation score
        no better than theirs is reported as a failed run. None: no such check."""
        return None

    def report(self, name: str, preds: np.ndarray, labels: np.ndarray, metrics: dict) -> str:
        """What the log shows for a split's predictions; default :meth:`format_metrics`."""
        return self.format_metrics(name, metrics)

    def format_metrics(self, name: str, metrics: dict) -> str:
        """Default: the shot table of :func:`common.metrics.shot_metrics` results, else the dict."""
        if all(shot in metrics for shot in ("all", "many", "medium", "few")):
            from common.metrics import shot_table
            return shot_table(name, metrics)
        return f"{name}: {metrics}"

    def save_predictions(self, path: Path, preds: np.ndarray, labels: np.ndarray) -> None:
        np.savez(path, preds=preds, labels=labels)


class EpochSampler(Sampler):
    """Indices of one epoch, shuffled by ``(seed, epoch)`` alone, optionally starting after ``skip`` batches.

    ``set_epoch(seed)`` seeds a generator from which each pass draws as PyTorch's ``RandomSampler`` draws from a
    loader generator seeded with that number (one draw for the workers' base seed, then ``randperm``), so runs
    keep the sample order they had before this sampler; a second pass in the same epoch (the FDS statistics
    pass) continues the generator. ``drop_last`` drops this process's incomplete last batch. With several
    processes (``world`` > 1) the epoch's order is padded to a multiple of ``world`` by repeating its start, and
    process ``rank`` takes every ``world``-th index from position ``rank`` (as ``DistributedSampler``);
    ``pad=False`` (evaluation) takes the shard without padding.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, drop_last: bool, rank: int = 0, world: int = 1,
                 pad: bool = True):
        self.size, self.batch_size, self.shuffle, self.drop_last = size, batch_size, shuffle, drop_last
        self.rank, self.world, self.pad = rank, world, pad
        self.generator, self.skip = torch.Generator(), 0

    def set_epoch(self, seed: int, skip_batches: int = 0) -> None:
        self.generator.manual_seed(seed)
        self.skip = skip_batches

    def shard_size(self) -> int:
        if self.world == 1:
            return self.size
        return -(-self.size // self.world) if self.pad else len(range(self.rank, self.size, self.world))

    def __iter__(self):
        if self.shuffle:
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            order = torch.randperm(self.size, generator=self.generator).tolist()
            torch.randperm(self.size, generator=self.generator)   # RandomSampler's draw for the remainder (none)
        else:
            order = list(range(self.size))
        if self.world > 1:
            if self.pad:
                order += order[:self.shard_size() * self.world - self.size]
            order = order[self.rank::self.world]
        kept = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        skip, self.skip = self.skip, 0          # only the first pass after a resume starts late
        return iter(order[skip * self.batch_size:kept])

    def __len__(self):
        shard = self.shard_size()
        kept = shard - (shard % self.batch_size if self.drop_last else 0)
        return max(0, kept - self.skip * self.batch_size)


def to_device(batch, device: torch.device):
    """Every tensor of a (nested) batch on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def batch_size_of(batch) -> int:
    """Samples in a batch: the first dimension of its ``target`` (or of its first tensor)."""
    if isinstance(batch, dict) and isinstance(batch.get("target"), torch.Tensor):
        return batch["target"].shape[0]
    for value in (batch.values() if isinstance(batch, dict) else batch):
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    return 1


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """``{'all': {'l1': 1.0}}`` → ``{'all/l1': 1.0}`` (numbers only)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def is_divergence(error: ValueError) -> bool:
    """The losses and FDS refuse non-finite features/predictions with this wording (common.checks)."""
    return "NaN or infinite" in str(error)


class Trainer:
    """Trains (``fit``) or evaluates (``evaluate``) a :class:`Task`.

    Args:
        task: the benchmark.
        run_dir: the run folder (created; must be new or empty unless ``overwrite``; ignored when resuming,
            where the checkpoint's folder is used).
        epochs: training epochs (an upper bound when validation runs every ``val_interval`` iterations).
        batch_size, workers: data loaders (``workers`` processes; 0 loads in the main process).
        seed: seeds Python, NumPy and torch once, and every epoch again from ``(seed, epoch)``.
        device: a ``torch.device``.
        amp_dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``) or None for full precision; float16
            uses a gradient scaler.
        val_interval: validate every this many training iterations; 0 validates after every epoch.
        patience: stop after this many validations in a row without a better score (None: never).
        max_vals: stop after this many validations (None: no limit).
        grad_clip: clip the gradient norm of the model to this value (None: no clipping).
        print_freq: progress line every this many iterations.
        resume: checkpoint to continue from (``ckpt.pth.tar`` of an earlier run).
        overwrite: allow a non-empty ``run_dir``.
        config: the run's settings, saved in checkpoints and results (e.g. ``vars(args)``).
        divergence_factor: stop when the training loss exceeds this many times its first value (a diverged run
            whose loss stays finite, e.g. ``--lr 1e6``).
        sync_bn: with several CUDA processes, BatchNorm statistics over the global batch (SyncBatchNorm).
        channels_last: the model and the 4-D tensors of each batch in channels-last memory format (faster
            convolutions on recent GPUs; same results up to float rounding).
        compile_model: ``torch.compile`` the model for training (True, or the name of a compile backend);
            checkpoints hold the plain model's state either way.
        persistent_workers, prefetch: the training loader keeps its worker processes between epochs (their random
            streams then carry over, so resume is exact only without it) and each worker prepares ``prefetch``
            batches ahead. Pinned memory is on whenever the device is CUDA.
    """

    def __init__(self, task: Task, *, run_dir, epochs: int, batch_size: int, workers: int = 0, seed: int = 0,
                 device: torch.device = torch.device("cpu"), amp_dtype: torch.dtype | None = None,
                 val_interval: int = 0, patience: int | None = None, max_vals: int | None = None,
                 grad_clip: float | None = None, print_freq: int = 10, resume=None, overwrite: bool = False,
                 config: dict | None = None, divergence_factor: float = 1e6, sync_bn: bool = False,
                 channels_last: bool = False, compile_model: bool | str = False, persistent_workers: bool = False,
                 prefetch: int = 2):
        self.task, self.epochs, self.batch_size, self.workers = task, epochs, batch_size, workers
        self.seed, self.device, self.amp_dtype = seed, device, amp_dtype
        self.val_interval, self.patience, self.max_vals = val_interval, patience, max_vals
        self.grad_clip, self.print_freq = grad_clip, print_freq
        self.resume = Path(resume) if resume else None
        self.run_dir = self.resume.resolve().parent if self.resume else Path(run_dir)
        self.overwrite = overwrite
        self.config = dict(config or {})
        self.divergence_factor, self.first_loss, self._val_labels = divergence_factor, None, None
        self.device = distributed.setup(device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if batch_size % self.world:
            raise RunError(f"--batch_size {batch_size} (the global batch) is not divisible by the {self.world} "
                           "processes; pass a multiple of the number of processes.")
        self.local_batch = batch_size // self.world
        if sync_bn and (self.world == 1 or self.device.type != "cuda"):
            raise RunError("--sync_bn synchronises BatchNorm across CUDA processes: launch with torchrun on GPUs, "
                           "or drop it.")
        self.sync_bn, self.channels_last, self.compile_model = sync_bn, channels_last, compile_model
        self.persistent_workers, self.prefetch = persistent_workers, prefetch

    # -- set-up -------------------------------------------------------------------------------------------------
    def _prepare_run_dir(self) -> None:
        if self.rank != 0:          # rank 0 checks and creates the folder; the others wait for it in fit()
            return
        run_dir = self.run_dir
        if not self.resume and run_dir.exists() and any(run_dir.iterdir()) and not self.overwrite:
            if (run_dir / CHECKPOINT).is_file():
                raise RunError(f"run folder {run_dir} already exists; pass --overwrite to reuse it, --resume "
                               f"{run_dir / CHECKPOINT} to continue it, or another --store_name.")
            raise RunError(f"run folder {run_dir} already exists and holds no checkpoint (an earlier run stopped "
                           "before its first checkpoint); pass --overwrite to reuse it or another --store_name.")
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob("*.pth.tar.*.tmp"):   # left by a kill during a checkpoint write
            stale.unlink()

    def _loader(self, dataset, train: bool) -> tuple[DataLoader, EpochSampler]:
        """A loader of this process's share: training shards padded to equal sizes, evaluation shards exact."""
        shard = len(range(self.rank, len(dataset), self.world)) if not train else -(-len(dataset) // self.world)
        drop_last = train and shard % self.local_batch == 1
        if drop_last:
            # BatchNorm cannot train on a batch of one sample; the reference would crash after the epoch.
            self.log(f"the training set has {len(dataset)} samples, which leaves a last batch of one with "
                     f"--batch_size {self.batch_size}: that sample is skipped each epoch.")
        sampler = EpochSampler(len(dataset), self.local_batch, shuffle=train, drop_last=drop_last, rank=self.rank,
                               world=self.world, pad=train)
        workers = {"prefetch_factor": self.prefetch, "persistent_workers": train and self.persistent_workers} \
            if self.workers > 0 else {}
        loader = DataLoader(dataset, batch_size=self.local_batch, sampler=sampler, num_workers=self.workers,
                            collate_fn=self.task.collate_fn, generator=torch.Generator(),
                            pin_memory=self.device.type == "cuda", **workers)
        return loader, sampler

    def _batches(self, loader):
        for batch in loader:
            batch = to_device(batch, self.device)
            if self.channels_last and isinstance(batch, dict) and getattr(batch.get("input"), "dim", lambda: 0)() == 4:
                batch["input"] = batch["input"].contiguous(memory_format=torch.channels_last)
            yield batch

    def _load_model(self, model, checkpoint: dict, path) -> None:
        from common.fds import adapt_fds_state
        model = checkpointing.unwrap(model)
        try:
            model.load_state_dict(adapt_fds_state(checkpoint["state_dict"], model, self.log))
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise RunError(f"checkpoint {path} does not fit this model ({first}); pass the flags it was trained "
                           "with (--model, --fds, --srl, ...).") from error

    # -- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model, loader) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and labels of a split. With several processes each predicts its shard (every
        ``world``-th sample) and the shards are interleaved back into the single-process order when a batch gives
        one prediction per sample; otherwise (per-pixel outputs) they are concatenated in rank order."""
        model.eval()
        preds, labels = [], []
        for batch in self._batches(loader):
            with autocast(self.device, self.amp_dtype):
                pred, label = self.task.predict(model, batch)
            preds.append(pred.detach().float().cpu())
            labels.append(label.detach().float().cpu())
        preds, labels = torch.cat(preds).numpy(), torch.cat(labels).numpy()
        if self.world == 1:
            return preds, labels
        shards = distributed.gather_objects((preds, labels))
        size = len(loader.dataset)
        if sum(len(p) for p, _ in shards) == size:
            order = np.concatenate([np.arange(r, size, self.world) for r in range(self.world)])
            out_preds, out_labels = np.empty_like(preds, shape=(size, *preds.shape[1:])), \
                np.empty_like(labels, shape=(size, *labels.shape[1:]))
            out_preds[order] = np.concatenate([p for p, _ in shards])
            out_labels[order] = np.concatenate([l for _, l in shards])
            return out_preds, out_labels
        return np.concatenate([p for p, _ in shards]), np.concatenate([l for _, l in shards])

    def evaluate(self, checkpoint_path) -> dict:
        """Test a checkpoint: print the metrics and write ``eval.json`` beside it."""
        self.log = self.task.log = print
        checkpoint = checkpointing.load_checkpoint(checkpoint_path)
        datasets = self.task.datasets()
        model = self.task.build_model().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._load_model(model, checkpoint, checkpoint_path)
        preds, labels = self.predict(model, self._loader(datasets["test"], train=False)[0])
        metrics = self.task.metrics(preds, labels)
        print(self.task.report("test", preds, labels, metrics))
        if runtime.is_main_process():
            runtime.write_json({"test": metrics, "epoch": checkpoint.get("epoch"), "checkpoint": str(checkpoint_path),
                               "args": self.config}, Path(checkpoint_path).parent / "eval.json")
        return metrics

    # -- training -----------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train, select on validation, test the best checkpoint; returns ``{'val', 'test', 'epoch', 'step',
        'run_dir'}``."""
        checkpoint = checkpointing.load_checkpoint(self.resume) if self.resume else None
        self._prepare_run_dir()
        distributed.barrier()
        run_dir = self.run_dir
        runtime.seed_everything(self.seed)
        logger = runtime.make_logger(run_dir)
        if self.rank != 0:
            logger.setLevel("WARNING")     # one log: rank 0's
        self.log = self.task.log = logger.info
        self.warn = logger.warning
        scalars = runtime.ScalarLogger(run_dir)
        self.log(f"run folder {run_dir}  device {self.device}" + (f"  processes {self.world} (global batch "
                 f"{self.batch_size} = {self.world} × {self.local_batch})" if self.world > 1 else ""))

        datasets = self.task.datasets()
        model = self.task.build_model().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        objective = self.task.build_objective().to(self.device)
        if self.compile_model:
            backend = self.compile_model if isinstance(self.compile_model, str) else "inductor"
            model = torch.compile(model, backend=backend)
        distributed.broadcast_state(model)
        distributed.broadcast_state(objective)
        optimizer, scheduler = self.task.build_optimizer(model, objective)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        state = {"epoch": 0, "next_step": 0, "global_step": 0, "best_score": math.inf, "best_epoch": -1,
                 "best_step": -1, "best_val": None, "vals": 0, "bad_vals": 0}
        if checkpoint is not None:
            self._restore(checkpoint, model=model, objective=objective, optimizer=optimizer, scheduler=scheduler,
                          scaler=scaler)
            state.update(checkpoint["trainer"])
            self.log(f"resumed from {self.resume} at epoch {state['epoch']}, step {state['next_step']}")

        train_loader, train_sampler = self._loader(datasets["train"], train=True)
        stats_loader = train_loader if "stats" not in datasets else self._loader(datasets["stats"], train=False)[0]
        val_loader = self._loader(datasets["val"], train=False)[0]
        ckpt_path, best_path = run_dir / CHECKPOINT, run_dir / BEST_CHECKPOINT
        stop = False

        def save(next_epoch: int, next_step: int, is_best: bool = False) -> None:
            position = {"epoch": next_epoch, "next_step": next_step}
            payload = {"epoch": next_epoch, "state_dict": checkpointing.unwrap(model).state_dict(),
                       "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict() if scheduler is not None else None,
                       "scaler": scaler.state_dict(), "trainer": {**state, **position},
                       "rng": runtime.rng_state(), "args": self.config}
            if runtime.is_main_process():
                if is_best:
                    checkpointing.save_checkpoint(payload, best_path)
                checkpointing.save_checkpoint(payload, ckpt_path)

        def validate(epoch: int, next_epoch: int, next_step: int) -> bool:
            """Validate, select, checkpoint; True when early stopping says to stop."""
            preds, labels = self.predict(model, val_loader)
            self._val_labels = labels
            metrics = self.task.metrics(preds, labels)
            score = self.task.selection_score(preds, labels, metrics)
            state["vals"] += 1
            self.log(f"epoch {epoch} step {state['global_step']} validation\n"
                     + self.task.report("val", preds, labels, metrics))
            for name, value in flatten_metrics(metrics, "val/").items():
                scalars.log(name, value, state["global_step"])
            is_best = score < state["best_score"]
            if is_best:
                state.update(best_score=score, best_epoch=epoch, best_step=state["global_step"], best_val=metrics,
                             bad_vals=0)
            else:
                state["bad_vals"] += 1
            self.log(f"epoch {epoch}: {self.task.selection_name} {score:.4f} (best {state['best_score']:.4f} at "
                     f"epoch {state['best_epoch']}, step {state['best_step']})")
            save(next_epoch, next_step, is_best)
            if self.patience is not None and state["bad_vals"] >= self.patience:
                self.log(f"early stop: {self.patience} validations without improvement")
                return True
            if self.max_vals is not None and state["vals"] >= self.max_vals:
                self.log(f"stop: --max_vals {self.max_vals} validations reached")
                return True
            return False

        for epoch in range(state["epoch"], self.epochs):
            skip = state["next_step"] if epoch == state["epoch"] else 0
            # Every epoch is a function of (seed, epoch, state): resuming at an epoch boundary is exact.
            epoch_seed = self.seed * 100_003 + epoch
            runtime.seed_everything(epoch_seed)
            train_loader.generator.manual_seed(epoch_seed)
            train_sampler.set_epoch(epoch_seed, skip)
            if skip and checkpoint is not None:
                runtime.set_rng_state(checkpoint["rng"])   # mid-epoch: continue the saved random streams
            steps_per_epoch = skip + math.ceil(len(train_sampler) / self.local_batch)
            model.train()
            meters = {}
            progress = runtime.Progress(logger, steps_per_epoch, f"epoch {epoch}", self.print_freq)
            for step, batch in enumerate(self._batches(train_loader), start=skip):
                components = self._step(model, objective, optimizer, scaler, batch, epoch, step, ckpt_path)
                state["global_step"] += 1
                n = batch_size_of(batch)
                for name, value in components.items():
                    meters.setdefault(name, runtime.AverageMeter()).update(value, n)
                progress.step(step, meters)
                if self.val_interval and state["global_step"] % self.val_interval == 0:
                    if validate(epoch, epoch, step + 1):
                        stop = True
                        break
                    model.train()
            if stop:
                break
            self.task.statistics_pass(model, objective, self._batches(stats_loader), epoch)
            if scheduler is not None:
                scheduler.step()
            for name, meter in meters.items():
                scalars.log(f"train/{name}", meter.avg, epoch)
            scalars.log("train/lr", optimizer.param_groups[0]["lr"], epoch)
            if not self.val_interval:
                if validate(epoch, epoch + 1, 0):
                    break
            else:
                save(epoch + 1, 0)

        distributed.barrier()
        if not best_path.is_file():
            raise RunError(f"no validation ran (--val_interval {self.val_interval} exceeds the "
                           f"{state['global_step']} training iterations); lower --val_interval or raise --epoch.")
        best = checkpointing.load_checkpoint(best_path)
        self._load_model(model, best, best_path)
        preds, labels = self.predict(model, self._loader(datasets["test"], train=False)[0])
        test = self.task.metrics(preds, labels)
        self.log(f"test of the best checkpoint (epoch {state['best_epoch']}, step {state['best_step']})\n"
                 + self.task.report("test", preds, labels, test))
        self._check_against_baseline(model, val_loader, state["best_score"])
        best_val = best["trainer"]["best_val"]
        result = {"val": best_val, "test": test, "epoch": state["best_epoch"], "step": state["best_step"]}
        scalars.close()
        if runtime.is_main_process():
            runtime.write_json({**result, "args": self.config}, run_dir / "results.json")
            self.task.save_predictions(run_dir / "test_predictions.npz", preds, labels)
        distributed.barrier()            # every process returns once rank 0's files are written
        return {**result, "run_dir": str(run_dir)}

    def _step(self, model, objective, optimizer, scaler, batch, epoch: int, step: int, ckpt_path: Path) -> dict:
        kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
        try:
            with autocast(self.device, self.amp_dtype):
                components = objective(model, batch, epoch)
        except ValueError as error:
            if not is_divergence(error):
                raise
            raise RunError(f"training stopped at epoch {epoch}, step {step}: {error} The model diverged or the data "
                           f"hold non-finite values; {kept} (lower --lr or check the data).") from error
        except Exception as error:
            if not self.compile_model or "dynamo" not in type(error).__module__ + str(type(error)):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RunError(f"--compile could not compile this model here ({first}); drop --compile.") from error
        total = sum(components.values())
        if not bool(torch.isfinite(total)):
            bad = [name for name, value in components.items() if not bool(torch.isfinite(value))]
            raise RunError(f"the {' and '.join(bad) or 'total'} loss became non-finite at epoch {epoch}, step "
                           f"{step}; training stopped and {kept} (lower --lr or check the data).")
        size = abs(total.item())
        if self.first_loss is None:
            self.first_loss = max(size, 1e-6)
        elif size > self.divergence_factor * self.first_loss:
            raise RunError(f"the training loss grew from {self.first_loss:.4g} to {size:.4g} by epoch {epoch}, step "
                           f"{step} (more than {self.divergence_factor:g} times): the run diverged; training "
                           f"stopped and {kept} (lower --lr).")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        distributed.average_gradients(list(model.parameters()) + list(objective.parameters()))
        if self.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        distributed.broadcast_state(model, buffers_only=True)    # rank 0's BatchNorm statistics, as DDP keeps
        return {**{name: value.item() for name, value in components.items()}, "total": total.item()}

    def _check_against_baseline(self, model, val_loader, best_score: float) -> None:
        """Warn (stderr and the log file) when the best model is no better on validation than the task's trivial
        one."""
        labels = self._val_labels if self._val_labels is not None else self.predict(model, val_loader)[1]
        baseline = self.task.baseline_predictions(labels)
        if baseline is None:
            return
        score = self.task.selection_score(baseline, labels, self.task.metrics(baseline, labels))
        if best_score >= score:
            message = (f"warning: the best validation {self.task.selection_name} ({best_score:.4g}) is no better than "
                       f"predicting the training-label mean ({score:.4g}); the run failed to learn (diverged, "
                       "--lr too high or too low, or too few epochs).")
            if runtime.is_main_process():
                self.warn(message)

    def _restore(self, checkpoint: dict, **objects) -> None:
        """Load each named object's state from the checkpoint (the model from ``state_dict``)."""
        for name, obj in objects.items():
            if obj is None:
                continue
            if name == "model":
                self._load_model(obj, checkpoint, self.resume)
            elif checkpoint.get(name) is not None:
                obj.load_state_dict(checkpoint[name])
            self.log(f"restored {name} from {self.resume}")

    def log(self, message: str) -> None:   # replaced by the run's logger in fit/evaluate
        logging.getLogger("dir").info(message)

    def warn(self, message: str) -> None:  # replaced by the run's logger in fit
        print(message, file=sys.stderr)


def amp_dtype_of(amp, device: torch.device):
    """``--amp`` → the autocast dtype: none → None, bf16/fp16 as named, auto (or a checkpoint's old ``True``) →
    fp16 on CUDA and bf16 on CPU."""
    if amp in (None, False, "none"):
        return None
    if amp in (True, "auto"):
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def run(args, task_class: type[Task]) -> dict:
    """Train (or with ``--evaluate`` test) from parsed flags: the shared ``main`` of every ``train.py``.

    ``task_class(args)`` builds the benchmark's :class:`Task`; its ``run_name(args)`` names a new run folder under
    ``--store_root`` unless ``--store_name`` is given, its ``model_flags`` and ``eval_defaults`` say what an
    evaluated or resumed checkpoint keeps (:func:`common.cli.restore_flags`). A :class:`RunError` ends the
    process with its one sentence (exit status 1).
    """
    given = getattr(args, "given_flags", None)
    if given is not None:
        del args.given_flags                      # a property of this command line, not of the run
    try:
        checkpoint_args = checkpointing.load_checkpoint(args.resume).get("args", {}) if args.resume else {}
        checkpoint_args.pop("given_flags", None)
        args = cli.restore_flags(args, checkpoint_args, task_class.model_flags, task_class.eval_defaults,
                                 given)
        device = runtime.resolve_device(args.device, args.gpu)
        amp_dtype = amp_dtype_of(args.amp, device)
        trainer = Trainer(task_class(args), run_dir=Path(args.store_root) / (args.store_name or task_class.run_name(args)),
                          epochs=args.epoch, batch_size=args.batch_size, workers=args.workers, seed=args.seed,
                          device=device, amp_dtype=amp_dtype, val_interval=args.val_interval,
                          patience=args.patience, max_vals=args.max_vals, grad_clip=args.grad_clip,
                          print_freq=args.print_freq, resume=args.resume or None, overwrite=args.overwrite,
                          config=vars(args), sync_bn=getattr(args, "sync_bn", False),
                          channels_last=getattr(args, "channels_last", False),
                          compile_model=getattr(args, "compile", False),
                          persistent_workers=getattr(args, "persistent_workers", False),
                          prefetch=getattr(args, "prefetch", 2))
        result = trainer.evaluate(args.resume) if args.evaluate else trainer.fit()
        distributed.shutdown()
        return result
    except RunError as error:
        # Raised in a DataLoader worker, the message arrives wrapped in the worker's traceback: keep its sentence.
        sentence = str(error).strip().splitlines()[-1]
        raise SystemExit(f"error: {sentence.split('RunError: ', 1)[-1]}")
