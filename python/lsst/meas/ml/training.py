"""What every trainer returns.

Each product's trainer is ``train_<family>(data, config: <Family>TrainingConfig,
...) -> TrainingResult``: the package to save or register, the validation
figures that also went into the package's provenance, and the sizes and
time of the run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .packages import ModelPackage

__all__ = ["TrainingResult"]


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
