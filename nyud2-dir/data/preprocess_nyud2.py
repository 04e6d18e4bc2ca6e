"""The NYUD2-DIR meta files: the FDS subset and the balanced test mask (published by default), the pixel check.

    cd nyud2-dir && python data/preprocess_nyud2.py                     # fetch both published files, verify
    cd nyud2-dir && python data/preprocess_nyud2.py --make_subset --make_mask   # recompute them (seeded)
    cd nyud2-dir && python data/preprocess_nyud2.py --check_histogram   # is the training data the references'?

Default: downloads ``nyu2_train_FDS_subset.csv`` (600 training images whose features update FDS each epoch;
SHA-256 ``e2e00e23…f5b6``) and ``test_balanced_mask.npy`` ((654, 228, 304) uint8: the same number of test pixels
from every 0.1-m bin from 0.7 m on; verified by its full git blob id ``156c67de…e6203c3``, what ``git hash-object``
gives for the file) from the DIR repository (YyzHarry/imbalanced-regression) at the pinned commit of
``common.tools.datasplit.REFERENCE_COMMIT``, or from ``--source_dir`` (local copies). ``--make_subset`` and
``--make_mask`` recompute them with the references' recipe (docs/datasets.md §1.3), seeded by ``--seed``; the
references drew theirs without a seed, so a recomputed file is not the published one.

``--check_histogram`` computes the training pixel histogram (0.1-m bins over the un-augmented 304×228 crops; it
is cached for training) and compares it with the references' hard-coded table: on the real data they are equal
(3,513,286,656 pixels; largest bin 21 with 146,133,612; smallest non-zero bin 99 with 1,132,666).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np

from common.runtime import sha256_of
from common.tools.datasplit import REFERENCE_COMMIT, REFERENCE_REPO
from common.depth import balanced_mask

SUBSET_SHA256 = "e2e00e2388db5a4a6917b7f1c4af68b5fd4012f2884acbbb810ffe8c0957f5b6"
# The published mask's git blob id in the DIR repository's tree at REFERENCE_COMMIT (added in c37d6f4, unchanged
# since): SHA-1 over the whole content, so a file with this id is the published mask byte for byte. The file itself
# (45 MB) is not kept in this repository.
MASK_BLOB = "156c67de7a6901c50f15b011e07c42c67e6203c3"
SUBSET, MASK = "nyu2_train_FDS_subset.csv", "test_balanced_mask.npy"
SUBSET_SIZE = 600


def folder_module(name: str):
    """This benchmark folder's ``dataset.py`` (the script runs from ``data/``, beside it)."""
    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"nyud2_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fetch(name: str, dest: Path, source_dir: str | None) -> str:
    """Copy ``name`` from ``source_dir``, or download it from the pinned DIR commit, through a temporary file;
    returns where it came from."""
    part = dest.with_name(dest.name + ".part")
    source = Path(source_dir) / name if source_dir else f"{REFERENCE_REPO}/{REFERENCE_COMMIT}/nyud2-dir/data/{name}"
    try:
        if source_dir:
            shutil.copyfile(source, part)
        else:
            with urllib.request.urlopen(source, timeout=60) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
    except (OSError, ValueError) as error:
        part.unlink(missing_ok=True)
        raise SystemExit(f"error: could not get {source} ({error}); put {name} into {dest.parent} by hand, or pass "
                         f"--make_{'subset' if name == SUBSET else 'mask'} to recompute it (not the published one).")
    part.replace(dest)
    return str(source)


def verify_subset(path: Path) -> None:
    digest = sha256_of(path)
    if digest != SUBSET_SHA256:
        path.unlink()
        raise SystemExit(f"error: the FDS subset fetched is not the published file (SHA-256 {digest}, expected "
                         f"{SUBSET_SHA256}); nothing was kept.")


