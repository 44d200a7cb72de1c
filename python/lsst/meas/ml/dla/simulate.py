"""Simulated quasar spectra: continua, Lyman-alpha forest, noise, injected DLAs.

A DLA-free sightline is built on a grid four times finer than the common
grid (`~lsst.meas.ml.dla.features.GRID_DLOGLAM` / 4, 17 km/s):

* **continuum**: a power law ``f_lambda ~ lambda^-(2 + alpha_nu)``
  (``alpha_nu ~ N(-0.6, 0.3)``) with broad and narrow emission lines of
  random strength, width and shift (Ly alpha, N V, Ly beta / O VI, Ly
  gamma, C III 977, O I, C II, Si IV...) and a smooth random distortion
  (flux calibration, intrinsic variety);
* **Lyman-alpha forest**: a log-normal optical-depth field (two Gaussian
  scales, 35 and 170 km/s) whose amplitude is set at each redshift so that
  the mean transmission follows ``exp(-0.0018 (1+z)^3.92)``
  (Faucher-Giguere et al. 2008), plus the Lyman-beta forest blueward of
  the quasar's Lyman beta;
* **Lyman-limit systems and sub-DLAs**: discrete absorbers with
  ``17 <= log N < 20`` (Voigt profiles of the Lyman series and their
  Lyman continuum), about 2.5 per unit redshift, and a sub-DLA
  (``19.3 <= log N < 20``) in a third of the sightlines: the confusers.

`inject_dla` multiplies a transmission by the Voigt profiles (Lyman series
and Lyman continuum) of a DLA.  The observed spectrum is then convolved
with a Gaussian line-spread function (FWHM 1 to 3 grid pixels: R ~ 1500 to
4400), binned to the common grid, and given noise: a continuum S/N per
pixel drawn log-uniformly (2 to 60 by default), falling to the blue, partly
photon-noise (lower in absorption troughs) and partly sky noise; a few
random bad pixels and a masked chunk in some sightlines.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from .features import GRID_DLOGLAM, MODEL_REST_RANGE, grid_index, search_limits
from .spectra import Spectrum
from .voigt import C_KMS, LYA, LYB, LYMAN_SERIES, column_density_tau, lyman_limit_tau

__all__ = [
    "SimulationConfig",
    "SimulatedSightline",
    "inject_dla",
    "mean_transmission",
    "quasar_continuum",
    "simulate_sightline",
]

_OVERSAMPLE = 4
#: Emission lines: rest wavelength (A), EW range (A), sigma range (km/s).
_EMISSION = (
    (1215.67, (25.0, 110.0), (1800.0, 4000.0)),
    (1215.67, (5.0, 30.0), (500.0, 1200.0)),
    (1240.81, (2.0, 20.0), (1000.0, 2500.0)),
    (1033.0, (4.0, 25.0), (1500.0, 3500.0)),
    (972.54, (0.0, 6.0), (1000.0, 2500.0)),
    (977.02, (0.0, 5.0), (1000.0, 2500.0)),
    (991.0, (0.0, 3.0), (1000.0, 2500.0)),
    (949.74, (0.0, 3.0), (1000.0, 2500.0)),
    (1263.3, (0.0, 3.0), (1000.0, 2000.0)),
    (1304.0, (0.0, 5.0), (1000.0, 2500.0)),
    (1335.0, (0.0, 3.0), (1000.0, 2500.0)),
    (1398.0, (3.0, 15.0), (1500.0, 3500.0)),
)


@dataclasses.dataclass
class SimulationConfig:
    """Ranges of the simulated sightlines.

    Attributes
    ----------
    z_qso : `tuple` [`float`, `float`]
        Quasar redshift range (uniform).
    snr : `tuple` [`float`, `float`]
        Continuum S/N per grid pixel (log-uniform).
    fwhm_pixels : `tuple` [`float`, `float`]
        Line-spread FWHM in grid pixels (uniform).
    wave_min : `tuple` [`float`, `float`]
        Blue end of the spectrograph (A, uniform).
    dla_counts : `tuple` [`float`, ...]
        Probability of 0, 1, 2... injected DLAs.
    log_nhi : `tuple` [`float`, `float`]
        Range of injected log N(HI) (uniform).
    sub_dla_fraction : `float`
        Fraction of sightlines given a sub-DLA (19.3 <= log N < 20).
    lls_per_dz : `float`
        Discrete absorbers with 17 <= log N < 20 per unit redshift.
    """

    z_qso: tuple[float, float] = (2.1, 4.5)
    snr: tuple[float, float] = (2.0, 60.0)
    fwhm_pixels: tuple[float, float] = (1.0, 3.0)
    wave_min: tuple[float, float] = (3550.0, 3850.0)
    dla_counts: tuple[float, ...] = (0.35, 0.45, 0.2)
    log_nhi: tuple[float, float] = (20.0, 22.5)
    sub_dla_fraction: float = 0.33
    lls_per_dz: float = 2.5


@dataclasses.dataclass
class SimulatedSightline:
    """A simulated spectrum on the common grid and its truth.

    Attributes
    ----------
    spectrum : `~lsst.meas.ml.dla.spectra.Spectrum`
        Observed spectrum (grid wavelengths, flux, error, mask, z_qso).
    continuum : `numpy.ndarray`
        True continuum on the same pixels.
    dlas : `list` [`tuple` [`float`, `float`]]
        Injected DLAs ``(z_abs, log_nhi)``.
    others : `list` [`tuple` [`float`, `float`]]
        Other discrete absorbers ``(z_abs, log_nhi)`` (log N < 20).
    snr : `float`
        Continuum S/N per pixel at the middle of the spectrum.
    fwhm_pixels : `float`
        Line-spread FWHM (grid pixels).
    """

    spectrum: Spectrum
    continuum: np.ndarray
    dlas: list[tuple[float, float]]
    others: list[tuple[float, float]]
    snr: float
    fwhm_pixels: float


def mean_transmission(z: np.ndarray | float) -> np.ndarray:
    """Mean Lyman-alpha forest transmission, ``exp(-0.0018 (1+z)^3.92)``.

    Parameters
    ----------
    z : `numpy.ndarray` or `float`
        Absorption redshift.

    Returns
    -------
    flux : `numpy.ndarray`
        Mean transmitted fraction.
    """
    return np.exp(-0.0018 * (1.0 + np.asarray(z, dtype=float)) ** 3.92)


def quasar_continuum(rest_wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a random quasar continuum with emission lines.

    Parameters
    ----------
    rest_wave : `numpy.ndarray`
        Rest-frame wavelengths (A).
    rng : `numpy.random.Generator`
        Random numbers.

    Returns
    -------
    continuum : `numpy.ndarray`
        Continuum ``f_lambda``, about 1 at 1280 A.
    """
    alpha_nu = rng.normal(-0.6, 0.3)
    cont = (rest_wave / 1280.0) ** (-(2.0 + alpha_nu))
    for wrest, ew, sig in _EMISSION:
        shift = rng.normal(0.0, 300.0)
        centre = wrest * (1 + shift / C_KMS)
        sigma_a = centre * rng.uniform(*sig) / C_KMS
        w = rng.uniform(*ew)
        amp = w / (np.sqrt(2 * np.pi) * sigma_a) * (centre / 1280.0) ** (-(2.0 + alpha_nu))
        cont = cont + amp * np.exp(-0.5 * ((rest_wave - centre) / sigma_a) ** 2)
    x = (np.log(rest_wave) - np.log(rest_wave[0])) / max(np.log(rest_wave[-1] / rest_wave[0]), 1e-6)
    distortion = sum(
        rng.normal(0, 0.04) * np.sin(np.pi * k * x + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3)
    )
    return cont * np.exp(distortion)


