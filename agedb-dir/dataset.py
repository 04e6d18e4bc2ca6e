"""The AgeDB-DIR data: ``<data_dir>/agedb.csv`` (``age,path,split``) and the face images it lists.

AgeDB ages run from 1 to 101; a CSV age outside 0–120 (the label bins of the age benchmarks) is refused
before training. Create the CSV with the scripts in ``data/``, or write a synthetic stand-in with
``python -m common.synthetic agedb --out data``.
"""
from pathlib import Path

from common.age import AgeDataset, read_split_csv
from common.tools.datasplit import AGEDB_SPLIT as PUBLISHED_SPLIT  # noqa: F401  (named in each run's log)

MAX_AGE = 120


def load_frame(data_dir, csv_name="agedb"):
    """The split CSV as a frame (ages checked)."""
    return read_split_csv(Path(data_dir) / f"{csv_name}.csv", MAX_AGE)


def load_split(frame, data_dir, split, img_size=224, weights=None, conr_views=False, pack=None) -> AgeDataset:
    """One split: per sample ``input`` (3, S, S), ``views`` (ConR), ``target`` age (1,), ``weight`` (1,)."""
    return AgeDataset(frame, data_dir, split, img_size, weights, conr_views, pack)
