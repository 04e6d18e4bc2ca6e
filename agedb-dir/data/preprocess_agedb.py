"""Build the AgeDB-DIR balanced val/test split.

    cd agedb-dir && python data/preprocess_agedb.py      # data/meta/agedb.csv -> data/agedb.csv

The published split is the shipped ``data/agedb.csv`` (train 12,208 / val 2,140 / test 2,140);
use it for any comparison with published numbers. This script re-creates a split with the same
procedure (docs/datasets.md §1.2: per age 0..120, seeded shuffle, k = min(n_age // 3, 30) to val
and the next k to test, the rest to train). Per-age counts match the shipped file, but which
image goes where need not: upstream walked the folder in filesystem order. It therefore refuses
to replace an existing ``agedb.csv`` unless ``--overwrite`` is given. The output is written
atomically (a temporary file, then a rename).
"""
import sys

from common import datasplit


def main(argv=None) -> None:
    datasplit.main(argv, csv_name="agedb", cap=30)


if __name__ == "__main__":
    main(sys.argv[1:])
