"""``meas-ml`` sub-commands of the photo-z product.

* ``meas-ml train photoz``: train an MBRNN package from a table file or a
  Butler (object table + spectroscopic-redshift table);
* ``meas-ml predict photoz``: photo-z catalog for a table file (the same
  columns as ``ml_photoz``), with the shipped default package unless
  ``--model`` is given; the file is streamed in chunks of ``--chunk-size``
  rows (`lsst.meas.ml.photoz.predict.predict_photoz_file`);
* ``meas-ml bench photoz-memory``: peak memory and throughput of that
  streaming prediction against the whole-table path
  (`lsst.meas.ml.photoz.bench`);
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


def _bands(value: str) -> list[str]:
    bands = [b.strip() for b in value.replace(" ", ",").split(",") if b.strip()]
    if len(bands) == 1 and len(bands[0]) > 1:  # "ugrizy"
        bands = list(bands[0])
    return bands


def _add_column_options(p: argparse.ArgumentParser, *, defaults_from_model: bool) -> None:
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE

    default = "the model's, else {}" if defaults_from_model else "{}"
    p.add_argument("--bands", type=_bands, default=None if defaults_from_model else list("ugrizy"),
                   help="Bands in wavelength order, e.g. ugrizy or g,r,i "
                   f"(default {default.format('ugrizy')}).")
    p.add_argument("--flux-template", default=None if defaults_from_model else DEFAULT_FLUX_TEMPLATE,
                   help="Flux column template with {band}, nJy "
                   f"(default {default.format(DEFAULT_FLUX_TEMPLATE)}).")
    p.add_argument("--flux-err-template", default=None if defaults_from_model else DEFAULT_FLUX_ERR_TEMPLATE,
                   help=f"Flux error column template (default {default.format(DEFAULT_FLUX_ERR_TEMPLATE)}).")
    p.add_argument("--id-column", default="objectId", help="Object id column (default objectId).")
    p.add_argument("--ebv-column", default=None, help="E(B-V) column, if any.")
    p.add_argument("--magnitudes", action="store_true",
                   help="The template columns hold AB magnitudes and errors (99 = non-detection, with the "
                   "limiting magnitude in the error column, as in the DESC cosmoDC2 files), not nJy fluxes.")
    p.add_argument("--group", default=None,
                   help="HDF5 group holding the columns (default: found automatically).")


def _load_input(path: str, args: argparse.Namespace, bands: list[str], extra: list[str]) -> Any:
    """Read a table; with --magnitudes convert to nJy flux columns named by the default templates."""
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, flux_table_from_magnitudes
    from .tables import read_table

    table = read_table(path, group=args.group)
    if args.magnitudes:
        table = flux_table_from_magnitudes(
            table, bands, args.flux_template or DEFAULT_FLUX_TEMPLATE,
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
    obj_refs = butler.query_datasets(args.object_dataset, collections=collections, where=args.where or "",
                                     explain=False)
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
    spec = Table({columns.id_column: spec[columns.id_column],
                  args.redshift_column: spec[args.redshift_column]})
    table = join(vstack(objects), spec, keys=columns.id_column, join_type="inner")
    _log.info("Joined %d objects with spectroscopic redshifts from %d object tables.", len(table),
              len(obj_refs))
    if len(table) == 0:
        raise PhotozInputError("No object of the object tables has a spectroscopic redshift (join on "
                               f"{columns.id_column!r} is empty).")
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
    bands = args.bands
    columns = _columns_from_args(args, bands)
    if args.input:
        table = _load_input(args.input, args, bands, [args.redshift_column])
        source = os.path.abspath(args.input)
    else:
        table = _read_butler_training(args, columns)
        source = f"butler:{args.butler} {args.object_dataset}+{args.specz_dataset} in {args.collections}"
    config = PhotozTrainingConfig(
        n_bins=args.bins, z_max=args.z_max, n_members=args.members, epochs=args.epochs,
        hidden=tuple(args.hidden), seed=args.seed, loss=args.loss, num_threads=args.threads,
        max_seconds=args.max_seconds,
    )
    result = train_photoz_table(
        table, columns, args.redshift_column, config, provenance={"training_data": source}, name=args.name
    )
    result.package.save(args.out)
    print(f"Wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, "
          f"sha256 {result.package.sha256[:12]}): "
          f"{result.n_train} training and {result.n_validation} validation galaxies, "
          f"{result.training_seconds:.1f} s.")
    print("Validation metrics: " + json.dumps({k: (round(v, 5) if isinstance(v, float) else v)
                                               for k, v in result.metrics.items()}))
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
        plot_photoz_vs_true(s[config.point_estimate], z[sel], os.path.join(args.plots, "photoz_vs_true.png"),
                            title="training sample", z_max=config.z_max)
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
        "photoz", help="Train the MBRNN photo-z network from a table file or a Butler.",
        description="Train an MBRNN photo-z ensemble and write a model package whose manifest carries the "
        "validation metrics.",
    )
    src = p.add_argument_group("training data (one of)")
    src.add_argument("--input", help="Table file (Parquet, CSV or HDF5) with fluxes and redshifts.")
    src.add_argument("--butler", help="Butler repository holding object tables and a spectroscopic table.")
    p.add_argument("--collections", default=None, help="Butler collections (comma-separated).")
    p.add_argument("--object-dataset", default="object", help="Object table dataset type (default object).")
    p.add_argument("--specz-dataset", default="specz",
                   help="Spectroscopic-redshift dataset type (default specz).")
    p.add_argument("--where", default=None,
                   help="Butler query constraint on the object tables, e.g. tract=9813.")
    _add_column_options(p, defaults_from_model=False)
    p.add_argument("--redshift-column", default="redshift", help="True-redshift column (default redshift).")
    p.add_argument("--out", required=True, help="Model package to write (.safetensors).")
    p.add_argument("--name", default="photoz-mbrnn", help="Package name.")
    p.add_argument("--bins", type=int, default=150, help="Number of redshift bins (default 150).")
    p.add_argument("--z-max", type=float, default=3.0, help="Upper end of the bins (default 3).")
    p.add_argument("--members", type=int, default=5, help="Ensemble size (default 5).")
    p.add_argument("--epochs", type=int, default=80, help="Maximum epochs per member (default 80).")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128, 128], help="Hidden layer widths.")
    p.add_argument("--loss", choices=("ce", "anchor"), default="ce", help="Loss (default cross-entropy).")
    p.add_argument("--seed", type=int, default=0)
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


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..engine import InferenceConfig, InferenceEngine
    from ..fileio import refuse_output_over_input
    from .features import DEFAULT_FLUX_ERR_TEMPLATE, DEFAULT_FLUX_TEMPLATE, flux_table_from_magnitudes
    from .predict import columns_for_package, predict_photoz_file

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
            package, bands=bands, flux_template=args.flux_template, flux_err_template=args.flux_err_template,
            ebv_column=args.ebv_column, id_column=args.id_column, missing_band=args.missing_band,
        )
        read_columns = columns.columns()
    config = InferenceConfig()
    config.device = args.device
    config.batchSize = args.batch_size
    summary = predict_photoz_file(
        package, args.input, args.out, columns, read_columns=read_columns, transform=transform,
        group=args.group, chunk_size=args.chunk_size, engine=InferenceEngine(config),
        pdf_format=args.pdf_format, ood_threshold=args.ood_threshold,
    )
    print(f"Wrote {summary['rows']} photo-z rows to {args.out} with {package.name} {package.version} "
          f"({summary['out_of_distribution']} flagged out of distribution).")
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
        "photoz", help="Photo-z catalog (the ml_photoz columns) for a table file.",
        description=f"Without --model the shipped default package is used: {DEFAULT_PACKAGE_PATH} (MBRNN "
        "trained on the DESC cosmoDC2 ugrizy training file of RAIL; fluxes in nJy).",
    )
    p.add_argument("--model", default=None,
                   help="Model package (default: the shipped cosmoDC2 ugrizy package).")
    p.add_argument("--input", required=True, help="Table file (Parquet, CSV or HDF5).")
    p.add_argument("--out", required=True, help="Output Parquet file.")
    _add_column_options(p, defaults_from_model=True)
    p.add_argument("--missing-band", choices=("error", "missing"), default="error",
                   help="A band whose columns are absent: fail (default) or treat as not observed.")
    p.add_argument("--pdf-format", choices=("full", "quantiles", "both"), default="full",
                   help="PDF column(s): full bin vector, float16 quantiles, or both.")
    p.add_argument("--ood-threshold", type=float, default=1.0, help="OOD score flag threshold (default 1).")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
    p.add_argument("--batch-size", type=int, default=0, help="Rows per forward pass (0: automatic).")
    p.add_argument("--chunk-size", type=_positive_int, default=DEFAULT_CHUNK_SIZE,
                   help="Rows read, predicted and written at a time (default %(default)s, rounded down to a "
                   "multiple of the forward batch size); memory grows with it, not with the input.")
    p.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------
# bench


def _cmd_bench_memory(args: argparse.Namespace) -> int:
    from .bench import format_report, run_memory_benchmark

    report = run_memory_benchmark(
        rows=args.rows, pdf_format=args.pdf_format, chunk_size=args.chunk_size, model=args.model,
        baseline_max_rows=args.baseline_max_rows, workdir=args.workdir, threads=args.threads,
    )
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=2)
    return 0


def add_bench_parser(subparsers: Any) -> None:
    """Add ``photoz-memory`` under ``meas-ml bench``.

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
    p.add_argument("--rows", type=_positive_int, nargs="+", default=[100_000, 1_000_000],
                   help="Input sizes (default 100000 1000000).")
    p.add_argument("--pdf-format", choices=("full", "quantiles", "both"), default="full")
    p.add_argument("--chunk-size", type=_positive_int, default=DEFAULT_CHUNK_SIZE,
                   help="Streaming chunk size (default %(default)s).")
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--baseline-max-rows", type=int, default=100_000,
                   help="Run the whole-table baseline for sizes up to this (default 100000; its memory "
                   "grows by several kB per row).")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in the children (0: default).")
    p.add_argument("--workdir", default=None,
                   help="Directory for the synthetic files (default: a temporary one).")
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    p.set_defaults(func=_cmd_bench_memory)


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

        columns = columns_for_package(package, bands=bands, flux_template=args.flux_template,
                                      flux_err_template=args.flux_err_template, ebv_column=args.ebv_column,
                                      id_column=args.id_column)
    train = _load_input(args.train, args, bands, [args.redshift_column])
    query = _load_input(args.input, args, bands, [args.redshift_column])
    ids = None
    if args.object_id:
        ids = [int(v) if v.lstrip("-").isdigit() else v for v in args.object_id]
    result = influence_table(package, train, query, redshift_column=args.redshift_column, columns=columns,
                             query_ids=ids, top_k=args.top_k, kind=args.kind)
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

        columns = columns_for_package(package, bands=bands, flux_template=args.flux_template,
                                      flux_err_template=args.flux_err_template, ebv_column=args.ebv_column,
                                      id_column=args.id_column)
    table = _load_input(args.input, args, bands, [])
    result = rank_table(package, table, columns=columns, n_select=args.n_select, ood_weight=args.ood_weight,
                        diversity=args.diversity)
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
        "photoz-influence", help="Training galaxies that influenced chosen photo-z predictions most.",
        description="Last-layer TracIn influence of each training galaxy on the chosen predictions.",
    )
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--train", required=True, help="The training table (file) the package was trained on.")
    p.add_argument("--input", required=True, help="Table holding the objects to explain.")
    p.add_argument("--object-id", nargs="+", default=None,
                   help="Ids of the objects to explain (default all).")
    p.add_argument("--redshift-column", default="redshift")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--kind", choices=("proponents", "opponents", "absolute"), default="proponents")
    p.add_argument("--out", default=None, help="Parquet file (default: print).")
    _add_column_options(p, defaults_from_model=True)
    p.set_defaults(func=_cmd_influence)

    p = subparsers.add_parser(
        "photoz-rank", help="Rank unlabelled objects by how much spectroscopy of them would help.",
        description="Utility = ensemble mutual information + ood_weight * log1p(OOD score), picked greedily "
        "with a penalty for objects close to ones already picked.",
    )
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--input", required=True, help="Table of unlabelled objects.")
    p.add_argument("--out", default=None, help="Parquet file (default: print the top --show rows).")
    p.add_argument("--n-select", type=int, default=None,
                   help="Length of the diversity-aware head (default 1000).")
    p.add_argument("--ood-weight", type=float, default=0.05)
    p.add_argument("--diversity", type=float, default=0.5)
    p.add_argument("--show", type=int, default=20)
    _add_column_options(p, defaults_from_model=True)
    p.set_defaults(func=_cmd_rank)
