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
import itertools
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
_STAGE_COUNTER = itertools.count()
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


def to_flux_inputs(data: dict[str, np.ndarray], bands: str = BANDS) -> np.ndarray:
    from lsst.meas.ml.photoz.features import magnitudes_to_fluxes

    fluxes, errors = [], []
    for band in bands:
        f, e = magnitudes_to_fluxes(
            data[f"mag_{band}_lsst"], data[f"mag_err_{band}_lsst"], nondetection_limit_in_error=True
        )
        missing = np.isnan(data[f"mag_{band}_lsst"])
        fluxes.append(np.where(missing, np.nan, f))
        errors.append(np.where(missing, np.nan, e))
    return np.column_stack(fluxes + errors).astype(np.float32)


def parse_case(case: str) -> tuple[str, float]:
    """``"ugriz"`` or ``"ugrizy+missing0.2"`` -> (bands, fraction of objects missing one band)."""
    bands, _, rest = case.partition("+")
    if not bands or any(b not in BANDS for b in bands) or len(set(bands)) != len(bands):
        raise ValueError(f"Bad band set {bands!r} in case {case!r}: use letters of {BANDS}.")
    fraction = 0.0
    if rest:
        if not rest.startswith("missing"):
            raise ValueError(f"Bad case {case!r}: expected BANDS or BANDS+missingFRACTION.")
        fraction = float(rest[len("missing"):])
    return bands, fraction


