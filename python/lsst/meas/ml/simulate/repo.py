"""Write a simulated survey into a SQLite-backed Butler repository.

`build_repo` creates the repository (with the meas_ml storage classes),
inserts every dimension record the pipelines need (instrument, physical
filters, detectors, day_obs, visits with regions and timespans,
visit-detector regions, the ``mlsim`` sky map with its tract and patches),
registers the dataset types and puts every product into the RUN collection
`SIM_RUN`, chained from `SIM_COLLECTION`.  Both shapes get one Solar System
source table per instrument (``ss_source``) and the asteroid truth per tract
(``truth_ss_object``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from astropy.time import Time
from lsst.daf.butler import Butler, CollectionType, DatasetType, Timespan
from lsst.sphgeom import ConvexPolygon, LonLat, UnitVector3d

from .config import SurveyConfig
from .geometry import SurveyGeometry, sky_polygon
from .instrument import INSTRUMENT_NAME, MLSim, physical_filter_name
from .survey import TRACT_ID, SimulatedSurvey, simulate_survey

__all__ = [
    "EXTRA_DATASET_TYPES",
    "SIM_COLLECTION",
    "SHAPES",
    "SIM_RUN",
    "SKYMAP_NAME",
    "build_repo",
    "insert_dimension_records",
    "write_survey",
]

#: RUN collection holding every simulated dataset.
SIM_RUN = "MLSim/runs/sim"
#: CHAINED collection to read the simulated survey from.
SIM_COLLECTION = "MLSim/defaults"
#: Name of the simulated sky map.
SKYMAP_NAME = "mlsim"

#: Simulation products beyond the shared dataset types:
#: name -> (dimensions, storage class).
EXTRA_DATASET_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "dia_object": (("skymap", "tract"), "ArrowAstropy"),
    "truth_transient": (("skymap", "tract"), "ArrowAstropy"),
    "truth_ss_object": (("skymap", "tract"), "ArrowAstropy"),
    "ss_source": (("instrument",), "ArrowAstropy"),
    "mlsim_config": ((), "StructuredDataDict"),
}


def _polygon(corners: list[tuple[float, float]]) -> ConvexPolygon:
    return ConvexPolygon.convexHull([UnitVector3d(LonLat.fromDegrees(ra, dec)) for ra, dec in corners])


def _timespan(mjd_begin: float, mjd_end: float) -> Timespan:
    return Timespan(Time(mjd_begin, format="mjd", scale="tai"), Time(mjd_end, format="mjd", scale="tai"))


def _day_obs_timespan(day_obs: int) -> Timespan:
    # Rubin's day_obs runs from 12:00 TAI on that date to 12:00 TAI the next day.
    s = str(day_obs)
    begin = Time(f"{s[:4]}-{s[4:6]}-{s[6:]}T12:00:00", format="isot", scale="tai")
    return Timespan(begin, Time(begin.mjd + 1.0, format="mjd", scale="tai"))


def insert_dimension_records(butler: Butler, geometry: SurveyGeometry) -> None:
    """Insert the instrument, sky-map and visit dimension records of a survey (idempotent).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        A writeable Butler.
    geometry : `~lsst.meas.ml.simulate.geometry.SurveyGeometry`
        The survey geometry.
    """
    config = geometry.config
    registry = butler.registry
    MLSim(config.n_detectors).register(registry)

    # Sky map, tract and patches.
    skymap_hash = hashlib.sha1(
        json.dumps(
            [
                config.tract_ra,
                config.tract_dec,
                config.pixel_scale,
                config.patch_size,
                config.n_patch_x,
                config.n_patch_y,
                config.patch_border,
            ],
            sort_keys=True,
        ).encode()
    ).digest()
    registry.syncDimensionData(
        "skymap",
        {
            "name": SKYMAP_NAME,
            "hash": skymap_hash,
            "tract_max": 1,
            "patch_nx_max": config.n_patch_x,
            "patch_ny_max": config.n_patch_y,
        },
    )
    tract_region = _polygon(sky_polygon(geometry.tract_wcs, geometry.tract_box))
    registry.syncDimensionData("tract", {"skymap": SKYMAP_NAME, "id": TRACT_ID, "region": tract_region})
    for patch in geometry.patches:
        registry.syncDimensionData(
            "patch",
            {
                "skymap": SKYMAP_NAME,
                "tract": TRACT_ID,
                "id": patch.index,
                "cell_x": patch.cell_x,
                "cell_y": patch.cell_y,
                "region": _polygon(sky_polygon(geometry.tract_wcs, patch.outer)),
            },
        )

    # Observing days, visits and their detector regions.
    for day_obs in sorted({v.day_obs for v in geometry.visits}):
        registry.syncDimensionData(
            "day_obs", {"instrument": INSTRUMENT_NAME, "id": day_obs, "timespan": _day_obs_timespan(day_obs)}
        )
    half = 0.5 * config.exposure_time / 86400.0
    for visit in geometry.visits:
        corners: list[tuple[float, float]] = []
        det_regions = []
        for det in visit.detectors:
            c = sky_polygon(det.wcs, det.box)
            corners.extend(c)
            det_regions.append((det.detector, _polygon(c)))
        registry.syncDimensionData(
            "visit",
            {
                "instrument": INSTRUMENT_NAME,
                "id": visit.visit,
                "day_obs": visit.day_obs,
                "physical_filter": physical_filter_name(visit.band),
                "name": f"MLSim_{visit.visit}",
                "seq_num": visit.seq_num,
                "exposure_time": config.exposure_time,
                "target_name": "mlsim_field",
                "observation_reason": "science",
                "science_program": "mlsim",
                "azimuth": 180.0,
                "zenith_angle": 30.0,
                "region": _polygon(corners),
                "timespan": _timespan(visit.mjd - half, visit.mjd + half),
            },
        )
        for detector, region in det_regions:
            registry.syncDimensionData(
                "visit_detector_region",
                {"instrument": INSTRUMENT_NAME, "visit": visit.visit, "detector": detector, "region": region},
            )


#: Repository shapes `write_survey` can write (see
#: `lsst.meas.ml.butler.SHAPE_DATASET_TYPES`).
SHAPES: tuple[str, ...] = ("drp", "dp1")


def write_survey(
    butler: Butler,
    survey: SimulatedSurvey,
    run: str = SIM_RUN,
    chain: str = SIM_COLLECTION,
    *,
    shape: str = "drp",
) -> int:
    """Put every product of a survey into ``run`` (and chain ``chain`` to it).

    Images are written as ``lsst.images`` types under the stack's storage
    classes: visit images as `lsst.images.VisitImage`, difference images as
    `lsst.images.DifferenceImage`, templates and coadds as
    `lsst.images.MaskedImage` (on the tract's pixel frame for coadds).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        A writeable Butler.
    survey : `~lsst.meas.ml.simulate.survey.SimulatedSurvey`
        The simulated survey.
    run : `str`, optional
        The run collection to write.
    chain : `str`, optional
        The chained collection made to point at ``run``.
    shape : `str`, optional
        ``"drp"``: per-detector templates (``template_detector``) and DIA
        sources (``dia_source_unstandardized``), as the current DRP writes
        them; ``"dp1"``: Data Preview 1's ``template_coadd`` per patch and
        band and one ``dia_source`` table per tract.

    Returns
    -------
    n_datasets : `int`
        The number of datasets written.

    Raises
    ------
    ValueError
        If ``shape`` is not one of `SHAPES`.
    """
    from ..butler import DATASET_TYPES, register_dataset_types
    from ..stack_images import coadd_frame, to_masked_image, to_visit_image

    if shape not in SHAPES:
        raise ValueError(f"Unknown repository shape {shape!r}; choose one of {SHAPES}.")
    register_dataset_types(butler, shape=shape)
    for name, (dims, storage_class) in EXTRA_DATASET_TYPES.items():
        if name not in DATASET_TYPES:
            dataset_type = DatasetType(name, dims, storage_class, universe=butler.dimensions)
            butler.registry.registerDatasetType(dataset_type)
    insert_dimension_records(butler, survey.geometry)
    butler.registry.registerRun(run)
    butler.registry.registerCollection(chain, CollectionType.CHAINED)
    butler.registry.setCollectionChain(chain, [run])

    n = 0
    tract_id = {"skymap": SKYMAP_NAME, "tract": TRACT_ID}
    geometry = survey.geometry
    tract_box = geometry.tract_box.to_stack()
    frame = coadd_frame(tract_box, skymap=SKYMAP_NAME, tract=TRACT_ID)
    for (patch, band), planes in survey.coadds.items():
        coadd = to_masked_image(planes, frame)
        data_id = {**tract_id, "patch": patch, "band": band}
        butler.put(coadd, "deep_coadd", dataId=data_id, run=run)
        n += 1
        if shape == "dp1":  # the simulated template is the deep coadd itself
            butler.put(coadd, "template_coadd", dataId=data_id, run=run)
            n += 1
    for name, table in (
        ("object", survey.object),
        ("truth_object", survey.truth_object),
        ("specz", survey.specz),
        ("dia_object", survey.dia_object),
        ("truth_transient", survey.transients),
        ("truth_ss_object", survey.asteroids),
    ):
        butler.put(table, name, dataId=tract_id, run=run)
        n += 1
    records = {r["id"]: r for r in MLSim(survey.config.n_detectors).detector_records()}
    for p in survey.visit_products:
        data_id = {"instrument": INSTRUMENT_NAME, "visit": p.visit, "detector": p.detector}
        identity = dict(
            instrument=INSTRUMENT_NAME,
            visit=p.visit,
            detector_id=p.detector,
            detector_name=records[p.detector]["full_name"],
            physical_filter=physical_filter_name(p.band),
            mjd=p.mjd,
            exposure_time=survey.config.exposure_time,
        )
        butler.put(to_visit_image(p.science, **identity), "visit_image", dataId=data_id, run=run)
        butler.put(
            to_visit_image(p.difference, difference=True, **identity),
            "difference_image",
            dataId=data_id,
            run=run,
        )
        butler.put(p.truth, "truth_dia_source", dataId=data_id, run=run)
        n += 3
        if shape == "drp":
            butler.put(to_masked_image(p.template), "template_detector", dataId=data_id, run=run)
            butler.put(p.dia_source, "dia_source_unstandardized", dataId=data_id, run=run)
            n += 2
    if shape == "dp1":
        butler.put(survey.dia_source, "dia_source", dataId=tract_id, run=run)
        n += 1
    # Solar System sources: one table per instrument in both shapes (an object's detections span
    # nights and tracts; ClassifyAsteroidsTask reads it whole).
    butler.put(survey.ss_source, "ss_source", dataId={"instrument": INSTRUMENT_NAME}, run=run)
    n += 1
    butler.put(survey.config.to_dict(), "mlsim_config", dataId={}, run=run)
    return n + 1


def build_repo(
    root: str | os.PathLike,
    config: SurveyConfig | None = None,
    *,
    overwrite: bool = False,
    shape: str = "drp",
) -> dict[str, Any]:
    """Simulate a survey and write it into a new Butler repository at ``root``.

    Parameters
    ----------
    root : path-like
        Directory of the new repository.
    config : `SurveyConfig`, optional
        Survey parameters (`SurveyConfig.default` if not given).
    overwrite : `bool`
        Replace an existing repository at ``root``.
    shape : `str`
        Repository shape, ``"drp"`` or ``"dp1"`` (see `write_survey`).

    Returns
    -------
    summary : `dict`
        Counts, collections and timings (``simulate_s``, ``write_s``).
    """
    from ..butler import create_repo

    config = config or SurveyConfig.default()
    root = os.fspath(root)
    if os.path.exists(os.path.join(root, "butler.yaml")) and not overwrite:
        raise FileExistsError(
            f"{root} already holds a Butler repository; pass overwrite=True (or --overwrite) to replace it."
        )
    t0 = time.perf_counter()
    survey = simulate_survey(config)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    butler = create_repo(root, overwrite=overwrite)
    n = write_survey(butler, survey, shape=shape)
    t_write = time.perf_counter() - t0
    summary = survey.summary()
    summary.update(
        {
            "repo": root,
            "run": SIM_RUN,
            "collection": SIM_COLLECTION,
            "instrument": INSTRUMENT_NAME,
            "shape": shape,
            "skymap": SKYMAP_NAME,
            "datasets": n,
            "simulate_s": round(t_sim, 2),
            "write_s": round(t_write, 2),
        }
    )
    return summary
