"""The simulated mini-survey: coadds, visits, templates, differences, catalogs, truth.

`simulate_survey` runs everything in memory and returns a `SimulatedSurvey`;
`lsst.meas.ml.simulate.repo.build_repo` writes one into a Butler.

What is simulated:

* deep coadds of one tract in every band of ``config.coadd_bands``, one
  per patch (with overlaps), holding the static sky (galaxies, stars at
  their mean flux), sky and source noise, saturation, tract edges and a
  blanked region;
* visits in ``config.visit_bands``: per detector, a science image with its
  own PSF (the template PSF convolved with a Gaussian, the seeing),
  variable stars at their current flux, transients (supernova-like,
  hosted or not), trailed asteroids moving through the night (the same
  objects every night, colours of their taxonomic complex, dimmed by
  distance and phase angle, with a rotational light curve), cosmic rays (some flagged CR), hot columns, known
  bad columns (BAD + INTRP), slightly misregistered sources (subtraction
  dipoles), saturation, edges and vignetted blank regions;
* the template: the coadd warped to the detector (cubic spline);
* the difference: science minus the template convolved with the matching
  Gaussian kernel;
* DIA sources detected on the difference images, labelled by matching to
  the injected truth, and associated into DIA objects;
* the Solar System source table (``ss_source``): the DIA sources of the
  asteroids with their ``ssObjectId``, phase angle and distances;
* the object table (measured = truth + noise), its truth and a spec-z
  sample biased to bright galaxies.
"""

import dataclasses
import time
from typing import Any

import numpy as np
from astropy.table import Table, vstack

from ..images import PixelPlanes
from .coadds import (
    BandPhotometry,
    coadd_exposures_per_visit,
    measure_objects,
    render_coadd,
    specz_sample,
    truth_object_table,
)
from .common import (
    ARTIFACT_KINDS,
    DIA_LABELS,
    OBJECT_ID_OFFSET,
    REAL_LABELS,
    TRACT_ID,
    VisitDetectorProducts,
    stage_rng,
)
from .config import SurveyConfig
from .galaxies import (
    draw_static_sky,
    table_columns,
)
from .geometry import SurveyGeometry
from .populations import make_asteroids, make_transients
from .render import (
    NoiseModel,
    draw_psf_image,
    local_jacobian,
    make_psf,
)
from .visits import dia_objects, simulate_visit_detector, ss_sources

__all__ = [
    "ARTIFACT_KINDS",
    "DIA_LABELS",
    "OBJECT_ID_OFFSET",
    "SimulatedSurvey",
    "TRACT_ID",
    "VisitDetectorProducts",
    "simulate_catalog",
    "simulate_survey",
]


