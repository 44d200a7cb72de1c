"""The simulated mini-survey: coadds, visits, templates, differences, catalogs, truth.

`simulate_survey` runs everything in memory and returns a `SimulatedSurvey`;
`lsst.meas.ml.simulate.repo.build_repo` writes one into a Butler.

What is simulated:

* deep coadds of one tract in every band of ``config.coadd_bands``, one
  per patch (with overlaps), holding the static sky (galaxies, stars at
  their mean flux), sky and source noise, saturation, tract edges and a
  blanked region;
* visits in ``config.visit_bands``: per detector, a science image with its
  own PSF (the template PSF convolved with a Gaussian, the seeing),
  variable stars at their current flux, transients (supernova-like,
  hosted or not), trailed asteroids moving through the night (colours of
  their taxonomic class), cosmic rays (some flagged CR), hot columns, known
  bad columns (BAD + INTRP), slightly misregistered sources (subtraction
  dipoles), saturation, edges and vignetted blank regions;
* the template: the coadd warped to the detector (cubic spline);
* the difference: science minus the template convolved with the matching
  Gaussian kernel;
* DIA sources detected on the difference images, labelled by matching to
  the injected truth, and associated into DIA objects;
* the object table (measured = truth + noise), its truth and a spec-z
  sample biased to bright galaxies.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table, vstack
from scipy import ndimage

from ..images import PixelPlanes
from .config import ALL_BANDS, SurveyConfig, flux_to_mag, mag_to_flux
from .detect import PIXEL_FLAGS, associate, detect_sources, match_to_injections
from .galaxies import (
    MORPHOLOGY_CLASSES,
    draw_static_sky,
    galaxy_profile,
    stamp_size,
    table_columns,
    variable_factor,
)
from .geometry import DetectorGeometry, SurveyGeometry, VisitGeometry
from .render import (
    NoiseModel,
    Source,
    add_cosmic_rays,
    add_hot_columns,
    add_known_bad_columns,
    add_nodata_rectangle,
    apply_saturation,
    bit,
    draw_psf_image,
    draw_sources,
    local_jacobian,
    make_psf,
)
from .sed import ASTEROID_CLASSES, asteroid_colours, blackbody_colours

__all__ = [
    "ARTIFACT_KINDS",
    "DIA_LABELS",
    "OBJECT_ID_OFFSET",
    "SimulatedSurvey",
    "TRACT_ID",
    "VisitDetectorProducts",
    "simulate_catalog",
    "simulate_survey",
]

#: The one tract of the simulated sky map.
TRACT_ID = 0
#: Truth object ``i`` has ``objectId = OBJECT_ID_OFFSET + i``.
OBJECT_ID_OFFSET = 1_000_000_000
#: Labels of DIA sources in the truth tables.
DIA_LABELS: tuple[str, ...] = ("transient", "variable", "asteroid", "artifact")
#: Kinds of artifact (``none`` for real sources).  ``residual`` is a
#: detection matched to no injection (an imperfect subtraction, a noise peak).
ARTIFACT_KINDS: tuple[str, ...] = ("none", "cosmic_ray", "dipole", "bad_column", "saturation", "residual")
_REAL_LABELS = ("transient", "variable", "asteroid")
_SS_OBJECT_OFFSET = 5_000_000


def _rng(seed: int, *tags: Any) -> np.random.Generator:
    """An independent generator per stage, stable whatever the order of the stages."""
    key = zlib.crc32("/".join(str(t) for t in tags).encode())
    return np.random.default_rng([seed, key])


@dataclasses.dataclass
class VisitDetectorProducts:
    """Everything simulated for one (visit, detector)."""

    visit: int
    detector: int
    band: str
    mjd: float
    science: Exposure
    template: Exposure
    difference: Exposure
    dia_source: Table
    truth: Table


@dataclasses.dataclass
class SimulatedSurvey:
    """An in-memory simulated survey (see the module docstring)."""

    config: SurveyConfig
    geometry: SurveyGeometry
    truth_object: Table
    object: Table
    specz: Table
    coadds: dict[tuple[int, str], PixelPlanes]
    visit_products: list[VisitDetectorProducts]
    dia_object: Table
    transients: Table
    asteroids: Table
    timings: dict[str, float]

    @property
    def dia_source(self) -> Table:
        """All DIA sources of the survey in one table."""
        return vstack([p.dia_source for p in self.visit_products], metadata_conflicts="silent")

    @property
    def truth_dia_source(self) -> Table:
        """All DIA truth rows (detections and missed injections) in one table."""
        return vstack([p.truth for p in self.visit_products], metadata_conflicts="silent")

    def summary(self) -> dict[str, Any]:
        """Counts and timings, JSON-friendly."""
        truth = self.truth_dia_source
        det = truth[truth["detected"]]
        labels = {str(k): int(np.sum(det["label"] == k)) for k in DIA_LABELS}
        kinds = {str(k): int(np.sum(det["artifact_kind"] == k)) for k in ARTIFACT_KINDS if k != "none"}
        missed = {str(k): int(np.sum((~truth["detected"]) & (truth["label"] == k))) for k in _REAL_LABELS}
        return {
            "config": self.config.name,
            "seed": self.config.seed,
            "tract": TRACT_ID,
            "patches": self.config.n_patches,
            "coadd_bands": list(self.config.coadd_bands),
            "coadds": len(self.coadds),
            "visits": len(self.geometry.visits),
            "visit_detectors": len(self.visit_products),
            "truth_objects": len(self.truth_object),
            "objects": len(self.object),
            "specz": len(self.specz),
            "dia_sources": int(len(det)),
            "dia_objects": len(self.dia_object),
            "dia_labels": labels,
            "artifact_kinds": kinds,
            "missed_injections": missed,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


# ----------------------------------------------------------------------
# Static sky and coadds
# ----------------------------------------------------------------------
@dataclasses.dataclass
class _CoaddBand:
    band: str
    exposure: PixelPlanes  # the whole tract
    psf: Any
    noise: NoiseModel
    spline: np.ndarray  # cubic-spline coefficients of the NaN-free image


def _coadd_exposures_per_visit(config: SurveyConfig, band: str) -> float:
    return 10.0 ** (0.8 * (config.coadd_depth[band] - config.visit_depth[band]))


def _render_coadd(
    config: SurveyConfig, geom: SurveyGeometry, cols: dict[str, np.ndarray], band: str
) -> _CoaddBand:
    rng = _rng(config.seed, "coadd", band)
    psf = make_psf(config.coadd_seeing[band], config.psf_beta)
    jac = local_jacobian(geom.tract_wcs)
    psf_img = draw_psf_image(psf, jac)
    noise = NoiseModel.from_depth(
        config.coadd_depth[band],
        psf_img,
        config.sky_electrons[band],
        config.full_well_electrons,
        n_exposures=_coadd_exposures_per_visit(config, band),
    )
    shape = (config.tract_height, config.tract_width)
    model = np.zeros(shape)
    fwhm = config.coadd_seeing[band]
    sources = [
        Source(
            float(cols["x"][i]),
            float(cols["y"][i]),
            galaxy_profile(cols, i, band),
            stamp_size(cols, i, fwhm, config.pixel_scale, bright=cols[f"{band}_flux"][i] > 3e4),
        )
        for i in range(len(cols["x"]))
    ]
    draw_sources(model, sources, psf, jac)
    image, variance = noise.realise(model, rng)
    mask = np.zeros(shape, dtype=np.int32)
    e = config.edge_width
    edge = np.ones(shape, dtype=bool)
    edge[e:-e, e:-e] = False
    mask[edge] |= bit("EDGE")
    apply_saturation(image, mask, noise.saturation)
    if rng.uniform() < 0.7:
        add_nodata_rectangle(image, variance, mask, rng, max_frac=0.2)
    exposure = PixelPlanes(
        image=image.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=geom.tract_wcs,
        psf=psf_img,
        band=band,
        photo_calib=1.0,
        xy0=(0, 0),
        metadata={"MLSIM": True, "BAND": band, "TRACT": TRACT_ID, "PSF_FWHM": fwhm},
    )
    filled = np.where(np.isfinite(image), image, 0.0)
    spline = ndimage.spline_filter(filled, order=3, mode="mirror")
    return _CoaddBand(band, exposure, psf, noise, spline)


def _psf_sigma_pixels(psf_img: np.ndarray) -> float:
    p = np.clip(psf_img.astype(np.float64), 0, None)
    yy, xx = np.indices(p.shape)
    tot = p.sum()
    cx, cy = (xx * p).sum() / tot, (yy * p).sum() / tot
    return float(math.sqrt(0.5 * (((xx - cx) ** 2 + (yy - cy) ** 2) * p).sum() / tot))


@dataclasses.dataclass
class _BandPhotometry:
    psf: np.ndarray
    noise: NoiseModel
    mask: np.ndarray | None  # the tract's coadd mask, if images were drawn


def _measure_objects(
    config: SurveyConfig, geom: SurveyGeometry, truth: Table, bands: dict[str, _BandPhotometry],
    clip_to_tract: bool = True,
) -> tuple[Table, np.ndarray]:
    """The object table (truth + noise, Rubin ``object`` columns) and the detected mask."""
    rng = _rng(config.seed, "object-table")
    n = len(truth)
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    inside = (x >= -0.5) & (x < config.tract_width - 0.5) & (y >= -0.5) & (y < config.tract_height - 0.5)
    if not clip_to_tract:
        inside = np.ones(n, dtype=bool)
    ix = np.clip(np.floor(x + 0.5).astype(int), 0, config.tract_width - 1)
    iy = np.clip(np.floor(y + 0.5).astype(int), 0, config.tract_height - 1)
    bf = np.asarray(truth["bulge_fraction"])
    hlr = np.where(truth["is_star"], 0.0, bf * truth["bulge_hlr"] + (1 - bf) * truth["disk_hlr"])
    sigma_g = np.asarray(hlr) / 1.1774 / config.pixel_scale
    cols: dict[str, np.ndarray] = {}
    det_snr2 = np.zeros(n)
    for band in config.coadd_bands:
        cb = bands[band]
        sp = _psf_sigma_pixels(cb.psf)
        n_eff = 1.0 / float(np.sum(cb.psf.astype(np.float64) ** 2))
        flux = np.asarray(truth[f"{band}_flux"])
        psf_true = flux * 2 * sp**2 / (sigma_g**2 + 2 * sp**2)
        psf_err = np.sqrt(cb.noise.sigma_sky**2 * n_eff + np.clip(psf_true, 0, None) * cb.noise.gain)
        cm_err = np.sqrt(cb.noise.sigma_sky**2 * n_eff * (sigma_g**2 + sp**2) / sp**2 + flux * cb.noise.gain)
        psf_meas = psf_true + rng.standard_normal(n) * psf_err
        cm_meas = flux + rng.standard_normal(n) * cm_err
        pix_mask = cb.mask[iy, ix] if cb.mask is not None else np.zeros(n, dtype=np.int32)
        if cb.mask is None:  # no image: flag sources that would saturate
            peak = flux * 2 * sp**2 / (sigma_g**2 + 2 * sp**2) * float(cb.psf.max())
            pix_mask = np.where(peak > cb.noise.saturation, bit("SAT"), 0)
        dropped = rng.uniform(size=n) < config.missing_measurement_fraction
        missing = ((pix_mask & bit("NO_DATA")) != 0) | dropped
        flagged = missing | ((pix_mask & bit("SAT")) != 0)
        for arr in (psf_meas, psf_err, cm_meas, cm_err):
            arr[missing] = np.nan
        cols[f"{band}_psfFlux"] = psf_meas
        cols[f"{band}_psfFluxErr"] = psf_err
        cols[f"{band}_psfFlux_flag"] = flagged
        cols[f"{band}_cModelFlux"] = cm_meas
        cols[f"{band}_cModelFluxErr"] = cm_err
        cols[f"{band}_cModel_flag"] = flagged
        if band in ("g", "r", "i", "z"):
            det_snr2 += np.where(missing, 0.0, (psf_meas / psf_err) ** 2)
    detected = inside & (np.sqrt(det_snr2) > 6.0)
    # Measured centroids and the reference-band extendedness.
    snr = np.sqrt(det_snr2)
    ref_band = "i" if "i" in config.coadd_bands else config.coadd_bands[0]
    fwhm_px = config.coadd_seeing[ref_band] / config.pixel_scale
    pos_err = 0.5 * fwhm_px / np.clip(snr, 1.0, None) + np.where(truth["is_star"], 0.0, 0.05)
    xm = x + rng.standard_normal(n) * pos_err
    ym = y + rng.standard_normal(n) * pos_err
    ra, dec = geom.tract_wcs.wcs_pix2world(xm, ym, 0)
    ext = np.full(n, np.nan)
    for band in [b for b in ("r", "i") if b in config.coadd_bands]:
        ratio = cols[f"{band}_psfFlux"] / cols[f"{band}_cModelFlux"]
        ok = np.isfinite(ratio) & (cols[f"{band}_cModelFlux"] > 0) & (cols[f"{band}_psfFlux"] > 0)
        ext = np.where(ok, (ratio < 10 ** (-0.4 * 0.0164)).astype(float), ext)
    sel = np.nonzero(detected)[0]
    table = Table()
    table["objectId"] = (OBJECT_ID_OFFSET + np.asarray(truth["index"])[sel]).astype(np.int64)
    table["coord_ra"] = np.asarray(ra)[sel] * u.deg
    table["coord_dec"] = np.asarray(dec)[sel] * u.deg
    table["x"] = xm[sel] * u.pix
    table["y"] = ym[sel] * u.pix
    table["tract"] = np.full(len(sel), TRACT_ID, dtype=np.int64)
    table["patch"] = geom.patch_of(xm[sel], ym[sel]).astype(np.int64)
    table["detect_isPrimary"] = np.ones(len(sel), dtype=bool)
    table["refExtendedness"] = ext[sel]
    for band in config.coadd_bands:
        for suffix in ("psfFlux", "psfFluxErr", "cModelFlux", "cModelFluxErr"):
            table[f"{band}_{suffix}"] = cols[f"{band}_{suffix}"][sel] * u.nJy
        table[f"{band}_psfFlux_flag"] = cols[f"{band}_psfFlux_flag"][sel]
        table[f"{band}_cModel_flag"] = cols[f"{band}_cModel_flag"][sel]
    table.meta["tract"] = TRACT_ID
    table.meta["skymap"] = "mlsim"
    return table, detected


def _specz_sample(config: SurveyConfig, truth: Table, detected: np.ndarray) -> Table:
    rng = _rng(config.seed, "specz")
    imag = flux_to_mag(truth["i_flux"])
    p = config.specz_max_fraction / (1.0 + np.exp((imag - config.specz_bright_mag) / 0.5))
    p = p + config.specz_faint_fraction
    chosen = detected & ~np.asarray(truth["is_star"]) & (rng.uniform(size=len(truth)) < p)
    sel = np.nonzero(chosen)[0]
    z = np.asarray(truth["redshift"])[sel]
    err = 3e-4 * (1 + z)
    table = Table()
    table["objectId"] = (OBJECT_ID_OFFSET + np.asarray(truth["index"])[sel]).astype(np.int64)
    table["coord_ra"] = np.asarray(truth["ra"])[sel] * u.deg
    table["coord_dec"] = np.asarray(truth["dec"])[sel] * u.deg
    table["specz"] = z + rng.standard_normal(len(sel)) * err
    table["specz_err"] = err
    return table


def _truth_object_table(
    config: SurveyConfig, geom: SurveyGeometry, truth: Table, detected: np.ndarray
) -> Table:
    t = Table()
    t["objectId"] = (OBJECT_ID_OFFSET + np.asarray(truth["index"])).astype(np.int64)
    t["ra"] = np.asarray(truth["ra"]) * u.deg
    t["dec"] = np.asarray(truth["dec"]) * u.deg
    t["x"] = np.asarray(truth["x"]) * u.pix
    t["y"] = np.asarray(truth["y"]) * u.pix
    t["patch"] = geom.patch_of(truth["x"], truth["y"]).astype(np.int64)
    t["detected"] = detected
    for name in ("is_star", "morphology", "morphology_class", "redshift", "bulge_fraction", "bulge_sersic_n"):
        t[name] = truth[name]
    for name in ("bulge_hlr", "disk_hlr"):
        t[name] = np.asarray(truth[name]) * u.arcsec
    for name in ("bulge_q", "disk_q", "position_angle", "ebv", "n_clumps"):
        t[name] = truth[name]
    t["position_angle"].unit = u.rad
    t["temperature"] = np.asarray(truth["temperature"]) * u.K
    for band in ALL_BANDS:
        t[f"{band}_flux"] = np.asarray(truth[f"{band}_flux"]) * u.nJy
        t[f"{band}_bulge_flux"] = np.asarray(truth[f"{band}_bulge_flux"]) * u.nJy
        t[f"{band}_mag"] = flux_to_mag(truth[f"{band}_flux"]) * u.ABmag
    for name in ("is_variable", "var_amplitude", "var_period", "var_phase"):
        t[name] = truth[name]
    t.meta["morphology_classes"] = dict(MORPHOLOGY_CLASSES)
    return t


# ----------------------------------------------------------------------
# Time-domain populations
# ----------------------------------------------------------------------
def _footprint(config: SurveyConfig) -> tuple[float, float, float, float]:
    """Tract-pixel box ``(x0, x1, y0, y1)`` covered by (almost) every visit."""
    cx, cy = 0.5 * config.tract_width - 0.5, 0.5 * config.tract_height - 0.5
    hw, hh = 0.5 * config.focal_plane_width, 0.5 * config.detector_height
    return cx - hw, cx + hw, cy - hh, cy + hh


def _make_transients(config: SurveyConfig, geom: SurveyGeometry, truth: Table) -> Table:
    rng = _rng(config.seed, "transients")
    n = config.n_transients
    x0, x1, y0, y1 = _footprint(config)
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    hosts_ok = np.nonzero(
        (~np.asarray(truth["is_star"])) & (x > x0) & (x < x1) & (y > y0) & (y < y1)
        & (flux_to_mag(truth["i_flux"]) < 25.0)
    )[0]
    # One transient per host at most (while hosts last).
    wants_host = rng.uniform(size=n) < 0.75
    hosted = wants_host & (np.cumsum(wants_host) <= len(hosts_ok))
    host = np.full(n, -1)
    host[hosted] = rng.choice(hosts_ok, int(hosted.sum()), replace=False)
    tx = rng.uniform(x0, x1, n)
    ty = rng.uniform(y0, y1, n)
    offset = np.where(hosted, np.asarray(truth["disk_hlr"])[np.clip(host, 0, None)], 0.0) / config.pixel_scale
    tx = np.where(hosted, x[np.clip(host, 0, None)] + rng.normal(0, 0.7, n) * offset, tx)
    ty = np.where(hosted, y[np.clip(host, 0, None)] + rng.normal(0, 0.7, n) * offset, ty)
    ra, dec = geom.tract_wcs.wcs_pix2world(tx, ty, 0)
    mjds = [v.mjd for v in geom.visits]
    t = Table()
    t["transientId"] = np.arange(1, n + 1, dtype=np.int64)
    t["ra"] = np.asarray(ra)
    t["dec"] = np.asarray(dec)
    t["hostObjectId"] = np.where(host >= 0, OBJECT_ID_OFFSET + host, -1).astype(np.int64)
    t["t0"] = rng.uniform(min(mjds) - 6.0, max(mjds) + 4.0, n)
    t["peak_mag_r"] = rng.uniform(19.5, 23.3, n)
    t["temperature"] = rng.uniform(6000.0, 16000.0, n)
    t["rise_days"] = rng.uniform(4.0, 10.0, n)
    t["fall_days"] = rng.uniform(15.0, 35.0, n)
    colours = blackbody_colours(t["temperature"])
    peak = mag_to_flux(t["peak_mag_r"])
    for k, band in enumerate(ALL_BANDS):
        t[f"{band}_peak_flux"] = peak * 10 ** (-0.4 * colours[:, k])
    return t


def _transient_flux(tr: Table, band: str, mjd: float) -> np.ndarray:
    dt = mjd - np.asarray(tr["t0"])
    tau = np.where(dt < 0, tr["rise_days"], tr["fall_days"])
    return np.asarray(tr[f"{band}_peak_flux"]) * np.exp(-0.5 * (dt / tau) ** 2)


def _make_asteroids(config: SurveyConfig, geom: SurveyGeometry) -> Table:
    rng = _rng(config.seed, "asteroids")
    nights = sorted({v.night for v in geom.visits})
    rows = []
    x0, x1, y0, y1 = _footprint(config)
    classes = list(ASTEROID_CLASSES)
    probs = np.array([ASTEROID_CLASSES[c][0] for c in classes])
    probs = probs / probs.sum()
    for night in nights:
        mjd_mid = float(np.mean([v.mjd for v in geom.visits if v.night == night]))
        n = config.asteroids_per_night
        px = rng.uniform(x0, x1, n)
        py = rng.uniform(y0, y1, n)
        ra, dec = geom.tract_wcs.wcs_pix2world(px, py, 0)
        speed = rng.uniform(0.08, 0.40, n)  # deg/day
        angle = rng.normal(np.pi, 0.35, n)  # 0 = East; pi = West (retrograde near opposition)
        cls = rng.choice(classes, n, p=probs)
        rmag = rng.uniform(19.5, 23.2, n)
        colours = asteroid_colours(cls, rng)
        for k in range(n):
            row = {
                "ssObjectId": _SS_OBJECT_OFFSET + len(rows) + 1,
                "night": night,
                "mjd_ref": mjd_mid,
                "ra_ref": float(ra[k]),
                "dec_ref": float(dec[k]),
                "v_east": float(speed[k] * np.cos(angle[k])),
                "v_north": float(speed[k] * np.sin(angle[k])),
                "asteroid_class": str(cls[k]),
            }
            for j, band in enumerate(ALL_BANDS):
                row[f"{band}_flux"] = float(mag_to_flux(rmag[k] + colours[k, j]))
            rows.append(row)
    if not rows:
        return Table(names=("ssObjectId",), dtype=(np.int64,))
    table = Table(rows=rows)
    table["ssObjectId"] = table["ssObjectId"].astype(np.int64)
    return table


def _asteroid_positions(ast: Table, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    dt = mjd - np.asarray(ast["mjd_ref"])
    dec = np.asarray(ast["dec_ref"]) + np.asarray(ast["v_north"]) * dt
    ra = np.asarray(ast["ra_ref"]) + np.asarray(ast["v_east"]) * dt / np.cos(np.radians(dec))
    return ra, dec


# ----------------------------------------------------------------------
# Visits
# ----------------------------------------------------------------------
class _Injections:
    """Collects injected truth for one (visit, detector)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, label: str, kind: str, x0: float, y0: float, x1: float | None = None,
            y1: float | None = None, radius: float = 3.0, flux: float = float("nan"),
            object_id: int = -1, ss_object_id: int = -1, asteroid_class: str = "") -> None:
        self.rows.append(
            dict(label=label, kind=kind, x0=float(x0), y0=float(y0),
                 x1=float(x0 if x1 is None else x1), y1=float(y0 if y1 is None else y1),
                 radius=float(radius), flux=float(flux), object_id=int(object_id),
                 ss_object_id=int(ss_object_id), asteroid_class=asteroid_class)
        )

    def arrays(self) -> dict[str, np.ndarray]:
        keys = ("label", "kind", "x0", "y0", "x1", "y1", "radius", "flux", "object_id", "ss_object_id",
                "asteroid_class")
        if not self.rows:
            text = ("label", "kind", "asteroid_class")
            return {k: np.zeros(0, dtype="U16") if k in text else np.zeros(0)
                    for k in keys}
        return {k: np.array([r[k] for r in self.rows]) for k in keys}


