"""Architecture of the DLA product: a 1D CNN with three outputs per pixel.

After Parks, Prochaska, Dong & Cai (2018): the spectrum is a 1D image and
each pixel gets (1) the logit of "within `DlaCnn.label_half_width` pixels of
a DLA centre", (2) the offset from the pixel to that centre (in units of
the half-width) and (3) log N(HI) - 21.  Here the network is fully
convolutional (a stem and residual blocks of dilated convolutions), so one
pass over a window gives the outputs of all its pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import register_architecture

__all__ = ["DlaCnn", "dla_loss"]


class _Block(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(nn.functional.gelu(self.norm(x)))


@register_architecture("dla_cnn")
class DlaCnn(nn.Module):
    """Fully convolutional 1D network with classification, offset and log N(HI) heads.

    Parameters
    ----------
    in_channels : `int`
        Input channels (normalised flux, normalised error, mask).
    channels : `int`
        Width of the hidden layers.
    kernel : `int`
        Kernel size of the dilated convolutions.
    dilations : `~collections.abc.Sequence` [`int`]
        Dilation of each residual block.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 32,
        kernel: int = 5,
        dilations: Sequence[int] = (1, 2, 4, 8, 16, 32, 1, 2, 4, 8),
    ) -> None:
        super().__init__()
        self.stem = nn.Conv1d(in_channels, channels, 7, padding=3)
        self.blocks = nn.Sequential(*[_Block(channels, kernel, int(d)) for d in dilations])
        self.norm = nn.BatchNorm1d(channels)
        self.head = nn.Conv1d(channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel outputs.

        Parameters
        ----------
        x : `torch.Tensor`, (B, 3, L)
            Input channels.

        Returns
        -------
        out : `torch.Tensor`, (B, 3, L)
            Channel 0: logit of the absorber class; 1: offset to the centre
            (units of the label half-width, positive redward); 2: log N(HI) - 21.
        """
        h = self.blocks(self.stem(x))
        return self.head(nn.functional.gelu(self.norm(h)))


def dla_loss(
    out: torch.Tensor,
    label: torch.Tensor,
    offset: torch.Tensor,
    log_nhi: torch.Tensor,
    *,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Compute the combined loss: classification everywhere, offset and log N(HI) only on absorber pixels.

    Parameters
    ----------
    out : `torch.Tensor`, (B, 3, L)
        Network outputs.
    label : `torch.Tensor`, (B, L)
        1 within the half-width of a DLA centre, else 0.
    offset : `torch.Tensor`, (B, L)
        Target offsets (units of the half-width; any value where ``label`` is 0).
    log_nhi : `torch.Tensor`, (B, L)
        Target log N(HI) - 21 (any value where ``label`` is 0).
    weights : `tuple` [`float`, `float`, `float`]
        Weights of the three terms.

    Returns
    -------
    loss : `torch.Tensor`
        Scalar loss.
    parts : `dict` [`str`, `float`]
        The three terms.
    """
    bce = nn.functional.binary_cross_entropy_with_logits(out[:, 0], label)
    mask = label > 0.5
    n = mask.sum().clamp_min(1)
    off = (nn.functional.smooth_l1_loss(out[:, 1], offset, reduction="none", beta=0.1) * mask).sum() / n
    col = (nn.functional.smooth_l1_loss(out[:, 2], log_nhi, reduction="none", beta=0.2) * mask).sum() / n
    loss = weights[0] * bce + weights[1] * off + weights[2] * col
    parts = {
        "classification": float(bce.detach()),
        "offset": float(off.detach()),
        "log_nhi": float(col.detach()),
    }
    return loss, parts
