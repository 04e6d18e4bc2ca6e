"""Issue 27, classes C and D: file readers name the real cause (another separator, an encoding, a header row, a
file that is no GMM or no checkpoint, a folder, a best checkpoint given to --resume), or read what was meant."""
import json

import numpy as np
import pytest
import torch

from common import checkpointing
from common.age import read_split_csv
from common.errors import RunError
from common.gmm import check_fitted_on, fit_from_split_csv, load_gmm
from folders import folder_module

text = folder_module("sts-b-dir", "text")
nyud2 = folder_module("nyud2-dir", "dataset")


def one_sentence(error) -> str:
    message = str(error.value)
    assert len(message.splitlines()) == 1 and message.endswith("."), message
    return message


# -- split CSVs (AgeDB-DIR, IMDB-WIKI-DIR, the GMM fit) -------------------------------------------------------------
def test_a_header_with_spaces_after_the_commas_and_a_byte_order_mark_are_read_as_meant(tmp_path):
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("age, path, split\n34, a/1.jpg, train\n7, a/2.jpg, val\n")
    frame = read_split_csv(spaced, 120)
    assert frame["age"].tolist() == [34.0, 7.0] and frame["path"].tolist() == ["a/1.jpg", "a/2.jpg"]
    assert frame["split"].tolist() == ["train", "val"]
    marked = tmp_path / "bom.csv"
    marked.write_bytes(b"\xef\xbb\xbfage,path,split\n34,a/1.jpg,train\n")
    assert read_split_csv(marked, 120)["age"].tolist() == [34.0]
    gmm_csv = tmp_path / "gmm.csv"
    gmm_csv.write_text("age , path , split\n" + "".join(f"{a}, x.jpg, train\n" for a in range(10, 40)))
    assert fit_from_split_csv(gmm_csv, 2, tmp_path / "gmm.npz")["means"].shape == (2, 1)


@pytest.mark.parametrize("separator, name", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_of_another_separator_is_named_not_called_lacking_columns(tmp_path, separator, name):
    path = tmp_path / "agedb.csv"
    path.write_text(separator.join(["age", "path", "split"]) + "\n" + separator.join(["3", "a.jpg", "train"]) + "\n")
    for read in (lambda: read_split_csv(path, 120), lambda: fit_from_split_csv(path, 2, tmp_path / "g.npz")):
        with pytest.raises(RunError) as raised:
            read()
        message = one_sentence(raised)
        assert str(path) in message and f"separated by {name}" in message and "lacks" not in message
        assert repr(separator.join(["age", "path", "split"])) in message


def test_a_missing_column_names_the_columns_that_were_read(tmp_path):
    path = tmp_path / "agedb.csv"
    path.write_text("Age,path,split\n3,a.jpg,train\n")
    with pytest.raises(RunError) as raised:
        read_split_csv(path, 120)
    message = one_sentence(raised)
    assert "lacks the column(s) age; expected age,path,split" in message
    assert "'Age', 'path', 'split'" in message and "case-sensitive" in message


def test_a_latin1_csv_names_the_byte_offset_and_line(tmp_path):
    path = tmp_path / "agedb.csv"
    path.write_bytes(b"age,path,split\n3,a.jpg,train\n5,caf\xe9.jpg,train\n")
    with pytest.raises(RunError) as raised:
        read_split_csv(path, 120)
    message = one_sentence(raised)
    assert str(path) in message and "byte 0xe9 at offset 34 (line 3)" in message and "UTF-8" in message


# -- STS-B TSVs ------------------------------------------------------------------------------------------------------
def test_a_tsv_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "train_new.tsv"
    path.write_bytes(b"\xef\xbb\xbfsentence1\tsentence2\tscore\nA dog runs.\tA dog is running.\t4.5\n")
    split = text.read_pair_tsv(path)
    assert split.scores.tolist() == [4.5] and split.sentences1 == [["A", "dog", "runs", "."]]


def test_an_undecodable_tsv_names_the_file_offset_and_line(tmp_path):
    path = tmp_path / "dev_new.tsv"
    path.write_bytes(b"sentence1\tsentence2\tscore\nA cat.\tA cat.\t5.0\nUn caf\xe9.\tA cafe.\t3.0\n")
    with pytest.raises(RunError) as raised:
        text.read_pair_tsv(path)
    message = one_sentence(raised)
    assert str(path) in message and "byte 0xe9 at offset 50 (line 3)" in message


def test_a_comma_separated_tsv_is_named(tmp_path):
    path = tmp_path / "test_new.tsv"
    path.write_text("sentence1,sentence2,score\nA cat.,A cat.,5.0\n")
    with pytest.raises(RunError) as raised:
        text.read_pair_tsv(path)
    message = one_sentence(raised)
    assert str(path) in message and "separated by commas" in message and "not separated by tabs" in message


# -- NYUD2's path lists ----------------------------------------------------------------------------------------------
def test_a_header_row_in_the_nyud2_list_is_skipped_and_a_bad_path_is_named(tmp_path):
    path = tmp_path / "nyu2_train.csv"
    path.write_bytes(b"\xef\xbb\xbfimage,depth\ndata/nyu2_train/a_out/1.jpg,data/nyu2_train/a_out/1.png\n")
    pairs = nyud2.read_pairs(path, tmp_path)
    assert pairs == [(tmp_path / "nyu2_train/a_out/1.jpg", tmp_path / "nyu2_train/a_out/1.png")]
    path.write_text("data/nyu2_train/a_out/1.jpg,data/nyu2_train/a_out/1.png\ndata/x.jpg,depth\n")
    with pytest.raises(RunError) as raised:
        nyud2.read_pairs(path, tmp_path)
    message = one_sentence(raised)
    assert str(path) in message and "line 2" in message and "'depth'" in message and "data/" in message


# -- GMM files (--gmm) -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, found", [
    ("gmm.npz", b"", "is empty"),
    ("gmm.npz", b"means weights variances\n1 2 3\n", "'means weights variances"),
    ("gmm.npy", None, "one array"),
    ("gmm.json", b"[1, 2, 3]", "a list"),
    ("gmm.npz", "sizes", "3 means, 2 weights and 3 variances"),
])
def test_a_file_that_is_no_gmm_is_one_sentence_saying_what_a_gmm_file_is(tmp_path, name, content, found):
    path = tmp_path / name
    if content is None:
        np.save(path, np.ones(3))
    elif content == "sizes":
        np.savez(path, means=np.ones((3, 1)), weights=np.ones(2) / 2, variances=np.ones((3, 1, 1)))
    else:
        path.write_bytes(content)
    check_fitted_on(path, "0" * 64, "training ages", "re-create it")       # nothing to compare: no error
    with pytest.raises(RunError) as raised:
        load_gmm(path)
    message = one_sentence(raised)
    assert str(path) in message and found in message
    assert "means (K, 1), weights (K,) and variances (K, 1, 1)" in message and "preprocess_gmm.py" in message


