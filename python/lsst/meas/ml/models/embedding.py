"""The encoder of self-supervised galaxy representations.

Input: ``(N, C, S, S)`` stamps in *linear* units of each stamp's noise (as
`lsst.meas.ml.embedding.features` prepares them: background about 0, noise
about 1, unusable pixels 0).  The first operation is a fixed asinh stretch
``asinh(x / softening)``, so that the augmentations of training (reddening,
blur, added noise) act on linear fluxes where they are exact, while the
network sees a compressed dynamic range.

The backbone is a small residual CNN without normalisation layers by
default: a per-stamp normalisation (GroupNorm, LayerNorm) divides out the
brightness and much of the colour of each stamp, which carry the redshift,
and a BatchNorm in contrastive training lets the two views of a batch
exchange information through the batch statistics (which MoCo hides by
shuffling batches across GPUs).  Optionally (``colour_input``, the
training default) the stretched bands minus their mean are fed alongside
the bands: for bright pixels these are colours in magnitudes, which a
randomly initialised network otherwise barely separates from brightness.
Its pooled features (a plain mean, or with ``pool="centre"``, the training
default, a Gaussian-weighted mean about the stamp centre where the object
is) are the representation; ``forward`` returns them L2-normalised.
Optionally (``aperture`` > 0, the training default) the representation
starts with the stamp's Gaussian-aperture photometry: per band the asinh of
the signal-to-noise ratio of the flux in a Gaussian aperture of that sigma
(pixels) about the centre, and with ``colour_input`` those minus their
mean (aperture colours).  A small CNN's pooled features carry brightness
but hardly any colour (a linear fit of the colours from them is poor even
with thousands of examples), while colours are what the redshift and much
of the Hubble type depend on.  A two-layer MLP
projection head (`EmbeddingEncoder.project`) is used only by contrastive
training, as in MoCo v2 / SimCLR, and travels with the package so training
can be resumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import register_architecture

__all__ = ["EmbeddingEncoder"]


def _groups(width: int) -> int:
    for g in (8, 4, 2):
        if width % g == 0:
            return g
    return 1


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(_groups(width), width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'none' or 'group', not {kind!r}")


def _centre_weights(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian weights about the centre of a map (sigma a quarter of its side), summing to 1."""
    yy = torch.arange(height, device=device, dtype=dtype) - (height - 1) / 2
    xx = torch.arange(width, device=device, dtype=dtype) - (width - 1) / 2
    sy, sx = max(height / 4, 0.5), max(width / 4, 0.5)
    w = torch.exp(-0.5 * ((yy[:, None] / sy) ** 2 + (xx[None, :] / sx) ** 2))
    return w / w.sum()


def _gaussian_weights(
    height: int, width: int, sigma: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Gaussian weights of ``sigma`` pixels about the centre of a map, summing to 1."""
    yy = torch.arange(height, device=device, dtype=dtype) - (height - 1) / 2
    xx = torch.arange(width, device=device, dtype=dtype) - (width - 1) / 2
    w = torch.exp(-0.5 * (yy[:, None].square() + xx[None, :].square()) / sigma**2)
    return w / w.sum()


class _Block(nn.Module):
    """Residual block: two 3x3 convolutions, the first with ``stride``."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none")
        self.norm1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none")
        self.norm2 = _norm(norm, c_out)
        self.skip: nn.Module
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)), inplace=True)
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.skip(x), inplace=True)


