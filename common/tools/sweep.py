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

A run's folder decides what happens to it: with ``results.json`` it is finished and skipped; with a ``run.lock``
whose process runs (here, or on another host) it is running elsewhere and left alone; with ``ckpt.pth.tar`` it
continues (``--resume ROOT/NAME_seedK/ckpt.pth.tar``: training picks up where it stopped); any other non-empty
folder is a start that stopped before its first checkpoint and starts again (``--overwrite``, which
``train.py`` refuses if the run has finished meanwhile); no folder, a new run. ``--fresh`` starts every run
again (a finished one with ``--overwrite NAME_seedK``, naming it). So the same command continues an interrupted
sweep, and ``--print`` prints only what is left (a finished or running run prints nothing).

Before anything runs or prints, every planned command is parsed by the benchmark's own parser (``FOLDER/train.py``'s
``main``, stopped after parsing): a flag the benchmark does not have, or a combination it refuses, is one sentence.
The sweep's own flags belong before ``--``; after it (or in a grid) they are refused.

A running sweep holds its store root (``ROOT/sweep.lock``, its PID and host): a second sweep, or ``--print``, on
the same root is refused with one sentence while the first runs. Runs go one after another; each one's output is
in its ``training.log``, and a failing run stops the sweep with its error. ``ROOT/sweep.json`` records, per run
folder, the flags the sweep gave it and the wall seconds of each invocation (each update merged under a lock and
written atomically); a run folder that holds files and whose recorded flags differ from the grid's is refused,
so a sweep never takes over the runs of another one (a record whose folder holds nothing, a sweep that never
started, binds nothing; ``--print`` records nothing: the runs happen elsewhere). At the end, ``python -m
common.tools.report`` of the grid's runs is printed: the mean ± sd over the seeds of each setting, and its
per-label plot ``ROOT/report.png`` (and, for runs with a predicted σ, ``ROOT/calibration.png``).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import runtime
from common.errors import RunError

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
    state: str = "new"        # done, running, resume, restart, replace (--fresh on a finished run) or new
    record: dict = field(default_factory=dict)     # this run's entry of ROOT/sweep.json
    holder: tuple | None = None                    # (pid, host, since) of the process that runs it elsewhere

    def argv(self) -> list[str]:
        """The flags of this invocation: ``flags``, plus ``--resume`` or ``--overwrite`` as ``state`` says (a
        finished run is replaced only with ``--overwrite`` naming its folder)."""
        if self.state == "resume":
            return [*self.flags, "--resume", str(self.run_dir / "ckpt.pth.tar")]
        if self.state == "restart":
            return [*self.flags, "--overwrite"]
        if self.state == "replace":
            return [*self.flags, "--overwrite", self.run_dir.name]
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


def check_flags(where: str, flags: list[str], sweep_options=()) -> None:
    """Refuse the flags the sweep sets itself, and the sweep's own options (``sweep_options``: they belong before
    ``--``; after it they would reach train.py), naming the first."""
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name in sweep_options and name not in OWN_FLAGS:
            raise ValueError(f"{name} in {where} is a flag of the sweep itself, which would be passed to train.py "
                             "there; put it before -- (e.g. python -m common.tools.sweep ... --print -- ...).")
        if name in OWN_FLAGS:
            raise ValueError(f"{name} in {where} is set by the sweep (--seeds, --store_root, the run "
                             "folders); drop it.")


def benchmark_folder(folder) -> Path:
    """The benchmark folder (a path, or a name under the repo root), absolute; ValueError if it has no train.py."""
    folder = Path(folder)
    folder = folder if folder.is_absolute() or folder.is_dir() else ROOT / folder
    folder = folder.resolve()
    if not (folder / "train.py").is_file():
        raise ValueError(f"--folder {folder} holds no train.py; name a benchmark folder such as agedb-dir.")
    return folder


def plan(folder, grid: dict[str, list[str]], seeds, common: list[str], store_root, fresh: bool = False,
         sweep_options=()) -> list[Job]:
    """The jobs of a sweep, seeds outermost, each with the state its folder gives (the module docstring).

    ``folder``: the benchmark folder (a path, or a name under the repo root); ``store_root``: where the run folders
    go (made absolute). ValueError, one sentence: an unknown folder, no setting or seed, a flag the sweep sets (or
    one of ``sweep_options``, the sweep's own), or a run folder holding files whose ``sweep.json`` records other
    flags."""
    folder = benchmark_folder(folder)
    if not grid or not list(seeds):
        raise ValueError("a sweep needs at least one --grid setting and one seed.")
    check_flags("the common flags (after --)", common, sweep_options)
    for name, flags in grid.items():
        check_flags(f"--grid {name}", flags, sweep_options)
    root = Path(store_root).resolve()
    recorded = read_records(root)
    jobs = []
    for seed in seeds:
        for name, flags in grid.items():
            run_name = f"{name}_seed{seed}"
            job = Job(name, int(seed), folder, root / run_name,
                      [*common, *flags, "--seed", str(seed), "--store_root", str(root), "--store_name", run_name])
            job.record = recorded.get(run_name, {})
            started = job.run_dir.is_dir() and any(job.run_dir.iterdir())
            if job.record.get("flags") not in (None, job.flags) and started:
                raise ValueError(f"{job.run_dir} was started by a sweep with other flags ({root / RECORD}); use "
                                 "another --store_root, or delete that folder and its entry.")
            job.state, job.holder = state_of(job.run_dir, fresh)
            jobs.append(job)
    return jobs