# -- checkpoints -----------------------------------------------------------------------------------------------------
def test_a_run_folder_or_a_text_file_given_as_a_checkpoint_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RunError) as raised:
        checkpointing.load_checkpoint(run)
    message = one_sentence(raised)
    assert f"{run} is a folder" in message and str(run / "ckpt.pth.tar") in message
    assert str(run / "ckpt.best.pth.tar") in message
    notes = tmp_path / "notes.txt"
    notes.write_text("learning rate 1e-3, 90 epochs\n")
    with pytest.raises(RunError) as raised:
        checkpointing.load_checkpoint(notes)
    message = one_sentence(raised)
    assert str(notes) in message and "'learning rate 1e-3" in message and "torch.save" in message
    with pytest.raises(RunError) as raised:
        checkpointing.load_state_file(notes, "--pretrained_encoder", "a torchvision ResNet state dict")
    message = one_sentence(raised)
    assert message.startswith(f"--pretrained_encoder {notes}") and "'learning rate 1e-3" in message
    assert "a torchvision ResNet state dict" in message
    state = {"conv1.weight": torch.ones(2, 3)}
    torch.save(state, tmp_path / "encoder.pth")
    loaded = checkpointing.load_state_file(tmp_path / "encoder.pth", "--pretrained_encoder", "a state dict")
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])


def test_a_best_checkpoint_given_to_resume_says_which_file_to_pass(tmp_path):
    model = {"state_dict": {"w": torch.zeros(2)}, "objective": {}, "trainer": {"epoch": 3}, "epoch": 3,
             "benchmark": "agedb-dir", "args": {}}
    best = tmp_path / "ckpt.best.pth.tar"
    torch.save(model, best)
    with pytest.raises(RunError) as raised:
        checkpointing.load_resumable(best)
    message = one_sentence(raised)
    assert str(best) in message and f"--resume {tmp_path / 'ckpt.pth.tar'}" in message and "--evaluate" in message
    assert "rng" not in message.split("(")[0]            # said in words, not as a KeyError
    reference = tmp_path / "reference.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 90}, reference)
    with pytest.raises(RunError) as raised:
        checkpointing.load_resumable(reference)
    assert "--pretrained" in one_sentence(raised) and "--evaluate" in str(raised.value)
    resumable = tmp_path / "ckpt.pth.tar"
    torch.save({**model, "optimizer": {}, "scheduler": None, "scaler": {}, "rng": {}}, resumable)
    assert checkpointing.load_resumable(resumable)["epoch"] == 3
    json.dumps(checkpointing.load_resumable(resumable)["args"])
