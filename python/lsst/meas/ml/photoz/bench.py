"""``meas-ml bench photoz-memory``: peak memory and throughput of the streaming photo-z prediction.

For each size, a synthetic input Parquet file with the model's flux columns
(`lsst.meas.ml.simulate.photometry.make_photometric_catalog`) is written, and
the prediction runs in a fresh child process (``python -m
lsst.meas.ml.photoz.bench --child ...``), so that its peak resident memory
is its own: the parent reads it with `os.wait4` (the ``ru_maxrss`` that
``getrusage(RUSAGE_CHILDREN)`` would give for that one child).  Modes:

``floor``
    Imports and loads the package, predicts nothing: the memory every mode
    starts from (Python, torch, the Science Pipelines imports).
``stream``
    ``meas-ml predict photoz`` as users run it (streamed in chunks).
``whole``
    The previous whole-table path, the baseline: `read_table` of the whole
    file, one `predict_photoz` call, `write_table`.

Throughput is rows per second of the command's work (from before reading
the input to after writing the output; the imports are not counted).  The
figures that matter are the ratio of the streaming peaks of the largest and
smallest sizes (close to 1: memory independent of the row count) and the
ratio of streaming to whole-table throughput at the same size (about 1 or
more).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["format_report", "run_child", "run_memory_benchmark", "write_synthetic_input"]


def write_synthetic_input(path: str, rows: int, *, model: str | None = None, seed: int = 0) -> str:
    """Write ``rows`` synthetic galaxies with the flux columns of ``model`` (default: the shipped package).

    The file is written by `lsst.meas.ml.photoz.tables.write_table` (one
    row group up to 1,048,576 rows, as pyarrow writes by default); it also
    holds ``redshift``, a column the prediction does not read.

    Parameters
    ----------
    path : `str`
        Path of the Parquet file to write.
    rows : `int`
        Number of synthetic galaxies.
    model : `str` or `None`, optional
        Model package to take the flux columns (and E(B-V) column, filled
        with 0.02) from; `None` for the shipped default package.
    seed : `int`, optional
        Seed of the synthetic catalogue.

    Returns
    -------
    path : `str`
        The path written, as `~lsst.meas.ml.photoz.tables.write_table`
        returns it.
    """
    import numpy as np

    from ..packages import ModelPackage
    from ..simulate.photometry import make_photometric_catalog
    from .predict import columns_for_package, default_package
    from .tables import write_table

    package = ModelPackage.load(model) if model else default_package()
    columns = columns_for_package(package)
    table = make_photometric_catalog(
        rows, seed=seed, bands=columns.bands, flux_template=columns.flux_template,
        flux_err_template=columns.flux_err_template,
    )
    if columns.ebv_column:
        table[columns.ebv_column] = np.full(rows, 0.02)
    return write_table(table, path)


def _child(argv: Sequence[str]) -> int:
    """Run one measured prediction (``--child MODE INPUT OUT FORMAT CHUNK MODEL THREADS``)."""
    mode, input_path, out, pdf_format, chunk, model, threads = argv
    import torch

    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    from ..cli import main
    from ..engine import InferenceConfig, InferenceEngine
    from ..packages import ModelPackage
    from .predict import default_package, predict_photoz
    from .tables import read_table, write_table

    package = ModelPackage.load(model) if model != "-" else default_package()
    t0 = time.perf_counter()
    rows = 0
    if mode == "stream":
        args = ["predict", "photoz", "--input", input_path, "--out", out, "--pdf-format", pdf_format,
                "--chunk-size", chunk, "--device", "cpu"]
        if model != "-":
            args += ["--model", model]
        rc = main(args)
        if rc:
            return rc
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(out).metadata.num_rows
    elif mode == "whole":
        config = InferenceConfig()
        config.device = "cpu"  # as the streaming run
        table = read_table(input_path)
        engine = InferenceEngine(config)
        catalog = predict_photoz(package, table, engine=engine, pdf_format=pdf_format)
        write_table(catalog, out)
        rows = len(catalog)
    elif mode != "floor":
        raise SystemExit(f"unknown mode {mode!r}")
    elapsed = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"mode": mode, "rows": rows, "seconds": elapsed, "self_maxrss_kb": usage.ru_maxrss}))
    return 0


def run_child(
    mode: str, input_path: str, out: str, *, pdf_format: str = "full", chunk_size: int = 65536,
    model: str | None = None, threads: int = 0,
) -> dict[str, Any]:
    """Run one mode in a fresh child process; its figures, with ``peak_mb`` from `os.wait4`.

    Parameters
    ----------
    mode : `str`
        ``"floor"``, ``"stream"`` or ``"whole"``.
    input_path : `str`
        Input Parquet file.
    out : `str`
        Output file of the prediction (not written by ``floor``).
    pdf_format : `str`, optional
        PDF format of the prediction (``"full"``, ``"quantiles"`` or
        ``"both"``).
    chunk_size : `int`, optional
        Rows per chunk of the streaming prediction.
    model : `str` or `None`, optional
        Model package; `None` for the shipped default package.
    threads : `int`, optional
        Torch threads of the child; 0 leaves torch's default.

    Returns
    -------
    figures : `dict`
        ``mode``, ``rows``, ``seconds`` (the work, without the imports),
        ``rows_per_s``, ``peak_mb`` (peak resident set of the child, MiB)
        and ``wall_s`` (the whole child).

    Raises
    ------
    RuntimeError
        Raised if the child exits with a non-zero status.
    """
    cmd = [sys.executable, "-m", "lsst.meas.ml.photoz.bench", "--child", mode, input_path, out, pdf_format,
           str(chunk_size), model or "-", str(threads)]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        stdout.seek(0)
        stderr.seek(0)
        text, errors = stdout.read().decode(), stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {mode} {input_path} failed ({proc.returncode}):\n{errors[-4000:]}")
    figures = json.loads(text.strip().splitlines()[-1])
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1024.0 if sys.platform != "darwin" else 1.0
    figures["peak_mb"] = usage.ru_maxrss * scale / 2**20
    figures["wall_s"] = wall
    figures["rows_per_s"] = figures["rows"] / figures["seconds"] if figures["rows"] else None
    return figures


def run_memory_benchmark(
    rows: Sequence[int] = (100_000, 1_000_000),
    *,
    pdf_format: str = "full",
    chunk_size: int = 65536,
    model: str | None = None,
    baseline_max_rows: int = 100_000,
    workdir: str | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """Measure the streaming prediction at each size, and the whole-table baseline up to a size.

    Parameters
    ----------
    rows : `~collections.abc.Sequence` [`int`], optional
        Row counts to measure (deduplicated and sorted); the ``floor`` run
        uses the smallest.
    pdf_format : `str`, optional
        PDF format of the prediction (``"full"``, ``"quantiles"`` or
        ``"both"``).
    chunk_size : `int`, optional
        Rows per chunk of the streaming prediction.
    model : `str` or `None`, optional
        Model package; `None` for the shipped default package.
    baseline_max_rows : `int`, optional
        Largest row count at which the whole-table baseline also runs.
    workdir : `str` or `None`, optional
        Directory for the temporary files; `None` for the system default.
    threads : `int`, optional
        Torch threads of each child; 0 leaves torch's default.

    Returns
    -------
    report : `dict`
        ``runs`` (one `run_child` result per child), ``floor_mb``,
        ``peak_ratio`` (streaming peak of the largest size over that of the
        smallest) and ``throughput_ratio`` (streaming over whole-table rows/s
        at the largest size that has both), with the settings.
    """
    sizes = sorted({int(n) for n in rows})
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        common = {"pdf_format": pdf_format, "chunk_size": chunk_size, "model": model, "threads": threads}
        first = os.path.join(tmp, f"in_{sizes[0]}.parquet")
        write_synthetic_input(first, sizes[0], model=model)
        runs.append(run_child("floor", first, os.path.join(tmp, "floor.parquet"), **common))
        for n in sizes:
            path = os.path.join(tmp, f"in_{n}.parquet")
            if not os.path.exists(path):
                write_synthetic_input(path, n, model=model)
            runs.append(dict(run_child("stream", path, os.path.join(tmp, f"stream_{n}.parquet"), **common)))
            if n <= baseline_max_rows:
                runs.append(run_child("whole", path, os.path.join(tmp, f"whole_{n}.parquet"), **common))
            os.unlink(path)
    stream = {r["rows"]: r for r in runs if r["mode"] == "stream"}
    whole = {r["rows"]: r for r in runs if r["mode"] == "whole"}
    report: dict[str, Any] = {
        "pdf_format": pdf_format, "chunk_size": chunk_size, "model": model or "default",
        "floor_mb": runs[0]["peak_mb"], "runs": runs, "peak_ratio": None, "throughput_ratio": None,
    }
    if len(stream) > 1:
        report["peak_ratio"] = stream[max(stream)]["peak_mb"] / stream[min(stream)]["peak_mb"]
        report["peak_ratio_rows"] = [min(stream), max(stream)]
    both = sorted(set(stream) & set(whole))
    if both:
        n = both[-1]
        report["throughput_ratio"] = stream[n]["rows_per_s"] / whole[n]["rows_per_s"]
        report["peak_saving"] = whole[n]["peak_mb"] / stream[n]["peak_mb"]
        report["throughput_ratio_rows"] = n
    return report


def format_report(report: dict[str, Any]) -> str:
    """Format the benchmark's table and ratios as text.

    Parameters
    ----------
    report : `dict`
        A report from `run_memory_benchmark`.

    Returns
    -------
    text : `str`
        The table of runs and the ratios, one line each.
    """
    lines = [
        f"photo-z prediction memory (pdf format {report['pdf_format']}, chunk {report['chunk_size']} rows, "
        f"model {report['model']})",
        f"{'mode':<8}{'rows':>10}{'peak MB':>10}{'s':>9}{'rows/s':>10}",
    ]
    for r in report["runs"]:
        rate = f"{r['rows_per_s']:.0f}" if r["rows_per_s"] else "-"
        rows = str(r["rows"]) if r["mode"] != "floor" else "-"
        lines.append(f"{r['mode']:<8}{rows:>10}{r['peak_mb']:>10.0f}{r['seconds']:>9.1f}{rate:>10}")
    lines.append("floor: imports and the package only (every run includes it).")
    if report.get("peak_ratio") is not None:
        a, b = report["peak_ratio_rows"]
        lines.append(f"streaming peak ratio, {b} vs {a} rows: {report['peak_ratio']:.2f}")
    if report.get("throughput_ratio") is not None:
        n = report["throughput_ratio_rows"]
        ratio = report["throughput_ratio"]
        lines.append(f"throughput ratio streaming / whole-table at {n} rows: {ratio:.2f}")
        lines.append(f"peak ratio whole-table / streaming at {n} rows: {report['peak_saving']:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lsst.meas.ml.photoz.bench`` (``--child`` runs one measured child).

    Parameters
    ----------
    argv : `~collections.abc.Sequence` [`str`] or `None`, optional
        Command-line arguments; `None` for ``sys.argv[1:]``.

    Returns
    -------
    rc : `int`
        Exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m lsst.meas.ml.photoz.bench")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--pdf-format", choices=("full", "quantiles", "both"), default="full")
    args = parser.parse_args(argv)
    print(format_report(run_memory_benchmark(args.rows, pdf_format=args.pdf_format)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
