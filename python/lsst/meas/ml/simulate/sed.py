"""Spectral energy distributions and their ugrizy magnitudes.

A small, smooth physical model, enough to make colours carry redshift and
type information the way real ones do:

* LSST-like filters (smooth top hats over the official band edges);
* galaxy templates built from an old stellar population (with a 4000 A
  break whose strength depends on type), a young power-law population,
  emission lines, dust (a Calzetti-like law) and intergalactic absorption
  blueward of Lyman alpha, redshifted and integrated through the filters;
* stars as black bodies (a stellar locus);
* asteroids as reflected sunlight with the mean colours of their
  taxonomic class.

Colours are tabulated once on a redshift grid and interpolated.
"""

from __future__ import annotations

import functools

import numpy as np

from .config import ALL_BANDS

__all__ = [
    "ASTEROID_CLASSES",
    "GALAXY_TEMPLATES",
    "asteroid_colours",
    "band_edges_nm",
    "blackbody_colours",
    "galaxy_colours",
]

#: Band edges in nm (approximate LSST filter half-power points).
_BAND_EDGES = {
    "u": (324.0, 395.0),
    "g": (405.0, 552.0),
    "r": (552.0, 691.0),
    "i": (691.0, 818.0),
    "z": (818.0, 921.0),
    "y": (922.0, 1060.0),
}

#: Galaxy SED templates: name -> (old-population weight at 550 nm rest,
#: 4000 A break depth, emission-line strength).
GALAXY_TEMPLATES: dict[str, tuple[float, float, float]] = {
    "elliptical": (0.98, 0.55, 0.0),
    "spiral": (0.70, 0.35, 0.4),
    "irregular": (0.25, 0.12, 1.0),
}

#: Asteroid taxonomic classes: (probability, u-g, g-r, r-i, i-z, z-y).
#: Means of SDSS-like colours per class (C: primitive, S: stony, X: metallic
#: or enstatite, V: basaltic with a deep 1 micron band, D: red primitive).
ASTEROID_CLASSES: dict[str, tuple[float, float, float, float, float, float]] = {
    "C": (0.40, 1.40, 0.42, 0.12, 0.02, 0.02),
    "S": (0.33, 1.70, 0.62, 0.19, -0.08, 0.05),
    "X": (0.12, 1.50, 0.50, 0.16, 0.06, 0.04),
    "V": (0.05, 1.60, 0.56, 0.20, -0.32, 0.10),
    "D": (0.10, 1.65, 0.66, 0.27, 0.16, 0.10),
}

_WAVE = np.arange(60.0, 1400.0, 1.0)  # nm


def band_edges_nm(band: str) -> tuple[float, float]:
    """Return the blue and red edges of an LSST band.

    Parameters
    ----------
    band : `str`
        The band (one of ``ugrizy``).

    Returns
    -------
    blue, red : `float`
        The edges, in nm.
    """
    return _BAND_EDGES[band]


@functools.cache
def _throughputs() -> np.ndarray:
    """Filter transmission curves on ``_WAVE`` (bands x wavelengths)."""
    curves = []
    for band in ALL_BANDS:
        lo, hi = _BAND_EDGES[band]
        width = 6.0
        curve = 1.0 / (1.0 + np.exp(-(_WAVE - lo) / width)) / (1.0 + np.exp((_WAVE - hi) / width))
        curves.append(curve)
    return np.array(curves)


def _ab_mags(f_nu: np.ndarray) -> np.ndarray:
    """AB magnitudes (up to a constant) of f_nu arrays (... x wavelengths)."""
    t = _throughputs()
    weights = t / _WAVE  # photon-counting: integral of f_nu T dlambda / lambda
    num = f_nu @ weights.T
    den = weights.sum(axis=1)
    return -2.5 * np.log10(np.clip(num / den, 1e-30, None))


def _rest_frame_sed(template: str, ebv: float) -> tuple[np.ndarray, np.ndarray]:
    """(rest wavelength nm, f_nu) of a galaxy template with dust E(B-V)."""
    old_weight, break_depth, lines = GALAXY_TEMPLATES[template]
    lam = np.arange(50.0, 1400.0, 0.5)
    # Old population: a cool black body (f_nu) with a 4000 A break and a
    # strong UV deficit; young population: f_lambda ~ lambda^-2.3.
    old = _planck_nu(lam, 5200.0)
    old = old * (1.0 - break_depth / (1.0 + np.exp(-(400.0 - lam) / 6.0)))
    old = old * np.where(lam < 250.0, (lam / 250.0) ** 3, 1.0)
    young = (lam / 550.0) ** (-2.3 + 2.0)
    young = young * (1.0 - 0.5 * break_depth / (1.0 + np.exp(-(365.0 - lam) / 5.0)))
    norm_old = np.interp(550.0, lam, old)
    sed = old_weight * old / norm_old + (1.0 - old_weight) * young
    if lines > 0:
        # Emission lines: [OII] 372.7, Hbeta 486.1, [OIII] 500.7, Halpha 656.3.
        for centre, strength in ((372.7, 0.9), (486.1, 0.4), (500.7, 1.0), (656.3, 1.6)):
            sed = sed + lines * strength * 0.6 * np.exp(-0.5 * ((lam - centre) / 2.0) ** 2) * np.interp(
                centre, lam, sed
            )
    # Calzetti-like attenuation, k(lambda) ~ 4.05 (550/lambda)^1.1 normalised to R_V = 4.05.
    k = 4.05 * (550.0 / lam) ** 1.1
    sed = sed * 10.0 ** (-0.4 * k * ebv)
    # No flux below the Lyman limit.
    sed = np.where(lam < 91.2, 0.0, sed)
    return lam, sed


