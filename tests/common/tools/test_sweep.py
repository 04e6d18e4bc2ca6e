"""``python -m common.tools.sweep`` (grids of flag sets × seeds: run, resume, --print) and the seed aggregation of
``python -m common.tools.report`` (mean ± sd per setting against hand-computed values, the seed band of the plot).

Most tests run the sweep on a stand-in benchmark folder whose ``train.py`` writes a results.json in a second
(its test L1 is ``--value`` + ``--seed``); one slow test sweeps the real agedb-dir on tiny data.
"""
from __future__ import annotations

import importlib.util
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from common.tools import report, sweep

REPO = Path(__file__).resolve().parents[3]
FAKE_TRAIN = '''
import argparse, json, pathlib, sys
import numpy as np
p = argparse.ArgumentParser()
for flag in ("--store_root", "--store_name", "--resume"):
    p.add_argument(flag, default="")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--value", type=float, default=0.0)
p.add_argument("--workers", type=int, default=0)
p.add_argument("--overwrite", action="store_true")
p.add_argument("--fail", action="store_true")
a = p.parse_args()
run = pathlib.Path(a.store_root) / a.store_name
if run.exists() and any(run.iterdir()) and not (a.overwrite or a.resume):
    sys.exit(f"error: run folder {run} already exists")
if a.fail:
    sys.exit("error: the stand-in failed on purpose")
run.mkdir(parents=True, exist_ok=True)
l1 = a.value + a.seed
test = {s: {"l1": l1, "mse": l1 * l1, "gmean": 1.0, "count": 4, "bmae": 2 * l1, "bmse": 0.5, "sera": 10.0 * a.seed,
            "bins": 2} for s in ("all", "many", "medium", "few")}
flags = {k: v for k, v in vars(a).items() if k != "fail"}
(run / "results.json").write_text(json.dumps({"val": test, "test": test, "epoch": 1, "step": 1, "args": flags}))
(run / "argv.txt").write_text(" ".join(sys.argv[1:]))
np.savez(run / "test_predictions.npz", preds=np.array([1.0, 2.0 + a.seed, 5.0]), labels=np.array([1.0, 2.0, 3.0]),
         train_labels=np.array([1.0, 1.0, 2.0]), many_shot_thr=1, low_shot_thr=0)
'''


@pytest.fixture
def bench(tmp_path) -> Path:
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "train.py").write_text(FAKE_TRAIN)
    return folder


def sweep_argv(bench, root, *extra, grid=("a=--value 10", "b=--value 20"), seeds=("0", "1")):
    return ["--folder", str(bench), "--store_root", str(root), *[f"--grid={g}" for g in grid], "--seeds", *seeds,
            *extra, "--", "--workers", "0"]


# ---- planning ---------------------------------------------------------------------------------------------------
def test_grid_entries_and_the_flags_a_sweep_sets():
    assert sweep.parse_grid(["vanilla=", "conr=--conr -w 1"]) == {"vanilla": [], "conr": ["--conr", "-w", "1"]}
    for bad, words in (("conr", "must be NAME=FLAGS"), ("a b=--x", "must be NAME=FLAGS"), ("x='--a", "cannot be split")):
        with pytest.raises(ValueError, match=words):
            sweep.parse_grid([bad])
    with pytest.raises(ValueError, match="names 'a' twice"):
        sweep.parse_grid(["a=", "a=--x"])
    with pytest.raises(ValueError, match=r"^--seed in --grid a is set by the sweep"):
        sweep.check_flags("--grid a", ["--lr", "1", "--seed", "3"])
    with pytest.raises(ValueError, match=r"^--store_name in the common flags"):
        sweep.check_flags("the common flags", ["--store_name=x"])


