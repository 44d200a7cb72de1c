"""``ClassifyDiaSourcesTask``: reliability and coarse class for every DIA source.

Per ``(instrument, visit, detector)`` it reads the visit image, the
difference image, the template (or derives it, see ``templateSource``) and
the DIA sources of that detector (from a per-detector table, or from a
per-tract table such as Data Preview 1's ``dia_source``, see
``diaSourceLevel``); cuts stamps for all sources at once; runs the
``ml_model_dia`` package through the shared inference engine; and writes
``ml_dia_scores`` (columns in `lsst.meas.ml.dia.predict`).
"""

from __future__ import annotations

from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT
import numpy as np
from astropy.table import Table, vstack

from ..butler.connections import model_input
from ..butler.names import CURRENT_NAMES
from ..engine import InferenceConfig, InferenceEngine
from ..images import PixelPlanes
from ..packages import ModelPackage
from .features import DiaDataError, StampSet, bad_psf, cut_source_stamps, derived_template
from .predict import DIHEDRAL_CHOICES, check_package, score_stamps

__all__ = ["ClassifyDiaSourcesConfig", "ClassifyDiaSourcesConnections", "ClassifyDiaSourcesTask"]

_DIMENSIONS = ("instrument", "visit", "detector")

#: Columns the task reads from a DIA source table.
SOURCE_COLUMNS = ("diaSourceId", "x", "y")


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
    """Connections of `ClassifyDiaSourcesTask`.

    Parameters
    ----------
    config : `ClassifyDiaSourcesConfig`, optional
        The task configuration; ``templateSource="derived"`` drops the
        template input and ``diaSourceLevel="tract"`` reads per-tract tables.
    """

    science = cT.Input(
        doc="Calibrated visit image (the science image of the subtraction).",
        name="{visitImage}",
        storageClass="VisitImage",
        dimensions=_DIMENSIONS,
    )
    template = cT.Input(
        doc="Template warped and PSF-matched to the visit image (templateSource='detector' only).",
        name="{templateImage}",
        storageClass="MaskedImageV2",
        dimensions=_DIMENSIONS,
    )
    difference = cT.Input(
        doc="Difference image (visit minus matched template).",
        name="{differenceImage}",
        storageClass="DifferenceImage",
        dimensions=_DIMENSIONS,
    )
    diaSources = cT.Input(
        doc="DIA sources of the detector (needs diaSourceId, x, y), before any reliability cut.",
        name="{diaSourceTable}",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
        deferLoad=True,
    )
    model = model_input("dia")
    scores = cT.Output(
        doc="Reliability, class probabilities and flags per DIA source.",
        name="ml_dia_scores",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
    )

    def __init__(self, *, config: ClassifyDiaSourcesConfig | None = None) -> None:
        super().__init__(config=config)
        if config is None:
            return
        if config.templateSource == "derived":
            del self.template
        if config.diaSourceLevel == "tract":
            # One table per tract (Data Preview 1's dia_source): every tract
            # the detector overlaps is read, and the rows of this visit and
            # detector are kept.
            self.diaSources = cT.Input(
                doc="DIA sources per tract (needs diaSourceId, visit, detector, x, y).",
                name=config.connections.diaSourceTable,
                storageClass="ArrowAstropy",
                dimensions=("skymap", "tract"),
                deferLoad=True,
                multiple=True,
            )


