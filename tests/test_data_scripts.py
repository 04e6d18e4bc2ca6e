"""The DIR split (common/tools/datasplit.py) and the data scripts of agedb-dir/data and imdb-wiki-dir/data,
run on tiny inputs written here (.mat files, synthetic AgeDB folders, local tarballs)."""
from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys
import tarfile
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from common.tools import datasplit
from common.tools.datasplit import make_dir_split, split_csv
from common.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    """Import a script from a dataset folder (their names have dashes, so they are not packages)."""
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


create_imdb_wiki = load_script("imdb-wiki-dir/data/create_imdb_wiki.py")
preprocess_imdb_wiki = load_script("imdb-wiki-dir/data/preprocess_imdb_wiki.py")
download_imdb_wiki = load_script("imdb-wiki-dir/data/download_imdb_wiki.py")
create_agedb = load_script("agedb-dir/data/create_agedb.py")
preprocess_agedb = load_script("agedb-dir/data/preprocess_agedb.py")
download_agedb = load_script("agedb-dir/data/download_agedb.py")


# ----------------------------------------------------------------------------- make_dir_split

def random_ages(seed=0):
    rng = np.random.default_rng(seed)
    counts = {a: int(rng.integers(0, 200)) for a in range(0, 131)}  # includes ages > 120
    counts[3] = 2  # fewer than 3: nothing to val/test
    ages = [a for a, c in counts.items() for _ in range(c)]
    return rng.permutation(ages).tolist(), counts


@pytest.mark.parametrize("cap", [0, 5, 30, 150])
def test_make_dir_split_counts(cap):
    ages, counts = random_ages()
    split = make_dir_split(ages, cap=cap)
    assert len(split) == len(ages) and set(split) <= {"train", "val", "test"}
    by = {s: Counter(a for a, t in zip(ages, split) if t == s) for s in ("train", "val", "test")}
    for age, n in counts.items():
        k = min(n // 3, cap) if age <= 120 else 0
        assert by["val"][age] == by["test"][age] == k, age
        assert by["train"][age] == n - 2 * k


def test_make_dir_split_deterministic_and_private_rng():
    ages, _ = random_ages(1)
    state = random.getstate()
    first = make_dir_split(ages, cap=30)
    assert random.getstate() == state  # the global RNG is neither used nor reseeded
    assert make_dir_split(ages, cap=30) == first
    other = make_dir_split(ages, cap=30, seed=667)
    assert other != first and Counter(zip(ages, other)) == Counter(zip(ages, first))


def test_make_dir_split_small_cases():
    assert make_dir_split([], cap=30) == []
    assert make_dir_split([5, 5], cap=30) == ["train", "train"]
    assert sorted(make_dir_split([5, 5, 5], cap=30)) == ["test", "train", "val"]
    assert make_dir_split([121, 150, -1] * 10, cap=30) == ["train"] * 30  # outside 0..120
    assert sorted(make_dir_split([200] * 9, cap=30, max_age=200)) == ["test"] * 3 + ["train"] * 3 + ["val"] * 3
    assert make_dir_split(np.array([7.0, 7.0, 7.0]), cap=1) == make_dir_split([7, 7, 7], cap=1)
    with pytest.raises(ValueError, match="whole years"):
        make_dir_split([7.5], cap=1)
    with pytest.raises(ValueError, match="cap"):
        make_dir_split([7], cap=-1)


def test_split_csv_errors(tmp_path):
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "missing.csv"))):
        split_csv(tmp_path / "missing.csv", tmp_path / "out.csv", cap=30)
    bad = tmp_path / "bad.csv"
    bad.write_text("age,file\n3,a.jpg\n")
    with pytest.raises(SystemExit, match="age,path"):
        split_csv(bad, tmp_path / "out.csv", cap=30)
    for age in ("three", "7.5", ""):
        bad.write_text(f"age,path\n{age},a.jpg\n")
        with pytest.raises(SystemExit, match="non-integer age"):
            split_csv(bad, tmp_path / "out.csv", cap=30)
    assert not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------- IMDB-WIKI: create

def datenum(y, m, d, frac=0.0):
    """Matlab datenum of a date: Python ordinal + 366 (Matlab counts from year 0)."""
    return date(y, m, d).toordinal() + 366 + frac


