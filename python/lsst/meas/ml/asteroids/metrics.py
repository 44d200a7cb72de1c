"""Quality of the asteroid taxonomy: cross-validated accuracy, ARI, anomaly AUC, figures.

`quality_report` runs, on the noise-free classy colours (``classy_colours``):

* k-fold cross-validated accuracy at the complex level (test objects drawn
  with survey-like noise), for the semi-supervised mixture and a supervised
  baseline (multinomial logistic regression on colours and their pairwise
  products, in torch; scikit-learn is not a dependency) trained on the same
  labelled fraction (10% and 100%);
* the adjusted Rand index of an unsupervised mixture (no labels; its
  components taken as clusters) against the complexes;
* the ROC AUC of the anomaly score ranking the rare classes (A, V, D) above
  the common ones (S, C, X) when the rare classes are left out of training
  (what the score is for: objects no component describes), and with them in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ..metrics import roc_auc
from ..models.asteroids import AsteroidMixture
from .features import MODEL_COLOURS
from .train import (
    COMPLEXES,
    AsteroidsTrainingConfig,
    TrainingColours,
    calibrate_anomaly,
    fit_mixture,
    fit_split,
    noisy_realisations,
)

__all__ = [
    "QualityConfig",
    "adjusted_rand_index",
    "benchmark",
    "logistic_baseline",
    "plot_colour_diagram",
    "quality_report",
    "simulated_population_accuracy",
]

RARE = ("A", "V", "D")
COMMON = ("S", "C", "X")


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Compute the adjusted Rand index of two labellings (Hubert & Arabie 1985).

    Parameters
    ----------
    a : `numpy.ndarray`, (N,)
        First labelling (any hashable, sortable labels).
    b : `numpy.ndarray`, (N,)
        Second labelling of the same N items.

    Returns
    -------
    ari : `float`
        1 for identical partitions, about 0 for independent ones; 1 when
        the index is undefined (both maximum and expected index equal).
    """
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    comb = lambda n: n * (n - 1) / 2.0  # noqa: E731
    index = comb(table).sum()
    ra, rb, total = comb(table.sum(1)).sum(), comb(table.sum(0)).sum(), comb(len(a))
    expected = ra * rb / total
    maximum = 0.5 * (ra + rb)
    return float((index - expected) / (maximum - expected)) if maximum != expected else 1.0


def _quadratic(x: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(x.shape[1])
    return np.concatenate([x, (x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]]], axis=1)


def logistic_baseline(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = 1e-3, n_steps: int = 300
) -> Any:
    """Supervised baseline: multinomial logistic regression on colours and their products.

    Parameters
    ----------
    x : `numpy.ndarray`, (N, D)
        Training colours (standardised, with their pairwise products,
        internally).
    y : `numpy.ndarray`, (N,)
        Class index of each row.
    n_classes : `int`
        Number of classes.
    l2 : `float`
        L2 penalty on the weights.
    n_steps : `int`
        Maximum iterations of the L-BFGS optimiser.

    Returns
    -------
    predict : callable
        ``predict(x) -> class index``.
    """
    f = _quadratic(x)
    mu, sd = f.mean(0), f.std(0) + 1e-9
    X = torch.as_tensor((f - mu) / sd, dtype=torch.float64)
    Y = torch.as_tensor(y)
    W = torch.zeros(X.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=n_steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ W + b, Y) + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(xn: np.ndarray) -> np.ndarray:
        Z = torch.as_tensor((_quadratic(xn) - mu) / sd, dtype=torch.float64)
        return (Z @ W + b).argmax(1).detach().numpy()

    return predict


