"""Generic architectures: a small stamp CNN and a multi-layer perceptron.

They serve any family whose inputs are image stamps ``(N, C, S, S)`` or
feature rows ``(N, F)``, and are what the engine benchmark and tests use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import register_architecture

__all__ = ["MLP", "StampCNN"]


@register_architecture("stamp_cnn")
class StampCNN(nn.Module):
    """Convolutional classifier/regressor for square multi-channel stamps.

    Each stage is conv3x3 - batch norm - ReLU - conv3x3 - batch norm - ReLU
    followed by 2x2 max pooling (except the last); a global average pool
    and a linear layer give ``n_outputs`` values per stamp.

    Parameters
    ----------
    in_channels : `int`
        Number of stamp channels.
    stamp_size : `int`
        Stamp side in pixels (recorded; the global pool accepts any size).
    n_outputs : `int`
        Number of output values per stamp.
    widths : `~collections.abc.Sequence` [`int`]
        Channels of each stage.
    """

    def __init__(
        self, in_channels: int, stamp_size: int, n_outputs: int, widths: Sequence[int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.stamp_size = int(stamp_size)
        layers: list[nn.Module] = []
        previous = self.in_channels
        widths = [int(w) for w in widths]
        for k, width in enumerate(widths):
            layers += [
                nn.Conv2d(previous, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if k < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(previous, int(n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"StampCNN expects stamps of shape (N, {self.in_channels}, S, S), got {tuple(x.shape)}."
            )
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@register_architecture("mlp")
class MLP(nn.Module):
    """Fully connected network on feature rows ``(N, n_features)``.

    Parameters
    ----------
    n_features : `int`
        Number of input features per row.
    n_outputs : `int`
        Number of output values per row.
    hidden : `~collections.abc.Sequence` [`int`]
        Width of each hidden layer (each followed by ReLU).
    dropout : `float`
        Dropout after each hidden layer (none when 0).
    """

    def __init__(
        self, n_features: int, n_outputs: int, hidden: Sequence[int] = (64, 64), dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.n_features = int(n_features)
        layers: list[nn.Module] = []
        previous = self.n_features
        for width in hidden:
            layers += [nn.Linear(previous, int(width)), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            previous = int(width)
        layers.append(nn.Linear(previous, int(n_outputs)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"MLP expects rows of shape (N, {self.n_features}), got {tuple(x.shape)}.")
        return self.net(x)
