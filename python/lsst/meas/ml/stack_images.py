"""Build ``lsst.images`` objects from plain arrays, without ``lsst.afw``.

This module turns plain numpy planes plus an astropy FITS WCS into
`lsst.images.VisitImage`, `lsst.images.DifferenceImage` and
`lsst.images.MaskedImage` objects, and back again into the flat arrays the
machine-learning code consumes.

*Conventions:*

* Arrays are indexed ``[y, x]``.  ``(x0, y0)`` is the parent-frame (detector
  or tract) pixel coordinate of ``array[0, 0]``.
* The astropy WCS passed in is expressed in *local* zero-based array
  coordinates (``fits_wcs.pixel_to_world(0, 0)`` is the centre of
  ``array[0, 0]``), exactly as a FITS header's ``CRPIX`` refers to the first
  array pixel.  The returned `lsst.images.SkyProjection` instead takes
  *parent-frame* coordinates.
* Mask plane dictionaries use the legacy (afw) plane names (``BAD``, ``SAT``,
  ``INTRP``, ``CR``, ``EDGE``, ``DETECTED``, ``DETECTED_NEGATIVE``,
  ``SUSPECT``, ``NO_DATA``...).  They are stored under the ``lsst.images``
  names (``SAT`` -> ``SATURATED``, ``INTRP`` -> ``INTERPOLATED``,
  ``CR`` -> ``COSMIC_RAY``, ``EDGE`` -> ``DETECTION_EDGE``), which are what
  ``read_legacy`` and butler conversions of afw data produce too.  Lookups
  in this module accept either spelling.
"""

from __future__ import annotations

__all__ = (
    "LEGACY_PLANE_NAMES",
    "STANDARD_LEGACY_PLANES",
    "coadd_frame",
    "make_detector",
    "make_difference_image",
    "make_mask",
    "make_masked_image",
    "make_observation_info",
    "make_psf",
    "make_sky_projection",
    "make_visit_image",
    "packed_mask",
    "estimate_fwhm_pixels",
    "read_afw_masked_image",
    "to_masked_image",
    "to_v2_plane_name",
    "to_visit_image",
)

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import astropy.io.fits as fits
import astropy.units as u
import astropy.wcs
import lsst.images as li
import numpy as np
import numpy.typing as npt
from astro_metadata_translator import ObservationInfo
from astropy.time import Time
from lsst.images import cameras, psfs
from lsst.images._transforms import _ast  # backend-neutral AST wrapper (astshim or starlink-pyast)

FWHM_PER_SIGMA: float = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""Ratio of a Gaussian's FWHM to its standard deviation."""

STANDARD_LEGACY_PLANES: tuple[str, ...] = (
    "BAD",
    "SAT",
    "INTRP",
    "CR",
    "EDGE",
    "DETECTED",
    "DETECTED_NEGATIVE",
    "SUSPECT",
    "NO_DATA",
)
"""Legacy mask planes that every mask built here carries (in this bit
order)."""

LEGACY_PLANE_NAMES: dict[str, li.MaskPlane] = dict(li.get_legacy_difference_image_mask_planes())
"""Legacy plane name -> ``lsst.images`` `~lsst.images.MaskPlane` (superset of
the visit-image planes plus ``DETECTED_NEGATIVE``, ``SAT_TEMPLATE``,
``HIGH_VARIANCE``, ``STREAK``)."""

_V2_TO_LEGACY: dict[str, str] = {plane.name: legacy for legacy, plane in LEGACY_PLANE_NAMES.items()}


def to_v2_plane_name(name: str) -> str:
    """Return the ``lsst.images`` name of a mask plane.

    Parameters
    ----------
    name : `str`
        Legacy (afw) or ``lsst.images`` plane name.

    Returns
    -------
    name : `str`
        ``lsst.images`` plane name (unknown names are returned unchanged).
    """
    plane = LEGACY_PLANE_NAMES.get(name)
    return plane.name if plane is not None else name


# ---------------------------------------------------------------------------
# Frames and sky projections
# ---------------------------------------------------------------------------