def _predict(model: AsteroidMixture, x: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logp, score = model(torch.as_tensor(x), torch.as_tensor(cov), torch.ones(x.shape, dtype=torch.bool))
    return logp.argmax(1).numpy(), score.numpy()


@dataclasses.dataclass
class QualityConfig:
    """Settings of `quality_report`."""

    n_folds: int = 5
    label_fractions: tuple[float, ...] = (0.1, 1.0)
    n_realisations: int = 5
    n_iter: int = 60
    seed: int = 0


def quality_report(tc: TrainingColours, config: QualityConfig | None = None) -> dict[str, Any]:
    """Cross-validated accuracy, ARI and anomaly AUC (see module documentation).

    Parameters
    ----------
    tc : `~lsst.meas.ml.asteroids.train.TrainingColours`
        Noise-free colours and complexes (rows with a missing colour are dropped).
    config : `QualityConfig`, optional
        Settings.

    Returns
    -------
    report : `dict`
        ``accuracy[method][fraction]`` (mean over folds), ``ari_unsupervised``,
        ``anomaly_auc_rare_held_out``, ``anomaly_auc_rare_in_training``, sizes.
    """
    config = config or QualityConfig()
    keep = np.isfinite(tc.colours).all(axis=1)
    colours = tc.colours[keep]
    y = np.array([COMPLEXES.index(c) for c in tc.labels[keep]])
    rng = np.random.default_rng(config.seed)
    folds = np.array_split(rng.permutation(len(colours)), config.n_folds)
    acc: dict[str, dict[str, list[float]]] = {"semi_supervised_gmm": {}, "logistic_baseline": {}}
    auc_in = []
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(colours)), test)
        x_te, c_te, i_te = noisy_realisations(colours[test], config.n_realisations, rng)
        for frac in config.label_fractions:
            tcfg = AsteroidsTrainingConfig(
                label_fraction=frac,
                n_realisations=config.n_realisations,
                n_iter=config.n_iter,
                seed=config.seed + k,
            )
            frng = np.random.default_rng(config.seed + 100 * k + int(frac * 1000))
            model, _ = fit_split(colours[train], y[train], tcfg, frng)
            pred, _ = _predict(model, x_te, c_te)
            acc["semi_supervised_gmm"].setdefault(str(frac), []).append(float((pred == y[test][i_te]).mean()))
            known = train[np.random.default_rng(config.seed + k).random(len(train)) < frac]
            x_tr, _, i_tr = noisy_realisations(colours[known], config.n_realisations, frng)
            base = logistic_baseline(x_tr, y[known][i_tr], len(COMPLEXES))
            acc["logistic_baseline"].setdefault(str(frac), []).append(
                float((base(x_te) == y[test][i_te]).mean())
            )
            if frac == 1.0:
                x_c, c_c, _ = noisy_realisations(colours[train], config.n_realisations, frng)
                calibrate_anomaly(model, x_c, c_c)
                _, score = _predict(model, x_te, c_te)
                lab = np.array(COMPLEXES)[y[test][i_te]]
                sel = np.isin(lab, RARE + COMMON)
                auc_in.append(roc_auc(score[sel], np.isin(lab[sel], RARE)))
    # anomaly AUC with the rare classes held out of training entirely
    rare_mask = np.isin(np.array(COMPLEXES)[y], RARE)
    auc_out = []
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(colours)), test)
        train = train[~rare_mask[train]]
        frng = np.random.default_rng(config.seed + 7 + k)
        tcfg = AsteroidsTrainingConfig(n_realisations=config.n_realisations, n_iter=config.n_iter)
        model, _ = fit_split(colours[train], y[train], tcfg, frng)
        x_c, c_c, _ = noisy_realisations(colours[train], config.n_realisations, frng)
        calibrate_anomaly(model, x_c, c_c)
        x_te, c_te, i_te = noisy_realisations(colours[test], config.n_realisations, frng)
        _, score = _predict(model, x_te, c_te)
        lab = np.array(COMPLEXES)[y[test][i_te]]
        sel = np.isin(lab, RARE + COMMON)
        auc_out.append(roc_auc(score[sel], np.isin(lab[sel], RARE)))
    # unsupervised clustering: deconvolved GMM with as many components as complexes present
    x_all, c_all, i_all = noisy_realisations(colours, config.n_realisations, rng)
    n_clusters = len(np.unique(y))
    unsup = fit_mixture(
        x_all,
        c_all,
        -np.ones(len(x_all), np.int64),
        len(COMPLEXES),
        n_unsupervised=n_clusters,
        n_iter=config.n_iter,
        seed=config.seed,
    )
    with torch.no_grad():
        joint = unsup.joint_log_likelihood(
            torch.as_tensor(x_all), torch.as_tensor(c_all), torch.ones(x_all.shape, dtype=torch.bool)
        )
    clusters = joint.argmax(1).numpy()
    return {
        "n_objects": int(len(colours)),
        "n_folds": config.n_folds,
        "colours": list(MODEL_COLOURS),
        "accuracy": {m: {f: float(np.mean(v)) for f, v in d.items()} for m, d in acc.items()},
        "accuracy_std": {m: {f: float(np.std(v)) for f, v in d.items()} for m, d in acc.items()},
        "majority_class_accuracy": float(np.bincount(y).max() / len(y)),
        "ari_unsupervised": adjusted_rand_index(clusters, y[i_all]),
        "anomaly_auc_rare_held_out": float(np.mean(auc_out)),
        "anomaly_auc_rare_in_training": float(np.mean(auc_in)) if auc_in else float("nan"),
    }


