"""The Rubin Science Platform route: the DP1 Butler is remote and read-only, so
the inputs of a pipeline are copied into a local repository
(`lsst.meas.ml.butler.transfer.transfer_inputs`, ``meas-ml transfer-inputs``),
the model packages are registered there and ``pipetask run`` runs there.

A tiny simulated survey stands in for DP1: it is opened read-only and its
files are made read-only for the test (as root that is not enforced, so the
test also checks that no file of it changed)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The demo pipeline's tasks whose packages the test registers.
PIPELINE = f"{ROOT / 'pipelines' / 'DemoPipeline.yaml'}#estimatePhotoz,classifyDiaSources"
DATA = ROOT / "python" / "lsst" / "meas" / "ml" / "data"
MODEL_RUNS = ("models/dia/1.0.0", "models/photoz/1.2.0")
INPUTS = ",".join(("MLSim/defaults", *MODEL_RUNS))
OUTPUT = "u/test/rsp"
#: `make test` (reduced): one visit; `make test-full`: every visit.
FULL = os.environ.get("MEAS_ML_TEST_SCALE") == "full"


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: relative path -> (size, sha256)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(root))] = (
                path.stat().st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return files


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny simulated repository, read-only for the duration of the module."""
    from lsst.meas.ml.simulate import build_repo
    from lsst.meas.ml.simulate.config import SurveyConfig

    root = tmp_path_factory.mktemp("rsp") / "dp1_stand_in"
    build_repo(root, SurveyConfig.tiny(), shape="drp")
    modes = {}
    for path in [root, *root.rglob("*")]:
        modes[path] = stat.S_IMODE(path.stat().st_mode)
        path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield root
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def _pipetask() -> str:
    path = Path(sys.executable).with_name("pipetask")
    return str(path) if path.exists() else "pipetask"


@pytest.mark.slow
def test_transfer_register_and_run_locally(source, tmp_path, capsys):
    from lsst.daf.butler import Butler
    from lsst.meas.ml.butler.transfer import transfer_inputs
    from lsst.meas.ml.cli import main

    timings = {}
    before = _snapshot(source)
    src = Butler.from_config(str(source), writeable=False)
    assert not src.isWriteable()
    collections_before = sorted(src.collections.query("*"))
    visit_refs = src.query_datasets("visit_image", collections="MLSim/defaults")
    visit = min(ref.dataId["visit"] for ref in visit_refs)
    (object_ref,) = src.query_datasets("object", collections="MLSim/defaults")
    tract, skymap = object_ref.dataId["tract"], object_ref.dataId["skymap"]
    where = f"skymap = '{skymap}' AND tract = {tract}"
    if not FULL:
        where = f"instrument = 'MLSim' AND visit = {visit} AND {where}"
    detectors = sorted(ref.dataId["detector"] for ref in visit_refs if FULL or ref.dataId["visit"] == visit)
    dest = tmp_path / "local_repo"

    # A dry run counts without creating anything.
    dry = transfer_inputs(src, dest, PIPELINE, INPUTS, where=where, dry_run=True)
    assert not dest.exists() and dry["transferred"] == 0

    # The command line: the same -i as pipetask; model RUNs are not in the source.
    t0 = time.perf_counter()
    rc = main(["transfer-inputs", str(source), str(dest), "-p", str(PIPELINE), "-i", INPUTS, "-d", where])
    timings["transfer-inputs"] = time.perf_counter() - t0
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    n_detectors = len(detectors)
    assert summary["quanta"] == {"classifyDiaSources": n_detectors, "estimatePhotoz": 1}
    assert summary["by_dataset_type"] == {
        "dia_source_unstandardized": n_detectors,
        "difference_image": n_detectors,
        "object": 1,
        "template_detector": n_detectors,
        "visit_image": n_detectors,
    }
    assert summary["datasets"] == summary["transferred"] == dry["datasets"] == 4 * n_detectors + 1
    assert summary["skipped_collections"] == list(MODEL_RUNS)
    assert summary["missing_inputs"] == ["ml_model_dia", "ml_model_photoz"]
    assert summary["collections"] == ["MLSim/defaults", "MLSim/runs/sim"]

    local = Butler.from_config(str(dest), writeable=False)
    info = local.collections.get_info("MLSim/defaults")
    assert info.type.name == "CHAINED" and list(info.children) == ["MLSim/runs/sim"]
    assert (
        sorted(
            r.dataId["detector"] for r in local.query_datasets("visit_image", collections="MLSim/defaults")
        )
        == detectors
    )
    del local

    # Running it again copies nothing new.
    again = transfer_inputs(src, dest, PIPELINE, INPUTS, where=where)
    assert again["transferred"] == 0 and again["already_present"] == again["datasets"] == summary["datasets"]

    t0 = time.perf_counter()
    for name in ("dia_default.safetensors", "photoz_default.safetensors"):
        assert main(["register", str(dest), str(DATA / name)]) == 0
    timings["register (2 packages)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cmd = [
        _pipetask(),
        "run",
        "-b",
        str(dest),
        "-i",
        INPUTS,
        "-o",
        OUTPUT,
        "-p",
        str(PIPELINE),
        "-d",
        where,
        "--register-dataset-types",
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    timings["pipetask run"] = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]

    local = Butler.from_config(str(dest), collections=OUTPUT)
    scores = local.query_datasets("ml_dia_scores")
    assert sorted(ref.dataId["detector"] for ref in scores) == detectors
    for ref in scores:
        table = local.get(ref)
        sources = local.get("dia_source_unstandardized", ref.dataId)
        assert list(table["diaSourceId"]) == list(sources["diaSourceId"])
        assert "ml_reliability" in table.colnames
    (photoz_ref,) = local.query_datasets("ml_photoz")
    assert photoz_ref.dataId["tract"] == tract
    photoz = local.get(photoz_ref)
    assert len(photoz) == len(src.get(object_ref)) > 0

    # The source gained nothing.
    src_after = Butler.from_config(str(source), writeable=False)
    assert sorted(src_after.collections.query("*")) == collections_before
    assert not [dt.name for dt in src_after.registry.queryDatasetTypes("ml_*")]
    assert _snapshot(source) == before
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), file=sys.stderr)


def test_transfer_inputs_needs_a_source_collection(source, tmp_path):
    from lsst.meas.ml.butler.transfer import TransferError, split_collections, transfer_inputs

    assert split_collections(["a,b", " c "]) == ["a", "b", "c"]
    with pytest.raises(TransferError, match="None of the input collections"):
        transfer_inputs(str(source), tmp_path / "never", PIPELINE, "models/dia/1.0.0")
    assert not (tmp_path / "never").exists()
