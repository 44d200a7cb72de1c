"""Photometric-redshift inputs: flux columns of a table and the features built from them.

Two steps, kept apart so the model package is self-contained:

1. `PhotozColumns.extract` reads fluxes and flux errors (nJy) and,
   optionally, E(B-V) from any table (astropy, pandas, pyarrow or a dict of
   arrays) into one float32 array laid out as
   ``[flux_1 .. flux_B, fluxErr_1 .. fluxErr_B (, ebv)]``.  Rows are never
   dropped: NaN, zero and negative fluxes pass through unchanged.
2. `flux_features` (used inside the network, so packages need nothing but
   that raw array) turns them into asinh magnitudes, colours (adjacent or all pairs),
   log magnitude errors and a missing-band indicator per band.  Asinh
   magnitudes (Lupton, Gunn & Szalay 1999) are finite for zero and negative
   fluxes; a band whose flux or error is NaN, infinite, or whose error is not
   positive is *missing*: its magnitude is set to the softening limit, its
   error to a large value and its indicator to one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import MeasMlUserError
from ..models.photoz_features import (
    COLOUR_MODES,
    ZEROPOINT_NJY,
    asinh_magnitude,
    flux_features,
    missing_mask,
    n_features,
)

__all__ = [
    "COLOUR_MODES",
    "DEFAULT_BANDS",
    "DEFAULT_FLUX_ERR_TEMPLATE",
    "DEFAULT_FLUX_TEMPLATE",
    "FeatureError",
    "MISSING_BAND_MODES",
    "PhotozColumns",
    "PhotozInputError",
    "ZEROPOINT_NJY",
    "asinh_magnitude",
    "column_names",
    "column_values",
    "flux_features",
    "flux_table_from_magnitudes",
    "magnitudes_to_fluxes",
    "missing_mask",
    "n_features",
    "row_count",
]

#: Bands used when none are given.
DEFAULT_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
#: Column-name templates of Rubin object tables.
DEFAULT_FLUX_TEMPLATE = "{band}_cModelFlux"
DEFAULT_FLUX_ERR_TEMPLATE = "{band}_cModelFluxErr"
#: What to do when a band's columns are absent from a table.
MISSING_BAND_MODES = ("error", "missing")

_POGSON = 2.5 / math.log(10.0)


class FeatureError(MeasMlUserError, ValueError):
    """Base of the photo-z input errors reported to users without a traceback."""


class PhotozInputError(FeatureError):
    """Raised for a table that lacks the columns a photo-z model needs."""


def column_names(table: Any) -> list[str]:
    """Return the column names of any table (astropy, pandas, pyarrow, mapping).

    Parameters
    ----------
    table : table-like
        The table.

    Returns
    -------
    names : `list` [`str`]
        Its column names.
    """
    if hasattr(table, "colnames"):  # astropy
        return list(table.colnames)
    if hasattr(table, "column_names"):  # pyarrow
        return list(table.column_names)
    if hasattr(table, "columns"):  # pandas
        return [str(c) for c in table.columns]
    if isinstance(table, Mapping):
        return list(table.keys())
    raise TypeError(
        f"Cannot read columns from a {type(table).__name__}; pass an astropy, pandas or Arrow table."
    )


def _column_type(table: Any, name: str, col: Any) -> str:
    """Return the type of a column as its table describes it (Arrow type, else numpy/pandas dtype)."""
    schema = getattr(table, "schema", None)
    if schema is not None and hasattr(schema, "field"):  # pyarrow
        try:
            return str(schema.field(name).type)
        except (KeyError, TypeError):
            pass
    dtype = getattr(col, "dtype", None)
    if dtype is None:
        return type(col).__name__
    kind = getattr(dtype, "kind", "")
    words = {"U": "string", "S": "bytes", "O": "object", "M": "datetime", "m": "timedelta"}
    return f"{words[kind]} ({dtype})" if kind in words else str(dtype)


def _is_missing(value: Any) -> bool:
    """Return whether ``value`` is None, a masked value or pandas' NA: a missing number, not a wrong type."""
    return value is None or value is np.ma.masked or type(value).__name__ == "NAType"


