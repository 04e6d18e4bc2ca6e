"""List the AgeDB images with their ages (step 1 of 2 for AgeDB-DIR).

    cd agedb-dir && python data/create_agedb.py      # reads ./data/AgeDB/*.jpg -> ./data/meta/agedb.csv

AgeDB file names are ``<id>_<Name>_<age>_<gender>.jpg`` (docs/datasets.md §1.2; all 16,488 have
exactly four ``_`` fields). The age is the third field. Files are visited in sorted name order,
not ``os.listdir`` order as upstream did, so the output does not depend on the filesystem.
Files that are not ``.jpg`` are ignored; a ``.jpg`` whose name does not fit the pattern stops the
script with its name. Writes ``meta/agedb.csv`` under ``--data_dir`` with columns ``age,path`` and
paths ``AgeDB/<file>``. Next step: ``python data/preprocess_agedb.py`` (or use the shipped split).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_age(name: str) -> int:
    """Age in years from ``<id>_<Name>_<age>_<gender>.jpg``; ValueError if the name does not fit."""
    fields = Path(name).stem.split("_")
    if len(fields) != 4 or not fields[2].isdigit():
        raise ValueError(name)
    return int(fields[2])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help="folder holding AgeDB/")
    args = parser.parse_args(argv)
    img_dir = Path(args.data_dir) / "AgeDB"
    if not img_dir.is_dir():
        parser.error(f"{img_dir} is not a folder; extract the AgeDB zip there first "
                     f"(see data/download_agedb.py) or pass --data_dir.")

    rows = []
    for name in sorted(os.listdir(img_dir)):
        if not name.lower().endswith(".jpg"):
            continue
        try:
            rows.append(f"{parse_age(name)},AgeDB/{name}\n")
        except ValueError:
            raise SystemExit(f"error: {img_dir / name} does not match <id>_<Name>_<age>_<gender>.jpg; "
                             f"rename or remove it and re-run.") from None
    if not rows:
        raise SystemExit(f"error: no .jpg files in {img_dir}; extract the AgeDB zip there first.")

    out = Path(args.data_dir) / "meta" / "agedb.csv"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write("age,path\n")
        f.writelines(rows)
    os.replace(tmp, out)
    print(f"wrote {out} ({len(rows)} images)")


if __name__ == "__main__":
    main(sys.argv[1:])
