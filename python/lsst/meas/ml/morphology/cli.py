"""``meas-ml`` sub-commands of the galaxy-morphology product.

* ``meas-ml train morphology --butler REPO --collections C --out P``: stamps
  of every object of the collection's coadds, labelled from a labels table
  (default ``truth_object.hubble_type``); or ``--images 'DIR/*.png' --labels
  L.csv --id-column ID --label-column LABEL [--unlabelled 'OTHER/*.png']``
  for image files.  Semi-supervised by default: self-supervised pre-training
  on every stamp (``--pretrain-steps``, 1000), then fine-tuning on the
  labels (``--fixmatch`` adds FixMatch; ``--supervised``: labels only).
* ``meas-ml predict morphology --model P --images 'DIR/*.png' --out OUT``:
  ``id``, ``morph_class`` and the probability columns of image files.
* ``meas-ml bench morphology``: galaxies per second per patch, the share of
  reading and cutting stamps, and the ratio to the bare model loop.
* ``meas-ml morphology-quality``: accuracy and macro-F1 with 1%, 10% and
  100% of the labels, semi-supervised (pre-trained, FixMatch) against
  supervised, DAT against ResNet, confusion-matrix PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

__all__ = ["PRETRAIN_STEPS", "add_bench_parser", "add_commands", "add_predict_parser", "add_train_parser"]

#: Self-supervised pre-training steps of ``meas-ml train morphology`` (the
#: measurements behind the choice: ``doc/morphology.md``).
PRETRAIN_STEPS = 1000


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _cmd_train(args: argparse.Namespace) -> int:
    from ..fileio import refuse_output_over_input
    from .features import DEFAULT_BANDS, DEFAULT_CLASSES, MorphologyInputError
    from .train import MorphologyTrainingConfig, data_from_butler, data_from_files, train_morphology

    if bool(args.images) == bool(args.butler):
        raise MorphologyInputError("meas-ml train morphology: give exactly one of --images or --butler.")
    refuse_output_over_input(args.out, [args.labels])
    if args.images:
        data = data_from_files(
            args.images,
            args.labels,
            args.id_column,
            args.label_column or "label",
            unlabelled=args.unlabelled,
            classes=_split(args.classes),
            stamp_size=args.stamp_size,
            resize=args.resize,
        )
    else:
        from lsst.daf.butler import Butler

        collections = _split(args.collections) or []
        butler = Butler.from_config(args.butler)
        data = data_from_butler(
            butler,
            collections,
            labels_dataset=args.labels_dataset,
            label_column=args.label_column or "hubble_type",
            bands=_split(args.bands) or list(DEFAULT_BANDS),
            stamp_size=args.stamp_size or 64,
            classes=_split(args.classes) or list(DEFAULT_CLASSES),
        )
        data.description["butler"] = str(args.butler)
    config = MorphologyTrainingConfig(
        architecture=args.architecture,
        size=args.size,
        semi_supervised=bool(args.fixmatch) and not args.supervised,
        pretrain_steps=0 if args.supervised else args.pretrain_steps,
        pretrain_batch=args.pretrain_batch,
        steps=args.steps,
        batch_size=args.batch_size,
        mu=args.mu,
        threshold=args.threshold,
        label_fraction=args.label_fraction,
        seed=args.seed,
        num_threads=args.threads,
        device=args.device,
        version=args.version,
    )
    result = train_morphology(data, config)
    result.package.save(args.out)
    print(
        json.dumps(
            {
                "out": args.out,
                "classes": result.package.outputs["class_names"],
                "metrics": result.metrics,
                "n_train": result.n_train,
                "n_validation": result.n_validation,
                **result.report,
                "training_seconds": round(result.training_seconds, 1),
            },
            indent=2,
        )
    )
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train morphology``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml train``.
    """
    p = subparsers.add_parser("morphology", help="Train the galaxy-morphology classifier (DAT or ResNet).")
    p.add_argument("--butler", default=None, help="Repository with coadds, object table and labels table.")
    p.add_argument("--collections", default="MLSim/defaults", help="Comma-separated input collections.")
    p.add_argument("--labels-dataset", default="truth_object", help="Labels table dataset (per tract).")
    p.add_argument("--images", default=None, help="Glob of image files (FITS, NPY, PNG, JPEG); stem = id.")
    p.add_argument(
        "--labels", default=None, help="Labels table of the image files (CSV, ECSV, Parquet, FITS)."
    )
    p.add_argument("--id-column", default="id", help="Id column of --labels (default id).")
    p.add_argument(
        "--label-column",
        default=None,
        help="Label column (default hubble_type for --butler, label for --labels).",
    )
    p.add_argument("--unlabelled", default=None, help="Glob of further, unlabelled image files.")
    p.add_argument(
        "--classes",
        default=None,
        help="Comma-separated classes (default E,S0,Sa,Sb,Sc/Sd,Irr "
        "for --butler, the distinct labels for --labels).",
    )
    p.add_argument("--bands", default=None, help="Comma-separated bands (--butler; default g,r,i,z,y).")
    p.add_argument(
        "--stamp-size", type=int, default=None, help="Stamp side (default 64; files: most common)."
    )
    p.add_argument(
        "--resize",
        choices=("centre", "error"),
        default="centre",
        help="Image files of another size: crop/pad about the centre, or refuse.",
    )
    p.add_argument("--architecture", choices=("morph_dat", "morph_resnet"), default="morph_dat")
    p.add_argument("--size", choices=("small", "wide"), default="small", help="Model width (wide: for GPUs).")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=PRETRAIN_STEPS,
        help="Self-supervised pre-training steps on every stamp, labelled or not, before the "
        "classifier is fine-tuned on the labels (default %(default)s; 0: none).",
    )
    p.add_argument("--pretrain-batch", type=int, default=64, help="Stamps per pre-training step.")
    p.add_argument("--fixmatch", action="store_true", help="Add FixMatch pseudo-labels to the fine-tuning.")
    p.add_argument("--supervised", action="store_true", help="Labels only: no pre-training and no FixMatch.")
    p.add_argument("--steps", type=int, default=300, help="Classifier training (fine-tuning) steps.")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mu", type=int, default=2, help="Unlabelled stamps per labelled stamp in a step.")
    p.add_argument("--threshold", type=float, default=0.9, help="Pseudo-label confidence.")
    p.add_argument("--label-fraction", type=float, default=1.0, help="Keep this fraction of the labels.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="Torch CPU threads (0: default).")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--out", required=True, help="Output package (.safetensors).")
    p.set_defaults(func=_cmd_train)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..engine import InferenceEngine
    from ..fileio import refuse_output_over_input, write_table
    from ..imagefiles import expand_images
    from ..packages import ModelPackage
    from .predict import predict_image_files

    refuse_output_over_input(args.out, [args.model, *map(str, expand_images(args.images))])
    package = ModelPackage.load(args.model)
    from .task import ClassifyMorphologyConfig

    config = ClassifyMorphologyConfig().inference  # the task's engine settings
    config.device = args.device
    catalog = predict_image_files(
        package,
        args.images,
        engine=InferenceEngine(config),
        resize=args.resize,
        dihedral=args.dihedral,
        ood_threshold=args.ood_threshold,
    )
    write_table(catalog, args.out)
    skipped = catalog.meta["n_skipped"]
    print(
        f"Wrote {len(catalog)} objects to {args.out}"
        + (f"; skipped {skipped} unreadable file(s)." if skipped else ".")
    )
    return 0


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict morphology``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml predict``.
    """
    p = subparsers.add_parser("morphology", help="Morphology classes of image files.")
    p.add_argument("--model", required=True, help="Package trained on image files.")
    p.add_argument("--images", required=True, help="Glob of image files (FITS, NPY, PNG, JPEG).")
    p.add_argument("--out", required=True, help="Output table (format from the extension).")
    p.add_argument(
        "--resize",
        choices=("centre", "error"),
        default="centre",
        help="Images of another size: crop/pad about the centre (RESIZED flag), or refuse.",
    )
    p.add_argument("--dihedral", action="store_true", help="Average over the 8 rotations and flips.")
    p.add_argument("--ood-threshold", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_predict)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import benchmark

    figures = benchmark(
        butler=args.butler,
        collections=_split(args.collections) or [],
        n_galaxies=args.galaxies,
        stamp_size=args.stamp_size,
        architecture=args.architecture,
        device=args.device,
        threads=args.threads,
        dihedral=args.dihedral,
    )
    print(json.dumps(figures, indent=2))
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench morphology``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The sub-parsers of ``meas-ml bench``.
    """
    p = subparsers.add_parser(
        "morphology", help="Galaxies per second per patch; read/cut share; ratio to the bare model loop."
    )
    p.add_argument("--butler", default=None, help="Repository to read a patch from (default: simulate one).")
    p.add_argument("--collections", default="MLSim/defaults")
    p.add_argument(
        "--galaxies", type=int, default=1500, help="Galaxies of the simulated tract (no --butler)."
    )
    p.add_argument("--stamp-size", type=int, default=64)
    p.add_argument("--architecture", choices=("morph_dat", "morph_resnet"), default="morph_dat")
    p.add_argument("--device", default="cpu", help="cpu or cuda.")
    p.add_argument("--threads", type=int, default=2, help="Torch CPU threads (default 2).")
    p.add_argument("--dihedral", action="store_true", help="With the 8-fold rotation/flip average.")
    p.set_defaults(func=_cmd_bench)