def _planck_nu(lam_nm: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """Black-body f_nu (arbitrary units) at wavelengths in nm."""
    hc_over_k = 1.4388e7  # nm K
    x = hc_over_k / (np.asarray(lam_nm) * np.asarray(temperature))
    nu = 1.0 / np.asarray(lam_nm)
    return nu**3 / np.expm1(np.clip(x, 1e-6, 700.0))


def _igm_transmission(lam_obs: np.ndarray, z: float) -> np.ndarray:
    """Madau-like Lyman-alpha forest transmission at observed wavelengths."""
    lam_rest = lam_obs / (1.0 + z)
    tau = np.where(lam_rest < 121.6, 0.0036 * (lam_obs / 121.6) ** 3.46, 0.0)
    return np.exp(-tau)


#: Redshift grid for the colour tables and the E(B-V) values tabulated.
_Z_GRID = np.linspace(0.0, 4.0, 201)
_EBV_GRID = (0.0, 0.4)


@functools.cache
def _galaxy_mag_table(template: str) -> np.ndarray:
    """Magnitudes relative to i: array (n_ebv, n_z, 6)."""
    tables = []
    for ebv in _EBV_GRID:
        lam, sed = _rest_frame_sed(template, ebv)
        rows = []
        for z in _Z_GRID:
            f_obs = np.interp(_WAVE / (1.0 + z), lam, sed, left=0.0, right=0.0)
            f_obs = f_obs * _igm_transmission(_WAVE, z)
            mags = _ab_mags(f_obs[None, :])[0]
            rows.append(mags - mags[ALL_BANDS.index("i")])
        tables.append(rows)
    return np.array(tables)


def galaxy_colours(template: str, redshift: np.ndarray, ebv: np.ndarray | float = 0.0) -> np.ndarray:
    """Magnitudes relative to the i band, ``m_b - m_i``, for each galaxy.

    Parameters
    ----------
    template : `str`
        One of `GALAXY_TEMPLATES`.
    redshift : `numpy.ndarray`
        Redshifts (clipped to the tabulated 0-4).
    ebv : `numpy.ndarray` or `float`
        Dust colour excess E(B-V) (linear in magnitude between 0 and 0.4).

    Returns
    -------
    colours : `numpy.ndarray`
        Shape ``(n, 6)`` in `ALL_BANDS` order; the i column is zero.
    """
    if template not in GALAXY_TEMPLATES:
        raise ValueError(f"Unknown galaxy template {template!r}; choose one of {sorted(GALAXY_TEMPLATES)}.")
    table = _galaxy_mag_table(template)
    z = np.clip(np.atleast_1d(np.asarray(redshift, dtype=float)), _Z_GRID[0], _Z_GRID[-1])
    ebv = np.broadcast_to(np.asarray(ebv, dtype=float), z.shape)
    out = np.empty((z.size, len(ALL_BANDS)))
    frac = ebv / _EBV_GRID[1]
    for k in range(len(ALL_BANDS)):
        m0 = np.interp(z, _Z_GRID, table[0, :, k])
        m1 = np.interp(z, _Z_GRID, table[1, :, k])
        out[:, k] = m0 + frac * (m1 - m0)
    # Bands entirely below the Lyman limit: keep faint but finite.
    return np.minimum(out, 12.0)


@functools.cache
def _blackbody_table() -> tuple[np.ndarray, np.ndarray]:
    temps = np.geomspace(2500.0, 40000.0, 200)
    f_nu = _planck_nu(_WAVE[None, :], temps[:, None])
    mags = _ab_mags(f_nu)
    return temps, mags - mags[:, [ALL_BANDS.index("r")]]


def blackbody_colours(temperature: np.ndarray) -> np.ndarray:
    """Compute magnitudes relative to r, ``m_b - m_r``, of black bodies.

    Parameters
    ----------
    temperature : `numpy.ndarray`
        Temperatures, in K (clipped to 2500-40000 K).

    Returns
    -------
    colours : `numpy.ndarray`
        Shape ``(n, 6)``: one column per band of ``ugrizy``.
    """
    temps, table = _blackbody_table()
    t = np.clip(np.atleast_1d(np.asarray(temperature, dtype=float)), temps[0], temps[-1])
    return np.stack([np.interp(t, temps, table[:, k]) for k in range(len(ALL_BANDS))], axis=1)


def asteroid_colours(classes: np.ndarray, rng: np.random.Generator, scatter: float = 0.03) -> np.ndarray:
    """Magnitudes relative to r, ``m_b - m_r``, for asteroids of the given classes.

    Parameters
    ----------
    classes : `numpy.ndarray` of `str`
        Taxonomic class letters (keys of `ASTEROID_CLASSES`).
    rng : `numpy.random.Generator`
        Source of the per-object colour scatter.
    scatter : `float`
        Gaussian scatter (mag) added to each colour.
    """
    classes = np.atleast_1d(np.asarray(classes))
    out = np.zeros((classes.size, len(ALL_BANDS)))
    for n, cls in enumerate(classes):
        try:
            _, ug, gr, ri, iz, zy = ASTEROID_CLASSES[str(cls)]
        except KeyError:
            raise ValueError(
                f"Unknown asteroid class {cls!r}; choose one of {sorted(ASTEROID_CLASSES)}."
            ) from None
        c = np.array([ug, gr, ri, iz, zy]) + rng.normal(0.0, scatter, 5)
        g = c[1]
        out[n] = [g + c[0], g, 0.0, -c[2], -c[2] - c[3], -c[2] - c[3] - c[4]]
    return out
