"""The IMDB-WIKI-DIR data: ``<data_dir>/imdb_wiki.csv`` (``age,path,split``), IMDB rows then WIKI rows.

``data/create_imdb_wiki.py`` keeps faces aged 0–200 (the reference's filter), so that is the range accepted
here; ages above 120 share the last re-weighting bin. The published split (191,509 / 11,022 / 11,022 images)
is identified by its columns and split sizes (its hash is not published). Create the CSV with the scripts in
``data/``, or write a synthetic stand-in with ``python -m common.synthetic imdb_wiki --out data``. The image
pipeline is AgeDB-DIR's (``common.age.AgeDataset``): resize, crop, flip, [-1, 1].
"""
from pathlib import Path

from common.age import read_split_csv
from common.tools.datasplit import IMDB_WIKI_SPLIT as PUBLISHED_SPLIT  # noqa: F401  (named in each run's log)

MAX_AGE = 200


def load_frame(data_dir, csv_name="imdb_wiki"):
    return read_split_csv(Path(data_dir) / f"{csv_name}.csv", MAX_AGE)
