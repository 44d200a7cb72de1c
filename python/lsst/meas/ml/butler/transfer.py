"""Copy what a pipeline needs from a read-only Butler into a local repository.

The Rubin Science Platform's Data Preview 1 Butler is remote and read-only:
``pipetask run`` cannot write its outputs there.  `transfer_inputs` builds the
quantum graph of a pipeline against such a Butler (nothing is written to
it), collects every overall input and prerequisite input the graph reads,
copies those datasets with their dimension records into a local writeable
repository (keeping their RUN collections), and recreates the input
collections the user named (a CHAINED ``MLSim/defaults`` or
``LSSTComCam/DP1`` pointing at the copied runs), so that the same
``pipetask run -i ...`` command then runs on the local repository.

Model packages (``ml_model_*``) are never in a survey's Butler: they may be
absent from the source, and are registered in the local repository with
``meas-ml register`` afterwards.  Input collections that the source lacks
(e.g. ``models/dia/1.0.0``) are skipped for the same reason.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lsst.daf.butler import (
    Butler,
    CollectionType,
    DatasetRef,
    DatasetType,
    MissingCollectionError,
    MissingDatasetTypeError,
)
from lsst.pipe.base import Pipeline
from lsst.pipe.base.all_dimensions_quantum_graph_builder import AllDimensionsQuantumGraphBuilder
from lsst.pipe.base.pipeline_graph import PipelineGraph

from ..errors import MeasMlUserError

__all__ = ["DEFAULT_ALLOW_MISSING", "TransferError", "split_collections", "transfer_inputs"]

_log = logging.getLogger(__name__)

#: Dimensionless prerequisite inputs that may be absent from the source
#: (registered in the destination instead): the model packages.
DEFAULT_ALLOW_MISSING: tuple[str, ...] = ("ml_model_*",)

#: RUN name of the placeholder refs standing for allowed-missing inputs
#: while the graph is built; never written anywhere.
_PLACEHOLDER_RUN = "meas_ml/transfer_inputs/not_in_source"

#: Default output RUN of the (never executed) graph built on the source.
_GRAPH_OUTPUT_RUN = "meas_ml/transfer_inputs/graph"


class TransferError(MeasMlUserError, RuntimeError):
    """The inputs of a pipeline could not be found or copied."""


def split_collections(collections: str | Iterable[str]) -> list[str]:
    """Split collection names from a comma-separated string or an iterable of them.

    Parameters
    ----------
    collections : `str` or iterable of `str`
        Collection names; each item may hold several, separated by commas.

    Returns
    -------
    names : `list` [`str`]
        The names, stripped, without empty ones.
    """
    if isinstance(collections, str):
        collections = [collections]
    names: list[str] = []
    for item in collections:
        names.extend(part.strip() for part in item.split(",") if part.strip())
    return names


class _InputGraphBuilder(AllDimensionsQuantumGraphBuilder):
    """A graph builder that tolerates chosen missing prerequisite inputs.

    Dimensionless prerequisite inputs (the model packages) that match
    ``allow_missing`` are looked up in the source as usual; when absent, a
    placeholder ref in a RUN that exists nowhere stands in for them, so that
    the graph is built as if they were there.  `transfer_inputs` reports
    them and copies nothing for them.
    """

    def __init__(self, *args: Any, allow_missing: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.missing_inputs: set[str] = set()
        if not allow_missing:
            return
        for info in self.prerequisite_info.values():
            for finder in info.finders.values():
                name = finder.dataset_type_node.name
                if (
                    finder.lookup_function is None
                    and not finder.dataset_type_node.dimensions
                    and any(fnmatch.fnmatchcase(name, pattern) for pattern in allow_missing)
                ):
                    finder.lookup_function = self._find_or_placeholder

    def _find_or_placeholder(
        self, dataset_type: DatasetType, registry: Any, data_id: Any, collections: Sequence[str]
    ) -> list[DatasetRef]:
        """Find the dataset in ``collections``, or a placeholder when there is none."""
        try:
            ref = registry.findDataset(dataset_type, collections=collections)
        except MissingDatasetTypeError:
            ref = None
        if ref is not None:
            return [ref]
        self.missing_inputs.add(dataset_type.name)
        return [
            DatasetRef(
                dataset_type,
                self.empty_data_id,
                run=_PLACEHOLDER_RUN,
                id=uuid.uuid5(uuid.NAMESPACE_URL, f"meas_ml:{_PLACEHOLDER_RUN}:{dataset_type.name}"),
            )
        ]


def _open_source(source: str | os.PathLike | Butler) -> Butler:
    if isinstance(source, Butler):
        return source
    return Butler.from_config(os.fspath(source), writeable=False)


def _open_dest(dest: str | os.PathLike | Butler) -> tuple[Butler, bool]:
    """Open (or create) a writeable Butler on ``dest``; say whether it was created here."""
    from .repo import create_repo, open_repo

    if isinstance(dest, Butler):
        if not dest.isWriteable():
            raise TransferError("The destination Butler must be writeable.")
        return dest, False
    root = os.fspath(dest)
    if "://" not in root and not os.path.exists(os.path.join(root, "butler.yaml")):
        return create_repo(root), True
    return open_repo(root, writeable=True), False


def _pipeline_graph(pipeline: str | os.PathLike | Pipeline | PipelineGraph) -> PipelineGraph:
    if isinstance(pipeline, PipelineGraph):
        return pipeline
    if not isinstance(pipeline, Pipeline):
        pipeline = Pipeline.from_uri(os.fspath(pipeline))
    return pipeline.to_graph()


def _existing_collections(source: Butler, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``names`` (wildcards allowed) into those the source has and those it lacks."""
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        try:
            matched = source.collections.query(name)
        except MissingCollectionError:
            matched = []
        if matched:
            found.extend(c for c in matched if c not in found)
        else:
            missing.append(name)
    return found, missing


