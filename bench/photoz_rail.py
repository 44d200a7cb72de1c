#!/usr/bin/env python
"""Photo-z benchmark: meas_ml's MBRNN against RAIL's FlexZBoost and KNN, side by side.

All three estimators are trained on RAIL's cosmoDC2 training file
(``test_dc2_training_9816.hdf5``, 10,225 galaxies) and evaluated on its
validation file (``test_dc2_validation_9816.hdf5``, 20,449 galaxies), both
shipped in ``pz-rail-base``, in the same process on the same CPU threads,
and scored by the same code (`lsst.meas.ml.photoz.metrics`): point metrics on the
PDF mode (as RAIL reports them), PIT KS and CRPS on each estimator's PDF
converted to the same 301-point grid (0 to 3).

The magnitudes of the files are converted to nJy fluxes for MBRNN
(``flux = 10**((31.4 - mag) / 2.5)``); u-band non-detections (magnitude
99, 1-sigma limiting magnitude in the error column) become zero fluxes
with the limit as error.  RAIL's estimators read the magnitudes with their
default settings (non-detections replaced by RAIL's magnitude limits).

Run it from a clean clone with ``make bench-photoz`` (creates the separate
``.venv-rail`` environment), or directly::

    PYTHONPATH=python .venv-rail/bin/python bench/photoz_rail.py [--quick] [--out-dir DIR]

Timings depend on the machine's load; compare them only within one run.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

BANDS = "ugrizy"
TRAIN_FILE = "test_dc2_training_9816.hdf5"
VALID_FILE = "test_dc2_validation_9816.hdf5"
#: Common evaluation grid for every estimator's PDF.
GRID_EDGES = np.linspace(0.0, 3.0, 302)


def data_dir() -> str:
    """The folder of RAIL's example data, found through importlib."""
    return str(importlib.resources.files("rail.examples_data") / "testdata")


def load_photometry(path: str) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as fh:
        group = fh["photometry"]
        return {key: group[key][:] for key in group}


def to_flux_inputs(data: dict[str, np.ndarray]) -> np.ndarray:
    from lsst.meas.ml.photoz.features import magnitudes_to_fluxes

    fluxes, errors = [], []
    for band in BANDS:
        f, e = magnitudes_to_fluxes(
            data[f"mag_{band}_lsst"], data[f"mag_err_{band}_lsst"], nondetection_limit_in_error=True
        )
        fluxes.append(f)
        errors.append(e)
    return np.column_stack(fluxes + errors).astype(np.float32)


def score(
    name: str, mode: np.ndarray, pdf: np.ndarray, z: np.ndarray, train_s: float, n_per_s: float
) -> dict:
    from lsst.meas.ml.photoz import metrics

    m = metrics.photoz_metrics(mode, z, pdf=pdf, edges=GRID_EDGES)
    return dict(
        estimator=name,
        sigma_nmad=m["sigma_nmad"],
        bias=m["bias"],
        outlier_frac=m["outlier_frac"],
        outlier_frac_rail=m["outlier_frac_rail"],
        pit_ks=m["pit_ks"],
        crps=m["crps"],
        objects_per_s=n_per_s,
        train_s=train_s,
    )


def rebin_cdf(cdf_at_edges: np.ndarray) -> np.ndarray:
    """Bin probabilities on GRID_EDGES from CDF values at the edges."""
    cdf = np.clip(np.nan_to_num(cdf_at_edges, nan=0.0), 0.0, 1.0)
    cdf = np.maximum.accumulate(cdf, axis=1)
    p = np.diff(cdf, axis=1)
    p[:, -1] += np.clip(1.0 - cdf[:, -1], 0.0, None)  # mass beyond the grid into the last bin
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])


