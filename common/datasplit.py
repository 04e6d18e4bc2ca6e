"""The DIR balanced val/test split, shared by the IMDB-WIKI-DIR and AgeDB-DIR preprocess scripts.

Procedure (docs/datasets.md §1.1, §1.2; Yang et al., ICML'21): for every integer age
0..max_age, shuffle the indices of that age with one seeded RNG, give the first
k = min(n_age // 3, cap) to ``val``, the next k to ``test`` and the rest to ``train``.
Ages above max_age (and below 0) are all ``train``. Val and test therefore have identical
per-age counts and are flat (``cap`` per age) over the well-populated ages.

The published splits used cap 150 (IMDB-WIKI) and cap 30 (AgeDB) with seed 666. The
upstream scripts walked the images in filesystem order, so a re-run of this procedure
need not reproduce the shipped csv files; use those for published comparisons.
"""
from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

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


def main(argv, csv_name: str, cap: int) -> None:
    """The ``data/preprocess_*.py`` command of each age benchmark: ``meta/<csv_name>.csv`` → ``<csv_name>.csv``."""
    import argparse

    parser = argparse.ArgumentParser(description=f"Build the balanced val/test split {csv_name}.csv.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help=f"folder holding meta/{csv_name}.csv")
    parser.add_argument("--cap", type=int, default=cap, help="most images per age in val (and in test)")
    parser.add_argument("--seed", type=int, default=666)
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {csv_name}.csv")
    args = parser.parse_args(argv)
    if args.cap < 0:
        parser.error(f"--cap must be >= 0, got {args.cap}.")
    data_dir = Path(args.data_dir)
    out = split_csv(data_dir / "meta" / f"{csv_name}.csv", data_dir / f"{csv_name}.csv",
                    cap=args.cap, seed=args.seed, overwrite=args.overwrite)
    counts = out["split"].value_counts()
    summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
    print(f"wrote {data_dir / f'{csv_name}.csv'}: {summary}")
