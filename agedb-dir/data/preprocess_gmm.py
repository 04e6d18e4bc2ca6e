"""Fit the Gaussian mixture prior of Balanced MSE's GAI on the AgeDB-DIR training ages.

    cd agedb-dir && python data/preprocess_gmm.py [--K 8]     # data/agedb.csv -> data/gmm.npz (then: --bmse --imp gai)

The reference fits ``sklearn.mixture.GaussianMixture(K)`` and pickles it (``gmm.pkl``); this fits the same
1-D model by EM (``common/gmm.py``) and saves NPZ (or JSON with ``--out gmm.json``): ``means`` (K, 1),
``weights`` (K,), ``variances`` (K, 1, 1).
"""
import sys

from common import gmm


def main(argv=None) -> None:
    gmm.main(argv, csv_name="agedb")


if __name__ == "__main__":
    main(sys.argv[1:])
