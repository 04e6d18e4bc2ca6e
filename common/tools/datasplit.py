"""The DIR balanced val/test split, shared by the IMDB-WIKI-DIR and AgeDB-DIR preprocess scripts.

Procedure (docs/datasets.md §1.1, §1.2; Yang et al., ICML'21): for every integer age
0..max_age, shuffle the indices of that age with one seeded RNG, give the first
k = min(n_age // 3, cap) to ``val``, the next k to ``test`` and the rest to ``train``.
Ages above max_age (and below 0) are all ``train``. Val and test therefore have identical
per-age counts and are flat (``cap`` per age) over the well-populated ages.

The published splits used cap 150 (IMDB-WIKI) and cap 30 (AgeDB) with seed 666. The
upstream scripts walked the images in filesystem order, so a re-run of this procedure
need not reproduce the published files: the ``data/preprocess_*.py`` scripts therefore fetch
those from the reference repository by default (:func:`fetch_published_split`) and verify them,
and build a new split only with ``--make_split``.
"""
from __future__ import annotations

import os
import random
import shutil
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.runtime import sha256_of

SPLITS = ("train", "val", "test")


def make_dir_split(ages: Iterable[int], cap: int, seed: int = 666, max_age: int = 120) -> list[str]:
    """Assign each sample to train/val/test with the DIR per-age balanced procedure.

    Args:
        ages: integer age in years of each sample, length N (ints, or floats with no
            fractional part). Order matters: within an age, indices are shuffled from
            their input order.
        cap: most samples per age that go to val (and, separately, to test).
        seed: seed of the private ``random.Random`` used for the shuffles; the global
            RNG is left untouched.
        max_age: ages 0..max_age are split; larger ages stay in train.

    Returns:
        list of N strings, each ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        ValueError: a non-integral age, or a negative cap.
    """
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    int_ages = []
    for a in ages:
        if int(a) != a:
            raise ValueError(f"ages must be whole years, got {a!r}")
        int_ages.append(int(a))

    by_age: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(int_ages):
        by_age[a].append(i)

    rng = random.Random(seed)
    split = ["train"] * len(int_ages)
    # Ages are visited in increasing order, each shuffled with the same RNG stream, as
    # upstream does; an age with no samples draws nothing from the stream.
    for age in range(0, max_age + 1):
        idx = by_age.get(age, [])
        rng.shuffle(idx)
        k = min(len(idx) // 3, cap)
        for i in idx[:k]:
            split[i] = "val"
        for i in idx[k:2 * k]:
            split[i] = "test"
    return split


def split_csv(meta_csv, out_csv, cap: int, seed: int = 666, overwrite: bool = False):
    """Read an ``age,path`` list, split it with :func:`make_dir_split`, write ``age,path,split``.

    The preprocess step of both age benchmarks (``*/data/preprocess_*.py``). The output is
    written to a temporary file and renamed, so an interrupted run never leaves a half csv.

    Args:
        meta_csv: input csv with columns ``age`` (whole years) and ``path``, e.g. ``data/meta/agedb.csv``.
        out_csv: output csv, e.g. ``data/agedb.csv``; same rows and order plus ``split``.
        cap: most images per age in val (and in test).
        seed: seed of the split RNG.
        overwrite: replace an existing ``out_csv`` (which may be the published split).

    Returns:
        pandas DataFrame (N rows; columns age, path, split) as written.

    Raises:
        SystemExit: ``meta_csv`` missing or malformed, or ``out_csv`` exists and not ``overwrite``.
    """
    meta_csv, out_csv = Path(meta_csv), Path(out_csv)
    if out_csv.exists() and not overwrite:
        raise SystemExit(f"error: {out_csv} already exists (it may be the published split); "
                         f"pass --overwrite to replace it.")
    try:
        df = pd.read_csv(meta_csv)
    except FileNotFoundError:
        raise SystemExit(f"error: {meta_csv} not found; run the create_*.py script of this dataset first.") \
            from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot parse {meta_csv} ({e}); re-create it with the create_*.py script.") \
            from None
    if list(df.columns[:2]) != ["age", "path"]:
        found = ",".join(map(str, df.columns))
        raise SystemExit(f"error: {meta_csv} must have the columns age,path, found {found}; "
                         f"re-create it with the create_*.py script.")
    try:  # make_dir_split validates first: a cast would silently truncate 7.5 to 7
        split = make_dir_split(df["age"].tolist(), cap=cap, seed=seed)
        df = df.astype({"age": "int64"})
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {meta_csv} has a non-integer age ({e}); "
                         f"re-create it with the create_*.py script.") from None
    out = pd.DataFrame({"age": df["age"], "path": df["path"], "split": split})
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, out_csv)
    return out


# The published split files: the DIR repository (YyzHarry/imbalanced-regression) at a pinned commit.
REFERENCE_REPO = "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression"
REFERENCE_COMMIT = "a6fdc45d45c04e6f5c40f43925bc66e580911084"


