"""Calibration plots of photo-z PDFs: PIT histograms and 68% coverage per magnitude bin.

A calibrated PDF has PIT values (its CDF at the true redshift) uniform on
[0, 1], and its central 68% interval holds the true redshift for 68% of
the objects, at every magnitude.  `plot_pit_histograms` and
`plot_coverage_by_magnitude` draw one or more estimators on the same axes
(e.g. the MBRNN and the template-fit follow-up on the same objects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import ks_uniform, pit_histogram

__all__ = ["DEFAULT_MAG_EDGES", "coverage_by_magnitude", "plot_coverage_by_magnitude", "plot_pit_histograms"]

#: Magnitude bins of the coverage plot.
DEFAULT_MAG_EDGES: tuple[float, ...] = (16.0, 20.0, 22.0, 23.0, 24.0, 24.5, 25.0, 25.5, 26.0, 28.0)


def coverage_by_magnitude(
    lo: np.ndarray,
    hi: np.ndarray,
    z_true: np.ndarray,
    mag: np.ndarray,
    mag_edges: Sequence[float] = DEFAULT_MAG_EDGES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the fraction of true redshifts inside the 68% interval, per magnitude bin.

    Parameters
    ----------
    lo, hi : `numpy.ndarray`
        Lower and upper ends of the central 68% interval of each object.
    z_true : `numpy.ndarray`
        True redshifts.
    mag : `numpy.ndarray`
        Magnitude of each object (non-finite ones are left out).
    mag_edges : `~collections.abc.Sequence` [`float`], optional
        Edges of the magnitude bins.

    Returns
    -------
    centres : `numpy.ndarray`
        Bin centres.
    coverage : `numpy.ndarray`
        Fraction covered per bin (NaN for an empty bin).
    counts : `numpy.ndarray`
        Objects per bin.
    """
    lo, hi, z, m = (np.asarray(a, dtype=np.float64) for a in (lo, hi, z_true, mag))
    edges = np.asarray(mag_edges, dtype=np.float64)
    good = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(z) & np.isfinite(m)
    inside = (lo <= z) & (z <= hi)
    idx = np.digitize(m, edges) - 1
    counts = np.zeros(edges.size - 1, dtype=np.int64)
    coverage = np.full(edges.size - 1, np.nan)
    for k in range(edges.size - 1):
        sel = good & (idx == k)
        counts[k] = int(sel.sum())
        if counts[k]:
            coverage[k] = float(inside[sel].mean())
    return 0.5 * (edges[1:] + edges[:-1]), coverage, counts


def plot_pit_histograms(
    pits: Mapping[str, np.ndarray], path: str, *, title: str = "", n_bins: int = 20
) -> str:
    """Write a PNG of the PIT histograms of one or more estimators.

    Parameters
    ----------
    pits : `~collections.abc.Mapping` [`str`, `numpy.ndarray`]
        Estimator name -> PIT values (non-finite ones are ignored).
    path : `str`
        The file to write.
    title : `str`, optional
        Plot title.
    n_bins : `int`, optional
        Histogram bins over [0, 1].

    Returns
    -------
    path : `str`
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, values in pits.items():
        density, edges = pit_histogram(values, n_bins)
        n = int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())
        ax.stairs(density, edges, lw=1.5, label=f"{name} (N={n}, KS={ks_uniform(values):.3f})")
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_xlabel("PIT")
    ax.set_ylabel("density")
    ax.set_title(title or "PIT histogram")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_coverage_by_magnitude(
    intervals: Mapping[str, tuple[np.ndarray, np.ndarray]],
    z_true: np.ndarray,
    mag: np.ndarray,
    path: str,
    *,
    mag_edges: Sequence[float] = DEFAULT_MAG_EDGES,
    title: str = "",
    mag_label: str = "i [AB mag]",
) -> str:
    """Write a PNG of the 68% interval coverage per magnitude bin of one or more estimators.

    Parameters
    ----------
    intervals : `~collections.abc.Mapping` [`str`, `tuple`]
        Estimator name -> (lower, upper) ends of its 68% intervals.
    z_true : `numpy.ndarray`
        True redshifts.
    mag : `numpy.ndarray`
        Magnitudes.
    path : `str`
        The file to write.
    mag_edges : `~collections.abc.Sequence` [`float`], optional
        Magnitude bin edges.
    title : `str`, optional
        Plot title.
    mag_label : `str`, optional
        Label of the magnitude axis.

    Returns
    -------
    path : `str`
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, (lo, hi) in intervals.items():
        centres, coverage, counts = coverage_by_magnitude(lo, hi, z_true, mag, mag_edges)
        keep = counts > 0
        ax.plot(centres[keep], coverage[keep], "o-", label=name)
    ax.axhline(0.68, color="k", ls="--", lw=0.8, label="68%")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(mag_label)
    ax.set_ylabel("fraction of true z inside the 68% interval")
    ax.set_title(title or "68% interval coverage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
