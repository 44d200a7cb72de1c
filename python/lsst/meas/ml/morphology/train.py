"""Train a morphology classifier, supervised or semi-supervised, into a model package.

`train_morphology` takes a `MorphologyData` (stamps, labels with ``-1`` for
unlabelled galaxies); `data_from_files`, `data_from_butler` and
`data_from_survey` build one from image files, a Butler collection or an
in-memory simulated survey.

Training:

* **supervised**: cross-entropy on the labelled stamps, each step on a
  weakly augmented batch (a random rotation/flip and a one-pixel jitter,
  `lsst.meas.ml.augment.AugmentConfig.weak`);
* **semi-supervised** (FixMatch, Sohn et al. 2020): each step also takes
  ``mu`` times as many unlabelled stamps; the model's prediction on a weak
  view becomes a pseudo-label where its top probability reaches
  ``threshold``, and the model is trained to give that class on a strong
  view of the same stamp (any-angle rotation, flips, jitter, size scaling,
  PSF-like blur, noise matched to the stamp noise, reddening-like band
  scaling: `~lsst.meas.ml.augment.AugmentConfig.strong`), with weight
  ``lambda_u`` (ramped up linearly over the first ``rampup`` fraction of
  the steps, so early, unreliable pseudo-labels count little).  The
  threshold is reached only after the supervised part
  has made the model confident, so early steps are effectively supervised;
* **self-supervised pre-training** (``pretrain_steps``, off by default in
  the library, on in ``meas-ml train morphology``): before either, the
  backbone learns from every stamp, with or without a label, to match two
  strong views of the same galaxy against the other galaxies of a batch
  (SimCLR's NT-Xent loss, Chen et al. 2020, through a projection head that
  is then dropped); the classifier is then fine-tuned from those weights
  (the semi-supervised recipe of Chen et al. 2020b, "big self-supervised
  models are strong semi-supervised learners");
* **class imbalance**: the supervised loss (and the unlabelled loss,
  by pseudo-label) weighs each class by the inverse of its label count (normalised to a mean weight of 1;
  ``class_weighting="sqrt"`` for the square root, ``"none"`` to switch
  off), so rare classes (E, S0 in the simulation) are not ignored;
* AdamW with a cosine learning rate over ``steps`` steps; a stratified
  validation split of the labels (``validation_fraction``, at least one
  per class when possible) gives the metrics stored in the package;
* **OOD score calibration**: the energy ``-logsumexp(logits)`` of every
  training stamp; its median and 99th percentile are stored so that the
  task's ``morph_ood_score`` is 1 at the training 99th percentile.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..augment import AugmentConfig, augment
from ..engine import select_device
from ..packages import ModelPackage
from ..training import TrainingResult, update_moving_average, warmup_cosine
from .features import (
    DEFAULT_BANDS,
    DEFAULT_CLASSES,
    MorphologyInputError,
    StampBatch,
    coadd_stamps,
    file_stamps,
    input_spec,
)
from .metrics import classification_report

__all__ = [
    "ARCHITECTURES",
    "MorphologyData",
    "MorphologyTrainingConfig",
    "data_from_butler",
    "data_from_files",
    "data_from_survey",
    "contrastive_pretrain",
    "energy",
    "pretrain_morphology",
    "train_morphology",
]

_LOG = logging.getLogger("lsst.meas.ml.morphology.train")

#: Architectures of the product and their "wide" settings (one option away).
ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "morph_dat": {
        "small": {},
        "wide": {"dims": [64, 128], "depths": [2, 4], "heads": [4, 8]},
    },
    "morph_resnet": {
        "small": {},
        "wide": {"widths": [32, 64, 128, 256]},
    },
}


@dataclasses.dataclass
class MorphologyData:
    """Stamps and labels for training or evaluation.

    Attributes
    ----------
    stamps : `~lsst.meas.ml.morphology.features.StampBatch`
        Prepared stamps.
    labels : `numpy.ndarray`
        ``(N,)`` int64 class index; ``-1`` for unlabelled stamps.
    class_names : `list` [`str`]
        Classes, in index order.
    bands : `list` [`str`]
        Bands (coadds) or channel names (files).
    source : `str`
        ``"coadd"`` or ``"files"``.
    ids : `numpy.ndarray`
        Object ids (int64 for coadds, strings for files).
    description : `dict`
        Where the data came from (goes into the package provenance).
    """

    stamps: StampBatch
    labels: np.ndarray
    class_names: list[str]
    bands: list[str]
    source: str
    ids: np.ndarray
    description: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> MorphologyData:
        """Return the rows ``index`` (boolean or integer).

        Parameters
        ----------
        index : `numpy.ndarray`
            Rows to keep.

        Returns
        -------
        data : `MorphologyData`
            The selected rows.
        """
        st = self.stamps
        return dataclasses.replace(
            self,
            stamps=StampBatch(
                st.x[index], st.flags[index], st.masked_fraction[index], st.channels, st.n_image_channels
            ),
            labels=self.labels[index],
            ids=self.ids[index],
        )


@dataclasses.dataclass
class MorphologyTrainingConfig:
    """Settings of `train_morphology`.

    Attributes
    ----------
    architecture : `str`
        ``"morph_dat"`` or ``"morph_resnet"``.
    size : `str`
        ``"small"`` (CPU) or ``"wide"`` (`ARCHITECTURES`).
    hyperparameters : `dict`
        Further architecture keywords (override ``size``).
    semi_supervised : `bool`
        FixMatch on the unlabelled stamps (needs some).
    steps : `int`
        Optimiser steps.
    batch_size : `int`
        Labelled stamps per step.
    mu : `int`
        Unlabelled stamps per labelled stamp in a step.
    threshold : `float`
        Confidence of a pseudo-label.
    lambda_u : `float`
        Weight of the unlabelled loss.
    rampup : `float`
        Fraction of the steps over which the unlabelled weight grows from 0.
    lr, weight_decay : `float`
        AdamW settings (cosine schedule, 5% warm-up).
    class_weighting : `str`
        ``"inverse"``, ``"sqrt"`` or ``"none"``.
    pseudo_label_weighting : `str`
        ``"class"``: the class weights apply to the pseudo-labels too;
        ``"none"``: every confident pseudo-label weighs 1.
    distribution_alignment : `bool`
        Rescale the weak-view probabilities by the labelled class
        frequencies over the running mean of the model's predictions on
        unlabelled stamps before thresholding (Berthelot et al. 2020), so
        that pseudo-labels do not drift to the classes the model favours.
    ema_decay : `float`
        With a value in (0, 1), an exponential moving average of the
        weights (this decay per step) makes the pseudo-labels (a mean
        teacher) and is the packaged model; 0 turns it off.
    consistency : `str`
        ``"hard"``: the strong view learns the weak view's arg-max class
        (FixMatch); ``"soft"``: it learns the weak view's probabilities
        sharpened by ``sharpen_temperature`` (UDA), under the same
        confidence mask.
    sharpen_temperature : `float`
        Temperature of the soft targets (below 1 sharpens).
    pretrain_steps : `int`
        Self-supervised pre-training steps before the classifier is
        trained (0: none): a contrastive loss (SimCLR's NT-Xent, Chen et
        al. 2020) between two strong views of every stamp in a batch, on
        all stamps with and without labels, through a projection head that
        is then dropped.  With ``semi_supervised`` false this alone is the
        semi-supervised route of self-supervised pre-training followed by
        supervised fine-tuning.
    pretrain_batch : `int`
        Stamps per pre-training step (each gives two views).
    pretrain_temperature : `float`
        Temperature of the contrastive loss.
    pretrain_lr : `float`
        AdamW learning rate of the pre-training (cosine schedule, 5%
        warm-up; ``weight_decay`` as for the classifier).
    label_fraction : `float`
        Keep this fraction of the labels (stratified, at least one per
        class); the other labelled stamps become unlabelled.
    validation_fraction : `float`
        Labelled stamps held out for the package's metrics.
    seed : `int`
        Random seed.
    num_threads : `int`
        Torch CPU threads while training (0: leave as is).
    device : `str`
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    version, name : `str`
        Package version and name (default ``morphology-<architecture>``).
    """

    architecture: str = "morph_dat"
    size: str = "small"
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    semi_supervised: bool = True
    steps: int = 300
    batch_size: int = 32
    mu: int = 2
    threshold: float = 0.9
    lambda_u: float = 1.0
    rampup: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 0.05
    class_weighting: str = "inverse"
    pseudo_label_weighting: str = "class"
    distribution_alignment: bool = False
    ema_decay: float = 0.0
    consistency: str = "hard"
    sharpen_temperature: float = 0.4
    pretrain_steps: int = 0
    pretrain_batch: int = 64
    pretrain_temperature: float = 0.2
    pretrain_lr: float = 2e-3
    label_fraction: float = 1.0
    validation_fraction: float = 0.15
    seed: int = 0
    num_threads: int = 0
    device: str = "auto"
    version: str = "0.1.0"
    name: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise MorphologyInputError(
                f"Unknown morphology architecture {self.architecture!r}; choose one of "
                f"{sorted(ARCHITECTURES)}."
            )
        if self.size not in ARCHITECTURES[self.architecture]:
            raise MorphologyInputError(f"Unknown size {self.size!r}; choose 'small' or 'wide'.")
        if self.class_weighting not in ("inverse", "sqrt", "none"):
            raise MorphologyInputError(
                f"class_weighting must be 'inverse', 'sqrt' or 'none', not {self.class_weighting!r}."
            )
        if self.pseudo_label_weighting not in ("class", "none"):
            raise MorphologyInputError(
                f"pseudo_label_weighting must be 'class' or 'none', not {self.pseudo_label_weighting!r}."
            )
        if self.consistency not in ("hard", "soft"):
            raise MorphologyInputError(f"consistency must be 'hard' or 'soft', not {self.consistency!r}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise MorphologyInputError(f"ema_decay must lie in [0, 1), got {self.ema_decay}.")
        if not self.sharpen_temperature > 0.0:
            raise MorphologyInputError(
                f"sharpen_temperature must be positive, got {self.sharpen_temperature}."
            )
        if (
            self.pretrain_steps < 0
            or self.pretrain_batch < 2
            or not self.pretrain_temperature > 0.0
            or not self.pretrain_lr > 0.0
        ):
            raise MorphologyInputError(
                "pretrain_steps must be >= 0, pretrain_batch >= 2, pretrain_temperature and pretrain_lr "
                f"positive; got {self.pretrain_steps}, {self.pretrain_batch}, {self.pretrain_temperature}, "
                f"{self.pretrain_lr}."
            )
        if not 0.0 < self.label_fraction <= 1.0:
            raise MorphologyInputError(f"label_fraction must lie in (0, 1], got {self.label_fraction}.")


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Return the energy ``-logsumexp(logits)`` (lower: more like the training set).

    Parameters
    ----------
    logits : `torch.Tensor`
        ``(N, K)`` logits.

    Returns
    -------
    energy : `torch.Tensor`
        ``(N,)``.
    """
    return -torch.logsumexp(logits.float(), dim=-1)


