"""Training the DLA network on DLAs injected into simulated DLA-free sightlines.

`make_windows` simulates sightlines (`~lsst.meas.ml.dla.simulate`), puts
them through the same preparation as real spectra
(`~lsst.meas.ml.dla.features.prepare_spectrum`), and cuts training
windows with per-pixel labels: pixels within ``half_width`` of a DLA
centre (log N >= 20.0) are positive, with the offset to the centre and
log N(HI) as regression targets; every other pixel (forest, Lyman-limit
systems, sub-DLAs with log N < 20, emission lines, masked or padded
pixels) is negative.  Half the windows are placed on a DLA when the
sightline has one, half at random.

`train_dla` optimises `~lsst.meas.ml.models.dla.dla_loss` with AdamW and a
cosine schedule, then runs the whole prediction path on held-out simulated
sightlines to set the package's log N(HI) scatter floor and record
completeness and purity in its provenance.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from ..models.dla import DlaCnn, dla_loss
from ..packages import ModelPackage
from ..training import TrainingResult, warmup_cosine
from .features import N_CHANNELS, PreparedSpectrum, grid_index, prepare_spectrum
from .simulate import SimulationConfig, simulate_sightline
from .voigt import LYA

__all__ = ["DlaTrainingConfig", "make_windows", "train_dla"]


@dataclasses.dataclass
class DlaTrainingConfig:
    """Settings of `train_dla`.

    Attributes
    ----------
    n_sightlines : `int`
        Simulated training sightlines (two windows each).
    n_validation : `int`
        Held-out sightlines (whole-path validation).
    window : `int`
        Window length (grid pixels).
    margin : `int`
        Pixels discarded at each end of a window at prediction.
    half_width : `int`
        Half-width of the positive label around a DLA centre (pixels).
    channels : `int`
        Width of the network.
    dilations : `tuple` [`int`, ...]
        Dilations of its residual blocks.
    epochs, batch_size : `int`
        Optimisation length and batch size.
    lr : `float`
        Peak learning rate.
    seed : `int`
        Random seed (simulation and initialisation).
    num_threads : `int`
        Torch threads (0: leave as is).
    version : `str`
        Package version.
    simulation : `~lsst.meas.ml.dla.simulate.SimulationConfig`
        Ranges of the simulated sightlines.
    """

    n_sightlines: int = 12000
    n_validation: int = 600
    window: int = 512
    margin: int = 96
    half_width: int = 40
    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 1, 2, 4, 8)
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    num_threads: int = 0
    version: str = "0.1.0"
    simulation: SimulationConfig = dataclasses.field(default_factory=SimulationConfig)


def _labels(p: PreparedSpectrum, dlas: list[tuple[float, float]], half: int) -> np.ndarray:
    n = p.inputs.shape[1]
    lab = np.zeros((3, n), dtype=np.float32)
    idx = np.arange(n)
    for z, log_n in dlas:
        if log_n < 20.0:
            continue
        c = float(grid_index(LYA.wrest * (1 + z))) - p.k0
        near = np.abs(idx - c) <= half
        lab[0, near] = 1.0
        lab[1, near] = (c - idx[near]) / half
        lab[2, near] = log_n - 21.0
    return lab


def _cut(arr: np.ndarray, start: int, length: int, fill: tuple[float, ...]) -> np.ndarray:
    c, n = arr.shape
    out = np.empty((c, length), dtype=np.float32)
    out[:] = np.asarray(fill, dtype=np.float32)[:, None]
    a, b = max(start, 0), min(start + length, n)
    if b > a:
        out[:, a - start : b - start] = arr[:, a:b]
    return out


def make_windows(
    rng: np.random.Generator, n_sightlines: int, config: DlaTrainingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate sightlines and cut labelled training windows.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random numbers.
    n_sightlines : `int`
        Sightlines to simulate.
    config : `DlaTrainingConfig`
        Window length, half-width and simulation ranges.

    Returns
    -------
    x : `numpy.ndarray`, (N, 3, window)
        Network inputs.
    y : `numpy.ndarray`, (N, 3, window)
        Label, offset target and log N(HI) - 21 target per pixel.
    """
    length = config.window
    xs, ys = [], []
    for i in range(n_sightlines):
        sl = simulate_sightline(rng, config.simulation, source_id=f"train-{i}")
        p = prepare_spectrum(sl.spectrum)
        if not isinstance(p, PreparedSpectrum):
            continue
        lab = _labels(p, sl.dlas, config.half_width)
        n = p.inputs.shape[1]
        starts = [int(rng.integers(-length // 4, max(n - 3 * length // 4, -length // 4 + 1)))]
        if sl.dlas:
            z, _ = sl.dlas[int(rng.integers(len(sl.dlas)))]
            c = int(grid_index(LYA.wrest * (1 + z))) - p.k0
            starts.append(c - int(rng.integers(config.margin, length - config.margin)))
        for s in starts:
            xs.append(_cut(p.inputs, s, length, (0.0, 2.5, 1.0)))
            ys.append(_cut(lab, s, length, (0.0, 0.0, 0.0)))
    return np.stack(xs), np.stack(ys)


def _validate(package: ModelPackage, sightlines: list[Any]) -> dict[str, Any]:
    from .metrics import match_catalog
    from .predict import predict_dla

    catalog = predict_dla(package, [s.spectrum for s in sightlines])
    return match_catalog(catalog, sightlines)


def train_dla(config: DlaTrainingConfig | None = None, *, log: Any = None) -> TrainingResult:
    """Train the DLA network on simulated sightlines.

    Parameters
    ----------
    config : `DlaTrainingConfig`, optional
        Settings (default `DlaTrainingConfig()`).
    log : callable, optional
        ``log(str)`` for progress lines (default: silent).

    Returns
    -------
    result : `~lsst.meas.ml.training.TrainingResult`
        The package (family ``dla``, architecture ``dla_cnn``), validation
        completeness, purity and errors, sizes and time.
    """
    cfg = config or DlaTrainingConfig()
    say = log or (lambda _msg: None)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    x, y = make_windows(rng, cfg.n_sightlines, cfg)
    val_rng = np.random.default_rng(cfg.seed + 10_000)
    validation = [
        simulate_sightline(val_rng, cfg.simulation, source_id=f"val-{i}") for i in range(cfg.n_validation)
    ]
    say(
        f"simulated {len(x)} windows and {len(validation)} validation sightlines in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    hyper = {"in_channels": N_CHANNELS, "channels": cfg.channels, "dilations": list(cfg.dilations)}
    model = DlaCnn(**hyper)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = cfg.epochs * max(1, len(x) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = warmup_cosine(opt, steps)
    t_train = time.perf_counter()
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x))
        totals = np.zeros(4)
        for b in range(0, len(x) - cfg.batch_size + 1, cfg.batch_size):
            idx = order[b : b + cfg.batch_size]
            yb = yt[idx]
            loss, parts = dla_loss(model(xt[idx]), yb[:, 0], yb[:, 1], yb[:, 2])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            totals += [float(loss.detach()), parts["classification"], parts["offset"], parts["log_nhi"]]
        nb = max(1, len(x) // cfg.batch_size)
        say(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {totals[0] / nb:.4f} (class {totals[1] / nb:.4f}, "
            f"offset {totals[2] / nb:.4f}, log N {totals[3] / nb:.4f}) {time.perf_counter() - t_train:.0f} s"
        )
    training_seconds = time.perf_counter() - t_train
    model.eval()
    inputs = {
        "channels": N_CHANNELS,
        "grid_dloglam": 1e-4,
        "window": cfg.window,
        "margin": cfg.margin,
        "channel_names": ["flux/envelope", "error/envelope", "mask"],
    }
    outputs = {
        "label_half_width": cfg.half_width,
        "min_votes": 10.0,
        "confidence_threshold": 0.5,
        "log_nhi_sigma_floor": 0.0,
    }
    provenance: dict[str, Any] = {
        "training_data": {
            "simulated_sightlines": cfg.n_sightlines,
            "windows": len(x),
            "seed": cfg.seed,
            "simulation": dataclasses.asdict(cfg.simulation),
        },
        "training": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr},
    }

    def package_with(outs: dict[str, Any], metrics: dict[str, Any]) -> ModelPackage:
        return ModelPackage.from_model(
            model,
            family="dla",
            architecture="dla_cnn",
            hyperparameters=hyper,
            inputs=inputs,
            outputs=outs,
            version=cfg.version,
            provenance=provenance | {"metrics": metrics},
            name="dla-cnn",
        )

    metrics: dict[str, Any] = {}
    if validation:
        from .metrics import choose_confidence_threshold

        # First pass: the log N scatter floor and the confidence threshold (purity >= 0.9 at S/N > 5).
        first = _validate(package_with(outputs, {}), validation)
        scatter = float(first["summary"].get("log_nhi_scatter", 0.0))
        outputs["log_nhi_sigma_floor"] = round(scatter, 4) if np.isfinite(scatter) else 0.0
        outputs["confidence_threshold"] = choose_confidence_threshold(first)
        metrics = _validate(package_with(outputs, {}), validation)["summary"]
        metrics["confidence_threshold"] = outputs["confidence_threshold"]
        say("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return TrainingResult(package_with(outputs, metrics), metrics, training_seconds, len(x), len(validation))
