"""Train a grid of flag sets × seeds of one benchmark, resume a half-finished grid, or print its commands.

    python -m common.tools.sweep --folder agedb-dir --store_root sweeps/agedb \\
        --grid vanilla= --grid "sqinv_lds=--reweight sqrt_inv --lds" --seeds 0 1 2 \\
        -- --data_dir /abs/data --epoch 10 --many_shot_thr 33 --low_shot_thr 7
    python -m common.tools.sweep ... --print      # the commands only, one per line (a cluster's job array)

Each ``--grid NAME=FLAGS`` is one setting (FLAGS split as a shell would; empty for the benchmark's defaults) and
runs once per ``--seeds`` value as

    cd FOLDER && PYTHON train.py COMMON FLAGS --seed K --store_root ROOT --store_name NAME_seedK

with COMMON the flags after ``--`` (relative paths in them are relative to FOLDER). Seeds are the outer loop, so a
sweep stopped early has every setting at its first seeds. The sweep sets ``--seed``, ``--store_root`` and
``--store_name`` itself (and ``--resume``/``--overwrite`` as below): in FLAGS or COMMON they are refused.

A run's folder decides what happens to it: with ``results.json`` it is finished and skipped; with
``ckpt.pth.tar`` it continues (``--resume ROOT/NAME_seedK/ckpt.pth.tar``: training picks up where it stopped);
any other non-empty folder is a start that stopped before its first checkpoint and starts again
(``--overwrite``); no folder, a new run. ``--fresh`` starts every run again. So the same command continues an
interrupted sweep, and ``--print`` prints only what is left (a finished run prints nothing).

Runs go one after another; each one's output is in its ``training.log``, and a failing run stops the sweep with
its error. ``ROOT/sweep.json`` records, per run folder, the flags the sweep gave it and the wall seconds of each
invocation; a run whose recorded flags differ from the grid's is refused, so a sweep never takes over the runs
of another one (``--print`` records nothing: the runs happen elsewhere). At the end, ``python -m
common.tools.report`` of the grid's runs is printed: the mean ± sd over the seeds of each setting, and its
per-label plot ``ROOT/report.png`` (and, for runs with a predicted σ, ``ROOT/calibration.png``).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the flags a sweep sets on every run, refused in a grid's or the common flags.
OWN_FLAGS = ("--seed", "--random_seed", "--store_root", "--store_name", "--resume", "--overwrite", "--evaluate")
RECORD = "sweep.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Job:
    """One run of a sweep: the setting's ``name``, its ``seed`` and folder, the flags that define it, and what the
    folder says to do (``state``: ``done``, ``resume``, ``restart`` or ``new``)."""

    name: str
    seed: int
    folder: Path              # the benchmark folder, where train.py runs
    run_dir: Path
    flags: list[str]          # COMMON + FLAGS + --seed/--store_root/--store_name
    state: str = "new"
    record: dict = field(default_factory=dict)     # this run's entry of ROOT/sweep.json

    def argv(self) -> list[str]:
        """The flags of this invocation: ``flags``, plus ``--resume`` or ``--overwrite`` as ``state`` says."""
        if self.state == "resume":
            return [*self.flags, "--resume", str(self.run_dir / "ckpt.pth.tar")]
        if self.state == "restart":
            return [*self.flags, "--overwrite"]
        return list(self.flags)

    def command(self, python: str = sys.executable) -> str:
        """The shell line that runs it from anywhere."""
        return f"cd {shlex.quote(str(self.folder))} && {shlex.join([python, 'train.py', *self.argv()])}"


def parse_grid(entries) -> dict[str, list[str]]:
    """``["NAME=FLAGS", …]`` → ``{NAME: [flag, …]}``; a malformed entry is one sentence (ValueError)."""
    grid = {}
    for entry in entries:
        name, equals, flags = entry.partition("=")
        name = name.strip()
        if not equals or not NAME.match(name):
            raise ValueError(f"--grid {entry!r} must be NAME=FLAGS with a NAME of letters, digits and _ . + - "
                             "(a run folder's name), e.g. --grid 'conr=--conr -w 1'.")
        if name in grid:
            raise ValueError(f"--grid names {name!r} twice; give each setting its own name.")
        try:
            grid[name] = shlex.split(flags)
        except ValueError as error:
            raise ValueError(f"--grid {entry!r}: its flags cannot be split ({error}).") from None
    return grid


def check_flags(where: str, flags: list[str]) -> None:
    """Refuse the flags the sweep sets itself, naming the first."""
    for flag in flags:
        if flag.split("=", 1)[0] in OWN_FLAGS:
            raise ValueError(f"{flag.split('=', 1)[0]} in {where} is set by the sweep (--seeds, --store_root, the run "
                             "folders); drop it.")


def plan(folder, grid: dict[str, list[str]], seeds, common: list[str], store_root, fresh: bool = False) -> list[Job]:
    """The jobs of a sweep, seeds outermost, each with the state its folder gives (the module docstring).

    ``folder``: the benchmark folder (a path, or a name under the repo root); ``store_root``: where the run folders
    go (made absolute). ValueError, one sentence: an unknown folder, no setting or seed, a flag the sweep sets, or
    a run folder whose ``sweep.json`` records other flags."""
    folder = Path(folder)
    folder = folder if folder.is_absolute() or folder.is_dir() else ROOT / folder
    folder = folder.resolve()
    if not (folder / "train.py").is_file():
        raise ValueError(f"--folder {folder} holds no train.py; name a benchmark folder such as agedb-dir.")
    if not grid or not list(seeds):
        raise ValueError("a sweep needs at least one --grid setting and one seed.")
    check_flags("the common flags", common)
    for name, flags in grid.items():
        check_flags(f"--grid {name}", flags)
    root = Path(store_root).resolve()
    recorded = read_records(root)
    jobs = []
    for seed in seeds:
        for name, flags in grid.items():
            run_name = f"{name}_seed{seed}"
            job = Job(name, int(seed), folder, root / run_name,
                      [*common, *flags, "--seed", str(seed), "--store_root", str(root), "--store_name", run_name])
            job.record = recorded.get(run_name, {})
            if job.record.get("flags") not in (None, job.flags):
                raise ValueError(f"{job.run_dir} was started by a sweep with other flags ({root / RECORD}); use "
                                 "another --store_root, or delete that folder and its entry.")
            job.state = state_of(job.run_dir, fresh)
            jobs.append(job)
    return jobs


def state_of(run_dir: Path, fresh: bool = False) -> str:
    """``done`` (results.json), ``resume`` (ckpt.pth.tar), ``restart`` (anything else there), or ``new``."""
    present = [p.name for p in run_dir.iterdir()] if run_dir.is_dir() else []
    if fresh or not {"results.json", "ckpt.pth.tar"} & set(present):
        return "restart" if present else "new"
    return "done" if "results.json" in present else "resume"


def read_records(root: Path) -> dict:
    """``ROOT/sweep.json``'s runs (``{run folder name: {'flags', 'invocations'}}``), or {}."""
    try:
        return json.loads((root / RECORD).read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_record(job: Job) -> None:
    """Store ``job.record`` as its run's entry of ``ROOT/sweep.json`` (atomically)."""
    root = job.run_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    records = read_records(root)
    records[job.run_dir.name] = job.record
    tmp = root / (RECORD + ".tmp")
    tmp.write_text(json.dumps({"runs": records}, indent=1) + "\n")
    os.replace(tmp, root / RECORD)


def run_job(job: Job, python: str = sys.executable, env=None, quiet: bool = True) -> dict:
    """Run one job unless it is done; its record (``flags``, ``invocations``: mode, wall seconds and exit status of
    each) is kept in ``ROOT/sweep.json`` and returned. A failing run raises RuntimeError with its last error lines
    (the same sweep continues it)."""
    if job.state == "done":
        return job.record
    job.record = {"flags": job.flags, "invocations": job.record.get("invocations", [])}
    write_record(job)       # before the run: the folder is this sweep's from its first file on
    start = time.time()
    done = subprocess.run([python, "train.py", *job.argv()], cwd=job.folder, env=env, text=True,
                          stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE if quiet else None)
    wall = round(time.time() - start, 1)
    job.record["invocations"].append({"mode": job.state, "wall_s": wall, "returncode": done.returncode})
    write_record(job)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
        raise RuntimeError(f"run {job.run_dir.name} failed (exit status {done.returncode}; its log: "
                           f"{job.run_dir / 'training.log'}); the same sweep command continues from it."
                           + (f"\n{tail}" if tail else ""))
    job.state = "done"
    return job.record


def wall_seconds(record: dict) -> float | None:
    """The wall seconds of a job's invocations together (None if the sweep did not run it)."""
    calls = record.get("invocations") or []
    return round(sum(call["wall_s"] for call in calls), 1) if calls else None


def main(argv=None) -> list[Job]:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    from common.cli import Parser

    parser = Parser(__doc__, prog="python -m common.tools.sweep", formatter_class=Parser.RawFormatter)
    parser.add_argument("--folder", required=True, help="the benchmark folder (agedb-dir, imdb-wiki-dir, "
                        "sts-b-dir, nyud2-dir, or a path)")
    parser.add_argument("--grid", action="append", required=True, metavar="NAME=FLAGS",
                        help="one setting: its run-folder name and its flags (repeat for each)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the seeds each setting runs with (default: 0 1 2)")
    parser.add_argument("--store_root", required=True, help="folder of the run folders NAME_seedK")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the command of every run that is not finished, one per line; run nothing")
    parser.add_argument("--fresh", action="store_true", help="start every run again (--overwrite), finished ones too")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that runs train.py (default: this one, %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="show each run's output")
    args = parser.parse_args(own)
    try:
        jobs = plan(args.folder, parse_grid(args.grid), args.seeds, common, args.store_root, args.fresh)
    except ValueError as error:
        parser.error(str(error))
    if args.print_only:
        for job in jobs:
            if job.state != "done":
                print(job.command(args.python))
        return jobs
    for number, job in enumerate(jobs, 1):
        if job.state == "done":
            print(f"[{number}/{len(jobs)}] {job.run_dir.name}: finished before, skipped", flush=True)
            continue
        print(f"[{number}/{len(jobs)}] {job.run_dir.name}: {job.state} ...", flush=True)
        try:
            record = run_job(job, args.python, quiet=not args.verbose)
        except RuntimeError as error:
            raise SystemExit(f"error: {error}") from None
        print(f"[{number}/{len(jobs)}] {job.run_dir.name}: done in {record['invocations'][-1]['wall_s']:.0f} s",
              flush=True)
    from common.tools import report
    print()
    report.main([str(job.run_dir) for job in jobs] + ["--plot", str(Path(args.store_root) / "report.png"),
                                                      "--calibration", str(Path(args.store_root) / "calibration.png")])
    return jobs


if __name__ == "__main__":
    main()
