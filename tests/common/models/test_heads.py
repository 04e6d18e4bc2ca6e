"""The regression heads (common/models/heads.py): the point head, UVOTE's voting heads and VIR's NIG head, each
against a loop statement of its definition; on CUDA as on the CPU."""
import math
import numpy as np
import pytest
import torch
import torch.nn as nn

from common.bins import AGE_BINS
from common.losses.vir import VIR_ALPHA0
from common.fds import ProbabilisticFDS
from common.models.heads import UVOTEHead, VIRHead, regression_head, run_head
from common.models.resnet import ResNetRegressor
from common.objective import ObjectiveData, objective_from_flags


# -- heads -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vote", ["raw", "clamped"])
def test_uvote_head_votes_for_the_least_uncertain_head_per_sample_and_pixel(vote):
    torch.manual_seed(0)
    head = UVOTEHead(6, num_heads=3, kernel_size=3, vote=vote)
    with torch.no_grad():
        head.log_sigma.bias.copy_(torch.tensor([-6.0, -5.5, 0.0]))      # heads 0 and 1 below the clamp
    maps = torch.randn(2, 6, 4, 5)
    out = head(maps)
    mus, log_sigmas = out["mus"], out["log_sigmas"]
    assert out["pred"].shape == out["sigma"].shape == (2, 1, 4, 5) and mus.shape == (2, 3, 4, 5)
    for b in range(2):
        for y in range(4):
            for x in range(5):
                scales = log_sigmas[b, :, y, x] if vote == "raw" else log_sigmas[b, :, y, x].clamp(-5, 5)
                best = int(scales.argmin())
                assert out["pred"][b, 0, y, x] == mus[b, best, y, x]
                assert torch.isclose(out["sigma"][b, 0, y, x], math.sqrt(2) * scales[best].exp())
    vector = UVOTEHead(6, num_heads=2, rule="avg")(torch.randn(5, 6))
    assert torch.allclose(vector["pred"][:, 0], vector["mus"].mean(1))
    assert torch.allclose(vector["sigma"][:, 0], math.sqrt(2) * vector["log_sigmas"].mean(1).exp())


def test_uvote_head_starts_as_the_authors_on_request():
    torch.manual_seed(0)
    head = UVOTEHead(4000, num_heads=2)
    built = head.mu.weight.clone()
    assert built.abs().max() <= 1 / math.sqrt(4000)                 # PyTorch's default, as built
    head.init_as_authors()
    for layer in (head.mu, head.log_sigma):
        assert torch.equal(layer.bias, torch.zeros(2))
        assert abs(float(layer.weight.std()) - 0.01) < 5e-4 and abs(float(layer.weight.mean())) < 5e-4


@pytest.mark.parametrize("uncertainty", ["epistemic", "predictive"])
def test_vir_head_in_evaluation_is_the_nig_of_the_latent_mean(uncertainty):
    """``sigma``: the square root of the epistemic variance β/(ν(α − 1)) (the authors'), or of the Student-t
    predictive variance β(1 + ν)/(ν(α − 1)) (the earlier σ)."""
    torch.manual_seed(0)
    head = VIRHead(5, uncertainty=uncertainty).eval()
    features = torch.randn(7, 5)
    out = head(features)
    raw = head.nig(features)
    softplus = lambda x: 10 * torch.log1p(torch.exp(x / 10))  # noqa: E731
    n = softplus(raw[:, 1:2]) + 2
    nu, alpha, beta = n, VIR_ALPHA0 + n / 2, softplus(raw[:, 2:3])
    assert torch.equal(out["pred"], raw[:, 0:1])
    want = beta / (nu * (alpha - 1)) * ((1 + nu) if uncertainty == "predictive" else 1)
    assert torch.allclose(out["sigma"] ** 2, want, rtol=1e-5)
    assert torch.allclose(out["latent_var"], torch.nn.functional.softplus(-5 + 0 * features) + 1e-6)
    assert torch.equal(head(features)["pred"], out["pred"])         # no sampling in evaluation


def test_vir_head_in_training_samples_around_the_calibrated_latent():
    torch.manual_seed(0)
    head = VIRHead(3)
    features = torch.randn(4000, 3)
    torch.manual_seed(1)
    sampled = head(features)["vir"][0]
    torch.manual_seed(1)
    noise = torch.randn_like(features)
    latent = features + head.latent_variance(features).sqrt() * noise
    assert torch.allclose(sampled, head.nig(latent)[:, 0:1], atol=1e-6)