def git_blob_id(path: Path) -> str:
    """The id git gives a file's content: SHA-1 of ``b"blob <size>\\0"`` followed by the bytes (hex)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_mask(path: Path, n_test: int, origin: str | None = None) -> None:
    """Keep the fetched mask only if it is the published one: its shape and dtype, then its content (its full git
    blob id); otherwise delete it and stop with one sentence naming ``origin`` (where it came from)."""
    origin = origin or str(path)
    try:
        mask = np.load(path)
    except (OSError, ValueError) as error:
        path.unlink()
        raise SystemExit(f"error: the mask fetched could not be read ({error}); nothing was kept.") from None
    if mask.shape != (n_test, 228, 304) or mask.dtype != np.uint8:
        path.unlink()
        raise SystemExit(f"error: the mask fetched has shape {mask.shape} and dtype {mask.dtype}; the published mask "
                         f"is ({n_test}, 228, 304) uint8; nothing was kept.")
    blob = git_blob_id(path)
    if blob != MASK_BLOB:
        path.unlink()
        advice = "replace that copy with the published file, or leave out --source_dir to download it" \
            if not origin.startswith(("http://", "https://")) else "run this script again to download it anew"
        raise SystemExit(f"error: {origin} is not the published {MASK}: its git blob id is {blob}, the published "
                         f"file's (DIR repository at {REFERENCE_COMMIT[:7]}) is {MASK_BLOB}; nothing was kept "
                         f"({advice}, or pass --make_mask to recompute one, which is not the published mask).")


def make_subset(data_dir: Path, seed: int) -> None:
    rows = (data_dir / "nyu2_train.csv").read_text().splitlines()
    chosen = np.random.default_rng(seed).choice(len(rows), size=min(SUBSET_SIZE, len(rows)), replace=False)
    (data_dir / SUBSET).write_text("".join(rows[i] + "\n" for i in chosen))
    print(f"wrote {data_dir / SUBSET}: {len(chosen)} training images drawn with seed {seed} (not the published set)")


def make_mask(data_dir: Path, seed: int, scale_to: int, crop) -> None:
    dataset = folder_module("dataset")
    pairs = dataset.read_pairs(data_dir / "nyu2_test.csv", data_dir)
    depths = []
    for image_path, depth_path in pairs:
        image, depth = dataset.load_pair(image_path, depth_path, test=True)
        image, depth = dataset.centre_crop(*dataset.scale(image, depth, scale_to), crop, crop)
        depths.append(dataset.depth_tensor(depth, test=True)[0].numpy())
    mask = balanced_mask(np.stack(depths), seed=seed)
    np.save(data_dir / MASK, mask)
    print(f"wrote {data_dir / MASK}: {mask.shape}, {int(mask.sum())} pixels, seed {seed} (not the published mask)")


def check_histogram(data_dir: Path, scale_to: int, crop) -> bool:
    dataset = folder_module("dataset")
    pairs = dataset.read_pairs(data_dir / "nyu2_train.csv", data_dir)
    counts = dataset.cached_pixel_histogram(data_dir, pairs, scale_to, crop)
    problems = dataset.check_reference_histogram(counts)
    nonzero = np.flatnonzero(counts)
    print(f"training pixels: {counts.sum():,}; largest bin {int(counts.argmax())} ({counts.max():,}); smallest "
          f"non-zero bin {int(nonzero[counts[nonzero].argmin()]) if nonzero.size else '-'} "
          f"({counts[nonzero].min() if nonzero.size else 0:,})")
    if problems:
        print("NOT the references' table: " + "; ".join(problems))
        return False
    print("equal to the references' table, bin by bin")
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data_dir", default="./data", help="the data/ folder (with nyu2_train.csv, nyu2_test.csv)")
    parser.add_argument("--source_dir", default=None, help="take the published files from this folder")
    parser.add_argument("--make_subset", action="store_true", help="recompute the FDS subset (seeded)")
    parser.add_argument("--make_mask", action="store_true", help="recompute the balanced test mask (seeded)")
    parser.add_argument("--check_histogram", action="store_true", help="compare the training pixel histogram "
                        "with the references' table (exit status 1 if it differs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=240)
    parser.add_argument("--crop", type=int, nargs=2, default=(304, 228), metavar=("W", "H"))
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "nyu2_test.csv").is_file():
        raise SystemExit(f"error: {data_dir / 'nyu2_test.csv'} does not exist; run data/download_nyud2.py first or "
                         "pass --data_dir.")
    if args.check_histogram:
        raise SystemExit(0 if check_histogram(data_dir, args.scale, tuple(args.crop)) else 1)
    n_test = sum(1 for line in (data_dir / "nyu2_test.csv").read_text().splitlines() if line.strip())
    if args.make_subset:
        make_subset(data_dir, args.seed)
    elif not (data_dir / SUBSET).is_file():
        fetch(SUBSET, data_dir / SUBSET, args.source_dir)
        verify_subset(data_dir / SUBSET)
        print(f"wrote {data_dir / SUBSET}: the published FDS subset, verified")
    if args.make_mask:
        make_mask(data_dir, args.seed, args.scale, tuple(args.crop))
    elif not (data_dir / MASK).is_file():
        origin = fetch(MASK, data_dir / MASK, args.source_dir)
        verify_mask(data_dir / MASK, n_test, origin)
        print(f"wrote {data_dir / MASK}: the published balanced test mask, verified")


if __name__ == "__main__":
    main(sys.argv[1:])
