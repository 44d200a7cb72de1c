"""What every trainer returns, and what trainers share.

Each product's trainer is ``train_<family>(data, config: <Family>TrainingConfig,
...) -> TrainingResult``: the package to save or register, the validation
figures that also went into the package's provenance, and the sizes and
time of the run.  `update_moving_average` is the weight average that the
trainers with an ``ema_decay`` option keep; `warmup_cosine` is the learning-rate
schedule of the step-counted trainers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from .packages import ModelPackage

__all__ = ["TrainingResult", "update_moving_average", "warmup_cosine"]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Return a schedule: linear warm-up over the first 5% of ``steps``, times a cosine decay to 0.

    Parameters
    ----------
    optimizer : `torch.optim.Optimizer`
        The optimiser whose learning rate is scheduled (call ``step()`` once
        per optimiser step).
    steps : `int`
        Optimiser steps of the run.

    Returns
    -------
    schedule : `torch.optim.lr_scheduler.LambdaLR`
        Factor ``min(1, (s + 1) / warm) * (1 + cos(pi * min(s, steps) / steps)) / 2``
        at step ``s``, with ``warm = max(1, steps // 20)``.
    """
    total = max(1, int(steps))
    warm = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )


@torch.no_grad()
def update_moving_average(
    average: torch.nn.Module, model: torch.nn.Module, decay: float, *, copy_buffers: bool = False
) -> None:
    """Move ``average``'s weights towards ``model``'s: ``w_avg <- decay w_avg + (1 - decay) w``.

    Parameters
    ----------
    average : `torch.nn.Module`
        The averaged copy (e.g. from `copy.deepcopy` of ``model``), updated in place.
    model : `torch.nn.Module`
        The model being trained, of the same architecture.
    decay : `float`
        Weight of the old average, in [0, 1).
    copy_buffers : `bool`, optional
        Also copy ``model``'s buffers (normalisation statistics) as they are.
    """
    for p_avg, p in zip(average.parameters(), model.parameters(), strict=True):
        p_avg.lerp_(p, 1.0 - decay)
    if copy_buffers:
        for b_avg, b in zip(average.buffers(), model.buffers(), strict=True):
            b_avg.copy_(b)


@dataclasses.dataclass
class TrainingResult:
    """The result of a training run.

    Attributes
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The trained model package.
    metrics : `dict` [`str`, `~typing.Any`]
        Validation figures (also in ``package.provenance["metrics"]``).
    training_seconds : `float`
        Wall time of the optimisation.
    n_train, n_validation : `int`
        Number of training and validation examples.
    report : `dict` [`str`, `~typing.Any`]
        Further product-specific figures (thresholds, per-origin metrics).
    """

    package: ModelPackage
    metrics: dict[str, Any]
    training_seconds: float
    n_train: int
    n_validation: int
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
