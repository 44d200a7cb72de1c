"""``ClassifyDiaSourcesTask``: reliability and coarse class for every DIA source.

Per ``(instrument, visit, detector)`` it reads the visit image, the
template warped to it, the difference image and the DIA source table; cuts
stamps for all sources at once; runs the ``ml_model_dia`` package through
the shared inference engine; and writes ``ml_dia_scores`` (columns in
`lsst.meas.ml.dia.scoring`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from ..butler.names import CURRENT_NAMES, model_dataset_type
from ..engine import InferenceConfig, InferenceEngine
from ..images import Exposure
from ..packages import ModelPackage
from .data import DiaDataError, StampSet, bad_psf, cut_source_stamps
from .scoring import DIHEDRAL_CHOICES, check_package, predict_probabilities, score_table, use_dihedral_average

__all__ = ["ClassifyDiaSourcesConfig", "ClassifyDiaSourcesConnections", "ClassifyDiaSourcesTask"]

_DIMENSIONS = ("instrument", "visit", "detector")


class ClassifyDiaSourcesConnections(
    pipeBase.PipelineTaskConnections,
    dimensions=_DIMENSIONS,
    defaultTemplates={
        "visitImage": CURRENT_NAMES["visitImage"],
        "templateImage": CURRENT_NAMES["templateImage"],
        "differenceImage": CURRENT_NAMES["differenceImage"],
        "diaSourceTable": CURRENT_NAMES["diaSourceTable"],
    },
):
    science = cT.Input(
        doc="Calibrated visit image (the science image of the subtraction).",
        name="{visitImage}",
        storageClass="MLExposure",
        dimensions=_DIMENSIONS,
    )
    template = cT.Input(
        doc="Template warped and PSF-matched to the visit image.",
        name="{templateImage}",
        storageClass="MLExposure",
        dimensions=_DIMENSIONS,
    )
    difference = cT.Input(
        doc="Difference image (visit minus template).",
        name="{differenceImage}",
        storageClass="MLExposure",
        dimensions=_DIMENSIONS,
    )
    diaSources = cT.Input(
        doc="DIA sources detected on the difference image (needs diaSourceId, x, y).",
        name="{diaSourceTable}",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
    )
    model = cT.PrerequisiteInput(
        doc="DIA classifier model package (`meas-ml train dia`).",
        name=model_dataset_type("dia"),
        storageClass="MLModelPackage",
        dimensions=(),
    )
    scores = cT.Output(
        doc="Reliability, class probabilities and flags per DIA source.",
        name="ml_dia_scores",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
    )


class ClassifyDiaSourcesConfig(pipeBase.PipelineTaskConfig, pipelineConnections=ClassifyDiaSourcesConnections):
    stampSize = pexConfig.RangeField[int](
        doc="Stamp side in pixels; must equal the model package's stamp_size.", default=32, min=8
    )
    dihedralAverage = pexConfig.ChoiceField[str](
        doc="Average the model over the 8 rotations/flips of each stamp.",
        allowed=DIHEDRAL_CHOICES,
        default="auto",
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes that set flag_masked when present in a stamp.",
        default=["BAD", "SAT", "NO_DATA", "SUSPECT"],
    )
    maxNanFraction = pexConfig.RangeField[float](
        doc="flag_nan is set when more than this fraction of stamp pixels is NaN or off the image.",
        default=0.25,
        min=0.0,
        max=1.0,
    )
    minPsfFwhm = pexConfig.Field[float](doc="Smallest plausible PSF FWHM (pixels).", default=0.8)
    maxPsfFwhm = pexConfig.Field[float](doc="Largest plausible PSF FWHM (pixels).", default=15.0)
    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings.")


class ClassifyDiaSourcesTask(pipeBase.PipelineTask):
    """Score every DIA source for reliability (real/bogus) and coarse class."""

    ConfigClass = ClassifyDiaSourcesConfig
    _DefaultName = "classifyDiaSources"
    config: ClassifyDiaSourcesConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = InferenceEngine(self.config.inference, log=self.log)

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        outputs = self.run(**inputs)
        butlerQC.put(outputs, outputRefs)

    def run(
        self,
        science: Exposure,
        template: Exposure,
        difference: Exposure,
        diaSources: Table,
        model: ModelPackage,
    ) -> pipeBase.Struct:
        """Score the DIA sources of one detector.

        Parameters
        ----------
        science, template, difference : `~lsst.meas.ml.images.Exposure`
            Visit image, warped template and difference image (one grid).
        diaSources : `astropy.table.Table`
            DIA sources with ``diaSourceId``, ``x``, ``y`` (parent pixels).
        model : `~lsst.meas.ml.packages.ModelPackage`
            A ``dia`` package whose stamp size equals ``config.stampSize``.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``scores``: `astropy.table.Table`, one row per DIA source.

        Raises
        ------
        PackageError
            The package is not a DIA classifier for this stamp size/channels.
        DiaDataError
            The DIA source table lacks a needed column.
        """
        check_package(model, stamp_size=self.config.stampSize)
        missing = [c for c in ("diaSourceId", "x", "y") if c not in diaSources.colnames]
        if missing:
            raise DiaDataError(
                f"DIA source table ({self.config.connections.diaSourceTable}) lacks column(s) {missing}; "
                f"it has {diaSources.colnames[:20]}. Point the 'diaSourceTable' connection template at a "
                "table with diaSourceId and x, y in parent pixels."
            )
        ids = np.asarray(diaSources["diaSourceId"], dtype=np.int64)
        x = np.asarray(diaSources["x"], dtype=float)
        y = np.asarray(diaSources["y"], dtype=float)
        meta = {"model": model.name, "model_version": model.version, "model_sha256": model.sha256}
        if len(ids) == 0:
            self.log.info("No DIA sources; writing an empty score table.")
            return pipeBase.Struct(scores=score_table(ids, None, None, meta=meta))
        stamps: StampSet = cut_source_stamps(
            science, template, difference, x, y, self.config.stampSize,
            bad_mask_planes=list(self.config.badMaskPlanes),
        )
        scored = ~stamps.offimage
        average = use_dihedral_average(self.config.dihedralAverage, model, self.engine)
        probs = None
        if scored.any():
            probs = predict_probabilities(model, stamps.x[scored], self.engine, average=average)
        psf_bad = bad_psf(difference, min_fwhm=self.config.minPsfFwhm, max_fwhm=self.config.maxPsfFwhm)
        table = score_table(
            ids,
            probs,
            stamps.subset(scored) if not scored.all() else stamps,
            scored=scored,
            max_nan_fraction=self.config.maxNanFraction,
            extra_flags={"flag_bad_psf": np.full(len(ids), psf_bad), "flag_offimage": ~scored},
            meta=dict(meta, dihedral_average=bool(average)),
        )
        self.log.info(
            "Scored %d of %d DIA sources (%d off the image, %d at the edge, %d masked)%s.",
            int(scored.sum()), len(ids), int((~scored).sum()), int(stamps.edge.sum()),
            int(stamps.masked.sum()), " with rotation averaging" if average else "",
        )
        return pipeBase.Struct(scores=table)
