"""``make demo``: simulate a mini-survey, train the models, run the pipeline.

Steps, each reported with its wall time:

1. build (or reuse) the simulated survey repository (`lsst.meas.ml.simulate`);
2. for each model family, reuse the package registered under
   ``models/<family>/demo-<survey seed>`` or train one with the project's
   trainer on the survey's own labels and register it;
3. run ``pipetask run`` with ``pipelines/DemoPipeline.yaml`` into the
   output collection ``u/demo/ml`` (a second demo run replaces the
   previous output run in that chain);
4. print what was written, where, a few quality figures against the
   simulation's truth, and how to look at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .products import PRODUCTS, product_module

__all__ = ["DEMO_FAMILIES", "OUTPUT_COLLECTION", "INPUT_COLLECTION", "pipeline_path", "run_demo"]

#: Collection the pipeline outputs go to.
OUTPUT_COLLECTION = "u/demo/ml"
#: Chained collection the simulated survey is found in.
INPUT_COLLECTION = "MLSim/defaults"
#: Families the demo trains and runs (the products with ``in_demo``), each with a
#: ``lsst.meas.ml.<family>.demo`` module providing
#: ``train_demo_package(butler, collections, workdir) -> ModelPackage`` and
#: ``summarize(butler, collections) -> list[str]`` (and optionally
#: ``plot(butler, collections, outdir) -> list[str]``, PNGs written into
#: ``<repo>/plots``).
DEMO_FAMILIES: tuple[str, ...] = tuple(p.family for p in PRODUCTS if p.in_demo)


def pipeline_path(name: str = "DemoPipeline.yaml") -> Path:
    """Find a pipeline shipped in ``pipelines/`` (``$MEAS_ML_DIR`` or the source tree).

    Parameters
    ----------
    name : `str`, optional
        File name of the pipeline.

    Returns
    -------
    path : `pathlib.Path`
        Its path.

    Raises
    ------
    FileNotFoundError
        Neither place holds it.
    """
    candidates = []
    if os.environ.get("MEAS_ML_DIR"):
        candidates.append(Path(os.environ["MEAS_ML_DIR"]) / "pipelines" / name)
    candidates.append(Path(__file__).resolve().parents[4] / "pipelines" / name)
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"Pipeline {name} not found in {[str(c) for c in candidates]}; set MEAS_ML_DIR to the meas_ml "
        "source directory."
    )


def _say(message: str) -> None:
    print(message, flush=True)


def _survey_shape(repo: Path) -> str | None:
    """Return the shape of a complete simulated repository at ``repo`` (None if there is none)."""
    if not (repo / "butler.yaml").exists():
        return None
    from lsst.daf.butler import Butler

    try:
        butler = Butler.from_config(str(repo))
        # A repository simulated by an older meas_ml lacks newer products: rebuild it.
        for name in ("object", "ss_source"):
            if not butler.query_datasets(name, collections=INPUT_COLLECTION, explain=False):
                return None
        names = {d.name for d in butler.registry.queryDatasetTypes()}
        return "dp1" if "dia_source" in names else "drp"
    except Exception:
        return None


def _family_module(family: str) -> Any:
    return product_module(family, "demo")


#: Pipeline run on each repository shape.
#: The survey pipelines plus the DLA search over the spectra the demo ingests
#: (user-added data: not in DemoPipeline.yaml, which a repository without
#: spectra must be able to run).
PIPELINES: dict[str, str] = {"drp": "DemoPipelineWithSpectra.yaml", "dp1": "DP1PipelineWithSpectra.yaml"}


def run_demo(
    repo: str | os.PathLike, *, size: str = "default", fresh: bool = False, jobs: int = 1, shape: str = "drp"
) -> int:
    """Run the whole demo.

    Parameters
    ----------
    repo : path-like
        Repository to simulate into (reused when complete and of ``shape``).
    size : `str`, optional
        ``"default"`` or ``"tiny"`` survey.
    fresh : `bool`, optional
        Delete the repository first.
    jobs : `int`, optional
        Processes for ``pipetask run``.
    shape : `str`, optional
        ``"drp"`` or ``"dp1"`` repository shape.

    Returns
    -------
    status : `int`
        Process exit code (0 on success).
    """
    from .butler import open_repo
    from .butler.registration import find_package, register_package
    from .simulate import SurveyConfig, build_repo

    t_start = time.perf_counter()
    repo = Path(repo).resolve()
    config = SurveyConfig.tiny() if size == "tiny" else SurveyConfig.default()

    # 1. Survey.
    t0 = time.perf_counter()
    if fresh and repo.exists():
        _say(f"[demo] --fresh: removing {repo}")
        shutil.rmtree(repo)
    ready = _survey_shape(repo)
    if ready == shape:
        _say(f"[demo] Reusing the simulated survey already in {repo} (make clean, or --fresh, to rebuild).")
    else:
        if repo.exists():
            why = "incomplete" if ready is None else f"a {ready}-shaped repository, not {shape}"
            _say(f"[demo] {repo} is {why}; rebuilding it.")
            shutil.rmtree(repo)
        _say(f"[demo] Simulating the {size} mini-survey ({shape}-shaped) into {repo} ...")
        summary = build_repo(repo, config, shape=shape)
        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                _say(f"         {key}: {value}")
    _say(f"[demo] survey ready in {time.perf_counter() - t0:.1f} s")

    # 2. Models.
    butler = open_repo(repo, writeable=True)
    model_runs = []
    with tempfile.TemporaryDirectory(prefix="meas_ml_demo_") as workdir:
        for family in DEMO_FAMILIES:
            t0 = time.perf_counter()
            run = f"models/{family}/demo-seed{config.seed}"
            try:
                package = find_package(butler, family, run)
            except Exception as exc:  # a package this meas_ml refuses (e.g. written by an older one)
                _say(f"[demo] The {family} model registered in {run} cannot be used ({exc}).")
                _say("[demo] Starting again from a fresh repository.")
                del butler
                return run_demo(repo, size=size, fresh=True, jobs=jobs, shape=shape)
            if package is not None:
                _say(
                    f"[demo] Reusing {family} model {package.version} (sha256 {package.sha256[:12]}) in {run}"
                )
            else:
                _say(f"[demo] Training the {family} model on the simulated survey ...")
                package = _family_module(family).train_demo_package(butler, [INPUT_COLLECTION], workdir)
                register_package(butler, package, run=run)
                metrics = package.provenance.get("metrics", {})
                shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
                _say(f"[demo] registered {family} model in {run} ({shown})")
            model_runs.append(run)
            _say(f"[demo] {family} model ready in {time.perf_counter() - t0:.1f} s")

    # 3. pipetask run.
    t0 = time.perf_counter()
    pipeline = pipeline_path(PIPELINES[shape])
    from lsst.daf.butler import MissingCollectionError

    try:
        outputs_exist = bool(butler.collections.query(OUTPUT_COLLECTION))
    except MissingCollectionError:
        outputs_exist = False
    del butler
    cmd = [
        str(Path(sys.executable).with_name("pipetask")),
        # Without EUPS the stack warns that it cannot list package versions:
        # expected in a pip installation, so not shown.
        "--log-level",
        "lsst.utils.packages=ERROR",
        "run",
        "-b",
        str(repo),
        "-i",
        ",".join([INPUT_COLLECTION, *model_runs]),
        "-o",
        OUTPUT_COLLECTION,
        "-p",
        str(pipeline),
        "--register-dataset-types",
        "-j",
        str(jobs),
    ]
    if outputs_exist:
        _say(
            f"[demo] {OUTPUT_COLLECTION} exists: replacing its last run "
            "(--replace-run --prune-replaced purge)."
        )
        cmd += ["--replace-run", "--prune-replaced", "purge"]
    if not Path(cmd[0]).exists():
        cmd[0] = "pipetask"
    _say("[demo] " + " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("MEAS_ML_DIR", str(pipeline.parents[1]))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        _say(f"[demo] pipetask run failed with exit code {proc.returncode}")
        return proc.returncode
    _say(f"[demo] pipetask run finished in {time.perf_counter() - t0:.1f} s")

    # 4. Summary.
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(repo))
    _say("")
    _say(f"=== meas_ml demo: outputs in {repo}, collection {OUTPUT_COLLECTION} ===")
    for dataset_type in sorted(butler.registry.queryDatasetTypes("ml_*"), key=lambda d: d.name):
        if dataset_type.name.startswith("ml_model_"):
            continue
        refs = butler.query_datasets(dataset_type, collections=OUTPUT_COLLECTION, explain=False)
        if refs:
            uri = butler.getURI(refs[0])
            _say(
                f"  {dataset_type.name} ({dataset_type.storageClass_name}, per "
                f"{', '.join(dataset_type.dimensions.required)}): {len(refs)} dataset(s), e.g. {uri.ospath}"
            )
    plots = Path(repo) / "plots"
    for family in DEMO_FAMILIES:
        module = _family_module(family)
        for line in module.summarize(butler, OUTPUT_COLLECTION):
            _say(f"  {line}")
        if hasattr(module, "plot"):  # optional: figures of the product against the simulation's truth
            plots.mkdir(exist_ok=True)
            for path in module.plot(butler, OUTPUT_COLLECTION, str(plots)):
                _say(f"  plot: {path}")
    _say("")
    _say("Look at them with:")
    bindir = Path(sys.executable).parent
    _say(f"  {bindir / 'butler'} query-datasets {repo} --collections {OUTPUT_COLLECTION} 'ml_*'")
    _say(
        f'  {sys.executable} -c "from lsst.daf.butler import Butler; '
        f"b = Butler('{repo}', collections='{OUTPUT_COLLECTION}');"
        " print(b.get(b.query_datasets('ml_photoz')[0]))\""
    )
    _say(f"[demo] total {time.perf_counter() - t_start:.1f} s")
    return 0
