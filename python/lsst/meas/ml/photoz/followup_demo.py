"""The photo-z follow-up part of ``make demo``: summarise ``ml_photoz_followup`` against the truth."""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import join

from .followup import PhotozBayesFlag
from .metrics import outlier_fraction, sigma_nmad

__all__ = ["summarize"]


def summarize(butler: Any, collections: Any) -> list[str]:
    """Summarize ``ml_photoz_followup`` against ``truth_object`` and the MBRNN, per tract.

    For the followed-up galaxies: sigma_NMAD, outlier fraction and the
    coverage of the 68% interval of the template-fit posterior, beside the
    same figures of the MBRNN photo-z (``ml_photoz``) on the same objects.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_photoz_followup``, ``ml_photoz`` and
        ``truth_object``.
    collections : `~typing.Any`
        Collections to read from (anything the Butler accepts).

    Returns
    -------
    lines : `list` [`str`]
        Lines per tract, or a single line saying that no
        ``ml_photoz_followup`` was written.
    """
    lines = []
    for ref in butler.query_datasets("ml_photoz_followup", collections=collections, explain=False):
        follow = butler.get(ref)
        flags = np.asarray(follow["photoz_bayes_flags"])
        counts = ", ".join(
            f"{f.name} {int(((flags & int(f)) != 0).sum())}"
            for f in PhotozBayesFlag
            if ((flags & int(f)) != 0).any()
        )
        lines.append(
            f"ml_photoz_followup tract {ref.dataId['tract']}: {len(follow)} objects followed up "
            f"(flags: {counts or 'none'})"
        )
        if not len(follow):
            continue
        photoz = butler.get(
            "ml_photoz",
            ref.dataId,
            collections=collections,
            parameters={"columns": ["objectId", "photoz_median", "photoz_lo68", "photoz_hi68"]},
        )
        truth = butler.get("truth_object", ref.dataId, collections=collections)
        both = join(
            follow["objectId", "photoz_bayes_median", "photoz_bayes_lo68", "photoz_bayes_hi68"],
            photoz,
            keys="objectId",
            metadata_conflicts="silent",
        )
        both = join(
            both, truth["objectId", "redshift", "is_star"], keys="objectId", metadata_conflicts="silent"
        )
        gal = ~np.asarray(both["is_star"], dtype=bool)
        z = np.asarray(both["redshift"], float)[gal]
        for name, prefix in (("template fit", "photoz_bayes_"), ("MBRNN", "photoz_")):
            med = np.asarray(both[prefix + "median"], float)[gal]
            lo = np.asarray(both[prefix + "lo68"], float)[gal]
            hi = np.asarray(both[prefix + "hi68"], float)[gal]
            cover = float(np.mean((lo <= z) & (z <= hi))) if z.size else float("nan")
            lines.append(
                f"    {name} on the {int(gal.sum())} galaxies: sigma_NMAD {sigma_nmad(med, z):.4f}, "
                f"outliers {outlier_fraction(med, z):.1%}, 68% coverage {cover:.1%}"
            )
    return lines or ["ml_photoz_followup: none written"]
