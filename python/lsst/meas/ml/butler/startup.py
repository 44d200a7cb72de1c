"""What one batch job pays before its first quantum, and what clustering saves.

A ``bps`` job is one ``pipetask`` process: it imports torch and the
middleware, reads its quantum graph, loads the model package, then runs its
quanta.  `measure_startup` times two real ``pipetask run`` invocations on the
same repository, one with a single quantum and one with ``n`` quanta, so that

* per-quantum time ``q = (W_n - W_1) / (n - 1)``;
* per-job start-up ``s = W_1 - q`` (imports, graph, model load: everything
  a job pays once);

and, separately, the bare imports and the model-package load in a fresh
interpreter.  The start-up share of a job running ``k`` quanta is
``s / (s + k q)``: the figure that sizes ``cluster`` sections of the bps
configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_startup", "startup_share"]

_IMPORTS = """
import json, time
t0 = time.perf_counter()
import torch, lsst.daf.butler, lsst.pipe.base
import lsst.meas.ml.{family}.task
t1 = time.perf_counter()
from lsst.meas.ml.packages import default_package
model = default_package("{family}").build_model()
t2 = time.perf_counter()
print(json.dumps({{"imports_s": t1 - t0, "model_load_s": t2 - t1}}))
"""


def startup_share(startup_s: float, per_quantum_s: float, quanta_per_job: int) -> float:
    """Return the fraction of a job's wall time spent on start-up.

    Parameters
    ----------
    startup_s : `float`
        Start-up of one job, in seconds.
    per_quantum_s : `float`
        Time per quantum, in seconds.
    quanta_per_job : `int`
        Quanta clustered into the job.

    Returns
    -------
    share : `float`
        ``startup_s / (startup_s + quanta_per_job * per_quantum_s)``.
    """
    return startup_s / (startup_s + quanta_per_job * per_quantum_s)


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{proc.stderr[-2000:]}")
    return wall


def measure_startup(repo: str | os.PathLike | None = None, repeats: int = 1) -> dict[str, Any]:
    """Measure a job's start-up and the per-quantum time of the DIA task with real ``pipetask run``.

    Parameters
    ----------
    repo : path-like, optional
        A repository with the simulated survey; default a new tiny one in a
        temporary directory (8 DIA quanta).
    repeats : `int`, optional
        Repeat each measurement and keep the fastest.

    Returns
    -------
    figures : `dict`
        ``imports_s``, ``model_load_s`` (fresh interpreter), ``pipetask_1_s``
        and ``pipetask_n_s`` (wall times), ``n_quanta``, ``per_quantum_s``,
        ``startup_s`` and ``startup_share`` for 1, 8 and 64 quanta per job.
    """
    from lsst.daf.butler import Butler

    from ..packages import default_package
    from ..simulate import SurveyConfig, build_repo
    from .registration import register_package

    with tempfile.TemporaryDirectory(prefix="meas_ml_startup_") as tmp:
        if repo is None:
            repo = Path(tmp) / "repo"
            build_repo(repo, SurveyConfig.tiny())
        repo = str(repo)
        butler = Butler.from_config(repo, writeable=True)
        _, run = register_package(butler, default_package("dia"), run="models/dia/startup-bench")
        refs = list(butler.query_datasets("dia_source_unstandardized", collections="MLSim/defaults"))
        del butler
        if len(refs) < 2:
            raise RuntimeError(f"{repo} has {len(refs)} DIA source tables; need at least 2")
        one = refs[0].dataId
        from ..demo import pipeline_path

        pipeline = str(pipeline_path("dia.yaml"))
        best: dict[str, float] = {}
        for i in range(repeats):
            base = [
                _tool("pipetask"),
                "run",
                "-b",
                repo,
                "-i",
                f"MLSim/defaults,{run}",
                "-p",
                pipeline,
                "--register-dataset-types",
            ]
            w1 = _timed(
                [
                    *base,
                    "-o",
                    f"u/bench/startup1_{i}",
                    "-d",
                    f"visit={one['visit']} AND detector={one['detector']}",
                ]
            )
            wn = _timed([*base, "-o", f"u/bench/startupN_{i}"])
            proc = subprocess.run(
                [sys.executable, "-c", _IMPORTS.format(family="dia")],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            fresh = json.loads(proc.stdout.strip().splitlines()[-1])
            for key, value in (("pipetask_1_s", w1), ("pipetask_n_s", wn), *fresh.items()):
                best[key] = min(best.get(key, float("inf")), value)
    n = len(refs)
    q = max((best["pipetask_n_s"] - best["pipetask_1_s"]) / (n - 1), 1e-3)
    s = best["pipetask_1_s"] - q
    return {
        **{k: round(v, 3) for k, v in best.items()},
        "n_quanta": n,
        "per_quantum_s": round(q, 3),
        "startup_s": round(s, 3),
        "startup_share": {str(k): round(startup_share(s, q, k), 3) for k in (1, 8, 64)},
    }
