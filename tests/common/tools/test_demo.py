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
    for name in ("vanilla", "conr"):
        saved = json.loads((tmp_path / "runs" / name / "results.json").read_text())["test"]
        assert f"| {saved['all']['l1']:.3f} |" in rows[name]
    assert (tmp_path / "report.png").stat().st_size > 0
