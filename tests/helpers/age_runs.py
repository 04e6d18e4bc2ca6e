"""Tiny AgeDB-DIR runs for the end-to-end tests of run folders and faults: a 4-channel ResNet-18 on 16×16 synthetic
images, CPU, one loader process."""
from pathlib import Path

import pytest

from common.synthetic import write_synthetic
from folders import folder_main

TINY = ["--model", "resnet18", "--width", "4", "--img_size", "16", "--batch_size", "64", "--workers", "0",
        "--print_freq", "100", "--lr", "1e-2"]
agedb_main = folder_main("agedb-dir")


def synthetic_agedb(folder: Path) -> Path:
    """240 training images, seed 3, in the real on-disk format."""
    write_synthetic("agedb", folder, n=240, img_size=16, seed=3)
    return folder


def run_args(data_dir, root, name, *flags) -> list[str]:
    return ["--data_dir", str(data_dir), "--store_root", str(root), "--store_name", name, *TINY, *flags]


def error_of(argv) -> str:
    """The sentence ``agedb-dir/train.py ARGV`` ends with."""
    with pytest.raises(SystemExit) as info:
        agedb_main(argv)
    return str(info.value.code)
