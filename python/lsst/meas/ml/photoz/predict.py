"""From a model package and a table of fluxes to the photo-z catalog.

`predict_photoz` returns an `astropy.table.Table` with the photo-z columns
and the PDF bin edges and flag definitions in its ``meta``.
`EstimatePhotozTask.run` calls it through `predict_photoz_chunked` (an
in-memory table, predicted ``chunk_size`` rows at a time) and ``meas-ml
predict photoz`` through `predict_photoz_chunks` (a stream of row chunks
read from a file and written out as they come).

Chunked and whole-table predictions are identical bit for bit, provided the
network runs with the same forward batch size: the float32 result of a
forward pass depends (at the last-bit level) on the shape of the batch the
BLAS kernels see, so the chunked paths make every chunk a multiple of that
batch size (`chunk_rows`), which reproduces the whole-table batching.
Everything else is computed row by row, except the DUPLICATE_ID flag, which
needs every id of the input: the chunked paths take it from
`DuplicateIds`, built once from the id column alone.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import astropy.units as u
import numpy as np
import torch
from astropy.table import Column, Table

from ..flags import DescribedFlag
from ..packages import ModelPackage, PackageError, default_package_path
from ..packages import default_package as shipped_package
from .features import PhotozColumns, column_names, column_values, missing_mask, row_count
from .pdf import DEFAULT_COMPACT_LEVELS, compact_quantiles, summarize_pdf

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PACKAGE_PATH",
    "PDF_FORMATS",
    "DuplicateIds",
    "PhotozFlag",
    "chunk_rows",
    "columns_for_package",
    "default_package",
    "forward_batch_size",
    "object_ids",
    "predict_photoz",
    "predict_photoz_chunked",
    "predict_photoz_chunks",
    "predict_photoz_file",
]

#: The package shipped with meas_ml: trained by `lsst.meas.ml.photoz.train` on
#: the DESC cosmoDC2 training file of RAIL (ugrizy, 10,225 galaxies).
DEFAULT_PACKAGE_PATH = default_package_path("photoz")

#: How PDFs are stored: the full float32 bin vector, float16 quantiles, or both.
PDF_FORMATS = ("full", "quantiles", "both")

#: Rows predicted at a time by the chunked paths (rounded to a multiple of the
#: forward batch size, see `chunk_rows`: 4 batches of 8192 on a CPU).  The
#: temporaries of one chunk (float32 PDFs from the engine, float64 copies in
#: `summarize_pdf` and `pdf_quantiles`, the Arrow conversion) are about 7 kB
#: per row with the 150-bin default package, and the allocator keeps some of
#: them: measured, the peak resident memory lies about 0.5 GB above that of
#: the imports (about 1 GB with torch), whatever the number of rows.
DEFAULT_CHUNK_SIZE = 32768

_log = logging.getLogger(__name__)


class PhotozFlag(DescribedFlag):
    """Bits of the ``photoz_flags`` column, with their descriptions."""

    NO_DATA = 1, "no usable band; estimates are NaN"
    MISSING_BAND = 2, "at least one band has no usable flux (NaN, or a non-positive error)"
    OUT_OF_DISTRIBUTION = 4, "OOD score above threshold: unlike the training set; needs a slower analysis"
    AT_Z_MAX = 8, "more than 5% of the probability in the last redshift bin: the redshift may lie beyond"
    DUPLICATE_ID = (
        16,
        (
            "the object id occurs on more than one input row (every such row is flagged); the rows are "
            "estimated independently, but joins on the id are ambiguous"
        ),
    )


def default_package() -> ModelPackage:
    """Load the default photo-z package shipped in ``lsst/meas/ml/data``.

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The shipped package.

    Raises
    ------
    PackageError
        When this installation lacks it.
    """
    return shipped_package("photoz")


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
    """Return the column names for a package, checking the configured bands against it.

    Unset names default to the ones the package was trained with.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A photo-z package.
    bands : `~collections.abc.Sequence` [`str`] or `None`, optional
        Configured bands; must equal the package's if given.  `None` takes
        the package's.
    flux_template : `str` or `None`, optional
        Flux column template; `None` (or empty) for the package's (else
        ``{band}_cModelFlux``).
    flux_err_template : `str` or `None`, optional
        Flux-error column template; `None` (or empty) for the package's
        (else ``{band}_cModelFluxErr``).
    ebv_column : `str` or `None`, optional
        E(B-V) column; `None` for the package's (if any).
    id_column : `str`, optional
        Object identifier column.
    missing_band : `str`, optional
        ``"error"`` or ``"missing"`` (see `PhotozColumns`).

    Returns
    -------
    columns : `~lsst.meas.ml.photoz.features.PhotozColumns`
        The columns, with the package's bands.

    Raises
    ------
    PackageError
        If the package is not a photo-z package or was trained on other
        bands than ``bands``.
    PhotozInputError
        If the resulting columns are invalid (e.g. a template without
        ``{band}``, or an unknown ``missing_band``).
    """
    package.check_family("photoz", purpose="photo-z")
    trained = list(package.inputs.get("bands", []))
    if bands is not None and list(bands) != trained:
        raise PackageError(
            f"Model package {package.name!r} version {package.version} was trained on bands {trained}, but "
            f"the input is configured with bands {list(bands)}. Use a package trained on these bands "
            f"(meas-ml train photoz --bands {','.join(bands)}) or configure bands={trained} (missing ones "
            "may be treated as not observed with the missing-band mode)."
        )
    return PhotozColumns(
        bands=tuple(trained),
        flux_template=flux_template or package.inputs.get("flux_template", "{band}_cModelFlux"),
        flux_err_template=(
            flux_err_template or package.inputs.get("flux_err_template", "{band}_cModelFluxErr")
        ),
        ebv_column=ebv_column if ebv_column is not None else package.inputs.get("ebv_column"),
        id_column=id_column,
        missing_band=missing_band,
    )


def _duplicated(ids: np.ndarray) -> np.ndarray:
    """Flag every row whose id occurs on more than one row (boolean array)."""
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


class DuplicateIds:
    """The object ids that occur on more than one row of a whole input.

    Built once from the id column of the whole input (the chunked paths read
    that column alone), then asked per chunk which rows carry such an id, so
    that `PhotozFlag.DUPLICATE_ID` is set on exactly the rows the
    whole-table path flags, wherever the repeats fall.  Memory: a sorted copy
    of the ids while building (8 bytes per row for 64-bit ids, released
    afterwards); only the repeated values are kept.

    Parameters
    ----------
    ids : `numpy.ndarray`
        Every object id of the input, as `object_ids` returns them.
    """

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        self.n_rows = int(ids.size)
        self._set: set[Any] | None = None
        try:
            ordered = np.sort(ids, kind="stable")
            same = ordered[1:] == ordered[:-1]
            self.values = np.unique(ordered[1:][same])
            del ordered, same
        except TypeError:  # object ids that do not sort (mixed types)
            seen: dict[Any, int] = {}
            for key in ids.tolist():
                seen[key] = seen.get(key, 0) + 1
            self._set = {key for key, count in seen.items() if count > 1}
            self.values = np.array(sorted(self._set, key=repr), dtype=object)

    def __len__(self) -> int:
        """Return the number of distinct repeated ids."""
        return int(self.values.size)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """Return True on every row of ``ids`` whose id is repeated in the whole input.

        Parameters
        ----------
        ids : `numpy.ndarray`
            Object ids of some rows (a chunk), as `object_ids` returns them.

        Returns
        -------
        mask : `numpy.ndarray` [`bool`]
            One value per element of ``ids``.
        """
        ids = np.asarray(ids)
        if not len(self) or ids.size == 0:
            return np.zeros(ids.size, dtype=bool)
        if self._set is None:
            try:
                return np.isin(ids, self.values)
            except TypeError:
                self._set = set(self.values.tolist())
        return np.array([key in self._set for key in ids.tolist()], dtype=bool)


def object_ids(table: Any, columns: PhotozColumns, *, row_offset: int = 0) -> np.ndarray:
    """Return the ``id_column`` of ``table`` as `predict_photoz` writes it.

    Float ids become int64; a table without the column gets its row index
    (plus ``row_offset``: the position of the chunk in the whole input).

    Parameters
    ----------
    table : `~typing.Any`
        An astropy, pandas or pyarrow table, or a mapping of arrays.
    columns : `~lsst.meas.ml.photoz.features.PhotozColumns`
        Columns; ``columns.id_column`` is read.
    row_offset : `int`, optional
        Index in the whole input of the first row of ``table``.

    Returns
    -------
    ids : `numpy.ndarray`
        One id per row.
    """
    if columns.id_column in column_names(table):
        ids = column_values(table, columns.id_column, dtype=None)
    else:
        n = row_count(table)
        ids = np.arange(row_offset, row_offset + n, dtype=np.int64)
    if ids.dtype.kind == "f" or (ids.size == 0 and ids.dtype.kind == "O"):
        ids = ids.astype(np.int64)
    return ids


def forward_batch_size(engine: Any, package: ModelPackage, columns: PhotozColumns) -> int:
    """Return the forward batch size ``engine`` uses for ``package`` on inputs of ``columns``.

    ``config.batchSize`` if set, else the engine's automatic choice for one
    row of ``columns.n_inputs`` floats (on a CPU 8192 rows for the photo-z
    packages, whatever the number of rows: the whole-table path uses
    ``min(8192, n)``).

    Parameters
    ----------
    engine : `~lsst.meas.ml.engine.InferenceEngine`
        The engine that will run the model.
    package : `~lsst.meas.ml.packages.ModelPackage`
        The photo-z package.
    columns : `~lsst.meas.ml.photoz.features.PhotozColumns`
        Input columns (their number sets the row size).

    Returns
    -------
    batch_size : `int`
        Rows per forward pass.
    """
    return engine.batch_size_for(package, np.zeros((16, columns.n_inputs), dtype=np.float32))


def chunk_rows(chunk_size: int, batch_size: int) -> tuple[int, int]:
    """Return the chunk and forward batch sizes that reproduce the whole-table batching.

    Returns ``(chunk, batch)``: ``chunk_size`` rounded down to a multiple of
    ``batch_size`` (so every chunk but the last holds whole batches, and
    batches start at the same rows as in one whole-table call); a
    ``chunk_size`` below ``batch_size`` lowers the batch to the chunk
    instead (bounded memory first: the results then equal those of a
    whole-table call with that batch size).

    Parameters
    ----------
    chunk_size : `int`
        Requested rows per chunk.
    batch_size : `int`
        Forward batch size of the engine.

    Returns
    -------
    chunk : `int`
        Rows per chunk.
    batch : `int`
        Forward batch size to use.

    Raises
    ------
    ValueError
        If either size is below 1.
    """
    chunk_size, batch_size = int(chunk_size), int(batch_size)
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk and batch sizes must be positive, got {chunk_size} and {batch_size}.")
    if chunk_size <= batch_size:
        return chunk_size, chunk_size
    return chunk_size - chunk_size % batch_size, batch_size


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
    batch_size: int | None = None,
    duplicate_ids: DuplicateIds | None = None,
    row_offset: int = 0,
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
    batch_size : `int`, optional
        Forward batch size (default: the engine's).
    duplicate_ids : `DuplicateIds`, optional
        For a chunk of a larger input: the ids repeated anywhere in that
        input (the rows carrying them are flagged DUPLICATE_ID and nothing is
        logged; the caller reports the total).  Default: repeats within
        ``table``, logged as a warning.
    row_offset : `int`
        For a chunk: its first row's index in the whole input (the ids of a
        table without an id column are row indices).

    Returns
    -------
    catalog : `astropy.table.Table`
        ``objectId`` (or ``columns.id_column``), ``photoz_mean``,
        ``photoz_mode``, ``photoz_median``, ``photoz_std``,
        ``photoz_lo68``, ``photoz_hi68``, the PDF column(s),
        ``photoz_ood_score`` and ``photoz_flags``; ``meta`` holds
        ``photoz_bin_edges``, ``photoz_quantile_levels``, the flag bits and
        the package's name, version and checksum.

    Raises
    ------
    ValueError
        If ``pdf_format`` is not one of `PDF_FORMATS`.
    PackageError
        If the package is not a photo-z ``mbrnn`` package or was trained
        on other bands than ``columns.bands``.
    PhotozInputError
        If the table lacks an input column (see `PhotozColumns.extract`)
        or an input column is not numeric.
    """
    from ..engine import InferenceEngine

    if pdf_format not in PDF_FORMATS:
        raise ValueError(f"pdf_format must be one of {PDF_FORMATS}, got {pdf_format!r}.")
    if columns is None:
        columns = columns_for_package(package)
    else:
        columns_for_package(package, bands=columns.bands)
    if package.architecture != "mbrnn":
        raise PackageError(
            f"Photo-z package {package.name!r} has architecture {package.architecture!r}, not 'mbrnn'."
        )
    inputs = columns.extract(table)
    engine = engine or InferenceEngine()
    pdf, ood = engine.predict(package, inputs, batch_size=batch_size)
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

    ids = object_ids(table, columns, row_offset=row_offset)
    if duplicate_ids is not None:
        flags[duplicate_ids.mask(ids)] |= PhotozFlag.DUPLICATE_ID
    elif columns.id_column in column_names(table):
        duplicated = _duplicated(ids)
        if duplicated.any():
            flags[duplicated] |= PhotozFlag.DUPLICATE_ID
            _log.warning(
                "%d of %d input rows share an object id (%r) with another row (%d distinct ids repeated); "
                "they are estimated independently and flagged DUPLICATE_ID (%d) in photoz_flags.",
                int(duplicated.sum()),
                n,
                columns.id_column,
                len(set(ids[duplicated].tolist())),
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
        out[f"photoz_{key}"] = Column(
            summary[key].astype(np.float32), unit=u.dimensionless_unscaled, description=doc
        )
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
            extra["photoz_pdf"],
            unit=u.dimensionless_unscaled,
            description="Probability in each redshift bin (edges in meta['photoz_bin_edges']).",
        )
    if "photoz_pdf_quantiles" in extra:
        out["photoz_pdf_quantiles"] = Column(
            extra["photoz_pdf_quantiles"],
            unit=u.dimensionless_unscaled,
            description="Redshift quantiles (float16) at the levels in meta['photoz_quantile_levels'].",
        )
    out["photoz_ood_score"] = Column(
        ood,
        unit=u.dimensionless_unscaled,
        description="Out-of-distribution score: Mahalanobis distance of the network embedding from the "
        "training set, in units of its training 99th percentile.",
    )
    out["photoz_flags"] = Column(
        flags, description="Bit flags: " + "; ".join(f"{int(f)}={f.name}" for f in PhotozFlag)
    )
    out.meta["photoz_bin_edges"] = [float(e) for e in edges]
    out.meta["photoz_quantile_levels"] = levels if pdf_format != "full" else []
    out.meta["photoz_flag_bits"] = PhotozFlag.bits()
    out.meta["photoz_flag_descriptions"] = PhotozFlag.descriptions()
    out.meta["photoz_ood_threshold"] = float(ood_threshold)
    out.meta.update(package.provenance_metadata())
    return out


