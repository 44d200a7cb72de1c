"""doc/notebooks/meas_ml_on_the_rsp.ipynb runs top to bottom (nbclient) on a
tiny simulated repository standing in for the RSP's DP1 Butler.

``drp``: the models are registered in the repository (read from the Butler);
``dp1``: a DP1-shaped repository without models (derived template, per-tract
DIA sources, the packages shipped with meas_ml)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "doc" / "notebooks" / "meas_ml_on_the_rsp.ipynb"
DATA = ROOT / "python" / "lsst" / "meas" / "ml" / "data"
KERNEL = "meas_ml_test_kernel"
TIMEOUT_S = 300


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec whose interpreter is this one (the venv's), found through JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "meas_ml test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def _repo(root: Path, shape: str, register: bool) -> Path:
    from lsst.meas.ml.butler import open_repo
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.packages import ModelPackage
    from lsst.meas.ml.simulate import build_repo
    from lsst.meas.ml.simulate.config import SurveyConfig

    build_repo(root, SurveyConfig.tiny(), shape=shape)
    if register:
        butler = open_repo(root, writeable=True)
        for name in ("dia_default.safetensors", "photoz_default.safetensors"):
            register_package(butler, ModelPackage.load(DATA / name))
    return root


@pytest.mark.parametrize("shape", ["drp", pytest.param("dp1", marks=pytest.mark.slow)])
def test_notebook_runs(shape, kernel, tmp_path, monkeypatch):
    repo = _repo(tmp_path / "repo", shape, register=(shape == "drp"))
    outdir = tmp_path / "out"
    outdir.mkdir()
    monkeypatch.setenv("MEAS_ML_NOTEBOOK_REPO", str(repo))
    monkeypatch.setenv("MEAS_ML_NOTEBOOK_COLLECTION", "MLSim/defaults")
    monkeypatch.setenv("MEAS_ML_NOTEBOOK_OUTDIR", str(outdir))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert 5 <= len(code_cells) <= 10
    client = nbclient.NotebookClient(
        nb, timeout=TIMEOUT_S, kernel_name=kernel, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [out for cell in code_cells for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert all(cell.execution_count for cell in code_cells)
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    # The kernel is this interpreter (the project's venv), not some other python3.
    assert f"kernel: {sys.executable}\n" in text
    assert ("DP1" if shape == "dp1" else "DRP") + "-shaped repository" in text
    if shape == "drp":
        assert f"from {repo}:models/photoz/1.2.0" in text and f"from {repo}:models/dia/1.0.0" in text
    else:
        assert "photoz_default.safetensors" in text and "dia_default.safetensors" in text
    tables = [out.data["text/plain"] for out in outputs if out.output_type == "execute_result"]
    assert any("photoz_mode" in t for t in tables) and any("ml_reliability" in t for t in tables)
    assert any(out.output_type == "display_data" and "image/png" in out.data for out in outputs)
    png = outdir / "meas_ml_rsp.png"
    assert f"saved {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
