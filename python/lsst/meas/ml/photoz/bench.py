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
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "format_hats_report",
    "format_report",
    "run_child",
    "run_hats_benchmark",
    "run_memory_benchmark",
    "write_synthetic_hats",
    "write_synthetic_input",
]


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
        rows,
        seed=seed,
        bands=columns.bands,
        flux_template=columns.flux_template,
        flux_err_template=columns.flux_err_template,
    )
    if columns.ebv_column:
        table[columns.ebv_column] = np.full(rows, 0.02)
    return write_table(table, path)


def _child(argv: Sequence[str]) -> int:
    """Run one measured prediction (``--child MODE INPUT OUT FORMAT CHUNK MODEL THREADS [DEVICE]``)."""
    mode, input_path, out, pdf_format, chunk, model, threads = argv[:7]
    device = argv[7] if len(argv) > 7 else "cpu"
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
        args = [
            "predict",
            "photoz",
            "--input",
            input_path,
            "--out",
            out,
            "--pdf-format",
            pdf_format,
            "--chunk-size",
            chunk,
            "--device",
            device,
        ]
        if model != "-":
            args += ["--model", model]
        rc = main(args)
        if rc:
            return rc
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(out).metadata.num_rows
    elif mode == "whole":
        config = InferenceConfig()
        config.device = device  # as the streaming run
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
    mode: str,
    input_path: str,
    out: str,
    *,
    pdf_format: str = "full",
    chunk_size: int = 65536,
    model: str | None = None,
    threads: int = 0,
    device: str = "cpu",
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
    device : `str`, optional
        Torch device of the prediction (``"cpu"``, ``"cuda"``, ``"auto"``).

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
    cmd = [
        sys.executable,
        "-m",
        "lsst.meas.ml.photoz.bench",
        "--child",
        mode,
        input_path,
        out,
        pdf_format,
        str(chunk_size),
        model or "-",
        str(threads),
        device,
    ]
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
    device: str = "cpu",
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
    device : `str`, optional
        Torch device of every child's prediction (the streaming run and the
        whole-table baseline alike).

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
        common = {
            "pdf_format": pdf_format,
            "chunk_size": chunk_size,
            "model": model,
            "threads": threads,
            "device": device,
        }
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
        "pdf_format": pdf_format,
        "chunk_size": chunk_size,
        "model": model or "default",
        "device": device,
        "floor_mb": runs[0]["peak_mb"],
        "runs": runs,
        "peak_ratio": None,
        "throughput_ratio": None,
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
        f"model {report['model']}, device {report.get('device', 'cpu')})",
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


# ----------------------------------------------------------------------
# ``meas-ml bench photoz-hats``: the HATS prediction (lsdb + Dask) against the single-process file path


