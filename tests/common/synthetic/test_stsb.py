"""The synthetic STS-B-DIR (common/synthetic/stsb.py): read by sts-b-dir's own readers, DIR's training-score
histogram (scaled), DIR's flat dev/test design, a score that is a function of the word overlap, word vectors in
GloVe's text format, and (slow) the README's quick start on it, whose model beats predicting the mean."""
from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from common import synthetic
from common.bins import STSB_BINS
from common.synthetic import stsb
from folders import ROOT, folder_module

REAL = ROOT.parent / "shared" / "data" / "sts-b-dir"
dataset = folder_module("sts-b-dir", "dataset")
text = folder_module("sts-b-dir", "text")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The default set: DIR's size (5,249 training pairs)."""
    out = tmp_path_factory.mktemp("stsb") / "data"
    stsb.write_synthetic_stsb(out, seed=3, word_vectors_from="random")
    return out


def quarter_counts(scores) -> list[int]:
    return np.histogram(np.asarray(scores, dtype=np.float64), 20, range=(0, 5))[0].tolist()


# ----------------------------------------------------------------------------- format

def test_the_benchmarks_readers_read_every_file(full, tmp_path):
    splits = dataset.load_splits(full)
    assert {name: len(split) for name, split in splits.items()} == {"train": 5249, "val": 1000, "test": 1000}
    assert all(split.skipped == 0 for split in splits.values())
    for name in stsb.SPLIT_FILES:
        lines = (full / name).read_text(encoding="utf-8").splitlines()
        assert lines[0].split("\t") == ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                                        "sentence1", "sentence2", "score"]
        rows = [line.split("\t") for line in lines[1:]]
        assert [int(r[0]) for r in rows] == list(range(len(rows)))          # DIR's renumbering, per file
        assert all(len(r) == 10 and re.fullmatch(r"\d\.\d{3}", r[9]) for r in rows)
    # Every token of the sentences has a 50-d vector in the written file (read by the benchmark's GloVe reader).
    vocabulary = text.build_vocabulary(splits.values())
    vectors = text.load_word_vectors(vocabulary, str(full / stsb.VECTORS_FILE), tmp_path / "cache", log=lambda m: None)
    assert vectors.dim == stsb.DIM and vectors.found[2:].all()
    assert len(vocabulary) - 2 == len(stsb.vocabulary()) + 1          # + "A", matched to "a" (an uncased file)
    assert "synthetic stand-in" in dataset.describe_split(full)
    assert dataset.SYNTHETIC_MARKER == stsb.MARKER
    assert dataset.split_held(full) is None                         # not a published split: shots by counts


def test_train_histogram_is_dirs_and_dev_test_are_flat(full):
    splits = dataset.load_splits(full)
    # As task.py bins them: float32 scores from the reader, STSB_BINS (np.histogram's rule).
    train = STSB_BINS.histogram(splits["train"].scores.astype(np.float64))
    assert train.tolist() == list(stsb.DIR_TRAIN_BIN_COUNTS)
    assert train.max() == 428 and train.argmax() == 0 and train[49] == 263
    for name in ("val", "test"):
        assert quarter_counts(splits[name].scores) == [50] * 20
    assert 0 <= splits["train"].scores.min() and splits["train"].scores.max() == 5.0


@pytest.mark.skipif(not (REAL / "train_new.tsv").is_file(), reason=f"no STS-B-DIR split at {REAL}")
def test_the_histogram_constant_is_the_real_files(full):
    real = text.read_pair_tsv(REAL / "train_new.tsv")
    assert STSB_BINS.histogram(real.scores.astype(np.float64)).tolist() == list(stsb.DIR_TRAIN_BIN_COUNTS)


def test_a_smaller_set_scales_the_histogram(tmp_path):
    stsb.write_synthetic_stsb(tmp_path, n=1000, seed=0, word_vectors_from="random")
    splits = dataset.load_splits(tmp_path)
    train = STSB_BINS.histogram(splits["train"].scores.astype(np.float64))
    exact = np.array(stsb.DIR_TRAIN_BIN_COUNTS) * 1000 / 5249
    assert train.sum() == 1000 and np.all(np.abs(train - exact) < 1)      # largest remainder: within one pair
    assert train[0] == 82 and train[1] == 1 and train[9] == 0              # 81.54 → 82, 0.76 → 1, 0.19 → 0
    assert [len(splits[s]) for s in ("val", "test")] == [200, 200]        # round(50 · 1000 / 5249) = 10 per 0.25
    assert quarter_counts(splits["test"].scores) == [10] * 20


def test_the_score_is_a_function_of_the_shared_slots(full):
    """Each pair shares round(6 · score / 5) of its six slot meanings (a word or its synonym), so the score is
    within 5/12 of 5 · shared / 6."""
    meaning = {w: (slot, i) for slot, pairs in stsb.SLOTS.items() for i, pair in enumerate(pairs) for w in pair}
    split = dataset.load_splits(full)["test"]
    for tokens1, tokens2, score in zip(split.sentences1, split.sentences2, split.scores):
        assert len(tokens1) == len(tokens2) == 12 and tokens1[-1] == "."
        slots1 = [meaning[t] for t in tokens1 if t in meaning]
        slots2 = [meaning[t] for t in tokens2 if t in meaning]
        assert [s for s, _ in slots1] == list(stsb.SLOTS) == [s for s, _ in slots2]
        shared = sum(a == b for a, b in zip(slots1, slots2))
        assert shared == stsb.shared_slots(float(score))
        assert abs(float(score) - 5 * shared / 6) <= 5 / 12 + 1e-6


