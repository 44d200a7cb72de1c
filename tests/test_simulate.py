"""Tests of the simulated mini-survey (`lsst.meas.ml.simulate`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy import units as u
from lsst.meas.ml.images import PixelPlanes
from lsst.meas.ml.simulate import (
    ALL_BANDS,
    DIA_LABELS,
    SIM_COLLECTION,
    SIM_RUN,
    SurveyConfig,
    build_repo,
    mag_to_flux,
    simulate_catalog,
    simulate_survey,
)
from lsst.meas.ml.simulate.detect import associate, detect_sources
from lsst.meas.ml.simulate.render import bit
from lsst.meas.ml.simulate.sed import ASTEROID_CLASSES, asteroid_colours, galaxy_colours
from scipy.spatial import cKDTree


@pytest.fixture(scope="module")
def tiny():
    return simulate_survey(SurveyConfig.tiny())


def _sigma_nmad(dz: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))


# ----------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------
def test_config_presets_and_errors():
    tiny, default = SurveyConfig.tiny(), SurveyConfig.default()
    assert tiny.n_galaxies < default.n_galaxies and tiny.tract_width < default.tract_width
    assert SurveyConfig.from_name("tiny", seed=3).seed == 3
    with pytest.raises(ValueError, match="Unknown survey size"):
        SurveyConfig.from_name("huge")
    with pytest.raises(ValueError, match="not in coadd_bands"):
        SurveyConfig(coadd_bands=("g", "r"), visit_bands=("i",))
    with pytest.raises(ValueError, match="do not fit inside the tract"):
        SurveyConfig(detector_width=1000)
    assert np.isclose(mag_to_flux(31.4), 1.0)


# ----------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------
def test_tiny_survey_products(tiny):
    cfg = tiny.config
    assert len(tiny.coadds) == cfg.n_patches * len(cfg.coadd_bands)
    assert len(tiny.visit_products) == cfg.n_visits * cfg.n_detectors
    for patch in tiny.geometry.patches:
        exp = tiny.coadds[(patch.index, "r")]
        assert isinstance(exp, PixelPlanes)
        assert exp.bbox == patch.outer
        assert exp.band == "r" and exp.photo_calib == 1.0
        assert np.isclose(exp.psf.sum(), 1.0, atol=1e-4)
        # The WCS is local: the patch corner maps where the tract WCS puts it.
        ra, dec = exp.pixel_to_sky(np.array([patch.outer.x0]), np.array([patch.outer.y0]))
        ra_t, dec_t = tiny.geometry.tract_wcs.wcs_pix2world(patch.outer.x0, patch.outer.y0, 0)
        assert np.allclose([ra[0], dec[0]], [ra_t, dec_t], atol=1e-9)
    ids = [p.visit for p in tiny.visit_products]
    assert all(isinstance(v, int) and v > 2**31 for v in ids)
    for p in tiny.visit_products:
        for exp in (p.science, p.template, p.difference):
            assert exp.image.shape == (cfg.detector_height, cfg.detector_width)
            assert exp.image.dtype == np.float32 and exp.psf is not None and exp.band == p.band
        # Visits lie inside the tract, so the template covers them.
        h, w = p.science.image.shape
        ra, dec = p.science.pixel_to_sky(np.array([0, w - 1, 0, w - 1]), np.array([0, 0, h - 1, h - 1]))
        tx, ty = tiny.geometry.tract_wcs.wcs_world2pix(ra, dec, 0)
        assert np.all((tx > 0) & (tx < cfg.tract_width - 1) & (ty > 0) & (ty < cfg.tract_height - 1))
        # The science PSF is wider than the template's (matching kernel exists).
        assert p.science.psf_fwhm_pixels() > p.template.psf_fwhm_pixels()


def test_difference_noise_is_consistent(tiny):
    for p in tiny.visit_products:
        d = p.difference
        z = (d.image / np.sqrt(d.variance))[np.isfinite(d.image) & (d.mask == 0)]
        robust = 1.4826 * np.median(np.abs(z - np.median(z)))
        assert 0.85 < robust < 1.2, f"difference S/N scatter {robust} for visit {p.visit}"


def test_masks_and_nans(tiny):
    planes_seen = 0
    nan_seen = False
    for exp in (
        list(tiny.coadds.values())
        + [p.science for p in tiny.visit_products]
        + [p.difference for p in tiny.visit_products]
    ):
        nodata = (exp.mask & bit("NO_DATA")) != 0
        assert np.array_equal(nodata, ~np.isfinite(exp.image)), "NaN pixels must be exactly NO_DATA"
        nan_seen |= bool(nodata.any())
        planes_seen |= int(np.bitwise_or.reduce(exp.mask.ravel()))
    assert nan_seen
    for plane in ("BAD", "SAT", "CR", "EDGE", "NO_DATA", "INTRP"):
        assert planes_seen & bit(plane), f"no {plane} pixels anywhere in the tiny survey"
    # Edges of every visit image are flagged.
    sci = tiny.visit_products[0].science
    assert np.all(sci.mask[0, :] & bit("EDGE")) and np.all(sci.mask[:, -1] & bit("EDGE"))


# ----------------------------------------------------------------------
# Catalogs and truth
# ----------------------------------------------------------------------
def test_object_table_schema(tiny):
    obj = tiny.object
    assert obj["objectId"].dtype == np.int64 and len(np.unique(obj["objectId"])) == len(obj)
    assert obj["coord_ra"].unit == u.deg and obj["coord_dec"].unit == u.deg
    for band in ALL_BANDS:
        for col in ("psfFlux", "psfFluxErr", "cModelFlux", "cModelFluxErr"):
            assert obj[f"{band}_{col}"].unit == u.nJy
        assert obj[f"{band}_cModel_flag"].dtype == bool
        # Missing measurements are NaN and flagged.
        nan = np.isnan(np.asarray(obj[f"{band}_cModelFlux"]))
        assert np.all(np.asarray(obj[f"{band}_cModel_flag"])[nan])
    # Faint objects scatter to negative flux in the shallow bands.
    assert np.any(np.asarray(obj["u_cModelFlux"]) < 0)
    assert set(np.unique(obj["patch"])) <= {p.index for p in tiny.geometry.patches}
    truth = tiny.truth_object
    assert set(obj["objectId"]) <= set(truth["objectId"])
    assert np.sum(truth["detected"]) == len(obj)
    for name in (
        "redshift",
        "morphology",
        "morphology_class",
        "bulge_fraction",
        "disk_hlr",
        "bulge_hlr",
        "is_star",
    ):
        assert name in truth.colnames


def test_extendedness_separates_stars_and_big_galaxies():
    from astropy.table import join

    obj, truth, _ = simulate_catalog(SurveyConfig.default(), n_galaxies=4000, n_stars=300)
    j = join(obj, truth["objectId", "is_star", "disk_hlr", "i_mag"], keys="objectId")
    ext = np.asarray(j["refExtendedness"])
    bright_stars = j["is_star"] & (np.asarray(j["i_mag"]) < 22)
    big_gals = ~j["is_star"] & (np.asarray(j["disk_hlr"]) > 0.7) & (np.asarray(j["i_mag"]) < 23)
    assert bright_stars.sum() >= 20 and big_gals.sum() >= 20
    assert np.nanmean(ext[bright_stars]) < 0.2
    assert np.nanmean(ext[big_gals]) > 0.8


def test_colours_follow_redshift():
    cfg = dataclasses.replace(SurveyConfig.default(), seed=11)
    obj, truth, specz = simulate_catalog(cfg, n_galaxies=12000, n_stars=0)
    from astropy.table import join

    j = join(obj, truth["objectId", "redshift", "i_mag", "morphology"], keys="objectId")
    flux = np.array([np.asarray(j[f"{b}_cModelFlux"]) for b in ALL_BANDS]).T
    bright = np.all(flux > 0, axis=1) & (np.asarray(j["i_mag"]) < 24.0)
    mags = -2.5 * np.log10(flux[bright])
    z = np.asarray(j["redshift"])[bright]
    features = np.column_stack([np.diff(mags, axis=1), mags[:, 3]])
    n = len(z)
    assert n > 1000
    train, test = np.arange(n) % 2 == 0, np.arange(n) % 2 == 1
    _, idx = cKDTree(features[train]).query(features[test], k=9)
    zphot = np.median(z[train][idx], axis=1)
    knn = _sigma_nmad((zphot - z[test]) / (1 + z[test]))
    constant = _sigma_nmad((np.median(z[train]) - z[test]) / (1 + z[test]))
    assert knn < 0.1 and knn < 0.4 * constant, (knn, constant)
    # Ellipticals are redder than irregulars at the same redshift.
    low = (z > 0.2) & (z < 0.6)
    gr = mags[:, 1] - mags[:, 2]
    morph = np.asarray(j["morphology"])[bright]
    assert np.median(gr[low & (morph == "elliptical")]) > np.median(gr[low & (morph == "irregular")]) + 0.3
    # Apparent sizes shrink with redshift; a spectroscopic sample favours bright galaxies.
    disk = np.asarray(truth["disk_hlr"])
    tz = np.asarray(truth["redshift"])
    assert np.median(disk[tz < 0.4]) > 1.5 * np.median(disk[tz > 1.5])
    sel = np.isin(truth["objectId"], specz["objectId"])
    det = np.asarray(truth["detected"])
    assert np.median(np.asarray(truth["i_mag"])[sel]) < np.median(np.asarray(truth["i_mag"])[det]) - 0.5
    assert np.all(np.abs(np.asarray(specz["specz"]) - np.asarray(truth["redshift"])[sel]) < 0.01)


def test_simulate_catalog_is_deterministic():
    a = simulate_catalog(SurveyConfig.tiny(seed=5))[0]
    b = simulate_catalog(SurveyConfig.tiny(seed=5))[0]
    c = simulate_catalog(SurveyConfig.tiny(seed=6))[0]
    assert np.array_equal(np.asarray(a["r_psfFlux"]), np.asarray(b["r_psfFlux"]), equal_nan=True)
    assert len(a) != len(c) or not np.array_equal(np.asarray(a["r_psfFlux"]), np.asarray(c["r_psfFlux"]))


def test_dia_labels_and_ids(tiny):
    src = tiny.dia_source
    truth = tiny.truth_dia_source
    det = truth[truth["detected"]]
    assert src["diaSourceId"].dtype == np.int64
    assert len(np.unique(src["diaSourceId"])) == len(src)
    assert np.array_equal(np.sort(np.asarray(det["diaSourceId"])), np.sort(np.asarray(src["diaSourceId"])))
    assert set(DIA_LABELS) <= set(det["label"]), set(det["label"])
    kinds = set(det["artifact_kind"][det["label"] == "artifact"])
    assert {"cosmic_ray", "dipole", "bad_column"} <= kinds, kinds
    assert np.all(det["artifact_kind"][det["label"] != "artifact"] == "none")
    assert np.all(np.abs(np.asarray(src["snr"])) >= tiny.config.detection_threshold)
    assert src["psfFlux"].unit == u.nJy
    # Asteroids carry a taxonomic class and an ssObjectId; others do not.
    ast = det[det["label"] == "asteroid"]
    assert set(ast["asteroid_class"]) <= set(ASTEROID_CLASSES) and np.all(ast["ssObjectId"] > 0)
    assert np.all(det["ssObjectId"][det["label"] != "asteroid"] == -1)
    # Real detections sit on their injected position.
    real = det[np.isin(det["label"], ["transient", "variable"])]
    assert np.median(real["match_distance"]) < 1.0
    # Missed injections are kept (completeness), with no diaSourceId.
    missed = truth[~truth["detected"]]
    assert len(missed) > 0 and np.all(missed["diaSourceId"] == -1)
    # Every source belongs to a DIA object; each object is named by its first source.
    assert np.all(np.isin(src["diaObjectId"], tiny.dia_object["diaObjectId"]))
    assert np.sum(tiny.dia_object["nDiaSources"]) == len(src)
    assert np.all(np.isin(tiny.dia_object["diaObjectId"], src["diaSourceId"]))


def test_quiet_sky_gives_clean_differences():
    """With nothing injected, subtracting the static sky leaves nothing to detect."""
    cfg = dataclasses.replace(
        SurveyConfig.tiny(),
        n_transients=0,
        asteroids_per_night=0,
        cosmic_rays_per_image=0,
        hot_columns_per_image=0,
        known_bad_columns_per_image=0,
        dipoles_per_image=0,
        variable_star_fraction=0.0,
        visits_per_band=1,
        n_detectors=1,
        visit_bands=("r",),
        star_mag_range=(19.0, 24.0),
    )
    survey = simulate_survey(cfg)
    assert len(survey.visit_products) == 1
    assert len(survey.dia_source) == 0 and len(survey.dia_object) == 0


def test_transient_flux_is_measured(tiny):
    truth = tiny.truth_dia_source
    src = tiny.dia_source
    det = truth[truth["detected"] & (truth["label"] == "transient")]
    by_id = {int(i): k for k, i in enumerate(src["diaSourceId"])}
    rows = [by_id[int(i)] for i in det["diaSourceId"]]
    flux = np.asarray(src["psfFlux"])[rows]
    err = np.asarray(src["psfFluxErr"])[rows]
    true = np.asarray(det["truth_flux"])
    pull = (flux - true) / err
    assert np.median(np.abs(pull)) < 2.0, np.median(pull)


# ----------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------
def test_detect_sources_finds_positive_and_negative():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-7:8, -7:8]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 2.0**2))
    psf /= psf.sum()
    image = rng.normal(0, 10.0, (80, 90))
    image[20 - 7 : 20 + 8, 30 - 7 : 30 + 8] += 5000 * psf
    image[60 - 7 : 60 + 8, 70 - 7 : 70 + 8] -= 3000 * psf
    exp = PixelPlanes(
        image=image.astype(np.float32),
        variance=np.full(image.shape, 100.0, np.float32),
        psf=psf.astype(np.float32),
        xy0=(100, 200),
    )
    found = detect_sources(exp, threshold=5.0)
    assert len(found["x"]) == 2
    assert np.allclose(sorted(found["x"]), [130, 170], atol=0.3)
    assert np.allclose(sorted(found["y"]), [220, 260], atol=0.3)
    assert np.allclose(sorted(found["psfFlux"]), [-3000, 5000], rtol=0.1)
    noise_only = PixelPlanes(
        image=rng.normal(0, 10.0, (80, 90)).astype(np.float32),
        variance=np.full((80, 90), 100.0, np.float32),
        psf=psf.astype(np.float32),
    )
    assert len(detect_sources(noise_only, threshold=5.0)["x"]) == 0
    with pytest.raises(ValueError, match="PSF"):
        detect_sources(PixelPlanes(image=np.zeros((10, 10), np.float32)))


def test_draw_sources_needs_float64_model():
    import galsim
    from lsst.meas.ml.simulate.render import Source, draw_sources, make_psf

    psf = make_psf(0.8, 3.5)
    jac = galsim.PixelScale(0.2)
    with pytest.raises(ValueError, match="float64"):
        draw_sources(np.zeros((20, 20), np.float32), [], psf, jac)
    model = np.zeros((41, 41))
    draw_sources(model, [Source(20.3, 19.6, galsim.DeltaFunction(flux=1000.0), 31)], psf, jac)
    assert np.isclose(model.sum(), 1000.0, rtol=0.02)
    yy, xx = np.indices(model.shape)
    assert np.isclose((xx * model).sum() / model.sum(), 20.3, atol=0.05)
    assert np.isclose((yy * model).sum() / model.sum(), 19.6, atol=0.05)


def test_associate_groups_by_radius():
    x = np.array([0.0, 0.5, 10.0, 10.4, 10.8, 30.0])
    y = np.zeros(6)
    ids = np.array([5, 3, 9, 8, 7, 1])
    assert associate(x, y, ids, 1.0).tolist() == [3, 3, 7, 7, 7, 1]


def test_sed_models():
    with pytest.raises(ValueError, match="Unknown galaxy template"):
        galaxy_colours("lenticular", np.array([0.5]))
    with pytest.raises(ValueError, match="Unknown asteroid class"):
        asteroid_colours(np.array(["Q9"]), np.random.default_rng(0))
    # V types have the deepest 1 micron band: the bluest i - z.
    col = asteroid_colours(np.array(list(ASTEROID_CLASSES)), np.random.default_rng(0), scatter=0.0)
    iz = col[:, 3] - col[:, 4]
    assert list(ASTEROID_CLASSES)[int(np.argmin(iz))] == "V"
    # The 4000 A break moves from g-r into r-i with redshift for ellipticals.
    c = galaxy_colours("elliptical", np.array([0.4, 0.9]))
    assert c[0, 1] - c[0, 2] > c[1, 1] - c[1, 2]
    assert c[1, 2] - c[1, 3] > c[0, 2] - c[0, 3]


# ----------------------------------------------------------------------
# Butler repository
# ----------------------------------------------------------------------
@pytest.mark.slow
def test_build_repo_and_read_back(tmp_path, tiny):
    from lsst.daf.butler import Butler

    root = tmp_path / "repo"
    summary = build_repo(root, SurveyConfig.tiny())
    assert summary["collection"] == SIM_COLLECTION and summary["visit_detectors"] == len(tiny.visit_products)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_repo(root, SurveyConfig.tiny())

    butler = Butler.from_config(str(root), collections=SIM_COLLECTION)
    assert butler.registry.getCollectionChain(SIM_COLLECTION) == (SIM_RUN,)
    cfg = tiny.config
    counts = {
        "visit_image": cfg.n_visits * cfg.n_detectors,
        "template_detector": cfg.n_visits * cfg.n_detectors,
        "difference_image": cfg.n_visits * cfg.n_detectors,
        "dia_source_unstandardized": cfg.n_visits * cfg.n_detectors,
        "truth_dia_source": cfg.n_visits * cfg.n_detectors,
        "deep_coadd": cfg.n_patches * len(cfg.coadd_bands),
        "object": 1,
        "truth_object": 1,
        "specz": 1,
        "dia_object": 1,
    }
    for name, n in counts.items():
        assert len(butler.query_datasets(name)) == n, name
    storage = {d.name: d.storageClass_name for d in butler.registry.queryDatasetTypes()}
    assert storage["visit_image"] == "VisitImage" and storage["difference_image"] == "DifferenceImage"
    assert storage["template_detector"] == storage["deep_coadd"] == "MaskedImageV2"

    # Dimension records the pipelines need.
    visits = list(butler.registry.queryDimensionRecords("visit"))
    assert len(visits) == cfg.n_visits
    assert all(v.region is not None and v.timespan is not None for v in visits)
    regions = list(butler.registry.queryDimensionRecords("visit_detector_region"))
    assert len(regions) == cfg.n_visits * cfg.n_detectors
    patches = list(butler.registry.queryDimensionRecords("patch"))
    assert len(patches) == cfg.n_patches and all(p.region is not None for p in patches)
    assert {r.band for r in butler.registry.queryDimensionRecords("physical_filter")} == set(ALL_BANDS)
    with butler.query() as q:
        overlaps = list(q.data_ids(["visit", "detector", "patch"]).where("skymap = 'mlsim'"))
    assert len(overlaps) >= cfg.n_visits * cfg.n_detectors

    # What comes back is what was simulated (the simulation is deterministic).
    p = tiny.visit_products[0]
    data_id = {"instrument": "MLSim", "visit": p.visit, "detector": p.detector}
    diff = PixelPlanes.from_image(butler.get("difference_image", dataId=data_id))
    assert np.array_equal(diff.image, p.difference.image, equal_nan=True)
    for name, bit_index in p.difference.mask_planes.items():  # same planes, stored under the stack's names
        assert np.array_equal(
            (diff.mask & diff.get_plane_bitmask(name)) != 0, (p.difference.mask & (1 << bit_index)) != 0
        )
    truth = butler.get("truth_dia_source", dataId=data_id)
    assert list(truth["label"]) == list(p.truth["label"])
    obj = butler.get("object", skymap="mlsim", tract=0)
    assert obj["g_psfFlux"].unit == u.nJy and np.array_equal(obj["objectId"], tiny.object["objectId"])
    coadd = PixelPlanes.from_image(butler.get("deep_coadd", skymap="mlsim", tract=0, patch=1, band="i"))
    assert coadd.xy0 == tiny.coadds[(1, "i")].xy0
    assert np.array_equal(coadd.image, tiny.coadds[(1, "i")].image, equal_nan=True)

    # The instrument record names an importable Instrument class.
    from lsst.pipe.base import Instrument

    instrument = Instrument.from_string("MLSim", butler.registry)
    assert instrument.getName() == "MLSim"
    with pytest.raises(NotImplementedError, match="no raw data"):
        instrument.getRawFormatter({})


def test_dp1_shaped_repository(tmp_path, tiny):
    """Data Preview 1's shape: template_coadd per patch, one dia_source table per tract."""
    from lsst.daf.butler import Butler

    root = tmp_path / "dp1"
    summary = build_repo(root, SurveyConfig.tiny(), shape="dp1")
    assert summary["shape"] == "dp1"
    butler = Butler.from_config(str(root), collections=SIM_COLLECTION)
    names = {d.name for d in butler.registry.queryDatasetTypes()}
    assert {"template_coadd", "dia_source"} <= names
    assert not names & {"template_detector", "dia_source_unstandardized", "dia_source_detector"}
    cfg = tiny.config
    assert len(butler.query_datasets("template_coadd")) == cfg.n_patches * len(cfg.coadd_bands)
    table = butler.get("dia_source", skymap="mlsim", tract=0)
    assert len(table) == len(tiny.dia_source) and {"visit", "detector", "x", "y"} <= set(table.colnames)
    with pytest.raises(ValueError, match="Unknown repository shape"):
        build_repo(tmp_path / "x", SurveyConfig.tiny(), shape="dp2")


