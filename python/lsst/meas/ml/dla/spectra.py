"""1D spectra: the container, its Butler storage (``MLSpectra``) and file readers.

`Spectrum` holds one spectrum: vacuum wavelengths (A), flux, 1-sigma
error, a mask (True = bad pixel), the quasar redshift (NaN when unknown),
a source id, its position and free metadata.  Construction normalises what
files give: the pixels are sorted by wavelength (``resorted`` records it),
non-finite fluxes and errors ``<= 0`` or not finite are masked.
Wavelengths in air are converted to vacuum by the readers (`air_to_vacuum`,
``air_converted`` records it).

`SpectrumCollection` is what the Butler stores (storage class
``MLSpectra``, one Parquet file with one row per spectrum and list
columns, `SpectrumCollection.to_arrow`).

Readers (`read_spectra`) understand:

* SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits`` (``COADD`` table with
  ``loglam``, ``flux``, ``ivar``, ``and_mask``; ``Z`` from ``SPALL`` or
  ``SPZBEST``) and the older ``spSpec`` images (flux, error and mask rows,
  ``COEFF0``/``COEFF1`` log-linear grid, ``Z`` in the header);
* one-dimensional FITS images with a linear or log-linear wavelength
  solution in the header (``CRVAL1``, ``CDELT1``/``CD1_1``, ``CRPIX1``,
  ``DC-FLAG`` = 1 for log-linear), with the error in a second HDU or a
  companion file (``*_f.fits`` / ``*_e.fits``, ``*_nF`` / ``*_nE``, as in
  the spectra of ``linetools``), and multi-HDU images (flux, error or
  inverse variance, wavelength, mask);
* FITS tables (one spectrum per row with array columns, or one pixel per
  row) and Parquet tables, with columns found by name (``wave``/
  ``wavelength``/``lambda``/``loglam``, ``flux``, ``error``/``sigma``/
  ``ivar``, ``mask``/``and_mask``) and units from the column (``nm``,
  ``um`` or A).

The quasar redshift comes from the header (``Z``, ``Z_QSO``, ``ZQSO``,
``ZEM``, ``Z_EM``, ``REDSHIFT``) or a table column of those names; a
reader's ``z_qso`` argument overrides it.  Air wavelengths are recognised
from ``AIRORVAC = 'air'``, ``VACUUM = F`` or ``WAVE_AIR`` columns.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import MeasMlUserError

__all__ = [
    "Spectrum",
    "SpectrumCollection",
    "SpectrumReadError",
    "air_to_vacuum",
    "read_spectra",
]


class SpectrumReadError(MeasMlUserError, ValueError):
    """A file that cannot be read as a spectrum, or spectrum arrays that do not fit together."""


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Convert air wavelengths to vacuum (Morton 2000, the IAU standard; SDSS's formula).

    Parameters
    ----------
    wave_air : `numpy.ndarray`
        Air wavelengths (A).

    Returns
    -------
    wave_vac : `numpy.ndarray`
        Vacuum wavelengths (A); unchanged below 2000 A, where air
        wavelengths are not used.
    """
    wave_air = np.asarray(wave_air, dtype=float)
    s2 = (1e4 / wave_air) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return np.where(wave_air >= 2000.0, wave_air * n, wave_air)


