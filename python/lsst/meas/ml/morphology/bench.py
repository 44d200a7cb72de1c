"""``meas-ml bench morphology``: galaxies per second per patch, and the share of reading and cutting.

One patch goes through the task's path: read its coadds and objects (from
a Butler repository, ``--butler``; without it, a simulated patch in memory,
so the read time is 0), cut and prepare the stamps (`coadd_stamps`), and
classify them through the inference engine (`classify_stamps`).  The
baseline, measured in the same process on the same stamps, is the bare
model loop: ``model(batch)`` under ``torch.inference_mode`` in batches of
256, nothing else.  The model is the registered architecture with random
weights (speed does not depend on the weights).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..engine import InferenceEngine
from ..packages import ModelPackage
from .features import DEFAULT_BANDS, DEFAULT_CLASSES, coadd_stamps, input_spec
from .predict import classify_stamps
from .task import ClassifyMorphologyConfig

__all__ = ["benchmark"]


def _package(architecture: str, stamp_size: int, bands: Sequence[str]) -> ModelPackage:
    from ..models import build_model

    hyper = {"in_channels": 2 * len(bands) + 1, "stamp_size": stamp_size, "n_classes": len(DEFAULT_CLASSES)}
    torch.manual_seed(0)
    model = build_model(architecture, hyper)
    return ModelPackage.from_model(
        model,
        family="morphology",
        architecture=architecture,
        hyperparameters=hyper,
        inputs=input_spec(bands, stamp_size, "coadd"),
        outputs={"class_names": list(DEFAULT_CLASSES), "energy_median": 0.0, "energy_p99": 1.0},
        version="bench",
        provenance={"note": "random weights for timing"},
        name=f"bench-{architecture}",
    )


def _read_patch(
    butler_path: str | None, collections: list[str], n_galaxies: int, bands: Sequence[str]
) -> tuple[dict[str, Any], Any, float, str]:
    """Return the coadds and objects of patch 0, the read seconds and a description."""
    if butler_path is None:
        from ..simulate import SurveyConfig
        from ..simulate.survey import simulate_survey

        config = dataclasses.replace(
            SurveyConfig.default(),
            visit_bands=("r",),
            visits_per_band=1,
            n_detectors=1,
            n_galaxies=n_galaxies,
        )
        survey = simulate_survey(config)
        coadds = {b: survey.coadds[(0, b)] for b in bands}
        objects = survey.object[np.asarray(survey.object["patch"]) == 0]
        return coadds, objects, 0.0, f"simulated patch 0 ({n_galaxies} galaxies per tract, in memory)"
    from lsst.daf.butler import Butler

    butler = Butler.from_config(butler_path, collections=collections)
    t0 = time.perf_counter()
    ref = next(iter(butler.query_datasets("object", explain=False)))
    objects = butler.get(ref, parameters={"columns": ["objectId", "x", "y", "patch"]})
    objects = objects[np.asarray(objects["patch"]) == 0]
    data_id = {**ref.dataId.required, "patch": 0}
    coadds = {b: butler.get("deep_coadd", dataId={**data_id, "band": b}) for b in bands}
    return coadds, objects, time.perf_counter() - t0, f"{butler_path} patch 0"


def benchmark(
    *,
    butler: str | None = None,
    collections: Sequence[str] = (),
    n_galaxies: int = 1500,
    stamp_size: int = 64,
    architecture: str = "morph_dat",
    device: str = "cpu",
    threads: int = 2,
    dihedral: bool = False,
    bands: Sequence[str] = DEFAULT_BANDS,
    repeats: int = 3,
) -> dict[str, Any]:
    """Time one patch through the task's path and the bare model loop.

    Parameters
    ----------
    butler : `str`, optional
        Repository to read patch 0 of tract 0 from; default a simulated patch.
    collections : sequence of `str`
        Its collections.
    n_galaxies : `int`
        Galaxies of the simulated tract.
    stamp_size : `int`
        Stamp side.
    architecture : `str`
        ``morph_dat`` or ``morph_resnet``.
    device : `str`
        ``cpu`` or ``cuda``.
    threads : `int`
        Torch CPU threads.
    dihedral : `bool`
        Include the 8-fold rotation/flip average.
    bands : sequence of `str`
        Bands.
    repeats : `int`
        The cut, the classification and the bare loop are timed this many
        times and the best time is kept (the read is timed once).

    Returns
    -------
    figures : `dict`
        Objects, seconds of each stage, ``galaxies_per_second``, the shares
        of reading and cutting, ``bare_model_galaxies_per_second`` and
        ``ratio_to_bare_model_loop``.
    """
    torch.set_num_threads(max(1, threads))
    coadds, objects, t_read, source = _read_patch(butler, list(collections), n_galaxies, bands)
    package = _package(architecture, stamp_size, bands)
    config = ClassifyMorphologyConfig().inference  # the task's engine settings
    config.device = device
    engine = InferenceEngine(config)
    x, y = np.asarray(objects["x"], float), np.asarray(objects["y"], float)
    warm = coadd_stamps(coadds, x[:64], y[:64], bands=bands, stamp_size=stamp_size)
    classify_stamps(package, warm, engine, dihedral=dihedral)  # load the model, warm the caches
    t_cut = t_model = t_bare = float("inf")
    for _ in range(repeats):  # best of `repeats`: the machine is shared
        t0 = time.perf_counter()
        stamps = coadd_stamps(coadds, x, y, bands=bands, stamp_size=stamp_size)
        t_cut = min(t_cut, time.perf_counter() - t0)
        t0 = time.perf_counter()
        classify_stamps(package, stamps, engine, dihedral=dihedral)
        t_model = min(t_model, time.perf_counter() - t0)
    total = t_read + t_cut + t_model
    n = len(stamps)

    model = engine.model(package)
    data = torch.as_tensor(stamps.x, device=engine.device)
    with torch.inference_mode():
        model(data[:64])
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, n, 256):
                batch = data[i : i + 256]
                if dihedral:
                    for k in range(8):
                        t = torch.rot90(
                            torch.flip(batch, dims=(-1,)) if k >= 4 else batch, k % 4, dims=(-2, -1)
                        )
                        model(t)
                else:
                    model(batch)
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            t_bare = min(t_bare, time.perf_counter() - t0)
    rate = n / total if total > 0 else float("nan")
    bare = n / t_bare if t_bare > 0 else float("nan")
    return {
        "source": source,
        "objects": n,
        "architecture": architecture,
        "stamp_size": stamp_size,
        "device": str(engine.device),
        "threads": threads,
        "dihedral_average": dihedral,
        "repeats": repeats,
        "read_seconds": round(t_read, 3),
        "cut_seconds": round(t_cut, 3),
        "model_seconds": round(t_model, 3),
        "galaxies_per_second": round(rate, 1),
        "read_and_cut_share": round((t_read + t_cut) / total, 3) if total > 0 else None,
        "bare_model_galaxies_per_second": round(bare, 1),
        "ratio_to_bare_model_loop": round(rate / bare, 3),
    }