class ClassifyDiaSourcesConfig(
    pipeBase.PipelineTaskConfig, pipelineConnections=ClassifyDiaSourcesConnections
):
    """Configuration of `ClassifyDiaSourcesTask`."""

    templateSource = pexConfig.ChoiceField[str](
        doc="Where the template stamps come from.",
        allowed={
            "detector": "the per-detector warped template ({templateImage}, e.g. template_detector)",
            "derived": "visit image minus difference image: the PSF-matched template, for repositories "
            "without a per-detector template (Data Preview 1)",
        },
        default="detector",
    )
    diaSourceLevel = pexConfig.ChoiceField[str](
        doc="Dimensions of the DIA source table.",
        allowed={
            "detector": "one table per (visit, detector), e.g. dia_source_unstandardized",
            "tract": "one table per tract with visit and detector columns (Data Preview 1's dia_source)",
        },
        default="detector",
    )
    stampSize = pexConfig.RangeField[int](
        doc="Stamp side in pixels; must equal the model package's stamp_size.", default=32, min=8
    )
    dihedralAverage = pexConfig.ChoiceField[str](
        doc="Average the model over the 8 rotations/flips of each stamp.",
        allowed=DIHEDRAL_CHOICES,
        default="auto",
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes that set flag_masked when present in a stamp (either spelling: SAT or SATURATED).",
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
    """Score every DIA source for reliability (real/bogus) and coarse class.

    Parameters
    ----------
    **kwargs
        Arguments of `lsst.pipe.base.PipelineTask` (``config``, ...).
    """

    ConfigClass = ClassifyDiaSourcesConfig
    _DefaultName = "classifyDiaSources"
    config: ClassifyDiaSourcesConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = InferenceEngine(self.config.inference, log=self.log)

    def read_sources(self, handles: Any, visit: int, detector: int) -> Table:
        """Read the DIA sources of one detector from deferred table handles.

        Only the needed columns are read; a per-tract table (or several) is
        cut to the rows of ``visit`` and ``detector``.

        Parameters
        ----------
        handles : `lsst.daf.butler.DeferredDatasetHandle` or `list`
            The handle of the detector's table (``diaSourceLevel="detector"``)
            or the handles of the per-tract tables (``"tract"``); an
            `astropy.table.Table` is used as it is.
        visit : `int`
            Visit of the detector.
        detector : `int`
            Detector number.

        Returns
        -------
        sources : `astropy.table.Table`
            The sources of the detector, each once.
        """
        if self.config.diaSourceLevel == "detector":
            return _read_columns(handles, SOURCE_COLUMNS)
        parts = []
        for handle in handles:
            table = _read_columns(handle, (*SOURCE_COLUMNS, "visit", "detector"))
            keep = (np.asarray(table["visit"]) == visit) & (np.asarray(table["detector"]) == detector)
            parts.append(table[keep])
        if not parts:
            return Table({c: np.zeros(0) for c in SOURCE_COLUMNS})
        table = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
        # A source in the overlap of two tracts appears once per tract.
        _, first = np.unique(np.asarray(table["diaSourceId"]), return_index=True)
        return table[np.sort(first)]

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        data_id = butlerQC.quantum.dataId
        inputs["diaSources"] = self.read_sources(inputs["diaSources"], data_id["visit"], data_id["detector"])
        inputs.setdefault("template", None)  # templateSource="derived" has no template connection
        butlerQC.put(self.run(**inputs), outputRefs)

    def run(
        self,
        science: Any,
        template: Any,
        difference: Any,
        diaSources: Table,
        model: ModelPackage,
    ) -> pipeBase.Struct:
        """Score the DIA sources of one detector.

        Parameters
        ----------
        science : `lsst.images.VisitImage`
            Visit image (or `~lsst.meas.ml.images.PixelPlanes`).
        template : `lsst.images.MaskedImage` or `None`
            Template warped to the visit; required when ``templateSource`` is
            ``"detector"``, ignored (derived) when ``"derived"``.
        difference : `lsst.images.DifferenceImage`
            Difference image on the visit's pixel grid.
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
            The DIA source table lacks a needed column, or a template is
            missing where one is configured.
        """
        check_package(model, stamp_size=self.config.stampSize)
        missing = [c for c in SOURCE_COLUMNS if c not in diaSources.colnames]
        if missing:
            raise DiaDataError(
                f"DIA source table ({self.config.connections.diaSourceTable}) lacks column(s) {missing}; "
                f"it has {diaSources.colnames[:20]}. Point the 'diaSourceTable' connection template at a "
                "table with diaSourceId and x, y in parent pixels."
            )
        science = PixelPlanes.from_image(science)
        difference = PixelPlanes.from_image(difference)
        if self.config.templateSource == "derived":
            template = derived_template(science, difference)
        elif template is None:
            raise DiaDataError(
                "templateSource='detector' but no template was given; pass one, or set "
                "templateSource='derived' to use the visit image minus the difference image."
            )
        else:
            template = PixelPlanes.from_image(template)
        ids = np.asarray(diaSources["diaSourceId"], dtype=np.int64)
        x = np.asarray(diaSources["x"], dtype=float)
        y = np.asarray(diaSources["y"], dtype=float)
        if len(ids) == 0:
            self.log.info("No DIA sources; writing an empty score table.")
            stamps = StampSet.concatenate([], self.config.stampSize)
        else:
            stamps = cut_source_stamps(
                science,
                template,
                difference,
                x,
                y,
                self.config.stampSize,
                bad_mask_planes=list(self.config.badMaskPlanes),
            )
        scored = ~stamps.offimage
        psf_bad = bad_psf(difference, min_fwhm=self.config.minPsfFwhm, max_fwhm=self.config.maxPsfFwhm)
        table = score_stamps(
            model,
            ids,
            stamps.subset(scored),
            self.engine,
            scored=scored,
            dihedral=self.config.dihedralAverage,
            max_nan_fraction=self.config.maxNanFraction,
            extra_flags={"flag_bad_psf": np.full(len(ids), psf_bad), "flag_offimage": ~scored},
        )
        table.meta["template_source"] = self.config.templateSource
        self.log.info(
            "Scored %d of %d DIA sources (%d off the image, %d at the edge, %d masked; template: %s)%s.",
            int(scored.sum()),
            len(ids),
            int((~scored).sum()),
            int(stamps.edge.sum()),
            int(stamps.masked.sum()),
            self.config.templateSource,
            " with rotation averaging" if table.meta["dihedral_average"] else "",
        )
        return pipeBase.Struct(scores=table)


def _read_columns(handle: Any, wanted: tuple[str, ...]) -> Table:
    """Read the wanted columns that exist from a deferred table handle (or pass a table)."""
    if isinstance(handle, Table):
        return handle
    available = set(handle.get(component="columns"))
    return handle.get(parameters={"columns": [c for c in wanted if c in available]})