def test_same_arguments_same_bytes_and_real_files_are_never_overwritten(tmp_path, full):
    stsb.write_synthetic_stsb(tmp_path / "again", seed=3, word_vectors_from="random")
    for name in (*stsb.SPLIT_FILES, stsb.VECTORS_FILE):
        assert (tmp_path / "again" / name).read_bytes() == (full / name).read_bytes()
    stsb.write_synthetic_stsb(tmp_path / "again", n=20, seed=3, word_vectors_from="random")   # marker: replaced
    assert len(dataset.load_splits(tmp_path / "again")["train"]) == 20
    real = tmp_path / "real"
    real.mkdir()
    (real / "train_new.tsv").write_text("not ours\n")
    with pytest.raises(FileExistsError, match="train_new.tsv already exists and is not synthetic"):
        stsb.write_synthetic_stsb(real, n=10)
    assert sorted(p.name for p in real.iterdir()) == ["train_new.tsv"]
    assert (real / "train_new.tsv").read_text() == "not ours\n"


def test_word_vectors_come_from_the_glove_wheel_when_it_is_installed(tmp_path, monkeypatch):
    fake = {w: np.full(stsb.DIM, i, dtype=np.float32) for i, w in enumerate(stsb.vocabulary()) if w != "tan"}
    monkeypatch.setattr(stsb, "glove_wheel_vectors", lambda words: dict(fake))
    stsb.write_synthetic_stsb(tmp_path, n=30, seed=0)
    rows = {line.split(" ")[0]: line.split(" ")[1:]
            for line in (tmp_path / stsb.VECTORS_FILE).read_text().splitlines()}
    assert rows["man"] == [f"{stsb.vocabulary().index('man'):.5f}"] * stsb.DIM      # GloVe's own vector
    assert len(rows["tan"]) == stsb.DIM and len(set(rows["tan"])) > 1                # missing: a random one
    assert "glove-6b-50d" in json.loads((tmp_path / stsb.MARKER).read_text())["word_vectors_written"]
    monkeypatch.setattr(stsb, "glove_wheel_vectors", lambda words: None)
    with pytest.raises(ValueError, match="--word_vectors glove needs the GloVe wheel"):
        stsb.write_synthetic_stsb(tmp_path / "g", n=30, word_vectors_from="glove")
    stsb.write_synthetic_stsb(tmp_path / "r", n=30)                                   # auto without the wheel
    assert "random" in json.loads((tmp_path / "r" / stsb.MARKER).read_text())["word_vectors_written"]


def test_the_command_line(tmp_path, capsys):
    train = synthetic.main(["stsb", "--out", str(tmp_path), "--n", "40", "--word_vectors", "random"])
    assert train == tmp_path / "train_new.tsv"
    assert "train_new.tsv 40, dev_new.tsv 20, test_new.tsv 20 pairs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        synthetic.main(["stsb", "--out", str(tmp_path), "--n", "0"])
    assert info.value.code == 2 and "--n must be at least 1" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dev_new.tsv").write_text("x")
    with pytest.raises(SystemExit, match="^error: .*dev_new.tsv already exists and is not synthetic"):
        synthetic.main(["stsb", "--out", str(tmp_path / "other")])
    # A data folder without the files says how to write this stand-in.
    with pytest.raises(text.RunError, match="`python -m common.synthetic stsb --out data/synthetic` \\(then "
                                            "--data_dir data/synthetic\\)"):
        text.read_pair_tsv(tmp_path / "nowhere" / "train_new.tsv")


# ----------------------------------------------------------------------------- the README's quick start

def readme_quick_start() -> list[str]:
    """The commands of sts-b-dir/README.md's code block that writes the synthetic data (comments dropped)."""
    blocks = re.findall(r"```\n(.*?)```", (ROOT / "sts-b-dir" / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "common.synthetic stsb" in b)
    return [line.split(" #")[0].strip() for line in block.splitlines() if line.split(" #")[0].strip()]


def test_the_readme_quick_start_is_what_this_file_runs():
    commands = readme_quick_start()
    assert commands[0] == "cd sts-b-dir" and commands[1].startswith("python -m common.synthetic stsb")
    assert any(c.startswith("python train.py") for c in commands)


@pytest.mark.slow
def test_the_readme_quick_start_learns_the_synthetic_similarity(tmp_path):
    """The README's commands as written, in a scratch folder standing for sts-b-dir/ (train.py by its path, so
    data/ and checkpoint/ land there): finite test metrics, and a test MSE well below the training mean's."""
    for command in readme_quick_start()[1:]:
        argv = shlex.split(command)
        assert argv[0] == "python"
        argv = [sys.executable, *(str(ROOT / "sts-b-dir" / a) if a == "train.py" else a for a in argv[1:])]
        run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    (results_path,) = tmp_path.glob("checkpoint/*/results.json")
    test = json.loads(results_path.read_text())["test"]
    for shot in ("all", "many", "medium", "few"):
        assert test[shot]["count"] > 0 and math.isfinite(test[shot]["mse"]) and math.isfinite(test[shot]["l1"])
    assert all(math.isfinite(test["all"][k]) for k in ("mse", "l1", "gmean", "pearson", "spearman"))
    predictions = np.load(results_path.parent / "test_predictions.npz")
    mean_mse = float(np.mean((predictions["labels"] - predictions["train_labels"].mean()) ** 2))
    assert test["all"]["mse"] == pytest.approx(float(np.mean((predictions["preds"] - predictions["labels"]) ** 2)),
                                               rel=1e-5)
    assert test["all"]["mse"] < 0.5 * mean_mse and test["all"]["pearson"] > 0.6
    log = (results_path.parent / "training.log").read_text()
    assert "the synthetic stand-in written by `python -m common.synthetic stsb`" in log
    assert (results_path.parent / "report.png").is_file()
