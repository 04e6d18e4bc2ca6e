"""The training engine shared by the benchmarks: device and seeding, run folders, logging, checkpoints.

Side effects (log files, tensorboard scalars, checkpoints, result files) happen only in the main process
(``is_main_process``), so ``torchrun`` training can be added without restructuring; models are unwrapped
(``module.`` prefixes stripped) before saving, and loading accepts either form.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class RunError(Exception):
    """A problem the user can fix (bad path, corrupt file, non-finite loss): printed as one sentence."""


# -- device and seeding -------------------------------------------------------------------------------------
def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cuda`` without a GPU is a :class:`RunError`."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RunError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
        return torch.device("cuda", gpu or 0)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def rng_state() -> dict:
    """Python, NumPy and torch RNG states, in types that ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {"python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- checkpoints ----------------------------------------------------------------------------------------------
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DataParallel / DistributedDataParallel / ``torch.compile``."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop the ``module.`` prefix that DataParallel/DDP checkpoints carry."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _state_bytes(value) -> int:
    """Bytes of the tensors in a (nested) checkpoint state: about its size on disk."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_state_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_state_bytes(v) for v in value)
    return 0


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, or torch's serializer reporting a failed write (its C++ message, not an errno)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left" in text or "file write failed" in text or "unexpected pos" in text


def save_checkpoint(state: dict, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``.

    A full disk is a :class:`RunError` naming the folder and the space needed; the previous file at ``path``
    stays intact, and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        needed = _state_bytes(state) / 2 ** 20
        free = shutil.disk_usage(path.parent).free / 2 ** 20
        raise RunError(f"could not write checkpoint {path}: the disk holding {path.parent} is full (the checkpoint "
                       f"needs about {needed:.0f} MiB, {free:.0f} MiB are free); free space or pass another "
                       f"--store_root, then --resume from the last checkpoint, which is intact.") from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def numpy_scalar_globals() -> list:
    """What ``torch.load(weights_only=True)`` needs for numpy scalars: ``scalar``, ``dtype`` and the scalar dtypes."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


def load_checkpoint(path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` with one clear sentence for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; check the --resume/--pretrained path.")
    try:
        # The NYUD2 references store numpy float64 scalars (`error`, per-shot metrics): allow exactly the numpy
        # scalar reconstructor and dtypes, under their NumPy 1 and 2 module names; nothing else is unpickled.
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling error means the same thing to the user
        raise RunError(f"checkpoint {path} could not be read ({type(error).__name__}); it is corrupt or not a "
                       "checkpoint of this repo: pass another file.") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RunError(f"checkpoint {path} has no 'state_dict'; it is not a checkpoint of this repo.")
    checkpoint["state_dict"] = strip_module_prefix(checkpoint["state_dict"])
    return checkpoint


# -- logging --------------------------------------------------------------------------------------------------
def make_logger(run_dir: Path | None, name: str = "dir") -> logging.Logger:
    """A logger writing information to stdout, warnings to stderr (once each) and both, in the main process, to
    ``run_dir/training.log``."""
    logger = logging.getLogger(f"{name}.{run_dir}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    stdout = logging.StreamHandler(sys.stdout)
    stdout.addFilter(lambda record: record.levelno < logging.WARNING)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    for stream in (stdout, stderr):
        stream.setFormatter(formatter)
        logger.addHandler(stream)
    if run_dir is not None and is_main_process():
        file_handler = logging.FileHandler(Path(run_dir) / "training.log")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


class ScalarLogger:
    """tensorboard_logger scalars in the run folder (a no-op outside the main process)."""

    def __init__(self, run_dir: Path | None):
        self._logger = None
        if run_dir is not None and is_main_process():
            from tensorboard_logger import Logger
            self._logger = Logger(str(run_dir), flush_secs=5)

    def log(self, name: str, value: float, step: int) -> None:
        if self._logger is not None and value == value:   # NaN (an empty shot) is not a scalar to plot
            self._logger.log_value(name, float(value), step)

    def close(self) -> None:
        """Close the event file (tensorboard_logger flushes after every event; this releases the handle)."""
        writer = getattr(self._logger, "_writer", None)
        if writer is not None and not writer.closed:
            writer.close()


class AverageMeter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else math.nan


class Progress:
    """A progress line with the running loss and the time left in the epoch."""

    def __init__(self, logger, total_steps: int, prefix: str, every: int):
        self.logger, self.total, self.prefix, self.every = logger, total_steps, prefix, max(1, every)
        self.start = time.time()

    def step(self, i: int, meters: dict) -> None:
        if (i + 1) % self.every and i + 1 != self.total:
            return
        elapsed = time.time() - self.start
        eta = elapsed / (i + 1) * (self.total - i - 1)
        values = "  ".join(f"{k} {m.avg:.4f}" for k, m in meters.items())
        self.logger.info(f"{self.prefix} [{i + 1}/{self.total}]  {values}  ETA {int(eta // 60):d}:{int(eta % 60):02d}")


def write_json(data: dict, path: Path) -> None:
    """Atomic JSON write (temporary file + rename). Empty shots keep their NaN (Python's JSON reads it back)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def load_pretrained_trunk(model: torch.nn.Module, path, *, part: str, fits: str, flags: str, log,
                          head=("linear.", "fc.")) -> None:
    """RRT's first step: load every tensor of checkpoint ``path`` except the regression head into ``model``.

    A reference checkpoint's FDS statistics are mapped or dropped as for evaluation
    (:func:`common.fds.adapt_fds_state`). Every trunk tensor must fit: otherwise one sentence names the first
    mismatch and the ``flags`` to pass. ``part`` names the trunk in messages, ``fits`` the model it must fit.
    """
    from common.fds import adapt_fds_state
    state = adapt_fds_state(load_checkpoint(path)["state_dict"], model, log)
    trunk = {k: v for k, v in state.items() if not k.startswith(tuple(head))}
    own = model.state_dict()
    misfits = [k for k, v in trunk.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith(tuple(head)) and k not in trunk]
    if misfits or missing:
        first = (misfits or missing)[0]
        shape = tuple(trunk[first].shape) if first in trunk else "absent"
        ours = tuple(own[first].shape) if first in own else "absent"
        raise RunError(f"the {part} of --pretrained {path} does not fit {fits} (first mismatch: {first}, checkpoint "
                       f"{shape}, model {ours}); pass the {flags} it was trained with.")
    model.load_state_dict(trunk, strict=False)
    log(f"loaded {len(trunk)} of the model's {len(own)} tensors (the {part}) from {path}")


def train_only(model: torch.nn.Module, prefix: str) -> None:
    """RRT's second step: only the parameters whose names start with ``prefix`` (the head) keep training."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefix))