def _stratified(
    labels: np.ndarray, fraction: float, rng: np.random.Generator, minimum: int = 1
) -> np.ndarray:
    """Boolean mask keeping ``fraction`` of each class's rows (at least ``minimum`` of each)."""
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == c)
        k = max(minimum, int(round(fraction * len(rows))))
        keep[rng.choice(rows, size=min(k, len(rows)), replace=False)] = True
    return keep


def _class_weights(labels: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    if mode == "none":
        w = (counts > 0).astype(float)
    else:
        w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        if mode == "sqrt":
            w = np.sqrt(w)
    present = counts > 0
    return w / w[present].mean()


@torch.no_grad()
def _predict_logits(
    model: torch.nn.Module, x: np.ndarray, device: torch.device, batch: int = 256
) -> np.ndarray:
    model.eval()
    out = [
        model(torch.as_tensor(x[i : i + batch], device=device)).float().cpu() for i in range(0, len(x), batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(model, "n_classes", 0)), np.float32)


def contrastive_pretrain(
    model: torch.nn.Module,
    x_all: torch.Tensor,
    config: MorphologyTrainingConfig,
    device: torch.device,
    *,
    n_image_channels: int,
    bands: Sequence[str] | None,
) -> dict[str, float]:
    """Pre-train a classifier's backbone without labels (SimCLR-style NT-Xent).

    Each step draws ``config.pretrain_batch`` stamps, makes two strong views
    of each (`~lsst.meas.ml.augment.AugmentConfig.strong`), and trains the
    backbone (``model.features``) and a temporary two-layer projection head
    so that the two views of a stamp are nearer to each other than to any
    other view in the batch.  The classifier head is left untouched.

    Parameters
    ----------
    model : `torch.nn.Module`
        A morphology model with a ``features`` method, on ``device``.
    x_all : `torch.Tensor`
        ``(N, C, S, S)`` stamps (CPU).
    config : `MorphologyTrainingConfig`
        ``pretrain_steps``, ``pretrain_batch``, ``pretrain_temperature``,
        ``pretrain_lr``, ``weight_decay`` and ``seed`` are used.
    device : `torch.device`
        Where to train.
    n_image_channels : `int`
        Leading image channels of the stamps (the rest are masks).
    bands : `~collections.abc.Sequence` [`str`] or `None`
        Bands of the image channels (for the reddening-like scaling).

    Returns
    -------
    report : `dict`
        Loss of the first and last 10% of the steps, the top-1 accuracy of
        finding a stamp's other view in the last batch, and the seconds.
    """
    t0 = time.perf_counter()
    n = x_all.shape[0]
    batch = int(min(config.pretrain_batch, n))
    if batch < 2:
        raise MorphologyInputError(f"Self-supervised pre-training needs at least 2 stamps; got {n}.")
    # Its own random streams (the projection head's initial weights, dropout, the draws): a run that
    # pre-trains leaves the global generators as a run given the pre-trained weights would find them.
    fork = [device.index if device.index is not None else 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(config.seed + 104729)
        with torch.no_grad():
            width = int(model.features(x_all[:2].to(device)).shape[1])
        proj = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU(), torch.nn.Linear(width, 64))
        proj = proj.to(device)
        params = list(model.parameters()) + list(proj.parameters())
        opt = torch.optim.AdamW(params, lr=config.pretrain_lr, weight_decay=config.weight_decay)
        steps = int(config.pretrain_steps)
        sched = warmup_cosine(opt, steps)
        gen = torch.Generator().manual_seed(config.seed + 104729)
        rng = np.random.default_rng(config.seed + 104729)
        strong = AugmentConfig.strong()
        targets = torch.arange(2 * batch, device=device).roll(batch)
        eye = torch.eye(2 * batch, dtype=torch.bool, device=device)
        losses: list[float] = []
        accuracy = float("nan")
        model.train()
        for _ in range(steps):
            idx = torch.as_tensor(rng.choice(n, size=batch, replace=False))
            xb = x_all[idx]
            v1 = augment(xb, strong, n_image_channels=n_image_channels, bands=bands, generator=gen)
            v2 = augment(xb, strong, n_image_channels=n_image_channels, bands=bands, generator=gen)
            z = F.normalize(proj(model.features(torch.cat([v1, v2]).to(device))), dim=-1)
            sim = (z @ z.T / config.pretrain_temperature).masked_fill(eye, float("-inf"))
            loss = F.cross_entropy(sim, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            accuracy = float((sim.detach().argmax(dim=1) == targets).float().mean())
    tenth = max(1, steps // 10)
    report = {
        "pretrain_loss_start": round(float(np.mean(losses[:tenth])), 4) if losses else float("nan"),
        "pretrain_loss_end": round(float(np.mean(losses[-tenth:])), 4) if losses else float("nan"),
        "pretrain_view_accuracy": round(accuracy, 4),
        "pretrain_seconds": round(time.perf_counter() - t0, 1),
    }
    _LOG.info("Self-supervised pre-training: %s", report)
    return report


def _hyperparameters(data: MorphologyData, config: MorphologyTrainingConfig) -> dict[str, Any]:
    return {
        "in_channels": int(data.stamps.x.shape[1]),
        "stamp_size": int(data.stamps.x.shape[-1]),
        "n_classes": len(data.class_names),
        **ARCHITECTURES[config.architecture][config.size],
        **config.hyperparameters,
    }


def pretrain_morphology(
    data: MorphologyData, config: MorphologyTrainingConfig
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Pre-train a classifier without labels, for reuse by several `train_morphology` runs.

    The model starts from the same random weights as ``train_morphology(data,
    config)`` would (same seed), so ``train_morphology(d, config,
    initial_state=state)`` with ``d`` differing from ``data`` only in its
    labels reproduces a run with ``config.pretrain_steps`` pre-training
    steps.

    Parameters
    ----------
    data : `MorphologyData`
        Stamps (labels are not used); stamps without usable pixels are left
        out.
    config : `MorphologyTrainingConfig`
        Settings; ``pretrain_steps`` must be positive.

    Returns
    -------
    state : `dict`
        The pre-trained weights (CPU tensors).
    report : `dict`
        The `contrastive_pretrain` report.

    Raises
    ------
    MorphologyInputError
        ``config.pretrain_steps`` is 0.
    """
    if config.pretrain_steps <= 0:
        raise MorphologyInputError("pretrain_morphology needs pretrain_steps > 0.")
    from ..models import build_model

    torch.manual_seed(config.seed)
    data = data.subset(data.stamps.usable)
    device = select_device(config.device)
    old_threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    try:
        model = build_model(config.architecture, _hyperparameters(data, config)).to(device)
        report = contrastive_pretrain(
            model,
            torch.as_tensor(data.stamps.x),
            config,
            device,
            n_image_channels=data.stamps.n_image_channels,
            bands=data.bands if data.source == "coadd" else None,
        )
    finally:
        torch.set_num_threads(old_threads)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, report


def train_morphology(
    data: MorphologyData,
    config: MorphologyTrainingConfig | None = None,
    *,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainingResult:
    """Train a classifier on ``data`` and package it.

    Parameters
    ----------
    data : `MorphologyData`
        Stamps with labels (``-1``: unlabelled).  Stamps without usable
        pixels are left out.
    config : `MorphologyTrainingConfig`, optional
        Settings.
    initial_state : `~collections.abc.Mapping`, optional
        Weights to start from (e.g. the ``state_dict`` of a model that
        `contrastive_pretrain` pre-trained on the same stamps, reused for
        several label sets); ``config.pretrain_steps`` is then ignored.

    Returns
    -------
    result : `~lsst.meas.ml.training.TrainingResult`
        The package (family ``morphology``), validation metrics and sizes;
        ``report`` holds the label counts and the pseudo-label statistics.

    Raises
    ------
    MorphologyInputError
        Fewer than two classes have labels.
    """
    config = config or MorphologyTrainingConfig()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    data = data.subset(data.stamps.usable)
    k = len(data.class_names)
    labels = data.labels.copy()
    if config.label_fraction < 1.0:
        kept = _stratified(labels, config.label_fraction, rng)
        labels[(labels >= 0) & ~kept] = -1
    labelled = np.flatnonzero(labels >= 0)
    if len(np.unique(labels[labelled])) < 2:
        raise MorphologyInputError(
            f"Training needs labels of at least two classes; got {len(labelled)} labelled stamp(s) of "
            f"classes {sorted(set(labels[labelled].tolist()))} (classes are {data.class_names})."
        )
    val_mask = np.zeros(len(labels), dtype=bool)
    if config.validation_fraction > 0 and len(labelled) >= 4 * k:
        val_mask = _stratified(np.where(labels >= 0, labels, -1), config.validation_fraction, rng)
    train_lab = np.flatnonzero((labels >= 0) & ~val_mask)
    unlab = np.flatnonzero(labels < 0)
    semi = config.semi_supervised and len(unlab) > 0

    hyper = _hyperparameters(data, config)
    from ..models import build_model

    device = select_device(config.device)
    old_threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    try:
        model = build_model(config.architecture, hyper).to(device)
        x_all = torch.as_tensor(data.stamps.x)
        ni = data.stamps.n_image_channels
        bands = data.bands if data.source == "coadd" else None
        pretrain_report: dict[str, float] = {}
        if initial_state is not None:
            model.load_state_dict(initial_state)
        elif config.pretrain_steps > 0:
            pretrain_report = contrastive_pretrain(
                model, x_all, config, device, n_image_channels=ni, bands=bands
            )
        teacher = None
        if config.ema_decay > 0:
            teacher = copy.deepcopy(model)  # draws no random numbers: the student's run is unchanged
            teacher.requires_grad_(False)
            teacher.eval()
        y_all = torch.as_tensor(labels)
        weights = torch.as_tensor(
            _class_weights(labels[train_lab], k, config.class_weighting), dtype=torch.float32, device=device
        )
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = warmup_cosine(opt, config.steps)
        # Separate random streams for the labelled and the unlabelled parts, so that a supervised and a
        # semi-supervised run with one seed see the same labelled batches and augmentations.
        gen = torch.Generator().manual_seed(config.seed)
        gen_u = torch.Generator().manual_seed(config.seed + 7919)
        rng_u = np.random.default_rng(config.seed + 7919)
        weak, strong = AugmentConfig.weak(), AugmentConfig.strong()
        counts = np.bincount(labels[train_lab], minlength=k).astype(np.float64) + 1.0
        label_prior = torch.as_tensor(counts / counts.sum(), dtype=torch.float32, device=device)
        running = torch.full((k,), 1.0 / k, device=device)
        u_weights = weights if config.pseudo_label_weighting == "class" else None
        n_pseudo = n_seen = 0
        t0 = time.perf_counter()
        model.train()
        for step in range(config.steps):
            b = torch.as_tensor(
                rng.choice(
                    train_lab,
                    size=min(config.batch_size, len(train_lab)),
                    replace=len(train_lab) < config.batch_size,
                )
            )
            xl = augment(x_all[b], weak, n_image_channels=ni, bands=bands, generator=gen).to(device)
            loss = F.cross_entropy(model(xl), y_all[b].to(device), weight=weights)
            if semi:
                u = torch.as_tensor(
                    rng_u.choice(unlab, size=min(config.mu * config.batch_size, len(unlab)), replace=False)
                )
                xu = x_all[u]
                xw = augment(xu, weak, n_image_channels=ni, bands=bands, generator=gen_u).to(device)
                xs = augment(xu, strong, n_image_channels=ni, bands=bands, generator=gen_u).to(device)
                with torch.no_grad():
                    if teacher is not None:
                        probs = teacher(xw).softmax(dim=-1)
                    else:
                        model.eval()
                        probs = model(xw).softmax(dim=-1)
                        model.train()
                if config.distribution_alignment:
                    running = 0.9 * running + 0.1 * probs.mean(dim=0)
                    probs = probs * (label_prior / running.clamp_min(1e-6))
                    probs = probs / probs.sum(dim=-1, keepdim=True)
                conf, pseudo = probs.max(dim=-1)
                mask = (conf >= config.threshold).float()
                n_pseudo += int(mask.sum())
                n_seen += len(u)
                if mask.any():
                    # With pseudo_label_weighting "class" the class weights apply to the pseudo-labels
                    # too, so that confident majority-class pseudo-labels do not undo the balancing.
                    if config.consistency == "soft":
                        target = probs.clamp_min(1e-8) ** (1.0 / config.sharpen_temperature)
                        target = target / target.sum(dim=-1, keepdim=True)
                        lu = -(target * F.log_softmax(model(xs), dim=-1)).sum(dim=-1)
                        if u_weights is not None:
                            lu = lu * u_weights[pseudo]
                    else:
                        lu = F.cross_entropy(model(xs), pseudo, weight=u_weights, reduction="none")
                    lu = (lu * mask).mean()
                    ramp = min(1.0, (step + 1) / max(1.0, config.rampup * config.steps))
                    loss = loss + config.lambda_u * ramp * lu
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if teacher is not None:
                update_moving_average(teacher, model, config.ema_decay, copy_buffers=True)
            if (step + 1) % 50 == 0:
                _LOG.info(
                    "step %d/%d loss %.3f pseudo-labelled %.1f%%",
                    step + 1,
                    config.steps,
                    float(loss.detach()),
                    100.0 * n_pseudo / max(n_seen, 1),
                )
        seconds = time.perf_counter() - t0
        if teacher is not None:
            model = teacher
        logits = _predict_logits(model, data.stamps.x, device)
    finally:
        torch.set_num_threads(old_threads)
    e = energy(torch.as_tensor(logits)).numpy()
    e_med, e_p99 = float(np.median(e)), float(np.percentile(e, 99))
    val = np.flatnonzero(val_mask)
    metrics: dict[str, Any] = {}
    if len(val):
        rep = classification_report(logits[val].argmax(axis=1), labels[val], data.class_names)
        metrics = {
            "validation_accuracy": rep["accuracy"],
            "validation_macro_f1": rep["macro_f1"],
            "n_validation": rep["n"],
        }
    counts = {data.class_names[c]: int((labels[train_lab] == c).sum()) for c in range(k)}
    report = {
        "label_counts": counts,
        "n_unlabelled": int(len(unlab)),
        "semi_supervised": semi,
        "pseudo_label_fraction": round(n_pseudo / n_seen, 4) if n_seen else None,
        **pretrain_report,
    }
    package = ModelPackage.from_model(
        model.cpu(),
        family="morphology",
        architecture=config.architecture,
        hyperparameters=hyper,
        inputs=input_spec(data.bands, data.stamps.x.shape[-1], data.source),
        outputs={"class_names": list(data.class_names), "energy_median": e_med, "energy_p99": e_p99},
        version=config.version,
        provenance={
            "training_data": data.description,
            "training": {
                k2: v
                for k2, v in dataclasses.asdict(config).items()
                if k2 not in ("version", "name", "hyperparameters")
            },
            "metrics": metrics,
            "label_counts": counts,
            "n_unlabelled": int(len(unlab)),
            "training_seconds": round(seconds, 2),
        },
        name=config.name or f"morphology-{config.architecture}",
    )
    return TrainingResult(
        package=package,
        metrics=metrics,
        training_seconds=seconds,
        n_train=int(len(train_lab) + len(unlab)),
        n_validation=int(len(val)),
        report=report,
    )


# ----------------------------------------------------------------------
# Data sources


def _class_index(values: Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Class index of each label value (strings compared as strings); -1 for None or other values."""
    lookup = {str(c): i for i, c in enumerate(classes)}
    return np.array([lookup.get(str(v), -1) if v is not None else -1 for v in values], dtype=np.int64)


def data_from_files(
    images: str | Sequence[str],
    labels_path: str | None,
    id_column: str = "id",
    label_column: str = "label",
    *,
    unlabelled: str | Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    stamp_size: int | None = None,
    resize: str = "centre",
) -> MorphologyData:
    """Read image files and a labels table into training data.

    Parameters
    ----------
    images : `str` or sequence of `str`
        Globs, directories or files of the labelled (and possibly
        unlabelled) images; the file stem is the id.
    labels_path : `str` or `None`
        Labels table (CSV, ECSV, Parquet, FITS); rows without a label, and
        images without a row, are unlabelled.
    id_column, label_column : `str`
        Columns of the labels table.
    unlabelled : `str` or sequence of `str`, optional
        More images, all used as unlabelled.
    classes : sequence of `str`, optional
        Class names in output order; default the sorted distinct labels
        (numerically when all are integers).  Labels of other classes are
        treated as unlabelled.
    stamp_size : `int`, optional
        Stamp side; default the most common image side.
    resize : `str`
        ``"centre"`` or ``"error"`` (`lsst.meas.ml.imagefiles.load_images`).

    Returns
    -------
    data : `MorphologyData`
        ``source="files"``; ``description`` counts the skipped files.

    Raises
    ------
    lsst.meas.ml.imagefiles.ImageFileError
        No readable image, or images of other channel counts (or sizes
        with ``resize="error"``).
    lsst.meas.ml.imagefiles.LabelFileError
        The labels table is unusable or no id matches an image.
    """
    from ..imagefiles import load_images, match_labels, read_labels

    image_set = load_images(images, size=stamp_size, resize=resize)
    aligned: list[str | None] = [None] * len(image_set)
    if labels_path is not None:
        aligned = match_labels(
            image_set.ids, read_labels(labels_path, id_column, label_column), source=str(labels_path)
        )
    ids = list(image_set.ids)
    imgs, bad, resized = [image_set.images], [image_set.bad], [image_set.resized]
    skipped = list(image_set.skipped)
    if unlabelled:
        extra = load_images(unlabelled, size=image_set.size, resize=resize, channels=image_set.n_channels)
        ids += extra.ids
        imgs.append(extra.images)
        bad.append(extra.bad)
        resized.append(extra.resized)
        aligned += [None] * len(extra)
        skipped += extra.skipped
    found = sorted({a for a in aligned if a is not None})
    if classes is None:
        classes = sorted(found, key=int) if all(a.lstrip("-").isdigit() for a in found) else found
    stamps = file_stamps(np.concatenate(imgs), np.concatenate(bad), resized=np.concatenate(resized))
    labels = _class_index(aligned, classes)
    return MorphologyData(
        stamps=stamps,
        labels=labels,
        class_names=[str(c) for c in classes],
        bands=list(stamps.channels[: stamps.n_image_channels]),
        source="files",
        ids=np.asarray(ids),
        description={
            "images": images if isinstance(images, str) else list(images),
            "labels": str(labels_path),
            "unlabelled": unlabelled,
            "n_images": len(ids),
            "n_skipped": len(skipped),
        },
    )


def _from_patches(
    patches: Mapping[Any, Mapping[str, Any]],
    objects: Any,
    label_values: Sequence[Any] | None,
    classes: Sequence[str],
    *,
    bands: Sequence[str],
    stamp_size: int,
    id_column: str = "objectId",
    patch_column: str = "patch",
) -> tuple[StampBatch, np.ndarray, np.ndarray]:
    """Cut stamps of the objects in each patch from that patch's coadds."""
    parts: list[StampBatch] = []
    labels: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    patch_of = np.asarray(objects[patch_column])
    values = np.asarray(label_values, dtype=object) if label_values is not None else None
    for patch, coadds in patches.items():
        rows = np.flatnonzero(patch_of == patch)
        if not len(rows):
            continue
        parts.append(
            coadd_stamps(
                coadds,
                np.asarray(objects["x"])[rows],
                np.asarray(objects["y"])[rows],
                bands=bands,
                stamp_size=stamp_size,
            )
        )
        labels.append(_class_index(values[rows], classes) if values is not None else np.full(len(rows), -1))
        ids.append(np.asarray(objects[id_column])[rows])
    if not parts:
        raise MorphologyInputError("No object lies in any of the patches read; nothing to train on.")
    st = StampBatch(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.flags for p in parts]),
        np.concatenate([p.masked_fraction for p in parts]),
        parts[0].channels,
        parts[0].n_image_channels,
    )
    return st, np.concatenate(labels), np.concatenate(ids)


def data_from_survey(
    survey: Any,
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    stamp_size: int = 64,
    classes: Sequence[str] = DEFAULT_CLASSES,
    label_column: str = "hubble_type",
    galaxies_only: bool = True,
) -> MorphologyData:
    """Cut labelled stamps of the detected objects of an in-memory simulated survey.

    Parameters
    ----------
    survey : `lsst.meas.ml.simulate.survey.SimulatedSurvey`
        The survey (its coadds, object table and ``truth_object``).
    bands : sequence of `str`
        Model bands.
    stamp_size : `int`
        Stamp side.
    classes : sequence of `str`
        Classes (values of ``label_column``).
    label_column : `str`
        Truth column of the class.
    galaxies_only : `bool`
        Keep only objects whose truth label is one of ``classes``.

    Returns
    -------
    data : `MorphologyData`
        Every object labelled with its true class.
    """
    from astropy.table import join

    objects = join(survey.object, survey.truth_object["objectId", label_column], keys="objectId")
    if galaxies_only:
        objects = objects[np.isin(np.asarray(objects[label_column]).astype(str), list(classes))]
    patches: dict[int, dict[str, Any]] = {}
    for (patch, band), planes in survey.coadds.items():
        patches.setdefault(patch, {})[band] = planes
    st, labels, ids = _from_patches(
        patches, objects, list(objects[label_column]), classes, bands=bands, stamp_size=stamp_size
    )
    return MorphologyData(
        st,
        labels,
        list(classes),
        list(bands),
        "coadd",
        ids,
        {"simulated_survey": survey.config.name, "seed": survey.config.seed, "n_objects": len(ids)},
    )


def data_from_butler(
    butler: Any,
    collections: Sequence[str],
    *,
    labels_dataset: str = "truth_object",
    label_column: str = "hubble_type",
    object_dataset: str = "object",
    coadd_dataset: str = "deep_coadd",
    bands: Sequence[str] = DEFAULT_BANDS,
    stamp_size: int = 64,
    classes: Sequence[str] = DEFAULT_CLASSES,
    id_column: str = "objectId",
) -> MorphologyData:
    """Cut stamps of every object of a Butler collection, labelled from a labels table.

    Per tract, the object table (``objectId``, ``x``, ``y``, ``patch``) is
    joined with the labels table (``objectId`` and ``label_column``);
    objects whose label is not one of ``classes`` (no label, or e.g.
    ``"star"``) are unlabelled.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository.
    collections : sequence of `str`
        Collections to read.
    labels_dataset, label_column : `str`
        Labels table (per tract) and its class column.
    object_dataset, coadd_dataset : `str`
        Object table (per tract) and coadds (per patch and band).
    bands : sequence of `str`
        Model bands.
    stamp_size : `int`
        Stamp side.
    classes : sequence of `str`
        Classes.
    id_column : `str`
        Object id column of both tables.

    Returns
    -------
    data : `MorphologyData`
        ``source="coadd"``.

    Raises
    ------
    MorphologyInputError
        No labels table, or no label of ``classes`` in it.
    """
    from astropy.table import join

    collections = list(collections)
    parts = []
    label_refs = list(butler.query_datasets(labels_dataset, collections=collections, explain=False))
    if not label_refs:
        raise MorphologyInputError(f"No {labels_dataset!r} dataset in collections {collections}.")
    for ref in label_refs:
        labels = butler.get(ref)
        if label_column not in labels.colnames:
            raise MorphologyInputError(
                f"{labels_dataset} has no column {label_column!r}; its columns are {labels.colnames[:30]}."
            )
        objects = butler.get(
            object_dataset,
            ref.dataId,
            collections=collections,
            parameters={"columns": [id_column, "x", "y", "patch"]},
        )
        both = join(objects, labels[id_column, label_column], keys=id_column, join_type="left")
        values = [None if np.ma.is_masked(v) else v for v in both[label_column]]
        patches: dict[int, dict[str, Any]] = {}
        tract_id = {"skymap": ref.dataId["skymap"], "tract": ref.dataId["tract"]}
        for cref in butler.query_datasets(
            coadd_dataset, collections=collections, explain=False, data_id=tract_id
        ):
            if cref.dataId["band"] in bands:
                patches.setdefault(cref.dataId["patch"], {})[cref.dataId["band"]] = butler.get(cref)
        parts.append(
            _from_patches(
                patches, both, values, classes, bands=bands, stamp_size=stamp_size, id_column=id_column
            )
        )
    st = StampBatch(
        np.concatenate([p[0].x for p in parts]),
        np.concatenate([p[0].flags for p in parts]),
        np.concatenate([p[0].masked_fraction for p in parts]),
        parts[0][0].channels,
        parts[0][0].n_image_channels,
    )
    labels_all = np.concatenate([p[1] for p in parts])
    if not (labels_all >= 0).any():
        raise MorphologyInputError(
            f"No {label_column} value of {labels_dataset} is one of the classes {list(classes)}."
        )
    return MorphologyData(
        st,
        labels_all,
        list(classes),
        list(bands),
        "coadd",
        np.concatenate([p[2] for p in parts]),
        {
            "butler": str(getattr(butler, "_config", "")) or "butler",
            "collections": collections,
            "labels": f"{labels_dataset}.{label_column}",
            "n_objects": int(len(labels_all)),
        },
    )
