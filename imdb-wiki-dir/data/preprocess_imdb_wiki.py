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
import sys

from common import datasplit


def main(argv=None) -> None:
    datasplit.main(argv, csv_name="imdb_wiki", cap=150)


if __name__ == "__main__":
    main(sys.argv[1:])
