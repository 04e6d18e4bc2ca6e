"""The AgeDB-DIR model: a ResNet trained from scratch, FDS on the pooled encoding, a ``linear`` head.

The same ResNet serves both age benchmarks (``common/models/resnet.py``); ``--model`` picks resnet18/34/50,
``--width`` and ``--stem cifar`` make it small for CPU demos.
"""
from common.models.resnet import ResNetRegressor

encoding_dim = ResNetRegressor.encoding_dim_of


def build_model(arch="resnet50", *, width=64, stem="imagenet", fds=None, projection_dim=None) -> ResNetRegressor:
    """ResNet → encoding (B, E) → [FDS] → ``linear`` → age (B, 1); with ``projection_dim``, an SRL projector."""
    return ResNetRegressor(arch, fds=fds, projection_dim=projection_dim, width=width, stem=stem)
