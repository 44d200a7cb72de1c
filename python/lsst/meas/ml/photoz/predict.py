"""From a model package and a table of fluxes to the photo-z catalog.

`predict_photoz` is what `EstimatePhotozTask.run` and ``meas-ml predict
photoz`` call; it returns an `astropy.table.Table` with the columns of
`output_schema` and the PDF bin edges and flag definitions in its ``meta``.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Sequence
from typing import Any

import astropy.units as u
import numpy as np
import torch
from astropy.table import Column, Table

from ..packages import ModelPackage, PackageError
from .features import PhotozColumns, _column, _column_names, missing_mask
from .pdf import DEFAULT_COMPACT_LEVELS, compact_quantiles, summarize_pdf

__all__ = [
    "DEFAULT_PACKAGE_PATH",
    "PDF_FORMATS",
    "PhotozFlag",
    "columns_for_package",
    "default_package",
    "predict_photoz",
]

#: The package shipped with meas_ml: trained by `lsst.meas.ml.photoz.train` on
#: the DESC cosmoDC2 training file of RAIL (ugrizy, 10,225 galaxies).
DEFAULT_PACKAGE_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "photoz_default.safetensors")

#: How PDFs are stored: the full float32 bin vector, float16 quantiles, or both.
PDF_FORMATS = ("full", "quantiles", "both")

_log = logging.getLogger(__name__)


class PhotozFlag(enum.IntFlag):
    """Bits of the ``photoz_flags`` column."""

    NO_DATA = 1
    """No usable band: estimates are NaN."""
    MISSING_BAND = 2
    """At least one band has no usable flux (NaN, or a non-positive error)."""
    OUT_OF_DISTRIBUTION = 4
    """``photoz_ood_score`` above the threshold: unlike the training set; needs a slower analysis."""
    AT_Z_MAX = 8
    """More than 5% of the probability in the last redshift bin: the true redshift may lie beyond."""
    DUPLICATE_ID = 16
    """The object id occurs on more than one input row (every such row is flagged); the rows are
    estimated independently, but joins on the id are ambiguous."""


_FLAG_DESCRIPTIONS = {
    "NO_DATA": "no usable band; estimates are NaN",
    "MISSING_BAND": "at least one band has no usable flux",
    "OUT_OF_DISTRIBUTION": "OOD score above threshold; needs a slower statistical analysis",
    "AT_Z_MAX": "more than 5% of the probability in the last redshift bin",
    "DUPLICATE_ID": "the object id occurs on more than one input row; joins on it are ambiguous",
}


def default_package() -> ModelPackage:
    """Load the default photo-z package shipped in ``lsst/meas/ml/data``."""
    if not os.path.exists(DEFAULT_PACKAGE_PATH):
        raise PackageError(
            f"The default photo-z package {DEFAULT_PACKAGE_PATH} is missing from this installation; "
            "pass a package with --model or reinstall meas_ml."
        )
    return ModelPackage.load(DEFAULT_PACKAGE_PATH)


def columns_for_package(
    package: ModelPackage,
    *,
    bands: Sequence[str] | None = None,
    flux_template: str | None = None,
    flux_err_template: str | None = None,
    ebv_column: str | None = None,
    id_column: str = "objectId",
    missing_band: str = "error",
) -> PhotozColumns:
    """Column names for a package, checking the configured bands against it.

    Unset names default to the ones the package was trained with.

    Raises
    ------
    PackageError
        If the package is not a photo-z package or was trained on other
        bands than ``bands``.
    """
    package.check_family("photoz", purpose="photo-z")
    trained = list(package.inputs.get("bands", []))
    if bands is not None and list(bands) != trained:
        raise PackageError(
            f"Model package {package.name!r} version {package.version} was trained on bands {trained}, but the "
            f"input is configured with bands {list(bands)}. Use a package trained on these bands (meas-ml train "
            f"photoz --bands {','.join(bands)}) or configure bands={trained} (missing ones may be treated as "
            "not observed with the missing-band mode)."
        )
    return PhotozColumns(
        bands=tuple(trained),
        flux_template=flux_template or package.inputs.get("flux_template", "{band}_cModelFlux"),
        flux_err_template=flux_err_template or package.inputs.get("flux_err_template", "{band}_cModelFluxErr"),
        ebv_column=ebv_column if ebv_column is not None else package.inputs.get("ebv_column"),
        id_column=id_column,
        missing_band=missing_band,
    )


def _duplicated(ids: np.ndarray) -> np.ndarray:
    """True on every row whose id occurs on more than one row."""
    if ids.size < 2:
        return np.zeros(ids.size, dtype=bool)
    try:
        _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        return counts[inverse.reshape(-1)] > 1
    except TypeError:  # object ids that do not sort (mixed types)
        seen: dict[Any, int] = {}
        keys = ids.tolist()
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
        return np.array([seen[key] > 1 for key in keys], dtype=bool)


def _empty_like_schema(n_bins: int, n_levels: int, pdf_format: str) -> dict[str, np.ndarray]:
    out = {}
    if pdf_format in ("full", "both"):
        out["photoz_pdf"] = np.zeros((0, n_bins), dtype=np.float32)
    if pdf_format in ("quantiles", "both"):
        out["photoz_pdf_quantiles"] = np.zeros((0, n_levels), dtype=np.float16)
    return out


def predict_photoz(
    package: ModelPackage,
    table: Any,
    columns: PhotozColumns | None = None,
    *,
    engine: Any = None,
    pdf_format: str = "full",
    compact_levels: Sequence[float] = DEFAULT_COMPACT_LEVELS,
    ood_threshold: float = 1.0,
) -> Table:
    """Estimate photometric redshifts for every row of ``table``.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``photoz`` package (architecture ``mbrnn``).
    table : table-like
        Astropy, pandas or Arrow table (or dict of arrays) with the flux
        columns; rows are never dropped.
    columns : `PhotozColumns`, optional
        Column names; default: those of the package (see
        `columns_for_package`).
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        The engine to run the model with (default: a CPU/GPU-automatic one).
    pdf_format : `str`
        ``"full"`` (``photoz_pdf``: float32 probability per bin),
        ``"quantiles"`` (``photoz_pdf_quantiles``: float16 quantiles at
        ``compact_levels``) or ``"both"``.
    compact_levels : sequence of `float`
        Probability levels of the compact form.
    ood_threshold : `float`
        ``photoz_ood_score`` above which `PhotozFlag.OUT_OF_DISTRIBUTION` is set.

    Returns
    -------
    catalog : `astropy.table.Table`
        ``objectId`` (or ``columns.id_column``), ``photoz_mean``,
        ``photoz_mode``, ``photoz_median``, ``photoz_std``,
        ``photoz_lo68``, ``photoz_hi68``, the PDF column(s),
        ``photoz_ood_score`` and ``photoz_flags``; ``meta`` holds
        ``photoz_bin_edges``, ``photoz_quantile_levels``, the flag bits and
        the package's name, version and checksum.
    """
    from ..engine import InferenceEngine

    if pdf_format not in PDF_FORMATS:
        raise ValueError(f"pdf_format must be one of {PDF_FORMATS}, got {pdf_format!r}.")
    if columns is None:
        columns = columns_for_package(package)
    else:
        columns_for_package(package, bands=columns.bands)
    if package.architecture != "mbrnn":
        raise PackageError(f"Photo-z package {package.name!r} has architecture {package.architecture!r}, not 'mbrnn'.")
    inputs = columns.extract(table)
    engine = engine or InferenceEngine()
    pdf, ood = engine.predict(package, inputs)
    pdf = np.asarray(pdf, dtype=np.float32)
    ood = np.asarray(ood, dtype=np.float32)
    edges = np.asarray(package.outputs["bin_edges"], dtype=np.float64)
    n = inputs.shape[0]
    nb = len(columns.bands)

    x = torch.from_numpy(inputs)
    missing = missing_mask(x[:, :nb], x[:, nb : 2 * nb]).numpy()
    no_data = missing.all(axis=1)
    flags = np.zeros(n, dtype=np.int32)
    flags[no_data] |= PhotozFlag.NO_DATA
    flags[missing.any(axis=1)] |= PhotozFlag.MISSING_BAND
    pdf[no_data] = np.nan
    ood[no_data] = np.nan
    flags[np.nan_to_num(ood, nan=0.0) > ood_threshold] |= PhotozFlag.OUT_OF_DISTRIBUTION
    if n:
        flags[np.nan_to_num(pdf[:, -1], nan=0.0) > 0.05] |= PhotozFlag.AT_Z_MAX
    summary = summarize_pdf(pdf, edges)

    names = _column_names(table)
    if columns.id_column in names:
        ids = _column(table, columns.id_column, dtype=None)
    else:
        ids = np.arange(n, dtype=np.int64)
    if ids.dtype.kind == "f" or (ids.size == 0 and ids.dtype.kind == "O"):
        ids = ids.astype(np.int64)
    if columns.id_column in names:
        duplicated = _duplicated(ids)
        if duplicated.any():
            flags[duplicated] |= PhotozFlag.DUPLICATE_ID
            _log.warning(
                "%d of %d input rows share an object id (%r) with another row (%d distinct ids repeated); "
                "they are estimated independently and flagged DUPLICATE_ID (%d) in photoz_flags.",
                int(duplicated.sum()), n, columns.id_column, len(set(ids[duplicated].tolist())),
                int(PhotozFlag.DUPLICATE_ID),
            )
    out = Table()
    out[columns.id_column] = Column(ids, description="Object identifier (row index if the input had none).")
    redshift_docs = {
        "mean": "Mean of the photo-z PDF.",
        "mode": "Mode of the photo-z PDF.",
        "median": "Median of the photo-z PDF.",
        "std": "Standard deviation of the photo-z PDF.",
        "lo68": "16th percentile of the photo-z PDF (lower end of the central 68% interval).",
        "hi68": "84th percentile of the photo-z PDF (upper end of the central 68% interval).",
    }
    for key, doc in redshift_docs.items():
        out[f"photoz_{key}"] = Column(summary[key].astype(np.float32), unit=u.dimensionless_unscaled, description=doc)
    levels = [float(v) for v in compact_levels]
    if n == 0:
        extra = _empty_like_schema(pdf.shape[1] if pdf.ndim == 2 else edges.size - 1, len(levels), pdf_format)
    else:
        extra = {}
        if pdf_format in ("full", "both"):
            extra["photoz_pdf"] = pdf
        if pdf_format in ("quantiles", "both"):
            extra["photoz_pdf_quantiles"] = compact_quantiles(pdf, edges, levels)
    if "photoz_pdf" in extra:
        out["photoz_pdf"] = Column(
            extra["photoz_pdf"], unit=u.dimensionless_unscaled,
            description="Probability in each redshift bin (edges in meta['photoz_bin_edges']).",
        )
    if "photoz_pdf_quantiles" in extra:
        out["photoz_pdf_quantiles"] = Column(
            extra["photoz_pdf_quantiles"], unit=u.dimensionless_unscaled,
            description="Redshift quantiles (float16) at the levels in meta['photoz_quantile_levels'].",
        )
    out["photoz_ood_score"] = Column(
        ood, unit=u.dimensionless_unscaled,
        description="Out-of-distribution score: Mahalanobis distance of the network embedding from the "
        "training set, in units of its training 99th percentile.",
    )
    out["photoz_flags"] = Column(flags, description="Bit flags: " + "; ".join(
        f"{int(f)}={f.name}" for f in PhotozFlag))
    out.meta["photoz_bin_edges"] = [float(e) for e in edges]
    out.meta["photoz_quantile_levels"] = levels if pdf_format != "full" else []
    out.meta["photoz_flag_bits"] = {f.name: int(f) for f in PhotozFlag}
    out.meta["photoz_flag_descriptions"] = dict(_FLAG_DESCRIPTIONS)
    out.meta["photoz_ood_threshold"] = float(ood_threshold)
    out.meta["photoz_model"] = {"name": package.name, "version": package.version, "sha256": package.sha256}
    return out
