"""common/tools/encodings.py: the encoding spread statistics against a loop, and a run's trunk read back from its
checkpoint."""
import json

import numpy as np
import pytest
import torch

from age_runs import agedb_main, run_args, synthetic_agedb
from common.tools import encodings


def statistics_loop(z: np.ndarray, y: np.ndarray) -> dict:
    """The statistics of the module docstring, one pair and one dimension at a time."""
    n, d = z.shape
    cosines = [float(z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])))
               for i in range(n) for j in range(n) if i != j]
    correlations = [abs(np.corrcoef(z[:, k], y)[0, 1]) for k in range(d) if np.ptp(z[:, k]) > 0]
    return {"norm": float(np.mean([np.linalg.norm(row) for row in z])),
            "sd_per_dim": float(np.mean([np.std(z[:, k], ddof=1) for k in range(d)])),
            "cos_min": min(cosines), "cos_mean": sum(cosines) / len(cosines),
            "max_abs_r": max(correlations, default=0.0)}


def test_the_statistics_equal_a_loop_over_pairs_and_dimensions():
    rng = np.random.default_rng(0)
    z = np.abs(rng.normal(size=(23, 7)))
    z[:, 3] = 0.5                                         # a dimension that does not vary: no correlation
    y = rng.uniform(0, 100, size=23)
    got = encodings.encoding_statistics(torch.tensor(z), torch.tensor(y))
    want = statistics_loop(z, y)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key


def test_collapsed_encodings_have_cosine_one_and_no_spread():
    """Every row the same direction: cosine 1 everywhere; the same row: no spread, no correlation."""
    row = torch.tensor([0.2, 1.5, 0.0, 3.0], dtype=torch.float64)
    ages = torch.linspace(10, 80, 9, dtype=torch.float64)
    scaled = encodings.encoding_statistics(row * ages[:, None], ages)
    assert scaled["cos_min"] == pytest.approx(1.0, abs=1e-12) and scaled["cos_mean"] == pytest.approx(1.0, abs=1e-12)
    assert scaled["max_abs_r"] == pytest.approx(1.0, abs=1e-12)       # the norm carries the age
    same = encodings.encoding_statistics(row.repeat(9, 1), ages)
    assert (same["sd_per_dim"], same["max_abs_r"]) == (0.0, 0.0)
    assert same["norm"] == pytest.approx(float(row.norm()), rel=1e-15)
    orthogonal = encodings.encoding_statistics(torch.eye(4, dtype=torch.float64), ages[:4])
    assert (orthogonal["cos_min"], orthogonal["cos_mean"]) == (0.0, 0.0)


def test_fewer_than_two_encodings_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        encodings.encoding_statistics(torch.ones(1, 3, dtype=torch.float64), torch.ones(1, dtype=torch.float64))


@pytest.mark.slow
def test_a_runs_encodings_through_its_head_give_its_saved_test_predictions(tmp_path, capsys):
    """The trunk read from the best checkpoint and the test split preprocessed as at evaluation: the encodings
    through the checkpoint's own linear head give the predictions the run saved."""
    data = synthetic_agedb(tmp_path / "data")
    agedb_main(run_args(data, tmp_path / "runs", "vanilla", "--epoch", "2"))
    run = tmp_path / "runs" / "vanilla"
    flags = encodings.run_flags(json.loads((run / "results.json").read_text()), run / "results.json")
    model, state = encodings.load_trunk(run, flags, "best")
    images, ages = encodings.load_test_split(flags, data)
    z = encodings.encode(model, images, batch_size=7)
    replayed = z @ state["linear.weight"].double().T + state["linear.bias"].double()
    saved = np.load(run / "test_predictions.npz")
    np.testing.assert_allclose(replayed[:, 0].numpy(), saved["preds"].reshape(-1), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(ages.numpy(), saved["labels"].reshape(-1))

    encodings.main([str(run)])
    row = capsys.readouterr().out.splitlines()[-1].split("|")
    stats = encodings.encoding_statistics(z, ages)
    assert [float(cell) for cell in row[2:-1]] == pytest.approx(
        [stats[key] for key, _ in encodings.COLUMNS[:-1]] + [float(saved["preds"].std())], rel=1e-3)

    # Flags that do not fit the checkpoint (another width): one sentence, not PyTorch's size-mismatch traceback.
    results = json.loads((run / "results.json").read_text())
    results["args"]["width"] = 8
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit) as info:
        encodings.main([str(run)])
    message = str(info.value.code)
    assert message.startswith(f"error: checkpoint {run / 'ckpt.best.pth.tar'} does not fit a resnet18 of width 8 "
                              "(size mismatch for ") and "\n" not in message


def test_a_folder_that_is_not_a_finished_age_run_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="results.json does not exist; pass run folders of finished training runs"):
        encodings.main([str(tmp_path)])
    (tmp_path / "results.json").write_text(json.dumps({"test": {}, "args": {"dataset": "nyud2"}}))
    with pytest.raises(SystemExit, match="not an age benchmark's run"):
        encodings.main([str(tmp_path)])
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(SystemExit, match="is not valid JSON"):
        encodings.main([str(tmp_path)])
