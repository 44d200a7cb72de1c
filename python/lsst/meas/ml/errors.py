"""The exceptions ``meas-ml`` reports as a one-line error instead of a traceback.

Each is raised with a message that names the file, dataset or column at
fault and the fix.
"""

from __future__ import annotations

import importlib

__all__ = ["user_errors"]

# (module, class) pairs; a family that is not built is skipped.
_USER_ERRORS = (
    ("lsst.meas.ml.images", "ImageError"),
    ("lsst.meas.ml.butler.repo", "RepoConfigError"),
    ("lsst.meas.ml.packages", "PackageError"),
    ("lsst.meas.ml.alerts", "AlertError"),
    ("lsst.meas.ml.photoz.features", "FeatureError"),
    ("lsst.meas.ml.dia.data", "DiaDataError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes reported without a traceback."""
    found: list[type[BaseException]] = [FileNotFoundError, FileExistsError]
    for module, name in _USER_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
