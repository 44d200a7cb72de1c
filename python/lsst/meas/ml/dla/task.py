"""FindDlaTask: DLAs in the external quasar spectra of each ``htm7`` trixel.

Dimensions: ``htm7``, those of the ``qso_spectra`` it reads (see
`lsst.meas.ml.dla.ingest` for why); one quantum per trixel, whose
spectra run through the network together.  Output ``ml_dla``
(``ArrowAstropy``), one row per absorber found and one per spectrum
without any (`~lsst.meas.ml.dla.predict.predict_dla`).
"""

from __future__ import annotations

from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from ..butler.connections import model_input
from ..engine import InferenceConfig, InferenceEngine
from ..packages import ModelPackage
from .features import DlaFlag
from .ingest import SKYPIX, ensure_spectra_storage_class
from .predict import predict_dla

__all__ = ["FindDlaConfig", "FindDlaConnections", "FindDlaTask"]

ensure_spectra_storage_class()


class FindDlaConnections(
    pipeBase.PipelineTaskConnections, dimensions=(SKYPIX,), defaultTemplates={"spectraName": "qso_spectra"}
):
    """Connections of `FindDlaTask`."""

    spectra = cT.Input(
        doc="External 1D quasar spectra of the trixel (MLSpectra, registered with meas-ml ingest-spectra).",
        name="{spectraName}",
        storageClass="MLSpectra",
        dimensions=(SKYPIX,),
    )
    model = model_input("dla")
    dlas = cT.Output(
        doc="DLAs found: spectrum id, z_abs, log_nhi and its error, confidence, flags.",
        name="ml_dla",
        storageClass="ArrowAstropy",
        dimensions=(SKYPIX,),
    )


class FindDlaConfig(pipeBase.PipelineTaskConfig, pipelineConnections=FindDlaConnections):
    """Configuration of `FindDlaTask`."""

    zQso = pexConfig.Field[float](
        doc="Quasar redshift for every spectrum, overriding theirs (NaN: use each spectrum's; a spectrum "
        "without one is flagged NO_Z_QSO).",
        default=float("nan"),
    )
    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings (device).")


class FindDlaTask(pipeBase.PipelineTask):
    """Find damped Lyman-alpha absorbers in quasar spectra.

    Parameters
    ----------
    **kwargs
        Passed to `lsst.pipe.base.PipelineTask`.
    """

    ConfigClass = FindDlaConfig
    _DefaultName = "findDla"
    config: FindDlaConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = InferenceEngine(self.config.inference, log=self.log)

    def run(self, spectra: Any, model: ModelPackage) -> pipeBase.Struct:
        """Find DLAs in ``spectra``.

        Parameters
        ----------
        spectra : `~lsst.meas.ml.dla.spectra.SpectrumCollection`
            The spectra.
        model : `~lsst.meas.ml.packages.ModelPackage`
            A ``dla`` package.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``dlas``: `astropy.table.Table` (see `predict_dla`).
        """
        import math

        z = None if math.isnan(self.config.zQso) else float(self.config.zQso)
        catalog = predict_dla(model, spectra, z_qso=z, engine=self.engine)
        n_dla = int(catalog["is_dla"].sum()) if len(catalog) else 0
        no_search = int(((catalog["dla_flags"] & (DlaFlag.NO_Z_QSO | DlaFlag.NO_FOREST_COVERAGE)) != 0).sum())
        self.log.info(
            "Searched %d spectra with %s %s: %d DLAs, %d spectra not searched.",
            len(spectra),
            model.name,
            model.version,
            n_dla,
            no_search,
        )
        return pipeBase.Struct(dlas=catalog)

    def runQuantum(
        self,
        butlerQC: pipeBase.QuantumContext,
        inputRefs: pipeBase.InputQuantizedConnection,
        outputRefs: pipeBase.OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        butlerQC.put(self.run(**inputs), outputRefs)
