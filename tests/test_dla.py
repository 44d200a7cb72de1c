"""DLAs in quasar spectra: Voigt profiles, injection, spectra I/O and the Butler, training,
prediction on bad inputs, the shipped package on PH957, and the task through pipetask."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from lsst.meas.ml.cli import main
from lsst.meas.ml.dla.features import (
    GRID_DLOGLAM,
    DlaFlag,
    rebin_to_grid,
    tile_windows,
)
from lsst.meas.ml.dla.predict import DlaInputError, predict_dla
from lsst.meas.ml.dla.simulate import SimulationConfig, inject_dla, mean_transmission, simulate_sightline
from lsst.meas.ml.dla.spectra import (
    Spectrum,
    SpectrumCollection,
    SpectrumReadError,
    air_to_vacuum,
    read_spectra,
)
from lsst.meas.ml.dla.train import DlaTrainingConfig, make_windows, train_dla
from lsst.meas.ml.dla.voigt import LYA, column_density_tau, voigt_H
from lsst.meas.ml.models.dla import DlaCnn, dla_loss
from lsst.meas.ml.packages import ModelPackage, default_package, default_package_path
from scipy.special import erfc, voigt_profile

ROOT = Path(__file__).resolve().parents[1]
QSO = ROOT.parent / "shared" / "data" / "qso_spectra"
needs_real = pytest.mark.skipif(not (QSO / "PH957_f.fits").exists(), reason=f"no real spectra under {QSO}")
needs_default = pytest.mark.skipif(
    not os.path.exists(default_package_path("dla")), reason="no shipped dla package"
)


@pytest.fixture(scope="module")
def tiny_package():
    """A tiny network trained for a few steps (the prediction path, not quality)."""
    torch.manual_seed(0)
    cfg = DlaTrainingConfig(
        n_sightlines=16, n_validation=0, epochs=1, batch_size=8, channels=8, dilations=(1, 2), seed=3
    )
    return train_dla(cfg).package


@pytest.fixture(scope="module")
def package():
    if not os.path.exists(default_package_path("dla")):
        pytest.skip("no shipped dla package")
    return default_package("dla")


# ----------------------------------------------------------------- Voigt profile
def test_voigt_function_limits():
    u = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(voigt_H(0.0, u), np.exp(-(u**2)), atol=1e-12)
    for a in (1e-3, 0.1, 1.0):
        np.testing.assert_allclose(voigt_H(a, np.zeros(1)), np.exp(a**2) * erfc(a), rtol=1e-10)
    # H(a, u) = sqrt(pi) * V(u; sigma = 1/sqrt(2), gamma = a), scipy's independent Voigt profile
    a = 0.05
    np.testing.assert_allclose(voigt_H(a, u), np.sqrt(np.pi) * voigt_profile(u, 1 / np.sqrt(2), a), rtol=1e-8)


def test_voigt_line_centre_and_damping_wing():
    b, log_n, z = 20.0, 14.0, 0.0
    tau0 = column_density_tau(np.array([LYA.wrest]), z, log_n, b)[0]
    # tau0 = 1.497e-15 N f lambda / b, times H(a, 0) = exp(a^2) erfc(a) (a ~ 1e-3)
    dnu = b * 1e5 / (LYA.wrest * 1e-8)
    a = LYA.gamma / (4 * np.pi * dnu)
    np.testing.assert_allclose(
        tau0, 1.4974e-15 * 10**log_n * LYA.f * LYA.wrest / b * np.exp(a**2) * erfc(a), rtol=1e-3
    )
    # far wing: Lorentzian tau = N (pi e^2 / m_e c) f Gamma / (4 pi^2 dnu^2)
    log_n, dl = 20.3, 20.0
    tau = column_density_tau(np.array([LYA.wrest + dl]), 0.0, log_n, 30.0)[0]
    c = 2.99792458e10
    dnu = abs(c / ((LYA.wrest + dl) * 1e-8) - c / (LYA.wrest * 1e-8))
    np.testing.assert_allclose(
        tau, 10**log_n * 0.026540 * LYA.f * LYA.gamma / (4 * np.pi**2 * dnu**2), rtol=0.01
    )
    # rest equivalent width of a damped line: W = lambda^2/c * 2 sqrt(pi A), A = N 0.02654 f Gamma / (4 pi^2)
    log_n = 21.0
    wave = np.linspace(LYA.wrest - 300, LYA.wrest + 300, 200001)
    w = np.trapezoid(1 - np.exp(-column_density_tau(wave, 0.0, log_n, 30.0)), wave)
    big_a = 10**log_n * 0.026540 * LYA.f * LYA.gamma / (4 * np.pi**2)
    w_expected = (LYA.wrest * 1e-8) ** 2 / c * 2 * np.sqrt(np.pi * big_a) * 1e8
    assert abs(w / w_expected - 1) < 0.03
    # the classical DLA definition: rest equivalent width 10 A <=> log N(HI) = 20.3 (Wolfe et al. 1986)
    w203 = np.trapezoid(1 - np.exp(-column_density_tau(wave, 0.0, 20.3, 30.0)), wave)
    assert 9.5 < w203 < 10.8


def test_injection():
    wave = 10 ** (3 + np.arange(int((np.log10(3300) - 3) / 1e-4), int((np.log10(5000) - 3) / 1e-4)) * 1e-4)
    flat = np.ones_like(wave)
    z = 2.3
    out = inject_dla(wave, flat, z, 20.5, 30.0)
    centre = np.argmin(np.abs(wave - LYA.wrest * (1 + z)))
    assert out[centre] < 1e-6 and np.all(out <= 1)
    far = np.abs(wave - LYA.wrest * (1 + z)) > 150 * (1 + z)
    np.testing.assert_allclose(out[far & (wave > LYA.wrest * (1 + z))], 1.0, atol=2e-3)
    # Lyman beta of the DLA is there too, and multiplying composes
    beta = np.argmin(np.abs(wave - 1025.7223 * (1 + z)))
    assert out[beta] < 0.01
    twice = inject_dla(wave, out, 2.6, 20.5, 30.0)
    np.testing.assert_allclose(twice, out * inject_dla(wave, flat, 2.6, 20.5, 30.0), rtol=1e-12)


def test_simulated_forest_mean_and_truth():
    rng = np.random.default_rng(5)
    cfg = SimulationConfig(snr=(1e4, 1e4), lls_per_dz=0.0, sub_dla_fraction=0.0)
    ratios = []
    for _ in range(20):
        sl = simulate_sightline(rng, cfg, z_qso=3.0, dlas=[])
        s = sl.spectrum
        rest = s.wavelength / 4.0
        sel = (rest > 1080) & (rest < 1160) & ~s.bad
        ratios.append(
            np.mean(s.flux[sel] / sl.continuum[sel])
            / np.mean(mean_transmission(s.wavelength[sel] / LYA.wrest - 1))
        )
    assert 0.85 < np.mean(ratios) < 1.15
    sl = simulate_sightline(rng, z_qso=3.0, dlas=[(2.7, 21.0)])
    assert sl.dlas == [(2.7, 21.0)] and sl.spectrum.meta["dlas"] == [[2.7, 21.0]]


# ----------------------------------------------------------------- model, windows, training
def test_model_shapes_and_masked_loss():
    model = DlaCnn(channels=8, dilations=(1, 2))
    out = model(torch.zeros(2, 3, 128))
    assert out.shape == (2, 3, 128)
    label = torch.zeros(2, 128)
    a, _ = dla_loss(out, label, torch.zeros(2, 128), torch.zeros(2, 128))
    b, parts = dla_loss(out, label, torch.full((2, 128), 5.0), torch.full((2, 128), -3.0))
    assert float(a.detach()) == float(b.detach()) and parts["offset"] == 0.0 and parts["log_nhi"] == 0.0
    label[:, 10:20] = 1
    c, parts = dla_loss(out, label, torch.full((2, 128), 5.0), torch.zeros(2, 128))
    assert parts["offset"] > 1.0


def test_windows_and_labels():
    rng = np.random.default_rng(1)
    x, y = make_windows(rng, 6, DlaTrainingConfig(window=256, margin=32))
    assert x.shape[1:] == (3, 256) and y.shape == x.shape
    pos = y[:, 0] > 0
    assert np.all(np.abs(y[:, 1][pos]) <= 1.0) and np.all(y[:, 2][pos] >= -1.0)
    inputs = np.arange(3 * 700, dtype=np.float32).reshape(3, 700)
    windows, spans = tile_windows(inputs, 256, 32)
    covered = np.zeros(700, int)
    for w, (start, a, b) in zip(windows, spans):
        covered[a:b] += 1
        np.testing.assert_array_equal(w[:, a - start : b - start], inputs[:, a:b])
    assert np.all(covered == 1)


def test_short_training_run(tiny_package, tmp_path):
    assert tiny_package.family == "dla" and tiny_package.architecture == "dla_cnn"
    tiny_package.save(tmp_path / "p.safetensors")
    again = ModelPackage.load(tmp_path / "p.safetensors")
    assert again.sha256 == tiny_package.sha256 and again.inputs["window"] == 512


# ----------------------------------------------------------------- spectra I/O
def test_rebin_conserves_flux_and_errors():
    lw = 3.6 + np.arange(4000) * 2.5e-5  # 4 source pixels per grid pixel
    wave = 10**lw
    flux = np.full(len(wave), 2.0)
    err = np.full(len(wave), 0.4)
    k0 = int(np.ceil((lw[0] - 3) / GRID_DLOGLAM)) + 2
    f, e, bad = rebin_to_grid(wave, flux, err, np.zeros(len(wave), bool), k0, k0 + 900)
    np.testing.assert_allclose(f[~bad], 2.0, rtol=1e-9)
    np.testing.assert_allclose(np.median(e[~bad]), 0.2, rtol=0.02)  # four pixels averaged


def test_spectrum_container_and_arrow_roundtrip(tmp_path):
    wave = np.array([4002.0, 4000.0, 4001.0, np.nan])
    s = Spectrum(wave, [1, 2, np.nan, 4], [0.1, 0.1, 0.1, 0.1], z_qso=2.5, source_id="x", ra=1.0, dec=2.0)
    assert (
        s.resorted and list(s.wavelength) == [4000.0, 4001.0, 4002.0] and list(s.bad) == [False, True, False]
    )
    with pytest.raises(SpectrumReadError, match="different lengths"):
        Spectrum([1.0, 2.0], [1.0], [1.0, 1.0])
    coll = SpectrumCollection([s, Spectrum([5000.0, 5001.0], [1, 1], [0, 1], source_id="y")])
    coll.write(tmp_path / "c.parquet")
    back = SpectrumCollection.read(tmp_path / "c.parquet")
    assert [b.source_id for b in back] == ["x", "y"] and back[0].resorted and math.isnan(back[1].z_qso)
    np.testing.assert_array_equal(back[0].flux, s.flux)
    assert list(back[1].bad) == [True, False]
    assert len(read_spectra(tmp_path / "c.parquet")) == 2


def test_air_to_vacuum():
    # SDSS convention (Morton 2000): 4000 A in air is ~4001.13 A in vacuum
    np.testing.assert_allclose(air_to_vacuum(np.array([4000.0, 6562.8])), [4001.131, 6564.614], atol=0.01)


@needs_real
def test_readers_on_real_files():
    ph = read_spectra(QSO / "PH957_f.fits")[0]
    assert ph.source_id == "PH957" and "error_file" in ph.meta and math.isnan(ph.z_qso)
    assert abs(ph.wavelength[0] - 3811.5) < 0.1 and abs(ph.ra - 15.797) < 0.01  # B1950 header -> ICRS
    sdss = read_spectra(QSO / "SDSSJ220248.31+123656.3.fits")[0]
    assert abs(sdss.ra - 330.7013) < 1e-3 and abs(sdss.dec - 12.6156) < 1e-3  # from the IAU name
    # the second HDU is an inverse variance: errors match the pixel scatter
    good = ~sdss.bad
    scatter = 1.4826 * np.median(np.abs(np.diff(sdss.flux[good][3000:3400]))) / np.sqrt(2)
    assert 0.5 < np.median(sdss.error[good][3000:3400]) / scatter < 2.0
    xs = read_spectra(QSO / "XShooter_XQ100.fits.gz")[0]
    assert 9800 < xs.wavelength[0] < 9830  # nm column converted to A
    with pytest.raises(SpectrumReadError):
        read_spectra(QSO / "noterdaeme_dr7.fits")


def _fits_table(path, wave, flux, err, **header):
    t = Table({"WAVE": wave, "FLUX": flux, "ERR": err})
    hdu = fits.BinTableHDU(t)
    for k, v in header.items():
        hdu.header[k] = v
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


# ----------------------------------------------------------------- bad inputs
def test_bad_inputs_flags(tiny_package, tmp_path):
    rng = np.random.default_rng(4)
    sl = simulate_sightline(rng, z_qso=3.0, dlas=[(2.75, 21.0)], snr=20.0, source_id="ok")
    s = sl.spectrum
    red = Spectrum(s.wavelength * 3, s.flux, s.error, z_qso=3.0, source_id="red")  # no forest coverage
    noz = Spectrum(s.wavelength, s.flux, s.error, source_id="noz")
    nan = s.flux.copy()
    nan[np.arange(len(nan)) % 4 != 0] = np.nan  # three pixels in four
    holes = Spectrum(s.wavelength, nan, s.error, z_qso=3.0, source_id="holes")
    rev = Spectrum(s.wavelength[::-1], s.flux[::-1], s.error[::-1], s.mask[::-1], z_qso=3.0, source_id="rev")
    cat = predict_dla(tiny_package, [s, red, noz, holes, rev])
    flags = {sid: int(f) for sid, f in zip(cat["source_id"], cat["dla_flags"])}
    assert flags["red"] & DlaFlag.NO_FOREST_COVERAGE and flags["noz"] & DlaFlag.NO_Z_QSO
    assert flags["holes"] & DlaFlag.MOSTLY_MASKED and flags["rev"] & DlaFlag.RESORTED
    for sid in ("red", "noz"):
        rows = cat[cat["source_id"] == sid]
        assert len(rows) == 1 and rows["absorber"][0] == -1 and not rows["is_dla"][0]
    with pytest.raises(DlaInputError):
        predict_dla(tiny_package, [s], z_qso=-1.0)
    # air wavelengths in a table are converted (and flagged)
    _fits_table(tmp_path / "air.fits", s.wavelength, s.flux, s.error, AIRORVAC="air", Z=3.0)
    air = read_spectra(tmp_path / "air.fits")[0]
    assert air.air_converted and air.wavelength[0] > s.wavelength[0] and air.z_qso == 3.0
    assert int(predict_dla(tiny_package, [air])["dla_flags"][0]) & DlaFlag.AIR_TO_VACUUM


@needs_default
def test_grids_order_and_masks_with_default(package):
    rng = np.random.default_rng(11)
    sl = simulate_sightline(rng, z_qso=2.9, dlas=[(2.6, 21.2)], snr=25.0, source_id="log")
    s = sl.spectrum
    # the same spectrum on a linear grid three times finer (interpolated)
    lin = np.arange(s.wavelength[0], s.wavelength[-1], np.median(np.diff(s.wavelength)) / 3)
    s_lin = Spectrum(
        lin,
        np.interp(lin, s.wavelength, s.flux),
        np.interp(lin, s.wavelength, s.error) * np.sqrt(3),
        z_qso=2.9,
        source_id="linear",
    )
    rev = Spectrum(s.wavelength[::-1], s.flux[::-1], s.error[::-1], s.mask[::-1], z_qso=2.9, source_id="rev")
    holes = s.flux.copy()
    holes[::7] = np.nan
    s_nan = Spectrum(s.wavelength, holes, s.error, z_qso=2.9, source_id="nan")
    cat = predict_dla(package, [s, s_lin, rev, s_nan])
    for sid in ("log", "linear", "rev", "nan"):
        rows = cat[(cat["source_id"] == sid) & cat["is_dla"]]
        assert len(rows) >= 1, sid
        k = np.argmin(np.abs(rows["z_abs"] - 2.6))
        assert abs(rows["z_abs"][k] - 2.6) < 0.01 and abs(rows["log_nhi"][k] - 21.2) < 0.3, sid
    a, b = cat[cat["source_id"] == "log"], cat[cat["source_id"] == "rev"]
    np.testing.assert_allclose(np.asarray(a["z_abs"]), np.asarray(b["z_abs"]))


@needs_real
@needs_default
def test_ph957_with_shipped_package(package):
    ph = read_spectra(QSO / "PH957_f.fits", z_qso=2.69)[0]  # z_qso from the H100 catalogue
    cat = predict_dla(package, [ph])
    dlas = cat[cat["is_dla"]]
    assert len(dlas) >= 1
    k = int(np.argmin(np.abs(dlas["z_abs"] - 2.309)))
    assert abs(dlas["z_abs"][k] - 2.309) < 0.01
    assert abs(dlas["log_nhi"][k] - 21.37) < 0.3


@needs_real
def test_cli_predict_no_forest_and_unknown_z(tiny_package, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    tiny_package.save(model)
    out = tmp_path / "out.parquet"
    xs = str(QSO / "XShooter_XQ100.fits.gz")  # near-infrared arm: no Lyman-alpha forest at z = 4.2
    assert (
        main(
            [
                "predict",
                "dla",
                "--spectra",
                xs,
                "--z-qso",
                "4.219",
                "--out",
                str(out),
                "--model",
                str(model),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    t = Table.read(out)
    assert int(t["dla_flags"][0]) & DlaFlag.NO_FOREST_COVERAGE and t["absorber"][0] == -1
    assert (
        main(
            [
                "predict",
                "dla",
                "--spectra",
                str(QSO / "UM184_nF.fits"),
                "--out",
                str(out),
                "--model",
                str(model),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "no quasar redshift for UM184" in capsys.readouterr().err
    assert int(Table.read(out)["dla_flags"][0]) & DlaFlag.NO_Z_QSO
    assert main(["predict", "dla", "--spectra", str(out), "--out", str(out), "--model", str(model)]) == 2


# ----------------------------------------------------------------- Butler
def test_ingest_and_formatter(tmp_path):
    from lsst.meas.ml.butler.repo import create_repo
    from lsst.meas.ml.dla.ingest import SpectraIngestError, htm7_index, ingest_spectra

    butler = create_repo(tmp_path / "repo")
    rng = np.random.default_rng(2)
    sims = [simulate_sightline(rng, source_id=f"s{i}").spectrum for i in range(3)]
    for i, s in enumerate(sims):
        s.ra, s.dec = 150.0, 2.0 + 0.001 * i  # one trixel
    with pytest.raises(SpectraIngestError, match="no sky position"):
        ingest_spectra(butler, [simulate_sightline(rng).spectrum])
    assert ingest_spectra(butler, sims[:2]) == {htm7_index(150.0, 2.0): 2}
    assert ingest_spectra(butler, sims[1:]) == {htm7_index(150.0, 2.0): 3}  # merged, s1 replaced
    got = butler.get("qso_spectra", htm7=htm7_index(150.0, 2.0), collections="spectra/external")
    assert sorted(s.source_id for s in got) == ["s0", "s1", "s2"]
    s1 = next(s for s in got if s.source_id == "s1")
    np.testing.assert_array_equal(s1.flux, sims[1].flux)
    np.testing.assert_array_equal(s1.mask, sims[1].mask)


@pytest.mark.slow
def test_pipetask_run(tiny_package, tmp_path):
    from lsst.daf.butler import Butler
    from lsst.meas.ml.butler.registration import register_package
    from lsst.meas.ml.butler.repo import create_repo
    from lsst.meas.ml.dla.ingest import htm7_index

    repo = tmp_path / "repo"
    create_repo(repo)
    rng = np.random.default_rng(8)
    paths = []
    for i, (ra, dec) in enumerate(((150.0, 2.0), (151.0, 2.5))):
        s = simulate_sightline(rng, z_qso=3.0, source_id=f"q{i}").spectrum
        path = tmp_path / f"q{i}.parquet"
        t = Table({"wavelength": s.wavelength, "flux": s.flux, "ivar": 1 / s.error**2, "mask": s.mask})
        t["ra"], t["dec"], t["z"], t["source_id"] = ra, dec, 3.0, f"q{i}"
        t.write(path)
        paths.append(str(path))
    assert main(["ingest-spectra", str(repo), *paths]) == 0
    register_package(Butler.from_config(str(repo), writeable=True), tiny_package, run="models/dla/test")
    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "--log-level",
        "lsst.utils.packages=ERROR",
        "run",
        "-b",
        str(repo),
        "-i",
        "spectra/external,models/dla/test",
        "-o",
        "u/test/dla",
        "-p",
        str(ROOT / "pipelines" / "dla.yaml"),
        "--register-dataset-types",
        "-c",
        "findDla:inference.device=cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    butler = Butler.from_config(str(repo), collections="u/test/dla")
    for i, (ra, dec) in enumerate(((150.0, 2.0), (151.0, 2.5))):
        out = butler.get("ml_dla", htm7=htm7_index(ra, dec), parameters={"strip_astropy_meta_yaml": False})
        assert set(out["source_id"]) == {f"q{i}"} and np.all(out["z_qso"] == 3.0)
        assert out.meta["ml_model"]["sha256"] == tiny_package.sha256
