"""`meas-ml demo` end to end on the tiny survey, run twice."""

from __future__ import annotations

import os

import pytest
from lsst.meas.ml.cli import main

#: `make test` runs the demo on the tiny survey; `make test-full` on the default one.
SIZE = "default" if os.environ.get("MEAS_ML_TEST_SCALE") == "full" else "tiny"


@pytest.mark.slow
def test_demo_runs_twice_and_leaves_readable_catalogs(tmp_path, capsys):
    from lsst.daf.butler import Butler

    repo = tmp_path / "demo-repo"
    assert main(["demo", "--repo", str(repo), "--size", SIZE]) == 0
    first = capsys.readouterr().out
    assert f"Simulating the {SIZE} mini-survey" in first and "Training the photoz model" in first
    assert "ml_photoz tract 0" in first and "ml_dia_scores:" in first

    assert main(["demo", "--repo", str(repo), "--size", SIZE]) == 0
    second = capsys.readouterr().out
    assert "Reusing the simulated survey" in second and "Reusing photoz model" in second
    assert "replacing its last run" in second

    butler = Butler.from_config(str(repo), collections="u/demo/ml")
    photoz = butler.query_datasets("ml_photoz", explain=False)
    dia = butler.query_datasets("ml_dia_scores", explain=False)
    n_detectors = len(
        butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults", explain=False)
    )
    assert len(photoz) == 1 and len(dia) == n_detectors
    # Current daf_butler drops table metadata on read unless asked to keep it.
    catalog = butler.get(photoz[0], parameters={"strip_astropy_meta_yaml": False})
    objects = butler.get("object", photoz[0].dataId, collections="MLSim/defaults")
    assert len(catalog) == len(objects)
    # Provenance: the model package used is a recorded input of the output.
    meta = catalog.meta
    inputs = {
        meta[f"LSST.BUTLER.INPUT.{i}.DATASETTYPE"]: meta[f"LSST.BUTLER.INPUT.{i}.RUN"]
        for i in range(meta["LSST.BUTLER.N_INPUTS"])
    }
    assert inputs["ml_model_photoz"].startswith("models/photoz/demo-seed")
    model = butler.get("ml_model_photoz", collections=inputs["ml_model_photoz"])
    assert meta["ml_model"]["sha256"] == model.sha256 and meta["ml_model"]["family"] == "photoz"
