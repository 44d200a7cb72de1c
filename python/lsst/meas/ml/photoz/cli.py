"""``meas-ml`` sub-commands of the photo-z product.

* ``meas-ml train photoz``: train an MBRNN package from a table file or a
  Butler (object table + spectroscopic-redshift table);
* ``meas-ml predict photoz``: photo-z catalog for a table file (the same
  columns as ``ml_photoz``), with the shipped default package unless
  ``--model`` is given; the file is streamed in chunks of ``--chunk-size``
  rows (`lsst.meas.ml.photoz.predict.predict_photoz_file`);
* ``meas-ml predict photoz --hats IN --out OUT``: the same over a HATS
  catalog, partition by partition on Dask workers, written as a HATS
  catalog (`lsst.meas.ml.photoz.hats.predict_photoz_hats`);
* ``meas-ml bench photoz-memory``: peak memory and throughput of that
  streaming prediction against the whole-table path
  (`lsst.meas.ml.photoz.bench`);
* ``meas-ml bench photoz-hats``: objects/s of the HATS prediction with 1
  and 2 Dask workers against the single-process file path;
* ``meas-ml photoz-influence``: the training galaxies that influenced
  chosen predictions most;
* ``meas-ml photoz-rank``: unlabelled objects ranked by how much their
  spectroscopic redshift would help.

Every command is a thin wrapper over a library function.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

__all__ = ["add_bench_parser", "add_commands", "add_predict_parser", "add_train_parser"]

_log = logging.getLogger("lsst.meas.ml.photoz.cli")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {value}")
    return number


def _bands(value: str) -> list[str]:
    bands = [b.strip() for b in value.replace(" ", ",").split(",") if b.strip()]
    if len(bands) == 1 and len(bands[0]) > 1:  # "ugrizy"
        bands = list(bands[0])
    return bands


def _add_column_options(p: argparse.ArgumentParser, *, defaults_from_model: bool) -> None:
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE

    default = "the model's, else {}" if defaults_from_model else "{}"
    p.add_argument(
        "--bands",
        type=_bands,
        default=None if defaults_from_model else list("ugrizy"),
        help=f"Bands in wavelength order, e.g. ugrizy or g,r,i (default {default.format('ugrizy')}).",
    )
    p.add_argument(
        "--flux-template",
        default=None if defaults_from_model else DEFAULT_FLUX_TEMPLATE,
        help=f"Flux column template with {{band}}, nJy (default {default.format(DEFAULT_FLUX_TEMPLATE)}).",
    )
    p.add_argument(
        "--flux-err-template",
        default=None if defaults_from_model else DEFAULT_FLUX_ERR_TEMPLATE,
        help=f"Flux error column template (default {default.format(DEFAULT_FLUX_ERR_TEMPLATE)}).",
    )
    p.add_argument("--id-column", default="objectId", help="Object id column (default objectId).")
    p.add_argument("--ebv-column", default=None, help="E(B-V) column, if any.")
    p.add_argument(
        "--magnitudes",
        action="store_true",
        help="The template columns hold AB magnitudes and errors (99 = non-detection, with the "
        "limiting magnitude in the error column, as in the DESC cosmoDC2 files), not nJy fluxes.",
    )
    p.add_argument(
        "--group", default=None, help="HDF5 group holding the columns (default: found automatically)."
    )


def _load_input(path: str, args: argparse.Namespace, bands: list[str], extra: list[str]) -> Any:
    """Read a table; with --magnitudes convert to nJy flux columns named by the default templates."""
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, flux_table_from_magnitudes
    from .tables import read_table

    table = read_table(path, group=args.group)
    if args.magnitudes:
        table = flux_table_from_magnitudes(
            table,
            bands,
            args.flux_template or DEFAULT_FLUX_TEMPLATE,
            args.flux_err_template or DEFAULT_FLUX_ERR_TEMPLATE,
            keep=[args.id_column] + [c for c in extra if c] + ([args.ebv_column] if args.ebv_column else []),
        )
    return table


def _columns_from_args(args: argparse.Namespace, bands: list[str], *, missing_band: str = "error") -> Any:
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, PhotozColumns

    magnitudes = getattr(args, "magnitudes", False)
    return PhotozColumns(
        bands=tuple(bands),
        flux_template=DEFAULT_FLUX_TEMPLATE if magnitudes or not args.flux_template else args.flux_template,
        flux_err_template=(
            DEFAULT_FLUX_ERR_TEMPLATE if magnitudes or not args.flux_err_template else args.flux_err_template
        ),
        ebv_column=args.ebv_column,
        id_column=args.id_column,
        missing_band=missing_band,
    )


# ----------------------------------------------------------------------
# train


def _read_butler_training(args: argparse.Namespace, columns: Any) -> Any:
    """Join the object tables and the spectroscopic table of a Butler on the id column."""
    import numpy as np
    from astropy.table import Table, join, vstack

    from ..butler import open_repo
    from .features import PhotozInputError

    butler = open_repo(args.butler)
    collections = args.collections.split(",") if args.collections else None
    obj_refs = butler.query_datasets(
        args.object_dataset, collections=collections, where=args.where or "", explain=False
    )
    spec_refs = butler.query_datasets(args.specz_dataset, collections=collections, explain=False)
    if not obj_refs or not spec_refs:
        raise PhotozInputError(
            f"Butler {args.butler} has {len(obj_refs)} {args.object_dataset!r} and {len(spec_refs)} "
            f"{args.specz_dataset!r} datasets in collections {collections}; both are needed."
        )
    wanted = columns.columns()
    objects = []
    for ref in obj_refs:
        available = set(butler.get(ref.makeComponentRef("columns")))
        objects.append(butler.get(ref, parameters={"columns": [c for c in wanted if c in available]}))
    spec = vstack([butler.get(ref) for ref in spec_refs])
    if args.redshift_column not in spec.colnames or columns.id_column not in spec.colnames:
        raise PhotozInputError(
            f"The {args.specz_dataset!r} table needs columns {columns.id_column!r} and "
            f"{args.redshift_column!r}; it has {spec.colnames}."
        )
    spec = Table(
        {columns.id_column: spec[columns.id_column], args.redshift_column: spec[args.redshift_column]}
    )
    table = join(vstack(objects), spec, keys=columns.id_column, join_type="inner")
    _log.info(
        "Joined %d objects with spectroscopic redshifts from %d object tables.", len(table), len(obj_refs)
    )
    if len(table) == 0:
        raise PhotozInputError(
            "No object of the object tables has a spectroscopic redshift (join on "
            f"{columns.id_column!r} is empty)."
        )
    table[args.redshift_column] = np.asarray(table[args.redshift_column], dtype=np.float64)
    return table


def _cmd_train(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .metrics import pit, plot_photoz_vs_true, plot_pit
    from .pdf import summarize_pdf
    from .train import PhotozTrainingConfig, train_photoz_table

    if bool(args.input) == bool(args.butler):
        raise SystemExit("meas-ml train photoz: give exactly one of --input TABLE or --butler REPO.")
    refuse_output_over_input(args.out, [args.input])
    # The settings are checked before any table is read.
    config = PhotozTrainingConfig(
        n_bins=args.bins,
        z_max=args.z_max,
        n_members=args.members,
        epochs=args.epochs,
        hidden=tuple(args.hidden),
        seed=args.seed,
        loss=args.loss,
        num_threads=args.threads,
        max_seconds=args.max_seconds,
        pit_knots=args.pit_knots,
        noise_augment=args.noise_augment,
    )
    bands = args.bands
    columns = _columns_from_args(args, bands)
    if args.input:
        table = _load_input(args.input, args, bands, [args.redshift_column])
        source = os.path.abspath(args.input)
    else:
        table = _read_butler_training(args, columns)
        source = f"butler:{args.butler} {args.object_dataset}+{args.specz_dataset} in {args.collections}"
    result = train_photoz_table(
        table, columns, args.redshift_column, config, provenance={"training_data": source}, name=args.name
    )
    result.package.save(args.out)
    print(
        f"Wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, "
        f"sha256 {result.package.sha256[:12]}): "
        f"{result.n_train} training and {result.n_validation} validation galaxies, "
        f"{result.training_seconds:.1f} s."
    )
    print(
        "Validation metrics: "
        + json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in result.metrics.items()})
    )
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        model = result.package.build_model()
        import numpy as np
        import torch

        inputs = columns.extract(table)
        z = np.asarray(table[args.redshift_column], dtype=float)
        rng = np.random.default_rng(config.seed)
        sel = rng.permutation(len(z))[: min(len(z), 20000)]
        with torch.no_grad():
            pdf, _ = model(torch.from_numpy(inputs[sel]))
        edges = np.asarray(result.package.outputs["bin_edges"])
        s = summarize_pdf(pdf.numpy(), edges)
        plot_photoz_vs_true(
            s[config.point_estimate],
            z[sel],
            os.path.join(args.plots, "photoz_vs_true.png"),
            title="training sample",
            z_max=config.z_max,
        )
        plot_pit(pit(pdf.numpy(), edges, z[sel]), os.path.join(args.plots, "photoz_pit.png"), title="PIT")
        print(f"Plots in {args.plots} (on the training sample; see bench/photoz_rail.py for held-out data).")
    return 0


def add_train_parser(subparsers: Any) -> None:
    """Add ``photoz`` under ``meas-ml train``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers action of ``meas-ml train``, from
        `argparse.ArgumentParser.add_subparsers`.
    """
    p = subparsers.add_parser(
        "photoz",
        help="Train the MBRNN photo-z network from a table file or a Butler.",
        description="Train an MBRNN photo-z ensemble and write a model package whose manifest carries the "
        "validation metrics.",
    )
    src = p.add_argument_group("training data (one of)")
    src.add_argument("--input", help="Table file (Parquet, CSV or HDF5) with fluxes and redshifts.")
    src.add_argument("--butler", help="Butler repository holding object tables and a spectroscopic table.")
    p.add_argument("--collections", default=None, help="Butler collections (comma-separated).")
    p.add_argument("--object-dataset", default="object", help="Object table dataset type (default object).")
    p.add_argument(
        "--specz-dataset", default="specz", help="Spectroscopic-redshift dataset type (default specz)."
    )
    p.add_argument(
        "--where", default=None, help="Butler query constraint on the object tables, e.g. tract=9813."
    )
    _add_column_options(p, defaults_from_model=False)
    p.add_argument("--redshift-column", default="redshift", help="True-redshift column (default redshift).")
    p.add_argument("--out", required=True, help="Model package to write (.safetensors).")
    p.add_argument("--name", default="photoz-mbrnn", help="Package name.")
    from .train import PhotozTrainingConfig

    d = PhotozTrainingConfig()
    p.add_argument("--bins", type=int, default=d.n_bins, help="Redshift bins (default %(default)s).")
    p.add_argument("--z-max", type=float, default=d.z_max, help="Upper bin edge (default %(default)s).")
    p.add_argument("--members", type=int, default=d.n_members, help="Ensemble size (default %(default)s).")
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help="Maximum epochs per member (default %(default)s)."
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(d.hidden),
        help="Hidden layer widths (default %(default)s).",
    )
    p.add_argument("--loss", choices=("ce", "anchor"), default=d.loss, help="Loss (default cross-entropy).")
    p.add_argument(
        "--pit-knots",
        type=int,
        default=d.pit_knots,
        help="Knots of the PDF recalibration fitted on the validation split (0: none; default %(default)s).",
    )
    p.add_argument(
        "--noise-augment",
        type=float,
        default=d.noise_augment,
        help="Extra training noise, up to this many times each flux error, errors enlarged to "
        "match (0: none; default %(default)s).",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="Seed of the validation split and of the members' weights (default %(default)s).",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    p.add_argument("--max-seconds", type=float, default=None, help="Stop training after this many seconds.")
    p.add_argument("--plots", default=None, help="Directory for photo-z vs true z and PIT PNG files.")
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------
# predict


def _package(path: str | None) -> Any:
    """Load the package at ``path`` (default: the shipped one); a clear error unless it is for photo-z."""
    from ..packages import ModelPackage
    from .predict import default_package

    package = ModelPackage.load(path) if path else default_package()
    package.check_family("photoz", purpose="photo-z")
    return package


def _cmd_predict_hats(args: argparse.Namespace) -> int:
    """``meas-ml predict photoz --hats IN --out OUT``: `lsst.meas.ml.photoz.hats.predict_photoz_hats`."""
    from ..fileio import refuse_output_over_input
    from .hats import HatsError, predict_photoz_hats
    from .predict import columns_for_package

    if args.magnitudes or args.group:
        raise HatsError(
            "--magnitudes and --group apply to table files, not to --hats catalogs (which hold nJy fluxes)."
        )
    refuse_output_over_input(args.out, [args.hats, args.model])
    package = _package(args.model)
    bands = args.bands or list(package.inputs["bands"])
    columns = columns_for_package(
        package,
        bands=bands,
        flux_template=args.flux_template,
        flux_err_template=args.flux_err_template,
        ebv_column=args.ebv_column,
        id_column=args.id_column,
        missing_band=args.missing_band,
    )
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    try:
        summary = predict_photoz_hats(
            package,
            args.hats,
            args.out,
            columns,
            client=client,
            n_workers=args.workers,
            memory_limit=args.memory_limit,
            chunk_size=args.chunk_size,
            device=args.device,
            batch_size=args.batch_size,
            torch_threads=args.torch_threads,
            pdf_format=args.pdf_format,
            ood_threshold=args.ood_threshold,
            duplicates=args.duplicates,
            overwrite=args.overwrite,
        )
    finally:
        if client is not None:
            client.close()
    print(
        f"Wrote the HATS catalog {args.out}: {summary['rows']} photo-z rows in {summary['partitions']} "
        f"partitions with {package.name} {package.version} on {summary['workers'] or 'no'} Dask worker(s) "
        f"in {summary['seconds']:.1f} s ({summary['out_of_distribution']} flagged out of distribution)."
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..engine import InferenceConfig, InferenceEngine
    from ..fileio import refuse_output_over_input
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, flux_table_from_magnitudes
    from .predict import columns_for_package, predict_photoz_file

    if getattr(args, "hats", None):
        return _cmd_predict_hats(args)
    refuse_output_over_input(args.out, [args.input, args.model])
    package = _package(args.model)
    bands = args.bands or list(package.inputs["bands"])
    columns = columns_for_package(package, bands=bands)  # clear error for other bands
    columns = _columns_from_args(args, bands, missing_band=args.missing_band)
    transform = None
    if args.magnitudes:
        mag = args.flux_template or DEFAULT_FLUX_TEMPLATE
        mag_err = args.flux_err_template or DEFAULT_FLUX_ERR_TEMPLATE
        keep = [args.id_column] + ([args.ebv_column] if args.ebv_column else [])
        read_columns = keep[:1] + [t.format(band=b) for b in bands for t in (mag, mag_err)] + keep[1:]

        def transform(table: Any) -> Any:
            return flux_table_from_magnitudes(table, bands, mag, mag_err, keep=keep)
    else:
        columns = columns_for_package(
            package,
            bands=bands,
            flux_template=args.flux_template,
            flux_err_template=args.flux_err_template,
            ebv_column=args.ebv_column,
            id_column=args.id_column,
            missing_band=args.missing_band,
        )
        read_columns = columns.columns()
    config = InferenceConfig()
    config.device = args.device
    config.batchSize = args.batch_size
    summary = predict_photoz_file(
        package,
        args.input,
        args.out,
        columns,
        read_columns=read_columns,
        transform=transform,
        group=args.group,
        chunk_size=args.chunk_size,
        engine=InferenceEngine(config),
        pdf_format=args.pdf_format,
        ood_threshold=args.ood_threshold,
    )
    print(
        f"Wrote {summary['rows']} photo-z rows to {args.out} with {package.name} {package.version} "
        f"({summary['out_of_distribution']} flagged out of distribution)."
    )
    return 0


def add_predict_parser(subparsers: Any) -> None:
    """Add ``photoz`` under ``meas-ml predict``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers action of ``meas-ml predict``, from
        `argparse.ArgumentParser.add_subparsers`.
    """
    from .predict import DEFAULT_CHUNK_SIZE, DEFAULT_PACKAGE_PATH

    p = subparsers.add_parser(
        "photoz",
        help="Photo-z catalog (the ml_photoz columns) for a table file or a HATS catalog.",
        description=f"Without --model the shipped default package is used: {DEFAULT_PACKAGE_PATH} (MBRNN "
        "trained on the DESC cosmoDC2 ugrizy training file of RAIL; fluxes in nJy).  With --hats the "
        "partitions of a HATS catalog are predicted by Dask workers (lsdb) and written as a HATS catalog "
        "joined to the input by the object id.",
    )
    p.add_argument(
        "--model", default=None, help="Model package (default: the shipped cosmoDC2 ugrizy package)."
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="Table file (Parquet, CSV or HDF5).")
    source.add_argument(
        "--hats", help="HATS catalog (directory) of objects; needs lsdb (pip install 'lsst-meas-ml[hats]')."
    )
    p.add_argument(
        "--out", required=True, help="Output Parquet file (--input) or HATS catalog directory (--hats)."
    )
    _add_column_options(p, defaults_from_model=True)
    p.add_argument(
        "--missing-band",
        choices=("error", "missing"),
        default="error",
        help="A band whose columns are absent: fail (default) or treat as not observed.",
    )
    p.add_argument(
        "--pdf-format",
        choices=("full", "quantiles", "both"),
        default="full",
        help="PDF column(s): full bin vector, float16 quantiles, or both.",
    )
    p.add_argument("--ood-threshold", type=float, default=1.0, help="OOD score flag threshold (default 1).")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
    p.add_argument("--batch-size", type=int, default=0, help="Rows per forward pass (0: automatic).")
    p.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help="Rows read, predicted and written at a time (default %(default)s, rounded down to a "
        "multiple of the forward batch size); memory grows with it, not with the input.",
    )
    hats = p.add_argument_group("HATS catalogs (--hats)")
    hats.add_argument(
        "--workers",
        type=_non_negative_int,
        default=1,
        help="Worker processes of the local Dask cluster started for the run, one thread each "
        "(default 1; 0 predicts every partition in this process).",
    )
    hats.add_argument(
        "--scheduler",
        default=None,
        help="Address of a running Dask scheduler to use instead of a local cluster.",
    )
    hats.add_argument(
        "--memory-limit",
        default=None,
        help="Memory limit of each local worker, e.g. 4GB (default Dask's: memory / workers).",
    )
    hats.add_argument(
        "--torch-threads", type=_positive_int, default=1, help="torch CPU threads in each worker (default 1)."
    )
    hats.add_argument(
        "--duplicates",
        choices=("partition", "catalog"),
        default="partition",
        help="Flag repeated object ids within each partition (default) or over the whole "
        "catalog (one more pass over the id column).",
    )
    hats.add_argument("--overwrite", action="store_true", help="Replace an existing output catalog.")
    p.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------
# bench


def _cmd_bench_memory(args: argparse.Namespace) -> int:
    from .bench import format_report, run_memory_benchmark

    report = run_memory_benchmark(
        rows=args.rows,
        pdf_format=args.pdf_format,
        chunk_size=args.chunk_size,
        model=args.model,
        baseline_max_rows=args.baseline_max_rows,
        workdir=args.workdir,
        threads=args.threads,
        device=args.device,
    )
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=2)
    return 0


def _cmd_bench_hats(args: argparse.Namespace) -> int:
    from .bench import format_hats_report, run_hats_benchmark

    report = run_hats_benchmark(
        rows=args.rows,
        workers=args.workers,
        partition_rows=args.partition_rows,
        chunk_size=args.chunk_size,
        threads=args.threads,
        model=args.model,
        workdir=args.workdir,
    )
    print(format_hats_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=2)
    return 0


def add_bench_parser(subparsers: Any) -> None:
    """Add ``photoz-memory`` and ``photoz-hats`` under ``meas-ml bench``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers action of ``meas-ml bench``, from
        `argparse.ArgumentParser.add_subparsers`.
    """
    from .predict import DEFAULT_CHUNK_SIZE

    p = subparsers.add_parser(
        "photoz-memory",
        help="Peak memory and rows/s of the streaming photo-z prediction vs the whole table.",
        description="Writes synthetic inputs with the shipped model's columns, runs `meas-ml predict photoz` "
        "(streaming) in a child process per size and the whole-table path (read all, predict, write) as "
        "the baseline, and prints peak RSS and throughput with their ratios.",
    )
    p.add_argument(
        "--rows",
        type=_positive_int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="Input sizes (default 100000 1000000).",
    )
    p.add_argument("--pdf-format", choices=("full", "quantiles", "both"), default="full")
    p.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help="Streaming chunk size (default %(default)s).",
    )
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument(
        "--baseline-max-rows",
        type=int,
        default=100_000,
        help="Run the whole-table baseline for sizes up to this (default 100000; its memory "
        "grows by several kB per row).",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in the children (0: default).")
    p.add_argument(
        "--device",
        default="cpu",
        help="Torch device of the prediction, streaming and whole-table alike (cpu, cuda, auto).",
    )
    p.add_argument(
        "--workdir", default=None, help="Directory for the synthetic files (default: a temporary one)."
    )
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    p.set_defaults(func=_cmd_bench_memory)

    p = subparsers.add_parser(
        "photoz-hats",
        help="Objects/s of the photo-z prediction over a HATS catalog with 1 and 2 Dask workers vs the "
        "single-process file path.",
        description="Writes synthetic galaxies as a Parquet file and as a HATS catalog (hats-import), runs "
        "the single-process file prediction (the baseline), the HATS prediction in this process and on "
        "local Dask clusters of each size, and prints objects/s with the ratio to the baseline.  Needs "
        "lsdb and hats-import.",
    )
    p.add_argument("--rows", type=_positive_int, default=200_000, help="Objects (default %(default)s).")
    p.add_argument(
        "--workers", type=_positive_int, nargs="+", default=[1, 2], help="Local cluster sizes (default 1 2)."
    )
    p.add_argument(
        "--partition-rows",
        type=_positive_int,
        default=20_000,
        help="Most rows per HATS partition (default %(default)s).",
    )
    p.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help="Rows per prediction chunk (default %(default)s).",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads of the baseline and of each worker (default 1).",
    )
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--workdir", default=None, help="Directory for the temporary files.")
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    p.set_defaults(func=_cmd_bench_hats)


# ----------------------------------------------------------------------
# influence and ranking


def _cmd_influence(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .influence import influence_table
    from .tables import write_table

    refuse_output_over_input(args.out, [args.train, args.input, args.model])
    package = _package(args.model)
    bands = args.bands or list(package.inputs["bands"])
    columns = _columns_from_args(args, bands) if args.magnitudes else None
    if columns is None:
        from .predict import columns_for_package

        columns = columns_for_package(
            package,
            bands=bands,
            flux_template=args.flux_template,
            flux_err_template=args.flux_err_template,
            ebv_column=args.ebv_column,
            id_column=args.id_column,
        )
    train = _load_input(args.train, args, bands, [args.redshift_column])
    query = _load_input(args.input, args, bands, [args.redshift_column])
    ids = None
    if args.object_id:
        ids = [int(v) if v.lstrip("-").isdigit() else v for v in args.object_id]
    result = influence_table(
        package,
        train,
        query,
        redshift_column=args.redshift_column,
        columns=columns,
        query_ids=ids,
        top_k=args.top_k,
        kind=args.kind,
    )
    if args.out:
        write_table(result, args.out)
        print(f"Wrote {len(result)} rows to {args.out}.")
    else:
        result.pprint(max_lines=-1, max_width=-1)
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .influence import rank_table
    from .tables import write_table

    refuse_output_over_input(args.out, [args.input, args.model])
    package = _package(args.model)
    bands = args.bands or list(package.inputs["bands"])
    if args.magnitudes:
        columns = _columns_from_args(args, bands)
    else:
        from .predict import columns_for_package

        columns = columns_for_package(
            package,
            bands=bands,
            flux_template=args.flux_template,
            flux_err_template=args.flux_err_template,
            ebv_column=args.ebv_column,
            id_column=args.id_column,
        )
    table = _load_input(args.input, args, bands, [])
    result = rank_table(
        package,
        table,
        columns=columns,
        n_select=args.n_select,
        ood_weight=args.ood_weight,
        diversity=args.diversity,
    )
    if args.out:
        write_table(result, args.out)
        print(f"Wrote the ranking of {len(result)} objects to {args.out}.")
    else:
        result[: args.show].pprint(max_lines=-1, max_width=-1)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``photoz-influence`` and ``photoz-rank`` to ``meas-ml``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers action of ``meas-ml`` itself, from
        `argparse.ArgumentParser.add_subparsers`.
    """
    p = subparsers.add_parser(
        "photoz-influence",
        help="Training galaxies that influenced chosen photo-z predictions most.",
        description="Last-layer TracIn influence of each training galaxy on the chosen predictions.",
    )
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--train", required=True, help="The training table (file) the package was trained on.")
    p.add_argument("--input", required=True, help="Table holding the objects to explain.")
    p.add_argument(
        "--object-id", nargs="+", default=None, help="Ids of the objects to explain (default all)."
    )
    p.add_argument("--redshift-column", default="redshift")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--kind", choices=("proponents", "opponents", "absolute"), default="proponents")
    p.add_argument("--out", default=None, help="Parquet file (default: print).")
    _add_column_options(p, defaults_from_model=True)
    p.set_defaults(func=_cmd_influence)

    p = subparsers.add_parser(
        "photoz-rank",
        help="Rank unlabelled objects by how much spectroscopy of them would help.",
        description="Utility = ensemble mutual information + ood_weight * log1p(OOD score), picked greedily "
        "with a penalty for objects close to ones already picked.",
    )
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--input", required=True, help="Table of unlabelled objects.")
    p.add_argument("--out", default=None, help="Parquet file (default: print the top --show rows).")
    p.add_argument(
        "--n-select", type=int, default=None, help="Length of the diversity-aware head (default 1000)."
    )
    p.add_argument("--ood-weight", type=float, default=0.05)
    p.add_argument("--diversity", type=float, default=0.5)
    p.add_argument("--show", type=int, default=20)
    _add_column_options(p, defaults_from_model=True)
    p.set_defaults(func=_cmd_rank)
    _add_followup_commands(subparsers)


