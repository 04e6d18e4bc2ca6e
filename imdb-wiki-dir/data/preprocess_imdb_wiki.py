"""Get the IMDB-WIKI-DIR split file ``data/imdb_wiki.csv``: the published one by default, or a new one.

    cd imdb-wiki-dir && python data/preprocess_imdb_wiki.py                # fetch the published split, verify
    cd imdb-wiki-dir && python data/preprocess_imdb_wiki.py --make_split   # data/meta/imdb_wiki.csv -> new split

Default: downloads ``imdb-wiki-dir/data/imdb_wiki.csv`` of the DIR repository (YyzHarry/imbalanced-regression)
at the pinned commit ``common.tools.datasplit.REFERENCE_COMMIT`` and keeps it only if it has the columns
``age,path,split`` and the published sizes (train 191,509 / val 11,022 / test 11,022). ``--source
PATH_OR_URL`` takes it from elsewhere, verified the same way. Training logs say whether the split in use is it.

``--make_split`` re-creates a split with the same procedure (docs/datasets.md §1.1: per age 0..120, seeded
shuffle, k = min(n_age // 3, 150) to val and the next k to test, the rest and all ages > 120 to train); it need
not reproduce the published file (it depends on the row order of ``meta/imdb_wiki.csv``). Neither mode
replaces an existing ``imdb_wiki.csv`` without ``--overwrite``; output is written atomically.
"""
import sys

from common.tools import datasplit


def main(argv=None) -> None:
    datasplit.main(argv, csv_name="imdb_wiki", cap=150, published=datasplit.IMDB_WIKI_SPLIT)


if __name__ == "__main__":
    main(sys.argv[1:])
