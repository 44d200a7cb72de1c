"""ClassifyAsteroidsTask: taxonomic complexes of Solar System objects from their colours.

Dimensions: the task runs once per ``instrument`` on the Solar System source
table of the whole survey (``ss_source``-like dataset, default name
``ss_source``).  Colours need every band an object was seen in, and an
object's detections are spread over many nights and tracts as it moves, so
per-tract or per-night quanta would split each object's photometry; the
per-object work is small (10^6 objects in minutes), so one quantum per
instrument is the natural unit, as for the ``SSObject`` table itself.
"""

from __future__ import annotations

from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from ..butler.connections import model_input
from ..engine import InferenceConfig
from ..packages import ModelPackage
from .features import AsteroidColumns, AsteroidFlag
from .predict import predict_asteroids

__all__ = ["ClassifyAsteroidsConfig", "ClassifyAsteroidsConnections", "ClassifyAsteroidsTask"]


class ClassifyAsteroidsConnections(
    pipeBase.PipelineTaskConnections,
    dimensions=("instrument",),
    defaultTemplates={"ssSourceTable": "ss_source"},
):
    """Connections of `ClassifyAsteroidsTask`."""

    ssSources = cT.Input(
        doc="Solar System source rows (DIA sources joined with ssSource: band, psfFlux, phaseAngle, "
        "helioRange, topoRange), nJy fluxes.",
        name="{ssSourceTable}",
        storageClass="ArrowAstropy",
        dimensions=("instrument",),
        deferLoad=True,
    )
    model = model_input("asteroids")
    taxonomy = cT.Output(
        doc="Per-object colours, class probabilities, taxonomy_class, anomaly score and flags.",
        name="ml_asteroid_taxonomy",
        storageClass="ArrowAstropy",
        dimensions=("instrument",),
    )


class ClassifyAsteroidsConfig(pipeBase.PipelineTaskConfig, pipelineConnections=ClassifyAsteroidsConnections):
    """Configuration of `ClassifyAsteroidsTask`."""

    idColumn = pexConfig.Field[str](doc="Object id column.", default="ssObjectId")
    bandColumn = pexConfig.Field[str](doc="Band column.", default="band")
    fluxColumn = pexConfig.Field[str](doc="Flux column (nJy).", default="psfFlux")
    fluxErrColumn = pexConfig.Field[str](doc="Flux error column (nJy).", default="psfFluxErr")
    phaseAngleColumn = pexConfig.Field[str](doc="Phase angle column (deg).", default="phaseAngle")
    helioDistColumn = pexConfig.Field[str](doc="Heliocentric distance column (au).", default="helioRange")
    topoDistColumn = pexConfig.Field[str](doc="Topocentric distance column (au).", default="topoRange")
    anomalyThreshold = pexConfig.Field[float](
        doc="Anomaly score above which OUT_OF_DISTRIBUTION is set (1 = training 99th percentile).",
        default=1.0,
    )
    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings (device).")

    def columns(self) -> AsteroidColumns:
        """Return the configured column names."""
        return AsteroidColumns(
            self.idColumn,
            self.bandColumn,
            self.fluxColumn,
            self.fluxErrColumn,
            self.phaseAngleColumn,
            self.helioDistColumn,
            self.topoDistColumn,
        )


class ClassifyAsteroidsTask(pipeBase.PipelineTask):
    """Classify Solar System objects into taxonomic complexes."""

    ConfigClass = ClassifyAsteroidsConfig
    _DefaultName = "classifyAsteroids"
    config: ClassifyAsteroidsConfig

    def _device(self) -> str:
        from ..engine import select_device

        device = select_device(self.config.inference.device, log=self.log)
        return "cpu" if device.type == "mps" else str(device)  # the mixture runs in float64

    def run(self, ssSources: Any, model: ModelPackage) -> pipeBase.Struct:
        """Classify every object of ``ssSources``.

        Parameters
        ----------
        ssSources : table-like
            Solar System source rows.
        model : `~lsst.meas.ml.packages.ModelPackage`
            An ``asteroids`` package.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``taxonomy``: `astropy.table.Table` (see `predict_asteroids`).
        """
        catalog = predict_asteroids(
            model,
            ssSources,
            self.config.columns(),
            anomaly_threshold=self.config.anomalyThreshold,
            device=self._device(),
        )
        self.log.info(
            "Classified %d Solar System objects with %s %s (%d out of distribution).",
            len(catalog),
            model.name,
            model.version,
            int(((catalog["taxonomy_flags"] & AsteroidFlag.OUT_OF_DISTRIBUTION) != 0).sum()),
        )
        return pipeBase.Struct(taxonomy=catalog)

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        model = butlerQC.get(inputRefs.model)
        handle = butlerQC.get(inputRefs.ssSources)
        available = set(handle.get(component="columns"))
        wanted = [c for c in self.config.columns().columns() if c in available]
        table = handle.get(parameters={"columns": wanted})
        butlerQC.put(self.run(ssSources=table, model=model), outputRefs)
