"""FollowupPhotozTask: Bayesian template-fit redshifts of the out-of-distribution objects, per tract."""

from __future__ import annotations

from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT
import numpy as np
from astropy.table import Table

from .features import (
    DEFAULT_BANDS,
    DEFAULT_FLUX_ERR_TEMPLATE,
    DEFAULT_FLUX_TEMPLATE,
    PhotozColumns,
    column_values,
)
from .followup import (
    FOLLOWUP_METHODS,
    FollowupConfig,
    PhotozBayesFlag,
    empty_followup_table,
    followup_photoz,
    select_followup,
    template_package,
)
from .pdf import DEFAULT_COMPACT_LEVELS

__all__ = ["FollowupPhotozConfig", "FollowupPhotozConnections", "FollowupPhotozTask"]


class FollowupPhotozConnections(
    pipeBase.PipelineTaskConnections,
    dimensions=("skymap", "tract"),
    defaultTemplates={"objectTable": "object"},
):
    """Connections of `FollowupPhotozTask`."""

    objectCatalog = cT.Input(
        doc="Object table with fluxes in nJy (only the needed columns are read).",
        name="{objectTable}",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
        deferLoad=True,
    )
    photoz = cT.Input(
        doc="MBRNN photo-z catalog, whose OUT_OF_DISTRIBUTION flags select the objects followed up.",
        name="ml_photoz",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
        deferLoad=True,
    )
    followup = cT.Output(
        doc="Bayesian template-fit redshift posteriors of the selected objects (photoz_bayes_* columns).",
        name="ml_photoz_followup",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
    )


class FollowupPhotozConfig(pipeBase.PipelineTaskConfig, pipelineConnections=FollowupPhotozConnections):
    """Configuration of `FollowupPhotozTask`."""

    bands = pexConfig.ListField[str](
        doc="Bands, in wavelength order; must equal the template package's.", default=list(DEFAULT_BANDS)
    )
    fluxTemplate = pexConfig.Field[str](doc="Flux column template (nJy).", default=DEFAULT_FLUX_TEMPLATE)
    fluxErrTemplate = pexConfig.Field[str](
        doc="Flux error column template (nJy).", default=DEFAULT_FLUX_ERR_TEMPLATE
    )
    idColumn = pexConfig.Field[str](doc="Object identifier column.", default="objectId")
    extraObjectIds = pexConfig.ListField[int](
        doc="Object ids to follow up as well, whatever their photo-z flags (flagged USER_SELECTED).",
        default=[],
    )
    followAll = pexConfig.Field[bool](doc="Follow up every object, not only the flagged ones.", default=False)
    templatePackage = pexConfig.Field[str](
        doc="Template-grid package file; '' for the one shipped with meas_ml.", default=""
    )
    method = pexConfig.ChoiceField[str](
        doc="Posterior sampler.",
        allowed={
            "grid": "dense (z, template mix, E(B-V)) grid, batched in torch",
            "mcmc": "emcee ensemble per object, started from the grid posterior",
        },
        default="grid",
    )
    errorFloor = pexConfig.RangeField[float](
        doc="Fractional flux error added in quadrature.", default=0.05, min=0.0, max=1.0, inclusiveMax=False
    )
    prior = pexConfig.ChoiceField[str](
        doc="Redshift prior.",
        allowed={"flat": "uniform in z", "magnitude": "p(z | m) fitted to the cosmoDC2 training set"},
        default="flat",
    )
    quantileLevels = pexConfig.ListField[float](
        doc="Probability levels of photoz_bayes_quantiles.", default=list(DEFAULT_COMPACT_LEVELS)
    )
    batchSize = pexConfig.RangeField[int](doc="Objects per batch of the grid posterior.", default=128, min=1)
    nWalkers = pexConfig.RangeField[int](doc="MCMC walkers (even).", default=32, min=8)
    nSteps = pexConfig.RangeField[int](doc="MCMC steps per walker.", default=1000, min=2)
    nBurn = pexConfig.RangeField[int](doc="MCMC steps discarded as burn-in.", default=400, min=0)
    seed = pexConfig.Field[int](doc="MCMC random seed.", default=0)
    device = pexConfig.Field[str](doc="auto (CUDA when present), cpu or a torch device.", default="auto")

    def followup_config(self) -> FollowupConfig:
        """Return the `~lsst.meas.ml.photoz.followup.FollowupConfig` of these settings.

        Returns
        -------
        config : `~lsst.meas.ml.photoz.followup.FollowupConfig`
            The sampler settings.
        """
        return FollowupConfig(
            method=self.method,
            error_floor=self.errorFloor,
            batch_size=self.batchSize,
            levels=tuple(self.quantileLevels),
            prior=self.prior,
            n_walkers=self.nWalkers,
            n_steps=self.nSteps,
            n_burn=self.nBurn,
            seed=self.seed,
            device=self.device,
        )

    def validate(self) -> None:
        super().validate()
        PhotozColumns(
            bands=tuple(self.bands), flux_template=self.fluxTemplate, flux_err_template=self.fluxErrTemplate
        )
        assert self.method in FOLLOWUP_METHODS
        try:
            self.followup_config().check()
        except ValueError as exc:
            raise pexConfig.FieldValidationError(FollowupPhotozConfig.method, self, str(exc)) from exc


