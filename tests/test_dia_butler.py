"""The DIA classifier end to end: train from a Butler collection of the simulated
survey, register the package, ``pipetask run`` the pipeline, check the outputs;
and the ``meas-ml`` commands (train, predict on real alert files, bench, quality)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from lsst.daf.butler import Butler
from lsst.meas.ml.butler.registration import register_package
from lsst.meas.ml.cli import main
from lsst.meas.ml.dia.cli import default_package_path
from lsst.meas.ml.dia.features import CLASS_COLUMNS
from lsst.meas.ml.dia.predict import FLAG_BITS
from lsst.meas.ml.packages import ModelPackage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RUBIN = sorted((DATA / "rubin_alerts").glob("*.parquet"))
ZTF = sorted((DATA / "ztf_alerts").glob("*.parquet"))
needs_real = pytest.mark.skipif(not (RUBIN and ZTF), reason=f"real alert files not found under {DATA}")
MODEL_RUN = "models/dia/test"
OUTPUT = "u/test/dia"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    root = tmp_path_factory.mktemp("dia") / "repo"
    build_repo(root, SurveyConfig.tiny())
    return root


@pytest.fixture(scope="module")
def trained(repo, tmp_path_factory) -> Path:
    """A package trained with `meas-ml train dia` on the repository's truth."""
    out = tmp_path_factory.mktemp("dia_pkg") / "dia.safetensors"
    rc = main(
        [
            "train",
            "dia",
            "--repo",
            str(repo),
            "--collections",
            "MLSim/defaults",
            "--out",
            str(out),
            "--epochs",
            "4",
            "--widths",
            "8",
            "16",
            "16",
            "--threads",
            "1",
            "--version",
            "test",
        ]
    )
    assert rc == 0
    return out


@pytest.mark.slow
def test_pipetask_run_on_simulated_survey(repo, trained):
    from lsst.daf.butler import Butler

    rc = main(["register", str(repo), str(trained), "--run", MODEL_RUN])
    assert rc == 0
    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(repo),
        "-i",
        f"MLSim/defaults,{MODEL_RUN}",
        "-o",
        OUTPUT,
        "-p",
        str(ROOT / "pipelines" / "dia.yaml"),
        "--register-dataset-types",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    butler = Butler.from_config(str(repo), collections=OUTPUT)
    diffs = list(butler.query_datasets("difference_image", collections="MLSim/defaults"))
    scores = list(butler.query_datasets("ml_dia_scores"))
    assert len(scores) == len(diffs) > 0
    package = ModelPackage.load(trained)
    n_real = n_all = 0
    for ref in scores:
        table = butler.get(ref, parameters={"strip_astropy_meta_yaml": False})
        sources = butler.get("dia_source_unstandardized", ref.dataId)
        truth = butler.get("truth_dia_source", ref.dataId)
        np.testing.assert_array_equal(table["diaSourceId"], sources["diaSourceId"])
        assert {"ml_reliability", "ml_class", "flags", *CLASS_COLUMNS.values(), *FLAG_BITS} <= set(
            table.colnames
        )
        assert table.meta["ml_model"]["sha256"] == package.sha256
        scored = table["ml_class"] != ""
        rel = np.asarray(table["ml_reliability"])[scored]
        assert ((rel >= 0) & (rel <= 1)).all()
        label = dict(zip(truth["diaSourceId"].tolist(), truth["label"].tolist(), strict=True))
        n_all += len(table)
        n_real += sum(label[i] != "artifact" for i in table["diaSourceId"].tolist())
    assert n_all > 20 and 0 < n_real < n_all

    from lsst.meas.ml.dia.demo import summarize

    (line,) = summarize(butler, OUTPUT)
    assert f"{n_all} DIA sources" in line and "ROC AUC" in line


def test_demo_training_hook(repo, tmp_path):
    from lsst.meas.ml.butler import open_repo
    from lsst.meas.ml.dia.demo import train_demo_package

    package = train_demo_package(open_repo(repo), ["MLSim/defaults"], str(tmp_path))
    assert package.family == "dia" and package.version == "demo"
    # Trained on a survey with another seed than the repository's: held out.
    stored = open_repo(repo).get("mlsim_config", collections="MLSim/defaults")
    assert package.provenance["training_data"]["seed"] == stored["seed"] + 1000
    assert package.provenance["n_train"] > 50


@needs_real
def test_predict_cli_on_real_alert_files_with_default_package(tmp_path):
    assert Path(default_package_path()).stat().st_size < 2_000_000
    out = tmp_path / "scores.parquet"
    rc = main(["predict", "dia", "--alerts", *map(str, RUBIN), str(ZTF[0]), "--out", str(out)])
    assert rc == 0
    table = Table.read(out)
    assert {"diaSourceId", "ml_reliability", "ml_class", "flags"} <= set(table.colnames)
    import pyarrow.parquet as pq

    n_alerts = sum(pq.read_metadata(p).num_rows for p in [*RUBIN, ZTF[0]])
    assert len(table) == n_alerts
    assert (table["ml_class"] != "").all()
    assert set(table["file"]) == {p.name for p in [*RUBIN, ZTF[0]]}
    assert table["flag_resized"].all()  # 30-93 pixel Rubin and 63 pixel ZTF cutouts, 32 pixel model


