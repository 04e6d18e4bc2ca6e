"""The DIR re-evaluation's AgeDB-DIR protocols (common/tools/datasplit.py ``protocol_split``): their label
histograms against the construction stated in docs/datasets.md §1.5, golden counts on the real AgeDB-DIR ages, the
``preprocess_agedb.py --protocol`` script and the synthetic generator's ``--protocol``."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.synthetic import AGEDB_TRAIN_COUNTS, AGEDB_VAL_COUNTS, write_synthetic
from common.tools.datasplit import PROTOCOLS, protocol_split
from test_data_scripts import preprocess_agedb

# Every AgeDB-DIR image's age (the published split's train + val + test): 16,488 ages.
POOL = {age: AGEDB_TRAIN_COUNTS.get(age, 0) + 2 * AGEDB_VAL_COUNTS.get(age, 0)
        for age in sorted(set(AGEDB_TRAIN_COUNTS) | set(AGEDB_VAL_COUNTS))}
AGES = np.repeat(list(POOL), list(POOL.values()))


def histogram(ages, splits, which) -> Counter:
    return Counter(int(a) for a, s in zip(ages, splits) if s in which)


def expected_draw(protocol: str, pool: dict, cap: int = 50) -> dict:
    """The training draw (train + val) per age, re-stated from docs/datasets.md §1.5."""
    left = {a: n - (min(n, cap) if 16 <= a <= 85 else 0) for a, n in pool.items()}
    removed = {"balanced_extrapolation": (), "bimodal_interpolation": range(36, 65),
               "blind_spot": range(47, 54)}[protocol]
    peaks = {"balanced_extrapolation": (50,), "bimodal_interpolation": (25, 80), "blind_spot": ()}[protocol]
    if not peaks:
        return {a: 0 if a in removed else m for a, m in left.items()}
    height = max(left.get(p, 0) for p in peaks)
    weight = lambda a: 0.0 if a in removed else sum(math.exp(-(a - p) ** 2 / 100) for p in peaks)
    return {a: min(m, math.floor(height * weight(a) + 0.5)) for a, m in left.items()}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_label_histograms_follow_the_stated_construction(protocol):
    splits = protocol_split(AGES, protocol, seed=666)
    test = histogram(AGES, splits, {"test"})
    assert test == {a: min(n, 50) for a, n in POOL.items() if 16 <= a <= 85}      # capped at 50, ages 16–85
    drawn = histogram(AGES, splits, {"train", "val"})
    assert {a: drawn.get(a, 0) for a in POOL} == expected_draw(protocol, POOL)
    val = histogram(AGES, splits, {"val"})
    assert sum(val.values()) == math.floor(0.1 * sum(drawn.values()) + 0.5)
    removed = {"bimodal_interpolation": range(36, 65), "blind_spot": range(47, 54)}.get(protocol, ())
    assert not any(drawn.get(a) for a in removed) and not any(val.get(a) for a in removed)
    assert set(splits) <= {"train", "val", "test", ""}


def test_golden_counts_on_the_agedb_dir_ages():
    """Seed 666 on the 16,488 AgeDB-DIR ages (the numbers of docs/datasets.md §1.5)."""
    golden = {"balanced_extrapolation": (4123, 458, 3493), "bimodal_interpolation": (3854, 428, 3493),
              "blind_spot": (10183, 1131, 3493)}
    for protocol, sizes in golden.items():
        counts = Counter(protocol_split(AGES, protocol, seed=666))
        assert (counts["train"], counts["val"], counts["test"]) == sizes, protocol
    extrapolation = protocol_split(AGES, "balanced_extrapolation", seed=666)
    train = histogram(AGES, extrapolation, {"train"})
    assert (min(train), max(train), max(train, key=train.get)) == (25, 74, 50)
    bimodal = histogram(AGES, protocol_split(AGES, "bimodal_interpolation", seed=666), {"train"})
    assert max(bimodal, key=bimodal.get) == 25 and bimodal[35] > 0 and bimodal[65] > 0
    assert max((bimodal[a], a) for a in range(65, 86))[1] in range(70, 81)      # the second bump, where images are


def test_seeded_and_private():
    first = protocol_split(AGES, "blind_spot", seed=1)
    state = np.random.get_state()
    assert protocol_split(AGES, "blind_spot", seed=1) == first
    assert np.all(np.random.get_state()[1] == state[1])            # the global generator is not touched
    other = protocol_split(AGES, "blind_spot", seed=2)
    assert other != first and Counter(other) == Counter(first)


def test_bad_arguments_are_one_sentence():
    with pytest.raises(ValueError, match="protocol must be one of balanced_extrapolation"):
        protocol_split([30], "extrapolation")
    with pytest.raises(ValueError, match="whole years, got 7.5"):
        protocol_split([7.5], "blind_spot")
    with pytest.raises(ValueError, match="no image of the peak ages"):
        protocol_split([10, 20, 30], "balanced_extrapolation")
    with pytest.raises(ValueError, match="test_cap must be >= 0"):
        protocol_split([30], "blind_spot", test_cap=-1)


def write_meta(folder: Path) -> pd.DataFrame:
    meta = pd.DataFrame({"age": AGES, "path": [f"AgeDB/{i}_Name_{a}_m.jpg" for i, a in enumerate(AGES)]})
    (folder / "meta").mkdir(parents=True)
    meta.to_csv(folder / "meta" / "agedb.csv", index=False)
    return meta


def test_preprocess_script_writes_the_protocol_csv(tmp_path, capsys):
    preprocess = preprocess_agedb
    meta = write_meta(tmp_path)
    preprocess.main(["--data_dir", str(tmp_path), "--protocol", "bimodal_interpolation"])
    assert "train 3854, val 428, test 3493" in capsys.readouterr().out
    out = pd.read_csv(tmp_path / "agedb_bimodal_interpolation.csv")
    assert list(out.columns) == ["age", "path", "split"]
    expected = protocol_split(meta["age"], "bimodal_interpolation", seed=666)
    kept = [i for i, s in enumerate(expected) if s]
    assert out["path"].tolist() == meta["path"].iloc[kept].tolist()           # input order, used rows only
    assert out["split"].tolist() == [expected[i] for i in kept]
    with pytest.raises(SystemExit, match="already exists"):
        preprocess.main(["--data_dir", str(tmp_path), "--protocol", "bimodal_interpolation"])
    preprocess.main(["--data_dir", str(tmp_path), "--protocol", "bimodal_interpolation", "--overwrite",
                     "--seed", "3", "--test_cap", "10"])
    again = pd.read_csv(tmp_path / "agedb_bimodal_interpolation.csv")
    assert again.loc[again.split == "test", "age"].value_counts().max() == 10
    with pytest.raises(SystemExit):
        preprocess.main(["--data_dir", str(tmp_path), "--protocol", "blind_spot", "--make_split"])
    assert "pass only one of them" in capsys.readouterr().err


def test_preprocess_script_without_meta_splits_the_split_file(tmp_path):
    """Without meta/agedb.csv every row of agedb.csv is in the pool (its split column ignored)."""
    preprocess = preprocess_agedb
    frame = pd.DataFrame({"age": AGES, "path": [f"AgeDB/{i}.jpg" for i in range(len(AGES))], "split": "train"})
    frame.to_csv(tmp_path / "agedb.csv", index=False)
    preprocess.main(["--data_dir", str(tmp_path), "--protocol", "blind_spot"])
    out = pd.read_csv(tmp_path / "agedb_blind_spot.csv")
    assert Counter(out["split"]) == Counter({"train": 10183, "val": 1131, "test": 3493})


def test_synthetic_protocol_data(tmp_path):
    n = 600
    csv = write_synthetic("agedb", tmp_path, n=n, img_size=8, seed=2, protocol="blind_spot")
    assert csv.name == "agedb_blind_spot.csv"
    frame = pd.read_csv(csv)
    cap = round(50 * n / 12208)
    test = frame.loc[frame.split == "test", "age"].value_counts()
    assert test.index.min() >= 16 and test.index.max() <= 85 and test.max() == cap
    assert not frame.loc[frame.split != "test", "age"].between(47, 53).any()
    assert all((tmp_path / p).is_file() for p in frame["path"])
    assert "--protocol blind_spot" in (tmp_path / "SYNTHETIC_agedb.txt").read_text()
    # The same folder again with the standard split: the protocol CSV (whose images are gone) goes too.
    write_synthetic("agedb", tmp_path, n=n, img_size=8, seed=2)
    assert not csv.exists() and (tmp_path / "agedb.csv").is_file()


def test_synthetic_protocol_command_line(tmp_path, capsys):
    from common.synthetic import main
    main(["agedb", "--out", str(tmp_path / "a"), "--n", "400", "--img_size", "8",
          "--protocol", "balanced_extrapolation"])
    assert "agedb_balanced_extrapolation.csv" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["imdb_wiki", "--out", str(tmp_path / "b"), "--protocol", "blind_spot"])
    assert "--protocol splits AgeDB only, not imdb_wiki." in capsys.readouterr().err


@pytest.mark.slow
def test_training_on_a_protocol_split(tmp_path):
    from folders import folder_main
    data = tmp_path / "data"
    write_synthetic("agedb", data, n=400, img_size=16, seed=0, protocol="blind_spot")
    result = folder_main("agedb-dir")(["--data_dir", str(data), "--dataset", "agedb_blind_spot", "--store_root",
                                       str(tmp_path), "--store_name", "run", "--model", "resnet18", "--width", "4",
                                       "--img_size", "16", "--batch_size", "64", "--workers", "0", "--epoch", "1",
                                       "--many_shot_thr", "5", "--low_shot_thr", "1", "--select_on", "bmae"])
    assert result["test"]["all"]["count"] == int((pd.read_csv(data / "agedb_blind_spot.csv").split == "test").sum())
    assert "bmae" in result["test"]["few"]
    assert "val bmae" in (tmp_path / "run" / "training.log").read_text()
