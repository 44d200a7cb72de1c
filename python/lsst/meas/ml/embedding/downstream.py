"""Downstream value of the representations: few labels, frozen embeddings vs supervised CNNs.

The experiment of Hayat, Stein et al. (2021), on the simulated survey
(``meas-ml embedding-downstream``):

1. simulate a survey (`lsst.meas.ml.simulate.simulate_survey`, more
   galaxies than the demo's) and cut 6-band coadd stamps of the detected
   galaxies brighter than ``max_mag`` through the shared cutout code;
2. hold out ``test_fraction`` of the galaxies; pre-train the encoder with
   MoCo v2 (`lsst.meas.ml.embedding.train.train_embedding`) on the other
   stamps *without labels*;
3. for each label fraction (1% and 10% of the training galaxies):

   * self-supervised route: frozen, L2-normalised embeddings; a linear
     probe (multinomial logistic regression) for the Hubble type (E, S0,
     Sa, Sb, Sc/Sd, Irr) and a ridge regression for the redshift;
   * supervised route: the same encoder architecture trained from scratch
     with a linear head on the same labelled stamps (rotations, flips and
     jitter as augmentation), cross-entropy or mean squared error;

4. score both on the held-out galaxies: accuracy and balanced accuracy
   (mean recall over the classes present), and sigma_NMAD and outlier
   fraction (``|dz|/(1+z) > 0.15``) of the redshift.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..augment import AugmentConfig, augment
from ..engine import InferenceEngine
from ..metrics import accuracy, balanced_accuracy
from ..models import build_model
from .features import coadd_stamps
from .predict import embed_stamps
from .train import ARCHITECTURE, EmbeddingTrainingConfig, PretrainingSet, train_embedding

__all__ = ["DownstreamConfig", "format_table", "galaxy_stamps", "run_downstream"]

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
    pretrain_epochs : `int`
        MoCo v2 epochs.
    pretrain_batch_size : `int`
        MoCo v2 batch size (small: more steps for the same computation).
    supervised_steps : `int`
        Optimisation steps of each supervised CNN.
    label_fractions : `tuple` [`float`, ...]
        Fractions of the training galaxies that are labelled.
    test_fraction : `float`
        Galaxies held out for scoring.
    max_mag : `float` or `None`
        Only galaxies brighter than this i-band magnitude: fainter ones
        are blobs of a few sigma whose Hubble type no image shows.
    """

    n_galaxies: int = 4000
    seed: int = 3
    stamp_size: int = 40
    margin: int = 4
    pretrain_epochs: int = 25
    pretrain_batch_size: int = 16
    supervised_steps: int = 300
    label_fractions: tuple[float, ...] = (0.01, 0.1)
    test_fraction: float = 0.3
    max_mag: float | None = 24.0

    @classmethod
    def full(cls) -> DownstreamConfig:
        """Return the full-size experiment (about an hour on 2 CPU cores).

        Returns
        -------
        config : `DownstreamConfig`
            16000 galaxies, 60 pre-training epochs, 600 supervised steps.
        """
        return cls(n_galaxies=16000, pretrain_epochs=60, supervised_steps=600)


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
        type index, ``redshift``, ``objectId``, ``nan_fraction``.
    """
    from astropy.table import join

    objects = survey.object["objectId", "x", "y", "patch", "detect_isPrimary", "i_cModelFlux"]
    truth = survey.truth_object["objectId", "hubble_type_class", "redshift"]
    both = join(objects, truth, keys="objectId")
    keep = (np.asarray(both["hubble_type_class"]) >= 0) & np.asarray(both["detect_isPrimary"], bool)
    if max_mag is not None:
        flux = np.nan_to_num(np.asarray(both["i_cModelFlux"], float), nan=0.0)
        keep &= flux > 10 ** (-0.4 * (max_mag - 31.4))
    both = both[keep]
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("x", "label", "redshift", "objectId", "nan_fraction")
    }
    patches = {p for p, _ in survey.coadds}
    for patch in sorted(set(np.asarray(both["patch"]).tolist()) & patches):
        rows = both[np.asarray(both["patch"]) == patch]
        coadds = {b: survey.coadds[(patch, b)] for b in bands}
        st = coadd_stamps(coadds, np.asarray(rows["x"], float), np.asarray(rows["y"], float), size, bands)
        keep = ~st.offimage & (st.nan_fraction < 0.25)
        parts["x"].append(st.x[keep])
        parts["label"].append(np.asarray(rows["hubble_type_class"], np.int64)[keep])
        parts["redshift"].append(np.asarray(rows["redshift"], np.float64)[keep])
        parts["objectId"].append(np.asarray(rows["objectId"], np.int64)[keep])
        parts["nan_fraction"].append(st.nan_fraction[keep])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0) + 1e-6
    return [(a - mu) / sd for a in (train, *others)]


def logistic_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, l2: float = 1e-2
) -> np.ndarray:
    """Fit a multinomial logistic regression (L-BFGS, L2 penalty) and predict classes.

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

    Returns
    -------
    predicted : `numpy.ndarray`
        Class of each test row.
    """
    a, b = _standardise(train_x, test_x)
    xa = torch.from_numpy(a.astype(np.float32))
    ya = torch.from_numpy(train_y.astype(np.int64))
    w = torch.zeros(a.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xa @ w + bias, ya) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.from_numpy(b.astype(np.float32)) @ w + bias).argmax(dim=1).numpy()


def ridge_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, alpha: float = 1.0
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

    Returns
    -------
    predicted : `numpy.ndarray`
        Prediction for each test row.
    """
    a, b = _standardise(train_x, test_x)
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
) -> np.ndarray:
    """Train the encoder architecture from scratch with a linear head on the labelled stamps.

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

    Returns
    -------
    predicted : `numpy.ndarray`
        Class or redshift of each test stamp.
    """
    torch.manual_seed(seed)
    c = train_x.shape[1]
    enc = build_model(ARCHITECTURE, {"in_channels": c, "stamp_size": stamp_size})
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
        loss = F.cross_entropy(out, yt[idx]) if task == "class" else F.mse_loss(out[:, 0], yt[idx])
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
        morphology and redshift scores; sizes, timings and the
        pre-training metrics.
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
    data = galaxy_stamps(survey, cut, bands, max_mag=config.max_mag)
    t_sim = time.monotonic() - t0
    n = len(data["x"])
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_test = int(round(config.test_fraction * n))
    test, pool = order[:n_test], order[n_test:]
    _log.info(
        "Downstream: %d galaxies (%d for pre-training, %d held out) in %.0f s.", n, len(pool), n_test, t_sim
    )

    t0 = time.monotonic()
    pre = PretrainingSet(
        x=data["x"][pool],
        ids=[str(i) for i in data["objectId"][pool]],
        bands=list(bands),
        source={"simulated": {"seed": config.seed, "galaxies": int(config.n_galaxies)}},
    )
    result = train_embedding(
        pre,
        EmbeddingTrainingConfig(
            stamp_size=config.stamp_size,
            margin=config.margin,
            epochs=config.pretrain_epochs,
            seed=config.seed,
            batch_size=config.pretrain_batch_size,
            device="auto",
        ),
    )
    t_pre = time.monotonic() - t0
    engine = InferenceEngine()
    emb = embed_stamps(result.package, data["x"], engine)
    labels, z = data["label"], data["redshift"]
    rows = []
    for fraction in config.label_fractions:
        n_lab = max(len(HUBBLE_TYPES), int(round(fraction * len(pool))))
        lab = pool[np.random.default_rng(config.seed + 17).permutation(len(pool))[:n_lab]]
        ssl_class = logistic_probe(emb[lab], labels[lab], emb[test], len(HUBBLE_TYPES))
        ssl_z = ridge_probe(emb[lab], z[lab], emb[test])
        common = dict(
            n_classes=len(HUBBLE_TYPES),
            stamp_size=config.stamp_size,
            margin=config.margin,
            steps=config.supervised_steps,
            seed=config.seed,
        )
        sup_class = supervised_cnn(data["x"][lab], labels[lab], data["x"][test], task="class", **common)
        sup_z = supervised_cnn(data["x"][lab], z[lab], data["x"][test], task="redshift", **common)
        for route, pc, pz in (
            ("self-supervised + linear probe", ssl_class, ssl_z),
            ("supervised CNN from scratch", sup_class, sup_z),
        ):
            rows.append(
                {
                    "label_fraction": fraction,
                    "n_labels": int(n_lab),
                    "route": route,
                    **_class_scores(pc, labels[test]),
                    **_z_scores(pz, z[test]),
                }
            )
    majority = np.bincount(labels[pool]).argmax()
    return {
        "rows": rows,
        "n_galaxies": n,
        "n_pretrain": len(pool),
        "n_test": int(n_test),
        "majority_class_accuracy": float((labels[test] == majority).mean()),
        "pretraining": result.metrics,
        "config": dataclasses.asdict(config),
        "seconds": {
            "simulate_and_cut": round(t_sim, 1),
            "pretrain": round(t_pre, 1),
            "total": round(time.monotonic() - t0 + t_sim, 1),
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
    lines.append(
        f"\n{report['n_galaxies']} galaxies: {report['n_pretrain']} for pre-training (unlabelled), "
        f"{report['n_test']} held out; majority-class accuracy {report['majority_class_accuracy']:.3f}; "
        f"view retrieval {report['pretraining']['view_retrieval_top1_before']:.3f} -> "
        f"{report['pretraining']['view_retrieval_top1']:.3f}; {report['seconds']['total']:.0f} s."
    )
    return "\n".join(lines)
