"""Give a Butler repository the meas_ml storage classes and formatters.

There is no entry point through which a package adds storage classes to the
Butler, so a repository gets them one of two ways:

* baked into its ``butler.yaml`` (`create_repo` for a new repository,
  `setup_repo` / ``meas-ml setup-repo REPO`` for an existing one), which
  every process that opens the repository then sees, batch jobs included;
* the environment: ``export DAF_BUTLER_CONFIG_PATH=$(meas-ml config-path)``
  in every process (bps jobs included) that opens the repository.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from importlib import resources
from typing import Any

import yaml
from lsst.daf.butler import Butler, Config, DatasetType

from ..errors import MeasMlUserError

__all__ = [
    "CONFIG_DIR",
    "DATASET_TYPES",
    "RepoConfigError",
    "SHAPE_DATASET_TYPES",
    "check_pipeline",
    "check_repo",
    "create_repo",
    "ensure_storage_classes",
    "open_repo",
    "plugin_config",
    "register_dataset_types",
    "setup_repo",
]

#: Directory holding ``storageClasses.yaml`` and ``datastore.yaml``; the
#: value for ``DAF_BUTLER_CONFIG_PATH``.
CONFIG_DIR: str = str(resources.files("lsst.meas.ml.butler") / "configs")

_STORAGE_CLASSES = ("MLModelPackage", "MLSpectra")

_VD = ("instrument", "visit", "detector")
_TRACT = ("skymap", "tract")
_PATCH_BAND = ("skymap", "tract", "patch", "band")

#: Dataset types common to every repository shape the simulated survey
#: writes and the tasks read: name -> (dimensions, storage class).  Images
#: use the stack's own ``lsst.images`` storage classes.
DATASET_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "visit_image": (_VD, "VisitImage"),
    "difference_image": (_VD, "DifferenceImage"),
    "truth_dia_source": (_VD, "ArrowAstropy"),
    "deep_coadd": (_PATCH_BAND, "MaskedImageV2"),
    "object": (_TRACT, "ArrowAstropy"),
    "truth_object": (_TRACT, "ArrowAstropy"),
    "specz": (_TRACT, "ArrowAstropy"),
}

#: The dataset types that differ between repository shapes.  ``drp``: the
#: current DRP's per-detector template and DIA sources before any reliability
#: cut; ``dp1``: Data Preview 1's per-patch template coadd and one DIA source
#: table per tract (no per-detector template or DIA source table).
SHAPE_DATASET_TYPES: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "drp": {
        "template_detector": (_VD, "MaskedImageV2"),
        "dia_source_unstandardized": (_VD, "ArrowAstropy"),
    },
    "dp1": {
        "template_coadd": (_PATCH_BAND, "MaskedImageV2"),
        "dia_source": (_TRACT, "ArrowAstropy"),
    },
}


class RepoConfigError(MeasMlUserError, RuntimeError):
    """A repository lacks the meas_ml storage classes or formatters."""


def plugin_config() -> Config:
    """Return the storage-class and datastore sections meas_ml adds, as one Config.

    Returns
    -------
    config : `lsst.daf.butler.Config`
        The ``storageClasses`` and ``datastore`` sections of the plugin.
    """
    config = Config()
    for name in ("storageClasses.yaml", "datastore.yaml"):
        with open(os.path.join(CONFIG_DIR, name)) as fh:
            config.update(Config(yaml.safe_load(fh)))
    return config


def ensure_storage_classes() -> None:
    """Make the meas_ml storage classes known to this process.

    Storage classes live in a process-wide registry; adding ours there (done
    when `lsst.meas.ml.butler` is imported, so by every meas_ml task) lets a
    task read meas_ml datasets even from a repository whose ``butler.yaml``
    lacks the plugin: the datastore records which formatter wrote each file.
    Writing new ``MLModelPackage`` datasets still needs the plugin's
    formatter (`setup_repo` or ``DAF_BUTLER_CONFIG_PATH``).
    """
    from lsst.daf.butler import StorageClassFactory

    factory = StorageClassFactory()
    if all(name in factory for name in _STORAGE_CLASSES):
        return
    with open(os.path.join(CONFIG_DIR, "storageClasses.yaml")) as fh:
        factory.addFromConfig(Config(yaml.safe_load(fh)))


def create_repo(root: str | os.PathLike, *, overwrite: bool = False, db: str | None = None) -> Butler:
    """Create a repository with the plugin's config baked in.

    Parameters
    ----------
    root : path-like
        Directory of the new repository (its datastore, and its SQLite
        registry unless ``db`` is given).
    overwrite : `bool`
        Remove an existing directory at ``root`` first.
    db : `str`, optional
        Registry database URL, e.g.
        ``postgresql://user@host:5432/dbname`` (a data-centre registry;
        needs ``psycopg``); default a SQLite file in ``root``.  With
        PostgreSQL, ``overwrite`` does not empty the database: give an empty
        one (or a new ``namespace`` schema in the URL's database).

    Returns
    -------
    butler : `lsst.daf.butler.Butler`
        A writeable Butler on the new repository.
    """
    root = os.fspath(root)
    if os.path.exists(os.path.join(root, "butler.yaml")):
        if not overwrite:
            raise FileExistsError(
                f"{root} already holds a Butler repository; pass overwrite=True to replace it."
            )
        shutil.rmtree(root)
    config = plugin_config()
    if db is not None:
        config["registry", "db"] = db
    Butler.makeRepo(root, config=config)
    return Butler.from_config(root, writeable=True)


def _has_plugin(butler: Butler) -> list[str]:
    """Names of the plugin pieces the butler lacks (empty when complete)."""
    missing = []
    factory = butler.storageClasses
    for name in _STORAGE_CLASSES:
        if name not in factory:
            missing.append(f"storage class {name}")
    try:
        formatters = butler._datastore.formatterFactory  # type: ignore[attr-defined]
        for name in _STORAGE_CLASSES:
            if name in factory:
                formatters.getFormatterClass(factory.getStorageClass(name))
    except AttributeError:  # pragma: no cover - a datastore without formatters
        pass
    except KeyError:
        missing.append("formatters for the meas_ml storage classes")
    return missing


def check_repo(butler: Butler, repo: str = "") -> None:
    """Raise `RepoConfigError` naming the fix when the plugin config is missing.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler on the repository to check.
    repo : `str`, optional
        How to name the repository in the message (default: its config
        directory).

    Raises
    ------
    RepoConfigError
        If the repository lacks the meas_ml storage classes or formatters.
    """
    missing = _has_plugin(butler)
    if missing:
        where = repo or str(butler._config.configDir or "the repository")  # type: ignore[attr-defined]
        raise RepoConfigError(
            f"Butler repository {where} lacks the meas_ml {', '.join(missing)}. Fix it once with "
            f"`meas-ml setup-repo {where}`, or in every process (batch jobs too) with "
            f"`export DAF_BUTLER_CONFIG_PATH={CONFIG_DIR}`."
        )


def open_repo(repo: str | os.PathLike, *, writeable: bool = False, **kwargs: Any) -> Butler:
    """Open a repository and check that it knows the meas_ml storage classes.

    Parameters
    ----------
    repo : `str` or path-like
        Repository root (or URI).
    writeable : `bool`, optional
        Open it for writing.
    **kwargs
        Further arguments of `lsst.daf.butler.Butler.from_config`.

    Returns
    -------
    butler : `lsst.daf.butler.Butler`
        Butler on the repository.

    Raises
    ------
    RepoConfigError
        If there is no repository at a local ``repo`` or it lacks the
        meas_ml storage classes or formatters.
    """
    repo = os.fspath(repo)
    if not os.path.exists(repo) and "://" not in repo:
        raise RepoConfigError(f"No Butler repository at {repo}: create one with `butler create {repo}`.")
    butler = Butler.from_config(repo, writeable=writeable, **kwargs)
    check_repo(butler, repo)
    return butler


def setup_repo(repo: str | os.PathLike) -> bool:
    """Add the plugin's sections to an existing repository's ``butler.yaml``.

    The previous file is kept as ``butler.yaml.bak``.

    Parameters
    ----------
    repo : `str` or path-like
        Repository root.

    Returns
    -------
    changed : `bool`
        `True` when the file changed, `False` when it already had them.

    Raises
    ------
    RepoConfigError
        If ``repo`` has no ``butler.yaml``.
    """
    path = os.path.join(os.fspath(repo), "butler.yaml")
    if not os.path.exists(path):
        raise RepoConfigError(f"{path} does not exist: is {repo} a Butler repository root?")
    with open(path) as fh:
        current = yaml.safe_load(fh) or {}
    wanted = plugin_config().toDict()
    changed = False
    for section, subkey in (("storageClasses", None), ("datastore", "formatters")):
        src = wanted[section] if subkey is None else wanted[section][subkey]
        dst = current.setdefault(section, {})
        if subkey is not None:
            dst = dst.setdefault(subkey, {})
        for key, value in src.items():
            if dst.get(key) != value:
                dst[key] = value
                changed = True
    if changed:
        shutil.copy2(path, path + ".bak")
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump(current, fh, sort_keys=False)
        os.replace(tmp, path)
    return changed


def check_pipeline(butler: Butler, pipeline: str | os.PathLike, configs: Iterable[str] = ()) -> int:
    """Check that a pipeline's inputs can be read from a repository here.

    Resolves the pipeline's dataset types against the repository, as
    ``pipetask`` does first.  Where a dataset is stored as an ``lsst.afw``
    type (``ExposureF``: a full-stack repository) and ``lsst.afw`` is not
    installed, the stack's error is replaced by one that names the dataset
    type and the ways out.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository.
    pipeline : path-like
        Pipeline YAML.
    configs : iterable of `str`
        ``label:field=value`` overrides, as ``pipetask -c``.

    Returns
    -------
    n_tasks : `int`
        Number of tasks checked.
    """
    from lsst.pipe.base import Pipeline
    from lsst.pipe.base.pipeline_graph import IncompatibleDatasetTypeError

    pipe = Pipeline.from_uri(os.fspath(pipeline))
    for override in configs:
        label, _, assignment = override.partition(":")
        key, _, value = assignment.partition("=")
        pipe.addConfigOverride(label, key, value)
    graph = pipe.to_graph()
    try:
        graph.resolve(registry=butler.registry)
    except IncompatibleDatasetTypeError as exc:
        afw_types = {
            d.name: d.storageClass_name
            for d in butler.registry.queryDatasetTypes()
            if "lsst.afw" in str(getattr(d.storageClass, "_pytypeName", ""))
        }
        named = [name for name in afw_types if f"'{name}'" in str(exc)]
        try:
            import lsst.afw.image  # noqa: F401
        except ImportError:
            if named:
                raise RepoConfigError(
                    f"Dataset type {named[0]!r} is stored in this repository as {afw_types[named[0]]} (an "
                    "lsst.afw type) and lsst.afw is not installed, so it cannot be read as the "
                    "lsst.images type the task declares. Ways out: run inside the full Science Pipelines "
                    "(rubin-env with lsst_distrib: the Butler converts ExposureF visit and difference "
                    "images to VisitImage and DifferenceImage on read; for an ExposureF template set "
                    "classifyDiaSources:templateSource=derived); or, without afw, read each file's pixel "
                    "planes with lsst.meas.ml.stack_images.read_afw_masked_image(butler.getURI(ref).ospath) "
                    "and call the task's run() in memory (see doc/notebooks)."
                ) from exc
        raise
    return len(graph.tasks)


def register_dataset_types(
    butler: Butler, names: Iterable[str] | None = None, *, shape: str = "drp"
) -> list[DatasetType]:
    """Register (idempotently) `DATASET_TYPES` and those of a repository ``shape``.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler whose registry receives the dataset types.
    names : iterable of `str`, optional
        Dataset types to register (default: all of `DATASET_TYPES` and of
        ``shape``).
    shape : `str`, optional
        Repository shape, a key of `SHAPE_DATASET_TYPES` (``"drp"`` or
        ``"dp1"``).

    Returns
    -------
    dataset_types : `list` [`lsst.daf.butler.DatasetType`]
        The registered dataset types.
    """
    known = {**DATASET_TYPES, **SHAPE_DATASET_TYPES[shape]}
    out = []
    for name in names if names is not None else known:
        dims, storage_class = known[name]
        dataset_type = DatasetType(name, dims, storage_class, universe=butler.dimensions)
        butler.registry.registerDatasetType(dataset_type)
        out.append(dataset_type)
    return out
