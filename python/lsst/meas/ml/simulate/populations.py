"""Time-domain populations: transients and asteroids, with their fluxes and positions at a time."""

import numpy as np
from astropy.table import Table

from .common import OBJECT_ID_OFFSET, SS_OBJECT_OFFSET, stage_rng
from .config import ALL_BANDS, SurveyConfig, flux_to_mag, mag_to_flux
from .geometry import SurveyGeometry
from .sed import ASTEROID_CLASSES, blackbody_colours

__all__ = [
    "asteroid_colour_model",
    "asteroid_flux",
    "asteroid_positions",
    "draw_asteroid_colours",
    "make_asteroids",
    "make_transients",
    "observing_geometry",
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
        (~np.asarray(truth["is_star"]))
        & (x > x0)
        & (x < x1)
        & (y > y0)
        & (y < y1)
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


#: Rotational light curves: peak-to-peak amplitude range (mag) and period range (days).
_ROTATION_AMPLITUDE = (0.0, 0.2)
_ROTATION_PERIOD_DAYS = (0.12, 0.5)


def asteroid_colour_model() -> dict[str, np.ndarray]:
    """Per-complex colour distribution of the shipped asteroid-taxonomy mixture.

    Reads ``lsst/meas/ml/data/asteroids_default.safetensors`` (the package
    ``meas-ml train asteroids`` made from the classy spectra integrated over
    the LSST throughputs) with NumPy only: its Gaussian components give the
    intrinsic distribution of ``g-r, r-i, i-z, z-y`` of each complex.

    Returns
    -------
    model : `dict` [`str`, `numpy.ndarray`]
        ``means`` (K, 4), ``covariances`` (K, 4, 4), ``weights`` (K,) and
        ``complex`` (K,) (the complex name of each component).
    """
    import json
    import struct
    from pathlib import Path

    data = (Path(__file__).resolve().parents[1] / "data" / "asteroids_default.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}

    def tensor(name: str) -> np.ndarray:
        info = header[name]
        a, b = info["data_offsets"]
        raw = np.frombuffer(data[8 + n + a : 8 + n + b], dtype=dtypes[info["dtype"]])
        return raw.reshape(info["shape"]).astype(np.float64 if info["dtype"].startswith("F") else np.int64)

    manifest = json.loads(header["__metadata__"]["meas_ml_manifest"])
    names = np.array(manifest["outputs"]["class_names"])
    chol = np.tril(tensor("chol"))
    return {
        "means": tensor("means"),
        "covariances": chol @ np.swapaxes(chol, -1, -2),
        "weights": np.exp(tensor("log_weights")),
        "complex": names[tensor("component_class")],
    }


def draw_asteroid_colours(
    classes: np.ndarray, rng: np.random.Generator, model: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Magnitudes relative to r, ``m_b - m_r`` in ``ugrizy``, of asteroids of given complexes.

    ``g-r, r-i, i-z, z-y`` are drawn from the Gaussian components of the
    complex in `asteroid_colour_model` (a component chosen by its weight);
    ``u-g`` (not covered by the classy spectra) from the class means of
    `~lsst.meas.ml.simulate.sed.ASTEROID_CLASSES` with a 0.05 mag scatter.

    Parameters
    ----------
    classes : `numpy.ndarray` of `str`
        Complexes (keys of `~lsst.meas.ml.simulate.sed.ASTEROID_CLASSES`).
    rng : `numpy.random.Generator`
        Source of the draws.
    model : `dict`, optional
        `asteroid_colour_model` (read if not given).

    Returns
    -------
    offsets : `numpy.ndarray`, shape (N, 6)
        ``m_b - m_r`` for ``b`` in ``ugrizy`` (0 for r).

    Raises
    ------
    ValueError
        If a class is not in ``ASTEROID_CLASSES`` or the mixture has no
        component of it.
    """
    model = model or asteroid_colour_model()
    classes = np.atleast_1d(np.asarray(classes)).astype(str)
    out = np.zeros((classes.size, len(ALL_BANDS)))
    for n, cls in enumerate(classes):
        comps = np.flatnonzero(model["complex"] == cls)
        if cls not in ASTEROID_CLASSES or comps.size == 0:
            raise ValueError(f"Unknown asteroid class {cls!r}; choose one of {sorted(ASTEROID_CLASSES)}.")
        w = model["weights"][comps] / model["weights"][comps].sum()
        k = comps[rng.choice(comps.size, p=w)]
        gr, ri, iz, zy = rng.multivariate_normal(model["means"][k], model["covariances"][k])
        ug = ASTEROID_CLASSES[cls][1] + rng.normal(0.0, 0.05)
        out[n] = [gr + ug, gr, 0.0, -ri, -ri - iz, -ri - iz - zy]
    return out


def observing_geometry(helio_range: np.ndarray, elongation_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Topocentric distance and phase angle of objects seen at a solar elongation (Earth at 1 au).

    Parameters
    ----------
    helio_range : `numpy.ndarray`
        Heliocentric distances (au), above 1.
    elongation_deg : `numpy.ndarray`
        Sun-observer-object angles (deg).

    Returns
    -------
    topo_range, phase_angle : `numpy.ndarray`
        Observer-object distance (au) and Sun-object-observer angle (deg).
    """
    r = np.asarray(helio_range, dtype=float)
    eps = np.radians(np.asarray(elongation_deg, dtype=float))
    delta = np.cos(eps) + np.sqrt(r**2 - np.sin(eps) ** 2)
    alpha = np.degrees(np.arcsin(np.clip(np.sin(eps) / r, -1.0, 1.0)))
    return delta, alpha


def make_asteroids(config: SurveyConfig, geom: SurveyGeometry) -> Table:
    """Draw the survey's asteroids and their track of each night.

    ``config.asteroids_per_night`` main-belt objects are observed on every
    night: the mini-survey's one field stands for the different fields an
    object crosses from night to night, so each night gives it a new linear
    track through the field (as before), while its identity, colours,
    absolute magnitude and orbit stay.  Each object has a complex drawn with
    the fractions of `~lsst.meas.ml.simulate.sed.ASTEROID_CLASSES` and
    colours from `draw_asteroid_colours` (the shipped taxonomy mixture's
    components); an absolute magnitude ``H_r`` uniform in
    ``config.asteroid_h_range``; a heliocentric distance uniform in
    2.1-3.3 au and a solar elongation of 130-180 deg on the first night,
    decreasing by 0.5 deg a day (topocentric distance and phase angle
    follow, `observing_geometry`); an H-G12 phase slope ``G12`` uniform in
    0.2-0.8; and a rotational light curve (double sine, peak-to-peak
    amplitude 0-0.2 mag, period 3-12 h).  The flux in band ``b`` at time
    ``t`` is (`asteroid_flux`)::

        m_b = H_r + (m_b - m_r) + 5 log10(r delta) - 2.5 log10(Phi_HG12(alpha; G12)) + rotation(t)

    Parameters
    ----------
    config : `~lsst.meas.ml.simulate.config.SurveyConfig`
        The survey configuration.
    geom : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry (tract WCS and visits).

    Returns
    -------
    asteroids : `astropy.table.Table`
        One row per object and night: ``ssObjectId``, ``night``, the track
        (``mjd_ref``, ``ra_ref``, ``dec_ref``, ``v_east``, ``v_north`` in
        degrees per day), the truth of the object (``asteroid_class``, its
        complex; ``H_r``; ``g12``; ``rot_amplitude``, ``rot_period``,
        ``rot_phase``; ``<b>_offset`` = ``m_b - m_r``; ``g_r``, ``r_i``,
        ``i_z``, ``z_y``), the geometry of that night (``helioRange``,
        ``topoRange`` in au, ``phaseAngle``, ``elongation`` in deg) and
        ``<b>_flux``, the flux at ``mjd_ref`` without rotation (nJy).
    """
    from ..asteroids.features import hg12_phase_function

    rng = stage_rng(config.seed, "asteroids")
    nights = sorted({v.night for v in geom.visits})
    n = config.asteroids_per_night
    if not nights or n == 0:
        return Table(names=("ssObjectId",), dtype=(np.int64,))
    x0, x1, y0, y1 = _footprint(config)
    classes = list(ASTEROID_CLASSES)
    probs = np.array([ASTEROID_CLASSES[c][0] for c in classes])
    cls = rng.choice(classes, n, p=probs / probs.sum())
    offsets = draw_asteroid_colours(cls, rng)
    h_r = rng.uniform(*config.asteroid_h_range, n)
    helio = rng.uniform(2.1, 3.3, n)
    elong0 = rng.uniform(130.0, 180.0, n)
    g12 = rng.uniform(0.2, 0.8, n)
    amp = rng.uniform(*_ROTATION_AMPLITUDE, n)
    period = rng.uniform(*_ROTATION_PERIOD_DAYS, n)
    phase = rng.uniform(0.0, 1.0, n)
    ids = SS_OBJECT_OFFSET + np.arange(1, n + 1, dtype=np.int64)
    parts = []
    for night in nights:
        mjd_mid = float(np.mean([v.mjd for v in geom.visits if v.night == night]))
        px = rng.uniform(x0, x1, n)
        py = rng.uniform(y0, y1, n)
        ra, dec = geom.tract_wcs.wcs_pix2world(px, py, 0)
        speed = rng.uniform(0.08, 0.40, n)  # deg/day
        angle = rng.normal(np.pi, 0.35, n)  # 0 = East; pi = West (retrograde near opposition)
        elong = np.clip(elong0 - 0.5 * (mjd_mid - config.start_mjd), 90.0, 180.0)
        delta, alpha = observing_geometry(helio, elong)
        t = Table()
        t["ssObjectId"] = ids
        t["night"] = np.full(n, night)
        t["mjd_ref"] = np.full(n, mjd_mid)
        t["ra_ref"] = np.asarray(ra, dtype=float)
        t["dec_ref"] = np.asarray(dec, dtype=float)
        t["v_east"] = speed * np.cos(angle)
        t["v_north"] = speed * np.sin(angle)
        t["asteroid_class"] = cls.astype(str)
        t["H_r"] = h_r
        t["g12"] = g12
        t["rot_amplitude"] = amp
        t["rot_period"] = period
        t["rot_phase"] = phase
        for j, band in enumerate(ALL_BANDS):
            t[f"{band}_offset"] = offsets[:, j]
        for a, b in (("g", "r"), ("r", "i"), ("i", "z"), ("z", "y")):
            ja, jb = ALL_BANDS.index(a), ALL_BANDS.index(b)
            t[f"{a}_{b}"] = offsets[:, ja] - offsets[:, jb]
        t["helioRange"] = helio
        t["topoRange"] = delta
        t["phaseAngle"] = alpha
        t["elongation"] = elong
        dimming = 5.0 * np.log10(helio * delta) - 2.5 * np.log10(
            np.concatenate([hg12_phase_function(alpha[k : k + 1], float(g12[k])) for k in range(n)])
        )
        for j, band in enumerate(ALL_BANDS):
            t[f"{band}_flux"] = mag_to_flux(h_r + offsets[:, j] + dimming)
        parts.append(t)
    from astropy.table import vstack

    return vstack(parts)


def asteroid_flux(ast: Table, band: str, mjd: float) -> np.ndarray:
    """Compute the flux of asteroids at a time (rotational light curve included).

    Parameters
    ----------
    ast : `astropy.table.Table`
        Rows of `make_asteroids` (the tracks of the night of ``mjd``).
    band : `str`
        The band.
    mjd : `float`
        The time (MJD).

    Returns
    -------
    flux : `numpy.ndarray`
        The flux of each asteroid, in nJy: ``<band>_flux`` (the night's
        distance and phase dimming) times the rotational modulation, a
        double sine of peak-to-peak amplitude ``rot_amplitude``.
    """
    cycle = (mjd - np.asarray(ast["mjd_ref"])) / np.asarray(ast["rot_period"]) + np.asarray(ast["rot_phase"])
    dmag = 0.5 * np.asarray(ast["rot_amplitude"]) * np.sin(4.0 * np.pi * cycle)
    return np.asarray(ast[f"{band}_flux"]) * 10 ** (-0.4 * dmag)


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
