"""Contrastive pre-training of the galaxy encoder (``meas-ml train embedding``).

The method is MoCo v2 (He et al. 2020; Chen et al. 2020), as Hayat, Stein
et al. (2021) used it on survey images:

* a *query* encoder trained by gradient descent and a *key* encoder that is
  its exponential moving average (``momentum``);
* a queue of the keys of past batches as negatives, so the number of
  negatives (``queue_size``) does not depend on the batch size: what makes
  it work with the small batches a CPU affords (SimCLR needs its negatives
  in the batch, i.e. batches of thousands);
* the InfoNCE loss at temperature ``temperature`` on the L2-normalised
  outputs of a two-layer MLP projection head, symmetrised over the two
  views (each view is once the query, once the key), which doubles the
  signal per image at no extra augmentation cost, useful on a few hundred
  images;
* no BatchNorm in the encoder (see `lsst.meas.ml.models.embedding`), so
  no shuffled BatchNorm is needed on one device.

The queue is capped at half the training set, so that an image's previous
key has left the queue before the image comes back as a query.

The two views of each stamp are drawn by the shared telescope-aware
augmentation (`lsst.meas.ml.augment.augment`, `telescope_augmentation`):
rotations and flips, any-angle rotation, jitter then crop, size scaling,
PSF-like blur, Gaussian noise matched to the stamp's noise (variance 1 in
the linear noise units of the inputs), and per-band scaling like Galactic
reddening with the LSST extinction coefficients.

Training sets: stamps of the objects of Butler coadds (`butler_training_set`,
through `lsst.meas.ml.cutouts.multiband_stack`), or image files of any
channel count (`files_training_set`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..augment import AugmentConfig, augment
from ..engine import select_device
from ..models import build_model
from ..packages import ModelPackage
from ..training import TrainingResult
from .features import NORMALISATION, EmbeddingInputError, StampBatch, coadd_stamps, file_stamps

__all__ = [
    "ARCHITECTURE",
    "EmbeddingTrainingConfig",
    "PretrainingSet",
    "butler_training_set",
    "files_training_set",
    "make_views",
    "retrieval_accuracy",
    "telescope_augmentation",
    "train_embedding",
]

_log = logging.getLogger(__name__)

#: Registered architecture of the encoder.
ARCHITECTURE = "embedding_cnn"

#: Object-table columns read to place the stamps.
OBJECT_COLUMNS = ("objectId", "x", "y", "patch", "detect_isPrimary", "refExtendedness")


def telescope_augmentation(margin: int, stamp_size: int) -> AugmentConfig:
    """Return the augmentation of pre-training: every telescope-like transform.

    Parameters
    ----------
    margin : `int`
        Pixels on each side of the model input that the stamps carry for
        the jitter (largest shift is ``margin`` pixels).
    stamp_size : `int`
        Model input side: the central crop taken last.

    Returns
    -------
    config : `lsst.meas.ml.augment.AugmentConfig`
        Rotations/flips and any angle, jitter, scale 0.85-1.15, blur up to
        1 pixel, noise up to the stamp's own, reddening up to
        ``E(B-V) = 0.05`` (kept small: colours carry the redshift), then
        the crop.
    """
    return AugmentConfig(
        rotate_flip=True,
        rotate_any=True,
        jitter=float(margin),
        scale=(0.85, 1.15),
        blur_sigma=(0.0, 1.0),
        noise=(0.0, 1.0),
        max_ebv=0.05,
        band_scatter=0.05,
        crop=int(stamp_size),
    )


@dataclasses.dataclass
class EmbeddingTrainingConfig:
    """Settings of `train_embedding`.

    The defaults pre-train on about 500 stamps of 6 bands in a few minutes
    on 2 CPU cores (see ``doc/embedding.md``); ``epochs`` is the option for
    longer training.

    Attributes
    ----------
    stamp_size : `int`
        Model input side (pixels); stamps are cut ``2 * margin`` larger.
    margin : `int`
        Extra pixels on each side for the jitter, cropped away.
    widths : `tuple` [`int`, ...]
        Encoder stage widths; the last is the embedding dimension.
    proj_dim : `int`
        Projection-head output dimension.
    pool : `str`
        Pooling of the last feature map (``"mean"`` or ``"centre"``, see
        `lsst.meas.ml.models.embedding.EmbeddingEncoder`).
    colour_input : `bool`
        Feed the encoder the band differences too (see
        `lsst.meas.ml.models.embedding.EmbeddingEncoder`).
    aperture : `float`
        Sigma (pixels) of the Gaussian aperture whose photometry and
        colours start the representation (0: none; see
        `lsst.meas.ml.models.embedding.EmbeddingEncoder`).
    augmentation : `lsst.meas.ml.augment.AugmentConfig` or `None`
        The views' augmentation; None: `telescope_augmentation`.
    epochs : `int`
        Passes over the training stamps.
    batch_size : `int`
        Stamps per step (two views each).
    lr : `float`
        Peak AdamW learning rate (cosine decay, one warm-up epoch).
    weight_decay : `float`
        AdamW weight decay.
    temperature : `float`
        InfoNCE temperature (MoCo v2: 0.2).
    momentum : `float`
        EMA factor of the key encoder.
    queue_size : `int`
        Negatives kept (capped at half the training set).
    validation_fraction : `float`
        Stamps held out for the view-retrieval figure.
    seed : `int`
        Random seed (initialisation, batches, augmentations).
    device : `str`
        ``auto`` (CUDA when present), ``cpu``, ``cuda``...
    threads : `int`
        torch CPU threads (0: torch's default).
    max_seconds : `float` or `None`
        Stop after this much wall time (the last finished epoch is kept).
    version : `str`
        Package version.
    name : `str`
        Package name.
    """

    stamp_size: int = 40
    margin: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128)
    proj_dim: int = 64
    pool: str = "centre"
    colour_input: bool = True
    aperture: float = 2.0
    augmentation: AugmentConfig | None = None
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    momentum: float = 0.99
    queue_size: int = 4096
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    max_seconds: float | None = None
    version: str = "1.0.0"
    name: str = "embedding-moco"

    def __post_init__(self) -> None:
        # Checked here, before any stamp is cut, rather than when the encoder is built.
        if not self.aperture >= 0:
            raise EmbeddingInputError(f"aperture must be >= 0 pixels (0: none), got {self.aperture}.")


@dataclasses.dataclass
class PretrainingSet:
    """Unlabelled stamps for pre-training.

    Attributes
    ----------
    x : `numpy.ndarray`
        ``(N, C, S, S)`` float32 stamps in linear noise units, ``S =
        stamp_size + 2 * margin``.
    ids : `list` [`str`]
        One id per stamp.
    bands : `list` [`str`] or `None`
        Band of each channel (None for image files without bands).
    bin_factor : `int`
        Binning applied to image files (1 for coadds).
    source : `dict`
        What the stamps came from (recorded in the package provenance).
    """

    x: np.ndarray
    ids: list[str]
    bands: list[str] | None
    bin_factor: int = 1
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def _keep_usable(ids: list[str], stamps: StampBatch, max_nan_fraction: float) -> tuple[list[str], np.ndarray]:
    keep = ~stamps.offimage & (stamps.nan_fraction <= max_nan_fraction)
    return [i for i, k in zip(ids, keep) if k], stamps.x[keep]


def files_training_set(
    patterns: Any,
    *,
    stamp_size: int = 40,
    margin: int = 4,
    bin_factor: int | str = "auto",
    max_nan_fraction: float = 0.5,
) -> PretrainingSet:
    """Read image files (FITS, NPY, PNG, JPEG; any channels) as a pre-training set.

    Parameters
    ----------
    patterns : `str` or sequence of `str`
        Globs, directories or files; file stems are the ids.
    stamp_size, margin : `int`
        Model input side and jitter margin.
    bin_factor : `int` or ``"auto"``
        Integer binning of the files; ``"auto"``: the largest factor that
        keeps the most common image size at least ``stamp_size + 2 *
        margin`` after binning (1 for small images).
    max_nan_fraction : `float`
        Stamps with more unusable pixels are left out.

    Returns
    -------
    data : `PretrainingSet`
        The stamps (unreadable files are skipped, named in a warning and
        counted in ``source["skipped"]``).
    """
    import collections

    from ..imagefiles import expand_images, read_image_file

    cut = int(stamp_size) + 2 * int(margin)
    if bin_factor == "auto":
        sizes: collections.Counter[int] = collections.Counter()
        for path in expand_images(patterns)[:50]:
            try:
                sizes[max(read_image_file(path).shape[1:])] += 1
            except EmbeddingInputError:
                continue
            except Exception:  # unreadable files are reported by load_images
                continue
        common = sizes.most_common(1)[0][0] if sizes else cut
        bin_factor = max(1, common // cut)
    ids, stamps, skipped = file_stamps(patterns, size=cut, bin_factor=int(bin_factor))
    n_read = len(ids)
    ids, x = _keep_usable(ids, stamps, max_nan_fraction)
    return PretrainingSet(
        x=x,
        ids=ids,
        bands=None,
        bin_factor=int(bin_factor),
        source={
            "images": [str(p) for p in ([patterns] if isinstance(patterns, str) else patterns)],
            "files_read": n_read,
            "skipped": len(skipped),
            "resized": int(stamps.resized.sum()),
            "used": len(ids),
        },
    )


def butler_training_set(
    butler: Any,
    collections: Sequence[str],
    *,
    bands: Sequence[str] = ("u", "g", "r", "i", "z", "y"),
    stamp_size: int = 40,
    margin: int = 4,
    where: str = "",
    extended_only: bool = True,
    max_objects: int | None = None,
    max_nan_fraction: float = 0.5,
    coadd: str = "deep_coadd",
    object_table: str = "object",
) -> PretrainingSet:
    """Cut coadd stamps of the objects of every patch of a collection.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository.
    collections : sequence of `str`
        Collections holding the coadds and the object table.
    bands : sequence of `str`
        Bands, one channel each, in order.
    stamp_size, margin : `int`
        Model input side and jitter margin.
    where : `str`
        Butler query constraint on the patches (e.g. ``"patch IN (0, 1)"``).
    extended_only : `bool`
        Keep only objects with ``refExtendedness > 0.5`` (galaxies).
    max_objects : `int`, optional
        Stop after this many stamps.
    max_nan_fraction : `float`
        Stamps with more unusable pixels are left out.
    coadd, object_table : `str`
        Dataset type names.

    Returns
    -------
    data : `PretrainingSet`
        The stamps, ids ``str(objectId)``.

    Raises
    ------
    EmbeddingInputError
        No coadd or no object in the collections.
    """
    collections = list(collections)
    bands = list(bands)
    refs = list(
        butler.query_datasets(coadd, collections=collections, where=where, find_first=True, explain=False)
    )
    if not refs:
        raise EmbeddingInputError(f"No {coadd} in collections {collections} (where {where!r}).")
    by_patch: dict[tuple, dict[str, Any]] = {}
    for ref in refs:
        key = (ref.dataId["skymap"], ref.dataId["tract"], ref.dataId["patch"])
        by_patch.setdefault(key, {})[ref.dataId["band"]] = ref
    tables: dict[tuple, Any] = {}
    xs, ids = [], []
    cut = int(stamp_size) + 2 * int(margin)
    for (skymap, tract, patch), band_refs in sorted(by_patch.items()):
        if (skymap, tract) not in tables:
            handle = butler.get(
                object_table,
                skymap=skymap,
                tract=tract,
                collections=collections,
                parameters={"columns": list(OBJECT_COLUMNS)},
            )
            tables[(skymap, tract)] = handle
        table = tables[(skymap, tract)]
        sel = np.asarray(table["patch"]) == patch
        sel &= np.asarray(table["detect_isPrimary"], bool)
        if extended_only:
            sel &= np.nan_to_num(np.asarray(table["refExtendedness"], float)) > 0.5
        if not sel.any():
            continue
        coadds = {b: butler.get(ref) for b, ref in band_refs.items() if b in bands}
        stamps = coadd_stamps(
            coadds, np.asarray(table["x"], float)[sel], np.asarray(table["y"], float)[sel], cut, bands
        )
        missing = [b for b in bands if b not in coadds]
        if missing:
            _log.warning(
                "Patch %s of tract %s has no %s coadd in band(s) %s; zero channels used.",
                patch,
                tract,
                coadd,
                missing,
            )
        pid, px = _keep_usable([str(i) for i in np.asarray(table["objectId"])[sel]], stamps, max_nan_fraction)
        ids.extend(pid)
        xs.append(px)
        if max_objects is not None and len(ids) >= max_objects:
            break
    if not ids:
        raise EmbeddingInputError(f"No usable object stamps in collections {collections} (where {where!r}).")
    x = np.concatenate(xs)
    if max_objects is not None:
        x, ids = x[:max_objects], ids[:max_objects]
    return PretrainingSet(
        x=x,
        ids=ids,
        bands=bands,
        source={"butler": {"collections": collections, "where": where, "coadd": coadd, "objects": len(ids)}},
    )


def make_views(
    x: torch.Tensor,
    config: AugmentConfig,
    bands: Sequence[str] | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw two independent augmented views of each stamp (what training uses).

    Parameters
    ----------
    x : `torch.Tensor`
        ``(N, C, S, S)`` stamps in linear noise units.
    config : `lsst.meas.ml.augment.AugmentConfig`
        The augmentation (`telescope_augmentation`).
    bands : sequence of `str` or `None`
        Band of each channel, for the reddening-like scaling.
    generator : `torch.Generator`, optional
        Random numbers.

    Returns
    -------
    v1, v2 : `torch.Tensor`
        ``(N, C, S', S')`` views, ``S' = config.crop``.
    """
    variance = torch.ones(x.shape[0], x.shape[1], device=x.device, dtype=x.dtype)
    v1 = augment(x, config, bands=bands, variance=variance, generator=generator)
    v2 = augment(x, config, bands=bands, variance=variance, generator=generator)
    return v1, v2


def _infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@torch.no_grad()
def retrieval_accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    config: AugmentConfig,
    bands: Sequence[str] | None,
    seed: int = 12345,
    batch_size: int = 256,
) -> float:
    """Fraction of stamps whose second view is the nearest embedding of the first view.

    Parameters
    ----------
    model : `torch.nn.Module`
        The encoder (``forward`` gives unit embeddings).
    x : `torch.Tensor`
        ``(N, C, S, S)`` stamps (held out of training).
    config : `lsst.meas.ml.augment.AugmentConfig`
        The augmentation drawing the views.
    bands : sequence of `str` or `None`
        Channel bands.
    seed : `int`
        Seed of the views (the same views for every model compared).
    batch_size : `int`
        Stamps per forward pass.

    Returns
    -------
    accuracy : `float`
        Top-1 view-retrieval accuracy (chance: 1/N); NaN for fewer than 2
        stamps.
    """
    if len(x) < 2:
        return float("nan")
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    e1, e2 = [], []
    for start in range(0, len(x), batch_size):
        v1, v2 = make_views(x[start : start + batch_size], config, bands, gen)
        e1.append(model(v1))
        e2.append(model(v2))
    a, b = torch.cat(e1), torch.cat(e2)
    hit = (a @ b.T).argmax(dim=1) == torch.arange(len(a), device=a.device)
    model.train(was_training)
    return float(hit.float().mean())


