"""The morphology part of ``make demo``: the shipped package, and its accuracy against the truth.

The demo registers the shipped default package
(``data/morphology_default.safetensors``), a DAT trained with
``meas-ml train morphology`` on a simulated survey of another seed than the
demo's (so the demo's galaxies were never seen), and `summarize` scores
``ml_morphology`` against ``truth_object.hubble_type``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.table import join

from ..packages import ModelPackage, default_package
from .features import MorphologyFlag
from .metrics import classification_report

__all__ = ["summarize", "train_demo_package"]


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Return the demo's morphology package: the shipped default one.

    Without a shipped package (a development checkout), a small DAT is
    trained supervised for 300 steps on 32-pixel stamps of the repository's
    own coadds and ``truth_object`` (under a minute on 2 cores; the summary
    then scores galaxies the model was trained on).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The demo repository.
    collections : `~collections.abc.Sequence` [`str`]
        Collections to read from.
    workdir : `str`
        Working directory (not used).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The ``morphology`` package.
    """
    import os

    from ..packages import default_package_path
    from .train import MorphologyTrainingConfig, data_from_butler, train_morphology

    if os.path.exists(default_package_path("morphology")):
        return default_package("morphology")
    data = data_from_butler(butler, list(collections), stamp_size=32)
    config = MorphologyTrainingConfig(semi_supervised=False, steps=300, version="demo", num_threads=0)
    return train_morphology(data, config).package


def summarize(butler: Any, collections: Any) -> list[str]:
    """Summarize ``ml_morphology`` against the true Hubble types, over all patches.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_morphology`` and ``truth_object``.
    collections : `~typing.Any`
        Collections to read from.

    Returns
    -------
    lines : `list` [`str`]
        Counts, accuracy and macro-F1 on the galaxies with a true type, or
        one line saying that no ``ml_morphology`` was written.
    """
    refs = list(butler.query_datasets("ml_morphology", collections=collections, explain=False))
    if not refs:
        return ["ml_morphology: none written"]
    truths: dict[Any, Any] = {}
    predicted, true, n_rows, n_ood = [], [], 0, 0
    classes: list[str] = []
    for ref in refs:
        cat = butler.get(ref, parameters={"strip_astropy_meta_yaml": False})
        classes = list(cat.meta.get("morph_class_names", classes))
        key = (ref.dataId["skymap"], ref.dataId["tract"])
        if key not in truths:
            truths[key] = butler.get(
                "truth_object", {"skymap": key[0], "tract": key[1]}, collections=collections
            )
        if "hubble_type" not in truths[key].colnames:
            return [
                f"ml_morphology: {len(refs)} patches written; truth_object has no hubble_type "
                "(a repository simulated before it existed), so no score."
            ]
        both = join(
            cat["objectId", "morph_class", "morph_flags"],
            truths[key]["objectId", "hubble_type"],
            keys="objectId",
        )
        n_rows += len(cat)
        n_ood += int(((np.asarray(cat["morph_flags"]) & int(MorphologyFlag.OUT_OF_DISTRIBUTION)) != 0).sum())
        keep = np.isin(np.asarray(both["hubble_type"]).astype(str), classes) & (
            np.asarray(both["morph_class"]) != ""
        )
        index = {c: i for i, c in enumerate(classes)}
        predicted += [index[c] for c in np.asarray(both["morph_class"])[keep]]
        true += [index[c] for c in np.asarray(both["hubble_type"]).astype(str)[keep]]
    rep = classification_report(np.asarray(predicted), np.asarray(true), classes)
    return [
        f"ml_morphology: {n_rows} objects in {len(refs)} patches, {n_ood / max(n_rows, 1):.1%} flagged "
        "out-of-distribution;",
        f"    against true Hubble types ({rep['n']} galaxies): accuracy {rep['accuracy']:.3f}, "
        f"macro-F1 {rep['macro_f1']:.3f}",
    ]
