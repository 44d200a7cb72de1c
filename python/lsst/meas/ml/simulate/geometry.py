"""Sky geometry of the simulated survey: tract, patches, visits, detectors.

All WCSs are gnomonic (TAN) `astropy.wcs.WCS` objects in local, zero-based
array coordinates, as `lsst.meas.ml.images.Exposure` expects.  The tract
frame is the parent frame of the coadds (patch ``xy0`` is the patch origin
in it); each detector is its own parent frame starting at ``(0, 0)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.time import Time
from astropy.wcs import WCS

from ..images import Box
from .config import SurveyConfig

__all__ = [
    "DetectorGeometry",
    "PatchGeometry",
    "SurveyGeometry",
    "VisitGeometry",
    "day_obs_of",
    "make_tan_wcs",
    "sky_polygon",
]


def make_tan_wcs(
    ra: float, dec: float, crpix_x: float, crpix_y: float, scale_arcsec: float, rotation_deg: float = 0.0
) -> WCS:
    """Make a TAN WCS with its tangent point at a zero-based pixel.

    North is up and East left for ``rotation_deg = 0``.

    Parameters
    ----------
    ra, dec : `float`
        The tangent point, in degrees.
    crpix_x, crpix_y : `float`
        The zero-based pixel of the tangent point.
    scale_arcsec : `float`
        The pixel scale, in arcsec per pixel.
    rotation_deg : `float`, optional
        The rotation of the pixel axes, in degrees.

    Returns
    -------
    wcs : `astropy.wcs.WCS`
        The WCS, in zero-based array coordinates.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [crpix_x + 1.0, crpix_y + 1.0]
    s = scale_arcsec / 3600.0
    t = math.radians(rotation_deg)
    wcs.wcs.cd = np.array([[-s * math.cos(t), s * math.sin(t)], [s * math.sin(t), s * math.cos(t)]])
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    return wcs


def day_obs_of(mjd: float) -> int:
    """Return Rubin's observing day (``YYYYMMDD`` of TAI minus 12 h) of an MJD.

    Parameters
    ----------
    mjd : `float`
        The time (MJD, TAI).

    Returns
    -------
    day_obs : `int`
        The observing day as the integer ``YYYYMMDD``.
    """
    return int(Time(mjd - 0.5, format="mjd", scale="tai").strftime("%Y%m%d"))


def sky_polygon(wcs: WCS, box: Box, xy0: tuple[int, int] = (0, 0)) -> list[tuple[float, float]]:
    """Return the sky positions of the four outer corners of a parent-frame box.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        The WCS, in zero-based array coordinates.
    box : `~lsst.meas.ml.images.Box`
        The box, in the parent frame.
    xy0 : `tuple` [`int`, `int`], optional
        The parent-frame pixel of the WCS's array origin.

    Returns
    -------
    corners : `list` [`tuple` [`float`, `float`]]
        ``(ra, dec)`` of each corner, in degrees.
    """
    x = np.array([box.x0, box.x1, box.x1, box.x0], dtype=float) - 0.5 - xy0[0]
    y = np.array([box.y0, box.y0, box.y1, box.y1], dtype=float) - 0.5 - xy0[1]
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    return list(zip(ra.tolist(), dec.tolist()))


@dataclasses.dataclass
class PatchGeometry:
    """One patch: its index, inner box (objects it owns) and outer box (its coadd)."""

    index: int
    cell_x: int
    cell_y: int
    inner: Box
    outer: Box


@dataclasses.dataclass
class DetectorGeometry:
    """One detector of one visit: its box (parent frame from 0) and WCS."""

    detector: int
    box: Box
    wcs: WCS


@dataclasses.dataclass
class VisitGeometry:
    """One visit: id, band, time, pointing and its detectors."""

    index: int
    visit: int
    band: str
    mjd: float
    day_obs: int
    seq_num: int
    night: int
    ra: float
    dec: float
    rotation_deg: float
    detectors: list[DetectorGeometry]


class SurveyGeometry:
    """Tract, patch and visit layout for a `SurveyConfig`.

    Parameters
    ----------
    config : `SurveyConfig`
        Survey parameters.
    rng : `numpy.random.Generator`
        Source of the dithers and rotations.
    """

    def __init__(self, config: SurveyConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.tract_box = Box(0, 0, config.tract_width, config.tract_height)
        self.tract_wcs = make_tan_wcs(
            config.tract_ra,
            config.tract_dec,
            0.5 * config.tract_width - 0.5,
            0.5 * config.tract_height - 0.5,
            config.pixel_scale,
        )
        self.patches: list[PatchGeometry] = []
        for cy in range(config.n_patch_y):
            for cx in range(config.n_patch_x):
                size = config.patch_size
                inner = Box(cx * size, cy * size, size, size)
                b = config.patch_border
                outer = Box(inner.x0 - b, inner.y0 - b, inner.width + 2 * b, inner.height + 2 * b)
                outer = outer.intersection(self.tract_box)
                self.patches.append(PatchGeometry(cy * config.n_patch_x + cx, cx, cy, inner, outer))
        self.visits = self._make_visits(rng)

    # ------------------------------------------------------------------
    def patch_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the index of the patch whose inner box holds tract pixel ``(x, y)``.

        Parameters
        ----------
        x, y : `numpy.ndarray`
            Tract pixel positions.

        Returns
        -------
        patch : `numpy.ndarray`
            The patch index of each position; -1 outside every patch.
        """
        c = self.config
        cx = np.floor((np.asarray(x) + 0.5) / c.patch_size).astype(int)
        cy = np.floor((np.asarray(y) + 0.5) / c.patch_size).astype(int)
        inside = (cx >= 0) & (cx < c.n_patch_x) & (cy >= 0) & (cy < c.n_patch_y)
        return np.where(inside, cy * c.n_patch_x + cx, -1)

    def _make_visits(self, rng: np.random.Generator) -> list[VisitGeometry]:
        c = self.config
        visits = []
        order = [band for _ in range(c.visits_per_band) for band in c.visit_bands]
        cx, cy = 0.5 * c.tract_width - 0.5, 0.5 * c.tract_height - 0.5
        seq_per_day: dict[int, int] = {}
        for k, band in enumerate(order):
            night, slot = divmod(k, c.visits_per_night)
            mjd = c.start_mjd + night * c.night_spacing_days + slot * c.visit_spacing_minutes / 1440.0
            day_obs = day_obs_of(mjd)
            seq = seq_per_day.get(day_obs, 0) + 1
            seq_per_day[day_obs] = seq
            dx, dy = rng.uniform(-c.max_dither, c.max_dither, 2)
            rot = float(rng.uniform(-c.max_rotation_deg, c.max_rotation_deg))
            ra, dec = (float(v) for v in self.tract_wcs.wcs_pix2world(cx + dx, cy + dy, 0))
            detectors = []
            for d in range(c.n_detectors):
                # Focal-plane centre in this detector's zero-based pixel frame.
                crpix_x = 0.5 * c.focal_plane_width - 0.5 - d * (c.detector_width + c.detector_gap)
                crpix_y = 0.5 * c.detector_height - 0.5
                wcs = make_tan_wcs(ra, dec, crpix_x, crpix_y, c.pixel_scale, rot)
                detectors.append(DetectorGeometry(d, Box(0, 0, c.detector_width, c.detector_height), wcs))
            visit_id = day_obs * 100000 + seq
            visits.append(VisitGeometry(k, visit_id, band, mjd, day_obs, seq, night, ra, dec, rot, detectors))
        return visits