@dataclasses.dataclass
class Spectrum:
    """One 1D spectrum.

    Attributes
    ----------
    wavelength : `numpy.ndarray`
        Vacuum wavelengths (A).
    flux : `numpy.ndarray`
        Flux (any units; only ratios are used).
    error : `numpy.ndarray`
        1-sigma errors, same units (``<= 0`` or not finite = bad pixel).
    mask : `numpy.ndarray`, optional
        True where a pixel is bad (default none).
    z_qso : `float`, optional
        Quasar redshift (NaN: unknown).
    source_id : `str`, optional
        Identifier of the spectrum (file name, survey id...).
    ra, dec : `float`, optional
        ICRS position (deg; NaN: unknown).
    meta : `dict`, optional
        Free metadata (JSON-serialisable values).
    resorted : `bool`, optional
        Set when the input wavelengths were not increasing.
    air_converted : `bool`, optional
        Set when the wavelengths were converted from air.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray | None = None
    z_qso: float = math.nan
    source_id: str = ""
    ra: float = math.nan
    dec: float = math.nan
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    resorted: bool = False
    air_converted: bool = False

    def __post_init__(self) -> None:
        wave = np.asarray(self.wavelength, dtype=float).ravel()
        flux = np.asarray(self.flux, dtype=float).ravel()
        error = np.asarray(self.error, dtype=float).ravel()
        mask = np.zeros(len(wave), dtype=bool) if self.mask is None else np.asarray(self.mask).ravel()
        lengths = {len(wave), len(flux), len(error), len(mask)}
        if len(lengths) != 1:
            raise SpectrumReadError(
                f"Spectrum {self.source_id!r}: wavelength, flux, error and mask have different lengths "
                f"({len(wave)}, {len(flux)}, {len(error)}, {len(mask)})."
            )
        mask = mask.astype(bool)
        finite_wave = np.isfinite(wave)
        if not finite_wave.all():
            wave, flux, error, mask = (
                wave[finite_wave],
                flux[finite_wave],
                error[finite_wave],
                mask[finite_wave],
            )
        if len(wave) > 1 and np.any(np.diff(wave) <= 0):
            order = np.argsort(wave, kind="stable")
            wave, flux, error, mask = wave[order], flux[order], error[order], mask[order]
            if np.any(np.diff(wave) < 0) or not np.all(order == np.arange(len(order))):
                self.resorted = True
            dup = np.concatenate([[False], np.diff(wave) == 0])
            if dup.any():  # repeated wavelengths: keep the first
                keep = ~dup
                wave, flux, error, mask = wave[keep], flux[keep], error[keep], mask[keep]
        if len(wave) and np.nanmin(wave) <= 0:
            raise SpectrumReadError(f"Spectrum {self.source_id!r}: wavelengths must be positive (A).")
        self.wavelength, self.flux, self.error, self.mask = wave, flux, error, mask
        self.z_qso = math.nan if self.z_qso is None else float(self.z_qso)
        self.ra = math.nan if self.ra is None else float(self.ra)
        self.dec = math.nan if self.dec is None else float(self.dec)
        self.source_id = str(self.source_id)

    def __len__(self) -> int:
        return len(self.wavelength)

    @property
    def bad(self) -> np.ndarray:
        """Pixels not to use: masked, or flux/error not finite, or error ``<= 0``."""
        with np.errstate(invalid="ignore"):
            return self.mask | ~np.isfinite(self.flux) | ~np.isfinite(self.error) | ~(self.error > 0)

    def with_z(self, z_qso: float) -> Spectrum:
        """Return a copy with another quasar redshift.

        Parameters
        ----------
        z_qso : `float`
            The redshift.

        Returns
        -------
        spectrum : `Spectrum`
            A shallow copy.
        """
        return dataclasses.replace(self, z_qso=float(z_qso))


_SCALARS = ("source_id", "z_qso", "ra", "dec", "resorted", "air_converted")


class SpectrumCollection(Sequence[Spectrum]):
    """Spectra stored together: the Python type of the ``MLSpectra`` storage class.

    Parameters
    ----------
    spectra : iterable of `Spectrum`
        The spectra.
    """

    def __init__(self, spectra: Iterable[Spectrum] = ()) -> None:
        self.spectra = list(spectra)

    def __len__(self) -> int:
        return len(self.spectra)

    def __getitem__(self, index: Any) -> Any:
        return self.spectra[index]

    def __iter__(self) -> Iterator[Spectrum]:
        return iter(self.spectra)

    def __repr__(self) -> str:
        return f"SpectrumCollection({len(self)} spectra)"

    def to_arrow(self) -> Any:
        """Return the collection as one Arrow table (one row per spectrum).

        Returns
        -------
        table : `pyarrow.Table`
            Columns ``source_id``, ``z_qso``, ``ra``, ``dec``, ``resorted``,
            ``air_converted``, ``meta`` (JSON), and list columns
            ``wavelength``, ``flux``, ``error``, ``mask``.
        """
        import json

        import pyarrow as pa

        cols: dict[str, Any] = {k: [getattr(s, k) for s in self.spectra] for k in _SCALARS}
        cols["meta"] = [json.dumps(s.meta, default=str) for s in self.spectra]
        for k in ("wavelength", "flux", "error"):
            cols[k] = pa.array(
                [np.asarray(getattr(s, k), float) for s in self.spectra], type=pa.list_(pa.float64())
            )
        cols["mask"] = pa.array([np.asarray(s.mask, bool) for s in self.spectra], type=pa.list_(pa.bool_()))
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, table: Any) -> SpectrumCollection:
        """Build a collection from `to_arrow`'s table.

        Parameters
        ----------
        table : `pyarrow.Table`
            A table written by `to_arrow`.

        Returns
        -------
        collection : `SpectrumCollection`
            The spectra.
        """
        import json

        missing = [
            c for c in (*_SCALARS, "wavelength", "flux", "error", "mask") if c not in table.column_names
        ]
        if missing:
            raise SpectrumReadError(f"Spectrum table lacks the columns {missing}.")
        data = table.to_pydict()
        spectra = []
        for i in range(table.num_rows):
            spectra.append(
                Spectrum(
                    np.asarray(data["wavelength"][i], float),
                    np.asarray(data["flux"][i], float),
                    np.asarray(data["error"][i], float),
                    np.asarray(data["mask"][i], bool),
                    z_qso=data["z_qso"][i],
                    source_id=data["source_id"][i],
                    ra=data["ra"][i],
                    dec=data["dec"][i],
                    meta=json.loads(data["meta"][i] or "{}"),
                    resorted=bool(data["resorted"][i]),
                    air_converted=bool(data["air_converted"][i]),
                )
            )
        return cls(spectra)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the collection as Parquet.

        Parameters
        ----------
        path : path-like
            Output file.
        """
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), os.fspath(path))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SpectrumCollection:
        """Read a collection written by `write`.

        Parameters
        ----------
        path : path-like
            Parquet file.

        Returns
        -------
        collection : `SpectrumCollection`
            The spectra.
        """
        import pyarrow.parquet as pq

        return cls.from_arrow(pq.read_table(os.fspath(path)))


