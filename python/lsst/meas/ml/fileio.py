"""Writing output files safely: never over an input, never half-written.

Every ``meas-ml`` command that writes a file outside the Butler goes
through these helpers:

* `refuse_output_over_input` compares the output path with every input
  path (after resolving symbolic links, and by inode when both exist) and
  raises `OutputIsInputError` before any work is done, so
  ``--input t.parquet --out t.parquet`` cannot destroy the input;
* `atomic_output` hands out a temporary file in the output's directory and
  renames it over the output (`os.replace`) only once it is complete, so a
  failure or an interrupt leaves the previous file (or none) in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import MeasMlUserError

__all__ = [
    "OutputIsInputError",
    "atomic_output",
    "refuse_output_over_input",
    "same_file",
    "write_bytes_atomic",
    "write_table",
    "write_text_atomic",
]


class OutputIsInputError(MeasMlUserError, FileExistsError):
    """Raised when an output path names one of the command's input files."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Test whether two paths name the same file.

    Symbolic links and hard links are resolved.

    Parameters
    ----------
    a, b : `str` or path-like
        The paths to compare.

    Returns
    -------
    same : `bool`
        `True` if both paths name the same file; `False` otherwise,
        including when either does not exist (yet).
    """
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def refuse_output_over_input(
    output: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None],
    *,
    option: str = "--out",
) -> None:
    """Raise `OutputIsInputError` if ``output`` is the same file as any input.

    Parameters
    ----------
    output : path-like or `None`
        The output file (`None`: nothing to check).
    inputs : iterable of path-like or `None`
        Every file the command reads (`None` entries are skipped).
    option : `str`
        How the user named the output, for the message.
    """
    if output is None:
        return
    for path in inputs:
        if path is None:
            continue
        if same_file(output, path):
            raise OutputIsInputError(
                f"{option} {os.fspath(output)} is the same file as the input {os.fspath(path)}; writing it "
                "would destroy the input. Give another output path."
            )


def _mode_from_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path that replaces ``path`` on success.

    This is a context manager.  The temporary file is created in the directory of ``path`` (created if
    needed), with the same extensions, so writers that pick the format from
    the name (astropy ``Table.write``) behave as for ``path``.  It is moved
    over ``path`` with `os.replace` when the block ends without an
    exception, and removed otherwise.

    Parameters
    ----------
    path : `str` or path-like
        The output file.

    Yields
    ------
    tmp : `str`
        The temporary file to write.

    Examples
    --------
    >>> with atomic_output("catalog.parquet") as tmp:  # doctest: +SKIP
    ...     pq.write_table(arrow_table, tmp)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    stem, dot, extensions = base.partition(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem or 'out'}.tmp-", suffix=dot + extensions)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _mode_from_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : `str` or path-like
        The output file.
    data : `bytes`
        The content to write.

    Returns
    -------
    path : `str`
        The output path, as a string.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as stream:
        stream.write(data)
    return os.fspath(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Parameters
    ----------
    path : `str` or path-like
        The output file.
    text : `str`
        The content to write, encoded as UTF-8.

    Returns
    -------
    path : `str`
        The output path, as a string.
    """
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text)
    return os.fspath(path)


def write_table(table: Any, path: str | os.PathLike[str]) -> str:
    """Write a catalog as Parquet (the Butler's Arrow conversion; metadata kept).

    The file is written atomically (`atomic_output`): a
    temporary file in the same directory is renamed over ``path`` once
    complete, so a failure never leaves a half-written catalog.  Callers
    that read input files check first that ``path`` is none of them
    (`refuse_output_over_input`).

    Parameters
    ----------
    table : `astropy.table.Table`
        The catalog.
    path : path-like
        The Parquet file to write.

    Returns
    -------
    path : `str`
        ``path``, as a string.
    """
    import pyarrow.parquet as pq
    from lsst.daf.butler.formatters.parquet import astropy_to_arrow

    path = os.fspath(path)
    arrow = astropy_to_arrow(table)
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp)
    return path
