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

import contextlib
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common import checks, checkpointing, distributed, runtime
from common.errors import NonFiniteError, RunError
from common.meters import DeviceMeters, StepHealth
from common.metrics import uncertainty, uncertainty_metrics
from common.samplers import EpochSampler, WholeEpochBatches

CHECKPOINT = "ckpt.pth.tar"
BEST_CHECKPOINT = "ckpt.best.pth.tar"


class Task:
    """What a benchmark provides to the :class:`Trainer`. Subclass it and fill in the methods.

    The trainer calls, in this order: :meth:`datasets`, :meth:`build_model`, :meth:`build_objective`,
    :meth:`build_optimizer`; then per step the objective, per epoch :meth:`statistics_pass`, per validation
    :meth:`predict` on every batch and :meth:`metrics` / :meth:`selection_score` on the whole split; each checkpoint
    stores :meth:`checkpoint_extras`, which ``--evaluate`` passes to :meth:`restore_extras` before :meth:`datasets`.
    ``self.log`` is set by the trainer before any of them runs.
    """

    #: the benchmark folder whose ``train.py`` runs this task (``"agedb-dir"``); recorded in checkpoints.
    benchmark = ""
    #: flags that define the model: an evaluated checkpoint keeps its own values of them.
    model_flags: tuple[str, ...] = ()
    #: flags whose parsed value is None unless given: a checkpoint's value, else this default (shot thresholds).
    eval_defaults: dict = {}

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
        Balanced MSE's σ, SRL's surrogate) is checkpointed. An objective that keeps something of each forward
        (training features for the epoch's statistics) may give a ``repeated_pass()`` context manager, under which
        a second forward of a step's batch (a step rule's, BSAM) keeps nothing."""
        raise NotImplementedError

    def build_optimizer(self, model, objective):
        """``(optimizer, scheduler or None)``; the scheduler is stepped once per epoch. Default: Adam at
        ``self.lr`` on the trainable parameters of the model and the objective, no schedule."""
        params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr), None

    def statistics_pass(self, model, objective, batches, epoch: int) -> None:
        """After each training epoch: the statistics the model and the objective keep across epochs (FDS, SRL's
        surrogate), by the objective's own ``statistics_pass(model, batches, epoch)`` when it has one.
        ``batches`` yields device batches lazily, so nothing is loaded when there is nothing to collect."""
        update = getattr(objective, "statistics_pass", None)
        if update is not None:
            update(model, batches, epoch)

    def predict(self, model, batch) -> tuple[torch.Tensor, ...]:
        """``(predictions, labels)`` of one batch, model in eval mode and without gradients; any shapes that
        concatenate along dimension 0; a third tensor of the predictions' shape, when the model gives one, is
        each prediction's standard deviation (UVOTE, VIR). Default: the model's ``pred``, the batch's ``target``
        and the model's ``sigma`` if it has one, flattened."""
        out = model(batch["input"])
        pred, label = out["pred"].reshape(-1), batch["target"].reshape(-1)
        return (pred, label, out["sigma"].reshape(-1)) if "sigma" in out else (pred, label)

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

    def summary(self, name: str, metrics: dict) -> str:
        """The short table a finished run prints: per shot, the columns the papers report. Default: the shot
        table without its balanced rows (``shot_metrics`` results), else :meth:`format_metrics`."""
        if all(shot in metrics for shot in ("all", "many", "medium", "few")) and "l1" in metrics["all"]:
            from common.metrics import shot_table
            return shot_table(name, metrics, balanced=False)
        return self.format_metrics(name, metrics)

    def format_metrics(self, name: str, metrics: dict) -> str:
        """Default: the shot table of :func:`common.metrics.shot_metrics` results, else the dict."""
        if all(shot in metrics for shot in ("all", "many", "medium", "few")):
            from common.metrics import shot_table
            return shot_table(name, metrics)
        return f"{name}: {metrics}"

    def save_predictions(self, path: Path, preds: np.ndarray, labels: np.ndarray, sigma=None) -> None:
        """The test predictions (and, from UVOTE and VIR, their standard deviations ``sigma``) as an ``.npz``."""
        np.savez(path, preds=preds, labels=labels, **uncertainty(sigma))

    def data_fingerprint(self) -> dict:
        """What identifies the data the run trains and tests on (e.g. ``{'agedb.csv': sha256}``), saved in every
        checkpoint; ``--evaluate`` compares it with the data it reads and says when they differ. Read after
        :meth:`datasets`. Default: nothing to compare."""
        return {}

    def checkpoint_extras(self) -> dict:
        """What evaluating a checkpoint needs besides its weights and flags (e.g. statistics of the training set),
        saved as the checkpoint's ``task_state`` when not empty: tensors and plain Python values only (checkpoints
        load with ``weights_only=True``). Default: nothing."""
        return {}

    def restore_extras(self, state: dict) -> None:
        """``--evaluate`` hands back the checkpoint's ``task_state`` (``{}`` for a checkpoint without one) before
        :meth:`datasets`, so evaluation can skip data it would only read to recompute them. Default: ignored."""


