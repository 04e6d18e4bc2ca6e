"""The synthetic AgeDB-DIR / IMDB-WIKI-DIR generator (common/synthetic/__init__.py): format, label histograms,
determinism, and that the age is a learned property of the image rather than a pixel value."""
from __future__ import annotations

import re
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common import synthetic
from common.tools.datasplit import make_dir_split
from common.synthetic import AGEDB_TRAIN_COUNTS, AGEDB_VAL_COUNTS, scale_counts, split_counts, write_synthetic

REAL_AGEDB = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "agedb-dir" / "agedb.csv"
N_SMALL = 400  # training images of the small sets below; val/test add ~184 (agedb) or ~90 (imdb_wiki)


@pytest.fixture(scope="module")
def agedb(tmp_path_factory):
    return write_synthetic("agedb", tmp_path_factory.mktemp("agedb"), n=N_SMALL, img_size=24, seed=1)


@pytest.fixture(scope="module")
def imdb(tmp_path_factory):
    return write_synthetic("imdb_wiki", tmp_path_factory.mktemp("imdb"), n=N_SMALL, img_size=24, seed=1)


def per_age(df: pd.DataFrame, split: str) -> dict[int, int]:
    return dict(sorted(Counter(df.loc[df["split"] == split, "age"]).items()))


# ----------------------------------------------------------------------------- format

@pytest.mark.parametrize("which", ["agedb", "imdb"])
def test_csv_format_and_images(which, request):
    csv = request.getfixturevalue(which)
    assert csv.name == {"agedb": "agedb.csv", "imdb": "imdb_wiki.csv"}[which]
    assert csv.read_text().splitlines()[0] == "age,path,split"
    df = pd.read_csv(csv)
    assert list(df.columns) == ["age", "path", "split"]
    assert df["age"].dtype == np.int64 and (df["age"] >= 0).all()
    assert set(df["split"]) == {"train", "val", "test"}
    assert df["path"].is_unique
    for rel in df["path"]:
        with Image.open(csv.parent / rel) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (24, 24)
    assert (csv.parent / f"SYNTHETIC_{'agedb' if which == 'agedb' else 'imdb_wiki'}.txt").exists()


def test_agedb_file_names(agedb):
    df = pd.read_csv(agedb)
    pattern = re.compile(r"AgeDB/(\d+)_([A-Za-z]+)_(\d+)_([mf])\.jpg")
    ids = []
    for age, path in zip(df["age"], df["path"]):
        m = pattern.fullmatch(path)
        assert m, path
        assert int(m.group(3)) == age  # the age create_agedb.py reads back is the csv age
        ids.append(int(m.group(1)))
    assert sorted(ids) == list(range(len(df)))


def test_imdb_paths_and_dates(imdb):
    df = pd.read_csv(imdb)
    imdb_re = re.compile(r"imdb_crop/(\d\d)/nm(\d{7})_rm\d{9}_(\d{4})-(\d\d)-(\d\d)_(\d{4})\.jpg")
    wiki_re = re.compile(r"wiki_crop/(\d\d)/(\d+)_(\d{4})-(\d\d)-(\d\d)_(\d{4})\.jpg")
    is_wiki = df["path"].str.startswith("wiki_crop/").to_numpy()
    assert is_wiki.any() and (~is_wiki).any()
    assert not np.any(np.diff(is_wiki.astype(int)) < 0)  # IMDB rows first, then WIKI
    for age, path, w in zip(df["age"], df["path"], is_wiki):
        m = (wiki_re if w else imdb_re).fullmatch(path)
        assert m, path
        folder, person, year, month, day, photo = m.groups()
        assert int(folder) == int(person) % 100
        date(int(year), int(month), int(day))  # a real calendar date
        # §1.1: age = photo year - birth year, minus 1 for a birth in July or later
        assert int(photo) - int(year) - (int(month) >= 7) == age, path
        assert int(photo) <= 2015


# ----------------------------------------------------------------------------- label histograms


def test_agedb_test_ages_fall_51_16_25_into_the_shots():
    """docs/methods.md §10.1: the 92 test ages are 51 many-shot (> 100 training images), 16 medium, 25 few (< 20)."""
    counts = [AGEDB_TRAIN_COUNTS.get(age, 0) for age in AGEDB_VAL_COUNTS]
    assert (sum(c > 100 for c in counts), sum(20 <= c <= 100 for c in counts), sum(c < 20 for c in counts)) == \
        (51, 16, 25)


def test_agedb_histograms(agedb):
    df = pd.read_csv(agedb)
    train = per_age(df, "train")
    assert train == scale_counts(AGEDB_TRAIN_COUNTS, N_SMALL)
    assert sum(train.values()) == N_SMALL
    val, test = per_age(df, "val"), per_age(df, "test")
    assert val == test
    assert set(val) == set(AGEDB_VAL_COUNTS)  # every real val/test age keeps at least one image
    factor = N_SMALL / 12208
    for age, k in AGEDB_VAL_COUNTS.items():
        assert val[age] == max(1, int(np.floor(k * factor + 0.5)))