# ----------------------------------------------------------------------
# Solar System sources
# ----------------------------------------------------------------------
def test_asteroid_geometry_and_colour_draws():
    from lsst.meas.ml.simulate.populations import (
        asteroid_colour_model,
        draw_asteroid_colours,
        observing_geometry,
    )

    delta, alpha = observing_geometry(np.array([2.5, 2.0]), np.array([180.0, 90.0]))
    np.testing.assert_allclose(delta, [1.5, np.sqrt(3.0)])
    np.testing.assert_allclose(alpha, [0.0, 30.0], atol=1e-9)
    model = asteroid_colour_model()
    s = model["complex"] == "S"
    expected = (model["weights"][s, None] * model["means"][s]).sum(0) / model["weights"][s].sum()
    off = draw_asteroid_colours(np.full(4000, "S"), np.random.default_rng(3), model)
    colours = np.stack([off[:, 1], -off[:, 3], off[:, 3] - off[:, 4], off[:, 4] - off[:, 5]], axis=1)
    np.testing.assert_allclose(colours.mean(0), expected, atol=0.01)
    assert np.all(off[:, 2] == 0.0)
    with pytest.raises(ValueError, match="Unknown asteroid class"):
        draw_asteroid_colours(np.array(["Q"]), np.random.default_rng(0), model)