def test_print_lists_what_is_left_with_resume_and_overwrite(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "a_seed0").mkdir(parents=True)
    (root / "a_seed0" / "results.json").write_text("{}")            # finished
    (root / "b_seed0").mkdir()
    (root / "b_seed0" / "training.log").write_text("")             # stopped before its first checkpoint
    (root / "a_seed1").mkdir()
    (root / "a_seed1" / "ckpt.pth.tar").write_bytes(b"")           # half-finished
    jobs = sweep.main(sweep_argv(bench, root, "--print"))
    lines = capsys.readouterr().out.splitlines()
    assert [(j.run_dir.name, j.state) for j in jobs] == [("a_seed0", "done"), ("b_seed0", "restart"),
                                                         ("a_seed1", "resume"), ("b_seed1", "new")]
    assert lines == [job.command(sys.executable) for job in jobs[1:]]       # seeds outermost, finished runs left out
    first = shlex.split(lines[0])
    assert first[:3] == ["cd", str(bench.resolve()), "&&"] and first[4] == "train.py"
    assert first[5:] == ["--workers", "0", "--value", "20", "--seed", "0", "--store_root", str(root.resolve()),
                         "--store_name", "b_seed0", "--overwrite"]
    assert shlex.split(lines[1])[-2:] == ["--resume", str(root.resolve() / "a_seed1" / "ckpt.pth.tar")]
    assert "--resume" not in lines[2] and "--overwrite" not in lines[2]
    assert not (root / "b_seed1").exists() and not (root / "sweep.json").exists()      # nothing ran
    sweep.main(sweep_argv(bench, root, "--print", "--fresh"))
    assert len(capsys.readouterr().out.splitlines()) == 4                 # --fresh: every run again


def test_a_sweep_runs_resumes_and_reports(bench, tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "a_seed1").mkdir(parents=True)
    (root / "a_seed1" / "ckpt.pth.tar").write_bytes(b"")
    sweep.main(sweep_argv(bench, root))
    out = capsys.readouterr().out
    assert "a_seed1: resume" in out and "b_seed1: new" in out
    assert "--resume" in (root / "a_seed1" / "argv.txt").read_text()
    records = json.loads((root / "sweep.json").read_text())["runs"]
    assert set(records) == {"a_seed0", "b_seed0", "a_seed1", "b_seed1"}
    assert records["b_seed1"]["flags"][-6:] == ["--seed", "1", "--store_root", str(root.resolve()), "--store_name",
                                                "b_seed1"]
    assert [call["mode"] for call in records["a_seed1"]["invocations"]] == ["resume"]
    # the table: a = 10 + seed over seeds 0, 1: 10.5 ± 0.707; b = 20 + seed: 20.5 ± 0.707
    rows = {line.split(" | ")[0][2:]: line for line in out.splitlines() if line.startswith("| a |") or
            line.startswith("| b |")}
    assert "| 0, 1 | 2 | 10.500 ± 0.707 |" in rows["a"] and "| 0, 1 | 2 | 20.500 ± 0.707 |" in rows["b"]
    assert (root / "report.png").read_bytes()[:4] == b"\x89PNG"
    # Again: everything is finished, nothing runs.
    sweep.main(sweep_argv(bench, root))
    assert capsys.readouterr().out.count("finished before, skipped") == 4
    assert len(json.loads((root / "sweep.json").read_text())["runs"]["a_seed0"]["invocations"]) == 1
    # Other flags for the same run folders are refused.
    with pytest.raises(SystemExit):
        sweep.main(sweep_argv(bench, root, grid=("a=--value 11", "b=--value 20")))
    assert "was started by a sweep with other flags" in capsys.readouterr().err


def test_a_failing_run_stops_the_sweep_with_its_error(bench, tmp_path):
    with pytest.raises(SystemExit) as info:
        sweep.main(sweep_argv(bench, tmp_path / "runs", grid=("bad=--fail",)))
    message = str(info.value)
    assert message.startswith("error: run bad_seed0 failed (exit status 1; its log:")
    assert "the same sweep command continues from it" in message and "failed on purpose" in message
    record = json.loads((tmp_path / "runs" / "sweep.json").read_text())["runs"]["bad_seed0"]
    assert record["invocations"][0]["returncode"] == 1


