"""Photometric-redshift metrics and diagnostic plots.

The photo-z product's own metrics (classification metrics shared by the
products are in `lsst.meas.ml.metrics`).  They follow the definitions
used by RAIL and the LSST DESC photo-z papers, so a number printed here
can be put side by side with one of RAIL's:

* ``dz = (z_phot - z_true) / (1 + z_true)``;
* `sigma_nmad`: ``1.4826 * median(|dz - median(dz)|)``;
* `bias`: ``median(dz)``;
* `outlier_fraction`: fraction with ``|dz| > 0.15``;
* `outlier_fraction_rail`: fraction with ``|dz| > max(0.06, 3 sigma_IQR)``
  where ``sigma_IQR = IQR(dz) / 1.349``;
* `pit`: the predictive CDF evaluated at the true redshift, whose
  histogram is flat for calibrated PDFs; `pit_ks` is its Kolmogorov-Smirnov
  distance to the uniform distribution;
* `crps`: the continuous ranked probability score
  ``integral (F(z) - H(z - z_true))^2 dz`` (lower is better).

PDFs are given on bins: ``pdf`` has shape ``(n_objects, n_bins)`` holding
the probability of each bin (rows sum to one) and ``edges`` has
``n_bins + 1`` increasing bin edges; inside a bin the probability is taken
as uniform, so the CDF is piecewise linear.  Compact PDFs stored as
quantiles are handled by `pit_from_quantiles` and `crps_from_quantiles`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "PhotozMetrics",
    "bias",
    "cdf_on_grid",
    "crps",
    "crps_from_quantiles",
    "delta_z",
    "ks_uniform",
    "outlier_fraction",
    "outlier_fraction_rail",
    "photoz_metrics",
    "pit",
    "pit_from_quantiles",
    "pit_histogram",
    "plot_photoz_vs_true",
    "plot_pit",
    "sigma_iqr",
    "sigma_nmad",
]

#: Scale from the median absolute deviation to a Gaussian sigma.
NMAD_SCALE = 1.4826
#: Scale from the inter-quartile range to a Gaussian sigma.
IQR_SCALE = 1.349


def _finite_pair(z_phot: np.ndarray, z_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z_phot = np.asarray(z_phot, dtype=np.float64).ravel()
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    if z_phot.shape != z_true.shape:
        raise ValueError(f"z_phot has {z_phot.size} values but z_true has {z_true.size}.")
    good = np.isfinite(z_phot) & np.isfinite(z_true)
    return z_phot[good], z_true[good]


def delta_z(z_phot: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """Return ``(z_phot - z_true) / (1 + z_true)`` over the pairs where both are finite.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts, one per ``z_phot``.

    Returns
    -------
    dz : `numpy.ndarray`
        The normalised residuals of the finite pairs (flattened).

    Raises
    ------
    ValueError
        If ``z_phot`` and ``z_true`` differ in size.
    """
    zp, zt = _finite_pair(z_phot, z_true)
    return (zp - zt) / (1.0 + zt)


def sigma_nmad(z_phot: np.ndarray, z_true: np.ndarray) -> float:
    """Return the normalised median absolute deviation of `delta_z` (1.4826 x MAD).

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts, one per ``z_phot``.

    Returns
    -------
    sigma : `float`
        The scatter; NaN without a finite pair.

    Raises
    ------
    ValueError
        If ``z_phot`` and ``z_true`` differ in size.
    """
    dz = delta_z(z_phot, z_true)
    if dz.size == 0:
        return math.nan
    return float(NMAD_SCALE * np.median(np.abs(dz - np.median(dz))))


def sigma_iqr(z_phot: np.ndarray, z_true: np.ndarray) -> float:
    """Return the inter-quartile range of `delta_z` divided by 1.349.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts, one per ``z_phot``.

    Returns
    -------
    sigma : `float`
        The scatter; NaN without a finite pair.

    Raises
    ------
    ValueError
        If ``z_phot`` and ``z_true`` differ in size.
    """
    dz = delta_z(z_phot, z_true)
    if dz.size == 0:
        return math.nan
    q25, q75 = np.percentile(dz, [25.0, 75.0])
    return float((q75 - q25) / IQR_SCALE)


def bias(z_phot: np.ndarray, z_true: np.ndarray) -> float:
    """Return the median of `delta_z`.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts, one per ``z_phot``.

    Returns
    -------
    bias : `float`
        The median; NaN without a finite pair.

    Raises
    ------
    ValueError
        If ``z_phot`` and ``z_true`` differ in size.
    """
    dz = delta_z(z_phot, z_true)
    return float(np.median(dz)) if dz.size else math.nan


def outlier_fraction(z_phot: np.ndarray, z_true: np.ndarray, threshold: float = 0.15) -> float:
    """Return the fraction of objects with ``|dz| > threshold``.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts, one per ``z_phot``.
    threshold : `float`, optional
        The outlier limit on ``|dz|``, where ``dz`` is `delta_z` (already
        divided by ``1 + z_true``).

    Returns
    -------
    fraction : `float`
        The outlier fraction; NaN without a finite pair.

    Raises
    ------
    ValueError
        If ``z_phot`` and ``z_true`` differ in size.
    """
    dz = delta_z(z_phot, z_true)
    return float(np.mean(np.abs(dz) > threshold)) if dz.size else math.nan


def outlier_fraction_rail(z_phot: np.ndarray, z_true: np.ndarray) -> float:
    """Return the fraction with ``|dz| > max(0.06, 3 sigma_IQR)``, RAIL's outlier rate.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts, one per ``z_phot``.

    Returns
    -------
    fraction : `float`
        The outlier fraction; NaN without a finite pair.

    Raises
    ------
    ValueError
        If ``z_phot`` and ``z_true`` differ in size.
    """
    dz = delta_z(z_phot, z_true)
    if dz.size == 0:
        return math.nan
    q25, q75 = np.percentile(dz, [25.0, 75.0])
    threshold = max(0.06, 3.0 * (q75 - q25) / IQR_SCALE)
    return float(np.mean(np.abs(dz) > threshold))


def _check_binned(pdf: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pdf = np.atleast_2d(np.asarray(pdf, dtype=np.float64))
    edges = np.asarray(edges, dtype=np.float64).ravel()
    if pdf.shape[1] + 1 != edges.size:
        raise ValueError(f"pdf has {pdf.shape[1]} bins but {edges.size} edges were given (need bins + 1).")
    if np.any(np.diff(edges) <= 0):
        raise ValueError("Bin edges must be strictly increasing.")
    return pdf, edges


def pit(pdf: np.ndarray, edges: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """Compute the probability integral transform of binned PDFs at the true redshifts.

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability in each bin; rows are renormalised to sum to one.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.
    z_true : `numpy.ndarray`, (N,)
        True redshifts.

    Returns
    -------
    pit : `numpy.ndarray`, (N,)
        CDF at ``z_true`` (linear inside a bin); NaN where the PDF or the
        truth is not finite.

    Raises
    ------
    ValueError
        If ``edges`` does not have one more value than ``pdf`` has bins,
        or is not strictly increasing.
    """
    pdf, edges = _check_binned(pdf, edges)
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    total = pdf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pdf = pdf / total
    cdf = np.concatenate([np.zeros((pdf.shape[0], 1)), np.cumsum(pdf, axis=1)], axis=1)
    zc = np.clip(z_true, edges[0], edges[-1])
    idx = np.clip(np.searchsorted(edges, zc, side="right") - 1, 0, edges.size - 2)
    frac = (zc - edges[idx]) / (edges[idx + 1] - edges[idx])
    rows = np.arange(pdf.shape[0])
    out = cdf[rows, idx] + frac * pdf[rows, idx]
    out[~np.isfinite(z_true) | ~np.isfinite(total[:, 0]) | (total[:, 0] <= 0)] = np.nan
    return np.clip(out, 0.0, 1.0)


def pit_histogram(pit_values: np.ndarray, n_bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Histogram PIT values, normalised to a density (flat at 1 when calibrated).

    Parameters
    ----------
    pit_values : `numpy.ndarray`
        PIT values; non-finite ones are ignored.
    n_bins : `int`, optional
        The number of bins over [0, 1].

    Returns
    -------
    density, edges : `numpy.ndarray`
        The density in each bin and the ``n_bins + 1`` bin edges.
    """
    values = np.asarray(pit_values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return np.histogram(values, bins=n_bins, range=(0.0, 1.0), density=True)


def ks_uniform(values: np.ndarray) -> float:
    """Return the Kolmogorov-Smirnov distance between finite ``values`` and U(0, 1).

    Parameters
    ----------
    values : `numpy.ndarray`
        The sample; non-finite values are ignored.

    Returns
    -------
    distance : `float`
        The KS statistic; NaN without a finite value.
    """
    x = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    n = x.size
    if n == 0:
        return math.nan
    upper = np.arange(1, n + 1) / n - x
    lower = x - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def cdf_on_grid(pdf: np.ndarray, edges: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Evaluate the piecewise-linear CDF of binned PDFs on ``grid``.

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability in each bin; rows are renormalised to sum to one.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.
    grid : `numpy.ndarray`, (G,)
        Redshifts at which to evaluate the CDFs.

    Returns
    -------
    cdf : `numpy.ndarray`, (N, G)
        The CDFs: 0 at and below the first edge, 1 at and above the last.

    Raises
    ------
    ValueError
        If ``edges`` does not have one more value than ``pdf`` has bins,
        or is not strictly increasing.
    """
    pdf, edges = _check_binned(pdf, edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        pdf = pdf / pdf.sum(axis=1, keepdims=True)
    cdf_edges = np.concatenate([np.zeros((pdf.shape[0], 1)), np.cumsum(pdf, axis=1)], axis=1)
    grid = np.asarray(grid, dtype=np.float64)
    # Linear interpolation of each row: the CDF is linear between edges.
    idx = np.clip(np.searchsorted(edges, grid, side="right") - 1, 0, edges.size - 2)
    frac = np.clip((grid - edges[idx]) / (edges[idx + 1] - edges[idx]), 0.0, 1.0)
    out = cdf_edges[:, idx] + frac[None, :] * pdf[:, idx]
    out[:, grid <= edges[0]] = 0.0
    out[:, grid >= edges[-1]] = 1.0
    return out


def _crps_from_cdf(cdf: np.ndarray, grid: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    heaviside = (grid[None, :] >= z_true[:, None]).astype(np.float64)
    integrand = (cdf - heaviside) ** 2
    return np.trapezoid(integrand, grid, axis=1)


def crps(
    pdf: np.ndarray, edges: np.ndarray, z_true: np.ndarray, *, n_grid: int = 1001, chunk: int = 4096
) -> np.ndarray:
    """Compute the continuous ranked probability score of each binned PDF.

    The integral runs over the span of ``edges`` (extended to cover
    ``z_true``) on a regular grid of ``n_grid`` points.

    Parameters
    ----------
    pdf : `numpy.ndarray`, (N, K)
        Probability in each bin; rows are renormalised to sum to one.
    edges : `numpy.ndarray`, (K + 1,)
        Bin edges.
    z_true : `numpy.ndarray`, (N,)
        True redshifts.
    n_grid : `int`, optional
        The number of points of the integration grid.
    chunk : `int`, optional
        The number of PDFs evaluated at once (bounds the memory use).

    Returns
    -------
    crps : `numpy.ndarray`, (N,)
        The score of each PDF; NaN where the PDF or the truth is not
        finite.

    Raises
    ------
    ValueError
        If ``edges`` does not have one more value than ``pdf`` has bins,
        or is not strictly increasing.
    """
    pdf, edges = _check_binned(pdf, edges)
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    finite_truth = z_true[np.isfinite(z_true)]
    lo = min(edges[0], finite_truth.min()) if finite_truth.size else edges[0]
    hi = max(edges[-1], finite_truth.max()) if finite_truth.size else edges[-1]
    grid = np.linspace(lo, hi, n_grid)
    out = np.empty(pdf.shape[0])
    for start in range(0, pdf.shape[0], chunk):
        sl = slice(start, start + chunk)
        cdf = cdf_on_grid(pdf[sl], edges, grid)
        out[sl] = _crps_from_cdf(cdf, grid, z_true[sl])
    bad = ~np.isfinite(z_true) | ~np.all(np.isfinite(pdf), axis=1)
    out[bad] = np.nan
    return out


def _quantile_cdf_knots(
    quantiles: np.ndarray, levels: np.ndarray, z_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (z, F) of the piecewise-linear CDF through stored quantiles.

    The CDF is 0 at ``z_range[0]`` and 1 at ``z_range[1]``; quantiles are
    sorted per row so float16 rounding cannot make it decrease.
    """
    q = np.sort(np.atleast_2d(np.asarray(quantiles, dtype=np.float64)), axis=1)
    n = q.shape[0]
    z_knots = np.concatenate([np.full((n, 1), z_range[0]), q, np.full((n, 1), z_range[1])], axis=1)
    z_knots = np.maximum.accumulate(np.clip(z_knots, z_range[0], z_range[1]), axis=1)
    f_knots = np.concatenate([[0.0], np.asarray(levels, dtype=np.float64), [1.0]])
    return z_knots, f_knots


def pit_from_quantiles(
    quantiles: np.ndarray, levels: Sequence[float], z_true: np.ndarray, z_range: tuple[float, float]
) -> np.ndarray:
    """Compute the PIT of compact PDFs stored as quantiles at probability ``levels``.

    Parameters
    ----------
    quantiles : `numpy.ndarray`, (N, L)
        The stored quantiles of each PDF.
    levels : `~collections.abc.Sequence` [`float`]
        The L probability levels of the quantiles.
    z_true : `numpy.ndarray`, (N,)
        True redshifts.
    z_range : `tuple` [`float`, `float`]
        The redshifts at which the CDF is 0 and 1.

    Returns
    -------
    pit : `numpy.ndarray`, (N,)
        The piecewise-linear CDF through the quantiles at ``z_true``; NaN
        where the quantiles or the truth are not finite.
    """
    z_knots, f_knots = _quantile_cdf_knots(quantiles, np.asarray(levels), z_range)
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    out = np.empty(z_true.size)
    for i in range(z_true.size):
        out[i] = np.interp(z_true[i], z_knots[i], f_knots) if np.isfinite(z_true[i]) else np.nan
    out[~np.all(np.isfinite(z_knots), axis=1)] = np.nan
    return out


def crps_from_quantiles(
    quantiles: np.ndarray,
    levels: Sequence[float],
    z_true: np.ndarray,
    z_range: tuple[float, float],
    *,
    n_grid: int = 1001,
) -> np.ndarray:
    """Compute the CRPS of compact PDFs stored as quantiles.

    The CDF is piecewise linear between the quantiles.

    Parameters
    ----------
    quantiles : `numpy.ndarray`, (N, L)
        The stored quantiles of each PDF.
    levels : `~collections.abc.Sequence` [`float`]
        The L probability levels of the quantiles.
    z_true : `numpy.ndarray`, (N,)
        True redshifts.
    z_range : `tuple` [`float`, `float`]
        The redshifts at which the CDF is 0 and 1; the integral runs over
        this range, extended to cover ``z_true``.
    n_grid : `int`, optional
        The number of points of the integration grid.

    Returns
    -------
    crps : `numpy.ndarray`, (N,)
        The score of each PDF; NaN where the quantiles or the truth are not
        finite.
    """
    z_knots, f_knots = _quantile_cdf_knots(quantiles, np.asarray(levels), z_range)
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    finite_truth = z_true[np.isfinite(z_true)]
    lo = min(z_range[0], finite_truth.min()) if finite_truth.size else z_range[0]
    hi = max(z_range[1], finite_truth.max()) if finite_truth.size else z_range[1]
    grid = np.linspace(lo, hi, n_grid)
    cdf = np.empty((z_knots.shape[0], grid.size))
    for i in range(z_knots.shape[0]):
        cdf[i] = np.interp(grid, z_knots[i], f_knots, left=0.0, right=1.0)
    out = _crps_from_cdf(cdf, grid, z_true)
    out[~np.isfinite(z_true) | ~np.all(np.isfinite(z_knots), axis=1)] = np.nan
    return out


class PhotozMetrics(dict):
    """Dictionary of named photo-z metrics with a one-line summary."""

    def summary(self) -> str:
        """Return ``name=value`` pairs on one line."""
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.items())


def photoz_metrics(
    z_phot: np.ndarray,
    z_true: np.ndarray,
    *,
    pdf: np.ndarray | None = None,
    edges: np.ndarray | None = None,
) -> PhotozMetrics:
    """Compute the standard point and (when a PDF is given) PDF metrics.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric (point) redshifts.
    z_true : `numpy.ndarray`
        True redshifts.
    pdf : `numpy.ndarray`, (N, K), optional
        Binned PDFs, for ``pit_ks`` and ``crps``.
    edges : `numpy.ndarray`, (K + 1,), optional
        Bin edges of ``pdf``; required with it.

    Returns
    -------
    metrics : `PhotozMetrics`
        ``n``, ``sigma_nmad``, ``bias``, ``sigma_iqr``, ``outlier_frac``
        (|dz| > 0.15), ``outlier_frac_rail``, and with a PDF also
        ``pit_ks`` and ``crps`` (mean).

    Raises
    ------
    ValueError
        If ``pdf`` is given without ``edges``, or the inputs do not match
        in size.
    """
    out = PhotozMetrics(
        n=int(delta_z(z_phot, z_true).size),
        sigma_nmad=sigma_nmad(z_phot, z_true),
        bias=bias(z_phot, z_true),
        sigma_iqr=sigma_iqr(z_phot, z_true),
        outlier_frac=outlier_fraction(z_phot, z_true),
        outlier_frac_rail=outlier_fraction_rail(z_phot, z_true),
    )
    if pdf is not None:
        if edges is None:
            raise ValueError("Bin edges are needed with a PDF.")
        p = pit(pdf, edges, z_true)
        out["pit_ks"] = ks_uniform(p)
        out["crps"] = float(np.nanmean(crps(pdf, edges, z_true)))
    return out


def plot_photoz_vs_true(
    z_phot: np.ndarray,
    z_true: np.ndarray,
    path: str,
    *,
    title: str = "",
    z_max: float = 3.0,
    metrics: Mapping[str, Any] | None = None,
) -> str:
    """Write a PNG of photo-z against true redshift with the outlier limits.

    Parameters
    ----------
    z_phot : `numpy.ndarray`
        Photometric redshifts.
    z_true : `numpy.ndarray`
        True redshifts.
    path : `str`
        The file to write.
    title : `str`, optional
        The plot title.
    z_max : `float`, optional
        The largest redshift shown on both axes.
    metrics : `~collections.abc.Mapping` [`str`, `~typing.Any`], optional
        Metrics to print on the plot (``sigma_nmad``, ``bias``,
        ``outlier_frac``); computed with `photoz_metrics` when `None`.

    Returns
    -------
    path : `str`
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zp, zt = _finite_pair(z_phot, z_true)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.hexbin(zt, zp, gridsize=80, extent=(0, z_max, 0, z_max), bins="log", mincnt=1, cmap="viridis")
    line = np.linspace(0, z_max, 2)
    ax.plot(line, line, "w-", lw=0.8)
    for sign in (-1, 1):
        ax.plot(line, line + sign * 0.15 * (1 + line), "r--", lw=0.8)
    ax.set_xlim(0, z_max)
    ax.set_ylim(0, z_max)
    ax.set_xlabel("true redshift")
    ax.set_ylabel("photometric redshift")
    if metrics is None:
        metrics = photoz_metrics(zp, zt)
    text = "\n".join(
        f"{k} = {metrics[k]:.4f}" for k in ("sigma_nmad", "bias", "outlier_frac") if k in metrics
    )
    ax.text(
        0.03,
        0.97,
        text,
        transform=ax.transAxes,
        va="top",
        color="k",
        fontsize=8,
        bbox=dict(facecolor="white", alpha=0.8),
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_pit(pit_values: np.ndarray, path: str, *, title: str = "", n_bins: int = 20) -> str:
    """Write a PNG of the PIT histogram with its KS statistic.

    Parameters
    ----------
    pit_values : `numpy.ndarray`
        PIT values; non-finite ones are ignored.
    path : `str`
        The file to write.
    title : `str`, optional
        The plot title (the KS statistic is appended).
    n_bins : `int`, optional
        The number of histogram bins.

    Returns
    -------
    path : `str`
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    density, edges = pit_histogram(pit_values, n_bins)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.stairs(density, edges, fill=True, alpha=0.6)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_xlabel("PIT")
    ax.set_ylabel("density")
    ax.set_title(f"{title} KS = {ks_uniform(pit_values):.4f}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