def _box(x0: int, y0: int, shape: Sequence[int]) -> li.Box:
    """Return the parent-frame box of an array with origin ``(x0, y0)``.

    Parameters
    ----------
    x0, y0
        Parent-frame coordinates of ``array[0, 0]``.
    shape
        Array shape ``(ny, nx)``.
    """
    return li.Box.factory[y0 : y0 + int(shape[0]), x0 : x0 + int(shape[1])]


def coadd_frame(
    bbox: li.Box | None = None, *, skymap: str | None = None, tract: int | None = None
) -> li.TractFrame | li.GeneralFrame:
    """Return the pixel frame to use for a coadd or template.

    Parameters
    ----------
    bbox : `lsst.images.Box`, optional
        Bounding box of the full tract (required with ``skymap``/``tract``).
    skymap : `str`, optional
        Skymap name.
    tract : `int`, optional
        Tract ID.  When both ``skymap`` and ``tract`` are given a
        `lsst.images.TractFrame` is returned.

    Returns
    -------
    frame : `lsst.images.TractFrame` | `lsst.images.GeneralFrame`
        A tract frame, or a generic pixel frame (``GeneralFrame(unit=pix)``)
        when the tract is unknown.

    Raises
    ------
    TypeError
        If ``skymap`` and ``tract`` are given without ``bbox``.
    """
    if skymap is not None and tract is not None:
        if bbox is None:
            raise TypeError("A TractFrame needs the tract bounding box.")
        return li.TractFrame(skymap=skymap, tract=tract, bbox=bbox)
    return li.GeneralFrame(unit=u.pix)


def make_sky_projection(fits_wcs: astropy.wcs.WCS, bbox: li.Box, frame: Any) -> li.SkyProjection:
    """Convert a local-pixel astropy WCS into a parent-frame sky projection.

    Parameters
    ----------
    fits_wcs : `astropy.wcs.WCS`
        TAN or TAN-SIP WCS in local zero-based array coordinates.
    bbox : `lsst.images.Box`
        Parent-frame bounding box of the array; ``bbox.x.start`` and
        ``bbox.y.start`` are the ``x0``/``y0`` of ``array[0, 0]``.
    frame : `~typing.Any`
        Pixel frame: `lsst.images.DetectorFrame` for visit and difference
        images, `lsst.images.TractFrame` (or ``GeneralFrame(unit=pix)``) for
        coadds and templates.

    Returns
    -------
    projection : `lsst.images.SkyProjection`
        Projection whose ``pixel_to_sky(x=..., y=...)`` takes parent-frame
        pixel coordinates.
    """
    return li.SkyProjection.from_fits_wcs(
        fits_wcs, frame, pixel_bounds=bbox, x0=bbox.x.start, y0=bbox.y.start
    )


# ---------------------------------------------------------------------------
# Mask
# ---------------------------------------------------------------------------


def _mask_dtype(n_planes: int) -> np.dtype:
    """Return the smallest unsigned dtype holding ``n_planes`` bits.

    Parameters
    ----------
    n_planes
        Number of mask planes.
    """
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n_planes <= np.dtype(dtype).itemsize * 8:
            return np.dtype(dtype)
    return np.dtype(np.uint8)  # multi-element layout; still valid