def test_an_unknown_folder_is_one_sentence(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--folder", str(tmp_path), "--store_root", str(tmp_path / "r"), "--grid", "a="])
    assert "holds no train.py; name a benchmark folder" in capsys.readouterr().err


# ---- seed aggregation in the report ------------------------------------------------------------------------------
def fake_run(folder: Path, name: str, seed: int, l1: float, sera: float = 1.0, **flags) -> Path:
    run = folder / name
    run.mkdir(parents=True)
    test = {s: {"l1": l1 + (s == "few"), "mse": l1 * l1, "gmean": 1.0, "count": 4, "bmae": l1 / 2,
                "bmse": 1.0, "sera": sera, "bins": 2} for s in ("all", "many", "medium", "few")}
    args = {"seed": seed, "lr": 0.001, "store_name": name, "workers": seed, **flags}
    (run / "results.json").write_text(json.dumps({"val": test, "test": test, "epoch": 1, "step": 1, "args": args}))
    np.savez(run / "test_predictions.npz", preds=np.array([1.0 + l1, 2.0 + l1, 3.0]), labels=np.array([1.0, 2.0, 3.0]),
             train_labels=np.array([1.0, 1.0, 2.0]), many_shot_thr=1, low_shot_thr=0)
    return run


def test_report_groups_runs_that_differ_only_in_the_seed(tmp_path, capsys):
    runs = [fake_run(tmp_path, "base_seed0", 0, 2.0, sera=3.0), fake_run(tmp_path, "base_seed1", 1, 4.0,
            sera=math.nan), fake_run(tmp_path, "base_seed2", 2, 9.0, sera=5.0),
            fake_run(tmp_path, "lds_seed0", 0, 1.0, lds=True), fake_run(tmp_path, "lds_seed5", 5, 2.0, lds=True),
            fake_run(tmp_path, "other", 0, 7.0, lr=0.01)]
    report.main([*map(str, runs), "--plot", str(tmp_path / "p.png"), "--columns", "l1", "sera"])
    out = capsys.readouterr().out
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()
             if line.startswith("| ")]
    rows = {row[0]: row for row in cells}
    header = rows["run"]
    assert header[:5] == ["run", "seeds", "n", "MAE all", "MAE many"] and header[7] == "SERA all"
    # base: MAE 2, 4, 9 → mean 5, sample sd √13; MAE few is one more; SERA: NaN left out → 4 ± √2
    assert rows["base"][1:4] == ["0, 1, 2", "3", f"{5:.3f} ± {math.sqrt(13):.3f}"]
    assert rows["base"][6] == f"{6:.3f} ± {math.sqrt(13):.3f}" and rows["base"][7] == f"{4:.3f} ± {math.sqrt(2):.3f}"
    assert rows["lds"][1:4] == ["0, 5", "2", f"{1.5:.3f} ± {math.sqrt(0.5):.3f}"]     # workers differ: same group
    assert rows["other"][1:4] == ["0", "1", "7.000"]                                   # another lr: its own row
    report.main([*map(str, runs), "--plot", str(tmp_path / "p.png"), "--per_run"])
    per_run = capsys.readouterr().out
    assert sum(line.startswith("| base_seed") for line in per_run.splitlines()) == 3 and "bMAE all" in per_run
    with pytest.raises(SystemExit, match="has no rmse in its test metrics"):
        report.main([*map(str, runs), "--columns", "rmse"])


