"""Model packages as Butler datasets.

Each family has one dataset type, ``ml_model_<family>`` (no dimensions,
storage class ``MLModelPackage``); each package version lives in its own RUN
collection ``models/<family>/<version>``.  Tasks declare the model as a
``PrerequisiteInput``, so the package used is chosen with ``-i models/...``
and recorded in every output's provenance.

`register_package` refuses, before writing anything:

* a collection that exists but is not a RUN collection (a CHAINED, TAGGED
  or CALIBRATION collection cannot hold new datasets; put the model in its
  own RUN and add that to the chain);
* a RUN named ``models/<family>/...`` for another family than the
  package's (a DIA package under ``models/photoz/...``);
* a RUN that already holds datasets other than this family's model (a data
  run: outputs of processing must not be mixed with model versions).
"""

from __future__ import annotations

from typing import Any

from lsst.daf.butler import Butler, CollectionType, DatasetRef, DatasetType
from lsst.daf.butler.registry import MissingCollectionError

from ..packages import PackageError as _PackageError
from .names import model_dataset_type, model_run

__all__ = ["RegistrationError", "find_package", "model_dataset_type_for", "register_package"]


class RegistrationError(_PackageError):
    """A model package that cannot go into the collection asked for.

    A `~lsst.meas.ml.packages.PackageError`, reported by ``meas-ml`` without
    a traceback.
    """


def model_dataset_type_for(butler: Butler, family: str) -> DatasetType:
    """Register (idempotently) and return ``ml_model_<family>``.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler whose registry receives the dataset type.
    family : `str`
        Model family, e.g. ``"dia"``.

    Returns
    -------
    dataset_type : `lsst.daf.butler.DatasetType`
        The dimensionless ``MLModelPackage`` dataset type of the family.
    """
    dataset_type = DatasetType(model_dataset_type(family), (), "MLModelPackage", universe=butler.dimensions)
    butler.registry.registerDatasetType(dataset_type)
    return dataset_type


def _check_run(butler: Butler, package: Any, run: str) -> None:
    """Raise `RegistrationError` unless ``run`` may receive ``package`` (see the module docs)."""
    family = package.family
    default = model_run(family, package.version)
    parts = run.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "models" and parts[1] != family:
        raise RegistrationError(
            f"Cannot register the {family!r} model {package.name!r} in {run!r}: collections "
            f"models/{parts[1]}/... hold {parts[1]!r} models. Use --run {default} (the default) or "
            "another RUN collection."
        )
    try:
        info = butler.collections.get_info(run, include_summary=True)
    except MissingCollectionError:
        return  # a new RUN collection
    if info.type != CollectionType.RUN:
        hint = (
            f" Register it in its own RUN collection (default {default}) and add that to the chain, e.g. "
            f"`butler collection-chain REPO {run} --mode prepend {default}`."
            if info.type == CollectionType.CHAINED
            else f" Use a RUN collection such as {default}."
        )
        raise RegistrationError(
            f"Cannot register the {family!r} model {package.name!r} in {run!r}: it is a {info.type.name} "
            f"collection, and models are put into a RUN collection.{hint}"
        )
    allowed = model_dataset_type(family)
    others = []
    for name in sorted(info.dataset_types or ()):
        if name == allowed:
            continue
        # The summary may name types whose datasets were since removed; look.
        if butler.query_datasets(name, collections=run, limit=1, explain=False):
            others.append(name)
    if others:
        raise RegistrationError(
            f"Cannot register the {family!r} model {package.name!r} in RUN collection {run!r}: it already "
            f"holds other datasets ({', '.join(others[:8])}{', ...' if len(others) > 8 else ''}). A model "
            f"version gets its own RUN collection; use --run {default} (the default) or another new one."
        )


def register_package(butler: Butler, package: Any, *, run: str | None = None) -> tuple[DatasetRef, str]:
    """Put ``package`` into ``butler`` (idempotent for the same checksum).

    A different package already stored in the same RUN is an error:
    versions are immutable, bump the version instead.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler to put the package into.
    package : `lsst.meas.ml.packages.ModelPackage`
        The model package.
    run : `str`, optional
        RUN collection to put it in; default ``models/<family>/<version>``.

    Returns
    -------
    ref : `lsst.daf.butler.DatasetRef`
        Reference of the stored package (the existing one when the same
        package was already there).
    run : `str`
        The RUN collection used.

    Raises
    ------
    RegistrationError
        Before anything is written, if ``run`` is not a RUN collection, is
        named for another model family, or holds other datasets (see the
        module documentation).
    lsst.meas.ml.packages.PackageError
        If the RUN already holds a different package of the family.
    """
    from ..packages import PackageError

    run = run or model_run(package.family, package.version)
    _check_run(butler, package, run)
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
    """Find the package of ``family`` in ``collections``.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler to search.
    family : `str`
        Model family, e.g. ``"dia"``.
    collections : `str` or iterable of `str`
        Collections to search, as for `lsst.daf.butler.Butler.find_dataset`.

    Returns
    -------
    package : `lsst.meas.ml.packages.ModelPackage` or `None`
        The package found, or `None` when there is none (or the collections
        do not exist).
    """
    try:
        ref = butler.find_dataset(model_dataset_type(family), collections=collections)
    except (MissingCollectionError, LookupError):
        return None
    return None if ref is None else butler.get(ref)