def run_ours(train: dict, valid: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    import torch
    from lsst.meas.ml.engine import InferenceConfig, InferenceEngine
    from lsst.meas.ml.photoz.features import PhotozColumns
    from lsst.meas.ml.photoz.metrics import pit, plot_photoz_vs_true, plot_pit
    from lsst.meas.ml.photoz.pdf import compact_storage_report
    from lsst.meas.ml.photoz.predict import predict_photoz
    from lsst.meas.ml.photoz.train import PhotozTrainingConfig, train_photoz

    torch.set_num_threads(args.threads)
    columns = PhotozColumns(bands=tuple(BANDS), id_column="id")
    config = PhotozTrainingConfig(seed=args.seed)
    if args.quick:
        config.n_members, config.epochs = 1, 15
    if args.members:
        config.n_members = args.members
    t0 = time.perf_counter()
    result = train_photoz(
        to_flux_inputs(train), train["redshift"], columns, config,
        provenance={"training_data": f"pz-rail-base {TRAIN_FILE} (magnitudes converted to nJy fluxes)"},
        name="photoz-mbrnn-cosmodc2",
    )
    train_s = time.perf_counter() - t0
    package = result.package
    if args.save_package:
        package.save(args.save_package)
        size_mb = os.path.getsize(args.save_package) / 1e6
        print(f"Saved the package to {args.save_package} ({size_mb:.2f} MB).")

    from astropy.table import Table

    table = Table({"id": valid["id"]})
    inputs = to_flux_inputs(valid)
    for k, band in enumerate(BANDS):
        table[columns.flux_columns[k]] = inputs[:, k]
        table[columns.flux_err_columns[k]] = inputs[:, len(BANDS) + k]
    icfg = InferenceConfig()
    icfg.device = "cpu"
    engine = InferenceEngine(icfg)
    predict_photoz(package, table[:100], columns, engine=engine)  # warm the model cache
    t0 = time.perf_counter()
    catalog = predict_photoz(package, table, columns, engine=engine)
    pred_s = time.perf_counter() - t0
    edges = np.asarray(package.outputs["bin_edges"])
    pdf = np.asarray(catalog["photoz_pdf"], dtype=np.float64)
    from lsst.meas.ml.photoz.metrics import cdf_on_grid

    pdf_grid = rebin_cdf(cdf_on_grid(pdf, edges, GRID_EDGES))
    z = valid["redshift"]
    row = score("meas_ml MBRNN", np.asarray(catalog["photoz_mode"]), pdf_grid, z, train_s, len(z) / pred_s)
    from lsst.meas.ml.photoz.metrics import photoz_metrics

    native = photoz_metrics(np.asarray(catalog["photoz_mode"]), z, pdf=pdf, edges=edges)
    row["pit_ks_native_bins"] = native["pit_ks"]
    row["crps_native_bins"] = native["crps"]
    median_metrics = photoz_metrics(np.asarray(catalog["photoz_median"]), z)
    extra = dict(
        median_point=dict(median_metrics),
        compact=compact_storage_report(pdf, edges, z),
        ood_flagged_frac=float(np.mean((np.asarray(catalog["photoz_flags"]) & 4) != 0)),
        package=dict(name=package.name, sha256=package.sha256, hyperparameters=package.hyperparameters,
                     validation_metrics=package.provenance["metrics"]),
    )
    os.makedirs(args.out_dir, exist_ok=True)
    plot_photoz_vs_true(catalog["photoz_mode"], z, os.path.join(args.out_dir, "photoz_mbrnn_vs_true.png"),
                        title="meas_ml MBRNN, cosmoDC2 validation")
    plot_pit(pit(pdf, edges, z), os.path.join(args.out_dir, "photoz_mbrnn_pit.png"), title="MBRNN PIT")
    return row, extra


def run_rail(name: str, train_path: str, valid_path: str, valid: dict, args: argparse.Namespace) -> dict:
    import tables_io

    workdir = tempfile.mkdtemp(prefix="photoz-bench-")
    if name == "FlexZBoost":
        from rail.estimation.algos.flexzboost import FlexZBoostEstimator as Estimator
        from rail.estimation.algos.flexzboost import FlexZBoostInformer as Informer
    else:
        from rail.estimation.algos.k_nearneigh import KNearNeighEstimator as Estimator
        from rail.estimation.algos.k_nearneigh import KNearNeighInformer as Informer
    training = tables_io.read(train_path)  # {"photometry": {column: array}}
    test = tables_io.read(valid_path)
    informer = Informer.make_stage(
        name=f"inform_{name}", model=os.path.join(workdir, f"{name}.pkl"), hdf5_groupname="photometry"
    )
    t0 = time.perf_counter()
    informer.inform(training)
    train_s = time.perf_counter() - t0
    estimator = Estimator.make_stage(
        name=f"estimate_{name}", hdf5_groupname="photometry", model=informer.get_handle("model"),
        output=os.path.join(workdir, f"{name}_out.hdf5"), calculated_point_estimates=["zmode"],
        output_mode="return",
    )
    t0 = time.perf_counter()
    ensemble = estimator.estimate(test)
    ensemble = ensemble() if callable(ensemble) else ensemble.data
    pred_s = time.perf_counter() - t0
    z = valid["redshift"]
    mode = np.asarray(ensemble.ancil["zmode"]).ravel()
    pdf_grid = rebin_cdf(np.asarray(ensemble.cdf(GRID_EDGES)))
    return score(f"RAIL {name}", mode, pdf_grid, z, train_s, len(z) / pred_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="One small MBRNN member (smoke test).")
    parser.add_argument("--members", type=int, default=None, help="MBRNN ensemble size (default: trainer's).")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads for MBRNN training and inference (default 1).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-rail", action="store_true", help="Only run MBRNN.")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "out"), help="Plots and JSON results.")
    parser.add_argument("--save-package", default=None, help="Also write the trained MBRNN package here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    folder = data_dir()
    train_path, valid_path = os.path.join(folder, TRAIN_FILE), os.path.join(folder, VALID_FILE)
    train, valid = load_photometry(train_path), load_photometry(valid_path)
    print(
        f"cosmoDC2 (pz-rail-base): train {len(train['redshift'])}, "
        f"validation {len(valid['redshift'])} galaxies"
    )

    rows = []
    ours, extra = run_ours(train, valid, args)
    rows.append(ours)
    if not args.skip_rail:
        for name in ("FlexZBoost", "KNN"):
            rows.append(run_rail(name, train_path, valid_path, valid, args))

    header = f"{'estimator':<16}{'sigma_NMAD':>11}{'bias':>9}{'out>0.15':>9}{'out_RAIL':>9}{'PIT KS':>8}" \
             f"{'CRPS':>8}{'obj/s':>10}{'train s':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['estimator']:<16}{r['sigma_nmad']:>11.4f}{r['bias']:>9.4f}{r['outlier_frac']:>9.4f}"
              f"{r['outlier_frac_rail']:>9.4f}{r['pit_ks']:>8.4f}{r['crps']:>8.4f}{r['objects_per_s']:>10.0f}"
              f"{r['train_s']:>9.1f}")
    if len(rows) > 1:
        fz = rows[1]
        print(f"\nMBRNN / FlexZBoost: sigma_NMAD x{ours['sigma_nmad'] / fz['sigma_nmad']:.3f}, outliers "
              f"x{ours['outlier_frac'] / fz['outlier_frac']:.3f}, "
              f"objects/s x{ours['objects_per_s'] / fz['objects_per_s']:.1f}, "
              f"training time x{ours['train_s'] / fz['train_s']:.2f}")
    targets = dict(sigma_nmad=0.017, outlier_frac=0.025, pit_ks=0.04)
    print("Targets: " + ", ".join(f"{k} <= {v} ({'met' if ours[k] <= v else 'NOT met'}: {ours[k]:.4f})"
                                  for k, v in targets.items()))
    c = extra["compact"]
    print(f"Compact PDF: {c['compact_bytes']:.0f} bytes/object (float16 quantiles) vs {c['full_bytes']:.0f} "
          f"(float32 bins); PIT KS {c['pit_ks_compact']:.4f} vs {c['pit_ks_full']:.4f}; CRPS "
          f"{c['crps_compact']:.4f} vs {c['crps_full']:.4f} ({100 * c['crps_increase_frac']:+.2f}%)")
    print(f"MBRNN median point estimate: sigma_NMAD {extra['median_point']['sigma_nmad']:.4f}, outliers "
          f"{extra['median_point']['outlier_frac']:.4f}; OOD-flagged {100 * extra['ood_flagged_frac']:.2f}%")
    print("Timings vary with the machine's load; the ratios come from one process on the same threads.")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "photoz_rail.json"), "w") as fh:
        json.dump(dict(rows=rows, mbrnn=extra), fh, indent=2, default=float)
    print(f"Results and plots in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
