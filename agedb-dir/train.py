"""Train or evaluate an age regressor on AgeDB-DIR.

    python train.py --reweight sqrt_inv --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2 --fds --conr -w 1 --beta 4 -e 0.01
    python train.py --evaluate --resume checkpoint/<run>/ckpt.best.pth.tar

Flags and defaults are the reference's (DIR base set; AgeDB: ``--lds_ks 9 --fds_ks 9 --bucket_start 3``);
``python train.py --help`` lists them all. ``task.py`` runs this folder's ``dataset.py``, ``resnet.py`` and
``loss.py`` on the shared training loop (``common/trainer.py``).
"""
import sys

try:
    from common import cli
except ImportError:
    sys.exit("error: the repo's `common` package is not installed in this Python; run `make venv` in the repo "
             "root and use .venv/bin/python (or `pip install -r requirements.txt && pip install -e .`).")

AGEDB_DEFAULTS = dict(
    dataset="agedb", lds_ks=9, fds_ks=9, bucket_start=3,
    srl_num_labels=102,  # SRL label slots: ages 0..101 (the reference's --bucket_num 102)
    group_sigma=0.5, reg_loss="mse",   # Group-DIR's AgeDB values (agedb/train.py: σ 0.5, MSE)
    accon_augment="rnc",  # ACCon's AgeDB views: RnC's augmentation (the authors' AgeDB code)
    bsam_rho=0.2,         # BSAM's AgeDB ρ (the authors' README and code)
)


def build_parser():
    """This benchmark's command line: the age flags with this folder's defaults."""
    return cli.build_age_parser(__doc__.splitlines()[0], **AGEDB_DEFAULTS)


def main(argv=None) -> dict:
    args = cli.parse(build_parser(), argv)
    from task import AgeDBTask      # after parsing: --help and flag errors answer before torch loads
    from common.launch import run
    return run(args, AgeDBTask)


if __name__ == "__main__":
    main()
