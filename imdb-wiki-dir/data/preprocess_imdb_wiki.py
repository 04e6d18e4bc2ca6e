"""Build the IMDB-WIKI-DIR balanced val/test split (step 2 of 2).

    cd imdb-wiki-dir && python data/preprocess_imdb_wiki.py     # data/meta/imdb_wiki.csv -> data/imdb_wiki.csv

The published split is the shipped ``data/imdb_wiki.csv`` (one git blob in every reference
repo); use it for any comparison with published numbers. This script re-creates a split with
the same procedure (docs/datasets.md §1.1: per age 0..120, seeded shuffle, k = min(n_age // 3, 150)
to val and the next k to test, the rest and all ages > 120 to train), but a re-run need not
reproduce the shipped file: it depends on the row order of ``meta/imdb_wiki.csv`` and on the
RNG. It therefore refuses to replace an existing ``imdb_wiki.csv`` unless ``--overwrite`` is given.
The output is written atomically (a temporary file, then a rename).
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
    parser.add_argument("--data_dir", default="./data", help="folder holding meta/imdb_wiki.csv")
    parser.add_argument("--cap", type=int, default=150, help="most images per age in val (and in test)")
    parser.add_argument("--seed", type=int, default=666)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing imdb_wiki.csv")
    args = parser.parse_args(argv)
    if args.cap < 0:
        parser.error(f"--cap must be >= 0, got {args.cap}.")
    data_dir = Path(args.data_dir)
    out = split_csv(data_dir / "meta" / "imdb_wiki.csv", data_dir / "imdb_wiki.csv",
                    cap=args.cap, seed=args.seed, overwrite=args.overwrite)
    counts = out["split"].value_counts()
    summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test"))
    print(f"wrote {data_dir / 'imdb_wiki.csv'}: {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
