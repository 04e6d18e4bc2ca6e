"""Download the NYUD2-DIR images (the DenseDepth layout) into ``--data_dir``; no prompts.

    cd nyud2-dir && python data/download_nyud2.py            # -> ./data/nyu2_train/, ./data/nyu2_test/, CSVs
    cd nyud2-dir && python data/preprocess_nyud2.py          # FDS subset and balanced test mask (published)

The references fetch one archive from Google Drive (file id ``1WoOZOBpOWfmwe7bknWS5PMUCLBPFKTOw``, ``data.zip``,
about 4 GB): the layout of DenseDepth's ``nyu_data.zip`` — ``data/nyu2_train/<scene>_out/<n>.jpg`` (RGB,
640×480) with ``<n>.png`` (8-bit depth, value / 255 × 10 m), 50,688 pairs; ``data/nyu2_test/<5 digits>_colors.png``
with ``_depth.png`` (16-bit millimetres), the 654 official test images; ``data/nyu2_train.csv`` and
``data/nyu2_test.csv`` (headerless ``image,depth`` paths starting with ``data/``). This script downloads that
archive (``--url`` for a mirror, or ``--archive`` for a copy you already have), extracts its ``data/`` folder
into ``--data_dir`` and removes the downloaded zip. With the official ``nyu_depth_v2_labeled.mat`` instead, use
``data/convert_labeled_mat.py``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

DRIVE_ID = "1WoOZOBpOWfmwe7bknWS5PMUCLBPFKTOw"
URL = f"https://drive.google.com/uc?export=download&confirm=t&id={DRIVE_ID}"


def fetch(url: str, dest: Path) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            if "text/html" in response.headers.get("Content-Type", ""):
                raise SystemExit(f"error: {url} answered with a web page, not the archive (Google Drive asks for "
                                 f"a confirmation or refuses); download data.zip by hand and pass --archive PATH.")
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as error:
        part.unlink(missing_ok=True)
        raise SystemExit(f"error: could not download {url} ({error}); download data.zip by hand (Google Drive file "
                         f"{DRIVE_ID}) and pass --archive PATH.") from None
    part.replace(dest)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data_dir", default="./data", help="the data/ folder to create")
    parser.add_argument("--url", default=URL, help="where to download data.zip from")
    parser.add_argument("--archive", default=None, help="a data.zip you already have (nothing is downloaded)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if (data_dir / "nyu2_train.csv").is_file() and (data_dir / "nyu2_test.csv").is_file():
        print(f"{data_dir} already holds nyu2_train.csv and nyu2_test.csv; nothing to do.")
        return
    archive = Path(args.archive) if args.archive else data_dir.parent / "data.zip"
    if not args.archive:
        archive.parent.mkdir(parents=True, exist_ok=True)
        fetch(args.url, archive)
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
            if not any(name.startswith("data/nyu2_train") for name in names):
                raise SystemExit(f"error: {archive} holds no data/nyu2_train/ folder; it is not the NYUD2 archive.")
            for info in zipped.infolist():      # data/<rest> → <data_dir>/<rest>, whatever --data_dir is called
                rest = Path(info.filename).parts[1:]
                if not rest or info.is_dir() or Path(info.filename).parts[0] != "data":
                    continue
                target = data_dir.joinpath(*rest)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, length=1 << 20)
    except zipfile.BadZipFile as error:
        raise SystemExit(f"error: {archive} is not a zip archive ({error}); download it again.") from None
    if not args.archive:
        archive.unlink()
    print(f"extracted the NYUD2 layout into {data_dir}; next: python data/preprocess_nyud2.py")


if __name__ == "__main__":
    main(sys.argv[1:])
