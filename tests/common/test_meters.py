"""The loop's device-side accumulators: running means equal to a float loop, the first bad step named, and
nothing read to the host until asked."""
import math

import pytest
import torch

from common.meters import DeviceMeters, StepHealth
from host_reads import HostReads


def test_device_meters_are_the_sample_weighted_means_of_a_float_loop():
    rng = torch.Generator().manual_seed(0)
    steps = [({"regression": torch.rand((), generator=rng, dtype=torch.float32) * 10,
               "conr": torch.rand((), generator=rng, dtype=torch.float16)}, n) for n in (64, 64, 17)]
    meters = DeviceMeters()
    with HostReads() as reads:
        for values, n in steps:
            meters.update(values, n)
    assert reads.count == 0
    sums = {"regression": 0.0, "conr": 0.0}
    for values, n in steps:
        for name in sums:
            sums[name] += float(values[name]) * n
    averages = meters.averages()
    assert list(averages) == ["regression", "conr"]
    for name, total in sums.items():
        assert averages[name] == pytest.approx(total / 145, rel=1e-15)


def test_device_meters_keep_gradients_out_and_start_empty():
    meters = DeviceMeters()
    assert meters.averages() == {}
    loss = torch.tensor(2.0, requires_grad=True) * 3
    meters.update({"total": loss}, 4)
    assert not meters.sums["total"].requires_grad and meters.averages() == {"total": 6.0}


def components(*values):
    return {"regression": torch.tensor(values[0]), "conr": torch.tensor(values[1])}


def run_health(losses, factor=1e4):
    """The first problem of a sequence of (epoch, step, (regression, conr)) steps, with no host read on the way."""
    health = StepHealth(factor)
    with HostReads() as reads:
        for epoch, step, values in losses:
            parts = components(*values)
            health.update(parts, sum(parts.values()), epoch, step)
    assert reads.count == 0
    return health.problem()


def test_step_health_names_the_first_non_finite_step_and_its_components():
    nan, inf = math.nan, math.inf
    assert run_health([(0, 0, (1.0, 0.5)), (0, 1, (2.0, 0.1))]) is None
    problem = run_health([(0, 0, (1.0, 0.5)), (0, 1, (1.0, nan)), (1, 0, (inf, 1.0)), (1, 1, (nan, nan))])
    assert problem == {"kind": "non-finite", "epoch": 0, "step": 1, "names": ["conr"]}
    problem = run_health([(0, 0, (1.0, 0.5)), (3, 7, (inf, -inf))])
    assert problem == {"kind": "non-finite", "epoch": 3, "step": 7, "names": ["regression", "conr"]}
    # Finite components whose sum overflows: the total is named.
    big = torch.finfo(torch.float32).max
    assert run_health([(0, 0, (big, big))])["names"] == []


def test_step_health_names_the_first_divergence_against_the_first_loss():
    # first |loss| = 2; factor 10: 20 is not beyond, 20.5 is; a later NaN does not hide the earlier divergence.
    losses = [(0, 0, (1.5, 0.5)), (0, 1, (19.0, 1.0)), (0, 2, (20.0, 0.5)), (1, 0, (-30.0, 0.0)),
              (1, 1, (math.nan, 0.0))]
    problem = run_health(losses, factor=10)
    assert problem == {"kind": "diverged", "epoch": 0, "step": 2, "first": 2.0, "size": 20.5}
    assert run_health(losses[:2], factor=10) is None
    # The first loss is floored at 1e-6, as the loop's divergence rule always was.
    problem = run_health([(0, 0, (0.0, 0.0)), (0, 1, (0.02, 0.0))], factor=1e4)
    assert problem["kind"] == "diverged" and problem["first"] == 1e-6 and problem["size"] == pytest.approx(0.02)
    # A non-finite first step is reported, and the next finite loss becomes the reference.
    assert run_health([(0, 0, (math.nan, 0.0)), (0, 1, (1.0, 0.0))], factor=10)["kind"] == "non-finite"