def make_mask(
    mask_bits_by_plane: Mapping[str, npt.ArrayLike],
    shape: Sequence[int],
    *,
    x0: int = 0,
    y0: int = 0,
    planes: Iterable[str] = STANDARD_LEGACY_PLANES,
) -> li.Mask:
    """Build a mask from per-plane boolean arrays.

    Parameters
    ----------
    mask_bits_by_plane : `~collections.abc.Mapping` [`str`, `numpy.typing.ArrayLike`]
        Plane name (legacy or ``lsst.images`` spelling) -> 2-D boolean array.
    shape : `~collections.abc.Sequence` [`int`]
        Array shape ``(ny, nx)``.
    x0, y0 : `int`, optional
        Parent-frame coordinates of ``array[0, 0]``.
    planes : `~collections.abc.Iterable` [`str`], optional
        Planes always present in the schema (legacy names), in bit order;
        extra keys of ``mask_bits_by_plane`` are appended.

    Returns
    -------
    mask : `lsst.images.Mask`
        Mask whose dtype is the smallest unsigned integer holding all planes,
        so ``mask.array`` has shape ``(ny, nx, 1)`` for up to 64 planes.

    Raises
    ------
    ValueError
        If a plane of ``mask_bits_by_plane`` does not have shape ``shape``.
    """
    names: list[str] = []
    for name in [*planes, *mask_bits_by_plane]:
        v2 = to_v2_plane_name(name)
        if v2 not in names:
            names.append(v2)
    schema_planes = [
        LEGACY_PLANE_NAMES[_V2_TO_LEGACY[n]] if n in _V2_TO_LEGACY else li.MaskPlane(n, n) for n in names
    ]
    schema = li.MaskSchema(schema_planes, dtype=_mask_dtype(len(schema_planes)))
    mask = li.Mask(0, schema=schema, bbox=_box(x0, y0, shape))
    for name, bits in mask_bits_by_plane.items():
        array = np.asarray(bits, dtype=bool)
        if array.shape != tuple(shape):
            raise ValueError(f"Mask plane {name!r} has shape {array.shape}, expected {tuple(shape)}.")
        mask.set(to_v2_plane_name(name), array)
    return mask


# ---------------------------------------------------------------------------
# Visit metadata
# ---------------------------------------------------------------------------


def make_detector(
    instrument: str,
    detector_id: int,
    detector_name: str,
    bbox: li.Box,
    *,
    visit: int | None = None,
    pixel_size_mm: float = 0.01,
    plate_scale_arcsec_per_mm: float = 20.0,
    serial: str = "UNKNOWN",
    physical_type: str = "UNKNOWN",
) -> cameras.Detector:
    """Build a minimal, serializable `lsst.images.cameras.Detector`.

    Parameters
    ----------
    instrument : `str`
        Instrument (butler dimension) name.
    detector_id : `int`
        Detector ID.
    detector_name : `str`
        Detector name.
    bbox : `lsst.images.Box`
        Full detector bounding box (parent frame).
    visit : `int`, optional
        Visit ID the detector frame is tied to.
    pixel_size_mm : `float`, optional
        Pixel size in focal-plane millimetres.
    plate_scale_arcsec_per_mm : `float`, optional
        Nominal (distortion-free) plate scale for the field-angle frame.
    serial, physical_type : `str`, optional
        Descriptive attributes.

    Returns
    -------
    detector : `lsst.images.cameras.Detector`
        A detector centred on the boresight with no amplifiers and linear
        pixel -> focal plane -> field angle transforms.  Its ``frame`` equals
        ``DetectorFrame(instrument, visit, detector_id, bbox)``.
    """
    focal_plane = _ast.Frame(2, "Ident=FOCAL_PLANE,Domain=FOCAL_PLANE,Unit(1)=mm,Unit(2)=mm")
    frame_set = _ast.FrameSet(focal_plane)
    rad_per_mm = (plate_scale_arcsec_per_mm * u.arcsec).to_value(u.rad)
    field_angle = _ast.Frame(2, "Ident=FIELD_ANGLE,Domain=FIELD_ANGLE,Unit(1)=rad,Unit(2)=rad")
    frame_set.addFrame(1, _ast.ZoomMap(2, rad_per_mm), field_angle)
    cx, cy = (bbox.x.start + bbox.x.stop - 1) / 2.0, (bbox.y.start + bbox.y.stop - 1) / 2.0
    pixels = _ast.Frame(
        2,
        f"Ident=DETECTOR_{detector_id:03d},Domain=PIXELS,Unit(1)=pixel,Unit(2)=pixel,"
        f"Bottom(1)={bbox.x.start},Top(1)={bbox.x.stop},Bottom(2)={bbox.y.start},Top(2)={bbox.y.stop}",
    )
    frame_set.addFrame(1, _ast.ZoomMap(2, 1.0 / pixel_size_mm).then(_ast.ShiftMap([cx, cy])), pixels)
    frames = cameras.CameraFrameSet(instrument, frame_set)
    attributes = cameras.DetectorAttributes(
        name=detector_name,
        id=detector_id,
        type=cameras.DetectorType.SCIENCE,
        serial=serial,
        bbox=bbox,
        orientation=cameras.Orientation(
            focal_plane_x=0.0,
            focal_plane_y=0.0,
            focal_plane_z=0.0,
            pixel_reference_x=cx,
            pixel_reference_y=cy,
        ),
        pixel_size=pixel_size_mm,
        physical_type=physical_type,
    )
    return cameras.Detector(attributes, [], frames, visit=visit)


