"""Time-domain populations: transients and asteroids, with their fluxes and positions at a time."""



import numpy as np
from astropy.table import Table

from .common import OBJECT_ID_OFFSET, SS_OBJECT_OFFSET, stage_rng
from .config import ALL_BANDS, SurveyConfig, flux_to_mag, mag_to_flux
from .geometry import SurveyGeometry
from .sed import ASTEROID_CLASSES, asteroid_colours, blackbody_colours

__all__ = [
    "asteroid_positions",
    "make_asteroids",
    "make_transients",
    "transient_flux",
]


# ----------------------------------------------------------------------
# Time-domain populations
# ----------------------------------------------------------------------
def _footprint(config: SurveyConfig) -> tuple[float, float, float, float]:
    """Tract-pixel box ``(x0, x1, y0, y1)`` covered by (almost) every visit."""
    cx, cy = 0.5 * config.tract_width - 0.5, 0.5 * config.tract_height - 0.5
    hw, hh = 0.5 * config.focal_plane_width, 0.5 * config.detector_height
    return cx - hw, cx + hw, cy - hh, cy + hh


def make_transients(config: SurveyConfig, geom: SurveyGeometry, truth: Table) -> Table:
    """Draw the transients of the survey.

    About three quarters sit in a host galaxy (at most one per host), the
    others anywhere in the area covered by the visits.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (tract WCS and visit times).
    truth : `astropy.table.Table`
        The truth catalogue of the static sky (the candidate hosts).

    Returns
    -------
    transients : `astropy.table.Table`
        One row per transient: id, position, host, peak time and
        magnitude, temperature, rise and fall times and peak flux per band.
    """
    rng = stage_rng(config.seed, "transients")
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


def transient_flux(tr: Table, band: str, mjd: float) -> np.ndarray:
    """Compute the flux of transients at a time.

    The light curve is a Gaussian in time around the peak, with the rise
    width before it and the fall width after it.

    Parameters
    ----------
    tr : `astropy.table.Table`
        The transients, as made by `make_transients`.
    band : `str`
        The band.
    mjd : `float`
        The time (MJD).

    Returns
    -------
    flux : `numpy.ndarray`
        The flux of each transient, in nJy.
    """
    dt = mjd - np.asarray(tr["t0"])
    tau = np.where(dt < 0, tr["rise_days"], tr["fall_days"])
    return np.asarray(tr[f"{band}_peak_flux"]) * np.exp(-0.5 * (dt / tau) ** 2)


def make_asteroids(config: SurveyConfig, geom: SurveyGeometry) -> Table:
    """Draw the asteroids of each night, on linear tracks.

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (tract WCS and visits).

    Returns
    -------
    asteroids : `astropy.table.Table`
        One row per asteroid: id, night, reference time and position,
        velocity (degrees per day East and North), class and flux per band.
    """
    rng = stage_rng(config.seed, "asteroids")
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
                "ssObjectId": SS_OBJECT_OFFSET + len(rows) + 1,
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


def asteroid_positions(ast: Table, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Compute the positions of asteroids at a time.

    Parameters
    ----------
    ast : `astropy.table.Table`
        The asteroids, as made by `make_asteroids`.
    mjd : `float`
        The time (MJD).

    Returns
    -------
    ra, dec : `numpy.ndarray`
        The positions, in degrees.
    """
    dt = mjd - np.asarray(ast["mjd_ref"])
    dec = np.asarray(ast["dec_ref"]) + np.asarray(ast["v_north"]) * dt
    ra = np.asarray(ast["ra_ref"]) + np.asarray(ast["v_east"]) * dt / np.cos(np.radians(dec))
    return ra, dec
