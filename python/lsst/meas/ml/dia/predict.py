"""Turn prepared stamps into the score table (shared by the task and alert mode).

Score-table columns (one row per DIA source):

=========================  =======  ===============================================
column                     type     meaning
=========================  =======  ===============================================
``diaSourceId``            int64    the source
``ml_reliability``         float32  probability that the source is real (0 to 1):
                                    1 - P(artifact); NaN when not scored
``ml_class``               str      most probable class (`CLASS_NAMES`); "" when
                                    not scored
``ml_prob_<class>``        float32  one probability per class (`CLASS_COLUMNS`)
``ml_nan_fraction``        float32  fraction of stamp pixels NaN or off the image
``flag_edge``              bool     stamp reaches past the image edge (padded)
``flag_offimage``          bool     source centre off the image (not scored)
``flag_masked``            bool     a bad mask bit is set in the stamp
``flag_nan``               bool     ``ml_nan_fraction`` above the configured limit
``flag_bad_psf``           bool     PSF missing or implausible
``flag_no_cutout``         bool     alert without (all) cutouts (not scored)
``flag_corrupt_cutout``    bool     alert cutout unreadable (not scored)
``flag_resized``           bool     alert cutout cropped or padded to the model size
``flags``                  int32    the flags above as a bit mask (`FLAG_BITS`)
=========================  =======  ===============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table

from ..engine import InferenceEngine, dihedral_average
from ..flags import DescribedFlag
from ..packages import ModelPackage, PackageError
from .features import CHANNELS, CLASS_COLUMNS, CLASS_NAMES, NORMALISATION, StampSet

__all__ = [
    "DIHEDRAL_CHOICES",
    "DiaFlag",
    "FLAG_BITS",
    "FLAG_DOCS",
    "score_stamps",
    "check_package",
    "predict_probabilities",
    "score_table",
    "use_dihedral_average",
]


class DiaFlag(DescribedFlag):
    """Bits of the ``flags`` column; each is also a boolean ``flag_<name>`` column."""

    EDGE = 1 << 0, "Stamp reaches past the image edge (padded, still scored)."
    OFFIMAGE = 1 << 1, "Source centre off the image or without a position (not scored)."
    MASKED = 1 << 2, "A bad mask bit is set in the stamp."
    NAN = 1 << 3, "ml_nan_fraction above the configured limit."
    BAD_PSF = 1 << 4, "PSF missing or its width implausible."
    NO_CUTOUT = 1 << 5, "Alert without (all) cutouts (not scored)."
    CORRUPT_CUTOUT = 1 << 6, "Alert cutout unreadable (not scored)."
    RESIZED = 1 << 7, "Alert cutout cropped or padded to the model's stamp size."

    @property
    def column(self) -> str:
        """Name of the boolean column of this flag."""
        return f"flag_{self.name.lower()}"


#: Flag column -> bit index in the ``flags`` column (from `DiaFlag`).
FLAG_BITS: dict[str, int] = {f.column: f.bit for f in DiaFlag}
#: Flag column -> description (from `DiaFlag`).
FLAG_DOCS: dict[str, str] = {f.column: f.description for f in DiaFlag}


#: Allowed values of the rotation-averaging policy.
DIHEDRAL_CHOICES: dict[str, str] = {
    "auto": "average over the 8 rotations/flips unless the model is invariant by construction",
    "gpu": "average on GPUs only (unless the model is invariant by construction); one pass on CPUs",
    "always": "always average over the 8 rotations/flips",
    "never": "one forward pass (exact invariance only for symmetric models)",
}


def check_package(package: ModelPackage, *, stamp_size: int | None = None) -> None:
    """Check that a package is a DIA classifier this code can feed.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The package to check.
    stamp_size : `int`, optional
        Stamp side the package must take (not checked when `None`).

    Raises
    ------
    PackageError
        Wrong family, channels, normalisation or (when given) stamp size.
    """
    if package.family != "dia":
        raise PackageError(
            f"Model package {package.name!r} ({package.source}) is a {package.family!r} model; the DIA "
            "classifier needs a 'dia' package (e.g. from `meas-ml train dia`)."
        )
    expected: dict[str, Any] = {"channels": list(CHANNELS), "normalisation": NORMALISATION}
    if stamp_size is not None:
        expected["stamp_size"] = int(stamp_size)
    package.check_inputs(**expected)
    classes = list(package.outputs.get("class_names", []))
    if classes != list(CLASS_NAMES):
        raise PackageError(
            f"Model package {package.name!r} predicts classes {classes}, expected {list(CLASS_NAMES)}."
        )


def use_dihedral_average(policy: str, package: ModelPackage, engine: InferenceEngine) -> bool:
    """Decide whether to average over rotations/flips under ``policy``.

    Parameters
    ----------
    policy : `str`
        Rotation-averaging policy, a key of `DIHEDRAL_CHOICES`.
    package : `~lsst.meas.ml.packages.ModelPackage`
        The package; a ``symmetric`` model is invariant by construction.
    engine : `~lsst.meas.ml.engine.InferenceEngine`
        The engine that runs the model (its device matters for ``"gpu"``).

    Returns
    -------
    average : `bool`
        Whether to average over the 8 rotations/flips.

    Raises
    ------
    ValueError
        If ``policy`` is not one of `DIHEDRAL_CHOICES`.
    """
    if policy not in DIHEDRAL_CHOICES:
        raise ValueError(
            f"Unknown rotation-averaging policy {policy!r}; choose one of {sorted(DIHEDRAL_CHOICES)}."
        )
    if policy == "always":
        return True
    if policy == "never":
        return False
    invariant = bool(package.hyperparameters.get("symmetric", False))
    if policy == "gpu":
        return not invariant and engine.device.type != "cpu"
    return not invariant


def predict_probabilities(
    package: ModelPackage, x: np.ndarray, engine: InferenceEngine, *, average: bool
) -> np.ndarray:
    """Predict class probabilities for prepared stamps ``x``.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The DIA package.
    x : `numpy.ndarray`
        Prepared stamps, shape ``(N, C, S, S)``.
    engine : `~lsst.meas.ml.engine.InferenceEngine`
        The engine that runs the model.
    average : `bool`
        Average the logits over the 8 rotations/flips.

    Returns
    -------
    probabilities : `numpy.ndarray`
        Softmax class probabilities, shape ``(N, K)``, float32.
    """
    logits = engine.predict(package, x, forward=dihedral_average if average else None)
    logits = np.asarray(logits, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0.0
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32)


def score_table(
    ids: np.ndarray,
    probabilities: np.ndarray | None,
    stamps: StampSet | None,
    *,
    scored: np.ndarray | None = None,
    max_nan_fraction: float = 0.25,
    extra_flags: Mapping[str, np.ndarray] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Table:
    """Assemble the score table.

    Parameters
    ----------
    ids : `numpy.ndarray`
        ``diaSourceId`` of every row.
    probabilities : `numpy.ndarray` or `None`
        ``(M, K)`` class probabilities of the scored rows (``M`` = number of
        `True` in ``scored``).
    stamps : `StampSet` or `None`
        Stamps of the scored rows (for their flags).
    scored : `numpy.ndarray`, optional
        Which rows were scored (default all).
    max_nan_fraction : `float`
        ``flag_nan`` is set above this fraction.
    extra_flags : `dict`, optional
        More flag columns (full length), OR-ed into the defaults.
    meta : `dict`, optional
        Table metadata (model name, version, checksum).
    """
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    scored = np.ones(n, bool) if scored is None else np.asarray(scored, bool)
    table = Table(meta=dict(meta or {}))
    table["diaSourceId"] = ids
    probs = np.full((n, len(CLASS_NAMES)), np.nan, np.float32)
    if probabilities is not None and scored.any():
        probs[scored] = probabilities
    artifact = CLASS_NAMES.index("artifact")
    reliability = (1.0 - probs[:, artifact]).astype(np.float32)
    labels = np.array([CLASS_NAMES[i] for i in np.nan_to_num(probs).argmax(axis=1)] if n else [], dtype="U16")
    labels[~scored] = ""
    table["ml_reliability"] = reliability
    table["ml_reliability"].unit = u.dimensionless_unscaled
    table["ml_reliability"].description = "Probability that the source is real (1 - P(artifact))."
    table["ml_class"] = labels
    table["ml_class"].description = f"Most probable class, one of {list(CLASS_NAMES)}; empty when not scored."
    for k, name in enumerate(CLASS_NAMES):
        table[CLASS_COLUMNS[name]] = probs[:, k]
        table[CLASS_COLUMNS[name]].unit = u.dimensionless_unscaled
        table[CLASS_COLUMNS[name]].description = f"Probability of class {name!r}."
    nan_fraction = np.full(n, np.nan, np.float32)
    flags = {name: np.zeros(n, bool) for name in FLAG_BITS}
    if stamps is not None and scored.any():
        nan_fraction[scored] = stamps.nan_fraction
        flags["flag_edge"][scored] = stamps.edge
        flags["flag_offimage"][scored] = stamps.offimage
        flags["flag_masked"][scored] = stamps.masked
    flags["flag_nan"] = np.nan_to_num(nan_fraction, nan=0.0) > max_nan_fraction
    for name, values in (extra_flags or {}).items():
        if name not in flags:
            raise KeyError(f"Unknown flag column {name!r}; known: {sorted(flags)}")
        flags[name] = flags[name] | np.broadcast_to(np.asarray(values, bool), (n,))
    table["ml_nan_fraction"] = nan_fraction
    table["ml_nan_fraction"].unit = u.dimensionless_unscaled
    table["ml_nan_fraction"].description = "Fraction of stamp pixels that are NaN or off the image."
    bits = np.zeros(n, np.int32)
    for name, bit in FLAG_BITS.items():
        table[name] = flags[name]
        table[name].description = FLAG_DOCS[name]
        bits |= flags[name].astype(np.int32) << bit
    table["flags"] = bits
    table["flags"].description = "Bit mask of the flag_* columns: " + ", ".join(
        f"{bit}={name}" for name, bit in FLAG_BITS.items()
    )
    return table


def score_stamps(
    package: ModelPackage,
    ids: np.ndarray,
    stamps: StampSet,
    engine: InferenceEngine,
    *,
    scored: np.ndarray | None = None,
    dihedral: str = "auto",
    max_nan_fraction: float = 0.25,
    extra_flags: Mapping[str, np.ndarray] | None = None,
) -> Table:
    """Score prepared stamps and build the score table: the one DIA recipe.

    The task (`ClassifyDiaSourcesTask.run`) and alert scoring
    (`lsst.meas.ml.dia.alert_scoring.score_alerts`) both end here, so a
    package is checked, rotation-averaged, predicted and tabulated the same
    way whatever the stamps came from.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``dia`` package (checked here).
    ids : `numpy.ndarray`
        ``diaSourceId`` of every row.
    stamps : `StampSet`
        Stamps of the rows to score (``scored`` rows, in order).
    engine : `~lsst.meas.ml.engine.InferenceEngine`
        The engine that runs the model.
    scored : `numpy.ndarray`, optional
        Which rows have stamps (default all).
    dihedral : `str`
        Rotation-averaging policy (`DIHEDRAL_CHOICES`).
    max_nan_fraction : `float`
        ``flag_nan`` threshold.
    extra_flags : `dict`, optional
        Full-length flag columns OR-ed in.
    """
    check_package(package, stamp_size=stamps.x.shape[-1] if len(stamps) else None)
    ids = np.asarray(ids, dtype=np.int64)
    scored = np.ones(len(ids), bool) if scored is None else np.asarray(scored, bool)
    average = use_dihedral_average(dihedral, package, engine)
    probs = predict_probabilities(package, stamps.x, engine, average=average) if scored.any() else None
    meta = {**package.provenance_metadata(), "dihedral_average": bool(average)}
    return score_table(
        ids,
        probs,
        stamps if scored.any() else None,
        scored=scored,
        max_nan_fraction=max_nan_fraction,
        extra_flags=extra_flags,
        meta=meta,
    )