def make_observation_info(
    *,
    instrument: str,
    physical_filter: str,
    visit: int,
    detector_id: int,
    detector_name: str,
    mjd: float,
    exposure_time: float,
) -> ObservationInfo:
    """Build the `astro_metadata_translator.ObservationInfo` a visit needs.

    Parameters
    ----------
    instrument : `str`
        Instrument name.
    physical_filter : `str`
        Physical filter name.
    visit : `int`
        Visit ID (also used as the exposure ID).
    detector_id : `int`
        Detector ID.
    detector_name : `str`
        Detector name.
    mjd : `float`
        Exposure start, MJD (TAI).
    exposure_time : `float`
        Exposure time in seconds.

    Returns
    -------
    obs_info : `astro_metadata_translator.ObservationInfo`
        Observation info with begin/end times and exposure time filled in.
    """
    begin = Time(mjd, format="mjd", scale="tai")
    return ObservationInfo(
        instrument=instrument,
        physical_filter=physical_filter,
        exposure_id=visit,
        visit_id=visit,
        detector_num=detector_id,
        detector_name=detector_name,
        datetime_begin=begin,
        datetime_end=begin + exposure_time * u.s,
        exposure_time=exposure_time * u.s,
    )


def estimate_fwhm_pixels(psf_image: npt.ArrayLike) -> float:
    """Estimate a PSF FWHM from a postage stamp via second moments.

    Parameters
    ----------
    psf_image : `numpy.typing.ArrayLike`
        2-D PSF image (any normalization; negative pixels count as zero).

    Returns
    -------
    fwhm : `float`
        Gaussian-equivalent FWHM in pixels, ``2.3548 * sqrt((Ixx + Iyy)/2)``.
    """
    stamp = np.asarray(psf_image, dtype=np.float64)
    stamp = np.where(stamp > 0, stamp, 0.0)
    total = stamp.sum()
    y, x = np.indices(stamp.shape)
    xc, yc = (stamp * x).sum() / total, (stamp * y).sum() / total
    ixx = (stamp * (x - xc) ** 2).sum() / total
    iyy = (stamp * (y - yc) ** 2).sum() / total
    return float(FWHM_PER_SIGMA * math.sqrt(0.5 * (ixx + iyy)))


def make_psf(
    bbox: li.Box,
    *,
    fwhm_pixels: float | None = None,
    psf_image: npt.ArrayLike | None = None,
    stamp_size: int | None = None,
) -> psfs.GaussianPointSpreadFunction:
    """Build a Gaussian PSF from a FWHM or a PSF image.

    Parameters
    ----------
    bbox : `lsst.images.Box`
        Region where the PSF is valid (the image bbox).
    fwhm_pixels : `float`, optional
        FWHM in pixels.
    psf_image : `numpy.typing.ArrayLike`, optional
        PSF stamp; its second-moment FWHM is used if no FWHM is given.
    stamp_size : `int`, optional
        Odd stamp size; default ``2 * ceil(4 sigma) + 1`` (at least 11).

    Returns
    -------
    psf : `lsst.images.psfs.GaussianPointSpreadFunction`
        Spatially constant circular Gaussian.  Only Gaussian, PSFEx and Piff
        PSFs can be serialized with a `lsst.images.VisitImage`; there is no
        image-based PSF class.

    Raises
    ------
    TypeError
        If neither ``fwhm_pixels`` nor ``psf_image`` is given.
    """
    if fwhm_pixels is None:
        if psf_image is None:
            raise TypeError("Provide fwhm_pixels or psf_image.")
        fwhm_pixels = estimate_fwhm_pixels(psf_image)
    sigma = float(fwhm_pixels) / FWHM_PER_SIGMA
    if stamp_size is None:
        stamp_size = max(11, 2 * math.ceil(4.0 * sigma) + 1)
    return psfs.GaussianPointSpreadFunction(sigma, bbox, stamp_size)


