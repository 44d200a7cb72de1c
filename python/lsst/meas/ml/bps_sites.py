"""Parsl sites for ``bps`` whose worker heartbeat comes from the submit config.

A Slurm job cancelled by the scheduler (walltime, preemption, ``scancel``)
ends in the state ``CANCELLED``, which Parsl counts as ended, not failed: it
learns that the job's tasks are lost only when the workers miss their
heartbeats for ``heartbeat_threshold`` seconds (120 by default).  The stock
`lsst.ctrl.bps.parsl.sites.Slurm` takes no executor options from the config,
so `Slurm` here reads two more site keys::

    site:
      slurm:
        class: lsst.meas.ml.bps_sites.Slurm
        heartbeat_period: 10      # seconds between heartbeats (Parsl: 30)
        heartbeat_threshold: 60   # seconds of silence before a block is lost (Parsl: 120)

Keep the threshold several periods long, or busy workers are declared lost.
See doc/datacenter.md ("A Slurm job killed by the scheduler").
"""

from __future__ import annotations

from typing import Any

from lsst.ctrl.bps.parsl.configuration import get_bps_config_value
from lsst.ctrl.bps.parsl.sites import Slurm as _Slurm

__all__ = ["Slurm"]


class Slurm(_Slurm):
    """`lsst.ctrl.bps.parsl.sites.Slurm` with ``heartbeat_period`` and ``heartbeat_threshold``.

    Parameters
    ----------
    *args, **kwargs
        As for `lsst.ctrl.bps.parsl.sites.Slurm`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_period = get_bps_config_value(self.site, "heartbeat_period", int, 30)
        self.heartbeat_threshold = get_bps_config_value(self.site, "heartbeat_threshold", int, 120)
        if self.heartbeat_period <= 0 or self.heartbeat_threshold <= self.heartbeat_period:
            raise ValueError(
                f"site heartbeat_threshold ({self.heartbeat_threshold} s) must exceed heartbeat_period "
                f"({self.heartbeat_period} s), which must be positive."
            )

    def get_executors(self) -> list[Any]:
        """Return the one Slurm executor, with the configured heartbeat.

        Returns
        -------
        executors : `list`
            One ``HighThroughputExecutor`` labelled ``slurm``.
        """
        return [
            self.make_executor(
                "slurm",
                executor_options={
                    "heartbeat_period": self.heartbeat_period,
                    "heartbeat_threshold": self.heartbeat_threshold,
                },
            )
        ]
