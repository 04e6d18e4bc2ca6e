"""Fit the GAI prior of Balanced MSE on NYUD2-DIR: a K-component Gaussian mixture over the training depths.

    cd nyud2-dir && python data/preprocess_gmm.py                 # -> data/gmm.npz (read by --bmse --imp gai)

As the references (there are too many pixels to fit on): each 0.1-m bin centre (0.05 … 9.95 m) is repeated
``count // 10⁶`` times, with the bins below 0.7 m taking bin 7's count; the mixture is fitted by EM
(``common.gmm``; the references used scikit-learn). The counts are the training pixel histogram (computed
once and cached, see data/preprocess_nyud2.py) or, with ``--reference_histogram``, the references' table.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from common.gmm import fit_gmm_1d, labels_digest, save_gmm


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data_dir", default="./data")
    parser.add_argument("--K", type=int, default=16, help="mixture components")
    parser.add_argument("--reference_histogram", action="store_true", help="use the references' pixel table")
    parser.add_argument("--scale", type=int, default=240)
    parser.add_argument("--crop", type=int, nargs=2, default=(304, 228), metavar=("W", "H"))
    parser.add_argument("--out", default=None, help="default <data_dir>/gmm.npz")
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("nyud2_dataset", Path(__file__).resolve().parents[1] / "dataset.py")
    dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dataset)
    data_dir = Path(args.data_dir)
    if args.reference_histogram:
        counts = dataset.REFERENCE_TRAIN_PIXELS
    else:
        try:
            pairs = dataset.read_pairs(data_dir / "nyu2_train.csv", data_dir)
            counts = dataset.cached_pixel_histogram(data_dir, pairs, args.scale, tuple(args.crop))
        except dataset.RunError as error:
            raise SystemExit(f"error: {error}") from None
    fitted_on = labels_digest(counts)       # the histogram itself, which a run compares with its own
    counts = np.asarray(counts, dtype=np.int64).copy()
    counts[:7] = counts[7]
    unit = dataset.pixels_per_gmm_sample(int(np.asarray(counts).sum()))
    centres = np.arange(100) * 0.1 + 0.05
    samples = np.repeat(centres, counts // unit)
    if samples.size < args.K:
        raise SystemExit(f"error: only {samples.size} samples for {args.K} components; lower --K.")
    out = Path(args.out) if args.out else data_dir / "gmm.npz"
    save_gmm(fit_gmm_1d(samples, args.K), out, fitted_on=fitted_on)
    print(f"wrote {out}: {args.K} components fitted on {samples.size} bin centres (one per {unit:,} pixels)")


if __name__ == "__main__":
    main(sys.argv[1:])
