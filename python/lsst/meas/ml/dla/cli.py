"""``meas-ml`` sub-commands of the DLA product.

* ``meas-ml train dla --out P``: train on simulated sightlines;
* ``meas-ml predict dla --spectra FILES --out OUT.parquet [--z-qso Z]``:
  ``ml_dla`` of spectrum files outside the Butler;
* ``meas-ml bench dla``: spectra per second (BOSS-size spectra) and the
  ratio to the bare model loop;
* ``meas-ml ingest-spectra REPO FILES...``: register external spectra in a
  Butler repository (``qso_spectra``, per ``htm7``);
* ``meas-ml dla-quality``: completeness, purity and errors on injected
  DLAs, and the real spectra of ``qso_spectra``.
"""

from __future__ import annotations

import argparse
import json
import time

__all__ = ["add_bench_parser", "add_commands", "add_predict_parser", "add_train_parser"]


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import DlaTrainingConfig, train_dla

    config = DlaTrainingConfig(
        n_sightlines=args.sightlines,
        n_validation=args.validation,
        epochs=args.epochs,
        batch_size=args.batch_size,
        channels=args.channels,
        seed=args.seed,
        version=args.version,
        num_threads=args.threads,
        lr=args.lr,
    )
    t0 = time.perf_counter()
    result = train_dla(config, log=lambda m: print(m, flush=True))
    result.package.save(args.out)
    print(
        json.dumps(
            {
                "out": args.out,
                "metrics": result.metrics,
                "n_train_windows": result.n_train,
                "n_validation": result.n_validation,
                "training_seconds": round(result.training_seconds, 1),
                "wall_seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train dla``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml train``.
    """
    p = subparsers.add_parser("dla", help="Train the DLA CNN on DLAs injected into simulated sightlines.")
    p.add_argument("--out", required=True, help="Output package (.safetensors).")
    p.add_argument("--sightlines", type=int, default=12000, help="Simulated training sightlines.")
    p.add_argument("--validation", type=int, default=600, help="Held-out simulated sightlines.")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=32, help="Width of the network.")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", default="0.1.0")
    p.set_defaults(func=_cmd_train)


def _read_all(paths: list[str], z_qso: float | None, error: str | None = None) -> list:
    from .spectra import read_spectra

    spectra = []
    for path in paths:
        spectra.extend(read_spectra(path, z_qso=z_qso, error_path=error))
    return spectra


def _cmd_predict(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from ..engine import InferenceConfig, InferenceEngine
    from ..fileio import refuse_output_over_input, write_table
    from ..packages import ModelPackage, default_package
    from .predict import predict_dla

    refuse_output_over_input(args.out, [*args.spectra, args.model, args.error])
    package = ModelPackage.load(args.model) if args.model else default_package("dla")
    spectra = _read_all(args.spectra, args.z_qso, args.error)
    unknown = [s.source_id for s in spectra if not np.isfinite(s.z_qso)]
    if unknown:
        print(
            f"meas-ml predict dla: warning: no quasar redshift for {', '.join(unknown)} (neither in the "
            "file nor --z-qso): flagged NO_Z_QSO and not searched.",
            file=sys.stderr,
        )
    config = InferenceConfig()
    config.device = args.device
    catalog = predict_dla(package, spectra, engine=InferenceEngine(config))
    write_table(catalog, args.out)
    found = catalog[catalog["absorber"] >= 0]
    print(
        f"Searched {len(spectra)} spectra: {len(found)} absorbers ({int(catalog['is_dla'].sum())} DLAs) "
        f"written to {args.out}."
    )
    for row in found:
        print(
            f"  {row['source_id']}: z_abs {row['z_abs']:.4f}, log N(HI) {row['log_nhi']:.2f} +- "
            f"{row['log_nhi_err']:.2f}, confidence {row['confidence']:.2f}, flags {int(row['dla_flags'])}"
        )
    return 0


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict dla``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml predict``.
    """
    p = subparsers.add_parser("dla", help="DLAs in spectrum files (FITS, SDSS/BOSS, Parquet).")
    p.add_argument("--spectra", nargs="+", required=True, help="Spectrum files.")
    p.add_argument("--out", required=True, help="Output table (.parquet).")
    p.add_argument(
        "--z-qso",
        type=float,
        default=None,
        help="Quasar redshift of every spectrum (default: from each file's header or table).",
    )
    p.add_argument(
        "--error", default=None, help="Error file of a 1D FITS image (default: *_e.fits beside it)."
    )
    p.add_argument("--model", default=None, help="Package (default: the shipped one).")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda...")
    p.set_defaults(func=_cmd_predict)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import benchmark

    print(
        json.dumps(
            benchmark(args.spectra, device=args.device, threads=args.threads, model=args.model), indent=2
        )
    )
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench dla``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml bench``.
    """
    p = subparsers.add_parser(
        "dla", help="Spectra per second (BOSS-size) and the ratio to the bare model loop."
    )
    p.add_argument("--spectra", type=int, default=400, help="Simulated BOSS-size spectra (default 400).")
    p.add_argument("--threads", type=int, default=2, help="Torch threads (default 2).")
    p.add_argument("--device", default="cpu", help="cpu or cuda.")
    p.add_argument("--model", default=None, help="Package (default: the shipped one).")
    p.set_defaults(func=_cmd_bench)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from ..butler import open_repo
    from .ingest import ingest_spectra

    spectra = _read_all(args.files, args.z_qso)
    if args.ra is not None or args.dec is not None:
        if args.ra is None or args.dec is None:
            raise SystemExit("meas-ml ingest-spectra: error: give both --ra and --dec.")
        for s in spectra:
            s.ra, s.dec = args.ra, args.dec
    butler = open_repo(args.repo, writeable=True)
    counts = ingest_spectra(butler, spectra, run=args.run)
    print(
        f"Registered {len(spectra)} spectra as qso_spectra in RUN {args.run}: "
        + ", ".join(f"htm7={k} ({v} spectra)" for k, v in counts.items())
    )
    return 0


def _cmd_quality(args: argparse.Namespace) -> int:
    from ..fileio import write_text_atomic
    from ..packages import ModelPackage, default_package
    from .metrics import injected_quality, print_quality, real_spectra_quality

    package = ModelPackage.load(args.model) if args.model else default_package("dla")
    zs = {}
    for item in args.z or []:
        key, _, value = item.partition("=")
        zs[key] = float(value)
    report = {"injected": injected_quality(package, args.sightlines, seed=args.seed)}
    if args.real:
        report["real"] = real_spectra_quality(package, args.real, z_override=zs)
    print_quality(report)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2, default=float) + "\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ingest-spectra`` and ``dla-quality``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The top-level ``meas-ml`` sub-parsers.
    """
    from .ingest import DEFAULT_RUN

    p = subparsers.add_parser(
        "ingest-spectra", help="Register external spectra (FITS, SDSS/BOSS, Parquet) as qso_spectra (htm7)."
    )
    p.add_argument("repo", help="Butler repository root.")
    p.add_argument("files", nargs="+", help="Spectrum files.")
    p.add_argument("--run", default=DEFAULT_RUN, help=f"RUN collection (default {DEFAULT_RUN}).")
    p.add_argument("--z-qso", type=float, default=None, help="Quasar redshift of every file's spectra.")
    p.add_argument("--ra", type=float, default=None, help="RA (deg) for spectra without a position.")
    p.add_argument("--dec", type=float, default=None, help="Dec (deg) for spectra without a position.")
    p.set_defaults(func=_cmd_ingest)

    p = subparsers.add_parser(
        "dla-quality", help="Completeness, purity and errors on injected DLAs; real spectra vs catalogues."
    )
    p.add_argument("--sightlines", type=int, default=2000, help="Simulated test sightlines (default 2000).")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument(
        "--real",
        default=None,
        help="Directory of real spectra and catalogues (e.g. ../shared/data/qso_spectra).",
    )
    p.add_argument(
        "--z",
        action="append",
        default=None,
        metavar="SOURCE=Z",
        help="Quasar redshift of a real spectrum that no catalogue gives (repeatable).",
    )
    p.add_argument("--model", default=None, help="Package (default: the shipped one).")
    p.add_argument("--json", default=None, help="Write the report here too.")
    p.set_defaults(func=_cmd_quality)
