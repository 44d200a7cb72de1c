"""The DIA classifier's part of ``make demo``: train on the survey, summarise scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.table import vstack

from .. import metrics
from ..packages import ModelPackage
from .features import CLASS_NAMES
from .train import DiaTrainingConfig, survey_training_set, train_dia

__all__ = ["summarize", "train_demo_package"]


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Train a DIA classifier for the demo on a held-out simulated survey.

    The training stamps come from a survey simulated in memory with the
    repository's size but another seed (``seed + 1000``: other sky, other
    transients and artifacts), so the scores the demo prints for the
    repository's own DIA sources are held-out figures.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler on the simulated repository (its ``mlsim_config`` gives the
        survey size and seed).
    collections : `~collections.abc.Sequence` [`str`]
        Collections holding ``mlsim_config``.
    workdir : `str`
        Working directory of the demo (not used by this family).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The trained DIA package, version ``demo``.
    """
    from ..simulate import SurveyConfig, simulate_survey

    stored = butler.get("mlsim_config", collections=list(collections))
    train_seed = int(stored["seed"]) + 1000
    survey = simulate_survey(SurveyConfig.from_name(str(stored["name"]), seed=train_seed))
    config = DiaTrainingConfig(epochs=15, version="demo")
    data = survey_training_set(survey, stamp_size=config.stamp_size)
    result = train_dia(
        data,
        config,
        provenance={"training_data": {"simulated_survey": stored["name"], "seed": train_seed}},
    )
    return result.package


def summarize(butler: Any, collections: Any) -> list[str]:
    """Summarise ``ml_dia_scores`` against ``truth_dia_source`` in one line.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler on the repository the demo pipeline wrote to.
    collections : `str` or iterable of `str`
        Collections holding the scores and the truth tables.

    Returns
    -------
    lines : `list` [`str`]
        One line: number of sources, ROC AUC, class accuracy and flagged
        count (or a note that no scores were written).
    """
    refs = list(butler.query_datasets("ml_dia_scores", collections=collections, explain=False))
    if not refs:
        return ["ml_dia_scores: none written"]
    scores, truth = [], []
    for ref in refs:
        scores.append(butler.get(ref))
        truth.append(butler.get("truth_dia_source", ref.dataId, collections=collections))
    s = vstack(scores, metadata_conflicts="silent")
    t = vstack(truth, metadata_conflicts="silent")
    label = dict(zip(np.asarray(t["diaSourceId"]).tolist(), [str(v) for v in t["label"]], strict=True))
    truth_label = np.array([label.get(i, "") for i in np.asarray(s["diaSourceId"]).tolist()])
    ok = np.isin(truth_label, CLASS_NAMES) & (s["ml_class"] != "")
    real = truth_label[ok] != "artifact"
    auc = metrics.roc_auc(np.asarray(s["ml_reliability"])[ok], real)
    acc = metrics.accuracy(np.asarray(s["ml_class"])[ok], truth_label[ok])
    return [
        f"ml_dia_scores: {len(s)} DIA sources, {int(ok.sum())} scored with truth; real/bogus ROC AUC "
        f"{auc:.3f}, class accuracy {acc:.3f}; flagged {int((np.asarray(s['flags']) != 0).sum())}"
    ]