def plot_colour_diagram(model: AsteroidMixture, tc: TrainingColours, path: str) -> str:
    """PNG of g-i vs i-z (training colours by complex) with the mixture's 1-sigma ellipses.

    Parameters
    ----------
    model : `~lsst.meas.ml.models.asteroids.AsteroidMixture`
        The mixture whose components are drawn.
    tc : `~lsst.meas.ml.asteroids.train.TrainingColours`
        Colours and complexes plotted (rows with a missing colour are
        dropped).
    path : `str`
        Output PNG, written atomically.

    Returns
    -------
    path : `str`
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_output

    keep = np.isfinite(tc.colours).all(axis=1)
    x = tc.colours[keep]
    lab = tc.labels[keep]
    proj = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # (g-r)+(r-i) = g-i ; i-z
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(COMPLEXES):
        sel = lab == name
        if sel.any():
            p = x[sel] @ proj.T
            ax.scatter(p[:, 0], p[:, 1], s=6, color=cmap(c), label=f"{name} ({sel.sum()})", alpha=0.6)
    means = model.means.double().numpy() @ proj.T
    covs = proj @ model.covariances.double().numpy() @ proj.T
    t = np.linspace(0, 2 * np.pi, 100)
    for k in range(model.n_components):
        vals, vecs = np.linalg.eigh(covs[k])
        circle = np.stack([np.cos(t), np.sin(t)])
        ell = means[k][:, None] + vecs @ (np.sqrt(np.clip(vals, 0, None))[:, None] * circle)
        ax.plot(ell[0], ell[1], color=cmap(int(model.component_class[k])), lw=1.5)
    ax.set_xlabel("g - i (mag)")
    ax.set_ylabel("i - z (mag)")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title("classy spectra x LSST throughputs, mixture components (1 sigma)")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _bare_log_likelihood(
    x: torch.Tensor, cov_err: torch.Tensor, means: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """``log N(x | mu_k, Sigma_k + C_n)`` with every colour observed: no masking, (N, K)."""
    chol = torch.linalg.cholesky(cov[None] + cov_err[:, None])
    resid = (x[:, None] - means[None]).unsqueeze(-1)
    sol = torch.linalg.solve_triangular(chol, resid, upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((sol**2).sum(-1) + logdet + x.shape[1] * np.log(2.0 * np.pi))


def _bare_em(
    x: torch.Tensor,
    cov_err: torch.Tensor,
    means: torch.Tensor,
    cov: torch.Tensor,
    log_w: torch.Tensor,
    n_iter: int,
) -> torch.Tensor:
    """Plain extreme-deconvolution EM: no labels, no missing colours, no regularisation."""
    for _ in range(n_iter):
        q = torch.softmax(log_w[None] + _bare_log_likelihood(x, cov_err, means, cov), dim=1)
        t = cov[None] + cov_err[:, None]
        b = means[None] + (
            cov[None] @ torch.linalg.solve(t, (x[:, None] - means[None]).unsqueeze(-1))
        ).squeeze(-1)
        bb = cov[None] - cov[None] @ torch.linalg.solve(t, cov[None].expand_as(t))
        qk = q.sum(0)
        means = (q[:, :, None] * b).sum(0) / qk[:, None]
        diff = b - means[None]
        outer = diff[..., :, None] * diff[..., None, :] + bb
        cov = (q[:, :, None, None] * outer).sum(0) / qk[:, None, None]
        log_w = torch.log(qk / qk.sum())
    return means


def benchmark(
    n_score: int = 1_000_000, n_fit: int = 20_000, *, n_iter: int = 20, device: str = "cpu", seed: int = 0
) -> dict[str, Any]:
    """Objects per second for fitting the mixture and for scoring, with in-process baselines.

    Baselines, measured in the same process on the same data and device:
    for scoring, the bare posterior of the same mixture in torch (Cholesky
    of ``Sigma_k + C_n``, Mahalanobis distances, ``logsumexp``: no
    missing-colour masking, no per-class sums, no anomaly score); for the
    fit, a plain extreme-deconvolution EM loop in torch with the same
    components and iterations (no labels, no missing colours, no
    regularisation).  ``*_ratio`` is the product's time over the baseline's.

    Parameters
    ----------
    n_score : `int`
        Objects scored (class probabilities and anomaly score, with their
        own covariances).
    n_fit : `int`
        Objects in the semi-supervised EM fit (10% labelled, 10 classes x 1
        component + 3 for the populous ones).
    n_iter : `int`
        EM iterations of the fit.
    device : `str`
        Torch device.
    seed : `int`
        Random seed.

    Returns
    -------
    figures : `dict`
        ``fit_objects_per_s`` (objects per second for the whole fit),
        ``score_objects_per_s``, the baselines' ``fit_baseline_objects_per_s``
        and ``score_baseline_objects_per_s``, ``fit_ratio`` and
        ``score_ratio`` (time over baseline time), and the sizes.
    """
    import time

    from .predict import DEFAULT_CHUNK_SIZE

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rng = np.random.default_rng(seed)
    centres = rng.normal([0.55, 0.17, -0.02, 0.02], 0.1, size=(len(COMPLEXES), 4))
    y = rng.integers(0, len(COMPLEXES), n_fit)
    clean = centres[y] + 0.03 * rng.standard_normal((n_fit, 4))
    x, cov, _ = noisy_realisations(clean, 1, rng)
    labels = np.where(rng.random(n_fit) < 0.1, y, -1)
    per = {c: (3 if c < 3 else 1) for c in range(len(COMPLEXES))}
    sync()
    t0 = time.perf_counter()
    model = fit_mixture(
        x, cov, labels, len(COMPLEXES), components_per_class=per, n_iter=n_iter, device=device
    )
    sync()
    fit_s = time.perf_counter() - t0
    model = model.to(device)
    dt = torch.float64
    xt, ct = torch.as_tensor(x, dtype=dt, device=device), torch.as_tensor(cov, dtype=dt, device=device)
    m0 = model.means.to(dt)
    v0 = model.covariances.to(dt)
    w0 = model.log_weights.to(dt)
    sync()
    t0 = time.perf_counter()
    _bare_em(xt, ct, m0, v0, w0, n_iter)
    sync()
    fit_base_s = time.perf_counter() - t0

    ys = rng.integers(0, len(COMPLEXES), n_score)
    xs, covs, _ = noisy_realisations(centres[ys], 1, rng)
    obs = np.isfinite(xs)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, n_score, DEFAULT_CHUNK_SIZE):
            e = min(n_score, s + DEFAULT_CHUNK_SIZE)
            logp, score = model(
                torch.as_tensor(xs[s:e], device=device),
                torch.as_tensor(covs[s:e], device=device),
                torch.as_tensor(obs[s:e], device=device),
            )
            logp.cpu(), score.cpu()
    sync()
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, n_score, DEFAULT_CHUNK_SIZE):
            e = min(n_score, s + DEFAULT_CHUNK_SIZE)
            joint = w0[None] + _bare_log_likelihood(
                torch.as_tensor(xs[s:e], device=device), torch.as_tensor(covs[s:e], device=device), m0, v0
            )
            (joint - torch.logsumexp(joint, dim=1, keepdim=True)).cpu()
    sync()
    score_base_s = time.perf_counter() - t0
    return {
        "device": device,
        "n_fit": n_fit,
        "n_iter": n_iter,
        "n_components": model.n_components,
        "fit_seconds": fit_s,
        "fit_objects_per_s": n_fit / fit_s,
        "fit_baseline": "plain extreme-deconvolution EM in torch, same components and iterations",
        "fit_baseline_seconds": fit_base_s,
        "fit_baseline_objects_per_s": n_fit / fit_base_s,
        "fit_ratio": fit_s / fit_base_s,
        "n_score": n_score,
        "score_seconds": score_s,
        "score_objects_per_s": n_score / score_s,
        "score_baseline": "bare mixture posterior in torch (Cholesky + logsumexp, no masking)",
        "score_baseline_seconds": score_base_s,
        "score_baseline_objects_per_s": n_score / score_base_s,
        "score_ratio": score_s / score_base_s,
        "threads": torch.get_num_threads(),
    }


def simulated_population_accuracy(
    package: Any, n_objects: int = 5000, *, mag_err: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """Complex accuracy of a package on objects drawn as the simulated survey draws them.

    Complexes with the fractions of
    `~lsst.meas.ml.simulate.sed.ASTEROID_CLASSES`, intrinsic colours from
    `~lsst.meas.ml.simulate.populations.draw_asteroid_colours`, per-band H
    errors ``mag_err`` (correlated colour noise); scored once with the four
    model colours and once with ``g-r, r-i`` only (``i-z, z-y`` missing, as
    in the default simulated survey, whose visits are in g, r and i).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        An ``asteroids`` package.
    n_objects : `int`
        Objects drawn.
    mag_err : `float`
        Per-band H error (mag).
    seed : `int`
        Random seed.

    Returns
    -------
    figures : `dict`
        ``accuracy_four_colours``, ``accuracy_g_r_r_i``, ``majority_class``,
        ``majority_accuracy`` and the settings.
    """
    from ..simulate.populations import draw_asteroid_colours
    from ..simulate.sed import ASTEROID_CLASSES
    from .predict import score_colours

    rng = np.random.default_rng(seed)
    classes = list(ASTEROID_CLASSES)
    p = np.array([ASTEROID_CLASSES[c][0] for c in classes])
    truth = rng.choice(classes, n_objects, p=p / p.sum())
    off = draw_asteroid_colours(truth, rng)
    clean = np.stack([off[:, 1], -off[:, 3], off[:, 3] - off[:, 4], off[:, 4] - off[:, 5]], axis=1)
    x, cov, _ = noisy_realisations(clean, 1, rng, min_mag_err=mag_err, max_mag_err=mag_err)
    names = np.array(package.outputs["class_names"])
    out: dict[str, Any] = {"n_objects": n_objects, "mag_err": mag_err}
    for key, cols in (("accuracy_four_colours", 4), ("accuracy_g_r_r_i", 2)):
        xi = x.copy()
        xi[:, cols:] = np.nan
        prob, _ = score_colours(package, xi, cov)
        out[key] = float((names[prob.argmax(axis=1)] == truth).mean())
    values, counts = np.unique(truth, return_counts=True)
    out["majority_class"] = str(values[np.argmax(counts)])
    out["majority_accuracy"] = float(counts.max() / n_objects)
    return out