def write_synthetic_hats(
    directory: str,
    rows: int,
    *,
    partition_rows: int = 20_000,
    model: str | None = None,
    seed: int = 0,
) -> tuple[str, str]:
    """Write ``rows`` synthetic galaxies as a Parquet file and as a HATS catalog built by ``hats-import``.

    The galaxies of `write_synthetic_input` get ``ra`` and ``dec`` uniform
    on the sphere within 150 < ra < 160 deg, -5 < dec < 5 deg; ``hats-import``
    (a local Dask client with one in-process worker) partitions them into
    HEALPix pixels of at most ``partition_rows`` rows (orders up to 8).

    Parameters
    ----------
    directory : `str`
        Directory to write ``objects.parquet`` and the ``objects_hats``
        catalog into.
    rows : `int`
        Number of galaxies.
    partition_rows : `int`, optional
        Most rows per HATS partition (``hats-import``'s ``pixel_threshold``).
    model : `str` or `None`, optional
        Model package to take the columns from; `None` for the shipped one.
    seed : `int`, optional
        Seed of the catalogue and of the positions.

    Returns
    -------
    parquet : `str`
        The Parquet file (the input of the single-process path).
    hats_path : `str`
        The HATS catalog, holding the same rows and columns plus the
        coordinates.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    parquet = write_synthetic_input(os.path.join(directory, "objects.parquet"), rows, model=model, seed=seed)
    rng = np.random.default_rng(seed + 1)
    ra = rng.uniform(150.0, 160.0, rows)
    sin_dec = rng.uniform(np.sin(np.radians(-5.0)), np.sin(np.radians(5.0)), rows)
    table = pq.read_table(parquet)
    dec = np.degrees(np.arcsin(sin_dec))
    table = table.append_column("ra", pa.array(ra)).append_column("dec", pa.array(dec))
    pq.write_table(table, parquet)
    del table
    with Client(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    ) as client:
        args = ImportArguments(
            output_artifact_name="objects_hats",
            input_file_list=[parquet],
            file_reader="parquet",
            ra_column="ra",
            dec_column="dec",
            output_path=directory,
            pixel_threshold=int(partition_rows),
            highest_healpix_order=8,
            progress_bar=False,
            resume=False,
            tmp_dir=os.path.join(directory, "hats_import_tmp"),
        )
        pipeline_with_client(args, client)
    return parquet, os.path.join(directory, "objects_hats")


def _peak_rss_mb() -> float:
    """Return the peak resident memory of this process in MiB (run on each Dask worker)."""
    scale = 1024.0 if sys.platform != "darwin" else 1.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _cpu_seconds() -> float:
    """Return the CPU time (user and system, all threads) this process has used, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_hats_benchmark(
    rows: int = 200_000,
    *,
    workers: Sequence[int] = (1, 2),
    partition_rows: int = 20_000,
    chunk_size: int = 32768,
    threads: int = 1,
    model: str | None = None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Measure objects/s of the HATS prediction with Dask workers and of the single-process file path.

    One process, one catalog: the ``file`` baseline is
    `~lsst.meas.ml.photoz.predict.predict_photoz_file` on the Parquet file
    (what ``meas-ml predict photoz --input`` runs) with torch on
    ``threads`` threads; ``hats`` runs
    `~lsst.meas.ml.photoz.hats.predict_photoz_hats` on the HATS catalog of
    the same rows, in this process (``workers`` 0, Dask's synchronous
    scheduler) and on a local cluster of each size in ``workers`` (one
    thread each, torch on ``threads`` threads), started and warmed (the
    worker processes import the package) before the clock starts.  The
    timed work of every mode is reading, predicting and writing.

    Parameters
    ----------
    rows : `int`, optional
        Galaxies in the catalog.
    workers : `~collections.abc.Sequence` [`int`], optional
        Local cluster sizes to measure.
    partition_rows : `int`, optional
        Most rows per HATS partition.
    chunk_size : `int`, optional
        Rows per prediction chunk (both paths).
    threads : `int`, optional
        CPU threads of torch in the baseline and in each worker.
    model : `str` or `None`, optional
        Model package; `None` for the shipped one.
    workdir : `str` or `None`, optional
        Directory for the temporary files; `None` for the system default.

    Returns
    -------
    report : `dict`
        ``runs`` (``mode``, ``workers``, ``rows``, ``seconds``,
        ``rows_per_s``, ``ratio`` to the file baseline, ``cpu_s`` (CPU
        time of this process and of the workers during the run),
        ``rows_per_cpu_s`` and ``cpu_ratio`` (the same ratio per CPU
        second: what a machine shared with other work still measures), and
        for clusters ``startup_s``, ``package_loads``,
        ``partitions_per_worker``, ``cpu_s_per_worker`` and
        ``peak_rss_mb_per_worker``),
        ``partitions``, ``max_abs_diff_mean`` (largest difference of
        ``photoz_mean`` between the HATS and file outputs, joined by
        ``objectId``) and the settings.
    """
    import importlib

    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from ..engine import InferenceConfig, InferenceEngine
    from ..packages import ModelPackage
    from .hats import LOCAL_CLUSTER_CONFIG, predict_photoz_hats, require_lsdb, worker_stats
    from .predict import default_package, predict_photoz_file

    lsdb = require_lsdb()
    import dask
    from distributed import Client, LocalCluster

    package = ModelPackage.load(model) if model else default_package()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        parquet, hats_path = write_synthetic_hats(tmp, rows, partition_rows=partition_rows, model=model)
        n_partitions = len(lsdb.open_catalog(hats_path).get_healpix_pixels())

        before = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))
        try:
            config = InferenceConfig()
            config.device = "cpu"
            file_out = os.path.join(tmp, "file.parquet")
            t0, cpu0 = time.perf_counter(), _cpu_seconds()
            summary = predict_photoz_file(
                package, parquet, file_out, chunk_size=chunk_size, engine=InferenceEngine(config)
            )
            seconds = time.perf_counter() - t0
            runs.append(
                {
                    "mode": "file",
                    "workers": 0,
                    "rows": summary["rows"],
                    "seconds": seconds,
                    "cpu_s": _cpu_seconds() - cpu0,
                }
            )

            out = os.path.join(tmp, "hats_sync")
            t0, cpu0 = time.perf_counter(), _cpu_seconds()
            summary = predict_photoz_hats(
                package,
                hats_path,
                out,
                n_workers=0,
                chunk_size=chunk_size,
                device="cpu",
                torch_threads=threads,
            )
            runs.append(
                {
                    "mode": "hats",
                    "workers": 0,
                    "rows": summary["rows"],
                    "seconds": time.perf_counter() - t0,
                    "cpu_s": _cpu_seconds() - cpu0,
                }
            )
        finally:
            torch.set_num_threads(before)

        for n in workers:
            t0 = time.perf_counter()
            with dask.config.set(LOCAL_CLUSTER_CONFIG):
                cluster = LocalCluster(
                    n_workers=int(n),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            try:
                with Client(cluster) as client:
                    client.run(importlib.import_module, "lsst.meas.ml.photoz.hats")
                    startup = time.perf_counter() - t0
                    out = os.path.join(tmp, f"hats_{n}")
                    cpu_workers = client.run(_cpu_seconds)
                    t0, cpu0 = time.perf_counter(), _cpu_seconds()
                    summary = predict_photoz_hats(
                        package,
                        hats_path,
                        out,
                        client=client,
                        chunk_size=chunk_size,
                        device="cpu",
                        torch_threads=threads,
                    )
                    seconds = time.perf_counter() - t0
                    cpu_main = _cpu_seconds() - cpu0
                    cpu_workers = {k: v - cpu_workers[k] for k, v in client.run(_cpu_seconds).items()}
                    stats = client.run(worker_stats)
                    peaks = client.run(_peak_rss_mb)
            finally:
                cluster.close()
            runs.append(
                {
                    "mode": "hats",
                    "workers": int(n),
                    "rows": summary["rows"],
                    "seconds": seconds,
                    "startup_s": startup,
                    "package_loads": sum(s["package_loads"] for s in stats.values()),
                    "partitions_per_worker": sorted(s["partitions"] for s in stats.values()),
                    "load_s_per_worker": max(s["load_seconds"] for s in stats.values()),
                    "peak_rss_mb_per_worker": max(peaks.values()),
                    "cpu_s": cpu_main + sum(cpu_workers.values()),
                    "cpu_s_per_worker": sorted(round(v, 2) for v in cpu_workers.values()),
                }
            )

        file_table = pq.read_table(file_out, columns=["objectId", "photoz_mean"]).to_pandas()
        hats_table = lsdb.open_catalog(
            os.path.join(tmp, f"hats_{workers[-1]}") if workers else out, columns=["objectId", "photoz_mean"]
        ).compute(progress_bar=False)
        merged = file_table.merge(
            hats_table[["objectId", "photoz_mean"]].astype({"photoz_mean": "float64"}),
            on="objectId",
            suffixes=("_file", "_hats"),
        )
        diff = np.abs(merged["photoz_mean_file"].to_numpy(float) - merged["photoz_mean_hats"].to_numpy(float))
    baseline = runs[0]["rows"] / runs[0]["seconds"]
    baseline_cpu = runs[0]["rows"] / runs[0]["cpu_s"]
    for r in runs:
        r["rows_per_s"] = r["rows"] / r["seconds"]
        r["ratio"] = r["rows_per_s"] / baseline
        r["rows_per_cpu_s"] = r["rows"] / r["cpu_s"]
        r["cpu_ratio"] = r["rows_per_cpu_s"] / baseline_cpu
    return {
        "rows": rows,
        "partitions": n_partitions,
        "partition_rows": partition_rows,
        "chunk_size": chunk_size,
        "threads": threads,
        "model": model or "default",
        "runs": runs,
        "joined_rows": int(len(merged)),
        "max_abs_diff_mean": float(diff.max()) if diff.size else None,
    }


def format_hats_report(report: dict[str, Any]) -> str:
    """Format the HATS benchmark's table and ratios as text.

    Parameters
    ----------
    report : `dict`
        A report from `run_hats_benchmark`.

    Returns
    -------
    text : `str`
        One line per mode, then the notes.
    """
    lines = [
        f"photo-z over a HATS catalog: {report['rows']} objects in {report['partitions']} partitions "
        f"(at most {report['partition_rows']} rows each), chunk {report['chunk_size']} rows, torch "
        f"{report['threads']} thread(s) per process, model {report['model']}",
        f"{'mode':<26}{'s':>8}{'objects/s':>11}{'ratio':>7}{'CPU s':>8}{'obj/CPU s':>11}{'ratio':>7}  notes",
    ]
    for r in report["runs"]:
        if r["mode"] == "file":
            name, note = "file, single process", "predict_photoz_file (meas-ml predict photoz --input)"
        elif r["workers"] == 0:
            name, note = "hats, in this process", "Dask synchronous scheduler"
        else:
            name = f"hats, {r['workers']} Dask worker(s)"
            note = (
                f"cluster start {r['startup_s']:.1f} s (not timed); CPU s per worker "
                f"{r['cpu_s_per_worker']}; worker peak RSS "
                f"{r['peak_rss_mb_per_worker']:.0f} MB; package built "
                f"{r['package_loads']} time(s) ({r['load_s_per_worker']:.2f} s per worker) for "
                f"partitions {r['partitions_per_worker']} per worker"
            )
        lines.append(
            f"{name:<26}{r['seconds']:>8.2f}{r['rows_per_s']:>11.0f}{r['ratio']:>7.2f}"
            f"{r['cpu_s']:>8.2f}{r['rows_per_cpu_s']:>11.0f}{r['cpu_ratio']:>7.2f}  {note}"
        )
    lines.append(
        "ratio: objects/s (wall clock, then per CPU second of this process and the workers) over "
        "that of the single-process file path, measured in this run."
    )
    if report.get("max_abs_diff_mean") is not None:
        lines.append(
            f"HATS vs file output, {report['joined_rows']} rows joined by objectId: largest "
            f"|photoz_mean difference| {report['max_abs_diff_mean']:.2e}"
        )
    return "\n".join(lines)