@register_architecture("embedding_cnn")
class EmbeddingEncoder(nn.Module):
    """Residual CNN encoder with a projection head.

    Parameters
    ----------
    in_channels : `int`
        Image channels (bands).
    stamp_size : `int`
        Stamp side the model was trained on (any size runs; recorded for
        the checks of the prediction code).
    widths : `~collections.abc.Sequence` [`int`]
        Channels of each residual stage; every stage after the first
        halves the resolution.  The last width is the embedding dimension.
    proj_dim : `int`
        Output dimension of the projection head (contrastive loss space).
    softening : `float`
        Softening of the input asinh stretch, in units of the noise.
    norm : `str`
        ``"none"`` (default) or ``"group"`` (GroupNorm after each
        convolution).  GroupNorm normalises each stamp's activations, which
        removes its brightness and much of its colour, both of which carry
        the redshift; without it the small network trains stably with AdamW.
    pool : `str`
        How the last feature map becomes the representation: ``"mean"``
        (global average) or ``"centre"`` (average weighted by a Gaussian of
        sigma a quarter of the map side about its centre, where the object
        is: a plain mean is dominated by the sky around a small galaxy).
    colour_input : `bool`
        Also feed the network each stretched band minus the mean of the
        stretched bands (for bright pixels, colours in magnitudes), so that
        colours need not be learnt from small differences between channels.
    aperture : `float`
        Sigma (pixels) of the Gaussian aperture whose photometry (and
        colours, with ``colour_input``) is prepended to the pooled features;
        0 (default, and packages written before the option) leaves it out.
    """

    def __init__(
        self,
        in_channels: int = 6,
        stamp_size: int = 40,
        widths: Sequence[int] = (16, 32, 64, 128),
        proj_dim: int = 64,
        softening: float = 3.0,
        norm: str = "none",
        pool: str = "mean",
        colour_input: bool = False,
        aperture: float = 0.0,
    ) -> None:
        super().__init__()
        if softening <= 0:
            raise ValueError(f"softening must be positive, got {softening}")
        if pool not in ("mean", "centre"):
            raise ValueError(f"pool must be 'mean' or 'centre', not {pool!r}")
        if aperture < 0:
            raise ValueError(f"aperture must be >= 0 (0: off), got {aperture}")
        self.pool = pool
        self.aperture = float(aperture)
        self.colour_input = bool(colour_input)
        self.in_channels = int(in_channels)
        self.stamp_size = int(stamp_size)
        self.softening = float(softening)
        widths = [int(w) for w in widths]
        self.stem = nn.Sequential(
            nn.Conv2d(
                self.in_channels * (2 if self.colour_input else 1),
                widths[0],
                3,
                padding=1,
                bias=norm == "none",
            ),
            _norm(norm, widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        previous = widths[0]
        for i, width in enumerate(widths):
            blocks.append(_Block(previous, width, stride=1 if i == 0 else 2, norm=norm))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        #: Leading representation entries that are aperture photometry (0: none).
        self.aperture_dim = self.in_channels * (2 if self.colour_input else 1) if self.aperture > 0 else 0
        self.embed_dim = previous + self.aperture_dim
        self.projector = nn.Sequential(
            nn.Linear(self.embed_dim, self.embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.embed_dim, int(proj_dim)),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled backbone features (not normalised).

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps in linear noise units.

        Returns
        -------
        h : `torch.Tensor`
            ``(N, embed_dim)`` features: the aperture photometry
            (``aperture_dim`` entries, when ``aperture`` > 0), then the
            pooled backbone features.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"EmbeddingEncoder expects stamps of shape (N, {self.in_channels}, S, S); "
                f"got {tuple(x.shape)}"
            )
        h = torch.asinh(x / self.softening)
        if self.colour_input:
            h = torch.cat([h, h - h.mean(dim=1, keepdim=True)], dim=1)
        h = self.blocks(self.stem(h))
        if self.pool == "mean":
            pooled = h.mean(dim=(-2, -1))
        else:
            pooled = (h * _centre_weights(h.shape[-2], h.shape[-1], h.device, h.dtype)).sum(dim=(-2, -1))
        if self.aperture <= 0:
            return pooled
        return torch.cat([self.aperture_photometry(x), pooled], dim=1)

    def aperture_photometry(self, x: torch.Tensor) -> torch.Tensor:
        """Return the Gaussian-aperture photometry part of the representation.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps in linear noise units.

        Returns
        -------
        a : `torch.Tensor`
            ``(N, aperture_dim)``: per band ``asinh(snr / softening)``, the
            signal-to-noise ratio of the Gaussian-weighted flux (unit pixel
            noise), then with ``colour_input`` those minus their band mean.

        Raises
        ------
        ValueError
            The encoder has no aperture (``aperture`` 0).
        """
        if self.aperture <= 0:
            raise ValueError("this encoder has no aperture photometry (aperture 0)")
        w = _gaussian_weights(x.shape[-2], x.shape[-1], self.aperture, x.device, x.dtype)
        snr = (x * w).sum(dim=(-2, -1)) / w.square().sum().sqrt()
        a = torch.asinh(snr / self.softening)
        if self.colour_input:
            a = torch.cat([a, a - a.mean(dim=1, keepdim=True)], dim=1)
        return a

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Return the L2-normalised projection used by the contrastive loss.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.

        Returns
        -------
        z : `torch.Tensor`
            ``(N, proj_dim)`` unit vectors.
        """
        return F.normalize(self.projector(self.features(x)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)
