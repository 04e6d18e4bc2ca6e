"""Every command's ``--help``: a usage line naming the command, and each flag's default stated once (the help's own
words or the appended ``(default: …)``, never both), except for flags that are required or aliases."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from folders import ROOT

TRAIN_FOLDERS = ("agedb-dir", "imdb-wiki-dir", "nyud2-dir", "sts-b-dir")
TOOLS = {   # the module, the --help arguments, the prog its usage names
    "synthetic": ("common.synthetic", [], "python -m common.synthetic"),
    "datasplit": ("common.tools.datasplit", [], "python -m common.tools.datasplit"),
    "datasplit agedb": ("common.tools.datasplit", ["agedb"], "python -m common.tools.datasplit agedb"),
    "datasplit imdb_wiki": ("common.tools.datasplit", ["imdb_wiki"], "python -m common.tools.datasplit imdb_wiki"),
    "pack": ("common.tools.pack", [], "python -m common.tools.pack"),
    "report": ("common.tools.report", [], "python -m common.tools.report"),
    "sweep": ("common.tools.sweep", [], "python -m common.tools.sweep"),
    "demo": ("common.tools.demo", [], "python -m common.tools.demo"),
    "encodings": ("common.tools.encodings", [], "python -m common.tools.encodings"),
}


def entries(help_text: str) -> list[str]:
    """The help's flag entries: a line indented by two spaces that starts with ``-``, with its continuation
    lines (indented further), joined."""
    out = []
    for line in help_text.splitlines():
        if re.match(r"^  \S", line):
            out.append(line.strip())
        elif out and re.match(r"^   ", line):
            out[-1] += " " + line.strip()
        else:
            out.append("")                       # a group header or a blank line ends an entry
    return [e for e in out if e.startswith("-")]


def required_flags(help_text: str) -> set[str]:
    """Flags the usage lists without brackets: required ones."""
    usage = help_text.split("\n\n")[0]
    return set(re.findall(r"(?<![\[\w-])(--\w+)", usage))


def check_defaults(help_text: str) -> None:
    required = required_flags(help_text)
    for entry in entries(help_text):
        flag = entry.split()[0].rstrip(",")
        said = len(re.findall(r"\bdefault\b", entry, re.IGNORECASE))
        assert said <= 1, f"the default is stated {said} times: {entry}"
        if flag in ("-h",) or "alias of" in entry or flag in required:
            continue
        assert said == 1, f"no default stated: {entry}"


def run_help(argv, cwd=ROOT) -> str:
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    return done.stdout


def test_the_entry_parser_sees_a_double_default():
    doubled = ("usage: x [-h] --out OUT [--patience P]\n\noptions:\n  -h, --help  show\n  --out OUT  where\n"
               "  --patience P  stop after P validations (default:\n                never) (default: None)\n")
    assert entries(doubled)[-1] == "--patience P  stop after P validations (default: never) (default: None)"
    assert required_flags(doubled) == {"--out"}
    with pytest.raises(AssertionError, match="stated 2 times"):
        check_defaults(doubled)
    with pytest.raises(AssertionError, match="no default stated: --out"):
        check_defaults(doubled.replace("--out OUT [", "[--out OUT] ["))


@pytest.mark.parametrize("folder", TRAIN_FOLDERS)
def test_train_py_help_states_each_default_once(folder):
    text = run_help(["train.py"], cwd=ROOT / folder)
    assert text.startswith("usage: train.py ")
    check_defaults(text)
    flags = {e.split()[0].rstrip(","): e for e in entries(text)}
    assert len(flags) > 60
    assert re.search(r"\(default: \d+\)$", flags["--seed"])
    if "--patience" in flags:
        assert flags["--patience"].count("default") == 1
    if "--stats_from_training" in flags:
        assert "not the references' protocol" in flags["--stats_from_training"]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_each_tool_prints_a_usage_and_states_each_default_once(tool):
    module, extra, prog = TOOLS[tool]
    text = run_help(["-m", module, *extra])
    assert text.startswith(f"usage: {prog} ")
    check_defaults(text)


def test_tool_defaults_that_were_hidden_are_shown():
    pack = {e.split()[0]: e for e in entries(run_help(["-m", "common.tools.pack"]))}
    assert "(default: 224" in pack["--img_size"] and "upscaled" in pack["--img_size"]
    report = {e.split()[0]: e for e in entries(run_help(["-m", "common.tools.report"]))}
    assert report["--plot"].endswith("(default: report.png)")
    synthetic = run_help(["-m", "common.synthetic"])
    assert "four DIR benchmarks" in synthetic and "{agedb,imdb_wiki,nyud2,stsb}" in synthetic