@dataclass(frozen=True)
class PublishedSplit:
    """What identifies a published split file: its SHA-256 when known, else its row counts per split."""

    csv_name: str
    folder: str                       # the benchmark folder in the reference repository
    sha256: str | None = None
    sizes: dict | None = None         # {'train': n, 'val': n, 'test': n}

    @property
    def url(self) -> str:
        return f"{REFERENCE_REPO}/{REFERENCE_COMMIT}/{self.folder}/data/{self.csv_name}.csv"

    def problem(self, path) -> str | None:
        """None if ``path`` is this published split, else what differs (one phrase)."""
        path = Path(path)
        if self.sha256 is not None:
            digest = sha256_of(path)
            return None if digest == self.sha256 else f"its SHA-256 is {digest}, not {self.sha256}"
        try:
            frame = pd.read_csv(path)
        except Exception as error:  # noqa: BLE001 - any parser error means "not the published file"
            return f"it cannot be parsed ({error})"
        if list(frame.columns) != ["age", "path", "split"]:
            return f"its columns are {','.join(map(str, frame.columns))}, not age,path,split"
        counts = {split: int((frame["split"] == split).sum()) for split in SPLITS}
        if counts != self.sizes or len(frame) != sum(self.sizes.values()):
            return f"its split sizes are {counts}, not {self.sizes}"
        return None


def describe_split(path, published: PublishedSplit) -> str:
    """One log line saying whether a run uses the published split."""
    problem = published.problem(path)
    if problem is None:
        return f"split file {path}: the published {published.csv_name} split (DIR repository at {REFERENCE_COMMIT[:7]})"
    return (f"split file {path}: NOT the published split ({problem}); numbers are not comparable with the papers' "
            f"tables (get it with `python data/preprocess_{published.csv_name}.py`)")


def fetch_published_split(published: PublishedSplit, dest, source: str | None = None, overwrite: bool = False):
    """Download the published split file (or copy ``source``, a URL or a local path) to ``dest`` and verify it.

    The file is written through a temporary name and kept only if it verifies; one clear ``SystemExit``
    otherwise (network error, wrong file)."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        problem = published.problem(dest)
        if problem is None:
            print(f"{dest} is already the published split; nothing to do.")
            return
        raise SystemExit(f"error: {dest} exists and is not the published split ({problem}); pass --overwrite to "
                         "replace it.")
    source = source or published.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        if Path(source).is_file():
            shutil.copyfile(source, tmp)
        else:
            with urllib.request.urlopen(source, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
    except (OSError, ValueError) as error:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"error: could not fetch {source} ({error}); download it by hand into {dest}, or pass "
                         "--make_split to create a split from the images (not the published one).") from None
    problem = published.problem(tmp)
    if problem is not None:
        tmp.unlink()
        raise SystemExit(f"error: {source} is not the published {published.csv_name} split ({problem}); nothing "
                         "was written.")
    os.replace(tmp, dest)
    print(f"wrote {dest}: the published split, verified")


def main(argv, csv_name: str, cap: int, published: PublishedSplit) -> None:
    """The ``data/preprocess_*.py`` command of each age benchmark.

    Default: fetch the published ``<csv_name>.csv`` from the reference repository's pinned commit and verify it.
    ``--make_split``: build a split from ``meta/<csv_name>.csv`` with the DIR procedure (seeded)."""
    import argparse

    parser = argparse.ArgumentParser(description=f"Get the {csv_name}.csv split: the published one (default) or a "
                                     "new one (--make_split).", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data_dir", default="./data", help=f"folder for {csv_name}.csv (and meta/{csv_name}.csv)")
    parser.add_argument("--source", default=None,
                        help=f"where to get the published file (default {published.url}); a URL or a local path")
    parser.add_argument("--make_split", action="store_true",
                        help=f"create a split from meta/{csv_name}.csv instead (not the published one)")
    parser.add_argument("--cap", type=int, default=cap, help="--make_split: most images per age in val (and test)")
    parser.add_argument("--seed", type=int, default=666, help="--make_split: seed of the split")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {csv_name}.csv")
    args = parser.parse_args(argv)
    if args.cap < 0:
        parser.error(f"--cap must be >= 0, got {args.cap}.")
    data_dir = Path(args.data_dir)
    if not args.make_split:
        fetch_published_split(published, data_dir / f"{csv_name}.csv", args.source, args.overwrite)
        return
    out = split_csv(data_dir / "meta" / f"{csv_name}.csv", data_dir / f"{csv_name}.csv",
                    cap=args.cap, seed=args.seed, overwrite=args.overwrite)
    counts = out["split"].value_counts()
    summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
    print(f"wrote {data_dir / f'{csv_name}.csv'}: {summary} (a new split, not the published one)")


# The published age splits (docs/datasets.md §1.1, §1.2). The AgeDB file's hash is known; the IMDB-WIKI file
# is identified by its columns and split sizes.
AGEDB_SPLIT = PublishedSplit("agedb", "agedb-dir",
                             sha256="ab9f8d4c7099a9d74ec5094c42b6fe9f1927a166a48d2ab800a88b2fd6081252")
IMDB_WIKI_SPLIT = PublishedSplit("imdb_wiki", "imdb-wiki-dir", sizes={"train": 191_509, "val": 11_022, "test": 11_022})
