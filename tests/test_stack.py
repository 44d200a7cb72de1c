"""meas_ml on the current stack: Python >= 3.12, no afw at import time, no deprecated API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lsst.meas.ml.images import PixelPlanes


def test_python_and_middleware_versions():
    from importlib.metadata import version

    assert sys.version_info >= (3, 12)
    assert version("lsst-images")
    assert tuple(int(p) for p in version("lsst-daf-butler").split(".")[:2]) >= (30, 2026)


def test_no_module_imports_afw_and_no_future_warnings():
    """Import every module with FutureWarning and DeprecationWarning from lsst modules as errors."""
    code = """
import importlib, pkgutil, sys, warnings
warnings.filterwarnings("error", category=FutureWarning, module="lsst")
warnings.filterwarnings("error", category=DeprecationWarning, module="lsst.meas.ml")
import lsst.meas.ml
names = [m.name for m in pkgutil.walk_packages(lsst.meas.ml.__path__, "lsst.meas.ml.")]
for name in names:
    importlib.import_module(name)
bad = [m for m in sys.modules if m.startswith("lsst.afw")]
assert not bad, bad
print(len(names), "modules")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "modules" in out.stdout


def test_visit_image_from_the_butler_reads_without_afw(tiny_repo):
    """Datasets are lsst.images types under the stack's storage classes."""
    import lsst.images as li
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(tiny_repo), collections="MLSim/defaults")
    storage = {d.name: d.storageClass_name for d in butler.registry.queryDatasetTypes()}
    assert storage["visit_image"] == "VisitImage" and storage["difference_image"] == "DifferenceImage"
    ref = butler.query_datasets("difference_image", explain=False)[0]
    diff = butler.get(ref)
    assert isinstance(diff, li.DifferenceImage)
    planes = PixelPlanes.from_image(diff)
    assert planes.image.shape == (diff.bbox.y.size, diff.bbox.x.size)
    assert planes.band == diff.band and 1.0 < planes.psf_fwhm_pixels() < 15.0
    with pytest.raises(Exception):  # a Butler refuses to hand it out as the afw type without afw
        butler.get(ref, storageClass="ExposureF")


def test_afw_typed_dataset_without_afw_is_one_clear_error(tmp_path):
    from lsst.daf.butler import Butler, DatasetType
    from lsst.meas.ml.butler import RepoConfigError, check_pipeline
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    root = tmp_path / "repo"
    build_repo(root, SurveyConfig.tiny())
    butler = Butler.from_config(str(root), writeable=True)
    butler.registry.registerDatasetType(
        DatasetType("calexp", ("instrument", "visit", "detector"), "ExposureF", universe=butler.dimensions)
    )
    pipelines = Path(__file__).resolve().parents[1] / "pipelines"
    import yaml

    n_tasks = len(yaml.safe_load((pipelines / "DemoPipeline.yaml").read_text())["tasks"])
    assert check_pipeline(butler, pipelines / "DemoPipeline.yaml") == n_tasks
    with pytest.raises(RepoConfigError, match="'calexp' is stored in this repository as ExposureF.*Ways out"):
        check_pipeline(butler, pipelines / "dia.yaml", ["classifyDiaSources:connections.visitImage=calexp"])
