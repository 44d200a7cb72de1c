"""Tests of the Bayesian photo-z follow-up: posteriors with known answers, the emcee path, bad
input, the task through a real Butler and ``pipetask run``, the commands and the calibration plots."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table
from lsst.meas.ml.cli import main
from lsst.meas.ml.models.photoz_templates import TemplateGrid, amplitude_marginal_loglike, mix_matrix
from lsst.meas.ml.packages import ModelPackage, PackageError
from lsst.meas.ml.photoz.features import PhotozColumns, PhotozInputError
from lsst.meas.ml.photoz.followup import (
    FollowupConfig,
    FollowupError,
    PhotozBayesFlag,
    calzetti_k,
    empty_followup_table,
    followup_photoz,
    gelman_rubin,
    grid_posterior,
    madau_transmission,
    select_followup,
    template_package,
)
from lsst.meas.ml.photoz.predict import DEFAULT_PACKAGE_PATH, PhotozFlag

ROOT = Path(__file__).resolve().parents[1]
BANDS = "ugrizy"


@pytest.fixture(scope="module")
def templates() -> ModelPackage:
    return template_package()


def _table(fluxes: np.ndarray, errors: np.ndarray, ids: np.ndarray | None = None) -> Table:
    t = Table({"objectId": np.arange(len(fluxes), dtype=np.int64) if ids is None else ids})
    for k, b in enumerate(BANDS):
        t[f"{b}_cModelFlux"] = fluxes[:, k]
        t[f"{b}_cModelFluxErr"] = errors[:, k]
    return t


def _template_objects(grid: TemplateGrid, n: int, seed: int, snr: float = 20.0):
    """Objects made from the template grid itself, with Gaussian noise: the model is exact."""
    rng = np.random.default_rng(seed)
    zi = rng.integers(20, grid.redshift.numel() - 30, n)
    ti = rng.integers(0, grid.fluxes.shape[1], n)
    di = rng.integers(0, grid.fluxes.shape[2], n)
    model = grid.fluxes[zi, ti, di].double().numpy() * rng.uniform(500.0, 5000.0, (n, 1))
    errors = model[:, 3:4] / snr * np.ones((1, len(BANDS)))
    fluxes = model + rng.normal(size=model.shape) * errors
    return fluxes, errors, grid.redshift.double().numpy()[zi]


# ----------------------------------------------------------------------
# The likelihood and the posterior against known answers


def test_amplitude_marginalisation_matches_numerical_integral():
    rng = np.random.default_rng(0)
    m = torch.tensor(rng.uniform(0.5, 2.0, (3, 6)))
    f = torch.tensor(rng.normal(1.0, 0.3, (2, 6)))
    w = torch.tensor(rng.uniform(1.0, 10.0, (2, 6)))
    loglike, _ = amplitude_marginal_loglike(f, w, m)
    amps = np.linspace(0.0, 5.0, 200001)
    for i in range(2):
        for j in range(3):
            resid = f[i].numpy()[None, :] - amps[:, None] * m[j].numpy()[None, :]
            integrand = np.exp(-0.5 * (resid**2 * w[i].numpy()).sum(axis=1))
            assert math.log(np.trapezoid(integrand, amps)) == pytest.approx(float(loglike[i, j]), abs=1e-4)


def test_grid_posterior_of_a_one_band_gaussian_is_analytic():
    """A one-band grid whose model flux is linear in z, amplitude fixed by a second, exact band:
    the posterior of z is the Gaussian of the one noisy band, known in closed form."""
    n_z = 301
    z = np.linspace(0.0, 3.0, n_z)
    grid = TemplateGrid(n_z=n_z, n_templates=1, n_ebv=1, n_bands=2, n_interp=1)
    grid.redshift.copy_(torch.from_numpy(z))
    fl = np.zeros((n_z, 1, 1, 2))
    fl[:, 0, 0, 0] = 1.0  # the reference band, measured almost exactly: amplitude known
    fl[:, 0, 0, 1] = 1.0 + z  # slope one in z
    grid.fluxes.copy_(torch.from_numpy(fl.astype(np.float32)))
    amp, z0, sigma_z = 1000.0, 1.3, 0.1
    fluxes = np.array([[amp, amp * (1.0 + z0)]])
    errors = np.array([[1e-3, amp * sigma_z]])
    post = grid_posterior(grid, fluxes, errors, error_floor=0.0)
    pdf = post["pdf"][0] / post["pdf"][0].sum()
    centres = z
    mean = float(pdf @ centres)
    std = float(np.sqrt(pdf @ (centres - mean) ** 2))
    assert mean == pytest.approx(z0, abs=2e-3)
    assert std == pytest.approx(sigma_z, rel=0.03)


def test_posterior_of_template_generated_objects_covers_the_truth(templates):
    grid = templates.build_model()
    fluxes, errors, z = _template_objects(grid, 150, seed=3)
    out = followup_photoz(templates, _table(fluxes, errors), config=FollowupConfig(error_floor=0.0))
    lo, hi = np.asarray(out["photoz_bayes_lo68"]), np.asarray(out["photoz_bayes_hi68"])
    coverage = np.mean((lo <= z) & (z <= hi))
    assert 0.55 <= coverage <= 0.82  # 68% expected; binomial scatter for 150 objects is 4%
    assert np.median(np.abs(np.asarray(out["photoz_bayes_median"]) - z) / (1 + z)) < 0.05
    q = np.asarray(out["photoz_bayes_quantiles"])
    assert q.shape == (150, len(out.meta["photoz_bayes_quantile_levels"]))
    assert np.all(np.diff(q, axis=1) >= -1e-6)
    assert not np.any(np.asarray(out["photoz_bayes_flags"]) & PhotozBayesFlag.POOR_FIT)
    assert np.all(np.asarray(out["photoz_bayes_n_bands"]) == 6)
    assert out.meta["photoz_bayes_method"] == "grid"
    assert out.meta["ml_model"]["architecture"] == "photoz_template_grid"
    assert out.meta["ml_model"]["sha256"] == templates.sha256


def test_emcee_path_agrees_with_the_grid_and_reports_diagnostics(templates):
    pytest.importorskip("emcee")
    grid = templates.build_model()
    fluxes, errors, z = _template_objects(grid, 3, seed=5, snr=40.0)
    table = _table(fluxes, errors)
    config = FollowupConfig(method="mcmc", error_floor=0.0, n_walkers=16, n_steps=300, n_burn=100, seed=1)
    mc = followup_photoz(templates, table, config=config)
    gr = followup_photoz(templates, table, config=FollowupConfig(error_floor=0.0))
    for key in ("photoz_bayes_rhat", "photoz_bayes_n_eff", "photoz_bayes_acceptance"):
        assert np.all(np.isfinite(mc[key])), key
        assert np.all(np.isnan(gr[key])), key
    assert np.all((mc["photoz_bayes_acceptance"] > 0) & (mc["photoz_bayes_acceptance"] < 1))
    converged = (np.asarray(mc["photoz_bayes_flags"]) & PhotozBayesFlag.NOT_CONVERGED) == 0
    assert np.all(converged == ((mc["photoz_bayes_rhat"] <= 1.1) & (mc["photoz_bayes_n_eff"] >= 50)))
    # Where the chains converged, MCMC and grid medians agree to within the posterior width.
    width = np.asarray(gr["photoz_bayes_hi68"] - gr["photoz_bayes_lo68"])
    diff = np.abs(np.asarray(mc["photoz_bayes_median"] - gr["photoz_bayes_median"]))
    assert np.all(diff[converged] <= np.maximum(width[converged], 0.02))
    # Same seed: same chains.
    again = followup_photoz(templates, table, config=config)
    assert np.array_equal(np.asarray(again["photoz_bayes_median"]), np.asarray(mc["photoz_bayes_median"]))


def test_gelman_rubin():
    rng = np.random.default_rng(0)
    assert gelman_rubin(rng.normal(size=(8, 2000))) == pytest.approx(1.0, abs=0.01)
    shifted = rng.normal(size=(8, 2000)) + np.arange(8)[:, None]
    assert gelman_rubin(shifted) > 2.0
    assert math.isnan(gelman_rubin(np.zeros((4, 3))))


def test_physics_helpers_and_mixes():
    expected = 4.05 + 2.659 * (-2.156 + 1.509 / 0.44 - 0.198 / 0.44**2 + 0.011 / 0.44**3)
    assert calzetti_k(np.array([0.44]))[0] == pytest.approx(expected, rel=1e-9)
    t = madau_transmission(np.array([3000.0, 4500.0, 9000.0]), 3.0)  # Lyman limit, forest, free
    assert t[0] < t[1] < t[2] == pytest.approx(1.0)
    w = mix_matrix(3, 2).numpy()
    assert w.shape == (7, 3) and np.allclose(w.sum(axis=1), 1.0) and np.allclose(w[3], [0, 1, 0])


# ----------------------------------------------------------------------
# Selection and bad input


def test_selection_of_ood_and_requested_objects():
    photoz = Table(
        {
            "objectId": np.array([10, 11, 12, 13]),
            "photoz_flags": np.array(
                [
                    0,
                    PhotozFlag.OUT_OF_DISTRIBUTION,
                    PhotozFlag.MISSING_BAND,
                    PhotozFlag.OUT_OF_DISTRIBUTION | PhotozFlag.MISSING_BAND,
                ]
            ),
        }
    )
    ids, user = select_followup(photoz, extra_ids=[12, 999])
    assert ids.tolist() == [11, 12, 13] and user.tolist() == [False, True, False]
    ids, user = select_followup(photoz, all_rows=True)
    assert ids.tolist() == [10, 11, 12, 13] and not user.any()
    with pytest.raises(FollowupError, match="photoz_flags"):
        select_followup(Table({"objectId": [1]}))


def test_bad_input_is_flagged_or_refused(templates):
    grid = templates.build_model()
    fluxes, errors, _ = _template_objects(grid, 4, seed=7)
    fluxes[0, 0] = np.nan  # one band unusable: fitted without it
    errors[1, :5] = -1.0  # one usable band: no estimate
    fluxes[2, :] = np.inf
    out = followup_photoz(templates, _table(fluxes, errors), user_selected=np.array([0, 0, 0, 1], bool))
    flags = np.asarray(out["photoz_bayes_flags"])
    assert flags[0] & PhotozBayesFlag.MISSING_BAND and not flags[0] & PhotozBayesFlag.NO_DATA
    assert np.isfinite(out["photoz_bayes_median"][0]) and out["photoz_bayes_n_bands"][0] == 5
    for row in (1, 2):
        assert flags[row] & PhotozBayesFlag.NO_DATA and np.isnan(out["photoz_bayes_median"][row])
    assert [bool(f & PhotozBayesFlag.USER_SELECTED) for f in flags] == [False, False, False, True]
    # A missing column: a clear error naming it.
    table = _table(fluxes, errors)
    del table["g_cModelFlux"]
    with pytest.raises(PhotozInputError, match="g_cModelFlux"):
        followup_photoz(templates, table)
    with pytest.raises(FollowupError, match="bands"):
        followup_photoz(templates, table, PhotozColumns(bands=("g", "r", "i")))
    with pytest.raises(FollowupError, match="method"):
        followup_photoz(templates, _table(fluxes, errors), config=FollowupConfig(method="nested"))
    with pytest.raises(PackageError, match="architecture"):
        template_package(DEFAULT_PACKAGE_PATH)


def test_no_selected_object_gives_an_empty_table_with_every_column(templates):
    empty = followup_photoz(templates, _table(np.zeros((0, 6)), np.zeros((0, 6))))
    reference = empty_followup_table()
    assert len(empty) == 0 and empty.colnames == reference.colnames
    assert empty["photoz_bayes_quantiles"].shape == (0, 15)
    assert "photoz_bayes_flag_bits" in empty.meta


# ----------------------------------------------------------------------
# Task, pipetask and commands


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    root = tmp_path_factory.mktemp("photoz_followup_repo") / "repo"
    build_repo(root, SurveyConfig.tiny())
    return root


@pytest.mark.slow
def test_followup_task_through_pipetask_run(repo):
    from lsst.daf.butler import Butler
    from lsst.meas.ml.photoz.followup_demo import summarize

    assert main(["register", str(repo), DEFAULT_PACKAGE_PATH, "--run", "models/photoz/test"]) == 0
    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(repo),
        "-i",
        "MLSim/defaults,models/photoz/test",
        "-o",
        "u/test/photoz_followup",
        "-p",
        str(ROOT / "pipelines" / "photoz_followup.yaml"),
        "--register-dataset-types",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    butler = Butler.from_config(str(repo), collections="u/test/photoz_followup")
    ref = list(butler.query_datasets("ml_photoz_followup"))[0]
    follow = butler.get(ref)
    photoz = butler.get("ml_photoz", ref.dataId)
    ood = (np.asarray(photoz["photoz_flags"]) & PhotozFlag.OUT_OF_DISTRIBUTION) != 0
    assert ood.any()
    expected = sorted(np.asarray(photoz["objectId"])[ood].tolist())
    assert sorted(np.asarray(follow["objectId"]).tolist()) == expected
    assert set(empty_followup_table().colnames) == set(follow.colnames)
    good = (np.asarray(follow["photoz_bayes_flags"]) & PhotozBayesFlag.NO_DATA) == 0
    assert np.all(
        (follow["photoz_bayes_lo68"][good] <= follow["photoz_bayes_median"][good])
        & (follow["photoz_bayes_median"][good] <= follow["photoz_bayes_hi68"][good])
    )
    lines = summarize(butler, ["u/test/photoz_followup", "MLSim/defaults"])
    assert lines[0].startswith("ml_photoz_followup tract") and "template fit" in lines[1]


def test_task_run_without_butler_and_connections(templates):
    from lsst.meas.ml.photoz.followup_task import FollowupPhotozConfig, FollowupPhotozTask
    from lsst.pipe.base import testUtils

    grid = templates.build_model()
    fluxes, errors, _ = _template_objects(grid, 5, seed=11)
    objects = _table(fluxes, errors, ids=np.arange(100, 105))
    photoz = Table(
        {
            "objectId": np.arange(100, 105),
            "photoz_flags": np.array([0, PhotozFlag.OUT_OF_DISTRIBUTION, 0, 0, 0], dtype=np.int32),
        }
    )
    config = FollowupPhotozConfig()
    config.extraObjectIds = [103]
    task = FollowupPhotozTask(config=config)
    out = task.run(objectCatalog=objects, photoz=photoz).followup
    assert out["objectId"].tolist() == [101, 103]
    user = np.asarray(out["photoz_bayes_flags"] & PhotozBayesFlag.USER_SELECTED).astype(bool)
    assert user.tolist() == [False, True]
    none = FollowupPhotozTask(config=FollowupPhotozConfig()).run(
        objectCatalog=objects,
        photoz=Table({"objectId": np.arange(100, 105), "photoz_flags": np.zeros(5, int)}),
    )
    assert len(none.followup) == 0 and none.followup.colnames == out.colnames
    testUtils.lintConnections(config.ConnectionsClass(config=config))
    bad = FollowupPhotozConfig()
    bad.nWalkers = 9
    with pytest.raises(Exception, match="n_walkers"):
        bad.validate()


def test_commands_followup_and_calibration(tmp_path, templates):
    grid = templates.build_model()
    fluxes, errors, z = _template_objects(grid, 40, seed=13)
    table = _table(fluxes, errors)
    table["redshift"] = z
    path = tmp_path / "objects.parquet"
    table.write(path)
    out = tmp_path / "followup.parquet"
    assert main(["photoz-followup", "--input", str(path), "--out", str(out), "--ids", "3", "5"]) == 0
    follow = Table.read(out)
    assert {3, 5} <= set(np.asarray(follow["objectId"]).tolist())
    assert main(["photoz-followup", "--input", str(path), "--out", str(out), "--all"]) == 0
    assert len(Table.read(out)) == 40
    with pytest.raises(SystemExit):
        main(["photoz-followup", "--input", str(path), "--out", str(out), "--method", "nested"])
    plots = tmp_path / "plots"
    assert main(["photoz-calibration", "--input", str(path), "--out-dir", str(plots)]) == 0
    for name in ("photoz_pit.png", "photoz_coverage68.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
