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
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root, for `common`

from common.datasplit import split_csv  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help="folder holding meta/agedb.csv")
    parser.add_argument("--cap", type=int, default=30, help="most images per age in val (and in test)")
    parser.add_argument("--seed", type=int, default=666)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing agedb.csv")
    args = parser.parse_args(argv)
    if args.cap < 0:
        parser.error(f"--cap must be >= 0, got {args.cap}.")
    data_dir = Path(args.data_dir)
    out = split_csv(data_dir / "meta" / "agedb.csv", data_dir / "agedb.csv",
                    cap=args.cap, seed=args.seed, overwrite=args.overwrite)
    counts = out["split"].value_counts()
    summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test"))
    print(f"wrote {data_dir / 'agedb.csv'}: {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
