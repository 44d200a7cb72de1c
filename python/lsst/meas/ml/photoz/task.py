"""EstimatePhotozTask: MBRNN photometric redshifts for an object table, per tract."""

from __future__ import annotations

from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT
from astropy.table import Table

from ..butler.connections import model_input
from ..engine import InferenceConfig, InferenceEngine
from ..packages import ModelPackage
from .features import DEFAULT_BANDS, DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, PhotozColumns
from .pdf import DEFAULT_COMPACT_LEVELS
from .predict import DEFAULT_CHUNK_SIZE, PDF_FORMATS, PhotozFlag, columns_for_package, predict_photoz_chunked

__all__ = ["EstimatePhotozConfig", "EstimatePhotozConnections", "EstimatePhotozTask"]


class EstimatePhotozConnections(
    pipeBase.PipelineTaskConnections,
    dimensions=("skymap", "tract"),
    defaultTemplates={"objectTable": "object"},
):
    """Connections of `EstimatePhotozTask`."""

    objectCatalog = cT.Input(
        doc="Object table with fluxes in nJy (only the needed columns are read).",
        name="{objectTable}",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
        deferLoad=True,
    )
    model = model_input("photoz")
    photoz = cT.Output(
        doc="Photometric redshifts: point estimates, 68% interval, PDF, OOD score and flags.",
        name="ml_photoz",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
    )


class EstimatePhotozConfig(pipeBase.PipelineTaskConfig, pipelineConnections=EstimatePhotozConnections):
    """Configuration of `EstimatePhotozTask`."""

    bands = pexConfig.ListField[str](
        doc="Bands, in wavelength order; must equal the bands the model was trained on.",
        default=list(DEFAULT_BANDS),
    )
    fluxTemplate = pexConfig.Field[str](doc="Flux column template (nJy).", default=DEFAULT_FLUX_TEMPLATE)
    fluxErrTemplate = pexConfig.Field[str](
        doc="Flux error column template (nJy).", default=DEFAULT_FLUX_ERR_TEMPLATE
    )
    ebvColumn = pexConfig.Field[str](
        doc="E(B-V) column; '' uses the package's (none if it was trained without).", default=""
    )
    idColumn = pexConfig.Field[str](doc="Object identifier column.", default="objectId")
    missingBand = pexConfig.ChoiceField[str](
        doc="What to do when a band's columns are absent from the object table.",
        allowed={
            "error": "fail, naming the missing columns",
            "missing": "treat the band as not observed for every object (MISSING_BAND flag)",
        },
        default="error",
    )
    pdfFormat = pexConfig.ChoiceField[str](
        doc="How the PDF is stored.",
        allowed={
            "full": "photoz_pdf: float32 probability per redshift bin",
            "quantiles": "photoz_pdf_quantiles: float16 quantiles at compactLevels (survey-scale storage)",
            "both": "both columns",
        },
        default="full",
    )
    compactLevels = pexConfig.ListField[float](
        doc="Probability levels of the compact (quantile) PDF form.", default=list(DEFAULT_COMPACT_LEVELS)
    )
    oodThreshold = pexConfig.Field[float](
        doc="OOD score above which OUT_OF_DISTRIBUTION is flagged (1 = training 99th percentile).",
        default=1.0,
    )
    chunkSize = pexConfig.RangeField[int](
        doc="Rows predicted at a time (rounded down to a multiple of the forward batch size).  Bounds the "
        "temporaries of the prediction (about 7 kB per row with 150 PDF bins); the object table's needed "
        "columns and the output catalog are still held whole.",
        default=DEFAULT_CHUNK_SIZE,
        min=1,
    )
    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings.")

    def validate(self) -> None:
        super().validate()
        PhotozColumns(
            bands=tuple(self.bands), flux_template=self.fluxTemplate, flux_err_template=self.fluxErrTemplate
        )
        assert self.pdfFormat in PDF_FORMATS
        if any(not 0.0 < level < 1.0 for level in self.compactLevels):
            raise pexConfig.FieldValidationError(
                EstimatePhotozConfig.compactLevels, self, "levels must lie strictly between 0 and 1"
            )


