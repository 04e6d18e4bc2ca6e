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
