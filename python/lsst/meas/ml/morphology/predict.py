"""Stamps + morphology package -> ``ml_morphology`` catalog (task, CLI and image files).

`predict_morphology` serves the task (coadds of one patch and its objects)
and `predict_image_files` the ``meas-ml predict morphology --images`` mode;
both end in `classify_stamps`, which runs the package through the shared
`~lsst.meas.ml.engine.InferenceEngine` (optionally averaged over the eight
rotations and flips of each stamp) and builds the columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from astropy.table import Table

from ..engine import InferenceEngine, dihedral_average
from ..packages import ModelPackage, PackageError
from .features import (
    DEFAULT_BANDS,
    MorphologyFlag,
    MorphologyInputError,
    StampBatch,
    class_column,
    coadd_stamps,
    file_stamps,
)

__all__ = [
    "OBJECT_COLUMNS",
    "attention_maps",
    "check_package",
    "classify_stamps",
    "predict_image_files",
    "predict_morphology",
]

#: Columns the task reads from the object table (besides the brightness column for attention maps).
OBJECT_COLUMNS = ("objectId", "x", "y", "patch")


def check_package(
    package: ModelPackage,
    *,
    bands: Sequence[str] | None = None,
    stamp_size: int | None = None,
    source: str | None = None,
) -> None:
    """Check that a package is a morphology model for these bands, stamp size and input source.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The package.
    bands : sequence of `str`, optional
        Configured bands (coadds).
    stamp_size : `int`, optional
        Configured stamp side.
    source : `str`, optional
        ``"coadd"`` or ``"files"``.

    Raises
    ------
    lsst.meas.ml.packages.PackageError
        Another family, or inputs that differ, named in the message.
    """
    package.check_family("morphology", purpose="galaxy morphology")
    expected: dict[str, Any] = {}
    if source is not None:
        if package.inputs.get("source") != source:
            raise PackageError(
                f"Model package {package.name!r} ({package.source}) was trained on "
                f"{package.inputs.get('source')!r} stamps (channels {package.inputs.get('channels')}), "
                "not on "
                f"{source!r} stamps; train one for this input ('coadd': Butler coadds, 'files': image files)."
            )
    if bands is not None:
        expected["bands"] = list(bands)
    if stamp_size is not None:
        expected["stamp_size"] = int(stamp_size)
    if expected:
        package.check_inputs(**expected)


def _probs_and_energy(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, K + 1)``: the class probabilities and the energy ``-logsumexp(logits)``."""
    logits = model(x).float()
    return torch.cat([logits.softmax(dim=-1), -torch.logsumexp(logits, dim=-1, keepdim=True)], dim=-1)