def state_of(run_dir: Path, fresh: bool = False) -> tuple[str, tuple | None]:
    """``(state, holder)``: ``running`` (its ``run.lock`` is held by a process that runs; ``holder`` is its
    ``(pid, host, since)``), ``done`` (results.json), ``resume`` (ckpt.pth.tar), ``restart`` (anything else there),
    or ``new``; with ``fresh``, ``replace`` for a finished run and ``restart`` for any other non-empty folder."""
    holder = runtime.RunLock(run_dir).live_holder() if run_dir.is_dir() else None
    if holder is not None:
        return "running", holder
    present = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if fresh and "results.json" in present:
        return "replace", None
    if fresh or not {"results.json", "ckpt.pth.tar"} & present:
        return ("restart" if present else "new"), None
    return ("done" if "results.json" in present else "resume"), None


def read_records(root: Path) -> dict:
    """``ROOT/sweep.json``'s runs (``{run folder name: {'flags', 'invocations'}}``), {} when there is no file;
    a file that cannot be read is one sentence (ValueError), never silently replaced."""
    path = root / RECORD
    if not path.exists():
        return {}
    try:
        runs = json.loads(path.read_text())["runs"]
        if not isinstance(runs, dict):
            raise TypeError
        return runs
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} cannot be read as a sweep record ({type(error).__name__}: {error}); repair or "
                         "move it (it records which flags made each run folder), then run the sweep again.") from None


def write_record(job: Job, invocation: dict | None = None) -> dict:
    """Set ``job``'s entry of ``ROOT/sweep.json`` to its flags, adding ``invocation`` to the invocations on disk
    (those of other flags are dropped: a planned run that never started); the other entries stay as they are on
    disk (a merge under a lock, written atomically: runtime.update_json). Returns the entry."""
    name = job.run_dir.name

    def update(current: dict) -> dict:
        runs = current.setdefault("runs", {})
        entry = runs.get(name) or {}
        calls = list(entry.get("invocations") or []) if entry.get("flags") == job.flags else []
        runs[name] = {"flags": job.flags, "invocations": calls + ([invocation] if invocation else [])}
        return current

    job.record = runtime.update_json(job.run_dir.parent / RECORD, update)["runs"][name]
    return job.record


class SweepLock(runtime.RunLock):
    """``ROOT/sweep.lock``: the store root belongs to one running sweep (the run-folder lock's mechanism)."""

    NAME = "sweep.lock"

    def busy(self, pid: int, host: str, since: str) -> str:
        return (f"--store_root {self.path.parent} is in use by the sweep of process {pid} on {host} (since {since}); "
                "wait for it to end (the same command then continues what is left), or pass another --store_root.")


class _Parsed(Exception):
    pass


class _Refused(Exception):
    pass


def check_with_parser(folder: Path, argv: list[str]) -> str | None:
    """Parse ``argv`` with the benchmark's own parser, in this process, as ``FOLDER/train.py`` would: its ``main``
    runs with ``common.cli.parse`` stopped right after parsing (before the task, torch's model or any data load).
    Returns the parser's one-sentence refusal, or None when the flags parse. ValueError when ``train.py`` has no
    ``main`` that parses through ``common.cli.parse`` (the flags are then checked only when each run starts)."""
    from common import cli
    path = folder / "train.py"
    name = "_sweep_train_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module = sys.modules.get(name)
    if module is None:
        source = path.read_text()
        if "def main(" not in source or "cli.parse(" not in source:
            raise ValueError(f"{path} has no main() that parses through common.cli.parse")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    original = cli.parse

    def parse_only(parser, argv=None, check=None):
        def refuse(message):
            raise _Refused(message)

        def stop(status=0, message=None):
            raise _Refused(message or "--help or --version prints instead of training")

        parser.error, parser.exit = refuse, stop
        raise _Parsed(original(parser, argv, check))

    cli.parse = parse_only
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            module.main(list(argv))
    except _Parsed:
        return None
    except _Refused as refusal:
        return str(refusal).strip()
    finally:
        cli.parse = original
    raise ValueError(f"{path}'s main() returned without parsing through common.cli.parse")


