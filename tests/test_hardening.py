"""Reproduced defects and their fixes: outputs over inputs, edited manifests, wrong
packages and columns, invalid hyper-parameters, oversized or truncated alert cutouts,
registration into the wrong collections, duplicate object ids."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from lsst.meas.ml.alerts import MAX_CUTOUT_BYTES, AlertError, read_alerts, read_cutout
from lsst.meas.ml.cli import main
from lsst.meas.ml.fileio import OutputIsInputError, atomic_output, refuse_output_over_input
from lsst.meas.ml.models import build_model
from lsst.meas.ml.packages import (
    MANIFEST_KEY,
    MANIFEST_SHA256_KEY,
    ModelPackage,
    PackageError,
    manifest_sha256,
)
from lsst.meas.ml.photoz.features import PhotozInputError
from lsst.meas.ml.photoz.predict import DEFAULT_PACKAGE_PATH, PhotozFlag, predict_photoz
from lsst.meas.ml.photoz.tables import read_table, write_table
from lsst.meas.ml.simulate.photometry import make_photometric_catalog

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RUBIN = DATA / "rubin_alerts" / "lsstcam_alerts_2026-01.parquet"
DIA_DEFAULT = Path(DEFAULT_PACKAGE_PATH).parent / "dia_default.safetensors"
needs_rubin = pytest.mark.skipif(not RUBIN.exists(), reason=f"real Rubin alerts not found at {RUBIN}")


@pytest.fixture(scope="module")
def photoz_package() -> ModelPackage:
    return ModelPackage.load(DEFAULT_PACKAGE_PATH)


@pytest.fixture
def catalog_file(tmp_path) -> Path:
    path = tmp_path / "t.parquet"
    write_table(make_photometric_catalog(20, seed=3), path)
    return path


# ----------------------------------------------------------------------
# 1. Outputs never overwrite inputs; outputs are written atomically


def test_predict_photoz_refuses_output_that_is_its_input(tmp_path, catalog_file, capsys):
    before = catalog_file.read_bytes()
    link = tmp_path / "link.parquet"
    link.symlink_to(catalog_file)
    hard = tmp_path / "hard.parquet"
    os.link(catalog_file, hard)
    for out in (catalog_file, tmp_path / "." / "t.parquet", link, hard):
        assert main(["predict", "photoz", "--input", str(catalog_file), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "same file as the input" in err and "Traceback" not in err, err
    assert catalog_file.read_bytes() == before
    # Nor over the model package.
    model = tmp_path / "model.safetensors"
    model.write_bytes(Path(DEFAULT_PACKAGE_PATH).read_bytes())
    assert (
        main(["predict", "photoz", "--model", str(model), "--input", str(catalog_file), "--out", str(model)])
        == 2
    )
    assert model.read_bytes() == Path(DEFAULT_PACKAGE_PATH).read_bytes()
    # A distinct output still works, and leaves no temporary file behind.
    assert (
        main(["predict", "photoz", "--input", str(catalog_file), "--out", str(tmp_path / "o.parquet")]) == 0
    )
    assert len(read_table(tmp_path / "o.parquet")) == 20
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_predict_dia_refuses_output_that_is_an_alert_file(tmp_path, capsys):
    alerts = tmp_path / "a.parquet"
    alerts.write_bytes(b"PAR1 not really alerts, never read")
    other = tmp_path / "b.parquet"
    other.write_bytes(b"PAR1 another")
    assert main(["predict", "dia", "--alerts", str(other), str(alerts), "--out", str(alerts)]) == 2
    err = capsys.readouterr().err
    assert "same file as the input" in err and str(alerts) in err and "Traceback" not in err
    assert alerts.read_bytes() == b"PAR1 not really alerts, never read"


def test_refuse_output_over_input_and_atomic_output(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("keep")
    refuse_output_over_input(tmp_path / "new.txt", [a, None])
    with pytest.raises(OutputIsInputError, match="--out .* is the same file as the input"):
        refuse_output_over_input(str(tmp_path / "sub" / ".." / "a.txt"), [None, str(a)])
    with atomic_output(a) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".txt") and tmp != str(a)
        Path(tmp).write_text("new")
        assert a.read_text() == "keep"  # untouched until the block succeeds
    assert a.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_output(a) as tmp:
        Path(tmp).write_text("half")
        raise RuntimeError("writer failed")
    assert a.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]


def test_write_table_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    path = tmp_path / "cat.parquet"
    write_table(make_photometric_catalog(5, seed=1), path)
    before = path.read_bytes()

    def failing(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half-written")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        write_table(make_photometric_catalog(6, seed=2), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["cat.parquet"]


# ----------------------------------------------------------------------
# 2. The manifest checksum


def _manifest_of(raw: bytes) -> dict:
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(json.loads(raw[8 : 8 + length])["__metadata__"][MANIFEST_KEY])


def test_edited_bin_edges_of_the_shipped_package_are_refused(tmp_path, capsys):
    from lsst.meas.ml.safetensors_io import decode, encode

    raw = Path(DEFAULT_PACKAGE_PATH).read_bytes()
    manifest = _manifest_of(raw)
    assert manifest[MANIFEST_SHA256_KEY] == manifest_sha256(manifest)
    manifest["outputs"]["bin_edges"] = [2 * e for e in manifest["outputs"]["bin_edges"]]
    state, _ = decode(raw)
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(encode(state, {MANIFEST_KEY: json.dumps(manifest, sort_keys=True)}))
    with pytest.raises(PackageError, match="manifest was modified"):
        ModelPackage.load(edited)
    assert main(["info", str(edited)]) == 2
    assert "manifest was modified" in capsys.readouterr().err


# ----------------------------------------------------------------------
# 3. Clear errors instead of tracebacks


def test_dia_package_given_to_photoz_predict(tmp_path, catalog_file, capsys):
    assert (
        main(
            [
                "predict",
                "photoz",
                "--model",
                str(DIA_DEFAULT),
                "--input",
                str(catalog_file),
                "--out",
                str(tmp_path / "o.parquet"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "is a 'dia' model; photo-z needs a 'photoz' package" in err and "Traceback" not in err
    with pytest.raises(PackageError, match="is a 'dia' model; photo-z needs a 'photoz' package"):
        predict_photoz(ModelPackage.load(DIA_DEFAULT), make_photometric_catalog(3, seed=0))


def test_string_flux_columns_name_the_column_and_its_type(tmp_path, photoz_package, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cat = make_photometric_catalog(4, seed=0)
    table = pa.table({name: np.asarray(cat[name]) for name in cat.colnames})
    i = table.column_names.index("r_cModelFlux")
    table = table.set_column(
        i,
        pa.field("r_cModelFlux", pa.large_string()),
        pa.array(["1.5", "abc", "", "2"], type=pa.large_string()),
    )
    with pytest.raises(
        PhotozInputError,
        match=r"Column 'r_cModelFlux' must hold numbers but has type "
        r"large_string \(values such as \['1.5', 'abc', ''\]\)",
    ):
        predict_photoz(photoz_package, table)
    path = tmp_path / "strings.parquet"
    pq.write_table(table, path)
    assert main(["predict", "photoz", "--input", str(path), "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "'r_cModelFlux' must hold numbers but has type string" in err and "Traceback" not in err
    # Object columns of numbers and None are still numbers (None = missing).
    objects = {name: np.asarray(cat[name]) for name in cat.colnames}
    objects["g_cModelFlux"] = np.array([1.0, None, 3, 4.5], dtype=object)
    out = predict_photoz(photoz_package, objects)
    assert (
        out["photoz_flags"][1] & PhotozFlag.MISSING_BAND
        and not out["photoz_flags"][0] & PhotozFlag.MISSING_BAND
    )


def test_invalid_widths_in_a_manifest_are_a_package_error(tmp_path, capsys):
    from lsst.meas.ml.safetensors_io import decode, encode

    raw = DIA_DEFAULT.read_bytes()
    state, _ = decode(raw)
    for widths, shown in (([16, -32, 32], "-32"), ([16, 32.5, 32], "32.5")):
        manifest = _manifest_of(raw)
        manifest["hyperparameters"]["widths"] = widths
        manifest[MANIFEST_SHA256_KEY] = manifest_sha256(manifest)  # a consistent, but wrong, manifest
        path = tmp_path / "bad.safetensors"
        path.write_bytes(encode(state, {MANIFEST_KEY: json.dumps(manifest)}))
        with pytest.raises(
            PackageError, match=rf"hyper-parameter 'widths' must be a list of positive integers.*{shown}"
        ):
            ModelPackage.load(path)
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert "'widths'" in err and "Traceback" not in err


# ----------------------------------------------------------------------
# 4. Alert cutouts: decompression cap, truncation at an HDU boundary


def _rubin_like_cutout(size: int = 30) -> bytes:
    """A cutout in the Rubin layout: PRIMARY (with CUTMINX/CUTMINY), UNCERT, PSFIMAGE."""
    rng = np.random.default_rng(0)
    primary = fits.PrimaryHDU(rng.normal(size=(size, size)).astype(np.float32))
    primary.header["CUTMINX"] = 100
    primary.header["CUTMINY"] = 200
    uncert = fits.ImageHDU(np.ones((size, size), np.float32), name="UNCERT")
    psf = np.exp(-0.5 * (np.arange(-10, 11)[:, None] ** 2 + np.arange(-10, 11)[None, :] ** 2) / 4.0)
    buf = io.BytesIO()
    fits.HDUList([primary, uncert, fits.ImageHDU(psf, name="PSFIMAGE")]).writeto(buf)
    return buf.getvalue()


def _hdu_ends(raw: bytes) -> list[int]:
    with fits.open(io.BytesIO(raw)) as hdul:
        info = [h.fileinfo() for h in hdul]
    return [i["datLoc"] + i["datSpan"] for i in info]


def test_gzip_cutout_expanding_beyond_the_cap_is_refused():
    good = _rubin_like_cutout()
    assert read_cutout(gzip.compress(good)).shape == (30, 30)
    with pytest.raises(AlertError, match=f"cutout expands beyond {len(good) - 1} bytes"):
        read_cutout(gzip.compress(good), max_bytes=len(good) - 1)
    bomb = gzip.compress(b"SIMPLE  =" + b" " * (MAX_CUTOUT_BYTES + 10))
    assert len(bomb) < 100_000
    with pytest.raises(AlertError, match=f"cutout expands beyond {MAX_CUTOUT_BYTES} bytes"):
        read_cutout(bomb)
    with pytest.raises(AlertError, match="gzip stream is corrupt"):
        read_cutout(gzip.compress(good)[:-20])


def test_cutout_truncated_at_an_hdu_boundary_is_corrupt():
    raw = _rubin_like_cutout()
    end_primary, end_uncert, end_psf = _hdu_ends(raw)
    assert end_psf == len(raw)
    assert read_cutout(raw).psf is not None
    for cut, missing in ((end_primary, "UNCERT, PSFIMAGE"), (end_uncert, "PSFIMAGE")):
        for data in (raw[:cut], gzip.compress(raw[:cut])):
            with pytest.raises(AlertError, match=f"cutout FITS file is truncated: .* lacks {missing}"):
                read_cutout(data)
    # A single-HDU cutout without the Rubin cards (ZTF) is still fine.
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((63, 63), np.float32)).writeto(buf)
    assert read_cutout(gzip.compress(buf.getvalue())).shape == (63, 63)


@needs_rubin
def test_real_cutouts_pass_and_truncated_science_or_difference_is_flagged():
    from lsst.meas.ml.dia.alert_scoring import alert_stamps

    records = read_alerts(RUBIN)[:6]
    for rec in records:  # every real cutout has the three HDUs: none is flagged
        for raw in rec.cutouts.values():
            read_cutout(raw)
    for i, name in ((1, "cutoutScience"), (3, "cutoutDifference"), (4, "cutoutTemplate")):
        raw = records[i].cutouts[name]
        records[i].cutouts[name] = raw[: _hdu_ends(raw)[1]]  # PSFIMAGE HDU cut off
    prepared = alert_stamps(records, 32)
    assert prepared.flags["flag_corrupt_cutout"].tolist() == [False, True, False, True, True, False]
    assert prepared.usable.tolist() == [True, False, True, False, False, True]
    assert sum("lacks PSFIMAGE" in p for p in prepared.problems) == 3


# ----------------------------------------------------------------------
# 5. Registration


def _generic_package(family="generic", version="1.0.0") -> ModelPackage:
    torch.manual_seed(0)
    hp = {"n_features": 4, "n_outputs": 2, "hidden": [8]}
    return ModelPackage.from_model(
        build_model("mlp", hp),
        family=family,
        architecture="mlp",
        hyperparameters=hp,
        inputs={"features": list("abcd")},
        outputs={},
        version=version,
        provenance={},
    )


def test_register_refuses_chained_wrong_family_and_data_runs(tmp_path, capsys):
    from lsst.daf.butler import Butler, CollectionType, DatasetType
    from lsst.meas.ml.butler import create_repo

    repo = tmp_path / "repo"
    butler = create_repo(repo)
    butler.registry.registerCollection("models/photoz/1.0", CollectionType.RUN)
    butler.registry.registerCollection("models/photoz/current", CollectionType.CHAINED)
    butler.collections.redefine_chain("models/photoz/current", ["models/photoz/1.0"])
    thing = DatasetType("thing", (), "StructuredDataDict", universe=butler.dimensions)
    butler.registry.registerDatasetType(thing)
    butler.registry.registerCollection("data/run", CollectionType.RUN)
    butler.put({"a": 1}, thing, run="data/run")
    del butler

    photoz = tmp_path / "photoz.safetensors"
    _generic_package("photoz").save(photoz)
    dia = tmp_path / "dia.safetensors"
    _generic_package("dia").save(dia)
    cases = [
        (photoz, "models/photoz/current", "is a CHAINED collection"),
        (dia, "models/photoz/2.0", "collections models/photoz/... hold 'photoz' models"),
        (photoz, "data/run", "already holds other datasets (thing)"),
    ]
    for package, run, message in cases:
        assert main(["register", str(repo), str(package), "--run", run]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    butler = Butler.from_config(str(repo))
    assert butler.query_datasets("thing", collections="data/run")
    assert "models/photoz/2.0" not in butler.collections.query("*")
    assert butler.collections.get_info("models/photoz/current").children == ("models/photoz/1.0",)
    assert not butler.registry.queryDatasetTypes("ml_model_*")  # nothing was written
    # The default RUN still works.
    assert main(["register", str(repo), str(dia)]) == 0
    assert "models/dia/1.0.0" in capsys.readouterr().out


# ----------------------------------------------------------------------
# 6. Duplicate object ids


def test_duplicate_object_ids_are_flagged_and_logged(photoz_package, caplog):
    cat = make_photometric_catalog(6, seed=4)
    cat["objectId"] = [10, 11, 10, 12, 13, 13]
    with caplog.at_level(logging.WARNING, logger="lsst.meas.ml.photoz.predict"):
        out = predict_photoz(photoz_package, cat)
    dup = (np.asarray(out["photoz_flags"]) & int(PhotozFlag.DUPLICATE_ID)) != 0
    assert dup.tolist() == [True, False, True, False, True, True]
    assert any("4 of 6 input rows share an object id" in r.getMessage() for r in caplog.records)
    assert out.meta["photoz_flag_bits"]["DUPLICATE_ID"] == 16
    assert "DUPLICATE_ID" in out.meta["photoz_flag_descriptions"]
    assert "16=DUPLICATE_ID" in out["photoz_flags"].description
    unique = predict_photoz(photoz_package, make_photometric_catalog(6, seed=4))
    assert not (np.asarray(unique["photoz_flags"]) & int(PhotozFlag.DUPLICATE_ID)).any()


def test_quality_report_refuses_to_overwrite_its_model(tmp_path):
    from lsst.meas.ml.cli import main

    model = tmp_path / "dia.safetensors"
    model.write_bytes(DIA_DEFAULT.read_bytes())
    assert main(["quality", "dia", "--model", str(model), "--out", str(model)]) != 0
    assert model.read_bytes() == DIA_DEFAULT.read_bytes()
