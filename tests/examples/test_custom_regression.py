"""examples/custom_regression.py (docs/custom-data.md) on a tiny generated CSV, with a stack of DIR methods."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from common.bins import LabelBins
from common.metrics import shot_metrics
from folders import ROOT

pytestmark = pytest.mark.slow


def write_csv(path, n=600, seed=0):
    """A long-tailed float label in [0, 10) that three features carry (plus noise features)."""
    rng = np.random.default_rng(seed)
    label = np.minimum(rng.gamma(2.0, 1.2, n), 9.99)
    features = np.stack([label + rng.normal(0, 0.3, n), np.sqrt(label) + rng.normal(0, 0.1, n),
                         rng.normal(0, 1, n), rng.normal(0, 1, n)], 1)
    frame = pd.DataFrame(features, columns=["a", "b", "c", "d"])
    frame["price"] = label
    frame.to_csv(path, index=False)


def test_example_trains_with_stacked_methods_and_reports_shots(tmp_path):
    write_csv(tmp_path / "data.csv")
    argv = [str(tmp_path / "data.csv"), "--label", "price", "--bins", "0", "0.5", "20", "--reweight", "sqrt_inv",
            "--lds", "--fds", "--fds_ks", "3", "--conr", "--regularization_weight", "1", "--epoch", "15", "--lr", "1e-2",
            "--many_shot_thr", "40", "--low_shot_thr", "10", "--store_root", str(tmp_path), "--device", "cpu"]
    done = subprocess.run([sys.executable, "examples/custom_regression.py", *argv], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "many" in done.stdout and "few" in done.stdout and "conr" in done.stdout and "ranksim" in done.stdout
    saved = json.loads((tmp_path / "custom" / "results.json").read_text())
    predictions = np.load(tmp_path / "custom" / "test_predictions.npz")
    frame = pd.read_csv(tmp_path / "data.csv")
    split = np.random.default_rng(0).choice(["train", "val", "test"], len(frame), p=[0.8, 0.1, 0.1])
    assert np.allclose(np.sort(predictions["labels"]), np.sort(frame["price"][split == "test"].to_numpy(np.float32)))
    recomputed = shot_metrics(predictions["preds"], predictions["labels"],
                              frame["price"][split == "train"].to_numpy(np.float32), 40, 10, LabelBins(0, 0.5, 20),
                              balanced=True)
    assert json.dumps(recomputed, sort_keys=True) == json.dumps(saved["test"], sort_keys=True)
    assert saved["test"]["many"]["count"] > 0 and saved["test"]["few"]["count"] > 0
    # It learned something: better than predicting the training mean.
    baseline = np.abs(frame["price"][split == "test"] - frame["price"][split == "train"].mean()).mean()
    assert saved["test"]["all"]["l1"] < baseline


def test_example_refuses_a_label_outside_the_bins(tmp_path):
    write_csv(tmp_path / "data.csv")
    done = subprocess.run([sys.executable, "examples/custom_regression.py", str(tmp_path / "data.csv"), "--label",
                           "price", "--bins", "0", "0.5", "10", "--store_root", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is outside the range [0, 5]" in done.stderr and "data.csv" in done.stderr


# -- bad CSVs (issue 27, class B): one sentence naming the file, before anything trains ----------------------------
def good_rows(n=40, split=True):
    """``a,b,label[,split]`` rows: label = a + b in [0, 10), every split present."""
    names = ["train", "val", "test", "train", "train"]
    return [f"{i % 5},{i % 4}.5,{i % 5 + i % 4 + 0.5}" + (f",{names[i % 5]}" if split else "") for i in range(n)]


def csv_text(*rows, header="a,b,label,split"):
    return "\n".join([header, *rows]) + "\n"


GOOD = good_rows()
# name: (file content (bytes or text; None: no file, "folder": a folder), extra flags, what the sentence must say)
BAD_CSVS = {
    "missing file": (None, [], "does not exist"),
    "a folder": ("folder", [], "is a folder"),
    "empty file": (b"", [], "is empty"),
    "header only": (csv_text(), [], "no data rows"),
    "no label column": (csv_text(*GOOD, header="a,b,y,split"), [], "--label"),
    "semicolons": (csv_text(*[r.replace(",", ";") for r in GOOD], header="a;b;label;split"), [], "semicolons"),
    "latin-1 bytes": (csv_text(*GOOD).encode().replace(b"1,1.5", b"1,1\xe9", 1), [], "line "),
    "a ragged row": (csv_text(*GOOD, "1,2,3,train,9,9"), [], "could not be parsed"),
    "unknown split value": (csv_text(*GOOD, "1,1.5,2.5,training"), [], "'training'"),
    "empty split cell": (csv_text(*GOOD, "1,1.5,2.5,"), [], "split"),
    "no training rows": (csv_text(*[r.replace("train", "val") for r in GOOD]), [], "no train rows"),
    "three rows": (csv_text(*good_rows(3, split=False), header="a,b,label"), [], "3 data rows"),
    "a string feature": (csv_text(*GOOD, "1,abc,2.5,train"), [], "'abc'"),
    "an empty feature cell": (csv_text(*GOOD, "1,,2.5,train"), [], "empty"),
    "an infinite feature": (csv_text(*GOOD, "inf,1,2.5,train"), [], "finite"),
    "a text label": (csv_text(*GOOD, "1,1.5,tall,train"), [], "'tall'"),
    "an empty label cell": (csv_text(*GOOD, "1,1.5,,train"), [], "empty"),
    "no feature column": (csv_text(*[r.split(",", 2)[2] for r in GOOD], header="label,split"), [],
                          "no feature column"),
    "a label outside the bins": (csv_text(*GOOD, "1,1.5,250,train"), [], "outside the range"),
    "--label naming the split column": (csv_text(*GOOD), ["--label", "split"], "split"),
}


def run_example(tmp_path, csv_path, *flags):
    return subprocess.run([sys.executable, "examples/custom_regression.py", str(csv_path), "--store_root",
                           str(tmp_path / "runs"), "--device", "cpu", "--epoch", "1", *flags], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_a_bad_csv_is_one_sentence_naming_the_file(tmp_path, case):
    content, flags, says = BAD_CSVS[case]
    path = tmp_path / "data.csv"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    done = run_example(tmp_path, path, *flags)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), done.stderr
    assert str(path) in lines[0] and says in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()               # refused before a run folder is made


def test_split_names_in_any_case_and_spaces_after_the_commas_are_read_as_meant(tmp_path):
    rows = [r.replace("train", "Train").replace("val", "VAL").replace("test", " Test") for r in GOOD]
    path = tmp_path / "data.csv"
    path.write_text(csv_text(*[r.replace(",", ", ") for r in rows], header="a, b, label, split"))
    done = run_example(tmp_path, path, "--bins", "0", "1", "10", "--many_shot_thr", "5", "--low_shot_thr", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "runs" / "custom" / "results.json").read_text())
    assert saved["test"]["all"]["count"] == 8                # i % 5 == 2: 8 of the 40 rows


@pytest.mark.parametrize("flags, says", [(["--hidden", "0"], "--hidden"), (["--bins", "0", "0", "10"], "--bins"),
                                         (["--bins", "0", "1", "2.5"], "--bins")])
def test_flags_that_cannot_train_are_refused_before_anything_loads(tmp_path, flags, says):
    path = tmp_path / "data.csv"
    path.write_text(csv_text(*GOOD))
    done = run_example(tmp_path, path, *flags)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert says in done.stderr.splitlines()[0] and not (tmp_path / "runs").exists()