def _warp_template(cb: _CoaddBand, geom: SurveyGeometry, det: DetectorGeometry) -> PixelPlanes:
    """The coadd resampled onto the detector's pixel grid."""
    h, w = det.box.shape
    jj, ii = np.mgrid[0:h, 0:w]
    ra, dec = det.wcs.wcs_pix2world(ii.ravel().astype(float), jj.ravel().astype(float), 0)
    tx, ty = geom.tract_wcs.wcs_world2pix(ra, dec, 0)
    coords = np.array([ty.reshape(h, w), tx.reshape(h, w)])
    src = cb.exposure
    image = ndimage.map_coordinates(cb.spline, coords, order=3, mode="mirror", prefilter=False)
    var = np.where(np.isfinite(src.variance), src.variance, 0.0)
    variance = ndimage.map_coordinates(var, coords, order=1, mode="nearest")
    blank = (~np.isfinite(src.image)).astype(np.float32)
    nan_frac = ndimage.map_coordinates(blank, coords, order=1, mode="nearest")
    mask = ndimage.map_coordinates(src.mask, coords, order=0, mode="nearest").astype(np.int32)
    nodata = nan_frac > 1e-3
    image[nodata] = np.nan
    variance[nodata] = np.nan
    mask[nodata] |= bit("NO_DATA")
    return PixelPlanes(
        image=image.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=det.wcs,
        psf=src.psf,
        band=src.band,
        photo_calib=1.0,
        xy0=(0, 0),
        metadata={"MLSIM": True, "BAND": src.band, "TEMPLATE": "deep_coadd warped, cubic spline"},
    )


