"""`make demo` (``python -m common.tools.demo``) end to end at a toy size: it writes the synthetic data, trains both
runs through agedb-dir/train.py, and prints the table of exactly what the runs' results.json hold."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


def test_the_demo_trains_both_runs_and_prints_their_table(tmp_path):
    done = subprocess.run([sys.executable, "-m", "common.tools.demo", "--out", str(tmp_path), "--n", "300", "--epoch",
                           "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert rows["run"].split("|")[2:-1] == [" MAE all ", " MAE many ", " MAE medium ", " MAE few ", " MSE all ",
                                            " G-Mean all ", " train s "]         # the README's columns, no more
    for name in ("vanilla", "conr"):
        saved = json.loads((tmp_path / "runs" / name / "results.json").read_text())
        test = saved["test"]
        expected = [f"{test[shot]['l1']:.3f}" for shot in ("all", "many", "medium", "few")] + \
            [f"{test['all']['mse']:.3f}", f"{test['all']['gmean']:.3f}", f"{saved['cost']['wall_seconds']:.0f}"]
        assert [cell.strip() for cell in rows[name].split("|")[2:-1]] == expected
    assert (tmp_path / "report.png").stat().st_size > 0
    # A screen, not a flag dump: the flags are in each run's training.log; the output ends with the table's pointers.
    assert "flags:" not in done.stdout and len(done.stdout.splitlines()) < 60
    assert done.stdout.strip().splitlines()[-1].startswith("every metric (balanced, SERA, per shot): python -m "
                                                           "common.tools.report ")
