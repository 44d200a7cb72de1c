"""Dataset-type names and connection-template keys shared by every meas_ml task.

Task connections name their inputs through templates (``name="{visitImage}"``)
so that one override file retargets every task at a repository that uses
other names.  `CURRENT_NAMES` are the defaults (current Rubin data-release
names); `LEGACY_NAMES` are the names older repositories use; apply them with
``-C <label>:config/legacyNames.py`` (see ``config/``).
"""

from __future__ import annotations

__all__ = ["CURRENT_NAMES", "LEGACY_NAMES", "model_dataset_type", "model_run"]

#: Connection-template key -> current Rubin dataset type name.
CURRENT_NAMES: dict[str, str] = {
    "visitImage": "visit_image",
    "templateImage": "template_detector",
    "differenceImage": "difference_image",
    "diaSourceTable": "dia_source_detector",
    "coadd": "deep_coadd",
    "objectTable": "object",
}

#: The same keys with the names used by older repositories.
LEGACY_NAMES: dict[str, str] = {
    "visitImage": "calexp",
    "templateImage": "goodSeeingDiff_templateExp",
    "differenceImage": "goodSeeingDiff_differenceExp",
    "diaSourceTable": "goodSeeingDiff_diaSrcTable",
    "coadd": "deepCoadd_calexp",
    "objectTable": "objectTable_tract",
}


def model_dataset_type(family: str) -> str:
    """Dataset type of a model family's packages: ``ml_model_<family>``."""
    return f"ml_model_{family}"


def model_run(family: str, version: str) -> str:
    """RUN collection a package version lives in: ``models/<family>/<version>``."""
    return f"models/{family}/{version}"