def _difference(science: PixelPlanes, template: PixelPlanes, kernel_sigma: float) -> PixelPlanes:
    """Science minus the template convolved with a Gaussian matching kernel."""
    t = np.where(np.isfinite(template.image), template.image, 0.0).astype(np.float64)
    tv = np.where(np.isfinite(template.variance), template.variance, 0.0).astype(np.float64)
    conv = ndimage.gaussian_filter(t, kernel_sigma, mode="nearest", truncate=4.0)
    conv_var = ndimage.gaussian_filter(tv, kernel_sigma / math.sqrt(2.0), mode="nearest", truncate=4.0)
    conv_var /= 4.0 * math.pi * kernel_sigma**2
    nan_t = ndimage.gaussian_filter((~np.isfinite(template.image)).astype(np.float64), kernel_sigma,
                                    mode="nearest", truncate=4.0) > 1e-3
    image = science.image.astype(np.float64) - conv
    variance = science.variance.astype(np.float64) + conv_var
    mask = science.mask | template.mask
    nodata = nan_t | ~np.isfinite(image)
    image[nodata] = np.nan
    variance[nodata] = np.nan
    mask[nodata] |= bit("NO_DATA")
    return PixelPlanes(
        image=image.astype(np.float32),
        mask=mask.astype(np.int32),
        variance=variance.astype(np.float32),
        wcs=science.wcs,
        psf=science.psf,
        band=science.band,
        photo_calib=1.0,
        xy0=science.xy0,
        metadata={**science.metadata, "KERNSIG": kernel_sigma},
    )


