"""Connection declarations every meas_ml task shares."""

from __future__ import annotations

import lsst.pipe.base.connectionTypes as cT

from ..products import product
from .names import model_dataset_type

__all__ = ["model_input", "object_table_input", "patch_coadds_input"]


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


def patch_coadds_input(doc: str) -> cT.Input:
    """Declare the coadds of a patch in every band (per-patch image products).

    The name is the connection template ``{coadd}`` (``deep_coadd`` by
    default, ``deepCoadd_calexp`` with ``config/legacyNames.py``); the images
    are read lazily, so a task reads only the bands and the boxes it needs.

    Parameters
    ----------
    doc : `str`
        What the task uses them for.

    Returns
    -------
    connection : `lsst.pipe.base.connectionTypes.Input`
        The connection to declare on the task's connections class.
    """
    return cT.Input(
        doc=doc,
        name="{coadd}",
        storageClass="MaskedImageV2",
        dimensions=("skymap", "tract", "patch", "band"),
        multiple=True,
        deferLoad=True,
    )


def object_table_input(doc: str) -> cT.Input:
    """Declare the object table of a tract, read lazily (only the needed columns).

    The name is the connection template ``{objectTable}`` (``object`` by
    default, ``objectTable_tract`` with ``config/legacyNames.py``).

    Parameters
    ----------
    doc : `str`
        Which columns the task reads.

    Returns
    -------
    connection : `lsst.pipe.base.connectionTypes.Input`
        The connection to declare on the task's connections class.
    """
    return cT.Input(
        doc=doc,
        name="{objectTable}",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
        deferLoad=True,
    )