def test_ss_source_follows_colours_and_geometry(tiny):
    from lsst.meas.ml.asteroids.features import AsteroidColumns, build_colours, hg12_phase_function
    from lsst.meas.ml.simulate.visits import SS_SOURCE_COLUMNS

    ss = tiny.ss_source
    ast = tiny.asteroids
    assert list(ss.colnames) == list(SS_SOURCE_COLUMNS)
    assert set(AsteroidColumns().columns()) <= set(ss.colnames)
    assert len(ss) > 0 and ss["psfFlux"].unit == u.nJy and ss["helioRange"].unit == u.AU
    # every row is a detected DIA source of an injected asteroid, at most one per object and visit
    src_ids = set(np.asarray(tiny.dia_source["diaSourceId"]).tolist())
    assert set(np.asarray(ss["diaSourceId"]).tolist()) <= src_ids
    assert set(np.asarray(ss["ssObjectId"]).tolist()) <= set(np.asarray(ast["ssObjectId"]).tolist())
    pairs = list(zip(np.asarray(ss["ssObjectId"]).tolist(), np.asarray(ss["visit"]).tolist()))
    assert len(pairs) == len(set(pairs))
    # the same objects every night, so an object is seen in several bands
    assert len(np.unique(np.asarray(ast["night"]))) > 1
    assert len(ast) == tiny.config.asteroids_per_night * len(np.unique(np.asarray(ast["night"])))
    # fluxes follow H_r + colour + distance/phase dimming (up to rotation, noise and edge losses)
    truth = {int(r["ssObjectId"]): r for r in ast}
    res = []
    for row in ss:
        t = truth[int(row["ssObjectId"])]
        m = 31.4 - 2.5 * np.log10(row["psfFlux"])
        h = (
            m
            - 5 * np.log10(row["helioRange"] * row["topoRange"])
            + 2.5 * np.log10(hg12_phase_function(row["phaseAngle"], float(t["g12"])))
        )
        res.append(h - t["H_r"] - t[f"{row['band']}_offset"])
    res = np.array(res)
    assert abs(np.median(res)) < 0.06 and np.mean(np.abs(res) < 0.2) > 0.75, res
    # the colour step reads the table as it is: objects seen in g and r get a g-r colour
    oc = build_colours(ss)
    both = (oc.n_obs[:, 1] > 0) & (oc.n_obs[:, 2] > 0)
    assert both.sum() >= 3 and np.isfinite(oc.colours[both, 1]).all()