def _simulate_visit_detector(
    config: SurveyConfig,
    geom: SurveyGeometry,
    visit: VisitGeometry,
    det: DetectorGeometry,
    extra_sigma: float,
    truth: Table,
    cols: dict[str, np.ndarray],
    coadd: _CoaddBand,
    transients: Table,
    asteroids: Table,
) -> VisitDetectorProducts:
    rng = _rng(config.seed, "visit", visit.visit, det.detector)
    band = visit.band
    h, w = det.box.shape
    psf = make_psf(config.coadd_seeing[band], config.psf_beta, extra_sigma)
    jac = local_jacobian(det.wcs)
    psf_img = draw_psf_image(psf, jac)
    fwhm = math.hypot(config.coadd_seeing[band], 2.3548 * extra_sigma)
    noise = NoiseModel.from_depth(config.visit_depth[band], psf_img, config.sky_electrons[band],
                                  config.full_well_electrons)
    n_eff = 1.0 / float(np.sum(psf_img.astype(np.float64) ** 2))
    sigma_psf_flux = noise.sigma_sky * math.sqrt(n_eff)
    fwhm_px = fwhm / config.pixel_scale
    r_point = max(3.0, 0.8 * fwhm_px)  # match radius of point-like injections
    inj = _Injections()

    # Static sky at this epoch (variables at their current flux, a few misregistered).
    xs, ys = det.wcs.wcs_world2pix(np.asarray(truth["ra"]), np.asarray(truth["dec"]), 0)
    margin = 40
    in_box = np.nonzero((xs > -margin) & (xs < w + margin) & (ys > -margin) & (ys < h + margin))[0]
    factor = np.ones(len(truth))
    var_idx = in_box[np.asarray(truth["is_variable"])[in_box]]
    factor[var_idx] = variable_factor(
        np.asarray(truth["var_amplitude"])[var_idx], np.asarray(truth["var_period"])[var_idx],
        np.asarray(truth["var_phase"])[var_idx], visit.mjd,
    )
    flux_b = np.asarray(truth[f"{band}_flux"])
    host_ids = set(int(v) for v in transients["hostObjectId"] if v >= 0)
    interior = (xs > 15) & (xs < w - 15) & (ys > 15) & (ys < h - 15)
    peak_frac = float(max(psf_img.max(), coadd.exposure.psf.max()))
    dip_cand = in_box[
        interior[in_box]
        & ~np.asarray(truth["is_variable"])[in_box]
        & (flux_b[in_box] > 40.0 * sigma_psf_flux)
        & (flux_b[in_box] * peak_frac < 0.3 * noise.saturation)
        & ~np.isin(OBJECT_ID_OFFSET + in_box, list(host_ids))
    ]
    n_dip = min(config.dipoles_per_image, len(dip_cand))
    dipoles = rng.choice(dip_cand, n_dip, replace=False) if n_dip else np.zeros(0, dtype=int)
    shift = {}
    for i in dipoles:
        r, phi = rng.uniform(0.3, 0.7), rng.uniform(0, 2 * np.pi)
        shift[int(i)] = (r * math.cos(phi), r * math.sin(phi))
        inj.add("artifact", "dipole", xs[i], ys[i], radius=1.6 * fwhm_px + 1.0, flux=0.0,
                object_id=OBJECT_ID_OFFSET + int(i))
    sources = []
    for i in in_box:
        dx, dy = shift.get(int(i), (0.0, 0.0))
        sources.append(Source(
            float(xs[i] + dx), float(ys[i] + dy), galaxy_profile(cols, int(i), band, float(factor[i])),
            stamp_size(cols, int(i), fwhm, config.pixel_scale, bright=flux_b[i] > 3e4),
        ))
    for i in var_idx:
        delta = flux_b[i] * (factor[i] - 1.0)
        if 0 <= xs[i] < w and 0 <= ys[i] < h:
            inj.add("variable", "none", xs[i], ys[i], radius=r_point, flux=delta,
                    object_id=OBJECT_ID_OFFSET + int(i))

    # Transients.
    tflux = _transient_flux(transients, band, visit.mjd)
    txs, tys = det.wcs.wcs_world2pix(np.asarray(transients["ra"]), np.asarray(transients["dec"]), 0)
    for k in np.nonzero((tflux > 0.05 * sigma_psf_flux) & (txs >= 0) & (txs < w) & (tys >= 0) & (tys < h))[0]:
        sources.append(Source(float(txs[k]), float(tys[k]), _point(tflux[k]), 31))
        inj.add("transient", "none", txs[k], tys[k], radius=r_point, flux=tflux[k],
                object_id=int(transients["hostObjectId"][k]))

    # Asteroids, trailed over the exposure.
    if len(asteroids):
        ast = asteroids[asteroids["night"] == visit.night]
        half = 0.5 * config.exposure_time / 86400.0
        ra0, dec0 = _asteroid_positions(ast, visit.mjd - half)
        ra1, dec1 = _asteroid_positions(ast, visit.mjd + half)
        ax0, ay0 = det.wcs.wcs_world2pix(ra0, dec0, 0)
        ax1, ay1 = det.wcs.wcs_world2pix(ra1, dec1, 0)
        for k in range(len(ast)):
            xm, ym = 0.5 * (ax0[k] + ax1[k]), 0.5 * (ay0[k] + ay1[k])
            if not (0 <= xm < w and 0 <= ym < h):
                continue
            f = float(ast[f"{band}_flux"][k])
            for t in np.linspace(0.0, 1.0, 7):
                px = float(ax0[k] + t * (ax1[k] - ax0[k]))
                py = float(ay0[k] + t * (ay1[k] - ay0[k]))
                sources.append(Source(px, py, _point(f / 7.0), 31))
            inj.add("asteroid", "none", ax0[k], ay0[k], ax1[k], ay1[k], radius=r_point, flux=f,
                    ss_object_id=int(ast["ssObjectId"][k]), asteroid_class=str(ast["asteroid_class"][k]))

    model = np.zeros((h, w))
    draw_sources(model, sources, psf, jac)
    image, variance = noise.realise(model, rng)
    mask = np.zeros((h, w), dtype=np.int32)

    # Detector effects.
    for x0, y0, x1, y1, total in add_cosmic_rays(image, mask, config.cosmic_rays_per_image, noise.gain, rng):
        inj.add("artifact", "cosmic_ray", x0, y0, x1, y1, radius=3.0, flux=total)
    for col, ya, yb in add_hot_columns(image, config.hot_columns_per_image, noise.sigma_sky, rng):
        inj.add("artifact", "bad_column", col, ya, col, yb - 1, radius=3.0)
    add_known_bad_columns(image, mask, config.known_bad_columns_per_image, rng)
    e = config.edge_width
    edge = np.ones((h, w), dtype=bool)
    edge[e:-e, e:-e] = False
    mask[edge] |= bit("EDGE")
    if rng.uniform() < config.nodata_probability:
        add_nodata_rectangle(image, variance, mask, rng)
    apply_saturation(image, mask, noise.saturation)
    meta = {
        "MLSIM": True, "BAND": band, "VISIT": visit.visit, "DETECTOR": det.detector,
        "MJD": visit.mjd, "EXPTIME": config.exposure_time, "PSF_FWHM": fwhm, "SATURATE": noise.saturation,
    }
    science = PixelPlanes(image=image.astype(np.float32), mask=mask, variance=variance.astype(np.float32),
                       wcs=det.wcs, psf=psf_img, band=band, photo_calib=1.0, xy0=(0, 0), metadata=meta)
    template = _warp_template(coadd, geom, det)
    template.metadata.update({"VISIT": visit.visit, "DETECTOR": det.detector})
    # Saturated cores (in the science image or the template) leave residuals.
    for x, y, radius in _saturated_regions((science.mask | template.mask) & bit("SAT")):
        inj.add("artifact", "saturation", x, y, radius=radius + 1.5 * fwhm_px + 3.0)
    difference = _difference(science, template, extra_sigma / config.pixel_scale)

    found = detect_sources(difference, config.detection_threshold)
    src, truth_table = _tables(visit, det, difference, found, inj)
    return VisitDetectorProducts(visit.visit, det.detector, band, visit.mjd, science, template, difference,
                                 src, truth_table)


