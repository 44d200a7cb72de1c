"""Identifiers, labels and random streams shared by the parts of the simulated survey."""

import dataclasses
import zlib
from typing import Any

import numpy as np
from astropy.table import Table

from ..images import PixelPlanes

__all__ = [
    "ARTIFACT_KINDS",
    "DIA_LABELS",
    "OBJECT_ID_OFFSET",
    "REAL_LABELS",
    "SS_OBJECT_OFFSET",
    "TRACT_ID",
    "VisitDetectorProducts",
    "stage_rng",
]


#: The one tract of the simulated sky map.
TRACT_ID = 0
#: Truth object ``i`` has ``objectId = OBJECT_ID_OFFSET + i``.
OBJECT_ID_OFFSET = 1_000_000_000
#: Labels of DIA sources in the truth tables.
DIA_LABELS: tuple[str, ...] = ("transient", "variable", "asteroid", "artifact")
#: Kinds of artifact (``none`` for real sources).  ``residual`` is a
#: detection matched to no injection (an imperfect subtraction, a noise peak).
ARTIFACT_KINDS: tuple[str, ...] = ("none", "cosmic_ray", "dipole", "bad_column", "saturation", "residual")
REAL_LABELS = ("transient", "variable", "asteroid")
SS_OBJECT_OFFSET = 5_000_000


def stage_rng(seed: int, *tags: Any) -> np.random.Generator:
    """Return an independent generator per stage, stable whatever the order of the stages.

    Parameters
    ----------
    seed : `int`
        The survey seed.
    *tags : `~typing.Any`
        Names of the stage (joined as strings and hashed).

    Returns
    -------
    rng : `numpy.random.Generator`
        A generator seeded by ``seed`` and the tags.
    """
    key = zlib.crc32("/".join(str(t) for t in tags).encode())
    return np.random.default_rng([seed, key])


@dataclasses.dataclass
class VisitDetectorProducts:
    """Everything simulated for one (visit, detector)."""

    visit: int
    detector: int
    band: str
    mjd: float
    science: PixelPlanes
    template: PixelPlanes
    difference: PixelPlanes
    dia_source: Table
    truth: Table
