"""Train or evaluate an age regressor on AgeDB-DIR.

    python train.py --reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2 --fds --conr -w 1 --beta 4 -e 0.01
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar

Flags and defaults are the reference's (DIR base set; AgeDB: ``--lds_ks 9 --fds_ks 9 --bucket_start 3``);
``python train.py --help`` lists them all. The engine is shared with IMDB-WIKI-DIR (``common/age.py``).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import age  # noqa: E402
from common.cli import build_parser  # noqa: E402

AGEDB_DEFAULTS = dict(
    dataset="agedb", lds_ks=9, fds_ks=9, bucket_start=3,
    srl_num_labels=102,  # SRL label slots: ages 0..101 (the reference's --bucket_num 102)
)

if __name__ == "__main__":
    age.main(build_parser(__doc__.splitlines()[0], **AGEDB_DEFAULTS))
