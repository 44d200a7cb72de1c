"""Stamps around many positions at once, and the normalisations models use.

`cut_stamps` is the one cutout function of ``meas_ml``: it cuts square
stamps at N positions from one or more pixel planes (or an
`~lsst.meas.ml.images.Exposure`) in one call, pads stamps that cross the
image edge and flags the missing pixels.  `multiband_stack` builds the
multi-band channel stacks the image models take (band images, an object
mask, per-band masks of unusable pixels); `asinh_stretch` and
`variance_normalise` are the normalisations.

Coordinates are parent-frame pixels; integers are pixel centres; a stamp of
size ``S`` around ``(x, y)`` covers ``Box.from_center(x, y, S)``, i.e. it
is centred on pixel ``(round(x), round(y))`` (halves round up).

Implementation note: stamps that lie inside the image are gathered by
NumPy fancy indexing of a sliding-window view of each plane (one C loop per
chunk and plane, no Python loop over stamps), in chunks small enough to stay
in the CPU cache, so that the NaN and mask-bit tests and the cast to float32
read the gathered pixels from the cache instead of making extra passes over
the output; the stamps are gathered in order of their position in the image,
which keeps the reads local.  A few threads share the chunks (``threads``;
NumPy releases the GIL while it copies and tests pixels).  Only the few
stamps crossing the image edge are cut one by one.  ``meas-ml bench core
--only cutouts`` measures this against a copy of the same bytes and against
the alternatives (a loop of slice copies, one fancy-indexing expression per
plane).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .images import Box, ImageError, PixelPlanes

__all__ = [
    "PlaneReader",
    "Stamps",
    "asinh_stretch",
    "cut_stamps",
    "multiband_stack",
    "nanmedian_rows",
    "stamp_boxes",
    "thread_count",
    "variance_normalise",
]

#: Bytes of one plane's gathered stamps per chunk: about a core's L2 cache.
#: (Measured on 51 x 51 stamps of three planes: 1 MiB is a little faster than
#: 512 KiB with one thread and clearly with two, where half as many chunks
#: halve the hand-offs; 2 MiB is no faster.)
_CHUNK_BYTES = 1 << 20

#: Worker threads that gather chunks besides the calling thread (created on first use).
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()

#: ``reader(box) -> PixelPlanes | Sequence[np.ndarray]``: the planes of a
#: parent-frame sub-box (e.g. a Butler ``get`` with a ``bbox`` parameter).
PlaneReader = Callable[[Box], "PixelPlanes | Sequence[np.ndarray]"]


@dataclasses.dataclass
class Stamps:
    """Stamps cut at N positions.

    Attributes
    ----------
    data : `numpy.ndarray`
        ``(N, C, S, S)`` float32 pixels; pixels outside the image hold the
        ``fill`` value.  Masked or NaN pixels keep their values.
    missing : `numpy.ndarray`
        ``(N, S, S)`` bool, True for pixels outside the image.
    bad : `numpy.ndarray`
        ``(N, S, S)`` bool, True for pixels that are NaN in any float plane
        or have any of the requested mask bits set.
    x, y : `numpy.ndarray`
        The requested positions (float64, parent frame).
    offimage : `numpy.ndarray`
        ``(N,)`` bool, True where the centre pixel is outside the image (or
        the position is not finite).
    edge : `numpy.ndarray`
        ``(N,)`` bool, True where the stamp is not entirely inside the image.
    x0, y0 : `numpy.ndarray`
        ``(N,)`` int64 parent-frame pixel of each stamp's ``[0, 0]`` corner.
    mask : `numpy.ndarray` or `None`
        ``(N, S, S)`` integer stamps of the (first) mask plane, 0 outside
        the image; None when no integer plane was cut.
    channels : `tuple` [`str`, ...]
        Names of the channels of ``data`` (may be empty).
    """

    data: np.ndarray
    missing: np.ndarray
    bad: np.ndarray
    x: np.ndarray
    y: np.ndarray
    offimage: np.ndarray
    edge: np.ndarray
    x0: np.ndarray | None = None
    y0: np.ndarray | None = None
    mask: np.ndarray | None = None
    channels: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.data)

    @property
    def size(self) -> int:
        """Side of the stamps in pixels."""
        return self.data.shape[-1]

    @property
    def unusable(self) -> np.ndarray:
        """``(N, S, S)`` bool: pixels that are missing or bad."""
        return self.missing | self.bad

    @property
    def all_bad(self) -> np.ndarray:
        """``(N,)`` bool: stamps without a single usable pixel."""
        return self.unusable.reshape(len(self), self.size * self.size).all(axis=1)


def _as_planes(obj: Any) -> Any:
    """Return an ``lsst.images`` image as its `PixelPlanes` view; anything else as it is."""
    if type(obj).__module__.startswith("lsst.images"):
        return PixelPlanes.from_image(obj)
    return obj


def stamp_boxes(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compute the lower-left corners of the stamps and the finite-position flags.

    Parameters
    ----------
    x, y : `numpy.ndarray`
        Stamp centres, in the parent frame; each stamp is centred on the
        pixel ``(round(x), round(y))``.
    size : `int`
        The side of the square stamps, in pixels.

    Returns
    -------
    x0, y0 : `numpy.ndarray`
        ``(N,)`` int64 lower-left corners; those of non-finite positions
        are ``-(size // 2)`` (a centre of 0).
    finite : `numpy.ndarray`
        ``(N,)`` bool: both coordinates are finite.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    half = size // 2
    with np.errstate(invalid="ignore"):
        x0 = np.where(finite, np.floor(x + 0.5), 0).astype(np.int64) - half
        y0 = np.where(finite, np.floor(y + 0.5), 0).astype(np.int64) - half
    return x0, y0, finite


def _union_box(x0: np.ndarray, y0: np.ndarray, size: int, ok: np.ndarray) -> Box:
    if not ok.any():
        return Box(0, 0, 0, 0)
    bx0, by0 = int(x0[ok].min()), int(y0[ok].min())
    return Box(bx0, by0, int(x0[ok].max()) + size - bx0, int(y0[ok].max()) + size - by0)


def _exposure_planes(
    exposure: PixelPlanes, bad_mask_bits: int | Sequence[str]
) -> tuple[list[np.ndarray], int]:
    """Image and variance in nJy, and the mask, of an exposure."""
    image = exposure.image_njy()
    variance = exposure.variance
    if exposure.photo_calib != 1.0:
        variance = variance * np.float32(exposure.photo_calib**2)
    if not isinstance(bad_mask_bits, (int, np.integer)):
        bad_mask_bits = exposure.get_plane_bitmask(*bad_mask_bits)
    return [image, variance, exposure.mask], int(bad_mask_bits)


def cut_stamps(
    planes: Sequence[np.ndarray] | PixelPlanes | PlaneReader,
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    size: int,
    *,
    xy0: tuple[int, int] = (0, 0),
    fill: float = 0.0,
    bad_mask_bits: int | Sequence[str] = 0,
    bbox: Box | Any = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> Stamps:
    """Cut ``size`` x ``size`` stamps at N positions in one call.

    Parameters
    ----------
    planes : sequence of `numpy.ndarray`, `~lsst.meas.ml.images.Exposure`, or callable
        Pixel planes of one shape.  Float planes are checked for NaN;
        integer planes are bit masks (``bad_mask_bits`` applies to them).
        An exposure gives three channels: image and variance in nJy, and
        the mask.  A callable ``reader(box) -> PixelPlanes | planes`` is called
        once with the parent-frame box covering all stamps (clipped to
        ``bbox``), so only that region is read (e.g. a Butler ``get`` with
        a ``bbox`` parameter); ``bbox`` is then required.
    x, y : array-like
        Parent-frame positions; integers are pixel centres.
    size : `int`
        Stamp side in pixels.
    xy0 : `tuple` [`int`, `int`]
        Parent-frame pixel of ``planes[c][0, 0]`` (ignored for exposures).
    fill : `float`
        Value of pixels outside the image.
    bad_mask_bits : `int` or sequence of `str`
        Mask bits marking bad pixels; plane names for an exposure.
    bbox : `~lsst.meas.ml.images.Box`, optional
        Parent-frame box of the whole image; required with a reader.
    out : `numpy.ndarray`, optional
        Preallocated ``(N, C, S, S)`` float32 C-contiguous array to fill
        and return as ``data`` (saves the allocation when cutting in chunks).
    threads : `int`, optional
        Threads that gather the stamps inside the image (NumPy releases
        the GIL while it copies and tests them).  `None`: as many as torch
        uses in this process (`torch.get_num_threads`, 1 in the workers of
        ``pipetask -j N``), at most ``os.cpu_count()``; 1: the calling
        thread only.  Results do not depend on it.

    Returns
    -------
    stamps : `Stamps`
        Zero positions give empty arrays of the right shape and dtype.

    Raises
    ------
    ImageError
        For planes of different shapes, mismatched ``x``/``y`` or a bad size.
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape or x.ndim != 1:
        raise ImageError(f"x and y must be 1-d arrays of one length, got shapes {x.shape} and {y.shape}.")
    size = int(size)
    if size <= 0:
        raise ImageError(f"Stamp size must be a positive integer, got {size}.")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ImageError(f"threads must be None (auto) or a positive integer, got {threads!r}.")
    sx0, sy0, finite = stamp_boxes(x, y, size)
    planes = _as_planes(planes)

    if callable(planes) and not isinstance(planes, (PixelPlanes, Sequence, np.ndarray)):
        if bbox is None:
            raise ImageError("cut_stamps with a reader needs bbox=, the parent-frame box of the whole image.")
        full = Box.coerce(bbox)
        need = _union_box(sx0, sy0, size, finite).intersection(full)
        if need.is_empty:
            # No stamp touches the image: read one pixel, only to learn the planes.
            need = Box(full.x0, full.y0, min(1, full.width), min(1, full.height))
        planes = _as_planes(planes(need))
        if isinstance(planes, PixelPlanes) and planes.bbox != need:
            raise ImageError(f"Reader returned an exposure covering {planes.bbox}; {need} was requested.")
        region = need
    else:
        region = None

    if isinstance(planes, PixelPlanes):
        xy0 = planes.xy0
        plane_list, bits = _exposure_planes(planes, bad_mask_bits)
    else:
        if isinstance(planes, np.ndarray) and planes.ndim == 2:
            planes = [planes]
        plane_list = [np.asarray(p) for p in planes]
        if not isinstance(bad_mask_bits, (int, np.integer)):
            raise ImageError("bad_mask_bits must be an integer bit mask unless an PixelPlanes is given.")
        bits = int(bad_mask_bits)
        if region is not None:
            xy0 = (region.x0, region.y0)
    if not plane_list:
        raise ImageError("cut_stamps needs at least one plane.")
    shape = plane_list[0].shape
    for p in plane_list:
        if p.ndim != 2 or p.shape != shape:
            raise ImageError(f"All planes must be 2-d with one shape; got {[q.shape for q in plane_list]}.")
    height, width = shape
    image_box = Box(int(xy0[0]), int(xy0[1]), width, height) if region is None else region
    full_box = Box.coerce(bbox) if bbox is not None else image_box

    n, n_planes = len(x), len(plane_list)
    is_int = [np.issubdtype(p.dtype, np.integer) for p in plane_list]
    if out is None:
        data = np.empty((n, n_planes, size, size), dtype=np.float32)
    else:
        if out.shape != (n, n_planes, size, size) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ImageError(
                f"out must be a C-contiguous float32 array of shape {(n, n_planes, size, size)}, got "
                f"{out.dtype} {out.shape}."
            )
        data = out
    int_stamps = {
        c: np.empty((n, size, size), dtype=plane_list[c].dtype) for c in range(n_planes) if is_int[c]
    }
    missing = np.zeros((n, size, size), dtype=bool)
    bad = np.zeros((n, size, size), dtype=bool)

    # Local (array) corners.
    lx0 = sx0 - image_box.x0
    ly0 = sy0 - image_box.y0
    inside = finite & (lx0 >= 0) & (ly0 >= 0) & (lx0 + size <= width) & (ly0 + size <= height)

    inner = np.flatnonzero(inside)
    if len(inner):
        _gather_inside(plane_list, is_int, inner, lx0, ly0, width, size, bits, data, int_stamps, bad, threads)

    edge_idx = np.flatnonzero(~inside)
    if len(edge_idx):
        # Stamps crossing the image edge: fill, then copy the overlap (few stamps).
        data[edge_idx] = fill
        missing[edge_idx] = True
        for target in int_stamps.values():
            target[edge_idx] = 0
        c0, c1 = np.clip(lx0, 0, width), np.clip(lx0 + size, 0, width)
        r0, r1 = np.clip(ly0, 0, height), np.clip(ly0 + size, 0, height)
        overlaps = edge_idx[finite[edge_idx] & (c1[edge_idx] > c0[edge_idx]) & (r1[edge_idx] > r0[edge_idx])]
        for i in overlaps.tolist():
            src = slice(int(r0[i]), int(r1[i])), slice(int(c0[i]), int(c1[i]))
            dst = (
                slice(int(r0[i] - ly0[i]), int(r1[i] - ly0[i])),
                slice(int(c0[i] - lx0[i]), int(c1[i] - lx0[i])),
            )
            for c, plane in enumerate(plane_list):
                target = int_stamps[c] if is_int[c] else data[:, c]
                target[i][dst] = plane[src]
            missing[i][dst] = False
        edge_bad = np.zeros((len(edge_idx), size, size), dtype=bool)
        for c in range(n_planes):
            if is_int[c]:
                data[edge_idx, c] = int_stamps[c][edge_idx]  # 0 off the image, like the mask
                if bits:
                    edge_bad |= (int_stamps[c][edge_idx] & bits) != 0
            else:
                edge_bad |= np.isnan(data[edge_idx, c])
        bad[edge_idx] = edge_bad & ~missing[edge_idx]

    cx = np.where(finite, np.floor(np.where(finite, x, 0) + 0.5), 0).astype(np.int64)
    cy = np.where(finite, np.floor(np.where(finite, y, 0) + 0.5), 0).astype(np.int64)
    offimage = ~finite | (cx < full_box.x0) | (cx >= full_box.x1) | (cy < full_box.y0) | (cy >= full_box.y1)
    first_int = next((int_stamps[c] for c in range(n_planes) if is_int[c]), None)
    return Stamps(
        data=data,
        missing=missing,
        bad=bad,
        x=x,
        y=y,
        offimage=offimage,
        edge=~inside,
        x0=sx0,
        y0=sy0,
        mask=first_int,
    )


