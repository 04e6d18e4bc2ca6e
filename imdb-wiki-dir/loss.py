"""The losses wired into IMDB-WIKI-DIR training (see ``common.age.AgeObjective`` for how they combine).

Regression: ``weighted_{mse,l1,focal_mse,focal_l1,huber}_loss`` (``--loss``), or Balanced MSE (``--bmse``);
regularizers: RankSim (``--regularization_weight``), ConR on two extra views (``--conr``), SRL (``--srl``).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.age import AgeObjective  # noqa: E402,F401
from common.losses import (BMCLoss, BNILoss, ConR, GAILoss, RankSim, SRL, weighted_focal_l1_loss,  # noqa: E402,F401
                           weighted_focal_mse_loss, weighted_huber_loss, weighted_l1_loss, weighted_mse_loss)
