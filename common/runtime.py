"""What a run needs around the training loop: device and seeding, RNG state, logging and progress, JSON files.

Side effects (log files, tensorboard scalars, result files) happen only in the main process
(``is_main_process``), so the same code runs under ``torchrun``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.errors import RunError


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


class Progress:
    """A progress line with the running loss and the time left in the epoch, every ``every`` steps and at the
    epoch's last."""

    def __init__(self, logger, total_steps: int, prefix: str, every: int):
        self.logger, self.total, self.prefix, self.every = logger, total_steps, prefix, max(1, every)
        self.start = time.time()

    def due(self, i: int) -> bool:
        """Whether step ``i`` (0-based) prints."""
        return (i + 1) % self.every == 0 or i + 1 == self.total

    def log(self, i: int, averages: dict[str, float]) -> None:
        elapsed = time.time() - self.start
        eta = elapsed / (i + 1) * (self.total - i - 1)
        values = "  ".join(f"{k} {v:.4f}" for k, v in averages.items())
        self.logger.info(f"{self.prefix} [{i + 1}/{self.total}]  {values}  ETA {int(eta // 60):d}:{int(eta % 60):02d}")


def open_hdf5(path, command: str):
    """``h5py.File(path, 'r')``, or one sentence naming the file and the ``command`` that re-creates it when the
    file is truncated or corrupt (h5py's raw ``OSError`` otherwise)."""
    import h5py
    return read_hdf5(path, command, lambda: h5py.File(path, "r"))


def read_hdf5(path, command: str, read):
    """``read()`` (a read from an open HDF5 file), with the sentence of :func:`open_hdf5` if the data under it are
    truncated (a file can open and still fail on a chunk that is not there)."""
    try:
        return read()
    except OSError as error:
        raise RunError(f"{path} could not be read ({str(error).split(';')[0]}): it is truncated or corrupt; "
                       f"re-create it with `{command}`.") from error


class HDF5Pack:
    """A pack file read by a data set: ``path`` must exist (else one sentence with the ``command`` that writes it),
    its attributes at ``group`` (the file's root by default) must record ``csv_sha256`` of the split file ``csv``
    and every value in ``attributes`` (else one sentence to re-pack it), and every read goes through
    :func:`read_hdf5`. The file is opened lazily in each process (an HDF5 handle must not cross a fork into
    DataLoader workers). Subclasses give :meth:`__getitem__` with :meth:`read`."""

    def __init__(self, path, command: str, csv, *, group: str | None = None, attributes: dict | None = None,
                 what: str = ""):
        attributes = dict(attributes or {})
        self.path, self.command, self.group = Path(path), command, group
        if not self.path.is_file():
            raise RunError(f"--data_format hdf5 needs {self.path}; write it with `{command}`.")
        expected = {"csv_sha256": sha256_of(csv), **attributes}
        with open_hdf5(self.path, command) as handle:
            def attributes_of():
                if group is None:
                    return dict(handle.attrs)
                return dict(handle[group].attrs) if group in handle else {}

            found = read_hdf5(self.path, command, attributes_of)
            # Stored numbers come back as NumPy scalars: compare as the values they are.
            if any(_plain(found.get(key)) != value for key, value in expected.items()):
                raise RunError(f"{self.path} was packed from another {Path(csv).name}{what}; re-pack it with "
                               f"`{command}`.")
            self.opened(handle)
        self.handle = None

    def opened(self, handle) -> None:
        """Read what the pack's index needs while it is open at construction (default: nothing)."""

    def read(self, read):
        """``read(node)`` of this pack's group (or root), the file opened on first use in this process."""
        if self.handle is None:
            self.handle = open_hdf5(self.path, self.command)
        return read_hdf5(self.path, self.command,
                         lambda: read(self.handle[self.group] if self.group else self.handle))

    def __getstate__(self):
        return {**self.__dict__, "handle": None}


def _plain(value):
    """An HDF5 attribute as a plain Python value (bytes decoded, NumPy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if hasattr(value, "item") else value


def make_run_dir(run_dir: Path) -> None:
    """Create a run folder (and its parents), or say in one sentence why it cannot be (read-only, a file in the
    way), before anything trains."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-")
        probe.close()
    except OSError as error:
        raise RunError(f"cannot write the run folder {run_dir} ({error.strerror or error}); pass a --store_root "
                       "where this user can write.") from error


