"""Pack an age benchmark's decoded, resized images into one HDF5 file, read with ``--data_format hdf5``.

    python -m common.tools.pack agedb --data_dir agedb-dir/data --img_size 224      # -> data/agedb_224.h5

JPEG decoding and resizing cost more than the rest of the data pipeline; the pack stores every image of the split
CSV already decoded and resized to ``img_size`` × ``img_size`` (uint8), so loading is a read. Training from it gives
the same tensors as from the JPEG files (the loader's resize to that size is then the identity), and the same
numbers. The pack records the CSV's SHA-256 and the image size: a pack that does not match the split file or
``--img_size`` is refused with one sentence.

``--img_size`` must be the training run's ``--img_size`` (224 by default on both, the references' size). Packing
images smaller than that upscales them (a pack of 32 px synthetic faces at 224 px is 49 times larger than needed):
the command then says so and names the images' own size, to pack and train at.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common.runtime import sha256_of, write_atomic
from common.age import decode_resized, pack_path
from common.errors import RunError

CSV_NAMES = {"agedb": "agedb", "imdb_wiki": "imdb_wiki"}


DEFAULT_IMG_SIZE = 224         # the age benchmarks' train.py --img_size default


def pack_bytes(paths, img_size: int) -> int:
    """About the size of a pack on disk: its uint8 images (stored uncompressed), its paths, and HDF5's bookkeeping
    (a chunk index entry per image and the file's own structures)."""
    return len(paths) * (img_size * img_size * 3 + 64) + sum(len(str(p).encode()) + 16 for p in paths) + 2 ** 20


def read_image(path: Path, img_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One image decoded and resized for the pack, and its own (width, height); an unreadable file or mode is one
    sentence naming it."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return decode_resized(image, img_size), image.size
    except OSError as error:
        raise RunError(f"image {path} could not be read ({error}); fix the data first.") from error


def write_pack(data_dir, csv_name: str, img_size: int, log=print) -> Path:
    """Decode and resize every image of ``<data_dir>/<csv_name>.csv`` into ``<csv_name>_<img_size>.h5``;
    ``log`` gets one warning line when some images are smaller than ``img_size`` (they are upscaled).

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
    sizes = []

    def write(tmp):
        with h5py.File(tmp, "w") as handle:
            images = handle.create_dataset("images", (len(paths), img_size, img_size, 3), dtype=np.uint8,
                                           chunks=(1, img_size, img_size, 3))
            for i, path in enumerate(paths):
                images[i], size = read_image(data_dir / path, img_size)
                sizes.append(size)
            handle.create_dataset("paths", data=np.array(paths, dtype=object), dtype=h5py.string_dtype())
            handle.attrs.update(csv_sha256=sha256_of(csv), img_size=img_size, csv_name=csv_name)

    command = f"python -m common.tools.pack {csv_name} --data_dir {data_dir} --img_size {img_size}"
    write_atomic(out, write, needed=pack_bytes(paths, img_size),
                 advice=f"free space on that disk, then run `{command}` again (or train without --data_format hdf5)")
    smaller = sum(width < img_size or height < img_size for width, height in sizes)
    if paths and smaller == len(paths):
        widest, tallest = max(w for w, _ in sizes), max(h for _, h in sizes)
        log(f"warning: every image is smaller than --img_size {img_size} (at most {widest}×{tallest} px) and was "
            f"upscaled; to keep them at their size, pack and train with --img_size {min(widest, tallest)}.")
    elif smaller:
        log(f"warning: {smaller} of {len(paths)} images are smaller than --img_size {img_size} and were upscaled "
            "(as the training loader does).")
    return out


def main(argv=None) -> Path:
    from common.cli import Parser

    parser = Parser(__doc__, prog="python -m common.tools.pack", formatter_class=Parser.RawFormatter)
    parser.add_argument("dataset", choices=list(CSV_NAMES), help="the age benchmark whose split CSV to pack")
    parser.add_argument("--data_dir", required=True,
                        help="the folder of <dataset>.csv and its images; the pack <dataset>_<img_size>.h5 goes there")
    parser.add_argument("--img_size", type=int, default=DEFAULT_IMG_SIZE,
                        help="side of the stored square images: the --img_size you train with (default: 224, the "
                             "age train.py's; smaller images are upscaled, with a warning)")
    args = parser.parse_args(argv)
    try:
        out = write_pack(args.data_dir, CSV_NAMES[args.dataset], args.img_size, log=lambda m: print(m, file=sys.stderr))
    except RunError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
