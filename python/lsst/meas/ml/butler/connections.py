"""Connection declarations every meas_ml task shares."""

from __future__ import annotations

import lsst.pipe.base.connectionTypes as cT

from ..products import product
from .names import model_dataset_type

__all__ = ["model_input"]


def model_input(family: str) -> cT.PrerequisiteInput:
    """Declare the model package a task of ``family`` runs.

    The dataset type is ``ml_model_<family>``, with no dimensions.  It is a
    prerequisite input, so the version is chosen by the RUN collection
    passed with ``-i`` (``models/<family>/<version>``) and recorded in the
    provenance of every output.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.

    Returns
    -------
    connection : `lsst.pipe.base.connectionTypes.PrerequisiteInput`
        The connection to declare on the task's connections class.
    """
    return cT.PrerequisiteInput(
        doc=(
            f"Model package of the {family} product ({product(family).title}); pass its RUN "
            f"collection, e.g. models/{family}/<version>, with -i."
        ),
        name=model_dataset_type(family),
        storageClass="MLModelPackage",
        dimensions=(),
    )