@pytest.mark.parametrize("smoothing", ["authors", "mixture"])
def test_vir_statistics_read_the_calibrated_latent_with_the_authors_smoothing(smoothing):
    """What the statistics pass reads (run_head's features and the head's ``latent_var``): the calibrated
    latent mean and variance (the authors'), or the uncalibrated ones (``mixture``)."""
    torch.manual_seed(0)
    fds = ProbabilisticFDS(3, 8, 0, ks=3, sigma=1, smoothing=smoothing)
    labels = torch.arange(8.0).repeat_interleave(4)[:, None]
    features = torch.randn(32, 3) + labels * 0.2
    head = VIRHead(3)
    fds.update_last_epoch_stats(0)
    fds.update_running_stats(features, labels, 0, latent_var=head.latent_variance(features).detach())
    fds.update_last_epoch_stats(1)
    fds.set_epoch(1)
    out, read = run_head(head, features, fds=fds, targets=labels, smooth=True)
    mean, variance = fds.smooth(features, labels, 1, latent_var=head.latent_variance(features))
    if smoothing == "authors":
        assert torch.equal(read, mean) and torch.equal(out["latent_var"], variance)
        assert not torch.allclose(read, features)
    else:
        assert read is features and torch.equal(out["latent_var"], head.latent_variance(features))
    assert "latent" not in out


def test_point_head_keeps_the_reference_layer_and_run_head_detaches_for_the_probe():
    torch.manual_seed(0)
    point = regression_head("point", 8)
    torch.manual_seed(0)
    reference = nn.Linear(8, 1)
    assert isinstance(point, nn.Linear) and torch.equal(point.weight, reference.weight)     # the same draws
    assert set(point.state_dict()) == set(reference.state_dict())
    assert isinstance(regression_head("point", 8, kernel_size=5), nn.Conv2d)
    head = nn.Linear(4, 1)
    features = torch.randn(3, 4, requires_grad=True)
    out, _ = run_head(head, features, detach=True)
    out["pred"].sum().backward()
    assert features.grad is None and head.weight.grad is not None


def test_age_model_keeps_its_state_dict_keys_with_the_point_head():
    keys = set(ResNetRegressor("resnet18", width=4).state_dict())
    assert {"linear.weight", "linear.bias"} <= keys
    uvote = set(ResNetRegressor("resnet18", width=4, head="uvote", num_heads=3).state_dict())
    assert {"linear.mu.weight", "linear.log_sigma.weight"} <= uvote and keys - uvote == {"linear.weight",
                                                                                         "linear.bias"}




@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("head", ["uvote", "vir"])
def test_heads_and_their_components_on_cuda_equal_cpu(head):
    """The same weights and batch give the same loss and predictions on CUDA as on the CPU (no sampling: the VIR
    head in evaluation mode; UVOTE's table and bins follow the batch's device)."""
    torch.manual_seed(0)
    train = np.random.default_rng(0).integers(0, 60, 500).astype(float)
    model = ResNetRegressor("resnet18", width=4, stem="cifar", head=head, num_heads=2).eval()
    settings = {"uvote": dict(uvote=True, num_branch=2), "vir": dict(vir=True, vir_reg_weight=0.01)}[head]
    data = ObjectiveData(label_bins=AGE_BINS, label_counts=AGE_BINS.histogram(train))
    batch = {"input": torch.randn(8, 3, 16, 16), "target": torch.tensor(train[:8], dtype=torch.float32)[:, None],
             "weight": torch.rand(8, 1) + 0.5}
    results = []
    for device in ("cpu", "cuda"):
        objective = objective_from_flags(data, rnc=True, rnc_weight=0.5, **settings).to(device)
        moved = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            components = objective(model.to(device), moved, 0)
            out = model(moved["input"])
        results.append((components, out["pred"].cpu(), out["sigma"].cpu()))
    (cpu, cpu_pred, cpu_sigma), (gpu, gpu_pred, gpu_sigma) = results
    for name in cpu:
        assert torch.allclose(cpu[name], gpu[name].cpu(), rtol=1e-4, atol=1e-5), name
    assert torch.allclose(cpu_pred, gpu_pred, rtol=1e-4, atol=1e-5)
    assert torch.allclose(cpu_sigma, gpu_sigma, rtol=1e-4, atol=1e-5)
