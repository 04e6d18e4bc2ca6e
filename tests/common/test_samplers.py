"""The epoch samplers (common/samplers.py): an epoch's order is a function of (seed, epoch) and matches PyTorch's
RandomSampler; a resumed epoch skips the batches already done."""
import torch

from common.samplers import EpochSampler


def test_epoch_sampler_matches_random_sampler_and_skips():
    from torch.utils.data import DataLoader
    data = list(range(37))
    reference = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    sampler = EpochSampler(37, 8, shuffle=True, drop_last=False)
    sampler.set_epoch(5)
    ours = DataLoader(data, batch_size=8, sampler=sampler, generator=torch.Generator())
    first = [b.tolist() for b in reference]
    assert [b.tolist() for b in ours] == first
    assert [b.tolist() for b in ours] == [b.tolist() for b in reference]      # a second pass continues alike
    sampler.set_epoch(5, skip_batches=2)
    assert len(sampler) == 37 - 16
    assert [b.tolist() for b in DataLoader(data, batch_size=8, sampler=sampler)] == first[2:]
