"""Result files are complete or absent (issue 27, "nothing lost, nothing silent"): a full disk at the end of a run,
in the report or in the pack is one sentence naming the file and the space, and never leaves a truncated file
beside a complete one. The full disk is simulated by a write that raises ``OSError(ENOSPC)`` part-way."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from common import runtime
from common.errors import RunError
from test_trainer import VectorTask, trainer


def half_written_then_full(path, *args, **kwargs):
    """What a full disk does to a writer: some bytes reach the file, then the write fails."""
    Path(path).write_bytes(b"PK\x03\x04 half a zip")
    raise OSError(errno.ENOSPC, "No space left on device")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_a_full_disk_at_the_end_of_a_run_leaves_no_results_beside_truncated_predictions(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(VectorTask, "save_predictions", lambda self, path, *a, **k: half_written_then_full(path))
    with pytest.raises(RunError) as info:
        trainer(VectorTask(), tmp_path, epochs=2).fit()
    message = str(info.value)
    assert message.startswith(f"could not write {run_dir / 'test_predictions.npz'}: the disk holding {run_dir} is "
                              "full (") and " free, it needs more than the 15 bytes written before the disk filled)" in message
    assert f"`train.py --resume {run_dir / 'ckpt.pth.tar'}` tests the best checkpoint again" in message
    assert "\n" not in message
    names = {p.name for p in run_dir.iterdir()}
    assert not {"results.json", "test_predictions.npz"} & names and not leftovers(run_dir)
    assert {"ckpt.pth.tar", "ckpt.best.pth.tar"} <= names           # the checkpoints survive
    # After freeing space, the advice works: the resumed run tests the best checkpoint and writes both files.
    monkeypatch.undo()
    result = trainer(VectorTask(), tmp_path, epochs=2, resume=run_dir / "ckpt.pth.tar").fit()
    saved = json.loads((run_dir / "results.json").read_text())
    with np.load(run_dir / "test_predictions.npz") as data:
        preds, labels = data["preds"], data["labels"]
    assert saved["test"] == result["test"] and saved["epoch"] == 1 and len(preds) == 16
    assert saved["test"]["all"]["mse"] == pytest.approx(float(np.mean((preds - labels) ** 2)), rel=1e-5)


def test_results_json_is_written_after_the_predictions(tmp_path, monkeypatch):
    order = []
    write_atomic = runtime.write_atomic

    def recording(path, *args, **kwargs):
        order.append(Path(path).name)
        return write_atomic(path, *args, **kwargs)

    monkeypatch.setattr(runtime, "write_atomic", recording)
    trainer(VectorTask(), tmp_path, epochs=1).fit()
    assert order == ["test_predictions.npz", "results.json"]


def test_an_atomic_write_on_a_full_disk_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    runtime.write_json({"test": 1}, path)
    assert json.loads(path.read_text()) == {"test": 1} and oct(path.stat().st_mode & 0o777) != "0o600"
    with pytest.raises(runtime.DiskFullError) as info:
        runtime.write_atomic(path, half_written_then_full, advice="free space")
    assert str(info.value).startswith(f"could not write {path}: the disk holding {tmp_path} is full (")
    assert str(info.value).endswith("nothing half-written was left: free space.")
    assert isinstance(info.value, OSError)          # code that tolerates a failed write still does
    assert json.loads(path.read_text()) == {"test": 1} and not leftovers(tmp_path)
    # A failure of fsync (where some file systems report ENOSPC) is the same sentence.
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(runtime.DiskFullError):
        runtime.write_json({"test": 2}, path)
    assert json.loads(path.read_text()) == {"test": 1} and not leftovers(tmp_path)
    # Known too little space: refused before writing, with what is needed.
    monkeypatch.setattr(runtime, "free_bytes", lambda folder: 3 * 2 ** 20)
    with pytest.raises(runtime.DiskFullError, match=r"is full \(3.0 MiB free, it needs about 10.0 MiB\)"):
        runtime.write_atomic(path, lambda tmp: pytest.fail("nothing is written"), needed=10 * 2 ** 20)


def test_update_json_merges_entries_and_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / "sweep.json"
    runtime.update_json(path, lambda records: {**records, "a": 1})
    runtime.update_json(path, lambda records: {**records, "b": 2})
    assert json.loads(path.read_text()) == {"a": 1, "b": 2}
    path.write_text('{"a": 1, "b"')
    with pytest.raises(RunError, match=f"^{path} is not valid JSON .*repair or move it"):
        runtime.update_json(path, lambda records: {})
    assert path.read_text() == '{"a": 1, "b"'               # never replaced


def test_the_report_figures_on_a_full_disk_are_one_sentence(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from common.tools import report
    run = tmp_path / "run"
    run.mkdir()
    test = {s: {"l1": 1.0, "mse": 1.0, "gmean": 1.0, "count": 2} for s in ("all", "many", "medium", "few")}
    (run / "results.json").write_text(json.dumps({"test": test, "args": {"seed": 0}}))
    np.savez(run / "test_predictions.npz", preds=np.array([1.0, 2.0]), labels=np.array([1.0, 3.0]),
             train_labels=np.array([1.0, 1.0, 3.0]), many_shot_thr=1, low_shot_thr=0)
    plot = tmp_path / "report.png"
    plot.write_bytes(b"the earlier plot")
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: half_written_then_full(path))
    with pytest.raises(SystemExit) as info:
        report.main([str(run), "--plot", str(plot)])
    assert str(info.value.code).startswith(f"error: could not write {plot}: the disk holding {tmp_path} is full")
    assert plot.read_bytes() == b"the earlier plot" and not leftovers(tmp_path)


def test_the_gmm_prior_is_written_atomically(tmp_path, monkeypatch):
    from common import gmm
    path = tmp_path / "gmm.npz"
    fitted = {"means": np.zeros((2, 1)), "weights": np.full(2, 0.5), "variances": np.ones((2, 1, 1))}
    gmm.save_gmm(fitted, path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", half_written_then_full)
    with pytest.raises(runtime.DiskFullError, match=f"^could not write {path}"):
        gmm.save_gmm(fitted, path)
    assert path.read_bytes() == before and not leftovers(tmp_path)
