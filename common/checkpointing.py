"""Checkpoints: atomic writes, safe reads with one sentence for a bad file, and RRT's trunk loading.

Models are unwrapped (``module.`` prefixes of DataParallel/DDP and ``torch.compile``'s wrapper stripped) before
saving, and loading accepts either form.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from common.errors import RunError
from common.runtime import is_disk_full  # noqa: F401  (also this module's name for it)


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


def save_checkpoint(state: dict, path: Path) -> int:
    """Write atomically: a temporary file in the same folder, then ``os.replace``; returns the bytes written.

    A full disk is a :class:`RunError` naming the folder and the space needed; the previous file at ``path``
    stays intact, and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        written = os.path.getsize(tmp)
        os.replace(tmp, path)
        return written
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


def copy_checkpoint(source: Path, dest: Path) -> None:
    """Copy a checkpoint file atomically (a temporary file in ``dest``'s folder, then ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(prefix=Path(dest).name + ".", suffix=".tmp", dir=Path(dest).parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
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


#: the two checkpoints of a run folder (the trainer's ``CHECKPOINT`` and ``BEST_CHECKPOINT``).
LAST_NAME, BEST_NAME = "ckpt.pth.tar", "ckpt.best.pth.tar"
#: what a file read by :func:`torch_load` must be, said when it is not.
TORCH_FILE = "a file that torch.save wrote (a zip archive, starting with 'PK')"


def _what_was_read(path: Path, error: BaseException) -> str:
    """What a file that ``torch.load`` refused holds, from its first bytes and the error."""
    with open(path, "rb") as handle:
        head = handle.read(32)
    if not head:
        return "it is empty"
    if "weights only" in str(error).lower() and head[:2] in (b"PK", b"\x80\x02"):
        return ("it holds pickled Python objects besides tensors and numbers, which are not loaded (a checkpoint of "
                "this repo holds none)")
    if head.startswith(b"PK"):
        return "it is a zip archive, as torch.save writes, but a damaged or truncated one"
    text = head.decode("utf-8", "replace")
    kind = "text" if text.isprintable() or "\n" in text else "bytes"
    return f"it starts with the {kind} {text[:24]!r}{'…' if len(head) > 24 else ''}"


def torch_load(path: Path, what: str, expected: str, map_location="cpu"):
    """``torch.load(weights_only=True)`` of ``path``, an unreadable file being one sentence that names it as
    ``what`` (``"checkpoint PATH"``), shows what it holds and says it must be ``expected``."""
    try:
        # The NYUD2 references store numpy float64 scalars (`error`, per-shot metrics): allow exactly the numpy
        # scalar reconstructor and dtypes, under their NumPy 1 and 2 module names; nothing else is unpickled.
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling error means the same thing to the user
        raise RunError(f"{what} could not be read: {_what_was_read(path, error)}, where "
                       f"{expected} is {TORCH_FILE}; pass another file.") from error


def _folder(path: Path) -> RunError:
    """The sentence for a run folder given where a checkpoint file is expected."""
    last, best = path / LAST_NAME, path / BEST_NAME
    held = "" if last.is_file() or best.is_file() else " (it holds neither yet)"
    return RunError(f"checkpoint {path} is a folder, not a checkpoint file; pass {last} to continue its training "
                    f"(--resume) or {best} to evaluate it (--evaluate --resume) or start from it (--pretrained)"
                    f"{held}.")


def load_checkpoint(path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` with one clear sentence for a missing or unreadable file, or a folder
    (a run folder: the sentence names its two checkpoints)."""
    path = Path(path)
    if path.is_dir():
        raise _folder(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; check the --resume/--pretrained path.")
    checkpoint = torch_load(path, f"checkpoint {path}", "a checkpoint", map_location)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = f"keys {', '.join(map(repr, list(checkpoint)[:6]))}" if isinstance(checkpoint, dict) and checkpoint \
            else f"a {type(checkpoint).__name__}"
        raise RunError(f"checkpoint {path} has no 'state_dict' (it holds {found}); it is not a checkpoint of this "
                       "repo.")
    checkpoint["state_dict"] = strip_module_prefix(checkpoint["state_dict"])
    return checkpoint


def load_model_state(model: torch.nn.Module, state_dict: dict, path, log=print) -> None:
    """Load a checkpoint's model ``state_dict`` into ``model`` (unwrapped), adapting a checkpoint written with
    another FDS layout (:func:`common.fds.adapt_fds_state`); a checkpoint that does not fit is one sentence."""
    from common.fds import adapt_fds_state
    model = unwrap(model)
    try:
        model.load_state_dict(adapt_fds_state(state_dict, model, log))
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise RunError(f"checkpoint {path} does not fit this model ({first}); pass the flags it was trained with "
                       "(--model, --fds, --srl, ...).") from error


#: what a checkpoint needs to continue its run, beyond the weights (a best checkpoint has none of these).
RESUME_KEYS = ("optimizer", "rng", "trainer")


def check_resumable(checkpoint: dict, path) -> None:
    """Refuse, with one sentence, a checkpoint that training cannot continue from: a run's best checkpoint (its
    weights and loop state only, no optimiser or random streams) or a checkpoint another code base wrote."""
    if all(key in checkpoint for key in RESUME_KEYS):
        return
    path = Path(path)
    if "trainer" in checkpoint:
        raise RunError(f"checkpoint {path} is a best checkpoint: it holds the model but not the optimiser and random "
                       "state that continuing a run needs; to continue training pass --resume "
                       f"{path.parent / LAST_NAME}, to evaluate this one add --evaluate.")
    raise RunError(f"checkpoint {path} holds no optimiser, random or loop state (it was not written by this repo's "
                   "training, e.g. a reference checkpoint), so training cannot continue from it; evaluate it with "
                   "--evaluate, or start a new run from its weights with --pretrained.")


def load_resumable(path, map_location="cpu") -> dict:
    """:func:`load_checkpoint` of a checkpoint to continue training from (``--resume`` without ``--evaluate``),
    refused by :func:`check_resumable` when it cannot be continued."""
    checkpoint = load_checkpoint(path, map_location)
    check_resumable(checkpoint, path)
    return checkpoint


def load_state_file(path, flag: str, expected: str) -> dict:
    """A weights file named by a flag (``--pretrained_encoder PATH``): ``torch.load(weights_only=True)``, one
    sentence starting with the flag for a folder, a missing file, an unreadable one (what it holds) or one that
    holds no dict, each saying it must be ``expected``."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{flag} {path} is a folder; pass a file holding {expected}.")
    if not path.is_file():
        raise RunError(f"{flag} {path}: no such file; pass a file holding {expected}.")
    state = torch_load(path, f"{flag} {path}", f"a file holding {expected}")
    if not isinstance(state, dict):
        raise RunError(f"{flag} {path} holds a {type(state).__name__}, not {expected}; pass another file.")
    return state


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


def train_only(model: torch.nn.Module, prefix, frozen_in_eval: bool = False) -> None:
    """RRT's second step: only the parameters whose names start with ``prefix`` (a string or a tuple of them;
    the head) keep training.

    ``frozen_in_eval`` (RnC's linear stage, a probe on a fixed encoder): the batch-norm and dropout layers outside
    ``prefix`` also behave as in evaluation while the model trains (running statistics used and not updated, no
    dropout), through a forward pre-hook that clears their ``training`` flag, so the frozen part computes exactly
    the features it computes at test time."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefix))
    if not frozen_in_eval:
        return
    kinds = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)
    for name, module in model.named_modules():
        if isinstance(module, kinds) and not f"{name}.".startswith(prefix):
            module.register_forward_pre_hook(_evaluation_mode)


def _evaluation_mode(module, _inputs) -> None:
    module.training = False


def non_finite_tensors(state: dict) -> list[str]:
    """The names of the floating-point tensors of a (nested) checkpoint state that hold NaN or ±inf."""
    bad = []

    def visit(prefix, value):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(prefix)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), item)

    visit("", state)
    return bad


def is_good_checkpoint(path) -> bool:
    """The file exists, reads, and its model and objective hold only finite values."""
    try:
        checkpoint = load_checkpoint(path)
    except RunError:
        return False
    return not non_finite_tensors({"state_dict": checkpoint["state_dict"],
                                   "objective": checkpoint.get("objective") or {}})
