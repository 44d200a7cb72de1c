"""The morphology quality experiment (``meas-ml morphology-quality``).

Held-out simulated galaxies: a simulated survey (coadds only matter; one
visit is simulated to satisfy the survey code) is cut into stamps of its
detected galaxies with their true Hubble type; a stratified
``test_fraction`` of them is held out, the rest is the training pool.
With 1%, 10% and 100% of the pool's labels (stratified, at least one per
class) it trains:

* the DAT, supervised only (labelled stamps), semi-supervised with FixMatch
  (on the whole pool, the other stamps unlabelled) at 1% and 10%, and
  semi-supervised by self-supervised pre-training on the whole pool
  without labels followed by supervised fine-tuning on the labelled stamps
  (the pre-training is done once and reused for every label fraction);
* the ResNet baseline, supervised, at the same label counts;

every run with the same steps, batch size and seed, and reports the
held-out accuracy and macro-F1.  The confusion matrix of the pre-trained
and fine-tuned DAT at 10% goes to a PNG.

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

from ..engine import select_device
from .features import DEFAULT_BANDS, DEFAULT_CLASSES
from .metrics import classification_report, plot_confusion
from .train import (
    MorphologyData,
    MorphologyTrainingConfig,
    _predict_logits,
    _stratified,
    data_from_survey,
    pretrain_morphology,
    train_morphology,
)

__all__ = [
    "QualityConfig",
    "format_gains",
    "format_table",
    "paired_gains",
    "quality_report",
    "simulated_stamps",
]

_LOG = logging.getLogger("lsst.meas.ml.morphology.quality")

#: Training routes of the quality table.
SUPERVISED = "supervised"
FIXMATCH = "semi-supervised (FixMatch)"
PRETRAINED = "semi-supervised (pre-trained + fine-tuned)"


@dataclasses.dataclass
class QualityConfig:
    """Size of the quality experiment (defaults: reduced)."""

    n_galaxies: int = 3000
    stamp_size: int = 32
    steps: int = 300
    batch_size: int = 32
    mu: int = 2
    threshold: float = 0.7
    pretrain_steps: int = 1000
    test_fraction: float = 0.3
    label_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    survey_seed: int = 1234
    seed: int = 0
    device: str = "auto"

    @classmethod
    def full(cls) -> QualityConfig:
        """Return the full-size experiment.

        Returns
        -------
        config : `QualityConfig`
            64-pixel stamps, 6000 galaxies, 1000 steps, threshold 0.8,
            3000 pre-training steps.
        """
        return cls(n_galaxies=6000, stamp_size=64, steps=1000, threshold=0.8, pretrain_steps=3000)


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
        Confusion-matrix PNG of the pre-trained DAT at 10% labels.
    threads : `int`
        Torch CPU threads.

    Returns
    -------
    report : `dict`
        ``config``, ``n_pool``, ``n_test``, ``runs`` (one entry per model,
        mode and label fraction: labels used, accuracy, macro-F1, seconds),
        ``semi_vs_supervised`` (accuracy and macro-F1 gains of each
        semi-supervised DAT route over the supervised DAT), ``pretraining``
        (the pre-training report) and ``confusion`` of the PNG's run.
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
    device = select_device(config.device)
    runs: list[dict[str, Any]] = []
    confusion = None
    plan: list[tuple[str, str, float]] = []
    for frac in config.label_fractions:
        plan.append(("morph_dat", SUPERVISED, frac))
        if frac < 1.0:
            plan.append(("morph_dat", FIXMATCH, frac))
        if config.pretrain_steps > 0:
            plan.append(("morph_dat", PRETRAINED, frac))
        plan.append(("morph_resnet", SUPERVISED, frac))
    pretrained: dict[str, torch.Tensor] | None = None
    pretrain_report: dict[str, float] = {}
    for arch, mode, frac in plan:
        pool_labels = pool.labels.copy()
        if frac < 1.0:
            keep = _stratified(pool_labels, frac, np.random.default_rng(config.seed + 1))
            pool_labels[~keep] = -1
        train = dataclasses.replace(pool, labels=pool_labels)
        if mode == SUPERVISED:
            train = train.subset(pool_labels >= 0)
        tc = MorphologyTrainingConfig(
            architecture=arch,
            semi_supervised=mode == FIXMATCH,
            steps=config.steps,
            batch_size=config.batch_size,
            mu=config.mu,
            threshold=config.threshold,
            pretrain_steps=config.pretrain_steps if mode == PRETRAINED else 0,
            validation_fraction=0.0,
            seed=config.seed,
            device=str(device),
        )
        if mode == PRETRAINED and pretrained is None:
            # Labels play no part in pre-training: one pre-trained backbone serves every label fraction.
            pretrained, pretrain_report = pretrain_morphology(pool, tc)
        result = train_morphology(train, tc, initial_state=pretrained if mode == PRETRAINED else None)
        rep = _evaluate(result, test, device)
        runs.append(
            {
                "architecture": arch,
                "mode": mode,
                "label_fraction": frac,
                "n_labels": int((pool_labels >= 0).sum()),
                "accuracy": rep["accuracy"],
                "macro_f1": rep["macro_f1"],
                "pseudo_label_fraction": result.report.get("pseudo_label_fraction"),
                "seconds": round(result.training_seconds, 1),
            }
        )
        _LOG.info("quality run: %s", runs[-1])
        if arch == "morph_dat" and mode == PRETRAINED and abs(frac - 0.1) < 1e-9:
            confusion = rep["confusion"]
            if png:
                plot_confusion(
                    np.asarray(confusion),
                    list(DEFAULT_CLASSES),
                    png,
                    f"DAT pre-trained + fine-tuned, 10% labels: acc {rep['accuracy']:.3f}, "
                    f"macro-F1 {rep['macro_f1']:.3f}",
                )
    by_key = {(r["architecture"], r["mode"], r["label_fraction"]): r for r in runs}
    gains: dict[str, dict[str, dict[str, float]]] = {}
    for frac in config.label_fractions:
        u = by_key.get(("morph_dat", SUPERVISED, frac))
        for mode in (FIXMATCH, PRETRAINED):
            s = by_key.get(("morph_dat", mode, frac))
            if s and u:
                gains.setdefault(mode, {})[f"{frac:g}"] = {
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
        "pretraining": pretrain_report,
        "confusion_dat_pretrained_10pct": confusion,
        "png": png,
        "simulate_seconds": round(simulate_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }


def format_table(report: dict[str, Any]) -> str:
    """Return the runs of a `quality_report` as a Markdown table.

    Parameters
    ----------
    report : `dict`
        A `quality_report` result.

    Returns
    -------
    table : `str`
        One row per run: model, training, labels, accuracy, macro-F1,
        pseudo-labelled fraction and seconds.
    """
    lines = [
        "| model | training | labels | n labels | accuracy | macro-F1 | pseudo-labelled | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"morph_dat": "DAT", "morph_resnet": "ResNet"}
    for r in report["runs"]:
        pseudo = r.get("pseudo_label_fraction")
        model = names.get(r["architecture"], r["architecture"])
        lines.append(
            f"| {model} | {r['mode']} | {100 * r['label_fraction']:g}% "
            f"| {r['n_labels']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {'-' if pseudo is None else f'{pseudo:.3f}'} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def paired_gains(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gains of each semi-supervised DAT route over the supervised DAT, paired by seed.

    Parameters
    ----------
    reports : `list` [`dict`]
        `quality_report` results, one per seed (each seed's routes share its
        test split and labelled subset, so the differences are paired).

    Returns
    -------
    gains : `list` [`dict`]
        Per route and label fraction: the number of seeds, the mean gain in
        accuracy and macro-F1 with its standard error (``nan`` for one
        seed), and how many seeds gained.
    """
    out = []
    fractions = sorted({r["label_fraction"] for rep in reports for r in rep["runs"]})
    for mode in (FIXMATCH, PRETRAINED):
        for frac in fractions:
            diffs = []
            for rep in reports:
                by = {(r["architecture"], r["mode"], r["label_fraction"]): r for r in rep["runs"]}
                s, u = by.get(("morph_dat", mode, frac)), by.get(("morph_dat", SUPERVISED, frac))
                if s and u:
                    diffs.append((s["accuracy"] - u["accuracy"], s["macro_f1"] - u["macro_f1"]))
            if not diffs:
                continue
            d = np.asarray(diffs)
            se = d.std(axis=0, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.full(2, np.nan)
            out.append(
                {
                    "mode": mode,
                    "label_fraction": frac,
                    "seeds": len(d),
                    "accuracy_gain": float(d[:, 0].mean()),
                    "accuracy_gain_se": float(se[0]),
                    "seeds_gaining_accuracy": int((d[:, 0] > 0).sum()),
                    "macro_f1_gain": float(d[:, 1].mean()),
                    "macro_f1_gain_se": float(se[1]),
                    "seeds_gaining_macro_f1": int((d[:, 1] > 0).sum()),
                }
            )
    return out


def format_gains(gains: list[dict[str, Any]]) -> str:
    """Return `paired_gains` as a Markdown table.

    Parameters
    ----------
    gains : `list` [`dict`]
        A `paired_gains` result.

    Returns
    -------
    table : `str`
        One row per route and label fraction: seeds, accuracy and macro-F1
        gains (mean ± standard error) and the seeds that gained.
    """
    lines = [
        "| route | labels | seeds | accuracy gain | seeds gaining | macro-F1 gain | seeds gaining |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in gains:
        lines.append(
            f"| {g['mode']} | {100 * g['label_fraction']:g}% | {g['seeds']} "
            f"| {g['accuracy_gain']:+.3f} ± {g['accuracy_gain_se']:.3f} | {g['seeds_gaining_accuracy']} "
            f"| {g['macro_f1_gain']:+.3f} ± {g['macro_f1_gain_se']:.3f} | {g['seeds_gaining_macro_f1']} |"
        )
    return "\n".join(lines)