def to_device(batch, device: torch.device):
    """Every tensor of a (nested) batch on ``device``; anything else (NumPy arrays: values a model reads on the
    host, as STS-B's sentence lengths) stays where it is."""
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


@dataclass
class TrainerConfig:
    """How the :class:`Trainer` runs a task; :meth:`from_args` reads it from a ``train.py`` command line.

    Args:
        run_dir: the run folder (created; must be new or empty unless ``overwrite``; ignored when resuming,
            where the checkpoint's folder is used).
        epochs: training epochs (an upper bound when validation runs every ``val_interval`` iterations).
        batch_size, workers: data loaders (the global batch; ``workers`` processes, 0 loads in the main process).
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
        flags: the run's settings, saved in checkpoints and results (``vars(args)``).
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
        branch: with ``resume``, write into ``run_dir`` (a new folder that starts from the checkpoint, its best
            checkpoint copied) instead of continuing in the checkpoint's own folder.
        lr: the model's learning rate the run is configured with; on resume, a value other than the checkpoint's
            rescales the model group's schedule from where the run continues (None: keep the checkpoint's).
        patience_rule: ``'best'``: stop after ``patience`` validations in a row without a better score;
            ``'window'`` (the STS-B reference): once more than ``patience`` + 1 validations have run, stop at the
            first whose score is the worst of the last ``patience`` + 1 (greater than or equal to each of the
            ``patience`` before it).
        full_tables: print every validation's and the test's full tables (the balanced rows, the task's extra
            metrics) on the console too; off, they go to ``training.log`` and the console gets one line per
            validation and a short final block.
        save_every_minutes: with ``val_interval``, the resumable checkpoint is written at every validation and,
            between them, at the end of an epoch only once this many minutes have passed since the last write
            (and after the last epoch); 0 writes at every epoch end.
        step_rule: a change to each optimisation step between its backward pass and the optimiser's step (an object
            with ``between(parameters, scale, again)``, :class:`common.method.StepRule`: BSAM's second pass at
            perturbed parameters); None: the plain step.
    """

    run_dir: Path | str
    epochs: int
    batch_size: int
    workers: int = 0
    seed: int = 0
    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None
    val_interval: int = 0
    patience: int | None = None
    max_vals: int | None = None
    grad_clip: float | None = None
    print_freq: int = 10
    resume: Path | str | None = None
    overwrite: bool = False
    flags: dict = field(default_factory=dict)
    divergence_factor: float = 1e6
    sync_bn: bool = False
    channels_last: bool = False
    compile_model: bool | str = False
    persistent_workers: bool = False
    prefetch: int = 2
    branch: bool = False
    lr: float | None = None
    patience_rule: str = "best"
    save_every_minutes: float = 30.0
    full_tables: bool = False
    step_rule: object = None


