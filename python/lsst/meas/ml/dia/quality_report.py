"""Quality report of a DIA classifier package (``meas-ml quality dia``).

* held-out simulated stamps (a Butler collection, e.g. detectors or visits
  not used in training, chosen with ``where``): ROC AUC, purity and
  completeness at the package's threshold, class accuracy;
* real ZTF stamps: the same against ZTF's ``drb >= 0.5`` (by default only
  the alerts held out of training, ``candid % 3 == 0``);
* real Rubin alerts: agreement with Rubin's own ``reliability``.

Every figure is given for a single forward pass and for the average over
the eight rotations/flips, which is the accuracy side of the latency choice
measured by ``meas-ml bench dia``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import metrics
from ..alerts import read_alerts
from ..engine import InferenceEngine
from ..packages import ModelPackage
from .alert_scoring import score_alerts
from .predict import predict_probabilities
from .train import TrainingSet, alert_training_set, butler_training_set, evaluate

__all__ = ["quality_report", "rotation_spread", "template_comparison"]


def rotation_spread(package: ModelPackage, x: np.ndarray, engine: InferenceEngine) -> dict[str, float]:
    """Measure how much a single forward pass depends on the stamp's orientation.

    For each stamp, the spread is the range (max - min) of the reliability
    over its eight rotations/flips; it is zero for a model that is
    invariant by construction.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The DIA classifier.
    x : `numpy.ndarray`
        Prepared stamps, shape ``(N, C, S, S)``.
    engine : `~lsst.meas.ml.engine.InferenceEngine`
        The engine that runs the model.

    Returns
    -------
    spread : `dict` [`str`, `float`]
        ``mean``, ``p99`` and ``max`` of the spread, and
        ``decision_changes``: the fraction of stamps whose decision at the
        package threshold changes with the orientation.
    """
    threshold = float(package.outputs.get("threshold", 0.5))
    rel = []
    for flip in (False, True):
        base = x[..., ::-1] if flip else x
        for k in range(4):
            t = np.ascontiguousarray(np.rot90(base, k, axes=(-2, -1)))
            rel.append(1.0 - predict_probabilities(package, t, engine, average=False)[:, -1])
    r = np.stack(rel)
    spread = r.max(axis=0) - r.min(axis=0)
    flips = ((r >= threshold).any(axis=0) & (r < threshold).any(axis=0)).mean()
    return {
        "mean": float(spread.mean()),
        "p99": float(np.percentile(spread, 99)),
        "max": float(spread.max()),
        "decision_changes": float(flips),
    }


def quality_report(
    package: ModelPackage,
    *,
    butler: Any = None,
    collections: Sequence[str] | None = None,
    where: str = "",
    ztf: Sequence[str] = (),
    ztf_split: str = "holdout",
    rubin: Sequence[str] = (),
    simulated: TrainingSet | None = None,
    engine: InferenceEngine | None = None,
) -> dict[str, Any]:
    """Compute the quality report (see the module documentation).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The DIA classifier.
    butler : `lsst.daf.butler.Butler`, optional
        Repository with held-out simulated detectors.
    collections : `~collections.abc.Sequence` [`str`], optional
        Collections of the held-out detectors in ``butler``.
    where : `str`, optional
        Butler query constraint selecting the held-out detectors.
    ztf : `~collections.abc.Sequence` [`str`], optional
        ZTF alert files.
    ztf_split : `str`, optional
        Which ZTF alerts to score: ``"holdout"`` (those held out of
        training) or ``"all"``.
    rubin : `~collections.abc.Sequence` [`str`], optional
        Rubin alert files (agreement with their ``reliability``).
    simulated : `TrainingSet`, optional
        Held-out labelled stamps given directly (e.g. `survey_training_set`
        of a survey simulated with a seed not used in training).
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        The engine.

    Returns
    -------
    report : `dict` [`str`, `~typing.Any`]
        The model, its checksum and threshold, and the metrics of each data
        set given, single-pass and rotation-averaged.
    """
    engine = engine or InferenceEngine()
    size = int(package.inputs["stamp_size"])
    threshold = float(package.outputs.get("threshold", 0.5))
    report: dict[str, Any] = {
        "model": f"{package.name} {package.version}",
        "sha256": package.sha256,
        "symmetric_model": bool(package.hyperparameters.get("symmetric", False)),
        "threshold": threshold,
    }
    modes = {"single_pass": False, "dihedral8": True}
    if butler is not None:
        simulated = butler_training_set(butler, list(collections or []), stamp_size=size, where=where)
    if simulated is not None:
        report["simulated"] = {
            mode: evaluate(package, simulated, engine=engine, average=avg, threshold=threshold)["sim"]
            for mode, avg in modes.items()
        }
        report["simulated"]["rotation_spread"] = rotation_spread(package, simulated.x, engine)
    if ztf:
        data = alert_training_set(ztf, stamp_size=size, real_min=0.5, bogus_max=0.5, split=ztf_split)
        report["ztf_split"] = ztf_split
        report["ztf_vs_drb"] = {
            mode: evaluate(package, data, engine=engine, average=avg, threshold=threshold)["ztf"]
            for mode, avg in modes.items()
        }
    if rubin:
        records = [r for path in rubin for r in read_alerts(path)]
        out = {}
        for mode, avg in modes.items():
            table = score_alerts(records, package, engine=engine, dihedral="always" if avg else "never")
            agree = metrics.agreement(
                np.asarray(table["ml_reliability"]), np.asarray(table["reference_score"])
            )
            agree["n_not_scored"] = float((table["ml_class"] == "").sum())
            out[mode] = agree
        report["rubin_vs_reliability"] = out
    return report


def template_comparison(
    package: ModelPackage,
    butler: Any,
    collections: Sequence[str],
    *,
    where: str = "",
    engine: InferenceEngine | None = None,
) -> dict[str, Any]:
    """Compare scores with the real per-detector template and the derived one.

    On a DRP-shaped simulated repository (per-detector ``template_detector``
    and ``dia_source_unstandardized``), every detector is scored twice with
    `ClassifyDiaSourcesTask.run`: with the stored template
    (``templateSource="detector"``) and with the visit image minus the
    difference image (``"derived"``, what a Data Preview 1 repository allows).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The DIA classifier.
    butler : `lsst.daf.butler.Butler`
        Butler on the DRP-shaped simulated repository.
    collections : `~collections.abc.Sequence` [`str`]
        Collections to read.
    where : `str`, optional
        Butler query constraint on the data IDs.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        The engine (default: each task's own).

    Returns
    -------
    report : `dict` [`str`, `~typing.Any`]
        The reliability differences, how many decisions at the package
        threshold change, and the ROC AUC of each against the simulation's
        truth.
    """
    from .task import ClassifyDiaSourcesConfig, ClassifyDiaSourcesTask

    tasks = {}
    for source in ("detector", "derived"):
        config = ClassifyDiaSourcesConfig()
        config.templateSource = source
        config.stampSize = int(package.inputs["stamp_size"])
        tasks[source] = ClassifyDiaSourcesTask(config=config)
        if engine is not None:
            tasks[source].engine = engine
    rel: dict[str, list[np.ndarray]] = {"detector": [], "derived": []}
    real: list[np.ndarray] = []
    refs = butler.query_datasets("difference_image", collections=collections, where=where, explain=False)
    for ref in refs:
        get = lambda name: butler.get(name, ref.dataId, collections=collections)  # noqa: E731
        science, template, difference = get("visit_image"), get("template_detector"), butler.get(ref)
        sources, truth = get("dia_source_unstandardized"), get("truth_dia_source")
        label = dict(zip(truth["diaSourceId"].tolist(), truth["label"].tolist(), strict=False))
        real.append(
            np.array([label.get(i, "artifact") != "artifact" for i in sources["diaSourceId"].tolist()])
        )
        for source, task in tasks.items():
            table = task.run(science, template, difference, sources, package).scores
            rel[source].append(np.asarray(table["ml_reliability"], dtype=float))
    detector, derived, truth_real = (np.concatenate(v) if v else np.zeros(0) for v in (*rel.values(), real))
    ok = np.isfinite(detector) & np.isfinite(derived)
    threshold = float(package.outputs.get("threshold", 0.5))
    diff = np.abs(detector[ok] - derived[ok])
    return {
        "detectors": len(refs),
        "sources": int(ok.sum()),
        "mean_abs_reliability_change": float(diff.mean()) if len(diff) else float("nan"),
        "p99_abs_reliability_change": float(np.percentile(diff, 99)) if len(diff) else float("nan"),
        "decisions_changed": float(((detector[ok] >= threshold) != (derived[ok] >= threshold)).mean())
        if len(diff)
        else float("nan"),
        "auc_detector_template": metrics.roc_auc(detector[ok], truth_real[ok].astype(int)),
        "auc_derived_template": metrics.roc_auc(derived[ok], truth_real[ok].astype(int)),
    }
