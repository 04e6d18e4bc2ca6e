"""sts-b-dir/data/download_sts.py: fetching and verifying the split files (DIR's, RankSim's) from a local source,
re-creating a split from GLUE, and the log line that names the split a run used."""
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from folders import ROOT, folder_module

REAL = ROOT.parent / "shared" / "data" / "sts-b-dir"
FILES = ("train_new.tsv", "dev_new.tsv", "test_new.tsv")
HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"

spec = importlib.util.spec_from_file_location("download_sts", ROOT / "sts-b-dir" / "data" / "download_sts.py")
download_sts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(download_sts)
dataset = folder_module("sts-b-dir", "dataset")


def rows(n, seed, start=0):
    rng = np.random.default_rng(seed)
    return "".join(f"{start + i}\tg\tf\t2012\t{i:04d}\tnone\tnone\tA man {i}.\tA woman {i}.\t"
                   f"{rng.integers(0, 26) * 0.2:.3f}\n" for i in range(n))


def fake_split(folder: Path, sizes=(5249, 1000, 1000), seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(FILES, sizes):
        (folder / name).write_text(HEADER + rows(n, seed + n), encoding="utf-8")
    return folder


@pytest.mark.skipif(not (REAL / "train_new.tsv").is_file(), reason=f"no STS-B-DIR split at {REAL}")
def test_dir_split_from_a_local_source_is_verified_and_named_in_the_log(tmp_path, capsys):
    download_sts.main(["--data_dir", str(tmp_path / "d"), "--source", str(REAL)])
    assert "the dir split" in capsys.readouterr().out
    assert all((tmp_path / "d" / name).read_bytes() == (REAL / name).read_bytes() for name in FILES)
    assert "DIR's published STS-B-DIR split" in dataset.describe_split(tmp_path / "d")
    download_sts.main(["--data_dir", str(tmp_path / "d"), "--source", str(REAL)])      # already there: no-op
    assert "nothing to do" in capsys.readouterr().out


def test_a_wrong_file_is_refused_and_nothing_is_written(tmp_path):
    source = fake_split(tmp_path / "src")
    with pytest.raises(SystemExit, match=r"is not the dir split's train_new.tsv \(its SHA-256 is [0-9a-f]{64}, not "
                                         "4da3322a"):
        download_sts.main(["--data_dir", str(tmp_path / "d"), "--source", str(source)])
    assert not list((tmp_path / "d").iterdir())
    with pytest.raises(SystemExit, match="could not fetch .*absent"):
        download_sts.main(["--data_dir", str(tmp_path / "d"), "--source", str(tmp_path / "absent")])


def test_ranksim_split_is_checked_by_sizes_recorded_and_named(tmp_path):
    source = fake_split(tmp_path / "src")
    short = fake_split(tmp_path / "short", sizes=(5249, 999, 1000))
    with pytest.raises(SystemExit, match="dev_new.tsv \\(it has 999 data rows, not 1000\\)"):
        download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(short)])
    download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(source)])
    record = json.loads((tmp_path / "d" / "split.json").read_text())
    assert record["split"] == "ranksim" and record["commit"].startswith("b08052d")
    assert record["sha256"]["test_new.tsv"] == download_sts.sha256_of(tmp_path / "d" / "test_new.tsv")
    line = dataset.describe_split(tmp_path / "d")
    assert "RankSim/SRL's STS-B-DIR split" in line and "NOT DIR's" in line
    with open(tmp_path / "d" / "dev_new.tsv", "a") as handle:                          # edited afterwards
        handle.write("5\tg\tf\t2012\t0\tnone\tnone\tx\ty\t1.000\n")
    assert "NOT a published STS-B-DIR split" in dataset.describe_split(tmp_path / "d")
    with pytest.raises(SystemExit, match="exists and is not .* pass --overwrite"):
        download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(source)])


def test_make_split_is_dir_procedure_and_seeded():
    rng = np.random.default_rng(3)
    scores = np.round(rng.uniform(0, 5, 6000) / 0.2) * 0.2
    scores[:40] = 5.0
    split = download_sts.make_split(scores, seed=1)
    assert split == download_sts.make_split(scores, seed=1) and split != download_sts.make_split(scores, seed=2)
    bins = np.minimum((scores / 0.25).astype(int), 19)
    for b in range(20):
        counts = Counter(s for s, k in zip(split, bins) if k == b)
        members = int((bins == b).sum())
        if members >= 100:
            assert counts["dev"] == counts["test"] == 50 and counts["train"] == members - 100
        else:
            assert counts["train"] == 0 and abs(counts["dev"] - counts["test"]) <= 1


def test_recreate_from_glue_files(tmp_path):
    glue = tmp_path / "glue"
    glue.mkdir()
    (glue / "train.tsv").write_text(HEADER + rows(3000, 0), encoding="utf-8")
    (glue / "dev.tsv").write_text(HEADER + rows(600, 1, start=3000), encoding="utf-8")
    download_sts.main(["--make_split", "--data_dir", str(tmp_path / "d"), "--source", str(glue), "--seed", "5"])
    sizes = [len((tmp_path / "d" / name).read_text().splitlines()) - 1 for name in FILES]
    assert sizes == [1600, 1000, 1000]          # every 0.25 bin holds ≥ 100 pairs: 50 + 50 each of 20 bins
    assert "re-created from GLUE" in dataset.describe_split(tmp_path / "d")
    split = dataset.load_splits(tmp_path / "d")
    assert len(split["train"]) == sizes[0]
