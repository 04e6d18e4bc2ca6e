"""The head start (common/head_start.py): every head's initial prediction is the training labels' mean and its
spread their standard deviation (as each head defines it); the walker starts each head once; the method starts a
fresh model only, before RRT's --pretrained loading."""
import argparse
import math

import pytest
import torch
import torch.nn as nn

from common import methods
from common.head_start import METHOD, start_heads_at_labels
from common.losses.vir import VIR_ALPHA0, vir_nig_params, vir_predict
from common.method import ModelSpec
from common.models.heads import UVOTEHead, VIRHead, regression_head
from common.models.resnet import ResNetRegressor

MEAN, STD = 47.5, 12.25


@pytest.mark.parametrize("kernel_size", [None, 5])
def test_point_head_predicts_the_label_mean(kernel_size):
    torch.manual_seed(0)
    head = regression_head("point", 6, kernel_size=kernel_size)
    weight = head.weight.clone()
    assert start_heads_at_labels(head, MEAN, STD) == [""]
    zero = torch.zeros(3, 6) if kernel_size is None else torch.zeros(2, 6, 4, 5)
    assert torch.all(head(zero) == MEAN) and torch.equal(head.weight, weight)      # the weights as built


@pytest.mark.parametrize("kernel_size", [None, 3])
def test_uvote_heads_predict_the_label_mean_with_the_label_spread(kernel_size):
    torch.manual_seed(0)
    head = UVOTEHead(6, num_heads=3, kernel_size=kernel_size)
    head.init_as_authors()
    start_heads_at_labels(head, MEAN, STD)
    zero = torch.zeros(4, 6) if kernel_size is None else torch.zeros(2, 6, 3, 3)
    out = head(zero)
    assert torch.allclose(out["mus"], torch.full_like(out["mus"], MEAN))
    assert torch.allclose(out["pred"], torch.full_like(out["pred"], MEAN))
    # The saved σ is the Laplace's standard deviation √2·b, b = std/√2: the labels' std.
    assert torch.allclose(out["sigma"], torch.full_like(out["sigma"], STD), rtol=1e-6)
    assert torch.allclose(out["log_sigmas"], torch.full_like(out["log_sigmas"], math.log(STD / math.sqrt(2))))
    # With the authors' small weights, random features stay close to the start.
    features = torch.rand(64, 6) if kernel_size is None else torch.rand(2, 6, 3, 3)
    assert (head(features)["pred"] - MEAN).abs().max() < 0.2


def test_uvote_log_scale_start_is_clamped_to_the_training_range():
    head = UVOTEHead(3, num_heads=2)
    start_heads_at_labels(head, 0.0, 1e-4)
    assert torch.all(head.log_sigma.bias == -5.0)


@pytest.mark.parametrize("uncertainty", ["epistemic", "predictive"])
def test_vir_head_predicts_the_label_mean_with_the_label_spread(uncertainty):
    torch.manual_seed(0)
    head = VIRHead(5, uncertainty=uncertainty).eval()
    start_heads_at_labels(head, MEAN, STD)
    out = head(torch.zeros(3, 5))
    gamma, nu, alpha, beta = (p.double() for p in vir_nig_params(*out["vir"]))
    mean, aleatoric, epistemic = vir_predict(gamma, nu, alpha, beta)
    assert torch.allclose(out["pred"], torch.full_like(out["pred"], MEAN))
    assert torch.allclose((aleatoric + epistemic).sqrt(), torch.full_like(mean, STD, dtype=torch.float64), rtol=1e-5)
    n = 2 + 10 * math.log(2)                       # the evidence bias 0
    assert torch.allclose(nu, torch.full_like(nu, n), rtol=1e-6) and torch.allclose(alpha, VIR_ALPHA0 + nu / 2)
    want = STD if uncertainty == "predictive" else STD / math.sqrt(1 + n)
    assert torch.allclose(out["sigma"].double(), torch.full_like(out["sigma"], want, dtype=torch.float64), rtol=1e-5)