class DiskFullError(RunError, OSError):
    """A write that found the disk full (ENOSPC, EDQUOT): one sentence naming the file, the free and the needed
    space. Also an ``OSError``, so code that already tolerates a failed write (``--evaluate``'s ``eval.json``)
    still does."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC or EDQUOT, or a C++ serializer (torch, HDF5) reporting a failed write in words instead of an errno."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left" in text or "file write failed" in text or "unexpected pos" in text or \
        "Disk quota exceeded" in text


def free_bytes(folder) -> int | None:
    """Free bytes of the disk holding ``folder`` (its nearest existing parent), or None where that cannot be read."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mib(size: int | None) -> str:
    if size is None:
        return "an unknown amount"
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 2 ** 20:.1f} MiB" if size >= 2 ** 20 else f"{size / 1024:.1f} KiB"


def disk_full(path, needed: int | None, advice: str, written: int | None = None,
              before: bool = False) -> DiskFullError:
    """The one sentence of a full disk: the file, the space free on its disk, the space it needs (``before``: the
    write was refused before it began)."""
    path = Path(path)
    if needed is not None:
        need = f"it needs about {_mib(needed)}"
    elif written:
        need = f"it needs more than the {_mib(written)} written before the disk filled"
    else:
        need = "it needs more than that"
    free = _mib(free_bytes(path.parent))
    if before:
        return DiskFullError(f"will not write {path}: the disk holding {path.parent} has too little space ({free} "
                             f"free, {need}); nothing was written: {advice}.")
    return DiskFullError(f"could not write {path}: the disk holding {path.parent} is full ({free} free, {need}); "
                         f"nothing half-written was left: {advice}.")


