"""bps at a data-access centre: a one-node Slurm cluster with Parsl, and HTCondor submit files with GPUs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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
def _submit_args(
    bindir: Path, config: Path, repo: Path, runs: list[str], output: str, verb: str = "submit"
) -> list[str]:
    """``bps VERB CONFIG -b REPO -i MLSim/defaults,RUNS -o OUTPUT``."""
    return [
        str(bindir / "bps"),
        verb,
        str(config),
        "-b",
        str(repo),
        "-i",
        ",".join(["MLSim/defaults", *runs]),
        "-o",
        output,
    ]


def _slurm_env(slurm_cluster: dict[str, str], tmp_path: Path, bindir: Path) -> dict[str, str]:
    """The test cluster's environment, run from ``tmp_path``, with this Python's commands first."""
    return dict(slurm_cluster, PWD=str(tmp_path), PATH=f"{bindir}{os.pathsep}{slurm_cluster.get('PATH', '')}")


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
    env = _slurm_env(slurm_cluster, tmp_path, bindir)
    env.pop("CTRL_MPEXEC_DIR", None)
    env.pop("DAF_BUTLER_DIR", None)
    output = "u/test/slurm"
    proc = subprocess.run(
        _submit_args(bindir, config, tiny_repo, runs, output),
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
        _submit_args(bindir, config, tiny_repo, runs, "u/test/condor", verb="prepare"),
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
    env = _slurm_env(slurm_cluster, tmp_path, bindir)
    output = "u/test/restart"
    first = subprocess.run(
        _submit_args(bindir, config, repo, runs, output),
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
    _restart_and_check(tmp_path, env, repo, output, keys, before)


def _restart_and_check(
    tmp_path: Path, env: dict[str, str], repo: Path, output: str, keys: set, before: dict
) -> Any:
    """``bps restart`` the submission under ``tmp_path``; check one readable output per key, none rewritten.

    Returns the Butler of ``repo`` for further checks.
    """
    from lsst.daf.butler import Butler

    bindir = Path(sys.executable).parent
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
    return butler


def _slurm_jobs(env: dict[str, str]) -> list[str]:
    """Ids of the jobs Slurm holds (pending or running) on the test cluster."""
    proc = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return proc.stdout.split()


def _slurm_state(env: dict[str, str], job: str) -> str:
    """Slurm's state of a job (``scontrol show job``), or an empty string once it is forgotten."""
    proc = subprocess.run(
        ["scontrol", "-o", "show", "job", job],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    found = re.search(r"JobState=(\S+)", proc.stdout)
    return found.group(1) if found else ""


def _dataset_files(run_dir: Path) -> set[Path]:
    """The ``ml_dia_scores`` files at a dataset's name under an output collection's directory."""
    return {p for p in run_dir.rglob("ml_dia_scores_*") if p.is_file() and ".tmp." not in p.name}


def _temporaries(run_dir: Path) -> list[str]:
    """Names of the datastore's temporaries (interrupted writes) of ``ml_dia_scores`` files."""
    return sorted(p.name for p in run_dir.rglob("*ml_dia_scores_*.tmp.*") if p.is_file())


@pytest.mark.slow
def test_slurm_job_killed_mid_write_then_restart(slurm_cluster, tmp_path):
    """The Slurm job running the quanta is SIGKILLed as the first output is written; then ``bps restart``.

    ``scancel --signal=KILL --full`` kills every process of the job at once,
    as a node loss or the scheduler's final kill does.  With Parsl's retries
    off, the submission ends with failed jobs and its final job registers
    what was finished: every dataset the registry knows reads back whole and
    no file at a dataset's name is left unregistered.  ``bps restart`` runs
    the missing quanta: one output per input, the earlier ones unchanged.
    """
    import time

    import yaml
    from lsst.daf.butler import Butler
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    repo = tmp_path / "repo"
    build_repo(repo, SurveyConfig.tiny())
    runs = _register_defaults(repo)
    butler = Butler.from_config(str(repo))
    inputs = butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults", explain=False)
    keys = {r.dataId for r in inputs}
    del butler

    bindir = Path(sys.executable).parent
    config = _bps_config(tmp_path, "bps_parsl_slurm.yaml", reduced=True)
    settings = yaml.safe_load(config.read_text())
    # No Parsl retry: the killed jobs fail and the submission ends (with the
    # default, 1, Parsl reruns them at once in a new block).
    settings["site"]["slurm"]["retries"] = 0
    # The project's Slurm site: a lost block is noticed after 10 s without heartbeats (Parsl: 120 s).
    settings["site"]["slurm"].update(
        {"class": "lsst.meas.ml.bps_sites.Slurm", "heartbeat_period": 2, "heartbeat_threshold": 10}
    )
    config.write_text(yaml.safe_dump(settings))
    env = _slurm_env(slurm_cluster, tmp_path, bindir)
    output = "u/test/killed"
    log = tmp_path / "submit.log"
    with log.open("w") as sink:
        submit = subprocess.Popen(
            _submit_args(bindir, config, repo, runs, output),
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    out_dir = repo / output
    jobs: list[str] = []
    killed: list[str] = []
    ended = True
    deadline = time.monotonic() + 600
    last_poll = 0.0
    try:
        while time.monotonic() < deadline and submit.poll() is None:
            if time.monotonic() - last_poll > 0.5:
                jobs = _slurm_jobs(env) or jobs
                last_poll = time.monotonic()
            # The datastore makes the dataset type's directory just before it writes the first file.
            if jobs and out_dir.exists() and any(out_dir.rglob("ml_dia_scores*")):
                for job in jobs:
                    subprocess.run(
                        ["scancel", "--signal=KILL", "--full", job], env=env, timeout=30, check=False
                    )
                killed = jobs
                break
            time.sleep(0.02)
        try:
            submit.wait(timeout=300)
        except subprocess.TimeoutExpired:
            ended = False
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, 9)
            submit.wait()
    text = log.read_text(errors="replace")
    assert killed, f"no Slurm job was running when the first output appeared\n{text[-3000:]}"
    assert ended, f"bps submit did not end within 300 s of the kill\n{text[-3000:]}"
    states = {job: _slurm_state(env, job) for job in killed}
    assert not set(_slurm_jobs(env)) & set(killed), f"the killed jobs are still queued: {states}"
    failed = re.findall(r"Workflow shutdown information: \{'tasks_failed_count': (\d+)", text)
    assert failed and int(failed[-1]) > 0, f"no job failed after the kill ({states})\n{text[-3000:]}"

    butler = Butler.from_config(str(repo))
    done = butler.query_datasets("ml_dia_scores", collections=output, find_first=False, explain=False)
    assert len(done) < len(keys), f"the kill landed after the last quantum\n{text[-3000:]}"
    # Every dataset the registry knows reads back whole.
    for ref in done:
        assert len(butler.get(ref)) > 0
    before = {r.dataId: r.id for r in done}
    # The final job registered every file at a dataset's name (whole: the
    # datastore renames a finished temporary into place); an interrupted
    # write can leave only its temporary, ``<random><name>.tmp.<ext>``.
    assert _dataset_files(out_dir) == {Path(butler.getURI(r).ospath) for r in done}
    temporaries = _temporaries(out_dir)
    del butler
    print(
        f"bps submit exit status {submit.returncode}; Slurm states after the kill: {states}; "
        f"{len(done)} of {len(keys)} outputs registered; temporaries left: {temporaries}"
    )

    butler = _restart_and_check(tmp_path, env, repo, output, keys, before)
    every = butler.query_datasets("ml_dia_scores", collections=output, find_first=False, explain=False)
    assert _dataset_files(out_dir) == {Path(butler.getURI(r).ospath) for r in every}
    assert _temporaries(out_dir) == temporaries, "the restart left new temporaries"


_PUT_BIG_TABLE = """\
import sys

import numpy as np
from astropy.table import Table
from lsst.daf.butler import Butler, DatasetType

butler = Butler.from_config(sys.argv[1], writeable=True, run="r")
butler.registry.registerDatasetType(DatasetType("big", [], "ArrowAstropy", universe=butler.dimensions))
table = Table({f"c{i}": np.random.default_rng(i).random(2_000_000) for i in range(8)})
print("writing", flush=True)
butler.put(table, "big")
"""


def test_write_killed_mid_file_leaves_only_an_unregistered_temporary(tmp_path):
    """SIGKILL during ``butler.put`` of a 128 MB table: nothing at the dataset's name, nothing registered.

    The datastore writes ``<random><name>.tmp.<ext>`` beside the final name
    and renames it into place when it is complete; the registry entry (or,
    under bps, the final job's ingest) comes after.  What the kill leaves is
    the partial temporary, which no dataset points at.
    """
    import signal
    import time

    from lsst.daf.butler import Butler

    repo = tmp_path / "repo"
    Butler.makeRepo(str(repo))
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUT_BIG_TABLE, str(repo)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        folder = repo / "r" / "big"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if folder.exists() and any(p.is_file() for p in folder.iterdir()):
                break
            time.sleep(0.001)
        assert proc.poll() is None, "the put ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    left = [p for p in folder.iterdir() if p.is_file()]
    assert len(left) == 1 and ".tmp." in left[0].name, [p.name for p in left]
    assert left[0].stat().st_size < 128_000_000
    butler = Butler.from_config(str(repo))
    assert not butler.query_datasets("big", collections="r", explain=False)
