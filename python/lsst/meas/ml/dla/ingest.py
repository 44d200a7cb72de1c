"""External spectra into a Butler repository: ``meas-ml ingest-spectra``.

Spectra from other surveys matched to Rubin objects are user-added data.
They are stored as ``qso_spectra`` datasets of storage class ``MLSpectra``
(a `~lsst.meas.ml.dla.spectra.SpectrumCollection`, one Parquet file) with
the dimension ``htm7``: each spectrum goes into the level-7 HTM trixel
(about 0.3 deg across) holding its position.

Why ``htm7``: a spectrum's only link to Rubin data is its position on the
sky; sky-pixel dimensions need no dimension records (a repository without
any instrument, visit or sky map can hold them), are the dimensions of the
stack's reference catalogues (also ``htm7``), and a pipeline task over
``htm7`` processes the spectra of a region together (one quantum per
trixel, each a small batch).  A ``tract`` would need a sky map's records
and an instrument-less spectrum has no ``visit``/``exposure``.

Ingesting into a RUN that already holds spectra of the same trixel merges
the two collections (a spectrum with the same ``source_id`` is replaced):
the stored dataset is removed and the merged one written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import MeasMlUserError
from .spectra import Spectrum, SpectrumCollection

__all__ = [
    "DEFAULT_RUN",
    "SKYPIX",
    "SPECTRA_DATASET_TYPE",
    "SpectraIngestError",
    "ensure_spectra_storage_class",
    "htm7_index",
    "ingest_spectra",
]

#: Dataset type of external spectra.
SPECTRA_DATASET_TYPE = "qso_spectra"
#: Sky-pixel dimension of ``qso_spectra`` and ``ml_dla``.
SKYPIX = "htm7"
#: Default RUN collection of ingested spectra.
DEFAULT_RUN = "spectra/external"


class SpectraIngestError(MeasMlUserError, ValueError):
    """Spectra that cannot be registered (no position, a repository without the storage class)."""


def ensure_spectra_storage_class() -> None:
    """Make ``MLSpectra`` known to this process (as `lsst.meas.ml.butler` does for the plugin)."""
    import yaml
    from lsst.daf.butler import Config, StorageClassFactory

    from ..butler.repo import CONFIG_DIR

    factory = StorageClassFactory()
    if "MLSpectra" in factory:
        return
    with open(os.path.join(CONFIG_DIR, "storageClasses.yaml")) as fh:
        config = Config(yaml.safe_load(fh))
    factory.addFromConfig(config)


def htm7_index(ra: float, dec: float) -> int:
    """Return the ``htm7`` trixel of a position.

    Parameters
    ----------
    ra, dec : `float`
        ICRS position (deg).

    Returns
    -------
    index : `int`
        Trixel index, the value of the ``htm7`` dimension.
    """
    from lsst.sphgeom import HtmPixelization, LonLat, UnitVector3d

    return int(HtmPixelization(7).index(UnitVector3d(LonLat.fromDegrees(float(ra), float(dec)))))


def ingest_spectra(
    butler: Any,
    spectra: Iterable[Spectrum],
    *,
    run: str = DEFAULT_RUN,
    dataset_type: str = SPECTRA_DATASET_TYPE,
) -> dict[int, int]:
    """Register spectra in a repository, grouped by ``htm7`` trixel.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler whose repository has the meas_ml plugin
        (``meas-ml setup-repo``).
    spectra : iterable of `~lsst.meas.ml.dla.spectra.Spectrum`
        Spectra with a position (``ra``, ``dec``).
    run : `str`
        RUN collection (created if needed).
    dataset_type : `str`
        Dataset type name (registered if needed, dimensions ``htm7``,
        storage class ``MLSpectra``).

    Returns
    -------
    counts : `dict` [`int`, `int`]
        Spectra now stored per trixel touched.

    Raises
    ------
    SpectraIngestError
        If a spectrum has no position, or the repository lacks ``MLSpectra``.
    """
    from lsst.daf.butler import CollectionType, DatasetType

    ensure_spectra_storage_class()
    spectra = list(spectra)
    groups: dict[int, list[Spectrum]] = {}
    for s in spectra:
        if not (np.isfinite(s.ra) and np.isfinite(s.dec)):
            raise SpectraIngestError(
                f"Spectrum {s.source_id!r} has no sky position (RA/Dec in its header or table); give one "
                "(--ra/--dec) so that it can be placed in its htm7 trixel."
            )
        groups.setdefault(htm7_index(s.ra, s.dec), []).append(s)
    try:
        dtype = DatasetType(dataset_type, (SKYPIX,), "MLSpectra", universe=butler.dimensions)
        butler.registry.registerDatasetType(dtype)
    except KeyError as exc:
        raise SpectraIngestError(
            f"The repository does not know the MLSpectra storage class ({exc}); run `meas-ml setup-repo "
            "REPO` first."
        ) from exc
    try:
        butler._datastore.formatterFactory.getFormatterClass(dtype.storageClass)
    except KeyError as exc:
        raise SpectraIngestError(
            "The repository has no formatter for MLSpectra (its butler.yaml predates it); run "
            "`meas-ml setup-repo REPO` first."
        ) from exc
    except AttributeError:  # a datastore without formatters: let put() decide
        pass
    butler.registry.registerCollection(run, CollectionType.RUN)
    counts = {}
    for pixel, group in sorted(groups.items()):
        data_id = {SKYPIX: pixel}
        existing = butler.find_dataset(dtype, data_id, collections=run)
        merged: dict[str, Spectrum] = {}
        if existing is not None:
            for s in butler.get(existing):
                merged[s.source_id] = s
            butler.pruneDatasets([existing], disassociate=True, unstore=True, purge=True)
        for s in group:
            merged[s.source_id] = s
        butler.put(SpectrumCollection(merged.values()), dtype, data_id, run=run)
        counts[pixel] = len(merged)
    return counts