# ----------------------------------------------------------------------
# Bayesian follow-up of out-of-distribution objects, calibration plots


def _followup_config(args: argparse.Namespace) -> Any:
    from .followup import FollowupConfig

    return FollowupConfig(
        method=args.method,
        error_floor=args.error_floor,
        prior=args.prior,
        n_walkers=args.walkers,
        n_steps=args.steps,
        n_burn=args.burn,
        seed=args.seed,
        device=args.device,
    )


def _add_followup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--templates", default=None, help="Template-grid package (default: the shipped CWWSB4 x LSST grid)."
    )
    p.add_argument(
        "--method",
        choices=("grid", "mcmc"),
        default="grid",
        help="Posterior: dense grid (default) or emcee MCMC started from it.",
    )
    p.add_argument(
        "--error-floor",
        type=float,
        default=0.05,
        help="Fractional flux error added in quadrature (default 0.05).",
    )
    p.add_argument(
        "--prior",
        choices=("flat", "magnitude"),
        default="flat",
        help="Redshift prior (default flat; magnitude: p(z|m) fitted to the cosmoDC2 training set).",
    )
    p.add_argument("--walkers", type=_positive_int, default=32, help="MCMC walkers (default 32).")
    p.add_argument("--steps", type=_positive_int, default=1000, help="MCMC steps (default 1000).")
    p.add_argument("--burn", type=int, default=400, help="MCMC burn-in steps (default 400).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or a torch device.")


