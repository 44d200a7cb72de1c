"""Connection templates: current Rubin names by default, older ones from config/legacyNames.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsst.meas.ml.butler.names import CURRENT_NAMES, LEGACY_NAMES

CONFIG = Path(__file__).resolve().parents[1] / "config" / "legacyNames.py"


def _tasks():
    from lsst.meas.ml.dia.task import ClassifyDiaSourcesTask
    from lsst.meas.ml.photoz.task import EstimatePhotozTask

    return [ClassifyDiaSourcesTask, EstimatePhotozTask]


@pytest.mark.parametrize("index", [0, 1])
def test_default_and_legacy_input_names(index):
    task_class = _tasks()[index]
    config = task_class.ConfigClass()
    connections = task_class.ConfigClass.ConnectionsClass(config=config)
    names = {getattr(connections, c).name for c in connections.inputs}
    used = {key for key, value in CURRENT_NAMES.items() if value in names}
    assert used, f"{task_class.__name__} reads none of the templated inputs"

    config = task_class.ConfigClass()
    config.load(str(CONFIG))
    connections = task_class.ConfigClass.ConnectionsClass(config=config)
    legacy = {getattr(connections, c).name for c in connections.inputs}
    assert {LEGACY_NAMES[key] for key in used} <= legacy
    assert not {CURRENT_NAMES[key] for key in used} & legacy
