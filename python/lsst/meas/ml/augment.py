"""Telescope-aware augmentations of multi-band stamps, batched in torch.

One implementation for every image product (semi-supervised morphology,
contrastive embeddings): each transform mimics something the survey does
to the same galaxy, so a model that is invariant to it loses nothing.

* **Rotations and flips** (the dihedral group of the square, exact pixel
  permutations) and optionally any angle: galaxies have no preferred
  orientation on the sky.
* **Jitter-crop**: shifts of a few pixels (the centroid is uncertain),
  optionally followed by a central crop.
* **Size scaling**: the same galaxy at a slightly different distance or
  seeing-convolved size.
* **PSF-like blur**: a Gaussian of random width, as a worse-seeing visit.
* **Gaussian noise matched to the noise**: noise of a random fraction of
  each stamp's own noise level (given as a variance, or estimated per
  channel from the median absolute deviation), as a shallower exposure.
* **Per-band scaling like Galactic reddening**: band ``b`` is multiplied
  by ``10**(-0.4 * R_b * E(B-V))`` with a random ``E(B-V)`` and the LSST
  extinction coefficients `EXTINCTION_COEFFICIENTS` (for bands the set does
  not know, a random log-normal scale per band).  Exact on linear fluxes;
  on asinh-stretched stamps it is an approximation of the same effect.

Only image channels get the photometric transforms (noise, blur,
reddening); mask channels (object mask, bad-pixel masks), which follow the
image channels, get the same geometric transforms with nearest-neighbour
sampling so they stay 0/1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "EXTINCTION_COEFFICIENTS",
    "AugmentConfig",
    "augment",
    "blur",
    "dihedral",
    "estimate_noise",
    "geometric",
    "reddening_scale",
]

#: A_b / E(B-V) for the LSST bands (R_V = 3.1 Milky Way dust).
EXTINCTION_COEFFICIENTS: dict[str, float] = {
    "u": 4.145,
    "g": 3.237,
    "r": 2.273,
    "i": 1.684,
    "z": 1.323,
    "y": 1.088,
}


@dataclasses.dataclass
class AugmentConfig:
    """Which augmentations to draw and how strong.

    Attributes
    ----------
    rotate_flip : `bool`
        Random element of the dihedral group (90-degree rotations, flips).
    rotate_any : `bool`
        Also rotate by a uniform random angle (bilinear resampling).
    jitter : `float`
        Largest shift in pixels along each axis.
    scale : `tuple` [`float`, `float`]
        Range of the size scale factor (log-uniform).
    blur_sigma : `tuple` [`float`, `float`]
        Range of the extra Gaussian blur, in pixels (0 means none).
    noise : `tuple` [`float`, `float`]
        Range of the added noise, in units of each stamp's own noise.
    max_ebv : `float`
        Largest ``E(B-V)`` of the reddening-like band scaling (0: off).
    band_scatter : `float`
        Scatter in magnitudes of the per-band scale for bands without an
        extinction coefficient.
    crop : `int` or `None`
        Side of the central crop taken after the other transforms.
    """

    rotate_flip: bool = True
    rotate_any: bool = False
    jitter: float = 3.0
    scale: tuple[float, float] = (0.9, 1.1)
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    noise: tuple[float, float] = (0.0, 1.0)
    max_ebv: float = 0.1
    band_scatter: float = 0.05
    crop: int | None = None

    @classmethod
    def weak(cls) -> AugmentConfig:
        """Return the weak augmentation: rotations, flips and a one-pixel jitter.

        Returns
        -------
        config : `AugmentConfig`
            The configuration.
        """
        return cls(
            jitter=1.0,
            scale=(1.0, 1.0),
            blur_sigma=(0.0, 0.0),
            noise=(0.0, 0.0),
            max_ebv=0.0,
            band_scatter=0.0,
        )

    @classmethod
    def strong(cls) -> AugmentConfig:
        """Return the strong augmentation: every transform at its default strength.

        Returns
        -------
        config : `AugmentConfig`
            The configuration.
        """
        return cls(
            rotate_any=True,
            jitter=4.0,
            scale=(0.85, 1.15),
            blur_sigma=(0.0, 1.5),
            noise=(0.0, 1.5),
            max_ebv=0.15,
            band_scatter=0.08,
        )


def _uniform(
    n: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def dihedral(x: torch.Tensor, k: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Apply one element of the dihedral group per sample, exactly.

    Parameters
    ----------
    x : `torch.Tensor`
        ``(N, C, S, S)`` stamps.
    k : `torch.Tensor`
        ``(N,)`` number of 90-degree counter-clockwise turns (0-3).
    flip : `torch.Tensor`
        ``(N,)`` bool, flip left-right before turning.

    Returns
    -------
    out : `torch.Tensor`
        The transformed stamps (a new tensor).
    """
    out = torch.empty_like(x)
    for turns in range(4):
        for flipped in (False, True):
            sel = (k == turns) & (flip == flipped)
            if not bool(sel.any()):
                continue
            part = x[sel]
            if flipped:
                part = torch.flip(part, dims=(-1,))
            out[sel] = torch.rot90(part, turns, dims=(-2, -1))
    return out


