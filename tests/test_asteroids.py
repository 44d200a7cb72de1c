"""Asteroid taxonomy: colours, mixture, prediction, bad inputs, training, real data, simulated survey."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lsst.meas.ml.packages as packages_module
import lsst.meas.ml.products as products_module
import numpy as np
import pytest
import torch
from astropy.table import Table
from lsst.meas.ml.asteroids.features import (
    AB_ZEROPOINT_NJY,
    MODEL_COLOURS,
    AsteroidColumns,
    AsteroidFlag,
    AsteroidInputError,
    build_colours,
    hg12_phase_function,
    sources_from_alerts,
)
from lsst.meas.ml.asteroids.train import COMPLEXES, fit_mixture, noisy_realisations
from lsst.meas.ml.packages import ModelPackage

ROOT = Path(__file__).resolve().parents[1]
TEST_SCALE = os.environ.get("MEAS_ML_TEST_SCALE", "reduced")
DATA = ROOT.parent / "shared" / "data"
CLASSY = DATA / "asteroid_taxonomy" / "classy_data.csv"
ALERTS = sorted((DATA / "rubin_alerts").glob("*.parquet"))
REGISTERED = any(p.family == "asteroids" for p in products_module.PRODUCTS)


@pytest.fixture(autouse=True)
def asteroids_family(monkeypatch):
    """Let packages of family 'asteroids' be built before the product is registered."""
    if not REGISTERED:
        monkeypatch.setattr(packages_module, "KNOWN_FAMILIES", packages_module.KNOWN_FAMILIES | {"asteroids"})
        monkeypatch.setattr(
            products_module,
            "PRODUCTS",
            products_module.PRODUCTS
            + (
                products_module.Product(
                    "asteroids", "asteroid taxonomy from survey colours", "ml_asteroid_taxonomy"
                ),
            ),
        )


def _flux(mag):
    return 10 ** ((AB_ZEROPOINT_NJY - np.asarray(mag, float)) / 2.5)


def _rows(obj, band, mag, *, err=0.01, alpha=0.0, r=2.0, delta=1.0):
    f = _flux(mag)
    return dict(
        ssObjectId=obj,
        band=band,
        psfFlux=f,
        psfFluxErr=f * err * np.log(10) / 2.5,
        phaseAngle=alpha,
        helioRange=r,
        topoRange=delta,
    )


def _table(rows):
    return Table(
        rows=[tuple(r.values()) for r in rows],
        names=list(rows[0]),
        dtype=[np.int64, str, float, float, float, float, float],
    )


# ----------------------------------------------------------------- colours
def test_colours_hand_computed():
    rows = [
        _rows(1, "g", 20.0),
        _rows(1, "g", 20.2),
        _rows(1, "r", 19.5),
        _rows(1, "r", 19.6),
        _rows(1, "r", 19.9),
    ]
    oc = build_colours(_table(rows))
    dist = 5 * np.log10(2.0 * 1.0)
    g, r = 1, 2
    assert oc.ids.tolist() == [1]
    np.testing.assert_allclose(oc.h[0, g], 20.1 - dist, atol=1e-9)
    np.testing.assert_allclose(oc.h[0, r], 19.6 - dist, atol=1e-9)
    # MAD-based errors: g MAD 0.1 over 2, r MAD 0.1 over 3 (above the 0.01/sqrt(n) photometric floor)
    k = 1.2533 * 1.4826
    np.testing.assert_allclose(oc.h_err[0, g], k * 0.1 / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(oc.h_err[0, r], k * 0.1 / np.sqrt(3), rtol=1e-6)
    np.testing.assert_allclose(oc.colours[0, 1], 0.5, atol=1e-9)  # g-r
    np.testing.assert_allclose(oc.colour_errs[0, 1], np.hypot(k * 0.1 / np.sqrt(2), k * 0.1 / np.sqrt(3)))
    assert oc.n_obs[0].tolist() == [0, 2, 3, 0, 0, 0]
    assert np.isnan(oc.colours[0, [0, 2, 3, 4]]).all()
    assert oc.flags[0] & AsteroidFlag.MISSING_COLOUR and not oc.flags[0] & AsteroidFlag.ONE_BAND


def test_phase_correction_hg12():
    assert hg12_phase_function(0.0) == pytest.approx(1.0)
    phi = hg12_phase_function([5.0, 10.0, 20.0, 40.0])
    assert np.all(np.diff(phi) < 0) and np.all(phi > 0)
    rows = [_rows(7, "r", 20.0, alpha=20.0), _rows(7, "i", 19.8, alpha=10.0)]
    oc = build_colours(_table(rows))
    dist = 5 * np.log10(2.0)
    np.testing.assert_allclose(oc.h[0, 2], 20.0 - dist + 2.5 * np.log10(hg12_phase_function(20.0)))
    np.testing.assert_allclose(oc.h[0, 3], 19.8 - dist + 2.5 * np.log10(hg12_phase_function(10.0)))
    assert oc.flags[0] & AsteroidFlag.FEW_DETECTIONS


def test_colour_step_bad_inputs():
    rows = [
        _rows(1, "r", 20.0),  # one band only
        _rows(2, "g", 20.5),
        _rows(2, "r", 20.0),
        _rows(2, "r", 20.0),
        _rows(3, "g", 20.5),
        _rows(3, "r", 20.0),
    ]
    rows[2]["psfFlux"] = np.nan  # object 2: one non-finite flux
    rows[4]["phaseAngle"] = np.nan  # object 3: missing phase on g
    oc = build_colours(_table(rows))
    assert oc.ids.tolist() == [1, 2, 3]
    assert oc.flags[0] & AsteroidFlag.ONE_BAND
    assert oc.flags[1] & AsteroidFlag.NONFINITE_FLUX and oc.n_obs[1, 2] == 1
    np.testing.assert_allclose(oc.colours[1, 1], 0.5)
    assert oc.flags[2] & AsteroidFlag.MISSING_GEOMETRY and oc.flags[2] & AsteroidFlag.ONE_BAND
    empty = build_colours(_table(rows)[:0])
    assert len(empty.ids) == 0 and empty.colours.shape == (0, 5)
    with pytest.raises(AsteroidInputError, match="phaseAngle"):
        build_colours(
            Table(
                {
                    "ssObjectId": [1],
                    "band": ["r"],
                    "psfFlux": [1.0],
                    "psfFluxErr": [1.0],
                    "helioRange": [1.0],
                    "topoRange": [1.0],
                }
            )
        )
    renamed = _table(rows)
    renamed.rename_column("phaseAngle", "alpha")
    assert len(build_colours(renamed, AsteroidColumns(phase_angle="alpha")).ids) == 3


# ----------------------------------------------------------------- mixture
def test_mixture_fit_known_answer():
    rng = np.random.default_rng(1)
    n = 600
    true_means = np.array([[0.6, 0.2, -0.1, 0.0], [0.4, 0.1, 0.05, 0.05]])
    sig_int = 0.03
    y = rng.integers(0, 2, n)
    clean = true_means[y] + sig_int * rng.standard_normal((n, 4))
    x, cov, idx = noisy_realisations(clean, 1, rng, min_mag_err=0.02, max_mag_err=0.03)
    labels = np.where(rng.random(n) < 0.1, y, -1)  # 10% labelled
    model = fit_mixture(x, cov, labels, 2, n_iter=40)
    order = model.component_class.numpy()
    means = model.means.numpy()
    np.testing.assert_allclose(means[np.argsort(order)], true_means, atol=0.01)
    # deconvolution: intrinsic variance recovered, not the noisy one
    var = np.diagonal(model.covariances.numpy(), axis1=1, axis2=2)
    assert np.all(np.abs(np.sqrt(var) - sig_int) < 0.012), np.sqrt(var)
    with torch.no_grad():
        logp, score = model(torch.as_tensor(x), torch.as_tensor(cov), torch.ones(x.shape, dtype=torch.bool))
    assert (logp.argmax(1).numpy() == y[idx]).mean() > 0.97
    # a missing colour is marginalised: same as fitting the 3 other dimensions
    obs = torch.ones(x.shape, dtype=torch.bool)
    obs[:, 3] = False
    with torch.no_grad():
        ll_missing = model.joint_log_likelihood(torch.as_tensor(x), torch.as_tensor(cov), obs)
    from lsst.meas.ml.models.asteroids import component_log_likelihood

    ll3 = (
        component_log_likelihood(
            torch.as_tensor(x[:, :3]),
            torch.as_tensor(cov[:, :3, :3]),
            torch.ones(n, 3, dtype=torch.bool),
            model.means[:, :3],
            model.covariances[:, :3, :3],
        )
        + model.log_weights
    )
    torch.testing.assert_close(ll_missing, ll3)


def test_mixture_fit_with_missing_colours():
    rng = np.random.default_rng(4)
    n = 800
    true_means = np.array([[0.6, 0.2, -0.1, 0.0], [0.4, 0.1, 0.05, 0.05]])
    y = rng.integers(0, 2, n)
    clean = true_means[y] + 0.03 * rng.standard_normal((n, 4))
    x, cov, _ = noisy_realisations(clean, 1, rng, min_mag_err=0.02, max_mag_err=0.03)
    labels = np.where(rng.random(n) < 0.2, y, -1)
    # half the unlabelled rows lack i-z and z-y (as the default simulated survey's asteroids)
    drop = (labels < 0) & (rng.random(n) < 0.5)
    x[drop, 2:] = np.nan
    cov[drop, 2:, :] = np.nan
    cov[drop, :, 2:] = np.nan
    model = fit_mixture(x, cov, labels, 2, n_iter=40)
    means = model.means.numpy()[np.argsort(model.component_class.numpy())]
    np.testing.assert_allclose(means, true_means, atol=0.012)
    var = np.diagonal(model.covariances.numpy(), axis1=1, axis2=2)
    assert np.all(np.abs(np.sqrt(var) - 0.03) < 0.012), np.sqrt(var)
    from lsst.meas.ml.asteroids.train import AsteroidsTrainingError

    x[0] = np.nan
    with pytest.raises(AsteroidsTrainingError, match="at least one observed colour"):
        fit_mixture(x, cov, labels, 2, n_iter=2)


def test_demo_summary_figures():
    from lsst.meas.ml.asteroids.demo import summary_figures

    taxonomy = Table(
        {
            "ssObjectId": [1, 2, 3, 4],
            "taxonomy_class": ["S", "C", "C", ""],
            "prob_S": [0.7, 0.4, 0.1, np.nan],
            "prob_C": [0.3, 0.6, 0.9, np.nan],
            "taxonomy_flags": [0, 0, 0, int(AsteroidFlag.ONE_BAND)],
        }
    )
    truth = Table({"ssObjectId": [1, 1, 2, 3, 4], "asteroid_class": ["S", "S", "S", "C", "C"]})
    f = summary_figures(taxonomy, truth)
    assert f["n_objects"] == 4 and f["n_classified"] == 3 and f["n_one_band"] == 1
    assert f["accuracy"] == pytest.approx(2 / 3) and f["majority_class"] == "S"
    assert f["majority_accuracy"] == pytest.approx(2 / 3)
    assert f["median_true_probability"] == pytest.approx(0.7)


def test_simulated_population_accuracy():
    """The shipped package on objects drawn as the simulated survey draws them: more colours, better."""
    from lsst.meas.ml.asteroids.metrics import simulated_population_accuracy
    from lsst.meas.ml.cli import main
    from lsst.meas.ml.packages import default_package

    f = simulated_population_accuracy(default_package("asteroids"), 3000, mag_err=0.03, seed=1)
    assert f["majority_class"] == "C" and 0.35 < f["majority_accuracy"] < 0.45
    assert f["accuracy_four_colours"] > f["accuracy_g_r_r_i"] > f["majority_accuracy"] + 0.1
    assert main(["asteroids-quality"]) != 0  # needs --classy or --simulated-objects


def _synthetic_package():
    from lsst.meas.ml.asteroids.train import calibrate_anomaly

    rng = np.random.default_rng(2)
    centres = {"S": [0.62, 0.20, -0.07, 0.0], "C": [0.44, 0.12, 0.01, 0.02], "V": [0.66, 0.17, -0.30, 0.0]}
    y = rng.integers(0, 3, 300)
    names = list(centres)
    clean = np.array([centres[names[i]] for i in y]) + 0.03 * rng.standard_normal((300, 4))
    x, cov, idx = noisy_realisations(clean, 2, rng)
    labels = np.array([COMPLEXES.index(names[i]) for i in y])[idx]
    model = fit_mixture(x, cov, labels, len(COMPLEXES), n_iter=20)
    calibrate_anomaly(model, x, cov)
    return ModelPackage.from_model(
        model.float(),
        family="asteroids",
        architecture="asteroid_gmm",
        hyperparameters={"n_components": model.n_components, "n_features": 4, "n_classes": len(COMPLEXES)},
        inputs={"colours": list(MODEL_COLOURS), "phase_function": "HG12", "g12": 0.5},
        outputs={"class_names": list(COMPLEXES)},
        version="test",
        provenance={},
    )


@pytest.fixture
def package():
    return _synthetic_package()


def test_predict_and_bad_inputs(package, tmp_path):
    from lsst.meas.ml.asteroids.predict import predict_asteroids

    s = {"g": 20.62, "r": 20.0, "i": 19.80, "z": 19.87, "y": 19.87}  # S-like colours
    rows = [_rows(10, b, m) for b, m in s.items() for _ in range(3)]
    rows += [_rows(11, "r", 20.0)]  # one band
    rows += [_rows(12, "g", 20.62), _rows(12, "r", 20.0), _rows(12, "i", 19.8)]  # g-r, r-i only
    bad = _rows(13, "r", 20.0)
    bad["psfFlux"] = np.inf
    rows += [bad, _rows(13, "g", 20.5)]  # non-finite flux
    nophase = _rows(14, "i", 20.0, alpha=np.nan)
    rows += [nophase, _rows(14, "r", 20.1, r=np.nan)]  # no usable geometry at all
    out = predict_asteroids(package, _table(rows))
    by = {int(i): row for i, row in zip(out["ssObjectId"], out)}
    assert list(by) == [10, 11, 12, 13, 14]
    assert by[10]["taxonomy_class"] == "S" and by[10]["prob_S"] > 0.8
    probs = np.array([[row[f"prob_{c}"] for c in COMPLEXES] for row in out if row["taxonomy_class"]])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert by[10]["n_observations_g"] == 3 and by[10]["n_observations_u"] == 0
    assert by[11]["taxonomy_flags"] & AsteroidFlag.ONE_BAND and by[11]["taxonomy_class"] == ""
    assert np.isnan(by[11]["prob_S"]) and np.isnan(by[11]["taxonomy_anomaly_score"])
    assert by[12]["taxonomy_flags"] & AsteroidFlag.MISSING_COLOUR and by[12]["taxonomy_class"] != ""
    assert by[13]["taxonomy_flags"] & AsteroidFlag.NONFINITE_FLUX
    assert by[13]["taxonomy_flags"] & AsteroidFlag.ONE_BAND
    assert by[14]["taxonomy_flags"] & AsteroidFlag.MISSING_GEOMETRY
    assert by[14]["taxonomy_flags"] & AsteroidFlag.NO_VALID_DETECTION
    assert out.meta["ml_model"]["family"] == "asteroids"
    assert out.meta["taxonomy_flag_bits"]["ONE_BAND"] == int(AsteroidFlag.ONE_BAND)
    # an odd object scores high
    odd = [
        _rows(20, b, m)
        for b, m in {"g": 21.5, "r": 20.0, "i": 19.0, "z": 18.2, "y": 17.5}.items()
        for _ in range(3)
    ]
    odd_out = predict_asteroids(package, _table(odd))
    assert odd_out["taxonomy_anomaly_score"][0] > 1.0
    assert odd_out["taxonomy_flags"][0] & AsteroidFlag.OUT_OF_DISTRIBUTION
    empty = predict_asteroids(package, _table(rows)[:0])
    assert len(empty) == 0 and set(out.colnames) == set(empty.colnames)
    # the CLI: same catalog, atomic write, refuses to overwrite its input
    from lsst.meas.ml.cli import main

    src = tmp_path / "sources.parquet"
    _table(rows).write(src)
    model = tmp_path / "ast.safetensors"
    package.save(model)
    assert (
        main(
            [
                "predict",
                "asteroids",
                "--input",
                str(src),
                "--out",
                str(tmp_path / "o.parquet"),
                "--model",
                str(model),
            ]
        )
        == 0
    )
    back = Table.read(tmp_path / "o.parquet")
    assert list(back["taxonomy_class"]) == list(out["taxonomy_class"])
    assert main(["predict", "asteroids", "--input", str(src), "--out", str(src), "--model", str(model)]) != 0


def test_task_run_in_memory(package):
    from lsst.meas.ml.asteroids.task import ClassifyAsteroidsConfig, ClassifyAsteroidsTask

    config = ClassifyAsteroidsConfig()
    config.inference.device = "cpu"
    task = ClassifyAsteroidsTask(config=config)
    rows = [_rows(5, b, m) for b, m in {"g": 20.44, "r": 20.0, "i": 19.88, "z": 19.87}.items()]
    result = task.run(ssSources=_table(rows), model=package)
    assert result.taxonomy["taxonomy_class"][0] == "C"


# ----------------------------------------------------------------- real data
@pytest.mark.skipif(not CLASSY.exists(), reason=f"{CLASSY} not present (../shared absent)")
def test_short_training_on_classy_subset(tmp_path):
    import pandas as pd
    from lsst.meas.ml.asteroids.train import AsteroidsTrainingConfig, classy_colours, train_asteroids

    pytest.importorskip("speclite")
    frame = pd.read_csv(CLASSY)
    frame = frame[frame["0.45"].notna() & frame["1.05"].notna()].iloc[:400]
    tc = classy_colours(frame)
    assert np.isnan(tc.colours).sum() < tc.colours.size * 0.2
    s, v = tc.labels == "S", tc.labels == "V"
    # V types have the deep 1-micron band: i-z far bluer than S types
    assert np.nanmedian(tc.colours[v, 2]) < np.nanmedian(tc.colours[s, 2]) - 0.1
    result = train_asteroids(tc, AsteroidsTrainingConfig(n_realisations=2, n_iter=15))
    assert result.package.family == "asteroids"
    assert result.metrics["validation_accuracy"] > 0.45
    path = tmp_path / "ast.safetensors"
    result.package.save(path)
    assert ModelPackage.load(path).sha256 == result.package.sha256


@pytest.mark.skipif(not ALERTS, reason=f"no real alerts under {DATA / 'rubin_alerts'}")
def test_real_lsstcam_alerts_through_colour_step():
    total = 0
    for path in ALERTS:
        sources = sources_from_alerts(path)
        oc = build_colours(sources)
        total += len(sources)
        assert len(oc.ids) == len(np.unique(np.asarray(sources["ssObjectId"])))
        good = ~(oc.flags & AsteroidFlag.NO_VALID_DETECTION).astype(bool)
        assert np.isfinite(oc.h[good]).sum() == (oc.n_obs[good] > 0).sum()
        # implausible distances (~1e-8 au in the January 2026 alerts) are flagged, not used
        tiny = np.asarray(sources["helioRange"]) < 1e-4
        if tiny.any():
            bad_ids = np.unique(np.asarray(sources["ssObjectId"])[tiny])
            assert all(oc.flags[oc.ids == i][0] & AsteroidFlag.MISSING_GEOMETRY for i in bad_ids)
    assert total > 0


# ----------------------------------------------------------------- pipetask
@pytest.mark.slow
@pytest.mark.skipif(not REGISTERED, reason="'asteroids' is not yet in lsst.meas.ml.products.PRODUCTS")
def test_pipetask_run(package, tmp_path):
    from lsst.daf.butler import Butler, DatasetType
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.butler.repo import setup_repo

    repo = tmp_path / "repo"
    Butler.makeRepo(str(repo))
    setup_repo(repo)
    butler = Butler.from_config(str(repo), writeable=True)
    butler.registry.insertDimensionData(
        "instrument",
        {
            "name": "LSSTCam",
            "detector_max": 200,
            "visit_max": 10**9,
            "exposure_max": 10**9,
            "class_name": "lsst.obs.lsst.LsstCam",
        },
    )
    butler.registry.registerDatasetType(
        DatasetType("ss_source", ("instrument",), "ArrowAstropy", universe=butler.dimensions)
    )
    butler.registry.registerRun("inputs")
    rows = [_rows(5, b, m) for b, m in {"g": 20.44, "r": 20.0, "i": 19.88, "z": 19.87}.items()]
    rows += [_rows(6, "r", 20.0)]
    butler.put(_table(rows), "ss_source", instrument="LSSTCam", run="inputs")
    register_package(butler, package, run="models/asteroids/test")
    del butler
    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(repo),
        "-i",
        "inputs,models/asteroids/test",
        "-o",
        "u/test/asteroids",
        "-p",
        str(ROOT / "pipelines" / "asteroids.yaml"),
        "--register-dataset-types",
        "-c",
        "classifyAsteroids:inference.device=cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Butler.from_config(str(repo), collections="u/test/asteroids").get(
        "ml_asteroid_taxonomy", instrument="LSSTCam"
    )
    assert list(out["ssObjectId"]) == [5, 6]
    assert out["taxonomy_class"][0] == "C" and out["taxonomy_flags"][1] & AsteroidFlag.ONE_BAND


def _pipelines_with_task(shape):
    """asteroids.yaml, and the demo pipeline of ``shape`` once it holds classifyAsteroids."""
    demo = ROOT / "pipelines" / ("DP1Pipeline.yaml" if shape == "dp1" else "DemoPipeline.yaml")
    found = [str(ROOT / "pipelines" / "asteroids.yaml")]
    if "classifyAsteroids" in demo.read_text():
        found.append(f"{demo}#classifyAsteroids")
    return found


@pytest.mark.slow
@pytest.mark.skipif(not REGISTERED, reason="'asteroids' is not yet in lsst.meas.ml.products.PRODUCTS")
@pytest.mark.parametrize(
    "shape",
    [
        "drp",
        pytest.param(
            "dp1",
            marks=pytest.mark.skipif(
                TEST_SCALE != "full",
                reason="reduced scale: the DP1-shaped repository is checked in the full run "
                "(same ss_source dataset type and task)",
            ),
        ),
    ],
)
def test_simulated_survey_through_pipetask(shape, tiny_repo, tmp_path):
    """The simulated survey's ss_source -> demo training -> pipetask run -> summary against the truth."""
    from lsst.daf.butler import Butler
    from lsst.meas.ml.asteroids.demo import summarize, survey_colours, train_demo_package
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.simulate import SIM_COLLECTION, SurveyConfig, build_repo

    repo = tiny_repo
    if shape == "dp1":
        repo = tmp_path / "dp1"
        build_repo(repo, SurveyConfig.tiny(), shape="dp1")
    butler = Butler.from_config(str(repo), writeable=True)
    ss = butler.get(butler.query_datasets("ss_source", collections=SIM_COLLECTION)[0])
    ids, x, _ = survey_colours(ss)
    assert len(ids) >= 3 and np.isfinite(x[:, 0]).sum() >= 3  # the tiny survey's visits are in g and r
    package = train_demo_package(butler, [SIM_COLLECTION], str(tmp_path))
    assert package.family == "asteroids"
    run = f"models/asteroids/test-{shape}"
    register_package(butler, package, run=run)
    del butler
    pipetask = Path(sys.executable).with_name("pipetask")
    for k, pipeline in enumerate(_pipelines_with_task(shape)):
        output = f"u/test/asteroids-sim-{shape}-{k}"
        cmd = [
            str(pipetask) if pipetask.exists() else "pipetask",
            "run",
            "-b",
            str(repo),
            "-i",
            f"{SIM_COLLECTION},{run}",
            "-o",
            output,
            "-p",
            pipeline,
            "--register-dataset-types",
            "-c",
            "classifyAsteroids:inference.device=cpu",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        butler = Butler.from_config(str(repo))
        out = butler.get(butler.query_datasets("ml_asteroid_taxonomy", collections=output)[0])
        assert sorted(out["ssObjectId"]) == sorted(np.unique(np.asarray(ss["ssObjectId"])))
        classified = out[out["taxonomy_class"] != ""]
        assert set(np.asarray(classified["ssObjectId"])) == set(ids)
        lines = summarize(butler, output)
        assert lines and f"{len(out)} objects, {len(classified)} with a class" in lines[0]
