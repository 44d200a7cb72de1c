"""``meas-ml bench dla``: spectra per second and the ratio to the bare model loop.

The spectra are BOSS-sized: the log-linear grid of BOSS (3600 to 10400 A,
``dlog10(lambda) = 1e-4``, about 4600 pixels), quasars at ``2.1 < z < 3.5``
with their simulated forest (`~lsst.meas.ml.dla.simulate`) and a noisy
power-law continuum redward.  The full path (`predict_dla`: resampling,
normalisation, windows, network, absorber finding, table) is timed against
the bare loop of the network over the same windows, in the same process.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..engine import InferenceConfig, InferenceEngine
from ..packages import ModelPackage, default_package
from .features import GRID_DLOGLAM, PreparedSpectrum, prepare_spectrum, tile_windows
from .predict import predict_dla
from .simulate import SimulationConfig, simulate_sightline
from .spectra import Spectrum

__all__ = ["benchmark", "boss_like_spectra"]


def boss_like_spectra(n: int, seed: int = 0) -> list[Spectrum]:
    """Simulate quasar spectra on the BOSS grid (about 4600 pixels each).

    Parameters
    ----------
    n : `int`
        Number of spectra.
    seed : `int`
        Random seed.

    Returns
    -------
    spectra : `list` [`~lsst.meas.ml.dla.spectra.Spectrum`]
        Spectra with ``z_qso`` set.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(
        int(round((np.log10(3600.0) - 3) / GRID_DLOGLAM)), int(round((np.log10(10400.0) - 3) / GRID_DLOGLAM))
    )
    wave = 10.0 ** (3 + k * GRID_DLOGLAM)
    cfg = SimulationConfig(z_qso=(2.1, 3.5), wave_min=(3600.0, 3600.0))
    out = []
    for i in range(n):
        sl = simulate_sightline(rng, cfg, source_id=f"boss-{i}")
        s = sl.spectrum
        c_end = float(np.median(sl.continuum[-20:]))
        sigma = float(np.median(s.error[-20:]))
        flux = c_end * (wave / s.wavelength[-1]) ** -1.5 + rng.normal(size=len(wave)) * sigma
        err = np.full(len(wave), sigma)
        mask = np.zeros(len(wave), dtype=bool)
        idx = np.searchsorted(wave, s.wavelength[0] - 1e-6)
        m = min(len(s), len(wave) - idx)
        flux[idx : idx + m], err[idx : idx + m], mask[idx : idx + m] = s.flux[:m], s.error[:m], s.mask[:m]
        out.append(Spectrum(wave, flux, err, mask, z_qso=s.z_qso, source_id=s.source_id))
    return out


def benchmark(
    n_spectra: int = 400, *, device: str = "cpu", threads: int = 2, model: str | None = None
) -> dict[str, Any]:
    """Time `predict_dla` on BOSS-size spectra and the bare network loop on the same windows.

    Parameters
    ----------
    n_spectra : `int`
        Spectra timed.
    device : `str`
        Torch device (``cpu``, ``cuda``).
    threads : `int`
        Torch CPU threads.
    model : `str`, optional
        Package file (default the shipped one).

    Returns
    -------
    figures : `dict`
        ``spectra_per_second`` (full path), ``bare_model_spectra_per_second``,
        ``ratio_to_bare_model`` and the sizes.
    """
    torch.set_num_threads(threads)
    package = ModelPackage.load(model) if model else default_package("dla")
    config = InferenceConfig()
    config.device = device
    engine = InferenceEngine(config)
    spectra = boss_like_spectra(n_spectra)
    predict_dla(package, spectra[:8], engine=engine)  # warm-up
    t0 = time.perf_counter()
    catalog = predict_dla(package, spectra, engine=engine)
    full = time.perf_counter() - t0
    prepared = [p for p in (prepare_spectrum(s) for s in spectra) if isinstance(p, PreparedSpectrum)]
    length, margin = int(package.inputs["window"]), int(package.inputs["margin"])
    windows = np.concatenate([tile_windows(p.inputs, length, margin)[0] for p in prepared]).astype(np.float32)
    net = engine.model(package)
    batch = engine.batch_size_for(package, windows[:4])
    x = torch.from_numpy(windows)
    dev = engine.device
    with torch.inference_mode():
        net(x[:batch].to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for s in range(0, len(x), batch):
            net(x[s : s + batch].to(dev)).cpu()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        bare = time.perf_counter() - t0
    return {
        "device": str(dev),
        "threads": threads,
        "spectra": n_spectra,
        "pixels_per_spectrum": int(np.median([len(s) for s in spectra])),
        "windows_per_spectrum": round(len(windows) / max(len(prepared), 1), 2),
        "batch_size": batch,
        "spectra_per_second": round(n_spectra / full, 1),
        "bare_model_spectra_per_second": round(len(prepared) / bare, 1),
        "ratio_to_bare_model": round((n_spectra / full) / (len(prepared) / bare), 3),
        "absorbers_found": int((catalog["absorber"] >= 0).sum()),
    }
