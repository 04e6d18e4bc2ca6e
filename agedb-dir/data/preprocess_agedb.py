"""Get the AgeDB-DIR split file ``data/agedb.csv``: the published one by default, or a new one.

    cd agedb-dir && python data/preprocess_agedb.py                  # fetch the published split, verify it
    cd agedb-dir && python data/preprocess_agedb.py --make_split     # data/meta/agedb.csv -> a new split

Default: downloads ``agedb-dir/data/agedb.csv`` of the DIR repository (YyzHarry/imbalanced-regression) at
the pinned commit ``common.tools.datasplit.REFERENCE_COMMIT`` and keeps it only if its SHA-256 is the published
file's (train 12,208 / val 2,140 / test 2,140). ``--source PATH_OR_URL`` takes it from elsewhere (a local
copy), verified the same way. Use it for any comparison with published numbers; training logs say whether
the split in use is this file.

``--make_split`` re-creates a split with the same procedure (docs/datasets.md §1.2: per age 0..120, seeded
shuffle, k = min(n_age // 3, 30) to val and the next k to test, the rest to train). Per-age counts match the
published file, but which image goes where need not: upstream walked the folder in filesystem order. Neither
mode replaces an existing ``agedb.csv`` without ``--overwrite``; output is written atomically.
"""
import sys

from common.tools import datasplit


def main(argv=None) -> None:
    datasplit.main(argv, csv_name="agedb", cap=30, published=datasplit.AGEDB_SPLIT)


if __name__ == "__main__":
    main(sys.argv[1:])
