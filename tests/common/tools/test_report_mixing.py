"""``python -m common.tools.report`` compares only what can be compared (issue 27): runs of two benchmarks, or with
other shot thresholds, are refused with one sentence naming the two runs (they are not grouped into separate
tables: one table and one histogram per benchmark and thresholds is the report's shape), and a folder given twice
(by another spelling or a link) is one run, said on stderr, not a second seed."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from common.tools import report


def age_run(folder: Path, name: str, seed: int, l1: float, **flags) -> Path:
    run = folder / name
    run.mkdir(parents=True)
    test = {s: {"l1": l1, "mse": l1 * l1, "gmean": 1.0, "count": 4} for s in ("all", "many", "medium", "few")}
    args = {"dataset": "agedb", "seed": seed, "lr": 0.001, "many_shot_thr": 100, "low_shot_thr": 20, **flags}
    (run / "results.json").write_text(json.dumps({"test": test, "args": args}))
    np.savez(run / "test_predictions.npz", preds=np.array([1.0 + l1, 2.0 + l1, 3.0]), labels=np.array([1.0, 2.0, 3.0]),
             train_labels=np.array([1.0, 1.0, 2.0]), many_shot_thr=args["many_shot_thr"],
             low_shot_thr=args["low_shot_thr"])
    return run


def table_rows(out: str) -> dict:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()
             if line.startswith("| ")]
    return {row[0]: row for row in cells}


def test_a_folder_given_twice_is_one_run_not_a_second_seed(tmp_path, capsys):
    one = age_run(tmp_path, "conr_seed0", 0, 2.0)
    two = age_run(tmp_path, "conr_seed1", 1, 4.0)
    os.symlink(one, tmp_path / "link")
    again = f"{tmp_path}/./conr_seed0"
    report.main([str(one), again, str(tmp_path / "link"), str(two),
                 "--plot", str(tmp_path / "p.png")])
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert rows["conr"][1:4] == ["0, 1", "2", f"{3:.3f} ± {2 ** 0.5:.3f}"]       # not n = 4 with seed 0 thrice
    assert f"note: {again} and {tmp_path / 'link'} are {one} again; each run counts once" in captured.err


def test_runs_of_two_benchmarks_are_refused_naming_both(tmp_path):
    agedb = age_run(tmp_path, "agedb_run", 0, 2.0)
    imdb = age_run(tmp_path, "imdb_run", 0, 3.0, dataset="imdb_wiki")
    with pytest.raises(SystemExit) as info:
        report.main([str(agedb), str(imdb), "--plot", str(tmp_path / "p.png")])
    assert str(info.value.code) == (
        f"error: {imdb} is a run of imdb-wiki-dir and {agedb} of agedb-dir: the metrics of two benchmarks cannot "
        "share one table and one label histogram; report each benchmark's runs separately.")
    assert not (tmp_path / "p.png").exists()
    stsb = age_run(tmp_path, "stsb_run", 0, 1.0, dataset=None, d_hid=1500, many_shot_thr=100, low_shot_thr=30)
    with pytest.raises(SystemExit, match=f"{stsb} is a run of sts-b-dir and {agedb} of agedb-dir"):
        report.main([str(agedb), str(stsb), "--plot", str(tmp_path / "p.png")])


def test_runs_with_other_shot_thresholds_are_refused_naming_both(tmp_path):
    real = age_run(tmp_path, "real_thr", 0, 2.0)
    scaled = age_run(tmp_path, "scaled_thr", 1, 3.0, many_shot_thr=33, low_shot_thr=7)
    with pytest.raises(SystemExit) as info:
        report.main([str(real), str(scaled), "--plot", str(tmp_path / "p.png")])
    assert str(info.value.code) == (
        f"error: {scaled} counts many-shot labels as > 33 and few-shot as < 7 training samples, {real} as > 100 and "
        "< 20: their Many/Medium/Few columns hold different labels; report them separately, or evaluate both "
        "with the same --many_shot_thr and --low_shot_thr.")
    assert not (tmp_path / "p.png").exists()