def _saturated_regions(sat: np.ndarray) -> list[tuple[float, float, float]]:
    """Centre ``(x, y)`` and equivalent radius of each connected saturated region."""
    labels, n = ndimage.label(sat != 0)
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    ones = np.ones(labels.shape)
    centres = ndimage.center_of_mass(ones, labels, idx)
    areas = ndimage.sum(ones, labels, idx)
    return [(float(cx), float(cy), math.sqrt(float(a) / math.pi)) for (cy, cx), a in zip(centres, areas)]


def _point(flux: float):
    import galsim

    return galsim.DeltaFunction(flux=float(flux))


def _tables(visit: VisitGeometry, det: DetectorGeometry, difference: PixelPlanes,
            found: dict[str, np.ndarray], inj: _Injections) -> tuple[Table, Table]:
    n = len(found["x"])
    if n > 9999:
        found = {k: v[:9999] for k, v in found.items()}
        n = 9999
    ids = (visit.visit * 100000 + det.detector * 10000 + np.arange(1, n + 1)).astype(np.int64)
    ra, dec = difference.pixel_to_sky(found["x"], found["y"])
    src = Table()
    src["diaSourceId"] = ids
    src["visit"] = np.full(n, visit.visit, dtype=np.int64)
    src["detector"] = np.full(n, det.detector, dtype=np.int64)
    src["band"] = np.full(n, visit.band, dtype="U1")
    src["midpointMjdTai"] = np.full(n, visit.mjd)
    src["ra"] = np.asarray(ra, dtype=float) * u.deg
    src["dec"] = np.asarray(dec, dtype=float) * u.deg
    src["x"] = found["x"] * u.pix
    src["y"] = found["y"] * u.pix
    src["psfFlux"] = found["psfFlux"] * u.nJy
    src["psfFluxErr"] = found["psfFluxErr"] * u.nJy
    src["snr"] = found["snr"]
    src["isNegative"] = found["psfFlux"] < 0
    for name in PIXEL_FLAGS:
        src[name] = found[name]
    src["diaObjectId"] = np.zeros(n, dtype=np.int64)

    arrays = inj.arrays()
    if len(arrays["x0"]) > 999:
        raise RuntimeError("More than 999 injections in one image; lower the survey densities.")
    match, dist = match_to_injections(found["x"], found["y"], arrays, _REAL_LABELS)
    base_inj = (visit.visit * 100 + det.detector) * 1000
    has = match >= 0
    m = np.where(has, match, 0)

    def pick(key: str, default: Any) -> np.ndarray:
        if len(arrays["x0"]) == 0:
            return np.full(n, default)
        return np.where(has, arrays[key][m], default)

    truth = Table()
    truth["diaSourceId"] = ids
    truth["visit"] = src["visit"]
    truth["detector"] = src["detector"]
    truth["injectionId"] = np.where(has, base_inj + m, -1).astype(np.int64)
    truth["label"] = pick("label", "artifact").astype("U10")
    truth["artifact_kind"] = np.where(has, pick("kind", "none"), "residual").astype("U12")
    truth["objectId"] = pick("object_id", -1).astype(np.int64)
    truth["ssObjectId"] = pick("ss_object_id", -1).astype(np.int64)
    truth["asteroid_class"] = pick("asteroid_class", "").astype("U2")
    tx = 0.5 * (pick("x0", np.nan) + pick("x1", np.nan))
    ty = 0.5 * (pick("y0", np.nan) + pick("y1", np.nan))
    truth["truth_x"] = tx
    truth["truth_y"] = ty
    truth["truth_flux"] = pick("flux", np.nan) * u.nJy
    truth["detected"] = np.ones(n, dtype=bool)
    truth["match_distance"] = dist

    # Injections that nothing was matched to.
    n_inj = len(arrays["x0"])
    missed = np.setdiff1d(np.arange(n_inj), match[has])
    if len(missed):
        miss = Table()
        miss["diaSourceId"] = np.full(len(missed), -1, dtype=np.int64)
        miss["visit"] = np.full(len(missed), visit.visit, dtype=np.int64)
        miss["detector"] = np.full(len(missed), det.detector, dtype=np.int64)
        miss["injectionId"] = (base_inj + missed).astype(np.int64)
        miss["label"] = arrays["label"][missed].astype("U10")
        miss["artifact_kind"] = arrays["kind"][missed].astype("U12")
        miss["objectId"] = arrays["object_id"][missed].astype(np.int64)
        miss["ssObjectId"] = arrays["ss_object_id"][missed].astype(np.int64)
        miss["asteroid_class"] = arrays["asteroid_class"][missed].astype("U2")
        miss["truth_x"] = 0.5 * (arrays["x0"][missed] + arrays["x1"][missed])
        miss["truth_y"] = 0.5 * (arrays["y0"][missed] + arrays["y1"][missed])
        miss["truth_flux"] = arrays["flux"][missed].astype(float) * u.nJy
        miss["detected"] = np.zeros(len(missed), dtype=bool)
        miss["match_distance"] = np.full(len(missed), np.nan)
        truth = vstack([truth, miss], metadata_conflicts="silent")
    tra, tdec = difference.pixel_to_sky(np.nan_to_num(truth["truth_x"]), np.nan_to_num(truth["truth_y"]))
    ok = np.isfinite(np.asarray(truth["truth_x"], dtype=float))
    truth["truth_ra"] = np.where(ok, tra, np.nan) * u.deg
    truth["truth_dec"] = np.where(ok, tdec, np.nan) * u.deg
    truth["truth_x"].unit = u.pix
    truth["truth_y"].unit = u.pix
    truth["band"] = np.full(len(truth), visit.band, dtype="U1")
    return src, truth