def test_vir_start_of_a_wide_label_range_does_not_overflow():
    head = VIRHead(2).eval()
    start_heads_at_labels(head, 1e3, 300.0)            # β ≈ 5e5: softplus₀.₁⁻¹ must not overflow
    assert torch.isfinite(head.nig.bias).all()
    with torch.no_grad():
        gamma, nu, alpha, beta = vir_nig_params(*head(torch.zeros(1, 2))["vir"])
    assert math.isclose(float((beta * (1 + nu) / (nu * (alpha - 1))).sqrt()), 300.0, rel_tol=1e-5)


def test_walker_starts_each_head_once_and_not_the_layers_inside_it():
    calls = []

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = regression_head("point", 3)          # inside a head that starts itself: left to it

        def start_at_labels(self, mean, std):
            calls.append((mean, std))

    model = nn.ModuleDict({"trunk": nn.Linear(3, 3), "head": Outer(), "uvote": UVOTEHead(3),
                           "point": regression_head("point", 3)})
    bias = model["head"].inner.bias.clone()
    assert start_heads_at_labels(model, 1.0, 2.0) == ["head", "uvote", "point"]
    assert calls == [(1.0, 2.0)] and torch.equal(model["head"].inner.bias, bias)
    assert torch.all(model["uvote"].mu.bias == 1.0) and torch.all(model["point"].bias == 1.0)
    assert start_heads_at_labels(nn.Linear(2, 1), 1.0, 2.0) == []          # a plain layer is no head
    with pytest.raises(ValueError, match="std"):
        start_heads_at_labels(model, 1.0, 0.0)
    with pytest.raises(ValueError, match="mean"):
        start_heads_at_labels(model, math.nan, 1.0)


def _args(**flags):
    return argparse.Namespace(**{**methods.default_flags(), "resume": "", "evaluate": False, **flags})


@pytest.mark.parametrize("head", ["point", "uvote", "vir"])
def test_method_starts_a_fresh_model_only(head):
    spec = ModelSpec(label_mean=MEAN, label_std=STD)
    settings = {"point": {}, "uvote": {"uvote": True}, "vir": {"vir": True}}[head]
    for flags, started in (({"head_start": "labels"}, True), ({"head_start": "none"}, False),
                           ({"head_start": "labels", "resume": "ckpt.pth.tar"}, False),
                           ({"head_start": "labels", "evaluate": True, "resume": "ckpt.pth.tar"}, False)):
        torch.manual_seed(0)
        model = ResNetRegressor("resnet18", width=4, stem="cifar", head=head, num_heads=2).eval()
        args = _args(**settings, **flags)
        lines = []
        methods.prepare_model(args, model, spec, lines.append)
        with torch.no_grad():
            features = torch.zeros(1, model.encoding_dim)
            pred = model.linear(features)
        pred = pred["pred"] if isinstance(pred, dict) else pred
        assert torch.isclose(pred, torch.tensor(MEAN)).all() == started, flags
        assert any("head start" in line for line in lines) == started


def test_method_runs_after_uvote_s_start_and_before_rrt_loads_the_checkpoint():
    names = [method.name for method in methods.METHODS]
    assert names.index("uvote") < names.index("head_start") < names.index("rrt")
    assert METHOD.tag(_args(head_start="labels")) == "start_labels"


@pytest.mark.parametrize("normalized", [False, True])
def test_accon_head_predicts_the_label_mean_and_a_model_with_no_startable_head_is_refused(normalized):
    from common.losses.accon import ACConHead
    torch.manual_seed(0)
    head = ACConHead(6, proj_dims=4, relu=True, normalized=normalized)
    weight = head.fc_ctr.weight.clone()
    assert start_heads_at_labels(head, MEAN, STD) == [""]
    with torch.no_grad():
        out = head(torch.zeros(3, 6) if not normalized else torch.randn(3, 6))
    if not normalized:       # a zero feature projects to fc_ctr's bias; its regressor adds the mean to w·bias
        expected = MEAN + head.regressor.weight @ head.fc_ctr.bias
        torch.testing.assert_close(out["pred"].reshape(-1), expected.expand(3), rtol=1e-6, atol=1e-5)
    assert torch.equal(head.regressor.bias, torch.tensor([MEAN])) and torch.equal(head.fc_ctr.weight, weight)
    with pytest.raises(ValueError, match="no start_at_labels"):
        METHOD.prepare_model(_args(head_start="labels"), nn.Sequential(nn.Linear(2, 1)),
                             ModelSpec(label_mean=MEAN, label_std=STD), print)
