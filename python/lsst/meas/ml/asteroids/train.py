"""Training data and trainer of the asteroid-taxonomy mixture.

Notes
-----
**Training colours.**  The classy reflectance spectra (Mahlke et al. 2022; ``classy_data.csv``:
natural-log reflectance on 0.45-2.45 micron, NaN where not observed) are
integrated over the LSST ``lsst2023`` throughputs shipped by ``speclite``
(needed at training time only) with a 5778 K black body as the in-band
solar weighting, and offset by the Sun's LSST AB colours (`SUN_AB`: the
CALSPEC solar reference spectrum ``sun_reference_stis_001`` through the same
``lsst2023`` throughputs: u 6.236, g 5.078, r 4.640, i 4.531, z 4.513,
y 4.512; Willmer 2018's rounded values differ by at most 0.017 mag in the
colours, and the black-body in-band weighting from the real spectrum's by
at most 0.002 mag).  The classy values are natural-log reflectances, each
spectrum shifted to a mean near 0 (checked: an S type's reflectance rises by
e^0.33 = 1.39 from 0.45 to 0.75 micron, as S types do; log10 would give 2.1).
Outside its observed range
a spectrum's log reflectance is extrapolated linearly with the slope of its
outermost 0.1 micron; a band is computed only when at least
``min_coverage`` (default 0.6) of its photon-weighted response lies inside
the observed range.  So **u is always missing** (the spectra start at
0.45 micron; ``u-g`` is reported for survey data but not used by the model),
**g is computed from spectra starting at 0.45-0.47 micron with the blue part
(0.40-0.45) extrapolated**, and objects whose spectra miss a band have that
colour missing.  The mixture uses ``g-r, r-i, i-z, z-y``; training objects
lacking any of them are not used.

Classes (complexes) from Mahlke's ``class_``: S (S, Q, R), C (C, Ch),
X (X, M, P, E and their k/e variants), D (D, Z), K, L, V, B, A, other (O).

Survey-like noise: each training object is drawn ``n_realisations`` times
with per-band H errors log-uniform in [``min_mag_err``, ``max_mag_err``]
(photometric error plus rotational variability after averaging a few
epochs), and the colours get the correlated noise of those errors.

**Method.**  A semi-supervised Gaussian mixture fitted by extreme-deconvolution EM in
torch (Bovy et al. 2011): each complex gets one or more components
(``components_per_class``, by label count); labelled objects' responsibilities
are restricted to their complex's components (they anchor them), unlabelled
objects' are free (they refine means, covariances and weights).  Without
labels (``label_fraction=0``) it is a plain deconvolved GMM.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import MeasMlUserError
from ..models.asteroids import AsteroidMixture, component_log_likelihood
from ..packages import ModelPackage
from ..training import TrainingResult
from .features import BANDS, MODEL_COLOURS, colour_covariance

__all__ = [
    "COMPLEXES",
    "MISSING_VARIANCE",
    "AsteroidsTrainingConfig",
    "AsteroidsTrainingError",
    "TrainingColours",
    "classy_colours",
    "complex_of",
    "fit_mixture",
    "fit_split",
    "noisy_realisations",
    "train_asteroids",
]

#: Output classes, in column order.
COMPLEXES: tuple[str, ...] = ("S", "C", "X", "D", "K", "L", "V", "B", "A", "other")

_COMPLEX_OF = {
    "S": "S",
    "Q": "S",
    "R": "S",
    "C": "C",
    "Ch": "C",
    "D": "D",
    "Z": "D",
    "K": "K",
    "L": "L",
    "V": "V",
    "B": "B",
    "A": "A",
}
_X_LIKE = ("X", "M", "P", "E")

#: Variance (mag^2) given to a missing colour in the M step of `fit_mixture`.
MISSING_VARIANCE = 1e6

#: Sun's absolute AB magnitudes in the LSST bands: the CALSPEC solar reference spectrum
#: (sun_reference_stis_001, 1 au scaled to 10 pc) through speclite's lsst2023 throughputs.
SUN_AB = {"u": 6.236, "g": 5.078, "r": 4.640, "i": 4.531, "z": 4.513, "y": 4.512}


class AsteroidsTrainingError(MeasMlUserError, ValueError):
    """Training data that cannot be used."""


def complex_of(cls: str) -> str:
    """Complex of a Mahlke et al. (2022) class (see module documentation).

    Parameters
    ----------
    cls : `str`
        A classy ``class_`` value (converted with `str` and stripped).

    Returns
    -------
    complex : `str`
        One of `COMPLEXES`: ``"X"`` for any class starting with X, M, P or
        E, ``"other"`` for anything unknown (including the empty string).
    """
    cls = str(cls).strip()
    if cls in _COMPLEX_OF:
        return _COMPLEX_OF[cls]
    if cls and cls[0] in _X_LIKE:
        return "X"
    return "other"


@dataclasses.dataclass
class TrainingColours:
    """Noise-free synthetic colours of labelled objects."""

    colours: np.ndarray  # (N, 4) MODEL_COLOURS, NaN where not computed
    labels: np.ndarray  # (N,) complex names
    names: np.ndarray  # (N,) object names/numbers


def classy_colours(path_or_frame: Any, *, min_coverage: float = 0.6) -> TrainingColours:
    """Synthetic LSST colours of the classy spectra (see module documentation).

    Parameters
    ----------
    path_or_frame : `str` or `pandas.DataFrame`
        ``classy_data.csv`` or its frame.
    min_coverage : `float`
        Fraction of a band's response that must lie in the observed range.

    Returns
    -------
    colours : `TrainingColours`
        Every row of the file (colours NaN where a band is not covered).

    Raises
    ------
    AsteroidsTrainingError
        If ``speclite`` is not installed, or the table has no wavelength
        columns or no ``class_`` column.
    """
    import pandas as pd

    try:
        import speclite.filters
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise AsteroidsTrainingError(
            "Training colours need speclite (pip install speclite) for the LSST throughputs."
        ) from exc
    frame = pd.read_csv(path_or_frame) if not isinstance(path_or_frame, pd.DataFrame) else path_or_frame
    wl_cols = [c for c in frame.columns if c.replace(".", "", 1).isdigit()]
    if not wl_cols or "class_" not in frame.columns:
        raise AsteroidsTrainingError("The classy table needs wavelength columns (micron) and 'class_'.")
    wl = np.array([float(c) for c in wl_cols]) * 1e4  # Angstrom
    logr = frame[wl_cols].to_numpy(np.float64)
    grid = np.arange(3200.0, 11000.0, 10.0)
    filters = speclite.filters.load_filters(*[f"lsst2023-{b}" for b in BANDS])
    resp = np.stack([f(grid) for f in filters])  # (6, G)
    sun = 1.0 / (grid**5 * (np.exp(1.438777e8 / (grid * 5778.0)) - 1.0))  # f_lambda shape
    weight = resp * sun[None] * grid[None]  # photon counting
    weight /= weight.sum(axis=1, keepdims=True)
    mags = np.full((len(frame), len(BANDS)), np.nan)
    for n in range(len(frame)):
        ok = np.isfinite(logr[n])
        if ok.sum() < 3:
            continue
        x, y = wl[ok], logr[n, ok]
        lo, hi = x[0], x[-1]
        f = np.interp(grid, x, y)
        blue = x <= lo + 1000.0
        red = x >= hi - 1000.0
        if blue.sum() >= 2:
            s = np.polyfit(x[blue], y[blue], 1)[0]
            f = np.where(grid < lo, y[0] + s * (grid - lo), f)
        if red.sum() >= 2:
            s = np.polyfit(x[red], y[red], 1)[0]
            f = np.where(grid > hi, y[-1] + s * (grid - hi), f)
        inside = (grid >= lo) & (grid <= hi)
        coverage = (weight * inside[None]).sum(axis=1)
        refl = np.exp(f)
        m = -2.5 * np.log10((weight * refl[None]).sum(axis=1))
        mags[n] = np.where(coverage >= min_coverage, m, np.nan)
    mags = mags + np.array([SUN_AB[b] for b in BANDS])[None]
    colours = np.stack(
        [
            mags[:, BANDS.index(c.split("-")[0])] - mags[:, BANDS.index(c.split("-")[1])]
            for c in MODEL_COLOURS
        ],
        axis=1,
    )
    labels = np.array([complex_of(c) for c in frame["class_"].fillna("")])
    names = np.asarray(frame["name"] if "name" in frame.columns else np.arange(len(frame))).astype(str)
    return TrainingColours(colours, labels, names)


def noisy_realisations(
    colours: np.ndarray,
    n_realisations: int,
    rng: np.random.Generator,
    *,
    min_mag_err: float = 0.02,
    max_mag_err: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Survey-like noisy copies of noise-free colours.

    Parameters
    ----------
    colours : `numpy.ndarray`, (N, D)
        Noise-free colours, D = len(`MODEL_COLOURS`).
    n_realisations : `int`
        Noisy copies of each row.
    rng : `numpy.random.Generator`
        Source of the errors and the noise.
    min_mag_err : `float`
        Smallest per-band H error (mag); errors are log-uniform.
    max_mag_err : `float`
        Largest per-band H error (mag).

    Returns
    -------
    x, cov, index : `numpy.ndarray`
        Noisy colours (M, D), their covariances (M, D, D), and the row of
        ``colours`` each copy came from (M,).
    """
    index = np.repeat(np.arange(len(colours)), n_realisations)
    err = np.exp(rng.uniform(np.log(min_mag_err), np.log(max_mag_err), size=(len(index), len(BANDS))))
    cov = colour_covariance(err, MODEL_COLOURS)
    draws = rng.standard_normal((len(index), len(MODEL_COLOURS)))
    noise = np.einsum("nkl,nl->nk", np.linalg.cholesky(cov), draws)
    return colours[index] + noise, cov, index


