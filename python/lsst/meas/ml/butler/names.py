"""Dataset-type names and connection-template keys shared by every meas_ml task.

Task connections name their inputs through templates (``name="{visitImage}"``)
so that one override file retargets every task at a repository that uses
other names.  `CURRENT_NAMES` are the defaults (current Rubin data-release
names); `LEGACY_NAMES` are the names older repositories use; apply them with
``-C <label>:config/legacyNames.py`` (see ``config/``).
"""

from __future__ import annotations

__all__ = ["CURRENT_NAMES", "DP1_NAMES", "LEGACY_NAMES", "model_dataset_type", "model_run"]

#: Connection-template key -> current Rubin dataset type name.
CURRENT_NAMES: dict[str, str] = {
    "visitImage": "visit_image",
    "templateImage": "template_detector",
    "differenceImage": "difference_image",
    # Every DIA source, before the stack's reliability cut (dia_source_detector
    # holds only those that pass it).
    "diaSourceTable": "dia_source_unstandardized",
    "coadd": "deep_coadd",
    "objectTable": "object",
}

#: Data Preview 1's names where they differ: one DIA source table per tract
#: (no per-detector table) and no per-detector template (the DIA task then
#: derives the template from the visit and difference images).
DP1_NAMES: dict[str, str] = {
    "diaSourceTable": "dia_source",
    "templateCoadd": "template_coadd",
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
    """Return the dataset type name of a model family's packages.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.

    Returns
    -------
    name : `str`
        ``ml_model_<family>``.
    """
    return f"ml_model_{family}"


def model_run(family: str, version: str) -> str:
    """Return the RUN collection a package version lives in.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.
    version : `str`
        Package version.

    Returns
    -------
    run : `str`
        ``models/<family>/<version>``.
    """
    return f"models/{family}/{version}"
