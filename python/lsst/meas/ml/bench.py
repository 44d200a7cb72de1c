"""Benchmarks of the inference core: cutouts and engine throughput.

Each benchmark compares against a baseline measured in the same process and
prints figures and ratios; none is a pass/fail test.  Run with::

    python -m lsst.meas.ml.bench [--quick] [--only cutouts|engine] [--device cpu|cuda|auto] [--repeats N]

(``meas-ml bench core`` calls `main`.)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .cutouts import cut_stamps, thread_count
from .engine import InferenceConfig, InferenceEngine, clear_model_cache
from .models import build_model
from .packages import ModelPackage

__all__ = ["CUTOUT_TARGET_RATIO", "bench_cutouts", "bench_engine", "best_time", "main"]

#: Target of `bench_cutouts`: `cut_stamps` with a preallocated output at
#: most this many times the in-process memory floor.
CUTOUT_TARGET_RATIO = 3.0


def best_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Return the smallest wall time of ``repeats`` calls of ``fn``.

    Parameters
    ----------
    fn : `~collections.abc.Callable`
        The function to time, called without arguments.
    repeats : `int`, optional
        The number of timed calls.
    warmup : `int`, optional
        The number of untimed calls made first.

    Returns
    -------
    seconds : `float`
        The smallest wall time of one timed call, in seconds (infinite if
        ``repeats`` is not positive).
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _round_robin(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each of ``runs`` over ``repeats`` rounds of one call each (after a warm-up round).

    Interleaving the variants makes a change of machine load affect them alike.
    """
    for fn in runs.values():
        fn()
    best = {key: float("inf") for key in runs}
    for _ in range(max(1, repeats)):
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def bench_cutouts(
    n_sources: int = 2000, image_size: int = 4096, stamp_size: int = 51, repeats: int = 5, seed: int = 0
) -> dict[str, float]:
    """Time `cut_stamps` on three planes (image, variance, mask) against the memory floor.

    The floor (``floor_s``) is an in-process copy of the same number of bytes
    as the stamps (``N * 3 * S * S`` float32) into a preallocated array;
    ``floor_alloc_s`` copies them into a new array (the floor of a call that
    returns new arrays); both copy in one thread.  Timed against them:
    `cut_stamps` with a preallocated ``out`` (the figure the target applies
    to) and allocating its outputs, each with its default ``threads=None``
    (``auto_threads`` threads: torch's thread count, at most the CPU count)
    and with ``threads=1`` (``*_threads1_s``), and, as the alternatives the
    implementation was chosen against, a plain loop of slice copies and one
    fancy-indexing expression of a sliding-window view per plane.  The float planes are NaN-free;
    ``bad_mask_bits=1`` is set on half the mask pixels, so every stamp has
    bad pixels (the dearest case of the bad-pixel test).  Sources are
    uniform over the image (a few stamps cross its edge).  All variants are
    timed round-robin, best of ``repeats`` rounds.

    Parameters
    ----------
    n_sources : `int`, optional
        The number of stamps cut.
    image_size : `int`, optional
        The side of the square planes, in pixels.
    stamp_size : `int`, optional
        The side of the square stamps, in pixels.
    repeats : `int`, optional
        The number of timing rounds.
    seed : `int`, optional
        The seed of the random planes and positions.

    Returns
    -------
    figures : `dict` [`str`, `float`]
        Seconds per call (``*_s``), ratios to ``floor_s`` (``*_ratio``),
        ``cut_stamps_vs_floor_alloc``, ``auto_threads`` and the stamp ``bytes``.
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

    windows = [np.lib.stride_tricks.sliding_window_view(p, (s, s)) for p in planes]

    def fancy_window() -> None:
        for k, window in enumerate(windows):
            out[:, k] = window[y0, x0]

    figures = _round_robin(
        {
            "floor_s": lambda: np.copyto(dst, src),
            "floor_alloc_s": lambda: src.copy(),
            "cut_stamps_out_s": lambda: cut_stamps(planes, x, y, s, bad_mask_bits=1, out=out),
            "cut_stamps_s": lambda: cut_stamps(planes, x, y, s, bad_mask_bits=1),
            "cut_stamps_out_threads1_s": lambda: cut_stamps(
                planes, x, y, s, bad_mask_bits=1, out=out, threads=1
            ),
            "cut_stamps_threads1_s": lambda: cut_stamps(planes, x, y, s, bad_mask_bits=1, threads=1),
            "loop_of_slices_s": loop,
            "fancy_sliding_window_s": fancy_window,
        },
        repeats,
    )
    floor = figures["floor_s"]
    for key in list(figures):
        if key != "floor_s":
            figures[key.removesuffix("_s") + "_ratio"] = figures[key] / floor
    figures["cut_stamps_vs_floor_alloc"] = figures["cut_stamps_s"] / figures["floor_alloc_s"]
    figures["auto_threads"] = float(thread_count(None))
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
    """Measure engine throughput for a small CNN on stamps and an MLP on rows.

    The CNN reads 3 x S x S stamps, the MLP rows of features.

    For each precision (and, for the CNN, with and without channels-last)
    the rate of `InferenceEngine.predict` is measured after a warm-up call;
    the baseline is the same model called batch by batch in plain float32
    without the engine.

    Parameters
    ----------
    device : `str`, optional
        The device of the engine (``"cpu"``, ``"cuda"``, ...).
    n_stamps : `int`, optional
        The number of stamps given to the CNN.
    n_rows : `int`, optional
        The number of feature rows given to the MLP.
    stamp_size : `int`, optional
        The side of the square stamps, in pixels.
    n_features : `int`, optional
        The number of features per row.
    repeats : `int`, optional
        The number of timing rounds.
    precisions : `~collections.abc.Sequence` [`str`], optional
        The engine precisions to time (``"fp32"``, ``"bf16"``, ...).

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
        batch = eng.batch_size_for(package, data[:16])
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
        elif key == "auto_threads":
            text = f"{value:10.0f}"
        elif key.endswith("_ratio") or "_vs_" in key:
            text = f"{value:10.2f} x"
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
    parser.add_argument(
        "--repeats", type=int, default=0, help="timed rounds, best of which is kept (0: 5 cutouts, 3 engine)"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"load average before: {_load()}")
    if args.only in (None, "cutouts"):
        kwargs: dict[str, Any] = {"n_sources": 500, "image_size": 2048} if args.quick else {}
        if args.repeats:
            kwargs["repeats"] = args.repeats
        figures = bench_cutouts(**kwargs)
        n, size = kwargs.get("n_sources", 2000), kwargs.get("image_size", 4096)
        repeats = kwargs.get("repeats", 5)
        title = (
            f"cutouts: {n} sources, 3 planes (image, variance, mask), 51x51 stamps, {size}x{size} image; "
            f"best of {repeats} round-robin rounds; *_ratio = time / floor_s; cut_stamps rows without "
            f"_threads1 use threads=None (auto_threads threads), the floors one thread"
        )
        _print(title, figures)
        ratio = figures["cut_stamps_out_ratio"]
        verdict = "met" if ratio <= CUTOUT_TARGET_RATIO else "NOT met"
        print(
            f"  target: cut_stamps (preallocated out) <= {CUTOUT_TARGET_RATIO:g}x the floor: {ratio:.2f}x, "
            f"{verdict} (allocating call: {figures['cut_stamps_ratio']:.2f}x the floor, "
            f"{figures['cut_stamps_vs_floor_alloc']:.2f}x an allocating copy; "
            f"threads=auto ({figures['auto_threads']:.0f}), threads=1: "
            f"{figures['cut_stamps_out_threads1_ratio']:.2f}x)"
        )
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
    print(f"load average after: {_load()}")
    return 0


def _load() -> str:
    """Describe the 1, 5 and 15 minute load averages and the CPU count.

    Timings depend on them.
    """
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
