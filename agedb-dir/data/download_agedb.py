"""AgeDB cannot be downloaded by a script: this prints how to get it and exits non-zero.

    cd agedb-dir && python data/download_agedb.py

AgeDB (Moschoglou et al., CVPRW'17; 16,488 images of 568 people) is distributed by the iBUG
group at Imperial College as a password-protected zip; the password is given on request
(docs/datasets.md §1.2). Steps:

1. Request the password at https://ibug.doc.ic.ac.uk/resources/agedb/ and download the zip.
2. Extract it so that the images are ``data/AgeDB/<id>_<Name>_<age>_<gender>.jpg``.
3. Use the shipped ``data/agedb.csv`` (the published split), or re-create a split with
   ``python data/create_agedb.py && python data/preprocess_agedb.py``.

Without the real data, ``python -m common.synthetic agedb --out <folder>`` (from the repo root)
writes a synthetic stand-in in the same format. Exits 0 only if ``--data_dir``/AgeDB already
holds .jpg files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

URL = "https://ibug.doc.ic.ac.uk/resources/agedb/"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="./data", help="folder that should hold AgeDB/")
    args = parser.parse_args(argv)
    img_dir = Path(args.data_dir) / "AgeDB"
    if img_dir.is_dir() and any(p.suffix.lower() == ".jpg" for p in img_dir.iterdir()):
        print(f"{img_dir} already holds AgeDB images; nothing to do.")
        return
    raise SystemExit(
        f"AgeDB is available only on request: ask for the zip password at {URL}, download the zip "
        f"and extract it so the images are {img_dir}/<id>_<Name>_<age>_<gender>.jpg; then re-run "
        f"this check (a synthetic stand-in: `python -m common.synthetic agedb --out {args.data_dir}`).")


if __name__ == "__main__":
    main(sys.argv[1:])
