"""What a full data release (or a night) costs: measured throughputs turned into hours.

Inputs are measurements, each with the command that reproduces it
(``doc/cost_inputs.json``): objects per second per CPU core and per GPU for
every task, and the bytes a task must read per object (its I/O floor).  The
volumes are the survey's: about 2x10^10 galaxies in a data release (photo-z,
morphology, embeddings), 10^7 DIA sources a night, 6x10^6 asteroids.  For
each task `cost_table` gives the CPU-hours, the GPU-hours, the wall time on a
given number of cores or GPUs, and the bytes read against the I/O floor's
wall time at a given aggregate bandwidth, so the slower of compute and I/O
shows.

``meas-ml cost --figures doc/cost_inputs.json [--cores N] [--gpus N]
[--bandwidth-gbs B] [--markdown]`` prints the table.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import MeasMlUserError

__all__ = ["CostFiguresError", "TaskFigures", "cost_table", "format_markdown", "read_figures"]


class CostFiguresError(MeasMlUserError, ValueError):
    """The cost inputs file is malformed; the message names the entry."""


@dataclasses.dataclass(frozen=True)
class TaskFigures:
    """Measured figures of one task.

    Attributes
    ----------
    task : `str`
        Task or product name.
    unit : `str`
        What is counted, plural (``galaxies``, ``DIA sources``, ...).
    volume : `float`
        Objects to process (per data release, or per night for alerts).
    per : `str`
        ``"data release"`` or ``"night"``.
    cpu_per_core_per_s : `float`
        Objects per second per CPU core (measured).
    gpu_per_s : `float` or `None`
        Objects per second per GPU (measured), None when not measured.
    bytes_per_object : `float`
        Bytes read per object by the task (I/O floor).
    command : `str`
        Command that measures ``cpu_per_core_per_s`` (and the GPU figure).
    notes : `str`
        Machine, date and conditions of the measurement.
    """

    task: str
    unit: str
    volume: float
    per: str
    cpu_per_core_per_s: float
    gpu_per_s: float | None
    bytes_per_object: float
    command: str
    notes: str = ""


def read_figures(path: str | os.PathLike) -> list[TaskFigures]:
    """Read measured task figures from a JSON file.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        JSON object ``{"tasks": [{...}, ...]}`` with the fields of `TaskFigures`.

    Returns
    -------
    figures : `list` [`TaskFigures`]
        One entry per task.

    Raises
    ------
    CostFiguresError
        A field is missing, unknown or not a positive number where one is needed.
    """
    with open(path) as fh:
        data = json.load(fh)
    fields = {f.name for f in dataclasses.fields(TaskFigures)}
    out = []
    for i, entry in enumerate(data.get("tasks", [])):
        name = entry.get("task", f"#{i}")
        unknown = set(entry) - fields
        missing = {f.name for f in dataclasses.fields(TaskFigures) if f.default is dataclasses.MISSING} - set(
            entry
        )
        if unknown or missing:
            raise CostFiguresError(
                f"{path}: task {name!r}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
            )
        for key in ("volume", "cpu_per_core_per_s", "bytes_per_object"):
            if not isinstance(entry[key], (int, float)) or entry[key] <= 0:
                raise CostFiguresError(
                    f"{path}: task {name!r}: {key} must be a positive number, not {entry[key]!r}"
                )
        gpu = entry.get("gpu_per_s")
        if gpu is not None and (not isinstance(gpu, (int, float)) or gpu <= 0):
            raise CostFiguresError(f"{path}: task {name!r}: gpu_per_s must be a positive number or null")
        out.append(TaskFigures(**entry))
    if not out:
        raise CostFiguresError(f"{path} lists no tasks")
    return out


def cost_table(
    figures: Sequence[TaskFigures], *, cores: int = 1000, gpus: int = 10, bandwidth_gbs: float = 10.0
) -> list[dict[str, Any]]:
    """Turn throughputs into hours for each task.

    Parameters
    ----------
    figures : sequence of `TaskFigures`
        Measured figures.
    cores : `int`, optional
        CPU cores the centre gives the work (for the wall time).
    gpus : `int`, optional
        GPUs it gives (for the GPU wall time).
    bandwidth_gbs : `float`, optional
        Aggregate read bandwidth in GB/s (for the I/O floor's wall time).

    Returns
    -------
    rows : `list` [`dict`]
        Per task: ``cpu_hours``, ``cpu_wall_hours`` (on ``cores``),
        ``gpu_hours`` and ``gpu_wall_hours`` (on ``gpus``; None when no GPU
        figure), ``bytes_read``, ``io_floor_hours`` (at ``bandwidth_gbs``) and
        ``bound`` (``"compute"`` or ``"I/O"`` for the CPU run).
    """
    rows = []
    for f in figures:
        cpu_hours = f.volume / f.cpu_per_core_per_s / 3600.0
        gpu_hours = f.volume / f.gpu_per_s / 3600.0 if f.gpu_per_s else None
        bytes_read = f.volume * f.bytes_per_object
        io_hours = bytes_read / (bandwidth_gbs * 1e9) / 3600.0
        cpu_wall = cpu_hours / cores
        rows.append(
            {
                "task": f.task,
                "unit": f.unit,
                "volume": f.volume,
                "per": f.per,
                "cpu_per_core_per_s": f.cpu_per_core_per_s,
                "gpu_per_s": f.gpu_per_s,
                "cpu_hours": cpu_hours,
                "cpu_wall_hours": cpu_wall,
                "gpu_hours": gpu_hours,
                "gpu_wall_hours": gpu_hours / gpus if gpu_hours is not None else None,
                "bytes_per_object": f.bytes_per_object,
                "bytes_read": bytes_read,
                "io_floor_hours": io_hours,
                "bound": "I/O" if io_hours > cpu_wall else "compute",
                "command": f.command,
            }
        )
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "not measured"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} EB"


def format_markdown(rows: Sequence[Mapping[str, Any]], *, cores: int, gpus: int, bandwidth_gbs: float) -> str:
    """Format `cost_table` rows as a Markdown table.

    Parameters
    ----------
    rows : sequence of `dict`
        From `cost_table`.
    cores, gpus : `int`
        The resources the wall times assume.
    bandwidth_gbs : `float`
        The read bandwidth the I/O floor assumes.

    Returns
    -------
    text : `str`
        The table and the command of each input.
    """
    lines = [
        f"| task | volume | per core /s | per GPU /s | CPU-hours | wall on {cores} cores (h) | GPU-hours | "
        f"wall on {gpus} GPUs (h) | bytes/object | read | I/O floor at {bandwidth_gbs:g} GB/s (h) | bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['volume']:.3g} {r['unit']} / {r['per']} | "
            f"{_fmt(r['cpu_per_core_per_s'])} | "
            f"{_fmt(r['gpu_per_s'])} | {_fmt(r['cpu_hours'])} | {_fmt(r['cpu_wall_hours'])} | "
            f"{_fmt(r['gpu_hours'])} | {_fmt(r['gpu_wall_hours'])} | {_bytes(r['bytes_per_object'])} | "
            f"{_bytes(r['bytes_read'])} | {_fmt(r['io_floor_hours'])} | {r['bound']} |"
        )
    lines.append("")
    for r in rows:
        lines.append(f"* {r['task']}: `{r['command']}`")
    return "\n".join(lines)
