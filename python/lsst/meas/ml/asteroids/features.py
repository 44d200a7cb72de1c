"""Per-object colours of Solar System objects from their source rows.

Each source row (one detection of one object in one band) gives a reduced
magnitude corrected for distance and phase::

    m = -2.5 log10(psfFlux / nJy) + 31.4                    (AB)
    H = m - 5 log10(r * delta) + 2.5 log10(Phi_HG12(alpha; G12))

with ``r``/``delta`` the heliocentric/topocentric distances in au and
``Phi_HG12`` the H-G12 phase function of Muinonen et al. (2010) with a fixed
``G12 = 0.5`` in every band (the same phase function in every band, so the
colours do not depend on G12 when the bands are observed at similar phase
angles; a per-band G12 can be passed).  The reduced magnitudes of an object
are combined per band with the median (robust to rotational variability and
outliers), with an uncertainty from the median absolute deviation,
``1.2533 * 1.4826 * MAD / sqrt(n)``, floored by the median photometric error
over ``sqrt(n)`` (and by the photometric error alone for one detection).
Colours are differences of adjacent bands' H: ``u-g, g-r, r-i, i-z, z-y``;
their covariance follows from the per-band errors (adjacent colours share a
band, so they are anti-correlated).

Default column names are those of the Rubin alert schema (LSSTCam alerts,
``diaSource`` + ``ssSource``): ``ssObjectId``, ``band``, ``psfFlux``,
``psfFluxErr``, ``phaseAngle`` (deg), ``helioRange`` and ``topoRange`` (au);
all are overridable with `AsteroidColumns`.  Rows with a non-finite or
non-positive flux, or missing phase/distances, are not used for H but the
objects keep their row in the output with a flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.table import Table

from ..errors import MeasMlUserError
from ..flags import DescribedFlag

__all__ = [
    "AB_ZEROPOINT_NJY",
    "MIN_DISTANCE_AU",
    "BANDS",
    "COLOURS",
    "MODEL_COLOURS",
    "AsteroidColumns",
    "AsteroidFlag",
    "AsteroidInputError",
    "ObjectColours",
    "build_colours",
    "colour_covariance",
    "hg12_phase_function",
    "sources_from_alerts",
]

#: AB magnitude of 1 nJy.
AB_ZEROPOINT_NJY = 31.4

#: Distances below this (au, ~15,000 km) are implausible and treated as missing: the
#: January 2026 LSSTCam alerts carry helioRange/topoRange ~1e-8, i.e. au divided by the
#: km per au once too often.
MIN_DISTANCE_AU = 1e-4

#: Bands in wavelength order.
BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")

#: Colours reported (adjacent bands).
COLOURS: tuple[tuple[str, str], ...] = (("u", "g"), ("g", "r"), ("r", "i"), ("i", "z"), ("z", "y"))

#: Colours the mixture uses (u is not covered by the training spectra).
MODEL_COLOURS: tuple[str, ...] = ("g-r", "r-i", "i-z", "z-y")


class AsteroidInputError(MeasMlUserError, ValueError):
    """A source table the colour step cannot read (missing columns...)."""


class AsteroidFlag(DescribedFlag):
    """Row flags of ``ml_asteroid_taxonomy``."""

    ONE_BAND = 1 << 0, "Usable detections in one band only: no colour, no class."
    NONFINITE_FLUX = 1 << 1, "Some detections had a non-finite or non-positive flux or error (not used)."
    MISSING_GEOMETRY = (
        1 << 2,
        (
            "Some detections lacked a finite phase angle (0-150 deg) or a plausible distance (> 1e-4 au); "
            "they are not used for H."
        ),
    )
    NO_VALID_DETECTION = 1 << 3, "No detection was usable: every output is NaN."
    MISSING_COLOUR = 1 << 4, "Some model colours are missing; the class uses the others (marginalised)."
    OUT_OF_DISTRIBUTION = 1 << 5, "Anomaly score above the threshold (1 = training 99th percentile)."
    FEW_DETECTIONS = 1 << 6, "A band used for a model colour has a single detection (error not from scatter)."


@dataclasses.dataclass(frozen=True)
class AsteroidColumns:
    """Column names of a Solar System source table (Rubin's by default)."""

    id_column: str = "ssObjectId"
    band: str = "band"
    flux: str = "psfFlux"
    flux_err: str = "psfFluxErr"
    phase_angle: str = "phaseAngle"
    helio_dist: str = "helioRange"
    topo_dist: str = "topoRange"

    def columns(self) -> list[str]:
        """Every column read, in a fixed order."""
        return [
            self.id_column,
            self.band,
            self.flux,
            self.flux_err,
            self.phase_angle,
            self.helio_dist,
            self.topo_dist,
        ]


# Muinonen et al. (2010) basis functions, nodes as in sbpy.photometry.
_PHI12_ALPHA = np.deg2rad([7.5, 30.0, 60.0, 90.0, 120.0, 150.0])
_PHI1 = (
    [7.5e-1, 3.3486016e-1, 1.3410560e-1, 5.1104756e-2, 2.1465687e-2, 3.6396989e-3],
    (-1.9098593, -9.1328612e-2),
)
_PHI2 = (
    [9.25e-1, 6.2884169e-1, 3.1755495e-1, 1.2716367e-1, 2.2373903e-2, 1.6505689e-4],
    (-5.7295780e-1, -8.6573138e-8),
)
_PHI3_ALPHA = np.deg2rad([0.0, 0.3, 1.0, 2.0, 4.0, 8.0, 12.0, 20.0, 30.0])
_PHI3 = (
    [
        1.0,
        8.3381185e-1,
        5.7735424e-1,
        4.2144772e-1,
        2.3174230e-1,
        1.0348178e-1,
        6.1733473e-2,
        1.6107006e-2,
        0.0,
    ],
    (-1.0630097, 0.0),
)
_SPLINES: dict[str, Any] = {}


def _spline(name: str) -> Any:
    if not _SPLINES:
        from scipy.interpolate import CubicSpline

        for key, x, (y, (d0, d1)) in (
            ("1", _PHI12_ALPHA, _PHI1),
            ("2", _PHI12_ALPHA, _PHI2),
            ("3", _PHI3_ALPHA, _PHI3),
        ):
            _SPLINES[key] = CubicSpline(x, y, bc_type=((1, d0), (1, d1)))
    return _SPLINES[name]


def hg12_phase_function(alpha_deg: Any, g12: float = 0.5) -> np.ndarray:
    """H-G12 phase function (Muinonen et al. 2010): flux ratio to zero phase.

    Parameters
    ----------
    alpha_deg : array-like
        Phase angles in degrees (0-150; NaN gives NaN).
    g12 : `float`
        The G12 slope parameter.

    Returns
    -------
    phi : `numpy.ndarray`
        ``G1 Phi1 + G2 Phi2 + (1 - G1 - G2) Phi3``; the magnitude at phase
        ``alpha`` is ``H - 2.5 log10(phi)``.
    """
    a = np.deg2rad(np.asarray(alpha_deg, dtype=np.float64))
    if g12 < 0.2:
        g1, g2 = 0.7527 * g12 + 0.06164, -0.9612 * g12 + 0.6270
    else:
        g1, g2 = 0.9529 * g12 + 0.02162, -0.6125 * g12 + 0.5572
    small = a < np.deg2rad(7.5)
    phi1 = np.where(small, 1.0 - 6.0 * a / np.pi, _spline("1")(np.clip(a, _PHI12_ALPHA[0], _PHI12_ALPHA[-1])))
    phi2 = np.where(
        small, 1.0 - 9.0 * a / (5.0 * np.pi), _spline("2")(np.clip(a, _PHI12_ALPHA[0], _PHI12_ALPHA[-1]))
    )
    phi3 = np.where(a < _PHI3_ALPHA[-1], _spline("3")(np.clip(a, 0.0, _PHI3_ALPHA[-1])), 0.0)
    out = g1 * phi1 + g2 * phi2 + (1.0 - g1 - g2) * phi3
    return np.where(np.isfinite(a) & (a >= 0), out, np.nan)


def colour_covariance(band_err: np.ndarray, colours: Sequence[str] = MODEL_COLOURS) -> np.ndarray:
    """Covariance of adjacent-band colours from independent per-band H errors.

    Parameters
    ----------
    band_err : `numpy.ndarray`, shape (N, n_bands)
        Errors of H in `BANDS` order (NaN where absent).
    colours : sequence of `str`
        Colours ``"a-b"``.

    Returns
    -------
    cov : `numpy.ndarray`, shape (N, n_colours, n_colours)
        ``D diag(err^2) D^T``; entries of missing bands are NaN.
    """
    d = np.zeros((len(colours), len(BANDS)))
    for k, name in enumerate(colours):
        a, b = name.split("-")
        d[k, BANDS.index(a)] = 1.0
        d[k, BANDS.index(b)] = -1.0
    var = np.asarray(band_err, dtype=np.float64) ** 2
    used = np.abs(d).sum(axis=0) > 0
    var = np.where(used[None, :], var, 0.0)  # bands no colour uses do not poison the result
    return np.einsum("kb,nb,lb->nkl", d, var, d)


@dataclasses.dataclass
class ObjectColours:
    """Per-object results of `build_colours` (one row per distinct object id)."""

    ids: np.ndarray
    h: np.ndarray  # (N, 6) median reduced magnitude per band
    h_err: np.ndarray  # (N, 6)
    n_obs: np.ndarray  # (N, 6) usable detections per band
    colours: np.ndarray  # (N, 5) u-g, g-r, r-i, i-z, z-y
    colour_errs: np.ndarray  # (N, 5)
    flags: np.ndarray  # (N,) int64 AsteroidFlag bits

    def model_inputs(self, names: Sequence[str] = MODEL_COLOURS) -> tuple[np.ndarray, np.ndarray]:
        """Colours and their covariance for the mixture (NaN where missing).

        Parameters
        ----------
        names : sequence of `str`
            Colours ``"a-b"`` to return, each one of `COLOURS` (default
            `MODEL_COLOURS`).

        Returns
        -------
        x : `numpy.ndarray`, shape (N, n_names)
            The named colours, in the order of ``names``.
        cov : `numpy.ndarray`, shape (N, n_names, n_names)
            Their covariance from the per-band H errors
            (`colour_covariance`).
        """
        names_all = ["-".join(c) for c in COLOURS]
        idx = [names_all.index(n) for n in names]
        return self.colours[:, idx], colour_covariance(self.h_err, names)


def _column(table: Any, name: str) -> np.ndarray:
    col = table[name]
    if hasattr(col, "filled"):
        try:
            col = col.filled(np.nan)
        except (TypeError, ValueError):
            col = col.filled("")
    return np.asarray(col)


def build_colours(
    table: Any,
    columns: AsteroidColumns | None = None,
    *,
    g12: float | dict[str, float] = 0.5,
) -> ObjectColours:
    """Reduced magnitudes per band and colours per object.

    Parameters
    ----------
    table : table-like
        Source rows (astropy `~astropy.table.Table`, pandas, or a mapping of
        columns) with the columns of ``columns``.
    columns : `AsteroidColumns`, optional
        Column names (default Rubin's).
    g12 : `float` or `dict` [`str`, `float`]
        G12 of the H-G12 phase function, one for all bands or per band.

    Returns
    -------
    colours : `ObjectColours`
        One row per distinct object id, in order of first appearance.

    Raises
    ------
    AsteroidInputError
        If a needed column is absent.
    """
    columns = columns or AsteroidColumns()
    names = list(table.colnames) if hasattr(table, "colnames") else list(table.keys())
    missing = [c for c in columns.columns() if c not in names]
    if missing:
        raise AsteroidInputError(
            f"The Solar System source table lacks the columns {missing} (it has {names[:30]}); pass the "
            "right names (AsteroidColumns, or --id-column/--flux-column/... on the command line)."
        )
    n_rows = len(table[columns.id_column])
    ids_raw = _column(table, columns.id_column)
    if n_rows == 0:
        empty = np.zeros((0, len(BANDS)))
        return ObjectColours(
            ids_raw[:0],
            empty,
            empty.copy(),
            np.zeros((0, len(BANDS)), np.int64),
            np.zeros((0, len(COLOURS))),
            np.zeros((0, len(COLOURS))),
            np.zeros(0, np.int64),
        )
    uniq, first, inverse = np.unique(ids_raw, return_index=True, return_inverse=True)
    order = np.argsort(first)  # output in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    obj = rank[inverse.reshape(-1)]
    ids = uniq[order]
    n_obj = len(ids)

    band = np.char.strip(np.asarray(_column(table, columns.band)).astype(str))
    flux = _column(table, columns.flux).astype(np.float64)
    flux_err = _column(table, columns.flux_err).astype(np.float64)
    alpha = _column(table, columns.phase_angle).astype(np.float64)
    r = _column(table, columns.helio_dist).astype(np.float64)
    delta = _column(table, columns.topo_dist).astype(np.float64)

    good_flux = np.isfinite(flux) & np.isfinite(flux_err) & (flux > 0) & (flux_err > 0)
    good_geom = (
        np.isfinite(alpha)
        & (alpha >= 0)
        & (alpha <= 150)
        & np.isfinite(r)
        & np.isfinite(delta)
        & (r > MIN_DISTANCE_AU)
        & (delta > MIN_DISTANCE_AU)
    )
    flags = np.zeros(n_obj, np.int64)
    np.bitwise_or.at(flags, obj[~good_flux], int(AsteroidFlag.NONFINITE_FLUX))
    np.bitwise_or.at(flags, obj[~good_geom], int(AsteroidFlag.MISSING_GEOMETRY))

    with np.errstate(divide="ignore", invalid="ignore"):
        mag = -2.5 * np.log10(flux) + AB_ZEROPOINT_NJY
        mag_err = 2.5 / np.log(10.0) * flux_err / flux
        g12_row = np.full(n_rows, float(g12) if not isinstance(g12, dict) else 0.5)
        if isinstance(g12, dict):
            for b, value in g12.items():
                g12_row[band == b] = value
        phase_corr = np.full(n_rows, np.nan)
        for value in np.unique(g12_row):
            sel = g12_row == value
            phase_corr[sel] = 2.5 * np.log10(hg12_phase_function(alpha[sel], value))
        h_row = mag - 5.0 * np.log10(r * delta) + phase_corr
    usable = good_flux & good_geom & np.isfinite(h_row)

    h = np.full((n_obj, len(BANDS)), np.nan)
    h_err = np.full((n_obj, len(BANDS)), np.nan)
    n_obs = np.zeros((n_obj, len(BANDS)), np.int64)
    for j, b in enumerate(BANDS):
        sel = usable & (band == b)
        if not sel.any():
            continue
        o, hv, ev = obj[sel], h_row[sel], mag_err[sel]
        srt = np.lexsort((hv, o))
        o, hv, ev = o[srt], hv[srt], ev[srt]
        starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
        ends = np.r_[starts[1:], len(o)]
        for s, e in zip(starts, ends):  # loop over objects with data in this band
            values = hv[s:e]
            n = e - s
            med = float(np.median(values))
            phot = float(np.median(ev[s:e])) / np.sqrt(n)
            if n >= 2:
                mad = float(np.median(np.abs(values - med)))
                scatter = 1.2533 * 1.4826 * mad / np.sqrt(n)
                err = max(scatter, phot)
            else:
                err = float(ev[s])
            h[o[s], j], h_err[o[s], j], n_obs[o[s], j] = med, err, n

    colours = np.full((n_obj, len(COLOURS)), np.nan)
    colour_errs = np.full((n_obj, len(COLOURS)), np.nan)
    for k, (a, b) in enumerate(COLOURS):
        ia, ib = BANDS.index(a), BANDS.index(b)
        colours[:, k] = h[:, ia] - h[:, ib]
        colour_errs[:, k] = np.hypot(h_err[:, ia], h_err[:, ib])
    n_bands = (n_obs > 0).sum(axis=1)
    flags[n_bands == 1] |= int(AsteroidFlag.ONE_BAND)
    flags[n_bands == 0] |= int(AsteroidFlag.NO_VALID_DETECTION)
    model_idx = [["-".join(c) for c in COLOURS].index(n) for n in MODEL_COLOURS]
    some_missing = ~np.isfinite(colours[:, model_idx]).all(axis=1) & (n_bands >= 2)
    flags[some_missing] |= int(AsteroidFlag.MISSING_COLOUR)
    model_bands = [BANDS.index(b) for b in "grizy"]
    single = (n_obs[:, model_bands] == 1).any(axis=1)
    flags[single & (n_bands >= 2)] |= int(AsteroidFlag.FEW_DETECTIONS)
    return ObjectColours(ids, h, h_err, n_obs, colours, colour_errs, flags)


def sources_from_alerts(alerts: Any) -> Table:
    """Flatten alert rows (``diaSource`` + ``ssSource`` structs) into Solar System source rows.

    Parameters
    ----------
    alerts : `str`, path-like, `pyarrow.Table` or `pandas.DataFrame`
        Alerts as brokers write them (one row per alert, the Rubin alert
        schema's ``diaSource`` and ``ssSource`` records as struct columns).

    Returns
    -------
    sources : `astropy.table.Table`
        One row per alert with a non-null ``ssSource``: every ``diaSource``
        field, then the ``ssSource`` fields it lacks (``phaseAngle``,
        ``helioRange``, ``topoRange``...).  ``ssObjectId`` is int64.

    Raises
    ------
    AsteroidInputError
        If a table passed as ``alerts`` has no ``diaSource`` or no
        ``ssSource`` column (a file lacking them fails in `pyarrow`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(alerts, str) or hasattr(alerts, "__fspath__"):
        alerts = pq.read_table(alerts, columns=["diaSource", "ssSource"])
    if not isinstance(alerts, pa.Table):
        alerts = pa.Table.from_pandas(alerts)
    for name in ("diaSource", "ssSource"):
        if name not in alerts.column_names:
            raise AsteroidInputError(f"The alert table has no {name!r} column; it has {alerts.column_names}.")
    rows = []
    for dia, ss in zip(alerts["diaSource"].to_pylist(), alerts["ssSource"].to_pylist()):
        if not ss or not dia:
            continue
        row = dict(dia)
        for key, value in ss.items():
            row.setdefault(key, value)
        if row.get("ssObjectId") is None:
            row["ssObjectId"] = ss.get("ssObjectId")
        rows.append(row)
    if not rows:
        return Table({c: np.zeros(0) for c in AsteroidColumns().columns()})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = Table()
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(v is None or isinstance(v, float | int) and not isinstance(v, bool) for v in values):
            out[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            out[key] = (
                np.array(["" if v is None else v for v in values])
                if any(isinstance(v, str) for v in values)
                else np.array(values, dtype=object)
            )
    out["ssObjectId"] = np.asarray(out["ssObjectId"], dtype=np.float64).astype(np.int64)
    return out
