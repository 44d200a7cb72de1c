"""The one base of the errors ``meas-ml`` reports as a line instead of a traceback.

Like daf_butler's ``ButlerUserError``, `MeasMlUserError` is a mixin: each
error class of the package derives from it and from the builtin exception
that fits (``ValueError``, ``RuntimeError``...), and its message names the
file, dataset or column at fault and the fix.  The command catches
`MeasMlUserError` (and missing or existing files); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["MeasMlUserError", "user_errors"]


class MeasMlUserError(Exception):
    """Mixin of the errors whose message is meant for the user as it is."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Return the exception classes ``meas-ml`` reports without a traceback.

    Returns
    -------
    classes : `tuple` [`type`, ...]
        Exception classes, for an ``except`` clause.
    """
    return (MeasMlUserError, FileNotFoundError, FileExistsError)