@dataclass
class LoopState:
    """Where the loop stands, checkpointed as the ``trainer`` entry: the position to continue at (``epoch`` and
    the ``next_step`` within it), iterations so far, the best validation so far and the early-stopping counts
    (a checkpoint written before ``recent_scores`` existed loads with it empty)."""

    epoch: int = 0
    next_step: int = 0
    global_step: int = 0
    best_score: float = math.inf
    best_epoch: int = -1
    best_step: int = -1
    best_val: dict | None = None
    vals: int = 0
    bad_vals: int = 0
    recent_scores: list = field(default_factory=list)   # the last patience + 1 scores ('window' rule)
    train_seconds: float = 0.0       # time in training epochs (steps, their data loading, statistics passes)
    statistics_seconds: float = 0.0  # of which in the epoch-end statistics passes (FDS, VIR, SRL)
    train_samples: int = 0           # training samples stepped on (this process's share)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class Trainer:
    """Trains (:meth:`fit`) or evaluates (:meth:`evaluate`) a :class:`Task` as ``config`` says.

    ``Trainer(task, config)``, or ``Trainer(task, **fields)`` with the fields of :class:`TrainerConfig`.
    """

    def __init__(self, task: Task, config: TrainerConfig | None = None, **fields):
        config = config or TrainerConfig(**fields)
        self.task, self.config = task, config
        self.resume = Path(config.resume) if config.resume else None
        continues = self.resume is not None and not config.branch
        self.run_dir = self.resume.resolve().parent if continues else Path(config.run_dir)
        self.lock = runtime.RunLock(self.run_dir)
        self.health, self._val_labels = StepHealth(self.config.divergence_factor), None
        self.device = distributed.setup(config.device)
        self.amp_dtype = config.amp_dtype
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if config.batch_size % self.world:
            raise RunError(f"--batch_size {config.batch_size} (the global batch) is not divisible by the "
                           f"{self.world} processes; pass a multiple of the number of processes.")
        self.local_batch = config.batch_size // self.world
        if config.sync_bn and (self.world == 1 or self.device.type != "cuda"):
            raise RunError("--sync_bn synchronises BatchNorm across CUDA processes: launch with torchrun on GPUs, "
                           "or drop it.")
        self.state = LoopState()
        self.bytes_written, self.last_save = 0, time.monotonic()

    # -- set-up -------------------------------------------------------------------------------------------------
    def _prepare_run_dir(self) -> None:
        """Rank 0 checks the folder, locks it and, with ``--overwrite``, clears what an earlier run left; the other
        processes wait for it in :meth:`fit`."""
        if self.rank != 0:
            return
        run_dir, new_run = self.run_dir, self.resume is None or self.config.branch
        failed_start = new_run and not self.config.overwrite and runtime.is_failed_start(run_dir)
        if new_run and run_dir.exists() and any(run_dir.iterdir()) and not self.config.overwrite \
                and not failed_start:
            if (run_dir / CHECKPOINT).is_file():
                raise RunError(f"run folder {run_dir} already exists; pass --overwrite to reuse it, --resume "
                               f"{run_dir / CHECKPOINT} to continue it, or another --store_name.")
            raise RunError(f"run folder {run_dir} already exists and holds no checkpoint (an earlier run stopped "
                           "before its first checkpoint); pass --overwrite to reuse it or another --store_name.")
        runtime.make_run_dir(run_dir)
        self._lock_note = self.lock.acquire()
        if failed_start:
            # What an earlier start of a run left when it stopped with an error before its first checkpoint
            # (a missing prior file, a bad flag value found while loading): the same command, fixed, takes it over.
            self._lock_note = ((self._lock_note + "; ") if self._lock_note else "") + (
                f"run folder {run_dir} held only a failed start (its training.log ends with its error): reused")
        if new_run and not failed_start:
            runtime.check_overwrite(run_dir, self.config.overwrite)   # under the lock: a finished run only by name
        if new_run:
            # --overwrite: nothing of the earlier run may stay behind to be read as this run's (results.json).
            for old in run_dir.iterdir():
                if old.name != runtime.RunLock.NAME:
                    shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        for stale in run_dir.glob("*.pth.tar.*.tmp"):   # left by a kill during a checkpoint write
            stale.unlink()
        if self.config.branch:
            source = self.resume.resolve().parent / BEST_CHECKPOINT
            if source.is_file():         # the best so far, which LoopState's best_* describe
                checkpointing.copy_checkpoint(source, run_dir / BEST_CHECKPOINT)

    def _loader(self, dataset, train: bool) -> tuple[DataLoader, EpochSampler]:
        """A loader of this process's share: training shards padded to equal sizes, evaluation shards exact."""
        config = self.config
        shard = len(range(self.rank, len(dataset), self.world)) if not train else -(-len(dataset) // self.world)
        drop_last = train and shard % self.local_batch == 1
        if drop_last:
            # BatchNorm cannot train on a batch of one sample; the reference would crash after the epoch.
            self.log(f"the training set has {len(dataset)} samples, which leaves a last batch of one with "
                     f"--batch_size {config.batch_size}: that sample is skipped each epoch.")
        sampler = EpochSampler(len(dataset), self.local_batch, shuffle=train, drop_last=drop_last, rank=self.rank,
                               world=self.world, pad=train)
        workers = {"prefetch_factor": config.prefetch, "persistent_workers": train and config.persistent_workers} \
            if config.workers > 0 else {}
        loader = DataLoader(dataset, batch_size=self.local_batch, sampler=sampler, num_workers=config.workers,
                            collate_fn=self.task.collate_fn, generator=torch.Generator(),
                            pin_memory=self.device.type == "cuda", **workers)
        return loader, sampler

    def _statistics_loader(self, dataset) -> DataLoader:
        """The training set for the FDS/SRL statistics pass, in the training loader's order and random streams (the
        pass continues its sampler and worker seeds, as the references' second pass over their training loader),
        every sample included: a last batch of one joins the batch before it."""
        config = self.config
        workers = {"prefetch_factor": config.prefetch} if config.workers > 0 else {}
        return DataLoader(dataset, batch_sampler=WholeEpochBatches(self.train_sampler), num_workers=config.workers,
                          collate_fn=self.task.collate_fn, generator=self.train_loader.generator,
                          pin_memory=self.device.type == "cuda", **workers)

    def _batches(self, loader):
        for batch in loader:
            batch = to_device(batch, self.device)
            if self.config.channels_last and isinstance(batch, dict) and \
                    getattr(batch.get("input"), "dim", lambda: 0)() == 4:
                batch["input"] = batch["input"].contiguous(memory_format=torch.channels_last)
            yield batch

    def _load_model(self, model, checkpoint: dict, path) -> None:
        checkpointing.load_model_state(model, checkpoint["state_dict"], path, self.log)

    def _build_model(self) -> torch.nn.Module:
        model = self.task.build_model().to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    # -- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model, loader, with_sigma: bool = False) -> tuple:
        """Predictions and labels of a split (with ``with_sigma`` also the predictions' standard deviations, or
        None when the task gives none). With several processes each predicts its shard (every ``world``-th
        sample) and the shards are interleaved back into the single-process order when a batch gives one
        prediction per sample; otherwise (per-pixel outputs) they are concatenated in rank order."""
        model.eval()
        columns = None
        for batch in self._batches(loader):
            with autocast(self.device, self.amp_dtype):
                parts = self.task.predict(model, batch)
            columns = columns or [[] for _ in parts]
            for column, part in zip(columns, parts):
                column.append(part.detach().float().cpu())
        arrays = [torch.cat(column).numpy() for column in columns]
        if self.world > 1:
            shards = distributed.gather_objects(arrays)
            size = len(loader.dataset)
            if sum(len(shard[0]) for shard in shards) == size:
                order = np.concatenate([np.arange(r, size, self.world) for r in range(self.world)])
                merged = []
                for i, array in enumerate(arrays):
                    out = np.empty_like(array, shape=(size, *array.shape[1:]))
                    out[order] = np.concatenate([shard[i] for shard in shards])
                    merged.append(out)
                arrays = merged
            else:
                arrays = [np.concatenate([shard[i] for shard in shards]) for i in range(len(arrays))]
        preds, labels = arrays[0], arrays[1]
        if with_sigma:
            return preds, labels, arrays[2] if len(arrays) > 2 else None
        return preds, labels

    def evaluate(self, checkpoint_path) -> dict:
        """Test a checkpoint: print the metrics and write ``eval.json`` beside it."""
        self.log = self.task.log = print
        checkpoint = checkpointing.load_checkpoint(checkpoint_path)
        bad = checkpointing.non_finite_tensors(checkpoint["state_dict"])
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise RunError(f"checkpoint {checkpoint_path} holds non-finite weights ({', '.join(bad[:3])}{more}): the run "
                           "that wrote it had diverged; evaluate an earlier checkpoint of that run.")
        self.task.restore_extras(checkpoint.get("task_state") or {})
        datasets = self.task.datasets()
        model = self._build_model()
        self._load_model(model, checkpoint, checkpoint_path)
        fingerprint = self.task.data_fingerprint()
        changed = _changed_files(checkpoint.get("data") or {}, fingerprint)
        if changed:
            print(f"warning: {', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} (SHA-256) from what "
                  f"the run trained and was tested with; these metrics are of the data as it is now, not the run's "
                  "(eval.json records it under data_changed).", file=sys.stderr)
        preds, labels, sigma = self.predict(model, self._loader(datasets["test"], train=False)[0], with_sigma=True)
        metrics = self.task.metrics(preds, labels)
        if sigma is not None:
            metrics["uncertainty"] = uncertainty_metrics(preds, labels, sigma)
        print(self.task.report("test", preds, labels, metrics) if self.config.full_tables
              else self.task.summary("test", metrics))
        if "uncertainty" in metrics:
            print(uncertainty_line(metrics["uncertainty"]))
        path = Path(checkpoint_path).parent / "eval.json"
        if runtime.is_main_process():
            try:
                runtime.write_json({"test": metrics, "epoch": checkpoint.get("epoch"),
                                    "checkpoint": str(checkpoint_path), "provenance": runtime.provenance(self.device),
                                    "args": self.config.flags, "data": fingerprint,
                                    **({"data_changed": changed} if changed else {})}, path)
            except OSError as error:     # a read-only folder: the metrics above are the result
                print(f"warning: could not write {path} ({error.strerror or error}); the metrics above are the "
                      "evaluation's result.", file=sys.stderr)
            else:
                print(f"wrote {path} (every metric; --full_tables prints them all here)")
        return metrics

    # -- training -----------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train, select on validation, test the best checkpoint; returns ``{'val', 'test', 'epoch', 'step',
        'run_dir'}``."""
        checkpoint = checkpointing.load_resumable(self.resume) if self.resume else None
        previous = runtime.stop_on_sigterm()
        try:
            self._start_logging()
            self._set_up(checkpoint)
            first_epoch, first_step = self.state.epoch, self.state.next_step
            for epoch in range(first_epoch, self.config.epochs):
                if self.train_one_epoch(epoch, skip=first_step if epoch == first_epoch else 0):
                    break
            return self.test_best()
        except KeyboardInterrupt as stop:       # Ctrl-C, or SIGTERM from a scheduler (runtime.stop_on_sigterm)
            raise RunError(self._interrupted(stop)) from None
        finally:
            runtime.restore_sigterm(previous)
            self.lock.release()

    def _start_logging(self) -> None:
        """The run folder, the seed, the log (its first lines: the run's provenance) and tensorboard scalars."""
        self._prepare_run_dir()
        distributed.barrier()
        runtime.seed_everything(self.config.seed)
        self.logger = logger = runtime.make_logger(self.run_dir)
        if self.rank != 0:
            logger.setLevel("WARNING")     # one log: rank 0's
        self.log = self.task.log = logger.info
        self.warn = logger.warning
        self.provenance = runtime.provenance(self.device)
        for line in runtime.provenance_lines(self.provenance, self.config.flags):
            self.log_file(line)
        if getattr(self, "_lock_note", None):
            self.log(self._lock_note)
        if self.config.branch:
            self.log(f"a new run from {self.resume}, continued in {self.run_dir} (its folder is left as it is)")
        self.scalars = runtime.ScalarLogger(self.run_dir)
        self.log(f"run folder {self.run_dir}  device {self.device}" + (f"  processes {self.world} (global batch "
                 f"{self.config.batch_size} = {self.world} × {self.local_batch})" if self.world > 1 else "")
                 + f"  (flags and provenance: {self.run_dir / 'training.log'})")

    def _set_up(self, checkpoint: dict | None) -> None:
        """Data, model, objective, optimiser and loaders, restored from ``checkpoint`` when resuming."""
        self.datasets = datasets = self.task.datasets()
        self.data_fingerprint = self.task.data_fingerprint()
        model = self._build_model()
        if self.config.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.objective = self.task.build_objective().to(self.device)
        if self.config.compile_model:
            backend = self.config.compile_model
            model = torch.compile(model, backend=backend if isinstance(backend, str) else "inductor")
        self.model = model
        distributed.broadcast_state(self.model)
        distributed.broadcast_state(self.objective)
        self.optimizer, self.scheduler = self.task.build_optimizer(self.model, self.objective)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self._resume_rng = checkpoint["rng"] if checkpoint is not None else None
        if checkpoint is not None:
            self._restore(checkpoint, model=self.model, objective=self.objective, optimizer=self.optimizer,
                          scheduler=self.scheduler, scaler=self.scaler)
            self.state.load_state_dict(checkpoint["trainer"])
            self.log(f"resumed from {self.resume} at epoch {self.state.epoch}, step {self.state.next_step}")
            self._apply_lr()
        self.train_loader, self.train_sampler = self._loader(datasets["train"], train=True)
        self.stats_loader = self._statistics_loader(datasets["train"]) if "stats" not in datasets else \
            self._loader(datasets["stats"], train=False)[0]
        self.val_loader = self._loader(datasets["val"], train=False)[0]

    def _apply_lr(self) -> None:
        """On resume, ``config.lr`` other than the checkpoint's: the model group's learning rate and its schedule
        rescaled by their ratio, from where the run continues."""
        group = self.optimizer.param_groups[0]
        base = self.scheduler.base_lrs[0] if self.scheduler is not None else group.get("initial_lr", group["lr"])
        if self.config.lr is None or math.isclose(self.config.lr, base, rel_tol=1e-12):
            return
        ratio = self.config.lr / base
        # The groups that follow the model's learning rate (its own, and a fixed fraction of it such as UVOTE's
        # log-scale heads) are rescaled; a group at its own rate (Balanced MSE's σ) is not.
        for index, scaled in enumerate(self.optimizer.param_groups):
            if not scaled.get("follows_lr", index == 0):
                continue
            scaled["lr"] *= ratio
            if "initial_lr" in scaled:
                scaled["initial_lr"] *= ratio
            if self.scheduler is not None:
                self.scheduler.base_lrs[index] *= ratio
        self.log(f"--lr {self.config.lr:g} (the checkpoint's was {base:g}): the learning rate is now {group['lr']:g}")

    def train_one_epoch(self, epoch: int, skip: int = 0) -> bool:
        """One epoch from its batch ``skip`` on (a mid-epoch resume), the statistics pass and the epoch's
        validation (or every ``val_interval`` iterations); True when early stopping says to stop."""
        config, state, model = self.config, self.state, self.model
        # Every epoch is a function of (seed, epoch, state): resuming at an epoch boundary is exact.
        epoch_seed = config.seed * 100_003 + epoch
        runtime.seed_everything(epoch_seed)
        self.train_loader.generator.manual_seed(epoch_seed)
        self.train_sampler.set_epoch(epoch_seed, skip)
        if skip:
            runtime.set_rng_state(self._resume_rng)   # mid-epoch: continue the saved random streams
        steps_per_epoch = skip + math.ceil(len(self.train_sampler) / self.local_batch)
        # The modules that follow the epoch (FDS calibrates from --start_smooth on) are told it once, here.
        for module in checkpointing.unwrap(model).modules():
            if callable(getattr(module, "set_epoch", None)):
                module.set_epoch(epoch)
        model.train()
        meters = DeviceMeters()
        progress = runtime.Progress(self.logger, steps_per_epoch, f"epoch {epoch}", config.print_freq)
        started = time.monotonic()
        for step, batch in enumerate(self._batches(self.train_loader), start=skip):
            self.position = (epoch, step)
            self.train_step(batch, epoch, step, meters)
            state.global_step += 1
            state.train_samples += batch_size_of(batch)
            if progress.due(step):
                # The one host read of a printing step: the losses' health, then the running means.
                self._check_health()
                progress.log(step, meters.averages())
            if config.val_interval and state.global_step % config.val_interval == 0:
                if self.validate(epoch, next_epoch=epoch, next_step=step + 1):
                    return True
                model.train()
        self._check_health()        # a host read: the epoch's steps are done on the device here
        statistics_started = time.monotonic()
        self.task.statistics_pass(model, self.objective, self._batches(self.stats_loader), epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)      # once an epoch, so the pass's own time is measured
        state.statistics_seconds += time.monotonic() - statistics_started
        state.train_seconds += time.monotonic() - started
        if self.scheduler is not None:
            self.scheduler.step()
        for name, average in meters.averages().items():
            self.scalars.log(f"train/{name}", average, epoch)
        self.scalars.log("train/lr", self.optimizer.param_groups[0]["lr"], epoch)
        if not config.val_interval:
            return self.validate(epoch, next_epoch=epoch + 1, next_step=0)
        if epoch + 1 == config.epochs or time.monotonic() - self.last_save >= 60 * config.save_every_minutes:
            self.save(next_epoch=epoch + 1, next_step=0)
        return False

    def validate(self, epoch: int, next_epoch: int, next_step: int) -> bool:
        """Validate, select, checkpoint (to continue at ``next_epoch``, ``next_step``); True when early stopping
        says to stop."""
        state, config = self.state, self.config
        preds, labels = self.predict(self.model, self.val_loader)
        self._val_labels = labels
        metrics = self.task.metrics(preds, labels)
        score = self.task.selection_score(preds, labels, metrics)
        state.vals += 1
        self.log_table(f"epoch {epoch} step {state.global_step} validation\n"
                       + self.task.report("val", preds, labels, metrics))
        for name, value in flatten_metrics(metrics, "val/").items():
            self.scalars.log(name, value, state.global_step)
        is_best = score < state.best_score
        if is_best:
            state.best_score, state.best_epoch, state.best_step = score, epoch, state.global_step
            state.best_val, state.bad_vals = metrics, 0
        else:
            state.bad_vals += 1
        self.log(f"epoch {epoch}: {self.task.selection_name} {score:.4f} (best {state.best_score:.4f} at "
                 f"epoch {state.best_epoch}, step {state.best_step})")
        if config.patience is not None:
            state.recent_scores = (state.recent_scores + [score])[-(config.patience + 1):]
        self.save(next_epoch, next_step, is_best)
        if self._out_of_patience(score):
            return True
        if config.max_vals is not None and state.vals >= config.max_vals:
            self.log(f"stop: --max_vals {config.max_vals} validations reached")
            return True
        return False

    def _out_of_patience(self, score: float) -> bool:
        patience, state = self.config.patience, self.state
        if patience is None:
            return False
        if self.config.patience_rule == "window":
            # As the reference's check: only once more than patience + 1 validations have run.
            if state.vals > patience + 1 and score >= max(state.recent_scores):
                self.log(f"early stop: validation {score:.4f} is the worst of the last {patience + 1} (the "
                         "window rule, --patience_rule window)")
                return True
            return False
        if state.bad_vals >= patience:
            self.log(f"early stop: {patience} validations without improvement")
            return True
        return False

    def save(self, next_epoch: int, next_step: int, is_best: bool = False) -> None:
        """The resumable checkpoint (and, when ``is_best``, the best one), to continue at ``next_epoch``,
        ``next_step``; never of a model whose loss went non-finite or diverged since the last check."""
        self._check_health()
        self.state.epoch, self.state.next_step = next_epoch, next_step
        # The best checkpoint holds what evaluation, RRT and the final test read; the resumable one also the
        # optimiser, schedule, scaler and random streams (on STS-B the optimiser is two thirds of its size).
        extras = self.task.checkpoint_extras()      # written only by a task that has some
        best = {"epoch": next_epoch, "state_dict": checkpointing.unwrap(self.model).state_dict(),
                "objective": self.objective.state_dict(), "trainer": self.state.state_dict(),
                "benchmark": self.task.benchmark, "args": self.config.flags, "data": self.data_fingerprint,
                **({"task_state": extras} if extras else {})}
        payload = {**best, "optimizer": self.optimizer.state_dict(),
                   "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                   "scaler": self.scaler.state_dict(), "rng": runtime.rng_state()}
        if runtime.is_main_process():
            if is_best:
                self.bytes_written += checkpointing.save_checkpoint(best, self.run_dir / BEST_CHECKPOINT)
            self.bytes_written += checkpointing.save_checkpoint(payload, self.run_dir / CHECKPOINT)
        self.last_save = time.monotonic()

    def test_best(self) -> dict:
        """Test the best checkpoint; write ``results.json`` and the test predictions."""
        distributed.barrier()
        best_path, state = self.run_dir / BEST_CHECKPOINT, self.state
        if not best_path.is_file():
            raise RunError(f"no validation ran (--val_interval {self.config.val_interval} exceeds the "
                           f"{state.global_step} training iterations); lower --val_interval or raise --epoch.")
        best = checkpointing.load_checkpoint(best_path)
        self._load_model(self.model, best, best_path)
        preds, labels, sigma = self.predict(self.model, self._loader(self.datasets["test"], train=False)[0],
                                            with_sigma=True)
        test = self.task.metrics(preds, labels)
        if sigma is not None:
            test["uncertainty"] = uncertainty_metrics(preds, labels, sigma)
        heading = f"test of the best checkpoint (epoch {state.best_epoch}, step {state.best_step})"
        self.log_table(f"{heading}\n" + self.task.report("test", preds, labels, test))
        self._check_against_baseline(state.best_score)
        self.log_file(f"checkpoints written by this run: {self.bytes_written / 2 ** 20:.1f} MiB")
        cost = self._cost()
        result = {"val": best["trainer"]["best_val"], "test": test, "epoch": state.best_epoch,
                  "step": state.best_step, "cost": cost, **({"benchmark": self.task.benchmark}
                                                            if self.task.benchmark else {})}
        self.scalars.close()
        stale = self.run_dir / "eval.json"
        if runtime.is_main_process() and stale.is_file():
            # An --evaluate of this folder's best checkpoint while the run trained: it describes an earlier model.
            stale.replace(self.run_dir / "eval.earlier.json")
            self.log(f"{stale} was the evaluation of an earlier best checkpoint of this run: moved to "
                     "eval.earlier.json (results.json holds the final test)")
        if runtime.is_main_process():    # the predictions, then results.json last, each atomic
            runtime.write_run_results(self.run_dir, {**result, "provenance": self.provenance,
                                                     "args": self.config.flags},
                                      lambda path: self.task.save_predictions(path, preds, labels, sigma))
        distributed.barrier()            # every process returns once rank 0's files are written
        if not self.config.full_tables:
            self.log_console(f"{heading}\n{self.task.summary('test', test)}")
        self.log_console(self._final_block(cost, test))
        return {**result, "run_dir": str(self.run_dir)}

    def _cost(self) -> dict:
        """What the run cost (``results.json``'s ``cost``): wall time in training epochs (summed over resumes)
        and the share of it in the epoch-end statistics passes, training samples per second (all processes),
        peak memory of this process (host; CUDA when used), the device and the number of processes."""
        import resource
        state = self.state
        peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # KiB on Linux
        peak_cuda = torch.cuda.max_memory_allocated(self.device) / 2 ** 20 if self.device.type == "cuda" else None
        return {"wall_seconds": round(state.train_seconds, 6),
                "statistics_share": round(state.statistics_seconds / state.train_seconds, 6)
                if state.train_seconds > 0 else None,
                "train_samples_per_second": round(state.train_samples * self.world / state.train_seconds, 3)
                if state.train_seconds > 0 else None,
                "peak_host_memory_mib": round(peak_host, 1),
                "peak_cuda_memory_mib": None if peak_cuda is None else round(peak_cuda, 1),
                "device": str(self.device), "processes": self.world}

    def _final_block(self, cost: dict, test: dict) -> str:
        """The lines a finished run ends with: its uncertainty metrics, its folder and files, its cost, and the
        command that compares it with other runs."""
        lines = []
        if "uncertainty" in test:
            lines.append(uncertainty_line(test["uncertainty"]))
        speed = cost["train_samples_per_second"]
        share = cost["statistics_share"]
        lines.append(f"cost: {cost['wall_seconds']:.0f} s training"
                     + (f" ({100 * share:.0f} % in statistics passes)" if share and share >= 0.005 else "") + ", "
                     + (f"{speed:.1f} samples/s, " if speed else "")
                     + f"peak memory {cost['peak_host_memory_mib']:.0f} MiB"
                     + (f" (CUDA {cost['peak_cuda_memory_mib']:.0f} MiB)" if cost["peak_cuda_memory_mib"] else "")
                     + f" on {cost['device']}" + (f" × {cost['processes']}" if cost["processes"] > 1 else ""))
        lines.append(f"run folder {self.run_dir}: results.json (metrics, flags, cost), test_predictions.npz, "
                     f"{BEST_CHECKPOINT}, {CHECKPOINT}, training.log (full tables)")
        lines.append(f"compare runs: python -m common.tools.report {self.run_dir} [other run folders]")
        return "\n".join(lines)

    def train_step(self, batch, epoch: int, step: int, meters: DeviceMeters) -> None:
        """One optimisation step on ``batch``, its losses added to ``meters`` and its health recorded, all on the
        device: nothing here waits for the GPU (a non-finite or diverging loss is caught by the next
        :meth:`_check_health`, which names this step). With ``config.step_rule`` the rule works between the backward
        pass and the optimiser's step (:meth:`_rule_between`: BSAM's second pass); without one, nothing else runs."""
        model, objective, optimizer, scaler = self.model, self.objective, self.optimizer, self.scaler
        components = self._losses(batch, epoch, step)
        total = sum(components.values())
        self.health.update(components, total, epoch, step)
        meters.update({**components, "total": total}, batch_size_of(batch))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        distributed.average_gradients(list(model.parameters()) + list(objective.parameters()))
        if self.config.step_rule is not None:
            self._rule_between(batch, epoch, step)
        if self.config.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        distributed.broadcast_state(model, buffers_only=True)    # rank 0's BatchNorm statistics, as DDP keeps

    def _losses(self, batch, epoch: int, step: int) -> dict:
        """The objective's components on ``batch`` (autocast), without the losses' value checks."""
        try:
            # The losses' value checks would each wait for the device; the health record replaces them here.
            with autocast(self.device, self.amp_dtype), checks.values_unchecked():
                return self.objective(self.model, batch, epoch)
        except NonFiniteError as error:
            raise RunError(f"training stopped at epoch {epoch}, step {step}: {error} The model diverged or the data "
                           f"hold non-finite values; {self._last_good_checkpoint()} (lower --lr or check the "
                           "data).") from error
        except Exception as error:
            if not self.config.compile_model or "dynamo" not in type(error).__module__ + str(type(error)):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RunError(f"--compile could not compile this model here ({first}); drop --compile.") from error

    def _rule_between(self, batch, epoch: int, step: int) -> None:
        """The step rule's work between the first backward pass and the optimiser's step (``config.step_rule``):
        it may move the optimiser's parameters and run the same batch again (``again``), whose gradients the
        optimiser then steps with. A second pass records no training features (the objective's
        ``repeated_pass``, when it has one: ``--stats_from_training`` keeps the first pass's), and its losses are
        neither logged nor health-checked (the first pass's are); a non-finite second gradient is the scaler's
        to skip, or the next step's loss to report."""
        model, objective, optimizer, scaler = self.model, self.objective, self.optimizer, self.scaler
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        # The first pass's gradients carry the scaler's scale; the rule gets it as a device tensor (get_scale()
        # would read it on the host).
        scale = scaler.scale(torch.ones((), device=self.device)) if scaler.is_enabled() else None
        repeated = getattr(objective, "repeated_pass", contextlib.nullcontext)

        def again():
            optimizer.zero_grad(set_to_none=True)
            with repeated():
                components = self._losses(batch, epoch, step)
            scaler.scale(sum(components.values())).backward()
            distributed.average_gradients(list(model.parameters()) + list(objective.parameters()))

        self.config.step_rule.between(parameters, scale, again)

    def _check_health(self) -> None:
        """End the run with one sentence if a step since the start had a non-finite loss, or one more than
        ``divergence_factor`` times the first (one host read; the printing steps, each epoch's end and every
        checkpoint call it)."""
        problem = self.health.problem()
        if problem is None:
            return
        where, kept = f"epoch {problem['epoch']}, step {problem['step']}", self._last_good_checkpoint()
        if problem["kind"] == "non-finite":
            raise RunError(f"the {' and '.join(problem['names']) or 'total'} loss became non-finite at {where}; "
                           f"training stopped and {kept} (lower --lr or check the data).")
        raise RunError(f"the training loss grew from {problem['first']:.4g} to {problem['size']:.4g} by {where} "
                       f"(more than {self.health.factor:g} times): the run diverged; training stopped and {kept} "
                       "(lower --lr).")

    def _interrupted(self, stop: KeyboardInterrupt) -> str:
        """The sentence for a run stopped by a signal: where, and the command that continues it."""
        signal_name = getattr(stop, "signal_name", "Ctrl-C (SIGINT)")
        epoch, step = getattr(self, "position", (self.state.epoch, self.state.next_step))
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return (f"stopped by {signal_name} at epoch {epoch}, step {step}, before the first checkpoint; nothing "
                    "to resume: start the run again.")
        return (f"stopped by {signal_name} at epoch {epoch}, step {step}; the last checkpoint (to continue at epoch "
                f"{self.state.epoch}, step {self.state.next_step}) is intact: continue with `python train.py "
                f"--resume {path.resolve()}`.")

    def _last_good_checkpoint(self) -> str:
        """What a stopped run leaves to resume from, said only of a checkpoint whose tensors are all finite."""
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return "no checkpoint was written yet"
        if checkpointing.is_good_checkpoint(path):
            return f"the last good checkpoint is {path}"
        return f"the last checkpoint, {path}, holds non-finite values too: start again (lower --lr)"

    def log_fatal(self, sentence: str) -> None:
        """The sentence a run ends with, also as the last line of its ``training.log``."""
        logger = getattr(self, "logger", None)
        if logger is None:
            return
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, f"error: {sentence}", None, None)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.emit(record)
                handler.flush()

    def _check_against_baseline(self, best_score: float) -> None:
        """Warn (stderr and the log file) when the best model is no better on validation than the task's trivial
        one."""
        labels = self._val_labels if self._val_labels is not None else self.predict(self.model, self.val_loader)[1]
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

    def log_file(self, message: str) -> None:
        """To ``training.log`` only (the flag dump, the full tables)."""
        logger = getattr(self, "logger", None)
        if logger is None or self.rank != 0:
            return
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    def log_console(self, message: str) -> None:
        """To the console only, as it is (the short final block; the log has the full tables)."""
        if self.rank == 0:
            print(message, flush=True)

    def log_table(self, message: str) -> None:
        """A full table: to ``training.log``, and to the console with ``full_tables``."""
        (self.log if self.config.full_tables else self.log_file)(message)

    def log(self, message: str) -> None:   # replaced by the run's logger in fit/evaluate
        logging.getLogger("dir").info(message)

    def warn(self, message: str) -> None:  # replaced by the run's logger in fit
        print(message, file=sys.stderr)


def uncertainty_line(u: dict) -> str:
    """One line of :func:`common.metrics.uncertainty_metrics` results, as a run and ``--evaluate`` print them."""
    return (f"uncertainty: NLL {u['nll']:.3f}  ENCE {u['ence']:.3f}  AUSE {u['ause']:.3f}  "
            f"mean σ {u['mean_sigma']:.3f}")


def _changed_files(saved: dict, current: dict) -> list[str]:
    """The data files whose fingerprint differs between a checkpoint (``saved``) and now (none when either side
    has none)."""
    return [name for name in saved if name in current and saved[name] != current[name]]
