"""sts-b-dir/data/download_sts.py: fetching and verifying the split files (DIR's, RankSim's, both by SHA-256) from
a local source, re-creating a split from GLUE, and the log line that names the split a run used (and the file that
keeps a folder from being a published split). The RankSim tests read ../shared/data/sts-b-dir/ranksim/."""
import hashlib
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


def test_ranksim_split_is_checked_by_sha256_like_dirs(tmp_path):
    """Files of the right shape that are not RankSim's published ones are refused by their SHA-256, naming the
    first one and the hash expected; the folder's tables and the script's are one table."""
    assert dataset.RANKSIM_SPLIT is download_sts.SPLITS["ranksim"] and dataset.DIR_SPLIT is download_sts.SPLITS["dir"]
    source = fake_split(tmp_path / "src")
    with pytest.raises(SystemExit, match=r"src/train_new.tsv is not the ranksim split's train_new.tsv \(its SHA-256 is "
                                         r"[0-9a-f]{64}, not cc71336eb2061891.*\); nothing was written \(check that "
                                         r"copy, or fetch the pinned files without --source\)\.$"):
        download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(source)])
    assert not list((tmp_path / "d").iterdir())
    # A split.json claiming RankSim's split does not make other files RankSim's.
    digests = {name: download_sts.sha256_of(source / name) for name in FILES}
    (source / "split.json").write_text(json.dumps({"split": "ranksim", "sha256": digests}))
    assert dataset.split_held(source) is None
    assert "NOT a published STS-B-DIR split (no file's SHA-256 is one of DIR's or RankSim/SRL's" in \
        dataset.describe_split(source)


RANKSIM = REAL / "ranksim"
needs_ranksim = pytest.mark.skipif(not all((RANKSIM / name).is_file() for name in FILES),
                                   reason=f"no copy of RankSim's STS-B-DIR split at {RANKSIM}")


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@needs_ranksim
def test_ranksim_files_are_the_published_blobs():
    """The shared copy is RankSim's repository's blobs (its git blob ids) and its SHA-256 are the table's."""
    published = dataset.RANKSIM_SPLIT
    assert {name: git_blob_id(RANKSIM / name) for name in FILES} == published["git_blob"]
    assert dataset.split_digests(RANKSIM) == published["sha256"]
    assert [(RANKSIM / name).stat().st_size for name in FILES] == [920605, 170200, 169190]
    hashes = RANKSIM / "HASHES.json"
    if hashes.is_file():
        record = json.loads(hashes.read_text())
        assert record["sha256"] == published["sha256"] and record["git_blob"] == published["git_blob"]


@needs_ranksim
def test_ranksim_split_fetched_or_copied_by_hand_is_recognised_by_content(tmp_path, capsys):
    download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(RANKSIM)])
    fetched = capsys.readouterr().out
    assert "the ranksim split (BorealisAI/ranksim-imbalanced-regression at b08052d), verified" in fetched
    record = json.loads((tmp_path / "d" / "split.json").read_text())
    assert record["split"] == "ranksim" and record["commit"].startswith("b08052d")
    assert record["sha256"]["test_new.tsv"] == "8fd7e51459a3deb30adedde0d6a777fea60d2f8a4c65ac86c76d25ca560f3bc8"
    download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(RANKSIM)])
    assert "already holds the ranksim split; nothing to do" in capsys.readouterr().out
    # Copied by hand: no split.json, the same log line.
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    for name in FILES:
        (by_hand / name).write_bytes((RANKSIM / name).read_bytes())
    for folder in (tmp_path / "d", by_hand):
        assert dataset.split_held(folder) == "ranksim"
        line = dataset.describe_split(folder)
        assert line == (f"split {folder}: RankSim/SRL's published split of STS-B-DIR (BorealisAI/ranksim-imbalanced-"
                        "regression at b08052d, SHA-256 verified), the split of RankSim's and SRL's published numbers, "
                        "NOT DIR's (their test sets share 168 of 1,000 pairs)")
    # DIR's split beside it is still DIR's, not RankSim's.
    assert dataset.split_held(REAL) == "dir"


@needs_ranksim
def test_a_one_byte_change_to_a_ranksim_file_is_named_and_refused(tmp_path):
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in FILES:
        (edited / name).write_bytes((RANKSIM / name).read_bytes())
    data = bytearray((edited / "dev_new.tsv").read_bytes())
    at = data.rindex(b"\t") + 1                      # the first digit of the last row's score (4.8 there)
    data[at] = ord("3") if data[at] != ord("3") else ord("4")
    (edited / "dev_new.tsv").write_bytes(bytes(data))
    found = download_sts.sha256_of(edited / "dev_new.tsv")
    assert dataset.split_held(edited) is None
    assert dataset.describe_split(edited) == (
        f"split {edited}: NOT a published STS-B-DIR split: dev_new.tsv differs from RankSim/SRL's published file "
        f"(SHA-256 {found}, expected e5b56cd14e68a5d02ec2a05bfe11d1a45d74582170e61e679c1288f05aa82535), though "
        "train_new.tsv and test_new.tsv are RankSim/SRL's; numbers are not comparable with the papers' (get the "
        "published files again with `python data/download_sts.py --split ranksim --overwrite`)")
    # Fetching from the edited copy writes nothing and names the file.
    with pytest.raises(SystemExit) as refused:
        download_sts.main(["--data_dir", str(tmp_path / "d"), "--split", "ranksim", "--source", str(edited)])
    assert str(refused.value) == (
        f"error: {edited / 'dev_new.tsv'} is not the ranksim split's dev_new.tsv (its SHA-256 is {found}, not "
        "e5b56cd14e68a5d02ec2a05bfe11d1a45d74582170e61e679c1288f05aa82535); nothing was written (check that copy, "
        "or fetch the pinned files without --source).")
    assert not list((tmp_path / "d").iterdir())
    # The edited folder itself is not taken for the split without --overwrite.
    with pytest.raises(SystemExit, match=f"error: {edited / 'dev_new.tsv'} exists and is not the ranksim split's "
                                         f"dev_new.tsv \\(its SHA-256 is {found}, not e5b56cd1.*pass --overwrite"):
        download_sts.main(["--data_dir", str(edited), "--split", "ranksim", "--source", str(RANKSIM)])
    download_sts.main(["--data_dir", str(edited), "--split", "ranksim", "--source", str(RANKSIM), "--overwrite"])
    assert dataset.split_held(edited) == "ranksim"


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
