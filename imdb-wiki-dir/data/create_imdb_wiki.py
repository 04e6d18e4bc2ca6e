"""Turn the IMDB-WIKI Matlab metadata into age/path lists (step 1 of 2 for IMDB-WIKI-DIR).

    cd imdb-wiki-dir && python data/create_imdb_wiki.py      # reads ./data/{imdb,wiki}_crop/*.mat

Reads ``imdb_crop/imdb.mat`` and ``wiki_crop/wiki.mat`` (from ``download_imdb_wiki.py``) with
``scipy.io.loadmat`` and, per face (docs/datasets.md §1.1):

* birth date = ``datetime.fromordinal(dob - 366)`` (``dob`` is a Matlab datenum, which counts
  from year 0, one leap year before Python's ordinal 1 = 0001-01-01);
* age = ``photo_taken`` − birth year, minus 1 when the birth month is July or later (the photo
  is assumed to be taken mid-year);
* kept only if ``face_score`` ≥ ``--min_score`` (faces not found score −inf), ``second_face_score``
  is NaN (exactly one face detected) and 0 ≤ age ≤ 200. A dob that is not a valid date drops the
  face too.

Writes ``meta/imdb.csv``, ``meta/wiki.csv`` and ``meta/imdb_wiki.csv`` (IMDB rows, then WIKI) under
``--data_dir``, columns ``age,path``, paths relative to ``--data_dir`` (``imdb_crop/...`` or
``wiki_crop/...``). Next step: ``python data/preprocess_imdb_wiki.py`` (or use the shipped split).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import loadmat

SOURCES = (("imdb", "imdb_crop"), ("wiki", "wiki_crop"))  # (struct name in the .mat, crop folder)


def age_from_dob(dob: float, photo_taken: float) -> int | None:
    """Age in whole years at mid-year of ``photo_taken``; None if ``dob`` is not a valid Matlab datenum."""
    if not (math.isfinite(dob) and math.isfinite(photo_taken)):
        return None
    try:
        birth = datetime.fromordinal(int(dob) - 366)  # int() floors: datenums carry a time-of-day fraction
    except (ValueError, OverflowError):  # datenum < 367 is before 0001-01-01
        return None
    return int(photo_taken) - birth.year - (1 if birth.month >= 7 else 0)


def read_mat(mat_path: Path, key: str) -> dict[str, np.ndarray]:
    """The per-face fields of one IMDB-WIKI .mat file, each a 1-D array of length N."""
    if not mat_path.is_file():
        raise SystemExit(f"error: {mat_path} not found; run `python data/download_imdb_wiki.py` first "
                         f"or point --data_dir at the folder holding imdb_crop/ and wiki_crop/.")
    try:
        meta = loadmat(mat_path)[key][0, 0]
    except (OSError, KeyError, IndexError, ValueError, TypeError) as e:
        raise SystemExit(f"error: cannot read the {key!r} struct from {mat_path} ({e}); "
                         f"re-download it with data/download_imdb_wiki.py.") from None
    fields = {}
    for name in ("dob", "photo_taken", "face_score", "second_face_score"):
        fields[name] = np.asarray(meta[name], dtype=np.float64).ravel()
    # full_path is a Matlab cell array: each cell holds a 1-element char array.
    fields["full_path"] = np.array([str(np.asarray(p).ravel()[0]) for p in meta["full_path"].ravel()])
    n = len(fields["full_path"])
    if any(len(v) != n for v in fields.values()):
        raise SystemExit(f"error: {mat_path} has fields of different lengths; re-download it.")
    return fields


def build_table(fields: dict[str, np.ndarray], prefix: str, min_score: float) -> pd.DataFrame:
    """Filtered ``age,path`` rows of one source, in the .mat order."""
    rows = []
    for path, dob, year, score, second in zip(fields["full_path"], fields["dob"], fields["photo_taken"],
                                              fields["face_score"], fields["second_face_score"]):
        # NaN face scores fail `>=` and are dropped, like -inf.
        if not (score >= min_score) or not math.isnan(second):
            continue
        age = age_from_dob(dob, year)
        if age is None or not 0 <= age <= 200:
            continue
        rows.append((age, f"{prefix}/{path}"))
    return pd.DataFrame(rows, columns=["age", "path"]).astype({"age": "int64"})


def write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help="folder holding imdb_crop/ and wiki_crop/")
    parser.add_argument("--min_score", type=float, default=1.0, help="minimum face_score to keep a face")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        parser.error(f"--data_dir {data_dir} is not a folder; run data/download_imdb_wiki.py first "
                     f"or pass the right path.")

    tables = []
    for key, folder in SOURCES:
        fields = read_mat(data_dir / folder / f"{key}.mat", key)
        df = build_table(fields, folder, args.min_score)
        print(f"{key}: kept {len(df)} of {len(fields['full_path'])} faces")
        tables.append((key, df))
    meta = data_dir / "meta"
    meta.mkdir(exist_ok=True)
    for key, df in tables:
        write_csv(df, meta / f"{key}.csv")
    write_csv(pd.concat([df for _, df in tables], ignore_index=True), meta / "imdb_wiki.csv")
    print(f"wrote {meta / 'imdb.csv'}, {meta / 'wiki.csv'}, {meta / 'imdb_wiki.csv'}")


if __name__ == "__main__":
    main(sys.argv[1:])
