"""Drawing sources, noise and detector defects into pixel arrays.

Images are in nJy per pixel (``photo_calib = 1``).  The noise model has a
sky term set by a 5-sigma point-source depth and a source term: a
``gain`` in nJy per photo-electron makes ``variance = sky_var +
model * gain``, which also sets the saturation level from a full well.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import galsim
import numpy as np
from astropy.wcs import WCS

from ..images import DEFAULT_MASK_PLANES
from .config import mag_to_flux
from .galaxies import GSPARAMS

__all__ = [
    "NoiseModel",
    "Source",
    "add_cosmic_rays",
    "add_hot_columns",
    "add_known_bad_columns",
    "add_nodata_rectangle",
    "apply_saturation",
    "bit",
    "draw_psf_image",
    "draw_sources",
    "local_jacobian",
    "make_psf",
]


def bit(name: str) -> int:
    """Return the mask value of a plane of `DEFAULT_MASK_PLANES`.

    Parameters
    ----------
    name : `str`
        The plane name.

    Returns
    -------
    value : `int`
        The plane's bit, as a mask value (``1 << bit``).
    """
    return 1 << DEFAULT_MASK_PLANES[name]


def local_jacobian(wcs: WCS) -> galsim.JacobianWCS:
    """Return the GalSim Jacobian of a TAN WCS.

    The Jacobian is in arcsec per pixel, with u towards West and v North.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        The WCS (its pixel scale matrix is used).

    Returns
    -------
    jacobian : `galsim.JacobianWCS`
        The local Jacobian.
    """
    cd = wcs.pixel_scale_matrix * 3600.0
    return galsim.JacobianWCS(-cd[0, 0], -cd[0, 1], cd[1, 0], cd[1, 1])


def make_psf(fwhm: float, beta: float, extra_sigma: float = 0.0) -> galsim.GSObject:
    """Make a Moffat PSF, optionally convolved with a Gaussian.

    Parameters
    ----------
    fwhm : `float`
        The FWHM of the Moffat profile, in arcsec.
    beta : `float`
        The Moffat index.
    extra_sigma : `float`, optional
        The sigma of the Gaussian, in arcsec (none if not positive).

    Returns
    -------
    psf : `galsim.GSObject`
        The PSF profile.
    """
    psf = galsim.Moffat(beta=beta, fwhm=fwhm, gsparams=GSPARAMS)
    if extra_sigma > 0:
        psf = galsim.Convolve(psf, galsim.Gaussian(sigma=extra_sigma, gsparams=GSPARAMS), gsparams=GSPARAMS)
    return psf


def draw_psf_image(psf: galsim.GSObject, jacobian: galsim.BaseWCS, size: int = 31) -> np.ndarray:
    """Draw the pixelised PSF (sum 1) on a ``size`` x ``size`` grid.

    Parameters
    ----------
    psf : `galsim.GSObject`
        The PSF profile.
    jacobian : `galsim.BaseWCS`
        The local WCS of the pixels.
    size : `int`, optional
        The side of the grid, in pixels (odd, for a centred PSF).

    Returns
    -------
    image : `numpy.ndarray`
        The float32 PSF image, normalised to sum 1.
    """
    image = psf.withFlux(1.0).drawImage(nx=size, ny=size, wcs=jacobian, dtype=np.float64).array
    return (image / image.sum()).astype(np.float32)


@dataclasses.dataclass
class NoiseModel:
    """Sky noise and gain of one image.

    Attributes
    ----------
    sigma_sky : `float`
        Sky noise per pixel (nJy).
    gain : `float`
        Number of nJy per photo-electron (source Poisson variance is ``flux * gain``).
    saturation : `float`
        Pixel value (nJy) above which pixels saturate.
    """

    sigma_sky: float
    gain: float
    saturation: float

    @classmethod
    def from_depth(
        cls,
        depth_mag: float,
        psf_image: np.ndarray,
        sky_electrons: float,
        full_well: float,
        n_exposures: float = 1.0,
    ) -> NoiseModel:
        """Make the noise giving a 5-sigma PSF-flux depth of ``depth_mag`` with a PSF.

        Parameters
        ----------
        depth_mag : `float`
            The 5-sigma PSF-flux depth, in AB magnitudes.
        psf_image : `numpy.ndarray`
            The PSF image (sum 1), for its effective number of pixels.
        sky_electrons : `float`
            The sky level per pixel, in photo-electrons.
        full_well : `float`
            The full-well depth, in photo-electrons.
        n_exposures : `float`, optional
            The number of exposures (> 1 for coadds); it lowers the gain: a
            coadd of N exposures has N times the electrons per nJy.

        Returns
        -------
        noise : `NoiseModel`
            The noise model.
        """
        n_eff = 1.0 / float(np.sum(psf_image.astype(np.float64) ** 2))
        sigma = float(mag_to_flux(depth_mag)) / (5.0 * math.sqrt(n_eff))
        gain = sigma / math.sqrt(sky_electrons)
        saturation = (full_well - sky_electrons) * gain
        return cls(sigma_sky=sigma, gain=gain / n_exposures, saturation=saturation)

    def realise(self, model: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Add noise to a noiseless model image.

        Parameters
        ----------
        model : `numpy.ndarray`
            The noiseless image, in nJy.
        rng : `numpy.random.Generator`
            The random number generator.

        Returns
        -------
        image : `numpy.ndarray`
            The noisy image.
        variance : `numpy.ndarray`
            The variance of each pixel (sky plus source Poisson noise).
        """
        variance = self.sigma_sky**2 + np.clip(model, 0.0, None) * self.gain
        image = model + rng.standard_normal(model.shape) * np.sqrt(variance)
        return image, variance


