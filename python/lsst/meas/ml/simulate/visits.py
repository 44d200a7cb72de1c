"""Visits: science images, warped templates, differences, detected DIA sources and DIA objects."""

import math
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table, vstack
from scipy import ndimage

from ..images import PixelPlanes
from .coadds import CoaddBand
from .common import OBJECT_ID_OFFSET, REAL_LABELS, VisitDetectorProducts, stage_rng
from .config import SurveyConfig
from .detect import PIXEL_FLAGS, associate, detect_sources, match_to_injections
from .galaxies import (
    galaxy_profile,
    stamp_size,
    variable_factor,
)
from .geometry import DetectorGeometry, SurveyGeometry, VisitGeometry
from .populations import asteroid_flux, asteroid_positions, transient_flux
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

__all__ = [
    "SS_SOURCE_COLUMNS",
    "dia_objects",
    "simulate_visit_detector",
    "ss_sources",
]


# ----------------------------------------------------------------------
# Visits
# ----------------------------------------------------------------------
class _Injections:
    """Collects injected truth for one (visit, detector)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        label: str,
        kind: str,
        x0: float,
        y0: float,
        x1: float | None = None,
        y1: float | None = None,
        radius: float = 3.0,
        flux: float = float("nan"),
        object_id: int = -1,
        ss_object_id: int = -1,
        asteroid_class: str = "",
    ) -> None:
        self.rows.append(
            dict(
                label=label,
                kind=kind,
                x0=float(x0),
                y0=float(y0),
                x1=float(x0 if x1 is None else x1),
                y1=float(y0 if y1 is None else y1),
                radius=float(radius),
                flux=float(flux),
                object_id=int(object_id),
                ss_object_id=int(ss_object_id),
                asteroid_class=asteroid_class,
            )
        )

    def arrays(self) -> dict[str, np.ndarray]:
        keys = (
            "label",
            "kind",
            "x0",
            "y0",
            "x1",
            "y1",
            "radius",
            "flux",
            "object_id",
            "ss_object_id",
            "asteroid_class",
        )
        if not self.rows:
            text = ("label", "kind", "asteroid_class")
            return {k: np.zeros(0, dtype="U16") if k in text else np.zeros(0) for k in keys}
        return {k: np.array([r[k] for r in self.rows]) for k in keys}


def _warp_template(cb: CoaddBand, geom: SurveyGeometry, det: DetectorGeometry) -> PixelPlanes:
    """Resample the coadd onto the detector's pixel grid."""
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
    nan_t = (
        ndimage.gaussian_filter(
            (~np.isfinite(template.image)).astype(np.float64), kernel_sigma, mode="nearest", truncate=4.0
        )
        > 1e-3
    )
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


