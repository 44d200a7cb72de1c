"""ClassifyMorphologyTask: Hubble-sequence classes of every object of a coadd patch.

Per ``(skymap, tract, patch)`` it reads the deep coadds of the configured
bands (a band without a coadd is a missing band: its channels are blank and
``MISSING_BAND`` is set), the objects of the patch from the tract's object
table (only the needed columns), cuts one stamp per object with the shared
cutout code, runs the ``ml_model_morphology`` package through the shared
inference engine and writes ``ml_morphology``.  For a few chosen objects
(the ``attentionBrightest`` brightest in ``attentionBand`` and the ids in
``attentionIds``) it also writes the model's attention maps
(``ml_morphology_attention``, a table) and a PNG of them over the band's
stamps (``ml_morphology_attention_plot``, storage class ``Plot``).
"""

from __future__ import annotations

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
from .features import DEFAULT_BANDS, MorphologyFlag
from .predict import attention_maps, predict_morphology

__all__ = [
    "ClassifyMorphologyConfig",
    "ClassifyMorphologyConnections",
    "ClassifyMorphologyTask",
    "attention_figure",
]

_DIMENSIONS = ("skymap", "tract", "patch")

#: Stamps per forward pass (the task's ``inference.batchSize`` default).
DEFAULT_BATCH_SIZE = 256


class ClassifyMorphologyConnections(
    pipeBase.PipelineTaskConnections,
    dimensions=_DIMENSIONS,
    defaultTemplates={"coadd": CURRENT_NAMES["coadd"], "objectTable": CURRENT_NAMES["objectTable"]},
):
    """Connections of `ClassifyMorphologyTask`.

    Parameters
    ----------
    config : `ClassifyMorphologyConfig`, optional
        Without chosen objects (``attentionBrightest=0``, no
        ``attentionIds``) the attention outputs are dropped.
    """

    coadds = patch_coadds_input("Deep coadds of the patch, one per band (bands not configured are not read).")
    objectCatalog = object_table_input(
        "Object table of the tract (objectId, x, y in the tract's pixel frame, patch)."
    )
    model = model_input("morphology")
    morphology = cT.Output(
        doc="Class probabilities, morph_class, morph_entropy, OOD score and flags per object of the patch.",
        name="ml_morphology",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
    )
    attention = cT.Output(
        doc="Attention maps of the chosen objects (flattened S*S rows, with the band's stamps).",
        name="ml_morphology_attention",
        storageClass="ArrowAstropy",
        dimensions=_DIMENSIONS,
    )
    attentionPlot = cT.Output(
        doc="PNG of the attention maps over the chosen objects' stamps.",
        name="ml_morphology_attention_plot",
        storageClass="Plot",
        dimensions=_DIMENSIONS,
    )

    def __init__(self, *, config: ClassifyMorphologyConfig | None = None) -> None:
        super().__init__(config=config)
        if config is not None and config.attentionBrightest == 0 and not config.attentionIds:
            del self.attention
            del self.attentionPlot


class ClassifyMorphologyConfig(
    pipeBase.PipelineTaskConfig, pipelineConnections=ClassifyMorphologyConnections
):
    """Configuration of `ClassifyMorphologyTask`."""

    bands = pexConfig.ListField[str](
        doc="Bands of the model's image channels, in order; must equal the package's.",
        default=list(DEFAULT_BANDS),
    )
    stampSize = pexConfig.RangeField[int](
        doc="Stamp side in pixels; must equal the package's stamp_size.", default=64, min=8
    )
    idColumn = pexConfig.Field[str](doc="Object id column.", default="objectId")
    xColumn = pexConfig.Field[str](doc="Column of x (tract pixel frame).", default="x")
    yColumn = pexConfig.Field[str](doc="Column of y (tract pixel frame).", default="y")
    patchColumn = pexConfig.Field[str](
        doc="Column of the patch index; '' keeps the objects whose centre is on the coadd.", default="patch"
    )
    dihedralAverage = pexConfig.Field[bool](
        doc="Average the probabilities over the 8 rotations and flips of each stamp (8x the model time).",
        default=False,
    )
    oodThreshold = pexConfig.Field[float](
        doc="morph_ood_score above which OUT_OF_DISTRIBUTION is set (1 = training 99th percentile).",
        default=1.0,
    )
    maxMaskedFraction = pexConfig.RangeField[float](
        doc="Fraction of unusable stamp pixels above which MASKED is set.", default=0.25, min=0.0, max=1.0
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes of unusable pixels (NaN-mask channels).", default=["BAD", "SAT", "NO_DATA"]
    )
    attentionBrightest = pexConfig.RangeField[int](
        doc="Attention maps for this many of the brightest classified objects (0: none).", default=4, min=0
    )
    attentionIds = pexConfig.ListField[int](doc="Attention maps for these object ids too.", default=[])
    attentionBand = pexConfig.Field[str](
        doc="Band of the stamps under the attention maps and of the brightness ranking.", default="r"
    )
    fluxTemplate = pexConfig.Field[str](
        doc="Flux column template for the brightness ranking ('' ranks by the stamp's central flux).",
        default="{band}_cModelFlux",
    )
    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings (device).")

    def setDefaults(self) -> None:
        super().setDefaults()
        # Batches of 256 stamps: the automatic CPU choice (about 8 MB of input, 45 stamps of 64 x 64 x 11)
        # made the DAT 2-4 times slower per stamp (measured with `meas-ml bench morphology`).
        self.inference.batchSize = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        super().validate()
        if self.stampSize % 8:
            raise pexConfig.FieldValidationError(
                ClassifyMorphologyConfig.stampSize, self, "the models need a stamp side divisible by 8"
            )
        if self.attentionBand not in self.bands:
            raise pexConfig.FieldValidationError(
                ClassifyMorphologyConfig.attentionBand, self, f"must be one of bands {list(self.bands)}"
            )


