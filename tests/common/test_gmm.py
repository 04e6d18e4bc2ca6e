"""The 1-D GMM behind GAI: EM recovers a known mixture, files round-trip, the data script writes them."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import RunError
from common.gmm import fit_from_split_csv, fit_gmm_1d, load_gmm, save_gmm
from common.losses import gai_loss

ROOT = Path(__file__).resolve().parents[2]


def sample_mixture(n=40000, seed=0):
    rng = np.random.default_rng(seed)
    first = rng.random(n) < 0.3
    return np.where(first, rng.normal(20, 3, n), rng.normal(60, 5, n))


def test_em_recovers_a_known_mixture():
    gmm = fit_gmm_1d(sample_mixture(), 2)
    assert gmm["means"].shape == (2, 1) and gmm["weights"].shape == (2,) and gmm["variances"].shape == (2, 1, 1)
    np.testing.assert_allclose(gmm["means"].ravel(), [20, 60], atol=0.15)
    np.testing.assert_allclose(gmm["weights"], [0.3, 0.7], atol=0.01)
    np.testing.assert_allclose(np.sqrt(gmm["variances"].ravel()), [3, 5], atol=0.1)


def test_em_increases_likelihood_over_its_initialisation():
    x = sample_mixture(5000, seed=1)

    def log_likelihood(g):
        m, w, v = g["means"].ravel(), g["weights"], g["variances"].ravel()
        return np.log((w * np.exp(-(x[:, None] - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v)).sum(1)).mean()
    one_step = fit_gmm_1d(x, 3, max_iter=1)
    converged = fit_gmm_1d(x, 3)
    assert log_likelihood(converged) > log_likelihood(one_step)
    assert converged["weights"].sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_files_round_trip_and_feed_gai(suffix, tmp_path):
    gmm = fit_gmm_1d(sample_mixture(3000), 3)
    path = tmp_path / f"gmm{suffix}"
    save_gmm(gmm, path)
    loaded = load_gmm(path)
    for key in gmm:
        np.testing.assert_array_equal(loaded[key], gmm[key])
    pred, target = torch.randn(8, 1, dtype=torch.float64) * 20 + 40, torch.randn(8, 1, dtype=torch.float64) * 20 + 40
    assert gai_loss(pred, target, loaded, 4.0).item() == gai_loss(pred, target, gmm, 4.0).item()


def test_missing_or_bad_file_is_one_sentence(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        load_gmm(tmp_path / "gmm.npz")
    (tmp_path / "bad.json").write_text('{"means": [1]}')
    with pytest.raises(RunError, match="could not be read"):
        load_gmm(tmp_path / "bad.json")


@pytest.mark.parametrize("folder, csv", [("agedb-dir", "agedb"), ("imdb-wiki-dir", "imdb_wiki")])
def test_preprocess_gmm_script(folder, csv, tmp_path, capsys):
    ages = np.concatenate([np.full(50, 30), np.full(20, 70), np.full(10, 5)])
    rows = [f"{a},x/{i}.jpg,train" for i, a in enumerate(ages)] + ["40,x/v.jpg,val"]
    (tmp_path / f"{csv}.csv").write_text("age,path,split\n" + "\n".join(rows) + "\n")
    spec = importlib.util.spec_from_file_location("preprocess_gmm", ROOT / folder / "data" / "preprocess_gmm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--data_dir", str(tmp_path), "--K", "3"])
    gmm = load_gmm(tmp_path / "gmm.npz")
    np.testing.assert_allclose(gmm["means"].ravel(), [5, 30, 70], atol=1e-3)
    np.testing.assert_allclose(gmm["weights"], np.array([10, 50, 20]) / 80, atol=1e-6)
    with pytest.raises(SystemExit, match="does not exist"):
        script.main(["--data_dir", str(tmp_path / "none")])


def test_fit_from_csv_needs_training_rows(tmp_path):
    (tmp_path / "a.csv").write_text("age,path,split\n3,a.jpg,val\n")
    with pytest.raises(RunError, match="too few"):
        fit_from_split_csv(tmp_path / "a.csv", 2, tmp_path / "g.npz")


def test_nyud2_gmm_is_fitted_on_the_references_3644_points(tmp_path, capsys):
    """docs/methods.md §5.2: bin centres repeated count // 10⁶ times, bins 0–6 taking bin 7's count: 3644 points."""
    spec = importlib.util.spec_from_file_location("preprocess_gmm", ROOT / "nyud2-dir" / "data" / "preprocess_gmm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--reference_histogram", "--K", "2", "--out", str(tmp_path / "gmm.npz")])
    assert "2 components fitted on 3644 bin centres (one per 1,000,000 pixels)" in capsys.readouterr().out
    assert load_gmm(tmp_path / "gmm.npz")["means"].size == 2
