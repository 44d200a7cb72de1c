"""bps at a data-access centre: a one-node Slurm cluster with Parsl, and HTCondor submit files with GPUs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "python" / "lsst" / "meas" / "ml" / "data"


def _register_defaults(repo: Path) -> list[str]:
    from lsst.daf.butler import Butler
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.packages import ModelPackage

    butler = Butler.from_config(str(repo), writeable=True)
    runs = []
    for family in ("photoz", "dia"):
        _, run = register_package(
            butler, ModelPackage.load(DATA / f"{family}_default.safetensors"), run=f"models/{family}/bps-dac"
        )
        runs.append(run)
    return runs


def _bps_config(tmp_path: Path, name: str, *, reduced: bool = False) -> Path:
    """The shipped config with the demo pipeline narrowed to the products with shipped packages.

    ``reduced``: only the DIA task, its quanta clustered by band (two jobs on
    the tiny survey), for ``make test``.
    """
    import yaml

    config = yaml.safe_load((ROOT / "pipelines" / "bps" / name).read_text())
    config["pipelineYaml"] = f"{ROOT}/pipelines/DemoPipeline.yaml#estimatePhotoz,classifyDiaSources"
    if reduced:
        config["pipelineYaml"] = f"{ROOT}/pipelines/DemoPipeline.yaml#classifyDiaSources"
        config["cluster"] = {"diaByBand": {"pipetasks": "classifyDiaSources", "dimensions": "band"}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_bps_submit_on_slurm(slurm_cluster, tiny_repo, tmp_path):
    """``bps submit`` with Parsl's Slurm site: clustered jobs run as Slurm jobs and write every output.

    Full scale only: under ``make test`` the restart test below submits to
    the same cluster with the reduced clustering and checks the same things.
    """
    from conftest import TEST_SCALE
    from lsst.daf.butler import Butler

    if TEST_SCALE != "full":
        pytest.skip(
            "reduced scale: bps submit on Slurm is covered by test_bps_restart_on_slurm_after_a_failed_job"
        )

    bindir = Path(sys.executable).parent
    runs = _register_defaults(tiny_repo)
    reduced = False
    config = _bps_config(tmp_path, "bps_parsl_slurm.yaml", reduced=reduced)
    env = dict(slurm_cluster, PWD=str(tmp_path), PATH=f"{bindir}{os.pathsep}{slurm_cluster.get('PATH', '')}")
    env.pop("CTRL_MPEXEC_DIR", None)
    env.pop("DAF_BUTLER_DIR", None)
    output = "u/test/slurm"
    proc = subprocess.run(
        [
            str(bindir / "bps"),
            "submit",
            str(config),
            "-b",
            str(tiny_repo),
            "-i",
            ",".join(["MLSim/defaults", *runs]),
            "-o",
            output,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"bps submit failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # The work ran in Slurm jobs (Parsl blocks submitted with sbatch), not in the submitting process.
    scripts = [
        p
        for p in tmp_path.rglob("submit_scripts/parsl.slurm.block-*")
        if p.suffix not in (".stdout", ".stderr")
    ]
    assert scripts and all("#SBATCH" in p.read_text(errors="replace") for p in scripts), scripts
    butler = Butler.from_config(str(tiny_repo))
    products = [("ml_dia_scores", "dia_source_unstandardized")] + (
        [] if reduced else [("ml_photoz", "object")]
    )
    for out, source in products:
        refs = butler.query_datasets(out, collections=output, explain=False)
        inputs = butler.query_datasets(source, collections="MLSim/defaults", explain=False)
        assert {r.dataId for r in refs} == {r.dataId for r in inputs}, out
    # Clustering: the DIA quanta ran in one job per band (reduced) or per visit, not one per detector.
    dia_jobs = {p.name for p in (tmp_path / "submit").rglob("logs/diaBy*/*") if p.is_dir()}
    n_groups = len({r.dataId["band" if reduced else "visit"] for r in inputs})
    assert len(dia_jobs) == n_groups < len(inputs), sorted(dia_jobs)


def test_htcondor_submit_files_request_gpus(tiny_repo, tmp_path):
    """``bps prepare`` with the HTCondor config asks a GPU (RequestGPUs) in the clustered jobs."""
    pytest.importorskip("lsst.ctrl.bps.htcondor", reason="lsst-ctrl-bps-htcondor is not installed")
    bindir = Path(sys.executable).parent
    runs = _register_defaults(tiny_repo)
    config = _bps_config(tmp_path, "bps_htcondor.yaml")
    env = dict(os.environ, PWD=str(tmp_path), PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [
            str(bindir / "bps"),
            "prepare",
            str(config),
            "-b",
            str(tiny_repo),
            "-i",
            ",".join(["MLSim/defaults", *runs]),
            "-o",
            "u/test/condor",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"bps prepare failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    subs = list((tmp_path / "submit").rglob("*.sub"))
    assert subs, "no HTCondor submit file written"
    gpu = [s for s in subs if re.search(r"^\+RequestGPUs\s*=\s*1\s*$", s.read_text(), re.M)]
    assert any("diaByVisit" in s.name for s in gpu), [s.name for s in subs]
    assert any("photozByTract" in s.name for s in gpu), [s.name for s in subs]
    assert all("OMP_NUM_THREADS" in s.read_text() for s in subs if "ByVisit" in s.name or "ByTract" in s.name)


@pytest.mark.slow
def test_bps_restart_on_slurm_after_a_failed_job(slurm_cluster, tmp_path):
    """One clustered job fails on a corrupted input; after the repair ``bps restart`` finishes the work.

    The other job's outputs are kept (same dataset IDs) and nothing is duplicated.
    """
    from lsst.daf.butler import Butler
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    repo = tmp_path / "repo"
    build_repo(repo, SurveyConfig.tiny())
    runs = _register_defaults(repo)
    butler = Butler.from_config(str(repo))
    inputs = butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults", explain=False)
    target = inputs[0]
    path = Path(butler.getURI(target).ospath)
    del butler
    original = path.read_bytes()
    path.write_bytes((b"not a parquet file " * (len(original) // 19 + 1))[: len(original)])

    bindir = Path(sys.executable).parent
    config = _bps_config(tmp_path, "bps_parsl_slurm.yaml", reduced=True)
    env = dict(slurm_cluster, PWD=str(tmp_path), PATH=f"{bindir}{os.pathsep}{slurm_cluster.get('PATH', '')}")
    output = "u/test/restart"
    first = subprocess.run(
        [
            str(bindir / "bps"),
            "submit",
            str(config),
            "-b",
            str(repo),
            "-i",
            ",".join(["MLSim/defaults", *runs]),
            "-o",
            output,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    butler = Butler.from_config(str(repo))
    done = butler.query_datasets("ml_dia_scores", collections=output, explain=False)
    keys = {r.dataId for r in inputs}
    assert 0 < len(done) < len(keys), (
        f"{len(done)} outputs after the failed submission\n{first.stderr[-3000:]}"
    )
    assert target.dataId not in {r.dataId for r in done}
    # The quanta ran in Slurm jobs (Parsl blocks submitted with sbatch), clustered one job per band.
    scripts = [
        p
        for p in tmp_path.rglob("submit_scripts/parsl.slurm.block-*")
        if p.suffix not in (".stdout", ".stderr")
    ]
    assert scripts and all("#SBATCH" in p.read_text(errors="replace") for p in scripts), scripts
    dia_jobs = {p.name for p in (tmp_path / "submit").rglob("logs/diaBy*/*") if p.is_dir()}
    assert len(dia_jobs) == len({k["band"] for k in keys}) < len(keys), sorted(dia_jobs)
    before = {r.dataId: r.id for r in done}
    del butler

    path.write_bytes(original)
    submit_dir = next(p.parent for p in (tmp_path / "submit").rglob("parsl_workflow.pickle"))
    rec = subprocess.run(
        [
            str(bindir / "bps"),
            "restart",
            "--wms-service-class",
            "lsst.ctrl.bps.parsl.ParslService",
            "--id",
            str(submit_dir),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert rec.returncode == 0, f"bps restart failed\n{rec.stdout[-3000:]}\n{rec.stderr[-3000:]}"
    butler = Butler.from_config(str(repo))
    every = butler.query_datasets("ml_dia_scores", collections=output, find_first=False, explain=False)
    assert sorted(str(r.dataId) for r in every) == sorted(str(k) for k in keys), (
        "missing or duplicated outputs"
    )
    assert all(before[r.dataId] == r.id for r in every if r.dataId in before), (
        "finished outputs were rewritten"
    )
    for ref in every:
        assert len(butler.get(ref)) > 0
