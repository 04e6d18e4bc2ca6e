"""The IMDB-WIKI-DIR data: ``<data_dir>/imdb_wiki.csv`` (``age,path,split``), IMDB rows then WIKI rows.

``data/create_imdb_wiki.py`` keeps faces aged 0–200 (the reference's filter), so that is the range accepted
here; ages above 120 share the last re-weighting bin. Create the CSV with the scripts in ``data/``, or write a
synthetic stand-in with ``python -m common.synthetic imdb_wiki --out data``.
"""
from pathlib import Path

from common.age import AgeDataset, read_split_csv
from common.tools.datasplit import IMDB_WIKI_SPLIT as PUBLISHED_SPLIT  # noqa: F401  (named in each run's log)

MAX_AGE = 200


def load_frame(data_dir, csv_name="imdb_wiki"):
    return read_split_csv(Path(data_dir) / f"{csv_name}.csv", MAX_AGE)


def load_split(frame, data_dir, split, img_size=224, weights=None, conr_views=False, pack=None) -> AgeDataset:
    """The same image pipeline as AgeDB-DIR (``common.age.AgeDataset``): resize, crop, flip, [-1, 1]."""
    return AgeDataset(frame, data_dir, split, img_size, weights, conr_views, pack)
