"""The photo-z part of the demo: redshift grid, depth, gold selection and the trained model's quality."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.table import join
from lsst.meas.ml.photoz.demo import (
    diagnose,
    five_sigma_depth,
    gold_limit,
    plot,
    redshift_grid,
    summarize,
    train_demo_package,
)
from lsst.meas.ml.photoz.metrics import outlier_fraction, sigma_nmad
from lsst.meas.ml.photoz.predict import predict_photoz
from lsst.meas.ml.simulate import SurveyConfig, simulate_catalog


def test_redshift_grid_covers_the_population():
    assert redshift_grid(np.array([0.1, 1.2])) == (3.0, 150)
    assert redshift_grid(np.array([0.1, 3.8])) == (4.0, 200)
    z_max, _ = redshift_grid(np.array([3.5]))
    assert z_max > 3.5  # never exactly on the edge
    _, truth, _ = simulate_catalog(SurveyConfig.tiny(seed=11), n_galaxies=3000, n_stars=0)
    z = np.asarray(truth["redshift"], float)
    assert redshift_grid(z)[0] > z.max()


def test_depth_measured_from_the_object_table_is_the_simulated_depth():
    config = SurveyConfig.tiny(seed=12)
    objects, _, _ = simulate_catalog(config, n_galaxies=3000)
    for band in config.coadd_bands:
        assert five_sigma_depth(objects, band) == pytest.approx(config.coadd_depth[band], abs=0.05)
    # LSST's gold cut i < 25.3 is where a point source has S/N 20 at the 10-year depth 26.8.
    assert gold_limit(26.8) == pytest.approx(25.3, abs=0.01)
    assert gold_limit(26.1) == pytest.approx(24.6, abs=0.01)


def test_demo_model_quality_summary_and_plots(tiny_repo, tmp_path):
    from lsst.daf.butler import Butler, DatasetType

    butler = Butler.from_config(str(tiny_repo), writeable=True)
    package = train_demo_package(butler, ["MLSim/defaults"], str(tmp_path))

    # Galaxies the model never saw, from the same simulated survey.
    objects, truth, _ = simulate_catalog(SurveyConfig.tiny(seed=2024), n_galaxies=4000)
    catalog = predict_photoz(package, objects)
    z_top = float(np.asarray(catalog.meta["photoz_bin_edges"])[-1])
    both = join(catalog["objectId", "photoz_mode"], objects["objectId", "i_cModelFlux"], keys="objectId")
    both = join(both, truth["objectId", "redshift", "is_star"], keys="objectId")
    both = both[~np.asarray(both["is_star"], dtype=bool)]
    z_phot = np.asarray(both["photoz_mode"], float)
    z_true = np.asarray(both["redshift"], float)
    assert z_top > z_true.max()
    # No pile-up at the grid's upper edge (a grid to z = 3 put 8% of the galaxies there).
    assert np.mean(z_phot > z_top - 0.1) < 0.02
    flux = np.asarray(both["i_cModelFlux"], float)
    limit = gold_limit(five_sigma_depth(objects))
    gold = np.nan_to_num(flux) > 10 ** (-0.4 * (limit - 31.4))
    assert gold.sum() > 300
    # Measured 0.04-0.05 and 11-13% with 0.04 mag of colour scatter in the simulation (0.02 mag now).
    assert sigma_nmad(z_phot[gold], z_true[gold]) < 0.07
    assert outlier_fraction(z_phot[gold], z_true[gold]) < 0.2

    # The summary and the plots, on ml_photoz of the repository's own objects.
    run = "u/test/photoz_demo"
    butler.registry.registerDatasetType(
        DatasetType("ml_photoz", ("skymap", "tract"), "ArrowAstropy", universe=butler.dimensions)
    )
    butler.registry.registerRun(run)
    for ref in butler.query_datasets("object", collections="MLSim/defaults", explain=False):
        butler.put(predict_photoz(package, butler.get(ref)), "ml_photoz", ref.dataId, run=run)
    lines = summarize(butler, [run, "MLSim/defaults"])
    assert lines[0].startswith("ml_photoz tract 0:")
    depth = float(re.search(r"i-band 5-sigma depth ([0-9.]+)", lines[0]).group(1))
    assert depth == pytest.approx(SurveyConfig.tiny().coadd_depth["i"], abs=0.05)
    assert lines[1].lstrip().startswith("all galaxies")
    assert "i<25.3" in lines[2]
    cut = float(re.search(r"gold at this depth, i<([0-9.]+)", lines[3]).group(1))
    assert cut == pytest.approx(gold_limit(depth), abs=0.01)
    paths = plot(butler, [run, "MLSim/defaults"], str(tmp_path))
    assert [p.rsplit("_", 1)[-1] for p in paths] == ["tract0.png", "25.3.png", "gold.png"]
    # The breakdown by S/N and redshift reads the same tables.
    diag = diagnose(butler, [run, "MLSim/defaults"])
    assert diag[0].startswith(f"tract 0: i-band 5-sigma depth {depth:.2f}")
    assert sum(line.lstrip().startswith("i S/N") for line in diag) == 5
