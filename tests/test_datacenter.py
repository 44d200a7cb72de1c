"""Data-centre ways of running the pipeline: a PostgreSQL registry and the quantum-backed Butler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "python" / "lsst" / "meas" / "ml" / "data"
#: The demo pipeline's photo-z and DIA tasks: the products with shipped default packages.
DEMO_SUBSET = f"{ROOT / 'pipelines' / 'DemoPipeline.yaml'}#estimatePhotoz,classifyDiaSources"


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def _run(*cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd[:3])} failed ({proc.returncode})\n--- stdout ---\n{proc.stdout[-3000:]}\n"
        f"--- stderr ---\n{proc.stderr[-3000:]}"
    )
    return proc


def _register_defaults(butler) -> list[str]:
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.packages import ModelPackage

    runs = []
    for family in ("photoz", "dia"):
        _, run = register_package(
            butler, ModelPackage.load(DATA / f"{family}_default.safetensors"), run=f"models/{family}/dc-test"
        )
        runs.append(run)
    return runs


def _check_outputs(butler, collection: str) -> None:
    import numpy as np

    for output, source in (("ml_photoz", "object"), ("ml_dia_scores", "dia_source_unstandardized")):
        refs = butler.query_datasets(output, collections=collection, explain=False)
        inputs = butler.query_datasets(source, collections="MLSim/defaults", explain=False)
        assert len(refs) == len(inputs) > 0, (output, len(refs), len(inputs))
        assert {r.dataId for r in refs} == {r.dataId for r in inputs}
    table = butler.get(butler.query_datasets("ml_photoz", collections=collection)[0])
    assert len(table) > 0 and np.isfinite(np.asarray(table["photoz_median"])).any()


@pytest.mark.slow
def test_demo_pipeline_on_a_postgresql_registry(postgres_url, tmp_path):
    """The simulated survey in a PostgreSQL-backed repository; the demo's tasks through ``pipetask run``."""
    from lsst.daf.butler import Butler
    from lsst.meas.ml.butler import create_repo
    from lsst.meas.ml.simulate import SurveyConfig
    from lsst.meas.ml.simulate.repo import write_survey
    from lsst.meas.ml.simulate.survey import simulate_survey

    repo = tmp_path / "repo"
    import yaml

    butler = create_repo(repo, db=postgres_url)
    assert yaml.safe_load((repo / "butler.yaml").read_text())["registry"]["db"] == postgres_url
    write_survey(butler, simulate_survey(SurveyConfig.tiny()), shape="drp")
    runs = _register_defaults(butler)
    del butler
    _run(
        _tool("pipetask"),
        "run",
        "-b",
        str(repo),
        "-i",
        ",".join(["MLSim/defaults", *runs]),
        "-o",
        "u/test/pg",
        "-p",
        DEMO_SUBSET,
        "--register-dataset-types",
    )
    butler = Butler.from_config(str(repo))
    _check_outputs(butler, "u/test/pg")
    # Provenance survives the round trip through PostgreSQL's registry.
    ref = butler.query_datasets("ml_dia_scores", collections="u/test/pg")[0]
    meta = butler.get(ref, parameters={"strip_astropy_meta_yaml": False}).meta
    assert meta["ml_model"]["family"] == "dia"


@pytest.mark.slow
def test_quantum_backed_butler_round_trip(tiny_repo, tmp_path):
    """``qgraph`` -> ``pre-exec-init-qbb`` -> ``run-qbb`` (no registry) -> ``transfer-from-graph``."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(tiny_repo), writeable=True)
    runs = _register_defaults(butler)
    del butler
    graph = tmp_path / "demo.qg"
    output = "u/test/qbb"
    _run(
        _tool("pipetask"),
        "qgraph",
        "-b",
        str(tiny_repo),
        "-i",
        ",".join(["MLSim/defaults", *runs]),
        "-o",
        output,
        "-p",
        DEMO_SUBSET,
        "--save-qgraph",
        str(graph),
    )
    _run(_tool("pipetask"), "pre-exec-init-qbb", str(tiny_repo), str(graph))
    _run(_tool("pipetask"), "run-qbb", str(tiny_repo), str(graph), "-j", "1")
    # Before the transfer the outputs are files in the datastore, not yet in the registry.
    butler = Butler.from_config(str(tiny_repo))
    assert list(butler.collections.query(f"{output}*")) == []
    del butler
    _run(
        _tool("butler"),
        "transfer-from-graph",
        str(graph),
        str(tiny_repo),
        "--register-dataset-types",
        "--update-output-chain",
    )
    butler = Butler.from_config(str(tiny_repo))
    _check_outputs(butler, output)