def _components_per_class(counts: dict[str, int], max_per_class: int) -> dict[str, int]:
    return {c: int(min(max_per_class, 1 + (n >= 150) + (n >= 500))) for c, n in counts.items() if n > 0}


def fit_mixture(
    x: np.ndarray,
    cov_err: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    n_classes: int,
    *,
    components_per_class: dict[int, int] | int = 1,
    n_unsupervised: int = 0,
    n_iter: int = 60,
    reg: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
) -> AsteroidMixture:
    """Semi-supervised extreme-deconvolution EM (see module documentation).

    Parameters
    ----------
    x : `numpy.ndarray`, (N, D)
        Colours, NaN where missing (each row needs one colour; rows with
        every colour initialise the components).  A missing colour is
        marginalised in the E step and replaced by its conditional
        expectation in the M step.
    cov_err : `numpy.ndarray`, (N, D, D)
        Their measurement covariances (entries of missing colours ignored).
    labels : array-like, (N,)
        Class index per row, -1 for unlabelled.
    n_classes : `int`
        Number of classes.
    components_per_class : `dict` or `int`
        Components of each labelled class.
    n_unsupervised : `int`
        Extra components with no class anchor (class of the majority of
        their responsibility is assigned at the end); with no labels at all
        this is a plain GMM.
    n_iter : `int`
        EM iterations.
    reg : `float`
        Added to covariance diagonals (mag^2).
    seed : `int`
        Initialisation seed.
    device : `str`
        Torch device.

    Returns
    -------
    model : `AsteroidMixture`
        Fitted mixture (anomaly reference not yet calibrated).

    Raises
    ------
    AsteroidsTrainingError
        If there would be no component (no labelled row with every colour
        and ``n_unsupervised`` is 0), a row has no colour, or no row has
        every colour.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    observed = np.isfinite(x)
    if not observed.any(axis=1).all():
        raise AsteroidsTrainingError("Every training row needs at least one observed colour.")
    complete = observed.all(axis=1)
    if not complete.any():
        raise AsteroidsTrainingError("At least one training row needs every colour.")
    # A missing colour: zero value, no covariance with the others and a huge variance, so that the
    # M step uses its conditional expectation; the E step marginalises it exactly (``observed``).
    pair = observed[:, :, None] & observed[:, None, :]
    cov_err = np.where(pair, np.nan_to_num(np.asarray(cov_err, dtype=np.float64)), 0.0)
    rows_m, dims_m = np.nonzero(~observed)
    cov_err[rows_m, dims_m, dims_m] = MISSING_VARIANCE
    x = np.where(observed, x, 0.0)
    d = x.shape[1]
    comp_class, init_means = [], []
    for c in range(n_classes):
        rows = np.flatnonzero((labels == c) & complete)
        if rows.size == 0:
            continue
        k = components_per_class.get(c, 1) if isinstance(components_per_class, dict) else components_per_class
        k = max(1, min(k, rows.size))
        for _ in range(k):
            comp_class.append(c)
            init_means.append(x[rng.choice(rows)] if k > 1 else x[rows].mean(axis=0))
    for _ in range(n_unsupervised):
        comp_class.append(-1)
        init_means.append(x[rng.choice(np.flatnonzero(complete))])
    if not comp_class:
        raise AsteroidsTrainingError(
            "No component: give labels (of rows with every colour) or n_unsupervised > 0."
        )
    dt = torch.float64
    X = torch.as_tensor(x, dtype=dt, device=device)
    C = torch.as_tensor(cov_err, dtype=dt, device=device)
    obs = torch.as_tensor(observed, device=device)
    K = len(comp_class)
    cc = torch.as_tensor(comp_class, device=device)
    L = torch.as_tensor(labels, device=device)
    allowed = torch.ones(len(x), K, dtype=torch.bool, device=device)
    labelled = L >= 0
    allowed[labelled] = cc[None, :] == L[labelled][:, None]
    mu = torch.as_tensor(np.array(init_means), dtype=dt, device=device)
    spread = (
        torch.cov(X[torch.as_tensor(complete, device=device)].T)
        if complete.sum() > 1
        else torch.eye(d, dtype=dt, device=device)
    )
    V = (spread / max(1, K) + reg * torch.eye(d, dtype=dt, device=device)).repeat(K, 1, 1)
    logw = torch.full((K,), -np.log(K), dtype=dt, device=device)
    eye = torch.eye(d, dtype=dt, device=device)
    for _ in range(n_iter):
        ll = logw[None] + component_log_likelihood(X, C, obs, mu, V)
        ll = ll.masked_fill(~allowed, -torch.inf)
        q = torch.softmax(ll, dim=1)  # (N, K)
        T = V[None] + C[:, None]  # (N, K, D, D)
        Tinv_r = torch.linalg.solve(T, (X[:, None] - mu[None]).unsqueeze(-1))
        b = mu[None] + (V[None] @ Tinv_r).squeeze(-1)
        B = V[None] - V[None] @ torch.linalg.solve(T, V[None].expand_as(T))
        qk = q.sum(0).clamp_min(1e-9)
        mu = (q[:, :, None] * b).sum(0) / qk[:, None]
        diff = b - mu[None]
        V = (q[:, :, None, None] * (diff[..., :, None] * diff[..., None, :] + B)).sum(0) / qk[:, None, None]
        V = 0.5 * (V + V.transpose(-1, -2)) + reg * eye
        logw = torch.log(qk / qk.sum())
    if (cc < 0).any():  # give each free component the majority class of its labelled responsibility
        for k in torch.nonzero(cc < 0).flatten().tolist():
            if labelled.any():
                votes = torch.zeros(n_classes, dtype=dt, device=device).index_add_(
                    0, L[labelled], q[labelled, k]
                )
                cc[k] = int(votes.argmax()) if votes.sum() > 0 else 0
            else:
                cc[k] = k % n_classes
    model = AsteroidMixture(n_components=K, n_features=d, n_classes=n_classes).double()
    model.set_mixture(mu.cpu(), V.cpu(), logw.exp().cpu(), cc.cpu())
    return model


def calibrate_anomaly(model: AsteroidMixture, x: np.ndarray, cov_err: np.ndarray) -> np.ndarray:
    """Set ``anomaly_reference`` to the median and 99th percentile of the raw score on ``x``.

    Parameters
    ----------
    model : `~lsst.meas.ml.models.asteroids.AsteroidMixture`
        Fitted mixture; its ``anomaly_reference`` is changed in place.
    x : `numpy.ndarray`, (N, D)
        Colours (all observed), typically noisy training copies.
    cov_err : `numpy.ndarray`, (N, D, D)
        Their measurement covariances.

    Returns
    -------
    raw : `numpy.ndarray`, (N,)
        Raw anomaly score ``-max_k (log w_k + log N_k)`` of each row.
    """
    X = torch.as_tensor(x, dtype=torch.float64)
    with torch.no_grad():
        joint = model.joint_log_likelihood(
            X, torch.as_tensor(cov_err, dtype=torch.float64), torch.ones_like(X, dtype=torch.bool)
        )
    raw = (-joint.max(dim=1).values).numpy()
    model.anomaly_reference.copy_(torch.tensor([np.median(raw), np.percentile(raw, 99)]))
    return raw


@dataclasses.dataclass
class AsteroidsTrainingConfig:
    """Configuration of `train_asteroids`."""

    label_fraction: float = 1.0
    n_realisations: int = 5
    min_mag_err: float = 0.02
    max_mag_err: float = 0.15
    max_components_per_class: int = 3
    n_iter: int = 60
    validation_fraction: float = 0.2
    min_coverage: float = 0.6
    max_objects: int | None = None
    seed: int = 0
    version: str = "0.1.0"
    device: str = "cpu"


def train_asteroids(
    data: Any,
    config: AsteroidsTrainingConfig | None = None,
    *,
    unlabelled: tuple[np.ndarray, np.ndarray] | None = None,
    training_data: str | None = None,
) -> TrainingResult:
    """Train the semi-supervised mixture on classy spectra (and unlabelled survey colours).

    Parameters
    ----------
    data : `str`, `pandas.DataFrame` or `TrainingColours`
        ``classy_data.csv``, its frame, or precomputed colours.
    config : `AsteroidsTrainingConfig`, optional
        Settings.
    unlabelled : `tuple` [`numpy.ndarray`, `numpy.ndarray`], optional
        Measured survey colours ``(x, cov)`` in `MODEL_COLOURS` order (NaN
        where missing; rows without any colour are dropped) with their
        covariances, added once each, without label, to the fit (they
        refine the components; see `fit_mixture`).  Not used for the
        validation figures or the anomaly calibration.
    training_data : `str`, optional
        Description recorded in the provenance (default: the classy
        spectra through the speclite throughputs).

    Returns
    -------
    result : `~lsst.meas.ml.training.TrainingResult`
        Package of family ``asteroids`` (architecture ``asteroid_gmm``) and
        validation accuracy at the complex level.

    Raises
    ------
    AsteroidsTrainingError
        If fewer than 20 objects (after ``max_objects``) have every model
        colour, or the classy table cannot be used (`classy_colours`).
    """
    config = config or AsteroidsTrainingConfig()
    tc = data if isinstance(data, TrainingColours) else classy_colours(data, min_coverage=config.min_coverage)
    keep = np.isfinite(tc.colours).all(axis=1)
    colours, labels = tc.colours[keep], tc.labels[keep]
    rng = np.random.default_rng(config.seed)
    if config.max_objects is not None and len(colours) > config.max_objects:
        sel = rng.choice(len(colours), config.max_objects, replace=False)
        colours, labels = colours[sel], labels[sel]
    if len(colours) < 20:
        raise AsteroidsTrainingError(f"Only {len(colours)} objects have all of {MODEL_COLOURS}; need >= 20.")
    y = np.array([COMPLEXES.index(c) for c in labels])
    perm = rng.permutation(len(colours))
    n_val = int(round(config.validation_fraction * len(colours)))
    val, tr = perm[:n_val], perm[n_val:]
    start = time.perf_counter()
    n_unlabelled = 0
    if unlabelled is not None:
        x_u, c_u = (np.asarray(a, dtype=np.float64) for a in unlabelled)
        keep_u = np.isfinite(x_u).any(axis=1)
        unlabelled, n_unlabelled = (x_u[keep_u], c_u[keep_u]), int(keep_u.sum())
    model, counts = fit_split(colours[tr], y[tr], config, rng, unlabelled=unlabelled)
    x_tr, c_tr, i_tr = noisy_realisations(
        colours[tr],
        config.n_realisations,
        rng,
        min_mag_err=config.min_mag_err,
        max_mag_err=config.max_mag_err,
    )
    calibrate_anomaly(model, x_tr, c_tr)
    seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {}
    if n_val:
        x_v, c_v, i_v = noisy_realisations(
            colours[val],
            config.n_realisations,
            rng,
            min_mag_err=config.min_mag_err,
            max_mag_err=config.max_mag_err,
        )
        with torch.no_grad():
            logp, _ = model(
                torch.as_tensor(x_v), torch.as_tensor(c_v), torch.ones(x_v.shape, dtype=torch.bool)
            )
        pred = logp.argmax(1).numpy()
        metrics["validation_accuracy"] = float((pred == y[val][i_v]).mean())
    metrics["n_components"] = int(model.n_components)
    metrics["n_unlabelled"] = n_unlabelled
    package = ModelPackage.from_model(
        model.float(),
        family="asteroids",
        architecture="asteroid_gmm",
        hyperparameters={
            "n_components": model.n_components,
            "n_features": len(MODEL_COLOURS),
            "n_classes": len(COMPLEXES),
        },
        inputs={"colours": list(MODEL_COLOURS), "phase_function": "HG12", "g12": 0.5},
        outputs={"class_names": list(COMPLEXES)},
        version=config.version,
        provenance={
            "training_data": training_data
            or "classy (Mahlke et al. 2022) spectra x speclite lsst2023 throughputs",
            "config": dataclasses.asdict(config),
            "metrics": metrics,
            "label_counts": counts,
        },
        name="asteroids-gmm",
    )
    return TrainingResult(
        package=package,
        metrics=metrics,
        training_seconds=seconds,
        n_train=len(tr),
        n_validation=len(val),
        report={"label_counts": counts},
    )


def fit_split(
    colours: np.ndarray,
    y: np.ndarray,
    config: AsteroidsTrainingConfig,
    rng: np.random.Generator,
    *,
    unlabelled: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[AsteroidMixture, dict[str, int]]:
    """Fit on noisy copies of ``colours``; only ``label_fraction`` of the objects keep their label.

    Parameters
    ----------
    colours : `numpy.ndarray`, (N, D)
        Noise-free training colours.
    y : `numpy.ndarray`, (N,)
        Complex index of each object.
    config : `AsteroidsTrainingConfig`
        Realisations, noise range, label fraction and components per class.
    rng : `numpy.random.Generator`
        Random numbers for the noise and the label selection.
    unlabelled : `tuple` [`numpy.ndarray`, `numpy.ndarray`], optional
        Extra unlabelled measured colours and covariances (NaN where
        missing), added once each.

    Returns
    -------
    model : `~lsst.meas.ml.models.asteroids.AsteroidMixture`
        The fitted mixture.
    counts : `dict` [`str`, `int`]
        Labelled objects per complex.
    """
    x, cov, idx = noisy_realisations(
        colours, config.n_realisations, rng, min_mag_err=config.min_mag_err, max_mag_err=config.max_mag_err
    )
    known = rng.random(len(colours)) < config.label_fraction
    if config.label_fraction > 0 and not known.any():
        known[rng.integers(len(colours))] = True
    lab = np.where(known[idx], y[idx], -1)
    counts = {COMPLEXES[c]: int((y[known] == c).sum()) for c in range(len(COMPLEXES))}
    per = _components_per_class(counts, config.max_components_per_class)
    if unlabelled is not None and len(unlabelled[0]):
        x = np.concatenate([x, unlabelled[0]])
        cov = np.concatenate([cov, unlabelled[1]])
        lab = np.concatenate([lab, np.full(len(unlabelled[0]), -1)])
    model = fit_mixture(
        x,
        cov,
        lab,
        len(COMPLEXES),
        components_per_class={COMPLEXES.index(c): k for c, k in per.items()},
        n_iter=config.n_iter,
        seed=config.seed,
        device=config.device,
    )
    return model, counts
