"""Train or evaluate an age regressor on IMDB-WIKI-DIR.

    python train.py --reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2
    python train.py --bmse --imp bni --init_noise_sigma 10. --retrain_fc --pretrained <ckpt> --lr 1e-4 --epoch 10
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar

The defaults are the reference's DIR base set (``--lds_ks 5 --lds_sigma 1 --bucket_start 0``), each shown by
``python train.py --help``. This folder's ``task.py`` wires ``dataset.py`` (``imdb_wiki.csv``, ages 0–200),
``resnet.py`` and ``loss.py`` into the loop every benchmark shares.
"""
import sys

try:
    from common import cli
except ImportError:
    sys.exit("error: the repo's `common` package is not installed in this Python; run `make venv` in the repo "
             "root and use .venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")

IMDB_WIKI_DEFAULTS = dict(
    dataset="imdb_wiki",
    srl_num_labels=187,  # SRL label slots: ages 0..186 (the reference's --bucket_num 187)
    num_branch=3,        # UVOTE's IMDB-WIKI-DIR heads (its released checkpoint)
)


def build_parser():
    """This benchmark's command line: the age flags with this folder's defaults."""
    return cli.build_age_parser(__doc__.splitlines()[0], **IMDB_WIKI_DEFAULTS)


def main(argv=None) -> dict:
    args = cli.parse(build_parser(), argv)
    from task import IMDBWikiTask   # after parsing: --help and flag errors answer before torch loads
    from common.launch import run
    return run(args, IMDBWikiTask)


if __name__ == "__main__":
    main()