class EstimatePhotozTask(pipeBase.PipelineTask):
    """Estimate photometric redshifts with an MBRNN model package.

    ``run`` takes an in-memory table and a package, so it is usable without
    a Butler; ``runQuantum`` reads only the needed columns of the object
    table.

    Memory: the ``ArrowAstropy`` read takes columns but not row ranges, so
    the needed columns of the tract's object table are read once, whole
    (2 x bands + 2 columns, about 110 bytes per row for ugrizy, instead of
    the whole table's hundreds of columns); the prediction then runs
    ``config.chunkSize`` rows at a time (`predict_photoz_chunked`), which
    bounds its temporaries (float32 and float64 PDFs, about 7 kB per row),
    and fills an output catalog allocated once.  Not bounded: that input
    and the output catalog (about 40 bytes per row plus 600 for
    ``pdfFormat="full"`` or 30 for ``"quantiles"``), which the Butler
    writes in one ``put``.  The result is identical to one whole-table
    `predict_photoz` call.

    Parameters
    ----------
    **kwargs
        Keyword arguments passed to `lsst.pipe.base.PipelineTask`.
    """

    ConfigClass = EstimatePhotozConfig
    _DefaultName = "estimatePhotoz"
    config: EstimatePhotozConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = InferenceEngine(self.config.inference, log=self.log)

    def columns_for(self, package: ModelPackage) -> PhotozColumns:
        """Return the column names for ``package`` under this configuration (checks the bands).

        Parameters
        ----------
        package : `~lsst.meas.ml.packages.ModelPackage`
            A photo-z package.

        Returns
        -------
        columns : `~lsst.meas.ml.photoz.features.PhotozColumns`
            The configured columns, with the package's bands.

        Raises
        ------
        lsst.meas.ml.packages.PackageError
            If the package is not a photo-z package or was trained on
            other bands than ``config.bands``.
        """
        return columns_for_package(
            package,
            bands=list(self.config.bands),
            flux_template=self.config.fluxTemplate,
            flux_err_template=self.config.fluxErrTemplate,
            ebv_column=self.config.ebvColumn or None,
            id_column=self.config.idColumn,
            missing_band=self.config.missingBand,
        )

    def run(self, objectCatalog: Any, model: ModelPackage) -> pipeBase.Struct:
        """Estimate photo-z for every row of ``objectCatalog``.

        Parameters
        ----------
        objectCatalog : table-like
            Fluxes and errors (nJy) per band; rows are never dropped.
        model : `~lsst.meas.ml.packages.ModelPackage`
            A photoz package trained on ``config.bands``.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``photoz``: `astropy.table.Table` (see
            `~lsst.meas.ml.photoz.predict.predict_photoz`; predicted
            ``config.chunkSize`` rows at a time).
        """
        catalog = predict_photoz_chunked(
            model,
            objectCatalog,
            self.columns_for(model),
            chunk_size=self.config.chunkSize,
            engine=self.engine,
            pdf_format=self.config.pdfFormat,
            compact_levels=list(self.config.compactLevels),
            ood_threshold=self.config.oodThreshold,
        )
        self.log.info(
            "Estimated photo-z for %d objects with %s %s (%d flagged out of distribution).",
            len(catalog),
            model.name,
            model.version,
            int(((catalog["photoz_flags"] & PhotozFlag.OUT_OF_DISTRIBUTION) != 0).sum()),
        )
        return pipeBase.Struct(photoz=catalog)

    def read_catalog(self, handle: Any, model: ModelPackage) -> Table:
        """Read only the columns ``model`` needs from a deferred object-table handle.

        Columns absent from the table are not requested, so that
        `predict_photoz` reports them by name (or treats their band as
        missing when ``missingBand="missing"``).

        Parameters
        ----------
        handle : `lsst.daf.butler.DeferredDatasetHandle`
            Deferred handle of the object table (``ArrowAstropy``).
        model : `~lsst.meas.ml.packages.ModelPackage`
            The photo-z package.

        Returns
        -------
        table : `astropy.table.Table`
            The object table, with the needed columns it has.
        """
        wanted = self.columns_for(model).columns()
        available = set(handle.get(component="columns"))
        return handle.get(parameters={"columns": [c for c in wanted if c in available]})

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        model = butlerQC.get(inputRefs.model)
        table = self.read_catalog(butlerQC.get(inputRefs.objectCatalog), model)
        outputs = self.run(objectCatalog=table, model=model)
        butlerQC.put(outputs, outputRefs)
