"""Stamps, channels, labels and flags for the DIA-source classifier.

Every path into the classifier (the PipelineTask, alert packets, training
from a Butler collection or from alert files) goes through this module, so
the model sees identically prepared inputs everywhere:

1. `cut_source_stamps` cuts science, template, difference and difference
   variance at all source positions at once with the shared
   `lsst.meas.ml.cutouts.cut_stamps` (NaN outside the image).
2. `make_channels` turns them into the four model channels
   (`CHANNELS`): each image has the median of its stamp border (a 4-pixel
   ring, away from the source) removed and is divided by the noise of the
   difference image (the square root of the median variance on the ring,
   or 1.4826 x MAD of the difference on the ring where there is no
   variance, as in ZTF cutouts), the fourth channel is the difference divided by its per-pixel
   standard deviation; all four are compressed with ``asinh(v / 3)`` and
   non-finite pixels become 0.  The result does not depend on the flux
   units, so nJy (Rubin) and DN (ZTF) stamps share one model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..cutouts import asinh_stretch, cut_stamps, nanmedian_rows
from ..errors import MeasMlUserError
from ..images import PixelPlanes

__all__ = [
    "CHANNELS",
    "CLASS_COLUMNS",
    "CLASS_NAMES",
    "DiaDataError",
    "NORMALISATION",
    "REAL_CLASSES",
    "StampSet",
    "TRUTH_LABELS",
    "bad_psf",
    "cut_raw_stamps",
    "cut_source_stamps",
    "derived_template",
    "make_channels",
    "stampset_from",
]

#: Output classes, in the order of the model's outputs.
CLASS_NAMES: tuple[str, ...] = ("transient", "variable", "asteroid", "artifact")

#: Probability column of each class in the score table.
CLASS_COLUMNS: dict[str, str] = {
    "transient": "ml_prob_transient",
    "variable": "ml_prob_variable_star",
    "asteroid": "ml_prob_moving_object",
    "artifact": "ml_prob_artifact",
}

#: Classes that count as real (reliability = their summed probability).
REAL_CLASSES: tuple[str, ...] = ("transient", "variable", "asteroid")

#: Truth label (simulation) -> class index.
TRUTH_LABELS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

#: Model input channels.
CHANNELS: tuple[str, ...] = ("science", "template", "difference", "difference_snr")

#: Name of the channel preparation recorded in model packages.
NORMALISATION = "asinh3-ringnoise-v1"

#: Width (pixels) of the stamp border used for the background and noise.
_RING_WIDTH = 4

#: Softening of the asinh compression, in units of the difference-image noise.
_ASINH_SOFTENING = 3.0

#: Label value meaning "real, class unknown" (real/bogus-only training data).
REAL_UNKNOWN_CLASS = -1
#: Label value meaning "no label".
NO_LABEL = -2


class DiaDataError(MeasMlUserError, ValueError):
    """Inputs the classifier cannot use (missing columns, wrong shapes, no data)."""


@dataclasses.dataclass
class StampSet:
    """Prepared model inputs for a set of sources.

    Attributes
    ----------
    x : `numpy.ndarray`
        ``(N, 4, S, S)`` float32 model inputs (`make_channels`).
    nan_fraction : `numpy.ndarray`
        Fraction of stamp pixels that were NaN or outside the image.
    edge : `numpy.ndarray`
        Stamp reaches beyond the image (padded), or the cutout had to be
        padded to the model size.
    offimage : `numpy.ndarray`
        The source centre is not on the image.
    masked : `numpy.ndarray`
        A pixel of the stamp has a bad mask bit set.
    """

    x: np.ndarray
    nan_fraction: np.ndarray
    edge: np.ndarray
    offimage: np.ndarray
    masked: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, selection: np.ndarray) -> StampSet:
        """Select stamps by a boolean or index array.

        Parameters
        ----------
        selection : `numpy.ndarray`
            Boolean mask or indices of the stamps to keep.

        Returns
        -------
        stamps : `StampSet`
            The selected stamps with their flags.
        """
        return StampSet(*(getattr(self, f.name)[selection] for f in dataclasses.fields(self)))

    @classmethod
    def concatenate(cls, parts: Sequence[StampSet], stamp_size: int) -> StampSet:
        if not parts:
            return cls(
                np.zeros((0, len(CHANNELS), stamp_size, stamp_size), np.float32),
                np.zeros(0, np.float32),
                np.zeros(0, bool),
                np.zeros(0, bool),
                np.zeros(0, bool),
            )
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def _robust_median(a: np.ndarray) -> np.ndarray:
    """Median over the last axis, ignoring NaN (fast when there is none)."""
    if np.isfinite(a).all():
        return np.median(a, axis=-1)
    with np.errstate(all="ignore"), _Quiet():
        return nanmedian_rows(a)


def _fast_median(a: np.ndarray) -> np.ndarray:
    """Median over the last axis (upper median for even counts), ignoring NaN.

    One ``np.partition`` per call when there is no NaN, which is several
    times faster than `numpy.median` on many short rows.
    """
    a = np.asarray(a, dtype=np.float32)
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan, np.float32)
    k = a.shape[-1] // 2
    good = np.isfinite(a).all(axis=-1)
    if good.all():
        return np.partition(a, k, axis=-1)[..., k]
    out = np.empty(a.shape[:-1], np.float32)
    out[good] = np.partition(a[good], k, axis=-1)[..., k]
    out[~good] = _robust_median(a[~good])  # only the rows with NaN (slow path)
    return out


_RINGS: dict[int, np.ndarray] = {}


def _ring_index(size: int) -> np.ndarray:
    """Flat indices of the border ring (``_RING_WIDTH`` pixels) of a stamp."""
    if size not in _RINGS:
        width = min(_RING_WIDTH, max(1, size // 4))
        yy, xx = np.indices((size, size))
        edge = np.minimum(np.minimum(xx, yy), np.minimum(size - 1 - xx, size - 1 - yy))
        _RINGS[size] = np.flatnonzero(edge < width)
    return _RINGS[size]


class _Quiet:
    """Context manager that silences `RuntimeWarning` (e.g. all-NaN slices)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


