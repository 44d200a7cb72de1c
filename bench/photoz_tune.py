#!/usr/bin/env python
"""Choose the photo-z training recipe on a tuning split of RAIL's cosmoDC2 *training* file.

The validation file (``test_dc2_validation_9816.hdf5``) is never read here:
each recipe is trained on the rest of the training file
(``test_dc2_training_9816.hdf5``) and scored on a tuning split carved from
it (``--tune-fraction``, drawn with ``--split-seed``).  The validation file
is touched once, by ``bench/photoz_rail.py --seeds 0 1 2``, with the
defaults this search chose.

Run it with the project's environment and the folder of RAIL's example data
(``pz-rail-base`` ships it; ``make bench-photoz`` creates ``.venv-rail``
with it)::

    PYTHONPATH=python .venv/bin/python bench/photoz_tune.py \
        --data-dir .venv-rail/lib/python3.*/site-packages/rail/examples_data/testdata \
        --recipes default members10 --seeds 0 1 --jobs 2

Each recipe is a set of `PhotozTrainingConfig` overrides (``--list`` prints
them).  Results are appended to ``--out`` (JSON lines) and printed as a
table of the mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
sys.path.insert(0, HERE)

#: Candidate recipes: overrides of `PhotozTrainingConfig` (``default`` is the trainer's own).
RECIPES: dict[str, dict] = {
    "default": {},
    "no_recalibration": dict(pit_knots=0),
    "knots11": dict(pit_knots=11),
    "knots41": dict(pit_knots=41),
    "members10": dict(n_members=10),
    "hidden256": dict(hidden=(256, 256, 256)),
    "hidden256x4": dict(hidden=(256, 256, 256, 256)),
    "bins300": dict(n_bins=300, target_sigma_bins=2.0),
    "target2": dict(target_sigma_bins=2.0),
    "target0.5": dict(target_sigma_bins=0.5),
    "lr1e-3": dict(learning_rate=1e-3),
    "batch128": dict(batch_size=128),
    "epochs160": dict(epochs=160, patience=25),
    "wd1e-2": dict(weight_decay=1e-2),
    "dropout0.1": dict(dropout=0.1),
    "noband_dropout": dict(band_dropout=0.0),
    "band_dropout0.05": dict(band_dropout=0.05),
    "target1.5": dict(target_sigma_bins=1.5),
    "hidden128x4": dict(hidden=(128, 128, 128, 128)),
    "lr5e-3": dict(learning_rate=5e-3),
    "batch512": dict(batch_size=512, learning_rate=5e-3),
    "flux_noise1": dict(flux_noise=1.0),
    "no_refit": dict(refit=False),
    "probability": dict(combine="probability"),
    "members10_h256": dict(n_members=10, hidden=(256, 256, 256)),
    "noise_augment0.5": dict(noise_augment=0.5),
    "noise_augment1": dict(noise_augment=1.0),
    "noise_augment2": dict(noise_augment=2.0),
    "noise_augment1_epochs120": dict(noise_augment=1.0, epochs=120, patience=25),
    "noise_augment1_no_recalibration": dict(noise_augment=1.0, pit_knots=0),
    "noise_augment1_h256": dict(noise_augment=1.0, hidden=(256, 256, 256)),
    "noise_augment1_h128x4": dict(noise_augment=1.0, hidden=(128, 128, 128, 128)),
    "hidden128x2": dict(hidden=(128, 128)),
    "fit_fraction0.5": dict(fit_fraction=0.5),
}


def run_one(recipe: str, seed: int, data_dir: str, tune_fraction: float, split_seed: int,
            threads: int) -> dict:
    """Train ``recipe`` with ``seed`` on the fitting part and score it on the tuning split.

    Parameters
    ----------
    recipe : `str`
        Name in `RECIPES`.
    seed : `int`
        Training seed.
    data_dir : `str`
        Folder with RAIL's example files.
    tune_fraction : `float`
        Share of the training file held out for scoring.
    split_seed : `int`
        Seed of the tuning split.
    threads : `int`
        Number of torch threads.

    Returns
    -------
    row : `dict`
        The recipe, seed, sizes, metrics and training time.
    """
    import torch

    torch.set_num_threads(threads)
    from lsst.meas.ml.photoz.features import PhotozColumns
    from lsst.meas.ml.photoz.metrics import photoz_metrics
    from lsst.meas.ml.photoz.predict import predict_photoz
    from lsst.meas.ml.photoz.train import PhotozTrainingConfig, train_photoz
    from photoz_rail import BANDS, TRAIN_FILE, load_photometry, to_flux_inputs

    data = load_photometry(os.path.join(data_dir, TRAIN_FILE))
    n = len(data["redshift"])
    order = np.random.default_rng(split_seed).permutation(n)
    n_tune = int(round(tune_fraction * n))
    tune, fit = order[:n_tune], order[n_tune:]
    overrides = dict(RECIPES[recipe])
    fit_fraction = overrides.pop("fit_fraction", 1.0)  # train on part of the fitting rows only
    if fit_fraction < 1.0:
        fit = fit[np.random.default_rng(7).permutation(fit.size)[: int(round(fit_fraction * fit.size))]]
    x = to_flux_inputs(data)
    z = np.asarray(data["redshift"], dtype=np.float64)
    columns = PhotozColumns(bands=tuple(BANDS), id_column="id")
    config = PhotozTrainingConfig(seed=seed, **overrides)
    t0 = time.perf_counter()
    package = train_photoz(x[fit], z[fit], columns, config).package
    train_s = time.perf_counter() - t0
    table = {"id": np.arange(n_tune)}
    for k in range(len(BANDS)):
        table[columns.flux_columns[k]] = x[tune, k]
        table[columns.flux_err_columns[k]] = x[tune, len(BANDS) + k]
    catalog = predict_photoz(package, table, columns)
    edges = np.asarray(package.outputs["bin_edges"])
    pdf = np.asarray(catalog["photoz_pdf"], dtype=np.float64)
    m = photoz_metrics(np.asarray(catalog["photoz_mode"]), z[tune], pdf=pdf, edges=edges)
    med = photoz_metrics(np.asarray(catalog["photoz_median"]), z[tune])
    # The mode of the ensemble PDF before the PIT recalibration (temperature applied).
    from lsst.meas.ml.models.photoz import combine_member_logits
    from lsst.meas.ml.photoz.pdf import summarize_pdf

    model = package.build_model().eval()
    with torch.no_grad():
        logits, _ = model.member_outputs(torch.from_numpy(np.ascontiguousarray(x[tune], dtype=np.float32)))
        raw_pdf = combine_member_logits(logits, model.temperature, model.combine).numpy()
    raw = photoz_metrics(summarize_pdf(raw_pdf, edges)["mode"], z[tune])
    return dict(recipe=recipe, seed=seed, split_seed=split_seed, n_fit=int(fit.size), n_tune=int(n_tune),
                sigma_nmad=m["sigma_nmad"], outlier_frac=m["outlier_frac"], pit_ks=m["pit_ks"],
                crps=m["crps"], bias=m["bias"], sigma_nmad_median=med["sigma_nmad"],
                sigma_nmad_uncalibrated=raw["sigma_nmad"], train_s=train_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="Folder with RAIL's example files (default: found through rail.examples_data).")
    parser.add_argument("--recipes", nargs="+", default=["default"], help="Recipes to run (see --list).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tune-fraction", type=float, default=0.3, help="Share of the training file held "
                        "out for tuning (default %(default)s).")
    parser.add_argument("--split-seed", type=int, default=2024, help="Seed of the tuning split.")
    parser.add_argument("--jobs", type=int, default=1, help="Trainings run side by side (one thread each).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training.")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "photoz_tune.jsonl"),
                        help="JSON-lines file the results are appended to.")
    parser.add_argument("--list", action="store_true", help="Print the recipes and exit.")
    args = parser.parse_args(argv)
    if args.list:
        for name, overrides in RECIPES.items():
            print(f"{name:<16} {overrides}")
        return 0
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; --list prints them")
    data_dir = args.data_dir
    if data_dir is None:
        from photoz_rail import data_dir as rail_data_dir

        data_dir = rail_data_dir()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    jobs = [(r, s) for r in args.recipes for s in args.seeds]
    rows = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(run_one, r, s, data_dir, args.tune_fraction, args.split_seed, args.threads): (r, s)
            for r, s in jobs
        }
        for fut in concurrent.futures.as_completed(futures):
            row = fut.result()
            rows.append(row)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{row['recipe']:<16} seed {row['seed']}: sigma_NMAD {row['sigma_nmad']:.4f} outliers "
                  f"{row['outlier_frac']:.4f} PIT KS {row['pit_ks']:.4f} CRPS {row['crps']:.4f} "
                  f"({row['train_s']:.0f} s)", flush=True)
    print(f"\nTuning split: {rows[0]['n_tune']} of the training file's galaxies (split seed "
          f"{args.split_seed}); fitted on {rows[0]['n_fit']}.")
    print(f"{'recipe':<16}{'sigma_NMAD':>18}{'outliers':>18}{'PIT KS':>18}{'CRPS':>10}"
          f"{'uncalibrated mode':>20}")
    for recipe in args.recipes:
        sel = [r for r in rows if r["recipe"] == recipe]

        def ms(key: str, sel=sel) -> str:
            v = np.array([r[key] for r in sel])
            return f"{v.mean():.4f} +- {v.std():.4f}"

        print(f"{recipe:<16}{ms('sigma_nmad'):>18}{ms('outlier_frac'):>18}{ms('pit_ks'):>18}"
              f"{np.mean([r['crps'] for r in sel]):>10.4f}{ms('sigma_nmad_uncalibrated'):>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