def simulate_visit_detector(
    config: SurveyConfig,
    geom: SurveyGeometry,
    visit: VisitGeometry,
    det: DetectorGeometry,
    extra_sigma: float,
    truth: Table,
    cols: dict[str, np.ndarray],
    coadd: CoaddBand,
    transients: Table,
    asteroids: Table,
) -> VisitDetectorProducts:
    """Simulate one detector of one visit: science, template and difference.

    The science image holds the static sky at this epoch (variable stars at
    their current flux, a few sources shifted to make dipoles), the
    transients and the trailed asteroids, with noise and detector effects
    (cosmic rays, hot and bad columns, edge, no-data and saturation).  The
    template is the coadd warped onto the detector; the difference is
    science minus the template convolved with a Gaussian, on which
    sources are detected and matched to the injections.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry.
    visit : `~lsst.meas.ml.simulate.geometry.VisitGeometry`
        The visit.
    det : `~lsst.meas.ml.simulate.geometry.DetectorGeometry`
        The detector.
    extra_sigma : `float`
        The sigma (arcsec) of the Gaussian convolving the coadd PSF to give
        the visit PSF; also the width of the matching kernel.
    truth : `astropy.table.Table`
        The truth catalogue of the static sky.
    cols : `dict` [`str`, `numpy.ndarray`]
        The truth columns as plain arrays.
    coadd : `~lsst.meas.ml.simulate.coadds.CoaddBand`
        The coadd of the visit's band (the template).
    transients : `astropy.table.Table`
        The transients.
    asteroids : `astropy.table.Table`
        The asteroids.

    Returns
    -------
    products : `~lsst.meas.ml.simulate.common.VisitDetectorProducts`
        The images, the DIA sources and their truth.
    """
    rng = stage_rng(config.seed, "visit", visit.visit, det.detector)
    band = visit.band
    h, w = det.box.shape
    psf = make_psf(config.coadd_seeing[band], config.psf_beta, extra_sigma)
    jac = local_jacobian(det.wcs)
    psf_img = draw_psf_image(psf, jac)
    fwhm = math.hypot(config.coadd_seeing[band], 2.3548 * extra_sigma)
    noise = NoiseModel.from_depth(
        config.visit_depth[band], psf_img, config.sky_electrons[band], config.full_well_electrons
    )
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
        np.asarray(truth["var_amplitude"])[var_idx],
        np.asarray(truth["var_period"])[var_idx],
        np.asarray(truth["var_phase"])[var_idx],
        visit.mjd,
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
        inj.add(
            "artifact",
            "dipole",
            xs[i],
            ys[i],
            radius=1.6 * fwhm_px + 1.0,
            flux=0.0,
            object_id=OBJECT_ID_OFFSET + int(i),
        )
    sources = []
    for i in in_box:
        dx, dy = shift.get(int(i), (0.0, 0.0))
        sources.append(
            Source(
                float(xs[i] + dx),
                float(ys[i] + dy),
                galaxy_profile(cols, int(i), band, float(factor[i])),
                stamp_size(cols, int(i), fwhm, config.pixel_scale, bright=flux_b[i] > 3e4),
            )
        )
    for i in var_idx:
        delta = flux_b[i] * (factor[i] - 1.0)
        if 0 <= xs[i] < w and 0 <= ys[i] < h:
            inj.add(
                "variable",
                "none",
                xs[i],
                ys[i],
                radius=r_point,
                flux=delta,
                object_id=OBJECT_ID_OFFSET + int(i),
            )

    # Transients.
    tflux = transient_flux(transients, band, visit.mjd)
    txs, tys = det.wcs.wcs_world2pix(np.asarray(transients["ra"]), np.asarray(transients["dec"]), 0)
    for k in np.nonzero((tflux > 0.05 * sigma_psf_flux) & (txs >= 0) & (txs < w) & (tys >= 0) & (tys < h))[0]:
        sources.append(Source(float(txs[k]), float(tys[k]), _point(tflux[k]), 31))
        inj.add(
            "transient",
            "none",
            txs[k],
            tys[k],
            radius=r_point,
            flux=tflux[k],
            object_id=int(transients["hostObjectId"][k]),
        )

    # Asteroids, trailed over the exposure.
    if len(asteroids):
        ast = asteroids[asteroids["night"] == visit.night]
        half = 0.5 * config.exposure_time / 86400.0
        ra0, dec0 = asteroid_positions(ast, visit.mjd - half)
        ra1, dec1 = asteroid_positions(ast, visit.mjd + half)
        ax0, ay0 = det.wcs.wcs_world2pix(ra0, dec0, 0)
        ax1, ay1 = det.wcs.wcs_world2pix(ra1, dec1, 0)
        aflux = asteroid_flux(ast, band, visit.mjd) if len(ast) else np.zeros(0)
        for k in range(len(ast)):
            xm, ym = 0.5 * (ax0[k] + ax1[k]), 0.5 * (ay0[k] + ay1[k])
            if not (0 <= xm < w and 0 <= ym < h):
                continue
            f = float(aflux[k])
            for t in np.linspace(0.0, 1.0, 7):
                px = float(ax0[k] + t * (ax1[k] - ax0[k]))
                py = float(ay0[k] + t * (ay1[k] - ay0[k]))
                sources.append(Source(px, py, _point(f / 7.0), 31))
            inj.add(
                "asteroid",
                "none",
                ax0[k],
                ay0[k],
                ax1[k],
                ay1[k],
                radius=r_point,
                flux=f,
                ss_object_id=int(ast["ssObjectId"][k]),
                asteroid_class=str(ast["asteroid_class"][k]),
            )

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
        "MLSIM": True,
        "BAND": band,
        "VISIT": visit.visit,
        "DETECTOR": det.detector,
        "MJD": visit.mjd,
        "EXPTIME": config.exposure_time,
        "PSF_FWHM": fwhm,
        "SATURATE": noise.saturation,
    }
    science = PixelPlanes(
        image=image.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=det.wcs,
        psf=psf_img,
        band=band,
        photo_calib=1.0,
        xy0=(0, 0),
        metadata=meta,
    )
    template = _warp_template(coadd, geom, det)
    template.metadata.update({"VISIT": visit.visit, "DETECTOR": det.detector})
    # Saturated cores (in the science image or the template) leave residuals.
    for x, y, radius in _saturated_regions((science.mask | template.mask) & bit("SAT")):
        inj.add("artifact", "saturation", x, y, radius=radius + 1.5 * fwhm_px + 3.0)
    difference = _difference(science, template, extra_sigma / config.pixel_scale)

    found = detect_sources(difference, config.detection_threshold)
    src, truth_table = _tables(visit, det, difference, found, inj)
    return VisitDetectorProducts(
        visit.visit, det.detector, band, visit.mjd, science, template, difference, src, truth_table
    )


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