# ---------------------------------------------------------------------------------------------- readers
_Z_KEYS = ("Z_QSO", "ZQSO", "Z", "ZEM", "Z_EM", "REDSHIFT", "Z_VI", "Z_PIPE")
_WAVE_COLS = ("wavelength", "wave", "lambda", "wave_air", "wavelength_air", "loglam", "lam")
_FLUX_COLS = ("flux", "fl", "f")
_ERR_COLS = ("error", "err", "sigma", "sig", "err_flux", "flux_err", "fluxerr", "error_flux", "noise")
_IVAR_COLS = ("ivar", "inverse_variance", "flux_ivar")
_MASK_COLS = ("mask", "and_mask", "bad", "pixel_mask")


def _find(names: Iterable[str], wanted: Sequence[str]) -> str | None:
    lower = {n.lower(): n for n in names}
    for w in wanted:
        if w in lower:
            return lower[w]
    return None


def _header_z(header: Any) -> float:
    for key in _Z_KEYS:
        if key in header:
            try:
                z = float(header[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(z) and z > 0:
                return z
    return math.nan


def _is_air(header: Any) -> bool:
    if str(header.get("AIRORVAC", "")).strip().lower().startswith("air"):
        return True
    return "VACUUM" in header and header["VACUUM"] is False


def _header_position(header: Any) -> tuple[float, float]:
    for rk, dk in (("RA-D", "DEC-D"), ("PLUG_RA", "PLUG_DEC"), ("RADEG", "DECDEG"), ("RA", "DEC")):
        if rk in header and dk in header:
            ra, dec = header[rk], header[dk]
            try:
                return float(ra), float(dec)
            except (TypeError, ValueError):
                pass
            try:
                from astropy.coordinates import FK4, FK5, SkyCoord

                equinox = float(header.get("EQUINOX", 2000.0))
                frame = FK4(equinox=f"B{equinox:g}") if equinox < 1990 else FK5(equinox=f"J{equinox:g}")
                c = SkyCoord(str(ra).strip(), str(dec).strip(), unit=("hourangle", "deg"), frame=frame).icrs
                return float(c.ra.deg), float(c.dec.deg)
            except Exception:
                continue
    return math.nan, math.nan


_JNAME = re.compile(r"J(\d{2})(\d{2})(\d{2}(?:\.\d+)?)([+-])(\d{2})(\d{2})(\d{2}(?:\.\d+)?)")


def _jname_position(name: str) -> tuple[float, float] | None:
    """ICRS position encoded in an IAU name such as ``SDSSJ220248.31+123656.3``."""
    m = _JNAME.search(name)
    if not m:
        return None
    h, mi, sec, sign, d, dm, ds = m.groups()
    ra = 15.0 * (int(h) + int(mi) / 60 + float(sec) / 3600)
    dec = (int(d) + int(dm) / 60 + float(ds) / 3600) * (-1 if sign == "-" else 1)
    return ra, dec


def _wave_unit_factor(unit: Any) -> float:
    text = str(unit or "").strip().lower()
    return {"nm": 10.0, "nanometer": 10.0, "um": 1e4, "micron": 1e4, "m": 1e10, "cm": 1e8}.get(text, 1.0)


def _to_wave(values: np.ndarray, unit: Any, name: str) -> np.ndarray:
    w = np.asarray(values, dtype=float) * _wave_unit_factor(unit)
    if name.lower() == "loglam" or (len(w) and np.nanmax(w) < 10.0):
        w = 10.0**w
    return w


def _image_wave(header: Any, n: int) -> np.ndarray:
    if "COEFF0" in header and "COEFF1" in header:
        return 10.0 ** (float(header["COEFF0"]) + float(header["COEFF1"]) * np.arange(n))
    if "CRVAL1" not in header:
        raise SpectrumReadError("FITS image without a wavelength solution (no CRVAL1 or COEFF0).")
    step = float(header.get("CDELT1", header.get("CD1_1", 0.0)))
    if step == 0:
        raise SpectrumReadError("FITS image without a wavelength step (CDELT1 or CD1_1).")
    pix = np.arange(n) + 1.0 - float(header.get("CRPIX1", 1.0))
    x = float(header["CRVAL1"]) + step * pix
    log_linear = int(header.get("DC-FLAG", 0)) == 1 or "LOG" in str(header.get("CTYPE1", "")).upper()
    if not log_linear and float(header["CRVAL1"]) < 10.0:
        log_linear = True  # a log10(lambda) grid written without DC-FLAG
    return 10.0**x if log_linear else x * _wave_unit_factor(header.get("CUNIT1"))


def _noise_from_diffs(flux: np.ndarray) -> float:
    d = np.diff(flux[np.isfinite(flux)])
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)) if len(d) > 10 else math.nan


