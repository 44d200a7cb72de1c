"""``EmbedGalaxiesTask``: a self-supervised representation of every object of a patch.

Per ``(skymap, tract, patch)`` it reads the patch's coadd in each band of
the model, the object table of the tract (only the columns it needs), cuts
one multi-band stamp per object of the patch through the shared cutout code,
runs the ``ml_model_embedding`` package through the shared inference engine
and writes ``ml_embedding`` (columns in `lsst.meas.ml.embedding.predict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT
import numpy as np
from astropy.table import Table

from ..butler.connections import model_input, object_table_input, patch_coadds_input
from ..butler.names import CURRENT_NAMES
from ..engine import InferenceConfig, InferenceEngine
from ..packages import ModelPackage
from .features import EmbeddingInputError, StampBatch, coadd_stamps
from .predict import check_package, predict_embedding

__all__ = ["EmbedGalaxiesConfig", "EmbedGalaxiesConnections", "EmbedGalaxiesTask"]

_DIMENSIONS = ("skymap", "tract", "patch")


class EmbedGalaxiesConnections(
    pipeBase.PipelineTaskConnections,
    dimensions=_DIMENSIONS,
    defaultTemplates={"coadd": CURRENT_NAMES["coadd"], "objectTable": CURRENT_NAMES["objectTable"]},
):
    """Connections of `EmbedGalaxiesTask`."""

    coadds = patch_coadds_input("Coadd of the patch in each band (the bands of the model are used).")
    objectCatalog = object_table_input(
        "Object table of the tract (needs an id, x, y in parent pixels and the patch column)."
    )
    model = model_input("embedding")
    embedding = cT.Output(
        doc="L2-normalised self-supervised representation and flags per object of the patch.",
        name="ml_embedding",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
    )


class EmbedGalaxiesConfig(pipeBase.PipelineTaskConfig, pipelineConnections=EmbedGalaxiesConnections):
    """Configuration of `EmbedGalaxiesTask`."""

    idColumn = pexConfig.Field[str](doc="Object identifier column.", default="objectId")
    xColumn = pexConfig.Field[str](doc="Column of x in parent (tract) pixels.", default="x")
    yColumn = pexConfig.Field[str](doc="Column of y in parent (tract) pixels.", default="y")
    patchColumn = pexConfig.Field[str](doc="Column holding each object's patch.", default="patch")
    primaryColumn = pexConfig.Field[str](
        doc="Boolean column of primary objects (only those are embedded); '' embeds every row of the patch.",
        default="detect_isPrimary",
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes whose pixels are unusable (zeroed, counted in ml_nan_fraction).",
        default=["BAD", "SAT", "NO_DATA"],
    )
    maxNanFraction = pexConfig.RangeField[float](
        doc="flag_nan is set when more than this fraction of stamp pixels is unusable.",
        default=0.25,
        min=0.0,
        max=1.0,
    )
    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings.")


class EmbedGalaxiesTask(pipeBase.PipelineTask):
    """Embed every object of a patch with a self-supervised encoder.

    Parameters
    ----------
    **kwargs
        Arguments of `lsst.pipe.base.PipelineTask` (``config``, ...).
    """

    ConfigClass = EmbedGalaxiesConfig
    _DefaultName = "embedGalaxies"
    config: EmbedGalaxiesConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = InferenceEngine(self.config.inference, log=self.log)

    def _columns(self) -> list[str]:
        cols = [self.config.idColumn, self.config.xColumn, self.config.yColumn, self.config.patchColumn]
        if self.config.primaryColumn:
            cols.append(self.config.primaryColumn)
        return cols

    def select_objects(self, objectCatalog: Table, patch: int | None) -> Table:
        """Return the rows of the patch (primary ones) with the needed columns.

        Parameters
        ----------
        objectCatalog : `astropy.table.Table`
            Object table of the tract.
        patch : `int` or `None`
            The patch (None: every row).

        Returns
        -------
        objects : `astropy.table.Table`
            The selected rows.

        Raises
        ------
        EmbeddingInputError
            A needed column is missing.
        """
        missing = [c for c in self._columns() if c not in objectCatalog.colnames]
        if missing:
            raise EmbeddingInputError(
                f"Object table ({self.config.connections.objectTable}) lacks column(s) {missing}; it has "
                f"{objectCatalog.colnames[:20]}. Set idColumn/xColumn/yColumn/patchColumn/primaryColumn."
            )
        keep = np.ones(len(objectCatalog), bool)
        if patch is not None:
            keep &= np.asarray(objectCatalog[self.config.patchColumn]) == patch
        if self.config.primaryColumn:
            keep &= np.asarray(objectCatalog[self.config.primaryColumn], bool)
        return objectCatalog[keep]

    def run(
        self, coadds: Mapping[str, Any], objectCatalog: Table, model: ModelPackage, patch: int | None = None
    ) -> pipeBase.Struct:
        """Embed the objects of one patch.

        Parameters
        ----------
        coadds : `~collections.abc.Mapping` [`str`, `~typing.Any`]
            Coadd per band (``lsst.images`` masked images or `PixelPlanes`);
            bands of the model without a coadd give zero channels and
            ``flag_missing_band``.
        objectCatalog : `astropy.table.Table`
            Object table (the tract's; rows of other patches are dropped).
        model : `~lsst.meas.ml.packages.ModelPackage`
            An ``embedding`` package trained on bands.
        patch : `int`, optional
            The patch (None: embed every row given).

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``embedding``: `astropy.table.Table`, one row per object.

        Raises
        ------
        PackageError
            The package is not an embedding of coadd bands.
        EmbeddingInputError
            A needed column is missing, or no coadd of the model's bands.
        """
        check_package(model)
        bands = model.inputs.get("bands")
        if not bands:
            raise EmbeddingInputError(
                f"Model package {model.name!r} was trained on image files without bands; the task needs a "
                "package trained on coadds (meas-ml train embedding --repo ...)."
            )
        objects = self.select_objects(objectCatalog, patch)
        ids = np.asarray(objects[self.config.idColumn], dtype=np.int64)
        size = int(model.inputs["stamp_size"])
        missing = [b for b in bands if b not in coadds]
        if len(ids) == 0:
            self.log.info("No objects in this patch; writing an empty embedding table.")
            c = len(bands)
            stamps = StampBatch(
                np.zeros((0, c, size, size), np.float32),
                np.zeros(0, np.float32),
                np.zeros(0, bool),
                np.zeros(0, bool),
                np.zeros(0, bool),
            )
        else:
            stamps = coadd_stamps(
                coadds,
                np.asarray(objects[self.config.xColumn], float),
                np.asarray(objects[self.config.yColumn], float),
                size,
                bands,
                bad_mask_planes=list(self.config.badMaskPlanes),
            )
        if missing:
            self.log.warning("No coadd in band(s) %s: their channels are zero (flag_missing_band).", missing)
        table = predict_embedding(
            model,
            ids,
            stamps,
            self.engine,
            bands=bands,
            max_nan_fraction=self.config.maxNanFraction,
            extra_flags={"flag_missing_band": np.full(len(ids), bool(missing))},
        )
        self.log.info(
            "Embedded %d of %d objects (%d off the image, %d at the edge) with %s %s.",
            int((~stamps.offimage).sum()),
            len(ids),
            int(stamps.offimage.sum()),
            int(stamps.edge.sum()),
            model.name,
            model.version,
        )
        return pipeBase.Struct(embedding=table)

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        model = butlerQC.get(inputRefs.model)
        handle = butlerQC.get(inputRefs.objectCatalog)
        available = set(handle.get(component="columns"))
        table = handle.get(parameters={"columns": [c for c in self._columns() if c in available]})
        bands = set(model.inputs.get("bands") or [])
        coadds = {}
        for ref in inputRefs.coadds:
            band = ref.dataId["band"]
            if band in bands:
                coadds[band] = butlerQC.get(ref).get()
        patch = int(butlerQC.quantum.dataId["patch"])
        butlerQC.put(self.run(coadds=coadds, objectCatalog=table, model=model, patch=patch), outputRefs)