# ---------------------------------------------------------------------------
# Image builders
# ---------------------------------------------------------------------------


def _image_planes(
    image: npt.ArrayLike, variance: npt.ArrayLike, bbox: li.Box, unit: u.UnitBase | None
) -> tuple[li.Image, li.Image]:
    """Wrap science and variance arrays as `lsst.images.Image` objects.

    Parameters
    ----------
    image, variance
        2-D arrays with shape ``bbox.shape``.
    bbox
        Parent-frame bounding box.
    unit
        Image unit (variance gets ``unit**2``).
    """
    img = li.Image(np.asarray(image, dtype=np.float32), bbox=bbox, unit=unit)
    var = li.Image(np.asarray(variance, dtype=np.float32), bbox=bbox, unit=None if unit is None else unit**2)
    return img, var


def make_masked_image(
    image: npt.ArrayLike,
    mask_bits_by_plane: Mapping[str, npt.ArrayLike],
    variance: npt.ArrayLike,
    *,
    x0: int,
    y0: int,
    fits_wcs: astropy.wcs.WCS,
    frame: Any | None = None,
    unit: u.UnitBase | None = u.nJy,
) -> li.MaskedImage:
    """Build a `lsst.images.MaskedImage` (templates, coadds).

    Parameters
    ----------
    image : `numpy.typing.ArrayLike`
        2-D float array ``[y, x]``.
    mask_bits_by_plane : `~collections.abc.Mapping` [`str`, `numpy.typing.ArrayLike`]
        Plane name -> 2-D boolean array.
    variance : `numpy.typing.ArrayLike`
        2-D float variance array ``[y, x]``.
    x0, y0 : `int`
        Parent-frame coordinates of ``image[0, 0]``.
    fits_wcs : `astropy.wcs.WCS`
        WCS in local zero-based array coordinates.
    frame : `~typing.Any`, optional
        Pixel frame; defaults to ``GeneralFrame(unit=pix)``.
    unit : `astropy.units.UnitBase` or `None`, optional
        Image unit.

    Returns
    -------
    masked_image : `lsst.images.MaskedImage`
        Masked image with a sky projection attached to all planes.
    """
    shape = np.shape(image)
    bbox = _box(x0, y0, shape)
    if frame is None:
        frame = coadd_frame()
    img, var = _image_planes(image, variance, bbox, unit)
    mask = make_mask(mask_bits_by_plane, shape, x0=x0, y0=y0)
    return li.MaskedImage(
        img, mask=mask, variance=var, sky_projection=make_sky_projection(fits_wcs, bbox, frame)
    )


