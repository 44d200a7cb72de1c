"""Photo-z: training on a small table, prediction, the bad inputs, influence, ranking,
the task through a real Butler and ``pipetask run``, and the ``meas-ml`` commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lsst.meas.ml.cli import main
from lsst.meas.ml.packages import ModelPackage, PackageError
from lsst.meas.ml.photoz.features import PhotozColumns, PhotozInputError
from lsst.meas.ml.photoz.influence import influence_table, rank_for_spectroscopy, training_influence
from lsst.meas.ml.photoz.predict import DEFAULT_PACKAGE_PATH, PhotozFlag, predict_photoz
from lsst.meas.ml.photoz.tables import read_table, write_table
from lsst.meas.ml.photoz.train import PhotozTrainingConfig, train_photoz, train_photoz_table
from lsst.meas.ml.simulate.photometry import make_photometric_catalog

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "objectId",
    "photoz_mean",
    "photoz_mode",
    "photoz_median",
    "photoz_std",
    "photoz_lo68",
    "photoz_hi68",
    "photoz_pdf",
    "photoz_ood_score",
    "photoz_flags",
]
SMALL = dict(
    n_bins=64, hidden=(32, 32), n_members=2, epochs=40, batch_size=64, learning_rate=5e-3, num_threads=1
)


@pytest.fixture(scope="module")
def catalogs():
    return make_photometric_catalog(1500, seed=0), make_photometric_catalog(400, seed=1, id_offset=5_000_000)


@pytest.fixture(scope="module")
def trained(catalogs):
    train, _ = catalogs
    return train_photoz_table(
        train,
        PhotozColumns(),
        "redshift",
        PhotozTrainingConfig(**SMALL),
        provenance={"training_data": "synthetic"},
    )


@pytest.fixture(scope="module")
def package_path(trained, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photoz") / "photoz.safetensors"
    trained.package.save(path)
    return path


# ----------------------------------------------------------------------
# Training


def test_training_on_a_small_table_learns_and_records_metrics(trained, catalogs):
    pkg = trained.package
    assert pkg.family == "photoz" and pkg.architecture == "mbrnn"
    metrics = pkg.provenance["metrics"]
    for key in ("sigma_nmad", "outlier_frac", "outlier_frac_rail", "pit_ks", "crps", "bias"):
        assert key in metrics
    assert pkg.inputs["bands"] == list("ugrizy")
    assert len(pkg.outputs["bin_edges"]) == SMALL["n_bins"] + 1
    # Held-out galaxies: far better than guessing the mean redshift (sigma_NMAD ~0.4 here).
    _, test = catalogs
    out = predict_photoz(pkg, test)
    from lsst.meas.ml.photoz.metrics import photoz_metrics

    m = photoz_metrics(np.asarray(out["photoz_mode"]), np.asarray(test["redshift"]))
    assert m["sigma_nmad"] < 0.1 and m["outlier_frac"] < 0.25
    # The package round-trips and predicts the same.
    again = predict_photoz(ModelPackage.from_bytes(pkg.to_bytes()), test[:20])
    np.testing.assert_allclose(again["photoz_mean"], out["photoz_mean"][:20], rtol=1e-5)


def test_training_rejects_too_few_usable_rows():
    t = make_photometric_catalog(30, seed=3)
    t["redshift"][5:] = np.nan
    with pytest.raises(PhotozInputError, match="at least 20"):
        train_photoz_table(t, PhotozColumns(), "redshift", PhotozTrainingConfig(**SMALL))
    with pytest.raises(PhotozInputError, match="zspec"):
        train_photoz_table(t, PhotozColumns(), "zspec", PhotozTrainingConfig(**SMALL))
    with pytest.raises(PhotozInputError, match="expected"):
        train_photoz(np.zeros((30, 5)), np.zeros(30), PhotozColumns(), PhotozTrainingConfig(**SMALL))


def test_anchor_loss_trains():
    t = make_photometric_catalog(300, seed=4)
    cfg = PhotozTrainingConfig(**{**SMALL, "epochs": 3, "n_members": 1, "loss": "anchor"})
    result = train_photoz_table(t, PhotozColumns(), "redshift", cfg)
    assert np.isfinite(result.metrics["crps"])


# ----------------------------------------------------------------------
# Prediction and bad inputs


def test_prediction_schema_units_and_metadata(trained, catalogs):
    _, test = catalogs
    out = predict_photoz(trained.package, test, pdf_format="both")
    assert out.colnames[:7] == COLUMNS[:7]
    assert set(COLUMNS) | {"photoz_pdf_quantiles"} == set(out.colnames)
    assert len(out) == len(test) and np.array_equal(out["objectId"], test["objectId"])
    assert out["photoz_pdf"].shape == (len(test), 64) and out["photoz_pdf"].dtype == np.float32
    np.testing.assert_allclose(out["photoz_pdf"].sum(axis=1), 1.0, rtol=1e-4)
    assert out["photoz_pdf_quantiles"].dtype == np.float16
    assert out["photoz_mean"].unit is not None and out["photoz_flags"].dtype == np.int32
    assert len(out.meta["photoz_bin_edges"]) == 65
    assert out.meta["photoz_flag_bits"]["OUT_OF_DISTRIBUTION"] == 4
    lo, med, hi = (np.asarray(out[c]) for c in ("photoz_lo68", "photoz_median", "photoz_hi68"))
    assert np.all(lo <= med) and np.all(med <= hi)


def test_all_nan_rows_are_kept_with_nan_estimates_and_a_flag(trained, catalogs):
    _, test = catalogs
    t = test[:10].copy()
    for band in "ugrizy":
        t[f"{band}_cModelFlux"][3] = np.nan
    t["g_cModelFlux"][4] = np.nan  # one band missing
    t["r_cModelFlux"][5] = -30.0  # negative flux: measured
    t["i_cModelFlux"][6] = 0.0
    out = predict_photoz(trained.package, t)
    assert len(out) == 10
    assert np.isnan(out["photoz_mean"][3]) and np.isnan(out["photoz_pdf"][3]).all()
    assert out["photoz_flags"][3] & PhotozFlag.NO_DATA
    assert out["photoz_flags"][4] & PhotozFlag.MISSING_BAND and np.isfinite(out["photoz_mean"][4])
    assert np.isfinite(out["photoz_mean"][5]) and np.isfinite(out["photoz_mean"][6])
    assert not out["photoz_flags"][5] & PhotozFlag.MISSING_BAND


def test_empty_table_gives_empty_catalog_with_full_schema(trained, catalogs, tmp_path):
    _, test = catalogs
    out = predict_photoz(trained.package, test[:0], pdf_format="both")
    assert len(out) == 0 and set(COLUMNS) <= set(out.colnames)
    assert out["photoz_pdf"].shape == (0, 64)
    write_table(out, tmp_path / "empty.parquet")
    back = read_table(tmp_path / "empty.parquet")
    assert len(back) == 0 and set(COLUMNS) <= set(back.colnames)


def test_missing_band_column_error_and_missing_mode(trained, catalogs):
    _, test = catalogs
    t = test[:20].copy()
    del t["y_cModelFlux"]
    with pytest.raises(PhotozInputError, match="y_cModelFlux"):
        predict_photoz(trained.package, t)
    out = predict_photoz(trained.package, t, PhotozColumns(missing_band="missing"))
    assert np.all(out["photoz_flags"] & PhotozFlag.MISSING_BAND) and np.isfinite(out["photoz_mean"]).all()


def test_model_trained_on_other_bands_is_a_clear_error(trained, catalogs):
    _, test = catalogs
    with pytest.raises(
        PackageError, match=r"trained on bands \['u', 'g', 'r', 'i', 'z', 'y'\].*\['g', 'r', 'i'\]"
    ):
        predict_photoz(trained.package, test, PhotozColumns(bands=("g", "r", "i")))


def test_ood_score_is_larger_off_the_training_set(trained, catalogs):
    _, test = catalogs
    out = predict_photoz(trained.package, test)
    weird = test[:50].copy()
    rng = np.random.default_rng(0)
    for band in "ugrizy":  # colours no galaxy of the training set has
        weird[f"{band}_cModelFlux"] = 10 ** rng.uniform(2, 5, 50)
    out_weird = predict_photoz(trained.package, weird)
    assert np.median(out_weird["photoz_ood_score"]) > 2 * np.median(out["photoz_ood_score"])
    assert np.mean(out_weird["photoz_flags"] & PhotozFlag.OUT_OF_DISTRIBUTION > 0) > 0.5
    assert np.mean(out["photoz_flags"] & PhotozFlag.OUT_OF_DISTRIBUTION > 0) < 0.1


# ----------------------------------------------------------------------
# Influence and ranking


def test_influence_proponents_have_similar_redshifts(trained, catalogs):
    train, test = catalogs
    cols = PhotozColumns()
    res = training_influence(
        trained.package,
        cols.extract(train),
        np.asarray(train["redshift"]),
        cols.extract(test[:20]),
        query_redshift=np.asarray(test["redshift"][:20]),
        top_k=5,
    )
    assert res["indices"].shape == (20, 5) and np.all(np.diff(res["scores"], axis=1) <= 1e-12)
    z_top = np.asarray(train["redshift"])[res["indices"][:, 0]]
    z_rand = np.asarray(train["redshift"])[np.random.default_rng(0).integers(0, len(train), 20)]
    dz_top = np.median(np.abs(z_top - test["redshift"][:20]))
    dz_rand = np.median(np.abs(z_rand - test["redshift"][:20]))
    assert dz_top < 0.5 * dz_rand
    opp = training_influence(
        trained.package,
        cols.extract(train),
        np.asarray(train["redshift"]),
        cols.extract(test[:3]),
        top_k=3,
        kind="opponents",
    )
    assert np.all(opp["scores"] <= res["scores"][:3, :1])


def test_influence_table_by_object_id(trained, catalogs):
    train, test = catalogs
    ids = [int(test["objectId"][7]), int(test["objectId"][2])]
    tab = influence_table(trained.package, train, test, redshift_column="redshift", query_ids=ids, top_k=4)
    assert len(tab) == 8 and list(tab["query_id"][::4]) == ids and list(tab["rank"][:4]) == [1, 2, 3, 4]
    assert set(tab["train_id"]) <= set(train["objectId"])
    with pytest.raises(PhotozInputError, match="not in the query table"):
        influence_table(trained.package, train, test, redshift_column="redshift", query_ids=[-1])


def test_ranking_prefers_objects_unlike_a_biased_training_set():
    # A spectroscopic sample biased to z < 1.5; the unlabelled pool spans 0 to 3. The objects whose
    # redshifts would help most are those beyond the training range: they must lead the ranking.
    biased = make_photometric_catalog(800, seed=5, z_range=(0.05, 1.5))
    package = train_photoz_table(biased, PhotozColumns(), "redshift", PhotozTrainingConfig(**SMALL)).package
    pool = make_photometric_catalog(300, seed=9, z_range=(0.05, 3.0))
    inputs = PhotozColumns().extract(pool)
    inputs[0, :6] = np.nan  # no data: ranked last
    order, utility = rank_for_spectroscopy(package, inputs, n_select=50)
    assert sorted(order.tolist()) == list(range(300)) and order[-1] == 0 and np.isnan(utility[0])
    z = np.asarray(pool["redshift"])
    assert np.mean(z[order[:50]] > 1.5) > 0.8 > np.mean(z > 1.5) + 0.2
    # The diversity-aware head differs from the plain utility order.
    plain, _ = rank_for_spectroscopy(package, inputs, diversity=0.0)
    assert list(plain[:50]) != list(order[:50])


# ----------------------------------------------------------------------
# Commands


def test_cli_train_predict_rank_influence(tmp_path, catalogs):
    train, test = catalogs
    train_csv = tmp_path / "train.csv"
    train.write(train_csv, format="ascii.csv")
    test_pq = tmp_path / "test.parquet"
    write_table(test, test_pq)
    pkg = tmp_path / "cli.safetensors"
    rc = main(
        [
            "train",
            "photoz",
            "--input",
            str(train_csv),
            "--out",
            str(pkg),
            "--members",
            "1",
            "--epochs",
            "3",
            "--bins",
            "40",
            "--hidden",
            "16",
            "16",
            "--threads",
            "1",
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert rc == 0 and pkg.exists()
    assert (tmp_path / "plots" / "photoz_pit.png").exists()
    assert ModelPackage.load(pkg).provenance["metrics"]["n"] > 0
    out = tmp_path / "out.parquet"
    assert (
        main(
            [
                "predict",
                "photoz",
                "--model",
                str(pkg),
                "--input",
                str(test_pq),
                "--out",
                str(out),
                "--pdf-format",
                "both",
            ]
        )
        == 0
    )
    cat = read_table(out)
    assert set(COLUMNS) <= set(cat.colnames) and len(cat) == len(test)
    assert cat["photoz_pdf"].shape == (len(test), 40) and cat.meta["photoz_bin_edges"][-1] == 3.0
    # Other bands than the model's: a one-line error, exit code 2.
    assert (
        main(
            [
                "predict",
                "photoz",
                "--model",
                str(pkg),
                "--input",
                str(test_pq),
                "--out",
                str(out),
                "--bands",
                "gri",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "photoz-rank",
                "--model",
                str(pkg),
                "--input",
                str(test_pq),
                "--out",
                str(tmp_path / "rank.parquet"),
                "--n-select",
                "10",
            ]
        )
        == 0
    )
    assert len(read_table(tmp_path / "rank.parquet")) == len(test)
    assert (
        main(
            [
                "photoz-influence",
                "--model",
                str(pkg),
                "--train",
                str(train_csv),
                "--input",
                str(test_pq),
                "--object-id",
                str(test["objectId"][0]),
                "--top-k",
                "3",
                "--out",
                str(tmp_path / "infl.parquet"),
            ]
        )
        == 0
    )
    assert len(read_table(tmp_path / "infl.parquet")) == 3


def test_cli_input_errors_are_one_line(tmp_path, package_path, catalogs):
    _, test = catalogs
    t = test[:10].copy()
    del t["u_cModelFluxErr"]
    bad = tmp_path / "bad.parquet"
    write_table(t, bad)
    assert (
        main(
            [
                "predict",
                "photoz",
                "--model",
                str(package_path),
                "--input",
                str(bad),
                "--out",
                str(tmp_path / "x.parquet"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "predict",
                "photoz",
                "--model",
                str(package_path),
                "--input",
                str(bad),
                "--out",
                str(tmp_path / "x.parquet"),
                "--missing-band",
                "missing",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predict",
                "photoz",
                "--model",
                str(package_path),
                "--input",
                str(tmp_path / "none.csv"),
                "--out",
                str(tmp_path / "x.parquet"),
            ]
        )
        == 2
    )


def test_default_package_predicts_on_cosmodc2_like_fluxes(tmp_path):
    if not Path(DEFAULT_PACKAGE_PATH).exists():
        pytest.fail(f"the default package {DEFAULT_PACKAGE_PATH} is not shipped")
    assert Path(DEFAULT_PACKAGE_PATH).stat().st_size < 2_000_000
    pkg = ModelPackage.load(DEFAULT_PACKAGE_PATH)
    assert pkg.inputs["bands"] == list("ugrizy") and pkg.provenance["metrics"]["sigma_nmad"] < 0.03
    t = make_photometric_catalog(50, seed=2)
    path = tmp_path / "in.parquet"
    write_table(t, path)
    assert main(["predict", "photoz", "--input", str(path), "--out", str(tmp_path / "out.parquet")]) == 0
    assert len(read_table(tmp_path / "out.parquet")) == 50


# ----------------------------------------------------------------------
# Butler and pipetask


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    root = tmp_path_factory.mktemp("photoz_repo") / "repo"
    build_repo(root, SurveyConfig.tiny())
    return root


@pytest.mark.slow
def test_train_from_butler_and_pipetask_run(repo, tmp_path):
    from lsst.daf.butler import Butler

    pkg = tmp_path / "butler.safetensors"
    rc = main(
        [
            "train",
            "photoz",
            "--butler",
            str(repo),
            "--collections",
            "MLSim/defaults",
            "--specz-dataset",
            "truth_object",
            "--redshift-column",
            "redshift",
            "--out",
            str(pkg),
            "--members",
            "1",
            "--epochs",
            "3",
            "--bins",
            "32",
            "--hidden",
            "16",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    package = ModelPackage.load(pkg)
    assert "butler:" in package.provenance["training_data"]
    assert main(["register", str(repo), str(pkg), "--run", "models/photoz/test"]) == 0

    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(repo),
        "-i",
        "MLSim/defaults,models/photoz/test",
        "-o",
        "u/test/photoz",
        "-p",
        str(ROOT / "pipelines" / "photoz.yaml"),
        "--register-dataset-types",
        "-c",
        "estimatePhotoz:pdfFormat=both",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    butler = Butler.from_config(str(repo), collections="u/test/photoz")
    refs = list(butler.query_datasets("ml_photoz"))
    assert refs
    out = butler.get(refs[0], parameters={"strip_astropy_meta_yaml": False})
    objects = butler.get("object", dataId=refs[0].dataId, collections="MLSim/defaults")
    assert len(out) == len(objects) and set(COLUMNS) <= set(out.colnames)
    assert np.array_equal(np.asarray(out["objectId"]), np.asarray(objects["objectId"]))
    assert out["photoz_pdf"].shape == (len(objects), 32)
    assert "photoz_bin_edges" in out.meta and out["photoz_mean"].unit is not None
    assert out["photoz_pdf_quantiles"].shape[1] == 15


def test_task_reads_only_needed_columns_from_a_real_butler(repo, package_path):
    from lsst.daf.butler import Butler
    from lsst.meas.ml.photoz.task import EstimatePhotozConfig, EstimatePhotozTask
    from lsst.pipe.base import testUtils

    butler = Butler.from_config(str(repo), collections="MLSim/defaults")
    ref = list(butler.query_datasets("object"))[0]
    all_columns = butler.get(ref.makeComponentRef("columns"))
    config = EstimatePhotozConfig()
    task = EstimatePhotozTask(config=config)
    package = ModelPackage.load(package_path)
    table = task.read_catalog(butler.getDeferred(ref), package)
    assert set(table.colnames) == set(PhotozColumns().columns()) < set(all_columns)
    result = task.run(objectCatalog=table, model=package)
    assert len(result.photoz) == len(table) and "photoz_ood_score" in result.photoz.colnames
    testUtils.lintConnections(config.ConnectionsClass(config=config))
    # A model trained on other bands: clear error before any work.
    config = EstimatePhotozConfig()
    config.bands = ["g", "r", "i"]
    with pytest.raises(PackageError, match="trained on bands"):
        EstimatePhotozTask(config=config).run(objectCatalog=table, model=package)


def test_task_config_validation():
    from lsst.meas.ml.photoz.task import EstimatePhotozConfig

    config = EstimatePhotozConfig()
    config.compactLevels = [0.5, 1.5]
    with pytest.raises(Exception, match="between 0 and 1"):
        config.validate()
    config = EstimatePhotozConfig()
    config.fluxTemplate = "cModelFlux"
    with pytest.raises(PhotozInputError, match="band"):
        config.validate()


def test_training_options_all_colours_noise_ema_and_refit():
    t = make_photometric_catalog(300, seed=5)
    cfg = PhotozTrainingConfig(
        **{
            **SMALL,
            "epochs": 4,
            "n_members": 1,
            "colours": "all",
            "flux_noise": 0.5,
            "ema_decay": 0.9,
            "refit": True,
        }
    )
    result = train_photoz_table(t, PhotozColumns(), "redshift", cfg)
    pkg = result.package
    assert pkg.hyperparameters["colours"] == "all" and pkg.provenance["refitted_on_validation"]
    # The package round-trips through the shape check of the registered architecture and predicts.
    again = ModelPackage.from_bytes(pkg.to_bytes())
    out = predict_photoz(again, t[:10])
    assert np.isfinite(np.asarray(out["photoz_mode"])).all()
    for bad in ({"ema_decay": 1.0}, {"flux_noise": -1.0}, {"noise_augment": -1.0}):
        with pytest.raises(ValueError):
            PhotozTrainingConfig(**bad)


def test_train_command_refuses_bad_settings_before_reading_the_table(tmp_path, capsys):
    # The input does not exist: the settings are refused first, as a one-line error.
    rc = main(
        [
            "train",
            "photoz",
            "--input",
            str(tmp_path / "absent.parquet"),
            "--out",
            str(tmp_path / "p.safetensors"),
            "--noise-augment",
            "-1",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "noise_augment must be >= 0" in err and "Traceback" not in err
    assert not (tmp_path / "p.safetensors").exists()


def test_noise_augmentation_makes_consistent_shallower_copies():
    import torch
    from lsst.meas.ml.photoz.train import _noise_augment

    flux = torch.tensor([[100.0, 50.0, float("nan")]] * 2000)
    err = torch.tensor([[10.0, 5.0, 1.0]] * 2000)
    x = torch.cat([flux, err], dim=1)
    out = _noise_augment(x, 3, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, :3].isnan(), out[:, :3].isnan())  # a missing band stays missing
    factor = out[:, 3:] / err  # one depth factor per row, between 1 and sqrt(2)
    assert torch.allclose(factor, factor[:, :1].expand(-1, 3))
    assert float(factor.min()) >= 1.0 and float(factor.max()) <= 2**0.5 + 1e-6
    # The added noise is Gaussian with s times the original error, s uniform in [0, 1]: the
    # deviation in units of the original error has variance E[s^2] = 1/3.
    dev = (out[:, :2] - flux[:, :2]) / err[:, :2]
    assert abs(float(dev.var()) - 1.0 / 3.0) < 0.05
    s = torch.sqrt(factor[:, 0] ** 2 - 1.0)
    assert abs(float((dev / s[:, None].clamp_min(1e-3))[s > 0.2].std()) - 1.0) < 0.1
    assert _noise_augment(x, 3, 0.0, torch.Generator()) is x
    cfg = PhotozTrainingConfig(**{**SMALL, "epochs": 3, "n_members": 1, "noise_augment": 0.5})
    result = train_photoz_table(make_photometric_catalog(300, seed=6), PhotozColumns(), "redshift", cfg)
    assert result.package.provenance["training_config"]["noise_augment"] == 0.5


def test_pit_recalibration_maps_the_cdf_through_the_held_out_pit_distribution():
    import torch
    from lsst.meas.ml.models.photoz import MBRNN

    plain = MBRNN(n_bands=2, n_bins=10, hidden=(8,))
    model = MBRNN(n_bands=2, n_bins=10, hidden=(8,), pit_knots=3)
    pdf = torch.softmax(torch.randn(4, 10, generator=torch.Generator().manual_seed(1)), dim=1)
    torch.testing.assert_close(plain.recalibrate(pdf), pdf)
    torch.testing.assert_close(model.recalibrate(pdf), pdf, atol=1e-6, rtol=1e-5)  # identity knots
    # Half the held-out PIT values below 0.25 (PDFs that put too much mass at low redshift).
    model.pit_quantiles.copy_(torch.tensor([0.0, 0.25, 1.0]))  # half the PIT values below 0.25
    out = model.recalibrate(pdf)
    cdf, new = torch.cumsum(pdf, 1), torch.cumsum(out, 1)
    expected = torch.where(cdf < 0.25, cdf / 0.25 * 0.5, 0.5 + (cdf - 0.25) / 0.75 * 0.5)
    torch.testing.assert_close(new, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pit_knots"):
        MBRNN(n_bands=2, n_bins=10, hidden=(8,), pit_knots=1)


def test_training_fits_the_pit_recalibration_and_the_package_round_trips(catalogs):
    train, test = catalogs
    base = {**SMALL, "epochs": 15, "n_members": 1, "refit": False}
    plain = train_photoz_table(train, PhotozColumns(), "redshift", PhotozTrainingConfig(**base, pit_knots=0))
    recal = train_photoz_table(train, PhotozColumns(), "redshift", PhotozTrainingConfig(**base, pit_knots=11))
    assert "pit_knots" not in plain.package.hyperparameters
    assert recal.package.hyperparameters["pit_knots"] == 11
    # Same seed, same networks: only the PDF mapping differs.  On the rows it was fitted on, the
    # recalibrated PIT is close to uniform.
    assert recal.metrics["pit_ks"] < 0.06
    assert recal.metrics["pit_ks"] <= plain.metrics["pit_ks"] + 1e-3
    again = ModelPackage.from_bytes(recal.package.to_bytes())
    out = predict_photoz(again, test[:50])
    pdf = np.asarray(out["photoz_pdf"])
    assert np.isfinite(pdf).all() and np.allclose(pdf.sum(axis=1), 1.0, atol=1e-4)
