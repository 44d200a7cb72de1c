"""Source detection on difference images, truth matching and association.

Detection is the textbook one: correlate the difference image with its PSF,
divide by the correlated noise, keep local extrema of ``|S/N|`` above a
threshold (both polarities), refine the centroid with a parabola and take
the PSF flux from the same correlation.  It finds what is really there:
real sources below threshold are missed and artifacts are found.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..images import PixelPlanes
from .render import bit

__all__ = [
    "PIXEL_FLAGS",
    "associate",
    "detect_sources",
    "match_to_injections",
]

#: Source flag name -> mask planes looked at around the peak (5x5 pixels).
PIXEL_FLAGS: dict[str, tuple[str, ...]] = {
    "pixelFlags_bad": ("BAD",),
    "pixelFlags_cr": ("CR",),
    "pixelFlags_saturated": ("SAT",),
    "pixelFlags_interpolated": ("INTRP",),
    "pixelFlags_edge": ("EDGE",),
    "pixelFlags_nodata": ("NO_DATA",),
}


def detect_sources(
    diff: PixelPlanes, threshold: float = 5.0, min_separation: int = 3
) -> dict[str, np.ndarray]:
    """Detect positive and negative point sources in a difference image.

    Parameters
    ----------
    diff : `lsst.meas.ml.images.PixelPlanes`
        Difference image with variance, mask and PSF.
    threshold : `float`
        Minimum ``|S/N|`` of the PSF-correlated image at a peak.
    min_separation : `int`
        Peaks closer than this (pixels) are merged to the strongest.

    Returns
    -------
    sources : `dict` [`str`, `numpy.ndarray`]
        ``x``, ``y`` (parent frame), ``psfFlux``, ``psfFluxErr`` (image units),
        ``snr`` and one boolean array per entry of `PIXEL_FLAGS`.
    """
    if diff.psf is None:
        raise ValueError("detect_sources needs a difference image with a PSF.")
    psf = diff.psf.astype(np.float64)
    psf = psf / psf.sum()
    image = diff.image.astype(np.float64)
    variance = diff.variance.astype(np.float64)
    bad = ~np.isfinite(image) | ~np.isfinite(variance) | ((diff.mask & (bit("NO_DATA") | bit("EDGE"))) != 0)
    image = np.where(bad, 0.0, image)
    variance = np.where(bad, 0.0, variance)
    num = signal.fftconvolve(image, psf[::-1, ::-1], mode="same")
    noise = signal.fftconvolve(variance, (psf**2)[::-1, ::-1], mode="same")
    sum_p2 = float(np.sum(psf**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, num / np.sqrt(np.clip(noise, 1e-30, None)), 0.0)
    # Exclude peaks whose PSF footprint touches unusable pixels.
    near_bad = ndimage.binary_dilation(bad, iterations=2)
    snr[near_bad] = 0.0
    abs_snr = np.abs(snr)
    size = 2 * min_separation + 1
    peaks = (abs_snr >= threshold) & (abs_snr == ndimage.maximum_filter(abs_snr, size=size, mode="constant"))
    jj, ii = np.nonzero(peaks)
    h, w = snr.shape
    inner = (ii > 0) & (ii < w - 1) & (jj > 0) & (jj < h - 1)
    jj, ii = jj[inner], ii[inner]

    # Parabolic sub-pixel centroid on |S/N|.
    def refine(c: np.ndarray, m: np.ndarray, p: np.ndarray) -> np.ndarray:
        denom = m - 2.0 * c + p
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(denom != 0, 0.5 * (m - p) / denom, 0.0)
        return np.clip(shift, -0.5, 0.5)

    c = abs_snr[jj, ii]
    dx = refine(c, abs_snr[jj, ii - 1], abs_snr[jj, ii + 1])
    dy = refine(c, abs_snr[jj - 1, ii], abs_snr[jj + 1, ii])
    flux = num[jj, ii] / sum_p2
    flux_err = np.sqrt(noise[jj, ii]) / sum_p2
    out: dict[str, np.ndarray] = {
        "x": ii + dx + diff.xy0[0],
        "y": jj + dy + diff.xy0[1],
        "psfFlux": flux * diff.photo_calib,
        "psfFluxErr": flux_err * diff.photo_calib,
        "snr": snr[jj, ii],
    }
    # Mask flags: OR of the mask over 5x5 pixels around each peak.
    oy, ox = np.mgrid[-2:3, -2:3]
    yy = np.clip(jj[:, None] + oy.ravel()[None, :], 0, h - 1)
    xx = np.clip(ii[:, None] + ox.ravel()[None, :], 0, w - 1)
    around = np.bitwise_or.reduce(diff.mask[yy, xx], axis=1) if len(jj) else np.zeros(0, dtype=np.int64)
    for name, planes in PIXEL_FLAGS.items():
        out[name] = (around & diff.get_plane_bitmask(*planes)) != 0
    order = np.argsort(-np.abs(out["snr"]), kind="stable")
    return {k: v[order] for k, v in out.items()}


def _segment_distance(
    px: np.ndarray, py: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray
) -> np.ndarray:
    """Distances (n_points, n_segments) from points to segments."""
    dx, dy = (x1 - x0)[None, :], (y1 - y0)[None, :]
    len2 = dx**2 + dy**2
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = (px[:, None] - x0[None, :]) * dx + (py[:, None] - y0[None, :]) * dy
        t = np.where(len2 > 0, proj / len2, 0.0)
    t = np.clip(t, 0.0, 1.0)
    cx, cy = x0[None, :] + t * dx, y0[None, :] + t * dy
    return np.hypot(px[:, None] - cx, py[:, None] - cy)


def match_to_injections(
    x: np.ndarray, y: np.ndarray, injections: dict[str, np.ndarray], real_labels: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Match detections to injected truth.

    Parameters
    ----------
    x, y : `numpy.ndarray`
        Detection positions.
    injections : `dict` [`str`, `numpy.ndarray`]
        Arrays ``x0, y0, x1, y1`` (a segment; a point has equal ends),
        ``radius`` (match radius) and ``label``.
    real_labels : `tuple` [`str`, ...]
        Labels preferred when a detection is within reach of several
        injections (astrophysical sources before artifacts).

    Returns
    -------
    index : `numpy.ndarray`
        Index of the matched injection per detection, -1 if none.
    distance : `numpy.ndarray`
        Distance to it (NaN if none).
    """
    n = len(x)
    if n == 0 or len(injections["x0"]) == 0:
        return np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    d = _segment_distance(
        np.asarray(x, float),
        np.asarray(y, float),
        injections["x0"],
        injections["y0"],
        injections["x1"],
        injections["y1"],
    )
    reach = d <= injections["radius"][None, :]
    is_real = np.isin(injections["label"], real_labels)
    # Rank: within reach and real first, then within reach, by distance.
    score = np.where(reach, d, np.inf) - np.where(reach & is_real[None, :], 1e6, 0.0)
    best = np.argmin(score, axis=1)
    ok = reach[np.arange(n), best]
    index = np.where(ok, best, -1).astype(np.int64)
    distance = np.where(ok, d[np.arange(n), best], np.nan)
    return index, distance


def associate(x: np.ndarray, y: np.ndarray, ids: np.ndarray, radius: float) -> np.ndarray:
    """Group sources closer than ``radius`` (friends of friends) into objects.

    Parameters
    ----------
    x, y : `numpy.ndarray`
        Positions on a common flat frame (e.g. tract pixels).
    ids : `numpy.ndarray`
        Source ids; each object is named by the smallest id in it.
    radius : `float`
        Linking length in the units of ``x`` and ``y``.

    Returns
    -------
    object_ids : `numpy.ndarray`
        Object id per source.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tree = cKDTree(np.column_stack([x, y]))
    pairs = tree.query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, labels, np.asarray(ids, dtype=np.int64))
    return first[labels]