def make_channels(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model channels from raw stamps.

    Parameters
    ----------
    planes : `numpy.ndarray`
        ``(N, 4, S, S)``: science, template, difference, difference variance
        (variance may be NaN everywhere when unknown).

    Returns
    -------
    x : `numpy.ndarray`
        ``(N, 4, S, S)`` float32 channels (`CHANNELS`).
    nan_fraction : `numpy.ndarray`
        ``(N,)`` fraction of pixels non-finite in science, template or
        difference.
    """
    planes = np.asarray(planes, dtype=np.float32)
    if planes.ndim != 4 or planes.shape[1] != 4:
        raise DiaDataError(
            "stamps must have shape (N, 4, S, S) = science, template, difference, variance; "
            f"got {planes.shape}"
        )
    n, _, size, _ = planes.shape
    images, var = planes[:, :3], planes[:, 3]
    finite = np.isfinite(images).all(axis=1)
    nan_fraction = 1.0 - finite.reshape(n, -1).mean(axis=1)
    # Background and noise from the border ring (away from the source).
    ring = _ring_index(size)
    with np.errstate(all="ignore"):
        border = images.reshape(n, 3, -1)[:, :, ring]
        background = _fast_median(border)  # (N, 3)
        background[~np.isfinite(background)] = 0.0
        var_border = var.reshape(n, -1)[:, ring]
        var_border = np.where(np.isfinite(var_border) & (var_border > 0), var_border, np.nan)
        sigma = np.sqrt(_fast_median(var_border))
        no_var = ~(np.isfinite(sigma) & (sigma > 0))
        if no_var.any():
            dev = np.abs(border[no_var, 2] - background[no_var, 2:3])
            sigma[no_var] = 1.4826 * _fast_median(dev)
        sigma[~(np.isfinite(sigma) & (sigma > 0))] = 1.0
        out = np.empty_like(planes)
        out[:, :3] = images - background[:, :, None, None]
        out[:, :3] *= (1.0 / sigma)[:, None, None, None]
        inv_sd = 1.0 / np.sqrt(var)
        out[:, 3] = images[:, 2] * inv_sd
        np.copyto(out[:, 3], out[:, 2], where=~np.isfinite(inv_sd))
    out = asinh_stretch(out, _ASINH_SOFTENING)
    return out, nan_fraction.astype(np.float32)


def cut_source_stamps(
    science: PixelPlanes,
    template: PixelPlanes,
    difference: PixelPlanes,
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    *,
    bad_mask_planes: Sequence[str] = ("BAD", "SAT", "NO_DATA", "SUSPECT"),
) -> StampSet:
    """Cut and prepare stamps of all sources at once.

    Parameters
    ----------
    science, template, difference : `~lsst.meas.ml.images.Exposure`
        The visit image, the template warped to it, and their difference,
        all on the same pixel grid (``difference.bbox``).
    x, y : `numpy.ndarray`
        Parent-frame source positions.
    size : `int`
        Stamp side in pixels.
    bad_mask_planes : `~collections.abc.Sequence` [`str`]
        Mask planes (of science or difference) that flag a stamp as masked.

    Returns
    -------
    stamps : `StampSet`
        Model channels and flags of every source, in input order.
    """
    science, template, difference = (PixelPlanes.from_image(i) for i in (science, template, difference))
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    for name, exp in (("visit image", science), ("template", template)):
        if exp.bbox != difference.bbox:
            raise DiaDataError(
                f"The {name} covers {exp.bbox} but the difference image covers {difference.bbox}; "
                "the classifier needs all three on one pixel grid (use the warped template)."
            )
    known = [p for p in bad_mask_planes if difference.has_plane(p)]
    bits = difference.get_plane_bitmask(*known) if known else 0
    return stampset_from(cut_raw_stamps(science, template, difference, x, y, size), bits)


def derived_template(science: PixelPlanes, difference: PixelPlanes) -> PixelPlanes:
    """Derive the PSF-matched template as the visit image minus the difference image.

    A difference image is ``science - K * template``, so this is the template
    convolved with the matching kernel ``K``, on the visit's pixel grid: what
    a repository without a per-detector template (Data Preview 1) still
    holds.  Pixels are in nJy; the variance is the visit image's (the channel
    preparation uses only the difference image's variance); the mask is the
    union of both masks.

    Parameters
    ----------
    science : `~lsst.meas.ml.images.PixelPlanes`
        The visit image.
    difference : `~lsst.meas.ml.images.PixelPlanes`
        The difference image, on the same pixel grid.

    Returns
    -------
    template : `~lsst.meas.ml.images.PixelPlanes`
        The derived template, calibrated to nJy (``photo_calib`` 1), with the
        difference image's PSF.

    Raises
    ------
    DiaDataError
        If the two images are not on the same pixel grid.
    """
    if science.bbox != difference.bbox:
        raise DiaDataError(
            f"The visit image covers {science.bbox} but the difference image covers {difference.bbox}; "
            "a template cannot be derived from images on different pixel grids."
        )
    image = science.image_njy().astype(np.float32) - difference.image_njy().astype(np.float32)
    variance = np.asarray(science.variance, np.float32) * np.float32(science.photo_calib**2)
    return dataclasses.replace(
        science,
        image=image,
        variance=variance,
        mask=science.mask,
        photo_calib=1.0,
        psf=difference.psf,
        metadata={"TEMPLATE": "visit image - difference image"},
    )


def cut_raw_stamps(
    science: PixelPlanes,
    template: PixelPlanes,
    difference: PixelPlanes,
    x: np.ndarray,
    y: np.ndarray,
    size: int,
) -> Any:
    """Cut raw stamps (NaN off the image) of six channels.

    The channels are science, template, difference (nJy), difference
    variance (nJy**2), difference mask and science mask (as float32).

    Parameters
    ----------
    science, template, difference : `~lsst.meas.ml.images.PixelPlanes`
        The visit image, the template and the difference image, on the
        pixel grid of ``difference``.
    x, y : `numpy.ndarray`
        Parent-frame source positions.
    size : `int`
        Stamp side in pixels.

    Returns
    -------
    stamps : `~lsst.meas.ml.cutouts.Stamps`
        The calibrated raw stamps.
    """
    stamps = cut_stamps(
        [
            science.image,
            template.image,
            difference.image,
            difference.variance,
            difference.mask,
            science.mask,
        ],
        x,
        y,
        size,
        xy0=difference.xy0,
        fill=np.nan,
    )
    # Calibrate the stamps, not the images (nJy; a no-op when photo_calib is 1).
    for k, exp in enumerate((science, template, difference)):
        if exp.photo_calib != 1.0:
            stamps.data[:, k] *= np.float32(exp.photo_calib)
    if difference.photo_calib != 1.0:
        stamps.data[:, 3] *= np.float32(difference.photo_calib) ** 2
    return stamps


def stampset_from(stamps: Any, bad_mask_bits: int = 0) -> StampSet:
    """Make a `StampSet` from `~lsst.meas.ml.cutouts.Stamps`.

    The first four channels of the stamps are science, template, difference
    and variance; further channels are integer masks (cut as float32, exact
    below 2**24).

    Parameters
    ----------
    stamps : `~lsst.meas.ml.cutouts.Stamps`
        Raw stamps (e.g. from `cut_raw_stamps`).
    bad_mask_bits : `int`, optional
        Mask bits that set ``masked``.
    """
    n = len(stamps.data)
    chans, nan_fraction = make_channels(stamps.data[:, :4])
    masked = np.zeros(n, bool)
    if bad_mask_bits and stamps.data.shape[1] > 4:
        bits = np.zeros((n, stamps.size, stamps.size), np.int64)
        for k in range(4, stamps.data.shape[1]):
            bits |= np.nan_to_num(stamps.data[:, k]).astype(np.int64)
        masked = ((bits & bad_mask_bits) != 0).reshape(n, -1).any(axis=1)
    return StampSet(
        x=chans,
        nan_fraction=nan_fraction,
        edge=np.asarray(stamps.edge, bool),
        offimage=np.asarray(stamps.offimage, bool),
        masked=masked,
    )


def bad_psf(exposure: PixelPlanes, *, min_fwhm: float = 0.8, max_fwhm: float = 15.0) -> bool:
    """Tell whether an exposure's PSF is missing or implausible.

    Parameters
    ----------
    exposure : `~lsst.meas.ml.images.PixelPlanes`
        The image whose PSF is checked.
    min_fwhm, max_fwhm : `float`, optional
        Plausible range of the PSF FWHM, in pixels.

    Returns
    -------
    bad : `bool`
        `True` when the FWHM is not finite (no PSF) or outside the range.
    """
    fwhm = exposure.psf_fwhm_pixels()
    return not (np.isfinite(fwhm) and min_fwhm <= fwhm <= max_fwhm)