def _recreate_collection(
    source: Butler, dest: Butler, name: str, refs_by_type: Mapping[str, list[DatasetRef]], done: set[str]
) -> None:
    """Give ``dest`` the collection ``name`` as the source defines it (recursively)."""
    if name in done:
        return
    done.add(name)
    info = source.collections.get_info(name)
    if info.type is CollectionType.CHAINED:
        for child in info.children:
            _recreate_collection(source, dest, child, refs_by_type, done)
        dest.collections.register(name, CollectionType.CHAINED, doc=info.doc or None)
        dest.collections.redefine_chain(name, list(info.children))
        return
    dest.collections.register(name, info.type, doc=info.doc or None)
    if info.type is CollectionType.TAGGED:
        for dataset_type, refs in refs_by_type.items():
            wanted = {ref.id for ref in refs}
            tagged = [
                ref
                for ref in source.query_datasets(
                    dataset_type, collections=name, find_first=False, limit=None, explain=False
                )
                if ref.id in wanted
            ]
            if tagged:
                dest.registry.associate(name, tagged)
    elif info.type is CollectionType.CALIBRATION:
        for dataset_type, refs in refs_by_type.items():
            wanted = {ref.id for ref in refs}
            try:
                associations = list(
                    source.registry.queryDatasetAssociations(
                        dataset_type, collections=[name], flattenChains=False
                    )
                )
            except NotImplementedError:  # a client that cannot list validity ranges
                _log.warning(
                    "Cannot read the validity ranges of %s in %s: certify them by hand.", dataset_type, name
                )
                continue
            for assoc in associations:
                if assoc.ref.id in wanted and assoc.timespan is not None:
                    dest.registry.certify(name, [assoc.ref], assoc.timespan)


