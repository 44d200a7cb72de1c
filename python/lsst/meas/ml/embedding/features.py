"""Stamps for the encoder: from coadds through the shared cutout code, or from image files.

Every stamp given to the encoder is in *linear units of its own noise*:
background about 0, noise about 1, unusable pixels (NaN, masked, off the
image, padding) 0.  That is what the augmentations act on (noise matched to
a variance of 1, reddening exact on linear fluxes) and what the encoder's
first operation (a fixed asinh stretch) expects.

* Coadds: `lsst.meas.ml.cutouts.multiband_stack` with
  ``normalise="variance_stamp"`` (each stamp divided by the square root of
  its median valid variance), one channel per band, no mask channels.
* Image files: `lsst.meas.ml.imagefiles.load_images`, optionally binned by
  an integer factor (flux-conserving block average, so a 256-pixel image can
  feed a 48-pixel model), then per stamp and channel the median is
  subtracted and the result divided by the robust noise
  (`lsst.meas.ml.augment.estimate_noise`, with a floor of 1% of the
  stamp's 1-99% range so that 8-bit images with a flat sky are not blown
  up).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import MeasMlUserError

__all__ = [
    "EmbeddingInputError",
    "NORMALISATION",
    "StampBatch",
    "bin_images",
    "coadd_stamps",
    "file_stamps",
    "normalise_to_noise",
]

#: Input normalisation recorded in (and required of) every embedding package.
NORMALISATION = "linear_noise_units"


class EmbeddingInputError(MeasMlUserError, ValueError):
    """Inputs the embedding code cannot use; the message names what and why."""


@dataclasses.dataclass
class StampBatch:
    """Stamps ready for the encoder, with their per-row facts.

    Attributes
    ----------
    x : `numpy.ndarray`
        ``(N, C, S, S)`` float32 in linear noise units, finite.
    nan_fraction : `numpy.ndarray`
        ``(N,)`` fraction of pixels that were unusable (any channel).
    edge : `numpy.ndarray`
        ``(N,)`` bool: the stamp reaches past the image edge.
    offimage : `numpy.ndarray`
        ``(N,)`` bool: no usable stamp (centre off the image, or every
        pixel unusable).
    resized : `numpy.ndarray`
        ``(N,)`` bool: image file cropped or padded to the stamp size.
    """

    x: np.ndarray
    nan_fraction: np.ndarray
    edge: np.ndarray
    offimage: np.ndarray
    resized: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def normalise_to_noise(images: np.ndarray, bad: np.ndarray | None = None) -> np.ndarray:
    """Subtract each stamp's median and divide by its robust noise, per channel.

    Parameters
    ----------
    images : `numpy.ndarray`
        ``(N, C, S, S)`` pixels (NaN allowed).
    bad : `numpy.ndarray`, optional
        Boolean, broadcastable to ``images``: pixels to ignore and set to 0.

    Returns
    -------
    out : `numpy.ndarray`
        ``(N, C, S, S)`` float32, finite; unusable pixels are 0.
    """
    x = np.array(images, dtype=np.float32, copy=True)
    invalid = ~np.isfinite(x)
    if bad is not None:
        invalid |= np.broadcast_to(bad, x.shape)
    x[invalid] = np.nan
    if len(x) == 0:
        return np.zeros_like(x)
    t = torch.from_numpy(x)
    flat = t.flatten(2)
    med = torch.nan_to_num(flat.nanmedian(dim=2).values, nan=0.0)
    sigma = _robust_sigma(t, med)
    out = (t - med[:, :, None, None]) / sigma[:, :, None, None]
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).numpy()


def _robust_sigma(t: torch.Tensor, med: torch.Tensor) -> torch.Tensor:
    """MAD noise per stamp and channel, floored at 1% of the 1-99% range."""
    from ..augment import estimate_noise

    sigma = estimate_noise(t)
    flat = t.flatten(2)
    filled = torch.where(torch.isnan(flat), med[:, :, None], flat)
    hi = torch.quantile(filled, 0.99, dim=2)
    lo = torch.quantile(filled, 0.01, dim=2)
    floor = (0.01 * (hi - lo)).clamp_min(1e-6)
    return torch.maximum(sigma, floor)


def bin_images(images: np.ndarray, bad: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-average images by an integer factor, ignoring bad pixels.

    Parameters
    ----------
    images : `numpy.ndarray`
        ``(N, C, S, S)`` pixels.
    bad : `numpy.ndarray`
        ``(N, C, S, S)`` bool, pixels to ignore.
    factor : `int`
        Binning factor (1: unchanged); ``S`` is first cropped to a
        multiple of it about the centre.

    Returns
    -------
    binned, binned_bad : `numpy.ndarray`
        ``(N, C, S // factor, S // factor)`` mean of the good pixels of each
        block, and True where a block has none.
    """
    factor = int(factor)
    if factor <= 1:
        return images, bad
    n, c, s, _ = images.shape
    m = (s // factor) * factor
    o = (s - m) // 2
    img = images[:, :, o : o + m, o : o + m]
    good = ~bad[:, :, o : o + m, o : o + m] & np.isfinite(img)
    vals = np.where(good, img, 0.0).reshape(n, c, m // factor, factor, m // factor, factor)
    cnt = good.reshape(n, c, m // factor, factor, m // factor, factor).sum(axis=(3, 5))
    total = vals.sum(axis=(3, 5))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / np.maximum(cnt, 1)).astype(np.float32)
    return out, cnt == 0


def _centre(x: np.ndarray, size: int) -> np.ndarray:
    s = x.shape[-1]
    if s == size:
        return x
    if s < size:
        raise EmbeddingInputError(f"Stamps of {s} pixels are smaller than the model's {size}-pixel input.")
    o = (s - size) // 2
    return x[..., o : o + size, o : o + size]


def file_stamps(
    patterns: Any,
    *,
    size: int,
    bin_factor: int = 1,
    channels: int | None = None,
    resize: str = "centre",
) -> tuple[list[str], StampBatch, list[tuple[str, str]]]:
    """Read image files into encoder stamps.

    Parameters
    ----------
    patterns : `str` or sequence of `str`
        Globs, directories or files (`lsst.meas.ml.imagefiles.expand_images`).
    size : `int`
        Side of the stamps after binning.
    bin_factor : `int`
        Integer binning applied first; files are read at ``size *
        bin_factor`` pixels (cropped or padded about their centres, see
        ``resize``).
    channels : `int`, optional
        Required channel count (the model's).
    resize : `str`
        ``"centre"`` (crop or zero-pad other sizes, flagged) or ``"error"``.

    Returns
    -------
    ids : `list` [`str`]
        File stems.
    stamps : `StampBatch`
        The stamps.
    skipped : `list` [`tuple` [`str`, `str`]]
        Unreadable files and why (named in a warning, not in ``ids``).

    Raises
    ------
    lsst.meas.ml.imagefiles.ImageFileError
        No readable file, a channel-count mismatch, or (``resize="error"``)
        a size mismatch.
    """
    from ..imagefiles import load_images

    images = load_images(patterns, size=int(size) * int(bin_factor), resize=resize, channels=channels)
    x, bad = bin_images(images.images, images.bad, bin_factor)
    bad_any = bad.any(axis=1)
    x = normalise_to_noise(x, bad)
    frac = bad_any.reshape(len(x), -1).mean(axis=1).astype(np.float32)
    stamps = StampBatch(
        x=np.ascontiguousarray(x, dtype=np.float32),
        nan_fraction=frac,
        edge=np.zeros(len(x), bool),
        offimage=frac >= 1.0,
        resized=np.asarray(images.resized, bool),
    )
    return list(images.ids), stamps, list(images.skipped)


def coadd_stamps(
    coadds: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    bands: Sequence[str],
    *,
    bad_mask_planes: Sequence[str] = ("BAD", "SAT", "NO_DATA"),
    bbox: Any = None,
) -> StampBatch:
    """Cut multi-band coadd stamps in linear noise units.

    Parameters
    ----------
    coadds : `~collections.abc.Mapping` [`str`, `~typing.Any`]
        Coadd per band (``lsst.images`` masked images, `PixelPlanes` or
        readers); a band the mapping lacks gives a zero channel (the
        caller flags it).
    x, y : `numpy.ndarray`
        Parent-frame positions.
    size : `int`
        Stamp side.
    bands : sequence of `str`
        Band of each channel, in order.
    bad_mask_planes : sequence of `str`
        Mask planes marking unusable pixels.
    bbox : `~typing.Any`, optional
        Whole-image box (needed with readers).

    Returns
    -------
    stamps : `StampBatch`
        The stamps (``resized`` all False).

    Raises
    ------
    EmbeddingInputError
        No coadd at all.
    """
    from ..cutouts import multiband_stack

    present = [b for b in bands if b in coadds]
    if not present:
        raise EmbeddingInputError(f"No coadd for any of the bands {list(bands)}; have {sorted(coadds)}.")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    st = multiband_stack(
        {b: coadds[b] for b in present},
        x,
        y,
        size,
        bands=list(bands),
        normalise="variance_stamp",
        object_mask=None,
        nan_masks=False,
        bad_mask_planes=list(bad_mask_planes),
        bbox=bbox,
        missing_bands="blank",
    )
    n = len(x)
    data = st.data
    unusable = (st.missing | st.bad).reshape(n, -1)
    frac = unusable.mean(axis=1).astype(np.float32) if n else np.zeros(0, np.float32)
    return StampBatch(
        x=data,
        nan_fraction=frac,
        edge=np.asarray(st.edge, bool),
        offimage=np.asarray(st.offimage, bool) | (frac >= 1.0),
        resized=np.zeros(n, bool),
    )


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    """Return the central ``size`` x ``size`` pixels of stamps.

    Parameters
    ----------
    x : `numpy.ndarray`
        ``(..., S, S)`` stamps with ``S >= size``.
    size : `int`
        Output side.

    Returns
    -------
    crop : `numpy.ndarray`
        A view of the central pixels.
    """
    return _centre(x, size)
