"""Count the operations that make the host wait for the device, for tests of a training step that must not.

On a GPU, reading a value of a device tensor on the host (``.item()``, ``float(t)``, ``bool(t)``, ``if t:``),
copying it to the CPU (``.cpu()``, ``.numpy()``, ``.tolist()``) or an operation whose output shape depends on
the values (``nonzero``, boolean-mask indexing, ``unique``, ``masked_select``) blocks until the GPU has caught
up. :class:`HostReads` counts those operations while it is active, so a test on CPU proves that a step would not
wait on a GPU: scalar reads reach the dispatcher as ``aten._local_scalar_dense`` on every device; the
value-shaped operations are named; copies to the CPU of a non-CPU tensor are counted on a GPU; ``.numpy()`` and
``.tolist()`` of a tensor (which on CPU bypass the dispatcher) are counted by wrapping the two methods.
"""
from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: operations whose output size depends on the values (the device must finish to know it).
VALUE_SHAPED = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
                aten.unique_consecutive.default, aten.repeat_interleave.Tensor, aten.nonzero_static.default}


#: PyTorch code whose scalar reads are of tensors that live on the host on every device: ``torch.optim``'s step
#: counters (``capturable=False``, PyTorch's default), and a packed sequence's ``batch_sizes`` and lengths, which
#: ``pack_padded_sequence`` and the recurrent modules require on the CPU (STS-B-DIR's batches keep the lengths
#: there). Only reads of CPU tensors are let through, and copies to the CPU are always counted.
HOST_ONLY = ("/torch/optim/", "/torch/nn/utils/rnn.py", "/torch/nn/modules/rnn.py")


def _host_only_read(tensor) -> bool:
    """Whether reading ``tensor`` never waits for a GPU: a CPU tensor read by :data:`HOST_ONLY` code."""
    return (isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu"
            and any(part in frame.filename for frame in traceback.extract_stack(limit=12) for part in HOST_ONLY))


class HostReads(TorchDispatchMode):
    """``with HostReads() as reads: ...``; then ``reads.count`` and ``reads.where`` (operation → the first line
    of the repository's code that called it)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.where: dict[str, str] = {}
        self._saved = {}

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def _record(self, name: str) -> None:
        self.counts[name] += 1
        if name not in self.where:
            frames = [f for f in traceback.extract_stack()[:-2]
                      if "/common/" in f.filename or "-dir/" in f.filename]
            self.where[name] = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[::-1][:4]) or "?"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            if not _host_only_read(args[0]):
                self._record(str(func))
        elif func in VALUE_SHAPED:
            self._record(str(func))
        elif func is aten.index.Tensor and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                                for i in (args[1] if len(args) > 1 else [])):
            self._record("aten.index.Tensor (boolean mask)")
        elif func in (aten._to_copy.default, aten.copy_.default):
            source = args[1] if func is aten.copy_.default else args[0]
            target = (args[0].device if func is aten.copy_.default
                      else torch.device(kwargs.get("device") or source.device))
            if isinstance(source, torch.Tensor) and source.device.type != "cpu" and target.type == "cpu":
                self._record(f"{func} to the CPU")
        return func(*args, **kwargs)

    def __enter__(self):
        for method in ("numpy", "tolist"):
            original = getattr(torch.Tensor, method)
            self._saved[method] = original

            def counted(tensor, *a, _original=original, _name=method, **k):
                self._record(f"Tensor.{_name}")
                return _original(tensor, *a, **k)
            setattr(torch.Tensor, method, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for method, original in self._saved.items():
            setattr(torch.Tensor, method, original)
        self._saved.clear()
        return super().__exit__(*exc)
