"""Reading real Rubin and ZTF alert packets and their cutouts."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from lsst.meas.ml.alerts import AlertError, read_alerts, read_cutout

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RUBIN = DATA / "rubin_alerts" / "lsstcam_alerts_2026-01.parquet"
RUBIN_SSO = DATA / "rubin_alerts" / "lsstcam_sso_trails_2026-07.parquet"
ZTF = sorted((DATA / "ztf_alerts").glob("*.parquet"))

needs_rubin = pytest.mark.skipif(not RUBIN.exists(), reason=f"real Rubin alerts not found at {RUBIN}")
needs_ztf = pytest.mark.skipif(not ZTF, reason=f"real ZTF alerts not found under {DATA / 'ztf_alerts'}")


@pytest.fixture(scope="module")
def rubin_records():
    return read_alerts(RUBIN)


def _centroid(image: np.ndarray, x: float, y: float, radius: float = 3.0) -> tuple[float, float]:
    """Light centroid around the brightest pixel within 6 pixels of (x, y) (array coordinates)."""
    img = image.astype(float) - np.nanmedian(image)
    yy, xx = np.indices(img.shape)
    near = np.hypot(xx - x, yy - y) < 6
    j, i = np.unravel_index(np.nanargmax(np.where(near, img, -np.inf)), img.shape)
    w = np.where(np.hypot(xx - i, yy - j) < radius, np.clip(img, 0, None), 0)
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


@needs_rubin
def test_read_rubin_parquet(rubin_records):
    assert len(rubin_records) == 27
    rec = rubin_records[0]
    assert rec.survey == "rubin" and rec.band == "i"
    assert 0 <= rec.reference_score <= 1
    assert all(isinstance(rec.cutouts[k], bytes) for k in rec.cutouts)
    ids = [r.diaSourceId for r in rubin_records]
    assert len(set(ids)) == len(ids)


@needs_rubin
def test_rubin_cutout_pixels_variance_psf(rubin_records):
    rec = rubin_records[0]
    raw = rec.cutouts["cutoutDifference"]
    with fits.open(io.BytesIO(raw)) as hdul:
        data = hdul[0].data.astype(np.float32)
        var = hdul["UNCERT"].data.astype(np.float32)
        header = hdul[0].header
    exp = read_cutout(raw, band=rec.band)
    np.testing.assert_array_equal(exp.image, data)
    np.testing.assert_array_equal(exp.variance, var)
    assert exp.metadata["CUTMINX"] == header["CUTMINX"] and exp.metadata["CUTMINY"] == header["CUTMINY"]
    # Documented convention: xy0 is one more than CUTMINX/CUTMINY (see lsst.meas.ml.alerts).
    assert exp.xy0 == (header["CUTMINX"] + 1, header["CUTMINY"] + 1)
    assert exp.metadata["BUNIT"] == "nJy" and exp.band == "i"
    assert exp.psf is not None and exp.psf.shape == (41, 41)
    assert abs(exp.psf.sum() - 1) < 1e-4


@needs_rubin
def test_rubin_cutout_wcs_matches_dia_source(rubin_records):
    for rec in rubin_records:
        exp = read_cutout(rec.cutouts["cutoutScience"])
        ra, dec = exp.pixel_to_sky(rec.x, rec.y)
        sep = np.hypot((ra - rec.ra) * np.cos(np.radians(rec.dec)), dec - rec.dec) * 3600
        assert sep < 0.001, (rec.diaSourceId, sep)


@needs_rubin
def test_rubin_cutout_origin_from_the_light(rubin_records):
    """Bright point sources sit at the DIA source's x, y with xy0 = CUTMIN + 1
    and one pixel off with the cards as written."""
    bright = [r for r in rubin_records if r.extra["snr"] > 25]
    assert len(bright) >= 3
    for rec in bright:
        exp = read_cutout(rec.cutouts["cutoutScience"])
        cx, cy = _centroid(exp.image, rec.x - exp.xy0[0], rec.y - exp.xy0[1])
        assert abs(cx + exp.xy0[0] - rec.x) < 0.6 and abs(cy + exp.xy0[1] - rec.y) < 0.6
        raw = read_cutout(rec.cutouts["cutoutScience"], cutmin_offset=0)
        offset = np.hypot(cx + raw.xy0[0] - rec.x, cy + raw.xy0[1] - rec.y)
        assert offset > 0.8


@needs_ztf
def test_read_ztf_alerts_and_gzipped_cutouts():
    records = read_alerts(ZTF[0])
    assert len(records) > 10 and all(r.survey == "ztf" for r in records)
    rec = records[0]
    assert rec.cutouts["cutoutDifference"]["stampData"][:2] == b"\x1f\x8b"
    exp = read_cutout(rec.cutouts["cutoutDifference"])
    with fits.open(io.BytesIO(gzip.decompress(rec.cutouts["cutoutDifference"]["stampData"]))) as hdul:
        np.testing.assert_array_equal(exp.image, hdul[0].data.astype(np.float32))
    assert exp.shape == (63, 63) and exp.wcs is None
    assert not exp.metadata["HAS_VARIANCE"] and np.isnan(exp.variance).all()
    assert 0 <= rec.reference_score <= 1  # drb


@needs_rubin
def test_corrupt_cutouts_raise_alert_error(rubin_records):
    raw = rubin_records[0].cutouts["cutoutScience"]
    bad_inputs = {
        "truncated": raw[: len(raw) // 3],
        "header only": raw[:2880],
        "not FITS": b"this is not a FITS file",
        "bad gzip": b"\x1f\x8b\x08\x00garbage",
        "empty": b"",
        "missing": None,
    }
    for what, data in bad_inputs.items():
        with pytest.raises(AlertError):
            read_cutout(data)
        # the message says what is wrong
        try:
            read_cutout(data)
        except AlertError as exc:
            assert "cutout" in str(exc), what


def _avro_schema() -> dict:
    return {
        "type": "record",
        "name": "alert",
        "namespace": "lsst.v10_0",
        "fields": [
            {"name": "diaSourceId", "type": "long"},
            {
                "name": "diaSource",
                "type": {
                    "type": "record",
                    "name": "diaSource",
                    "fields": [
                        {"name": "diaSourceId", "type": "long"},
                        {"name": "x", "type": "float"},
                        {"name": "y", "type": "float"},
                        {"name": "ra", "type": "double"},
                        {"name": "dec", "type": "double"},
                        {"name": "band", "type": ["null", "string"]},
                        {"name": "reliability", "type": ["null", "float"]},
                        {"name": "snr", "type": ["null", "float"]},
                    ],
                },
            },
            {"name": "cutoutDifference", "type": ["null", "bytes"], "default": None},
            {"name": "cutoutScience", "type": ["null", "bytes"], "default": None},
            {"name": "cutoutTemplate", "type": ["null", "bytes"], "default": None},
        ],
    }


def _avro_rows(records) -> list[dict]:
    return [
        {
            "diaSourceId": r.diaSourceId,
            "diaSource": {
                "diaSourceId": r.diaSourceId,
                "x": r.x,
                "y": r.y,
                "ra": r.ra,
                "dec": r.dec,
                "band": r.band,
                "reliability": r.reference_score,
                "snr": r.extra["snr"],
            },
            **r.cutouts,
        }
        for r in records
    ]


@needs_rubin
def test_rubin_avro_container_and_schemaless(tmp_path, rubin_records):
    import fastavro

    schema = fastavro.parse_schema(_avro_schema())
    rows = _avro_rows(rubin_records[:5])
    container = tmp_path / "alerts.avro"
    with open(container, "wb") as fh:
        fastavro.writer(fh, schema, rows)
    got = read_alerts(container)
    assert [r.diaSourceId for r in got] == [r.diaSourceId for r in rubin_records[:5]]
    assert got[0].cutouts["cutoutScience"] == rubin_records[0].cutouts["cutoutScience"]
    assert abs(got[0].x - rubin_records[0].x) < 1e-3

    # Two schemaless messages in the Confluent wire format (magic byte + schema id).
    stream = tmp_path / "messages.avro"
    with open(stream, "wb") as fh:
        for row in rows[:2]:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, row)
            fh.write(b"\x00" + struct.pack(">I", 703) + buf.getvalue())
    got = read_alerts(stream, schema=_avro_schema())
    assert [r.diaSourceId for r in got] == [r.diaSourceId for r in rubin_records[:2]]
    with pytest.raises(AlertError, match="schemaless Avro needs the alert schema"):
        read_alerts(stream)


def test_not_an_alert_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(AlertError, match="does not exist"):
        read_alerts(tmp_path / "nothing.parquet")
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(AlertError, match="no 'diaSource'"):
        read_alerts(path)
    text = tmp_path / "alerts.txt"
    text.write_text("hello")
    with pytest.raises(AlertError, match="not a Parquet or Avro file"):
        read_alerts(text)
