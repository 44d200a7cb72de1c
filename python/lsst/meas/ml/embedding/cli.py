r"""``meas-ml train embedding``, ``meas-ml predict embedding``, ``meas-ml bench embedding``,
``meas-ml similar`` and ``meas-ml embedding-downstream``.

Examples::

    meas-ml train embedding --repo REPO --collections MLSim/defaults --out emb.safetensors
    meas-ml train embedding --images 'cutouts/*.png' --out emb.safetensors --epochs 100
    meas-ml predict embedding --model emb.safetensors --images 'cutouts/*.png' --out emb.parquet
    meas-ml similar --embeddings emb.parquet --query obj17 -k 8 --out nn.parquet \
        --mosaic nn.png --images 'cutouts/*.png'
    meas-ml embedding-downstream            # reduced size; --size full for the full table
    meas-ml bench embedding --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["add_bench_parser", "add_commands", "add_predict_parser", "add_train_parser"]


def _load_package(path: str | None) -> Any:
    from ..packages import ModelPackage, default_package

    return ModelPackage.load(path) if path else default_package("embedding")


# ----------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .train import EmbeddingTrainingConfig, butler_training_set, files_training_set, train_embedding

    if bool(args.repo) == bool(args.images):
        raise FileNotFoundError(
            "meas-ml train embedding needs either --repo (with --collections) or --images."
        )
    if args.images:
        from ..imagefiles import expand_images

        refuse_output_over_input(args.out, expand_images(args.images))
    config = EmbeddingTrainingConfig(
        stamp_size=args.stamp_size,
        margin=args.margin,
        widths=tuple(args.widths),
        pool=args.pool,
        colour_input=args.colour_input,
        aperture=args.aperture,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        queue_size=args.queue_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        max_seconds=args.max_seconds,
        version=args.version,
    )
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    if args.repo:
        from ..butler import open_repo

        data = butler_training_set(
            open_repo(args.repo),
            args.collections.split(","),
            bands=args.bands.split(","),
            stamp_size=args.stamp_size,
            margin=args.margin,
            where=args.where,
            max_objects=args.max_objects,
            extended_only=not args.all_objects,
        )
    else:
        data = files_training_set(
            args.images,
            stamp_size=args.stamp_size,
            margin=args.margin,
            bin_factor="auto" if args.bin == "auto" else int(args.bin),
        )
        if args.max_objects is not None:
            data.x, data.ids = data.x[: args.max_objects], data.ids[: args.max_objects]
    result = train_embedding(data, config)
    result.package.save(args.out)
    print(
        json.dumps(
            {
                "package": args.out,
                "n_train": result.n_train,
                "n_validation": result.n_validation,
                "training_seconds": round(result.training_seconds, 1),
                **result.metrics,
                "training_data": data.source,
            },
            indent=2,
            default=float,
        )
    )
    return 0


def add_train_parser(subparsers: Any) -> None:
    """Add ``embedding`` under ``meas-ml train``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml train``.
    """
    p = subparsers.add_parser("embedding", help="Pre-train the self-supervised galaxy encoder (MoCo v2).")
    p.add_argument("--repo", help="Butler repository with coadds (deep_coadd) and the object table.")
    p.add_argument("--collections", default="MLSim/defaults", help="Comma-separated input collections.")
    p.add_argument("--where", default="", help="Butler query constraint on the coadds (e.g. patch IN (0,1)).")
    p.add_argument("--bands", default="u,g,r,i,z,y", help="Bands of a --repo, one channel each.")
    p.add_argument("--all-objects", action="store_true", help="Also point sources (default: extended only).")
    p.add_argument("--images", nargs="+", help="Image files or globs (FITS, NPY, PNG, JPEG); stem = id.")
    p.add_argument(
        "--bin",
        default="auto",
        help="Integer binning of image files ('auto': to about the stamp size; 1: none).",
    )
    p.add_argument("--max-objects", type=int, default=None, help="Use at most this many stamps.")
    p.add_argument("--out", required=True, help="Model package to write (.safetensors).")
    p.add_argument("--stamp-size", type=int, default=40, help="Model input side in pixels.")
    p.add_argument("--margin", type=int, default=4, help="Jitter margin: stamps are cut 2*margin larger.")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument(
        "--pool",
        choices=("centre", "mean"),
        default="centre",
        help="Pooling of the last feature map: centre-weighted (default) or a plain mean.",
    )
    p.add_argument(
        "--colour-input",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also feed the band differences (colours) to the encoder (default on).",
    )
    p.add_argument(
        "--aperture",
        type=float,
        default=2.0,
        help="Sigma (pixels) of the Gaussian aperture whose photometry and colours start the "
        "representation (0: none; default %(default)s).",
    )
    p.add_argument("--epochs", type=int, default=40, help="Passes over the stamps (longer: more).")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--queue-size", type=int, default=4096, help="MoCo negatives (capped at half the set).")
    p.add_argument("--max-seconds", type=float, default=None, help="Stop after this wall time.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default).")
    p.add_argument("--version", default="1.0.0")
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from ..engine import InferenceConfig, InferenceEngine
    from ..fileio import refuse_output_over_input, write_table
    from ..imagefiles import expand_images
    from .features import file_stamps
    from .predict import check_package, predict_embedding

    refuse_output_over_input(args.out, [*expand_images(args.images), args.model])
    package = _load_package(args.model)
    check_package(package)
    ids, stamps, skipped = file_stamps(
        args.images,
        size=int(package.inputs.get("file_size", package.inputs["stamp_size"])),
        bin_factor=int(package.inputs.get("bin_factor", 1)),
        channels=int(package.inputs["channels"]),
        resize=args.resize,
    )
    config = InferenceConfig()
    config.device = args.device
    table = predict_embedding(
        package, ids, stamps, InferenceEngine(config), id_column="id", max_nan_fraction=args.max_nan_fraction
    )
    table.meta["skipped_files"] = [p for p, _ in skipped]
    write_table(table, args.out)
    print(
        f"Embedded {int((~stamps.offimage).sum())} of {len(ids)} images with {package.name} "
        f"{package.version} ({int(stamps.resized.sum())} cropped or padded, "
        f"{len(skipped)} unreadable file(s) skipped); wrote {args.out}."
    )
    return 0


def add_predict_parser(subparsers: Any) -> None:
    """Add ``embedding`` under ``meas-ml predict``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml predict``.
    """
    p = subparsers.add_parser("embedding", help="Embed image files (id = file stem, embedding).")
    p.add_argument("--model", default=None, help="Model package (default: the shipped one).")
    p.add_argument("--images", nargs="+", required=True, help="Image files or globs (quoted).")
    p.add_argument("--out", required=True, help="Output table (.parquet).")
    p.add_argument(
        "--resize",
        choices=("centre", "error"),
        default="centre",
        help="Images of another size: crop or zero-pad about the centre (flag_resized), or fail.",
    )
    p.add_argument("--max-nan-fraction", type=float, default=0.25, help="flag_nan threshold.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps.")
    p.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------
def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    report = run_benchmark(
        _load_package(args.model) if args.model or _has_default() else None,
        n_stamps=args.stamps,
        n_vectors=args.vectors,
        n_queries=args.queries,
        dim=args.dim,
        threads=args.threads,
        device=args.device,
        k=args.k,
    )
    print(json.dumps(report, indent=2, default=float))
    return 0


def _has_default() -> bool:
    from ..packages import default_package_path

    return os.path.exists(default_package_path("embedding"))


def add_bench_parser(subparsers: Any) -> None:
    """Add ``embedding`` under ``meas-ml bench``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml bench``.
    """
    p = subparsers.add_parser("embedding", help="Embeddings/s and similarity-search queries/s (with recall).")
    p.add_argument(
        "--model", default=None, help="Model package (default: the shipped one, else a fresh one)."
    )
    p.add_argument("--stamps", type=int, default=2048, help="Stamps embedded.")
    p.add_argument("--vectors", type=int, default=1_000_000, help="Database size of the search benchmark.")
    p.add_argument("--queries", type=int, default=1000, help="Queries of the search benchmark.")
    p.add_argument("--dim", type=int, default=128, help="Vector dimension of the search benchmark.")
    p.add_argument("-k", type=int, default=10, help="Neighbours per query.")
    p.add_argument("--threads", type=int, default=2, help="torch (and faiss) CPU threads.")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto.")
    p.set_defaults(func=_cmd_bench)


# ----------------------------------------------------------------------
def _cmd_similar(args: argparse.Namespace) -> int:
    import numpy as np

    from ..fileio import refuse_output_over_input, write_table
    from .search import SearchError, load_embeddings, mosaic_png, similar

    refuse_output_over_input(args.out, [args.embeddings, args.query_vectors])
    refuse_output_over_input(args.mosaic, [args.embeddings, args.query_vectors], option="--mosaic")
    ids, vectors = load_embeddings(args.embeddings)
    query_vectors = None
    if args.query_vectors:
        _, query_vectors = load_embeddings(args.query_vectors)
    elif not args.query:
        raise SearchError("Give --query ID ... or --query-vectors TABLE.")
    table = similar(
        args.query,
        ids,
        vectors,
        query_vectors=query_vectors,
        k=args.k,
        method=args.method,
        nprobe=args.nprobe,
    )
    if args.out:
        write_table(table, args.out)
    if args.mosaic:
        if not args.images:
            raise SearchError("--mosaic needs --images (the image files the embeddings came from).")
        from ..imagefiles import load_images

        wanted = set(table["query"]) | set(table["neighbour"])
        images = load_images(args.images)
        pics = {i: np.nan_to_num(img) for i, img in zip(images.ids, images.images) if i in wanted}
        mosaic_png(args.mosaic, table, pics)
    for row in table:
        print(f"{row['query']}\t{row['rank']}\t{row['neighbour']}\t{row['score']:.4f}")
    return 0


def _cmd_downstream(args: argparse.Namespace) -> int:
    from ..fileio import write_text_atomic
    from .downstream import DownstreamConfig, format_table, run_downstream

    config = DownstreamConfig.full() if args.size == "full" else DownstreamConfig()
    if args.galaxies:
        config.n_galaxies = args.galaxies
    if args.epochs:
        config.pretrain_epochs = args.epochs
    if args.draws:
        config.label_draws = args.draws
    config.fine_tune = not args.no_fine_tune
    config.seed = args.seed
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_downstream(config)
    text = format_table(report)
    print(text)
    if args.out:
        write_text_atomic(args.out, json.dumps(report, indent=2, default=float))
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``meas-ml similar`` and ``meas-ml embedding-downstream``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-commands of ``meas-ml``.
    """
    p = subparsers.add_parser("similar", help="Nearest neighbours in an embedding table (exact or faiss).")
    p.add_argument("--embeddings", required=True, help="Table with id/objectId and embedding (.parquet).")
    p.add_argument("--query", nargs="*", default=[], help="Ids of the query objects.")
    p.add_argument("--query-vectors", default=None, help="Table of query embeddings instead of --query.")
    p.add_argument("-k", type=int, default=8, help="Neighbours per query.")
    p.add_argument(
        "--method",
        choices=("exact", "approximate"),
        default="exact",
        help="exact (torch, batched) or approximate (faiss IVF index; needs faiss-cpu).",
    )
    p.add_argument("--nprobe", type=int, default=16, help="Cells searched by the approximate index.")
    p.add_argument("--out", default=None, help="Write the neighbours table here (.parquet).")
    p.add_argument("--mosaic", default=None, help="Write a PNG mosaic of each query and its neighbours.")
    p.add_argument("--images", nargs="*", default=[], help="Image files of the ids, for --mosaic.")
    p.set_defaults(func=_cmd_similar)

    p = subparsers.add_parser(
        "embedding-downstream",
        help="Linear probes on frozen embeddings vs supervised CNNs with 1%% and 10%% of the labels.",
    )
    p.add_argument("--size", choices=("reduced", "full"), default="reduced")
    p.add_argument("--galaxies", type=int, default=None, help="Galaxies of the simulated survey.")
    p.add_argument("--epochs", type=int, default=None, help="Pre-training epochs.")
    p.add_argument("--draws", type=int, default=None, help="Random draws of the labels per fraction (3).")
    p.add_argument(
        "--no-fine-tune", action="store_true", help="Skip the fine-tuned (not frozen) pre-trained route."
    )
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="Write the JSON report here too.")
    p.set_defaults(func=_cmd_downstream)
