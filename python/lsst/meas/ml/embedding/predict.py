"""Stamps to the embedding table (shared by the task, the CLI and the file mode).

Columns of ``ml_embedding`` (one row per object, or per image file):

=======================  ===========  ================================================
column                   type         meaning
=======================  ===========  ================================================
``objectId`` / ``id``    int64 / str  the object (task) or the file stem (file mode)
``embedding``            float32[D]   L2-normalised representation (fixed-size list);
                                      NaN when not embedded (``flag_offimage``)
``ml_nan_fraction``      float32      fraction of stamp pixels unusable
``flag_edge``            bool         stamp reaches past the coadd edge (padded)
``flag_offimage``        bool         no usable stamp: not embedded
``flag_nan``             bool         ``ml_nan_fraction`` above the configured limit
``flag_missing_band``    bool         a band of the model had no coadd (zeros used)
``flag_resized``         bool         image file cropped or padded to the model size
``flags``                int32        the flags above as a bit mask (`EmbeddingFlag`)
=======================  ===========  ================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.table import Table

from ..engine import InferenceEngine
from ..flags import DescribedFlag
from ..packages import ModelPackage, PackageError
from .features import NORMALISATION, StampBatch, centre_crop

__all__ = ["EmbeddingFlag", "check_package", "embed_stamps", "embedding_table", "predict_embedding"]


class EmbeddingFlag(DescribedFlag):
    """Bits of the ``flags`` column; each is also a boolean ``flag_<name>`` column."""

    EDGE = 1 << 0, "Stamp reaches past the coadd edge (padded, still embedded)."
    OFFIMAGE = 1 << 1, "No usable stamp (centre off the image or every pixel unusable): not embedded."
    NAN = 1 << 2, "ml_nan_fraction above the configured limit."
    MISSING_BAND = 1 << 3, "A band of the model had no coadd; its channel is zero."
    RESIZED = 1 << 4, "Image file cropped or padded to the model's input size."

    @property
    def column(self) -> str:
        """Name of the boolean column of this flag."""
        return f"flag_{self.name.lower()}"


def check_package(package: ModelPackage, *, channels: int | None = None, bands: Any = None) -> None:
    """Check that a package is an encoder this code can feed.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The package.
    channels : `int`, optional
        Channels of the inputs at hand.
    bands : sequence of `str`, optional
        Bands of the inputs at hand (compared when the package has bands).

    Raises
    ------
    PackageError
        Wrong family or normalisation, or inputs the package was not trained on.
    """
    package.check_family("embedding", purpose="the galaxy embedding")
    package.check_inputs(normalisation=NORMALISATION)
    if channels is not None and int(package.inputs["channels"]) != int(channels):
        raise PackageError(
            f"Model package {package.name!r} ({package.source}) was trained on {package.inputs['channels']} "
            f"channel(s) but the inputs have {channels}; use a package trained on such images."
        )
    trained = package.inputs.get("bands")
    if bands is not None and trained is not None and list(trained) != list(bands):
        raise PackageError(
            f"Model package {package.name!r} ({package.source}) was trained on bands {trained}, not "
            f"{list(bands)}; configure the same bands or use another package."
        )


def embed_stamps(package: ModelPackage, x: np.ndarray, engine: InferenceEngine) -> np.ndarray:
    """Run the encoder on prepared stamps.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The encoder.
    x : `numpy.ndarray`
        ``(N, C, S, S)`` stamps in linear noise units, ``S >=
        package.inputs["stamp_size"]`` (centre-cropped to it).
    engine : `~lsst.meas.ml.engine.InferenceEngine`
        The engine.

    Returns
    -------
    embeddings : `numpy.ndarray`
        ``(N, D)`` float32 unit vectors.
    """
    size = int(package.inputs["stamp_size"])
    x = np.ascontiguousarray(centre_crop(x, size), dtype=np.float32)
    out = np.asarray(engine.predict(package, x), dtype=np.float32)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm > 0, norm, 1.0)


def embedding_table(
    ids: Any,
    embeddings: np.ndarray,
    stamps: StampBatch,
    *,
    id_column: str = "objectId",
    max_nan_fraction: float = 0.25,
    extra_flags: Mapping[str, np.ndarray] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Table:
    """Assemble the embedding table.

    Parameters
    ----------
    ids : array-like
        Id of every row (int64 objectId or str file stem).
    embeddings : `numpy.ndarray`
        ``(N, D)``; rows of ``stamps.offimage`` are replaced by NaN.
    stamps : `StampBatch`
        The stamps' per-row facts.
    id_column : `str`
        Name of the id column.
    max_nan_fraction : `float`
        ``flag_nan`` threshold.
    extra_flags : `dict`, optional
        Full-length boolean columns OR-ed into the flags of the same name.
    meta : `dict`, optional
        Table metadata.

    Returns
    -------
    table : `astropy.table.Table`
        See the module docstring.
    """
    n = len(stamps)
    table = Table(meta=dict(meta or {}))
    if id_column == "objectId":
        table[id_column] = np.asarray(ids, dtype=np.int64)
    else:
        table[id_column] = np.asarray([str(i) for i in ids], dtype=str)
    emb = np.array(embeddings, dtype=np.float32, copy=True)
    emb = emb.reshape(n, emb.shape[-1] if emb.ndim == 2 else -1)
    emb[stamps.offimage] = np.nan
    table["embedding"] = emb
    table["embedding"].description = "L2-normalised self-supervised representation; NaN when not embedded."
    table["ml_nan_fraction"] = stamps.nan_fraction.astype(np.float32)
    table["ml_nan_fraction"].description = "Fraction of stamp pixels unusable (NaN, masked, off the image)."
    flags = {
        EmbeddingFlag.EDGE: stamps.edge,
        EmbeddingFlag.OFFIMAGE: stamps.offimage,
        EmbeddingFlag.NAN: stamps.nan_fraction > max_nan_fraction,
        EmbeddingFlag.MISSING_BAND: np.zeros(n, bool),
        EmbeddingFlag.RESIZED: stamps.resized,
    }
    by_column = {f.column: f for f in EmbeddingFlag}
    for name, values in (extra_flags or {}).items():
        if name not in by_column:
            raise KeyError(f"Unknown flag column {name!r}; known: {sorted(by_column)}")
        flags[by_column[name]] = flags[by_column[name]] | np.broadcast_to(np.asarray(values, bool), (n,))
    bits = np.zeros(n, np.int32)
    for flag, values in flags.items():
        table[flag.column] = np.asarray(values, bool)
        table[flag.column].description = flag.description
        bits |= np.asarray(values, bool).astype(np.int32) << flag.bit
    table["flags"] = bits
    table["flags"].description = "Bit mask of the flag_* columns: " + ", ".join(
        f"{f.bit}={f.column}" for f in EmbeddingFlag
    )
    return table


def predict_embedding(
    package: ModelPackage,
    ids: Any,
    stamps: StampBatch,
    engine: InferenceEngine | None = None,
    *,
    id_column: str = "objectId",
    bands: Any = None,
    max_nan_fraction: float = 0.25,
    extra_flags: Mapping[str, np.ndarray] | None = None,
) -> Table:
    """Embed prepared stamps and build the table: the one embedding recipe.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        An ``embedding`` package (checked here).
    ids : array-like
        Id of every row.
    stamps : `StampBatch`
        Stamps of every row, in linear noise units.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        The engine (a default one if not given).
    id_column : `str`
        ``objectId`` (task) or ``id`` (file mode).
    bands : sequence of `str`, optional
        Bands of the channels (checked against the package's).
    max_nan_fraction : `float`
        ``flag_nan`` threshold.
    extra_flags : `dict`, optional
        Full-length flag columns OR-ed in.

    Returns
    -------
    table : `astropy.table.Table`
        One row per id (see the module docstring), with the package's
        provenance in its metadata.
    """
    check_package(package, channels=stamps.x.shape[1] if stamps.x.ndim == 4 else None, bands=bands)
    engine = engine or InferenceEngine()
    usable = ~stamps.offimage
    dim = int(package.outputs["embedding_dim"])
    emb = np.full((len(stamps), dim), np.nan, np.float32)
    if usable.any():
        emb[usable] = embed_stamps(package, stamps.x[usable], engine)
    meta = {**package.provenance_metadata(), "embedding_dim": dim}
    return embedding_table(
        ids,
        emb,
        stamps,
        id_column=id_column,
        max_nan_fraction=max_nan_fraction,
        extra_flags=extra_flags,
        meta=meta,
    )
