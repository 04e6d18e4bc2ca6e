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

:func:`protocol_split` builds the harder splits of the DIR re-evaluation (Puetz et al., *Deconstructing deep
imbalanced regression*, Artificial Intelligence Review 2026): ``balanced_extrapolation``,
``bimodal_interpolation`` and ``blind_spot`` (:data:`PROTOCOLS`; docs/datasets.md §1.5 says exactly how).

:data:`STSB_SPLITS` identifies the two published STS-B-DIR splits (DIR's, RankSim/SRL's) by their files' SHA-256.
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

import numpy as np
import pandas as pd

from common.runtime import sha256_of

SPLITS = ("train", "val", "test")


def _whole_years(ages: Iterable) -> list[int]:
    """The ages as ints; ValueError naming the first one with a fractional part."""
    int_ages = []
    for a in ages:
        if int(a) != a:
            raise ValueError(f"ages must be whole years, got {a!r}")
        int_ages.append(int(a))
    return int_ages


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
    int_ages = _whole_years(ages)

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
    return _split_and_write(meta_csv, out_csv, lambda ages: make_dir_split(ages, cap=cap, seed=seed), overwrite)


def _split_and_write(meta_csv, out_csv, assign, overwrite: bool) -> pd.DataFrame:
    """Read ``meta_csv`` (``age,path`` first), give each row ``assign(ages)``'s split, write the rows that got one
    to ``out_csv`` atomically; a missing or malformed input, or an existing output without ``overwrite``, is one
    sentence (``SystemExit``)."""
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
    try:  # validated first: a cast would silently truncate 7.5 to 7
        _whole_years(df["age"].tolist())
        df = df.astype({"age": "int64"})
    except (ValueError, TypeError) as e:
        raise SystemExit(f"error: {meta_csv} has a non-integer age ({e}); "
                         f"re-create it with the create_*.py script.") from None
    split = assign(df["age"].tolist())
    out = pd.DataFrame({"age": df["age"], "path": df["path"], "split": split})
    out = out[out["split"] != ""]
    from common.runtime import write_atomic    # here: the data scripts' --help needs no torch
    from common.errors import RunError
    try:
        write_atomic(out_csv, lambda tmp: out.to_csv(tmp, index=False))
    except RunError as error:                  # a full disk: its sentence, the earlier split intact
        raise SystemExit(f"error: {error}") from None
    return out


