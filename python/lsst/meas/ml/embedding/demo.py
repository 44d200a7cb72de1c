"""The embedding part of ``make demo``: the shipped encoder, and a summary of ``ml_embedding``.

The shipped package (``data/embedding_default.safetensors``) was pre-trained
with ``meas-ml train embedding`` on the demo survey's coadds (see
``doc/embedding.md``); without it, a short pre-training (30 s of epochs) on the
repository's own coadds is run instead.  The summary counts the embedded
objects and, against ``truth_object``, how often an object's nearest
neighbour in embedding space has its Hubble type (compared with chance).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..packages import ModelPackage, default_package, default_package_path
from .search import exact_search

__all__ = ["summarize", "train_demo_package"]


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Return the demo's encoder: the shipped package, else a 30-second pre-training.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The demo repository (coadds and object table).
    collections : `~collections.abc.Sequence` [`str`]
        Collections to read from.
    workdir : `str`
        Working directory (not used).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        An ``embedding`` package trained on the six bands ugrizy.
    """
    if os.path.exists(default_package_path("embedding")):
        return default_package("embedding")
    from .train import EmbeddingTrainingConfig, butler_training_set, train_embedding

    data = butler_training_set(butler, list(collections))
    config = EmbeddingTrainingConfig(max_seconds=30.0, version="demo", name="embedding-demo")
    return train_embedding(data, config).package


def summarize(butler: Any, collections: Any) -> list[str]:
    """Summarize ``ml_embedding``: counts, flags and nearest-neighbour Hubble-type agreement.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_embedding`` and ``truth_object``.
    collections : `~typing.Any`
        Collections to read from.

    Returns
    -------
    lines : `list` [`str`]
        One line per tract, or one saying that no ``ml_embedding`` was written.
    """
    from astropy.table import join, vstack

    by_tract: dict[tuple, list] = {}
    for ref in butler.query_datasets("ml_embedding", collections=collections, explain=False):
        by_tract.setdefault((ref.dataId["skymap"], ref.dataId["tract"]), []).append(butler.get(ref))
    lines = []
    for (skymap, tract), tables in sorted(by_tract.items()):
        cat = vstack(tables, metadata_conflicts="silent")
        ok = ~np.asarray(cat["flag_offimage"], bool)
        line = (
            f"ml_embedding tract {tract}: {len(cat)} objects in {len(tables)} patches, {int(ok.sum())} "
            f"embedded, {int(np.asarray(cat['flag_edge']).sum())} at a coadd edge"
        )
        try:
            truth = butler.get("truth_object", skymap=skymap, tract=tract, collections=collections)
        except Exception:  # no truth: a real repository
            lines.append(line + ".")
            continue
        both = join(cat[ok]["objectId", "embedding"], truth["objectId", "hubble_type_class"], keys="objectId")
        types = np.asarray(both["hubble_type_class"])
        gal = types >= 0
        if gal.sum() < 3:
            lines.append(line + ".")
            continue
        vectors = np.asarray(both["embedding"], np.float32)[gal]
        types = types[gal]
        _, idx = exact_search(vectors, vectors, 2)
        agree = float(np.mean(types[idx[:, 1]] == types))
        chance = float(np.sum((np.bincount(types) / len(types)) ** 2))
        lines.append(
            line + f"; nearest neighbour has the same Hubble type for {agree:.1%} of "
            f"{len(types)} galaxies (chance {chance:.1%})."
        )
    return lines or ["ml_embedding: none written"]