def _log_duplicates(n_flagged: int, n: int, id_column: str, n_distinct: int) -> None:
    _log.warning(
        "%d of %d input rows share an object id (%r) with another row (%d distinct ids repeated); "
        "they are estimated independently and flagged DUPLICATE_ID (%d) in photoz_flags.",
        n_flagged,
        n,
        id_column,
        n_distinct,
        int(PhotozFlag.DUPLICATE_ID),
    )


def _slice_rows(table: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of an astropy, Arrow or pandas table or a dict of arrays (views where possible)."""
    if hasattr(table, "colnames"):  # astropy
        return table[start:stop]
    if hasattr(table, "num_rows") and hasattr(table, "slice"):  # pyarrow Table / RecordBatch
        return table.slice(start, stop - start)
    if hasattr(table, "iloc"):  # pandas
        return table.iloc[start:stop]
    if isinstance(table, Mapping):
        return {key: value[start:stop] for key, value in table.items()}
    return table[start:stop]


def predict_photoz_chunks(
    package: ModelPackage,
    chunks: Iterable[Any],
    columns: PhotozColumns | None = None,
    *,
    engine: Any = None,
    pdf_format: str = "full",
    compact_levels: Sequence[float] = DEFAULT_COMPACT_LEVELS,
    ood_threshold: float = 1.0,
    batch_size: int | None = None,
    duplicate_ids: DuplicateIds | None = None,
) -> Iterator[Table]:
    """Run `predict_photoz` on each table of a stream of row chunks, as they come.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        As for `predict_photoz`.
    chunks : `~collections.abc.Iterable` [table-like]
        Consecutive row chunks of one input.  For outputs identical to one
        `predict_photoz` call on the whole input, every chunk but the last
        holds a multiple of ``batch_size`` rows (see `chunk_rows`).
    columns : `PhotozColumns`, optional
        As for `predict_photoz`.
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        As for `predict_photoz`; one engine serves every chunk.
    pdf_format : `str`, optional
        As for `predict_photoz`.
    compact_levels : `~collections.abc.Sequence` [`float`], optional
        As for `predict_photoz`.
    ood_threshold : `float`, optional
        As for `predict_photoz`.
    batch_size : `int`, optional
        Forward batch size (default: `forward_batch_size`).
    duplicate_ids : `DuplicateIds`, optional
        The ids repeated in the whole input (`DuplicateIds` of its id
        column); flagged rows are then counted and logged once at the end.
        Default: each chunk is checked on its own, as `predict_photoz`
        does (only repeats within a chunk are flagged, and each such chunk
        logs its own warning).

    Yields
    ------
    catalog : `astropy.table.Table`
        The catalog of each chunk, with identical columns, units and
        ``meta``; ids of an input without an id column are row indices in
        the whole input.
    """
    from ..engine import InferenceEngine

    if columns is None:
        columns = columns_for_package(package)
    engine = engine or InferenceEngine()
    if not batch_size:
        batch_size = forward_batch_size(engine, package, columns)
    offset = n_flagged = 0
    for chunk in chunks:
        out = predict_photoz(
            package,
            chunk,
            columns,
            engine=engine,
            pdf_format=pdf_format,
            compact_levels=compact_levels,
            ood_threshold=ood_threshold,
            batch_size=batch_size,
            duplicate_ids=duplicate_ids,
            row_offset=offset,
        )
        offset += len(out)
        if duplicate_ids is not None:
            n_flagged += int(((np.asarray(out["photoz_flags"]) & PhotozFlag.DUPLICATE_ID) != 0).sum())
        yield out
    if n_flagged:
        _log_duplicates(n_flagged, offset, columns.id_column, len(duplicate_ids))


def predict_photoz_chunked(
    package: ModelPackage,
    table: Any,
    columns: PhotozColumns | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: Any = None,
    pdf_format: str = "full",
    compact_levels: Sequence[float] = DEFAULT_COMPACT_LEVELS,
    ood_threshold: float = 1.0,
) -> Table:
    """Run `predict_photoz` on an in-memory table, ``chunk_size`` rows at a time.

    The result is identical to ``predict_photoz(package, table, ...)`` (same
    engine), but the temporaries of the prediction (PDFs in float32 and
    float64, about 5 kB per row with 150 bins) exist for one chunk at a time:
    memory is the input table, the output catalog (preallocated once and
    filled chunk by chunk: 40 bytes per row plus 4 per PDF bin with
    ``pdf_format="full"``, 2 per quantile with ``"quantiles"``), the ids
    (8 bytes per row) and one chunk's temporaries.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        As for `predict_photoz`.
    table : table-like
        As for `predict_photoz`.
    columns : `PhotozColumns`, optional
        As for `predict_photoz`.
    chunk_size : `int`, optional
        Rows per chunk (rounded by `chunk_rows` to a multiple of the forward
        batch size).
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        As for `predict_photoz`.
    pdf_format : `str`, optional
        As for `predict_photoz`.
    compact_levels : `~collections.abc.Sequence` [`float`], optional
        As for `predict_photoz`.
    ood_threshold : `float`, optional
        As for `predict_photoz`.

    Returns
    -------
    catalog : `astropy.table.Table`
        As `predict_photoz` returns it; DUPLICATE_ID flags repeats anywhere
        in ``table``, logged once.

    Raises
    ------
    ValueError
        If ``chunk_size`` is below 1 or ``pdf_format`` is not valid.
    PackageError
        As for `predict_photoz`.
    PhotozInputError
        As for `predict_photoz`.
    """
    from ..engine import InferenceEngine

    if columns is None:
        columns = columns_for_package(package)
    engine = engine or InferenceEngine()
    chunk, batch = chunk_rows(chunk_size, forward_batch_size(engine, package, columns))
    kwargs = {
        "engine": engine,
        "pdf_format": pdf_format,
        "compact_levels": compact_levels,
        "ood_threshold": ood_threshold,
    }
    n = row_count(table)
    if n <= chunk:
        return predict_photoz(package, table, columns, batch_size=batch, **kwargs)
    ids = object_ids(table, columns)
    duplicates = DuplicateIds(ids) if columns.id_column in column_names(table) else None
    result: Table | None = None
    n_flagged = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        part = predict_photoz(
            package,
            _slice_rows(table, start, stop),
            columns,
            batch_size=batch,
            duplicate_ids=duplicates,
            row_offset=start,
            **kwargs,
        )
        if result is None:
            result = Table(meta=part.meta)
            for name in part.colnames:
                col = part[name]
                data = ids if name == columns.id_column else np.empty((n,) + col.shape[1:], dtype=col.dtype)
                result[name] = Column(data, unit=col.unit, description=col.description, copy=False)
        for name in part.colnames:
            if name != columns.id_column:
                result[name][start:stop] = part[name]
        n_flagged += int(((np.asarray(part["photoz_flags"]) & PhotozFlag.DUPLICATE_ID) != 0).sum())
        del part
    if n_flagged:
        _log_duplicates(n_flagged, n, columns.id_column, len(duplicates))
    assert result is not None
    return result


def predict_photoz_file(
    package: ModelPackage,
    input_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    columns: PhotozColumns | None = None,
    *,
    read_columns: Sequence[str] | None = None,
    transform: Callable[[Table], Any] | None = None,
    group: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: Any = None,
    pdf_format: str = "full",
    compact_levels: Sequence[float] = DEFAULT_COMPACT_LEVELS,
    ood_threshold: float = 1.0,
) -> dict[str, Any]:
    """Write the photo-z catalog of a table file, streamed: what ``meas-ml predict photoz`` runs.

    The input is read in chunks of the needed columns (`TableChunks`), each
    chunk is predicted (`predict_photoz_chunks`) and appended to the output
    (`write_table_stream`), so memory does not grow with the number of rows:
    one chunk's inputs, predictions and temporaries (about 5 kB per row
    with 150 bins), plus the object ids while the repeated ones are found
    (8 bytes per row, released before predicting; only the repeated ids are
    kept).  Inputs that cannot be streamed (see `TableChunks`) are read
    whole, and only the prediction is chunked.

    The output reads back exactly as `write_table` of ``predict_photoz`` on
    the whole input with the same forward batch size would (the chunk size
    is made a multiple of it, see `chunk_rows`), and is written atomically:
    on any error ``out_path`` is left as it was.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        A ``photoz`` package.
    input_path : path-like
        Parquet, CSV or HDF5 input.
    out_path : path-like
        Parquet output.
    columns : `PhotozColumns`, optional
        Columns of the tables given to `predict_photoz` (after
        ``transform``); default: the package's.
    read_columns : sequence of `str`, optional
        Columns to read from the file (default: ``columns.columns()``).
    transform : callable, optional
        Applied to each chunk before the prediction (a row-by-row conversion,
        e.g. `~lsst.meas.ml.photoz.features.flux_table_from_magnitudes`).
    group : `str`, optional
        HDF5 group.
    chunk_size : `int`
        Rows per chunk (rounded, see `chunk_rows`).
    engine : `~lsst.meas.ml.engine.InferenceEngine`, optional
        As for `predict_photoz`.
    pdf_format : `str`
        As for `predict_photoz`.
    compact_levels : sequence of `float`
        As for `predict_photoz`.
    ood_threshold : `float`
        As for `predict_photoz`.

    Returns
    -------
    summary : `dict`
        ``rows``, ``out_of_distribution`` (rows flagged), ``chunk_size`` and
        ``batch_size`` used, ``streamed`` and ``reader`` (how the input was
        read).

    Raises
    ------
    ValueError
        If ``pdf_format`` is not one of `PDF_FORMATS` or ``chunk_size`` is
        below 1.
    PackageError
        As for `predict_photoz`.
    PhotozInputError
        As for `predict_photoz`.
    """
    from ..engine import InferenceEngine
    from .tables import TableChunks, write_table_stream

    if pdf_format not in PDF_FORMATS:
        raise ValueError(f"pdf_format must be one of {PDF_FORMATS}, got {pdf_format!r}.")
    if columns is None:
        columns = columns_for_package(package)
    engine = engine or InferenceEngine()
    chunk, batch = chunk_rows(chunk_size, forward_batch_size(engine, package, columns))
    wanted = list(read_columns) if read_columns is not None else columns.columns()
    float_columns = [c for c in wanted if c != columns.id_column]
    reader = TableChunks(input_path, wanted, chunk_size=chunk, group=group, float_columns=float_columns)
    _log.info("Reading %s: %s, %d rows per chunk.", os.fspath(input_path), reader.note, chunk)

    duplicates = None
    string_lengths: dict[str, int] = {}
    if columns.id_column in reader.available:
        ids = object_ids(reader.read_columns([columns.id_column]), columns)
        duplicates = DuplicateIds(ids)
        if ids.dtype.kind in "US":
            string_lengths[columns.id_column] = ids.dtype.itemsize // (4 if ids.dtype.kind == "U" else 1)
        del ids
    n_rows = reader.n_rows

    n_ood = 0

    def catalogs() -> Iterator[Table]:
        nonlocal n_ood
        tables = reader if transform is None else (transform(t) for t in reader)
        for out in predict_photoz_chunks(
            package,
            tables,
            columns,
            engine=engine,
            pdf_format=pdf_format,
            compact_levels=compact_levels,
            ood_threshold=ood_threshold,
            batch_size=batch,
            duplicate_ids=duplicates,
        ):
            n_ood += int(((np.asarray(out["photoz_flags"]) & PhotozFlag.OUT_OF_DISTRIBUTION) != 0).sum())
            yield out
            del out
            # The Arrow <-> astropy conversions leave reference cycles (astropy tables and their
            # ``info``) that hold a chunk's arrays; Python's collector frees them only after several
            # chunks, so memory would grow with the number of rows.  Collect after each chunk.
            gc.collect()

    # Objects alive now (modules, the model) are left out of those collections, which then cost
    # milliseconds instead of a traversal of every object of the process.
    gc.freeze()
    try:
        rows = write_table_stream(catalogs(), out_path, n_rows=n_rows, string_lengths=string_lengths)
    finally:
        gc.unfreeze()
    return {
        "rows": rows,
        "out_of_distribution": n_ood,
        "chunk_size": chunk,
        "batch_size": batch,
        "streamed": reader.streaming,
        "reader": reader.note,
    }
