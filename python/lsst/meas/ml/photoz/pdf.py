"""Binned redshift PDFs: point summaries and a compact quantile form.

A PDF is an array ``pdf`` of shape ``(N, K)`` with the probability of each of
``K`` bins whose ``K + 1`` edges are ``edges``; inside a bin the density is
uniform, so the CDF is piecewise linear and quantiles are exact for it.

Survey-scale storage: `compact_quantiles` keeps a few quantiles per object
in float16 (2 bytes each) instead of ``K`` float32 probabilities; the cost
in PIT and CRPS of that compression is measured by
`compact_storage_report`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_COMPACT_LEVELS",
    "PdfSummary",
    "compact_quantiles",
    "compact_storage_report",
    "pdf_quantiles",
    "summarize_pdf",
]

#: Probability levels of the compact PDF form.
DEFAULT_COMPACT_LEVELS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.16,
    0.25,
    0.35,
    0.5,
    0.65,
    0.75,
    0.84,
    0.9,
    0.95,
    0.975,
    0.99,
)


def pdf_quantiles(pdf: np.ndarray, edges: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Compute quantiles of binned PDFs (linear inside a bin).

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability of each bin (need not be normalised); a 1-d array is
        one row.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.
    levels : `~collections.abc.Sequence` [`float`]
        Probability levels, in [0, 1].

    Returns
    -------
    quantiles : `numpy.ndarray`, (N, len(levels)), float64
        The quantiles; NaN for rows that are not finite or do not sum to
        a positive number.
    """
    pdf = np.atleast_2d(np.asarray(pdf, dtype=np.float64))
    edges = np.asarray(edges, dtype=np.float64)
    total = pdf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = pdf / total
    cdf = np.cumsum(p, axis=1)  # CDF at the upper edge of each bin
    n, k = p.shape
    levels = np.asarray(levels, dtype=np.float64)
    out = np.empty((n, levels.size))
    rows = np.arange(n)
    for j, level in enumerate(levels):
        idx = np.minimum((cdf < level).sum(axis=1), k - 1)
        below = cdf[rows, idx] - p[rows, idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(p[rows, idx] > 0, (level - below) / p[rows, idx], 0.5)
        out[:, j] = edges[idx] + np.clip(frac, 0.0, 1.0) * (edges[idx + 1] - edges[idx])
    bad = ~np.isfinite(total[:, 0]) | (total[:, 0] <= 0) | ~np.all(np.isfinite(pdf), axis=1)
    out[bad] = np.nan
    return out


class PdfSummary(dict):
    """Point summaries of PDFs: ``mean, mode, median, std, lo68, hi68`` arrays."""


def summarize_pdf(pdf: np.ndarray, edges: np.ndarray) -> PdfSummary:
    """Compute the mean, mode, median, standard deviation and central 68% interval.

    The mode is refined inside the peak bin by a parabola through the peak
    and its neighbours; the standard deviation includes the bin width
    (uniform density inside a bin).

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability of each bin (need not be normalised); a 1-d array is
        one row.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.

    Returns
    -------
    summary : `PdfSummary`
        Float64 arrays of length N (``mean``, ``mode``, ``median``,
        ``std``, ``lo68``, ``hi68``); NaN for rows that are not finite or
        do not sum to a positive number.
    """
    pdf = np.atleast_2d(np.asarray(pdf, dtype=np.float64))
    edges = np.asarray(edges, dtype=np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    widths = np.diff(edges)
    total = pdf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = pdf / total
    mean = p @ centres
    var = p @ (centres**2 + widths**2 / 12.0) - mean**2
    n, k = p.shape
    rows = np.arange(n)
    peak = np.argmax(np.where(np.isfinite(p), p, -1.0), axis=1) if k else np.zeros(n, dtype=int)
    left = p[rows, np.maximum(peak - 1, 0)]
    right = p[rows, np.minimum(peak + 1, k - 1)]
    centre = p[rows, peak]
    denom = left - 2.0 * centre + right
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    shift = np.where((peak == 0) | (peak == k - 1), 0.0, np.clip(shift, -0.5, 0.5))
    mode = centres[peak] + shift * widths[peak]
    q = pdf_quantiles(pdf, edges, (0.5, 0.16, 0.84))
    out = PdfSummary(
        mean=mean, mode=mode, median=q[:, 0], std=np.sqrt(np.clip(var, 0.0, None)), lo68=q[:, 1], hi68=q[:, 2]
    )
    bad = ~np.isfinite(total[:, 0]) | (total[:, 0] <= 0) | ~np.all(np.isfinite(pdf), axis=1)
    for value in out.values():
        value[bad] = np.nan
    return out


def compact_quantiles(
    pdf: np.ndarray, edges: np.ndarray, levels: Sequence[float] = DEFAULT_COMPACT_LEVELS
) -> np.ndarray:
    """Return the compact PDF form: quantiles at ``levels`` as float16, shape (N, L).

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability of each bin (need not be normalised); a 1-d array is
        one row.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.
    levels : `~collections.abc.Sequence` [`float`], optional
        Probability levels (L of them).

    Returns
    -------
    quantiles : `numpy.ndarray`, (N, L), float16
        The quantiles (`pdf_quantiles`), NaN for unusable rows.
    """
    return pdf_quantiles(pdf, edges, levels).astype(np.float16)


def compact_storage_report(
    pdf: np.ndarray,
    edges: np.ndarray,
    z_true: np.ndarray,
    levels: Sequence[float] = DEFAULT_COMPACT_LEVELS,
) -> dict[str, float]:
    """Compare bytes per object and PIT/CRPS of the compact form against the full PDF.

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability of each bin (need not be normalised); a 1-d array is
        one row.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.
    z_true : `numpy.ndarray`, (N,)
        True redshifts.
    levels : `~collections.abc.Sequence` [`float`], optional
        Probability levels of the compact form.

    Returns
    -------
    report : `dict`
        ``full_bytes`` (float32 vector), ``compact_bytes`` (float16
        quantiles), ``pit_ks_full``, ``pit_ks_compact``, ``crps_full``,
        ``crps_compact`` (means), ``crps_increase_frac`` (relative) and
        ``pit_max_abs_diff`` (largest per-object PIT change).
    """
    from .metrics import crps, crps_from_quantiles, ks_uniform, pit, pit_from_quantiles

    edges = np.asarray(edges, dtype=np.float64)
    z_range = (float(edges[0]), float(edges[-1]))
    q = compact_quantiles(pdf, edges, levels)
    pit_full = pit(pdf, edges, z_true)
    pit_compact = pit_from_quantiles(q, levels, z_true, z_range)
    crps_full = float(np.nanmean(crps(pdf, edges, z_true)))
    crps_compact = float(np.nanmean(crps_from_quantiles(q, levels, z_true, z_range)))
    return {
        "full_bytes": float(np.asarray(pdf).shape[1] * 4),
        "compact_bytes": float(len(levels) * 2),
        "pit_ks_full": ks_uniform(pit_full),
        "pit_ks_compact": ks_uniform(pit_compact),
        "crps_full": crps_full,
        "crps_compact": crps_compact,
        "crps_increase_frac": crps_compact / crps_full - 1.0,
        "pit_max_abs_diff": float(np.nanmax(np.abs(pit_full - pit_compact))),
    }
