"""Spectra + DLA package -> ``ml_dla``: one function shared by the task and the command line.

Each spectrum is put on the common grid (`~lsst.meas.ml.dla.features`),
cut into overlapping windows of the package's length, and run through the
network.  From the per-pixel outputs, absorbers are found as in Parks et
al. (2018): every pixel with class probability above 0.5 votes for the
centre it points to (pixel + offset); votes are smoothed, and each peak
with enough votes, inside the searched region and at least a half-width
from a stronger one, is an absorber.  Its ``log_nhi`` is the median of the
log N(HI) outputs of the pixels that voted for it; ``log_nhi_err`` adds
their scatter in quadrature to the package's validation scatter;
``confidence`` is the mean class probability over the half-width around
the centre.  Spectra without an absorber get one row with ``absorber =
-1`` (so every input spectrum is accounted for and its flags are seen).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
from astropy.table import Table

from ..engine import InferenceEngine
from ..errors import MeasMlUserError
from ..packages import ModelPackage
from .features import N_CHANNELS, DlaFlag, PreparedSpectrum, prepare_spectrum, tile_windows
from .spectra import Spectrum
from .voigt import LYA

__all__ = ["Absorber", "DlaInputError", "find_absorbers", "predict_dla", "run_network"]


class DlaInputError(MeasMlUserError, ValueError):
    """Inputs the DLA search cannot use (no spectra, a redshift that does not fit)."""


@dataclasses.dataclass
class Absorber:
    """An absorber found in one spectrum.

    Attributes
    ----------
    centre : `float`
        Fractional pixel of the centre (model region).
    z_abs : `float`
        Absorber redshift.
    log_nhi, log_nhi_err : `float`
        Column density and its uncertainty.
    confidence : `float`
        Mean class probability around the centre.
    flags : `int`
        Absorber `DlaFlag` bits.
    """

    centre: float
    z_abs: float
    log_nhi: float
    log_nhi_err: float
    confidence: float
    flags: int


def run_network(
    package: ModelPackage, prepared: list[PreparedSpectrum], engine: InferenceEngine | None = None
) -> list[np.ndarray]:
    """Per-pixel network outputs of prepared spectra.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``dla`` package.
    prepared : `list` [`~lsst.meas.ml.dla.features.PreparedSpectrum`]
        Spectra on the common grid.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        Engine (default: a CPU/CUDA engine with default settings).

    Returns
    -------
    outputs : `list` [`numpy.ndarray`]
        For each spectrum, (3, n): class probability, offset (pixels),
        log N(HI).
    """
    engine = engine or InferenceEngine()
    length, margin = int(package.inputs["window"]), int(package.inputs["margin"])
    half = float(package.outputs["label_half_width"])
    all_windows, index = [], []
    for i, p in enumerate(prepared):
        w, spans = tile_windows(p.inputs, length, margin)
        all_windows.append(w)
        index.extend((i, s) for s in spans)
    if not all_windows:
        return []
    raw = engine.predict(package, np.concatenate(all_windows).astype(np.float32))
    outs = [np.zeros((3, p.inputs.shape[1]), dtype=np.float32) for p in prepared]
    for row, (i, (start, a, b)) in enumerate(index):
        if b <= a:
            continue
        seg = raw[row, :, a - start : b - start]
        outs[i][0, a:b] = 1.0 / (1.0 + np.exp(-seg[0]))
        outs[i][1, a:b] = seg[1] * half
        outs[i][2, a:b] = seg[2] + 21.0
    return outs


def find_absorbers(
    prepared: PreparedSpectrum,
    out: np.ndarray,
    *,
    half_width: float,
    min_votes: float = 10.0,
    threshold: float = 0.5,
    sigma_floor: float = 0.0,
) -> list[Absorber]:
    """Absorbers from the per-pixel outputs of one spectrum (voting on centres).

    Parameters
    ----------
    prepared : `~lsst.meas.ml.dla.features.PreparedSpectrum`
        The spectrum.
    out : `numpy.ndarray`, (3, n)
        Its `run_network` outputs.
    half_width : `float`
        Half-width (pixels) of the absorber label.
    min_votes : `float`
        Summed probability of the pixels pointing at a centre needed for
        an absorber.
    threshold : `float`
        Class probability above which a pixel votes.
    sigma_floor : `float`
        Validation scatter of log N(HI), added in quadrature.

    Returns
    -------
    absorbers : `list` [`Absorber`]
        In order of wavelength.
    """
    prob, offset, lognhi = out
    n = len(prob)
    voters = np.flatnonzero(prob > threshold)
    if voters.size == 0:
        return []
    target = voters + offset[voters]
    hist = np.zeros(n + 1)
    pos = np.clip(np.round(target).astype(int), 0, n)
    np.add.at(hist, pos, prob[voters])
    smooth = np.convolve(hist, np.ones(5), mode="same")
    s0, s1 = prepared.search
    found: list[Absorber] = []
    taken = np.zeros(n + 1, dtype=bool)
    for peak in np.argsort(smooth)[::-1]:
        if smooth[peak] < min_votes:
            break
        if taken[peak]:
            continue
        lo, hi = int(max(peak - half_width, 0)), int(min(peak + half_width + 1, n + 1))
        taken[lo:hi] = True
        near = np.abs(target - peak) <= 3.0
        if near.sum() == 0:
            continue
        centre = float(np.average(target[near], weights=prob[voters][near]))
        if not (s0 <= centre < s1):
            continue
        vals = lognhi[voters][near]
        log_n = float(np.median(vals))
        scatter = float(np.std(vals))
        a, b = int(max(round(centre - half_width), 0)), int(min(round(centre + half_width) + 1, n))
        conf = float(prob[a:b].mean()) if b > a else 0.0
        flags = 0
        c = int(round(centre))
        if prepared.bad[max(c - 10, 0) : min(c + 11, n)].any():
            flags |= DlaFlag.CENTRE_MASKED
        if centre - s0 < 50 or s1 - centre < 50:
            flags |= DlaFlag.NEAR_EDGE
        if log_n < 20.3:
            flags |= DlaFlag.SUB_DLA
        z_abs = float(prepared.wave(centre) / LYA.wrest - 1.0)
        found.append(Absorber(centre, z_abs, log_n, float(np.hypot(scatter, sigma_floor)), conf, flags))
    return sorted(found, key=lambda a: a.centre)


def _columns() -> dict[str, tuple[Any, str, str]]:
    return {
        "source_id": (str, "", "Id of the spectrum."),
        "absorber": (np.int32, "", "Index of the absorber in its spectrum; -1: no absorber found."),
        "z_qso": (np.float64, "", "Quasar redshift used."),
        "z_abs": (np.float64, "", "Absorber redshift (Lyman alpha centre)."),
        "log_nhi": (np.float32, "", "log10 N(HI) (cm^-2)."),
        "log_nhi_err": (np.float32, "", "1-sigma uncertainty of log_nhi (dex)."),
        "confidence": (np.float32, "", "Mean class probability around the centre (0-1)."),
        "is_dla": (bool, "", "log_nhi >= 20.3 and confidence >= the package's threshold."),
        "snr": (np.float32, "", "Estimated continuum S/N per 69 km/s pixel in the searched region."),
        "z_search_min": (np.float64, "", "Lowest absorber redshift searched."),
        "z_search_max": (np.float64, "", "Highest absorber redshift searched."),
        "dla_flags": (np.int64, "", "; ".join(f"{k}: {v}" for k, v in DlaFlag.descriptions().items())),
    }


def predict_dla(
    package: ModelPackage,
    spectra: Iterable[Spectrum],
    *,
    z_qso: float | None = None,
    engine: InferenceEngine | None = None,
) -> Table:
    """Find DLAs in spectra.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``dla`` package.
    spectra : iterable of `~lsst.meas.ml.dla.spectra.Spectrum`
        The spectra (e.g. a `~lsst.meas.ml.dla.spectra.SpectrumCollection`).
    z_qso : `float`, optional
        Quasar redshift for every spectrum, overriding theirs.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        Inference engine.

    Returns
    -------
    catalog : `astropy.table.Table`
        One row per absorber found (``absorber >= 0``) and one row with
        ``absorber = -1`` per spectrum without any (columns: see
        ``doc/dla.md``); metadata: flag bits and descriptions,
        ``package.provenance_metadata()``.

    Raises
    ------
    lsst.meas.ml.packages.PackageError
        If ``package`` is not a ``dla`` package of this input layout.
    DlaInputError
        If ``z_qso`` is given but not a positive finite number.
    """
    package.check_family("dla", purpose="DLA search")
    package.check_inputs(channels=N_CHANNELS, grid_dloglam=1e-4)
    if z_qso is not None and not (np.isfinite(z_qso) and z_qso > 0):
        raise DlaInputError(f"Quasar redshift {z_qso!r} must be a positive number.")
    spectra = list(spectra)
    prepared: list[PreparedSpectrum | int] = [prepare_spectrum(s, z_qso) for s in spectra]
    runnable = [p for p in prepared if isinstance(p, PreparedSpectrum)]
    outputs = iter(run_network(package, runnable, engine))
    half = float(package.outputs["label_half_width"])
    min_votes = float(package.outputs.get("min_votes", 10.0))
    floor = float(package.outputs.get("log_nhi_sigma_floor", 0.0))
    conf_min = float(package.outputs.get("confidence_threshold", 0.5))
    rows: list[dict[str, Any]] = []
    for spectrum, p in zip(spectra, prepared):
        zq = spectrum.z_qso if z_qso is None else z_qso
        base = {"source_id": spectrum.source_id, "z_qso": zq if zq is not None else np.nan}
        if not isinstance(p, PreparedSpectrum):
            rows.append(
                base
                | {
                    "absorber": -1,
                    "snr": np.nan,
                    "z_search_min": np.nan,
                    "z_search_max": np.nan,
                    "dla_flags": int(p),
                }
            )
            continue
        base |= {
            "snr": p.snr,
            "z_search_min": float(p.wave(p.search[0]) / LYA.wrest - 1),
            "z_search_max": float(p.wave(p.search[1] - 1) / LYA.wrest - 1),
        }
        found = find_absorbers(p, next(outputs), half_width=half, min_votes=min_votes, sigma_floor=floor)
        if not found:
            rows.append(base | {"absorber": -1, "dla_flags": p.flags})
        for i, a in enumerate(found):
            rows.append(
                base
                | {
                    "absorber": i,
                    "z_abs": a.z_abs,
                    "log_nhi": a.log_nhi,
                    "log_nhi_err": a.log_nhi_err,
                    "confidence": a.confidence,
                    "is_dla": a.log_nhi >= 20.3 and a.confidence >= conf_min,
                    "dla_flags": p.flags | a.flags,
                }
            )
    out = Table()
    for name, (dtype, unit, doc) in _columns().items():
        default = "" if dtype is str else (False if dtype is bool else (-1 if name == "absorber" else np.nan))
        values = [r.get(name, default) for r in rows]
        out[name] = (
            np.array(values, dtype=dtype if dtype is not str else str)
            if rows
            else np.array([], dtype=dtype if dtype is not str else "U1")
        )
        if unit:
            out[name].unit = unit
        out[name].description = doc
    out.meta["dla_flag_bits"] = DlaFlag.bits()
    out.meta["dla_flag_descriptions"] = DlaFlag.descriptions()
    out.meta.update(package.provenance_metadata())
    return out
