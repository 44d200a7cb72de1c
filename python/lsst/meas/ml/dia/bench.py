"""Latency benchmark of the DIA classifier (``meas-ml bench dia``).

One synthetic detector (``image_size`` square, float32 science, template,
difference and variance planes, the same pixel count as an LSSTCam
detector at the default 4096) with ``n_sources`` point sources; the timed
step is what `ClassifyDiaSourcesTask.run` does per detector: cut all stamps
and prepare the channels, then run the model through the shared engine,
with and without averaging over the eight rotations/flips.  Image
simulation and model loading are outside the timing (the engine caches the
model per process, as in a pipetask worker).

The night estimate scales the measured per-core rate (sources per second
divided by the torch threads used) to ``node_cores`` cores running
independent single-threaded workers, which is how ``pipetask -j`` runs.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from ..bench import best_time
from ..engine import InferenceConfig, InferenceEngine
from ..images import PixelPlanes
from ..packages import ModelPackage
from .features import cut_source_stamps
from .predict import predict_probabilities

__all__ = ["make_detector", "run_benchmark"]


def make_detector(
    n_sources: int, image_size: int, *, seed: int = 0
) -> tuple[PixelPlanes, PixelPlanes, PixelPlanes, np.ndarray, np.ndarray]:
    """Make a synthetic detector: science, template, difference and source positions.

    Parameters
    ----------
    n_sources : `int`
        Number of Gaussian sources added to the science and difference
        images.
    image_size : `int`
        Side of the square images in pixels.
    seed : `int`, optional
        Seed of the random generator.

    Returns
    -------
    science, template, difference : `~lsst.meas.ml.images.PixelPlanes`
        Images with unit variance and the source profile as PSF.
    x, y : `numpy.ndarray`
        Source positions in pixels.
    """
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size)
    noise = rng.standard_normal(shape, dtype=np.float32)
    template = np.full(shape, 10.0, np.float32)
    science = template + noise
    x = rng.uniform(0, image_size - 1, n_sources)
    y = rng.uniform(0, image_size - 1, n_sources)
    diff = noise.copy()
    yy, xx = np.mgrid[-7:8, -7:8]
    blob = (50.0 * np.exp(-(xx**2 + yy**2) / (2 * 2.0**2))).astype(np.float32)
    for xi, yi in zip(np.rint(x).astype(int), np.rint(y).astype(int), strict=True):
        r0, r1 = max(0, yi - 7), min(image_size, yi + 8)
        c0, c1 = max(0, xi - 7), min(image_size, xi + 8)
        piece = blob[r0 - (yi - 7) : r1 - (yi - 7), c0 - (xi - 7) : c1 - (xi - 7)]
        diff[r0:r1, c0:c1] += piece
        science[r0:r1, c0:c1] += piece
    var = np.ones(shape, np.float32)
    psf = blob / blob.sum()
    make = lambda img: PixelPlanes(image=img, variance=var, psf=psf)  # noqa: E731
    return make(science), make(template), make(diff), x, y


def run_benchmark(
    package: ModelPackage,
    *,
    n_sources: int = 1000,
    image_size: int = 4096,
    threads: int = 2,
    repeats: int = 5,
    device: str = "cpu",
    node_cores: int = 100,
    night_sources: float = 1e7,
) -> dict[str, Any]:
    """Time cutouts + inference for one detector.

    Figures are the best of ``repeats`` runs, in seconds.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The DIA package to time.
    n_sources : `int`, optional
        Number of sources on the synthetic detector.
    image_size : `int`, optional
        Side of the synthetic detector in pixels.
    threads : `int`, optional
        Torch threads (and engine threads).
    repeats : `int`, optional
        Number of timed runs of each step.
    device : `str`, optional
        Engine device, e.g. ``"cpu"`` or ``"cuda"``.
    node_cores : `int`, optional
        Cores per node for the per-night extrapolation (CPU only).
    night_sources : `float`, optional
        Sources per night for the per-night extrapolation.

    Returns
    -------
    report : `dict` [`str`, `~typing.Any`]
        Timings, throughputs, ratios to the in-process baselines and the
        per-night extrapolations.
    """
    torch.set_num_threads(max(1, threads))
    sci, tmpl, diff, x, y = make_detector(n_sources, image_size)
    size = int(package.inputs["stamp_size"])
    config = InferenceConfig()
    config.device = device
    config.numThreads = threads
    engine = InferenceEngine(config)

    t_cut = best_time(lambda: cut_source_stamps(sci, tmpl, diff, x, y, size), repeats=repeats)
    stamps = cut_source_stamps(sci, tmpl, diff, x, y, size)
    t_model = best_time(
        lambda: predict_probabilities(package, stamps.x, engine, average=False), repeats=repeats
    )
    t_model8 = best_time(
        lambda: predict_probabilities(package, stamps.x, engine, average=True), repeats=repeats
    )
    total1, total8 = t_cut + t_model, t_cut + t_model8
    cores = threads if engine.device.type == "cpu" else 1
    per_core = n_sources / (total1 * cores)
    per_core8 = n_sources / (total8 * cores)
    report: dict[str, Any] = {
        "device": str(engine.device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "n_sources": n_sources,
        "image_size": image_size,
        "stamp_size": size,
        "model": f"{package.name} {package.version}",
        "symmetric_model": bool(package.hyperparameters.get("symmetric", False)),
        "seconds_cutouts": t_cut,
        "seconds_inference": t_model,
        "seconds_inference_dihedral8": t_model8,
        "seconds_total": total1,
        "seconds_total_dihedral8": total8,
        "within_1s_budget": total1 <= 1.0,
        "within_1s_budget_dihedral8": total8 <= 1.0,
        # Ratios to the baselines measured in this process: the one-pass
        # total and the bare stamp cutting, and the share of the 1 s budget.
        "ratio_dihedral8_to_one_pass": total8 / total1,
        "ratio_total_to_cutouts": total1 / t_cut,
        "ratio_total_to_budget": total1 / 1.0,
        "ratio_total_dihedral8_to_budget": total8 / 1.0,
    }
    if engine.device.type == "cpu":
        report.update(
            {
                "sources_per_core_second": per_core,
                "sources_per_core_second_dihedral8": per_core8,
                f"night_{night_sources:.0e}_hours_on_{node_cores}_cores": night_sources
                / (per_core * node_cores)
                / 3600,
                f"night_{night_sources:.0e}_hours_on_{node_cores}_cores_dihedral8": night_sources
                / (per_core8 * node_cores)
                / 3600,
            }
        )
    else:
        report.update(
            {
                "sources_per_second_gpu": n_sources / total1,
                "sources_per_second_gpu_dihedral8": n_sources / total8,
                f"night_{night_sources:.0e}_hours_on_1_gpu": night_sources / (n_sources / total1) / 3600,
                f"night_{night_sources:.0e}_hours_on_1_gpu_dihedral8": night_sources
                / (n_sources / total8)
                / 3600,
            }
        )
    return report
