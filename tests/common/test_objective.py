"""The one objective (common/objective.py): each main loss and term equals the loss function it must reproduce,
read through the view and the views of a batch."""
import numpy as np
import torch
import torch.nn as nn

from common.bins import AGE_BINS
from common.losses import rnc_loss, uvote_head_weights, uvote_loss, vir_loss
from common.losses.vir import VIR_ALPHA0
from common.method import LabelView
from common.objective import ObjectiveData, objective_from_flags


# -- the objective's components -------------------------------------------------------------------------------------
class _Fixed(nn.Module):
    """A model whose outputs are given tensors (its forward ignores the input)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, targets=None, smooth=True):
        return self.out


def test_uvote_component_is_uvote_loss_with_the_head_weights_of_each_label():
    torch.manual_seed(0)
    train = np.random.default_rng(0).integers(0, 60, 500).astype(float)
    targets = torch.tensor(train[:16], dtype=torch.float32)[:, None]
    mus, log_sigmas = torch.randn(16, 3) * 10 + 30, torch.randn(16, 3)
    data = ObjectiveData(label_bins=AGE_BINS, label_counts=AGE_BINS.histogram(train))
    objective = objective_from_flags(data, uvote=True, num_branch=3, dynamic_loss=True, epoch=10)
    batch = {"input": torch.zeros(16, 1), "target": targets, "weight": torch.ones(16, 1)}
    components = objective(_Fixed({"pred": mus[:, :1], "encoding": torch.randn(16, 4), "mus": mus,
                                   "log_sigmas": log_sigmas}), batch, 4)
    weights = torch.from_numpy(uvote_head_weights(train, train[:16], 3))
    expected = uvote_loss(mus, log_sigmas, targets, weights, epoch=4, epochs=10, dynamic=True)
    assert set(components) == {"uvote"} and torch.allclose(components["uvote"], expected)


def test_vir_component_scales_the_pseudo_count_by_the_weight():
    torch.manual_seed(0)
    mean, evidence, omega = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    targets, weights = torch.randn(8, 1), torch.rand(8, 1) + 0.5
    view = LabelView()
    view.label_scale = 2.0
    objective = objective_from_flags(ObjectiveData(view=view), vir=True, vir_reg_weight=0.01)
    components = objective(_Fixed({"pred": mean, "encoding": torch.randn(8, 4), "vir": (mean, evidence, omega)}),
                           {"input": torch.zeros(8, 1), "target": targets, "weight": weights}, 0)
    softplus = lambda x: 10 * torch.log1p(torch.exp(x / 10))  # noqa: E731
    n = (softplus(evidence) + 2) * weights
    expected = vir_loss(mean, n, VIR_ALPHA0 + n / 2, softplus(omega), targets / 2, reg_weight=0.01)
    assert set(components) == {"vir"} and torch.allclose(components["vir"], expected)


def test_rnc_component_reads_the_views_of_every_sample():
    torch.manual_seed(0)
    targets = torch.tensor([[20.0], [35.0], [50.0]])
    main_encoding, view_encoding = torch.randn(3, 4), torch.randn(6, 4)

    class TwoPasses(nn.Module):
        def forward(self, x, targets=None, smooth=True):
            encoding = view_encoding if x.shape[0] == 6 else main_encoding
            return {"pred": encoding[:, :1], "encoding": encoding}

    views = (torch.zeros(3, 1), torch.zeros(3, 1))
    objective = objective_from_flags(loss="l1", rnc=True, rnc_weight=0.5)
    components = objective(TwoPasses(), {"input": torch.zeros(3, 1), "views": views, "target": targets,
                                         "weight": torch.ones(3, 1)}, 0)
    assert torch.allclose(components["rnc"], 0.5 * rnc_loss(view_encoding, targets.repeat(2, 1)))
    alone = objective(TwoPasses(), {"input": torch.zeros(3, 1), "target": targets, "weight": torch.ones(3, 1)}, 0)
    assert torch.allclose(alone["rnc"], 0.5 * rnc_loss(main_encoding, targets))
