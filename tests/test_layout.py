"""The repo's shape (docs: README "Layout"): one folder per benchmark holding its task, a `common/` that imports no
benchmark folder and whose modules import each other without a circle, and a training loop short enough to read."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = {"agedb-dir": "resnet.py", "imdb-wiki-dir": "resnet.py", "nyud2-dir": "resnet.py", "sts-b-dir": "models.py"}
FOLDER_MODULES = {"train", "task", "dataset", "resnet", "models", "loss", "text"}


def imports_of(path: Path) -> set[str]:
    """Every module an imported name comes from, at any depth of the file (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


COMMON = {module_name(path): path for path in (ROOT / "common").rglob("*.py")}


def common_graph() -> dict[str, set[str]]:
    """common module → the common modules it imports (``from common import x`` names module ``common.x``)."""
    return {name: {other for other in imports_of(path) if other in COMMON and other != name}
            for name, path in COMMON.items()}


@pytest.mark.parametrize("folder", sorted(BENCHMARKS))
def test_every_benchmark_folder_holds_its_whole_benchmark(folder):
    files = {path.name for path in (ROOT / folder).glob("*.py")}
    assert {"task.py", "train.py", "dataset.py", "loss.py", BENCHMARKS[folder]} <= files
    # Each of them holds code: a function or a class, not only a re-export.
    for name in ("task.py", "dataset.py", "loss.py", BENCHMARKS[folder]):
        tree = ast.parse((ROOT / folder / name).read_text())
        assert any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in tree.body), f"{folder}/{name}"


def test_common_imports_no_benchmark_folder_module():
    for name, path in COMMON.items():
        top_level = {module.split(".")[0] for module in imports_of(path)}
        assert not top_level & FOLDER_MODULES, f"{name} imports {top_level & FOLDER_MODULES}"


def test_common_modules_import_each_other_without_a_circle():
    graph, state, path = common_graph(), {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(other):] + [other]))
            if other not in state:
                visit(other)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # The check itself finds a circle when there is one.
    graph["common.errors"] = {"common.trainer"}
    state.clear()
    with pytest.raises(AssertionError, match="import circle"):
        for node in sorted(graph):
            if node not in state:
                visit(node)


def test_fit_reads_in_one_screen():
    tree = ast.parse((ROOT / "common" / "trainer.py").read_text())
    trainer = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer")
    fit = next(node for node in trainer.body if isinstance(node, ast.FunctionDef) and node.name == "fit")
    assert fit.end_lineno - fit.lineno + 1 <= 60


# Modules with nothing of their own to test: package markers, the entry point, the two exception classes.
UNTESTED = {"common/__init__.py", "common/losses/__init__.py", "common/models/__init__.py", "common/tools/__init__.py",
            "common/synthetic/__main__.py", "common/errors.py"}


def test_the_tests_mirror_the_code():
    """The test of ``common/a/b.py`` is ``tests/common/a/test_b*.py`` or ``test_a_b*.py`` (a package's own ``__init__`` as
    ``test_<package>*.py``); every benchmark folder has its tests in ``tests/<folder>/``,
    and the helpers the tests share are in ``tests/helpers/``, not among the tests."""
    tests = ROOT / "tests"
    missing = []
    for path in sorted((ROOT / "common").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if str(relative) in UNTESTED:
            continue
        folder = tests / relative.parent
        stem = relative.parent.name if path.name == "__init__.py" else path.stem
        # Test modules share one namespace, so a name another folder uses takes its package's prefix.
        if not list(folder.glob(f"test_{stem}*.py")) + list(folder.glob(f"test_{relative.parent.name}_{stem}*.py")):
            missing.append(str(relative))
    assert not missing, f"modules without a test of their name: {missing}"
    for folder in BENCHMARKS:
        assert list((tests / folder).glob("test_*.py")) or folder == "imdb-wiki-dir", folder
    assert not [p.name for p in tests.glob("*.py") if not p.name.startswith(("test_", "conftest"))]