@dataclasses.dataclass
class Source:
    """One thing to draw: a profile (before the PSF) at a local pixel position."""

    x: float
    y: float
    profile: galsim.GSObject
    size: int


def draw_sources(
    model: np.ndarray,
    sources: Iterable[Source],
    psf: galsim.GSObject,
    jacobian: galsim.BaseWCS,
    convolve: Callable[[galsim.GSObject, galsim.GSObject], galsim.GSObject] | None = None,
) -> None:
    """Add PSF-convolved sources into a float64 ``model`` array (in place).

    Point sources (`galsim.DeltaFunction`) are drawn as the PSF itself.
    Positions are zero-based local pixel coordinates.

    Parameters
    ----------
    model : `numpy.ndarray`
        The C-contiguous float64 image to add to.
    sources : `~collections.abc.Iterable` [`Source`]
        The sources; each is drawn on a stamp of its ``size``.
    psf : `galsim.GSObject`
        The PSF profile.
    jacobian : `galsim.BaseWCS`
        The local WCS of the pixels.
    convolve : `~collections.abc.Callable`, optional
        Ignored: every source is convolved with ``psf`` by GalSim.

    Raises
    ------
    ValueError
        If ``model`` is not a C-contiguous float64 array.
    """
    if model.dtype != np.float64 or not model.flags.c_contiguous:
        raise ValueError("draw_sources needs a C-contiguous float64 model array.")
    full = galsim.ImageD(model, xmin=1, ymin=1)
    for src in sources:
        if isinstance(src.profile, galsim.DeltaFunction):
            flux = src.profile.flux
            if flux == 0:
                continue
            obj = psf.withFlux(flux)
        else:
            obj = galsim.Convolve(src.profile, psf, gsparams=GSPARAMS)
        n = src.size
        ix, iy = int(math.floor(src.x + 0.5)), int(math.floor(src.y + 0.5))
        half = n // 2
        bounds = galsim.BoundsI(ix + 1 - half, ix + 1 + half, iy + 1 - half, iy + 1 + half)
        overlap = bounds & full.bounds
        if not overlap.isDefined():
            continue
        stamp = galsim.ImageD(bounds, wcs=jacobian)
        obj.drawImage(image=stamp, offset=(src.x - ix, src.y - iy), add_to_image=False)
        full[overlap] += stamp[overlap]


def apply_saturation(image: np.ndarray, mask: np.ndarray, level: float) -> None:
    """Clip pixels at or above ``level`` and flag them SAT (in place).

    Parameters
    ----------
    image : `numpy.ndarray`
        The image.
    mask : `numpy.ndarray`
        The mask of the image.
    level : `float`
        The saturation level.
    """
    sat = image >= level
    image[sat] = level
    mask[sat] |= bit("SAT")