def drop_bands(data: dict[str, np.ndarray], bands: str, fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A copy of ``data`` with one band (drawn uniformly) set missing (NaN) for ``fraction`` of the rows."""
    out = {key: np.array(value, copy=True) for key, value in data.items()}
    if fraction <= 0:
        return out
    rng = np.random.default_rng(seed)
    n = len(out["redshift"])
    rows = np.flatnonzero(rng.random(n) < fraction)
    which = rng.integers(0, len(bands), rows.size)
    for k, band in enumerate(bands):
        sel = rows[which == k]
        for key in (f"mag_{band}_lsst", f"mag_err_{band}_lsst"):
            out[key] = out[key].astype(np.float64)
            out[key][sel] = np.nan
    return out


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


def run_ours(
    train: dict, valid: dict, args: argparse.Namespace, bands: str = BANDS, seed: int = 0, plots: bool = True
) -> tuple[dict, dict]:
    import torch
    from lsst.meas.ml.engine import InferenceConfig, InferenceEngine
    from lsst.meas.ml.photoz.features import PhotozColumns
    from lsst.meas.ml.photoz.metrics import pit, plot_photoz_vs_true, plot_pit
    from lsst.meas.ml.photoz.pdf import compact_storage_report
    from lsst.meas.ml.photoz.predict import predict_photoz
    from lsst.meas.ml.photoz.train import PhotozTrainingConfig, train_photoz

    torch.set_num_threads(args.threads)
    columns = PhotozColumns(bands=tuple(bands), id_column="id")
    config = PhotozTrainingConfig(seed=seed)
    if args.quick:
        config.n_members, config.epochs = 1, 15
    if args.members:
        config.n_members = args.members
    t0 = time.perf_counter()
    result = train_photoz(
        to_flux_inputs(train, bands), train["redshift"], columns, config,
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
    inputs = to_flux_inputs(valid, bands)
    for k in range(len(bands)):
        table[columns.flux_columns[k]] = inputs[:, k]
        table[columns.flux_err_columns[k]] = inputs[:, len(bands) + k]
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
    mode = np.asarray(catalog["photoz_mode"])
    row = score(f"meas_ml MBRNN s{seed}", mode, pdf_grid, z, train_s, len(z) / pred_s)
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
    if not plots:
        return row, extra
    os.makedirs(args.out_dir, exist_ok=True)
    plot_photoz_vs_true(catalog["photoz_mode"], z, os.path.join(args.out_dir, "photoz_mbrnn_vs_true.png"),
                        title="meas_ml MBRNN, cosmoDC2 validation")
    plot_pit(pit(pdf, edges, z), os.path.join(args.out_dir, "photoz_mbrnn_pit.png"), title="MBRNN PIT")
    return row, extra


def rail_input(data: dict[str, np.ndarray], bands: str) -> dict:
    """RAIL's input for ``bands``: missing magnitudes (NaN) become RAIL's non-detection value 99."""
    out = {}
    for key, value in data.items():
        value = np.array(value, copy=True)
        if key.startswith("mag_") and value.dtype.kind == "f":
            value[np.isnan(value)] = 99.0
        out[key] = value
    return {"photometry": out}


def run_rail(name: str, train: dict, valid: dict, bands: str) -> dict:
    workdir = tempfile.mkdtemp(prefix="photoz-bench-")
    if name == "FlexZBoost":
        from rail.estimation.algos.flexzboost import FlexZBoostEstimator as Estimator
        from rail.estimation.algos.flexzboost import FlexZBoostInformer as Informer
    else:
        from rail.estimation.algos.k_nearneigh import KNearNeighEstimator as Estimator
        from rail.estimation.algos.k_nearneigh import KNearNeighInformer as Informer
    training, test = rail_input(train, bands), rail_input(valid, bands)
    columns = dict(bands=[f"mag_{b}_lsst" for b in bands], ref_band="mag_i_lsst" if "i" in bands else
                   f"mag_{bands[-1]}_lsst")
    if name == "FlexZBoost":
        columns["err_bands"] = [f"mag_err_{b}_lsst" for b in bands]
    tag = f"{name}_{bands}_{next(_STAGE_COUNTER)}"  # RAIL stage names must be unique in a process
    informer = Informer.make_stage(
        name=f"inform_{tag}", model=os.path.join(workdir, f"{name}.pkl"), hdf5_groupname="photometry",
        **columns,
    )
    t0 = time.perf_counter()
    informer.inform(training)
    train_s = time.perf_counter() - t0
    estimator = Estimator.make_stage(
        name=f"estimate_{tag}", hdf5_groupname="photometry", model=informer.get_handle("model"), **columns,
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


#: Targets of the photo-z's defaults on the full band set, for every training seed.
TARGETS = dict(sigma_nmad=0.0165, outlier_frac=0.023, pit_ks=0.035)


def print_rows(rows: list[dict]) -> None:
    header = f"{'estimator':<18}{'sigma_NMAD':>11}{'bias':>9}{'out>0.15':>9}{'out_RAIL':>9}{'PIT KS':>8}" \
             f"{'CRPS':>8}{'obj/s':>10}{'train s':>9}"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['estimator']:<18}{r['sigma_nmad']:>11.4f}{r['bias']:>9.4f}{r['outlier_frac']:>9.4f}"
              f"{r['outlier_frac_rail']:>9.4f}{r['pit_ks']:>8.4f}{r['crps']:>8.4f}{r['objects_per_s']:>10.0f}"
              f"{r['train_s']:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="One small MBRNN member (smoke test).")
    parser.add_argument("--members", type=int, default=None, help="MBRNN ensemble size (default: trainer's).")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads for MBRNN training and inference (default 1).",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="MBRNN training seeds (default 0).")
    parser.add_argument(
        "--cases", nargs="+", default=[BANDS],
        help="Band sets to run, each BANDS or BANDS+missingFRACTION (one band, drawn at random, missing "
             "for that fraction of the objects of both files), e.g. ugriz griz ugrizy+missing0.2 "
             "(default ugrizy).",
    )
    parser.add_argument("--skip-rail", action="store_true", help="Only run MBRNN.")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "out"), help="Plots and JSON results.")
    parser.add_argument("--save-package", default=None, help="Also write the (first) MBRNN package here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cases = [(case, *parse_case(case)) for case in args.cases]

    folder = data_dir()
    train_path, valid_path = os.path.join(folder, TRAIN_FILE), os.path.join(folder, VALID_FILE)
    train_all, valid_all = load_photometry(train_path), load_photometry(valid_path)
    print(
        f"cosmoDC2 (pz-rail-base): train {len(train_all['redshift'])}, "
        f"validation {len(valid_all['redshift'])} galaxies"
    )
    results = []
    summary = []
    for ci, (case, bands, fraction) in enumerate(cases):
        train = drop_bands(train_all, bands, fraction, seed=100 + ci)
        valid = drop_bands(valid_all, bands, fraction, seed=200 + ci)
        rows, extras = [], []
        for k, seed in enumerate(args.seeds):
            first = ci == 0 and k == 0
            if not first:
                args.save_package = None
            row, extra = run_ours(train, valid, args, bands=bands, seed=seed, plots=first)
            rows.append(row)
            extras.append(extra)
        ours = list(rows)
        if not args.skip_rail:
            for name in ("FlexZBoost", "KNN"):
                rows.append(run_rail(name, train, valid, bands))
        print(f"\nCase {case}: bands {bands}" + (f", one band missing for {100 * fraction:.0f}% of objects"
                                                 if fraction else ""))
        print_rows(rows)
        mean = {key: float(np.mean([r[key] for r in ours])) for key in TARGETS}
        spread = {key: float(np.std([r[key] for r in ours])) for key in TARGETS}
        if len(ours) > 1:
            print(f"MBRNN over seeds {args.seeds}: " + ", ".join(
                f"{key} {mean[key]:.4f} +- {spread[key]:.4f} (range {min(r[key] for r in ours):.4f}-"
                f"{max(r[key] for r in ours):.4f})" for key in TARGETS))
        if len(rows) > len(ours):
            fz = rows[len(ours)]
            print(f"MBRNN (seed mean) / FlexZBoost: sigma_NMAD x{mean['sigma_nmad'] / fz['sigma_nmad']:.3f}, "
                  f"outliers x{mean['outlier_frac'] / fz['outlier_frac']:.3f}, objects/s "
                  f"x{np.mean([r['objects_per_s'] for r in ours]) / fz['objects_per_s']:.1f}, training time "
                  f"x{np.mean([r['train_s'] for r in ours]) / fz['train_s']:.2f}")
        if bands == BANDS and not fraction:
            for r in ours:
                print(f"Targets, {r['estimator']}: " + ", ".join(
                    f"{key} {r[key]:.4f} <= {v} ({'met' if r[key] <= v else 'NOT met'})"
                    for key, v in TARGETS.items()))
        e = extras[0]
        c = e["compact"]
        print(f"Compact PDF: {c['compact_bytes']:.0f} bytes/object (float16 quantiles) vs "
              f"{c['full_bytes']:.0f} (float32 bins); PIT KS {c['pit_ks_compact']:.4f} vs "
              f"{c['pit_ks_full']:.4f}; CRPS "
              f"{c['crps_compact']:.4f} vs {c['crps_full']:.4f} ({100 * c['crps_increase_frac']:+.2f}%)")
        print(f"MBRNN median point estimate: sigma_NMAD {e['median_point']['sigma_nmad']:.4f}, outliers "
              f"{e['median_point']['outlier_frac']:.4f}; OOD-flagged {100 * e['ood_flagged_frac']:.2f}%")
        results.append(dict(case=case, bands=bands, missing_fraction=fraction, rows=rows, mbrnn=extras,
                            mbrnn_mean=mean, mbrnn_std=spread))
        summary.append((case, mean, rows[len(ours):]))
    if len(cases) > 1:
        print("\nSummary (MBRNN: mean over seeds)")
        print(f"{'case':<20}{'estimator':<14}{'sigma_NMAD':>11}{'outliers':>9}{'PIT KS':>8}")
        for case, mean, rail_rows in summary:
            print(f"{case:<20}{'MBRNN':<14}{mean['sigma_nmad']:>11.4f}{mean['outlier_frac']:>9.4f}"
                  f"{mean['pit_ks']:>8.4f}")
            for r in rail_rows:
                print(f"{'':<20}{r['estimator'][5:]:<14}{r['sigma_nmad']:>11.4f}{r['outlier_frac']:>9.4f}"
                      f"{r['pit_ks']:>8.4f}")
    print("Timings vary with the machine's load; the ratios come from one process on the same threads.")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "photoz_rail.json"), "w") as fh:
        json.dump(dict(seeds=args.seeds, cases=results), fh, indent=2, default=float)
    print(f"Results and plots in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
