"""Voigt profiles of the H I Lyman series.

The optical depth of a line of rest wavelength ``lambda0``, oscillator
strength ``f`` and damping constant ``gamma`` for a column density ``N``
(cm^-2) and Doppler parameter ``b`` is::

    tau(nu) = N f sqrt(pi) e^2 / (m_e c Dnu_D) H(a, u)
    Dnu_D = b / lambda0,  a = gamma / (4 pi Dnu_D),  u = (nu - nu0) / Dnu_D

with ``H(a, u) = Re w(u + i a)`` the Voigt function (``w`` the Faddeeva
function, `scipy.special.wofz`).  At line centre this is the familiar
``tau0 = 1.497e-15 N f lambda0[A] / b[km/s]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import wofz

__all__ = [
    "C_KMS",
    "LYMAN_SERIES",
    "LYA",
    "LYB",
    "Line",
    "column_density_tau",
    "lyman_limit_tau",
    "voigt_H",
]

#: Speed of light (km/s).
C_KMS = 299792.458
_C_CMS = C_KMS * 1e5
#: sqrt(pi) e^2 / (m_e c) in cm^2 Hz.
_SIGMA_PREF = 0.026540 / np.sqrt(np.pi)
#: Photo-ionisation cross-section of H I at the Lyman limit (cm^2).
SIGMA_LL = 6.30e-18
#: Lyman limit (A, vacuum).
LYMAN_LIMIT = 911.753


@dataclasses.dataclass(frozen=True)
class Line:
    """An absorption line.

    Attributes
    ----------
    name : `str`
        Name, e.g. ``"HI 1215"``.
    wrest : `float`
        Rest wavelength (A, vacuum).
    f : `float`
        Oscillator strength.
    gamma : `float`
        Damping constant (s^-1).
    """

    name: str
    wrest: float
    f: float
    gamma: float


#: Lyman alpha.
LYA = Line("HI 1215", 1215.6701, 0.4164, 6.265e8)
#: Lyman beta.
LYB = Line("HI 1025", 1025.7223, 0.07912, 1.897e8)
#: The first members of the Lyman series (Morton 2003 values).
LYMAN_SERIES: tuple[Line, ...] = (
    LYA,
    LYB,
    Line("HI 972", 972.5368, 0.02900, 8.127e7),
    Line("HI 949", 949.7431, 0.01394, 4.204e7),
    Line("HI 937", 937.8035, 0.007799, 2.450e7),
)


def voigt_H(a: float | np.ndarray, u: np.ndarray) -> np.ndarray:
    """Compute the Voigt function ``H(a, u) = Re w(u + i a)``.

    Parameters
    ----------
    a : `float` or `numpy.ndarray`
        Damping parameter (``>= 0``).
    u : `numpy.ndarray`
        Frequency offset in Doppler widths.

    Returns
    -------
    H : `numpy.ndarray`
        ``H(0, u) = exp(-u^2)``; ``H(a, 0) = exp(a^2) erfc(a)``.
    """
    return np.real(wofz(np.asarray(u, dtype=float) + 1j * np.asarray(a, dtype=float)))


def column_density_tau(
    wave: np.ndarray, z: float, log_n: float, b_kms: float, lines: tuple[Line, ...] = (LYA,)
) -> np.ndarray:
    """Optical depth of an H I absorber at observed wavelengths.

    Parameters
    ----------
    wave : `numpy.ndarray`
        Observed (vacuum) wavelengths (A).
    z : `float`
        Absorber redshift.
    log_n : `float`
        Log10 of the column density (cm^-2).
    b_kms : `float`
        Doppler parameter (km/s).
    lines : `tuple` [`Line`, ...]
        Lines to include (default Lyman alpha only).

    Returns
    -------
    tau : `numpy.ndarray`
        Optical depth at each wavelength (sum over ``lines``).
    """
    wave = np.asarray(wave, dtype=float)
    rest = wave / (1.0 + z)
    n = 10.0 ** float(log_n)
    tau = np.zeros_like(rest)
    nu = _C_CMS / (rest * 1e-8)
    for line in lines:
        dnu_d = b_kms * 1e5 / (line.wrest * 1e-8)
        a = line.gamma / (4.0 * np.pi * dnu_d)
        u = (nu - _C_CMS / (line.wrest * 1e-8)) / dnu_d
        tau += n * line.f * _SIGMA_PREF / dnu_d * voigt_H(a, u)
    return tau


def lyman_limit_tau(wave: np.ndarray, z: float, log_n: float) -> np.ndarray:
    """Optical depth of the Lyman continuum of an absorber.

    Parameters
    ----------
    wave : `numpy.ndarray`
        Observed wavelengths (A).
    z : `float`
        Absorber redshift.
    log_n : `float`
        Log10 column density (cm^-2).

    Returns
    -------
    tau : `numpy.ndarray`
        ``N sigma_LL (lambda / 912)^3`` blueward of the limit, 0 redward.
    """
    rest = np.asarray(wave, dtype=float) / (1.0 + z)
    return np.where(rest < LYMAN_LIMIT, 10.0 ** float(log_n) * SIGMA_LL * (rest / LYMAN_LIMIT) ** 3, 0.0)
