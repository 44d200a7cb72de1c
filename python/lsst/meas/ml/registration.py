"""Model packages as Butler datasets.

Each family has one dataset type, ``ml_model_<family>`` (no dimensions,
storage class ``MLModelPackage``); each package version lives in its own RUN
collection ``models/<family>/<version>``.  Tasks declare the model as a
``PrerequisiteInput``, so the package used is chosen with ``-i models/...``
and recorded in every output's provenance.
"""

from __future__ import annotations

from typing import Any

from lsst.daf.butler import Butler, CollectionType, DatasetRef, DatasetType
from lsst.daf.butler.registry import MissingCollectionError

from .butler.names import model_dataset_type, model_run

__all__ = ["find_package", "model_dataset_type_for", "register_package"]


def model_dataset_type_for(butler: Butler, family: str) -> DatasetType:
    """Register (idempotently) and return ``ml_model_<family>``."""
    dataset_type = DatasetType(model_dataset_type(family), (), "MLModelPackage", universe=butler.dimensions)
    butler.registry.registerDatasetType(dataset_type)
    return dataset_type


def register_package(butler: Butler, package: Any, *, run: str | None = None) -> tuple[DatasetRef, str]:
    """Put ``package`` into ``butler`` (idempotent for the same checksum).

    Returns the dataset reference and the RUN collection.  A different
    package already stored in the same RUN is an error: versions are
    immutable, bump the version instead.
    """
    from .packages import PackageError

    run = run or model_run(package.family, package.version)
    dataset_type = model_dataset_type_for(butler, package.family)
    butler.registry.registerCollection(run, CollectionType.RUN)
    existing = butler.find_dataset(dataset_type, collections=run)
    if existing is not None:
        stored = butler.get(existing)
        if stored.sha256 == package.sha256:
            return existing, run
        raise PackageError(
            f"RUN collection {run} already holds a different {dataset_type.name} "
            f"(sha256 {stored.sha256[:12]} != {package.sha256[:12]}); model versions are immutable: "
            "give the new package another version or pass another --run."
        )
    ref = butler.put(package, dataset_type, run=run)
    return ref, run


def find_package(butler: Butler, family: str, collections: Any) -> Any | None:
    """The package of ``family`` found in ``collections``, or `None`."""
    try:
        ref = butler.find_dataset(model_dataset_type(family), collections=collections)
    except (MissingCollectionError, LookupError):
        return None
    return None if ref is None else butler.get(ref)
