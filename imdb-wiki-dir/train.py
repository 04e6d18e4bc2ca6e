"""Train or evaluate an age regressor on IMDB-WIKI-DIR.

    python train.py --reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2
    python train.py --bmse --imp bni --init_noise_sigma 10. --retrain_fc --pretrained <ckpt> --lr 1e-4 --epoch 10
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar

Flags and defaults are the reference's DIR base set (``--lds_ks 5 --lds_sigma 1 --bucket_start 0``);
``python train.py --help`` lists them all. The engine is shared with AgeDB-DIR (``common/age.py``); ConR's
weight ``--beta`` is applied once (the reference adds it twice on this dataset, docs/reference-differences.md).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import age  # noqa: E402
from common.cli import build_parser  # noqa: E402

IMDB_WIKI_DEFAULTS = dict(
    dataset="imdb_wiki",
    srl_num_labels=187,  # SRL label slots: ages 0..186 (the reference's --bucket_num 187)
)

if __name__ == "__main__":
    age.main(build_parser(__doc__.splitlines()[0], **IMDB_WIKI_DEFAULTS))