def _parse_ids(values: list[str] | None) -> list[Any]:
    return [int(v) if v.lstrip("-").isdigit() else v for v in (values or [])]


def _cmd_followup(args: argparse.Namespace) -> int:
    import numpy as np

    from ..fileio import refuse_output_over_input
    from .followup import followup_photoz, select_followup, template_package
    from .predict import columns_for_package, predict_photoz
    from .tables import write_table

    refuse_output_over_input(args.out, [args.input, args.model, args.templates])
    package = _package(args.model)
    templates = template_package(args.templates)
    bands = args.bands or list(package.inputs["bands"])
    if args.magnitudes:
        columns = _columns_from_args(args, bands, missing_band="missing")
    else:
        columns = columns_for_package(
            package,
            bands=bands,
            flux_template=args.flux_template,
            flux_err_template=args.flux_err_template,
            ebv_column=args.ebv_column,
            id_column=args.id_column,
            missing_band="missing",
        )
    table = _load_input(args.input, args, bands, [])
    if args.all or "photoz_flags" in table.colnames:
        flags_table = table
    else:
        flags_table = predict_photoz(package, table, columns, ood_threshold=args.ood_threshold)
    if columns.id_column not in table.colnames:
        table[columns.id_column] = np.arange(len(table), dtype=np.int64)
        if flags_table is not table:
            flags_table[columns.id_column] = table[columns.id_column]
    ids, user = select_followup(
        flags_table, extra_ids=_parse_ids(args.ids), id_column=columns.id_column, all_rows=args.all
    )
    rows = np.flatnonzero(np.isin(np.asarray(table[columns.id_column]), ids))
    order = {key: k for k, key in enumerate(ids.tolist())}
    chosen = np.asarray(table[columns.id_column])[rows].tolist()
    user_rows = np.array([bool(user[order[key]]) for key in chosen], dtype=bool)
    follow = followup_photoz(
        templates, table[rows], columns, config=_followup_config(args), user_selected=user_rows
    )
    write_table(follow, args.out)
    seconds = follow.meta.get("photoz_bayes_seconds_per_object", float("nan"))
    print(
        f"Wrote the {follow.meta['photoz_bayes_method']} posteriors of {len(follow)} of {len(table)} "
        f"objects to {args.out} ({seconds:.4f} s per object)."
    )
    return 0


