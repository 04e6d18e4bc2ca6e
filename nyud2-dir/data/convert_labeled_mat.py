"""Convert the official ``nyu_depth_v2_labeled.mat`` (1,449 images, MATLAB v7.3 = HDF5) to the DenseDepth layout.

    cd nyud2-dir && python data/convert_labeled_mat.py --mat nyu_depth_v2_labeled.mat --data_dir ./data

For users who have the official labelled set rather than the benchmark archive. Reads ``images`` (N, 3, W, H)
uint8 and ``depths`` (N, W, H) float32 metres with h5py (MATLAB stores them transposed) and ``scenes`` (names).
The test images are those whose index appears in ``--test_csv`` (the benchmark's ``nyu2_test.csv`` names them
``<5-digit index>_colors.png``; default: the one in ``--data_dir``), or the first ``--n_test`` indices if there
is none; the rest are training images. Writes ``nyu2_train/<scene>_out/<index>.jpg|.png`` (8-bit depth,
value / 255 × 10 m), ``nyu2_test/<index>_colors.png|_depth.png`` (16-bit millimetres) and both CSVs. The
labelled set has 795 training images, not the benchmark's 50,688: results are not comparable with the papers'.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def scene_names(handle, n: int) -> list[str]:
    """The ``scenes`` cell array (HDF5 object references to uint16 character arrays), or index-based names."""
    if "scenes" not in handle:
        return [f"labeled_{i // 10:03d}" for i in range(n)]
    refs = handle["scenes"][()].reshape(-1)
    return ["".join(chr(c) for c in handle[ref][()].reshape(-1)) for ref in refs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat")
    parser.add_argument("--data_dir", default="./data")
    parser.add_argument("--test_csv", default=None, help="the benchmark's nyu2_test.csv (names the test indices)")
    parser.add_argument("--n_test", type=int, default=654, help="without a test CSV: the first N indices are test")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    try:
        handle = h5py.File(args.mat, "r")
    except OSError as error:
        raise SystemExit(f"error: {args.mat} could not be opened as a MATLAB v7.3 (HDF5) file ({error}).") from None
    with handle:
        for key in ("images", "depths"):
            if key not in handle:
                raise SystemExit(f"error: {args.mat} has no '{key}' dataset; it is not nyu_depth_v2_labeled.mat.")
        images, depths = handle["images"], handle["depths"]
        n = images.shape[0]
        test_csv = Path(args.test_csv) if args.test_csv else data_dir / "nyu2_test.csv"
        if test_csv.is_file():
            test = {int(m.group(1)) for m in re.finditer(r"(\d{5})_colors", test_csv.read_text())}
        else:
            test = set(range(min(args.n_test, n)))
        scenes = scene_names(handle, n)
        train_rows, test_rows = [], []
        for index in range(n):
            rgb = np.ascontiguousarray(images[index].transpose(2, 1, 0))          # (3, W, H) → (H, W, 3)
            metres = np.ascontiguousarray(depths[index].T.astype(np.float32))     # (W, H) → (H, W)
            if index in test:
                folder = data_dir / "nyu2_test"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(folder / f"{index:05d}_colors.png")
                Image.fromarray(np.clip(np.rint(metres * 1000), 0, 65535).astype(np.uint16)).save(
                    folder / f"{index:05d}_depth.png")
                test_rows.append(f"data/nyu2_test/{index:05d}_colors.png,data/nyu2_test/{index:05d}_depth.png\n")
            else:
                scene = f"{scenes[index]}_out"
                folder = data_dir / "nyu2_train" / scene
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(folder / f"{index}.jpg", quality=95)
                Image.fromarray(np.clip(np.rint(metres / 10 * 255), 0, 255).astype(np.uint8)).save(
                    folder / f"{index}.png")
                train_rows.append(f"data/nyu2_train/{scene}/{index}.jpg,data/nyu2_train/{scene}/{index}.png\n")
    (data_dir / "nyu2_test.csv").write_text("".join(test_rows))
    (data_dir / "nyu2_train.csv").write_text("".join(train_rows))
    print(f"wrote {len(train_rows)} training and {len(test_rows)} test pairs into {data_dir}; next: "
          "python data/preprocess_nyud2.py --make_subset --make_mask")


if __name__ == "__main__":
    main(sys.argv[1:])
