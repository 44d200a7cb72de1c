"""The static sky: galaxies (bulge + disk) and stars, with their truth.

Galaxies get an i-band magnitude from power-law number counts, a redshift
whose distribution depends on that magnitude, a morphology class whose
odds depend on magnitude and redshift (ellipticals bright and nearby,
irregulars faint and distant), a bulge fraction, dust and sizes that shrink
with redshift and luminosity.  Colours come from `sed.galaxy_colours`: the
bulge has the elliptical template's colours, the disk its class's, so each
band sees a different bulge fraction.  Stars are black bodies on a
stellar locus; some vary.
"""

from __future__ import annotations

import functools

import galsim
import numpy as np
from astropy.table import Table

from .config import ALL_BANDS, SurveyConfig, mag_to_flux
from .sed import blackbody_colours, galaxy_colours

__all__ = [
    "HUBBLE_TYPES",
    "MORPHOLOGY_CLASSES",
    "GSPARAMS",
    "draw_static_sky",
    "galaxy_profile",
    "stamp_size",
    "table_columns",
    "variable_factor",
]

#: Morphology class names and the integer labels used in truth tables.
MORPHOLOGY_CLASSES: dict[str, int] = {"elliptical": 0, "spiral": 1, "irregular": 2, "star": 3}

#: Hubble types of the galaxies, in the order of their integer labels
#: (`hubble_types`); stars get -1.
HUBBLE_TYPES: tuple[str, ...] = ("E", "S0", "Sa", "Sb", "Sc/Sd", "Irr")

#: GalSim accuracy settings: good enough for survey noise, fast to draw.
GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3, maximum_fft_size=4096)

_MAX_CLUMPS = 3


