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
                              "full (")
    assert " free, it needs more than the 15 bytes written before the disk filled)" in message
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
    with pytest.raises(runtime.DiskFullError, match=r"^will not write .* has too little space \(3.0 MiB free, it needs "
                       r"about 10.0 MiB\); nothing was written: free space and run it again.$"):
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


def tiny_age_data(folder: Path, n: int = 3) -> Path:
    from PIL import Image
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (8, 8), (10 * i, 20, 30)).save(folder / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,{20 + i},train")
    (folder / "agedb.csv").write_text("path,age,split\n" + "\n".join(rows) + "\n")
    return folder


def test_the_pack_refuses_a_disk_without_room_and_never_leaves_half_a_pack(tmp_path, monkeypatch):
    import h5py
    from common.tools import pack
    data = tiny_age_data(tmp_path / "data")
    out = data / "agedb_8.h5"
    monkeypatch.setattr(runtime, "free_bytes", lambda folder: 2 ** 19)        # 0.5 MiB free
    with pytest.raises(SystemExit) as info:
        pack.main(["agedb", "--data_dir", str(data), "--img_size", "8"])
    message = str(info.value.code)
    assert message.startswith(f"error: will not write {out}: the disk holding {data} has too little space (512.0 KiB "
                              "free, it needs about 1.0 MiB); nothing was written: free space on that disk, then run "
                              f"`python -m common.tools.pack agedb --data_dir {data} --img_size 8` again")
    assert not out.exists() and not leftovers(data)
    monkeypatch.undo()
    pack.main(["agedb", "--data_dir", str(data), "--img_size", "8"])          # room again: the pack is written
    before = out.read_bytes()
    # A disk that fills while the pack is written (HDF5 reports it in words, not as an errno): one sentence, the
    # earlier pack intact, no temporary file (the write that crashed with a segmentation fault never starts
    # where the space is known to be too little).
    calls = []

    def full_after_one(self, key, value):
        calls.append(key)
        if len(calls) > 1:
            raise OSError("Can't write data (file write failed: time = now, filename = 'x', file descriptor = 5, "
                          "errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 192)")
        return original(self, key, value)

    original = h5py.Dataset.__setitem__
    monkeypatch.setattr(h5py.Dataset, "__setitem__", full_after_one)
    with pytest.raises(SystemExit) as info:
        pack.main(["agedb", "--data_dir", str(data), "--img_size", "8"])
    assert str(info.value.code).startswith(f"error: could not write {out}: the disk holding {data} is full (")
    assert out.read_bytes() == before and not leftovers(data)


def test_the_nyud2_pack_refuses_a_disk_without_room(tmp_path, monkeypatch):
    import importlib.util
    from common.synthetic.depth import write_synthetic_nyud2
    data = tmp_path / "data"
    write_synthetic_nyud2(data, n=4, n_test=2, size=(16, 12), crop=(12, 8), seed=0)
    script = Path(__file__).resolve().parents[2] / "nyud2-dir" / "data" / "pack_nyud2.py"
    spec = importlib.util.spec_from_file_location("pack_nyud2_for_space", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(runtime, "free_bytes", lambda folder: 1000)
    with pytest.raises(SystemExit) as info:
        module.main(["--data_dir", str(data), "--scale", "12"])
    out = data / "nyu2_pairs_12.h5"
    assert str(info.value.code).startswith(
        f"error: will not write {out}: the disk holding {data} has too little space (1000 bytes free, it needs about "
        "1.0 MiB); nothing was written: free space on that disk, then run `python data/pack_nyud2.py --data_dir ")
    assert not out.exists() and not leftovers(data)


def test_a_split_csv_written_on_a_full_disk_keeps_the_earlier_split(tmp_path, monkeypatch):
    import pandas as pd
    from common.tools import datasplit
    meta = tmp_path / "meta.csv"
    meta.write_text("age,path\n" + "".join(f"{20 + i % 5},img{i}.jpg\n" for i in range(40)))
    out = tmp_path / "agedb.csv"
    out.write_text("the earlier split\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kw: half_written_then_full(path))
    with pytest.raises(SystemExit) as info:
        datasplit.split_csv(meta, out, cap=2, overwrite=True)
    assert str(info.value.code).startswith(f"error: could not write {out}: the disk holding {tmp_path} is full (")
    assert out.read_text() == "the earlier split\n" and not leftovers(tmp_path)
