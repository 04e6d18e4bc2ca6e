"""Imbalanced regression on your own CSV: numeric feature columns, one float label (docs/custom-data.md).

    python examples/custom_regression.py data.csv --label y --bins 0 0.5 20 --reweight sqrt_inv --lds --fds --conr
"""
import numpy as np
import torch

from common import cli, methods
from common.bins import LabelBins
from common.errors import RunError
from common.launch import run
from common.fds import FDS
from common.lds import prepare_weights
from common.metrics import SHOT_SELECTABLE, selection_from_args, shot_metrics
from common.models.mlp import MLPRegressor
from common.objective import objective_from_args
from common.textfiles import read_regression_csv
from common.trainer import Task


class CSVTask(Task):
    """The trainer asks a task for data, model, objective and metrics; everything else is shared."""
    run_name = staticmethod(lambda args: "custom")           # the run folder under --store_root
    eval_defaults = {"many_shot_thr": 100, "low_shot_thr": 20}

    def __init__(self, a):             # a bad CSV (a text cell, no label column, an empty split, …): one sentence
        self.x, self.y, self.split, _ = read_regression_csv(a.csv, a.label, seed=a.seed)   # split: 80/10/10 if none
        self.a, self.lr, self.bins = a, a.lr, LabelBins(a.bins[0], a.bins[1], int(a.bins[2]))
        self.bins.check_range(self.y, a.csv, RunError)         # a label outside the bins: one clear sentence
        self.train_labels = self.y[self.split == "train"]

    def datasets(self):                   # per sample: input (F,), target (1,), weight (1,) from re-weighting/LDS
        a, ones = self.a, np.ones(len(self.y))
        w = prepare_weights(self.train_labels, a.reweight, a.lds, a.lds_kernel, a.lds_ks, a.lds_sigma, bins=self.bins)
        part = lambda name, w: [{"input": torch.from_numpy(x), "target": torch.tensor([y]), "weight": torch.tensor([v])}
                                for x, y, v in zip(self.x[self.split == name], self.y[self.split == name], w)]
        return {"train": part("train", ones if w is None else w), "val": part("val", ones), "test": part("test", ones)}

    def build_model(self):
        fds = FDS(self.a.hidden, self.bins.num_bins, 0, bins=self.bins, edge_rule="clamp", ks=self.a.fds_ks,
                  sigma=self.a.fds_sigma) if self.a.fds else None
        return MLPRegressor(self.x.shape[1], self.a.hidden, fds=fds)

    def build_objective(self):            # --loss plus every method flag the parser has (common.objective)
        return objective_from_args(self.a)

    def metrics(self, preds, labels):     # All / Many / Medium / Few by the training count of each label's bin
        return shot_metrics(preds, labels, self.train_labels, self.a.many_shot_thr, self.a.low_shot_thr, self.bins,
                            balanced=True)

    def selection_score(self, preds, labels, metrics):    # val L1, or the metric --select_on names
        return selection_from_args(self.a, "l1", SHOT_SELECTABLE).score(metrics)


def main(argv=None):
    p = cli.Parser(__doc__.splitlines()[0])
    p.add_argument("csv", help="numeric feature columns, the label column and optionally a train/val/test `split`")
    p.add_argument("--label", default="label")
    p.add_argument("--bins", type=float, nargs=3, default=(0, 1, 100), metavar=("START", "WIDTH", "NUM"))
    p.add_argument("--hidden", type=int, default=64)
    cli.add_shot_args(p, many=100, few=20)       # --evaluate keeps the run's own thresholds unless given
    cli.add_run_args(p, workers=0)
    cli.add_optim_args(p, epoch=20, batch_size=64, schedule=None)   # Adam at --lr, no schedule (Task default)
    methods.add_arguments(p, methods=("reweight", "fds", "ranksim", "conr"))
    return run(cli.parse(p, argv, check=check_flags), CSVTask)


def check_flags(p, a):                    # flags that cannot train: one sentence before anything loads
    start, width, num = a.bins
    if not (np.isfinite(a.bins).all() and width > 0 and num >= 1 and num == int(num)):
        p.error(f"--bins START WIDTH NUM needs a finite START, WIDTH > 0 and a whole NUM ≥ 1, got {start:g} {width:g} "
                f"{num:g}.")
    if a.hidden < 1:
        p.error(f"--hidden (the width of the hidden layers) must be ≥ 1, got {a.hidden}.")


if __name__ == "__main__":
    main()
