"""Read and write `~lsst.meas.ml.images.Exposure` as multi-extension FITS.

The layout follows the one the Science Pipelines use for visit images and
coadds, so the files open in ds9/astropy the way a Rubin user expects:

====  ==========  ==========================================================
HDU   EXTNAME     content
====  ==========  ==========================================================
0     (primary)   no data; exposure metadata (``BAND``, ``BUNIT``,
                  ``MLCALIB`` = nJy per pixel unit, ``LTV1``/``LTV2``)
1     IMAGE       float32 image; celestial WCS valid for this array, plus a
                  ``PHYSICAL`` (``A``) WCS mapping to parent pixels
2     MASK        int32 bit mask; ``MP_<plane> = bit`` cards name the planes
3     VARIANCE    float32 variance
4     PSF         float32 PSF image at the exposure centre (optional)
====  ==========  ==========================================================

Reading with a ``bbox`` reads only the pixels in that box (through
``astropy.io.fits`` sections on an uncompressed file) and shifts the WCS.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .images import DEFAULT_MASK_PLANES, Box, Exposure, ImageError, shift_wcs

__all__ = ["ExposureReadError", "read_exposure", "write_exposure", "exposure_to_hdulist"]

_HDU_NAMES = ("IMAGE", "MASK", "VARIANCE")
_SKIP_CARDS = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
    "EXTNAME", "BUNIT", "BAND", "MLCALIB", "LTV1", "LTV2", "COMMENT", "HISTORY", "",
}


class ExposureReadError(ImageError):
    """A file that cannot be read as an exposure (corrupt, truncated, wrong layout)."""


def _wcs_header(exposure: Exposure) -> fits.Header:
    header = fits.Header()
    if exposure.wcs is not None:
        header.update(exposure.wcs.to_header(relax=True))
    x0, y0 = exposure.xy0
    # Physical (parent-frame) coordinates, as the stack writes them.
    header["CTYPE1A"] = "LINEAR"
    header["CTYPE2A"] = "LINEAR"
    header["CRPIX1A"] = 1.0
    header["CRPIX2A"] = 1.0
    header["CRVAL1A"] = float(x0)
    header["CRVAL2A"] = float(y0)
    header["CUNIT1A"] = "PIXEL"
    header["CUNIT2A"] = "PIXEL"
    header["WCSNAMEA"] = "PHYSICAL"
    header["LTV1"] = -x0
    header["LTV2"] = -y0
    return header


def exposure_to_hdulist(exposure: Exposure) -> fits.HDUList:
    """Build the FITS HDU list for an exposure (see module docstring)."""
    primary = fits.PrimaryHDU()
    ph = primary.header
    for key, value in exposure.metadata.items():
        key = str(key).upper()
        if key in _SKIP_CARDS or len(key) > 8 or not isinstance(value, (str, int, float, bool)):
            continue
        ph[key] = value
    if exposure.band is not None:
        ph["BAND"] = exposure.band
    ph["MLCALIB"] = (float(exposure.photo_calib), "nJy per unit of the IMAGE HDU")
    ph["LTV1"] = -exposure.xy0[0]
    ph["LTV2"] = -exposure.xy0[1]
    whdr = _wcs_header(exposure)
    image = fits.ImageHDU(np.asarray(exposure.image, dtype=np.float32), header=whdr.copy(), name="IMAGE")
    image.header["BUNIT"] = "nJy" if exposure.photo_calib == 1.0 else "count"
    mask = fits.ImageHDU(np.asarray(exposure.mask, dtype=np.int32), header=whdr.copy(), name="MASK")
    for name, bit in sorted(exposure.mask_planes.items(), key=lambda kv: kv[1]):
        mask.header[f"HIERARCH MP_{name}"] = int(bit)
    variance = fits.ImageHDU(
        np.asarray(exposure.variance, dtype=np.float32), header=whdr.copy(), name="VARIANCE"
    )
    hdus = [primary, image, mask, variance]
    if exposure.psf is not None:
        hdus.append(fits.ImageHDU(np.asarray(exposure.psf, dtype=np.float32), name="PSF"))
    return fits.HDUList(hdus)


def write_exposure(exposure: Exposure, path: str | os.PathLike) -> None:
    """Write an exposure to ``path`` atomically (a temporary file, then rename).

    The exposure is validated before anything is written, so a bad exposure
    never leaves a partial file behind.
    """
    if not isinstance(exposure, Exposure):
        raise TypeError(f"write_exposure expects an lsst.meas.ml.images.Exposure, got {type(exposure)}.")
    # Re-run the shape checks: arrays may have been replaced after construction.
    Exposure.__post_init__(exposure)
    hdul = exposure_to_hdulist(exposure)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        hdul.writeto(tmp, overwrite=True, output_verify="silentfix")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_wcs(header: fits.Header) -> WCS | None:
    if "CTYPE1" not in header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, relax=True)
    return wcs.celestial if wcs.has_celestial else None


def read_exposure(path: str | os.PathLike, bbox: Any = None) -> Exposure:
    """Read an exposure written by `write_exposure` (or the same layout).

    Parameters
    ----------
    path : `str` or path-like
        FITS file.
    bbox : `~lsst.meas.ml.images.Box` or 4-sequence, optional
        Parent-frame box ``(x0, y0, width, height)`` to read; must lie inside
        the exposure.  Only those pixels are read from disk.

    Raises
    ------
    ExposureReadError
        The file is missing, corrupt, truncated, lacks an HDU, or its planes
        disagree in shape; the message names the file and the problem.
    ImageError
        ``bbox`` is not inside the exposure.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExposureReadError(f"{path}: no such file.")
    size = os.path.getsize(path)
    if size % 2880 != 0:
        raise ExposureReadError(
            f"{path}: file is truncated or corrupt (its {size} bytes are not a whole number of 2880-byte "
            "FITS blocks); re-create the dataset (or remove it with `butler prune-datasets`)."
        )
    try:
        hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError...
        raise ExposureReadError(
            f"{path}: not a readable FITS file ({exc}). The file is corrupt or truncated; "
            "re-create the dataset (or remove it with `butler prune-datasets`)."
        ) from exc
    with hdul:
        try:
            names = {hdu.name for hdu in hdul}
            headers = {name: hdul[name].header for name in _HDU_NAMES if name in names}
        except Exception as exc:
            raise ExposureReadError(
                f"{path}: FITS structure is damaged ({exc}); the file is probably truncated. "
                "Re-create the dataset."
            ) from exc
        missing = [name for name in _HDU_NAMES if name not in headers]
        if missing:
            raise ExposureReadError(
                f"{path}: missing HDU(s) {missing}; an exposure file needs IMAGE, MASK and VARIANCE "
                "extensions (found: " + ", ".join(sorted(n for n in names if n)) + ")."
            )
        shapes = {name: (headers[name].get("NAXIS2", 0), headers[name].get("NAXIS1", 0)) for name in _HDU_NAMES}
        if len(set(shapes.values())) != 1:
            raise ExposureReadError(
                f"{path}: image, mask and variance shapes differ {shapes}; the file is inconsistent."
            )
        ih = headers["IMAGE"]
        ph = hdul[0].header
        x0 = -int(ph.get("LTV1", ih.get("LTV1", 0)))
        y0 = -int(ph.get("LTV2", ih.get("LTV2", 0)))
        height, width = shapes["IMAGE"]
        full = Box(x0, y0, width, height)
        sub = full if bbox is None else Box.coerce(bbox)
        if not full.contains(sub):
            overlap = full.intersection(sub)
            where = "wholly outside" if overlap.is_empty else "partly outside"
            raise ImageError(
                f"{path}: requested bbox {sub} is {where} the exposure's bbox {full}; "
                "clip it first, e.g. Box.intersection."
            )
        rows, cols = full.local_slices(sub)
        planes = {}
        try:
            for name in _HDU_NAMES:
                hdu = hdul[name]
                if sub == full:
                    planes[name] = np.asarray(hdu.data)
                else:
                    planes[name] = np.asarray(hdu.section[rows, cols])
            psf = np.asarray(hdul["PSF"].data, dtype=np.float32) if "PSF" in names else None
        except Exception as exc:
            raise ExposureReadError(
                f"{path}: could not read pixel data ({exc}); the file is probably truncated. "
                "Re-create the dataset."
            ) from exc
        mask_planes = {
            key[3:]: int(value) for key, value in headers["MASK"].items() if key.startswith("MP_")
        }
        metadata = {
            key: value for key, value in ph.items() if key not in _SKIP_CARDS and not key.startswith("CRVAL")
        }
        wcs = shift_wcs(_read_wcs(ih), cols.start, rows.start)
        return Exposure(
            image=planes["IMAGE"].astype(np.float32, copy=False),
            mask=planes["MASK"].astype(np.int32, copy=False),
            variance=planes["VARIANCE"].astype(np.float32, copy=False),
            wcs=wcs,
            psf=psf,
            band=ph.get("BAND"),
            photo_calib=float(ph.get("MLCALIB", 1.0)),
            xy0=(sub.x0, sub.y0),
            mask_planes=mask_planes or dict(DEFAULT_MASK_PLANES),
            metadata=metadata,
        )