def _numeric_or_none(values: np.ndarray) -> tuple[np.ndarray | None, list[Any]]:
    """Convert an object array to float64 (missing -> NaN), else return `None` and up to three non-numbers."""
    import numbers

    bad = []
    out = []
    for value in values.reshape(-1).tolist():
        if _is_missing(value):
            out.append(np.nan)
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            bad.append(value)
            if len(bad) == 3:
                return None, bad
        else:
            out.append(value)
    if bad:
        return None, bad
    return np.asarray(out, dtype=np.float64).reshape(values.shape), []


def column_values(table: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Return column ``name`` of any table as a numpy array of ``dtype``.

    Parameters
    ----------
    table : table-like
        Astropy, pandas, pyarrow table or a mapping of arrays.
    name : `str`
        Column name.
    dtype : `numpy.dtype`, optional
        Type of the returned array.

    Returns
    -------
    values : `numpy.ndarray`
        The column; masked values become NaN.

    Raises
    ------
    PhotozInputError
        For a numeric ``dtype``, if the column does not hold numbers
        (strings, bytes, dates, Python objects): the message names the
        column, its type and some of the offending values.
    """
    original = table[name]
    col = original
    if hasattr(col, "to_numpy") and not isinstance(col, np.ndarray):
        try:
            col = col.to_numpy(zero_copy_only=False)  # pyarrow
        except TypeError:
            col = col.to_numpy()  # pandas
    if dtype is None:
        return np.asarray(col)
    if np.dtype(dtype).kind in "iuf":
        kind = np.asarray(col).dtype.kind
        bad: list[Any] = []
        if kind == "O":  # Python objects: numbers and missing values only
            converted, bad = _numeric_or_none(np.asarray(col, dtype=object))
            if converted is not None:
                col = converted
        elif kind not in "biuf":  # strings, bytes, dates, ...
            bad = np.asarray(col).reshape(-1)[:3].tolist() or [None]
        if bad:
            examples = [v for v in bad if v is not None]
            raise PhotozInputError(
                f"Column {name!r} must hold numbers but has type {_column_type(table, name, original)}"
                + (f" (values such as {examples!r})" if examples else "")
                + ". Fluxes, flux errors, magnitudes and E(B-V) must be numeric columns; convert the "
                "column, or check --flux-template/--flux-err-template and --magnitudes."
            )
    if hasattr(col, "filled"):  # masked astropy column
        col = col.astype(dtype).filled(np.nan)
    return np.asarray(col, dtype=dtype)


def row_count(table: Any) -> int:
    """Return the number of rows of any table (astropy, pandas, pyarrow, mapping).

    Parameters
    ----------
    table : table-like
        The table.

    Returns
    -------
    n : `int`
        Number of rows.
    """
    if hasattr(table, "num_rows"):
        return int(table.num_rows)
    if isinstance(table, Mapping):
        return len(next(iter(table.values()))) if table else 0
    return len(table)


@dataclasses.dataclass(frozen=True)
class PhotozColumns:
    """Names of the table columns a photo-z model reads.

    Attributes
    ----------
    bands : `tuple` [`str`]
        Bands in wavelength order (colours are taken between neighbours).
    flux_template, flux_err_template : `str`
        Column-name templates with a ``{band}`` field; fluxes in nJy.
    ebv_column : `str`, optional
        Column of Galactic E(B-V); `None` for no extinction feature.
    id_column : `str`
        Object identifier column.
    missing_band : `str`
        ``"error"`` (default): a band whose columns are absent raises
        `PhotozInputError` naming them.  ``"missing"``: such a band is
        treated as not observed for every row (NaN flux) and flagged.
    """

    bands: tuple[str, ...] = DEFAULT_BANDS
    flux_template: str = DEFAULT_FLUX_TEMPLATE
    flux_err_template: str = DEFAULT_FLUX_ERR_TEMPLATE
    ebv_column: str | None = None
    id_column: str = "objectId"
    missing_band: str = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(self.bands))
        if not self.bands:
            raise PhotozInputError("At least one band is needed.")
        if len(set(self.bands)) != len(self.bands):
            raise PhotozInputError(f"Bands {self.bands} contain duplicates.")
        for template in (self.flux_template, self.flux_err_template):
            if "{band}" not in template:
                raise PhotozInputError(f"Column template {template!r} lacks the '{{band}}' field.")
        if self.missing_band not in MISSING_BAND_MODES:
            raise PhotozInputError(
                f"missing_band must be one of {MISSING_BAND_MODES}, got {self.missing_band!r}."
            )

    @property
    def flux_columns(self) -> list[str]:
        return [self.flux_template.format(band=b) for b in self.bands]

    @property
    def flux_err_columns(self) -> list[str]:
        return [self.flux_err_template.format(band=b) for b in self.bands]

    @property
    def n_inputs(self) -> int:
        """Width of the array `extract` returns."""
        return 2 * len(self.bands) + (1 if self.ebv_column else 0)

    def columns(self, *, with_id: bool = True) -> list[str]:
        """Return all columns to read from a table (for column-selective reads).

        Parameters
        ----------
        with_id : `bool`, optional
            Whether to include `id_column` (first).

        Returns
        -------
        names : `list` [`str`]
            The id column (if ``with_id``), the flux columns, the flux-error
            columns and the E(B-V) column (if any), in that order.
        """
        names = ([self.id_column] if with_id else []) + self.flux_columns + self.flux_err_columns
        if self.ebv_column:
            names.append(self.ebv_column)
        return names

    def absent_bands(self, available: Sequence[str]) -> list[str]:
        """Return the bands whose flux or flux-error column is not in ``available``.

        Parameters
        ----------
        available : `~collections.abc.Sequence` [`str`]
            Column names of a table.

        Returns
        -------
        bands : `list` [`str`]
            The absent bands, in the order of `bands`.
        """
        have = set(available)
        return [
            b
            for b, f, e in zip(self.bands, self.flux_columns, self.flux_err_columns)
            if f not in have or e not in have
        ]

    def extract(self, table: Any) -> np.ndarray:
        """Read the model input array from ``table``.

        Parameters
        ----------
        table : `~typing.Any`
            An astropy, pandas or pyarrow table, or a mapping of column
            names to arrays.

        Returns
        -------
        inputs : `numpy.ndarray`, (N, `n_inputs`), float32
            Fluxes, flux errors (nJy) and E(B-V); absent values are NaN.

        Raises
        ------
        PhotozInputError
            If a band's columns are absent and ``missing_band="error"``, or
            the E(B-V) column is absent, or a column read is not numeric.
        """
        names = column_names(table)
        absent = self.absent_bands(names)
        if absent and self.missing_band == "error":
            missing_cols = [
                c
                for b in absent
                for c in (self.flux_template.format(band=b), self.flux_err_template.format(band=b))
                if c not in names
            ]
            raise PhotozInputError(
                f"The input table lacks the columns {missing_cols} for band(s) {absent}. Check "
                f"--flux-template/--flux-err-template (now {self.flux_template!r}, "
                f"{self.flux_err_template!r}) and --bands, or use the missing-band mode "
                "(--missing-band missing / config missingBand='missing') to treat them as not observed."
            )
        if self.ebv_column and self.ebv_column not in names:
            raise PhotozInputError(
                f"The input table lacks the E(B-V) column {self.ebv_column!r} the model was trained with."
            )
        n = row_count(table)
        out = np.full((n, self.n_inputs), np.nan, dtype=np.float32)
        nb = len(self.bands)
        for k, band in enumerate(self.bands):
            if band in absent:
                continue
            out[:, k] = column_values(table, self.flux_columns[k])
            out[:, nb + k] = column_values(table, self.flux_err_columns[k])
        if self.ebv_column:
            out[:, 2 * nb] = column_values(table, self.ebv_column)
        return out


def magnitudes_to_fluxes(
    mag: np.ndarray,
    mag_err: np.ndarray,
    *,
    zeropoint: float = ZEROPOINT_NJY,
    limit: float = 40.0,
    nondetection_limit_in_error: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert AB magnitudes and errors to fluxes and errors in nJy.

    Parameters
    ----------
    mag, mag_err : `numpy.ndarray`
        Magnitudes and their errors.  Catalogues mark non-detections with a
        magnitude of 99 (anything ``>= limit`` or not finite).
    zeropoint : `float`
        Zero point of the fluxes (31.4 for nJy).
    limit : `float`
        Magnitudes at or above this are non-detections.
    nondetection_limit_in_error : `bool`
        If true, a non-detection whose error column holds a magnitude
        (between 15 and ``limit``, as in the DESC cosmoDC2 test files) becomes
        a measured zero flux with that 1-sigma limit as its error, which keeps
        the information that the object is faint in that band.  Otherwise
        non-detections become NaN, i.e. a missing band.

    Returns
    -------
    flux, flux_err : `numpy.ndarray`
        Fluxes and their errors (float64); NaN where the magnitude is a
        non-detection or its error is not finite or not positive (except
        non-detections with a limit in the error column, as above).
    """
    mag = np.asarray(mag, dtype=np.float64)
    mag_err = np.asarray(mag_err, dtype=np.float64)
    nondet = ~np.isfinite(mag) | (mag >= limit)
    bad = nondet | ~np.isfinite(mag_err) | (mag_err <= 0)
    with np.errstate(invalid="ignore", over="ignore"):
        flux = 10.0 ** ((zeropoint - mag) / 2.5)
        err = flux * mag_err / _POGSON
        flux[bad] = np.nan
        err[bad] = np.nan
        if nondetection_limit_in_error:
            limit_given = nondet & np.isfinite(mag_err) & (mag_err > 15.0) & (mag_err < limit)
            flux[limit_given] = 0.0
            err[limit_given] = 10.0 ** ((zeropoint - mag_err[limit_given]) / 2.5)
    return flux, err


def flux_table_from_magnitudes(
    table: Any,
    bands: Sequence[str],
    mag_template: str,
    mag_err_template: str,
    *,
    flux_template: str = DEFAULT_FLUX_TEMPLATE,
    flux_err_template: str = DEFAULT_FLUX_ERR_TEMPLATE,
    keep: Sequence[str] = (),
) -> Any:
    """Make an astropy table of nJy fluxes from a table of AB magnitudes.

    Non-detections (magnitude 99) whose error column holds a limiting
    magnitude become zero fluxes with that limit as 1-sigma error (see
    `magnitudes_to_fluxes`); columns named in ``keep`` are copied.

    Parameters
    ----------
    table : `~typing.Any`
        An astropy, pandas or pyarrow table, or a mapping of column names
        to arrays, holding the magnitudes.
    bands : `~collections.abc.Sequence` [`str`]
        Bands to convert.
    mag_template, mag_err_template : `str`
        Templates (with a ``{band}`` field) of the magnitude and
        magnitude-error columns.
    flux_template, flux_err_template : `str`, optional
        Templates of the flux and flux-error columns to write.
    keep : `~collections.abc.Sequence` [`str`], optional
        Columns copied unchanged, first, when ``table`` has them (absent
        ones are skipped).

    Returns
    -------
    fluxes : `astropy.table.Table`
        The kept columns, then a flux and a flux-error column per band.

    Raises
    ------
    PhotozInputError
        If a band's magnitude or magnitude-error column is absent, or a
        magnitude column is not numeric.
    """
    from astropy.table import Table

    names = column_names(table)
    out = Table()
    for name in keep:
        if name in names:
            out[name] = column_values(table, name, dtype=None)
    for band in bands:
        m_col, e_col = mag_template.format(band=band), mag_err_template.format(band=band)
        if m_col not in names or e_col not in names:
            raise PhotozInputError(
                "The input table lacks the magnitude columns "
                f"{[c for c in (m_col, e_col) if c not in names]} "
                f"for band {band!r}; check --flux-template/--flux-err-template and --bands."
            )
        flux, err = magnitudes_to_fluxes(
            column_values(table, m_col), column_values(table, e_col), nondetection_limit_in_error=True
        )
        out[flux_template.format(band=band)] = flux
        out[flux_err_template.format(band=band)] = err
    return out