def check_free_space(path, needed: int, advice: str) -> None:
    """Refuse before writing ``needed`` bytes to ``path`` when its disk has less free (one sentence)."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < needed:
        raise disk_full(path, needed, advice, before=True)


def write_atomic(path, write, *, needed: int | None = None, advice: str = "free space and run it again") -> int:
    """Write ``path`` so that it is either complete or absent (the earlier file, if any, intact): ``write(tmp)``
    writes a temporary file in the same folder (its name ends in ``path``'s suffix, so ``np.savez`` and
    ``savefig`` keep it), which is flushed to disk (``fsync``) and renamed over ``path``. Returns the bytes
    written.

    ``needed`` (bytes, an estimate): refused before writing when the disk has less free. A full disk
    (ENOSPC) is a :class:`DiskFullError` naming the file and the space free and needed, ending with ``advice``;
    any other error propagates. The temporary file never stays behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if needed is not None:
        check_free_space(path, needed, advice)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        written = os.path.getsize(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
        return written
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise disk_full(path, needed, advice, tmp.stat().st_size if tmp.exists() else None) from error
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(data: dict, path: Path, advice: str = "free space and run it again") -> None:
    """Atomic JSON write (:func:`write_atomic`). Empty shots keep their NaN (Python's JSON reads it back)."""
    text = json.dumps(data, indent=2)

    def write(tmp):
        with open(tmp, "w") as handle:
            handle.write(text)

    write_atomic(path, write, advice=advice)


def update_json(path, update, empty=None, advice: str = "free space and run it again") -> dict:
    """Read-modify-write of a JSON file shared by several processes: under an exclusive ``flock`` on
    ``<path>.lock``, ``update(current)`` gets the file's content (``empty()``, default ``{}``, when there is no
    file) and returns the new content, written atomically. So two writers each add their entry and neither loses
    the other's. A file that is not valid JSON is a :class:`RunError` naming it (never replaced)."""
    import fcntl
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                try:
                    current = json.loads(path.read_text())
                except ValueError as error:
                    raise RunError(f"{path} is not valid JSON ({error}); it was edited by hand or written by "
                                   "another program: repair or move it, then run again.") from None
            else:
                current = {} if empty is None else empty()
            new = update(current)
            write_json(new, path, advice)
            return new
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_run_results(run_dir, results: dict, save_predictions) -> None:
    """The end of a run: ``test_predictions.npz`` (``save_predictions(path)`` writes it), then ``results.json``,
    last, each atomically (:func:`write_atomic`). A ``results.json`` therefore always stands beside complete
    predictions, and a run that holds one is finished. A full disk is one sentence naming the file and the space,
    and what writes the results again: ``--resume`` of the run's last checkpoint (intact) tests the best one."""
    run_dir = Path(run_dir)
    advice = (f"free space, then `train.py --resume {run_dir / 'ckpt.pth.tar'}` tests the best checkpoint again "
              "and writes the results (the checkpoints are intact)")
    write_atomic(run_dir / "test_predictions.npz", save_predictions, advice=advice)
    write_json(results, run_dir / "results.json", advice)


def check_overwrite(run_dir, overwrite) -> None:
    """What ``--overwrite`` may delete, checked while the run-folder lock is held (so a run that finishes in the
    meantime is seen): a folder holding ``results.json`` (a finished run) only when ``--overwrite`` names it
    (``--overwrite RUN_NAME``, the folder's own name); a bare ``--overwrite`` reuses the folders of unfinished runs
    only. RunError, one sentence, otherwise."""
    run_dir = Path(run_dir)
    named = isinstance(overwrite, str) and not isinstance(overwrite, bool)
    if named and overwrite != run_dir.name:
        raise RunError(f"--overwrite {overwrite} names another run folder than this run's {run_dir}; pass "
                       f"--overwrite {run_dir.name} to replace it, or a bare --overwrite for an unfinished run.")
    if (run_dir / "results.json").is_file() and not named:
        raise RunError(f"run folder {run_dir} holds a finished run (results.json), which --overwrite deletes only "
                       f"when named: pass --overwrite {run_dir.name} to replace it, or another --store_name.")


def is_failed_start(run_dir) -> bool:
    """Whether ``run_dir`` holds only what a run left that stopped with an error before its first checkpoint: no
    checkpoint and no ``results.json``, and a ``training.log`` whose last line is that error (``HH:MM:SS error:
    …``, as every run's fatal sentence ends its log)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any(run_dir.glob("*.pth.tar")) or (run_dir / "results.json").exists():
        return False
    try:
        lines = (run_dir / "training.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return False
    return bool(lines) and re.match(r"^\d\d:\d\d:\d\d error: ", lines[-1]) is not None


def sha256_of(path) -> str:
    """The SHA-256 of a file (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(folder=None) -> str:
    """The commit of the checkout holding ``folder`` (default: this repo), ``+ uncommitted changes`` when the
    tracked files differ from it, or ``not a git checkout``."""
    folder = Path(folder or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return commit.stdout.strip() + (" + uncommitted changes" if dirty else "")


def provenance(device: torch.device) -> dict:
    """What produced a run, for its log and result files: the code's git commit, the library versions and the
    device."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"git_commit": git_commit(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "device": f"{device} ({name})", "command": " ".join(sys.argv)}


def provenance_lines(info: dict, flags: dict) -> list[str]:
    """The first lines of ``training.log``: the provenance, then every flag's value, one per line."""
    lines = [f"{key}: {value}" for key, value in info.items()]
    return lines + ["flags:"] + [f"  --{name} {flags[name]!r}" for name in sorted(flags)]


def stop_on_sigterm():
    """From now on SIGTERM (what a cluster scheduler sends before it kills a job) stops the run as Ctrl-C does:
    a ``KeyboardInterrupt`` named after the signal. Returns the previous handler (None outside the main thread,
    where signals cannot be handled)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        interrupt = KeyboardInterrupt()
        interrupt.signal_name = "SIGTERM"
        raise interrupt

    return signal.signal(signal.SIGTERM, stop)


def restore_sigterm(previous) -> None:
    import signal
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


class RunLock:
    """``<run folder>/run.lock``, holding the PID and host of the process that writes into the folder.

    :meth:`acquire` creates it atomically (``O_EXCL``) or refuses with one sentence naming the holder; a lock
    left by a process of this host that no longer runs is taken over (and :meth:`acquire` says so). Only the
    main process locks; :meth:`release` removes the file if this process holds it."""

    NAME = "run.lock"

    def __init__(self, run_dir, name: str | None = None):
        self.path, self.held = Path(run_dir) / (name or self.NAME), False

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over, else None."""
        note = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(*holder[:2]):
                    raise RunError(self.busy(*holder))
                note = (f"took over the stale lock {self.path} of process {holder[0]} on {holder[1]}, which no longer "
                        "runs" if holder is not None else f"replaced the unreadable lock {self.path}")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()} {platform.node()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            self.held = True
            return note
        raise RunError(f"could not take the lock {self.path}: another process keeps re-creating it.")

    def busy(self, pid: int, host: str, since: str) -> str:
        """The sentence that refuses the folder to a second process."""
        return (f"run folder {self.path.parent} is in use by process {pid} on {host} (since {since}); wait for that "
                "run to end, or pass another --store_name.")

    def live_holder(self):
        """``(pid, host, since)`` of the process that holds the lock and still runs (or runs on another host,
        where this cannot be checked); None when there is no lock or its process is gone."""
        if not self.path.exists():
            return None
        holder = self._holder()
        if holder is None or self._stale(*holder[:2]):
            return None
        return holder

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)

    def _holder(self):
        try:
            pid, host, since = self.path.read_text().strip().split(" ", 2)
            return int(pid), host, since
        except (OSError, ValueError):
            return None

    @staticmethod
    def _stale(pid: int, host: str) -> bool:
        """A lock of another host is never stale (its process cannot be seen from here)."""
        if host != platform.node():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:     # the process runs, as another user
            return False
        return False