def _lognormal_amplitude_table(beta: float) -> tuple[np.ndarray, np.ndarray]:
    g, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    amps = np.logspace(-3, 2, 400)
    mean = np.array([(w * np.exp(-a * np.exp(beta * g - 0.5 * beta**2))).sum() for a in amps])
    return amps, mean


_AMP_TABLES: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def _forest_tau(z: np.ndarray, target: np.ndarray, rng: np.random.Generator, beta: float) -> np.ndarray:
    key = round(beta, 2)
    if key not in _AMP_TABLES:
        _AMP_TABLES[key] = _lognormal_amplitude_table(key)
    amps, mean = _AMP_TABLES[key]
    amp = np.interp(target, mean[::-1], amps[::-1])
    n = len(z)
    small = ndimage.gaussian_filter1d(rng.normal(size=n), 2.0, mode="wrap")
    large = ndimage.gaussian_filter1d(rng.normal(size=n), 10.0, mode="wrap")
    delta = 0.8 * small / small.std() + 0.6 * large / large.std()
    delta /= delta.std()
    return amp * np.exp(beta * delta - 0.5 * beta**2)


def inject_dla(
    wave: np.ndarray, transmission: np.ndarray, z_abs: float, log_nhi: float, b_kms: float = 30.0
) -> np.ndarray:
    """Multiply a transmission by a DLA's Lyman series and Lyman continuum.

    Parameters
    ----------
    wave : `numpy.ndarray`
        Observed wavelengths (A).
    transmission : `numpy.ndarray`
        Transmission (or flux) before the absorber.
    z_abs : `float`
        Absorber redshift.
    log_nhi : `float`
        Log10 N(HI) (cm^-2).
    b_kms : `float`
        Doppler parameter (km/s).

    Returns
    -------
    transmission : `numpy.ndarray`
        ``transmission * exp(-tau)``.
    """
    tau = column_density_tau(wave, z_abs, log_nhi, b_kms, LYMAN_SERIES) + lyman_limit_tau(
        wave, z_abs, log_nhi
    )
    return transmission * np.exp(-tau)