def _dia_objects(config: SurveyConfig, geom: SurveyGeometry, products: list[VisitDetectorProducts]) -> Table:
    """Associate all DIA sources and summarise them per DIA object (mutates the source tables)."""
    if not products:
        return Table()
    allsrc = vstack([p.dia_source for p in products], metadata_conflicts="silent")
    n = len(allsrc)
    tx, ty = geom.tract_wcs.wcs_world2pix(np.asarray(allsrc["ra"]), np.asarray(allsrc["dec"]), 0)
    obj = associate(tx, ty, np.asarray(allsrc["diaSourceId"]),
                    config.association_radius_arcsec / config.pixel_scale)
    start = 0
    for p in products:
        k = len(p.dia_source)
        p.dia_source["diaObjectId"] = obj[start : start + k]
        start += k
    out = Table()
    if n == 0:
        return out
    uniq, inverse, counts = np.unique(obj, return_inverse=True, return_counts=True)
    out["diaObjectId"] = uniq.astype(np.int64)
    out["ra"] = np.bincount(inverse, np.asarray(allsrc["ra"])) / counts * u.deg
    out["dec"] = np.bincount(inverse, np.asarray(allsrc["dec"])) / counts * u.deg
    out["nDiaSources"] = counts.astype(np.int64)
    mjd = np.asarray(allsrc["midpointMjdTai"])
    first = np.full(len(uniq), np.inf)
    last = np.full(len(uniq), -np.inf)
    np.minimum.at(first, inverse, mjd)
    np.maximum.at(last, inverse, mjd)
    out["firstDiaSourceMjdTai"] = first
    out["lastDiaSourceMjdTai"] = last
    flux = np.asarray(allsrc["psfFlux"])
    err = np.asarray(allsrc["psfFluxErr"])
    for band in config.visit_bands:
        sel = np.asarray(allsrc["band"]) == band
        w_ = np.where(sel & (err > 0), 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0)
        ndata = np.bincount(inverse, sel.astype(float), minlength=len(uniq))
        wsum = np.bincount(inverse, w_, minlength=len(uniq))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.bincount(inverse, w_ * np.where(sel, flux, 0.0), minlength=len(uniq)) / wsum
            mean_err = 1.0 / np.sqrt(wsum)
            s1 = np.bincount(inverse, np.where(sel, flux, 0.0), minlength=len(uniq))
            s2 = np.bincount(inverse, np.where(sel, flux, 0.0) ** 2, minlength=len(uniq))
            sigma = np.sqrt(np.clip(s2 / ndata - (s1 / ndata) ** 2, 0, None) * ndata / (ndata - 1))
        out[f"{band}_psfFluxMean"] = np.where(ndata > 0, mean, np.nan) * u.nJy
        out[f"{band}_psfFluxMeanErr"] = np.where(ndata > 0, mean_err, np.nan) * u.nJy
        out[f"{band}_psfFluxSigma"] = np.where(ndata > 1, sigma, np.nan) * u.nJy
        out[f"{band}_psfFluxNdata"] = ndata.astype(np.int64)
    return out