def _dihedral_probs_and_energy(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`_probs_and_energy` averaged over the eight rotations and flips."""
    return dihedral_average(lambda t: _probs_and_energy(model, t), x)


def classify_stamps(
    package: ModelPackage,
    stamps: StampBatch,
    engine: InferenceEngine | None = None,
    *,
    dihedral: bool = False,
    ood_threshold: float = 1.0,
) -> Table:
    """Class probabilities, class, entropy, OOD score and flags of prepared stamps.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A morphology package (inputs already checked).
    stamps : `~lsst.meas.ml.morphology.features.StampBatch`
        Prepared stamps; those that are all masked or off the image get NaN
        probabilities and no class.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        Engine (a default one on the best device if not given).
    dihedral : `bool`
        Average the probabilities over the eight rotations and flips
        (test-time augmentation; exactly invariant to 90-degree turns).
    ood_threshold : `float`
        ``morph_ood_score`` above which ``OUT_OF_DISTRIBUTION`` is set.

    Returns
    -------
    table : `astropy.table.Table`
        ``prob_<class>`` per class, ``morph_class``, ``morph_entropy``
        (nats), ``morph_ood_score``, ``morph_masked_fraction`` and
        ``morph_flags``; metadata: class names and columns, flag bits and
        descriptions, provenance.

    Raises
    ------
    lsst.meas.ml.packages.PackageError
        The stamps do not have the package's channel count or size.
    """
    engine = engine or InferenceEngine()
    classes = [str(c) for c in package.outputs["class_names"]]
    hyper = package.hyperparameters
    n_ch, size = int(hyper.get("in_channels", 11)), int(hyper.get("stamp_size", 64))
    if stamps.x.shape[1:] != (n_ch, size, size):
        raise PackageError(
            f"Model package {package.name!r} takes stamps of {n_ch} channels and {size}x{size} pixels; got "
            f"{stamps.x.shape[1]} channels of {stamps.x.shape[-1]}x{stamps.x.shape[-2]}. Use a package "
            "trained on these bands and this stamp size."
        )
    n, k = len(stamps), len(classes)
    usable = stamps.usable
    prob = np.full((n, k), np.nan, dtype=np.float32)
    energy = np.full(n, np.nan, dtype=np.float32)
    if usable.any():
        forward = _dihedral_probs_and_energy if dihedral else _probs_and_energy
        out = np.asarray(engine.predict(package, np.ascontiguousarray(stamps.x[usable]), forward=forward))
        prob[usable] = out[:, :k]
        energy[usable] = out[:, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        entropy = -np.sum(np.where(prob > 0, prob * np.log(np.where(prob > 0, prob, 1.0)), 0.0), axis=1)
    entropy[~usable] = np.nan
    med, p99 = float(package.outputs.get("energy_median", 0.0)), float(package.outputs.get("energy_p99", 1.0))
    ood = (energy - med) / max(p99 - med, 1e-6)
    flags = stamps.flags.copy()
    with np.errstate(invalid="ignore"):
        flags[ood > ood_threshold] |= int(MorphologyFlag.OUT_OF_DISTRIBUTION)
    best = np.where(usable, np.nanargmax(np.where(usable[:, None], prob, 0.0), axis=1), 0)
    table = Table()
    for c, name in enumerate(classes):
        table[class_column(name)] = prob[:, c].astype(np.float32)
        table[class_column(name)].description = f"Probability of class {name}."
    table["morph_class"] = np.where(usable, np.array(classes, dtype=object)[best], "").astype(str)
    table["morph_class"].description = "Most probable class ('' when not classified)."
    table["morph_entropy"] = entropy.astype(np.float32)
    table["morph_entropy"].unit = "nat"
    table["morph_ood_score"] = ood.astype(np.float32)
    table["morph_ood_score"].description = "Energy score, 0 at the training median, 1 at its 99th percentile."
    table["morph_masked_fraction"] = stamps.masked_fraction.astype(np.float32)
    table["morph_flags"] = flags.astype(np.int64)
    table["morph_flags"].description = "; ".join(
        f"{a}: {b}" for a, b in MorphologyFlag.descriptions().items()
    )
    table.meta["morph_class_names"] = classes
    table.meta["morph_prob_columns"] = [class_column(c) for c in classes]
    table.meta["morph_flag_bits"] = MorphologyFlag.bits()
    table.meta["morph_flag_descriptions"] = MorphologyFlag.descriptions()
    table.meta["dihedral_average"] = bool(dihedral)
    table.meta["stamp_size"] = size
    table.meta["input_channels"] = list(package.inputs.get("channels", []))
    table.meta.update(package.provenance_metadata())
    return table


def predict_morphology(
    package: ModelPackage,
    coadds: Mapping[str, Any],
    objects: Any,
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    stamp_size: int = 64,
    engine: InferenceEngine | None = None,
    dihedral: bool = False,
    ood_threshold: float = 1.0,
    max_masked_fraction: float = 0.25,
    bad_mask_planes: Sequence[str] = ("BAD", "SAT", "NO_DATA"),
    id_column: str = "objectId",
    x_column: str = "x",
    y_column: str = "y",
) -> tuple[Table, StampBatch]:
    """Classify the objects of one patch from its coadds.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A morphology package trained on coadd stamps of ``bands`` and
        ``stamp_size``.
    coadds : `~collections.abc.Mapping` [`str`, image]
        Coadd per band; absent bands are flagged ``MISSING_BAND``.
    objects : table-like
        The patch's objects (id, parent-frame ``x``, ``y``); may be empty.
    bands : sequence of `str`
        Configured bands.
    stamp_size : `int`
        Configured stamp side.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        Engine.
    dihedral : `bool`
        Average over the eight rotations and flips.
    ood_threshold : `float`
        See `classify_stamps`.
    max_masked_fraction : `float`
        Unusable-pixel fraction above which ``MASKED`` is set.
    bad_mask_planes : sequence of `str`
        Mask planes of unusable pixels.
    id_column, x_column, y_column : `str`
        Object table columns.

    Returns
    -------
    catalog : `astropy.table.Table`
        ``objectId`` (as ``id_column``) then the columns of `classify_stamps`.
    stamps : `~lsst.meas.ml.morphology.features.StampBatch`
        The model inputs (for attention maps).

    Raises
    ------
    lsst.meas.ml.packages.PackageError
        The package is not a coadd morphology model of these bands and stamp size.
    MorphologyInputError
        The object table lacks a column.
    """
    check_package(package, bands=bands, stamp_size=stamp_size, source="coadd")
    names = getattr(objects, "colnames", None) or list(getattr(objects, "keys", lambda: [])())
    missing = [c for c in (id_column, x_column, y_column) if c not in names]
    if missing:
        raise MorphologyInputError(f"Object table lacks column(s) {missing}; it has {list(names)[:20]}.")
    stamps = coadd_stamps(
        coadds,
        np.asarray(objects[x_column], float),
        np.asarray(objects[y_column], float),
        bands=bands,
        stamp_size=stamp_size,
        bad_mask_planes=bad_mask_planes,
        max_masked_fraction=max_masked_fraction,
    )
    table = classify_stamps(package, stamps, engine, dihedral=dihedral, ood_threshold=ood_threshold)
    table.add_column(np.asarray(objects[id_column], dtype=np.int64), name=id_column, index=0)
    table.meta["bands"] = list(bands)
    table.meta["missing_bands"] = [b for b in bands if coadds.get(b) is None]
    return table, stamps


def predict_image_files(
    package: ModelPackage,
    patterns: str | Sequence[str],
    *,
    engine: InferenceEngine | None = None,
    resize: str = "centre",
    dihedral: bool = False,
    ood_threshold: float = 1.0,
) -> Table:
    """Classify image files (FITS, NPY, PNG, JPEG) with a package trained on image files.

    Images are cropped or zero-padded about their centre to the package's
    stamp size (``RESIZED`` flag), or refused with ``resize="error"``;
    unreadable files are skipped and counted (``meta["n_skipped"]``).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A morphology package with ``source="files"``.
    patterns : `str` or sequence of `str`
        Globs, directories or files.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        Engine.
    resize : `str`
        ``"centre"`` or ``"error"``.
    dihedral : `bool`
        Average over the eight rotations and flips.
    ood_threshold : `float`
        See `classify_stamps`.

    Returns
    -------
    catalog : `astropy.table.Table`
        ``id`` (file stem) then the columns of `classify_stamps`.

    Raises
    ------
    lsst.meas.ml.packages.PackageError
        The package was trained on coadds.
    lsst.meas.ml.imagefiles.ImageFileError
        No readable file, or files of another channel count than the model's.
    """
    from ..imagefiles import load_images

    check_package(package, source="files")
    n_channels = len(package.inputs["bands"])
    images = load_images(patterns, size=int(package.inputs["stamp_size"]), resize=resize, channels=n_channels)
    stamps = file_stamps(
        images.images, images.bad, resized=images.resized, channel_names=package.inputs["bands"]
    )
    table = classify_stamps(package, stamps, engine, dihedral=dihedral, ood_threshold=ood_threshold)
    table.add_column(np.asarray(images.ids, dtype=str), name="id", index=0)
    table.meta["n_skipped"] = len(images.skipped)
    table.meta["skipped_files"] = [p for p, _ in images.skipped]
    return table


def attention_maps(package: ModelPackage, x: np.ndarray, engine: InferenceEngine | None = None) -> np.ndarray:
    """Return ``(N, S, S)`` maps of where the model looks (see the architectures' ``attention_maps``).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A morphology package.
    x : `numpy.ndarray`
        ``(N, C, S, S)`` prepared stamps.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        Engine (its device and cached model are used).

    Returns
    -------
    maps : `numpy.ndarray`
        Float32 maps, each summing to 1.
    """
    engine = engine or InferenceEngine()
    model = engine.model(package)
    if not len(x):
        s = int(package.hyperparameters.get("stamp_size", 64))
        return np.zeros((0, s, s), np.float32)
    with torch.inference_mode():
        t = torch.as_tensor(np.ascontiguousarray(x), device=engine.device)
        return model.attention_maps(t).float().cpu().numpy()
