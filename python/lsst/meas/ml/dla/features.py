"""Spectra to network inputs: the common grid, normalisation, windows, sightline flags.

Every spectrum, whatever its grid (linear or log-linear, any resolution),
is resampled onto one grid of constant ``log10(lambda)`` step
(`GRID_DLOGLAM` = 1e-4, 69 km/s, the SDSS/BOSS pixel), anchored at
``log10(lambda) = 3`` so that all spectra share pixel boundaries.  Finer
spectra are rebinned conserving flux (their errors add in quadrature);
spectra with pixels as coarse as the grid or coarser are interpolated.

The network sees the *model region*, rest frame `MODEL_REST_RANGE`, as
three channels per pixel: the flux divided by a running upper envelope
(90th percentile over `ENVELOPE_PIXELS` pixels, so neither flux
calibration nor a continuum fit is needed), the error divided by the same
envelope, and the mask.  Absorber centres are searched between the
quasar's Lyman beta emission (or the blue end of the data) and 3000 km/s
blueward of its Lyman alpha emission, as in the SDSS DLA surveys.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ..flags import DescribedFlag
from .spectra import Spectrum
from .voigt import C_KMS, LYA, LYB

__all__ = [
    "ENVELOPE_PIXELS",
    "GRID_DLOGLAM",
    "MODEL_REST_RANGE",
    "PROXIMITY_KMS",
    "DlaFlag",
    "PreparedSpectrum",
    "envelope",
    "grid_index",
    "prepare_spectrum",
    "rebin_to_grid",
    "search_limits",
    "tile_windows",
]

#: Step of the common grid in log10(lambda).
GRID_DLOGLAM = 1e-4
#: Rest-frame range (A) given to the network.
MODEL_REST_RANGE = (880.0, 1260.0)
#: Pixels of the running envelope used to normalise the flux.
ENVELOPE_PIXELS = 301
#: Absorbers closer than this to the quasar (km/s) are not searched for.
PROXIMITY_KMS = 3000.0
#: Absorber centres stay this many pixels inside the data.
EDGE_PIXELS = 10
#: Searched regions shorter than this (pixels) do not cover the forest.
MIN_SEARCH_PIXELS = 20
#: Input channels: normalised flux, normalised error, mask.
N_CHANNELS = 3
_FLUX_CLIP = (-1.0, 2.5)
_BAD_ERROR = 2.5


class DlaFlag(DescribedFlag):
    """Flags of ``ml_dla`` rows (sightline flags are set on each of its rows)."""

    NO_Z_QSO = 1 << 0, "Quasar redshift unknown: no search was made."
    NO_FOREST_COVERAGE = 1 << 1, "The spectrum does not cover the Lyman-alpha forest: no search was made."
    MOSTLY_MASKED = 1 << 2, "More than half of the searched pixels are masked or not finite."
    LOW_SNR = 1 << 3, "Estimated continuum S/N per 69 km/s pixel below 3: completeness is low."
    RESORTED = 1 << 4, "The wavelengths were not increasing; the pixels were sorted."
    AIR_TO_VACUUM = 1 << 5, "Air wavelengths were converted to vacuum."
    CENTRE_MASKED = 1 << 6, "Masked pixels within 10 pixels of the absorber centre."
    NEAR_EDGE = 1 << 7, "Absorber centre within 50 pixels of an end of the searched region."
    SUB_DLA = 1 << 8, "log N(HI) below 20.3: a sub-DLA candidate, not a DLA."


def grid_index(wave: np.ndarray | float) -> np.ndarray:
    """Fractional index on the common grid of a wavelength.

    Parameters
    ----------
    wave : `numpy.ndarray` or `float`
        Vacuum wavelength (A).

    Returns
    -------
    index : `numpy.ndarray`
        ``(log10(wave) - 3) / GRID_DLOGLAM``: pixel ``k`` is centred on
        ``10**(3 + k * GRID_DLOGLAM)``.
    """
    return (np.log10(np.asarray(wave, dtype=float)) - 3.0) / GRID_DLOGLAM


def _grid_wave(index: np.ndarray | float) -> np.ndarray:
    return 10.0 ** (3.0 + np.asarray(index, dtype=float) * GRID_DLOGLAM)


def _edges(x: np.ndarray) -> np.ndarray:
    mid = 0.5 * (x[1:] + x[:-1])
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def rebin_to_grid(
    wave: np.ndarray, flux: np.ndarray, error: np.ndarray, bad: np.ndarray, k0: int, k1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample a spectrum onto pixels ``k0 <= k < k1`` of the common grid.

    Parameters
    ----------
    wave, flux, error : `numpy.ndarray`
        Sorted vacuum wavelengths (A), flux and 1-sigma errors.
    bad : `numpy.ndarray`
        True where a pixel is not usable.
    k0, k1 : `int`
        Grid pixel range.

    Returns
    -------
    flux, error : `numpy.ndarray`
        On the grid (0 where masked).
    bad : `numpy.ndarray`
        True where less than half the grid pixel is covered by good data.
    """
    n = k1 - k0
    if len(wave) < 2 or n <= 0:
        return np.zeros(n), np.zeros(n), np.ones(n, dtype=bool)
    lw = np.log10(wave)
    src_step = np.median(np.diff(lw))
    good = ~bad
    f = np.where(good, flux, 0.0)
    e = np.where(good, error, 0.0)
    centres = 3.0 + np.arange(k0, k1) * GRID_DLOGLAM
    if src_step >= 0.8 * GRID_DLOGLAM:
        # As coarse as the grid or coarser: interpolate (the good fraction as well).
        g = np.interp(centres, lw, good.astype(float), left=0.0, right=0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            fo = np.interp(centres, lw[good], f[good]) if good.sum() >= 2 else np.zeros(n)
            eo = np.interp(centres, lw[good], e[good]) if good.sum() >= 2 else np.zeros(n)
        out_bad = g < 0.5
        out_bad |= (centres < lw[0]) | (centres > lw[-1])
    else:
        src_edges = _edges(lw)
        width = np.diff(src_edges)
        cum_g = np.concatenate([[0.0], np.cumsum(good * width)])
        cum_f = np.concatenate([[0.0], np.cumsum(f * width)])
        cum_v = np.concatenate([[0.0], np.cumsum(e**2 * width * width)])
        tgt = 3.0 + (np.arange(k0, k1 + 1) - 0.5) * GRID_DLOGLAM
        cg = np.diff(np.interp(tgt, src_edges, cum_g))
        cf = np.diff(np.interp(tgt, src_edges, cum_f))
        # Variance: each source pixel contributes (overlap * sigma)^2, approximated by
        # (overlap / width) * (width * sigma)^2 through the cumulative sum.
        cv = np.diff(np.interp(tgt, src_edges, cum_v))
        with np.errstate(invalid="ignore", divide="ignore"):
            fo = np.where(cg > 0, cf / cg, 0.0)
            eo = np.where(cg > 0, np.sqrt(np.maximum(cv, 0.0)) / cg, 0.0)
        out_bad = cg < 0.5 * GRID_DLOGLAM
    out_bad |= ~np.isfinite(fo) | ~np.isfinite(eo) | (eo <= 0)
    return np.where(out_bad, 0.0, fo), np.where(out_bad, 0.0, eo), out_bad


def envelope(flux: np.ndarray, error: np.ndarray, bad: np.ndarray, size: int = ENVELOPE_PIXELS) -> np.ndarray:
    """Compute the running upper envelope of a spectrum: the normalisation of the network's input.

    Parameters
    ----------
    flux, error : `numpy.ndarray`
        Flux and errors on the common grid.
    bad : `numpy.ndarray`
        Masked pixels (filled by interpolation first).
    size : `int`
        Window of the running 90th percentile (pixels).

    Returns
    -------
    env : `numpy.ndarray`
        Positive envelope, at least three times the local median error.
    """
    n = len(flux)
    good = ~bad
    if good.sum() < 2:
        return np.ones(n)
    idx = np.arange(n)
    f = np.interp(idx, idx[good], flux[good])
    e = np.interp(idx, idx[good], error[good])
    smooth = ndimage.median_filter(f, size=5, mode="nearest")
    env = ndimage.percentile_filter(smooth, 90, size=min(size, max(3, n)), mode="nearest")
    floor = 3.0 * ndimage.median_filter(e, size=min(size, max(3, n)), mode="nearest")
    env = np.maximum(env, floor)
    positive = env[env > 0]
    tiny = 1e-3 * (np.median(positive) if positive.size else 1.0)
    return np.maximum(env, tiny if tiny > 0 else 1e-30)


def search_limits(z_qso: float, wave_min: float, wave_max: float) -> tuple[float, float]:
    """Wavelength range (A) in which absorber centres are searched.

    Parameters
    ----------
    z_qso : `float`
        Quasar redshift.
    wave_min, wave_max : `float`
        Wavelength range covered by good data (A).

    Returns
    -------
    lo, hi : `float`
        From the quasar's Lyman beta emission (or the blue end of the data,
        plus `EDGE_PIXELS`) to `PROXIMITY_KMS` blueward of its Lyman alpha
        (or the red end of the data); ``lo >= hi`` when nothing is searched.
    """
    margin = 10.0 ** (EDGE_PIXELS * GRID_DLOGLAM)
    lo = max(LYB.wrest * (1.0 + z_qso), wave_min * margin)
    hi = min(LYA.wrest * (1.0 + z_qso) * (1.0 - PROXIMITY_KMS / C_KMS), wave_max / margin)
    return lo, hi


@dataclasses.dataclass
class PreparedSpectrum:
    """A spectrum on the common grid, ready for the network.

    Attributes
    ----------
    k0 : `int`
        Grid index of the first pixel of the model region.
    inputs : `numpy.ndarray`, (3, n)
        Network channels (normalised flux, normalised error, mask).
    bad : `numpy.ndarray`, (n,)
        Masked pixels.
    search : `tuple` [`int`, `int`]
        Searched pixels ``[s0, s1)``, relative to ``k0``.
    snr : `float`
        Median envelope / error over the searched good pixels.
    flags : `int`
        Sightline `DlaFlag` bits.
    """

    k0: int
    inputs: np.ndarray
    bad: np.ndarray
    search: tuple[int, int]
    snr: float
    flags: int

    def wave(self, index: np.ndarray | float) -> np.ndarray:
        """Wavelength (A) of a (fractional) pixel index relative to ``k0``.

        Parameters
        ----------
        index : `numpy.ndarray` or `float`
            Pixel index in the model region.

        Returns
        -------
        wave : `numpy.ndarray`
            Vacuum wavelength (A).
        """
        return _grid_wave(np.asarray(index, dtype=float) + self.k0)


def network_inputs(flux: np.ndarray, error: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compute the three network channels of a spectrum on the common grid.

    Parameters
    ----------
    flux, error : `numpy.ndarray`
        Flux and errors on the common grid.
    bad : `numpy.ndarray`
        Masked pixels.

    Returns
    -------
    inputs : `numpy.ndarray`, (3, n)
        Float32 channels.
    env : `numpy.ndarray`
        The envelope used.
    """
    env = envelope(flux, error, bad)
    x = np.empty((N_CHANNELS, len(flux)), dtype=np.float32)
    x[0] = np.where(bad, 0.0, np.clip(flux / env, *_FLUX_CLIP))
    x[1] = np.where(bad, _BAD_ERROR, np.clip(error / env, 0.0, _BAD_ERROR))
    x[2] = bad
    return x, env


def prepare_spectrum(spectrum: Spectrum, z_qso: float | None = None) -> PreparedSpectrum | int:
    """Put a spectrum on the common grid and compute its network inputs.

    Parameters
    ----------
    spectrum : `~lsst.meas.ml.dla.spectra.Spectrum`
        The spectrum (vacuum wavelengths).
    z_qso : `float`, optional
        Quasar redshift overriding ``spectrum.z_qso``.

    Returns
    -------
    prepared : `PreparedSpectrum` or `int`
        The prepared spectrum, or the sightline `DlaFlag` bits when no
        search can be made (``NO_Z_QSO``, ``NO_FOREST_COVERAGE``).
    """
    flags = 0
    if spectrum.resorted:
        flags |= DlaFlag.RESORTED
    if spectrum.air_converted:
        flags |= DlaFlag.AIR_TO_VACUUM
    z = spectrum.z_qso if z_qso is None else z_qso
    if z is None or not np.isfinite(z) or z <= 0:
        return flags | DlaFlag.NO_Z_QSO
    good = ~spectrum.bad
    if good.sum() < 2:
        return flags | DlaFlag.NO_FOREST_COVERAGE | DlaFlag.MOSTLY_MASKED
    wmin, wmax = float(spectrum.wavelength[good][0]), float(spectrum.wavelength[good][-1])
    lo, hi = search_limits(z, wmin, wmax)
    r0 = max(MODEL_REST_RANGE[0] * (1 + z), wmin)
    r1 = min(MODEL_REST_RANGE[1] * (1 + z), wmax)
    k0 = int(np.floor(grid_index(r0)))
    k1 = int(np.ceil(grid_index(r1))) + 1
    s0 = int(np.ceil(grid_index(lo))) - k0 if lo < hi else 0
    s1 = int(np.floor(grid_index(hi))) - k0 + 1 if lo < hi else 0
    if k1 - k0 < MIN_SEARCH_PIXELS or s1 - s0 < MIN_SEARCH_PIXELS:
        return flags | DlaFlag.NO_FOREST_COVERAGE
    flux, error, bad = rebin_to_grid(spectrum.wavelength, spectrum.flux, spectrum.error, spectrum.bad, k0, k1)
    inputs, env = network_inputs(flux, error, bad)
    sl = slice(s0, s1)
    sgood = ~bad[sl]
    if sgood.mean() < 0.5:
        flags |= DlaFlag.MOSTLY_MASKED
    snr = float(np.median(env[sl][sgood] / error[sl][sgood])) if sgood.any() else 0.0
    if snr < 3.0:
        flags |= DlaFlag.LOW_SNR
    return PreparedSpectrum(k0, inputs, bad, (s0, s1), snr, int(flags))


def tile_windows(
    inputs: np.ndarray, length: int, margin: int
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Cut a spectrum's channels into overlapping windows of fixed length.

    Parameters
    ----------
    inputs : `numpy.ndarray`, (C, n)
        Channels of one spectrum.
    length : `int`
        Window length (pixels).
    margin : `int`
        Pixels at each end of a window whose outputs are discarded (the
        windows overlap by ``2 * margin``).

    Returns
    -------
    windows : `numpy.ndarray`, (W, C, length)
        Windows; beyond the spectrum the channels are those of masked
        pixels.
    spans : `list` [`tuple` [`int`, `int`, `int`]]
        For each window: its start in the spectrum, and the first and last
        (exclusive) spectrum pixels whose outputs are taken from it.
    """
    c, n = inputs.shape
    step = length - 2 * margin
    starts = list(range(-margin, max(n - length + margin, -margin) + 1, step))
    if starts[-1] + length - margin < n:
        starts.append(starts[-1] + step)
    pad = np.zeros((c, 1), dtype=np.float32)
    pad[1], pad[2] = _BAD_ERROR, 1.0
    windows = np.repeat(pad[None, :, :], len(starts), axis=0).repeat(length, axis=2)
    spans = []
    for w, s in enumerate(starts):
        a, b = max(s, 0), min(s + length, n)
        windows[w, :, a - s : b - s] = inputs[:, a:b]
        spans.append((s, max(s + margin, 0), min(s + length - margin, n)))
    return windows, spans
