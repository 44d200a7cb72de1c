"""What every trainer returns, and what trainers share.

Each product's trainer is ``train_<family>(data, config: <Family>TrainingConfig,
...) -> TrainingResult``: the package to save or register, the validation
figures that also went into the package's provenance, and the sizes and
time of the run.  `update_moving_average` is the weight average that the
trainers with an ``ema_decay`` option keep.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .packages import ModelPackage

__all__ = ["TrainingResult", "update_moving_average"]


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
