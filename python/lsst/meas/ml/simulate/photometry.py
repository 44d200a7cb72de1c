"""A small synthetic object table with redshifts, for tests and examples.

Galaxies have a power-law continuum with a 4000 A break whose strength
depends on a spectral type; their fluxes in the LSST bands (effective
wavelengths below) follow from redshifting that spectrum, with Gaussian
noise of a sky floor plus a fraction of the flux.  Colours therefore carry
the redshift (the break moving through the bands), which is all a photo-z
network needs to be tested on; it is *not* a realistic galaxy population.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from ..photoz.features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, ZEROPOINT_NJY

__all__ = ["LSST_EFFECTIVE_WAVELENGTH_NM", "make_photometric_catalog"]

#: Effective wavelengths of the LSST filters (nm).
LSST_EFFECTIVE_WAVELENGTH_NM = {"u": 367.0, "g": 482.0, "r": 622.0, "i": 755.0, "z": 869.0, "y": 971.0}


def make_photometric_catalog(
    n: int,
    *,
    seed: int = 0,
    bands: Sequence[str] = tuple("ugrizy"),
    z_range: tuple[float, float] = (0.05, 2.5),
    sky_sigma_njy: float = 25.0,
    flux_template: str = DEFAULT_FLUX_TEMPLATE,
    flux_err_template: str = DEFAULT_FLUX_ERR_TEMPLATE,
    id_offset: int = 1_000_000,
) -> Table:
    """Simulate ``n`` galaxies: ``objectId``, fluxes and errors (nJy) per band, ``redshift``.

    Parameters
    ----------
    n : `int`
        Number of galaxies.
    seed : `int`
        Random seed.
    bands : sequence of `str`
        Bands (keys of `LSST_EFFECTIVE_WAVELENGTH_NM`).
    z_range : `tuple` [`float`, `float`]
        Uniform redshift range.
    sky_sigma_njy : `float`
        Noise floor per band (nJy); the flux error is this and 2% of the
        flux added in quadrature.
    flux_template : `str`
        Flux column template with a ``{band}`` field.
    flux_err_template : `str`
        Flux-error column template with a ``{band}`` field.
    id_offset : `int`
        ``objectId`` of the first galaxy (the others follow in order).

    Returns
    -------
    table : `astropy.table.Table`
        ``objectId``, a flux and a flux-error column per band and
        ``redshift``; flux columns whose names end in ``Flux`` or
        ``FluxErr`` (as the default templates' do) get the unit nJy.
    """
    rng = np.random.default_rng(seed)
    z = rng.uniform(*z_range, n)
    kind = rng.uniform(0.0, 1.0, n)  # 0: blue star-forming, 1: red passive
    mag_i = rng.uniform(19.5, 24.5, n)
    slope = -0.5 + 1.5 * kind
    break_ratio = 0.5 - 0.4 * kind
    table = Table()
    table["objectId"] = np.arange(id_offset, id_offset + n, dtype=np.int64)
    ref = 755.0 / (1.0 + z)
    ref_flux = (ref / 500.0) ** slope * np.where(ref < 400.0, break_ratio, 1.0)
    amplitude = 10.0 ** ((ZEROPOINT_NJY - mag_i) / 2.5) / ref_flux
    for band in bands:
        rest = LSST_EFFECTIVE_WAVELENGTH_NM[band] / (1.0 + z)
        # A smooth break over +-15 nm around 400 nm.
        step = 1.0 / (1.0 + np.exp(-(rest - 400.0) / 5.0))
        shape = (rest / 500.0) ** slope * (break_ratio + (1.0 - break_ratio) * step)
        flux = amplitude * shape
        err = np.sqrt(sky_sigma_njy**2 + (0.02 * flux) ** 2)
        table[flux_template.format(band=band)] = (flux + rng.normal(0.0, err)).astype(np.float64)
        table[flux_err_template.format(band=band)] = err
    table["redshift"] = z
    for name in table.colnames:
        if name.endswith("Flux") or name.endswith("FluxErr"):
            table[name].unit = "nJy"
    return table
