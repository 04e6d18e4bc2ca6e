"""The HDF5 image pack (``python -m common.tools.pack``, ``--data_format hdf5``): the same numbers, and refusals."""
import json
import shutil

import pytest

from common.tools import pack
from common.synthetic import write_synthetic
from folders import folder_main

pytestmark = pytest.mark.slow
agedb_main = folder_main("agedb-dir")
TINY = ["--model", "resnet18", "--width", "4", "--img_size", "16", "--stem", "cifar", "--batch_size", "64",
        "--workers", "2", "--print_freq", "100", "--epoch", "2", "--lr", "1e-2", "--conr"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "data"
    write_synthetic("agedb", out, n=150, img_size=24, seed=4)        # stored larger than trained: a real resize
    pack.main(["agedb", "--data_dir", str(out), "--img_size", "16"])
    return out


def test_training_from_the_pack_gives_the_same_numbers(data_dir, tmp_path):
    """Augmentation runs in 2 worker processes on both paths; the pack only replaces decoding and resizing."""
    for data_format in ("jpeg", "hdf5"):
        agedb_main(["--data_dir", str(data_dir), "--store_root", str(tmp_path), "--store_name", data_format,
                    "--data_format", data_format, *TINY])
    jpeg, hdf5 = (json.loads((tmp_path / f / "results.json").read_text())["test"] for f in ("jpeg", "hdf5"))
    assert json.dumps(jpeg, sort_keys=True) == json.dumps(hdf5, sort_keys=True)


def test_a_pack_that_does_not_fit_is_refused(data_dir, tmp_path):
    def error_of(directory, *flags):
        with pytest.raises(SystemExit) as info:
            agedb_main(["--data_dir", str(directory), "--store_root", str(tmp_path), "--store_name", "x",
                        "--overwrite", "--data_format", "hdf5", *TINY, *flags])
        return str(info.value.code)

    assert "needs" in error_of(data_dir, "--img_size", "20") and "agedb_20.h5" in error_of(data_dir, "--img_size",
                                                                                           "20")
    changed = tmp_path / "changed"
    shutil.copytree(data_dir, changed)
    lines = (changed / "agedb.csv").read_text().splitlines()
    (changed / "agedb.csv").write_text("\n".join(lines[:1] + lines[2:]) + "\n")          # one row fewer
    message = error_of(changed)
    assert "was packed from another agedb.csv or image size; re-pack it with `python -m common.tools.pack agedb" in message


def test_a_truncated_pack_is_one_sentence_naming_it(data_dir, tmp_path):
    """A pack cut short (a copy interrupted, a full disk) is named, with the command that re-creates it."""
    cut = tmp_path / "cut"
    shutil.copytree(data_dir, cut)
    path = cut / "agedb_16.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SystemExit) as info:
        agedb_main(["--data_dir", str(cut), "--store_root", str(tmp_path), "--store_name", "x", "--data_format",
                    "hdf5", *TINY, "--workers", "0"])
    message = str(info.value.code)
    assert message.startswith(f"error: {path} could not be read (") and "\n" not in message
    assert message.endswith(f"it is truncated or corrupt; re-create it with `python -m common.tools.pack agedb "
                            f"--data_dir {cut} --img_size 16`.")


def test_packing_small_images_larger_says_so_with_their_size(tmp_path, capsys):
    """The images are 12 px: packing them at 16 upscales every one (the warning names 12); at 12 nothing is said;
    a CSV with some larger images only counts the upscaled ones."""
    out = tmp_path / "data"
    write_synthetic("agedb", out, n=30, img_size=12, seed=0)
    total = len((out / "agedb.csv").read_text().splitlines()) - 1
    pack.main(["agedb", "--data_dir", str(out), "--img_size", "16"])
    err = capsys.readouterr().err
    assert err == ("warning: every image is smaller than --img_size 16 (at most 12×12 px) and was upscaled; to keep "
                   "them at their size, pack and train with --img_size 12.\n")
    pack.main(["agedb", "--data_dir", str(out), "--img_size", "12"])
    assert capsys.readouterr().err == ""
    first = (out / "agedb.csv").read_text().splitlines()[1].split(",")[1]
    from PIL import Image
    Image.new("RGB", (20, 20)).save(out / first)
    pack.main(["agedb", "--data_dir", str(out), "--img_size", "16"])
    assert capsys.readouterr().err == (f"warning: {total - 1} of {total} images are smaller than --img_size 16 and "
                                       "were upscaled (as the training loader does).\n")