def _visit_kwargs(
    image: npt.ArrayLike,
    mask_bits_by_plane: Mapping[str, npt.ArrayLike],
    variance: npt.ArrayLike,
    *,
    x0: int,
    y0: int,
    fits_wcs: astropy.wcs.WCS,
    band: str,
    physical_filter: str,
    instrument: str,
    visit: int,
    detector_id: int,
    detector_name: str,
    mjd: float,
    exposure_time: float,
    psf_fwhm_pixels: float | None = None,
    psf_image: npt.ArrayLike | None = None,
    detector_bbox: li.Box | None = None,
    unit: u.UnitBase = u.nJy,
) -> dict[str, Any]:
    """Return constructor keyword arguments shared by visit/difference images.

    Parameters
    ----------
    image, mask_bits_by_plane, variance, x0, y0, fits_wcs, band, \
physical_filter, instrument, visit, detector_id, detector_name, mjd, \
exposure_time, psf_fwhm_pixels, psf_image, detector_bbox, unit
        See `make_visit_image`.
    """
    shape = np.shape(image)
    bbox = _box(x0, y0, shape)
    if detector_bbox is None:
        detector_bbox = bbox
    detector = make_detector(instrument, detector_id, detector_name, detector_bbox, visit=visit)
    img, var = _image_planes(image, variance, bbox, unit)
    return dict(
        image=img,
        mask=make_mask(mask_bits_by_plane, shape, x0=x0, y0=y0),
        variance=var,
        sky_projection=make_sky_projection(fits_wcs, bbox, detector.frame),
        obs_info=make_observation_info(
            instrument=instrument,
            physical_filter=physical_filter,
            visit=visit,
            detector_id=detector_id,
            detector_name=detector_name,
            mjd=mjd,
            exposure_time=exposure_time,
        ),
        psf=make_psf(bbox, fwhm_pixels=psf_fwhm_pixels, psf_image=psf_image),
        detector=detector,
        band=band,
    )


def make_visit_image(
    image: npt.ArrayLike,
    mask_bits_by_plane: Mapping[str, npt.ArrayLike],
    variance: npt.ArrayLike,
    *,
    x0: int,
    y0: int,
    fits_wcs: astropy.wcs.WCS,
    band: str,
    physical_filter: str,
    instrument: str,
    visit: int,
    detector_id: int,
    detector_name: str,
    mjd: float,
    exposure_time: float,
    psf_fwhm_pixels: float | None = None,
    psf_image: npt.ArrayLike | None = None,
    detector_bbox: li.Box | None = None,
    unit: u.UnitBase = u.nJy,
) -> li.VisitImage:
    """Build a `lsst.images.VisitImage` from plain arrays.

    Parameters
    ----------
    image : `numpy.typing.ArrayLike`
        2-D float array ``[y, x]`` (stored as float32).
    mask_bits_by_plane : `~collections.abc.Mapping` [`str`, `numpy.typing.ArrayLike`]
        Plane name (legacy spelling fine) -> 2-D boolean array.
    variance : `numpy.typing.ArrayLike`
        2-D float variance array ``[y, x]`` (stored as float32).
    x0, y0 : `int`
        Detector-frame coordinates of ``image[0, 0]``.
    fits_wcs : `astropy.wcs.WCS`
        TAN(-SIP) WCS in local zero-based array coordinates.
    band : `str`
        Band (``"r"``); required.
    physical_filter : `str`
        Physical filter (``"r_57"``); required.
    instrument : `str`
        Instrument (butler dimension) name.
    visit : `int`
        Visit ID.
    detector_id : `int`
        Detector ID.
    detector_name : `str`
        Detector name.
    mjd : `float`
        Exposure start (MJD, TAI).
    exposure_time : `float`
        Exposure time in seconds.
    psf_fwhm_pixels : `float`, optional
        PSF FWHM in pixels (Gaussian PSF).
    psf_image : `numpy.typing.ArrayLike`, optional
        PSF stamp used to estimate the FWHM when ``psf_fwhm_pixels`` is
        `None`.
    detector_bbox : `lsst.images.Box`, optional
        Full detector bbox; defaults to the image bbox.
    unit : `astropy.units.UnitBase`, optional
        Image unit (required by `VisitImage`; default nJy).

    Returns
    -------
    visit_image : `lsst.images.VisitImage`
        The assembled visit image.
    """
    return li.VisitImage(
        **_visit_kwargs(
            image,
            mask_bits_by_plane,
            variance,
            x0=x0,
            y0=y0,
            fits_wcs=fits_wcs,
            band=band,
            physical_filter=physical_filter,
            instrument=instrument,
            visit=visit,
            detector_id=detector_id,
            detector_name=detector_name,
            mjd=mjd,
            exposure_time=exposure_time,
            psf_fwhm_pixels=psf_fwhm_pixels,
            psf_image=psf_image,
            detector_bbox=detector_bbox,
            unit=unit,
        )
    )


