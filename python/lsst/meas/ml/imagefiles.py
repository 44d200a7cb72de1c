"""Image files outside the Butler: cutout collections as model inputs.

Users with their own cutouts (FITS, NPY, PNG or JPEG; any number of
channels) give them as a glob; each file's stem is the object's id.  This
module turns them into one ``(N, C, S, S)`` float32 array for the image
products (morphology, embeddings), with these rules:

* **Layout.**  FITS: the first HDU holding an image (2-d is one channel, 3-d
  is ``(C, H, W)``).  NPY: 2-d is one channel; 3-d is ``(C, H, W)``, unless
  its last axis has at most 4 entries and its first more than 4, then it is
  read as ``(H, W, C)`` (how images are usually saved from matplotlib or
  PIL).  PNG/JPEG: through Pillow; grey is one channel, RGB three, RGBA
  four, palette images are converted to RGB; 8-bit values are scaled to
  [0, 1] (16-bit to [0, 1] too).
* **Unreadable files** are named in a warning, skipped and counted
  (`ImageSet.skipped`); reading stops with `ImageFileError` only when no
  file could be read.
* **Channel counts** must agree: a file with another count is a clear error
  naming it (`ImageFileError`); a model trained on C channels cannot use
  another count.
* **Sizes** may differ: ``resize="centre"`` (the default) crops or zero-pads
  each image about its centre to ``size`` (default: the most common size of
  the set), marking padded pixels as missing; ``resize="error"`` refuses
  images of another size, naming the first one.  Non-square images are
  cropped or padded the same way.  Nothing is resampled, so pixel scales
  are kept (a model cares about arcsec per pixel).
* **NaN pixels** are kept in `ImageSet.images`; `ImageSet.bad` marks them
  and the pixels added by padding, for the products' mask channels.
* **Ids** are file stems (``.fits.gz`` loses both suffixes); the same stem
  twice is an error naming both files.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import MeasMlUserError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFileError",
    "ImageSet",
    "LabelFileError",
    "expand_images",
    "file_id",
    "load_images",
    "match_labels",
    "read_image_file",
    "read_labels",
]

_LOG = logging.getLogger(__name__)

#: File suffixes read (lower case); ``.gz`` after ``.fits``/``.fit`` is accepted too.
IMAGE_SUFFIXES: tuple[str, ...] = (".fits", ".fit", ".fts", ".npy", ".png", ".jpg", ".jpeg")


class ImageFileError(MeasMlUserError, ValueError):
    """An image file or a set of them cannot be used; the message names the file."""


class LabelFileError(MeasMlUserError, ValueError):
    """A labels table cannot be used; the message names the file and column."""


def file_id(path: str | os.PathLike) -> str:
    """Return the id of an image file: its name without the image suffix(es).

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The file.

    Returns
    -------
    id : `str`
        ``"obj1"`` for ``obj1.png``, ``obj1.fits.gz`` or ``dir/obj1.npy``.
    """
    name = Path(path).name
    lower = name.lower()
    if lower.endswith(".gz"):
        name, lower = name[:-3], lower[:-3]
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _is_image_name(path: str) -> bool:
    lower = path.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    return lower.endswith(IMAGE_SUFFIXES)


def expand_images(patterns: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand globs, directories and file names into a sorted list of image files.

    Parameters
    ----------
    patterns : `str`, `os.PathLike` or iterable of them
        Globs (``'DIR/*.png'``, ``'DIR/**/*.fits'``), directories (every image
        file directly inside) or file names.

    Returns
    -------
    paths : `list` [`pathlib.Path`]
        The files, sorted, without duplicates.

    Raises
    ------
    ImageFileError
        No image file matches.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    patterns = [str(p) for p in patterns]
    found: set[str] = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            found.update(os.path.join(pattern, f) for f in os.listdir(pattern) if _is_image_name(f))
        elif os.path.exists(pattern):
            found.add(pattern)
        else:
            found.update(
                f for f in glob.glob(pattern, recursive=True) if _is_image_name(f) and os.path.isfile(f)
            )
    if not found:
        raise ImageFileError(
            f"No image file matches {patterns}; give a glob such as 'DIR/*.png' (quoted) or a directory; "
            f"readable suffixes are {', '.join(IMAGE_SUFFIXES)}."
        )
    return [Path(f) for f in sorted(found)]


def _from_fits(path: Path) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        for hdu in hdus:
            if hdu.data is not None and getattr(hdu, "is_image", False) and np.ndim(hdu.data) >= 2:
                return np.asarray(hdu.data)
    raise ValueError("no image HDU")


def _from_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
        elif img.mode == "1":
            img = img.convert("L")
        arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32)


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as ``(C, H, W)`` float32.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        A FITS, NPY, PNG or JPEG file (see the module's layout rules).

    Returns
    -------
    image : `numpy.ndarray`
        ``(C, H, W)`` float32; NaN pixels are kept.

    Raises
    ------
    ImageFileError
        The file cannot be read or does not hold a 2-d or 3-d image.
    """
    path = Path(path)
    lower = path.name.lower().removesuffix(".gz")
    try:
        if lower.endswith((".fits", ".fit", ".fts")):
            arr = _from_fits(path)
            layout = "chw"
        elif lower.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
            layout = "auto"
        elif lower.endswith((".png", ".jpg", ".jpeg")):
            arr = _from_pillow(path)
            layout = "hwc"
        else:
            raise ValueError(f"unknown suffix (readable: {', '.join(IMAGE_SUFFIXES)})")
    except ImageFileError:
        raise
    except Exception as exc:  # any reader failure is reported with the file's name
        raise ImageFileError(f"Cannot read image file {path}: {type(exc).__name__}: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise ImageFileError(f"Image file {path} holds {arr.dtype} values, not numbers.")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        return arr[None].copy()
    if arr.ndim != 3:
        raise ImageFileError(f"Image file {path} holds a {arr.ndim}-d array; expected 2-d or 3-d (C, H, W).")
    if layout == "hwc" or (layout == "auto" and arr.shape[-1] <= 4 and arr.shape[0] > 4):
        arr = np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr)


