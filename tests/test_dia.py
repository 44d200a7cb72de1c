"""DIA classifier: model invariance, channels, the task's ``run`` and its bad inputs,
alert scoring of the real Rubin and ZTF files, the trainer and the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table
from lsst.meas.ml.alerts import read_alerts
from lsst.meas.ml.dia.alert_scoring import score_alerts
from lsst.meas.ml.dia.bench import make_detector
from lsst.meas.ml.dia.features import (
    CHANNELS,
    CLASS_COLUMNS,
    CLASS_NAMES,
    NORMALISATION,
    DiaDataError,
    make_channels,
)
from lsst.meas.ml.dia.predict import FLAG_BITS
from lsst.meas.ml.dia.task import ClassifyDiaSourcesConfig, ClassifyDiaSourcesTask
from lsst.meas.ml.dia.train import DiaTrainingConfig, TrainingSet, alert_training_set, train_dia
from lsst.meas.ml.engine import InferenceEngine, dihedral_average
from lsst.meas.ml.metrics import agreement, best_threshold, purity_completeness, roc_auc
from lsst.meas.ml.models import build_model
from lsst.meas.ml.packages import ModelPackage, PackageError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RUBIN = sorted((DATA / "rubin_alerts").glob("*.parquet"))
ZTF = sorted((DATA / "ztf_alerts").glob("*.parquet"))
needs_real = pytest.mark.skipif(not (RUBIN and ZTF), reason=f"real alert files not found under {DATA}")

SCORE_COLUMNS = ["diaSourceId", "ml_reliability", "ml_class", *CLASS_COLUMNS.values(), "flags", *FLAG_BITS]


def _package(stamp_size: int = 32, symmetric: bool = False, seed: int = 0, **inputs) -> ModelPackage:
    torch.manual_seed(seed)
    hp = {"stamp_size": stamp_size, "symmetric": symmetric, "widths": [8, 16, 16]}
    spec = {"stamp_size": stamp_size, "channels": list(CHANNELS), "normalisation": NORMALISATION, **inputs}
    return ModelPackage.from_model(
        build_model("dia_cnn", hp).eval(),
        family="dia",
        architecture="dia_cnn",
        hyperparameters=hp,
        inputs=spec,
        outputs={"class_names": list(CLASS_NAMES), "threshold": 0.5},
        version="test",
        provenance={"training_data": "untrained (test of plumbing)"},
    )


@pytest.fixture(scope="module")
def package() -> ModelPackage:
    return _package()


@pytest.fixture(scope="module")
def detector():
    sci, tmpl, diff, x, y = make_detector(40, 256, seed=3)
    sources = Table({"diaSourceId": np.arange(1, 41, dtype=np.int64), "x": x, "y": y})
    return sci, tmpl, diff, sources


# ----------------------------------------------------------------------
def test_rotation_invariance_by_construction_and_by_averaging():
    x = torch.randn(5, 4, 32, 32)
    transforms = [
        lambda t: torch.rot90(t, 1, (2, 3)),
        lambda t: torch.flip(t, (3,)),
        lambda t: torch.flip(torch.rot90(t, 3, (2, 3)), (2,)),
    ]
    sym = build_model("dia_cnn", {"symmetric": True}).eval()
    plain = build_model("dia_cnn", {"symmetric": False}).eval()
    with torch.no_grad():
        for f in transforms:
            assert torch.allclose(sym(f(x)), sym(x), atol=1e-5)
            assert torch.allclose(dihedral_average(plain, f(x)), dihedral_average(plain, x), atol=1e-5)
        assert not torch.allclose(plain(transforms[0](x)), plain(x), atol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        build_model("dia_cnn", {"symmetric": True, "stamp_size": 33})


def test_channels_do_not_depend_on_units_and_flag_nan():
    rng = np.random.default_rng(1)
    planes = rng.normal(size=(3, 4, 16, 16)).astype(np.float32)
    planes[:, 3] = 1.0
    a, nan_a = make_channels(planes)
    scaled = planes * np.array([7.0, 7.0, 7.0, 49.0], np.float32)[None, :, None, None]
    b, _ = make_channels(scaled)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (nan_a == 0).all()
    planes[1, 0, :8] = np.nan
    c, nan_c = make_channels(planes)
    assert np.isfinite(c).all() and nan_c[1] == pytest.approx(0.5) and nan_c[0] == 0
    # No variance at all (ZTF): the difference noise comes from the MAD.
    planes[:, 3] = np.nan
    d, _ = make_channels(planes)
    assert np.isfinite(d).all() and np.abs(d[:, 3]).max() > 0
    with pytest.raises(DiaDataError, match="shape"):
        make_channels(planes[:, :3])


def test_metrics():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5
    assert purity_completeness(np.array([0.1, 0.6, 0.8, 0.4]), y, 0.5) == (0.5, 0.5)
    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), y) in (0.8,)
    assert agreement(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.2, 0.3, 0.7, 0.95]))["spearman"] == 1.0


# ----------------------------------------------------------------------
def test_task_run_scores_every_source(detector, package):
    sci, tmpl, diff, sources = detector
    result = ClassifyDiaSourcesTask().run(sci, tmpl, diff, sources, package).scores
    assert result.colnames[: len(SCORE_COLUMNS)] == SCORE_COLUMNS or set(SCORE_COLUMNS) <= set(
        result.colnames
    )
    assert len(result) == len(sources)
    np.testing.assert_array_equal(result["diaSourceId"], sources["diaSourceId"])
    rel = np.asarray(result["ml_reliability"])
    assert np.isfinite(rel).all() and ((rel >= 0) & (rel <= 1)).all()
    probs = np.stack([result[c] for c in CLASS_COLUMNS.values()], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(rel, 1 - result["ml_prob_artifact"], atol=1e-6)
    assert set(result["ml_class"]) <= set(CLASS_NAMES)
    assert result.meta["ml_model"]["sha256"] == package.sha256


def test_task_bad_sources_are_flagged_not_fatal(detector, package):
    sci, tmpl, diff, sources = detector
    sci, tmpl, diff = (
        dataclasses.replace(e, image=e.image.copy(), mask=e.mask.copy()) for e in (sci, tmpl, diff)
    )
    table = Table(sources[:5], copy=True)
    table["x"][0], table["y"][0] = -50.0, 100.0  # off the image
    table["x"][1], table["y"][1] = 3.0, 128.0  # at the edge
    table["x"][2], table["y"][2] = 60.0, 60.0  # NaN pixels
    table["x"][3], table["y"][3] = 200.0, 200.0  # masked (saturated) pixel
    table["x"][4], table["y"][4] = np.nan, 10.0  # no position
    diff.image[50:70, 50:70] = np.nan
    sci.mask[200, 200] |= sci.get_plane_bitmask("SAT")
    out = ClassifyDiaSourcesTask().run(sci, tmpl, diff, table, package).scores
    assert len(out) == 5
    assert out["flag_offimage"][0] and np.isnan(out["ml_reliability"][0]) and out["ml_class"][0] == ""
    assert out["flag_offimage"][4] and np.isnan(out["ml_reliability"][4])
    assert out["flag_edge"][1] and not out["flag_offimage"][1] and np.isfinite(out["ml_reliability"][1])
    assert out["ml_nan_fraction"][2] > 0.25 and out["flag_nan"][2] and np.isfinite(out["ml_reliability"][2])
    assert out["flag_masked"][3] and not out["flag_masked"][2]
    assert out["flags"][1] & (1 << FLAG_BITS["flag_edge"])


def test_task_empty_table_missing_columns_bad_psf(detector, package):
    sci, tmpl, diff, sources = detector
    task = ClassifyDiaSourcesTask()
    empty = task.run(sci, tmpl, diff, sources[:0], package).scores
    assert len(empty) == 0 and set(SCORE_COLUMNS) <= set(empty.colnames)
    with pytest.raises(DiaDataError, match="lacks column"):
        task.run(sci, tmpl, diff, Table({"diaSourceId": [1], "ra": [1.0]}), package)
    no_psf = dataclasses.replace(diff, psf=None)
    out = task.run(sci, tmpl, no_psf, sources[:3], package).scores
    assert out["flag_bad_psf"].all()
    assert not task.run(sci, tmpl, diff, sources[:3], package).scores["flag_bad_psf"].any()


def test_task_rejects_a_model_for_other_stamps_or_channels(detector):
    sci, tmpl, diff, sources = detector
    task = ClassifyDiaSourcesTask()
    with pytest.raises(PackageError, match="stamp_size is 48 in the package but 32 is configured"):
        task.run(sci, tmpl, diff, sources, _package(stamp_size=48))
    wrong = _package(channels=["science", "difference"])
    with pytest.raises(PackageError, match="channels"):
        task.run(sci, tmpl, diff, sources, wrong)
    other = ModelPackage.from_model(
        build_model("dia_cnn", {}),
        family="photoz",
        architecture="dia_cnn",
        hyperparameters={},
        inputs={},
        outputs={},
        version="x",
        provenance={},
    )
    with pytest.raises(PackageError, match="'dia' package"):
        task.run(sci, tmpl, diff, sources, other)
    config = ClassifyDiaSourcesConfig()
    config.stampSize = 48
    out = (
        ClassifyDiaSourcesTask(config=config)
        .run(sci, tmpl, diff, sources[:2], _package(stamp_size=48))
        .scores
    )
    assert np.isfinite(out["ml_reliability"]).all()


def test_dihedral_policy(detector, package):
    sci, tmpl, diff, sources = detector
    config = ClassifyDiaSourcesConfig()
    config.dihedralAverage = "always"
    task = ClassifyDiaSourcesTask(config=config)
    out = task.run(sci, tmpl, diff, sources, package).scores
    assert out.meta["dihedral_average"] is True
    auto = ClassifyDiaSourcesTask().run(sci, tmpl, diff, sources, package).scores
    assert auto.meta["dihedral_average"] is True
    config.dihedralAverage = "gpu"
    gpu = ClassifyDiaSourcesTask(config=config).run(sci, tmpl, diff, sources, package).scores
    assert gpu.meta["dihedral_average"] is (InferenceEngine().device.type != "cpu")
    # A model invariant by construction is never averaged under auto.
    sym = ClassifyDiaSourcesTask().run(sci, tmpl, diff, sources, _package(symmetric=True)).scores
    assert sym.meta["dihedral_average"] is False
    np.testing.assert_allclose(out["ml_reliability"], auto["ml_reliability"], rtol=1e-6)


# ----------------------------------------------------------------------
@needs_real
def test_score_real_rubin_and_ztf_alerts(package):
    for path in [*RUBIN, ZTF[0]]:
        records = read_alerts(path)
        table = score_alerts(records, package)
        assert len(table) == len(records)
        assert (table["ml_class"] != "").all(), path
        rel = np.asarray(table["ml_reliability"])
        assert ((rel >= 0) & (rel <= 1)).all()
        sizes = {r.cutouts["cutoutDifference"].__len__() for r in records}
        assert sizes
    # Cutouts of 30, 33, 35, 62, 93 (Rubin) and 63 (ZTF) pixels are resized and flagged.
    sso = score_alerts(read_alerts(RUBIN[1]), package)
    assert sso["flag_resized"].all()


@needs_real
def test_alert_without_or_with_corrupt_cutout_is_flagged(package):
    records = read_alerts(RUBIN[0])[:6]
    records[1].cutouts["cutoutTemplate"] = None
    records[2].cutouts["cutoutScience"] = records[2].cutouts["cutoutScience"][:4000]
    records[3].cutouts["cutoutDifference"] = b"not a fits file"
    table = score_alerts(records, package)
    assert list(table["flag_no_cutout"]) == [False, True, False, False, False, False]
    assert list(table["flag_corrupt_cutout"]) == [False, False, True, True, False, False]
    unscored = [1, 2, 3]
    assert np.isnan(np.asarray(table["ml_reliability"])[unscored]).all()
    assert (table["ml_class"][unscored] == "").all()
    scored = [0, 4, 5]
    assert np.isfinite(np.asarray(table["ml_reliability"])[scored]).all()
    # The scored rows are the same as when the bad rows are absent.
    alone = score_alerts([records[i] for i in scored], package)
    np.testing.assert_allclose(table["ml_reliability"][scored], alone["ml_reliability"], rtol=1e-5)


# ----------------------------------------------------------------------
@needs_real
def test_train_on_real_ztf_stamps_quickly(tmp_path):
    torch.set_num_threads(1)
    data = alert_training_set(ZTF, stamp_size=32)
    assert len(data) > 100 and set(np.unique(data.label)) == {-1, CLASS_NAMES.index("artifact")}
    result = train_dia(data, DiaTrainingConfig(epochs=3, widths=(8, 16, 16), batch_size=64))
    package, report = result.package, result.report
    assert report["validation"]["ztf"]["n"] > 20
    package.save(tmp_path / "dia.safetensors")
    again = ModelPackage.load(tmp_path / "dia.safetensors")
    assert again.family == "dia" and again.inputs["stamp_size"] == 32
    assert again.provenance["n_train"] + again.provenance["n_validation"] == len(data)
    with pytest.raises(DiaDataError, match="No labelled stamps"):
        TrainingSet.concatenate([])


def test_fast_median_matches_numpy_with_and_without_nan():
    from lsst.meas.ml.dia.features import _fast_median

    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 3, 41)).astype(np.float32)
    np.testing.assert_allclose(_fast_median(a), np.median(a, axis=-1), rtol=1e-6)
    a[3, 1, :5] = np.nan
    a[7, 0, :] = np.nan
    with _nullcontext():
        expected = np.nanmedian(a, axis=-1)
    got = _fast_median(a)
    np.testing.assert_allclose(got[np.isfinite(expected)], expected[np.isfinite(expected)], rtol=1e-6)
    assert np.isnan(got[7, 0])


def _nullcontext():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def quiet():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield

    return quiet()


@needs_real
def test_quality_report_on_real_files(package):
    from lsst.meas.ml.dia.quality_report import quality_report

    report = quality_report(package, ztf=ZTF, rubin=RUBIN[:1])
    ztf = report["ztf_vs_drb"]["single_pass"]
    assert ztf["n"] > 30 and 0 <= ztf["roc_auc"] <= 1
    rubin = report["rubin_vs_reliability"]["single_pass"]
    assert rubin["n"] == 27 and -1 <= rubin["spearman"] <= 1 and rubin["n_not_scored"] == 0


def test_connections_lint_and_templates():
    from lsst.meas.ml.dia.task import ClassifyDiaSourcesConnections
    from lsst.pipe.base.testUtils import lintConnections

    lintConnections(ClassifyDiaSourcesConnections)
    config = ClassifyDiaSourcesConfig()
    connections = ClassifyDiaSourcesConnections(config=config)
    names = {
        c: getattr(connections, c).name for c in ("science", "template", "difference", "diaSources", "model")
    }
    assert names == {
        "science": "visit_image",
        "template": "template_detector",
        "difference": "difference_image",
        "diaSources": "dia_source_unstandardized",
        "model": "ml_model_dia",
    }
    assert connections.model.dimensions == frozenset() or not connections.model.dimensions
    config.connections.differenceImage = "goodSeeingDiff_differenceExp"
    assert ClassifyDiaSourcesConnections(config=config).difference.name == "goodSeeingDiff_differenceExp"
