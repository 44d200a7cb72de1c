"""The morphology quality experiment (``meas-ml morphology-quality``).

Held-out simulated galaxies: a simulated survey (coadds only matter; one
visit is simulated to satisfy the survey code) is cut into stamps of its
detected galaxies with their true Hubble type; a stratified
``test_fraction`` of them is held out, the rest is the training pool.
With 1%, 10% and 100% of the pool's labels (stratified, at least one per
class) it trains:

* the DAT, supervised only (labelled stamps) and semi-supervised (FixMatch
  on the whole pool, the other stamps unlabelled) at 1% and 10%;
* the ResNet baseline, supervised, at the same label counts;

every run with the same steps, batch size and seed, and reports the
held-out accuracy and macro-F1.  The confusion matrix of the
semi-supervised DAT at 10% goes to a PNG.

`QualityConfig` is the reduced default (runs in minutes on 2 cores: 32-pixel
stamps, one survey of ``n_galaxies``); `QualityConfig.full` is the full size
(64-pixel stamps, a larger survey, longer training).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from .features import DEFAULT_BANDS, DEFAULT_CLASSES
from .metrics import classification_report, plot_confusion
from .train import (
    MorphologyData,
    MorphologyTrainingConfig,
    _predict_logits,
    _stratified,
    data_from_survey,
    train_morphology,
)

__all__ = ["QualityConfig", "quality_report", "simulated_stamps"]

_LOG = logging.getLogger("lsst.meas.ml.morphology.quality")


@dataclasses.dataclass
class QualityConfig:
    """Size of the quality experiment (defaults: reduced)."""

    n_galaxies: int = 3000
    stamp_size: int = 32
    steps: int = 300
    batch_size: int = 32
    mu: int = 2
    threshold: float = 0.7
    test_fraction: float = 0.3
    label_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    survey_seed: int = 1234
    seed: int = 0

    @classmethod
    def full(cls) -> QualityConfig:
        """Return the full-size experiment.

        Returns
        -------
        config : `QualityConfig`
            64-pixel stamps, 6000 galaxies, 1000 steps, threshold 0.8.
        """
        return cls(n_galaxies=6000, stamp_size=64, steps=1000, threshold=0.8)


def simulated_stamps(n_galaxies: int, stamp_size: int, seed: int) -> MorphologyData:
    """Simulate a survey's coadds and cut labelled stamps of its detected galaxies.

    Parameters
    ----------
    n_galaxies : `int`
        Galaxies in the tract (about 80% are detected).
    stamp_size : `int`
        Stamp side.
    seed : `int`
        Survey seed.

    Returns
    -------
    data : `~lsst.meas.ml.morphology.train.MorphologyData`
        Stamps of the default bands, labelled with the true Hubble type.
    """
    from ..simulate import SurveyConfig
    from ..simulate.survey import simulate_survey

    config = dataclasses.replace(
        SurveyConfig.default(seed=seed),
        name="morphology-quality",
        visit_bands=("r",),
        visits_per_band=1,
        n_detectors=1,
        n_galaxies=n_galaxies,
    )
    return data_from_survey(
        simulate_survey(config), bands=DEFAULT_BANDS, stamp_size=stamp_size, classes=DEFAULT_CLASSES
    )


def _evaluate(result: Any, test: MorphologyData, device: torch.device) -> dict[str, Any]:
    model = result.package.build_model().to(device)
    logits = _predict_logits(model, test.stamps.x, device)
    return classification_report(logits.argmax(axis=1), test.labels, test.class_names)


def quality_report(
    config: QualityConfig | None = None, *, png: str | None = None, threads: int = 2
) -> dict[str, Any]:
    """Run the experiment.

    Parameters
    ----------
    config : `QualityConfig`, optional
        Size (default reduced).
    png : `str`, optional
        Confusion-matrix PNG of the semi-supervised DAT at 10% labels.
    threads : `int`
        Torch CPU threads.

    Returns
    -------
    report : `dict`
        ``config``, ``n_pool``, ``n_test``, ``runs`` (one entry per model,
        mode and label fraction: labels used, accuracy, macro-F1, seconds),
        ``semi_vs_supervised`` (macro-F1 differences of the DAT) and
        ``confusion`` of the PNG's run.
    """
    config = config or QualityConfig()
    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    data = simulated_stamps(config.n_galaxies, config.stamp_size, config.survey_seed)
    data = data.subset(data.stamps.usable)
    rng = np.random.default_rng(config.seed)
    test_mask = _stratified(data.labels, config.test_fraction, rng)
    pool, test = data.subset(~test_mask), data.subset(test_mask)
    simulate_seconds = time.perf_counter() - t0
    device = torch.device("cpu")
    runs: list[dict[str, Any]] = []
    confusion = None
    plan: list[tuple[str, bool, float]] = []
    for frac in config.label_fractions:
        plan.append(("morph_dat", False, frac))
        if frac < 1.0:
            plan.append(("morph_dat", True, frac))
        plan.append(("morph_resnet", False, frac))
    for arch, semi, frac in plan:
        pool_labels = pool.labels.copy()
        if frac < 1.0:
            keep = _stratified(pool_labels, frac, np.random.default_rng(config.seed + 1))
            pool_labels[~keep] = -1
        train = dataclasses.replace(pool, labels=pool_labels)
        if not semi:
            train = train.subset(pool_labels >= 0)
        tc = MorphologyTrainingConfig(
            architecture=arch,
            semi_supervised=semi,
            steps=config.steps,
            batch_size=config.batch_size,
            mu=config.mu,
            threshold=config.threshold,
            validation_fraction=0.0,
            seed=config.seed,
            device="cpu",
        )
        result = train_morphology(train, tc)
        rep = _evaluate(result, test, device)
        runs.append(
            {
                "architecture": arch,
                "mode": "semi-supervised" if semi else "supervised",
                "label_fraction": frac,
                "n_labels": int((pool_labels >= 0).sum()),
                "accuracy": rep["accuracy"],
                "macro_f1": rep["macro_f1"],
                "pseudo_label_fraction": result.report.get("pseudo_label_fraction"),
                "seconds": round(result.training_seconds, 1),
            }
        )
        _LOG.info("quality run: %s", runs[-1])
        if arch == "morph_dat" and semi and abs(frac - 0.1) < 1e-9:
            confusion = rep["confusion"]
            if png:
                plot_confusion(
                    np.asarray(confusion),
                    list(DEFAULT_CLASSES),
                    png,
                    f"DAT semi-supervised, 10% labels: acc {rep['accuracy']:.3f}, "
                    f"macro-F1 {rep['macro_f1']:.3f}",
                )
    by_key = {(r["architecture"], r["mode"], r["label_fraction"]): r for r in runs}
    gains = {}
    for frac in config.label_fractions:
        s = by_key.get(("morph_dat", "semi-supervised", frac))
        u = by_key.get(("morph_dat", "supervised", frac))
        if s and u:
            gains[f"{frac:g}"] = {
                "macro_f1_gain": round(s["macro_f1"] - u["macro_f1"], 4),
                "accuracy_gain": round(s["accuracy"] - u["accuracy"], 4),
            }
    return {
        "config": dataclasses.asdict(config),
        "n_pool": len(pool),
        "n_test": len(test),
        "test_class_counts": {c: int((test.labels == i).sum()) for i, c in enumerate(DEFAULT_CLASSES)},
        "runs": runs,
        "semi_vs_supervised": gains,
        "confusion_dat_semi_10pct": confusion,
        "png": png,
        "simulate_seconds": round(simulate_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
