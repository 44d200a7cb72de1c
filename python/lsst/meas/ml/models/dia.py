"""A compact CNN that classifies difference-image stamps.

Input: ``(N, C, S, S)`` stamps (by default the four channels science,
template, difference and variance-normalised difference, as
`lsst.meas.ml.dia.features.make_channels` prepares them).  Output: ``(N, K)``
class logits; the reliability (real/bogus) score is one minus the
probability of the ``artifact`` class, so one head serves both and
real/bogus-only labels train it through the marginal probability.

Rotation invariance comes in one of two ways, chosen by ``symmetric``:

* ``symmetric=True``: every convolution kernel is the average of its eight
  rotations and flips (a D4-symmetric kernel), pooling is by 2 on even
  sizes, and the head pools globally, so the network output is *exactly*
  invariant to the eight rotations/flips of the stamp by construction, at
  the cost of a single forward pass (but with less expressive kernels).
* ``symmetric=False``: ordinary kernels, trained with random rotations and
  flips; exact invariance at inference is obtained by averaging over the
  eight transforms (`lsst.meas.ml.engine.dihedral_average`), which costs
  eight forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import register_architecture

__all__ = ["DiaCnn", "SymmetricConv2d"]


def _d4_average(weight: torch.Tensor) -> torch.Tensor:
    """Average a ``(..., k, k)`` kernel over the eight rotations and flips.

    Parameters
    ----------
    weight : `torch.Tensor`
        Kernels, with the two spatial axes last.

    Returns
    -------
    averaged : `torch.Tensor`
        The D4-symmetric average, of the shape of ``weight``.
    """
    rots = [torch.rot90(weight, r, dims=(-2, -1)) for r in range(4)]
    flips = [torch.flip(w, dims=(-1,)) for w in rots]
    return torch.stack(rots + flips).mean(dim=0)


class SymmetricConv2d(nn.Conv2d):
    """A 2-d convolution whose kernels are D4-symmetric (equivariant layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _d4_average(self.weight), self.bias, self.stride, self.padding)


@register_architecture("dia_cnn")
class DiaCnn(nn.Module):
    """Stamp classifier.

    Parameters
    ----------
    in_channels : `int`
        Number of stamp channels.
    stamp_size : `int`
        Stamp side in pixels; must be divisible by ``2 ** len(widths)`` when
        ``symmetric`` (so pooling stays symmetric about the stamp centre).
    widths : `~collections.abc.Sequence` [`int`]
        Channels of each 3x3 convolution stage (each stage halves the size).
    n_classes : `int`
        Number of output classes.
    symmetric : `bool`
        Use D4-symmetric kernels (exact invariance by construction).
    dropout : `float`
        Dropout before the classifier layer.
    """

    def __init__(
        self,
        in_channels: int = 4,
        stamp_size: int = 32,
        widths: Sequence[int] = (16, 32, 32),
        n_classes: int = 4,
        symmetric: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if symmetric and stamp_size % (2 ** len(widths)):
            raise ValueError(
                f"stamp_size {stamp_size} must be divisible by 2**{len(widths)} for a symmetric DiaCnn"
            )
        self.in_channels = int(in_channels)
        self.stamp_size = int(stamp_size)
        conv = SymmetricConv2d if symmetric else nn.Conv2d
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [
                conv(previous, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2, ceil_mode=not symmetric),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * previous, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DiaCnn expects stamps of shape (N, {self.in_channels}, S, S); got {tuple(x.shape)}"
            )
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=(-2, -1)), h.amax(dim=(-2, -1))], dim=1)
        return self.head(pooled)
