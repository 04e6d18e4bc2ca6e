"""The synthetic data's label counts (common/synthetic/counts.py and the AgeDB tables): the real histograms, scaled
by the largest-remainder rule."""
import numpy as np
import pytest

from common.synthetic import AGEDB_TRAIN_COUNTS, AGEDB_VAL_COUNTS, scale_counts


def test_agedb_counts_constants():
    assert len(AGEDB_TRAIN_COUNTS) == 100 and sum(AGEDB_TRAIN_COUNTS.values()) == 12208
    assert min(AGEDB_TRAIN_COUNTS) == 1 and max(AGEDB_TRAIN_COUNTS) == 101 and 2 not in AGEDB_TRAIN_COUNTS
    assert max(AGEDB_TRAIN_COUNTS.values()) == AGEDB_TRAIN_COUNTS[35] == 353
    assert len(AGEDB_VAL_COUNTS) == 92 and sum(AGEDB_VAL_COUNTS.values()) == 2140


@pytest.mark.parametrize("n", [1, 7, 1000, 12208, 30000])
def test_scale_counts_largest_remainder(n):
    out = scale_counts(AGEDB_TRAIN_COUNTS, n)
    assert sum(out.values()) == n and all(v > 0 for v in out.values())
    total = sum(AGEDB_TRAIN_COUNTS.values())
    for age, c in AGEDB_TRAIN_COUNTS.items():
        quota = c * n / total
        assert np.floor(quota) <= out.get(age, 0) <= np.floor(quota) + 1  # largest remainder never strays further