def train_embedding(
    data: PretrainingSet,
    config: EmbeddingTrainingConfig | None = None,
    *,
    provenance: dict[str, Any] | None = None,
    log: logging.Logger | None = None,
) -> TrainingResult:
    """Pre-train the encoder with MoCo v2 and package it.

    Parameters
    ----------
    data : `PretrainingSet`
        Unlabelled stamps, ``stamp_size + 2 * margin`` pixels.
    config : `EmbeddingTrainingConfig`, optional
        Settings (defaults if not given).
    provenance : `dict`, optional
        Extra provenance (e.g. the training data) for the package.
    log : `logging.Logger`, optional
        Progress messages.

    Returns
    -------
    result : `lsst.meas.ml.training.TrainingResult`
        The package (family ``embedding``) and the view-retrieval accuracy
        of the held-out stamps before and after training.

    Raises
    ------
    EmbeddingInputError
        Too few stamps, or stamps of the wrong size.
    """
    config = config or EmbeddingTrainingConfig()
    log = log or _log
    cut = config.stamp_size + 2 * config.margin
    if data.x.ndim != 4 or data.x.shape[-1] != cut or data.x.shape[-2] != cut:
        raise EmbeddingInputError(
            f"Pre-training stamps must be (N, C, {cut}, {cut}) (stamp_size {config.stamp_size} + 2 x margin "
            f"{config.margin}); got {tuple(data.x.shape)}."
        )
    n = len(data)
    if n < 8:
        raise EmbeddingInputError(f"Pre-training needs at least 8 usable stamps; got {n}.")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = select_device(config.device, log=log)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_val = min(max(2, int(round(config.validation_fraction * n))), 512) if n >= 40 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_all = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32))
    x_train = x_all[train_idx].to(device)
    x_val = x_all[val_idx].to(device)
    n_train = len(train_idx)
    batch = int(min(config.batch_size, n_train))
    aug = config.augmentation or telescope_augmentation(config.margin, config.stamp_size)
    if aug.crop != config.stamp_size:
        aug = dataclasses.replace(aug, crop=int(config.stamp_size))
    hyper = {
        "in_channels": int(data.x.shape[1]),
        "stamp_size": int(config.stamp_size),
        "widths": [int(w) for w in config.widths],
        "proj_dim": int(config.proj_dim),
        "pool": str(config.pool),
        "colour_input": bool(config.colour_input),
        "aperture": float(config.aperture),
    }
    model = build_model(ARCHITECTURE, hyper).to(device)
    key_model = copy.deepcopy(model).requires_grad_(False)
    dim = int(config.proj_dim)
    queue_size = int(max(batch, min(config.queue_size, n_train // 2)))
    gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    queue = F.normalize(torch.randn(queue_size, dim, generator=gen, device=device), dim=1)
    queue_ptr = 0
    bands = data.bands
    val_before = retrieval_accuracy(model, x_val, aug, bands) if n_val else float("nan")
    steps_per_epoch = max(1, n_train // batch)
    total_steps = steps_per_epoch * config.epochs
    warmup = steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup)))
        ),
    )
    t0 = time.monotonic()
    losses: list[float] = []
    epochs_done = 0
    model.train()
    for epoch in range(config.epochs):
        perm = torch.from_numpy(rng.permutation(n_train)).to(device)
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * batch : (step + 1) * batch]
            v1, v2 = make_views(x_train[idx], aug, bands, gen)
            q1, q2 = model.project(v1), model.project(v2)
            with torch.no_grad():
                k1, k2 = key_model.project(v1), key_model.project(v2)
            loss = 0.5 * (
                _infonce(q1, k2, queue, config.temperature) + _infonce(q2, k1, queue, config.temperature)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for pk, pq in zip(key_model.parameters(), model.parameters()):
                    pk.mul_(config.momentum).add_(pq.detach(), alpha=1.0 - config.momentum)
                keys = torch.cat([k1, k2])[:queue_size]
                m = len(keys)
                end = queue_ptr + m
                if end <= queue_size:
                    queue[queue_ptr:end] = keys
                else:
                    first = queue_size - queue_ptr
                    queue[queue_ptr:] = keys[:first]
                    queue[: m - first] = keys[first:]
                queue_ptr = end % queue_size
            epoch_loss += float(loss.detach())
        losses.append(epoch_loss / steps_per_epoch)
        epochs_done = epoch + 1
        elapsed = time.monotonic() - t0
        if epoch == 0 or epochs_done % 5 == 0 or epochs_done == config.epochs:
            log.info(
                "epoch %d/%d: InfoNCE loss %.3f (%.0f s)", epochs_done, config.epochs, losses[-1], elapsed
            )
        if config.max_seconds is not None and elapsed > config.max_seconds:
            log.info("Stopping after %d epochs: max_seconds %.0f reached.", epochs_done, config.max_seconds)
            break
    seconds = time.monotonic() - t0
    model.eval()
    val_after = retrieval_accuracy(model, x_val, aug, bands) if n_val else float("nan")
    metrics = {
        "final_loss": losses[-1] if losses else float("nan"),
        "view_retrieval_top1_before": val_before,
        "view_retrieval_top1": val_after,
        "n_validation": int(n_val),
        "epochs_done": epochs_done,
    }
    prov = dict(provenance or {})
    prov.setdefault("training_data", data.source)
    prov["method"] = {
        "name": "MoCo v2 (symmetrised InfoNCE, momentum key encoder, queue of negatives)",
        "temperature": config.temperature,
        "momentum": config.momentum,
        "queue_size": queue_size,
        "batch_size": batch,
        "epochs": epochs_done,
        "lr": config.lr,
        "augmentation": dataclasses.asdict(aug),
    }
    prov["metrics"] = metrics
    prov["training_seconds"] = round(seconds, 1)
    inputs = {
        "channels": int(data.x.shape[1]),
        "bands": list(bands) if bands else None,
        "stamp_size": int(config.stamp_size),
        "bin_factor": int(data.bin_factor),
        # Side image files are read at (after binning) before the central crop: the training stamps'.
        "file_size": int(cut),
        "normalisation": NORMALISATION,
    }
    outputs = {"embedding_dim": int(model.embed_dim), "normalised": True}
    package = ModelPackage.from_model(
        model.cpu(),
        family="embedding",
        architecture=ARCHITECTURE,
        hyperparameters=hyper,
        inputs=inputs,
        outputs=outputs,
        version=config.version,
        provenance=prov,
        name=config.name,
    )
    return TrainingResult(
        package=package,
        metrics=metrics,
        training_seconds=seconds,
        n_train=n_train,
        n_validation=int(n_val),
        report={"loss_per_epoch": losses},
    )
