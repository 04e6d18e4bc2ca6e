"""The age ResNet regressor: architecture as torchvision's ResNets, FDS only in training, SRL projector."""
import pytest
import torch
import torchvision

from common.fds import FDS
from common.models.resnet import ResNetRegressor


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_trunk_matches_torchvision(arch):
    """Same layers and parameter shapes as torchvision's ResNet, with `linear` (E → 1) in place of `fc`."""
    ours = ResNetRegressor(arch).state_dict()
    theirs = getattr(torchvision.models, arch)(weights=None).state_dict()
    trunk = {k: v.shape for k, v in theirs.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items() if not k.startswith("linear.")} == trunk
    assert ours["linear.weight"].shape == (1, theirs["fc.weight"].shape[1])


def test_initialisation_is_the_references():
    torch.manual_seed(0)
    model = ResNetRegressor("resnet18", width=16)
    conv = model.layer2[0].conv1
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    assert torch.equal(model.bn1.weight, torch.ones(16)) and torch.equal(model.bn1.bias, torch.zeros(16))


@pytest.mark.parametrize("stem, size", [("imagenet", 224), ("imagenet", 16), ("cifar", 32)])
def test_output_shapes(stem, size):
    model = ResNetRegressor("resnet18", width=8, projection_dim=5, stem=stem).eval()
    out = model(torch.randn(3, 3, size, size))
    assert out["pred"].shape == (3, 1) and out["encoding"].shape == (3, 64) and out["projection"].shape == (3, 5)
    assert model.encoding_dim == ResNetRegressor.encoding_dim_of("resnet18", 8) == 64
    assert ResNetRegressor.encoding_dim_of("resnet50") == 2048


def test_fds_smooths_in_training_only():
    torch.manual_seed(0)
    fds = FDS(64, bucket_num=10, bucket_start=0, ks=3, sigma=1, start_smooth=1)
    model = ResNetRegressor("resnet18", width=8, fds=fds, stem="cifar")
    fds.running_mean_last_epoch.fill_(0.5)
    fds.smoothed_mean_last_epoch.fill_(2.0)
    fds.refresh_calibration()
    images, targets = torch.randn(4, 3, 16, 16), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    model.train()
    torch.manual_seed(1)
    fds.set_epoch(1)
    smoothed = model(images, targets)
    raw = model.encode(images)
    # v1 = v2 = 1: calibration is the mean shift x − 0.5 + 2, and the prediction reads the smoothed encoding.
    torch.testing.assert_close(smoothed["encoding"], raw + 1.5)
    torch.testing.assert_close(smoothed["pred"], model.linear(raw + 1.5))
    fds.set_epoch(0)
    assert torch.equal(model(images, targets)["encoding"], model.encode(images))      # before start_smooth
    fds.set_epoch(1)
    assert torch.equal(model(images, targets, smooth=False)["encoding"], model.encode(images))
    model.eval()
    assert torch.equal(model(images, targets)["encoding"], model.encode(images))


def test_bad_arch_or_stem():
    with pytest.raises(ValueError, match="arch"):
        ResNetRegressor("resnet101")
    with pytest.raises(ValueError, match="stem"):
        ResNetRegressor("resnet18", stem="tiny")