def _gather_inside(
    plane_list: Sequence[np.ndarray],
    is_int: Sequence[bool],
    inner: np.ndarray,
    lx0: np.ndarray,
    ly0: np.ndarray,
    width: int,
    size: int,
    bits: int,
    data: np.ndarray,
    int_stamps: dict[int, np.ndarray],
    bad: np.ndarray,
    threads: int | None = 1,
) -> None:
    """Fill ``data``, ``int_stamps`` and ``bad`` for the stamps ``inner`` that lie inside the planes.

    The stamps are taken in order of their position in the planes, in
    chunks whose pixels stay in the cache while they are tested (NaN in float
    planes, ``bits`` in integer planes) and stored.  With several threads
    each takes the next chunk not yet taken, so a thread that gets no CPU
    (a busy machine) leaves its share to the others; chunks are fixed and
    write disjoint stamps, so the result does not depend on the threads.
    """
    order = inner[np.argsort(ly0[inner] * width + lx0[inner], kind="stable")]
    # Sliding-window views: windows[c][r, c0] is the stamp with corner (r, c0).
    windows = [
        as_strided(
            p, (p.shape[0] - size + 1, p.shape[1] - size + 1, size, size), p.strides * 2, writeable=False
        )
        for p in plane_list
    ]
    channels = [data[:, c] for c in range(len(plane_list))]
    itemsize = max(p.dtype.itemsize for p in plane_list)
    step = max(1, _CHUNK_BYTES // (size * size * itemsize))
    n_chunks = -(-len(order) // step)
    # next() of an itertools.count is atomic (under the GIL): each chunk goes to exactly one thread.
    claim = itertools.count()
    args = (claim, n_chunks, order, step, windows, channels, is_int, ly0, lx0, bits, int_stamps, bad)
    n_threads = min(thread_count(threads), n_chunks)
    if n_threads > 1:
        pool = _pool()
        futures = [pool.submit(_gather_chunks, *args) for _ in range(n_threads - 1)]
        try:
            _gather_chunks(*args)
        finally:
            for future in futures:
                # A helper not yet started when the chunks ran out is not waited for.
                if not future.cancel():
                    future.result()
    else:
        _gather_chunks(*args)


def thread_count(threads: int | None) -> int:
    """Return the threads `cut_stamps` uses: ``threads``, or torch's count, at most the CPU count.

    Parameters
    ----------
    threads : `int` or `None`
        Requested threads; `None` follows ``torch.get_num_threads()``.

    Returns
    -------
    n : `int`
        At least 1.
    """
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return max(1, min(int(threads), os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    """Return the module's thread pool, created on first use (again in a forked child)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            # A pool inherited through fork has no threads: make a new one.
            _POOL = ThreadPoolExecutor(
                max_workers=max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="cut_stamps"
            )
            _POOL_PID = os.getpid()
        return _POOL


def _gather_chunks(
    claim: Iterator[int],
    n_chunks: int,
    order: np.ndarray,
    step: int,
    windows: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    is_int: Sequence[bool],
    ly0: np.ndarray,
    lx0: np.ndarray,
    bits: int,
    int_stamps: dict[int, np.ndarray],
    bad: np.ndarray,
) -> None:
    """Gather, test and store the chunks ``claim`` hands out, until it passes ``n_chunks``.

    See `_gather_inside`.
    """
    for chunk in claim:
        if chunk >= n_chunks:
            return
        sel = order[chunk * step : (chunk + 1) * step]
        rows, cols = ly0[sel], lx0[sel]
        part: np.ndarray | None = None  # bad pixels of this chunk, once any is found
        for c, window in enumerate(windows):
            stamps = window[rows, cols]
            if is_int[c]:
                int_stamps[c][sel] = stamps
                # Cast in the cache (a fast contiguous loop), not while scattering.
                channels[c][sel] = stamps.astype(np.float32)
                if bits:
                    flagged = (stamps & bits) != 0
                    if flagged.any():
                        part = flagged if part is None else np.logical_or(part, flagged, out=part)
            else:
                channels[c][sel] = stamps
                # np.maximum propagates NaN: one fast (SIMD) reduction tells
                # whether the chunk holds any NaN; only then is it tested pixel by pixel.
                if np.isnan(np.maximum.reduce(stamps, axis=None)):
                    nan = np.isnan(stamps)
                    part = nan if part is None else np.logical_or(part, nan, out=part)
        if part is not None:
            bad[sel] = part


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN, vectorised; NaN for rows with no finite value.

    The same values as `numpy.nanmedian` with ``axis=-1``, without its
    per-row Python loop: rows without NaN go through one `numpy.median`
    (a partition), rows with NaN through one sort, where NaN sorts last and
    the median is read at the row's own count of values.  On 337 stamps of
    64 x 64 with a few masked pixels this is about 20 times faster.

    Parameters
    ----------
    a : `numpy.ndarray`
        Array of floats, at least 1-d.

    Returns
    -------
    median : `numpy.ndarray`
        ``a.shape[:-1]``, the dtype of ``a``.
    """
    a = np.asarray(a)
    lead = a.shape[:-1]
    flat = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    out = np.full(flat.shape[0], np.nan, dtype=np.result_type(flat.dtype, np.float32))
    if flat.shape[1] == 0 or flat.shape[0] == 0:
        return out.reshape(lead)
    has_nan = np.isnan(flat).any(axis=1)
    clean = ~has_nan
    if clean.any():
        out[clean] = np.median(flat[clean], axis=1)
    if has_nan.any():
        rows = np.sort(flat[has_nan], axis=1)  # NaN last
        k = (~np.isnan(rows)).sum(axis=1)
        lo = np.take_along_axis(rows, np.maximum(k - 1, 0)[:, None] // 2, axis=1)[:, 0]
        hi = np.take_along_axis(rows, (k // 2)[:, None], axis=1)[:, 0]
        with np.errstate(invalid="ignore"):
            med = np.where(k > 0, (lo + hi) / 2, np.nan)
        out[has_nan] = med
    return out.reshape(lead)


def asinh_stretch(
    data: np.ndarray,
    scale: float | np.ndarray = 1.0,
    *,
    bad: np.ndarray | None = None,
    fill: float = 0.0,
    channel_axis: int | None = 1,
) -> np.ndarray:
    """``arcsinh(data / scale)``: linear below ``scale``, logarithmic above.

    Parameters
    ----------
    data : `numpy.ndarray`
        Pixels, e.g. ``(N, C, S, S)`` stamps.
    scale : `float` or `numpy.ndarray`
        Softening (typically the noise level or a constant from the model
        package).  A 1-d array of length ``data.shape[channel_axis]`` gives
        one value per channel; other arrays must broadcast against ``data``.
    bad : `numpy.ndarray`, optional
        Boolean array broadcastable to ``data``; those pixels become ``fill``.
    fill : `float`
        Value for bad and non-finite pixels (and non-positive scales).
    channel_axis : `int` or `None`
        Axis a 1-d ``scale`` applies along.

    Returns
    -------
    stretched : `numpy.ndarray`
        The stretched pixels as float32, finite everywhere.

    Raises
    ------
    ImageError
        If a 1-d ``scale`` does not have one value per channel.
    """
    data = np.asarray(data, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if scale.ndim == 1 and channel_axis is not None and data.ndim > 1:
        axis = channel_axis % data.ndim
        if scale.shape[0] != data.shape[axis]:
            raise ImageError(f"asinh scale has {scale.shape[0]} values for {data.shape[axis]} channels.")
        scale = scale.reshape([-1 if k == axis else 1 for k in range(data.ndim)])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.arcsinh(data / np.where(scale > 0, scale, np.nan)).astype(np.float32, copy=False)
    invalid = ~np.isfinite(out)
    if bad is not None:
        invalid |= bad
    out[invalid] = fill
    return out


def variance_normalise(
    image: np.ndarray,
    variance: np.ndarray,
    *,
    mode: str = "pixel",
    bad: np.ndarray | None = None,
    fill: float = 0.0,
) -> np.ndarray:
    """Scale pixels to units of their noise.

    Parameters
    ----------
    image, variance : `numpy.ndarray`
        ``(..., S, S)`` stamps of one shape.
    mode : `str`
        ``"pixel"``: ``image / sqrt(variance)`` pixel by pixel (a
        signal-to-noise map).  ``"stamp"``: divide each stamp by the square
        root of its median valid variance, which keeps the relative pixel
        values and makes the noise about one.
    bad : `numpy.ndarray`, optional
        Boolean, broadcastable to ``image``; those pixels become ``fill``
        and are ignored in the stamp median.
    fill : `float`
        Value for bad pixels, pixels with non-positive or non-finite
        variance, and stamps without any valid variance.

    Returns
    -------
    normalised : `numpy.ndarray`
        The normalised pixels as float32, finite everywhere.

    Raises
    ------
    ImageError
        If ``image`` and ``variance`` differ in shape, or ``mode`` is
        unknown.
    """
    image = np.asarray(image, dtype=np.float32)
    variance = np.asarray(variance, dtype=np.float32)
    if image.shape != variance.shape:
        raise ImageError(f"image shape {image.shape} differs from variance shape {variance.shape}.")
    valid = np.isfinite(variance) & (variance > 0) & np.isfinite(image)
    if bad is not None:
        valid &= ~np.broadcast_to(bad, image.shape)
    if mode == "pixel":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = image / np.sqrt(variance)
    elif mode == "stamp":
        v = np.where(valid, variance, np.nan)
        flat = v.reshape(v.shape[:-2] + (v.shape[-2] * v.shape[-1],))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stamps
            sigma = np.sqrt(nanmedian_rows(flat))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = image / sigma[..., None, None]
    else:
        raise ImageError(f"Unknown variance normalisation mode {mode!r}; use 'pixel' or 'stamp'.")
    out = out.astype(np.float32, copy=False)
    out[~valid | ~np.isfinite(out)] = fill
    return out


def multiband_stack(
    exposures: Mapping[str, PixelPlanes | PlaneReader],
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    size: int,
    *,
    bands: Sequence[str] | None = None,
    normalise: str | None = "asinh",
    asinh_scale: float | Mapping[str, float] | None = None,
    object_mask: str | float | np.ndarray | None = "detected",
    nan_masks: bool = True,
    bad_mask_planes: Sequence[str] = ("BAD", "SAT", "NO_DATA"),
    bbox: Box | Any = None,
    missing_bands: str = "error",
) -> Stamps:
    """Stack stamps of several bands into one model input.

    The channels are, in order: one image per band, then (optionally) an
    object mask, then (optionally) one mask of unusable pixels per band.
    Five bands with both options give the common 11-channel input.

    Parameters
    ----------
    exposures : `~collections.abc.Mapping` [`str`, `~lsst.meas.ml.images.Exposure` or callable]
        PixelPlanes (or reader, see `cut_stamps`) per band, on one pixel grid
        (parent frame); their boxes may differ.
    x, y : array-like
        Parent-frame positions.
    size : `int`
        Stamp side.
    bands : sequence of `str`, optional
        Band order; defaults to the mapping's order.  A band without an
        exposure (absent, or `None`) is handled by ``missing_bands``.
    normalise : `str` or `None`
        ``"asinh"`` (`asinh_stretch` of nJy pixels), ``"variance"`` (pixel
        signal-to-noise, `variance_normalise`), ``"variance_stamp"``, or
        `None` (nJy).
    asinh_scale : `float` or mapping, optional
        Softening per band (e.g. from the model package's input
        specification); by default each stamp's own noise, the square root
        of its median valid variance.
    object_mask : `str`, `float`, `numpy.ndarray` or `None`
        ``"detected"``: 1 where the DETECTED bit is set in any band;
        a number: 1 inside a disc of that radius (pixels) around the exact
        position; an ``(N, S, S)`` array: used as given; `None`: no channel.
    nan_masks : `bool`
        Append one channel per band, 1 where the pixel is off the image,
        NaN, or flagged by ``bad_mask_planes``.
    bad_mask_planes : sequence of `str`
        Mask planes marking unusable pixels.
    bbox : `~lsst.meas.ml.images.Box`, optional
        Whole-image box, required when readers are given.
    missing_bands : `str`
        ``"error"``: a band without an exposure raises; ``"blank"``: its
        image channel is 0 and its unusable-pixel mask 1 everywhere, so the
        channel layout stays that of ``bands`` (the caller flags the rows).

    Returns
    -------
    stamps : `Stamps`
        ``data`` is finite float32 (unusable image pixels are 0);
        ``missing`` and ``bad`` are OR-ed over the bands that have an
        exposure; ``channels`` names each channel.

    Raises
    ------
    ImageError
        No band, no exposure for any band, a missing band with
        ``missing_bands="error"``, or an unknown option.
    """
    if missing_bands not in ("error", "blank"):
        raise ImageError(f"missing_bands must be 'error' or 'blank', got {missing_bands!r}.")
    bands = list(bands) if bands is not None else list(exposures)
    exposures = {b: _as_planes(e) for b, e in exposures.items() if e is not None}
    absent = [b for b in bands if b not in exposures]
    if not bands:
        raise ImageError("multiband_stack needs at least one band.")
    if absent and (missing_bands == "error" or len(absent) == len(bands)):
        raise ImageError(f"No exposure for band(s) {absent}; have {sorted(exposures)}.")
    cut = {
        b: cut_stamps(exposures[b], x, y, size, bad_mask_bits=list(bad_mask_planes), bbox=bbox)
        for b in bands
        if b in exposures
    }
    per_band = list(cut.values())
    first = per_band[0]
    n = len(first)
    channels: list[np.ndarray] = []
    names: list[str] = []
    for band in bands:
        st = cut.get(band)
        if st is None:
            channels.append(np.zeros((n, size, size), np.float32))
            names.append(band)
            continue
        unusable = st.missing | st.bad
        image, variance = st.data[:, 0], st.data[:, 1]
        if normalise == "asinh":
            if asinh_scale is None:
                valid = ~unusable & np.isfinite(variance) & (variance > 0)
                v = np.where(valid, variance, np.nan).reshape(n, size * size)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    scale = np.sqrt(nanmedian_rows(v)) if n else np.empty(0, np.float32)
                scale = scale.reshape(n, 1, 1)
            elif isinstance(asinh_scale, Mapping):
                scale = np.float32(asinh_scale[band])
            else:
                scale = np.float32(asinh_scale)
            chan = asinh_stretch(image, scale, bad=unusable, channel_axis=None)
        elif normalise in ("variance", "variance_stamp"):
            mode = "pixel" if normalise == "variance" else "stamp"
            chan = variance_normalise(image, variance, mode=mode, bad=unusable)
        elif normalise is None:
            chan = np.where(unusable | ~np.isfinite(image), np.float32(0), image)
        else:
            raise ImageError(
                f"Unknown normalisation {normalise!r}; use 'asinh', 'variance', 'variance_stamp' or None."
            )
        channels.append(chan)
        names.append(band)

    if object_mask is not None:
        if isinstance(object_mask, str):
            if object_mask != "detected":
                raise ImageError(
                    f"Unknown object_mask {object_mask!r}; use 'detected', a radius or an array."
                )
            detected = np.zeros((n, size, size), dtype=bool)
            for band, st in cut.items():
                exp = exposures[band]
                index = exp.plane_bit("DETECTED") if isinstance(exp, PixelPlanes) else None
                bit = 1 << (5 if index is None else index)
                if st.mask is not None:
                    detected |= (st.mask & bit) != 0
            chan = detected.astype(np.float32)
        elif isinstance(object_mask, np.ndarray):
            if object_mask.shape != (n, size, size):
                raise ImageError(
                    f"object_mask array must have shape {(n, size, size)}, got {object_mask.shape}."
                )
            chan = object_mask.astype(np.float32)
        else:
            radius = float(object_mask)
            grid = np.arange(size, dtype=np.float64)
            dx = grid[None, None, :] + first.x0[:, None, None] - np.nan_to_num(first.x)[:, None, None]
            dy = grid[None, :, None] + first.y0[:, None, None] - np.nan_to_num(first.y)[:, None, None]
            chan = (dx * dx + dy * dy <= radius * radius).astype(np.float32)
        channels.append(chan)
        names.append("object_mask")

    if nan_masks:
        for band in bands:
            st = cut.get(band)
            unusable = np.ones((n, size, size), bool) if st is None else st.missing | st.bad
            channels.append(unusable.astype(np.float32))
            names.append(f"nan_mask_{band}")

    data = np.stack(channels, axis=1) if channels else np.empty((n, 0, size, size), np.float32)
    missing = np.logical_or.reduce([st.missing for st in per_band])
    bad = np.logical_or.reduce([st.bad for st in per_band])
    return Stamps(
        data=np.ascontiguousarray(data, dtype=np.float32),
        missing=missing,
        bad=bad,
        x=first.x,
        y=first.y,
        offimage=np.logical_or.reduce([st.offimage for st in per_band]),
        edge=np.logical_or.reduce([st.edge for st in per_band]),
        x0=first.x0,
        y0=first.y0,
        mask=None,
        channels=tuple(names),
    )
