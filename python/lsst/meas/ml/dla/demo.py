"""The DLA part of ``make demo``: a few simulated external spectra, the shipped model.

External spectra are user-added data, so the demo adds some the way a user
would: `train_demo_package` simulates a few quasar spectra (some with
injected DLAs) at positions inside the demo's tract and registers them with
`~lsst.meas.ml.dla.ingest.ingest_spectra` (the code of ``meas-ml
ingest-spectra``) into the RUN ``spectra/demo-sim``, which it appends to
the demo's input chain.  Training the network takes longer than the
demo's budget, so the model is the shipped package, trained offline with
``meas-ml train dla`` (``doc/dla.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..packages import ModelPackage, default_package
from .ingest import SPECTRA_DATASET_TYPE, ingest_spectra
from .simulate import SimulationConfig, simulate_sightline

__all__ = ["DEMO_RUN", "DEMO_SPECTRA", "summarize", "train_demo_package"]

#: RUN collection of the demo's simulated spectra.
DEMO_RUN = "spectra/demo-sim"
#: Number of simulated spectra.
DEMO_SPECTRA = 8


def _centre(butler: Any) -> tuple[float, float]:
    from lsst.sphgeom import LonLat

    for record in butler.registry.queryDimensionRecords("tract"):
        if record.region is not None:
            c = LonLat(record.region.getBoundingCircle().getCenter())
            return c.getLon().asDegrees(), c.getLat().asDegrees()
    return 150.0, 2.0


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Register a few simulated spectra in the demo repository and return the shipped DLA package.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The demo repository (writeable).
    collections : `~collections.abc.Sequence` [`str`]
        The demo's input collections; the spectra's RUN is appended to the
        first when it is a CHAINED collection.
    workdir : `str`
        Working directory (not used).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The shipped ``dla`` package.
    """
    from lsst.daf.butler import CollectionType

    ra0, dec0 = _centre(butler)
    rng = np.random.default_rng(2018)
    cfg = SimulationConfig(snr=(8.0, 30.0), z_qso=(2.5, 3.5), dla_counts=(0.0, 0.7, 0.3))
    spectra = []
    for i in range(DEMO_SPECTRA):
        dlas = None if i % 2 else []
        sl = simulate_sightline(rng, cfg, source_id=f"demo-qso-{i}", dlas=dlas)
        s = sl.spectrum
        s.ra, s.dec = ra0 + rng.uniform(-0.1, 0.1), dec0 + rng.uniform(-0.1, 0.1)
        spectra.append(s)
    ingest_spectra(butler, spectra, run=DEMO_RUN)
    chain = list(collections)[0] if collections else None
    if chain is not None and butler.collections.get_info(chain).type == CollectionType.CHAINED:
        if DEMO_RUN not in butler.collections.get_info(chain).children:
            butler.collections.extend_chain(chain, DEMO_RUN)
    return default_package("dla")


def summarize(butler: Any, collections: Any) -> list[str]:
    """Compare ``ml_dla`` with the DLAs injected into the demo's spectra.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_dla`` and ``qso_spectra``.
    collections : `~typing.Any`
        Collections to read from.

    Returns
    -------
    lines : `list` [`str`]
        One line per spectrum, or one saying that no ``ml_dla`` was written.
    """
    lines = []
    for ref in butler.query_datasets("ml_dla", collections=collections, explain=False):
        cat = butler.get(ref)
        spectra = butler.get(SPECTRA_DATASET_TYPE, ref.dataId, collections=collections)
        truth = {s.source_id: s.meta.get("dlas", []) for s in spectra}
        for sid in sorted(set(np.asarray(cat["source_id"]).astype(str))):
            rows = cat[(np.asarray(cat["source_id"]).astype(str) == sid) & (cat["absorber"] >= 0)]
            found = ", ".join(f"z={r['z_abs']:.3f} logN={r['log_nhi']:.2f}" for r in rows) or "none"
            true = ", ".join(f"z={z:.3f} logN={n:.2f}" for z, n in truth.get(sid, [])) or "none"
            lines.append(f"ml_dla htm7={ref.dataId['htm7']} {sid}: found {found}; injected {true}")
    return lines or ["ml_dla: none written"]
