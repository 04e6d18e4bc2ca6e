"""What an age run says about its data: a missing split CSV names the data/ scripts and the synthetic generator's
command (with this --data_dir), and a synthetic folder is named the synthetic stand-in, not "NOT the published
split … get it with preprocess"."""
from __future__ import annotations

import shutil

import pytest

from common.age import read_split_csv
from common.errors import RunError
from common.synthetic import write_synthetic
from common.tools import datasplit
from folders import folder_main


@pytest.mark.parametrize("name, dataset, protocol", [("agedb.csv", "agedb", ""), ("imdb_wiki.csv", "imdb_wiki", ""),
                                                     ("agedb_blind_spot.csv", "agedb", " --protocol blind_spot")])
def test_a_missing_split_csv_names_the_scripts_and_the_generator(tmp_path, name, dataset, protocol):
    with pytest.raises(RunError) as info:
        read_split_csv(tmp_path / "data" / name, 120)
    message = str(info.value)
    assert message == (f"split file {tmp_path / 'data' / name} does not exist; get the real data with "
                       f"data/download_{dataset}.py, data/create_{dataset}.py and `python data/preprocess_{dataset}.py"
                       f"{protocol}`, or write a synthetic stand-in with `python -m common.synthetic {dataset} --out "
                       f"{tmp_path / 'data'}{protocol}`; or point --data_dir at the folder that holds it.")
    assert "see the README" not in message


@pytest.mark.parametrize("folder, dataset", [("agedb-dir", "agedb"), ("imdb-wiki-dir", "imdb_wiki")])
def test_train_py_without_data_says_how_to_get_it(tmp_path, folder, dataset):
    with pytest.raises(SystemExit) as info:
        folder_main(folder)(["--data_dir", str(tmp_path / "nowhere"), "--store_root", str(tmp_path / "runs"),
                             "--workers", "0"])
    message = str(info.value.code)
    assert f"`python -m common.synthetic {dataset} --out {tmp_path / 'nowhere'}`" in message and "\n" not in message


def test_a_synthetic_folder_is_named_the_synthetic_stand_in(tmp_path):
    csv = write_synthetic("agedb", tmp_path / "syn", n=40, img_size=8, seed=0)
    described = datasplit.describe_split(csv, datasplit.AGEDB_SPLIT)
    assert described == (f"split file {csv}: the synthetic stand-in written by `python -m common.synthetic agedb` "
                         "(SYNTHETIC_agedb.txt: made-up images), not the real data: its numbers show the pipeline at "
                         "work, not a method's result on the benchmark")
    # The same file without its marker: not the published split, and where to get that one.
    (tmp_path / "plain").mkdir()
    shutil.copy(csv, tmp_path / "plain" / "agedb.csv")
    plain = datasplit.describe_split(tmp_path / "plain" / "agedb.csv", datasplit.AGEDB_SPLIT)
    assert "NOT the published split" in plain and "python data/preprocess_agedb.py" in plain
    protocol = write_synthetic("agedb", tmp_path / "syn", n=40, img_size=8, seed=0, protocol="blind_spot")
    assert "the synthetic stand-in" in datasplit.describe_split(protocol, datasplit.AGEDB_SPLIT)
    imdb = write_synthetic("imdb_wiki", tmp_path / "imdb", n=40, img_size=8, seed=0)
    assert "`python -m common.synthetic imdb_wiki`" in datasplit.describe_split(imdb, datasplit.IMDB_WIKI_SPLIT)