@dataclasses.dataclass
class SimulatedSurvey:
    """An in-memory simulated survey (see the module docstring)."""

    config: SurveyConfig
    geometry: SurveyGeometry
    truth_object: Table
    object: Table
    specz: Table
    coadds: dict[tuple[int, str], PixelPlanes]
    visit_products: list[VisitDetectorProducts]
    dia_object: Table
    transients: Table
    asteroids: Table
    timings: dict[str, float]

    @property
    def dia_source(self) -> Table:
        """All DIA sources of the survey in one table."""
        return vstack([p.dia_source for p in self.visit_products], metadata_conflicts="silent")

    @property
    def ss_source(self) -> Table:
        """The Solar System source table (`~lsst.meas.ml.simulate.visits.ss_sources`)."""
        return ss_sources(self.geometry, self.visit_products, self.asteroids)

    @property
    def truth_dia_source(self) -> Table:
        """All DIA truth rows (detections and missed injections) in one table."""
        return vstack([p.truth for p in self.visit_products], metadata_conflicts="silent")

    def summary(self) -> dict[str, Any]:
        """Return counts and timings, JSON-friendly.

        Returns
        -------
        summary : `dict` [`str`, `~typing.Any`]
            The configuration name and seed, the survey's size, the counts
            of DIA sources by label and artifact kind, the missed injections
            and the timings.
        """
        truth = self.truth_dia_source
        det = truth[truth["detected"]]
        labels = {str(k): int(np.sum(det["label"] == k)) for k in DIA_LABELS}
        kinds = {str(k): int(np.sum(det["artifact_kind"] == k)) for k in ARTIFACT_KINDS if k != "none"}
        missed = {str(k): int(np.sum((~truth["detected"]) & (truth["label"] == k))) for k in REAL_LABELS}
        return {
            "config": self.config.name,
            "seed": self.config.seed,
            "tract": TRACT_ID,
            "patches": self.config.n_patches,
            "coadd_bands": list(self.config.coadd_bands),
            "coadds": len(self.coadds),
            "visits": len(self.geometry.visits),
            "visit_detectors": len(self.visit_products),
            "truth_objects": len(self.truth_object),
            "objects": len(self.object),
            "specz": len(self.specz),
            "dia_sources": int(len(det)),
            "dia_objects": len(self.dia_object),
            "ss_objects": int(len(np.unique(np.asarray(self.asteroids["ssObjectId"])))),
            "ss_sources": len(self.ss_source),
            "dia_labels": labels,
            "artifact_kinds": kinds,
            "missed_injections": missed,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


# ----------------------------------------------------------------------
def simulate_survey(config: SurveyConfig | None = None) -> SimulatedSurvey:
    """Simulate a survey in memory.

    Parameters
    ----------
    config : `SurveyConfig`, optional
        Survey parameters; `SurveyConfig.default` if not given.

    Returns
    -------
    survey : `SimulatedSurvey`
        Images, catalogs and truth tables.
    """
    config = config or SurveyConfig.default()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    geom = SurveyGeometry(config, stage_rng(config.seed, "geometry"))
    truth = draw_static_sky(config, stage_rng(config.seed, "static-sky"), geom.tract_wcs)
    cols = table_columns(truth)
    timings["static_sky"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    coadd_bands = {band: render_coadd(config, geom, cols, band) for band in config.coadd_bands}
    coadds: dict[tuple[int, str], PixelPlanes] = {}
    for patch in geom.patches:
        for band, cb in coadd_bands.items():
            exp = cb.exposure.subset(patch.outer)
            exp.metadata.update({"PATCH": patch.index})
            coadds[(patch.index, band)] = exp
    timings["coadds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    photometry = {
        b: BandPhotometry(cb.exposure.psf, cb.noise, cb.exposure.mask) for b, cb in coadd_bands.items()
    }
    objects, detected = measure_objects(config, geom, truth, photometry)
    specz = specz_sample(config, truth, detected)
    truth_object = truth_object_table(config, geom, truth, detected)
    timings["catalogs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    transients = make_transients(config, geom, truth)
    asteroids = make_asteroids(config, geom)
    products: list[VisitDetectorProducts] = []
    lo, hi = config.visit_extra_sigma
    for visit in geom.visits:
        extra_sigma = float(stage_rng(config.seed, "seeing", visit.visit).uniform(lo, hi))
        for det in visit.detectors:
            products.append(
                simulate_visit_detector(
                    config,
                    geom,
                    visit,
                    det,
                    extra_sigma,
                    truth,
                    cols,
                    coadd_bands[visit.band],
                    transients,
                    asteroids,
                )
            )
    timings["visits"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dia_object = dia_objects(config, geom, products)
    timings["association"] = time.perf_counter() - t0
    return SimulatedSurvey(
        config=config,
        geometry=geom,
        truth_object=truth_object,
        object=objects,
        specz=specz,
        coadds=coadds,
        visit_products=products,
        dia_object=dia_object,
        transients=transients,
        asteroids=asteroids,
        timings=timings,
    )


def simulate_catalog(
    config: SurveyConfig | None = None, n_galaxies: int | None = None, n_stars: int | None = None
) -> tuple[Table, Table, Table]:
    """Catalog-level survey: object table, truth and spec-z without drawing images.

    The same populations and the same measurement model as `simulate_survey`
    (fluxes = truth + the noise of the deep coadds), but no pixels, so that
    large training and validation sets cost a second.  Positions are spread
    over the tract as usual (densities are not physical when ``n_galaxies``
    is large); no NO_DATA regions, saturation is flagged from the flux.

    Parameters
    ----------
    config : `SurveyConfig`, optional
        Survey parameters (`SurveyConfig.default` if not given).
    n_galaxies, n_stars : `int`, optional
        Override the numbers of galaxies and stars of ``config``.

    Returns
    -------
    object, truth_object, specz : `astropy.table.Table`
        As the tables of `SimulatedSurvey`.
    """
    config = dataclasses.replace(config or SurveyConfig.default())
    if n_galaxies is not None:
        config.n_galaxies = int(n_galaxies)
    if n_stars is not None:
        config.n_stars = int(n_stars)
    geom = SurveyGeometry(config, stage_rng(config.seed, "geometry"))
    truth = draw_static_sky(config, stage_rng(config.seed, "static-sky"), geom.tract_wcs)
    photometry = {}
    for band in config.coadd_bands:
        psf = make_psf(config.coadd_seeing[band], config.psf_beta)
        psf_img = draw_psf_image(psf, local_jacobian(geom.tract_wcs))
        noise = NoiseModel.from_depth(
            config.coadd_depth[band],
            psf_img,
            config.sky_electrons[band],
            config.full_well_electrons,
            coadd_exposures_per_visit(config, band),
        )
        photometry[band] = BandPhotometry(psf_img, noise, None)
    objects, detected = measure_objects(config, geom, truth, photometry, clip_to_tract=False)
    return objects, truth_object_table(config, geom, truth, detected), specz_sample(config, truth, detected)