# -- the re-evaluation's AgeDB-DIR protocols (Puetz et al., 2026) ------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """A split of the re-evaluation: which ages are tested, and how the training ages are drawn.

    ``peaks``: the ages of the Gaussian bumps of the training draw (none: every image left is drawn, the data's own
    distribution); ``removed``: the ages (inclusive) that get no training or validation image; ``test_ages``: the
    ages (inclusive) tested, at most the test cap of each."""

    peaks: tuple[int, ...]
    removed: tuple[int, int] | None
    test_ages: tuple[int, int] = (16, 85)

    def weight(self, age: int) -> float:
        """The training draw's relative weight of ``age``: the sum of the bumps exp(−(a − μ)² / (2 · 50)), or 1
        without peaks; 0 for a removed age."""
        if self.removed is not None and self.removed[0] <= age <= self.removed[1]:
            return 0.0
        if not self.peaks:
            return 1.0
        return float(sum(np.exp(-(age - peak) ** 2 / (2 * PEAK_VARIANCE)) for peak in self.peaks))


#: the variance (years²) of each training bump: σ = √50 ≈ 7.1 years, the public protocol script's exp(−0.01 (a − μ)²).
PEAK_VARIANCE = 50.0
#: most test images per age.
TEST_CAP = 50
#: the share of the training draw that becomes the validation split.
VAL_FRACTION = 0.1
PROTOCOLS = {
    "balanced_extrapolation": Protocol(peaks=(50,), removed=None),
    "bimodal_interpolation": Protocol(peaks=(25, 80), removed=(36, 64)),
    "blind_spot": Protocol(peaks=(), removed=(47, 53)),
}


def protocol_split(ages: Iterable[int], protocol: str, seed: int = 666, test_cap: int = TEST_CAP,
                   val_fraction: float = VAL_FRACTION) -> list[str]:
    """Assign each image to ``train``, ``val``, ``test`` or ``""`` (unused) by a protocol of :data:`PROTOCOLS`.

    1. Within each age (in increasing order) the images are shuffled once by ``numpy.random.default_rng(seed)``.
    2. Test: the first min(n_a, ``test_cap``) images of every age a in the protocol's ``test_ages``.
    3. Training draw: of the m_a images left at age a, the next t_a = min(m_a, ⌊M · w(a) + ½⌋), with w the
       protocol's :meth:`Protocol.weight` and M the largest m_μ over its peak ages μ (the fuller peak is drawn
       whole, the other as high as its images allow); without peaks t_a = m_a outside the removed ages.
    4. Validation: ⌊``val_fraction`` · T + ½⌋ of the T drawn images, chosen uniformly without replacement by the
       same generator; the rest is ``train``. Validation thus follows the training distribution and never holds
       a removed age. Every other image is unused.

    Raises:
        ValueError: an unknown protocol, a non-integral age, a negative cap, a fraction outside [0, 1), or no
            image left at any peak age.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if test_cap < 0:
        raise ValueError(f"test_cap must be >= 0, got {test_cap}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    spec = PROTOCOLS[protocol]
    int_ages = np.asarray(_whole_years(ages), dtype=np.int64)
    rng = np.random.default_rng(seed)
    split = np.full(len(int_ages), "", dtype=object)
    left = {}
    for age in np.unique(int_ages):
        order = rng.permutation(np.flatnonzero(int_ages == age))
        tested = min(len(order), test_cap) if spec.test_ages[0] <= age <= spec.test_ages[1] else 0
        split[order[:tested]] = "test"
        left[int(age)] = order[tested:]
    if spec.peaks:
        height = max(len(left.get(peak, ())) for peak in spec.peaks)
        if height == 0:
            raise ValueError(f"protocol {protocol}: no image of the peak ages {spec.peaks} is left for training")
        take = {age: min(len(rest), int(np.floor(height * spec.weight(age) + 0.5))) for age, rest in left.items()}
    else:
        take = {age: len(rest) if spec.weight(age) > 0 else 0 for age, rest in left.items()}
    drawn = np.concatenate([left[age][:take[age]] for age in left] or [np.zeros(0, np.int64)])
    split[drawn] = "train"
    held = rng.choice(drawn, size=int(np.floor(val_fraction * len(drawn) + 0.5)), replace=False)
    split[held] = "val"
    return split.tolist()


def protocol_csv(meta_csv, out_csv, protocol: str, seed: int = 666, test_cap: int = TEST_CAP,
                 overwrite: bool = False) -> pd.DataFrame:
    """:func:`protocol_split` of an ``age,path[,…]`` list (every row is in the pool; a ``split`` column is
    ignored), written as ``age,path,split`` with the used rows in their input order, atomically."""
    return _split_and_write(meta_csv, out_csv, lambda ages: protocol_split(ages, protocol, seed, test_cap),
                            overwrite)


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


def synthetic_marker(path, published: PublishedSplit) -> Path:
    """The marker ``python -m common.synthetic`` writes next to the split files it makes (``SYNTHETIC_agedb.txt``)."""
    return Path(path).parent / f"SYNTHETIC_{published.csv_name}.txt"


def describe_split(path, published: PublishedSplit) -> str:
    """One log line saying whether a run uses the published split (or the synthetic stand-in)."""
    problem = published.problem(path)
    if problem is None:
        return f"split file {path}: the published {published.csv_name} split (DIR repository at {REFERENCE_COMMIT[:7]})"
    marker = synthetic_marker(path, published)
    if marker.is_file():
        return (f"split file {path}: the synthetic stand-in written by `python -m common.synthetic "
                f"{published.csv_name}` ({marker.name}: made-up images), not the real data: its numbers show the "
                "pipeline at work, not a method's result on the benchmark")
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


def add_split_flags(parser, csv_name: str, cap: int, published: PublishedSplit, protocols: bool = False) -> None:
    """The flags of a ``data/preprocess_*.py`` command (and of ``python -m common.tools.datasplit <dataset>``)."""
    parser.add_argument("--data_dir", default="./data", help=f"folder for {csv_name}.csv (and meta/{csv_name}.csv)")
    parser.add_argument("--source", default=None,
                        help=f"where to get the published file, a URL or a local path (default: {published.url})")
    parser.add_argument("--make_split", action="store_true",
                        help=f"create a split from meta/{csv_name}.csv instead (not the published one)")
    parser.add_argument("--cap", type=int, default=cap, help="--make_split: most images per age in val (and test)")
    parser.add_argument("--seed", type=int, default=666, help="--make_split, --protocol: seed of the split")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {csv_name}.csv")
    if protocols:
        parser.add_argument("--protocol", default=None, choices=list(PROTOCOLS),
                            help=f"write {csv_name}_<protocol>.csv, a split of the DIR re-evaluation (Puetz et al., "
                                 "2026), from meta/" + f"{csv_name}.csv (else every row of {csv_name}.csv); train "
                                 f"with --dataset {csv_name}_<protocol> (default: none, DIR's split)")
        parser.add_argument("--test_cap", type=int, default=TEST_CAP, help="--protocol: most test images per age")


def main(argv, csv_name: str, cap: int, published: PublishedSplit, protocols: bool = False, prog: str | None = None,
         ) -> None:
    """The ``data/preprocess_*.py`` command of each age benchmark.

    Default: fetch the published ``<csv_name>.csv`` from the reference repository's pinned commit and verify it.
    ``--make_split``: build a split from ``meta/<csv_name>.csv`` with the DIR procedure (seeded). With
    ``protocols``, ``--protocol P`` writes ``<csv_name>_P.csv`` by :func:`protocol_split` from
    ``meta/<csv_name>.csv`` (or, without it, from every row of ``<csv_name>.csv``)."""
    from common.cli import Parser

    parser = Parser(f"Get the {csv_name}.csv split: the published one (default) or a new one (--make_split).",
                    prog=prog)
    add_split_flags(parser, csv_name, cap, published, protocols)
    args = parser.parse_args(argv)
    if args.cap < 0:
        parser.error(f"--cap must be >= 0, got {args.cap}.")
    data_dir = Path(args.data_dir)
    if getattr(args, "protocol", None):
        if args.make_split:
            parser.error("--protocol and --make_split build different splits: pass only one of them.")
        if args.test_cap < 0:
            parser.error(f"--test_cap must be >= 0, got {args.test_cap}.")
        source = data_dir / "meta" / f"{csv_name}.csv"
        source = source if source.is_file() else data_dir / f"{csv_name}.csv"
        target = data_dir / f"{csv_name}_{args.protocol}.csv"
        try:
            out = protocol_csv(source, target, args.protocol, args.seed, args.test_cap, args.overwrite)
        except ValueError as error:        # e.g. no image at a peak age
            raise SystemExit(f"error: {source}: {error}.") from None
        counts = out["split"].value_counts()
        summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
        print(f"wrote {target}: {summary} (protocol {args.protocol} from {source}; train with --dataset "
              f"{csv_name}_{args.protocol})")
        return
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

# The two published STS-B-DIR splits (sts-b-dir/glue_data/STS-B/{train,dev,test}_new.tsv; docs/datasets.md §1.4),
# each identified by the SHA-256 of its three files: DIR's, which DIR's STS-B row used, and the other realisation
# that RankSim and SRL published on (the same blobs at RankSim's commits b08052d and 9e1c862; its git blob ids are
# kept to compare with that repository's tree). ``sts-b-dir/dataset.py`` names the split a run reads from this
# table and ``sts-b-dir/data/download_sts.py`` verifies what it fetches against it.
STSB_SPLITS = {
    "dir": {"label": "DIR's", "repo": "YyzHarry/imbalanced-regression", "commit": REFERENCE_COMMIT,
            "sha256": {"train_new.tsv": "4da3322ae29f7ad1b7d03cdeafcb2480c276e5df1d08737678a7856697218a9a",
                       "dev_new.tsv": "9ec12d785aa817ffe4b0f88fde442d3bf57161d8cbeaa84aaa1fdf764cca6dd6",
                       "test_new.tsv": "55f90b3c5a0b2947d5ff64c41536191e9e1ba3bb5ffe64aca5465ab25fa8e94c"}},
    "ranksim": {"label": "RankSim/SRL's", "repo": "BorealisAI/ranksim-imbalanced-regression",
                "commit": "b08052da550d61837b1218106f688a732d06bcca",
                "sha256": {"train_new.tsv": "cc71336eb2061891c3f165fa9f812c780f1e86eca0f81e62b4da49ecb9dfb3d1",
                           "dev_new.tsv": "e5b56cd14e68a5d02ec2a05bfe11d1a45d74582170e61e679c1288f05aa82535",
                           "test_new.tsv": "8fd7e51459a3deb30adedde0d6a777fea60d2f8a4c65ac86c76d25ca560f3bc8"},
                "git_blob": {"train_new.tsv": "ae46d4e1a5ddd5000c59de692f192bdbf0b2e12b",
                             "dev_new.tsv": "278ec43dda771a54ab4fea774eb8c9a3d78de916",
                             "test_new.tsv": "6d16e7c509133748dd2d8a3b0acd137bf8f9e428"}},
}

# Each age benchmark's split: (csv name, val/test cap per age, the published file, whether --protocol applies).
BENCHMARK_SPLITS = {"agedb": ("agedb", 30, AGEDB_SPLIT, True), "imdb_wiki": ("imdb_wiki", 150, IMDB_WIKI_SPLIT, False)}
PROG = "python -m common.tools.datasplit"


def command_line(argv=None) -> None:
    """``python -m common.tools.datasplit {agedb,imdb_wiki} [flags]``: the ``data/preprocess_*.py`` command of that
    benchmark, from any folder (``--data_dir`` names the data folder)."""
    import sys
    from common.cli import Parser

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in BENCHMARK_SPLITS:
        csv_name, cap, published, protocols = BENCHMARK_SPLITS[argv[0]]
        main(argv[1:], csv_name, cap, published, protocols, prog=f"{PROG} {argv[0]}")
        return
    description = ("Get an age benchmark's split file, from any folder: the command behind\n"
                   "agedb-dir/data/preprocess_agedb.py and imdb-wiki-dir/data/preprocess_imdb_wiki.py. It fetches and\n"
                   "verifies the published split (default), builds a new one with the DIR procedure (--make_split),\n"
                   "or, for agedb, a split of the DIR re-evaluation (--protocol P).\n\n"
                   f"    {PROG} agedb --data_dir agedb-dir/data        # the published agedb.csv\n"
                   f"    {PROG} imdb_wiki --data_dir D --make_split    # D/meta/imdb_wiki.csv -> a new split\n"
                   f"    {PROG} agedb --help                           # the flags")
    parser = Parser(description, prog=PROG, usage=f"{PROG} [-h] {{{','.join(BENCHMARK_SPLITS)}}} [FLAGS ...]",
                    formatter_class=Parser.RawFormatter)
    parser.add_argument("dataset", choices=list(BENCHMARK_SPLITS), help="the age benchmark whose split to get")
    parser.parse_args(argv)          # prints the help, or a one-sentence error for an unknown dataset


if __name__ == "__main__":
    command_line()