# ----------------------------------------------------------------------
def simulate_survey(config: SurveyConfig | None = None) -> SimulatedSurvey:
    """Simulate a survey in memory.

    Parameters
    ----------
    config : `SurveyConfig`, optional
        Survey parameters; `SurveyConfig.default` if not given.

    Returns
    -------
    survey : `SimulatedSurvey`
        Images, catalogs and truth tables.
    """
    config = config or SurveyConfig.default()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    geom = SurveyGeometry(config, _rng(config.seed, "geometry"))
    truth = draw_static_sky(config, _rng(config.seed, "static-sky"), geom.tract_wcs)
    cols = table_columns(truth)
    timings["static_sky"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    coadd_bands = {band: _render_coadd(config, geom, cols, band) for band in config.coadd_bands}
    coadds: dict[tuple[int, str], PixelPlanes] = {}
    for patch in geom.patches:
        for band, cb in coadd_bands.items():
            exp = cb.exposure.subset(patch.outer)
            exp.metadata.update({"PATCH": patch.index})
            coadds[(patch.index, band)] = exp
    timings["coadds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    photometry = {
        b: _BandPhotometry(cb.exposure.psf, cb.noise, cb.exposure.mask) for b, cb in coadd_bands.items()
    }
    objects, detected = _measure_objects(config, geom, truth, photometry)
    specz = _specz_sample(config, truth, detected)
    truth_object = _truth_object_table(config, geom, truth, detected)
    timings["catalogs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    transients = _make_transients(config, geom, truth)
    asteroids = _make_asteroids(config, geom)
    products: list[VisitDetectorProducts] = []
    lo, hi = config.visit_extra_sigma
    for visit in geom.visits:
        extra_sigma = float(_rng(config.seed, "seeing", visit.visit).uniform(lo, hi))
        for det in visit.detectors:
            products.append(
                _simulate_visit_detector(config, geom, visit, det, extra_sigma, truth, cols,
                                         coadd_bands[visit.band], transients, asteroids)
            )
    timings["visits"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dia_object = _dia_objects(config, geom, products)
    timings["association"] = time.perf_counter() - t0
    return SimulatedSurvey(
        config=config, geometry=geom, truth_object=truth_object, object=objects, specz=specz,
        coadds=coadds, visit_products=products, dia_object=dia_object, transients=transients,
        asteroids=asteroids, timings=timings,
    )


def simulate_catalog(config: SurveyConfig | None = None, n_galaxies: int | None = None,
                     n_stars: int | None = None) -> tuple[Table, Table, Table]:
    """Catalog-level survey: object table, truth and spec-z without drawing images.

    The same populations and the same measurement model as `simulate_survey`
    (fluxes = truth + the noise of the deep coadds), but no pixels, so that
    large training and validation sets cost a second.  Positions are spread
    over the tract as usual (densities are not physical when ``n_galaxies``
    is large); no NO_DATA regions, saturation is flagged from the flux.

    Parameters
    ----------
    config : `SurveyConfig`, optional
        Survey parameters (`SurveyConfig.default` if not given).
    n_galaxies, n_stars : `int`, optional
        Override the numbers of galaxies and stars of ``config``.

    Returns
    -------
    object, truth_object, specz : `astropy.table.Table`
        As the tables of `SimulatedSurvey`.
    """
    config = dataclasses.replace(config or SurveyConfig.default())
    if n_galaxies is not None:
        config.n_galaxies = int(n_galaxies)
    if n_stars is not None:
        config.n_stars = int(n_stars)
    geom = SurveyGeometry(config, _rng(config.seed, "geometry"))
    truth = draw_static_sky(config, _rng(config.seed, "static-sky"), geom.tract_wcs)
    photometry = {}
    for band in config.coadd_bands:
        psf = make_psf(config.coadd_seeing[band], config.psf_beta)
        psf_img = draw_psf_image(psf, local_jacobian(geom.tract_wcs))
        noise = NoiseModel.from_depth(config.coadd_depth[band], psf_img, config.sky_electrons[band],
                                      config.full_well_electrons, _coadd_exposures_per_visit(config, band))
        photometry[band] = _BandPhotometry(psf_img, noise, None)
    objects, detected = _measure_objects(config, geom, truth, photometry, clip_to_tract=False)
    return objects, _truth_object_table(config, geom, truth, detected), _specz_sample(config, truth, detected)