def write_mat(path: Path, key: str, rows):
    """rows: (full_path, dob datenum, photo_taken, face_score, second_face_score)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full_path = np.empty(len(rows), dtype=object)  # object array -> Matlab cell array, as in the real files
    full_path[:] = [r[0] for r in rows]
    fields = {"full_path": full_path}
    for i, name in enumerate(["dob", "photo_taken", "face_score", "second_face_score"], start=1):
        fields[name] = np.array([r[i] for r in rows], dtype=np.float64)
    fields["gender"] = np.ones(len(rows))  # read by upstream, unused
    savemat(path, {key: fields})


@pytest.fixture()
def imdb_wiki_dir(tmp_path):
    nan, inf = float("nan"), float("inf")
    write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", [
        ("01/nm0000001_rm1_1980-3-15_2010.jpg", datenum(1980, 3, 15, 0.6), 2010, 1.5, nan),  # age 30
        ("02/nm0000002_rm2_1980-8-1_2010.jpg", datenum(1980, 8, 1), 2010, 3.0, nan),  # July+: age 29
        ("03/nm0000003_rm3_1990-7-1_2011.jpg", datenum(1990, 7, 1), 2011, 1.0, nan),  # score == min: age 20
        ("04/nm0000004_rm4_1980-1-1_2010.jpg", datenum(1980, 1, 1), 2010, -inf, nan),  # no face found
        ("05/nm0000005_rm5_1980-1-1_2010.jpg", datenum(1980, 1, 1), 2010, 0.9, nan),  # score too low
        ("06/nm0000006_rm6_1980-1-1_2010.jpg", datenum(1980, 1, 1), 2010, 2.0, 1.2),  # a second face
        ("07/nm0000007_rm7_1700-1-1_2010.jpg", datenum(1700, 1, 1), 2010, 2.0, nan),  # age 310 > 200
        ("08/nm0000008_rm8_2012-1-1_2010.jpg", datenum(2012, 1, 1), 2010, 2.0, nan),  # age -2 < 0
        ("09/nm0000009_rm9_0-1-1_2010.jpg", 1.0, 2010, 2.0, nan),  # datenum before year 1
        ("10/nm0000010_rm10_1960-5-5_2010.jpg", datenum(1960, 5, 5), 2010, nan, nan),  # NaN score
    ])
    write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", [
        ("17/10000217_1981-05-05_2009.jpg", datenum(1981, 5, 5), 2009, 4.2, nan),  # age 28
        ("48/10000548_1925-12-31_1964.jpg", datenum(1925, 12, 31), 1964, 2.5, nan),  # age 38
        ("12/100012_1948-07-06_2008.jpg", datenum(1948, 7, 6), 2008, 0.5, nan),  # dropped
    ])
    return tmp_path


def test_create_imdb_wiki_rows(imdb_wiki_dir, capsys):
    create_imdb_wiki.main(["--data_dir", str(imdb_wiki_dir)])
    meta = imdb_wiki_dir / "meta"
    imdb = pd.read_csv(meta / "imdb.csv")
    wiki = pd.read_csv(meta / "wiki.csv")
    both = pd.read_csv(meta / "imdb_wiki.csv")
    assert list(imdb.columns) == list(wiki.columns) == list(both.columns) == ["age", "path"]
    assert imdb.values.tolist() == [
        [30, "imdb_crop/01/nm0000001_rm1_1980-3-15_2010.jpg"],
        [29, "imdb_crop/02/nm0000002_rm2_1980-8-1_2010.jpg"],
        [20, "imdb_crop/03/nm0000003_rm3_1990-7-1_2011.jpg"],
    ]
    assert wiki.values.tolist() == [
        [28, "wiki_crop/17/10000217_1981-05-05_2009.jpg"],
        [38, "wiki_crop/48/10000548_1925-12-31_1964.jpg"],
    ]
    assert both.values.tolist() == imdb.values.tolist() + wiki.values.tolist()
    assert "kept 3 of 10" in capsys.readouterr().out


def test_create_imdb_wiki_min_score(imdb_wiki_dir):
    create_imdb_wiki.main(["--data_dir", str(imdb_wiki_dir), "--min_score", "2.0"])
    assert pd.read_csv(imdb_wiki_dir / "meta" / "imdb_wiki.csv")["age"].tolist() == [29, 28, 38]


def test_create_imdb_wiki_bad_inputs(tmp_path):
    with pytest.raises(SystemExit):
        create_imdb_wiki.main(["--data_dir", str(tmp_path / "nowhere")])
    missing = tmp_path / "imdb_crop" / "imdb.mat"
    with pytest.raises(SystemExit, match=re.escape(str(missing))):
        create_imdb_wiki.main(["--data_dir", str(tmp_path)])
    write_mat(missing, "not_imdb", [("a.jpg", datenum(1980, 1, 1), 2010, 2.0, float("nan"))])
    with pytest.raises(SystemExit, match=re.escape(str(missing))):
        create_imdb_wiki.main(["--data_dir", str(tmp_path)])


# ----------------------------------------------------------------------------- IMDB-WIKI: preprocess

def test_preprocess_imdb_wiki(tmp_path, capsys):
    (tmp_path / "meta").mkdir()
    ages = [a for a in range(0, 126) for _ in range(a % 9 + (500 if a == 30 else 0))]
    pd.DataFrame({"age": ages, "path": [f"imdb_crop/00/{i}.jpg" for i in range(len(ages))]}).to_csv(
        tmp_path / "meta" / "imdb_wiki.csv", index=False)
    preprocess_imdb_wiki.main(["--data_dir", str(tmp_path), "--make_split"])
    out = tmp_path / "imdb_wiki.csv"
    assert out.read_text().splitlines()[0] == "age,path,split"
    df = pd.read_csv(out)
    assert df["age"].tolist() == ages  # same rows, same order
    assert df["split"].tolist() == make_dir_split(ages, cap=150, seed=666)
    assert (df["split"] == "val").sum() == sum(min(n // 3, 150) for a, n in Counter(ages).items() if a <= 120)
    assert not list(tmp_path.glob("*.tmp"))
    # a second run must not silently replace what may be the published split
    with pytest.raises(SystemExit, match="--overwrite"):
        preprocess_imdb_wiki.main(["--data_dir", str(tmp_path), "--make_split"])
    preprocess_imdb_wiki.main(["--data_dir", str(tmp_path), "--make_split", "--overwrite", "--seed", "1"])
    assert pd.read_csv(out)["split"].tolist() == make_dir_split(ages, cap=150, seed=1)


def test_preprocess_bad_inputs(tmp_path):
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "meta" / "imdb_wiki.csv"))):
        preprocess_imdb_wiki.main(["--data_dir", str(tmp_path), "--make_split"])
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "meta" / "agedb.csv"))):
        preprocess_agedb.main(["--data_dir", str(tmp_path), "--make_split"])
    with pytest.raises(SystemExit):
        preprocess_agedb.main(["--data_dir", str(tmp_path), "--make_split", "--cap", "-3"])


# ----------------------------------------------------------------------------- AgeDB

def test_agedb_pipeline_on_synthetic_data(tmp_path):
    synthetic_csv = write_synthetic("agedb", tmp_path, n=300, img_size=8, seed=0)
    truth = pd.read_csv(synthetic_csv)
    synthetic_csv.unlink()  # what the scripts rebuild
    create_agedb.main(["--data_dir", str(tmp_path)])
    meta = pd.read_csv(tmp_path / "meta" / "agedb.csv")
    assert list(meta.columns) == ["age", "path"]
    assert meta["path"].tolist() == sorted(truth["path"])  # every image, in sorted name order
    assert dict(zip(meta["path"], meta["age"])) == dict(zip(truth["path"], truth["age"]))
    preprocess_agedb.main(["--data_dir", str(tmp_path), "--make_split"])
    split = pd.read_csv(tmp_path / "agedb.csv")
    assert split["split"].tolist() == make_dir_split(meta["age"].tolist(), cap=30, seed=666)


def test_create_agedb_bad_inputs(tmp_path):
    with pytest.raises(SystemExit):
        create_agedb.main(["--data_dir", str(tmp_path)])
    img_dir = tmp_path / "AgeDB"
    img_dir.mkdir()
    with pytest.raises(SystemExit, match=re.escape(str(img_dir))):
        create_agedb.main(["--data_dir", str(tmp_path)])  # empty folder
    (img_dir / "notes.txt").write_text("ignored")
    (img_dir / "0_Some_Name_31_m.jpg").write_bytes(b"")  # five fields
    with pytest.raises(SystemExit, match="0_Some_Name_31_m.jpg"):
        create_agedb.main(["--data_dir", str(tmp_path)])
    (img_dir / "0_Some_Name_31_m.jpg").rename(img_dir / "0_SomeName_31_m.jpg")
    create_agedb.main(["--data_dir", str(tmp_path)])
    assert (tmp_path / "meta" / "agedb.csv").read_text() == "age,path\n31,AgeDB/0_SomeName_31_m.jpg\n"


def test_download_agedb_explains_and_fails(tmp_path):
    with pytest.raises(SystemExit) as e:
        download_agedb.main(["--data_dir", str(tmp_path)])
    assert e.value.code not in (0, None)
    message = str(e.value.code)
    assert "ibug.doc.ic.ac.uk/resources/agedb" in message and str(tmp_path / "AgeDB") in message
    (tmp_path / "AgeDB").mkdir()
    (tmp_path / "AgeDB" / "0_A_30_m.jpg").write_bytes(b"")
    download_agedb.main(["--data_dir", str(tmp_path)])  # already there: no error


# ----------------------------------------------------------------------------- IMDB-WIKI: download

def make_tarballs(src: Path, with_mat: bool = True) -> Path:
    """imdb_crop.tar and wiki_crop.tar with a .mat and one image each, in ``src``; returns src."""
    for folder, key in (("imdb_crop", "imdb"), ("wiki_crop", "wiki")):
        staging = src / "staging" / folder
        (staging / "00").mkdir(parents=True)
        (staging / "00" / "face.jpg").write_bytes(b"jpeg")
        if with_mat:
            write_mat(staging / f"{key}.mat", key, [("00/face.jpg", datenum(1980, 1, 1), 2010, 2.0, float("nan"))])
        with tarfile.open(src / f"{folder}.tar", "w") as tar:
            tar.add(staging, arcname=folder)
    return src


def test_download_imdb_wiki_from_local_mirror(tmp_path):
    mirror = make_tarballs(tmp_path / "mirror")
    data = tmp_path / "data"
    download_imdb_wiki.main(["--data_dir", str(data), "--base_url", mirror.as_uri()])
    for folder, key in (("imdb_crop", "imdb"), ("wiki_crop", "wiki")):
        assert (data / folder / f"{key}.mat").exists() and (data / folder / "00" / "face.jpg").exists()
        assert not (data / f"{folder}.tar").exists() and not (data / f"{folder}.tar.part").exists()
    create_imdb_wiki.main(["--data_dir", str(data)])  # the download feeds step 1
    assert len(pd.read_csv(data / "meta" / "imdb_wiki.csv")) == 2
    download_imdb_wiki.main(["--data_dir", str(data), "--base_url", "file:///nowhere/"])  # already there: skipped


def test_download_imdb_wiki_failures(tmp_path):
    url = (tmp_path / "no-mirror").as_uri() + "/"
    with pytest.raises(SystemExit, match=f"{url}imdb_crop.tar"):
        download_imdb_wiki.main(["--data_dir", str(tmp_path / "data"), "--base_url", url])
    assert not list((tmp_path / "data").iterdir())  # no partial file left behind
    mirror = make_tarballs(tmp_path / "mirror", with_mat=False)
    with pytest.raises(SystemExit, match="imdb_crop/imdb.mat"):
        download_imdb_wiki.main(["--data_dir", str(tmp_path / "data"), "--base_url", mirror.as_uri()])


# ----------------------------------------------------------------------------- run as the README does

def test_scripts_run_from_the_dataset_folder(tmp_path):
    # `python data/<script>.py` from inside agedb-dir/: the script must find `common` on its own.
    (tmp_path / "meta").mkdir()
    rows = "".join(f"40,AgeDB/{i}_A_40_m.jpg\n" for i in range(9))
    (tmp_path / "meta" / "agedb.csv").write_text("age,path\n" + rows)
    run = subprocess.run([sys.executable, "data/preprocess_agedb.py", "--data_dir", str(tmp_path), "--make_split"],
                         cwd=REPO / "agedb-dir", capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    counts = pd.read_csv(tmp_path / "agedb.csv")["split"].value_counts().to_dict()
    assert counts == {"train": 3, "val": 3, "test": 3}
    run = subprocess.run([sys.executable, "data/download_agedb.py", "--data_dir", str(tmp_path)],
                         cwd=REPO / "agedb-dir", capture_output=True, text=True)
    assert run.returncode == 1 and "ibug.doc.ic.ac.uk" in run.stderr and "Traceback" not in run.stderr


# ----------------------------------------------------------------------------- the published split files

SHARED_AGEDB = REPO.parent / "shared" / "data" / "agedb-dir" / "agedb.csv"


def test_published_split_url_is_pinned():
    assert datasplit.AGEDB_SPLIT.url == ("https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/"
                                         "a6fdc45d45c04e6f5c40f43925bc66e580911084/agedb-dir/data/agedb.csv")
    assert datasplit.IMDB_WIKI_SPLIT.url.endswith("/a6fdc45d45c04e6f5c40f43925bc66e580911084/imdb-wiki-dir/data/"
                                                  "imdb_wiki.csv")


@pytest.mark.skipif(not SHARED_AGEDB.is_file(), reason="../shared/data/agedb-dir/agedb.csv is absent")
def test_fetch_the_published_agedb_split_from_a_local_copy(tmp_path, capsys):
    """Offline: the fetch is given the file itself; it is verified by its SHA-256 and then reported as published."""
    preprocess_agedb.main(["--data_dir", str(tmp_path), "--source", str(SHARED_AGEDB)])
    out = tmp_path / "agedb.csv"
    assert out.read_bytes() == SHARED_AGEDB.read_bytes()
    assert "the published split, verified" in capsys.readouterr().out
    assert "the published agedb split" in datasplit.describe_split(out, datasplit.AGEDB_SPLIT)
    preprocess_agedb.main(["--data_dir", str(tmp_path), "--source", str(SHARED_AGEDB)])   # again: nothing to do
    assert "already the published split" in capsys.readouterr().out


def test_a_wrong_file_is_refused_and_nothing_is_written(tmp_path):
    fake = tmp_path / "fake.csv"
    write_synthetic("agedb", tmp_path / "syn", n=100, img_size=8, seed=0)
    fake.write_bytes((tmp_path / "syn" / "agedb.csv").read_bytes())
    with pytest.raises(SystemExit, match="is not the published agedb split \\(its SHA-256 is"):
        preprocess_agedb.main(["--data_dir", str(tmp_path / "out"), "--source", str(fake)])
    assert not (tmp_path / "out" / "agedb.csv").exists() and not list((tmp_path / "out").glob("*.part"))
    described = datasplit.describe_split(fake, datasplit.AGEDB_SPLIT)
    assert "NOT the published split" in described


def test_imdb_wiki_split_is_verified_by_its_sizes(tmp_path):
    sizes = {"train": 6, "val": 2, "test": 2}
    published = datasplit.PublishedSplit("imdb_wiki", "imdb-wiki-dir", sizes=sizes)
    rows = ["age,path,split"] + [f"30,imdb_crop/{i}.jpg,{s}" for i, s in enumerate(["train"] * 6 + ["val"] * 2 +
                                                                                   ["test"] * 2)]
    good = tmp_path / "good.csv"
    good.write_text("\n".join(rows) + "\n")
    assert published.problem(good) is None
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(rows[:-1]) + "\n")
    assert "split sizes are {'train': 6, 'val': 2, 'test': 1}" in published.problem(bad)
    datasplit.fetch_published_split(published, tmp_path / "data" / "imdb_wiki.csv", str(good))
    assert (tmp_path / "data" / "imdb_wiki.csv").read_text() == good.read_text()


def test_an_unreachable_source_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="could not fetch .* --make_split"):
        preprocess_agedb.main(["--data_dir", str(tmp_path), "--source", "file:///nonexistent/agedb.csv"])
