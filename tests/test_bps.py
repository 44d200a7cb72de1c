"""`bps submit` with Parsl runs a meas_ml pipeline on the simulated survey."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bps_submit_with_parsl(tiny_repo, tmp_path):
    from lsst.daf.butler import Butler
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.packages import ModelPackage

    bindir = Path(sys.executable).parent
    if not (bindir / "bps").exists():
        pytest.skip("bps is not installed in this environment")
    butler = Butler.from_config(str(tiny_repo), writeable=True)
    package = ModelPackage.load(ROOT / "python/lsst/meas/ml/data/dia_default.safetensors")
    _, run = register_package(butler, package, run="models/dia/bps-test")
    del butler
    config = tmp_path / "bps.yaml"
    text = (ROOT / "pipelines/bps/bps_parsl_local.yaml").read_text()
    config.write_text(re.sub(r'DemoPipeline\.yaml[^"]*', "dia.yaml", text))
    venv = bindir.parent
    env = dict(
        os.environ,
        CTRL_MPEXEC_DIR=str(venv),
        DAF_BUTLER_DIR=str(venv),
        MEAS_ML_DIR=str(ROOT),
        PWD=str(tmp_path),  # bps puts its submit/ directory under ${PWD}
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    proc = subprocess.run(
        [
            str(bindir / "bps"),
            "submit",
            str(config),
            "-b",
            str(tiny_repo),
            "-i",
            f"MLSim/defaults,{run}",
            "-o",
            "u/test/bps",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    butler = Butler.from_config(str(tiny_repo))
    refs = butler.query_datasets("ml_dia_scores", collections="u/test/bps", explain=False)
    inputs = butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults", explain=False)
    assert len(refs) == len(inputs) > 0
    table = butler.get(refs[0])
    assert "ml_reliability" in table.colnames
    shutil.rmtree(tmp_path / "submit", ignore_errors=True)


def test_slurm_site_heartbeat_from_config_and_refusal():
    """The packaged Slurm site passes the configured heartbeat to Parsl and refuses a bad one."""
    pytest.importorskip("lsst.ctrl.bps.parsl", reason="lsst-ctrl-bps-parsl is not installed")
    from lsst.ctrl.bps import BpsConfig
    from lsst.meas.ml.bps_sites import Slurm

    base = {"computeSite": "slurm", "uniqProcName": "heartbeat", "submitPath": "/nonexistent"}
    site = {"class": "lsst.meas.ml.bps_sites.Slurm", "nodes": 1, "cores_per_node": 2, "walltime": "00:10:00"}

    def executor(**keys):
        return Slurm(BpsConfig({**base, "site": {"slurm": {**site, **keys}}})).get_executors()[0]

    ex = executor(heartbeat_period=5, heartbeat_threshold=40)
    assert (ex.label, ex.heartbeat_period, ex.heartbeat_threshold) == ("slurm", 5, 40)
    ex = executor()  # Parsl's defaults
    assert (ex.heartbeat_period, ex.heartbeat_threshold) == (30, 120)
    for period, threshold in [(50, 40), (30, 30), (0, 10)]:
        with pytest.raises(ValueError, match="must exceed heartbeat_period"):
            executor(heartbeat_period=period, heartbeat_threshold=threshold)