def test_agedb_default_size_is_the_real_histogram():
    train, val = split_counts("agedb", synthetic.DEFAULT_N["agedb"])
    assert train == AGEDB_TRAIN_COUNTS and val == AGEDB_VAL_COUNTS


def test_imdb_histograms(imdb):
    df = pd.read_csv(imdb)
    train, val = split_counts("imdb_wiki", N_SMALL)
    assert per_age(df, "train") == train and sum(train.values()) == N_SMALL
    assert per_age(df, "val") == per_age(df, "test") == val


def test_imdb_shape_default_size():
    train, val = split_counts("imdb_wiki", synthetic.DEFAULT_N["imdb_wiki"])
    ages = np.array(list(train))
    counts = np.array(list(train.values()))
    assert counts.sum() == 20000
    assert 0.03 < counts.max() / counts.sum() < 0.045  # real: 7,149 / 191,509 = 0.037
    assert 20 <= ages[counts.argmax()] <= 40  # peaked in the 20s-40s
    assert counts[ages < 13].sum() < 0.005 * counts.sum()  # very few children
    assert ages.max() >= 95 and counts[ages >= 80].sum() < 0.01 * counts.sum()  # thin tail to ~100
    # val/test flat at 150 (scaled) over the populated ages, thin at the extremes
    scale = 20000 / sum(h - 2 * min(h // 3, 150) for h in synthetic.imdb_full_histogram().values())
    assert max(val.values()) == int(np.floor(150 * scale + 0.5))
    assert min(val.values()) == 1


# ----------------------------------------------------------------------------- against the real AgeDB csv

@pytest.mark.skipif(not REAL_AGEDB.exists(), reason=f"{REAL_AGEDB} not present")
def test_counts_match_real_agedb_csv():
    df = pd.read_csv(REAL_AGEDB)
    assert per_age(df, "train") == AGEDB_TRAIN_COUNTS
    assert per_age(df, "val") == per_age(df, "test") == AGEDB_VAL_COUNTS


@pytest.mark.skipif(not REAL_AGEDB.exists(), reason=f"{REAL_AGEDB} not present")
def test_make_dir_split_reproduces_real_agedb_counts():
    df = pd.read_csv(REAL_AGEDB)
    split = make_dir_split(df["age"].tolist(), cap=30)
    got = pd.DataFrame({"age": df["age"], "split": split})
    assert per_age(got, "train") == AGEDB_TRAIN_COUNTS
    assert per_age(got, "val") == per_age(got, "test") == AGEDB_VAL_COUNTS


# ----------------------------------------------------------------------------- determinism

def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dataset", ["agedb", "imdb_wiki"])
def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path):
    a = _tree_bytes(write_synthetic(dataset, tmp_path / "a", n=40, img_size=16, seed=3).parent)
    b = _tree_bytes(write_synthetic(dataset, tmp_path / "b", n=40, img_size=16, seed=3).parent)
    assert a.keys() == b.keys()
    assert a == b
    c = write_synthetic(dataset, tmp_path / "c", n=40, img_size=16, seed=4)
    df_a, df_c = pd.read_csv(tmp_path / "a" / c.name), pd.read_csv(c)
    assert sorted(df_a["age"]) == sorted(df_c["age"])  # same histogram...
    imgs = lambda root, df: np.stack([np.asarray(Image.open(root / p)) for p in df["path"]])  # noqa: E731
    assert not np.array_equal(imgs(tmp_path / "a", df_a), imgs(c.parent, df_c))  # ...different pictures


def test_rerun_replaces_synthetic_output(tmp_path):
    write_synthetic("agedb", tmp_path, n=60, img_size=16, seed=0)
    csv = write_synthetic("agedb", tmp_path, n=30, img_size=16, seed=0)
    df = pd.read_csv(csv)
    assert len(list((tmp_path / "AgeDB").iterdir())) == len(df)  # no stale images from the first run


# ----------------------------------------------------------------------------- the age is not a pixel readout

def _pixels_and_ages(csv: Path):
    df = pd.read_csv(csv)
    x = np.stack([np.asarray(Image.open(csv.parent / p), dtype=np.float64).ravel() / 255 for p in df["path"]])
    return x, df["age"].to_numpy(dtype=np.float64)


def test_linear_pixel_fit_does_not_generalise(tmp_path):
    # A linear model on raw pixels is the "read the age off some pixels" model. With 16x16 images
    # (768 features) and 1,200 training images, plain least squares fits the training ages well
    # but is worse than predicting the mean on held-out images; even the best ridge penalty
    # explains well under half of the held-out variance (measured ~0.35), against ~0.85 for a
    # small CNN. The age is carried by non-linear cues under nuisance variation.
    csv = write_synthetic("agedb", tmp_path, n=1400, img_size=16, seed=5)
    x, y = _pixels_and_ages(csv)
    x = np.hstack([x, np.ones((len(x), 1))])
    tr, te = slice(0, 1200), slice(1200, None)
    gram, rhs = x[tr].T @ x[tr], x[tr].T @ y[tr]

    def r2(w, sl):
        return 1 - (y[sl] - x[sl] @ w).var() / y[sl].var()

    w = np.linalg.solve(gram + 1e-3 * np.eye(len(gram)), rhs)  # least squares (tiny ridge for conditioning)
    assert r2(w, tr) > 0.6 and r2(w, te) < 0.0
    best = max(r2(np.linalg.solve(gram + lam * np.eye(len(gram)), rhs), te) for lam in (1.0, 10.0, 100.0))
    assert best < 0.55


def test_same_age_images_differ(agedb):
    df = pd.read_csv(agedb)
    x = {}
    for age in (30, 35, 40):  # well-populated ages, several images each
        paths = df.loc[df["age"] == age, "path"]
        x[age] = np.stack([np.asarray(Image.open(agedb.parent / p), dtype=np.float64) / 255 for p in paths])
        assert len(x[age]) >= 8
        # mean absolute difference between two images of the same age: ~0.25 of full scale
        diffs = [np.abs(a - b).mean() for i, a in enumerate(x[age]) for b in x[age][i + 1:]]
        assert np.mean(diffs) > 0.15
    within = np.mean([np.abs(a - b).mean() for a, b in zip(x[30][::2], x[30][1::2])])
    across = np.mean([np.abs(a - b).mean() for a, b in zip(x[30], x[40])])
    assert within > 0.8 * across  # pixel distance is dominated by nuisance, not by age


@pytest.mark.slow
def test_small_cnn_learns_age(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    # Small enough for a few seconds on 2 CPU cores; on the default set (12,208 train images at
    # 32x32) a 4-layer CNN reaches test MAE ~6 vs ~18 for the median, with few-shot ages ~3x
    # worse than many-shot ones (see the common/synthetic/__init__.py docstring).
    csv = write_synthetic("agedb", tmp_path, n=1500, img_size=16, seed=2)
    df = pd.read_csv(csv)
    x = torch.tensor(np.stack([np.asarray(Image.open(csv.parent / p)) for p in df["path"]]), dtype=torch.float32)
    x = x.permute(0, 3, 1, 2) / 127.5 - 1
    y = torch.tensor(df["age"].to_numpy(), dtype=torch.float32)
    tr = torch.tensor((df["split"] == "train").to_numpy())
    te = ~tr
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    mu, sd = y[tr].mean(), y[tr].std()
    for _ in range(8):
        for idx in torch.randperm(int(tr.sum())).split(64):
            loss = (model(x[tr][idx]).squeeze(1) - (y[tr][idx] - mu) / sd).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x[te]).squeeze(1) * sd + mu
    mae = (pred - y[te]).abs().mean().item()
    baseline = (y[te] - y[tr].median()).abs().mean().item()
    assert mae < 0.8 * baseline, (mae, baseline)  # measured: ~0.55 of the baseline


# ----------------------------------------------------------------------------- bad input

def test_cli_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["agedb", "--out", str(tmp_path), "--n", "0"])
    assert "--n" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["agedb", "--out", str(tmp_path), "--img_size", "2"])
    assert "--img_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["imdb", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
    # nyud2: written once (its CSV last), refused a second time and when the crop exceeds the images.
    out = tmp_path / "nyud2"
    csv = synthetic.main(["nyud2", "--out", str(out), "--n", "8", "--size", "48", "36", "--crop", "44", "32"])
    assert len(csv.read_text().splitlines()) == 8
    with pytest.raises(SystemExit, match="already exists"):
        synthetic.main(["nyud2", "--out", str(out), "--n", "8"])
    with pytest.raises(SystemExit, match="larger than the image size"):
        synthetic.main(["nyud2", "--out", str(tmp_path / "big"), "--size", "40", "30", "--crop", "44", "32"])


def test_refuses_to_overwrite_real_data(tmp_path):
    (tmp_path / "AgeDB").mkdir()
    (tmp_path / "AgeDB" / "0_Real_30_m.jpg").write_bytes(b"not ours")
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "AgeDB"))):
        synthetic.main(["agedb", "--out", str(tmp_path), "--n", "10"])
    assert (tmp_path / "AgeDB" / "0_Real_30_m.jpg").read_bytes() == b"not ours"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(SystemExit, match=re.escape(str(afile))):
        synthetic.main(["agedb", "--out", str(afile), "--n", "10"])
