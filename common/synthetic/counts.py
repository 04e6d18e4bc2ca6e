"""Scaling a label histogram to another total, shared by the synthetic generators (ages and STS-B scores)."""
from __future__ import annotations

import numpy as np


def scale_counts(counts: dict[int, int], n: int) -> dict[int, int]:
    """Scale a per-age histogram to total exactly ``n`` with largest-remainder rounding.

    Args:
        counts: age -> count (counts ≥ 0, total > 0).
        n: wanted total (≥ 0).

    Returns:
        age -> scaled count, only the ages whose scaled count is > 0, in increasing age order.
    """
    ages = sorted(counts)
    c = np.array([counts[a] for a in ages], dtype=np.int64)
    total = int(c.sum())
    if n < 0 or total <= 0:
        raise ValueError(f"scale_counts: need n >= 0 and a positive total, got n={n}, total={total}.")
    # Integer arithmetic keeps the quotas and remainders exact (no float ties).
    base, rem = np.divmod(c * n, total)
    short = n - int(base.sum())
    # Ties in the remainder go to the larger original count, then to the younger age, so
    # the result is independent of float rounding and of dict order.
    order = sorted(range(len(ages)), key=lambda i: (-rem[i], -c[i], ages[i]))
    for i in order[:short]:
        base[i] += 1
    return {a: int(b) for a, b in zip(ages, base) if b > 0}
