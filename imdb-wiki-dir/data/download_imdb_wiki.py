"""Download the IMDB-WIKI face crops from ETH Zurich and extract them into the data folder.

    cd imdb-wiki-dir && python data/download_imdb_wiki.py            # -> ./data/imdb_crop, ./data/wiki_crop

Fetches ``imdb_crop.tar`` (about 7 GB, 460,723 faces) and ``wiki_crop.tar`` (about 1 GB, 62,328
faces) from https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/ (docs/datasets.md §1.1),
extracts each into ``--data_dir`` and deletes the tar. A tar is streamed to a ``.part`` file and
renamed only when complete, so an interrupted download is never mistaken for a finished one. A
crop folder that already holds its ``.mat`` file is skipped, so a re-run resumes after the first
tarball. Next steps: ``python data/create_imdb_wiki.py``, then either use the shipped
``data/imdb_wiki.csv`` (the published split) or ``python data/preprocess_imdb_wiki.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

BASE_URL = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/"
PARTS = {"imdb_crop": "imdb.mat", "wiki_crop": "wiki.mat"}  # extracted folder -> its metadata file


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream ``url`` to ``dest`` through ``dest.part``; one clear SystemExit on a network error."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0)
            done, next_report = 0, 0
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if done >= next_report:  # a line per 500 MB keeps logs short for a 7 GB file
                    print(f"  {dest.name}: {done / 1e9:.1f} / {total / 1e9:.1f} GB", flush=True)
                    next_report += 500 << 20
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise SystemExit(f"error: could not download {url} ({reason}); check the network connection and "
                         f"re-run, or fetch the file by hand and extract it into {dest.parent}.") from None
    os.replace(part, dest)


def extract(tar_path: Path, data_dir: Path) -> None:
    """Extract ``tar_path`` into ``data_dir``, refusing members that would land outside it."""
    try:
        with tarfile.open(tar_path) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: blocks absolute paths and links out
                tar.extractall(data_dir, filter="data")
            else:
                root = data_dir.resolve()
                for member in tar.getmembers():
                    if not (root / member.name).resolve().is_relative_to(root):
                        raise tarfile.TarError(f"member {member.name!r} points outside {data_dir}")
                tar.extractall(data_dir)
    except (tarfile.TarError, OSError) as e:
        raise SystemExit(f"error: could not extract {tar_path} ({e}); "
                         f"delete it and re-run to download it again.") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help="folder that receives imdb_crop/ and wiki_crop/")
    parser.add_argument("--base_url", default=BASE_URL,
                        help="where the two tarballs live (a mirror, or a file:// folder in tests)")
    parser.add_argument("--keep_tar", action="store_true", help="keep the tarballs after extracting them")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"cannot create --data_dir {data_dir} ({e.strerror}); pass a writable folder.")
    base = args.base_url if args.base_url.endswith("/") else args.base_url + "/"
    for folder, mat in PARTS.items():
        if (data_dir / folder / mat).exists():
            print(f"{data_dir / folder} already extracted; skipping.")
            continue
        tar_path = data_dir / f"{folder}.tar"
        if not tar_path.exists():
            print(f"downloading {base}{folder}.tar -> {tar_path}", flush=True)
            download(f"{base}{folder}.tar", tar_path)
        print(f"extracting {tar_path}", flush=True)
        extract(tar_path, data_dir)
        if not (data_dir / folder / mat).exists():
            raise SystemExit(f"error: {tar_path} did not contain {folder}/{mat}; delete it and re-run, "
                             f"or check --base_url {args.base_url}.")
        if not args.keep_tar:
            tar_path.unlink()
    print(f"done: {', '.join(str(data_dir / f) for f in PARTS)}")


if __name__ == "__main__":
    main(sys.argv[1:])
