"""The age regressor of IMDB-WIKI-DIR: a ResNet trained from scratch, FDS on the pooled encoding, ``linear`` head.

Shared with the other age benchmark (``common/models/resnet.py``); ``--model`` picks resnet18/34/50.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.age import build_model  # noqa: E402,F401
from common.models.resnet import ARCHITECTURES, ResNetRegressor  # noqa: E402,F401
