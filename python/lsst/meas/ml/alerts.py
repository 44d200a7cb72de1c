"""Read alert packets and their FITS cutouts without a Butler.

Two alert formats are understood:

* **Rubin** (schema ``lsst.v*``): a ``diaSource`` record and the cutouts
  ``cutoutScience``, ``cutoutTemplate`` and ``cutoutDifference``, each the
  bytes of a small FITS file (``PRIMARY`` image in nJy with a celestial WCS
  and ``CUTMINX``/``CUTMINY``, ``UNCERT`` variance, ``PSFIMAGE`` PSF).
  Read from broker Parquet files (one row per alert), from Avro container
  files, or from schemaless Avro messages (optionally with the 5-byte
  Confluent wire-format prefix) given the schema.
* **ZTF**: a ``candidate`` record and the same three cutout names, each a
  struct ``{fileName, stampData}`` whose data is a gzipped 63x63 FITS image
  with no WCS or variance.  Read from Parquet or Avro containers.

*Pixel origin of Rubin cutouts.*  In the LSSTCam alerts examined (schema ``lsst.v10_0``) the WCS reference
pixel sits exactly on the DIA source (``CRVAL`` equals the source's
``ra``/``dec``) and ``CRPIX1 = x - CUTMINX``.  Read as standard (1-based)
FITS, that places the source at array column ``x - CUTMINX - 1``, and the
pixels agree: the light centroid of every bright point source lies at
array index ``x - CUTMINX - 1`` (offsets -0.9 to -1.2 pixels for the four
point sources with S/N > 25), not at ``x - CUTMINX``.  The WCS is therefore
self-consistent with the pixel data; it is ``CUTMINX``/``CUTMINY`` that are
one pixel short of the parent coordinate of array element ``[0, 0]``.
`read_cutout` keeps the WCS as standard FITS and sets
``xy0 = (CUTMINX + 1, CUTMINY + 1)`` so that the parent-frame position of
the DIA source, its sky position and its light all coincide; the raw cards
stay in ``PixelPlanes.metadata``.  Pass ``cutmin_offset=0`` to use the cards
as written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import MeasMlUserError
from .images import PixelPlanes

__all__ = [
    "AlertError",
    "AlertRecord",
    "CUTOUT_NAMES",
    "MAX_CUTOUT_BYTES",
    "RUBIN_CUTMIN_OFFSET",
    "RUBIN_CUTOUT_HDUS",
    "read_alerts",
    "read_cutout",
    "records_from_rows",
]

#: Cutout fields of an alert, in the order science, template, difference.
CUTOUT_NAMES: tuple[str, str, str] = ("cutoutScience", "cutoutTemplate", "cutoutDifference")

#: Pixels added to ``CUTMINX``/``CUTMINY`` of Rubin cutouts to get ``xy0``
#: (see the module documentation for the measurement behind it).
RUBIN_CUTMIN_OFFSET: int = 1

#: Largest size, in bytes, a gzip-compressed cutout may expand to; a real
#: cutout is some tens of kB (Rubin 35-100 kB, ZTF 20 kB), so anything
#: beyond this is corrupt or a decompression bomb.
MAX_CUTOUT_BYTES: int = 16 * 2**20

#: Extension HDUs every Rubin cutout carries after its ``PRIMARY`` image.  A
#: cutout in the Rubin layout (``CUTMINX``/``CUTMINY`` in the primary header,
#: or one of these extensions present) that lacks one of them was cut short
#: at an HDU boundary and is refused as corrupt.
RUBIN_CUTOUT_HDUS: tuple[str, str] = ("UNCERT", "PSFIMAGE")


class AlertError(MeasMlUserError, ValueError):
    """An alert file or cutout that cannot be read (corrupt, truncated, unknown layout)."""


@dataclasses.dataclass
class AlertRecord:
    """One alert, reduced to what cutout scoring needs.

    Attributes
    ----------
    diaSourceId : `int`
        Rubin ``diaSourceId`` or ZTF ``candid``.
    survey : `str`
        ``"rubin"`` or ``"ztf"``.
    x, y : `float` or `None`
        Parent-frame pixel position of the source (Rubin); `None` means "the
        centre of the cutout" (ZTF cutouts are centred on the candidate).
    ra, dec : `float`
        Sky position in degrees.
    band : `str` or `None`
        Band of the observation.
    reference_score : `float`
        The survey's own real/bogus score: Rubin ``reliability`` or ZTF
        ``drb`` (``rb`` if ``drb`` is absent); NaN when missing.
    cutouts : `dict` [`str`, `bytes` or `None`]
        Raw cutout bytes by field name (`CUTOUT_NAMES`).
    extra : `dict`
        Other scalar source fields (``snr``, ``psfFlux``, ZTF ``rb``, ...).
    """

    diaSourceId: int
    survey: str
    x: float | None
    y: float | None
    ra: float
    dec: float
    band: str | None
    reference_score: float
    cutouts: dict[str, bytes | None]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------
# Cutouts
# ----------------------------------------------------------------------
def _as_bytes(data: Any) -> bytes:
    if isinstance(data, Mapping):  # ZTF {fileName, stampData}
        data = data.get("stampData")
    if data is None:
        raise AlertError("cutout is missing (no bytes)")
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise AlertError(f"cutout must be bytes of a FITS file, got {type(data).__name__}")
    return data


def _gunzip_limited(raw: bytes, max_bytes: int) -> bytes:
    """Decompress gzip ``raw`` incrementally, never producing more than ``max_bytes``.

    Raises
    ------
    AlertError
        If the stream expands beyond ``max_bytes`` or is corrupt or truncated.
    """
    out = bytearray()
    data = raw
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = data
            while not inflater.eof:
                # At most 1 MiB per step, and max_length >= 1, never "unlimited" (0).
                chunk = inflater.decompress(pending, min(max_bytes + 1 - len(out), 2**20))
                out += chunk
                if len(out) > max_bytes:
                    raise AlertError(
                        f"cutout expands beyond {max_bytes} bytes when decompressed (gzip bomb or corrupt "
                        "stream); refused"
                    )
                pending = inflater.unconsumed_tail
                if not chunk and not pending:  # input used up, no more output: truncated
                    break
            if not inflater.eof:
                raise AlertError("cutout gzip stream is corrupt: truncated (end of stream not reached)")
            data = inflater.unused_data
            if not data.strip(b"\0"):
                return bytes(out)
            if data[:2] != b"\x1f\x8b":
                raise AlertError("cutout gzip stream is corrupt: trailing garbage after the compressed data")
    except zlib.error as exc:
        raise AlertError(f"cutout gzip stream is corrupt: {exc}") from None


def read_cutout(
    fits_bytes: bytes | Mapping[str, Any],
    *,
    band: str | None = None,
    cutmin_offset: int = RUBIN_CUTMIN_OFFSET,
    max_bytes: int = MAX_CUTOUT_BYTES,
) -> PixelPlanes:
    """Read one alert cutout into an `~lsst.meas.ml.images.Exposure`.

    Parameters
    ----------
    fits_bytes : `bytes` or `dict`
        Bytes of a FITS file, optionally gzip-compressed, or a ZTF
        ``{"fileName", "stampData"}`` struct.
    band : `str`, optional
        Band to record on the exposure.
    cutmin_offset : `int`
        Added to ``CUTMINX``/``CUTMINY`` to give ``xy0`` (Rubin cutouts).
    max_bytes : `int`
        Largest size a gzip-compressed cutout may expand to (default
        `MAX_CUTOUT_BYTES`); it is decompressed incrementally and refused
        as soon as it grows past this.

    Returns
    -------
    exposure : `~lsst.meas.ml.images.Exposure`
        Image (float32; NaN pixels kept), variance from ``UNCERT`` (NaN
        where absent: ZTF), PSF from ``PSFIMAGE`` when odd-sized, WCS in
        local array coordinates when the header has one.  ``metadata``
        holds ``BUNIT``, the raw ``CUTMINX``/``CUTMINY`` and ``HAS_VARIANCE``.

    Raises
    ------
    AlertError
        The bytes are not a readable FITS image (corrupt, truncated, empty,
        not 2-d), a gzip cutout expands beyond ``max_bytes``, or a cutout in
        the Rubin layout lacks its ``UNCERT`` or ``PSFIMAGE`` HDU (cut short
        at an HDU boundary; see `RUBIN_CUTOUT_HDUS`).
    """
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    raw = _as_bytes(fits_bytes)
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip_limited(raw, max_bytes)
    if not raw.startswith(b"SIMPLE"):
        raise AlertError(
            f"cutout is not a FITS file (starts with {raw[:8]!r}); expected 'SIMPLE', possibly gzipped"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
            primary = hdul[0]
            header = primary.header
            data = primary.data
            if data is None:
                raise AlertError("cutout FITS file has no image in its primary HDU")
            image = np.array(data, dtype=np.float32)
            names = [h.name for h in hdul]
            rubin_layout = ("CUTMINX" in header and "CUTMINY" in header) or any(
                name in names for name in RUBIN_CUTOUT_HDUS
            )
            if rubin_layout:
                absent = [name for name in RUBIN_CUTOUT_HDUS if name not in names or hdul[name].data is None]
                if absent:
                    raise AlertError(
                        f"cutout FITS file is truncated: a Rubin cutout has PRIMARY, "
                        f"{', '.join(RUBIN_CUTOUT_HDUS)} HDUs but this one lacks {', '.join(absent)} "
                        f"(HDUs present: {', '.join(names)})"
                    )
            variance = None
            if "UNCERT" in names:
                variance = np.array(hdul["UNCERT"].data, dtype=np.float32)
            psf = None
            if "PSFIMAGE" in names and hdul["PSFIMAGE"].data is not None:
                psf = np.array(hdul["PSFIMAGE"].data, dtype=np.float32)
            wcs = None
            if "CTYPE1" in header or "CRPIX1" in header:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FITSFixedWarning)
                    wcs = WCS(header, naxis=2)
    except AlertError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, IndexError...
        raise AlertError(f"cutout FITS file is corrupt or truncated: {type(exc).__name__}: {exc}") from None
    if image.ndim != 2 or image.size == 0:
        raise AlertError(f"cutout image must be 2-d and non-empty, got shape {image.shape}")
    has_variance = variance is not None and variance.shape == image.shape
    if not has_variance:
        variance = np.full(image.shape, np.nan, dtype=np.float32)
    if psf is not None and (psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0):
        psf = None
    if psf is not None:
        total = float(np.nansum(psf))
        psf = psf / total if total > 0 else None
    metadata: dict[str, Any] = {"BUNIT": header.get("BUNIT"), "HAS_VARIANCE": bool(has_variance)}
    xy0 = (0, 0)
    if "CUTMINX" in header and "CUTMINY" in header:
        metadata["CUTMINX"] = int(header["CUTMINX"])
        metadata["CUTMINY"] = int(header["CUTMINY"])
        xy0 = (int(header["CUTMINX"]) + cutmin_offset, int(header["CUTMINY"]) + cutmin_offset)
    return PixelPlanes(
        image=image,
        variance=variance,
        wcs=wcs,
        psf=psf,
        band=band,
        xy0=xy0,
        metadata=metadata,
    )


# ----------------------------------------------------------------------
# Alert records
# ----------------------------------------------------------------------
def _float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _record_from_row(row: Mapping[str, Any]) -> AlertRecord:
    """Normalise one decoded alert (a dict) into an `AlertRecord`."""
    cutouts = {name: row.get(name) for name in CUTOUT_NAMES}
    if "diaSource" in row and row["diaSource"] is not None:
        src = row["diaSource"]
        extra = {
            key: src.get(key)
            for key in ("snr", "psfFlux", "psfFluxErr", "visit", "detector", "isDipole", "isNegative")
            if key in src
        }
        return AlertRecord(
            diaSourceId=int(src["diaSourceId"]),
            survey="rubin",
            x=_float(src.get("x")),
            y=_float(src.get("y")),
            ra=_float(src.get("ra")),
            dec=_float(src.get("dec")),
            band=src.get("band"),
            reference_score=_float(src.get("reliability")),
            cutouts=cutouts,
            extra=extra,
        )
    if "candidate" in row and row["candidate"] is not None:
        cand = row["candidate"]
        drb = _float(cand.get("drb"))
        band = {1: "g", 2: "r", 3: "i"}.get(cand.get("fid"))
        extra = {key: cand.get(key) for key in ("rb", "drb", "magpsf", "sigmapsf", "isdiffpos", "fwhm")}
        extra["objectId"] = row.get("objectId")
        return AlertRecord(
            diaSourceId=int(cand.get("candid", row.get("candid"))),
            survey="ztf",
            x=None,
            y=None,
            ra=_float(cand.get("ra")),
            dec=_float(cand.get("dec")),
            band=band,
            reference_score=drb if np.isfinite(drb) else _float(cand.get("rb")),
            cutouts=cutouts,
            extra=extra,
        )
    raise AlertError(
        "alert has neither a 'diaSource' (Rubin) nor a 'candidate' (ZTF) record; "
        f"its fields are {sorted(row)[:12]}"
    )


def records_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[AlertRecord]:
    """Normalise decoded alerts (dicts, as Avro or Parquet give them).

    Parameters
    ----------
    rows : `~collections.abc.Iterable` [`~collections.abc.Mapping`]
        The decoded alerts, one mapping per alert.

    Returns
    -------
    records : `list` [`AlertRecord`]
        One normalised record per row.

    Raises
    ------
    AlertError
        If a row is neither a Rubin nor a ZTF alert.
    """
    return [_record_from_row(row) for row in rows]


def _read_parquet(path: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    wanted = [
        name
        for name in ("diaSource", "candidate", "objectId", "candid", *CUTOUT_NAMES)
        if name in schema.names
    ]
    if not ({"diaSource", "candidate"} & set(wanted)):
        raise AlertError(
            f"{path}: Parquet file has no 'diaSource' (Rubin) or 'candidate' (ZTF) column; "
            f"columns are {schema.names[:12]}"
        )
    return pq.read_table(path, columns=wanted).to_pylist()


def _read_avro(path: str, schema: Mapping[str, Any] | str | None) -> list[dict[str, Any]]:
    import fastavro

    with open(path, "rb") as stream:
        head = stream.read(4)
        stream.seek(0)
        if head == b"Obj\x01":
            return list(fastavro.reader(stream))
        if schema is None:
            raise AlertError(
                f"{path}: schemaless Avro needs the alert schema; pass schema= (a dict or the path "
                "of an .avsc file, e.g. lsst.v10_0.alert.avsc)"
            )
        if isinstance(schema, str):
            with open(schema) as sfile:
                schema = json.load(sfile)
        parsed = fastavro.parse_schema(schema)
        payload = stream.read()
    # One message, or several concatenated; each may carry the Confluent prefix
    # (magic byte 0 and a 4-byte schema id).
    records = []
    buf = io.BytesIO(payload)
    while buf.tell() < len(payload):
        start = buf.tell()
        prefix = buf.read(5)
        if not (len(prefix) == 5 and prefix[0] == 0 and struct.unpack(">I", prefix[1:])[0] < 2**20):
            buf.seek(start)
        records.append(fastavro.schemaless_reader(buf, parsed))
    return records


def read_alerts(
    path: str | os.PathLike[str], *, schema: Mapping[str, Any] | str | None = None
) -> list[AlertRecord]:
    """Read a file of alerts (Rubin or ZTF; Parquet or Avro).

    Parameters
    ----------
    path : `str` or `os.PathLike`
        A Parquet file (broker format, one alert per row), an Avro container
        file, or a schemaless Avro file of one or more messages.
    schema : `dict` or `str`, optional
        Avro schema (or ``.avsc`` path) for schemaless Avro.

    Returns
    -------
    records : `list` [`AlertRecord`]
        One record per alert, in file order.

    Raises
    ------
    AlertError
        The file is missing, in an unknown format, or not an alert file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AlertError(f"alert file {path} does not exist")
    with open(path, "rb") as stream:
        head = stream.read(4)
    try:
        if head == b"PAR1":
            rows = _read_parquet(path)
        elif head == b"Obj\x01" or path.endswith(".avro"):
            rows = _read_avro(path, schema)
        else:
            raise AlertError(
                f"{path}: not a Parquet or Avro file (starts with {head!r}); "
                "give broker Parquet or Avro alerts"
            )
    except AlertError:
        raise
    except Exception as exc:
        raise AlertError(f"{path}: cannot decode alerts: {type(exc).__name__}: {exc}") from None
    try:
        return records_from_rows(rows)
    except AlertError as exc:
        raise AlertError(f"{path}: {exc}") from None