def _cmd_followup_quality(args: argparse.Namespace) -> int:
    from .calibration import plot_coverage_by_magnitude, plot_pit_histograms
    from .followup import dc2_validation_path, followup_quality, template_package

    path = args.validation or dc2_validation_path()
    report = followup_quality(
        path,
        package=_package(args.model),
        templates=template_package(args.templates),
        config=_followup_config(args),
        max_objects=args.max_objects,
        ood_threshold=args.ood_threshold,
    )
    arrays = report.pop("arrays")
    print(
        f"{path}: {report['n_objects']} objects, {report['n_ood']} flagged out of distribution by the "
        "MBRNN, "
        f"{report['n_followed']} followed up ({report['method']} posterior)."
    )
    print(f"{'estimator':<14}{'sigma_NMAD':>11}{'outliers':>10}{'68% cover':>11}{'s/object':>11}")
    for name in ("mbrnn", "bayes"):
        r = report[name]
        print(
            f"{name:<14}{r['sigma_nmad']:>11.4f}{r['outlier_fraction']:>10.1%}{r['coverage68']:>11.1%}"
            f"{r['seconds_per_object']:>11.5f}"
        )
    ratio = report["bayes"]["seconds_per_object"] / max(report["mbrnn"]["seconds_per_object"], 1e-12)
    print(
        f"Follow-up cost: {ratio:.0f} x the MBRNN per object (same process). MBRNN on all objects: "
        f"sigma_NMAD {report['mbrnn_all']['sigma_nmad']:.4f}, outliers "
        f"{report['mbrnn_all']['outlier_fraction']:.1%}. Follow-up flags: {report['bayes_flags']}"
    )
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        plot_pit_histograms(
            {"MBRNN": arrays["mbrnn_pit"], "template fit": arrays["bayes_pit"]},
            os.path.join(args.plots, "followup_pit.png"),
            title="PIT, OOD-flagged objects",
        )
        plot_coverage_by_magnitude(
            {
                "MBRNN": (arrays["mbrnn_lo68"], arrays["mbrnn_hi68"]),
                "template fit": (arrays["bayes_lo68"], arrays["bayes_hi68"]),
            },
            arrays["z_true"],
            arrays["i_mag"],
            os.path.join(args.plots, "followup_coverage68.png"),
            title="68% coverage, OOD-flagged objects",
        )
        print(f"Plots in {args.plots}.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=2)
    return 0


def _cmd_calibration(args: argparse.Namespace) -> int:
    import numpy as np

    from .calibration import coverage_by_magnitude, plot_coverage_by_magnitude, plot_pit_histograms
    from .metrics import pit
    from .predict import columns_for_package, predict_photoz

    package = _package(args.model)
    bands = args.bands or list(package.inputs["bands"])
    if args.magnitudes:
        columns = _columns_from_args(args, bands)
    else:
        columns = columns_for_package(
            package,
            bands=bands,
            flux_template=args.flux_template,
            flux_err_template=args.flux_err_template,
            ebv_column=args.ebv_column,
            id_column=args.id_column,
        )
    table = _load_input(args.input, args, bands, [args.redshift_column])
    if args.redshift_column not in table.colnames:
        from .features import PhotozInputError

        raise PhotozInputError(f"{args.input} has no true-redshift column {args.redshift_column!r}.")
    cat = predict_photoz(package, table, columns)
    z = np.asarray(table[args.redshift_column], dtype=np.float64)
    edges = np.asarray(package.outputs["bin_edges"], dtype=np.float64)
    values = pit(np.asarray(cat["photoz_pdf"]), edges, z)
    flux = np.asarray(table[columns.flux_template.format(band=args.mag_band)], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = 31.4 - 2.5 * np.log10(flux)
    os.makedirs(args.out_dir, exist_ok=True)
    lo, hi = np.asarray(cat["photoz_lo68"], float), np.asarray(cat["photoz_hi68"], float)
    p1 = plot_pit_histograms({package.name: values}, os.path.join(args.out_dir, "photoz_pit.png"))
    p2 = plot_coverage_by_magnitude(
        {package.name: (lo, hi)},
        z,
        mag,
        os.path.join(args.out_dir, "photoz_coverage68.png"),
        mag_label=f"{args.mag_band} [AB mag]",
    )
    centres, coverage, counts = coverage_by_magnitude(lo, hi, z, mag)
    print(f"68% coverage of {package.name} on {len(z)} objects: {np.mean((lo <= z) & (z <= hi)):.1%}")
    for c, v, n in zip(centres, coverage, counts):
        if n:
            print(f"    {args.mag_band} ~ {c:5.2f}: {v:6.1%} of {n}")
    print(f"Wrote {p1} and {p2}.")
    return 0


def _cmd_templates(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .followup import build_template_package

    refuse_output_over_input(args.out, [])
    package = build_template_package(
        args.sed_dir,
        filter_dir=args.filter_dir,
        filter_prefix=args.filter_prefix,
        provenance={"sed_dir": os.path.abspath(args.sed_dir)},
    )
    package.save(args.out)
    print(f"Wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB): {package.hyperparameters}.")
    return 0


def _add_followup_commands(subparsers: Any) -> None:
    """Add ``photoz-followup``, ``photoz-followup-quality``, ``photoz-calibration``, ``photoz-templates``."""
    p = subparsers.add_parser(
        "photoz-followup",
        help="Bayesian template-fit redshifts of the objects the MBRNN flags out of "
        "distribution (the ml_photoz_followup columns).",
        description="Runs the MBRNN on the table (unless it already has photoz_flags), selects the "
        "OUT_OF_DISTRIBUTION rows and the --ids, and writes their template-fit posteriors.",
    )
    p.add_argument("--input", required=True, help="Table file with fluxes (or magnitudes with --magnitudes).")
    p.add_argument("--out", required=True, help="Output Parquet file.")
    p.add_argument("--model", default=None, help="MBRNN package (default: the shipped one).")
    p.add_argument("--ids", nargs="+", default=None, help="Object ids to follow up as well.")
    p.add_argument("--all", action="store_true", help="Follow up every row.")
    p.add_argument("--ood-threshold", type=float, default=1.0, help="OOD score threshold (default 1).")
    _add_followup_options(p)
    _add_column_options(p, defaults_from_model=True)
    p.set_defaults(func=_cmd_followup)

    p = subparsers.add_parser(
        "photoz-followup-quality",
        help="Follow-up vs MBRNN on the OOD-flagged objects of the cosmoDC2 "
        "validation file: sigma_NMAD, outliers, 68%% coverage, seconds per object.",
    )
    p.add_argument(
        "--validation",
        default=None,
        help="cosmoDC2 validation file (default: the one of pz-rail-base, if installed).",
    )
    p.add_argument("--model", default=None, help="MBRNN package (default: the shipped one).")
    p.add_argument("--max-objects", type=_positive_int, default=None, help="Follow up at most this many.")
    p.add_argument("--ood-threshold", type=float, default=1.0, help="OOD score threshold (default 1).")
    p.add_argument("--plots", default=None, help="Directory for the PIT and coverage PNGs.")
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    _add_followup_options(p)
    p.set_defaults(func=_cmd_followup_quality)

    p = subparsers.add_parser(
        "photoz-calibration",
        help="PIT histogram and 68%% coverage per magnitude bin (PNGs) of the MBRNN "
        "photo-z on a labelled table.",
    )
    p.add_argument("--input", required=True, help="Table with fluxes (or magnitudes) and true redshifts.")
    p.add_argument("--redshift-column", default="redshift")
    p.add_argument("--model", default=None, help="MBRNN package (default: the shipped one).")
    p.add_argument("--mag-band", default="i", help="Band of the magnitude bins (default i).")
    p.add_argument("--out-dir", required=True, help="Directory for photoz_pit.png and photoz_coverage68.png.")
    _add_column_options(p, defaults_from_model=True)
    p.set_defaults(func=_cmd_calibration)

    p = subparsers.add_parser(
        "photoz-templates",
        help="Build the template-grid package of the follow-up from SED files.",
    )
    p.add_argument(
        "--sed-dir",
        required=True,
        help="Folder of the CWWSB4 .sed files (in RAIL: rail/examples_data/estimation_data/data/SED).",
    )
    p.add_argument(
        "--filter-dir",
        default=None,
        help="Folder of <prefix>_<band>.res filter files (default: speclite's curves).",
    )
    p.add_argument(
        "--filter-prefix", default="lsst2023", help="speclite group or .res prefix (default lsst2023)."
    )
    p.add_argument("--out", required=True, help="Package to write (.safetensors).")
    p.set_defaults(func=_cmd_templates)