def test_the_plot_band_is_the_mean_plus_minus_the_sd(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [report.load_run(fake_run(tmp_path, f"s_seed{k}", k, l1)) for k, l1 in enumerate((1.0, 2.0, 6.0))]
    runs.append(report.load_run(fake_run(tmp_path, "alone", 0, 0.5, lr=1.0)))
    fig, ax = plt.subplots()
    report.draw_groups(ax, runs, lambda run: report.per_label_error(run["predictions"], "l1"))
    mean_line, alone_line = ax.get_lines()
    # per-label |e| of the runs: labels 1 and 2 have error l1, label 3 has 0 → mean 3, sd √7 at labels 1 and 2
    assert mean_line.get_label() == "s (mean ± sd, 3 seeds)" and alone_line.get_label() == "alone"
    assert mean_line.get_ydata().tolist() == pytest.approx([3.0, 3.0, 0.0])
    band = ax.collections[0].get_paths()[0].vertices
    at = lambda x: sorted(set(np.round(band[band[:, 0] == x, 1], 12)))
    assert at(1.0) == at(2.0) == pytest.approx([3 - math.sqrt(7), 3 + math.sqrt(7)]) and at(3.0) == [0.0]
    plt.close(fig)


def test_group_keys_ignore_run_flags_only():
    run = lambda **args: {"name": "x", "args": {"seed": 0, "lr": 1.0, **args}}
    assert report.settings_key(run(seed=3, store_name="y", workers=4, device="cpu", resume="c")) == \
        report.settings_key(run())
    assert report.settings_key(run(lr=2.0)) != report.settings_key(run())
    assert report.settings_key({"name": "a", "path": "/a"}) != report.settings_key({"name": "a", "path": "/b"})
    assert report.group_name([{"name": "conr_seed1"}, {"name": "conr_seed2"}]) == "conr"
    assert report.group_name([{"name": "seed1"}, {"name": "seed2"}]) == "seed1"


# ---- the benchmark scripts on the sweep --------------------------------------------------------------------------
def load_benchmark(name: str):
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_plan_their_runs_with_the_sweep(tmp_path):
    stsb = load_benchmark("stsb")
    jobs = stsb.jobs_of(list(stsb.CONFIGS), [0, 1], tmp_path / "data", tmp_path / "runs", tmp_path / "cache")
    assert [job.run_dir.name for job in jobs[:4]] == ["vanilla_seed0", "inv_lds_fds_seed0", "conr_seed0",
                                                      "ranksim_seed0"]          # the folder names of before
    assert jobs[1].flags[:4] == ["--data_dir", str(tmp_path / "data"), "--cache_dir", str(tmp_path / "cache")]
    assert jobs[1].folder == (REPO / "sts-b-dir").resolve() and "--lds" in jobs[1].flags
    variants = load_benchmark("protocol_variants")
    names = [variants.setting(pair, variant) for pair, group in variants.PAIRS.items() for variant in group]
    assert len(set(names)) == 6 and all(sweep.NAME.match(name) for name in names)


@pytest.mark.slow
def test_a_real_sweep_resumes_to_the_same_numbers(tmp_path, capsys):
    from common.synthetic import write_synthetic
    data = write_synthetic("agedb", tmp_path / "data", n=240, img_size=16, seed=3).parent
    argv = ["--folder", "agedb-dir", "--store_root", str(tmp_path / "runs"), "--grid", "v=", "--seeds", "0", "1",
            "--", "--data_dir", str(data), "--model", "resnet18", "--width", "4", "--img_size", "16", "--batch_size",
            "64", "--workers", "0", "--epoch", "2", "--many_shot_thr", "3", "--low_shot_thr", "1"]
    sweep.main(argv)
    first = json.loads((tmp_path / "runs" / "v_seed1" / "results.json").read_text())["test"]
    assert "| v | 0, 1 | 2 |" in capsys.readouterr().out
    (tmp_path / "runs" / "v_seed1" / "results.json").unlink()       # as if stopped after its last checkpoint
    jobs = sweep.main(argv)
    assert [job.state for job in jobs] == ["done", "done"]
    assert "v_seed1: resume" in capsys.readouterr().out
    again = json.loads((tmp_path / "runs" / "v_seed1" / "results.json").read_text())["test"]
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
