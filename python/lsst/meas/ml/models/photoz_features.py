"""Photo-z features computed inside the network from raw fluxes (nJy).

`flux_features` turns the raw array of
`lsst.meas.ml.photoz.features.PhotozColumns.extract` (fluxes, flux errors
and an optional E(B-V)) into asinh magnitudes, colours (adjacent or all
pairs), log magnitude errors and a missing-band indicator per band, so a
model package needs nothing but that raw array.  Asinh magnitudes (Lupton,
Gunn & Szalay 1999) are finite for zero and negative fluxes; a band whose
flux or error is NaN, infinite, or whose error is not positive is
*missing*: its magnitude is set to the softening limit, its error to a
large value and its indicator to one.
"""

from __future__ import annotations

import math

import torch

__all__ = ["COLOUR_MODES", "ZEROPOINT_NJY", "asinh_magnitude", "flux_features", "missing_mask", "n_features"]

#: AB zero point of fluxes in nJy: m = 31.4 - 2.5 log10(f / nJy).
ZEROPOINT_NJY = 31.4

_POGSON = 2.5 / math.log(10.0)
_MISSING_MAG_ERR = 10.0


def missing_mask(flux: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """Mark the bands that cannot be used: NaN/inf flux or error, or error <= 0.

    Parameters
    ----------
    flux, err : `torch.Tensor`
        Fluxes and flux errors (nJy), same shape.

    Returns
    -------
    missing : `torch.Tensor`
        Boolean, True where the band is missing.
    """
    return ~torch.isfinite(flux) | ~torch.isfinite(err) | ~(err > 0)


def asinh_magnitude(
    flux: torch.Tensor, softening: torch.Tensor, zeropoint: float = ZEROPOINT_NJY
) -> torch.Tensor:
    """Compute asinh magnitudes of fluxes in nJy.

    ``m = zp - 2.5/ln10 * (asinh(f / 2b) + ln b)``; equals the Pogson
    magnitude for ``f >> b`` and stays finite for ``f <= 0``.

    Parameters
    ----------
    flux : `torch.Tensor`
        Fluxes (nJy).
    softening : `torch.Tensor`
        Softening ``b`` per band (nJy).
    zeropoint : `float`, optional
        AB zero point of nJy fluxes.

    Returns
    -------
    magnitude : `torch.Tensor`
        Asinh magnitudes, finite everywhere the inputs are.
    """
    return zeropoint - _POGSON * (torch.asinh(flux / (2.0 * softening)) + torch.log(softening))


#: Colour sets of `flux_features`: neighbouring bands only, or every pair of bands.
COLOUR_MODES = ("adjacent", "all")


def _n_colours(n_bands: int, colours: str) -> int:
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours must be one of {COLOUR_MODES}, got {colours!r}.")
    return n_bands - 1 if colours == "adjacent" else n_bands * (n_bands - 1) // 2


def n_features(n_bands: int, use_ebv: bool, colours: str = "adjacent") -> int:
    """Count the features `flux_features` returns.

    Parameters
    ----------
    n_bands : `int`
        Number of bands.
    use_ebv : `bool`
        Whether E(B-V) is a feature.
    colours : `str`, optional
        ``"adjacent"`` or ``"all"`` (`COLOUR_MODES`).

    Returns
    -------
    n : `int`
        Number of features.
    """
    return n_bands + _n_colours(n_bands, colours) + n_bands + n_bands + (1 if use_ebv else 0)


def flux_features(
    inputs: torch.Tensor, softening: torch.Tensor, n_bands: int, use_ebv: bool, colours: str = "adjacent"
) -> torch.Tensor:
    """Build features from the raw input array of `PhotozColumns.extract`.

    Parameters
    ----------
    inputs : `torch.Tensor`, (N, 2B [+1])
        Fluxes, flux errors (nJy) and optional E(B-V).
    softening : `torch.Tensor`, (B,)
        Asinh softening per band (nJy), of the order of the typical error.
    n_bands : `int`
        Number of bands.
    use_ebv : `bool`
        Whether the last input column is E(B-V).
    colours : `str`
        ``"adjacent"``: colours of neighbouring bands (B-1); ``"all"``:
        colours of every pair of bands, bluer minus redder (B(B-1)/2).

    Returns
    -------
    features : `torch.Tensor`, (N, `n_features`)
        ``[asinh mags (B), colours, log10 mag errors (B),
        missing indicators (B) (, E(B-V))]``; always finite.
    """
    x = inputs.float()
    flux = x[:, :n_bands]
    err = x[:, n_bands : 2 * n_bands]
    missing = missing_mask(flux, err)
    zero = torch.zeros_like(flux)
    flux = torch.where(missing, zero, flux)
    err = torch.where(missing, zero, err)
    b = softening.float().clamp_min(1e-3)
    mag = asinh_magnitude(flux, b)
    mag_err = _POGSON * err / torch.sqrt(flux * flux + 4.0 * b * b)
    mag_err = torch.where(missing, torch.full_like(mag_err, _MISSING_MAG_ERR), mag_err)
    log_err = torch.log10(mag_err.clamp_min(1e-4))
    _n_colours(n_bands, colours)  # validates ``colours``
    if colours == "adjacent":
        colour = mag[:, :-1] - mag[:, 1:]
    else:
        i, j = torch.triu_indices(n_bands, n_bands, offset=1)
        colour = mag[:, i] - mag[:, j]
    parts = [mag, colour, log_err, missing.float()]
    if use_ebv:
        ebv = x[:, 2 * n_bands : 2 * n_bands + 1]
        parts.append(torch.where(torch.isfinite(ebv), ebv, torch.zeros_like(ebv)))
    return torch.cat(parts, dim=1)