def add_nodata_rectangle(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    max_frac: float = 0.35,
) -> tuple[int, int, int, int]:
    """Blank a rectangle along one edge (NaN, NO_DATA), like vignetting or a missing amplifier.

    Parameters
    ----------
    image : `numpy.ndarray`
        The image (set to NaN in the box).
    variance : `numpy.ndarray`
        The variance (set to NaN in the box).
    mask : `numpy.ndarray`
        The mask (flagged NO_DATA in the box).
    rng : `numpy.random.Generator`
        The random number generator.
    max_frac : `float`, optional
        The largest length of the box, as a fraction of the side.

    Returns
    -------
    box : `tuple` [`int`, `int`, `int`, `int`]
        ``(x0, y0, width, height)`` of the blanked box.
    """
    h, w = image.shape
    side = int(rng.integers(4))
    depth = int(rng.integers(max(3, min(h, w) // 30), max(4, int(min(h, w) * 0.08))))
    if side in (0, 1):  # bottom/top strip
        length = int(rng.integers(max(2, w // 6), max(3, int(w * max_frac))))
        x0 = int(rng.integers(0, w - length + 1))
        y0 = 0 if side == 0 else h - depth
        box = (x0, y0, length, depth)
    else:  # left/right strip
        length = int(rng.integers(max(2, h // 6), max(3, int(h * max_frac))))
        y0 = int(rng.integers(0, h - length + 1))
        x0 = 0 if side == 2 else w - depth
        box = (x0, y0, depth, length)
    sl = (slice(box[1], box[1] + box[3]), slice(box[0], box[0] + box[2]))
    image[sl] = np.nan
    variance[sl] = np.nan
    mask[sl] |= bit("NO_DATA")
    return box


def add_cosmic_rays(
    image: np.ndarray,
    mask: np.ndarray,
    n: int,
    gain: float,
    rng: np.random.Generator,
    flagged_fraction: float = 0.6,
) -> list[tuple[float, float, float, float, float]]:
    """Add ``n`` cosmic-ray tracks (not PSF-convolved) in place.

    A fraction are flagged CR (found by the pipeline); the rest are left
    for image differencing to find.

    Parameters
    ----------
    image : `numpy.ndarray`
        The image, in nJy.
    mask : `numpy.ndarray`
        The mask of the image.
    n : `int`
        The number of tracks.
    gain : `float`
        The gain, in nJy per photo-electron.
    rng : `numpy.random.Generator`
        The random number generator.
    flagged_fraction : `float`, optional
        The probability that a track is flagged CR.

    Returns
    -------
    tracks : `list` [`tuple`]
        ``(x0, y0, x1, y1, total_nJy)`` per track.
    """
    h, w = image.shape
    tracks = []
    for _ in range(n):
        length = float(rng.uniform(0.0, 14.0))
        angle = float(rng.uniform(0.0, np.pi))
        x0, y0 = float(rng.uniform(2, w - 3)), float(rng.uniform(2, h - 3))
        x1, y1 = x0 + length * math.cos(angle), y0 + length * math.sin(angle)
        steps = max(2, int(length * 2) + 1)
        xs = np.clip(np.rint(np.linspace(x0, x1, steps)).astype(int), 0, w - 1)
        ys = np.clip(np.rint(np.linspace(y0, y1, steps)).astype(int), 0, h - 1)
        pix = np.unique(np.stack([ys, xs], axis=1), axis=0)
        electrons = rng.lognormal(math.log(900.0), 0.6, len(pix))
        values = electrons * gain
        image[pix[:, 0], pix[:, 1]] += values
        if rng.uniform() < flagged_fraction:
            mask[pix[:, 0], pix[:, 1]] |= bit("CR")
        tracks.append((float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1]), float(values.sum())))
    return tracks


def add_hot_columns(
    image: np.ndarray, n: int, sigma: float, rng: np.random.Generator, margin: int = 10
) -> list[tuple[int, int, int]]:
    """Add ``n`` unflagged hot column segments (a defect not in the defect list).

    Parameters
    ----------
    image : `numpy.ndarray`
        The image.
    n : `int`
        The number of segments.
    sigma : `float`
        The noise level; segments are 3.5 to 7 times brighter.
    rng : `numpy.random.Generator`
        The random number generator.
    margin : `int`, optional
        The number of columns left free at each side.

    Returns
    -------
    segments : `list` [`tuple` [`int`, `int`, `int`]]
        ``(column, y_start, y_stop)`` per segment.
    """
    h, w = image.shape
    cols = []
    for _ in range(n):
        col = int(rng.integers(margin, w - margin))
        length = int(rng.integers(max(5, h // 25), max(6, h // 10)))
        y0 = int(rng.integers(0, h - length))
        image[y0 : y0 + length, col] += float(rng.uniform(3.5, 7.0)) * sigma
        cols.append((col, y0, y0 + length))
    return cols


def add_known_bad_columns(
    image: np.ndarray, mask: np.ndarray, n: int, rng: np.random.Generator, margin: int = 10
) -> list[int]:
    """Add ``n`` known bad columns: flagged BAD and interpolated over (INTRP).

    Parameters
    ----------
    image : `numpy.ndarray`
        The image.
    mask : `numpy.ndarray`
        The mask of the image.
    n : `int`
        The number of columns.
    rng : `numpy.random.Generator`
        The random number generator.
    margin : `int`, optional
        The number of columns left free at each side.

    Returns
    -------
    columns : `list` [`int`]
        The bad columns.
    """
    h, w = image.shape
    cols = []
    for _ in range(n):
        col = int(rng.integers(margin, w - margin))
        image[:, col] = 0.5 * (image[:, col - 1] + image[:, col + 1])
        mask[:, col] |= bit("BAD") | bit("INTRP")
        cols.append(col)
    return cols