def geometric(
    x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, n_image_channels: int
) -> torch.Tensor:
    """Rotate, scale and shift each stamp about its centre.

    Parameters
    ----------
    x : `torch.Tensor`
        ``(N, C, S, S)`` stamps.
    angle : `torch.Tensor`
        ``(N,)`` rotation in radians.
    scale : `torch.Tensor`
        ``(N,)`` size factor (>1 makes the galaxy larger).
    shift : `torch.Tensor`
        ``(N, 2)`` shift in pixels (x, y).
    n_image_channels : `int`
        The first channels are images (bilinear sampling); the rest are
        masks (nearest sampling, so they stay 0/1).

    Returns
    -------
    out : `torch.Tensor`
        The transformed stamps; pixels brought in from outside are 0.
    """
    n, _, h, w = x.shape
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    # Output pixel p samples input at R p / s - shift; normalised units are 2/size per pixel.
    theta[:, 0, 2] = -shift[:, 0] * 2.0 / w
    theta[:, 1, 2] = -shift[:, 1] * 2.0 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    images = F.grid_sample(
        x[:, :n_image_channels], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if n_image_channels == x.shape[1]:
        return images
    masks = F.grid_sample(
        x[:, n_image_channels:], grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return torch.cat([images, masks], dim=1)


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Convolve each stamp with a Gaussian of its own width.

    Parameters
    ----------
    x : `torch.Tensor`
        ``(N, C, S, S)`` image channels.
    sigma : `torch.Tensor`
        ``(N,)`` Gaussian sigma in pixels; 0 leaves a stamp unchanged.

    Returns
    -------
    out : `torch.Tensor`
        The blurred stamps (zero padding at the edges, flux kept inside).
    """
    n, c, h, w = x.shape
    smax = float(sigma.max()) if n else 0.0
    if smax <= 0.0:
        return x
    half = max(1, math.ceil(3.0 * smax))
    r = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    s = sigma.clamp_min(1e-3)[:, None]
    k1 = torch.exp(-0.5 * (r[None, :] / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    k1 = torch.where(sigma[:, None] > 0, k1, (r[None, :] == 0).to(x.dtype))
    # Separable depthwise convolution: one kernel per (sample, channel).
    kx = k1.repeat_interleave(c, dim=0)[:, None, None, :]
    ky = k1.repeat_interleave(c, dim=0)[:, None, :, None]
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (half, half, 0, 0)), kx, groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, half, half)), ky, groups=n * c)
    return flat.reshape(n, c, h, w)


def estimate_noise(x: torch.Tensor) -> torch.Tensor:
    """Estimate each stamp's noise per channel from its median absolute deviation.

    Parameters
    ----------
    x : `torch.Tensor`
        ``(N, C, S, S)`` image channels (NaN pixels ignored).

    Returns
    -------
    sigma : `torch.Tensor`
        ``(N, C)`` robust standard deviation (1.4826 MAD), at least 1e-6.
    """
    flat = x.flatten(2)
    med = flat.nanmedian(dim=2, keepdim=True).values
    mad = (flat - med).abs().nanmedian(dim=2).values
    return torch.nan_to_num(1.4826 * mad, nan=0.0).clamp_min(1e-6)


def reddening_scale(
    n: int,
    bands: Sequence[str] | None,
    n_channels: int,
    max_ebv: float,
    band_scatter: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw per-band flux scales like Galactic reddening.

    Parameters
    ----------
    n : `int`
        Number of stamps.
    bands : sequence of `str` or `None`
        Band of each image channel; None or unknown bands get a random
        log-normal scale of ``band_scatter`` magnitudes instead.
    n_channels : `int`
        Number of image channels.
    max_ebv : `float`
        Largest ``E(B-V)`` (uniform on [0, max_ebv]).
    band_scatter : `float`
        Magnitude scatter for bands without a coefficient.
    generator : `torch.Generator`, optional
        Random numbers.
    device : `torch.device` or `str`, optional
        Device of the result.

    Returns
    -------
    scale : `torch.Tensor`
        ``(N, n_channels)`` multiplicative scales.
    """
    device = torch.device(device)
    ebv = _uniform(n, 0.0, max_ebv, generator, device)
    mags = torch.zeros(n, n_channels, device=device)
    for c in range(n_channels):
        band = bands[c] if bands is not None and c < len(bands) else None
        if band in EXTINCTION_COEFFICIENTS:
            mags[:, c] = EXTINCTION_COEFFICIENTS[band] * ebv
        elif band_scatter > 0:
            mags[:, c] = band_scatter * torch.randn(n, generator=generator, device=device)
    return torch.pow(10.0, -0.4 * mags)


def augment(
    x: torch.Tensor,
    config: AugmentConfig | None = None,
    *,
    n_image_channels: int | None = None,
    bands: Sequence[str] | None = None,
    variance: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one random augmentation per stamp.

    Parameters
    ----------
    x : `torch.Tensor`
        ``(N, C, S, S)`` stamps: image channels first, then mask channels.
        NaN pixels should be filled (and flagged in a mask channel) first.
    config : `AugmentConfig`, optional
        The transforms; default `AugmentConfig()`.
    n_image_channels : `int`, optional
        How many leading channels are images (default all).
    bands : sequence of `str`, optional
        Band of each image channel, for the reddening-like scaling.
    variance : `torch.Tensor`, optional
        ``(N, n_image_channels)`` or per-pixel variance of the stamps; the
        added noise is a fraction of its square root.  Default: estimated
        per stamp and channel (`estimate_noise`).
    generator : `torch.Generator`, optional
        Random numbers (on the device of ``x``), for reproducible draws.

    Returns
    -------
    out : `torch.Tensor`
        Augmented stamps of shape ``(N, C, S', S')`` where ``S'`` is
        ``config.crop`` or ``S``.

    Raises
    ------
    ValueError
        ``x`` is not 4-d, or ``config.crop`` is larger than the stamps.
    """
    config = config or AugmentConfig()
    if x.ndim != 4:
        raise ValueError(f"augment expects (N, C, S, S) stamps, not shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    ni = c if n_image_channels is None else int(n_image_channels)
    if config.crop is not None and config.crop > min(h, w):
        raise ValueError(f"crop {config.crop} is larger than the {h}x{w} stamps")
    if n == 0:
        size = config.crop or h
        return x.new_zeros((0, c, size, size))
    dev = x.device
    out = x
    # Reddening and blur on the image channels, at the native resolution.
    images = out[:, :ni]
    if config.max_ebv > 0 or config.band_scatter > 0:
        images = images * reddening_scale(n, bands, ni, config.max_ebv, config.band_scatter, generator, dev)[
            :, :, None, None
        ].to(images.dtype)
    lo, hi = config.blur_sigma
    if hi > 0:
        images = blur(images, _uniform(n, lo, hi, generator, dev))
    out = torch.cat([images, out[:, ni:]], dim=1) if ni < c else images
    # Geometric transforms on every channel.
    if config.rotate_flip:
        k = torch.randint(0, 4, (n,), generator=generator, device=dev)
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        out = dihedral(out, k, flip)
    angle = (
        _uniform(n, -math.pi, math.pi, generator, dev) if config.rotate_any else torch.zeros(n, device=dev)
    )
    lo, hi = config.scale
    scale = torch.exp(_uniform(n, math.log(lo), math.log(hi), generator, dev))
    shift = (2.0 * torch.rand(n, 2, generator=generator, device=dev) - 1.0) * config.jitter
    if config.rotate_any or lo != 1.0 or hi != 1.0 or config.jitter > 0:
        out = geometric(out, angle.to(out.dtype), scale.to(out.dtype), shift.to(out.dtype), ni)
    # Noise last among the pixel operations: resampling (any-angle rotation,
    # scaling, sub-pixel shifts) would otherwise smooth it below the asked level.
    lo, hi = config.noise
    if hi > 0:
        if variance is None:
            sigma = estimate_noise(x[:, :ni])[:, :, None, None]
        else:
            var = variance.clamp_min(0)
            # A per-pixel variance is summarised by its per-stamp median (the
            # geometric transforms have moved the pixels it described).
            sigma = (var if var.ndim == 2 else var.flatten(2).median(dim=2).values).sqrt()[:, :, None, None]
        level = _uniform(n, lo, hi, generator, dev)[:, None, None, None]
        shape = (n, ni, *out.shape[-2:])
        noise = level * sigma.to(out.dtype) * torch.randn(shape, generator=generator, device=dev)
        out = torch.cat([out[:, :ni] + noise, out[:, ni:]], dim=1) if ni < c else out + noise
    if config.crop is not None and config.crop < h:
        y0 = (h - config.crop) // 2
        x0 = (w - config.crop) // 2
        out = out[:, :, y0 : y0 + config.crop, x0 : x0 + config.crop]
    return out.contiguous()
