"""``MLSim``: the instrument of the simulated survey.

A small `lsst.pipe.base.Instrument` so that tools which import an
instrument by the ``class_name`` of its dimension record (``butler
register-instrument``, ``Instrument.from_string``) find one.  It has no
camera geometry or raw data: `register` inserts its instrument, filter and
detector records.
"""

from __future__ import annotations

from typing import Any

from lsst.pipe.base import Instrument

from .config import ALL_BANDS

__all__ = ["INSTRUMENT_NAME", "MLSim", "physical_filter_name"]

#: Name of the simulated instrument (the ``instrument`` dimension value).
INSTRUMENT_NAME = "MLSim"

#: Largest visit id + 1 the instrument can produce (``YYYYMMDD * 100000 + seq``).
_VISIT_MAX = 2**43


def physical_filter_name(band: str) -> str:
    """Return the physical filter of a band: ``MLSim-<band>``.

    Parameters
    ----------
    band : `str`
        The band.

    Returns
    -------
    physical_filter : `str`
        The physical filter name.
    """
    return f"{INSTRUMENT_NAME}-{band}"


class MLSim(Instrument):
    """The simulated instrument: ``n_detectors`` science detectors, filters ugrizy.

    Parameters
    ----------
    n_detectors : `int`
        Number of detectors (ids ``0 .. n_detectors - 1``).
    collection_prefix : `str`, optional
        Prefix for collection names (default the instrument name).
    """

    def __init__(self, n_detectors: int = 2, collection_prefix: str | None = None) -> None:
        super().__init__(collection_prefix=collection_prefix)
        self.n_detectors = int(n_detectors)

    @classmethod
    def getName(cls) -> str:
        return INSTRUMENT_NAME

    def instrument_record(self) -> dict[str, Any]:
        """Fields of the ``instrument`` dimension record."""
        return {
            "name": INSTRUMENT_NAME,
            "class_name": f"{type(self).__module__}.{type(self).__qualname__}",
            "detector_max": self.n_detectors,
            "visit_max": _VISIT_MAX,
            "exposure_max": _VISIT_MAX,
            "visit_system": 0,
        }

    def filter_records(self) -> list[dict[str, Any]]:
        """Fields of the ``physical_filter`` records (which also create the ``band`` values)."""
        return [
            {"instrument": INSTRUMENT_NAME, "name": physical_filter_name(b), "band": b} for b in ALL_BANDS
        ]

    def detector_records(self) -> list[dict[str, Any]]:
        """Fields of the ``detector`` records."""
        return [
            {
                "instrument": INSTRUMENT_NAME,
                "id": d,
                "full_name": f"R00_S{d // 3}{d % 3}",
                "name_in_raft": f"S{d // 3}{d % 3}",
                "raft": "R00",
                "purpose": "SCIENCE",
            }
            for d in range(self.n_detectors)
        ]

    def register(self, registry: Any, *, update: bool = False) -> None:
        """Insert the instrument, physical filter and detector records.

        Parameters
        ----------
        registry : `~typing.Any`
            The Butler registry (`lsst.daf.butler.Registry`).
        update : `bool`, optional
            Update records that exist with other values (else that is an
            error).
        """
        with registry.transaction():
            registry.syncDimensionData("instrument", self.instrument_record(), update=update)
            for record in self.filter_records():
                registry.syncDimensionData("physical_filter", record, update=update)
            for record in self.detector_records():
                registry.syncDimensionData("detector", record, update=update)

    def getRawFormatter(self, dataId: Any) -> Any:
        """Refuse to return a raw formatter: the simulated survey has no raw data.

        Parameters
        ----------
        dataId : `~typing.Any`
            The data ID of the raw (ignored).

        Returns
        -------
        formatter : `~typing.Any`
            Never returned.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(
            "MLSim has no raw data: the simulated survey writes calibrated visit images directly."
        )