def _error_from_plane(flux: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Return 1-sigma errors from a plane of errors or inverse variances (whichever matches the scatter)."""
    plane = np.asarray(plane, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        as_ivar = np.where(plane > 0, 1.0 / np.sqrt(plane), 0.0)
    noise = _noise_from_diffs(flux)
    good = plane > 0
    if not np.isfinite(noise) or noise <= 0 or not good.any():
        return plane
    d_sigma = abs(np.log(np.median(plane[good]) / noise))
    d_ivar = abs(np.log(np.median(as_ivar[good]) / noise))
    return as_ivar if d_ivar < d_sigma else plane


def _companion_error(path: str) -> str | None:
    base, ext = os.path.splitext(path)
    if ext == ".gz":
        base, ext2 = os.path.splitext(base)
        ext = ext2 + ext
    for a, b in (("_f", "_e"), ("_nF", "_nE"), ("_F", "_E"), ("F", "E"), ("_flux", "_err")):
        if base.endswith(a):
            cand = base[: -len(a)] + b + ext
            if os.path.exists(cand):
                return cand
    return None


def _source_id(path: str) -> str:
    stem = os.path.basename(path)
    for ext in (".gz", ".fits", ".fit", ".fz", ".parquet"):
        stem = stem.removesuffix(ext)
    return re.sub(r"(_f|_nF|_F|_flux)$", "", stem)


def _table_spectra(table: Any, path: str, header: Any = None) -> list[Spectrum]:
    names = table.colnames
    wcol = _find(names, _WAVE_COLS)
    fcol = _find(names, _FLUX_COLS)
    ecol = _find(names, _ERR_COLS)
    icol = _find(names, _IVAR_COLS)
    mcol = _find(names, _MASK_COLS)
    if wcol is None or fcol is None or (ecol is None and icol is None):
        raise SpectrumReadError(
            f"{path}: a spectrum table needs wavelength ({'/'.join(_WAVE_COLS)}), flux and error "
            f"({'/'.join(_ERR_COLS + _IVAR_COLS)}) columns; it has {names}."
        )
    air = wcol.lower().endswith("_air") or (header is not None and _is_air(header))
    zcol = _find(names, [k.lower() for k in _Z_KEYS])
    idcol = _find(names, ("source_id", "id", "objid", "targetid", "name", "obj_name", "object"))
    racol, deccol = _find(names, ("ra",)), _find(names, ("dec",))
    per_row = np.ndim(table[wcol][0]) > 0 if len(table) else False
    rows = range(len(table)) if per_row else [None]
    out = []
    for r in rows:

        def col(c: str | None, r: int | None = r) -> Any:
            return None if c is None else (np.asarray(table[c][r]) if r is not None else np.asarray(table[c]))

        wave = _to_wave(col(wcol), getattr(table[wcol], "unit", None), wcol)
        flux = np.asarray(col(fcol), float)
        if ecol is not None:
            err = np.asarray(col(ecol), float)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                iv = np.asarray(col(icol), float)
                err = np.where(iv > 0, 1.0 / np.sqrt(iv), 0.0)
        mask = np.asarray(col(mcol)).astype(bool) if mcol is not None else None
        if air:
            wave = air_to_vacuum(wave)

        def scalar(c: str | None) -> Any:
            if c is None:
                return None
            v = table[c][r] if r is not None else table[c][0]
            return v.item() if hasattr(v, "item") else v

        z = scalar(zcol)
        z = math.nan if z is None or not np.isfinite(float(z)) or float(z) <= 0 else float(z)
        if not np.isfinite(z) and header is not None:
            z = _header_z(header)
        ra, dec = scalar(racol), scalar(deccol)
        if (ra is None or dec is None) and header is not None:
            ra, dec = _header_position(header)
        sid = scalar(idcol)
        sid = str(sid).strip() if sid is not None else _source_id(path) + (f"-{r}" if r else "")
        out.append(
            Spectrum(
                wave,
                flux,
                err,
                mask,
                z_qso=z,
                source_id=sid,
                ra=ra,
                dec=dec,
                meta={"file": os.path.abspath(path)},
                air_converted=air,
            )
        )
    return out


def _read_fits(path: str, error_path: str | None) -> list[Spectrum]:
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(path) as hdus:
        header = hdus[0].header
        names = [h.name.upper() for h in hdus]
        if "COADD" in names:  # SDSS/BOSS spec-PLATE-MJD-FIBER.fits
            coadd = Table(hdus["COADD"].data)
            z = math.nan
            for ext in ("SPALL", "SPZBEST"):
                if ext in names and "Z" in hdus[ext].columns.names:
                    z = float(hdus[ext].data["Z"][0])
                    break
            ra, dec = _header_position(header)
            sid = (
                f"{header.get('PLATEID', header.get('PLATE', ''))}-{header.get('MJD', '')}-"
                f"{header.get('FIBERID', header.get('FIBER', ''))}"
            )
            ivar = np.asarray(coadd["ivar"], float)
            with np.errstate(divide="ignore"):
                err = np.where(ivar > 0, 1.0 / np.sqrt(ivar), 0.0)
            mcol = _find(coadd.colnames, ("and_mask",))
            mask = np.asarray(coadd[mcol]) != 0 if mcol else None
            air = _is_air(header)
            wave = 10.0 ** np.asarray(coadd["loglam"], float)
            return [
                Spectrum(
                    air_to_vacuum(wave) if air else wave,
                    np.asarray(coadd["flux"], float),
                    err,
                    mask,
                    z_qso=z,
                    source_id=sid.strip("-") or _source_id(path),
                    ra=ra,
                    dec=dec,
                    meta={"file": os.path.abspath(path), "format": "sdss-spec"},
                    air_converted=air,
                )
            ]
        data = hdus[0].data
        if data is None:
            for h in hdus[1:]:
                if isinstance(h, fits.BinTableHDU):
                    import warnings

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # non-standard units such as '-'
                        table = Table.read(h)
                    return _table_spectra(table, path, h.header)
            raise SpectrumReadError(f"{path}: no spectrum image or table in this FITS file.")
        data = np.asarray(data, dtype=float)
        z = _header_z(header)
        ra, dec = _header_position(header)
        meta = {"file": os.path.abspath(path), "object": str(header.get("OBJECT", "")).strip()}
        mask = None
        if data.ndim == 2 and "COEFF0" in header:  # SDSS spSpec: flux, continuum-subtracted, error, mask
            flux, err = data[0], data[2]
            mask = data[3] != 0 if data.shape[0] > 3 else None
            wave = _image_wave(header, data.shape[1])
            meta["format"] = "sdss-spSpec"
        elif data.ndim == 1:
            flux = data
            wave = _image_wave(header, len(flux))
            err = None
            extra = [
                np.asarray(h.data)
                for h in hdus[1:]
                if h.data is not None and np.ndim(h.data) == 1 and len(h.data) == len(flux)
            ]
            for plane in extra:  # a wavelength plane (increasing, > 10 or log10)
                p = np.asarray(plane, float)
                if np.all(np.diff(p) > 0) and (np.nanmin(p) > 900 or 2.5 < np.nanmin(p) < 5):
                    wave = 10.0**p if np.nanmax(p) < 10 else p
                elif p.dtype.kind in "ui" or set(np.unique(p)) <= {0.0, 1.0}:
                    if err is not None or len(extra) > 2:
                        mask = p == 0 if np.mean(p) > 0.5 else p != 0  # a "good" plane is mostly ones
                elif err is None:
                    err = _error_from_plane(flux, p)
            companion = error_path or _companion_error(path)
            if err is None and companion:
                err = np.asarray(fits.getdata(companion), dtype=float).ravel()
                meta["error_file"] = os.path.abspath(companion)
            if err is None:
                raise SpectrumReadError(
                    f"{path}: no error array (no second image HDU and no companion error file such as "
                    "*_e.fits); give the error file (--error)."
                )
        else:
            raise SpectrumReadError(f"{path}: a {data.ndim}-D image is not a 1D spectrum layout known here.")
        air = _is_air(header)
        if air:
            wave = air_to_vacuum(wave)
        jpos = _jname_position(_source_id(path))
        if jpos is not None:  # an IAU name is the object's position; headers may hold the pointing
            ra, dec = jpos
        return [
            Spectrum(
                wave,
                flux,
                err,
                mask,
                z_qso=z,
                source_id=_source_id(path),
                ra=ra,
                dec=dec,
                meta=meta,
                air_converted=air,
            )
        ]


def read_spectra(
    path: str | os.PathLike[str], *, z_qso: float | None = None, error_path: str | None = None
) -> list[Spectrum]:
    """Read the spectra of a file (see the module documentation for the layouts).

    Parameters
    ----------
    path : path-like
        FITS (``.fits``, ``.fits.gz``), Parquet, or a table format astropy
        reads (ECSV, CSV).
    z_qso : `float`, optional
        Quasar redshift overriding the file's.
    error_path : `str`, optional
        File holding the errors of a 1D FITS image (default: a companion
        ``*_e.fits`` when present).

    Returns
    -------
    spectra : `list` [`Spectrum`]
        One or more spectra.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    SpectrumReadError
        If the file is not a spectrum layout known here.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No spectrum file {path}.")
    lower = path.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq
            from astropy.table import Table

            arrow = pq.read_table(path)
            if "wavelength" in arrow.column_names and "resorted" in arrow.column_names:
                spectra = list(SpectrumCollection.from_arrow(arrow))
            else:
                spectra = _table_spectra(Table(arrow.to_pydict()), path)
        elif any(lower.endswith(e) for e in (".fits", ".fits.gz", ".fit", ".fit.gz", ".fz")):
            spectra = _read_fits(path, error_path)
        else:
            from astropy.table import Table

            spectra = _table_spectra(Table.read(path), path)
    except (OSError, KeyError, TypeError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise SpectrumReadError(
            f"{path}: cannot be read as a spectrum ({type(exc).__name__}: {exc})."
        ) from exc
    if z_qso is not None:
        spectra = [s.with_z(z_qso) for s in spectra]
    return spectra