def _cmd_quality(args: argparse.Namespace) -> int:
    from ..fileio import write_text_atomic
    from .quality import QualityConfig, format_gains, format_table, paired_gains, quality_report

    config = QualityConfig.full() if args.full else QualityConfig()
    if args.steps:
        config.steps = args.steps
    if args.pretrain_steps is not None:
        config.pretrain_steps = args.pretrain_steps
    config.device = args.device
    seeds = args.seeds or [args.seed]
    reports = []
    for seed in seeds:
        config = dataclasses.replace(config, seed=seed)
        png = args.png
        if png and len(seeds) > 1:
            stem, ext = os.path.splitext(png)
            png = f"{stem}_seed{seed}{ext or '.png'}"
        reports.append(quality_report(config, png=png, threads=args.threads))
        print(f"seed {seed}:")
        print(format_table(reports[-1]))
    gains = paired_gains(reports)
    print("Gain over the supervised DAT, paired by seed (mean ± standard error):")
    print(format_gains(gains))
    if args.json:
        payload = reports[0] if len(reports) == 1 else {"reports": reports}
        write_text_atomic(args.json, json.dumps({**payload, "paired_gains": gains}, indent=2) + "\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``morphology-quality``.

    Parameters
    ----------
    subparsers : `argparse._SubParsersAction`
        The top-level ``meas-ml`` sub-parsers.
    """
    p = subparsers.add_parser(
        "morphology-quality",
        help="Accuracy and macro-F1 on held-out simulated galaxies with 1%%, 10%%, 100%% of the labels: "
        "semi-supervised vs supervised, DAT vs ResNet; confusion-matrix PNG.",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="Full size (larger survey, 64-pixel stamps, longer "
        "training); the default is a reduced size that runs in minutes on 2 cores.",
    )
    p.add_argument("--steps", type=int, default=0, help="Override the training steps of every run.")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help="Override the self-supervised pre-training steps (0: no pre-trained route).",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="Several seeds (each its own split and labelled subset); prints the gains paired by seed.",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda.")
    p.add_argument(
        "--png", default=None, help="Confusion matrix of the pre-trained DAT at 10%% (per seed with --seeds)."
    )
    p.add_argument("--json", default=None, help="Write the report here too.")
    p.set_defaults(func=_cmd_quality)
