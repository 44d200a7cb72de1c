"""Score alert packets directly from their cutouts (no Butler).

Each alert's science, template and difference cutouts are read with
`lsst.meas.ml.alerts.read_cutout` and cut to the model's stamp size around
the source with the shared `lsst.meas.ml.cutouts.cut_stamps`: a larger
cutout (ZTF's 63 pixels) is centre-cropped, a smaller one (Rubin's 30) is
padded with NaN, which the channel preparation turns into zeros; such rows
get ``flag_resized`` (and ``flag_edge`` when padding was needed).  An alert
without cutouts, or with one that cannot be read, is flagged
(``flag_no_cutout``, ``flag_corrupt_cutout``) and left unscored; the other
rows are scored.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from ..alerts import CUTOUT_NAMES, AlertError, AlertRecord, read_cutout
from ..cutouts import cut_stamps
from ..engine import InferenceEngine
from ..packages import ModelPackage
from .features import StampSet, bad_psf, stampset_from
from .predict import check_package, score_stamps

__all__ = ["AlertStamps", "alert_stamps", "score_alerts"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class AlertStamps:
    """Prepared stamps of a list of alerts.

    Attributes
    ----------
    stamps : `StampSet`
        Stamps of the usable alerts only (``usable`` rows, in order).
    usable : `numpy.ndarray`
        Per alert: cutouts present and readable.
    flags : `dict` [`str`, `numpy.ndarray`]
        Per-alert flags ``flag_no_cutout``, ``flag_corrupt_cutout``,
        ``flag_resized``, ``flag_bad_psf``.
    problems : `list` [`str`]
        Why each unusable alert was rejected.
    """

    stamps: StampSet
    usable: np.ndarray
    flags: dict[str, np.ndarray]
    problems: list[str]


def alert_stamps(records: Sequence[AlertRecord], stamp_size: int) -> AlertStamps:
    """Read and prepare the cutouts of every alert.

    Parameters
    ----------
    records : `~collections.abc.Sequence` [`~lsst.meas.ml.alerts.AlertRecord`]
        Alerts from `lsst.meas.ml.alerts.read_alerts`.
    stamp_size : `int`
        The model's stamp side.
    """
    n = len(records)
    usable = np.zeros(n, bool)
    flags = {
        name: np.zeros(n, bool)
        for name in ("flag_no_cutout", "flag_corrupt_cutout", "flag_resized", "flag_bad_psf")
    }
    problems: list[str] = []
    parts: list[StampSet] = []
    for i, rec in enumerate(records):
        missing = [name for name in CUTOUT_NAMES if rec.cutouts.get(name) is None]
        if missing:
            flags["flag_no_cutout"][i] = True
            problems.append(f"alert {rec.diaSourceId}: no {', '.join(missing)}")
            continue
        try:
            sci, tmpl, diff = (read_cutout(rec.cutouts[name], band=rec.band) for name in CUTOUT_NAMES)
            if not (sci.shape == tmpl.shape == diff.shape):
                raise AlertError(
                    f"cutouts differ in shape (science {sci.shape}, template {tmpl.shape}, "
                    f"difference {diff.shape})"
                )
        except AlertError as exc:
            flags["flag_corrupt_cutout"][i] = True
            problems.append(f"alert {rec.diaSourceId}: {exc}")
            continue
        if rec.x is None or not np.isfinite(rec.x) or rec.y is None or not np.isfinite(rec.y):
            # Centred cutout (ZTF): the source sits on the central pixel.
            x = diff.xy0[0] + (diff.shape[1] - 1) / 2.0
            y = diff.xy0[1] + (diff.shape[0] - 1) / 2.0
        else:
            x, y = rec.x, rec.y
        planes = np.stack([sci.image, tmpl.image, diff.image, diff.variance])
        cut = cut_stamps(planes, np.array([x]), np.array([y]), stamp_size, xy0=diff.xy0, fill=np.nan)
        parts.append(stampset_from(cut))
        usable[i] = True
        flags["flag_resized"][i] = diff.shape != (stamp_size, stamp_size)
        flags["flag_bad_psf"][i] = (
            diff.psf is not None and bad_psf(diff) or (rec.survey == "rubin" and diff.psf is None)
        )
    for p in problems:
        _log.warning("Not scored: %s", p)
    return AlertStamps(StampSet.concatenate(parts, stamp_size), usable, flags, problems)


def score_alerts(
    records: Sequence[AlertRecord],
    package: ModelPackage,
    *,
    engine: InferenceEngine | None = None,
    dihedral: str = "auto",
    max_nan_fraction: float = 0.25,
) -> Table:
    """Score alerts with a DIA classifier package.

    Parameters
    ----------
    records : `~collections.abc.Sequence` [`~lsst.meas.ml.alerts.AlertRecord`]
        Alerts from `lsst.meas.ml.alerts.read_alerts`.
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``dia`` package (checked here).
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        The engine that runs the model (default: a new one with the default
        configuration).
    dihedral : `str`, optional
        Rotation-averaging policy (`~lsst.meas.ml.dia.predict.DIHEDRAL_CHOICES`).
    max_nan_fraction : `float`, optional
        ``flag_nan`` is set above this fraction of NaN stamp pixels.

    Returns
    -------
    table : `astropy.table.Table`
        The columns of `lsst.meas.ml.dia.predict` plus ``reference_score``
        (the survey's own score: Rubin ``reliability`` or ZTF ``drb``) and
        ``survey``; one row per alert, in input order.
    """
    check_package(package)
    engine = engine or InferenceEngine()
    prepared = alert_stamps(records, int(package.inputs["stamp_size"]))
    table = score_stamps(
        package,
        np.array([r.diaSourceId for r in records], dtype=np.int64),
        prepared.stamps,
        engine,
        scored=prepared.usable,
        dihedral=dihedral,
        max_nan_fraction=max_nan_fraction,
        extra_flags=prepared.flags,
    )
    table["reference_score"] = np.array([r.reference_score for r in records], dtype=np.float32)
    table["reference_score"].description = "The survey's own real/bogus score (Rubin reliability, ZTF drb)."
    table["survey"] = np.array([r.survey for r in records], dtype="U8")
    return table
