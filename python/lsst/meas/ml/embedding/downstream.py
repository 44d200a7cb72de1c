"""Downstream value of the representations: few labels, frozen embeddings vs supervised CNNs.

The experiment of Hayat, Stein et al. (2021), on the simulated survey
(``meas-ml embedding-downstream``):

1. simulate a survey (`lsst.meas.ml.simulate.simulate_survey`) and cut
   6-band coadd stamps of *every* detected galaxy through the shared
   cutout code; the *labelled set* is the galaxies brighter than
   ``max_mag`` (fainter ones are blobs of a few sigma whose Hubble type no
   image shows);
2. hold out ``test_fraction`` of the labelled set; pre-train the encoder
   with MoCo v2 (`lsst.meas.ml.embedding.train.train_embedding`) on all
   the other stamps, faint ones included, *without labels* (unlabelled
   data is what self-supervision is for);
3. for each label fraction (1% and 10% of the labelled training galaxies)
   and each of ``label_draws`` random draws of the labelled galaxies:

   * self-supervised route: frozen pre-projection features of the
     pre-trained encoder (its aperture photometry and its pooled CNN
     features), standardised, each of the two parts weighted equally; a
     class-balanced multinomial logistic regression for the Hubble type
     (E, S0, Sa, Sb, Sc/Sd, Irr) and a ridge regression for the redshift;
   * untrained encoder: the same probes on the features of the same
     architecture at its random initialisation (what pre-training adds);
   * aperture photometry alone: the same probes on the aperture part of
     the representation only (what the CNN features add);
   * supervised route: the same encoder architecture trained from scratch
     with a linear head on the same labelled stamps (rotations, flips and
     jitter as augmentation, class-balanced cross-entropy or mean squared
     error, a fixed step budget and weight decay: nothing tuned on the
     held-out galaxies);
   * majority class and the median redshift of the labelled galaxies;

4. score on the held-out galaxies: accuracy and balanced accuracy (mean
   recall over the classes present), and sigma_NMAD and outlier fraction
   (``|dz|/(1+z) > 0.15``) of the redshift, averaged over the draws.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..augment import AugmentConfig, augment
from ..metrics import accuracy, balanced_accuracy
from ..models import build_model
from .features import coadd_stamps
from .train import ARCHITECTURE, EmbeddingTrainingConfig, PretrainingSet, train_embedding

__all__ = [
    "DownstreamConfig",
    "encoder_features",
    "format_table",
    "galaxy_stamps",
    "logistic_probe",
    "ridge_probe",
    "run_downstream",
    "supervised_cnn",
]

_log = logging.getLogger(__name__)

#: Hubble types of the simulation, in label order.
HUBBLE_TYPES = ("E", "S0", "Sa", "Sb", "Sc/Sd", "Irr")


@dataclasses.dataclass
class DownstreamConfig:
    """Size and settings of the downstream experiment (defaults: the reduced form).

    Attributes
    ----------
    n_galaxies : `int`
        Galaxies of the simulated tract (about 80% are detected).
    seed : `int`
        Survey and split seed.
    stamp_size, margin : `int`
        Model input side and jitter margin.
    widths : `tuple` [`int`, ...]
        Encoder stage widths (pre-trained, untrained and supervised alike).
    pool : `str`
        Pooling of the encoder's last feature map (``"centre"``: weighted
        towards the object, see `lsst.meas.ml.models.embedding`).
    colour_input : `bool`
        Feed the encoders the band differences too.
    aperture : `float`
        Sigma (pixels) of the Gaussian aperture whose photometry starts the
        representation of every encoder (0: none).
    pretrain_epochs : `int`
        MoCo v2 epochs.
    pretrain_batch_size : `int`
        MoCo v2 batch size.
    pretrain_faint : `bool`
        Pre-train on every detected galaxy outside the held-out set (True)
        or only on the labelled (bright) training galaxies.
    supervised_steps : `int`
        Optimisation steps of each supervised CNN.
    label_fractions : `tuple` [`float`, ...]
        Fractions of the labelled training galaxies whose labels are used.
    label_draws : `int`
        Random draws of the labelled galaxies per fraction (scores are
        averaged: a few labels make any single draw noisy).
    test_fraction : `float`
        Fraction of the labelled set held out for scoring.
    max_mag : `float` or `None`
        Labelled set: galaxies brighter than this i-band magnitude.
    fine_tune : `bool`
        Also fine-tune the pre-trained encoder on the labels (every weight
        trains, as the supervised CNN does from scratch): a route beside
        the frozen-embedding probes, for comparison.
    """

    n_galaxies: int = 4000
    seed: int = 3
    stamp_size: int = 16
    margin: int = 4
    widths: tuple[int, ...] = (16, 32, 64)
    pool: str = "centre"
    colour_input: bool = True
    aperture: float = 2.0
    pretrain_epochs: int = 60
    pretrain_batch_size: int = 64
    pretrain_faint: bool = True
    supervised_steps: int = 300
    label_fractions: tuple[float, ...] = (0.01, 0.1)
    label_draws: int = 3
    test_fraction: float = 0.3
    max_mag: float | None = 24.0
    fine_tune: bool = True

    @classmethod
    def full(cls) -> DownstreamConfig:
        """Return the full-size experiment (not measured; roughly half an hour on 2 CPU cores).

        Returns
        -------
        config : `DownstreamConfig`
            16000 galaxies, 100 pre-training epochs, 600 supervised steps.
        """
        return cls(n_galaxies=16000, pretrain_epochs=100, supervised_steps=600)


def galaxy_stamps(
    survey: Any, size: int, bands: tuple[str, ...], max_mag: float | None = None
) -> dict[str, np.ndarray]:
    """Cut coadd stamps of the detected galaxies of a simulated survey.

    Parameters
    ----------
    survey : `lsst.meas.ml.simulate.survey.SimulatedSurvey`
        The survey (its coadds per patch and band, object and truth tables).
    size : `int`
        Stamp side.
    bands : `tuple` [`str`, ...]
        Bands, one channel each.
    max_mag : `float`, optional
        Keep galaxies brighter than this i-band (cModel) AB magnitude.

    Returns
    -------
    data : `dict` [`str`, `numpy.ndarray`]
        ``x`` (N, C, S, S) stamps in linear noise units, ``label`` Hubble
        type index, ``redshift``, ``objectId``, ``nan_fraction``,
        ``mag_i`` (i-band cModel AB magnitude, inf when not positive).
    """
    from astropy.table import join

    objects = survey.object["objectId", "x", "y", "patch", "detect_isPrimary", "i_cModelFlux"]
    truth = survey.truth_object["objectId", "hubble_type_class", "redshift"]
    both = join(objects, truth, keys="objectId")
    keep = (np.asarray(both["hubble_type_class"]) >= 0) & np.asarray(both["detect_isPrimary"], bool)
    flux = np.nan_to_num(np.asarray(both["i_cModelFlux"], float), nan=0.0)
    if max_mag is not None:
        keep &= flux > 10 ** (-0.4 * (max_mag - 31.4))
    both = both[keep]
    flux = flux[keep]
    mag = np.full(len(flux), np.inf)
    mag[flux > 0] = 31.4 - 2.5 * np.log10(flux[flux > 0])
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("x", "label", "redshift", "objectId", "nan_fraction", "mag_i")
    }
    patches = {p for p, _ in survey.coadds}
    for patch in sorted(set(np.asarray(both["patch"]).tolist()) & patches):
        in_patch = np.asarray(both["patch"]) == patch
        rows = both[in_patch]
        coadds = {b: survey.coadds[(patch, b)] for b in bands}
        st = coadd_stamps(coadds, np.asarray(rows["x"], float), np.asarray(rows["y"], float), size, bands)
        keep = ~st.offimage & (st.nan_fraction < 0.25)
        parts["x"].append(st.x[keep])
        parts["label"].append(np.asarray(rows["hubble_type_class"], np.int64)[keep])
        parts["redshift"].append(np.asarray(rows["redshift"], np.float64)[keep])
        parts["objectId"].append(np.asarray(rows["objectId"], np.int64)[keep])
        parts["nan_fraction"].append(st.nan_fraction[keep])
        parts["mag_i"].append(mag[in_patch][keep])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _standardise(
    train: np.ndarray, *others: np.ndarray, groups: Sequence[int] | None = None
) -> list[np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0) + 1e-6
    if groups:
        if sum(groups) != train.shape[1]:
            raise ValueError(f"feature groups {list(groups)} do not add up to {train.shape[1]} features")
        # Each group gets the total variance of the whole vector: a long group
        # does not drown a short one under the penalty.
        scale = np.concatenate([np.full(g, np.sqrt(train.shape[1] / g)) for g in groups if g > 0])
        sd = sd / scale
    return [(a - mu) / sd for a in (train, *others)]


def _class_weights(train_y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(train_y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(train_y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.from_numpy(weights.astype(np.float32))


def logistic_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    n_classes: int,
    l2: float = 1e-2,
    groups: Sequence[int] | None = None,
) -> np.ndarray:
    """Fit a class-balanced multinomial logistic regression (L-BFGS, L2 penalty) and predict.

    Features are standardised with the training rows' mean and scatter;
    each class's loss is weighted by the inverse of its frequency among
    the training rows, so that a few labels of a common class do not make
    the probe predict only that class.

    Parameters
    ----------
    train_x : `numpy.ndarray`
        Features of the labelled rows.
    train_y : `numpy.ndarray`
        Class indices of the training rows.
    test_x : `numpy.ndarray`
        Features of the rows to predict.
    n_classes : `int`
        Number of classes.
    l2 : `float`
        Penalty on the squared weights (per row mean loss).
    groups : sequence of `int`, optional
        Sizes of consecutive feature groups (e.g. the aperture photometry
        and the CNN features); after standardisation each group is scaled
        to the same total variance.

    Returns
    -------
    predicted : `numpy.ndarray`
        Class of each test row.
    """
    a, b = _standardise(train_x, test_x, groups=groups)
    xa = torch.from_numpy(a.astype(np.float32))
    ya = torch.from_numpy(train_y.astype(np.int64))
    weights = _class_weights(train_y, n_classes)
    w = torch.zeros(a.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xa @ w + bias, ya, weight=weights) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.from_numpy(b.astype(np.float32)) @ w + bias).argmax(dim=1).numpy()


def ridge_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    alpha: float = 1.0,
    groups: Sequence[int] | None = None,
) -> np.ndarray:
    """Fit a ridge regression on standardised features and predict.

    Parameters
    ----------
    train_x : `numpy.ndarray`
        Features of the labelled rows.
    train_y : `numpy.ndarray`
        Targets of the training rows.
    test_x : `numpy.ndarray`
        Features of the rows to predict.
    alpha : `float`
        Ridge penalty (relative to the number of training rows).
    groups : sequence of `int`, optional
        Sizes of consecutive feature groups, each scaled to the same total
        variance after standardisation (as in `logistic_probe`).

    Returns
    -------
    predicted : `numpy.ndarray`
        Prediction for each test row.
    """
    a, b = _standardise(train_x, test_x, groups=groups)
    mu = train_y.mean()
    gram = a.T @ a + alpha * len(a) * np.eye(a.shape[1])
    coef = np.linalg.solve(gram, a.T @ (train_y - mu))
    return b @ coef + mu


def supervised_cnn(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    *,
    task: str,
    n_classes: int,
    stamp_size: int,
    margin: int,
    steps: int,
    seed: int,
    hyperparameters: dict[str, Any] | None = None,
    encoder: torch.nn.Module | None = None,
) -> np.ndarray:
    """Train the encoder architecture with a linear head on the labelled stamps.

    From scratch, or, given ``encoder``, from its weights (fine-tuning a
    pre-trained encoder: every weight trains, with the same steps and
    schedule).  Classification uses the class-balanced cross-entropy (as
    the probe).

    Parameters
    ----------
    train_x : `numpy.ndarray`
        ``(N, C, S, S)`` labelled stamps (``S = stamp_size + 2 * margin``).
    train_y : `numpy.ndarray`
        Class indices (``task="class"``) or redshifts (``"redshift"``).
    test_x : `numpy.ndarray`
        Stamps to predict, of the same shape.
    task : `str`
        ``"class"`` or ``"redshift"``.
    n_classes : `int`
        Classes of the classification head.
    stamp_size, margin : `int`
        Model input side and jitter margin (rotations, flips and jitter
        augment the labelled stamps).
    steps : `int`
        AdamW steps (batch 64 or the labelled set).
    seed : `int`
        Random seed.
    hyperparameters : `dict`, optional
        Further encoder hyperparameters (``widths``, ``pool``,
        ``colour_input``, ``aperture``).
    encoder : `torch.nn.Module`, optional
        A (pre-trained) encoder to start from; a copy is trained, the
        argument is left unchanged.

    Returns
    -------
    predicted : `numpy.ndarray`
        Class or redshift of each test stamp.
    """
    torch.manual_seed(seed)
    c = train_x.shape[1]
    if encoder is not None:
        enc = copy.deepcopy(encoder)
    else:
        enc = build_model(
            ARCHITECTURE, {"in_channels": c, "stamp_size": stamp_size, **dict(hyperparameters or {})}
        )
    out_dim = n_classes if task == "class" else 1
    head = torch.nn.Linear(enc.embed_dim, out_dim)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    aug = AugmentConfig(
        jitter=float(margin),
        scale=(1.0, 1.0),
        blur_sigma=(0.0, 0.0),
        noise=(0.0, 0.0),
        max_ebv=0.0,
        band_scatter=0.0,
        crop=stamp_size,
    )
    xt = torch.from_numpy(train_x)
    if task == "class":
        yt = torch.from_numpy(train_y.astype(np.int64))
        weights = _class_weights(train_y, n_classes)
    else:
        mu, sd = float(train_y.mean()), float(train_y.std() + 1e-6)
        yt = torch.from_numpy(((train_y - mu) / sd).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    batch = min(64, len(xt))
    enc.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        v = augment(xt[idx], aug, generator=gen)
        out = head(enc.features(v))
        if task == "class":
            loss = F.cross_entropy(out, yt[idx], weight=weights)
        else:
            loss = F.mse_loss(out[:, 0], yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    enc.eval()
    preds = []
    with torch.no_grad():
        crop = torch.from_numpy(
            np.ascontiguousarray(test_x[..., margin : margin + stamp_size, margin : margin + stamp_size])
        )
        for s in range(0, len(crop), 256):
            preds.append(head(enc.features(crop[s : s + 256])))
    out = torch.cat(preds)
    if task == "class":
        return out.argmax(dim=1).numpy()
    return out[:, 0].numpy() * sd + mu


def _class_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(pred, truth), "balanced_accuracy": balanced_accuracy(pred, truth)}


def _z_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from ..photoz.metrics import outlier_fraction, sigma_nmad

    return {"sigma_nmad": sigma_nmad(pred, truth), "outlier_fraction": outlier_fraction(pred, truth)}


@torch.no_grad()
def encoder_features(
    model: torch.nn.Module, x: np.ndarray, stamp_size: int, batch_size: int = 512
) -> np.ndarray:
    """Return the frozen pre-projection features of centre-cropped stamps.

    Parameters
    ----------
    model : `torch.nn.Module`
        The encoder (`lsst.meas.ml.models.embedding.EmbeddingEncoder`).
    x : `numpy.ndarray`
        ``(N, C, S, S)`` stamps, ``S >= stamp_size``.
    stamp_size : `int`
        Side of the central crop fed to the encoder.
    batch_size : `int`
        Stamps per forward pass.

    Returns
    -------
    features : `numpy.ndarray`
        ``(N, D)`` float32 features (the embedding before its L2
        normalisation).
    """
    m = (x.shape[-1] - stamp_size) // 2
    crop = torch.from_numpy(np.ascontiguousarray(x[..., m : m + stamp_size, m : m + stamp_size], np.float32))
    model.eval()
    out = [model.features(crop[s : s + batch_size]) for s in range(0, len(crop), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def run_downstream(config: DownstreamConfig | None = None) -> dict[str, Any]:
    """Run the experiment and return its figures.

    Parameters
    ----------
    config : `DownstreamConfig`, optional
        Size and settings (the reduced form if not given).

    Returns
    -------
    report : `dict` [`str`, `~typing.Any`]
        ``rows``: one entry per (label fraction, route) with the
        morphology and redshift scores averaged over the label draws;
        sizes, timings and the pre-training metrics.
    """
    from ..simulate import SurveyConfig, simulate_survey

    config = config or DownstreamConfig()
    t0 = time.monotonic()
    survey_config = dataclasses.replace(
        SurveyConfig.default(seed=config.seed),
        n_galaxies=int(config.n_galaxies),
        visits_per_band=1,
        n_detectors=1,
    )
    survey = simulate_survey(survey_config)
    bands = tuple(survey_config.coadd_bands)
    cut = config.stamp_size + 2 * config.margin
    data = galaxy_stamps(survey, cut, bands)
    t_sim = time.monotonic() - t0
    n_all = len(data["x"])
    labelled = np.flatnonzero(data["mag_i"] < (np.inf if config.max_mag is None else config.max_mag))
    rng = np.random.default_rng(config.seed)
    order = labelled[rng.permutation(len(labelled))]
    n_test = int(round(config.test_fraction * len(order)))
    test, pool = order[:n_test], order[n_test:]
    unlabelled = np.setdiff1d(np.arange(n_all), test) if config.pretrain_faint else pool
    _log.info(
        "Downstream: %d galaxies, %d labelled (%d held out); pre-training on %d stamps (%.0f s).",
        n_all,
        len(labelled),
        n_test,
        len(unlabelled),
        t_sim,
    )

    t1 = time.monotonic()
    pre = PretrainingSet(
        x=data["x"][unlabelled],
        ids=[str(i) for i in data["objectId"][unlabelled]],
        bands=list(bands),
        source={"simulated": {"seed": config.seed, "galaxies": int(config.n_galaxies)}},
    )
    result = train_embedding(
        pre,
        EmbeddingTrainingConfig(
            stamp_size=config.stamp_size,
            margin=config.margin,
            widths=tuple(config.widths),
            pool=config.pool,
            colour_input=config.colour_input,
            aperture=config.aperture,
            epochs=config.pretrain_epochs,
            seed=config.seed,
            batch_size=config.pretrain_batch_size,
            device="cpu",
        ),
    )
    t_pre = time.monotonic() - t1
    hyper = {
        "widths": [int(w) for w in config.widths],
        "pool": config.pool,
        "colour_input": bool(config.colour_input),
        "aperture": float(config.aperture),
    }
    encoders = {"self-supervised + linear probe": result.package.build_model()}
    torch.manual_seed(config.seed)
    encoders["untrained encoder + linear probe"] = build_model(
        ARCHITECTURE, {"in_channels": len(bands), "stamp_size": config.stamp_size, **hyper}
    )
    features = {k: encoder_features(m, data["x"], config.stamp_size) for k, m in encoders.items()}
    n_ap = int(encoders["untrained encoder + linear probe"].aperture_dim)
    n_feat = next(iter(features.values())).shape[1]
    groups: dict[str, tuple[int, ...] | None] = {k: (n_ap, n_feat - n_ap) if n_ap else None for k in features}
    if n_ap:
        # The aperture part has no parameters: the same for every encoder.
        features["aperture photometry alone + linear probe"] = features["untrained encoder + linear probe"][
            :, :n_ap
        ]
        groups["aperture photometry alone + linear probe"] = None
    labels, z = data["label"], data["redshift"]
    n_classes = len(HUBBLE_TYPES)
    rows = []
    for fraction in config.label_fractions:
        n_lab = max(n_classes, int(round(fraction * len(pool))))
        scores: dict[str, list[dict[str, float]]] = {}
        for draw in range(config.label_draws):
            pick = np.random.default_rng(config.seed + 17 + draw).permutation(len(pool))[:n_lab]
            lab = pool[pick]
            preds = {}
            for route, f in features.items():
                preds[route] = (
                    logistic_probe(f[lab], labels[lab], f[test], n_classes, groups=groups[route]),
                    ridge_probe(f[lab], z[lab], f[test], groups=groups[route]),
                )
            common = dict(
                n_classes=n_classes,
                stamp_size=config.stamp_size,
                margin=config.margin,
                steps=config.supervised_steps,
                seed=config.seed + draw,
                hyperparameters=hyper,
            )
            trained: dict[str, torch.nn.Module | None] = {"supervised CNN from scratch": None}
            if config.fine_tune:
                trained["self-supervised + fine-tuned (not frozen)"] = encoders[
                    "self-supervised + linear probe"
                ]
            for route, start in trained.items():
                xl, xt = data["x"][lab], data["x"][test]
                preds[route] = (
                    supervised_cnn(xl, labels[lab], xt, task="class", encoder=start, **common),
                    supervised_cnn(xl, z[lab], xt, task="redshift", encoder=start, **common),
                )
            preds["majority class, median redshift"] = (
                np.full(n_test, np.bincount(labels[lab], minlength=n_classes).argmax()),
                np.full(n_test, float(np.median(z[lab]))),
            )
            for route, (pc, pz) in preds.items():
                scores.setdefault(route, []).append(
                    {**_class_scores(pc, labels[test]), **_z_scores(pz, z[test])}
                )
        for route, s in scores.items():
            rows.append(
                {
                    "label_fraction": fraction,
                    "n_labels": int(n_lab),
                    "route": route,
                    "draws": len(s),
                    **_mean_scores(s),
                    "accuracy_per_draw": [d["accuracy"] for d in s],
                }
            )
    majority = np.bincount(labels[pool], minlength=n_classes).argmax()
    return {
        "rows": rows,
        "n_galaxies": n_all,
        "n_labelled": len(labelled),
        "n_pretrain": len(unlabelled),
        "n_test": int(n_test),
        "aperture_dim": n_ap,
        "majority_class_accuracy": float((labels[test] == majority).mean()),
        "pretraining": result.metrics,
        "config": dataclasses.asdict(config),
        "seconds": {
            "simulate_and_cut": round(t_sim, 1),
            "pretrain": round(t_pre, 1),
            "total": round(time.monotonic() - t0, 1),
        },
    }


def format_table(report: dict[str, Any]) -> str:
    """Format the report as a Markdown table.

    Parameters
    ----------
    report : `dict` [`str`, `~typing.Any`]
        From `run_downstream`.

    Returns
    -------
    text : `str`
        The table and a line of sizes.
    """
    lines = [
        "| labels | route | Hubble-type accuracy | balanced accuracy | photo-z sigma_NMAD | outliers |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['label_fraction']:.0%} ({r['n_labels']}) | {r['route']} | {r['accuracy']:.3f} | "
            f"{r['balanced_accuracy']:.3f} | {r['sigma_nmad']:.3f} | {r['outlier_fraction']:.1%} |"
        )
    draws = max((r.get("draws", 1) for r in report["rows"]), default=1)
    lines.append(
        f"\n{report['n_galaxies']} detected galaxies, {report.get('n_labelled', report['n_pretrain'])} "
        f"labelled (brighter than the cut), {report['n_test']} of them held out; pre-training on "
        f"{report['n_pretrain']} stamps without labels; scores averaged over {draws} label draws; "
        f"view retrieval {report['pretraining']['view_retrieval_top1_before']:.3f} -> "
        f"{report['pretraining']['view_retrieval_top1']:.3f}; {report['seconds']['total']:.0f} s."
    )
    return "\n".join(lines)
