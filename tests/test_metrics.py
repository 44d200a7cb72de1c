"""The photo-z metrics (lsst.meas.ml.photoz.metrics) against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.ml.photoz import metrics


def test_sigma_nmad_and_bias_by_hand():
    # z_true = 0, so dz = z_phot: median 0.01, |dz - 0.01| = [0.01, 0, 0.02, 0.01, 0.09] -> MAD 0.01.
    z_phot = np.array([0.0, 0.01, -0.01, 0.02, 0.1])
    z_true = np.zeros(5)
    assert metrics.sigma_nmad(z_phot, z_true) == pytest.approx(1.4826 * 0.01)
    assert metrics.bias(z_phot, z_true) == pytest.approx(0.01)


def test_delta_z_divides_by_one_plus_z_and_skips_nan():
    dz = metrics.delta_z(np.array([1.1, np.nan, 3.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(dz, [0.05, 1.0])


def test_outlier_fraction_by_hand():
    # dz = [0, 0.1, 0.155, 0.25]: two above 0.15.
    z_true = np.ones(4)
    z_phot = np.array([1.0, 1.2, 1.31, 1.5])
    assert metrics.outlier_fraction(z_phot, z_true) == pytest.approx(0.5)


def test_rail_outlier_fraction_uses_floor_of_0p06():
    # Sorted dz: [-0.01, 0, 0, 0, 0, 0, 0.01, 0.2]; IQR = 0.0025 -> 3 sigma_IQR < 0.06, so only 0.2 counts.
    dz = np.array([-0.01, 0, 0, 0, 0, 0, 0.01, 0.2])
    assert metrics.outlier_fraction_rail(dz, np.zeros(8)) == pytest.approx(1 / 8)


def test_rail_outlier_fraction_uses_three_sigma_iqr_when_larger():
    # Quartiles -0.075 and 0.075 -> sigma_IQR = 0.15/1.349, 3 sigma = 0.3336: no outlier, but 2/7 beyond 0.15.
    dz = np.array([-0.3, -0.1, -0.05, 0.0, 0.05, 0.1, 0.3])
    assert metrics.sigma_iqr(dz, np.zeros(7)) == pytest.approx(0.15 / 1.349)
    assert metrics.outlier_fraction_rail(dz, np.zeros(7)) == 0.0
    assert metrics.outlier_fraction(dz, np.zeros(7)) == pytest.approx(2 / 7)


def test_pit_of_binned_pdf_by_hand():
    edges = np.array([0.0, 1.0, 2.0])
    pdf = np.array([[0.5, 0.5]] * 4)
    values = metrics.pit(pdf, edges, np.array([0.5, 1.5, -1.0, 3.0]))
    np.testing.assert_allclose(values, [0.25, 0.75, 0.0, 1.0])


def test_pit_is_nan_for_nan_pdf_or_truth():
    edges = np.array([0.0, 1.0, 2.0])
    pdf = np.array([[np.nan, np.nan], [0.5, 0.5]])
    values = metrics.pit(pdf, edges, np.array([0.5, np.nan]))
    assert np.all(np.isnan(values))


def test_ks_uniform_by_hand():
    assert metrics.ks_uniform(np.array([0.5])) == pytest.approx(0.5)
    assert metrics.ks_uniform(np.array([0.25, 0.75])) == pytest.approx(0.25)
    assert metrics.ks_uniform(np.array([0.25, 0.75, np.nan])) == pytest.approx(0.25)


def test_pit_histogram_is_a_density():
    density, edges = metrics.pit_histogram((np.arange(1000) + 0.5) / 1000, n_bins=10)
    np.testing.assert_allclose(density, 1.0)
    assert edges[0] == 0.0 and edges[-1] == 1.0


def test_crps_of_uniform_pdf_by_hand():
    # U(0, 1) at y: y^3/3 + (1 - y)^3/3 -> 1/12 at y = 0.5; at y = 2 the CDF is 1 on [1, 2): 1/3 + 1.
    edges = np.array([0.0, 0.5, 1.0])
    pdf = np.array([[0.5, 0.5], [0.5, 0.5]])
    values = metrics.crps(pdf, edges, np.array([0.5, 2.0]), n_grid=4001)
    np.testing.assert_allclose(values, [1 / 12, 1 / 3 + 1.0], rtol=1e-3)


def test_crps_of_sharp_correct_pdf_is_small():
    edges = np.linspace(0, 3, 301)
    pdf = np.zeros((1, 300))
    pdf[0, 100] = 1.0  # bin [1.00, 1.01)
    assert metrics.crps(pdf, edges, np.array([1.005]))[0] < 0.005
    assert metrics.crps(pdf, edges, np.array([2.005]))[0] == pytest.approx(1.0, abs=0.01)


def test_quantile_pit_and_crps_match_the_binned_ones_for_uniform():
    levels = [0.25, 0.5, 0.75]
    quantiles = np.array([[0.25, 0.5, 0.75]])
    assert metrics.pit_from_quantiles(quantiles, levels, np.array([0.6]), (0.0, 1.0))[0] == pytest.approx(0.6)
    crps_q = metrics.crps_from_quantiles(quantiles, levels, np.array([0.5]), (0.0, 1.0), n_grid=4001)[0]
    assert crps_q == pytest.approx(1 / 12, rel=1e-3)


def test_photoz_metrics_bundle_and_bad_shapes():
    z = np.linspace(0.1, 2.0, 50)
    edges = np.linspace(0, 3, 31)
    pdf = np.full((50, 30), 1 / 30)
    m = metrics.photoz_metrics(z, z, pdf=pdf, edges=edges)
    assert m["sigma_nmad"] == 0.0 and m["outlier_frac"] == 0.0 and m["n"] == 50
    assert "pit_ks" in m and "crps" in m and "sigma_nmad=0" in m.summary()
    with pytest.raises(ValueError, match="bins"):
        metrics.pit(pdf, edges[:-1], z)
    with pytest.raises(ValueError, match="z_true"):
        metrics.sigma_nmad(z, z[:-1])
    with pytest.raises(ValueError, match="edges"):
        metrics.photoz_metrics(z, z, pdf=pdf)


def test_plots_write_png_files(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 2, 300)
    p1 = metrics.plot_photoz_vs_true(z + rng.normal(0, 0.02, 300), z, str(tmp_path / "z.png"), title="t")
    p2 = metrics.plot_pit(rng.uniform(size=300), str(tmp_path / "pit.png"))
    for path in (p1, p2):
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_balanced_accuracy_and_macro_f1_by_hand():
    import numpy as np
    from lsst.meas.ml.metrics import balanced_accuracy, macro_f1

    truth = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 0])
    # Recalls: class 0 3/4, class 1 1/2, class 2 0/1.
    assert balanced_accuracy(pred, truth) == (0.75 + 0.5 + 0.0) / 3
    # F1: class 0 2*3/(4+5), class 1 2*1/(2+2), class 2 0.
    assert macro_f1(pred, truth, 3) == (6 / 9 + 0.5 + 0.0) / 3
    assert np.isnan(balanced_accuracy([], [])) and np.isnan(macro_f1([], [], 3))