def make_difference_image(
    image: npt.ArrayLike,
    mask_bits_by_plane: Mapping[str, npt.ArrayLike],
    variance: npt.ArrayLike,
    *,
    kernel: Any | None = None,
    templates: Iterable[li.DifferenceImageTemplateInfo] | None = None,
    **kwargs: Any,
) -> li.DifferenceImage:
    """Build a `lsst.images.DifferenceImage` from plain arrays.

    Parameters
    ----------
    image : array-like
        2-D difference pixels ``[y, x]`` (stored as float32).
    mask_bits_by_plane : `~collections.abc.Mapping` [`str`, array-like]
        Plane name (legacy spelling fine) -> 2-D boolean array.
    variance : array-like
        2-D variance ``[y, x]`` (stored as float32).
    kernel : `lsst.images.convolution_kernels.ConvolutionKernel`, optional
        The template-matching kernel; accessing ``.kernel`` raises
        `AttributeError` when absent.
    templates : iterable of `lsst.images.DifferenceImageTemplateInfo`, optional
        Template records; ``.templates`` raises `AttributeError` when absent.
    **kwargs
        The keyword arguments of `make_visit_image` (position, WCS, band,
        identity of the observation, PSF, unit).

    Returns
    -------
    difference_image : `lsst.images.DifferenceImage`
        The assembled difference image.
    """
    return li.DifferenceImage(
        **_visit_kwargs(image, mask_bits_by_plane, variance, **kwargs), kernel=kernel, templates=templates
    )


# ---------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------


def packed_mask(mask: li.Mask) -> tuple[np.ndarray, dict[str, int]]:
    """Return the mask as one 2-D integer plane plus its bit assignments.

    Parameters
    ----------
    mask : `lsst.images.Mask`
        Mask with at most 64 planes (including placeholders).

    Returns
    -------
    array : `numpy.ndarray`
        2-D unsigned integer array where bit ``n`` is schema plane ``n``.
        A view of ``mask.array[..., 0]`` when the schema fits one element.
    bits : `dict` [`str`, `int`]
        Plane name (``lsst.images`` spelling) -> bit index.

    Raises
    ------
    ValueError
        If a multi-element mask has more than 64 planes.
    """
    schema = mask.schema
    bits = {plane.name: n for n, plane in enumerate(schema) if plane is not None}
    if schema.mask_size == 1:
        return mask.array[..., 0], bits
    stride = li.MaskSchema.bits_per_element(schema.dtype)
    if len(schema) > 64:
        raise ValueError("Mask has more than 64 planes.")
    packed = np.zeros(mask.array.shape[:2], dtype=np.uint64)
    for index in range(schema.mask_size):
        packed |= mask.array[..., index].astype(np.uint64) << np.uint64(index * stride)
    return packed, bits


# ---------------------------------------------------------------------------
# I/O helpers
# ---------------------------------------------------------------------------


def read_afw_masked_image(path: str, frame: Any | None = None) -> li.MaskedImage:
    """Read an afw-written ``MaskedImage``/``PixelPlanes`` FITS file without afw.

    Parameters
    ----------
    path : `str`
        File with HDUs 1=IMAGE, 2=MASK (``MP_*`` cards), 3=VARIANCE (read by
        position, not EXTNAME).
    frame : `~typing.Any`, optional
        Pixel frame for the sky projection built from the IMAGE header's WCS;
        `None` for no projection.

    Returns
    -------
    masked_image : `lsst.images.MaskedImage`
        Masked image with ``lsst.images`` plane names; the schema holds
        exactly the planes named by the file's ``MP_*`` cards (unknown ones
        keep their legacy name).
    """
    header = fits.getheader(path, 2)
    legacy_names = [key.removeprefix("MP_") for key in header if key.startswith("MP_")]
    plane_map = {name: LEGACY_PLANE_NAMES.get(name, li.MaskPlane(name, name)) for name in legacy_names}
    return li.MaskedImage.read_legacy(path, plane_map=plane_map, fits_wcs_frame=frame)


