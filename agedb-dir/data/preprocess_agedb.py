"""Get the AgeDB-DIR split file ``data/agedb.csv``: the published one by default, or a new one.

    cd agedb-dir && python data/preprocess_agedb.py                  # fetch the published split, verify it
    cd agedb-dir && python data/preprocess_agedb.py --make_split     # data/meta/agedb.csv -> a new split
    cd agedb-dir && python data/preprocess_agedb.py --protocol blind_spot   # -> data/agedb_blind_spot.csv

Default: downloads ``agedb-dir/data/agedb.csv`` of the DIR repository (YyzHarry/imbalanced-regression) at
the pinned commit ``common.tools.datasplit.REFERENCE_COMMIT`` and keeps it only if its SHA-256 is the published
file's (train 12,208 / val 2,140 / test 2,140). ``--source PATH_OR_URL`` takes it from elsewhere (a local
copy), verified the same way. Use it for any comparison with published numbers; training logs say whether
the split in use is this file.

``--make_split`` re-creates a split with the same procedure (docs/datasets.md §1.2: per age 0..120, seeded
shuffle, k = min(n_age // 3, 30) to val and the next k to test, the rest to train). Per-age counts match the
published file, but which image goes where need not: upstream walked the folder in filesystem order. Neither
mode replaces an existing ``agedb.csv`` without ``--overwrite``; output is written atomically.

``--protocol P`` writes ``data/agedb_P.csv`` instead: a split of the DIR re-evaluation (Puetz et al.,
*Deconstructing deep imbalanced regression*, Artificial Intelligence Review 2026), train with ``--dataset
agedb_P``. The pool is every row of ``data/meta/agedb.csv`` (else of ``data/agedb.csv``, its split ignored), and
``common.tools.datasplit.protocol_split`` splits it, seeded by ``--seed`` (one numpy generator):

* every age is shuffled once; **test**: the first min(n_a, 50) images of each age 16–85 (``--test_cap``);
* **training draw** from the m_a images left: ``balanced_extrapolation`` takes t_a = min(m_a, ⌊M·w(a) + ½⌋) with
  w(a) = exp(−(a − 50)² / 100) (a Gaussian of σ = √50 ≈ 7.1 years at 50) and M = m_50, so age 50 is drawn whole
  and the others in proportion, as far as their images allow; ``bimodal_interpolation`` the same with
  w(a) = exp(−(a − 25)² / 100) + exp(−(a − 80)² / 100), w = 0 for ages 36–64, and M = max(m_25, m_80) (age 25 is
  drawn whole, the bump at 80 as high as its few images allow); ``blind_spot`` every image left except ages 47–53;
* **val**: 10 % of the drawn images (⌊0.1·T + ½⌋, uniformly), so it follows the training distribution and never
  holds a removed age; the rest is **train**. The other images are not used (not in the CSV).

On the published AgeDB-DIR images (seed 666) this gives train / val / test 4,123 / 458 / 3,493
(``balanced_extrapolation``: training ages 25–74), 3,854 / 428 / 3,493 (``bimodal_interpolation``) and
10,183 / 1,131 / 3,493 (``blind_spot``); the test set holds 50 images of every age 16–85 but 84 (43).
"""
import sys

from common.tools import datasplit


def main(argv=None) -> None:
    datasplit.main(argv, csv_name="agedb", cap=30, published=datasplit.AGEDB_SPLIT, protocols=True)


if __name__ == "__main__":
    main(sys.argv[1:])
