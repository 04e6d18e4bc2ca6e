"""Pack an age benchmark's decoded, resized images into one HDF5 file, read with ``--data_format hdf5``.

    python -m common.tools.pack agedb --data_dir agedb-dir/data --img_size 224      # -> data/agedb_224.h5

JPEG decoding and resizing cost more than the rest of the data pipeline; the pack stores every image of the split
CSV already decoded and resized to ``img_size`` × ``img_size`` (uint8), so loading is a read. Training from it gives
the same tensors as from the JPEG files (the loader's resize to that size is then the identity), and the same
numbers. The pack records the CSV's SHA-256 and the image size: a pack that does not match the split file or
``--img_size`` is refused with one sentence.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common.runtime import sha256_of, write_atomic
from common.age import decode_resized, pack_path
from common.errors import RunError

CSV_NAMES = {"agedb": "agedb", "imdb_wiki": "imdb_wiki"}


def pack_bytes(paths, img_size: int) -> int:
    """About the size of a pack on disk: its uint8 images (stored uncompressed), its paths, and HDF5's bookkeeping
    (a chunk index entry per image and the file's own structures)."""
    return len(paths) * (img_size * img_size * 3 + 64) + sum(len(str(p).encode()) + 16 for p in paths) + 2 ** 20


def read_image(path: Path, img_size: int) -> np.ndarray:
    """One image decoded and resized for the pack; an unreadable file or mode is one sentence naming it."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return decode_resized(image, img_size)
    except OSError as error:
        raise RunError(f"image {path} could not be read ({error}); fix the data first.") from error


def write_pack(data_dir, csv_name: str, img_size: int) -> Path:
    """Decode and resize every image of ``<data_dir>/<csv_name>.csv`` into ``<csv_name>_<img_size>.h5``.

    The pack is written as a temporary file beside it and renamed when complete (an earlier pack stays intact
    until then); a disk without room for it is refused before writing, and a disk that fills while writing is
    one sentence (:func:`common.runtime.write_atomic`), never a half-written pack."""
    import h5py
    import pandas as pd

    data_dir = Path(data_dir)
    csv = data_dir / f"{csv_name}.csv"
    if not csv.is_file():
        raise RunError(f"{csv} does not exist; create the split first (data/ scripts) or pass --data_dir.")
    paths = pd.read_csv(csv, dtype={"path": str})["path"].tolist()
    out = pack_path(data_dir, csv_name, img_size)

    def write(tmp):
        with h5py.File(tmp, "w") as handle:
            images = handle.create_dataset("images", (len(paths), img_size, img_size, 3), dtype=np.uint8,
                                           chunks=(1, img_size, img_size, 3))
            for i, path in enumerate(paths):
                images[i] = read_image(data_dir / path, img_size)
            handle.create_dataset("paths", data=np.array(paths, dtype=object), dtype=h5py.string_dtype())
            handle.attrs.update(csv_sha256=sha256_of(csv), img_size=img_size, csv_name=csv_name)

    command = f"python -m common.tools.pack {csv_name} --data_dir {data_dir} --img_size {img_size}"
    write_atomic(out, write, needed=pack_bytes(paths, img_size),
                 advice=f"free space on that disk, then run `{command}` again (or train without --data_format hdf5)")
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m common.tools.pack", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("dataset", choices=list(CSV_NAMES))
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--img_size", type=int, default=224)
    args = parser.parse_args(argv)
    try:
        out = write_pack(args.data_dir, CSV_NAMES[args.dataset], args.img_size)
    except RunError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