def _tables(
    visit: VisitGeometry,
    det: DetectorGeometry,
    difference: PixelPlanes,
    found: dict[str, np.ndarray],
    inj: _Injections,
) -> tuple[Table, Table]:
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
    match, dist = match_to_injections(found["x"], found["y"], arrays, REAL_LABELS)
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


def dia_objects(config: SurveyConfig, geom: SurveyGeometry, products: list[VisitDetectorProducts]) -> Table:
    """Associate all DIA sources and summarise them per DIA object (mutates the source tables).

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (the tract WCS).
    products : `list` [`~lsst.meas.ml.simulate.common.VisitDetectorProducts`]
        The products of every visit and detector; their DIA source tables
        get the id of their DIA object.

    Returns
    -------
    dia_objects : `astropy.table.Table`
        One row per DIA object (an empty table without DIA sources).
    """
    if not products:
        return Table()
    allsrc = vstack([p.dia_source for p in products], metadata_conflicts="silent")
    n = len(allsrc)
    tx, ty = geom.tract_wcs.wcs_world2pix(np.asarray(allsrc["ra"]), np.asarray(allsrc["dec"]), 0)
    obj = associate(
        tx, ty, np.asarray(allsrc["diaSourceId"]), config.association_radius_arcsec / config.pixel_scale
    )
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


#: Columns of the simulated ``ss_source`` table (Rubin's alert names: ``diaSource`` fields, then the
#: ``ssSource`` geometry).
SS_SOURCE_COLUMNS: tuple[str, ...] = (
    "diaSourceId",
    "ssObjectId",
    "diaObjectId",
    "visit",
    "detector",
    "band",
    "midpointMjdTai",
    "ra",
    "dec",
    "psfFlux",
    "psfFluxErr",
    "snr",
    "phaseAngle",
    "helioRange",
    "topoRange",
    "elongation",
)


