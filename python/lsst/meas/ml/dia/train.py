"""Train the DIA classifier (``meas-ml train dia``).

Training sets come from

* a Butler collection of the simulated survey (or any repository with the
  same dataset types): stamps of every DIA source, labelled by joining
  ``truth_dia_source`` on ``diaSourceId`` (label ``transient``,
  ``variable``, ``asteroid`` or ``artifact``); and/or
* alert files (Rubin or ZTF, Parquet or Avro): the survey's own real/bogus
  score gives a real/bogus label (``>= real_min`` real, ``<= bogus_max``
  bogus, in between unused); the class of a real alert is unknown.

One softmax head predicts the four classes; reliability is
``1 - P(artifact)``.  Stamps labelled only "real" contribute the
log-probability of the union of the real classes, so real/bogus-only data
and fully labelled data train the same head.  Each batch is randomly
rotated and flipped (the eight dihedral transforms).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from astropy.table import Table
from torch.nn import functional as F

from .. import metrics
from ..alerts import read_alerts
from ..butler.names import CURRENT_NAMES
from ..engine import InferenceEngine
from ..images import PixelPlanes
from ..models import build_model
from ..packages import ModelPackage
from ..training import TrainingResult
from .alert_scoring import alert_stamps
from .features import (
    CHANNELS,
    CLASS_COLUMNS,
    CLASS_NAMES,
    NORMALISATION,
    REAL_CLASSES,
    REAL_UNKNOWN_CLASS,
    TRUTH_LABELS,
    DiaDataError,
    cut_source_stamps,
)
from .predict import predict_probabilities

__all__ = [
    "DiaTrainingConfig",
    "HOLDOUT_MODULUS",
    "TrainingSet",
    "alert_training_set",
    "butler_training_set",
    "labelled_stamps",
    "survey_training_set",
    "evaluate",
    "train_dia",
]

_log = logging.getLogger(__name__)
_ARTIFACT = CLASS_NAMES.index("artifact")


@dataclasses.dataclass
class TrainingSet:
    """Labelled stamps.

    Attributes
    ----------
    x : `numpy.ndarray`
        ``(N, 4, S, S)`` model inputs.
    label : `numpy.ndarray`
        Class index (`CLASS_NAMES`), or ``-1`` for "real, class unknown".
    origin : `numpy.ndarray`
        Where each stamp came from (``"sim"``, ``"ztf"``, ``"rubin"``).
    diaSourceId : `numpy.ndarray`
        Source identifiers.
    """

    x: np.ndarray
    label: np.ndarray
    origin: np.ndarray
    diaSourceId: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @property
    def is_real(self) -> np.ndarray:
        return self.label != _ARTIFACT

    def subset(self, sel: np.ndarray) -> TrainingSet:
        return TrainingSet(self.x[sel], self.label[sel], self.origin[sel], self.diaSourceId[sel])

    @classmethod
    def concatenate(cls, parts: Sequence[TrainingSet]) -> TrainingSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DiaDataError("No labelled stamps to train on: the inputs gave no usable, labelled sources.")
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def butler_training_set(
    butler: Any,
    collections: str | Sequence[str],
    *,
    stamp_size: int,
    where: str = "",
    truth: str = "truth_dia_source",
    names: dict[str, str] | None = None,
    max_detectors: int | None = None,
) -> TrainingSet:
    """Labelled stamps of every DIA source in a Butler collection.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository.
    collections : `str` or sequence of `str`
        Collections to search.
    stamp_size : `int`
        Stamp side.
    where : `str`
        Butler query constraint on the data IDs (e.g. ``"visit < 100"``).
    truth : `str`
        Dataset type of the truth table (``diaSourceId``, ``label``).
    names : `dict`, optional
        Connection-template names (defaults `CURRENT_NAMES`).
    max_detectors : `int`, optional
        Stop after this many data IDs.
    """
    names = dict(CURRENT_NAMES, **(names or {}))
    refs = sorted(
        butler.query_datasets(
            names["differenceImage"], collections=collections, where=where, find_first=True
        ),
        key=lambda ref: tuple(ref.dataId.required.values()),
    )
    if not refs:
        raise DiaDataError(
            f"No {names['differenceImage']} datasets in collection(s) {collections!r}"
            + (f" with {where!r}" if where else "")
            + "; build the simulated survey or give another collection."
        )
    parts = []
    for ref in refs[:max_detectors]:
        data_id = ref.dataId
        get = lambda name: butler.get(name, data_id, collections=collections)  # noqa: E731
        parts.append(
            labelled_stamps(
                get(names["visitImage"]),
                get(names["templateImage"]),
                butler.get(ref),
                get(names["diaSourceTable"]),
                get(truth),
                stamp_size=stamp_size,
            )
        )
    return TrainingSet.concatenate(parts)


def labelled_stamps(
    science: PixelPlanes,
    template: PixelPlanes,
    difference: PixelPlanes,
    sources: Table,
    truth: Table,
    *,
    stamp_size: int,
    origin: str = "sim",
) -> TrainingSet:
    """Cut stamps of one detector's DIA sources, labelled from a truth table.

    Sources without a truth row, with an unknown label or off the image are
    dropped.

    Parameters
    ----------
    science, template, difference : `~lsst.meas.ml.images.PixelPlanes`
        The visit image, the warped template and the difference image.
    sources : `astropy.table.Table`
        DIA sources (``diaSourceId``, ``x``, ``y``).
    truth : `astropy.table.Table`
        Truth table with ``diaSourceId`` and ``label`` (`TRUTH_LABELS`).
    stamp_size : `int`
        Stamp side.
    origin : `str`, optional
        Origin recorded for every stamp (e.g. ``"sim"``).

    Returns
    -------
    data : `TrainingSet`
        The labelled stamps.

    Raises
    ------
    DiaDataError
        If ``truth`` lacks ``diaSourceId`` or ``label``.
    """
    if len(sources) == 0:
        return _empty_set(stamp_size)
    for col in ("diaSourceId", "label"):
        if col not in truth.colnames:
            raise DiaDataError(f"truth table lacks column {col!r}; it has {truth.colnames[:20]}")
    lookup = {int(i): str(lab) for i, lab in zip(truth["diaSourceId"], truth["label"], strict=True)}
    label = np.array([TRUTH_LABELS.get(lookup.get(int(i), ""), -2) for i in sources["diaSourceId"]])
    stamps = cut_source_stamps(
        science,
        template,
        difference,
        np.asarray(sources["x"], float),
        np.asarray(sources["y"], float),
        stamp_size,
    )
    keep = (label >= 0) & ~stamps.offimage
    return TrainingSet(
        stamps.x[keep],
        label[keep],
        np.full(int(keep.sum()), origin),
        np.asarray(sources["diaSourceId"], np.int64)[keep],
    )


def _empty_set(stamp_size: int) -> TrainingSet:
    return TrainingSet(
        np.zeros((0, len(CHANNELS), stamp_size, stamp_size), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, "U5"),
        np.zeros(0, np.int64),
    )


def survey_training_set(survey: Any, *, stamp_size: int, select: Any = None) -> TrainingSet:
    """Cut labelled stamps from an in-memory `lsst.meas.ml.simulate.SimulatedSurvey`.

    Parameters
    ----------
    survey : `lsst.meas.ml.simulate.SimulatedSurvey`
        The simulated survey.
    stamp_size : `int`
        Stamp side.
    select : callable, optional
        ``select(products) -> bool`` picks visit/detectors (default all).

    Returns
    -------
    data : `TrainingSet`
        The labelled stamps of the selected visit/detectors.
    """
    parts = [
        labelled_stamps(p.science, p.template, p.difference, p.dia_source, p.truth, stamp_size=stamp_size)
        for p in survey.visit_products
        if select is None or select(p)
    ]
    return TrainingSet.concatenate(parts)


#: Alerts whose ``diaSourceId`` (ZTF ``candid``) is divisible by this are held
#: out of training and used by the quality report (``split="holdout"``).
HOLDOUT_MODULUS = 3


def alert_training_set(
    paths: Iterable[str],
    *,
    stamp_size: int,
    real_min: float = 0.7,
    bogus_max: float = 0.3,
    split: str = "all",
) -> TrainingSet:
    """Real/bogus-labelled stamps from alert files (the survey's own scores).

    Parameters
    ----------
    paths : iterable of `str`
        Alert files.
    stamp_size : `int`
        Stamp side.
    real_min, bogus_max : `float`
        Reference scores at or above ``real_min`` are real, at or below
        ``bogus_max`` bogus; alerts in between are not used.
    split : `str`
        ``"all"``, ``"train"`` (ids not divisible by `HOLDOUT_MODULUS`) or
        ``"holdout"`` (ids divisible by it).
    """
    if split not in ("all", "train", "holdout"):
        raise ValueError(f"split must be 'all', 'train' or 'holdout', not {split!r}")
    parts = []
    for path in paths:
        records = read_alerts(path)
        if split != "all":
            held = [r.diaSourceId % HOLDOUT_MODULUS == 0 for r in records]
            records = [r for r, h in zip(records, held, strict=True) if h == (split == "holdout")]
        prepared = alert_stamps(records, stamp_size)
        ref = np.array([r.reference_score for r in records], float)[prepared.usable]
        survey = np.array([r.survey for r in records])[prepared.usable]
        ids = np.array([r.diaSourceId for r in records], np.int64)[prepared.usable]
        label = np.where(ref >= real_min, REAL_UNKNOWN_CLASS, np.where(ref <= bogus_max, _ARTIFACT, -2))
        keep = label != -2
        parts.append(TrainingSet(prepared.stamps.x[keep], label[keep], survey[keep], ids[keep]))
    return TrainingSet.concatenate(parts)


@dataclasses.dataclass
class DiaTrainingConfig:
    """Trainer settings (also the ``meas-ml train dia`` options)."""

    stamp_size: int = 32
    widths: tuple[int, ...] = (16, 32, 32)
    symmetric: bool = False
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.25
    augment: bool = True
    seed: int = 0
    version: str = "1.0.0"
    name: str = "dia-cnn"


def _loss(logits: torch.Tensor, label: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=1)
    known = label >= 0
    out = torch.zeros(len(label), dtype=logp.dtype)
    if known.any():
        out[known] = -logp[known, label[known]]
    real = label == REAL_UNKNOWN_CLASS
    if real.any():
        idx = [CLASS_NAMES.index(c) for c in REAL_CLASSES]
        out[real] = -torch.logsumexp(logp[real][:, idx], dim=1)
    w = weights[torch.where(label >= 0, label, torch.full_like(label, len(CLASS_NAMES)))]
    return (out * w).sum() / w.sum()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def evaluate(
    package: ModelPackage,
    data: TrainingSet,
    *,
    engine: InferenceEngine | None = None,
    average: bool = False,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Compute the metrics of a package on labelled stamps, per origin.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The DIA classifier.
    data : `TrainingSet`
        Labelled stamps.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        The engine (default: a new one with the default configuration).
    average : `bool`, optional
        Average over the 8 rotations/flips.
    threshold : `float`, optional
        Reliability threshold of the decisions (default: the package's).

    Returns
    -------
    metrics : `dict` [`str`, `dict`]
        Real/bogus metrics (and class accuracy where classes are known) per
        origin (``sim``, ``ztf``, ...).
    """
    engine = engine or InferenceEngine()
    probs = predict_probabilities(package, data.x, engine, average=average)
    reliability = 1.0 - probs[:, _ARTIFACT]
    threshold = float(package.outputs.get("threshold", 0.5)) if threshold is None else threshold
    out: dict[str, Any] = {}
    for origin in sorted(set(data.origin.tolist())):
        sel = data.origin == origin
        m = metrics.real_bogus_metrics(reliability[sel], data.is_real[sel], threshold)
        known = sel & (data.label >= 0)
        if known.any():
            m["class_accuracy"] = metrics.accuracy(probs[known].argmax(1), data.label[known])
        out[origin] = m
    return out


def train_dia(
    data: TrainingSet,
    config: DiaTrainingConfig | None = None,
    *,
    provenance: dict[str, Any] | None = None,
) -> TrainingResult:
    """Train a DIA classifier and package it.

    Parameters
    ----------
    data : `TrainingSet`
        Labelled stamps; a random ``validation_fraction`` is held out.
    config : `DiaTrainingConfig`, optional
        Settings.
    provenance : `dict`, optional
        Extra provenance (training data description).

    Returns
    -------
    result : `~lsst.meas.ml.training.TrainingResult`
        ``package``: the trained model, whose ``outputs["threshold"]``
        maximises F1 on the held-out simulated stamps (or all held-out
        stamps without any); ``metrics``: held-out metrics per origin;
        ``report``: those, the threshold and the training time.
    """
    config = config or DiaTrainingConfig()
    if data.x.shape[-1] != config.stamp_size:
        raise DiaDataError(f"stamps are {data.x.shape[-1]} pixels; the config says {config.stamp_size}")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(data)
    order = rng.permutation(n)
    n_val = int(round(config.validation_fraction * n)) if n >= 8 else 0
    val, trn = data.subset(order[:n_val]), data.subset(order[n_val:])

    hyper = {
        "in_channels": len(CHANNELS),
        "stamp_size": config.stamp_size,
        "widths": list(config.widths),
        "n_classes": len(CLASS_NAMES),
        "symmetric": config.symmetric,
    }
    model = build_model("dia_cnn", hyper)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = max(1, config.epochs * int(np.ceil(len(trn) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=steps)
    # Balance real against bogus (index len(CLASS_NAMES) = "real, unknown class").
    counts = np.bincount(
        np.where(trn.label >= 0, trn.label, len(CLASS_NAMES)), minlength=len(CLASS_NAMES) + 1
    )
    n_bogus = counts[_ARTIFACT]
    n_real = counts.sum() - n_bogus
    weights = np.ones(len(CLASS_NAMES) + 1)
    if n_bogus and n_real:
        weights[_ARTIFACT] = 0.5 * counts.sum() / n_bogus
        for k in [i for i in range(len(CLASS_NAMES) + 1) if i != _ARTIFACT]:
            weights[k] = 0.5 * counts.sum() / n_real
    w_t = torch.as_tensor(weights, dtype=torch.float32)
    x_t = torch.as_tensor(trn.x)
    y_t = torch.as_tensor(trn.label, dtype=torch.long)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        perm = torch.randperm(len(trn), generator=generator)
        total = 0.0
        for start in range(0, len(trn), config.batch_size):
            idx = perm[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            xb = x_t[idx]
            if config.augment:
                xb = _augment(xb, generator)
            loss = _loss(model(xb), y_t[idx], w_t)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        _log.info("epoch %d/%d: loss %.4f", epoch + 1, config.epochs, total / max(1, len(trn)))
    train_seconds = time.perf_counter() - t0
    model.eval()

    inputs = {"stamp_size": config.stamp_size, "channels": list(CHANNELS), "normalisation": NORMALISATION}
    outputs = {
        "class_names": list(CLASS_NAMES),
        "class_columns": [CLASS_COLUMNS[c] for c in CLASS_NAMES],
        "reliability": "1 - P(artifact)",
        "threshold": 0.5,
    }
    prov = dict(provenance or {})
    prov.update({"n_train": len(trn), "n_validation": len(val), "train_config": dataclasses.asdict(config)})

    def package_with(outputs: dict[str, Any], metrics: dict[str, Any]) -> ModelPackage:
        return ModelPackage.from_model(
            model,
            family="dia",
            architecture="dia_cnn",
            hyperparameters=hyper,
            inputs=inputs,
            outputs=outputs,
            version=config.version,
            name=config.name,
            provenance=dict(prov, metrics=metrics),
        )

    package = package_with(outputs, {})
    report: dict[str, Any] = {"train_seconds": train_seconds, "threshold": 0.5}
    if len(val):
        probs = predict_probabilities(package, val.x, InferenceEngine(), average=False)
        rel = 1.0 - probs[:, _ARTIFACT]
        sel = val.origin == "sim" if (val.origin == "sim").any() else np.ones(len(val), bool)
        threshold = metrics.best_threshold(rel[sel], val.is_real[sel])
        outputs["threshold"] = threshold
        report["threshold"] = threshold
        package = package_with(outputs, {})
        report["validation"] = evaluate(package, val, threshold=threshold)
        package = package_with(outputs, report["validation"])
    return TrainingResult(
        package=package,
        metrics=dict(report.get("validation", {})),
        training_seconds=train_seconds,
        n_train=len(trn),
        n_validation=len(val),
        report=report,
    )
