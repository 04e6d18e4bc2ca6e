"""The samplers of the training loop: an epoch's indices as a function of ``(seed, epoch)`` alone (so resuming at
any batch is exact), sharded over the processes of a ``torchrun`` launch, and the whole-epoch batches of the
statistics pass."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


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
        return iter(self.indices(self.drop_last))

    def indices(self, drop_last: bool) -> list[int]:
        """This pass's indices (the generator moves on), without the last incomplete batch if ``drop_last``."""
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
        kept = len(order) - (len(order) % self.batch_size if drop_last else 0)
        skip, self.skip = self.skip, 0          # only the first pass after a resume starts late
        return order[skip * self.batch_size:kept]

    def __len__(self):
        shard = self.shard_size()
        kept = shard - (shard % self.batch_size if self.drop_last else 0)
        return max(0, kept - self.skip * self.batch_size)


class WholeEpochBatches(Sampler):
    """Batches of every index of an :class:`EpochSampler`'s next pass, nothing dropped: a last batch of one sample
    joins the batch before it (BatchNorm in train mode cannot take a batch of one)."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler

    def __iter__(self):
        order, size = self.sampler.indices(drop_last=False), self.sampler.batch_size
        batches = [order[start:start + size] for start in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            last = batches.pop()
            batches[-1] = batches[-1] + last
        return iter(batches)

    def __len__(self):
        shard, size = self.sampler.shard_size(), self.sampler.batch_size
        return max(1, shard // size) if shard % size == 1 else -(-shard // size)