def ss_sources(geom: SurveyGeometry, products: list[VisitDetectorProducts], asteroids: Table) -> Table:
    """Build the Solar System source table: DIA sources of asteroids joined with their geometry.

    A DIA source belongs to an asteroid when it was matched to that
    asteroid's injection (the simulated stand-in for the Solar System
    association of the prompt pipeline); when a trail gives several
    detections in one visit, the one nearest the trail's centre is kept, as
    an ephemeris-based association would.  Sources of asteroids that were
    not detected are absent, as in Rubin's table.

    Parameters
    ----------
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (visit id to night).
    products : `list` [`~lsst.meas.ml.simulate.common.VisitDetectorProducts`]
        The products of every visit and detector (after `dia_objects`, so
        that ``diaObjectId`` is set).
    asteroids : `astropy.table.Table`
        The tracks of `~lsst.meas.ml.simulate.populations.make_asteroids`.

    Returns
    -------
    ss_source : `astropy.table.Table`
        One row per detection of an asteroid, columns `SS_SOURCE_COLUMNS`:
        the DIA source's id, visit, detector, band, time, position and PSF
        flux (nJy), then ``ssObjectId``, ``phaseAngle`` and ``elongation``
        (deg), ``helioRange`` and ``topoRange`` (au) of that night.
    """
    night_of = {v.visit: v.night for v in geom.visits}
    geometry = {}
    if len(asteroids) and "helioRange" in asteroids.colnames:
        for row in asteroids:
            geometry[(int(row["ssObjectId"]), int(row["night"]))] = (
                float(row["phaseAngle"]),
                float(row["helioRange"]),
                float(row["topoRange"]),
                float(row["elongation"]),
            )
    best: dict[tuple[int, int], tuple[float, dict[str, Any]]] = {}
    for p in products:
        truth = p.truth
        sel = (
            np.asarray(truth["detected"])
            & (np.asarray(truth["label"]) == "asteroid")
            & (np.asarray(truth["ssObjectId"]) > 0)
        )
        if not sel.any():
            continue
        row_of = {int(i): k for k, i in enumerate(p.dia_source["diaSourceId"])}
        src = p.dia_source
        for t in truth[sel]:
            k = row_of[int(t["diaSourceId"])]
            ss_id = int(t["ssObjectId"])
            alpha, r, delta, elong = geometry.get((ss_id, night_of[p.visit]), (np.nan,) * 4)
            row = {
                "diaSourceId": int(src["diaSourceId"][k]),
                "ssObjectId": ss_id,
                "diaObjectId": int(src["diaObjectId"][k]),
                "visit": int(p.visit),
                "detector": int(p.detector),
                "band": str(src["band"][k]),
                "midpointMjdTai": float(src["midpointMjdTai"][k]),
                "ra": float(np.asarray(src["ra"])[k]),
                "dec": float(np.asarray(src["dec"])[k]),
                "psfFlux": float(np.asarray(src["psfFlux"])[k]),
                "psfFluxErr": float(np.asarray(src["psfFluxErr"])[k]),
                "snr": float(src["snr"][k]),
                "phaseAngle": alpha,
                "helioRange": r,
                "topoRange": delta,
                "elongation": elong,
            }
            key = (ss_id, int(p.visit))
            dist = float(t["match_distance"])
            if key not in best or dist < best[key][0]:
                best[key] = (dist, row)
    rows = [best[key][1] for key in sorted(best, key=lambda kv: (kv[1], kv[0]))]
    out = Table()
    dtypes = {
        "diaSourceId": np.int64,
        "ssObjectId": np.int64,
        "diaObjectId": np.int64,
        "visit": np.int64,
        "detector": np.int64,
        "band": "U1",
    }
    for name in SS_SOURCE_COLUMNS:
        out[name] = np.array([r[name] for r in rows], dtype=dtypes.get(name, np.float64))
    units = {
        "ra": u.deg,
        "dec": u.deg,
        "psfFlux": u.nJy,
        "psfFluxErr": u.nJy,
        "phaseAngle": u.deg,
        "elongation": u.deg,
        "helioRange": u.AU,
        "topoRange": u.AU,
    }
    for name, unit in units.items():
        out[name].unit = unit
    return out
