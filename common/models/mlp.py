"""A small MLP regressor for vector features (custom data, tests): the DIR model interface without images."""
from __future__ import annotations

import torch.nn as nn

from common.fds import FDS


class MLPRegressor(nn.Module):
    """features (B, F) → encoding (B, H) → [FDS in training] → ``head`` → prediction (B, 1).

    Same output dictionary as the ResNet regressors (``pred``, ``encoding``), so every DIR method applies.
    """

    def __init__(self, n_features: int, hidden: int = 64, depth: int = 2, fds: FDS | None = None):
        super().__init__()
        layers, width = [], n_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body, self.fds, self.head = nn.Sequential(*layers), fds, nn.Linear(hidden, 1)

    def forward(self, x, targets=None, smooth=True):
        encoding = self.body(x)
        if self.training and smooth and self.fds is not None and targets is not None:
            encoding = self.fds.smooth(encoding, targets)
        return {"encoding": encoding, "pred": self.head(encoding)}
