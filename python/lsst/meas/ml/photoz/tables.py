"""Reading input tables and writing photo-z catalogs outside the Butler.

Inputs may be Parquet, CSV or HDF5.  HDF5 files are read either as an
astropy table, or as a group of equal-length one-dimensional datasets (the
layout of the DESC/RAIL cosmoDC2 files: ``/photometry/mag_u_lsst`` ...).
Catalogs are written as Parquet through the same Arrow conversion the
Butler's ``ArrowAstropy`` storage class uses, so a file written here and a
dataset written by `EstimatePhotozTask` have the same schema.

For inputs of any size, `TableChunks` reads a file in row chunks (only the
needed columns) and `write_table_stream` appends catalog chunks to one
Parquet file as they come; the result reads back exactly as if the whole
catalog had been written by `write_table` (same columns, units and schema
metadata, with the total row count).  Streaming by format:

* Parquet: `pyarrow.parquet.ParquetFile.iter_batches`, unbuffered (memory:
  one chunk, plus the reader's pages);
* CSV: `pyarrow.csv.open_csv` (blocks of 1 MB), except files whose first
  line starts with ``#`` (comment or ECSV header lines), which are left to
  astropy, read whole, as before;
* HDF5: a group of equal-length 1-d datasets (the DESC/RAIL layout) is read
  in slices with h5py; an astropy-table HDF5 file is read whole (only the
  prediction is then chunked).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from astropy.table import Table

from ..fileio import atomic_output, write_table
from .features import FeatureError

__all__ = ["TableChunks", "TableReadError", "read_table", "write_table", "write_table_stream"]


class TableReadError(FeatureError):
    """Raised for a table file that cannot be read."""


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a project dependency
        raise TableReadError("Reading HDF5 files needs h5py: pip install h5py.") from exc
    return h5py


def _hdf5_column_group(fh: Any, group: str | None) -> Any:
    """Find the group of equal-length 1-d datasets that holds the columns (`None` if there is none).

    Parameters
    ----------
    fh : `h5py.File`
        The open file.
    group : `str` or `None`
        Group to look at alone; `None` for the root, then each top group.

    Returns
    -------
    group : `h5py.Group` or `None`
        The first candidate whose 1-d datasets all have the same length
        (and no compound type), or `None`.
    """
    h5py = _h5py()
    candidates = [fh[group]] if group else [fh] + [fh[k] for k in fh if isinstance(fh[k], h5py.Group)]
    for grp in candidates:
        datasets = {k: v for k, v in grp.items() if isinstance(v, h5py.Dataset) and v.ndim == 1}
        lengths = {v.shape[0] for v in datasets.values()}
        if datasets and len(lengths) == 1 and not any(v.dtype.names for v in datasets.values()):
            return grp
    return None


def _read_hdf5(path: str, group: str | None) -> Table:
    h5py = _h5py()
    with h5py.File(path, "r") as fh:
        grp = _hdf5_column_group(fh, group)
        if grp is not None:
            return Table({k: v[:] for k, v in grp.items() if isinstance(v, h5py.Dataset) and v.ndim == 1})
    try:
        return Table.read(path, path=group) if group else Table.read(path)
    except Exception as exc:
        raise TableReadError(
            f"Cannot read a table from HDF5 file {path}: it holds neither a group of equal-length 1-d "
            f"datasets nor an astropy table ({exc})."
        ) from exc


def read_table(
    path: str | os.PathLike[str], *, columns: list[str] | None = None, group: str | None = None
) -> Table:
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

    Returns
    -------
    table : `astropy.table.Table`
        The table read.

    Raises
    ------
    TableReadError
        If the file does not exist, its extension is unknown or it cannot
        be read.
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


# ----------------------------------------------------------------------
# Streaming


def _rebatch(batches: Iterable[Any], rows: int) -> Iterator[Any]:
    """Arrow tables of exactly ``rows`` rows (the last one shorter) from record batches of any size."""
    import pyarrow as pa

    pending: list[Any] = []
    have = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        have += batch.num_rows
        while have >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending = rest.to_batches() if rest.num_rows else []
            have = rest.num_rows
            del table, rest
    if have:
        yield pa.Table.from_batches(pending)


def _csv_is_plain(path: str) -> bool:
    """Whether pyarrow can stream a CSV file as astropy reads it (no comment / ECSV header lines)."""
    with open(path, "rb") as stream:
        for line in stream:
            if line.strip():
                return not line.lstrip().startswith(b"#")
    return False  # empty: astropy's error message


_CSV_COLUMN = re.compile(r"CSV column #(\d+)")


class TableChunks:
    """A table file read in row chunks of the chosen columns.

    Parameters
    ----------
    path : path-like
        Parquet, CSV or HDF5 file (the format from the extension, as
        `read_table`).
    columns : sequence of `str`, optional
        The columns to read; those absent from the file are skipped (the
        caller reports them).  Default: all.
    chunk_size : `int`
        Rows per chunk; every chunk but the last has exactly this many.
    group : `str`, optional
        HDF5 group holding the columns.
    float_columns : sequence of `str`
        Columns read from CSV as float64 whatever the first block looks
        like (flux columns: pyarrow infers a CSV column's type from its first
        block, astropy from the whole file).

    Attributes
    ----------
    csv_block_size : `int`
        Bytes pyarrow parses at a time from a CSV file (class attribute).
    streaming : `bool`
        Whether the file is streamed (else it was read whole: see ``note``).
    note : `str`
        How the file is read, for logs.
    available : `list` [`str`]
        Every column of the file.
    selected : `list` [`str`]
        The columns read (``columns`` that exist; the first column of the
        file if none does, to carry the row count).

    Raises
    ------
    TableReadError
        If the file does not exist or cannot be opened.
    ValueError
        If ``chunk_size`` is below 1.
    """

    csv_block_size = 1 << 20

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str] | None = None,
        *,
        chunk_size: int = 65536,
        group: str | None = None,
        float_columns: Sequence[str] = (),
    ) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise TableReadError(f"Input table {self.path} does not exist.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
        self.chunk_size = int(chunk_size)
        self.group = group
        self._whole: Table | None = None
        self._float_columns = list(float_columns)
        ext = os.path.splitext(self.path)[1].lower()
        try:
            if ext in (".parquet", ".pq", ".parq"):
                import pyarrow.parquet as pq

                self.kind = "parquet"
                # Unbuffered column chunks: the reader holds pages, not whole row groups
                # (pyarrow's default pre-buffering holds every selected column of a row group).
                self._parquet = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
                self.available = list(self._parquet.schema_arrow.names)
            elif ext == ".csv" and _csv_is_plain(self.path):
                import pyarrow.csv as pacsv

                self.kind = "csv"
                self.available = list(pacsv.open_csv(self.path).schema.names)
            elif ext in (".h5", ".hdf5", ".hdf"):
                h5py = _h5py()
                with h5py.File(self.path, "r") as fh:
                    grp = _hdf5_column_group(fh, group)
                    self.kind = "hdf5" if grp is not None else "whole"
                    if grp is not None:
                        self._h5_group = grp.name
                        self.available = [
                            k for k, v in grp.items() if isinstance(v, h5py.Dataset) and v.ndim == 1
                        ]
            else:
                self.kind = "whole"
        except TableReadError:
            raise
        except Exception as exc:
            raise TableReadError(f"Cannot read table {self.path}: {exc}") from exc
        if self.kind == "whole":
            self._whole = read_table(self.path, group=group)
            self.available = list(self._whole.colnames)
        wanted = self.available if columns is None else [c for c in columns if c in self.available]
        self.selected = wanted or self.available[:1]
        if self._whole is not None:
            self._whole = self._whole[self.selected] if self.selected else self._whole
        self.streaming = self.kind != "whole"
        self.note = {
            "parquet": "Parquet, streamed in record batches",
            "csv": "CSV, streamed with pyarrow.csv",
            "hdf5": "HDF5 column datasets, streamed in slices",
            "whole": "read whole (this format/layout is not streamed: astropy-table HDF5, CSV starting "
            "with '#' lines); the prediction is still chunked",
        }[self.kind]
        self._n_rows: int | None = None

    # ------------------------------------------------------------------
    def _error(self, exc: Exception) -> TableReadError:
        message = str(exc)
        if self.kind == "csv":
            match = _CSV_COLUMN.search(message)
            if match and int(match.group(1)) < len(self.available):
                message += f" (column {self.available[int(match.group(1))]!r})"
        return TableReadError(f"Cannot read table {self.path}: {message}")

    def _csv_reader(self, names: Sequence[str]) -> Any:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {c: pa.float64() for c in self._float_columns if c in names}
        return pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=self.csv_block_size),
            convert_options=pacsv.ConvertOptions(include_columns=list(names), column_types=types),
        )

    def _arrow_batches(self, names: Sequence[str]) -> Iterator[Any]:
        if self.kind == "parquet":
            yield from self._parquet.iter_batches(batch_size=self.chunk_size, columns=list(names))
        else:
            yield from self._csv_reader(names)

    def _empty(self, names: Sequence[str]) -> Table:
        from lsst.daf.butler.formatters.parquet import arrow_to_astropy

        if self.kind == "parquet":
            return arrow_to_astropy(self._parquet.schema_arrow.empty_table().select(list(names)))
        if self.kind == "csv":
            return arrow_to_astropy(self._csv_reader(names).schema.empty_table())
        raise AssertionError(self.kind)

    def _chunks(self, names: Sequence[str], rows: int) -> Iterator[Table]:
        """Chunks of ``rows`` rows of the columns ``names`` (at least one chunk, maybe empty)."""
        if self._whole is not None:
            n = len(self._whole)
            for start in range(0, max(n, 1), rows):
                yield self._whole[list(names)][start : start + rows]
            return
        if self.kind == "hdf5":
            h5py = _h5py()
            with h5py.File(self.path, "r") as fh:
                grp = fh[self._h5_group]
                n = grp[names[0]].shape[0] if names else 0
                for start in range(0, max(n, 1), rows):
                    yield Table({k: grp[k][start : start + rows] for k in names})
            return
        from lsst.daf.butler.formatters.parquet import arrow_to_astropy

        produced = False
        batches = _rebatch(self._arrow_batches(names), rows)
        while True:
            try:
                table = next(batches)
            except StopIteration:
                break
            except Exception as exc:
                raise self._error(exc) from exc
            produced = True
            yield arrow_to_astropy(table)
            del table
        if not produced:
            yield self._empty(names)

    def __iter__(self) -> Iterator[Table]:
        """Astropy tables of ``chunk_size`` rows of the ``selected`` columns (at least one, maybe empty)."""
        n = 0
        for chunk in self._chunks(self.selected, self.chunk_size):
            n += len(chunk)
            yield chunk
        if self._n_rows is not None and n != self._n_rows:
            raise TableReadError(
                f"Input table {self.path} changed while it was read: {n} rows now, {self._n_rows} before."
            )

    def read_columns(self, names: Sequence[str]) -> Table:
        """Read the whole of some columns (e.g. the ids) alone; this also fixes `n_rows`.

        Parameters
        ----------
        names : `~collections.abc.Sequence` [`str`]
            Columns to read; those absent from the file are skipped, and
            if none is present the ``selected`` columns are read.

        Returns
        -------
        table : `astropy.table.Table`
            Every row of those columns.

        Raises
        ------
        TableReadError
            If the file cannot be read.
        """
        names = [c for c in names if c in self.available] or self.selected
        if self._whole is not None:
            table = (
                self._whole[names]
                if set(names) <= set(self._whole.colnames)
                else read_table(self.path, group=self.group)[names]
            )
        elif self.kind == "parquet":
            import pyarrow.parquet as pq
            from lsst.daf.butler.formatters.parquet import arrow_to_astropy

            try:
                table = arrow_to_astropy(pq.read_table(self.path, columns=list(names)))
            except Exception as exc:
                raise self._error(exc) from exc
        else:
            from astropy.table import vstack

            parts = list(self._chunks(names, 1 << 22))
            table = parts[0] if len(parts) == 1 else vstack(parts, metadata_conflicts="silent")
        self._n_rows = len(table)
        return table

    @property
    def n_rows(self) -> int:
        """Number of rows (from the file's metadata where it has one, else counted)."""
        if self._n_rows is None:
            if self._whole is not None:
                self._n_rows = len(self._whole)
            elif self.kind == "parquet":
                self._n_rows = int(self._parquet.metadata.num_rows)
            elif self.kind == "hdf5":
                with _h5py().File(self.path, "r") as fh:
                    grp = fh[self._h5_group]
                    self._n_rows = int(grp[self.selected[0]].shape[0]) if self.selected else 0
            else:
                self.read_columns(self.selected[:1])
        assert self._n_rows is not None
        return self._n_rows


def _astropy_to_arrow(table: Table) -> Any:
    """`astropy_to_arrow` of ``table``, with the multidimensional columns converted in one step.

    The Butler's conversion splits such a column into one astropy `Column`
    per row (about 30 s per million rows of ``photoz_pdf``); here its flat
    values become the same ``fixed_size_list`` array directly.  The schema
    (types, units, descriptions, metadata) is the Butler's.
    """
    import numpy as np
    import pyarrow as pa
    from astropy.table import MaskedColumn
    from lsst.daf.butler.formatters.parquet import astropy_to_arrow

    multidim = [
        name for name in table.colnames if table[name].ndim > 1 and not isinstance(table[name], MaskedColumn)
    ]
    if not multidim or len(table) == 0:
        return astropy_to_arrow(table)
    schema = astropy_to_arrow(table[:0]).schema
    others = [name for name in table.colnames if name not in multidim]
    rest = astropy_to_arrow(table[others]) if others else None
    arrays = []
    for name in table.colnames:
        field = schema.field(name)
        if name in multidim:
            values = np.ascontiguousarray(table[name]).reshape(-1)
            flat = pa.array(values, type=field.type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        else:
            arrays.append(rest.column(name).combine_chunks())
    metadata = dict(schema.metadata)
    metadata[b"lsst::arrow::rowcount"] = str(len(table)).encode()
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(metadata))


def write_table_stream(
    tables: Iterable[Table],
    path: str | os.PathLike[str],
    *,
    n_rows: int,
    string_lengths: Mapping[str, int] | None = None,
) -> int:
    """Write consecutive chunks of one catalog as one Parquet file, atomically.

    Each chunk goes through the same Arrow conversion as `write_table` and
    is appended (as its own row group) with a `pyarrow.parquet.ParquetWriter`
    to a temporary file (`lsst.meas.ml.fileio.atomic_output`), renamed over
    ``path`` once the last chunk is written: an exception from ``tables``
    (or from the writing) leaves ``path`` as it was and no temporary file.
    The schema, with its metadata (units, descriptions, ``table_meta_yaml``
    holding the catalog's ``meta``), is that of the first chunk, written
    once; reading the file back gives what `write_table` on the
    concatenated catalog would give.

    Parameters
    ----------
    tables : iterable of `astropy.table.Table`
        The chunks, with identical columns and ``meta`` (at least one; it
        may be empty).
    path : path-like
        The Parquet file.
    n_rows : `int`
        Total number of rows (the schema's ``lsst::arrow::rowcount``, which
        the Butler reads as the dataset's row count, is written first); a
        different total is an error.
    string_lengths : `dict` [`str`, `int`], optional
        Length of the longest value of string columns over all chunks
        (`write_table` records it in the schema; a chunk only knows its
        own).  Default: the first chunk's; a longer value later is an error.

    Returns
    -------
    n : `int`
        Rows written.

    Raises
    ------
    ValueError
        If ``tables`` is empty, a chunk's columns, types or ``meta`` differ
        from the first chunk's, or a string is longer than its declared
        length.
    TableReadError
        If the number of rows written is not ``n_rows``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.fspath(path)
    written = 0
    with atomic_output(path) as tmp:
        writer = None
        schema = None
        lengths: dict[str, int] = {}
        try:
            for table in tables:
                for name in table.colnames:
                    dtype = table[name].dtype
                    if dtype.kind in "US":
                        length = dtype.itemsize // (4 if dtype.kind == "U" else 1)
                        if schema is None:
                            lengths[name] = max(length, int((string_lengths or {}).get(name, 0)))
                        elif length > lengths.get(name, 0):
                            raise ValueError(
                                f"Column {name!r} has values of {length} characters after the first chunk, "
                                f"longer than the {lengths.get(name, 0)} declared; pass string_lengths."
                            )
                arrow = _astropy_to_arrow(table)
                if schema is None:
                    metadata = dict(arrow.schema.metadata or {})
                    metadata[b"lsst::arrow::rowcount"] = str(int(n_rows)).encode()
                    for name, length in lengths.items():
                        for key in (f"lsst::arrow::len::{name}", f"table::len::{name}"):
                            metadata[key.encode()] = str(length).encode()
                    schema = arrow.schema.with_metadata(metadata)
                    writer = pq.ParquetWriter(tmp, schema)
                elif (arrow.schema.metadata or {}).get(b"table_meta_yaml") != schema.metadata.get(
                    b"table_meta_yaml"
                ) or not arrow.schema.equals(schema, check_metadata=False):
                    raise ValueError(
                        f"Chunk {written}.. of {path} does not have the columns, types or metadata of the "
                        f"first chunk: {arrow.schema} instead of {schema}."
                    )
                writer.write_table(pa.Table.from_arrays(arrow.columns, schema=schema))
                written += arrow.num_rows
                del arrow, table  # not held while the next chunk is produced
            if writer is None:
                raise ValueError(f"No catalog chunk to write to {path}.")
        finally:
            if writer is not None:
                writer.close()
        if written != n_rows:
            raise TableReadError(f"{written} rows were written to {path}, but the input had {n_rows}.")
    return written
