"""Solar System source table + asteroids package -> ``ml_asteroid_taxonomy``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from astropy.table import Table

from ..packages import ModelPackage
from .features import (
    BANDS,
    COLOURS,
    MODEL_COLOURS,
    AsteroidColumns,
    AsteroidFlag,
    build_colours,
)

__all__ = ["DEFAULT_CHUNK_SIZE", "predict_asteroids", "score_colours"]

DEFAULT_CHUNK_SIZE = 65536


def score_colours(
    package: ModelPackage,
    x: np.ndarray,
    cov: np.ndarray,
    *,
    device: str = "cpu",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and anomaly scores of colours (NaN = missing colour).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        An ``asteroids`` package (its model is built and run in float64).
    x : `numpy.ndarray`, (N, D)
        Colours in the package's order, NaN where missing.
    cov : `numpy.ndarray`, (N, D, D)
        Their measurement covariances.
    device : `str`
        Torch device.
    chunk_size : `int`
        Objects scored at a time.

    Returns
    -------
    prob, anomaly : `numpy.ndarray`
        (N, n_classes) probabilities and (N,) scores; NaN rows where no
        colour is observed.
    """
    model = package.build_model().double().to(device)
    n = len(x)
    prob = np.full((n, model.n_classes), np.nan)
    anomaly = np.full(n, np.nan)
    observed = np.isfinite(x)
    for s in range(0, n, chunk_size):
        e = min(n, s + chunk_size)
        with torch.no_grad():
            logp, score = model(
                torch.as_tensor(x[s:e], device=device),
                torch.as_tensor(cov[s:e], device=device),
                torch.as_tensor(observed[s:e], device=device),
            )
        prob[s:e] = logp.exp().cpu().numpy()
        anomaly[s:e] = score.cpu().numpy()
    none = ~observed.any(axis=1)
    prob[none], anomaly[none] = np.nan, np.nan
    return prob, anomaly


def predict_asteroids(
    package: ModelPackage,
    sources_table: Any,
    columns: AsteroidColumns | None = None,
    *,
    anomaly_threshold: float = 1.0,
    device: str = "cpu",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Table:
    """Taxonomic class probabilities of every object of a Solar System source table.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        An ``asteroids`` package.
    sources_table : table-like
        One row per detection (see `~lsst.meas.ml.asteroids.features`).
    columns : `AsteroidColumns`, optional
        Column names (default Rubin's).
    anomaly_threshold : `float`
        Score above which ``OUT_OF_DISTRIBUTION`` is set.
    device : `str`
        Torch device.
    chunk_size : `int`
        Objects scored at a time.

    Returns
    -------
    catalog : `astropy.table.Table`
        One row per object: id, ``H_<band>``, colours and ``<colour>_err``,
        ``prob_<class>``, ``taxonomy_class`` ('' when no colour),
        ``taxonomy_anomaly_score``, ``n_observations_<band>``,
        ``taxonomy_flags``; metadata: flag bits and descriptions and
        ``package.provenance_metadata()``.

    Raises
    ------
    lsst.meas.ml.packages.PackageError
        If ``package`` is not an ``asteroids`` package or its input colours
        are not `~lsst.meas.ml.asteroids.features.MODEL_COLOURS`.
    lsst.meas.ml.asteroids.features.AsteroidInputError
        If ``sources_table`` lacks a column of ``columns``.
    """
    package.check_family("asteroids", purpose="asteroid taxonomy")
    package.check_inputs(colours=list(MODEL_COLOURS))
    columns = columns or AsteroidColumns()
    oc = build_colours(sources_table, columns, g12=float(package.inputs.get("g12", 0.5)))
    x, cov = oc.model_inputs(MODEL_COLOURS)
    class_names = list(package.outputs["class_names"])
    prob, anomaly = score_colours(package, x, cov, device=device, chunk_size=chunk_size)
    flags = oc.flags.copy()
    with np.errstate(invalid="ignore"):
        flags[anomaly > anomaly_threshold] |= int(AsteroidFlag.OUT_OF_DISTRIBUTION)
    out = Table()
    out[columns.id_column] = oc.ids
    for j, b in enumerate(BANDS):
        out[f"H_{b}"] = oc.h[:, j].astype(np.float32)
        out[f"H_{b}"].unit = "mag"
        out[f"H_{b}_err"] = oc.h_err[:, j].astype(np.float32)
        out[f"H_{b}_err"].unit = "mag"
    for k, (a, b) in enumerate(COLOURS):
        out[f"{a}_{b}"] = oc.colours[:, k].astype(np.float32)
        out[f"{a}_{b}"].unit = "mag"
        out[f"{a}_{b}_err"] = oc.colour_errs[:, k].astype(np.float32)
        out[f"{a}_{b}_err"].unit = "mag"
    for c, name in enumerate(class_names):
        out[f"prob_{name}"] = prob[:, c].astype(np.float32)
    has = np.isfinite(prob).all(axis=1)
    best = np.where(has, np.nanargmax(np.where(has[:, None], prob, 0.0), axis=1), 0)
    out["taxonomy_class"] = np.where(has, np.array(class_names)[best], "")
    out["taxonomy_anomaly_score"] = anomaly.astype(np.float32)
    for j, b in enumerate(BANDS):
        out[f"n_observations_{b}"] = oc.n_obs[:, j].astype(np.int32)
    out["taxonomy_flags"] = flags.astype(np.int64)
    out["taxonomy_flags"].description = "; ".join(f"{k}: {v}" for k, v in AsteroidFlag.descriptions().items())
    out.meta["taxonomy_flag_bits"] = AsteroidFlag.bits()
    out.meta["taxonomy_flag_descriptions"] = AsteroidFlag.descriptions()
    out.meta["model_colours"] = list(MODEL_COLOURS)
    out.meta["phase_function"] = f"HG12, G12={package.inputs.get('g12', 0.5)}"
    out.meta.update(package.provenance_metadata())
    return out