# ---------------------------------------------------------------------------
# From the project's PixelPlanes
# ---------------------------------------------------------------------------


def _plane_dict(planes: Any) -> dict[str, np.ndarray]:
    """Per-plane boolean arrays of a `~lsst.meas.ml.images.PixelPlanes` mask."""
    mask = np.asarray(planes.mask)
    return {name: (mask & (1 << bit)) != 0 for name, bit in planes.mask_planes.items()}


def _nJy(planes: Any) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(planes.image, dtype=np.float32)
    variance = np.asarray(planes.variance, dtype=np.float32)
    if planes.photo_calib != 1.0:
        image = image * np.float32(planes.photo_calib)
        variance = variance * np.float32(planes.photo_calib**2)
    return image, variance


def to_masked_image(planes: Any, frame: Any | None = None) -> li.MaskedImage:
    """Convert `~lsst.meas.ml.images.PixelPlanes` to a `lsst.images.MaskedImage`.

    For templates and coadds.

    Parameters
    ----------
    planes : `~lsst.meas.ml.images.PixelPlanes`
        The planes, with a local astropy ``wcs``.
    frame : `~typing.Any`, optional
        Pixel frame; defaults to ``GeneralFrame(unit=pix)``.

    Returns
    -------
    masked_image : `lsst.images.MaskedImage`
        The masked image, in nJy.
    """
    image, variance = _nJy(planes)
    return make_masked_image(
        image,
        _plane_dict(planes),
        variance,
        x0=planes.xy0[0],
        y0=planes.xy0[1],
        fits_wcs=planes.wcs,
        frame=frame,
    )


def to_visit_image(
    planes: Any,
    *,
    instrument: str,
    visit: int,
    detector_id: int,
    detector_name: str,
    physical_filter: str,
    mjd: float,
    exposure_time: float,
    detector_bbox: li.Box | None = None,
    difference: bool = False,
) -> li.VisitImage:
    """Convert `~lsst.meas.ml.images.PixelPlanes` to a `lsst.images.VisitImage`.

    The PSF is stored as a Gaussian of the same second-moment FWHM.

    Parameters
    ----------
    planes : `~lsst.meas.ml.images.PixelPlanes`
        The planes, with a local astropy ``wcs``, a PSF image and a band.
    instrument : `str`
        Instrument (butler dimension) name.
    visit : `int`
        Visit ID.
    detector_id : `int`
        Detector ID.
    detector_name : `str`
        Detector name.
    physical_filter : `str`
        Physical filter name.
    mjd : `float`
        Exposure start (MJD, TAI).
    exposure_time : `float`
        Exposure time in seconds.
    detector_bbox : `lsst.images.Box`, optional
        Full detector bbox; defaults to the image bbox.
    difference : `bool`, optional
        Build a `lsst.images.DifferenceImage` instead.

    Returns
    -------
    visit_image : `lsst.images.VisitImage` or `lsst.images.DifferenceImage`
        The image, in nJy.

    Raises
    ------
    ValueError
        If ``planes`` lacks a band, a PSF image or a WCS.
    """
    if planes.band is None or planes.psf is None or planes.wcs is None:
        raise ValueError("A visit image needs a band, a PSF image and a WCS.")
    image, variance = _nJy(planes)
    kwargs = dict(
        x0=planes.xy0[0],
        y0=planes.xy0[1],
        fits_wcs=planes.wcs,
        band=planes.band,
        physical_filter=physical_filter,
        instrument=instrument,
        visit=visit,
        detector_id=detector_id,
        detector_name=detector_name,
        mjd=mjd,
        exposure_time=exposure_time,
        psf_image=planes.psf,
        detector_bbox=detector_bbox,
    )
    make = make_difference_image if difference else make_visit_image
    return make(image, _plane_dict(planes), variance, **kwargs)
