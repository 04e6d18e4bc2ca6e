"""The AgeDB-DIR data: ``<data_dir>/agedb.csv`` (``age,path,split``) and the face images it lists.

AgeDB ages run from 1 to 101; a CSV age outside 0–120 (the label bins of the age benchmarks) is refused
before training. The published split (12,208 / 2,140 / 2,140 images) is identified by its SHA-256. Create the
CSV with the scripts in ``data/``, or write a synthetic stand-in with ``python -m common.synthetic agedb --out
data``. Each sample is ``common.age.AgeDataset``'s: ``input`` (3, S, S) in [-1, 1], ConR ``views``, ``target``
age (1,), ``weight`` (1,).
"""
from pathlib import Path

from common.age import read_split_csv
from common.tools.datasplit import AGEDB_SPLIT as PUBLISHED_SPLIT  # noqa: F401  (named in each run's log)

MAX_AGE = 120


def load_frame(data_dir, csv_name="agedb"):
    """The split CSV as a frame, every age checked to lie in 0–120."""
    return read_split_csv(Path(data_dir) / f"{csv_name}.csv", MAX_AGE)
