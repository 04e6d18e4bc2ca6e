"""Pack the NYUD2-DIR image/depth pairs, decoded and scaled, into one HDF5 file for ``--data_format hdf5``.

    cd nyud2-dir && python data/pack_nyud2.py [--data_dir ./data] [--scale 240]     # -> data/nyu2_pairs_240.h5

Each CSV (training, test, FDS subset) becomes a group of RGB images and depth maps after the loader's first step
(shorter side scaled to ``--scale``), checked as the loader checks them (8-bit training depth, 16-bit test
depth, equal sizes). Training from it gives the same tensors as from the files; a pack that does not match its
CSV or ``--scale`` is refused with one sentence.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data_dir", default="./data")
    parser.add_argument("--scale", type=int, default=240)
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("nyud2_dataset", Path(__file__).resolve().parents[1] / "dataset.py")
    dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dataset)
    try:
        out = dataset.write_pack(args.data_dir, args.scale)
    except dataset.RunError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
