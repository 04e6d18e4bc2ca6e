"""ResNet regressors of the age benchmarks (trained from scratch), with FDS and an optional SRL projector.

Same layout as the reference's age model: a torchvision-style ResNet trunk, the pooled encoding (2048-d for
ResNet-50, 512-d for ResNet-18/34), and ``linear`` (encoding → 1). Convolutions are initialised from
N(0, 2/n), batch norms to (1, 0). Pooling is adaptive, so any image size works (224 reproduces the reference's
fixed 7×7 pooling exactly).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from common.fds import FDS
from common.models.heads import regression_head, run_head


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


STEMS = ("imagenet", "cifar")

ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetRegressor(nn.Module):
    """ResNet trunk → pooled encoding (B, E) → [FDS in training] → ``linear`` (the head) → prediction (B, 1).

    Args:
        arch: 'resnet18', 'resnet34' or 'resnet50'.
        fds: optional :class:`~common.fds.FDS` over the encoding (applied in training from its start_smooth).
        projection_dim: if set, an SRL projector ``Linear(E, projection_dim)`` whose output is returned too.
        width: channels of the first stage (64 as ResNet; smaller for CPU demos).
        stem: 'imagenet' (7×7 stride-2 conv + max-pool, the reference) or 'cifar' (3×3 stride 1, small images).
        head, num_heads, rule: the head (:func:`common.models.heads.regression_head`): ``'point'`` (a linear
            layer, the references), ``'uvote'`` (``num_heads`` heads voting by ``rule``) or ``'vir'`` (with a
            VIR head, ``fds`` is its :class:`~common.fds.ProbabilisticFDS`).

    ``forward(x, targets=None, smooth=True)`` returns a dict with ``pred`` (B, 1), ``encoding``
    (B, E; FDS-smoothed when smoothing applied, as the reference's in-place write made it; VIR: the latent
    mean), with a projector ``projection`` (B, projection_dim) of the raw encoding, and the head's own outputs
    (``sigma`` (B, 1) and UVOTE's or VIR's raw outputs). With ``detach_head`` set (RnC's encoder stage) the
    head learns on the encoding without training the trunk.
    """

    def __init__(self, arch="resnet50", fds: FDS | None = None, projection_dim: int | None = None, width=64,
                 stem="imagenet", head: str = "point", num_heads: int = 2, rule: str = "minvar"):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"ResNetRegressor: `arch` must be one of {', '.join(ARCHITECTURES)}, got {arch!r}.")
        if stem not in STEMS:
            raise ValueError(f"ResNetRegressor: `stem` must be one of {', '.join(STEMS)}, got {stem!r}.")
        block, layers = ARCHITECTURES[arch]
        self.in_planes = width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            # Small images (≤ 64 px): a 3×3 stride-1 stem keeps the resolution that the 4× downsampling
            # stem would throw away (the CIFAR ResNet convention).
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, width, layers[0], 1)
        self.layer2 = self._stage(block, width * 2, layers[1], 2)
        self.layer3 = self._stage(block, width * 4, layers[2], 2)
        self.layer4 = self._stage(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.encoding_dim = width * 8 * block.expansion
        self.fds = fds
        self.projector = nn.Linear(self.encoding_dim, projection_dim) if projection_dim else None
        self.linear = regression_head(head, self.encoding_dim, num_heads=num_heads, rule=rule)
        self.detach_head = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    @staticmethod
    def encoding_dim_of(arch: str, width: int = 64) -> int:
        """Size of the pooled encoding of ``arch`` (512·width/64 for ResNet-18/34, 2048·width/64 for 50)."""
        block, _ = ARCHITECTURES[arch]
        return width * 8 * block.expansion

    def _stage(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.in_planes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x, targets=None, smooth=True):
        encoding = self.encode(x)
        out = {}
        if self.projector is not None:
            out["projection"] = self.projector(encoding)
        head_out, encoding = run_head(self.linear, encoding, fds=self.fds, targets=targets,
                                      smooth=self.training and smooth, detach=self.detach_head)
        out["encoding"] = encoding
        out.update(head_out)
        return out