def _draw_dla_redshifts(rng: np.random.Generator, n: int, lo: float, hi: float, min_sep: int) -> list[float]:
    k_lo, k_hi = grid_index(lo), grid_index(hi)
    out: list[float] = []
    for _ in range(50 * max(n, 1)):
        if len(out) == n:
            break
        k = rng.uniform(k_lo, k_hi)
        if all(abs(k - grid_index(LYA.wrest * (1 + z))) >= min_sep for z in out):
            out.append(float(10 ** (3 + k * GRID_DLOGLAM) / LYA.wrest - 1))
    return out


def simulate_sightline(
    rng: np.random.Generator,
    config: SimulationConfig | None = None,
    *,
    z_qso: float | None = None,
    dlas: list[tuple[float, float]] | None = None,
    snr: float | None = None,
    source_id: str = "sim",
) -> SimulatedSightline:
    """Simulate one quasar spectrum over the model region, with or without DLAs.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random numbers.
    config : `SimulationConfig`, optional
        Ranges (default `SimulationConfig()`).
    z_qso : `float`, optional
        Quasar redshift (default drawn from ``config.z_qso``).
    dlas : `list` [`tuple` [`float`, `float`]], optional
        DLAs ``(z_abs, log_nhi)`` to inject; ``[]`` for a DLA-free
        sightline; default drawn from the configuration.
    snr : `float`, optional
        Continuum S/N per pixel (default drawn).
    source_id : `str`
        Id of the spectrum.

    Returns
    -------
    sightline : `SimulatedSightline`
        The spectrum and its truth.
    """
    cfg = config or SimulationConfig()
    zq = float(rng.uniform(*cfg.z_qso)) if z_qso is None else float(z_qso)
    wave_min = float(rng.uniform(*cfg.wave_min))
    r0 = max(MODEL_REST_RANGE[0] * (1 + zq), wave_min)
    r1 = MODEL_REST_RANGE[1] * (1 + zq) * 1.02
    k0, k1 = int(np.floor(grid_index(r0))), int(np.ceil(grid_index(r1)))
    n = k1 - k0
    fine = 3.0 + (k0 - 0.5 + (np.arange(n * _OVERSAMPLE) + 0.5) / _OVERSAMPLE) * GRID_DLOGLAM
    wave = 10.0**fine
    # Forest (Lyman alpha, and Lyman beta of higher-redshift gas below the quasar's Lyman beta).
    beta = float(rng.uniform(1.3, 1.9))
    za = wave / LYA.wrest - 1.0
    target = mean_transmission(za) ** rng.uniform(0.8, 1.2)
    tau = np.where(za < zq, _forest_tau(za, target, rng, beta), 0.0)
    zb = wave / LYB.wrest - 1.0
    tau_b = _forest_tau(zb, mean_transmission(zb), rng, beta) * (LYB.f * LYB.wrest) / (LYA.f * LYA.wrest)
    tau = tau + np.where(zb < zq, tau_b, 0.0)
    trans = np.exp(-tau)
    # Discrete absorbers below the DLA threshold.
    z_lo_model = r0 / LYA.wrest - 1.0
    others: list[tuple[float, float]] = []
    n_lls = rng.poisson(cfg.lls_per_dz * max(zq - z_lo_model, 0.0))
    for _ in range(n_lls):
        others.append((float(rng.uniform(z_lo_model, zq)), float(17.0 + rng.exponential(0.8) % 3.0)))
    lo, hi = search_limits(zq, wave_min, r1)
    if rng.uniform() < cfg.sub_dla_fraction and lo < hi:
        others.append((float(rng.uniform(lo, hi) / LYA.wrest - 1.0), float(rng.uniform(19.3, 20.0))))
    for z_abs, log_n in others:
        b = float(rng.uniform(15.0, 40.0))
        trans = trans * np.exp(
            -(column_density_tau(wave, z_abs, log_n, b, LYMAN_SERIES) + lyman_limit_tau(wave, z_abs, log_n))
        )
    # DLAs.
    if dlas is None:
        count = int(rng.choice(len(cfg.dla_counts), p=np.asarray(cfg.dla_counts) / sum(cfg.dla_counts)))
        zs = _draw_dla_redshifts(rng, count, lo, hi, 90) if lo < hi else []
        dlas = [(z, float(rng.uniform(*cfg.log_nhi))) for z in zs]
    for z_abs, log_n in dlas:
        trans = inject_dla(wave, trans, z_abs, log_n, float(rng.uniform(10.0, 50.0)))
    cont_fine = quasar_continuum(wave / (1 + zq), rng)
    flux_fine = cont_fine * trans
    fwhm = float(rng.uniform(*cfg.fwhm_pixels))
    flux_fine = ndimage.gaussian_filter1d(flux_fine, fwhm * _OVERSAMPLE / 2.3548, mode="nearest")
    flux = flux_fine.reshape(n, _OVERSAMPLE).mean(axis=1)
    cont = cont_fine.reshape(n, _OVERSAMPLE).mean(axis=1)
    grid_wave = 10.0 ** (3.0 + np.arange(k0, k1) * GRID_DLOGLAM)
    # Noise.
    s = float(np.exp(rng.uniform(np.log(cfg.snr[0]), np.log(cfg.snr[1])))) if snr is None else float(snr)
    mid = 0.5 * (grid_wave[0] + grid_wave[-1])
    sigma_c = cont / s * (grid_wave / mid) ** (-rng.uniform(0.0, 2.0))
    u = rng.uniform(0.2, 1.0)
    sigma = sigma_c * np.sqrt(u + (1 - u) * np.clip(flux / cont, 0.0, None))
    observed = flux + rng.normal(size=n) * sigma
    error = sigma * rng.uniform(0.9, 1.1)
    mask = rng.uniform(size=n) < 0.01
    if rng.uniform() < 0.3:
        a = int(rng.integers(0, n))
        mask[a : a + int(rng.integers(5, 30))] = True
    observed = np.where(mask, rng.choice([0.0, 1e3, -1e3]) * np.median(cont), observed)
    scale = float(10 ** rng.uniform(-1, 1))
    spectrum = Spectrum(
        grid_wave,
        observed * scale,
        error * scale,
        mask,
        z_qso=zq,
        source_id=source_id,
        meta={"simulated": True, "dlas": [list(d) for d in dlas], "snr": s, "fwhm_pixels": fwhm},
    )
    return SimulatedSightline(spectrum, cont * scale, list(dlas), others, s, fwhm)
