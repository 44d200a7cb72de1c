"""Photo-z features: flux columns, asinh magnitudes, missing bands, PDF summaries."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from astropy.table import Table
from lsst.meas.ml.photoz.features import (
    PhotozColumns,
    PhotozInputError,
    asinh_magnitude,
    flux_features,
    flux_table_from_magnitudes,
    magnitudes_to_fluxes,
    n_features,
)
from lsst.meas.ml.photoz.pdf import compact_quantiles, compact_storage_report, pdf_quantiles, summarize_pdf


def _table(n=4, bands="gri"):
    t = Table()
    t["objectId"] = np.arange(n)
    for k, b in enumerate(bands):
        t[f"{b}_cModelFlux"] = np.full(n, 1000.0 * (k + 1))
        t[f"{b}_cModelFluxErr"] = np.full(n, 10.0)
    return t


def test_asinh_magnitude_matches_pogson_for_bright_and_is_finite_for_faint():
    flux = torch.tensor([10 ** ((31.4 - 20.0) / 2.5), 0.0, -50.0])
    mag = asinh_magnitude(flux, torch.tensor(10.0))
    assert mag[0].item() == pytest.approx(20.0, abs=1e-4)
    # Zero flux gives the softening limit 31.4 - 2.5 log10(b); negative fluxes are fainter still.
    assert mag[1].item() == pytest.approx(31.4 - 2.5 * math.log10(10.0), abs=1e-4)
    assert torch.isfinite(mag).all() and mag[2] > mag[1]


def test_features_flag_nan_and_bad_errors_as_missing_and_stay_finite():
    nb = 3
    x = torch.tensor(
        [
            [1000.0, 2000.0, 3000.0, 10.0, 10.0, 10.0],
            [np.nan, 2000.0, 3000.0, 10.0, 10.0, 10.0],  # NaN flux
            [1000.0, 0.0, -20.0, 10.0, 10.0, 10.0],  # zero and negative: measured, not missing
            [1000.0, 2000.0, 3000.0, 10.0, 0.0, np.inf],  # error <= 0 and infinite error: missing
            [np.nan] * 6,  # nothing
        ]
    )
    f = flux_features(x, torch.full((nb,), 10.0), nb, use_ebv=False)
    assert f.shape == (5, n_features(nb, False))
    assert torch.isfinite(f).all()
    missing = f[:, -nb:]
    np.testing.assert_array_equal(missing.numpy(), [[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1], [1, 1, 1]])
    # Colours: g - r of the first row equals the Pogson colour 2.5 log10(2000/1000) (bright, b small).
    assert (f[0, nb] - f[0, nb + 1]).abs() > 0  # not a constant
    assert f[0, nb].item() == pytest.approx(2.5 * math.log10(2.0), abs=0.01)


def test_extract_reads_astropy_pandas_arrow_and_dict_alike():
    t = _table()
    cols = PhotozColumns(bands=("g", "r", "i"))
    ref = cols.extract(t)
    assert ref.shape == (4, 6) and ref.dtype == np.float32
    np.testing.assert_array_equal(ref[0], [1000, 2000, 3000, 10, 10, 10])
    for other in (
        t.to_pandas(),
        pa.table({c: np.asarray(t[c]) for c in t.colnames}),
        {c: np.asarray(t[c]) for c in t.colnames},
    ):
        np.testing.assert_array_equal(cols.extract(other), ref)


def test_extract_keeps_every_row_including_bad_values():
    t = _table()
    t["g_cModelFlux"][1] = np.nan
    t["r_cModelFlux"][2] = -5.0
    out = PhotozColumns(bands=("g", "r", "i")).extract(t)
    assert out.shape[0] == 4 and np.isnan(out[1, 0]) and out[2, 1] == -5.0


def test_masked_columns_become_nan():
    t = Table(_table(), masked=True)
    t["i_cModelFlux"].mask[3] = True
    out = PhotozColumns(bands=("g", "r", "i")).extract(t)
    assert np.isnan(out[3, 2])


def test_missing_band_column_is_a_clear_error_naming_it():
    t = _table()
    del t["r_cModelFluxErr"]
    with pytest.raises(PhotozInputError, match=r"r_cModelFluxErr.*band\(s\) \['r'\]"):
        PhotozColumns(bands=("g", "r", "i")).extract(t)


def test_missing_band_mode_treats_the_band_as_not_observed():
    t = _table()
    del t["r_cModelFlux"]
    out = PhotozColumns(bands=("g", "r", "i"), missing_band="missing").extract(t)
    assert np.isnan(out[:, 1]).all() and np.isnan(out[:, 4]).all() and np.isfinite(out[:, 0]).all()


def test_ebv_column_is_read_and_its_absence_is_an_error():
    t = _table()
    cols = PhotozColumns(bands=("g", "r", "i"), ebv_column="ebv")
    with pytest.raises(PhotozInputError, match="ebv"):
        cols.extract(t)
    t["ebv"] = 0.03
    out = cols.extract(t)
    assert out.shape == (4, 7) and out[0, 6] == pytest.approx(0.03)
    f = flux_features(torch.from_numpy(out), torch.ones(3), 3, use_ebv=True)
    assert f.shape[1] == n_features(3, True) and f[0, -1].item() == pytest.approx(0.03)


def test_bad_column_settings_are_rejected():
    with pytest.raises(PhotozInputError, match="band"):
        PhotozColumns(flux_template="cModelFlux")
    with pytest.raises(PhotozInputError, match="duplicates"):
        PhotozColumns(bands=("g", "g"))
    with pytest.raises(PhotozInputError, match="missing_band"):
        PhotozColumns(missing_band="drop")
    assert PhotozColumns(bands=("g",)).columns() == ["objectId", "g_cModelFlux", "g_cModelFluxErr"]


def test_magnitudes_to_fluxes_and_nondetections():
    flux, err = magnitudes_to_fluxes(np.array([20.0, 99.0, np.nan]), np.array([0.1, 26.5, 0.1]))
    assert flux[0] == pytest.approx(10 ** (11.4 / 2.5)) and err[0] == pytest.approx(
        flux[0] * 0.1 / 1.0857, rel=1e-3
    )
    assert np.isnan(flux[1:]).all()
    flux, err = magnitudes_to_fluxes(np.array([99.0]), np.array([26.5]), nondetection_limit_in_error=True)
    assert flux[0] == 0.0 and err[0] == pytest.approx(10 ** ((31.4 - 26.5) / 2.5))


def test_flux_table_from_magnitudes_names_missing_columns():
    t = Table({"mag_g": [20.0], "magerr_g": [0.1], "id": [5]})
    out = flux_table_from_magnitudes(t, ["g"], "mag_{band}", "magerr_{band}", keep=["id"])
    assert out.colnames == ["id", "g_cModelFlux", "g_cModelFluxErr"]
    with pytest.raises(PhotozInputError, match="mag_r"):
        flux_table_from_magnitudes(t, ["g", "r"], "mag_{band}", "magerr_{band}")


def test_pdf_summaries_of_a_gaussian():
    edges = np.linspace(0, 3, 301)
    centres = 0.5 * (edges[1:] + edges[:-1])
    pdf = np.exp(-0.5 * ((centres - 1.2345) / 0.05) ** 2)[None, :]
    pdf /= pdf.sum()
    s = summarize_pdf(pdf, edges)
    assert s["mean"][0] == pytest.approx(1.2345, abs=1e-3)
    assert s["median"][0] == pytest.approx(1.2345, abs=1e-3)
    assert s["mode"][0] == pytest.approx(1.2345, abs=2e-3)
    assert s["std"][0] == pytest.approx(0.05, rel=0.02)
    assert s["lo68"][0] == pytest.approx(1.2345 - 0.05, abs=2e-3)
    assert s["hi68"][0] == pytest.approx(1.2345 + 0.05, abs=2e-3)


def test_pdf_quantiles_by_hand_and_nan_rows():
    edges = np.array([0.0, 1.0, 2.0])
    q = pdf_quantiles(np.array([[0.5, 0.5], [np.nan, np.nan]]), edges, [0.25, 0.5, 0.9])
    np.testing.assert_allclose(q[0], [0.5, 1.0, 1.8])
    assert np.isnan(q[1]).all()
    s = summarize_pdf(np.array([[np.nan, np.nan]]), edges)
    assert all(np.isnan(v[0]) for v in s.values())


def test_compact_form_is_float16_and_cheap_in_crps():
    rng = np.random.default_rng(1)
    edges = np.linspace(0, 3, 151)
    centres = 0.5 * (edges[1:] + edges[:-1])
    mu = rng.uniform(0.2, 2.5, 200)
    z = mu + rng.normal(0, 0.1, 200)
    pdf = np.exp(-0.5 * ((centres[None, :] - mu[:, None]) / 0.1) ** 2)
    pdf /= pdf.sum(axis=1, keepdims=True)
    q = compact_quantiles(pdf, edges)
    assert q.dtype == np.float16
    report = compact_storage_report(pdf, edges, z)
    assert report["compact_bytes"] == 2 * q.shape[1] and report["full_bytes"] == 600
    assert abs(report["crps_increase_frac"]) < 0.02
    assert abs(report["pit_ks_compact"] - report["pit_ks_full"]) < 0.02


def test_all_colour_pairs_feature_set():
    nb = 4
    x = torch.tensor([[1000.0, 2000.0, 4000.0, 8000.0, 1.0, 1.0, 1.0, 1.0]])
    b = torch.full((nb,), 1.0)
    adjacent = flux_features(x, b, nb, use_ebv=False)
    every = flux_features(x, b, nb, use_ebv=False, colours="all")
    assert adjacent.shape[1] == n_features(nb, False) and every.shape[1] == n_features(nb, False, "all")
    assert every.shape[1] - adjacent.shape[1] == nb * (nb - 1) // 2 - (nb - 1)
    # Pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): each is 2.5 log10 of the flux ratio, bluer minus redder.
    colours = every[0, nb : nb + 6].numpy()
    np.testing.assert_allclose(colours, 2.5 * np.log10([2, 4, 8, 2, 4, 2]), atol=1e-3)
    with pytest.raises(ValueError, match="colours"):
        n_features(nb, False, "neighbours")
