r"""``meas-ml train dia``, ``meas-ml predict dia``, ``meas-ml bench dia`` and
``meas-ml quality dia``.

Examples::

    meas-ml train dia --repo REPO --collections MLSim/defaults \
        --alerts ../shared/data/ztf_alerts/*.parquet --out dia.safetensors
    meas-ml predict dia --alerts ../shared/data/rubin_alerts/lsstcam_alerts_2026-01.parquet \
        --out scores.parquet            # default package when --model is omitted
    meas-ml bench dia --sources 1000 --size 4096 --threads 2
    meas-ml quality dia --model dia.safetensors --repo REPO --collections MLSim/defaults
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = [
    "add_bench_parser",
    "add_commands",
    "add_predict_parser",
    "add_train_parser",
    "default_package_path",
]


def default_package_path() -> str:
    """Return the path of the DIA classifier shipped with meas_ml (used without ``--model``).

    Returns
    -------
    path : `str`
        Path of ``dia_default.safetensors`` in the installed package.
    """
    from ..packages import default_package_path as path_of

    return path_of("dia")


def _load_package(path: str | None) -> Any:
    from ..packages import ModelPackage, default_package

    return ModelPackage.load(path) if path else default_package("dia")


# ----------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..fileio import refuse_output_over_input
    from .train import (
        DiaTrainingConfig,
        TrainingSet,
        alert_training_set,
        butler_training_set,
        survey_training_set,
        train_dia,
    )

    refuse_output_over_input(args.out, list(args.alerts))
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.repo and not args.alerts and not args.simulate:
        raise FileNotFoundError(
            "meas-ml train dia needs --repo/--collections, --simulate SIZE and/or --alerts FILE ..."
        )
    parts = []
    described: dict[str, Any] = {}
    if args.repo:
        from ..butler import open_repo

        butler = open_repo(args.repo)
        collections = args.collections.split(",")
        parts.append(
            butler_training_set(
                butler,
                collections,
                stamp_size=args.stamp_size,
                where=args.where,
                max_detectors=args.max_detectors,
            )
        )
        described["butler"] = {
            "repo": os.path.abspath(args.repo),
            "collections": collections,
            "where": args.where,
        }
    if args.simulate:
        from ..simulate import SurveyConfig, simulate_survey

        for seed in args.seeds:
            survey = simulate_survey(SurveyConfig.from_name(args.simulate, seed=seed))
            parts.append(survey_training_set(survey, stamp_size=args.stamp_size))
        described["simulated"] = {"size": args.simulate, "seeds": list(args.seeds)}
    if args.alerts:
        parts.append(alert_training_set(args.alerts, stamp_size=args.stamp_size, split=args.alert_split))
        described["alerts"] = {"files": [os.path.basename(a) for a in args.alerts], "split": args.alert_split}
    data = TrainingSet.concatenate(parts)
    config = DiaTrainingConfig(
        stamp_size=args.stamp_size,
        widths=tuple(args.widths),
        symmetric=args.symmetric,
        epochs=args.epochs,
        seed=args.seed,
        version=args.version,
    )
    result = train_dia(data, config, provenance={"training_data": described})
    package, report = result.package, result.report
    package.save(args.out)
    print(json.dumps({"package": args.out, "n_stamps": len(data), **report}, indent=2, default=float))
    return 0


def add_train_parser(subparsers: Any) -> None:
    """Add ``dia`` under ``meas-ml train``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml train``.
    """
    p = subparsers.add_parser("dia", help="Train the DIA-source classifier (reliability and class).")
    p.add_argument("--repo", help="Butler repository with the simulated survey (truth_dia_source).")
    p.add_argument("--collections", default="MLSim/defaults", help="Comma-separated input collections.")
    p.add_argument("--where", default="", help="Butler query constraint on the data IDs.")
    p.add_argument("--max-detectors", type=int, default=None, help="Use at most this many detectors.")
    p.add_argument(
        "--simulate",
        choices=("tiny", "default"),
        default=None,
        help="Also simulate surveys of this size in memory (no repository) and train on them.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="Seeds of the --simulate surveys.")
    p.add_argument("--alerts", nargs="*", default=[], help="Alert files (Rubin/ZTF Parquet or Avro).")
    p.add_argument(
        "--alert-split",
        choices=("all", "train"),
        default="train",
        help="'train' keeps alerts with id % 3 != 0, leaving the rest for `meas-ml quality dia`.",
    )
    p.add_argument("--out", required=True, help="Model package to write (.safetensors).")
    p.add_argument("--stamp-size", type=int, default=32)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 32])
    p.add_argument("--symmetric", action="store_true", help="Rotation-invariant kernels (exact invariance).")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default).")
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from astropy.table import vstack

    from ..alerts import read_alerts
    from ..engine import InferenceConfig, InferenceEngine
    from ..fileio import atomic_output, refuse_output_over_input
    from .alert_scoring import score_alerts
    from .predict import check_package

    refuse_output_over_input(args.out, [*args.alerts, args.model, args.schema])
    package = _load_package(args.model)
    check_package(package)  # a mismatched package fails before any alert is read
    config = InferenceConfig()
    config.device = args.device
    engine = InferenceEngine(config)
    tables = []
    for path in args.alerts:
        table = score_alerts(
            read_alerts(path, schema=args.schema), package, engine=engine, dihedral=args.dihedral
        )
        table["file"] = os.path.basename(path)
        tables.append(table)
    table = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    table.meta = {k: v for k, v in tables[0].meta.items()}
    with atomic_output(args.out) as tmp:  # the format comes from the extension, which tmp keeps
        table.write(tmp, overwrite=True)
    n_scored = int((table["ml_class"] != "").sum())
    print(
        f"Scored {n_scored} of {len(table)} alerts with {package.name} {package.version}; wrote {args.out}."
    )
    return 0


def add_predict_parser(subparsers: Any) -> None:
    """Add ``dia`` under ``meas-ml predict``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml predict``.
    """
    p = subparsers.add_parser(
        "dia", help="Score alert packets (Rubin/ZTF, Parquet or Avro) from their cutouts."
    )
    p.add_argument(
        "--model", default=None, help="Model package (default: the shipped dia_default.safetensors)."
    )
    p.add_argument("--alerts", nargs="+", required=True, help="Alert files.")
    p.add_argument("--schema", default=None, help="Avro schema (.avsc) for schemaless Avro alert files.")
    p.add_argument("--out", required=True, help="Output table (.parquet, .fits, .ecsv, ...).")
    p.add_argument(
        "--dihedral",
        choices=("auto", "gpu", "always", "never"),
        default="auto",
        help="Average over the 8 rotations/flips: auto (unless the model is invariant by "
        "construction), gpu (on GPUs only), always, never.",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps.")
    p.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------
def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    report = run_benchmark(
        _load_package(args.model),
        n_sources=args.sources,
        image_size=args.size,
        threads=args.threads,
        repeats=args.repeats,
        device=args.device,
        node_cores=args.node_cores,
        night_sources=args.night,
    )
    print(json.dumps(report, indent=2, default=float))
    return 0


def add_bench_parser(subparsers: Any) -> None:
    """Add ``dia`` under ``meas-ml bench``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml bench``.
    """
    p = subparsers.add_parser("dia", help="Latency of cutouts + inference for one detector of DIA sources.")
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--sources", type=int, default=1000)
    p.add_argument("--size", type=int, default=4096, help="Image side in pixels.")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto.")
    p.add_argument("--node-cores", type=int, default=100, help="Cores of the node for the night estimate.")
    p.add_argument("--night", type=float, default=1e7, help="Sources per night for the estimate.")
    p.set_defaults(func=_cmd_bench)


# ----------------------------------------------------------------------
def _cmd_quality(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input, write_text_atomic
    from .quality_report import quality_report, template_comparison

    refuse_output_over_input(args.out, [args.model, *args.ztf, *args.rubin])

    butler = None
    if args.repo:
        from ..butler import open_repo

        butler = open_repo(args.repo)
    if args.compare_templates:
        if butler is None:
            raise SystemExit("--compare-templates needs --repo (a DRP-shaped simulated repository).")
        report = template_comparison(
            _load_package(args.model), butler, args.collections.split(","), where=args.where
        )
        print(json.dumps(report, indent=2, default=float))
        return 0
    simulated = None
    if args.simulate:
        from ..simulate import SurveyConfig, simulate_survey
        from .train import TrainingSet, survey_training_set

        package = _load_package(args.model)
        simulated = TrainingSet.concatenate(
            [
                survey_training_set(
                    simulate_survey(SurveyConfig.from_name(args.simulate, seed=seed)),
                    stamp_size=int(package.inputs["stamp_size"]),
                )
                for seed in args.seeds
            ]
        )
    report = quality_report(
        _load_package(args.model),
        butler=butler,
        simulated=simulated,
        collections=args.collections.split(","),
        where=args.where,
        ztf=args.ztf,
        ztf_split=args.ztf_split,
        rubin=args.rubin,
    )
    text = json.dumps(report, indent=2, default=float)
    if args.out:
        write_text_atomic(args.out, text)
    print(text)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``meas-ml quality dia``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-commands of ``meas-ml``; ``quality`` is added to them.
    """
    quality = subparsers.add_parser("quality", help="Quality reports of trained models.")
    sub = quality.add_subparsers(dest="family", metavar="FAMILY")
    p = sub.add_parser("dia", help="ROC AUC, purity, completeness on simulated, ZTF and Rubin stamps.")
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--repo", default=None, help="Repository with the simulated survey (held-out detectors).")
    p.add_argument("--collections", default="MLSim/defaults")
    p.add_argument("--where", default="", help="Data-ID constraint selecting held-out detectors.")
    p.add_argument(
        "--simulate",
        choices=("tiny", "default"),
        default=None,
        help="Score held-out surveys simulated in memory with --seeds (not used in training).",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[99])
    p.add_argument("--ztf", nargs="*", default=[], help="ZTF alert files (labels: drb).")
    p.add_argument(
        "--ztf-split",
        choices=("holdout", "all"),
        default="holdout",
        help="Score only the ZTF alerts held out of training (id % 3 == 0), or all.",
    )
    p.add_argument("--rubin", nargs="*", default=[], help="Rubin alert files (reference: reliability).")
    p.add_argument("--out", default=None, help="Write the JSON report here too.")
    p.add_argument(
        "--compare-templates",
        action="store_true",
        help="Score --repo's detectors with the stored template and with the derived one "
        "(visit - difference, as on DP1) and report the change.",
    )
    p.set_defaults(func=_cmd_quality)
