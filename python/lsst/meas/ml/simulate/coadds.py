"""The static sky: coadds of the tract, the object table, its truth and the spec-z sample."""

import dataclasses
import math
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table
from scipy import ndimage

from ..images import PixelPlanes
from .common import OBJECT_ID_OFFSET, TRACT_ID, stage_rng
from .config import ALL_BANDS, SurveyConfig, flux_to_mag
from .galaxies import (
    HUBBLE_TYPES,
    MORPHOLOGY_CLASSES,
    galaxy_profile,
    hubble_types,
    stamp_size,
)
from .geometry import SurveyGeometry
from .render import (
    NoiseModel,
    Source,
    add_nodata_rectangle,
    apply_saturation,
    bit,
    draw_psf_image,
    draw_sources,
    local_jacobian,
    make_psf,
)

__all__ = [
    "BandPhotometry",
    "CoaddBand",
    "coadd_exposures_per_visit",
    "measure_objects",
    "render_coadd",
    "specz_sample",
    "truth_object_table",
]


# ----------------------------------------------------------------------
# Static sky and coadds
# ----------------------------------------------------------------------
@dataclasses.dataclass
class CoaddBand:
    """The coadd of the whole tract in one band, and how it was made.

    Attributes
    ----------
    band : `str`
        The band.
    exposure : `~lsst.meas.ml.images.PixelPlanes`
        The coadd of the whole tract.
    psf : `~typing.Any`
        The GalSim PSF profile of the coadd.
    noise : `~lsst.meas.ml.simulate.render.NoiseModel`
        The noise model of the coadd.
    spline : `numpy.ndarray`
        Cubic-spline coefficients of the image with NaN set to 0.
    """

    band: str
    exposure: PixelPlanes  # the whole tract
    psf: Any
    noise: NoiseModel
    spline: np.ndarray  # cubic-spline coefficients of the NaN-free image


def coadd_exposures_per_visit(config: SurveyConfig, band: str) -> float:
    """Return the number of visit exposures whose coadd reaches the coadd depth.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    band : `str`
        The band.

    Returns
    -------
    n_exposures : `float`
        ``10 ** (0.8 * (coadd_depth - visit_depth))`` in ``band``.
    """
    return 10.0 ** (0.8 * (config.coadd_depth[band] - config.visit_depth[band]))


def render_coadd(
    config: SurveyConfig, geom: SurveyGeometry, cols: dict[str, np.ndarray], band: str
) -> CoaddBand:
    """Draw the coadd of the whole tract in one band.

    The image holds every truth source, convolved with the coadd PSF, with
    noise, an edge mask, saturation and (at random) a no-data rectangle.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (the tract WCS).
    cols : `dict` [`str`, `numpy.ndarray`]
        The truth columns (positions, fluxes and morphology).
    band : `str`
        The band to draw.

    Returns
    -------
    coadd : `CoaddBand`
        The coadd and its PSF, noise model and spline coefficients.
    """
    rng = stage_rng(config.seed, "coadd", band)
    psf = make_psf(config.coadd_seeing[band], config.psf_beta)
    jac = local_jacobian(geom.tract_wcs)
    psf_img = draw_psf_image(psf, jac)
    noise = NoiseModel.from_depth(
        config.coadd_depth[band],
        psf_img,
        config.sky_electrons[band],
        config.full_well_electrons,
        n_exposures=coadd_exposures_per_visit(config, band),
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
    return CoaddBand(band, exposure, psf, noise, spline)


def _psf_sigma_pixels(psf_img: np.ndarray) -> float:
    p = np.clip(psf_img.astype(np.float64), 0, None)
    yy, xx = np.indices(p.shape)
    tot = p.sum()
    cx, cy = (xx * p).sum() / tot, (yy * p).sum() / tot
    return float(math.sqrt(0.5 * (((xx - cx) ** 2 + (yy - cy) ** 2) * p).sum() / tot))


@dataclasses.dataclass
class BandPhotometry:
    """What `measure_objects` needs to know of one band's coadd.

    Attributes
    ----------
    psf : `numpy.ndarray`
        The PSF image of the coadd.
    noise : `~lsst.meas.ml.simulate.render.NoiseModel`
        The noise model of the coadd.
    mask : `numpy.ndarray` or `None`
        The tract's coadd mask, if images were drawn.
    """

    psf: np.ndarray
    noise: NoiseModel
    mask: np.ndarray | None  # the tract's coadd mask, if images were drawn


def measure_objects(
    config: SurveyConfig,
    geom: SurveyGeometry,
    truth: Table,
    bands: dict[str, BandPhotometry],
    clip_to_tract: bool = True,
) -> tuple[Table, np.ndarray]:
    """Simulate the object table and the detection of each truth object.

    Fluxes are the truth plus noise, in Rubin ``object`` columns.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (tract WCS and patches).
    truth : `astropy.table.Table`
        The truth catalogue.
    bands : `dict` [`str`, `BandPhotometry`]
        The coadd PSF, noise and mask of each coadd band.
    clip_to_tract : `bool`, optional
        Only detect objects inside the tract.

    Returns
    -------
    table : `astropy.table.Table`
        The detected objects, with Rubin ``object`` columns.
    detected : `numpy.ndarray`
        Boolean, one per truth row: the object was detected.
    """
    rng = stage_rng(config.seed, "object-table")
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


def specz_sample(config: SurveyConfig, truth: Table, detected: np.ndarray) -> Table:
    """Draw a spectroscopic-redshift sample of detected galaxies.

    Bright galaxies are chosen more often than faint ones.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    truth : `astropy.table.Table`
        The truth catalogue.
    detected : `numpy.ndarray`
        Boolean, one per truth row: the object was detected.

    Returns
    -------
    table : `astropy.table.Table`
        ``objectId``, ``coord_ra``, ``coord_dec``, ``specz`` and
        ``specz_err`` of the sample.
    """
    rng = stage_rng(config.seed, "specz")
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


def truth_object_table(
    config: SurveyConfig, geom: SurveyGeometry, truth: Table, detected: np.ndarray
) -> Table:
    """Build the truth table of every simulated object.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (for the patch of each object).
    truth : `astropy.table.Table`
        The truth catalogue.
    detected : `numpy.ndarray`
        Boolean, one per truth row: the object was detected.

    Returns
    -------
    table : `astropy.table.Table`
        The truth, with ``objectId``, units and the ``detected`` flag.
    """
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
    types = hubble_types(truth["morphology_class"], truth["bulge_fraction"])
    t["hubble_type_class"] = types
    t["hubble_type"] = np.array([HUBBLE_TYPES[k] if k >= 0 else "star" for k in types])
    t.meta["hubble_types"] = list(HUBBLE_TYPES)
    return t
