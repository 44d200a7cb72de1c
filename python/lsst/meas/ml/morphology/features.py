"""Stamps, channels, classes and flags of the galaxy-morphology classifier.

Every path into the classifier (the task on coadds, training from a Butler
collection, the image-file commands, the quality experiment) goes through
this module, so the model sees identically prepared inputs everywhere.

Channel layout (the input of Kang et al. 2022): one image per band, then
(for coadds) the object mask, then one mask of unusable pixels per band.

* **Coadds** (`coadd_stamps`): `lsst.meas.ml.cutouts.multiband_stack` cuts
  all bands at once; each band image is ``asinh(flux / sigma)`` with
  ``sigma`` the stamp's own noise (the square root of its median
  variance), the object mask is the ``DETECTED`` footprint in any band, and
  the NaN masks mark pixels that are NaN, off the image or flagged
  ``BAD``/``SAT``/``NO_DATA``.  A band with no coadd in the patch gets a
  zero image and a NaN mask of ones (``MISSING_BAND`` flag), so the model
  still runs.
* **Image files** (`file_stamps`): each channel is
  ``asinh((v - median) / sigma)`` with ``sigma`` 1.4826 times its median
  absolute deviation (the files carry no variance); there is no object
  mask; the NaN masks are the files' NaN pixels and the padding added to
  bring them to one size (`lsst.meas.ml.imagefiles.load_images`).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..cutouts import multiband_stack, nanmedian_rows
from ..errors import MeasMlUserError
from ..flags import DescribedFlag
from ..images import PixelPlanes

__all__ = [
    "COADD_NORMALISATION",
    "DEFAULT_BANDS",
    "DEFAULT_CLASSES",
    "FILE_NORMALISATION",
    "MorphologyFlag",
    "MorphologyInputError",
    "StampBatch",
    "class_column",
    "coadd_stamps",
    "file_stamps",
    "input_spec",
]

#: Bands of the default model (the five bands of the 11-channel input).
DEFAULT_BANDS: tuple[str, ...] = ("g", "r", "i", "z", "y")

#: Default classes along the Hubble sequence (the simulation's ``hubble_type``).
DEFAULT_CLASSES: tuple[str, ...] = ("E", "S0", "Sa", "Sb", "Sc/Sd", "Irr")

#: Channel preparation of coadd stamps, recorded in model packages.
COADD_NORMALISATION = "asinh-stampnoise-v1"

#: Channel preparation of image files, recorded in model packages.
FILE_NORMALISATION = "asinh-mad-v1"


class MorphologyInputError(MeasMlUserError, ValueError):
    """Inputs the morphology classifier cannot use; the message names what is wrong."""


class MorphologyFlag(DescribedFlag):
    """Bits of ``morph_flags``."""

    EDGE = 1 << 0, "The stamp reaches past the coadd edge; the missing pixels are masked."
    MISSING_BAND = 1 << 1, "A band has no coadd in this patch; its image is 0 and its NaN mask 1."
    ALL_MASKED = 1 << 2, "No usable pixel in the stamp; no class is given (probabilities NaN)."
    MASKED = 1 << 3, "More than maxMaskedFraction of the stamp's pixels are unusable."
    OFFIMAGE = 1 << 4, "The object's centre is off the coadd; no class is given."
    OUT_OF_DISTRIBUTION = 1 << 5, "OOD score above the threshold (1 = training 99th percentile)."
    RESIZED = 1 << 6, "Image file cropped or zero-padded about its centre to the model's stamp size."


@dataclasses.dataclass
class StampBatch:
    """Prepared model inputs.

    Attributes
    ----------
    x : `numpy.ndarray`
        ``(N, C, S, S)`` float32, finite.
    flags : `numpy.ndarray`
        ``(N,)`` int64 `MorphologyFlag` bits.
    masked_fraction : `numpy.ndarray`
        ``(N,)`` fraction of unusable pixels (over bands and pixels).
    channels : `tuple` [`str`, ...]
        Channel names.
    n_image_channels : `int`
        Leading image channels (the rest are masks).
    """

    x: np.ndarray
    flags: np.ndarray
    masked_fraction: np.ndarray
    channels: tuple[str, ...]
    n_image_channels: int

    def __len__(self) -> int:
        return len(self.x)

    @property
    def usable(self) -> np.ndarray:
        """``(N,)`` bool: stamps the model classifies (not all masked, not off the image)."""
        bad = int(MorphologyFlag.ALL_MASKED | MorphologyFlag.OFFIMAGE)
        return (self.flags & bad) == 0


def class_column(name: str) -> str:
    """Return the probability column of a class: ``prob_`` and the name with non-word characters as ``_``.

    Parameters
    ----------
    name : `str`
        Class name, e.g. ``"Sc/Sd"``.

    Returns
    -------
    column : `str`
        E.g. ``"prob_Sc_Sd"``.
    """
    return "prob_" + re.sub(r"\W", "_", str(name))


def input_spec(bands: Sequence[str], stamp_size: int, source: str) -> dict[str, Any]:
    """Return the input specification a model package records and tasks check.

    Parameters
    ----------
    bands : sequence of `str`
        Bands (coadds) or channel names (image files).
    stamp_size : `int`
        Stamp side in pixels.
    source : `str`
        ``"coadd"`` or ``"files"``.

    Returns
    -------
    spec : `dict` [`str`, `~typing.Any`]
        ``bands``, ``stamp_size``, ``source``, ``object_mask``,
        ``normalisation`` and ``channels``.
    """
    bands = [str(b) for b in bands]
    coadd = source == "coadd"
    channels = [*bands, *(["object_mask"] if coadd else []), *(f"nan_mask_{b}" for b in bands)]
    return {
        "bands": bands,
        "stamp_size": int(stamp_size),
        "source": source,
        "object_mask": coadd,
        "normalisation": COADD_NORMALISATION if coadd else FILE_NORMALISATION,
        "channels": channels,
    }


def _finish_flags(
    x: np.ndarray, n_image: int, flags: np.ndarray, max_masked: float
) -> tuple[np.ndarray, np.ndarray]:
    """Set ALL_MASKED and MASKED from the NaN-mask channels; return the flags and the masked fractions."""
    n = len(x)
    masks = x[:, x.shape[1] - n_image :]
    frac = masks.reshape(n, -1).mean(axis=1) if n else np.zeros(0)
    flags = flags.copy()
    flags[frac >= 1.0] |= int(MorphologyFlag.ALL_MASKED)
    flags[(frac > max_masked) & (frac < 1.0)] |= int(MorphologyFlag.MASKED)
    return flags, frac.astype(np.float32)


def coadd_stamps(
    coadds: Mapping[str, Any],
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    stamp_size: int = 64,
    bad_mask_planes: Sequence[str] = ("BAD", "SAT", "NO_DATA"),
    max_masked_fraction: float = 0.25,
) -> StampBatch:
    """Cut and prepare the model's stamps from the coadds of one patch.

    Parameters
    ----------
    coadds : `~collections.abc.Mapping` [`str`, image]
        Coadd per band (`lsst.images` image or `~lsst.meas.ml.images.PixelPlanes`,
        one pixel grid); bands of ``bands`` that are absent (or `None`) are
        missing bands.
    x, y : array-like
        Parent-frame positions of the objects.
    bands : sequence of `str`
        The model's bands, in order.
    stamp_size : `int`
        Stamp side.
    bad_mask_planes : sequence of `str`
        Mask planes marking unusable pixels.
    max_masked_fraction : `float`
        Fraction of unusable pixels above which ``MASKED`` is set.

    Returns
    -------
    batch : `StampBatch`
        ``2 * len(bands) + 1`` channels.
    """
    bands = list(bands)
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    n, nb, s = len(x), len(bands), int(stamp_size)
    present = [b for b in bands if coadds.get(b) is not None]
    out = np.zeros((n, 2 * nb + 1, s, s), dtype=np.float32)
    flags = np.zeros(n, dtype=np.int64)
    names = (*bands, "object_mask", *(f"nan_mask_{b}" for b in bands))
    if len(present) < nb:
        flags |= int(MorphologyFlag.MISSING_BAND)
    if not present:
        flags |= int(MorphologyFlag.OFFIMAGE)
        out[:, nb + 1 :] = 1.0  # every pixel of every band unusable
    elif n:
        planes = {b: PixelPlanes.from_image(coadds[b]) for b in present}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # A band without a coadd: zero image channel, unusable-pixel mask of ones.
            st = multiband_stack(
                planes,
                x,
                y,
                s,
                bands=bands,
                normalise="asinh",
                object_mask="detected",
                nan_masks=True,
                bad_mask_planes=list(bad_mask_planes),
                missing_bands="blank",
            )
        out = st.data
        flags[st.edge] |= int(MorphologyFlag.EDGE)
        flags[st.offimage] |= int(MorphologyFlag.OFFIMAGE)
    flags, frac = _finish_flags(out, nb, flags, max_masked_fraction)
    return StampBatch(out, flags, frac, names, nb)


def file_stamps(
    images: np.ndarray,
    bad: np.ndarray,
    *,
    resized: np.ndarray | None = None,
    max_masked_fraction: float = 0.25,
    channel_names: Sequence[str] | None = None,
) -> StampBatch:
    """Prepare image-file stamps: stretched channels, then one NaN mask per channel.

    Parameters
    ----------
    images : `numpy.ndarray`
        ``(N, C, S, S)`` pixels (NaN allowed), e.g. `lsst.meas.ml.imagefiles.ImageSet.images`.
    bad : `numpy.ndarray`
        ``(N, C, S, S)`` bool unusable pixels.
    resized : `numpy.ndarray`, optional
        ``(N,)`` bool, images that were cropped or padded (``RESIZED``).
    max_masked_fraction : `float`
        Fraction of unusable pixels above which ``MASKED`` is set.
    channel_names : sequence of `str`, optional
        Names of the image channels (default ``c0``, ``c1``...).

    Returns
    -------
    batch : `StampBatch`
        ``2 * C`` channels.
    """
    images = np.asarray(images, dtype=np.float32)
    n, c = images.shape[:2]
    bad = np.asarray(bad, dtype=bool) | ~np.isfinite(images)
    v = np.where(bad, np.nan, images).reshape(n, c, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = nanmedian_rows(v)
        sigma = 1.4826 * nanmedian_rows(np.abs(v - med[..., None]))
        spread = np.nanstd(v, axis=-1)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.where(spread > 0, spread, 1.0))
    med = np.nan_to_num(med)
    z = (images - med[..., None, None]) / sigma[..., None, None]
    stretched = np.where(bad, 0.0, np.arcsinh(np.nan_to_num(z))).astype(np.float32)
    x = np.concatenate([stretched, bad.astype(np.float32)], axis=1)
    flags = np.zeros(n, dtype=np.int64)
    if resized is not None:
        flags[np.asarray(resized, dtype=bool)] |= int(MorphologyFlag.RESIZED)
    flags, frac = _finish_flags(x, c, flags, max_masked_fraction)
    names = tuple(channel_names) if channel_names is not None else tuple(f"c{i}" for i in range(c))
    return StampBatch(x, flags, frac, (*names, *(f"nan_mask_{b}" for b in names)), c)
