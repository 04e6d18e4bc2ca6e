"""The IMDB-WIKI-DIR data set: ``<data_dir>/imdb_wiki.csv`` (``age,path,split``) and the images it lists.

Both age benchmarks read the same format with the same transforms, so the class lives in ``common/age.py``;
this module names it for this data set. Create the CSV with the scripts in ``data/``, or write a synthetic
stand-in with ``python -m common.synthetic imdb_wiki --out data``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.age import AgeDataset, age_transform, read_split_csv  # noqa: E402,F401

CSV_NAME = "imdb_wiki"


def load_split(data_dir, split, img_size=224, weights=None, conr_views=False) -> AgeDataset:
    """One split of IMDB-WIKI-DIR: ``(image (3,S,S), views, age (1,), weight (1,))`` per sample."""
    return AgeDataset(read_split_csv(data_dir, CSV_NAME), data_dir, split, img_size, weights, conr_views)