def test_predict_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    rc = main(["predict", "dia", "--alerts", str(bad), "--out", str(tmp_path / "o.parquet")])
    assert rc == 2 and "cannot decode alerts" in capsys.readouterr().err
    rc = main(
        [
            "predict",
            "dia",
            "--model",
            str(tmp_path / "missing.safetensors"),
            "--alerts",
            str(bad),
            "--out",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert rc == 2
    capsys.readouterr()
    # A package for other channels: a clear error, nothing written.
    from lsst.meas.ml.models import build_model

    hp = {"in_channels": 2}
    wrong = ModelPackage.from_model(
        build_model("dia_cnn", hp),
        family="dia",
        architecture="dia_cnn",
        hyperparameters=hp,
        inputs={
            "stamp_size": 32,
            "channels": ["science", "difference"],
            "normalisation": "asinh3-ringnoise-v1",
        },
        outputs={"class_names": ["transient", "variable", "asteroid", "artifact"]},
        version="x",
        provenance={},
    )
    wrong.save(tmp_path / "wrong.safetensors")
    out = tmp_path / "w.parquet"
    rc = main(
        [
            "predict",
            "dia",
            "--model",
            str(tmp_path / "wrong.safetensors"),
            "--alerts",
            str(RUBIN[0]) if RUBIN else str(bad),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "channels" in err and not out.exists(), err


def test_bench_cli_prints_figures(capsys):
    rc = main(["bench", "dia", "--sources", "30", "--size", "256", "--repeats", "1", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "seconds_total" in out and "sources_per_core_second" in out


@pytest.mark.slow
def test_default_package_quality_on_unseen_simulated_survey_and_ztf(repo):
    """The shipped package on a survey it was not trained on (tiny, seed 7) and
    on the ZTF alerts held out of its training (candid % 3 == 0)."""
    from lsst.meas.ml.butler import open_repo
    from lsst.meas.ml.dia.quality_report import quality_report

    package = ModelPackage.load(default_package_path())
    report = quality_report(
        package, butler=open_repo(repo), collections=["MLSim/defaults"], ztf=ZTF if ZTF else ()
    )
    sim = report["simulated"]["single_pass"]
    assert sim["n"] > 50 and sim["roc_auc"] > 0.9, sim
    assert sim["purity"] > 0.8 and sim["completeness"] > 0.8, sim
    if ZTF:
        ztf = report["ztf_vs_drb"]["single_pass"]
        assert ztf["n"] > 30 and ztf["roc_auc"] > 0.7, ztf


@pytest.mark.slow
def test_dp1_shaped_repository_through_pipetask(tmp_path):
    """DP1 shape: DIA sources from the per-tract table, template derived; a detector
    whose difference image is missing gets no quantum while the rest complete."""
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    repo = tmp_path / "dp1"
    build_repo(repo, SurveyConfig.tiny(), shape="dp1")
    butler = Butler.from_config(str(repo), writeable=True)
    register_package(
        butler, ModelPackage.load(ROOT / "python/lsst/meas/ml/data/dia_default.safetensors"), run=MODEL_RUN
    )
    register_package(
        butler,
        ModelPackage.load(ROOT / "python/lsst/meas/ml/data/photoz_default.safetensors"),
        run="models/photoz/test",
    )
    diffs = butler.query_datasets("difference_image", collections="MLSim/defaults", explain=False)
    dropped = diffs[0]
    butler.pruneDatasets([dropped], disassociate=True, unstore=True, purge=True)
    del butler
    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(repo),
        "-i",
        f"MLSim/defaults,{MODEL_RUN},models/photoz/test",
        "-o",
        OUTPUT,
        "-p",
        f"{ROOT / 'pipelines' / 'DP1Pipeline.yaml'}#estimatePhotoz,classifyDiaSources",
        "--register-dataset-types",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    butler = Butler.from_config(str(repo), collections=OUTPUT)
    scores = butler.query_datasets("ml_dia_scores", explain=False)
    assert len(scores) == len(diffs) - 1
    assert dropped.dataId not in {ref.dataId for ref in scores}
    assert len(butler.query_datasets("ml_photoz", explain=False)) == 1
    sources = butler.get("dia_source", skymap="mlsim", tract=0, collections="MLSim/defaults")
    for ref in scores:
        table = butler.get(ref, parameters={"strip_astropy_meta_yaml": False})
        assert table.meta["template_source"] == "derived"
        rows = sources[
            (sources["visit"] == ref.dataId["visit"]) & (sources["detector"] == ref.dataId["detector"])
        ]
        np.testing.assert_array_equal(np.sort(table["diaSourceId"]), np.sort(rows["diaSourceId"]))
        assert np.isfinite(np.asarray(table["ml_reliability"])[table["ml_class"] != ""]).all()


@pytest.mark.slow
def test_derived_template_scores_close_to_the_real_template(tiny_repo):
    from lsst.meas.ml.dia.quality_report import template_comparison

    butler = Butler.from_config(str(tiny_repo))
    package = ModelPackage.load(ROOT / "python/lsst/meas/ml/data/dia_default.safetensors")
    report = template_comparison(package, butler, ["MLSim/defaults"])
    assert report["sources"] > 50
    assert report["mean_abs_reliability_change"] < 0.1 and report["decisions_changed"] < 0.1
    assert abs(report["auc_detector_template"] - report["auc_derived_template"]) < 0.05
