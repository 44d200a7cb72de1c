"""Benchmarks of the inference core: cutouts and engine throughput.

Each benchmark compares against a baseline measured in the same process and
prints figures and ratios; none is a pass/fail test.  Run with::

    python -m lsst.meas.ml.bench [--quick] [--only cutouts|engine] [--device cpu|cuda|auto]

(``meas-ml bench core`` calls `main`.)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .cutouts import cut_stamps
from .engine import InferenceConfig, InferenceEngine, clear_model_cache
from .models import build_model
from .packages import ModelPackage

__all__ = ["bench_cutouts", "bench_engine", "best_time", "main"]


def best_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn`` (after ``warmup`` calls), in seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_cutouts(
    n_sources: int = 2000, image_size: int = 4096, stamp_size: int = 51, repeats: int = 5, seed: int = 0
) -> dict[str, float]:
    """Time `cut_stamps` on three planes against the memory floor.

    The floor is a copy of the same number of bytes (``N * 3 * S * S``
    float32) into a preallocated array.  Also timed, as alternatives the
    implementation was chosen against: a plain loop of slice copies into a
    preallocated array, NumPy fancy indexing with flat pixel indices, and
    fancy indexing of a sliding-window view.

    Returns
    -------
    figures : `dict` [`str`, `float`]
        Seconds per call (``*_s``) and ratios to the floor (``*_ratio``).
    """
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size)
    image = rng.normal(size=shape).astype(np.float32)
    variance = np.abs(rng.normal(1.0, 0.1, size=shape)).astype(np.float32)
    mask = rng.integers(0, 4, size=shape, dtype=np.int32)
    x = rng.uniform(0, image_size, n_sources)
    y = rng.uniform(0, image_size, n_sources)
    planes = [image, variance, mask]
    s = stamp_size

    src = rng.normal(size=n_sources * 3 * s * s).astype(np.float32)
    dst = np.empty_like(src)
    out = np.empty((n_sources, 3, s, s), np.float32)

    x0 = np.clip(np.floor(x + 0.5).astype(np.int64) - s // 2, 0, image_size - s)
    y0 = np.clip(np.floor(y + 0.5).astype(np.int64) - s // 2, 0, image_size - s)
    xl, yl = x0.tolist(), y0.tolist()

    def loop() -> None:
        for i in range(n_sources):
            r, c = yl[i], xl[i]
            for k, p in enumerate(planes):
                out[i, k] = p[r : r + s, c : c + s]

    offsets = (np.arange(s)[:, None] * image_size + np.arange(s)[None, :]).ravel()

    def fancy_flat() -> None:
        index = (y0 * image_size + x0)[:, None] + offsets[None, :]
        for k, p in enumerate(planes):
            out[:, k] = p.ravel()[index].reshape(n_sources, s, s)

    def fancy_window() -> None:
        for k, p in enumerate(planes):
            out[:, k] = np.lib.stride_tricks.sliding_window_view(p, (s, s))[y0, x0]

    figures = {
        "floor_s": best_time(lambda: np.copyto(dst, src), repeats),
        "cut_stamps_s": best_time(lambda: cut_stamps(planes, x, y, s, bad_mask_bits=1), repeats),
        "cut_stamps_out_s": best_time(lambda: cut_stamps(planes, x, y, s, bad_mask_bits=1, out=out), repeats),
        "loop_of_slices_s": best_time(loop, repeats),
        "fancy_flat_index_s": best_time(fancy_flat, repeats),
        "fancy_sliding_window_s": best_time(fancy_window, repeats),
    }
    floor = figures["floor_s"]
    for key in list(figures):
        if key != "floor_s":
            figures[key.removesuffix("_s") + "_ratio"] = figures[key] / floor
    figures["bytes"] = float(src.nbytes)
    return figures


def _package(arch: str, hp: dict[str, Any]) -> ModelPackage:
    torch.manual_seed(0)
    return ModelPackage.from_model(
        build_model(arch, hp),
        family="generic",
        architecture=arch,
        hyperparameters=hp,
        inputs={},
        outputs={},
        version="bench",
        provenance={"training_data": "none (random weights for benchmarking)"},
    )


def bench_engine(
    device: str = "cpu",
    n_stamps: int = 1024,
    n_rows: int = 200_000,
    stamp_size: int = 51,
    n_features: int = 20,
    repeats: int = 3,
    precisions: Sequence[str] = ("fp32", "bf16"),
) -> dict[str, float]:
    """Engine throughput for a small CNN on 3 x S x S stamps and an MLP on feature rows.

    For each precision (and, for the CNN, with and without channels-last)
    the rate of `InferenceEngine.predict` is measured after a warm-up call;
    the baseline is the same model called batch by batch in plain float32
    without the engine.

    Returns
    -------
    figures : `dict` [`str`, `float`]
        Rates in rows per second (``*_per_s``) and ratios to the baseline.
    """
    rng = np.random.default_rng(0)
    cnn = _package("stamp_cnn", {"in_channels": 3, "stamp_size": stamp_size, "n_outputs": 3})
    mlp = _package("mlp", {"n_features": n_features, "n_outputs": 3, "hidden": [128, 128]})
    stamps = rng.normal(size=(n_stamps, 3, stamp_size, stamp_size)).astype(np.float32)
    rows = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    figures: dict[str, float] = {}

    def engine_for(precision: str, channels_last: bool) -> InferenceEngine:
        config = InferenceConfig()
        config.device = device
        config.precision = precision
        config.channelsLast = channels_last
        return InferenceEngine(config)

    for name, package, data in (("cnn", cnn, stamps), ("mlp", mlp, rows)):
        eng = engine_for("fp32", False)
        batch = eng._auto_batch_size(eng._load(package), {"": data}, False, lambda m, b: m(b))
        model = package.build_model().to(eng.device)
        device_ = eng.device

        def baseline(model=model, data=data, batch=batch, device_=device_) -> None:
            with torch.no_grad():
                for start in range(0, len(data), batch):
                    model(torch.from_numpy(data[start : start + batch]).to(device_)).cpu()

        runs: dict[str, Callable[[], Any]] = {f"{name}_baseline": baseline}
        layouts = (False, True) if name == "cnn" else (False,)
        for precision in precisions:
            for channels_last in layouts:
                eng = engine_for(precision, channels_last)
                key = f"{name}_{precision}" + ("_channels_last" if channels_last else "")
                runs[key] = lambda eng=eng, package=package, data=data: eng.predict(package, data)
        # Round-robin timing, so a change of machine load affects every variant alike.
        best = {key: float("inf") for key in runs}
        for fn in runs.values():
            fn()  # warm-up (model cache, kernels)
        for _ in range(repeats):
            for key, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - t0)
        figures[f"{name}_batch_size"] = float(batch)
        for key, seconds in best.items():
            figures[f"{key}_per_s"] = len(data) / seconds
        for key in best:
            if key != f"{name}_baseline":
                figures[f"{key}_vs_baseline"] = best[f"{name}_baseline"] / best[key]
    clear_model_cache()
    return figures


def _print(title: str, figures: dict[str, float]) -> None:
    print(title)
    for key, value in figures.items():
        if key.endswith("_s") and not key.endswith("_per_s"):
            text = f"{value * 1e3:10.2f} ms"
        elif key.endswith("_per_s"):
            text = f"{value:12.0f} /s"
        elif key == "bytes":
            text = f"{value / 2**20:10.1f} MiB"
        else:
            text = f"{value:10.2f}"
        print(f"  {key:<40s}{text}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the core benchmarks and print their figures.

    Parameters
    ----------
    argv : sequence of `str`, optional
        Command-line arguments (``--quick``, ``--only``, ``--device``,
        ``--threads``, ``--repeats``).
    """
    parser = argparse.ArgumentParser(prog="meas-ml bench core", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["cutouts", "engine"], help="run one benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--device", default="cpu", help="engine device: cpu, cuda, mps, auto (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats (0: default)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} CPU threads")
    if args.only in (None, "cutouts"):
        kwargs: dict[str, Any] = {"n_sources": 500, "image_size": 2048} if args.quick else {}
        if args.repeats:
            kwargs["repeats"] = args.repeats
        figures = bench_cutouts(**kwargs)
        n, size = kwargs.get("n_sources", 2000), kwargs.get("image_size", 4096)
        title = f"cutouts: {n} sources, 3 planes, 51x51 stamps, {size}x{size} image (ratios to the floor)"
        _print(title, figures)
    if args.only in (None, "engine"):
        devices = [args.device]
        if args.device == "cpu" and torch.cuda.is_available():
            devices.append("cuda")
        for device in devices:
            kwargs = {"n_stamps": 256, "n_rows": 20_000} if args.quick else {}
            if args.repeats:
                kwargs["repeats"] = args.repeats
            figures = bench_engine(device=device, **kwargs)
            _print(f"engine on {device}: stamp_cnn on 3x51x51 stamps, mlp on 20-feature rows", figures)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