@dataclasses.dataclass
class ImageSet:
    """Images read from files, on one grid.

    Attributes
    ----------
    ids : `list` [`str`]
        Object ids (file stems), one per image.
    paths : `list` [`pathlib.Path`]
        The files read, in the order of ``images``.
    images : `numpy.ndarray`
        ``(N, C, S, S)`` float32; NaN pixels kept, padding is 0.
    bad : `numpy.ndarray`
        ``(N, C, S, S)`` bool: NaN or infinite pixels, and pixels added by
        padding.
    resized : `numpy.ndarray`
        ``(N,)`` bool, True where the image was cropped or padded.
    skipped : `list` [`tuple` [`str`, `str`]]
        ``(path, reason)`` of each unreadable file.
    """

    ids: list[str]
    paths: list[Path]
    images: np.ndarray
    bad: np.ndarray
    resized: np.ndarray
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_channels(self) -> int:
        """Channels per image."""
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        """Image side in pixels."""
        return int(self.images.shape[-1])


def _centre_fit(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop or zero-pad ``(C, H, W)`` about its centre to ``(C, size, size)``; return it and the pad mask."""
    c, h, w = image.shape
    out = np.zeros((c, size, size), dtype=np.float32)
    pad = np.ones((size, size), dtype=bool)
    # Source and destination windows along each axis, centres aligned.
    windows = []
    for n in (h, w):
        if n >= size:
            start = (n - size) // 2
            windows.append((slice(start, start + size), slice(0, size)))
        else:
            start = (size - n) // 2
            windows.append((slice(0, n), slice(start, start + n)))
    (sy, dy), (sx, dx) = windows
    out[:, dy, dx] = image[:, sy, sx]
    pad[dy, dx] = False
    return out, pad


def load_images(
    patterns: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    size: int | None = None,
    resize: str = "centre",
    channels: int | None = None,
) -> ImageSet:
    """Read a collection of image files into one array.

    Parameters
    ----------
    patterns : `str`, `os.PathLike` or iterable of them
        Globs, directories or files (`expand_images`).
    size : `int`, optional
        Side of the output images; default the most common side in the set
        (the larger of height and width).
    resize : `str`, optional
        ``"centre"`` (crop or zero-pad about the centre) or ``"error"``
        (refuse images whose shape is not ``size`` x ``size``).
    channels : `int`, optional
        Required channel count (e.g. the model's); default the first
        readable image's.

    Returns
    -------
    images : `ImageSet`
        The images with their ids, bad-pixel masks and skipped files.

    Raises
    ------
    ImageFileError
        No file matches or none can be read; a file has another channel
        count; with ``resize="error"``, a file has another size; two files
        share a stem.
    """
    if resize not in ("centre", "error"):
        raise ValueError(f"resize must be 'centre' or 'error', not {resize!r}")
    paths = expand_images(patterns)
    arrays: list[np.ndarray] = []
    kept: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        ident = file_id(path)
        if ident in seen:
            raise ImageFileError(
                f"Image files {seen[ident]} and {path} have the same id {ident!r} (the file stem)."
            )
        seen[ident] = path
        try:
            arr = read_image_file(path)
        except ImageFileError as exc:
            _LOG.warning("Skipping unreadable image file: %s", exc)
            skipped.append((str(path), str(exc)))
            continue
        if channels is None:
            channels = arr.shape[0]
        if arr.shape[0] != channels:
            first = kept[0] if kept else "the model"
            raise ImageFileError(
                f"Image file {path} has {arr.shape[0]} channel(s) but {first} has {channels}; all "
                "images of a set (and the model) need the same channels."
            )
        arrays.append(arr)
        kept.append(path)
    if not arrays:
        raise ImageFileError(f"None of the {len(paths)} image file(s) could be read: {skipped[0][1]}")
    if size is None:
        size = collections.Counter(max(a.shape[1:]) for a in arrays).most_common(1)[0][0]
    n = len(arrays)
    images = np.zeros((n, channels, size, size), dtype=np.float32)
    bad = np.zeros((n, channels, size, size), dtype=bool)
    resized = np.zeros(n, dtype=bool)
    for i, (arr, path) in enumerate(zip(arrays, kept)):
        if arr.shape[1:] == (size, size):
            images[i] = arr
            pad = None
        elif resize == "error":
            raise ImageFileError(
                f"Image file {path} is {arr.shape[2]}x{arr.shape[1]} pixels, not {size}x{size}; resize it or "
                "let the images be cropped or padded about their centres (resize='centre')."
            )
        else:
            images[i], pad = _centre_fit(arr, size)
            resized[i] = True
        bad[i] = ~np.isfinite(images[i])
        if pad is not None:
            bad[i] |= pad[None]
    if skipped:
        _LOG.warning("%d of %d image file(s) could not be read and were skipped.", len(skipped), len(paths))
    return ImageSet(
        ids=[file_id(p) for p in kept], paths=kept, images=images, bad=bad, resized=resized, skipped=skipped
    )


def read_labels(path: str | os.PathLike, id_column: str, label_column: str) -> dict[str, str | None]:
    """Read a labels table: id to label, with blank labels as None.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        CSV, ECSV, Parquet or FITS table.
    id_column : `str`
        Column of object ids (compared with image file stems as strings).
    label_column : `str`
        Column of labels (strings or integers; empty, masked or NaN means
        unlabelled).

    Returns
    -------
    labels : `dict` [`str`, `str` or `None`]
        Label (as a string) per id; None for rows without a label.

    Raises
    ------
    LabelFileError
        The table cannot be read, a column is missing, or an id repeats with
        different labels.
    """
    from astropy.table import Table

    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            table = Table.read(path, format="ascii.csv")
        else:
            table = Table.read(path)
    except Exception as exc:
        raise LabelFileError(f"Cannot read labels table {path}: {type(exc).__name__}: {exc}") from exc
    for col in (id_column, label_column):
        if col not in table.colnames:
            raise LabelFileError(
                f"Labels table {path} has no column {col!r}; its columns are {table.colnames}."
            )
    labels: dict[str, str | None] = {}
    ids = table[id_column]
    values = table[label_column]
    masked = np.ma.getmaskarray(values) if hasattr(values, "mask") else np.zeros(len(values), dtype=bool)
    for ident, value, is_masked in zip(ids, values, masked):
        key = str(ident).strip()
        label: str | None
        if is_masked or value is None:
            label = None
        elif isinstance(value, (float, np.floating)):
            label = (
                None
                if not np.isfinite(value)
                else (str(int(value)) if float(value).is_integer() else str(value))
            )
        else:
            label = str(value).strip() or None
        if key in labels and labels[key] is not None and label is not None and labels[key] != label:
            raise LabelFileError(
                f"Labels table {path}: id {key!r} has two labels, {labels[key]!r} and {label!r}."
            )
        if labels.get(key) is None:
            labels[key] = label
    return labels


def match_labels(
    ids: Sequence[str], labels: dict[str, str | None], source: str = "labels"
) -> list[str | None]:
    """Align labels with image ids.

    Parameters
    ----------
    ids : sequence of `str`
        Image ids.
    labels : `dict` [`str`, `str` or `None`]
        From `read_labels`.
    source : `str`, optional
        Name of the labels file, for the error message.

    Returns
    -------
    aligned : `list` [`str` or `None`]
        Each image's label; None for images with no (or a blank) label.

    Raises
    ------
    LabelFileError
        No id of the labels table matches an image.
    """
    aligned = [labels.get(str(i)) for i in ids]
    if not any(str(i) in labels for i in ids):
        example = next(iter(labels), None)
        raise LabelFileError(
            f"No id of {source} matches an image file stem (e.g. label id {example!r}, image id "
            f"{ids[0] if len(ids) else None!r}); ids are compared as strings with the file stems."
        )
    return aligned