def transfer_inputs(
    source: str | os.PathLike | Butler,
    dest: str | os.PathLike | Butler,
    pipeline: str | os.PathLike | Pipeline | PipelineGraph,
    input_collections: str | Iterable[str],
    where: str = "",
    output_run: str | None = None,
    *,
    bind: Mapping[str, Any] | None = None,
    allow_missing: Sequence[str] = DEFAULT_ALLOW_MISSING,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Copy every input a pipeline needs from a read-only Butler to a local one.

    Parameters
    ----------
    source : path-like, `str` or `lsst.daf.butler.Butler`
        The source repository (a path, a repository label such as ``dp1`` or
        a Butler); only read.
    dest : path-like, `str` or `lsst.daf.butler.Butler`
        The local writeable repository; created with
        `~lsst.meas.ml.butler.create_repo` when it does not exist.
    pipeline : path-like, `lsst.pipe.base.Pipeline` or `~lsst.pipe.base.pipeline_graph.PipelineGraph`
        The pipeline to be run (a file such as ``pipelines/DemoPipeline.yaml``,
        with ``#label`` subsets allowed).
    input_collections : `str` or iterable of `str`
        The collections ``pipetask run -i`` will be given (comma-separated
        string or list).  Those the source lacks are skipped (model RUN
        collections are registered in the destination instead).
    where : `str`, optional
        Data ID query constraint, as ``pipetask run -d``.
    output_run : `str`, optional
        Output RUN of the graph built on the source; it is never written
        (only checked for existing outputs).
    bind : mapping, optional
        Values for identifiers in ``where``.
    allow_missing : sequence of `str`, optional
        Names or glob patterns of dimensionless prerequisite inputs that may
        be absent from the source (default: the model packages).
    dry_run : `bool`, optional
        Build the graph and count, but copy nothing and create no repository.

    Returns
    -------
    summary : `dict`
        ``quanta`` (per task), ``datasets`` (refs the graph reads from the
        source), ``by_dataset_type``, ``transferred`` (newly copied),
        ``already_present`` (in the destination before, skipped), ``runs``,
        ``collections`` (recreated), ``skipped_collections`` (absent from
        the source), ``missing_inputs`` (allowed-missing dataset types to
        register in the destination), ``dest`` and timings in seconds.

    Raises
    ------
    TransferError
        No input collection exists in the source, or the graph is empty.
    """
    t0 = time.perf_counter()
    source_butler = _open_source(source)
    requested = split_collections(input_collections)
    collections, skipped = _existing_collections(source_butler, requested)
    if skipped:
        _log.info("Input collections not in the source (skipped): %s.", ", ".join(skipped))
    if not collections:
        raise TransferError(f"None of the input collections {requested} exists in the source repository.")
    graph = _pipeline_graph(pipeline)
    output_run = output_run or _GRAPH_OUTPUT_RUN
    builder = _InputGraphBuilder(
        graph,
        source_butler,
        where=where,
        bind=bind,
        input_collections=collections,
        output_run=output_run,
        allow_missing=list(allow_missing),
    )
    components = builder.finish(attach_datastore_records=False)
    t_graph = time.perf_counter()

    if builder.missing_inputs:
        _log.info(
            "Not in the source (register them in the destination): %s.",
            ", ".join(sorted(builder.missing_inputs)),
        )
    quanta = Counter(q.task_label for q in components.quantum_datasets.values())
    if not quanta:
        raise TransferError(
            f"The pipeline has no quanta in {collections} with where={where!r}: nothing to transfer."
        )
    predicted: dict[uuid.UUID, Any] = {}
    for quantum in (*components.init_quanta.root, *components.quantum_datasets.values()):
        for datasets in quantum.inputs.values():
            for dataset in datasets:
                if dataset.run in (output_run, _PLACEHOLDER_RUN):
                    continue  # produced by the pipeline itself, or supplied in the destination
                predicted.setdefault(dataset.dataset_id, dataset)
    refs = [components.make_dataset_ref(d) for d in predicted.values()]
    refs_by_type: dict[str, list[DatasetRef]] = {}
    for ref in refs:
        refs_by_type.setdefault(ref.datasetType.name, []).append(ref)
    summary: dict[str, Any] = {
        "quanta": dict(sorted(quanta.items())),
        "datasets": len(refs),
        "by_dataset_type": {name: len(v) for name, v in sorted(refs_by_type.items())},
        "runs": sorted({ref.run for ref in refs}),
        "collections": [],
        "skipped_collections": skipped,
        "missing_inputs": sorted(builder.missing_inputs),
        "transferred": 0,
        "dest": str(dest),
        "graph_s": round(t_graph - t0, 2),
    }
    if dry_run:
        summary["total_s"] = round(time.perf_counter() - t0, 2)
        return summary

    dest_butler, created = _open_dest(dest)
    summary["created"] = created
    stored = dest_butler.stored_many(refs)
    todo = [ref for ref, present in stored.items() if not present]
    summary["already_present"] = len(refs) - len(todo)
    if todo:
        dest_butler.transfer_from(
            source_butler, todo, transfer="copy", register_dataset_types=True, transfer_dimensions=True
        )
        summary["transferred"] = sum(dest_butler.stored_many(todo).values())
    t_copy = time.perf_counter()
    done: set[str] = set()
    for name in collections:
        _recreate_collection(source_butler, dest_butler, name, refs_by_type, done)
    summary["collections"] = sorted(done)
    summary["copy_s"] = round(t_copy - t_graph, 2)
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    _log.info(
        "Copied %d of %d input datasets (%s) for %s quanta into %s.",
        summary["transferred"],
        len(refs),
        ", ".join(f"{k}: {v}" for k, v in summary["by_dataset_type"].items()),
        sum(quanta.values()),
        summary["dest"],
    )
    return summary