def attention_figure(table: Table, title: str = "") -> Any:
    """Draw the attention maps of an ``ml_morphology_attention`` table over its stamps.

    Parameters
    ----------
    table : `astropy.table.Table`
        Rows with ``objectId``, ``morph_class``, ``stamp`` and ``attention``
        (flattened ``S*S``); ``meta["stamp_size"]``.
    title : `str`
        Figure title.

    Returns
    -------
    figure : `matplotlib.figure.Figure`
        One panel per object: the stamp in grey, the attention in colour.
    """
    from matplotlib.figure import Figure

    n = max(1, len(table))
    s = int(table.meta.get("stamp_size", 64))
    fig = Figure(figsize=(2.4 * n, 2.7))
    axes = fig.subplots(1, n, squeeze=False)[0]
    if not len(table):
        axes[0].text(0.5, 0.5, "no object chosen", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, row in zip(axes, table):
        stamp = np.asarray(row["stamp"], float).reshape(s, s)
        att = np.asarray(row["attention"], float).reshape(s, s)
        ax.imshow(stamp, origin="lower", cmap="gray")
        ax.imshow(att / max(att.max(), 1e-12), origin="lower", cmap="inferno", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{row['objectId']}\n{row['morph_class']}", fontsize=7)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    return fig


class ClassifyMorphologyTask(pipeBase.PipelineTask):
    """Classify the galaxies of a coadd patch along the Hubble sequence.

    Parameters
    ----------
    **kwargs
        Arguments of `lsst.pipe.base.PipelineTask`.
    """

    ConfigClass = ClassifyMorphologyConfig
    _DefaultName = "classifyMorphology"
    config: ClassifyMorphologyConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = InferenceEngine(self.config.inference, log=self.log)

    def _flux_column(self) -> str:
        return (
            self.config.fluxTemplate.format(band=self.config.attentionBand)
            if self.config.fluxTemplate
            else ""
        )

    def select_patch(self, objects: Table, patch: int | None, coadds: dict[str, Any]) -> Table:
        """Return the objects of one patch.

        Parameters
        ----------
        objects : `astropy.table.Table`
            Object table of the tract.
        patch : `int` or `None`
            Patch index (`None`: keep every row).
        coadds : `dict` [`str`, image]
            The patch's coadds (their box selects the rows when
            ``patchColumn`` is '').

        Returns
        -------
        objects : `astropy.table.Table`
            The rows of the patch.
        """
        if patch is None:
            return objects
        if self.config.patchColumn and self.config.patchColumn in objects.colnames:
            return objects[np.asarray(objects[self.config.patchColumn]) == patch]
        from ..images import PixelPlanes

        if not coadds:
            return objects[:0]
        box = PixelPlanes.from_image(next(iter(coadds.values()))).bbox
        x = np.floor(np.asarray(objects[self.config.xColumn], float) + 0.5)
        y = np.floor(np.asarray(objects[self.config.yColumn], float) + 0.5)
        return objects[(x >= box.x0) & (x < box.x1) & (y >= box.y0) & (y < box.y1)]

    def run(self, coadds: dict[str, Any], objectCatalog: Table, model: ModelPackage) -> pipeBase.Struct:
        """Classify every object of ``objectCatalog`` on ``coadds``.

        Parameters
        ----------
        coadds : `dict` [`str`, image]
            Coadd per band (`lsst.images.MaskedImage` or
            `~lsst.meas.ml.images.PixelPlanes`); configured bands that are
            absent are missing bands.
        objectCatalog : `astropy.table.Table`
            The patch's objects (may be empty).
        model : `~lsst.meas.ml.packages.ModelPackage`
            A morphology package trained on ``config.bands`` and ``config.stampSize``.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``morphology`` (`astropy.table.Table`), and, when objects are
            chosen, ``attention`` (table) and ``attentionPlot`` (figure).

        Raises
        ------
        lsst.meas.ml.packages.PackageError
            The package does not fit the configured bands or stamp size.
        """
        c = self.config
        catalog, stamps = predict_morphology(
            model,
            coadds,
            objectCatalog,
            bands=list(c.bands),
            stamp_size=c.stampSize,
            engine=self.engine,
            dihedral=c.dihedralAverage,
            ood_threshold=c.oodThreshold,
            max_masked_fraction=c.maxMaskedFraction,
            bad_mask_planes=list(c.badMaskPlanes),
            id_column=c.idColumn,
            x_column=c.xColumn,
            y_column=c.yColumn,
        )
        flags = np.asarray(catalog["morph_flags"])
        missing = catalog.meta["missing_bands"]
        self.log.info(
            "Classified %d objects with %s %s (%d not classified, %d at the edge, %d out of distribution%s).",
            len(catalog),
            model.name,
            model.version,
            int((catalog["morph_class"] == "").sum()),
            int(((flags & MorphologyFlag.EDGE) != 0).sum()),
            int(((flags & MorphologyFlag.OUT_OF_DISTRIBUTION) != 0).sum()),
            f"; missing bands {missing}" if missing else "",
        )
        result = pipeBase.Struct(morphology=catalog)
        if c.attentionBrightest or c.attentionIds:
            table = self.attention_table(catalog, stamps, objectCatalog, model)
            result.attention = table
            result.attentionPlot = attention_figure(table, f"{model.name} {model.version}")
        return result

    def attention_table(self, catalog: Table, stamps: Any, objects: Table, model: ModelPackage) -> Table:
        """Attention maps of the chosen objects.

        Parameters
        ----------
        catalog : `astropy.table.Table`
            The ``ml_morphology`` rows.
        stamps : `~lsst.meas.ml.morphology.features.StampBatch`
            Their model inputs.
        objects : `astropy.table.Table`
            The object rows (for the brightness ranking).
        model : `~lsst.meas.ml.packages.ModelPackage`
            The package.

        Returns
        -------
        table : `astropy.table.Table`
            ``objectId``, ``morph_class``, ``attention`` and ``stamp``
            (``S*S`` float32 each); ``meta["stamp_size"]``, ``meta["band"]``.
        """
        c = self.config
        ids = np.asarray(catalog[c.idColumn])
        classified = np.asarray(catalog["morph_class"]) != ""
        band_channel = list(c.bands).index(c.attentionBand)
        chosen = [int(i) for i in np.flatnonzero(np.isin(ids, list(c.attentionIds)) & classified)]
        if c.attentionBrightest:
            column = self._flux_column()
            if column and column in objects.colnames:
                flux = np.asarray(objects[column], float)
            else:
                s = stamps.x.shape[-1]
                flux = stamps.x[:, band_channel, s // 2, s // 2].astype(float) if len(stamps) else np.zeros(0)
            flux = np.where(classified & np.isfinite(flux), flux, -np.inf)
            order = [int(i) for i in np.argsort(-flux, kind="stable") if np.isfinite(flux[i])]
            chosen += [i for i in order if i not in chosen][: c.attentionBrightest]
        rows = np.array(chosen, dtype=int)
        s = c.stampSize
        maps = attention_maps(model, stamps.x[rows], self.engine)
        table = Table()
        table[c.idColumn] = ids[rows].astype(np.int64)
        table["morph_class"] = np.asarray(catalog["morph_class"])[rows].astype(str)
        table["attention"] = maps.reshape(len(rows), s * s).astype(np.float32)
        table["stamp"] = stamps.x[rows, band_channel].reshape(len(rows), s * s).astype(np.float32)
        table.meta.update({"stamp_size": s, "band": c.attentionBand, "architecture": model.architecture})
        table.meta.update(model.provenance_metadata())
        return table

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        model = butlerQC.get(inputRefs.model)
        wanted = set(self.config.bands)
        coadds = {
            ref.dataId["band"]: butlerQC.get(ref) for ref in inputRefs.coadds if ref.dataId["band"] in wanted
        }
        coadds = {band: handle.get() for band, handle in coadds.items()}
        handle = butlerQC.get(inputRefs.objectCatalog)
        available = set(handle.get(component="columns"))
        c = self.config
        columns = [c.idColumn, c.xColumn, c.yColumn, c.patchColumn, self._flux_column()]
        objects = handle.get(parameters={"columns": [col for col in columns if col and col in available]})
        objects = self.select_patch(objects, butlerQC.quantum.dataId["patch"], coadds)
        butlerQC.put(self.run(coadds=coadds, objectCatalog=objects, model=model), outputRefs)
