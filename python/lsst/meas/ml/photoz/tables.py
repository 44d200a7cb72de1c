"""Reading input tables and writing photo-z catalogs outside the Butler.

Inputs may be Parquet, CSV or HDF5.  HDF5 files are read either as an
astropy table, or as a group of equal-length one-dimensional datasets (the
layout of the DESC/RAIL cosmoDC2 files: ``/photometry/mag_u_lsst`` ...).
Catalogs are written as Parquet through the same Arrow conversion the
Butler's ``ArrowAstropy`` storage class uses, so a file written here and a
dataset written by `EstimatePhotozTask` have the same schema.
"""

from __future__ import annotations

import os

from astropy.table import Table

from ..fileio import atomic_output
from .features import FeatureError

__all__ = ["TableReadError", "read_table", "write_table"]


class TableReadError(FeatureError):
    """Raised for a table file that cannot be read."""


def _read_hdf5(path: str, group: str | None) -> Table:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a project dependency
        raise TableReadError(f"Reading {path} needs h5py: pip install h5py.") from exc

    with h5py.File(path, "r") as fh:
        candidates = [fh[group]] if group else [fh] + [fh[k] for k in fh if isinstance(fh[k], h5py.Group)]
        for grp in candidates:
            datasets = {k: v for k, v in grp.items() if isinstance(v, h5py.Dataset) and v.ndim == 1}
            lengths = {v.shape[0] for v in datasets.values()}
            if datasets and len(lengths) == 1 and not any(v.dtype.names for v in datasets.values()):
                return Table({k: v[:] for k, v in datasets.items()})
    try:
        return Table.read(path, path=group) if group else Table.read(path)
    except Exception as exc:
        raise TableReadError(
            f"Cannot read a table from HDF5 file {path}: it holds neither a group of equal-length 1-d "
            f"datasets nor an astropy table ({exc})."
        ) from exc


def read_table(path: str | os.PathLike[str], *, columns: list[str] | None = None, group: str | None = None) -> Table:
    """Read a Parquet, CSV or HDF5 file into an `astropy.table.Table`.

    Parameters
    ----------
    path : path-like
        The file; the format comes from the extension (``.parquet``/``.pq``,
        ``.csv``, ``.h5``/``.hdf5``/``.hdf``).
    columns : `list` [`str`], optional
        For Parquet, read only these columns (those absent are ignored here
        and reported by the caller).
    group : `str`, optional
        HDF5 group holding the columns (default: the root, then each top group).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TableReadError(f"Input table {path} does not exist.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".parquet", ".pq", ".parq"):
            import pyarrow.parquet as pq
            from lsst.daf.butler.formatters.parquet import arrow_to_astropy

            if columns is not None:
                available = set(pq.read_schema(path).names)
                columns = [c for c in columns if c in available]
            return arrow_to_astropy(pq.read_table(path, columns=columns))
        if ext == ".csv":
            return Table.read(path, format="ascii.csv")
        if ext in (".h5", ".hdf5", ".hdf"):
            return _read_hdf5(path, group)
    except TableReadError:
        raise
    except Exception as exc:
        raise TableReadError(f"Cannot read table {path}: {exc}") from exc
    raise TableReadError(f"Unknown table format {ext!r} for {path}; use Parquet, CSV or HDF5.")


def write_table(table: Table, path: str | os.PathLike[str]) -> str:
    """Write a catalog as Parquet (the Butler's Arrow conversion; metadata kept).

    The file is written atomically (`lsst.meas.ml.fileio.atomic_output`): a
    temporary file in the same directory is renamed over ``path`` once
    complete, so a failure never leaves a half-written catalog.  Callers
    that read input files check first that ``path`` is none of them
    (`lsst.meas.ml.fileio.refuse_output_over_input`).

    Returns
    -------
    path : `str`
    """
    import pyarrow.parquet as pq
    from lsst.daf.butler.formatters.parquet import astropy_to_arrow

    path = os.fspath(path)
    arrow = astropy_to_arrow(table)
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp)
    return path

