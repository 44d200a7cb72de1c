"""The photo-z part of ``make demo``: train on a calibration field, summarise.

The demo repository's own spectroscopic sample (``specz``) is small and
biased to bright galaxies, as a real one is.  The demo therefore trains on
a *calibration field*: a catalog-level simulation of the same survey with
another seed (``seed + 1000``: other galaxies, same populations and noise),
in which every galaxy has its redshift, plus the repository's ``specz``
galaxies.  The summary then scores the repository's objects against their
true redshifts, which the model never saw (except the few spec-z galaxies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.table import Table, join, vstack

from ..packages import ModelPackage
from .features import PhotozColumns
from .metrics import outlier_fraction, plot_photoz_vs_true, sigma_nmad
from .predict import PhotozFlag
from .train import PhotozTrainingConfig, train_photoz_table

__all__ = ["CALIBRATION_GALAXIES", "plot", "summarize", "train_demo_package"]

#: Galaxies in the simulated calibration field.
CALIBRATION_GALAXIES = 12000


def _labelled(objects: Table, redshifts: Table, z_column: str) -> Table:
    keep = [c for c in objects.colnames if c.endswith("Flux") or c.endswith("FluxErr") or c == "objectId"]
    out = join(objects[keep], redshifts["objectId", z_column], keys="objectId")
    out.rename_column(z_column, "redshift")
    return out


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Train the demo's photo-z model (calibration field + the repository's spec-z).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The demo repository; its ``mlsim_config`` gives the simulated
        survey and seed, and its ``specz`` and ``object`` datasets the
        spectroscopic galaxies added to the calibration field.
    collections : `~collections.abc.Sequence` [`str`]
        Collections to read from.
    workdir : `str`
        Working directory (not used at present).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The trained package, with version ``"demo"``.
    """
    from ..simulate import SurveyConfig, simulate_catalog

    collections = list(collections)
    stored = butler.get("mlsim_config", collections=collections)
    seed = int(stored["seed"]) + 1000
    objects, truth, _ = simulate_catalog(
        SurveyConfig.from_name(str(stored["name"]), seed=seed), n_galaxies=CALIBRATION_GALAXIES
    )
    galaxies = truth[~np.asarray(truth["is_star"], dtype=bool)]
    calibration = _labelled(objects, galaxies, "redshift")
    specz_parts = []
    for ref in butler.query_datasets("specz", collections=collections, explain=False):
        obj = butler.get("object", ref.dataId, collections=collections)
        specz_parts.append(_labelled(obj, butler.get(ref), "specz"))
    table = vstack([calibration, *specz_parts], metadata_conflicts="silent")
    config = PhotozTrainingConfig(n_members=2, epochs=40, patience=8, num_threads=0)
    result = train_photoz_table(
        table,
        PhotozColumns(),
        "redshift",
        config,
        provenance={
            "training_data": {
                "calibration_field": {
                    "simulated_survey": stored["name"], "seed": seed, "galaxies": len(calibration)
                },
                "specz_from": collections,
                "rows": len(table),
            }
        },
        name="photoz-demo",
    )
    package = result.package
    package.manifest["version"] = "demo"
    return ModelPackage(package.manifest, package.state_dict)


def _matched(butler: Any, ref: Any, collections: Any) -> Table:
    """``ml_photoz`` of one tract joined with the truth and the i-band flux."""
    cat = butler.get(ref)
    truth = butler.get("truth_object", ref.dataId, collections=collections)
    objects = butler.get("object", ref.dataId, collections=collections,
                         parameters={"columns": ["objectId", "i_cModelFlux"]})
    both = join(cat["objectId", "photoz_mode", "photoz_flags"], truth["objectId", "redshift", "is_star"],
                keys="objectId")
    return join(both, objects, keys="objectId")


def plot(butler: Any, collections: Any, outdir: str) -> list[str]:
    """Draw photo-z against true redshift for each tract's galaxies: all, and i < 25.3.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_photoz``, ``truth_object`` and ``object``.
    collections : `~typing.Any`
        Collections to read from.
    outdir : `str`
        Directory for the PNGs.

    Returns
    -------
    paths : `list` [`str`]
        The PNGs written (``photoz_vs_truez_tract<N>.png`` and
        ``photoz_vs_truez_tract<N>_i_lt_25.3.png``).
    """
    import os

    paths = []
    for ref in butler.query_datasets("ml_photoz", collections=collections, explain=False):
        both = _matched(butler, ref, collections)
        z_phot = np.asarray(both["photoz_mode"], float)
        z_true = np.asarray(both["redshift"], float)
        gal = ~np.asarray(both["is_star"], dtype=bool) & np.isfinite(z_phot)
        gold = gal & (np.asarray(both["i_cModelFlux"], float) > 10 ** (-0.4 * (25.3 - 31.4)))
        tract = ref.dataId["tract"]
        z_max = float(np.ceil(max(np.nanmax(z_true[gal], initial=1.0), 3.0)))
        for sel, suffix, name in ((gal, "", "all galaxies"), (gold, "_i_lt_25.3", "i < 25.3")):
            path = os.path.join(outdir, f"photoz_vs_truez_tract{tract}{suffix}.png")
            paths.append(plot_photoz_vs_true(z_phot[sel], z_true[sel], path, z_max=z_max,
                                             title=f"ml_photoz tract {tract}: {name} ({int(sel.sum())})"))
    return paths


def summarize(butler: Any, collections: Any) -> list[str]:
    """Summarize the photo-z quality of ``ml_photoz`` against ``truth_object``, per tract.

    Figures for all galaxies and for the LSST "gold" selection i < 25.3
    (the simulated object table goes to the coadds' detection limit, where
    the photometry alone cannot pin the redshift down).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_photoz``, ``truth_object`` and
        ``object``.
    collections : `~typing.Any`
        Collections to read from (anything the Butler accepts).

    Returns
    -------
    lines : `list` [`str`]
        One line per tract and one per selection, or a single line saying
        that no ``ml_photoz`` was written.
    """
    lines = []
    for ref in butler.query_datasets("ml_photoz", collections=collections, explain=False):
        cat = butler.get(ref)
        both = _matched(butler, ref, collections)
        z_phot = np.asarray(both["photoz_mode"], float)
        gal = ~np.asarray(both["is_star"], dtype=bool) & np.isfinite(z_phot)
        gold = gal & (np.asarray(both["i_cModelFlux"], float) > 10 ** (-0.4 * (25.3 - 31.4)))
        ood = (np.asarray(cat["photoz_flags"]) & int(PhotozFlag.OUT_OF_DISTRIBUTION)) != 0
        lines.append(f"ml_photoz tract {ref.dataId['tract']}: {len(cat)} objects, {ood.mean():.1%} flagged "
                     "out-of-distribution; against true z:")
        for name, sel in (("all galaxies", gal), ("gold i<25.3", gold)):
            z_true = np.asarray(both["redshift"], float)[sel]
            lines.append(
                f"    {name} ({int(sel.sum())}): sigma_NMAD {sigma_nmad(z_phot[sel], z_true):.4f}, "
                f"outliers |dz|/(1+z)>0.15 {outlier_fraction(z_phot[sel], z_true):.1%}"
            )
    if not lines:
        return ["ml_photoz: none written"]
    from .followup_demo import summarize as summarize_followup

    return lines + summarize_followup(butler, collections)