class FollowupPhotozTask(pipeBase.PipelineTask):
    """Bayesian template-fit redshifts of the objects the MBRNN photo-z flags out of distribution.

    ``run`` takes in-memory tables, so it is usable without a Butler;
    ``runQuantum`` reads the id and flag columns of ``ml_photoz`` and the
    flux columns of the object table.

    Parameters
    ----------
    **kwargs
        Keyword arguments passed to `lsst.pipe.base.PipelineTask`.
    """

    ConfigClass = FollowupPhotozConfig
    _DefaultName = "followupPhotoz"
    config: FollowupPhotozConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.templates = template_package(self.config.templatePackage or None)

    @property
    def columns(self) -> PhotozColumns:
        """The configured input columns."""
        return PhotozColumns(
            bands=tuple(self.config.bands),
            flux_template=self.config.fluxTemplate,
            flux_err_template=self.config.fluxErrTemplate,
            id_column=self.config.idColumn,
            missing_band="missing",
        )

    def run(self, objectCatalog: Any, photoz: Any) -> pipeBase.Struct:
        """Follow up the selected objects of one tract.

        Parameters
        ----------
        objectCatalog : table-like
            Object table with the id and flux columns (nJy).
        photoz : table-like
            ``ml_photoz`` (at least the id and ``photoz_flags`` columns).

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``followup``: `astropy.table.Table` with one row per selected
            object (see `~lsst.meas.ml.photoz.followup.followup_photoz`);
            no rows, every column, when none is selected.
        """
        columns = self.columns
        config = self.config.followup_config()
        ids, user = select_followup(
            photoz,
            extra_ids=list(self.config.extraObjectIds),
            id_column=columns.id_column,
            all_rows=self.config.followAll,
        )
        object_ids = column_values(objectCatalog, columns.id_column, dtype=None)
        if ids.size == 0:
            catalog = empty_followup_table(config.levels, object_ids.dtype, columns.id_column)
            catalog.meta.update(self.templates.provenance_metadata())
            catalog.meta["photoz_bayes_method"] = config.method
            self.log.info("No object to follow up (none flagged out of distribution or requested).")
            return pipeBase.Struct(followup=catalog)
        rows = np.flatnonzero(np.isin(object_ids, ids))
        order = {key: k for k, key in enumerate(ids.tolist())}
        selected = Table(objectCatalog)[rows] if not isinstance(objectCatalog, Table) else objectCatalog[rows]
        user_rows = np.array([bool(user[order[key]]) for key in object_ids[rows].tolist()], dtype=bool)
        catalog = followup_photoz(self.templates, selected, columns, config=config, user_selected=user_rows)
        self.log.info(
            "Followed up %d objects with the %s posterior (%d poor fits, %d not converged).",
            len(catalog),
            config.method,
            int(((catalog["photoz_bayes_flags"] & PhotozBayesFlag.POOR_FIT) != 0).sum()),
            int(((catalog["photoz_bayes_flags"] & PhotozBayesFlag.NOT_CONVERGED) != 0).sum()),
        )
        return pipeBase.Struct(followup=catalog)

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        columns = self.columns
        handle = butlerQC.get(inputRefs.objectCatalog)
        available = set(handle.get(component="columns"))
        objects = handle.get(parameters={"columns": [c for c in columns.columns() if c in available]})
        photoz = butlerQC.get(inputRefs.photoz).get(
            parameters={"columns": [columns.id_column, "photoz_flags"]}
        )
        outputs = self.run(objectCatalog=objects, photoz=photoz)
        butlerQC.put(outputs, outputRefs)
