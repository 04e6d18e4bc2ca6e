"""A toy head in one file, as a new head is added: a Gaussian head (a mean and a log-variance per sample or
pixel), its likelihood as the main loss, and its method entry. ``tests/common/test_methods.py`` adds it to the method
list inside the test only and trains it on every benchmark.

The maths: ``0.5 · mean_i (log v_i + (y_i / s − μ_i)² / v_i)`` over the rows (samples, or pixels), with s the
view's label scale; the predictive σ is √v (in the model's units).
"""
import torch
import torch.nn as nn

from common.method import Method, Step, Term, flag, flat_rows


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean, log_var, target: (N, 1) → the mean Gaussian negative log-likelihood without its constant."""
    return 0.5 * (log_var + (target - mean).pow(2) / log_var.exp()).mean()


class GaussianHead(nn.Module):
    """``Linear(in_dim, 2)`` (vectors) or a same-padding ``Conv2d`` (maps): the mean and the log-variance."""

    def __init__(self, in_dim: int, kernel_size: int | None = None):
        super().__init__()
        self.layer = nn.Linear(in_dim, 2) if kernel_size is None else \
            nn.Conv2d(in_dim, 2, kernel_size, padding=kernel_size // 2)

    def forward(self, features: torch.Tensor) -> dict:
        out = self.layer(features)
        mean, log_var = out[:, 0:1], out[:, 1:2].clamp(-10, 10)
        return {"pred": mean, "sigma": (0.5 * log_var).exp(), "toy_head": (mean, log_var)}


class GaussianTerm(Term):
    def forward(self, step: Step) -> dict:
        mean, log_var = (flat_rows(part).float() for part in step.out["toy_head"])
        return {"toy_nll": gaussian_nll(mean, log_var, flat_rows(step.targets).float() / step.view.label_scale)}


class GaussianHeadMethod(Method):
    name = "toy_head"
    model_flags = ("toy_head",)

    def add_args(self, parser) -> None:
        g = parser.add_argument_group("toy head (tests)")
        g.add_argument("--toy_head", action="store_true", help="a Gaussian head trained on its likelihood")

    def enabled(self, args) -> bool:
        return bool(flag(args, "toy_head"))

    def tag(self, args):
        return "toyhead"

    def head(self, args) -> dict:
        return {"head": GaussianHead}

    def main_loss(self, args, data):
        return GaussianTerm()


METHOD = GaussianHeadMethod()