def check_jobs(jobs: list[Job]) -> str | None:
    """Every job that will run, parsed by its benchmark's parser (:func:`check_with_parser`) before any runs:
    ValueError naming the run, its flags and the refusal. Returns a note when the folder's train.py cannot be
    read this way (its flags are then checked by each run)."""
    seen = set()
    for job in jobs:
        if job.state in ("done", "running") or tuple(job.argv()) in seen:
            continue
        seen.add(tuple(job.argv()))
        try:
            refusal = check_with_parser(job.folder, job.argv())
        except ValueError as error:
            return f"note: the flags were not checked before the runs ({error}); each run checks its own."
        if refusal is not None:
            refusal = refusal.rstrip(".")
            raise ValueError(f"{job.folder.name}/train.py refuses the flags of run {job.run_dir.name} ({refusal}): fix "
                             f"--grid {job.name} or the flags after --; nothing has run or been recorded.")
    return None


def run_job(job: Job, python: str = sys.executable, env=None, quiet: bool = True) -> dict:
    """Run one job unless it is done; its record (``flags``, ``invocations``: mode, wall seconds and exit status of
    each) is kept in ``ROOT/sweep.json`` and returned. A failing run raises RuntimeError with its last error lines
    (the same sweep continues it); so does a job running elsewhere, or a ``sweep.json`` that cannot be updated."""
    if job.state == "done":
        return job.record
    if job.state == "running":
        pid, host, since = job.holder
        raise RuntimeError(f"run {job.run_dir.name} is running in process {pid} on {host} (since {since}); wait for "
                           "it to end, then run the same command again.")
    try:
        write_record(job)       # before the run: the folder is this sweep's from its first file on
        start = time.time()
        done = subprocess.run([python, "train.py", *job.argv()], cwd=job.folder, env=env, text=True,
                              stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE if quiet else None)
        wall = round(time.time() - start, 1)
        write_record(job, {"mode": job.state, "wall_s": wall, "returncode": done.returncode})
    except RunError as error:     # sweep.json cannot be read or written: the same RuntimeError as a failed run
        raise RuntimeError(str(error)) from None
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
    # The sweep's own flags, refused after -- (--help there is train.py's: the parser check names it).
    sweep_options = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    root = Path(args.store_root).resolve()
    lock = SweepLock(root)
    try:
        if not args.print_only:
            root.mkdir(parents=True, exist_ok=True)
            note = lock.acquire()           # before the plan: what the folders say is read by the one sweep
            if note:
                print(f"note: {note}", file=sys.stderr)
        elif lock.live_holder() is not None:
            raise RunError(lock.busy(*lock.live_holder()) + " (--print would list runs that sweep is making)")
        jobs = plan(args.folder, parse_grid(args.grid), args.seeds, common, args.store_root, args.fresh,
                    sweep_options)
        unchecked = check_jobs(jobs)
    except ValueError as error:          # the command line: a flag error
        lock.release()
        parser.error(str(error))
    except RunError as error:            # the store root is another sweep's, or its record cannot be updated
        lock.release()
        raise SystemExit(f"error: {error}") from None
    if unchecked:
        print(unchecked, file=sys.stderr)
    try:
        return _run(jobs, args) if not args.print_only else _print(jobs, args)
    finally:
        lock.release()


def _print(jobs: list[Job], args) -> list[Job]:
    """``--print``: the command of every run that is not finished, one per line (runs running elsewhere are said on
    stderr, not printed)."""
    for job in jobs:
        if job.state == "running":
            print(f"note: {job.run_dir.name} is running (process {job.holder[0]} on {job.holder[1]}, since "
                  f"{job.holder[2]}); not printed", file=sys.stderr)
        elif job.state != "done":
            print(job.command(args.python))
    return jobs


def _run(jobs: list[Job], args) -> list[Job]:
    running = []
    for number, job in enumerate(jobs, 1):
        if job.state == "done":
            print(f"[{number}/{len(jobs)}] {job.run_dir.name}: finished before, skipped", flush=True)
            continue
        if job.state == "running":
            pid, host, since = job.holder
            print(f"[{number}/{len(jobs)}] {job.run_dir.name}: running in process {pid} on {host} since {since}, "
                  "left to it", flush=True)
            running.append(job)
            continue
        print(f"[{number}/{len(jobs)}] {job.run_dir.name}: {job.state} ...", flush=True)
        try:
            record = run_job(job, args.python, quiet=not args.verbose)
        except (RuntimeError, RunError) as error:
            raise SystemExit(f"error: {error}") from None
        print(f"[{number}/{len(jobs)}] {job.run_dir.name}: done in {record['invocations'][-1]['wall_s']:.0f} s",
              flush=True)
    if running:
        print(f"\n{len(running)} run(s) still running elsewhere ({', '.join(j.run_dir.name for j in running)}); the "
              "same command reports the sweep once they have finished.", flush=True)
        return jobs
    from common.tools import report
    print()
    report.main([str(job.run_dir) for job in jobs] + ["--plot", str(Path(args.store_root) / "report.png"),
                                                      "--calibration", str(Path(args.store_root) / "calibration.png")])
    return jobs


if __name__ == "__main__":
    main()
