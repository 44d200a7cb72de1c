"""The ``meas-ml`` command.

Sub-commands are small wrappers over the library: everything they do is also
a Python function.  Each science product (`lsst.meas.ml.products.PRODUCTS`)
adds its own ``train``/``predict``/``bench`` sub-commands through
``lsst.meas.ml.<family>.cli`` (hooks ``add_train_parser``,
``add_predict_parser``, ``add_bench_parser``, ``add_commands``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


_log = logging.getLogger("lsst.meas.ml.cli")


def _cmd_config_path(args: argparse.Namespace) -> int:
    from .butler import CONFIG_DIR

    print(CONFIG_DIR)
    return 0


def _cmd_check_repo(args: argparse.Namespace) -> int:
    from lsst.daf.butler import Butler

    from .butler import check_pipeline, check_repo

    butler = Butler.from_config(args.repo)
    check_repo(butler, args.repo)
    n = check_pipeline(butler, args.pipeline, args.config)
    print(f"{args.repo}: the {n} task(s) of {args.pipeline} can read their inputs here.")
    return 0


def _cmd_setup_repo(args: argparse.Namespace) -> int:
    from lsst.daf.butler import Butler

    from .butler import check_repo, setup_repo

    changed = setup_repo(args.repo)
    check_repo(Butler.from_config(args.repo), args.repo)
    print(f"{args.repo}: meas_ml storage classes and formatters {'added' if changed else 'already present'}.")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from .butler import open_repo
    from .butler.registration import register_package
    from .packages import ModelPackage

    butler = open_repo(args.repo, writeable=True)
    package = ModelPackage.load(args.package)
    ref, run = register_package(butler, package, run=args.run)
    print(
        f"Registered {package.family} model {package.manifest.get('name')} version {package.version} "
        f"(sha256 {package.sha256[:12]}) as {ref.datasetType.name} in RUN collection {run}."
    )
    print(f"Use it with: pipetask run ... -i {run},...")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .packages import ModelPackage

    package = ModelPackage.load(args.package)
    print(json.dumps(package.manifest, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import SurveyConfig, build_repo

    config = SurveyConfig.tiny() if args.size == "tiny" else SurveyConfig.default()
    if args.seed is not None:
        config.seed = args.seed
    summary = build_repo(args.repo, config, overwrite=args.overwrite, shape=args.shape)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.repo, size=args.size, fresh=args.fresh, jobs=args.jobs, shape=args.shape)


def _cmd_transfer_inputs(args: argparse.Namespace) -> int:
    from .butler.transfer import TransferError, transfer_inputs

    try:
        summary = transfer_inputs(
            args.source,
            args.dest,
            args.pipeline,
            args.input,
            where=args.where,
            output_run=args.output_run,
            dry_run=args.dry_run,
        )
    except TransferError as exc:
        print(f"meas-ml transfer-inputs: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    if summary["missing_inputs"] and not args.dry_run:
        print(
            f"Not in {args.source}: {', '.join(summary['missing_inputs'])}; register the model "
            f"packages with `meas-ml register {args.dest} PACKAGE.safetensors` before "
            f"`pipetask run -b {args.dest}`.",
            file=sys.stderr,
        )
    return 0


def _cmd_bench_startup(args: argparse.Namespace) -> int:
    from .butler.startup import measure_startup

    figures = measure_startup(args.repo, repeats=args.repeats)
    print(json.dumps(figures, indent=2))
    print(
        f"start-up {figures['startup_s']:.2f} s per job (imports {figures['imports_s']:.2f} s, model load "
        f"{figures['model_load_s']:.3f} s) against {figures['per_quantum_s']:.2f} s per quantum: "
        f"ratio {figures['startup_s'] / figures['per_quantum_s']:.1f}; start-up share with 1/8/64 quanta per "
        f"job: {', '.join(f'{v:.0%}' for v in figures['startup_share'].values())}"
    )
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    from .cost import cost_table, format_markdown, read_figures

    rows = cost_table(
        read_figures(args.figures), cores=args.cores, gpus=args.gpus, bandwidth_gbs=args.bandwidth_gbs
    )
    if args.markdown:
        print(format_markdown(rows, cores=args.cores, gpus=args.gpus, bandwidth_gbs=args.bandwidth_gbs))
    else:
        print(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``meas-ml`` with every sub-command.

    Returns
    -------
    parser : `argparse.ArgumentParser`
        The parser; each sub-command sets ``func`` to its handler.
    """
    parser = argparse.ArgumentParser(
        prog="meas-ml", description="Machine learning for the Rubin Science Pipelines (meas_ml)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at DEBUG level.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("config-path", help="Print the directory to put in DAF_BUTLER_CONFIG_PATH.")
    p.set_defaults(func=_cmd_config_path)

    p = sub.add_parser("setup-repo", help="Add the meas_ml storage classes and formatters to a repository.")
    p.add_argument("repo", help="Butler repository root.")
    p.set_defaults(func=_cmd_setup_repo)

    p = sub.add_parser(
        "check-repo", help="Check that a pipeline's inputs can be read from a repository here."
    )
    p.add_argument("repo", help="Butler repository root.")
    p.add_argument(
        "-p", "--pipeline", required=True, help="Pipeline YAML (e.g. pipelines/DemoPipeline.yaml)."
    )
    p.add_argument("-c", "--config", action="append", default=[], help="label:field=value, as pipetask -c.")
    p.set_defaults(func=_cmd_check_repo)

    p = sub.add_parser("register", help="Put a model package into a repository as ml_model_<family>.")
    p.add_argument("repo", help="Butler repository root.")
    p.add_argument("package", help="Model package file (.safetensors).")
    p.add_argument("--run", default=None, help="RUN collection (default models/<family>/<version>).")
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("info", help="Print a model package's manifest (after verifying it).")
    p.add_argument("package")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("simulate", help="Write the simulated mini-survey into a new repository.")
    p.add_argument("repo")
    p.add_argument("--size", choices=("tiny", "default"), default="default")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="Replace an existing repository.")
    p.add_argument(
        "--shape",
        choices=("drp", "dp1"),
        default="drp",
        help="Dataset types as the current DRP writes them (per-detector template and DIA "
        "sources) or as Data Preview 1 ships them (template_coadd, dia_source per tract).",
    )
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("demo", help="Simulate, train, register and run the demo pipeline end to end.")
    p.add_argument("--repo", default=os.environ.get("DEMO_REPO", "demo-repo"))
    p.add_argument("--size", choices=("tiny", "default"), default="default")
    p.add_argument("--fresh", action="store_true", help="Delete the repository and start clean.")
    p.add_argument("-j", "--jobs", type=int, default=1, help="Processes for pipetask run.")
    p.add_argument(
        "--shape",
        choices=("drp", "dp1"),
        default=os.environ.get("DEMO_SHAPE", "drp"),
        help="Repository shape to simulate and run on (DP1Pipeline.yaml for dp1).",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("cost", help="CPU/GPU hours of a data release from measured throughputs.")
    p.add_argument("--figures", required=True, help="JSON of measured task figures (doc/cost_inputs.json).")
    p.add_argument("--cores", type=int, default=1000, help="CPU cores for the wall time (default 1000).")
    p.add_argument("--gpus", type=int, default=10, help="GPUs for the GPU wall time (default 10).")
    p.add_argument("--bandwidth-gbs", type=float, default=10.0, help="Aggregate read GB/s (default 10).")
    p.add_argument("--markdown", action="store_true", help="Print a Markdown table instead of JSON.")
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser(
        "transfer-inputs",
        help="Copy a pipeline's inputs from a read-only Butler (e.g. the RSP's dp1) into a local repo.",
    )
    p.add_argument("source", help="Source repository (path or label, e.g. dp1); only read.")
    p.add_argument("dest", help="Local repository (created if absent).")
    p.add_argument("-p", "--pipeline", required=True, help="Pipeline file, as for pipetask run -p.")
    p.add_argument(
        "-i",
        "--input",
        required=True,
        action="append",
        help="Input collections, as for pipetask run -i (comma-separated; repeatable). "
        "Collections absent from the source (model RUNs) are skipped.",
    )
    p.add_argument("-d", "--where", default="", help="Data ID query, as for pipetask run -d.")
    p.add_argument(
        "--output-run", default=None, help="Output RUN of the graph built on the source (never written)."
    )
    p.add_argument("--dry-run", action="store_true", help="Build the graph and count; copy nothing.")
    p.set_defaults(func=_cmd_transfer_inputs)

    train = sub.add_parser("train", help="Train a model and write a model package.")
    train_sub = train.add_subparsers(dest="family", metavar="FAMILY")
    predict = sub.add_parser("predict", help="Run a model package on files, outside the Butler.")
    predict_sub = predict.add_subparsers(dest="family", metavar="FAMILY")
    bench = sub.add_parser("bench", help="Benchmarks (print figures and ratios to in-process baselines).")
    bench_sub = bench.add_subparsers(dest="family", metavar="BENCH")
    # Dispatched in main() to lsst.meas.ml.bench.main, which parses its own options.
    bench_sub.add_parser("core", help="Cutouts vs the memory floor; engine throughput (see --help).")
    p = bench_sub.add_parser(
        "startup", help="A batch job's start-up against its per-quantum time (real pipetask runs)."
    )
    p.add_argument("--repo", default=None, help="Simulated-survey repository (default: a new tiny one).")
    p.add_argument("--repeats", type=int, default=1, help="Repeat and keep the fastest.")
    p.set_defaults(func=_cmd_bench_startup)

    from .products import PRODUCTS

    for name in (f"{p.package}.cli" for p in PRODUCTS):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # family not installed in this build
            raise
        for hook, target in (
            ("add_train_parser", train_sub),
            ("add_predict_parser", predict_sub),
            ("add_bench_parser", bench_sub),
            ("add_commands", sub),
        ):
            if hasattr(module, hook):
                getattr(module, hook)(target)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``meas-ml``: the entry point of the command.

    Parameters
    ----------
    argv : `~collections.abc.Sequence` [`str`], optional
        Command-line arguments without the program name (default
        ``sys.argv[1:]``).

    Returns
    -------
    code : `int`
        The process exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "core"]:
        # The core benchmark owns its options (see lsst.meas.ml.bench).
        from . import bench

        return int(bench.main(argv[2:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from .errors import user_errors

    try:
        return int(func(args) or 0)
    except user_errors() as exc:
        print(f"meas-ml {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
