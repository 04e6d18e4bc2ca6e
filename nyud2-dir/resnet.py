"""The NYUD2-DIR model: the encoder–decoder of Hu et al. (WACV 2019) with FDS on its per-pixel features.

``E`` (a torchvision ResNet without pooling and head: four stage outputs) → ``D`` (a 1×1 conv and four
up-projections back to twice the first stage's resolution) and ``MFF`` (every stage up-projected to 16 channels
at that resolution, fused) → ``R`` (two 5×5 conv-BN-ReLU on their 128 concatenated channels, FDS, a 5×5 conv
to depth). A 228×304 image gives a 114×152 depth map. The module names are the references' (``E``, ``D``,
``MFF``, ``R``; FDS inside ``R``), so their released checkpoints load unchanged (docs/datasets.md §2.2).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from common.errors import RunError
from common.fds import FDS
from common import checkpointing
from common.models.heads import regression_head, run_head

ENCODERS = ("resnet18", "resnet34", "resnet50")


class UpProjection(nn.Module):
    """Bilinear upsampling to ``size``, then relu(5×5 conv-BN-ReLU → 3×3 conv-BN  +  5×5 conv-BN)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv1_2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1_2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x, size):
        # align_corners=False: what the references' F.upsample(mode='bilinear') does in PyTorch ≥ 0.4.
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        branch = self.bn1_2(self.conv1_2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(branch + self.bn2(self.conv2(x)))


class Encoder(nn.Module):
    """A torchvision ResNet's stem and four stages; returns the four stage outputs."""

    def __init__(self, arch: str = "resnet50"):
        super().__init__()
        if arch not in ENCODERS:
            raise ValueError(f"Encoder: `arch` must be one of {', '.join(ENCODERS)}, got {arch!r}.")
        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = [_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        block1 = self.layer1(x)
        block2 = self.layer2(block1)
        block3 = self.layer3(block2)
        return block1, block2, block3, self.layer4(block3)


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class Decoder(nn.Module):
    """1×1 conv-BN-ReLU halving the last stage's channels, then four up-projections, each halving again."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels // 2)
        self.up1 = UpProjection(channels // 2, channels // 4)
        self.up2 = UpProjection(channels // 4, channels // 8)
        self.up3 = UpProjection(channels // 8, channels // 16)
        self.up4 = UpProjection(channels // 16, channels // 32)

    def forward(self, block1, block2, block3, block4):
        x = F.relu(self.bn(self.conv(block4)))
        x = self.up1(x, block3.shape[2:])
        x = self.up2(x, block2.shape[2:])
        x = self.up3(x, block1.shape[2:])
        return self.up4(x, (block1.shape[2] * 2, block1.shape[3] * 2))


class MFF(nn.Module):
    """Multi-scale feature fusion: every stage up-projected to 16 channels at ``size``, concatenated, 5×5 conv."""

    def __init__(self, stage_channels, channels: int = 64):
        super().__init__()
        self.up1, self.up2, self.up3, self.up4 = (UpProjection(c, 16) for c in stage_channels)
        self.conv = nn.Conv2d(channels, channels, 5, padding=2, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, block1, block2, block3, block4, size):
        fused = torch.cat([self.up1(block1, size), self.up2(block2, size), self.up3(block3, size),
                           self.up4(block4, size)], 1)
        return F.relu(self.bn(self.conv(fused)))


class Refinement(nn.Module):
    """``R``: two 5×5 conv-BN-ReLU on the concatenated decoder and MFF maps, [FDS], a 5×5 conv to depth.

    FDS (optional) calibrates the last per-pixel features with the depth of each pixel, in training only. The last
    convolution ``conv2`` is the head (:func:`common.models.heads.regression_head` with 5×5 kernels): one depth
    map (the references), UVOTE's M location and log-scale maps, or VIR's NIG maps, all per pixel.
    """

    def __init__(self, channels: int, fds: FDS | None = None, head: str = "point", num_heads: int = 2,
                 rule: str = "minvar"):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, bias=False)
        self.bn0 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = regression_head(head, channels, num_heads=num_heads, rule=rule, kernel_size=5)
        self.fds = fds

    def forward(self, x, depth=None, smooth=True, detach=False):
        """``(head outputs, features)``: the head's dict (``pred`` (B, 1, h, w), …) and the per-pixel features
        before FDS (B, C, h, w)."""
        features = F.relu(self.bn1(self.conv1(F.relu(self.bn0(self.conv0(x))))))
        head_out, _ = run_head(self.conv2, features, fds=self.fds, targets=depth,
                               smooth=self.training and smooth, detach=detach)
        if "latent_var" in head_out:
            # The statistics read the features before FDS here (the references' depth FDS): VIR's latent
            # variance likewise, whatever its smoothing.
            head_out["latent_var"] = self.conv2.latent_variance(features)
        return head_out, features


class DepthModel(nn.Module):
    """Image (B, 3, H, W) → depth (B, 1, H/2, W/2) in metres (H and W divisible by 4).

    ``forward(x, depth=None, smooth=True)`` returns ``pred`` (B, 1, H/2, W/2), ``encoding`` — the
    per-pixel features of ``R`` before FDS (B, C, H/2, W/2), what ConR, RankSim, RnC and the FDS statistics use, as
    in the references — with a projector ``projection`` (B, projection_dim) of the spatially averaged features
    (SRL), and with a UVOTE or VIR head ``sigma`` (B, 1, H/2, W/2) and its raw per-pixel outputs.
    """

    def __init__(self, encoder: str = "resnet50", fds: FDS | None = None, projection_dim: int | None = None,
                 head: str = "point", num_heads: int = 2, rule: str = "minvar"):
        super().__init__()
        self.E = Encoder(encoder)
        channels = self.E.channels
        self.D = Decoder(channels[-1])
        self.MFF = MFF(channels)
        self.feature_dim = channels[-1] // 32 + 64
        self.R = Refinement(self.feature_dim, fds, head, num_heads, rule)
        self.detach_head = False        # RnC's encoder stage: R.conv2 learns as a probe
        self.projector = nn.Linear(self.feature_dim, projection_dim) if projection_dim else None

    @property
    def fds(self):
        return self.R.fds

    def forward(self, x, depth=None, smooth=True):
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"DepthModel: image height and width must be divisible by 4, got {tuple(x.shape[2:])}.")
        blocks = self.E(x)
        decoded = self.D(*blocks)
        fused = self.MFF(*blocks, decoded.shape[2:])
        head_out, features = self.R(torch.cat([decoded, fused], 1), depth, smooth, self.detach_head)
        out = {**head_out, "encoding": features}
        if self.projector is not None:
            out["projection"] = self.projector(features.mean(dim=(2, 3)))
        return out


def load_encoder_weights(model: DepthModel, source: str, arch: str, log=print) -> None:
    """``imagenet``: torchvision's ImageNet weights (V1, as the references' ``resnet50(pretrained=True)``);
    ``none``: random initialisation; otherwise a file holding a torchvision ResNet state dict."""
    if source == "none":
        return
    if source == "imagenet":
        weights = getattr(torchvision.models, f"ResNet{arch[6:]}_Weights").IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as error:  # noqa: BLE001 - no network, no cache: the same advice either way
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            raise RunError(f"the ImageNet weights of {arch} are not cached and could not be downloaded ({error}); "
                           f"put {Path(weights.url).name} in {cache.parent} or pass --pretrained_encoder none "
                           "(or a path).") from error
    else:
        state = checkpointing.load_state_file(source, "--pretrained_encoder",
                                              "a ResNet state dict (or pass imagenet or none)")
        state = state.get("state_dict", state)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.E.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunError(f"--pretrained_encoder {source} does not fit a {arch} encoder (missing {missing[:2]}, "
                       f"unexpected {unexpected[:2]}); pass weights of --encoder {arch}.")
    log(f"encoder initialised from {source} ({len(state)} tensors)")


def build_model(encoder: str = "resnet50", *, fds: FDS | None = None, projection_dim: int | None = None,
                pretrained_encoder: str = "none", log=print, head: str = "point", num_heads: int = 2,
                rule: str = "minvar") -> DepthModel:
    """The depth model; ``head``, ``num_heads``, ``rule``: R's last layer (``common.models.heads.head_options``)."""
    model = DepthModel(encoder, fds=fds, projection_dim=projection_dim, head=head, num_heads=num_heads, rule=rule)
    load_encoder_weights(model, pretrained_encoder, encoder, log)
    return model


def feature_dim(encoder: str) -> int:
    """Channels of R's per-pixel features: 64 + (last stage channels) / 32 (128 for ResNet-50)."""
    return {"resnet18": 512, "resnet34": 512, "resnet50": 2048}[encoder] // 32 + 64
