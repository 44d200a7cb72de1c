"""Pixel planes: the flat view of an image that cutouts and models read.

Images live in the Butler as Rubin's own ``lsst.images`` types
(`lsst.images.VisitImage`, `lsst.images.DifferenceImage`,
`lsst.images.MaskedImage`) under daf_butler's storage classes; inside the full
stack an ``ExposureF`` dataset reaches a task through the stack's converters
(``VisitImage.from_legacy``).  `PixelPlanes` is what those objects look like
to the stamp code: NumPy image, variance and mask arrays (views, not copies),
the mask's plane-to-bit map, the parent-frame origin, a PSF image, the band,
and the image's `lsst.images.SkyProjection` (a full WCS in parent-frame
pixels).  `PixelPlanes.from_image` builds one from any ``lsst.images`` masked
image; the simulation and the alert reader build them from arrays and turn
them into ``lsst.images`` objects with `lsst.meas.ml.stack_images`.

Pixel coordinates follow the stack's convention: the planes cover the
parent-frame box ``bbox`` (``x0, y0, width, height``); array index ``[j, i]``
is parent pixel ``(x0 + i, y0 + j)``; pixel centres are integers.  An
optional astropy ``wcs`` is in *local* array coordinates (zero-based), as the
simulation makes it; ``sky_projection`` is in parent-frame coordinates.
Mask planes may be named in the stack's current spelling (``SATURATED``) or
the older one (``SAT``): lookups accept both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import MeasMlUserError

__all__ = [
    "Box",
    "DEFAULT_MASK_PLANES",
    "ImageError",
    "PixelPlanes",
    "shift_wcs",
]


class ImageError(MeasMlUserError, ValueError):
    """Raised for an inconsistent exposure or an impossible request on it."""


#: Mask planes and bits, as the stack defines them for visit images.
DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}


@dataclasses.dataclass(frozen=True)
class Box:
    """An integer pixel box in the parent frame: ``[x0, x0+width) x [y0, y0+height)``."""

    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ImageError(f"Box has a negative size: {self}")

    @property
    def x1(self) -> int:
        """One past the last column."""
        return self.x0 + self.width

    @property
    def y1(self) -> int:
        """One past the last row."""
        return self.y0 + self.height

    @property
    def shape(self) -> tuple[int, int]:
        """NumPy shape ``(height, width)``."""
        return (self.height, self.width)

    @property
    def is_empty(self) -> bool:
        return self.width == 0 or self.height == 0

    def intersection(self, other: Box) -> Box:
        """Return the overlap of two boxes.

        Parameters
        ----------
        other : `Box`
            The other box.

        Returns
        -------
        overlap : `Box`
            The overlap, possibly empty; its corner is the larger of the two
            lower-left corners.
        """
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def contains(self, other: Box) -> bool:
        return other.x0 >= self.x0 and other.y0 >= self.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    def local_slices(self, sub: Box) -> tuple[slice, slice]:
        """Return array slices selecting ``sub`` from an array covering ``self``.

        Parameters
        ----------
        sub : `Box`
            The box to select (not checked to lie inside ``self``).

        Returns
        -------
        rows, cols : `slice`
            The row and column slices.
        """
        return (
            slice(sub.y0 - self.y0, sub.y1 - self.y0),
            slice(sub.x0 - self.x0, sub.x1 - self.x0),
        )

    @classmethod
    def from_center(cls, x: float, y: float, size: int) -> Box:
        """Return the ``size`` x ``size`` box centred on pixel ``(round(x), round(y))``.

        Parameters
        ----------
        x, y : `float`
            The centre, in the parent frame (rounded half up).
        size : `int`
            The side of the box, in pixels.

        Returns
        -------
        box : `Box`
            The box; for an even ``size`` the centre pixel is the one right
            of and above the middle.
        """
        half = size // 2
        return cls(int(np.floor(x + 0.5)) - half, int(np.floor(y + 0.5)) - half, size, size)

    def to_stack(self) -> Any:
        """Return the same box as an `lsst.images.Box`.

        That is the type of the Butler's ``bbox`` read parameter.

        Returns
        -------
        box : `lsst.images.Box`
            The converted box.
        """
        import lsst.images as li

        return li.Box.factory[self.y0 : self.y1, self.x0 : self.x1]

    @classmethod
    def coerce(cls, value: Any) -> Box:
        """Convert a box-like value to a `Box`.

        Parameters
        ----------
        value : `~typing.Any`
            A `Box`, a 4-sequence ``(x0, y0, width, height)``, a mapping with
            those keys, an object with ``getMinX/getMinY/getWidth/getHeight``
            (an afw or sphgeom-style box) or an `lsst.images.Box`.

        Returns
        -------
        box : `Box`
            The box (``value`` itself if it is a `Box`).

        Raises
        ------
        ImageError
            If ``value`` cannot be interpreted as a box.
        """
        if isinstance(value, Box):
            return value
        if isinstance(value, Mapping):
            return cls(int(value["x0"]), int(value["y0"]), int(value["width"]), int(value["height"]))
        if hasattr(value, "getMinX"):
            return cls(value.getMinX(), value.getMinY(), value.getWidth(), value.getHeight())
        if hasattr(value, "x") and hasattr(getattr(value, "x"), "start"):  # an lsst.images.Box
            return cls(value.x.start, value.y.start, value.x.size, value.y.size)
        try:
            x0, y0, w, h = value
        except (TypeError, ValueError):
            raise ImageError(
                f"Cannot interpret {value!r} as a pixel box; give Box(x0, y0, width, height)."
            ) from None
        return cls(int(x0), int(y0), int(w), int(h))


@dataclasses.dataclass
class PixelPlanes:
    """The pixel planes of an image, with what the stamp code needs to know.

    Attributes
    ----------
    image : `numpy.ndarray`
        2-d float32 pixel values, in the units given by ``photo_calib``
        (``nJy`` per pixel value; 1.0 means the image is already in nJy).
    mask : `numpy.ndarray`, optional
        2-d integer bit mask; planes are named by ``mask_planes``.
    variance : `numpy.ndarray`, optional
        2-d float32 variance of ``image``.
    wcs : `astropy.wcs.WCS`, optional
        Celestial WCS in local (zero-based array) coordinates.
    sky_projection : `lsst.images.SkyProjection`, optional
        Full WCS in parent-frame coordinates (used before ``wcs``).
    psf : `numpy.ndarray`, optional
        Odd-sized image of the PSF at the centre of the exposure, sum 1.
    band : `str`, optional
        Abstract filter name (``u``, ``g``, ``r``, ``i``, ``z``, ``y``).
    photo_calib : `float`
        Number of nJy per unit of ``image``.
    xy0 : `tuple` [`int`, `int`]
        Parent-frame pixel of ``image[0, 0]``.
    mask_planes : `dict` [`str`, `int`]
        Mask plane name to bit number.
    metadata : `dict`
        Free-form header cards carried through I/O.
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    variance: np.ndarray | None = None
    wcs: Any = None
    sky_projection: Any = None
    psf: np.ndarray | None = None
    band: str | None = None
    photo_calib: float = 1.0
    xy0: tuple[int, int] = (0, 0)
    mask_planes: dict[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MASK_PLANES))
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image)
        if self.image.ndim != 2:
            raise ImageError(f"Image must be 2-d, got shape {self.image.shape}.")
        if self.mask is None:
            self.mask = np.zeros(self.image.shape, dtype=np.int32)
        if self.variance is None:
            self.variance = np.ones(self.image.shape, dtype=np.float32)
        self.mask = np.asarray(self.mask)
        self.variance = np.asarray(self.variance)
        for name, plane in (("mask", self.mask), ("variance", self.variance)):
            if plane.shape != self.image.shape:
                raise ImageError(
                    f"Image {name} shape {plane.shape} does not match image shape "
                    f"{self.image.shape}; image, mask and variance must have one shape."
                )
        if self.psf is not None:
            self.psf = np.asarray(self.psf, dtype=np.float32)
            if self.psf.ndim != 2 or self.psf.shape[0] % 2 == 0 or self.psf.shape[1] % 2 == 0:
                raise ImageError(f"PSF image must be 2-d with odd sides, got shape {self.psf.shape}.")
        self.xy0 = (int(self.xy0[0]), int(self.xy0[1]))

    # ------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        """The parent-frame box this exposure covers."""
        return Box(self.xy0[0], self.xy0[1], self.image.shape[1], self.image.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    def get_plane_bitmask(self, *names: str) -> int:
        """Return the OR of the bits of the named mask planes.

        Parameters
        ----------
        *names : `str`
            Mask plane names, in either spelling.

        Returns
        -------
        bitmask : `int`
            The bit mask (0 without names).

        Raises
        ------
        ImageError
            If a plane is not in the mask.
        """
        value = 0
        for name in names:
            bit = self.plane_bit(name)
            if bit is None:
                raise ImageError(f"Unknown mask plane {name!r}; this image has {sorted(self.mask_planes)}.")
            value |= 1 << bit
        return value

    def plane_bit(self, name: str) -> int | None:
        """Return the bit of a mask plane given in either spelling.

        Parameters
        ----------
        name : `str`
            The plane name, in the v2 or the legacy spelling.

        Returns
        -------
        bit : `int` or `None`
            The bit number, or `None` if the mask has no such plane.
        """
        if name in self.mask_planes:
            return self.mask_planes[name]
        from .stack_images import LEGACY_PLANE_NAMES, to_v2_plane_name

        for alias in (to_v2_plane_name(name), *(k for k, v in LEGACY_PLANE_NAMES.items() if v.name == name)):
            if alias in self.mask_planes:
                return self.mask_planes[alias]
        return None

    def has_plane(self, name: str) -> bool:
        """Test whether the mask has a plane.

        Parameters
        ----------
        name : `str`
            The plane name, in either spelling.

        Returns
        -------
        has : `bool`
            `True` if the mask has the plane.
        """
        return self.plane_bit(name) is not None

    def image_njy(self) -> np.ndarray:
        """Image in nJy (a view when ``photo_calib`` is 1)."""
        if self.photo_calib == 1.0:
            return self.image
        return self.image * np.float32(self.photo_calib)

    def psf_fwhm_pixels(self) -> float:
        """FWHM of the PSF image from its second moments (NaN without a PSF)."""
        if self.psf is None:
            return float("nan")
        p = np.clip(self.psf.astype(np.float64), 0, None)
        tot = p.sum()
        if not np.isfinite(tot) or tot <= 0:
            return float("nan")
        yy, xx = np.indices(p.shape)
        cx, cy = (xx * p).sum() / tot, (yy * p).sum() / tot
        sigma2 = 0.5 * (((xx - cx) ** 2 * p).sum() + ((yy - cy) ** 2 * p).sum()) / tot
        return float(2.3548 * np.sqrt(sigma2))

    # ------------------------------------------------------------------
    def subset(self, bbox: Any) -> PixelPlanes:
        """Return a copy restricted to ``bbox``.

        Parameters
        ----------
        bbox : `Box` or box-like
            The parent-frame box to keep (anything `Box.coerce` accepts).

        Returns
        -------
        subset : `PixelPlanes`
            A copy of the planes inside ``bbox``, with the WCS shifted and
            ``xy0`` set to the box corner.

        Raises
        ------
        ImageError
            If ``bbox`` does not lie inside the image.
        """
        box = Box.coerce(bbox)
        if not self.bbox.contains(box):
            raise ImageError(
                f"Requested bbox {box} is not inside the exposure's bbox {self.bbox}; "
                "clip it with Box.intersection first."
            )
        rows, cols = self.bbox.local_slices(box)
        return dataclasses.replace(
            self,
            image=self.image[rows, cols].copy(),
            mask=self.mask[rows, cols].copy(),
            variance=self.variance[rows, cols].copy(),
            wcs=shift_wcs(self.wcs, cols.start, rows.start),
            sky_projection=self.sky_projection,
            xy0=(box.x0, box.y0),
            mask_planes=dict(self.mask_planes),
            metadata=dict(self.metadata),
        )

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Convert parent-frame pixel positions to sky positions.

        The full WCS (SIP included) is used.

        Parameters
        ----------
        x, y : `numpy.ndarray`
            Pixel positions in the parent frame.

        Returns
        -------
        ra, dec : `numpy.ndarray`
            Sky positions, in degrees.

        Raises
        ------
        ImageError
            If the image has no WCS.
        """
        if self.sky_projection is not None:
            coord = self.sky_projection.pixel_to_sky(x=np.asarray(x, float), y=np.asarray(y, float))
            return np.asarray(coord.ra.deg), np.asarray(coord.dec.deg)
        if self.wcs is None:
            raise ImageError("Image has no WCS.")
        x = np.asarray(x, dtype=float) - self.xy0[0]
        y = np.asarray(y, dtype=float) - self.xy0[1]
        ra, dec = self.wcs.all_pix2world(x, y, 0)
        return np.asarray(ra), np.asarray(dec)

    @classmethod
    def from_image(cls, image: Any) -> PixelPlanes:
        """Return the planes of an ``lsst.images`` masked image (views, no copies).

        Parameters
        ----------
        image : `lsst.images.MaskedImage`
            Or a subclass: `lsst.images.VisitImage`,
            `lsst.images.DifferenceImage`, `lsst.images.cells.CellCoadd`.
            A `PixelPlanes` is returned as it is.

        Returns
        -------
        planes : `PixelPlanes`
            Image in its own unit, converted to nJy by ``photo_calib`` when the
            unit is another flux density; the PSF image is the PSF model
            evaluated at the centre of the image (`None` without a PSF).

        Raises
        ------
        ImageError
            For an object that is not an ``lsst.images`` masked image (an afw
            ``PixelPlanes`` outside the full stack, say), naming the way out.
        """
        if isinstance(image, PixelPlanes):
            return image
        try:
            import lsst.images as li
        except ImportError as exc:  # pragma: no cover - lsst-images is a dependency
            raise ImageError("lsst-images is needed to read images.") from exc
        if not isinstance(image, li.MaskedImage):
            raise ImageError(
                f"Expected an lsst.images masked image (VisitImage, DifferenceImage, MaskedImage), got "
                f"{type(image).__module__}.{type(image).__name__}. Inside the full stack ask the Butler "
                "for the VisitImage/DifferenceImage storage class; without afw read afw-written files with "
                "lsst.meas.ml.stack_images.read_afw_masked_image."
            )
        from .stack_images import packed_mask

        bbox = image.bbox
        calib = 1.0
        unit = image.unit
        if unit is not None:
            import astropy.units as u

            try:
                calib = float((1.0 * unit).to(u.nJy).value)
            except u.UnitConversionError:
                calib = 1.0
        mask, bits = packed_mask(image.mask)
        psf = band = None
        if isinstance(image, li.VisitImage):
            band = image.band
            try:
                kernel = image.psf.compute_kernel_image(x=bbox.x.center, y=bbox.y.center)
                psf = np.asarray(kernel.array, dtype=np.float32)
                if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
                    psf = None
            except Exception:  # a PSF that cannot be read or evaluated: flagged downstream
                psf = None
        return cls(
            image=image.image.array,
            mask=mask,
            variance=image.variance.array,
            sky_projection=image.sky_projection,
            psf=psf,
            band=band,
            photo_calib=calib,
            xy0=(bbox.x.start, bbox.y.start),
            mask_planes=bits,
            metadata=dict(getattr(image, "metadata", None) or {}),
        )


def shift_wcs(wcs: Any, dx: float, dy: float) -> Any:
    """Return a copy of an astropy WCS whose local pixel origin moves by ``(dx, dy)``.

    Used when cutting: the pixel that was ``(dx, dy)`` becomes ``(0, 0)``.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS` or `None`
        The WCS to shift.
    dx, dy : `float`
        The shift of the origin, in pixels.

    Returns
    -------
    shifted : `astropy.wcs.WCS` or `None`
        A shifted copy (with SIP, if any, shifted too), or `None` if ``wcs``
        is `None`.
    """
    if wcs is None or (dx == 0 and dy == 0):
        return None if wcs is None else wcs.deepcopy()
    new = wcs.deepcopy()
    new.wcs.crpix = new.wcs.crpix - np.array([dx, dy], dtype=float)
    if new.sip is not None:
        new.sip = type(new.sip)(
            new.sip.a, new.sip.b, new.sip.ap, new.sip.bp, new.sip.crpix - np.array([dx, dy], dtype=float)
        )
    return new