@functools.cache
def _distance_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Redshift grid, distance modulus and proper kpc per arcsec (flat LCDM, H0=70, Om=0.3)."""
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70.0, Om0=0.3)
    z = np.linspace(0.01, 4.5, 400)
    dm = np.asarray(cosmo.distmod(z).value)
    kpc = np.asarray(cosmo.kpc_proper_per_arcmin(z).value) / 60.0
    return z, dm, kpc


def hubble_types(morphology_class: np.ndarray, bulge_fraction: np.ndarray) -> np.ndarray:
    """Return the Hubble type of each object from its class and bulge-to-total ratio.

    Ellipticals (class 0) with B/T >= 0.85 are E and the others S0 (a
    smooth disk with the elliptical's colours); spirals (class 1) are Sa for
    B/T >= 0.3, Sb for 0.12 <= B/T < 0.3 and Sc/Sd below; irregulars are
    Irr.  Stars (class 3) get -1.

    Parameters
    ----------
    morphology_class : `numpy.ndarray`
        Integer classes of `MORPHOLOGY_CLASSES`.
    bulge_fraction : `numpy.ndarray`
        Bulge-to-total flux ratio (i band).

    Returns
    -------
    types : `numpy.ndarray`
        Int16 index into `HUBBLE_TYPES` (-1 for stars).
    """
    m = np.asarray(morphology_class)
    bt = np.asarray(bulge_fraction, dtype=float)
    out = np.full(m.shape, -1, dtype=np.int16)
    out[(m == 0) & (bt >= 0.85)] = 0
    out[(m == 0) & (bt < 0.85)] = 1
    out[(m == 1) & (bt >= 0.3)] = 2
    out[(m == 1) & (bt >= 0.12) & (bt < 0.3)] = 3
    out[(m == 1) & (bt < 0.12)] = 4
    out[m == 2] = 5
    return out


def _draw_magnitudes(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10^(slope m) on [lo, hi]."""
    a = 10.0 ** (slope * lo)
    b = 10.0 ** (slope * hi)
    return np.log10(a + rng.uniform(0.0, 1.0, n) * (b - a)) / slope


def draw_static_sky(config: SurveyConfig, rng: np.random.Generator, tract_wcs, margin: float = 20.0) -> Table:
    """Draw the galaxies and stars of one tract.

    Parameters
    ----------
    config : `SurveyConfig`
        Survey parameters (counts, magnitude ranges, variable fraction).
    rng : `numpy.random.Generator`
        Random numbers.
    tract_wcs : `astropy.wcs.WCS`
        The tract's WCS, to turn tract pixels into sky coordinates.
    margin : `float`
        Objects are placed up to this many pixels outside the tract too.

    Returns
    -------
    truth : `astropy.table.Table`
        One row per object with its position (tract pixels and degrees),
        morphology, redshift, shape parameters, true fluxes per band (nJy)
        and variability parameters.
    """
    ng, ns = config.n_galaxies, config.n_stars
    n = ng + ns
    x = rng.uniform(-margin, config.tract_width + margin, n)
    y = rng.uniform(-margin, config.tract_height + margin, n)
    ra, dec = tract_wcs.wcs_pix2world(x, y, 0)

    is_star = np.zeros(n, dtype=bool)
    is_star[ng:] = True

    # --- galaxies ----------------------------------------------------------
    imag = _draw_magnitudes(rng, ng, *config.galaxy_mag_range, slope=0.33)
    z0 = np.clip(0.0417 * imag - 0.744 + 0.04, 0.05, None)
    z = np.clip(rng.gamma(3.0, z0), 0.03, 3.8)
    frac_z = np.clip(z / 2.0, 0.0, 1.0)
    faint = np.clip((imag - 18.0) / 8.0, 0.0, 1.0)
    p_ell = np.clip(0.40 - 0.25 * faint - 0.10 * frac_z, 0.05, None)
    p_irr = 0.08 + 0.25 * frac_z + 0.10 * faint
    u = rng.uniform(0.0, 1.0, ng)
    morph = np.where(u < p_ell, 0, np.where(u < p_ell + p_irr, 2, 1))

    bulge_fraction = np.select(
        [morph == 0, morph == 1],
        [rng.uniform(0.75, 1.0, ng), rng.beta(2.0, 5.0, ng) * 0.8],
        rng.uniform(0.0, 0.08, ng),
    )
    bulge_n = np.select([morph == 0, morph == 1], [4.0, rng.choice([1.5, 2.5, 4.0], ng)], 1.5)
    ebv = np.select(
        [morph == 0, morph == 1], [np.zeros(ng), rng.exponential(0.08, ng)], rng.exponential(0.05, ng)
    )
    ebv = np.clip(ebv, 0.0, 0.4)

    zt, dm, kpc = _distance_tables()
    abs_mag = imag - np.interp(z, zt, dm) + 2.5 * np.log10(1.0 + z)
    kpc_per_arcsec = np.interp(z, zt, kpc)
    lum = abs_mag + 21.0
    scatter = 10.0 ** rng.normal(0.0, 0.18, ng)
    disk_kpc = 5.0 * 10.0 ** (-0.4 * 0.25 * lum) * (1.0 + z) ** -0.6 * scatter
    ell_kpc = 3.5 * 10.0 ** (-0.4 * 0.45 * lum) * (1.0 + z) ** -0.8 * scatter
    disk_kpc = np.where(morph == 0, 1.6 * ell_kpc, np.where(morph == 2, 0.8 * disk_kpc, disk_kpc))
    bulge_kpc = np.where(morph == 0, ell_kpc, disk_kpc * rng.uniform(0.15, 0.4, ng))
    disk_hlr = np.clip(disk_kpc / kpc_per_arcsec, 0.08, 4.0)
    bulge_hlr = np.clip(bulge_kpc / kpc_per_arcsec, 0.05, 2.5)
    disk_q = np.select(
        [morph == 0, morph == 1],
        [rng.uniform(0.55, 1.0, ng), rng.uniform(0.15, 1.0, ng)],
        rng.uniform(0.35, 1.0, ng),
    )
    bulge_q = np.where(morph == 0, disk_q, rng.uniform(0.6, 1.0, ng))
    beta = rng.uniform(0.0, np.pi, ng)

    # Colours: the bulge follows the elliptical template, the disk its class.
    disk_colour = np.empty((ng, len(ALL_BANDS)))
    for k, name in enumerate(("elliptical", "spiral", "irregular")):
        sel = morph == k
        if sel.any():
            disk_colour[sel] = galaxy_colours(name, z[sel], ebv[sel])
    bulge_colour = galaxy_colours("elliptical", z, 0.0)
    # Per-band scatter about the templates (a template set's typical mismatch): 0.02 mag.  At 0.04 mag
    # the noise-free colours alone gave 6.3% photo-z outliers (photoz.demo.colour_floor), more than
    # bright galaxies show with ugrizy; at 0.02 mag, 1.4%.
    disk_colour = disk_colour + rng.normal(0.0, 0.02, disk_colour.shape)
    bulge_colour = bulge_colour + rng.normal(0.0, 0.02, bulge_colour.shape)
    iflux = mag_to_flux(imag)
    bulge_flux = (iflux * bulge_fraction)[:, None] * 10.0 ** (-0.4 * bulge_colour)
    disk_flux = (iflux * (1.0 - bulge_fraction))[:, None] * 10.0 ** (-0.4 * disk_colour)

    # Star-forming clumps of irregulars (share of the disk flux).
    clump_dx = np.zeros((ng, _MAX_CLUMPS))
    clump_dy = np.zeros((ng, _MAX_CLUMPS))
    clump_frac = np.zeros((ng, _MAX_CLUMPS))
    n_clumps = np.where(morph == 2, rng.integers(1, _MAX_CLUMPS + 1, ng), 0)
    for k in range(_MAX_CLUMPS):
        has = n_clumps > k
        r = disk_hlr * rng.uniform(0.2, 1.2, ng)
        phi = rng.uniform(0.0, 2.0 * np.pi, ng)
        clump_dx[:, k] = np.where(has, r * np.cos(phi), 0.0)
        clump_dy[:, k] = np.where(has, r * np.sin(phi), 0.0)
        clump_frac[:, k] = np.where(has, rng.uniform(0.05, 0.15, ng), 0.0)

    # --- stars -------------------------------------------------------------
    rmag = _draw_magnitudes(rng, ns, *config.star_mag_range, slope=0.15)
    temperature = np.clip(rng.lognormal(np.log(5200.0), 0.25, ns), 3000.0, 20000.0)
    star_flux = mag_to_flux(rmag)[:, None] * 10.0 ** (-0.4 * blackbody_colours(temperature))
    variable = rng.uniform(0.0, 1.0, ns) < config.variable_star_fraction
    amplitude = np.where(variable, np.exp(rng.uniform(np.log(0.15), np.log(1.2), ns)), 0.0)
    period = np.where(variable, np.exp(rng.uniform(np.log(0.3), np.log(20.0), ns)), 0.0)
    phase = np.where(variable, rng.uniform(0.0, 2.0 * np.pi, ns), 0.0)

    # --- assemble ------------------------------------------------------------
    def both(gal: np.ndarray, star: np.ndarray | float) -> np.ndarray:
        return np.concatenate([gal, np.broadcast_to(star, (ns,) + np.shape(gal)[1:])])

    table = Table()
    table["index"] = np.arange(n, dtype=np.int64)
    table["ra"] = np.asarray(ra)
    table["dec"] = np.asarray(dec)
    table["x"] = x
    table["y"] = y
    table["is_star"] = is_star
    morph_all = both(morph, MORPHOLOGY_CLASSES["star"])
    names = {v: k for k, v in MORPHOLOGY_CLASSES.items()}
    table["morphology_class"] = morph_all.astype(np.int16)
    table["morphology"] = np.array([names[int(m)] for m in morph_all])
    table["redshift"] = both(z, 0.0)
    table["bulge_fraction"] = both(bulge_fraction, 0.0)
    table["bulge_sersic_n"] = both(bulge_n, 0.0)
    table["bulge_hlr"] = both(bulge_hlr, 0.0)
    table["disk_hlr"] = both(disk_hlr, 0.0)
    table["bulge_q"] = both(bulge_q, 1.0)
    table["disk_q"] = both(disk_q, 1.0)
    table["position_angle"] = both(beta, 0.0)
    table["ebv"] = both(ebv, 0.0)
    table["n_clumps"] = both(n_clumps, 0).astype(np.int16)
    table["clump_dx"] = both(clump_dx, 0.0)
    table["clump_dy"] = both(clump_dy, 0.0)
    table["clump_frac"] = both(clump_frac, 0.0)
    table["temperature"] = np.concatenate([np.zeros(ng), temperature])
    for k, band in enumerate(ALL_BANDS):
        table[f"{band}_bulge_flux"] = both(bulge_flux[:, k], 0.0)
        table[f"{band}_flux"] = np.concatenate([bulge_flux[:, k] + disk_flux[:, k], star_flux[:, k]])
    table["is_variable"] = np.concatenate([np.zeros(ng, dtype=bool), variable])
    table["var_amplitude"] = np.concatenate([np.zeros(ng), amplitude])
    table["var_period"] = np.concatenate([np.zeros(ng), period])
    table["var_phase"] = np.concatenate([np.zeros(ng), phase])
    return table


def variable_factor(
    row_amplitude: np.ndarray, period: np.ndarray, phase: np.ndarray, mjd: float
) -> np.ndarray:
    """Compute the flux of variable stars at ``mjd`` relative to their mean.

    The variation is sinusoidal in magnitude.

    Parameters
    ----------
    row_amplitude : `numpy.ndarray`
        Semi-amplitude of the variation, in magnitudes.
    period : `numpy.ndarray`
        Period, in days; non-positive periods mean a constant flux.
    phase : `numpy.ndarray`
        Phase, in radians.
    mjd : `float`
        The time of the observation (MJD).

    Returns
    -------
    factor : `numpy.ndarray`
        The flux factor ``10 ** (-0.4 * amplitude * sin(2 pi mjd / period + phase))``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        arg = np.where(period > 0, 2.0 * np.pi * mjd / np.where(period > 0, period, 1.0) + phase, 0.0)
    return 10.0 ** (-0.4 * row_amplitude * np.sin(arg))


def galaxy_profile(
    cols: dict[str, np.ndarray], i: int, band: str, flux_scale: float = 1.0
) -> galsim.GSObject:
    """Build the GalSim profile (before the PSF) of truth object ``i`` in one band.

    Stars are a `galsim.DeltaFunction`.

    Parameters
    ----------
    cols : `dict` [`str`, `numpy.ndarray`]
        Columns of the truth table as plain arrays (fast element access).
    i : `int`
        Row index.
    band : `str`
        Band whose fluxes to use.
    flux_scale : `float`, optional
        Factor applied to the flux (variability).

    Returns
    -------
    profile : `galsim.GSObject`
        The profile, with its flux in nJy.
    """
    total = float(cols[f"{band}_flux"][i]) * flux_scale
    if cols["is_star"][i]:
        return galsim.DeltaFunction(flux=total, gsparams=GSPARAMS)
    beta = float(cols["position_angle"][i]) * galsim.radians
    fb = float(cols[f"{band}_bulge_flux"][i]) * flux_scale
    fd = total - fb
    parts = []
    if fb > 0:
        parts.append(
            _unit_sersic(float(cols["bulge_sersic_n"][i]), float(cols["bulge_hlr"][i]))
            .shear(q=float(cols["bulge_q"][i]), beta=beta)
            .withFlux(fb)
        )
    clump_total = 0.0
    for k in range(int(cols["n_clumps"][i])):
        fc = fd * float(cols["clump_frac"][i, k])
        clump_total += fc
        parts.append(
            galsim.Gaussian(sigma=0.12, flux=fc, gsparams=GSPARAMS).shift(
                float(cols["clump_dx"][i, k]), float(cols["clump_dy"][i, k])
            )
        )
    if fd - clump_total > 0:
        parts.append(
            galsim.Exponential(half_light_radius=float(cols["disk_hlr"][i]), gsparams=GSPARAMS)
            .shear(q=float(cols["disk_q"][i]), beta=beta)
            .withFlux(fd - clump_total)
        )
    if not parts:
        return galsim.DeltaFunction(flux=0.0, gsparams=GSPARAMS)
    return parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=GSPARAMS)


def _unit_sersic(n: float, hlr: float) -> galsim.GSObject:
    if n == 4.0:
        return galsim.DeVaucouleurs(half_light_radius=hlr, trunc=6.0 * hlr, gsparams=GSPARAMS)
    return galsim.Sersic(n=n, half_light_radius=hlr, trunc=6.0 * hlr, gsparams=GSPARAMS)


def stamp_size(
    cols: dict[str, np.ndarray], i: int, psf_fwhm: float, pixel_scale: float, bright: bool = False
) -> int:
    """Choose an odd stamp side (pixels) that holds source ``i`` and its PSF wings.

    Parameters
    ----------
    cols : `dict` [`str`, `numpy.ndarray`]
        Columns of the truth table as plain arrays.
    i : `int`
        Row index.
    psf_fwhm : `float`
        The PSF FWHM, in arcsec.
    pixel_scale : `float`
        The pixel scale, in arcsec per pixel.
    bright : `bool`, optional
        Leave room for the wider wings of a bright source.

    Returns
    -------
    size : `int`
        The odd stamp side, between 15 and 201 pixels.
    """
    if cols["is_star"][i]:
        half = (7.0 if bright else 3.0) * psf_fwhm
    else:
        half = 4.0 * max(float(cols["disk_hlr"][i]), 1.5 * float(cols["bulge_hlr"][i])) + 2.0 * psf_fwhm
        if bright:
            half += 3.0 * psf_fwhm
    n = 2 * int(np.ceil(half / pixel_scale)) + 1
    return int(np.clip(n, 15, 201))


def table_columns(table: Table) -> dict[str, np.ndarray]:
    """Return plain NumPy arrays of a table's columns (for per-row access in loops).

    Parameters
    ----------
    table : `astropy.table.Table`
        The table.

    Returns
    -------
    cols : `dict` [`str`, `numpy.ndarray`]
        The columns, by name.
    """
    return {name: np.asarray(table[name]) for name in table.colnames}
