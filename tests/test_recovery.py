"""Recovering a ``pipetask run`` after one failed quantum.

One detector's ``dia_source_unstandardized`` file is overwritten with garbage
of the same size (the Butler checks sizes, not contents), so exactly one
``classifyDiaSources`` quantum fails while the other seven succeed.  After the
file is repaired, the documented recovery command of the current stack,

    pipetask run ... -o OUTPUT --extend-run --clobber-outputs

must run only the missing quantum, in the same RUN collection, leaving exactly
one ``ml_dia_scores`` per (visit, detector) and the first run's datasets
untouched (same dataset IDs).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "dia.yaml"
MODEL_RUN = "models/dia/1.0.0"
INPUTS = f"MLSim/defaults,{MODEL_RUN}"
OUTPUT = "u/test/rec"
LABEL = "classifyDiaSources"


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def _tail(proc: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"\n--- stdout tail ---\n{proc.stdout[-n:]}\n--- stderr tail ---\n{proc.stderr[-n:]}"


def _pipetask_run(repo: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_tool("pipetask"), "run", "-b", str(repo), "-i", INPUTS, "-o", OUTPUT, "-p", str(PIPELINE), *extra]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)


def _key(data_id) -> tuple[int, int]:
    return int(data_id["visit"]), int(data_id["detector"])


def _scores(repo: Path, *, find_first: bool = True) -> list:
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(repo))
    return list(
        butler.query_datasets("ml_dia_scores", collections=OUTPUT, find_first=find_first, explain=False)
    )


@pytest.mark.slow
def test_recover_after_one_failed_quantum(tmp_path):
    from lsst.daf.butler import Butler
    from lsst.meas.ml.simulate import build_repo
    from lsst.meas.ml.simulate.config import SurveyConfig

    repo = tmp_path / "repo"
    build_repo(repo, SurveyConfig.tiny(), shape="drp")
    package = ROOT / "python" / "lsst" / "meas" / "ml" / "data" / "dia_default.safetensors"
    proc = subprocess.run(
        [_tool("meas-ml"), "register", str(repo), str(package)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"meas-ml register failed{_tail(proc)}"

    butler = Butler.from_config(str(repo))
    inputs = sorted(
        butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults"),
        key=lambda ref: _key(ref.dataId),
    )
    expected = {_key(ref.dataId) for ref in inputs}
    assert len(inputs) == len(expected) == 8, f"tiny survey should have 8 (visit, detector): {expected}"

    # 1. Corrupt one detector's DIA source table (same size: the datastore checks sizes).
    target = next(ref for ref in inputs if int(ref.dataId["detector"]) == 1)
    bad_key = _key(target.dataId)
    n_sources = len(butler.get(target))
    assert n_sources > 0
    path = Path(butler.getURI(target).ospath)
    original = path.read_bytes()
    path.write_bytes((b"not a parquet file " * (len(original) // 19 + 1))[: len(original)])
    assert path.stat().st_size == len(original)
    del butler

    first = _pipetask_run(repo, "--register-dataset-types")
    assert first.returncode != 0, f"first run should fail on the corrupted input{_tail(first)}"
    assert "Parquet magic bytes not found" in first.stderr + first.stdout, (
        f"first run failed for another reason than the corrupted parquet file{_tail(first)}"
    )
    # pipetask continues after a failure by default (--fail-fast is off): 7 of 8 done.
    done = _scores(repo)
    assert {_key(ref.dataId) for ref in done} == expected - {bad_key}, (
        f"the first run should write the other 7 outputs, got {sorted(_key(r.dataId) for r in done)}"
        f"{_tail(first)}"
    )
    before = {_key(ref.dataId): ref.id for ref in done}
    runs_before = Butler.from_config(str(repo)).collections.get_info(OUTPUT).children
    run = runs_before[0]

    # 2. Repair the input.
    path.write_bytes(original)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(original).digest()

    # --extend-run alone is not enough: the failed quantum left its log in the run.
    blocked = _pipetask_run(repo, "--extend-run")
    assert blocked.returncode != 0 and "OutputExistsError" in blocked.stderr + blocked.stdout, (
        "--extend-run without --clobber-outputs should refuse the failed quantum's leftover log"
        f"{_tail(blocked)}"
    )

    # The documented recovery: same RUN, skip finished quanta, clear the failed one's leftovers.
    rec = _pipetask_run(repo, "--extend-run", "--clobber-outputs")
    assert rec.returncode == 0, f"recovery run failed{_tail(rec)}"
    log = rec.stderr + rec.stdout
    executed = re.findall(r"Executed (\d+) quanta successfully, (\d+) failed", log)
    assert not executed or executed[-1] == ("1", "0"), (
        f"recovery should run only the failed quantum, got {executed}{_tail(rec)}"
    )

    # 3. No duplicate, nothing lost, nothing rewritten.
    butler = Butler.from_config(str(repo), collections=OUTPUT)
    assert butler.collections.get_info(OUTPUT).children == runs_before, "recovery should not add a RUN"
    after = _scores(repo)
    keys = [_key(ref.dataId) for ref in after]
    assert len(after) == 8 and len(set(keys)) == 8 and set(keys) == expected, (
        f"want one ml_dia_scores per (visit, detector), got {sorted(keys)}"
    )
    every = _scores(repo, find_first=False)
    assert len(every) == 8, (
        f"shadowed duplicates in {OUTPUT}: {sorted((_key(r.dataId), r.run) for r in every)}"
    )
    assert {ref.run for ref in after} == {run}
    ids = {_key(ref.dataId): ref.id for ref in after}
    rewritten = {k for k in before if ids[k] != before[k]}
    assert not rewritten, f"outputs of the first run were rewritten by the recovery: {sorted(rewritten)}"
    for name in (f"{LABEL}_metadata", f"{LABEL}_log"):
        refs = list(butler.query_datasets(name, find_first=False, explain=False))
        assert len(refs) == 8, f"{name}: want one per quantum, got {len(refs)}"

    recovered = next(ref for ref in after if _key(ref.dataId) == bad_key)
    table = butler.get(recovered)
    sources = butler.get("dia_source_unstandardized", recovered.dataId)
    assert len(table) == len(sources) == n_sources
    np.testing.assert_array_equal(table["diaSourceId"], sources["diaSourceId"])


@pytest.mark.slow
def test_killed_run_leaves_no_half_written_dataset(tiny_repo):
    """SIGKILL a ``pipetask run`` as soon as its first output lands; rerun the documented way.

    Whenever the kill lands, every dataset the registry knows must read back
    whole, and ``--extend-run --clobber-outputs`` must finish the missing
    quanta with exactly one output each.
    """
    import os
    import signal
    import time

    from lsst.daf.butler import Butler
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.packages import ModelPackage

    output = "u/test/killed"
    butler = Butler.from_config(str(tiny_repo), writeable=True)
    package = ROOT / "python" / "lsst" / "meas" / "ml" / "data" / "dia_default.safetensors"
    _, run = register_package(butler, ModelPackage.load(package), run="models/dia/kill-test")
    expected = {
        _key(r.dataId)
        for r in butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults")
    }
    del butler
    cmd = [
        _tool("pipetask"),
        "run",
        "-b",
        str(tiny_repo),
        "-i",
        f"MLSim/defaults,{run}",
        "-o",
        output,
        "-p",
        str(PIPELINE),
        "--register-dataset-types",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out_dir = Path(tiny_repo) / output
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if out_dir.exists() and any(out_dir.rglob("ml_dia_scores*")):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed, "the run finished before any output appeared; nothing was killed"

    # Writeable, as the rerun is: a kill inside a registry transaction leaves SQLite a hot journal,
    # which only a connection that may write can roll back (a read-only Butler fails with "attempt
    # to write a readonly database" until then).
    butler = Butler.from_config(str(tiny_repo), writeable=True)
    partial = list(
        butler.query_datasets("ml_dia_scores", collections=output, find_first=False, explain=False)
    )
    assert len(partial) < len(expected), "the kill landed after the last output: rerun the test"
    for ref in partial:
        assert len(butler.get(ref)) > 0  # whole, readable parquet
    del butler

    rec = subprocess.run(
        [*cmd[:-1], "--extend-run", "--clobber-outputs"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert rec.returncode == 0, f"rerun after the kill failed{_tail(rec)}"
    butler = Butler.from_config(str(tiny_repo))
    every = list(butler.query_datasets("ml_dia_scores", collections=output, find_first=False, explain=False))
    assert sorted(_key(r.dataId) for r in every) == sorted(expected)
    before = {_key(r.dataId): r.id for r in partial}
    assert all(before[_key(r.dataId)] == r.id for r in every if _key(r.dataId) in before)
    for ref in every:
        assert len(butler.get(ref)) > 0
