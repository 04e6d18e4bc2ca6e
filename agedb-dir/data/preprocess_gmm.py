"""Fit the Gaussian mixture prior of Balanced MSE's GAI on the AgeDB-DIR training ages.

    cd agedb-dir && python data/preprocess_gmm.py      # data/agedb.csv -> data/gmm.npz (then: train.py --bmse --imp gai)

The reference fits ``sklearn.mixture.GaussianMixture(K)`` and pickles it (``gmm.pkl``); this fits the same
1-D model by EM (``common/gmm.py``) and saves NPZ (or JSON with ``--out gmm.json``): ``means`` (K, 1),
``weights`` (K,), ``variances`` (K, 1, 1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root, for `common`

from common.engine import RunError  # noqa: E402
from common.gmm import fit_from_split_csv  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help="folder holding agedb.csv")
    parser.add_argument("--K", type=int, default=8, help="mixture components")
    parser.add_argument("--out", default="", help="output file (.npz or .json); default <data_dir>/gmm.npz")
    args = parser.parse_args(argv)
    if args.K < 1:
        parser.error(f"--K must be >= 1, got {args.K}.")
    out = Path(args.out) if args.out else Path(args.data_dir) / "gmm.npz"
    try:
        gmm = fit_from_split_csv(Path(args.data_dir) / "agedb.csv", args.K, out)
    except RunError as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {out}: means {gmm['means'].ravel().round(2).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1:])
