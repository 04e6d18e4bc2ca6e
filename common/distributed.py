"""Several processes, one run: ``torchrun`` set-up, gradient averaging, sharded evaluation, gathered features.

Every ``train.py`` runs unchanged under ``torchrun --nproc_per_node=N`` (and multi-node ``torchrun --nnodes``):
the trainer calls :func:`setup` (``nccl`` on CUDA, ``gloo`` on CPU), shards each epoch's permutation and each
evaluation set across the processes, averages the gradients after every backward pass, keeps rank 0's
BatchNorm statistics everywhere (as DistributedDataParallel does), gathers predictions back into the
single-process order, and writes files on rank 0 only. ``--batch_size`` stays the global batch, split evenly, so
the references' ``DataParallel`` batch sizes mean the same here. With one process every function is a no-op.

Gradients are averaged explicitly rather than through ``DistributedDataParallel`` because the objectives call the
model more than once per step (ConR's extra views), which DDP's reducer does not allow.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); the device of this process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group together (a process exiting while another still talks to it can abort gloo)."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


@torch.no_grad()
def average_gradients(parameters) -> None:
    """All-reduce the gradients of ``parameters`` to their mean over the processes (absent ones count as 0, so
    every process reduces the same tensors)."""
    if not active():
        return
    world = world_size()
    for parameter in parameters:
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad.div_(world)


@torch.no_grad()
def broadcast_state(module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's parameters (unless ``buffers_only``) and buffers on every process."""
    if not active():
        return
    tensors = list(module.buffers()) if buffers_only else list(module.parameters()) + list(module.buffers())
    for tensor in tensors:
        dist.broadcast(tensor.data, 0)


def gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (first dimensions may differ), concatenated in rank order; no gradient."""
    if not active():
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(size.item() for size in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:int(size.item())] for part, size in zip(parts, sizes)])


class _GatherWithGradient(torch.autograd.Function):
    """All-gather along dimension 0 (equal sizes); backward returns this process's slice of the summed gradient."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.size = tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = rank() * ctx.size
        return grad[start:start + ctx.size]


def gather_features(tensor: torch.Tensor) -> torch.Tensor:
    """Features of the whole global batch, with gradients flowing back to this process's own rows.

    Every process computes the same loss on the gathered batch; the backward pass sums each row's gradient over
    the processes and :func:`average_gradients` divides by their number, so the parameters receive the gradient of
    that loss exactly as one process on the concatenated batch would."""
    return _GatherWithGradient.apply(tensor) if active() else tensor


def gather_objects(value) -> list:
    """``[value of rank 0, value of rank 1, …]`` (any picklable value)."""
    if not active():
        return [value]
    out = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def share(tensor: torch.Tensor, gather: bool, with_gradient: bool = True) -> torch.Tensor:
    """The global batch's ``tensor`` under torchrun with ``--gather_features`` (``gather``), else this process's;
    ``with_gradient`` keeps each process's rows differentiable (:func:`gather_features`)."""
    if not gather:
        return tensor
    return gather_features(tensor) if with_gradient else gather_cat(tensor)
