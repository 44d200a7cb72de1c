"""``meas-ml`` sub-commands of the asteroid-taxonomy product.

* ``meas-ml train asteroids --classy CSV --out P``: train the mixture on the
  classy spectra (needs ``speclite``);
* ``meas-ml predict asteroids --input SOURCES --out OUT [--model P]``: the
  ``ml_asteroid_taxonomy`` catalog of a Solar System source table (parquet,
  FITS, ECSV or CSV; an alert parquet with ``diaSource``/``ssSource``
  structs is flattened first); Rubin's column names by default.
* ``meas-ml bench asteroids``: objects per second of the fit and of scoring
  10^6 objects (CPU, or ``--device cuda``).
* ``meas-ml asteroids-quality --classy CSV [--png P] [--json J]
  [--simulated-objects N]``: the quality report
  (`lsst.meas.ml.asteroids.metrics.quality_report`, and
  `~lsst.meas.ml.asteroids.metrics.simulated_population_accuracy`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_bench_parser", "add_commands", "add_predict_parser", "add_train_parser"]


def _cmd_train(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .train import AsteroidsTrainingConfig, train_asteroids

    refuse_output_over_input(args.out, [args.classy])
    config = AsteroidsTrainingConfig(
        label_fraction=args.label_fraction,
        n_realisations=args.realisations,
        seed=args.seed,
        version=args.version,
        max_objects=args.max_objects,
    )
    result = train_asteroids(args.classy, config)
    result.package.save(args.out)
    print(
        json.dumps(
            {
                "out": args.out,
                "metrics": result.metrics,
                "n_train": result.n_train,
                "n_validation": result.n_validation,
                "training_seconds": round(result.training_seconds, 2),
            },
            indent=2,
        )
    )
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train asteroids``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml train``.
    """
    p = subparsers.add_parser("asteroids", help="Train the asteroid-taxonomy mixture on classy spectra.")
    p.add_argument("--classy", required=True, help="classy_data.csv (Mahlke et al. 2022 spectra).")
    p.add_argument("--out", required=True, help="Output package (.safetensors).")
    p.add_argument("--label-fraction", type=float, default=1.0, help="Fraction of labels kept (default 1).")
    p.add_argument("--realisations", type=int, default=5, help="Noisy copies per object (default 5).")
    p.add_argument("--max-objects", type=int, default=None, help="Use at most this many objects.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", default="0.1.0")
    p.set_defaults(func=_cmd_train)


def _read_sources(path: str) -> Any:
    from astropy.table import Table

    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if "ssSource" in names and "diaSource" in names:
            from .features import sources_from_alerts

            return sources_from_alerts(path)
    return Table.read(path)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input, write_table
    from ..packages import ModelPackage, default_package
    from .features import AsteroidColumns
    from .predict import predict_asteroids

    refuse_output_over_input(args.out, [args.input, args.model])
    package = ModelPackage.load(args.model) if args.model else default_package("asteroids")
    columns = AsteroidColumns(
        args.id_column,
        args.band_column,
        args.flux_column,
        args.flux_err_column,
        args.phase_column,
        args.helio_column,
        args.topo_column,
    )
    catalog = predict_asteroids(
        package, _read_sources(args.input), columns, anomaly_threshold=args.anomaly_threshold
    )
    write_table(catalog, args.out)
    print(f"Wrote {len(catalog)} objects to {args.out}.")
    return 0


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict asteroids``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml predict``.
    """
    p = subparsers.add_parser("asteroids", help="Asteroid taxonomy of a Solar System source table.")
    p.add_argument("--input", required=True, help="Solar System source rows (or an alert parquet).")
    p.add_argument("--out", required=True, help="Output table (format from the extension).")
    p.add_argument("--model", default=None, help="Package (default: the shipped one).")
    p.add_argument("--id-column", default="ssObjectId")
    p.add_argument("--band-column", default="band")
    p.add_argument("--flux-column", default="psfFlux")
    p.add_argument("--flux-err-column", default="psfFluxErr")
    p.add_argument("--phase-column", default="phaseAngle")
    p.add_argument("--helio-column", default="helioRange")
    p.add_argument("--topo-column", default="topoRange")
    p.add_argument("--anomaly-threshold", type=float, default=1.0)
    p.set_defaults(func=_cmd_predict)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .metrics import benchmark

    figures = benchmark(args.objects, args.fit_objects, n_iter=args.iterations, device=args.device)
    print(json.dumps(figures, indent=2))
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench asteroids``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml bench``.
    """
    p = subparsers.add_parser("asteroids", help="Objects per second of the mixture fit and of scoring.")
    p.add_argument("--objects", type=int, default=1_000_000, help="Objects scored (default 10^6).")
    p.add_argument("--fit-objects", type=int, default=20_000, help="Objects in the EM fit.")
    p.add_argument("--iterations", type=int, default=20, help="EM iterations.")
    p.add_argument("--device", default="cpu", help="Torch device (cpu, cuda).")
    p.set_defaults(func=_cmd_bench)


def _cmd_quality(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input, write_text_atomic
    from .metrics import QualityConfig, plot_colour_diagram, quality_report
    from .train import AsteroidsTrainingConfig, AsteroidsTrainingError, classy_colours, train_asteroids

    if not args.classy and not args.simulated_objects:
        raise AsteroidsTrainingError("asteroids-quality needs --classy, --simulated-objects or both.")
    refuse_output_over_input(args.json, [args.classy, args.model], option="--json")
    refuse_output_over_input(args.png, [args.classy, args.model], option="--png")
    report: dict = {}
    if args.simulated_objects:
        from ..packages import ModelPackage, default_package
        from .metrics import simulated_population_accuracy

        package = ModelPackage.load(args.model) if args.model else default_package("asteroids")
        report["simulated_population"] = simulated_population_accuracy(
            package, args.simulated_objects, mag_err=args.mag_err, seed=args.seed
        )
    if args.classy:
        colours = classy_colours(args.classy)
        report.update(quality_report(colours, QualityConfig(n_folds=args.folds, seed=args.seed)))
    if args.png and args.classy:
        model = train_asteroids(colours, AsteroidsTrainingConfig(seed=args.seed)).package.build_model()
        plot_colour_diagram(model, colours, args.png)
        report["colour_diagram"] = args.png
    text = json.dumps(report, indent=2)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    print(text)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``asteroids-quality``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The top-level ``meas-ml`` sub-parsers.
    """
    p = subparsers.add_parser(
        "asteroids-quality",
        help="Cross-validated complex accuracy (semi-supervised mixture vs logistic baseline at 10%% and "
        "100%% labels), ARI of the unsupervised mixture, anomaly ROC AUC; optional colour-colour PNG.",
    )
    p.add_argument("--classy", default=None, help="classy_data.csv (the cross-validated report).")
    p.add_argument(
        "--simulated-objects",
        type=int,
        default=0,
        help="Also score this many objects drawn as the simulated survey draws them, with four "
        "colours and with g-r, r-i only (shipped package, or --model).",
    )
    p.add_argument(
        "--model", default=None, help="Package for --simulated-objects (default: the shipped one)."
    )
    p.add_argument("--mag-err", type=float, default=0.05, help="Per-band error for --simulated-objects.")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="Write the report here too.")
    p.add_argument("--png", default=None, help="Colour-colour diagram with the mixture's components.")
    p.set_defaults(func=_cmd_quality)
