"""The photo-z part of ``make demo``: train on a calibration field, summarise.

The demo repository's own spectroscopic sample (``specz``) is small and
biased to bright galaxies, as a real one is.  The demo therefore trains on
a *calibration field*: a catalog-level simulation of the same survey with
another seed (``seed + 1000``: other galaxies, same populations and noise),
in which every galaxy has its redshift, plus the repository's ``specz``
galaxies.  The summary then scores the repository's objects against their
true redshifts, which the model never saw (except the few spec-z galaxies).

The model's redshift grid reaches past the calibration field's largest true
redshift (`redshift_grid`), so that no galaxy is piled into the last bin.

The object table goes down to the coadds' detection limit, where the
photometry alone cannot pin a redshift down, so the summary gives three
selections: all galaxies; LSST's gold cut i < 25.3, which is defined for
the 10-year depth (i-band 5-sigma point-source depth 26.8, where
i = 25.3 has S/N 20 for a point source); and the same gold criterion
at the depth of the simulated coadds, i < m5(i) - 2.5 log10(20 / 5), with
``m5(i)`` measured from the object table's i-band PSF-flux errors
(`five_sigma_depth`).  `diagnose` (``python -m lsst.meas.ml.photoz.demo
REPO``) prints the quality in bins of i-band S/N and true redshift and the
floor set by the simulated galaxy colours themselves (`colour_floor`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.table import Table, join, vstack

from ..packages import ModelPackage
from .features import PhotozColumns
from .metrics import outlier_fraction, plot_photoz_vs_true, sigma_nmad
from .predict import PhotozFlag
from .train import PhotozTrainingConfig, train_photoz_table

__all__ = [
    "CALIBRATION_GALAXIES",
    "GOLD_POINT_SNR",
    "LSST_GOLD_I",
    "Z_BIN_WIDTH",
    "colour_floor",
    "diagnose",
    "five_sigma_depth",
    "gold_limit",
    "main",
    "plot",
    "redshift_grid",
    "summarize",
    "train_demo_package",
]

#: Galaxies in the simulated calibration field.
CALIBRATION_GALAXIES = 12000
#: Width of the demo model's redshift bins (that of the shipped model: 3 / 150).
Z_BIN_WIDTH = 0.02
#: LSST's gold-sample cut (i-band AB magnitude), defined for the 10-year depth.
LSST_GOLD_I = 25.3
#: Point-source S/N at LSST's gold limit: i = 25.3 has S/N 20 at the 10-year depth.
GOLD_POINT_SNR = 20.0
_AB_NJY = 31.4


def redshift_grid(z_true: np.ndarray, step: float = 0.5) -> tuple[float, int]:
    """Choose the model's redshift grid to cover a simulated population.

    Parameters
    ----------
    z_true : `numpy.ndarray`
        True redshifts of the training galaxies.
    step : `float`, optional
        The upper edge is the largest redshift rounded up to a multiple of
        ``step`` (and at least 3, that of the shipped model).

    Returns
    -------
    z_max : `float`
        The upper edge of the grid.
    n_bins : `int`
        The number of bins of width `Z_BIN_WIDTH`.
    """
    z = np.asarray(z_true, dtype=float)
    top = float(np.nanmax(z, initial=0.0))
    z_max = max(3.0, math.ceil(top / step + 1e-9) * step)
    if z_max <= top:  # a redshift exactly on a multiple of step: keep it off the edge
        z_max += step
    return z_max, int(round(z_max / Z_BIN_WIDTH))


def five_sigma_depth(objects: Table, band: str = "i") -> float:
    """Return the 5-sigma point-source depth of ``band`` measured from an object table.

    The depth is ``5 x`` the median PSF-flux error of the sky-dominated
    objects (PSF-flux S/N below 20), as an AB magnitude.

    Parameters
    ----------
    objects : `astropy.table.Table`
        Rubin object columns ``<band>_psfFlux`` and ``<band>_psfFluxErr`` (nJy).
    band : `str`, optional
        The band.

    Returns
    -------
    m5 : `float`
        The depth (AB mag); NaN if no error is finite.
    """
    flux = np.asarray(objects[f"{band}_psfFlux"], dtype=float)
    err = np.asarray(objects[f"{band}_psfFluxErr"], dtype=float)
    ok = np.isfinite(err) & (err > 0) & np.isfinite(flux)
    faint = ok & (flux < 20.0 * err)
    pick = err[faint] if faint.sum() >= 10 else err[ok]
    if not pick.size:
        return float("nan")
    return float(_AB_NJY - 2.5 * np.log10(5.0 * np.median(pick)))


def gold_limit(m5: float) -> float:
    """Return LSST's gold criterion at a depth: the magnitude of a point source with S/N 20.

    Parameters
    ----------
    m5 : `float`
        The i-band 5-sigma point-source depth (AB mag).

    Returns
    -------
    limit : `float`
        ``m5 - 2.5 log10(20 / 5)``: 25.3 at LSST's 10-year depth 26.8.
    """
    return float(m5 - 2.5 * math.log10(GOLD_POINT_SNR / 5.0))


def _labelled(objects: Table, redshifts: Table, z_column: str) -> Table:
    keep = [c for c in objects.colnames if c.endswith("Flux") or c.endswith("FluxErr") or c == "objectId"]
    out = join(objects[keep], redshifts["objectId", z_column], keys="objectId")
    out.rename_column(z_column, "redshift")
    return out


def train_demo_package(butler: Any, collections: Sequence[str], workdir: str) -> ModelPackage:
    """Train the demo's photo-z model (calibration field + the repository's spec-z).

    The redshift grid covers the calibration field's true redshifts
    (`redshift_grid`).

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
    z_max, n_bins = redshift_grid(np.asarray(galaxies["redshift"], dtype=float))
    # The demo keeps the recipe its figures in doc/photoz_demo.md were measured with (trainer 1.1.0:
    # three hidden layers, no noise augmentation): a smaller, quicker fit for a demo, and the noise
    # augmentation of the 1.2.0 defaults was tuned on cosmoDC2, not on the simulated survey.
    config = PhotozTrainingConfig(
        n_members=2,
        epochs=40,
        patience=8,
        num_threads=0,
        z_max=z_max,
        n_bins=n_bins,
        hidden=(128, 128, 128),
        noise_augment=0.0,
    )
    result = train_photoz_table(
        table,
        PhotozColumns(),
        "redshift",
        config,
        provenance={
            "training_data": {
                "calibration_field": {
                    "simulated_survey": stored["name"],
                    "seed": seed,
                    "galaxies": len(calibration),
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


_I_COLUMNS = ["objectId", "i_cModelFlux", "i_cModelFluxErr", "i_psfFlux", "i_psfFluxErr"]


def _matched(
    butler: Any, ref: Any, collections: Any, *, cat: Table | None = None, objects: Table | None = None
) -> Table:
    """``ml_photoz`` of one tract joined with the truth and the i-band fluxes.

    ``cat`` and ``objects`` are the tract's ``ml_photoz`` and ``object``
    tables when the caller has read them already.
    """
    if cat is None:
        cat = butler.get(ref)
    truth = butler.get("truth_object", ref.dataId, collections=collections)
    if objects is None:
        objects = butler.get(
            "object", ref.dataId, collections=collections, parameters={"columns": _I_COLUMNS}
        )
    both = join(
        cat["objectId", "photoz_mode", "photoz_flags"],
        truth["objectId", "redshift", "is_star"],
        keys="objectId",
    )
    return join(both, objects[_I_COLUMNS], keys="objectId")


def _selections(both: Table) -> tuple[float, list[tuple[str, str, np.ndarray]]]:
    """Return the i-band depth and the (line label, file suffix, mask) of each summary selection."""
    z_phot = np.asarray(both["photoz_mode"], float)
    gal = ~np.asarray(both["is_star"], dtype=bool) & np.isfinite(z_phot)
    flux = np.asarray(both["i_cModelFlux"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, _AB_NJY - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.inf)
        snr = flux / np.asarray(both["i_cModelFluxErr"], float)
    m5 = five_sigma_depth(both)
    limit = gold_limit(m5)
    lsst_gold = gal & (mag < LSST_GOLD_I)
    near = lsst_gold & (mag > LSST_GOLD_I - 0.25)
    snr_at = f"{np.nanmedian(snr[near]):.0f}" if near.any() else "n/a"
    return m5, [
        ("all galaxies", "", gal),
        (
            f"i<{LSST_GOLD_I} (LSST 10-year gold cut; i-band S/N ~{snr_at} at the cut here)",
            "_i_lt_25.3",
            lsst_gold,
        ),
        (
            f"gold at this depth, i<{limit:.2f} (point-source S/N>={GOLD_POINT_SNR:.0f})",
            "_gold",
            gal & (mag < limit),
        ),
    ]


def plot(butler: Any, collections: Any, outdir: str) -> list[str]:
    """Draw photo-z against true redshift for each tract's galaxies, per summary selection.

    The selections are those of `summarize`: all galaxies, i < 25.3, and
    LSST's gold criterion at the depth of the coadds (`gold_limit`).

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
        The PNGs written (``photoz_vs_truez_tract<N>.png``,
        ``photoz_vs_truez_tract<N>_i_lt_25.3.png`` and
        ``photoz_vs_truez_tract<N>_gold.png``).
    """
    import os

    paths = []
    for ref in butler.query_datasets("ml_photoz", collections=collections, explain=False):
        both = _matched(butler, ref, collections)
        z_phot = np.asarray(both["photoz_mode"], float)
        z_true = np.asarray(both["redshift"], float)
        m5, selections = _selections(both)
        gal = selections[0][2]
        tract = ref.dataId["tract"]
        z_max = float(np.ceil(max(np.nanmax(z_true[gal], initial=1.0), 3.0)))
        for name, suffix, sel in selections:
            path = os.path.join(outdir, f"photoz_vs_truez_tract{tract}{suffix}.png")
            title = f"ml_photoz tract {tract}, i depth {m5:.2f}:\n{name} ({int(sel.sum())})"
            paths.append(plot_photoz_vs_true(z_phot[sel], z_true[sel], path, z_max=z_max, title=title))
    return paths


def summarize(butler: Any, collections: Any) -> list[str]:
    """Summarize the photo-z quality of ``ml_photoz`` against ``truth_object``, per tract.

    Figures for all galaxies, for LSST's gold cut i < 25.3 (defined for
    the 10-year depth) and for the gold criterion at the depth of the
    simulated coadds (`gold_limit` of `five_sigma_depth`): the object table
    goes to the coadds' detection limit, where the photometry alone cannot
    pin the redshift down.

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
        both = _matched(butler, ref, collections, cat=cat)
        z_phot = np.asarray(both["photoz_mode"], float)
        z_true = np.asarray(both["redshift"], float)
        m5, selections = _selections(both)
        ood = (np.asarray(cat["photoz_flags"]) & int(PhotozFlag.OUT_OF_DISTRIBUTION)) != 0
        lines.append(
            f"ml_photoz tract {ref.dataId['tract']}: {len(cat)} objects, {ood.mean():.1%} flagged "
            f"out-of-distribution; coadd i-band 5-sigma depth {m5:.2f} (LSST 10-year: 26.8); "
            "against true z:"
        )
        for name, _, sel in selections:
            lines.append(
                f"    {name} ({int(sel.sum())}): sigma_NMAD {sigma_nmad(z_phot[sel], z_true[sel]):.4f}, "
                f"outliers |dz|/(1+z)>0.15 {outlier_fraction(z_phot[sel], z_true[sel]):.1%}"
            )
    if not lines:
        return ["ml_photoz: none written"]
    from lsst.daf.butler import MissingDatasetTypeError

    from .followup_demo import summarize as summarize_followup

    try:
        butler.get_dataset_type("ml_photoz_followup")
    except MissingDatasetTypeError:  # a pipeline without the follow-up task
        return lines
    return lines + summarize_followup(butler, collections)


def colour_floor(
    survey: str = "default", seed: int = 2042, n_galaxies: int = 60000, n_test: int = 5000, k: int = 15
) -> dict[str, float]:
    """Measure the photo-z floor set by the simulated galaxy colours alone (no photometric noise).

    A ``k``-nearest-neighbour estimate (median true redshift of the ``k``
    nearest galaxies in the five noise-free colours) over a catalog-level
    field of ``n_galaxies`` galaxies, applied to ``n_test`` galaxies of
    another seed.  Its outliers come from galaxies of different redshifts
    with the same true colours.

    Parameters
    ----------
    survey : `str`, optional
        The simulated survey preset.
    seed : `int`, optional
        Seed of the reference field (the test field uses ``seed + 1``).
    n_galaxies : `int`, optional
        Galaxies in the reference field.
    n_test : `int`, optional
        Galaxies in the test field.
    k : `int`, optional
        Neighbours.

    Returns
    -------
    floor : `dict` [`str`, `float`]
        ``sigma_nmad`` and ``outlier_frac`` of the estimate, and ``n``.
    """
    from scipy.spatial import cKDTree

    from ..simulate import SurveyConfig, simulate_catalog

    def colours(field_seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        _, truth, _ = simulate_catalog(
            SurveyConfig.from_name(survey, seed=field_seed), n_galaxies=n, n_stars=0
        )
        gal = truth[~np.asarray(truth["is_star"], dtype=bool)]
        flux = np.stack([np.asarray(gal[f"{b}_flux"], float) for b in "ugrizy"], axis=1)
        return np.diff(-2.5 * np.log10(np.clip(flux, 1e-6, None)), axis=1), np.asarray(gal["redshift"], float)

    ref_c, ref_z = colours(seed, n_galaxies)
    test_c, test_z = colours(seed + 1, n_test)
    _, idx = cKDTree(ref_c).query(test_c, k=k)
    z_est = np.median(ref_z[idx], axis=1)
    return {
        "sigma_nmad": sigma_nmad(z_est, test_z),
        "outlier_frac": outlier_fraction(z_est, test_z),
        "n": float(len(test_z)),
    }


def diagnose(butler: Any, collections: Any) -> list[str]:
    """Break the demo photo-z quality down by i-band S/N and true redshift.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository holding ``ml_photoz``, ``truth_object`` and
        ``object``.
    collections : `~typing.Any`
        Collections to read from.

    Returns
    -------
    lines : `list` [`str`]
        Per tract: the depth, the galaxies beyond the model's grid and
        those missing a band, then one line per i-band cModel S/N bin and
        per true-redshift bin of the gold selection at this depth.
    """
    lines = []
    for ref in butler.query_datasets("ml_photoz", collections=collections, explain=False):
        cat = butler.get(ref, parameters={"strip_astropy_meta_yaml": False})
        objects = butler.get("object", ref.dataId, collections=collections)
        both = _matched(butler, ref, collections, cat=cat, objects=objects)
        z_phot = np.asarray(both["photoz_mode"], float)
        z_true = np.asarray(both["redshift"], float)
        m5, selections = _selections(both)
        gal, gold = selections[0][2], selections[2][2]
        z_top = float(np.asarray(cat.meta.get("photoz_bin_edges", [np.nan]), float)[-1])
        missing = np.zeros(len(objects), dtype=bool)
        for band in "ugrizy":
            missing |= ~np.isfinite(np.asarray(objects[f"{band}_cModelFlux"], float))
        lines.append(
            f"tract {ref.dataId['tract']}: i-band 5-sigma depth {m5:.2f}, gold limit "
            f"i<{gold_limit(m5):.2f}; {int(gal.sum())} galaxies, {np.mean(z_true[gal] > z_top):.1%} "
            f"above the grid's z_max {z_top:g}; {missing.mean():.1%} of objects miss a band"
        )
        snr = np.asarray(both["i_cModelFlux"], float) / np.asarray(both["i_cModelFluxErr"], float)
        for lo, hi in ((0, 5), (5, 10), (10, 20), (20, 50), (50, np.inf)):
            sel = gal & (snr >= lo) & (snr < hi)
            lines.append(
                f"    i S/N {lo}-{hi} ({int(sel.sum())}): sigma_NMAD "
                f"{sigma_nmad(z_phot[sel], z_true[sel]):.3f}, outliers "
                f"{outlier_fraction(z_phot[sel], z_true[sel]):.1%}"
            )
        for lo, hi in ((0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 3.0), (3.0, 4.0)):
            sel = gold & (z_true >= lo) & (z_true < hi)
            if not sel.any():
                continue
            lines.append(
                f"    gold, true z {lo}-{hi} ({int(sel.sum())}): sigma_NMAD "
                f"{sigma_nmad(z_phot[sel], z_true[sel]):.3f}, outliers "
                f"{outlier_fraction(z_phot[sel], z_true[sel]):.1%}"
            )
    return lines or ["ml_photoz: none written"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print `diagnose` for a demo repository (and, with ``--floor``, `colour_floor`).

    Parameters
    ----------
    argv : `~collections.abc.Sequence` [`str`], optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : `int`
        0.
    """
    from lsst.daf.butler import Butler

    parser = argparse.ArgumentParser(
        prog="python -m lsst.meas.ml.photoz.demo",
        description="Break the demo's photo-z quality down by S/N and redshift.",
    )
    parser.add_argument("repo", help="a repository made by `meas-ml demo`")
    parser.add_argument(
        "--collections", default="u/demo/ml", help="where ml_photoz is (default: %(default)s)"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the floor set by the simulated colours (about 20 s)",
    )
    args = parser.parse_args(argv)
    butler = Butler.from_config(args.repo)
    for line in diagnose(butler, args.collections):
        print(line)
    if args.floor:
        name = str(butler.get("mlsim_config", collections=args.collections)["name"])
        floor = colour_floor(name)
        print(
            f"noise-free colours, 15 nearest neighbours among 60000 galaxies ({int(floor['n'])} tested): "
            f"sigma_NMAD {floor['sigma_nmad']:.3f}, outliers {floor['outlier_frac']:.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
