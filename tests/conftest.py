"""Shared fixtures for the meas_ml tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

#: "reduced" (default, what `make test` runs: slow checks at reduced size),
#: "full" (`make test-full`), or "fast" (what `scons` runs under EUPS: the
#: tests marked slow are skipped).
TEST_SCALE = os.environ.get("MEAS_ML_TEST_SCALE", "reduced")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_SCALE != "fast":
        return
    skip = pytest.mark.skip(reason="MEAS_ML_TEST_SCALE=fast (scons): slow end-to-end check skipped; "
                            "`make test` runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is not present (../shared/data beside the checkout)")
    return path


@pytest.fixture
def simple_wcs():
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [50.0, 40.0]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return wcs


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """A tiny simulated-survey repository, built once per test session.

    Tests that write to it use their own output collections.
    """
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    root = tmp_path_factory.mktemp("tiny") / "repo"
    build_repo(root, SurveyConfig.tiny())
    return root
