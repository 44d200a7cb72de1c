"""The asteroid-taxonomy part of the demo: train on classy + the survey's asteroids, summarise.

Training (`train_demo_package`): the labelled anchors are the classy
spectra (Mahlke et al. 2022) integrated over the LSST throughputs, with
survey-like noise (`~lsst.meas.ml.asteroids.train.train_asteroids`, as for
the shipped package); the simulated survey's asteroids are added as
**unlabelled** rows: their measured colours (``ss_source`` of the
repository through `~lsst.meas.ml.asteroids.features.build_colours`, with
their own covariances and missing colours marginalised) refine the
components in the same EM, so the model sees the survey's colours and
errors without being told their classes (the summary scores against those
classes).  The classy table is looked for in ``$MEAS_ML_CLASSY``, then
``$MEAS_ML_DIR/../shared/data/asteroid_taxonomy/classy_data.csv``, then next
to the source tree; ``speclite`` is needed.  Without either, the demo uses
the shipped package (`~lsst.meas.ml.packages.default_package`) unchanged.

`summarize` compares ``taxonomy_class`` with the complexes the simulation
drew (``truth_ss_object``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..packages import ModelPackage
from .features import MODEL_COLOURS, build_colours

__all__ = ["CLASSY_ENV", "classy_path", "summarize", "survey_colours", "train_demo_package"]

#: Environment variable naming ``classy_data.csv``.
CLASSY_ENV = "MEAS_ML_CLASSY"

_CLASSY_RELATIVE = Path("shared") / "data" / "asteroid_taxonomy" / "classy_data.csv"


def classy_path() -> Path | None:
    """Find ``classy_data.csv`` (see the module documentation).

    Returns
    -------
    path : `pathlib.Path` or `None`
        The first existing candidate, or `None`.
    """
    candidates = []
    if os.environ.get(CLASSY_ENV):
        candidates.append(Path(os.environ[CLASSY_ENV]))
    if os.environ.get("MEAS_ML_DIR"):
        candidates.append(Path(os.environ["MEAS_ML_DIR"]).resolve().parent / _CLASSY_RELATIVE)
    candidates.append(Path(__file__).resolve().parents[6] / _CLASSY_RELATIVE)
    return next((c for c in candidates if c.is_file()), None)


def _single(butler: Any, name: str, collections: Sequence[str] | str) -> Any:
    refs = butler.query_datasets(name, collections=collections, explain=False)
    if not refs:
        raise LookupError(f"No {name!r} dataset in {collections}.")
    return butler.get(refs[0])


def survey_colours(ss_source: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured model colours of every object of a Solar System source table.

    Parameters
    ----------
    ss_source : table-like
        Solar System source rows (Rubin's column names).

    Returns
    -------
    ids, x, cov : `numpy.ndarray`
        Object ids, colours in `MODEL_COLOURS` order (NaN where missing)
        and their covariances, for the objects with at least one colour.
    """
    oc = build_colours(ss_source)
    x, cov = oc.model_inputs(MODEL_COLOURS)
    keep = np.isfinite(x).any(axis=1)
    return oc.ids[keep], x[keep], cov[keep]


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Train the demo's asteroid model (classy labels + the survey's asteroids unlabelled).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The demo repository (its ``ss_source``).
    collections : `~collections.abc.Sequence` [`str`]
        Collections to read from.
    workdir : `str`
        Working directory (not used).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The trained package (version ``"demo"``), or the shipped one when
        the classy table or ``speclite`` is not available.
    """
    from ..packages import default_package
    from .train import AsteroidsTrainingConfig, train_asteroids

    path = classy_path()
    try:
        import speclite  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        print(
            f"[demo] asteroids: no classy table (set ${CLASSY_ENV}) or no speclite: "
            "using the shipped package.",
            flush=True,
        )
        return default_package("asteroids")
    try:
        _, x, cov = survey_colours(_single(butler, "ss_source", list(collections)))
    except LookupError:  # a repository simulated before the survey had Solar System sources
        print(
            "[demo] asteroids: the repository has no ss_source (rebuild it with --fresh); training on "
            "the classy spectra only.",
            flush=True,
        )
        x, cov = np.zeros((0, len(MODEL_COLOURS))), np.zeros((0, len(MODEL_COLOURS), len(MODEL_COLOURS)))
    config = AsteroidsTrainingConfig(version="demo", n_iter=40)
    result = train_asteroids(
        str(path),
        config,
        unlabelled=(x, cov) if len(x) else None,
        training_data=f"classy (Mahlke et al. 2022) spectra x speclite lsst2023 throughputs (labelled) + "
        f"{len(x)} simulated survey asteroids (unlabelled, ss_source colours)",
    )
    return result.package


def summarize(butler: Any, collections: Sequence[str] | str) -> list[str]:
    """Quality of ``ml_asteroid_taxonomy`` against the simulated complexes.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The demo repository.
    collections : `str` or sequence of `str`
        The output collection (its chain holds the simulated truth).

    Returns
    -------
    lines : `list` [`str`]
        Human-readable lines (empty if the repository has no taxonomy).
    """
    try:
        out = _single(butler, "ml_asteroid_taxonomy", collections)
        truth = _single(butler, "truth_ss_object", collections)
    except LookupError:
        return []
    scores = summary_figures(out, truth)
    lines = [
        f"ml_asteroid_taxonomy: {scores['n_objects']} objects, {scores['n_classified']} with a class "
        f"({scores['n_one_band']} seen in one band only)"
    ]
    if scores["n_classified"]:
        lines.append(
            f"  complex accuracy vs the simulated truth {scores['accuracy']:.2f} "
            f"(majority class '{scores['majority_class']}' {scores['majority_accuracy']:.2f}); "
            f"median probability of the true complex {scores['median_true_probability']:.2f}"
        )
    return lines


def summary_figures(taxonomy: Any, truth: Any) -> dict[str, Any]:
    """Accuracy of ``taxonomy_class`` against the simulation's complexes.

    Parameters
    ----------
    taxonomy : `astropy.table.Table`
        ``ml_asteroid_taxonomy``.
    truth : `astropy.table.Table`
        ``truth_ss_object`` (one row per object and night; ``ssObjectId``,
        ``asteroid_class``).

    Returns
    -------
    figures : `dict`
        ``n_objects``, ``n_classified``, ``n_one_band``, ``accuracy``,
        ``majority_class``, ``majority_accuracy`` (predicting the most
        common true complex for all), ``median_true_probability``.
    """
    from .features import AsteroidFlag

    true_of = {int(i): str(c) for i, c in zip(truth["ssObjectId"], truth["asteroid_class"])}
    ids = np.asarray(taxonomy["ssObjectId"]).astype(np.int64)
    pred = np.asarray(taxonomy["taxonomy_class"]).astype(str)
    true = np.array([true_of.get(int(i), "") for i in ids])
    has = (pred != "") & (true != "")
    figures: dict[str, Any] = {
        "n_objects": len(ids),
        "n_classified": int(has.sum()),
        "n_one_band": int(((np.asarray(taxonomy["taxonomy_flags"]) & int(AsteroidFlag.ONE_BAND)) != 0).sum()),
    }
    if has.any():
        values, counts = np.unique(true[has], return_counts=True)
        majority = str(values[np.argmax(counts)])
        p_true = np.array(
            [
                float(taxonomy[f"prob_{t}"][k]) if f"prob_{t}" in taxonomy.colnames else np.nan
                for k, t in zip(np.flatnonzero(has), true[has])
            ]
        )
        figures.update(
            accuracy=float((pred[has] == true[has]).mean()),
            majority_class=majority,
            majority_accuracy=float((true[has] == majority).mean()),
            median_true_probability=float(np.nanmedian(p_true)),
        )
    return figures
