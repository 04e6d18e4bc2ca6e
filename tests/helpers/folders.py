"""Run a benchmark folder's ``train.py`` in-process, as ``cd FOLDER && python train.py ARGS`` would.

``python train.py`` puts the script's folder first on ``sys.path``, so ``import dataset`` finds the folder's own
``dataset.py``; the folders share module names (``dataset``, ``resnet``, ``loss``), so each call imports them
afresh and restores ``sys.path`` and ``sys.modules`` afterwards.
"""
import importlib
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER_MODULES = ("train", "task", "dataset", "resnet", "models", "loss", "text")


@contextmanager
def folder_on_path(folder: str):
    saved_path = list(sys.path)
    saved = {name: sys.modules.pop(name) for name in FOLDER_MODULES if name in sys.modules}
    sys.path.insert(0, str(ROOT / folder))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in FOLDER_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def folder_main(folder: str):
    """``main(argv)`` of ``FOLDER/train.py``."""
    def main(argv):
        with folder_on_path(folder):
            return importlib.import_module("train").main(argv)
    return main


def folder_module(folder: str, name: str):
    """A module of a benchmark folder (e.g. its ``dataset``), imported as ``train.py`` imports it."""
    with folder_on_path(folder):
        return importlib.import_module(name)
