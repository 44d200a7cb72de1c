"""The one inference engine every ``meas_ml`` task uses.

`InferenceEngine` turns a `~lsst.meas.ml.packages.ModelPackage` and a NumPy
array of inputs (batch on axis 0) into NumPy outputs.  It owns everything
about running a model that tasks must not re-implement:

- the device (``auto``: CUDA, then Apple MPS, then CPU) and the precision
  (``auto``: bfloat16 autocast on GPUs that support it, float32 otherwise);
- ``torch.inference_mode``, channels-last memory for convolutional models,
  optional ``torch.compile``;
- batching, with the batch size from the configuration or chosen from the
  free device memory, and CUDA out-of-memory errors caught and retried with
  half the batch;
- on GPUs, pinned host memory and non-blocking copies, with the next batch
  prepared on the host while the device computes the current one;
- one copy of each model per process, shared by every task object (pipetask
  builds a new task per quantum), keyed by the package checksum, device,
  precision and memory format;
- CPU thread counts that do not oversubscribe multi-process runs, and
  progress logging for long runs.

Tasks embed `InferenceConfig` as a ``ConfigField``::

    inference = pexConfig.ConfigField(dtype=InferenceConfig, doc="Inference engine settings.")
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lsst.pex.config import ChoiceField, Config, Field, RangeField

from .errors import MeasMlUserError
from .packages import ModelPackage

__all__ = [
    "EngineError",
    "InferenceConfig",
    "InferenceEngine",
    "MODEL_CACHE_SIZE",
    "clear_model_cache",
    "dihedral_average",
    "resolve_precision",
    "select_device",
]

_LOG = logging.getLogger("lsst.meas.ml.engine")

#: Largest number of distinct models kept in the process-wide cache.
MODEL_CACHE_SIZE = 8

_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class EngineError(MeasMlUserError, RuntimeError):
    """Raised for an unusable device request or inputs the engine cannot run."""


def _check_device_name(value: str) -> bool:
    if value in ("auto", "cpu", "mps", "cuda"):
        return True
    if value.startswith("cuda:"):
        return value[5:].isdigit()
    return False


class InferenceConfig(Config):
    """Inference settings shared by every ``meas_ml`` task (embed as a
    ``ConfigField``).
    """

    device = Field[str](
        doc="Device to run on: 'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.",
        default="auto",
        check=_check_device_name,
    )
    batchSize = RangeField[int](
        doc="Rows per forward pass; 0 chooses from the input size and free device memory.",
        default=0,
        min=0,
    )
    precision = ChoiceField[str](
        doc="Arithmetic precision of the forward pass (autocast; outputs are always float32).",
        allowed={
            "auto": "bfloat16 on GPUs that support it, float32 elsewhere",
            "fp32": "float32",
            "bf16": "bfloat16 autocast",
            "fp16": "float16 autocast",
        },
        default="auto",
    )
    compile = Field[bool](doc="Compile the model with torch.compile (first call is slow).", default=False)
    channelsLast = Field[bool](
        doc="Use channels-last memory format for models with 2-d convolutions.", default=True
    )
    numThreads = RangeField[int](
        doc=(
            "CPU threads for torch; 0 keeps torch's default in a single process, uses 1 thread in a "
            "multiprocessing worker (pipetask -j N), and respects OMP_NUM_THREADS when set."
        ),
        default=0,
        min=0,
    )


# ----------------------------------------------------------------------
# Device, precision, threads

_ANNOUNCED_CPU_FALLBACK = False


def select_device(name: str = "auto", *, log: logging.Logger | None = None) -> torch.device:
    """Resolve a device name.

    Parameters
    ----------
    name : `str`
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``
        or ``mps``.
    log : `logging.Logger`, optional
        Where ``auto`` reports falling back to the CPU (INFO the first time
        in a process, DEBUG afterwards).

    Raises
    ------
    EngineError
        If the requested accelerator is not available.
    """
    global _ANNOUNCED_CPU_FALLBACK
    log = log or _LOG
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        level = logging.DEBUG if _ANNOUNCED_CPU_FALLBACK else logging.INFO
        log.log(
            level,
            "No GPU available (CUDA and MPS absent in torch %s); running inference on the CPU.",
            torch.__version__,
        )
        _ANNOUNCED_CPU_FALLBACK = True
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise EngineError(
                "Device 'mps' was requested but MPS is not available; use device='auto' or 'cpu'."
            )
        return torch.device("mps")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise EngineError(
                f"Device {name!r} was requested but CUDA is not available (torch {torch.__version__}); "
                "use device='auto' or 'cpu'."
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EngineError(
                f"Device {name!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
        return device
    raise EngineError(f"Unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Return the compute dtype for a precision setting on a device.

    ``auto`` gives bfloat16 on CUDA devices that support it and float32
    elsewhere (CPU, MPS, older GPUs).

    Parameters
    ----------
    precision : `str`
        The precision setting: ``"auto"`` or a name of a supported
        precision (e.g. ``"fp32"``, ``"bf16"``).
    device : `torch.device`
        The device the model runs on.

    Returns
    -------
    dtype : `torch.dtype`
        The compute dtype.

    Raises
    ------
    EngineError
        If ``precision`` is unknown.
    """
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _PRECISIONS[precision]
    except KeyError:
        raise EngineError(
            f"Unknown precision {precision!r}; use one of auto, {', '.join(_PRECISIONS)}."
        ) from None


def _configure_threads(num_threads: int, log: logging.Logger) -> None:
    """Apply the CPU thread policy described in `InferenceConfig.numThreads`."""
    if num_threads > 0:
        if torch.get_num_threads() != num_threads:
            torch.set_num_threads(num_threads)
            log.debug("Using %d CPU threads for torch (configured).", num_threads)
        return
    if os.environ.get("OMP_NUM_THREADS"):
        return
    if multiprocessing.parent_process() is not None and torch.get_num_threads() != 1:
        # One of several worker processes: one thread each avoids
        # oversubscribing the cores the workers already share.
        torch.set_num_threads(1)
        log.debug("Multiprocessing worker: using 1 CPU thread for torch (set numThreads to override).")


# ----------------------------------------------------------------------
# Process-wide model cache


@dataclass
class _LoadedModel:
    module: torch.nn.Module
    channels_last: bool


_MODEL_CACHE: collections.OrderedDict[tuple, _LoadedModel] = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
# Largest batch that did not run out of memory, per model cache key and input shape.
_LEARNED_BATCH: dict[tuple, int] = {}


def clear_model_cache() -> None:
    """Forget every cached model (frees their device memory) and learned batch sizes."""
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()
        _LEARNED_BATCH.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _has_conv2d(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------
# Output structures (tensor, tuple/list of tensors, dict of tensors)


def _map_structure(fn: Callable[[Any], Any], value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _map_structure(fn, v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_map_structure(fn, v) for v in value)
    raise EngineError(
        f"Model output of type {type(value).__name__} is not a tensor, tuple or dict of tensors."
    )


def _concat_structures(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0) if len(parts) > 1 else first
    if isinstance(first, dict):
        return {k: _concat_structures([p[k] for p in parts]) for k in first}
    return tuple(_concat_structures([p[i] for p in parts]) for i in range(len(first)))


def dihedral_average(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
    """Average a model's outputs over the 8 rotations and flips of stamps.

    Test-time augmentation for models whose outputs do not depend on the
    orientation of the stamp (classes, scores, redshifts).  Use it as
    ``engine.predict(package, stamps, forward=dihedral_average)``.

    Parameters
    ----------
    model : callable
        The model; called on ``(N, C, S, S)`` tensors.
    x : `torch.Tensor`
        Stamps, square in the last two axes.
    """
    channels_last = (
        x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    )
    total: Any = None
    for flip in (False, True):
        base = torch.flip(x, dims=(-1,)) if flip else x
        for k in range(4):
            t = torch.rot90(base, k, dims=(-2, -1)) if k else base
            if channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            out = _map_structure(lambda o: o.float(), model(t))
            if total is None:
                total = out
            else:
                total = _add_structures(total, out)
    return _map_structure(lambda o: o / 8.0, total)


def _add_structures(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return a + b
    if isinstance(a, dict):
        return {k: _add_structures(a[k], b[k]) for k in a}
    return tuple(_add_structures(x, y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------


class InferenceEngine:
    """Run model packages on NumPy inputs, batched, on the configured device.

    Parameters
    ----------
    config : `InferenceConfig`, optional
        Settings; defaults to ``InferenceConfig()``.
    log : `logging.Logger`, optional
        Logger for device choice, batch-size changes and progress (a task
        passes ``self.log``).

    Attributes
    ----------
    device : `torch.device`
        Where models run.
    dtype : `torch.dtype`
        Compute precision (float32, bfloat16 or float16).
    progress_interval : `float`
        Seconds between progress log lines during one `predict` call.
    prefetch : `bool`
        Prepare the next batch in a background thread while the current
        one runs (default: on CUDA, where host tensors are also pinned and
        copied without blocking; on a CPU the preparation is a view).
    """

    #: Input bytes per batch aimed at when choosing a batch size on a CPU.
    cpu_batch_bytes = 8 * 1024**2
    #: Fraction of free GPU memory a batch may use when chosen automatically.
    gpu_memory_fraction = 0.5
    #: Largest automatically chosen batch size.
    max_batch_size = 8192

    def __init__(self, config: InferenceConfig | None = None, *, log: logging.Logger | None = None) -> None:
        self.config = config if config is not None else InferenceConfig()
        self.config.validate()
        self.log = log if log is not None else _LOG
        self.device = select_device(self.config.device, log=self.log)
        self.dtype = resolve_precision(self.config.precision, self.device)
        _configure_threads(self.config.numThreads, self.log)
        self.progress_interval = 30.0
        self.prefetch = self.device.type == "cuda"

    def __repr__(self) -> str:
        return f"InferenceEngine(device={self.device}, dtype={self.dtype}, compile={self.config.compile})"

    # ------------------------------------------------------------------
    def _cache_key(self, package: ModelPackage) -> tuple:
        # The weights alone do not define the model: the same tensors under
        # another architecture or hyper-parameters (e.g. stamp size) build
        # another network.
        return (
            package.sha256,
            package.architecture,
            json.dumps(package.hyperparameters, sort_keys=True, default=str),
            str(self.device),
            str(self.dtype),
            bool(self.config.channelsLast),
            bool(self.config.compile),
        )

    def _load(self, package: ModelPackage) -> _LoadedModel:
        key = self._cache_key(package)
        with _CACHE_LOCK:
            loaded = _MODEL_CACHE.get(key)
            if loaded is not None:
                _MODEL_CACHE.move_to_end(key)
                return loaded
            module = package.build_model()
            module.requires_grad_(False)
            module.to(self.device)
            channels_last = bool(self.config.channelsLast) and _has_conv2d(module)
            if channels_last:
                module.to(memory_format=torch.channels_last)
            if self.config.compile:
                try:
                    module = torch.compile(module)
                except Exception as exc:  # platform without a compiler backend
                    self.log.warning("torch.compile failed (%s); running %s uncompiled.", exc, package.name)
            loaded = _LoadedModel(module, channels_last)
            _MODEL_CACHE[key] = loaded
            while len(_MODEL_CACHE) > MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
            self.log.debug("Loaded %r on %s (%s).", package, self.device, self.dtype)
            return loaded

    def model(self, package: ModelPackage) -> torch.nn.Module:
        """Return the model of ``package`` on this engine's device, in eval mode.

        Built once per process for each (checksum, device, precision,
        memory format, compile) combination and then reused.

        Parameters
        ----------
        package : `~lsst.meas.ml.packages.ModelPackage`
            The model package.

        Returns
        -------
        model : `torch.nn.Module`
            The (possibly compiled) model, shared with other callers.
        """
        return self._load(package).module

    # ------------------------------------------------------------------
    def batch_size_for(self, package: ModelPackage, sample: np.ndarray) -> int:
        """Return the batch size `predict` would use for inputs like ``sample``.

        Parameters
        ----------
        package : `~lsst.meas.ml.packages.ModelPackage`
            The model (loaded through the process-wide cache).
        sample : `numpy.ndarray`
            A few input rows (only their shape matters on a CPU; on CUDA
            they are run to measure memory per row).

        Returns
        -------
        batch_size : `int`
            ``config.batchSize`` when set, else the automatic choice.
        """
        if self.config.batchSize > 0:
            return int(self.config.batchSize)
        arrays = {"": np.ascontiguousarray(sample, dtype=np.float32)}
        return int(self._auto_batch_size(self._load(package), arrays, False, _call_single))

    def predict(
        self,
        package: ModelPackage,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        *,
        batch_size: int | None = None,
        forward: Callable[[torch.nn.Module, Any], Any] | None = None,
    ) -> Any:
        """Run a model on every row of ``inputs``.

        Parameters
        ----------
        package : `~lsst.meas.ml.packages.ModelPackage`
            The model.
        inputs : `numpy.ndarray` or `dict` [`str`, `numpy.ndarray`]
            Numeric array with the batch on axis 0, or a dict of such arrays
            (same length) passed to the model as keyword arguments.
        batch_size : `int`, optional
            Overrides ``config.batchSize`` for this call.
        forward : callable, optional
            ``forward(model, batch) -> output`` replacing ``model(batch)``,
            e.g. `dihedral_average`.

        Returns
        -------
        outputs : `numpy.ndarray` or `tuple` or `dict`
            Float32 arrays with the batch on axis 0, structured as the
            model's output (a tensor, a tuple or a dict of tensors).  Zero
            input rows give empty arrays with the right trailing shape.

        Raises
        ------
        EngineError
            For inputs that are not numeric arrays of one length, or when
            even a batch of one row does not fit in device memory.
        """
        arrays, as_kwargs = self._check_inputs(inputs)
        n = len(next(iter(arrays.values())))
        loaded = self._load(package)
        if forward is None:
            forward = _call_kwargs if as_kwargs else _call_single
        if n == 0:
            return self._empty_outputs(loaded, arrays, as_kwargs, forward)

        shape_key = (self._cache_key(package), tuple((k, v.shape[1:]) for k, v in arrays.items()))
        if batch_size is None or batch_size <= 0:
            batch_size = self.config.batchSize
        if not batch_size:
            batch_size = self._auto_batch_size(loaded, arrays, as_kwargs, forward)
        # A size that ran out of memory earlier in this process is not tried again.
        batch_size = min(int(batch_size), _LEARNED_BATCH.get(shape_key, batch_size))
        batch_size = max(1, min(batch_size, n))

        parts: list[Any] = []
        start = 0
        t_start = t_last = time.monotonic()
        pin = self.device.type == "cuda"
        pool = concurrent.futures.ThreadPoolExecutor(1) if self.prefetch else None
        pending: tuple[int, int, concurrent.futures.Future] | None = None
        try:
            while start < n:
                stop = min(start + batch_size, n)
                if pending is not None and pending[:2] == (start, stop):
                    host = pending[2].result()
                else:
                    host = self._prepare(arrays, start, stop, pin=pin)
                pending = None
                if pool is not None and stop < n:
                    # Prepare the next batch on the host while the device computes this one.
                    nxt = (stop, min(stop + batch_size, n))
                    pending = (*nxt, pool.submit(self._prepare, arrays, nxt[0], nxt[1], pin=pin))
                out_of_memory = False
                try:
                    parts.append(self._run_batch(loaded, host, as_kwargs, forward))
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    if batch_size == 1:
                        raise EngineError(
                            f"Model {package.name!r} runs out of memory on {self.device} even with a batch "
                            "of one row; use a smaller model, a device with more memory, or device='cpu'."
                        ) from exc
                    out_of_memory = True
                if out_of_memory:
                    # Outside the except block, so the failed batch's tensors
                    # (held by the traceback) are freed before emptying the cache.
                    pending = host = None
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    batch_size //= 2
                    _LEARNED_BATCH[shape_key] = min(batch_size, _LEARNED_BATCH.get(shape_key, batch_size))
                    self.log.warning(
                        "Out of memory on %s with model %r; retrying with batch size %d.",
                        self.device,
                        package.name,
                        batch_size,
                    )
                    continue
                start = stop
                now = time.monotonic()
                if now - t_last >= self.progress_interval and start < n:
                    t_last = now
                    self.log.info(
                        "%s: %d/%d rows done (%.0f rows/s).", package.name, start, n, start / (now - t_start)
                    )
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        elapsed = time.monotonic() - t_start
        if elapsed >= self.progress_interval:
            self.log.info("%s: %d rows in %.1f s (%.0f rows/s).", package.name, n, elapsed, n / elapsed)
        return _concat_structures(parts)

    # ------------------------------------------------------------------
    @staticmethod
    def _check_inputs(inputs: Any) -> tuple[dict[str, np.ndarray], bool]:
        as_kwargs = isinstance(inputs, Mapping)
        raw = dict(inputs) if as_kwargs else {"": inputs}
        if not raw:
            raise EngineError("predict() was given an empty dict of inputs.")
        arrays: dict[str, np.ndarray] = {}
        for key, value in raw.items():
            label = f"input {key!r}" if as_kwargs else "input array"
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            array = np.asarray(value)
            if array.ndim == 0:
                raise EngineError(f"{label} is a scalar; give an array with the batch on axis 0.")
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.issubdtype(
                array.dtype, np.complexfloating
            ):
                raise EngineError(f"{label} has dtype {array.dtype}; the engine needs numeric arrays.")
            arrays[key] = array
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise EngineError(f"Inputs have different numbers of rows: {lengths}.")
        return arrays, as_kwargs

    def _prepare(
        self, arrays: dict[str, np.ndarray], start: int, stop: int, *, pin: bool
    ) -> dict[str, torch.Tensor]:
        """Host tensors (float32, contiguous, optionally pinned) for rows ``start:stop``."""
        out = {}
        for key, array in arrays.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array[start:stop], dtype=np.float32))
            out[key] = tensor.pin_memory() if pin else tensor
        return out

    def _run_batch(
        self, loaded: _LoadedModel, host: dict[str, torch.Tensor], as_kwargs: bool, forward: Callable
    ) -> Any:
        non_blocking = self.device.type == "cuda"
        batch = {}
        for key, tensor in host.items():
            t = tensor.to(self.device, non_blocking=non_blocking)
            if loaded.channels_last and t.ndim == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            batch[key] = t
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = forward(loaded.module, batch if as_kwargs else batch[""])
            return _map_structure(lambda t: t.detach().float().cpu().numpy(), out)

    def _empty_outputs(
        self, loaded: _LoadedModel, arrays: dict[str, np.ndarray], as_kwargs: bool, forward: Callable
    ) -> Any:
        """Empty outputs with the trailing shapes learned from a one-row dummy batch."""
        dummy = {k: torch.zeros((1,) + v.shape[1:], dtype=torch.float32) for k, v in arrays.items()}
        try:
            out = self._run_batch(loaded, dummy, as_kwargs, forward)
        except Exception as exc:
            raise EngineError(
                f"Cannot determine the output shape for zero input rows of trailing shapes "
                f"{ {k: v.shape[1:] for k, v in arrays.items()} }: the model fails on them ({exc})."
            ) from exc
        return _map_structure_np(lambda a: np.empty((0,) + a.shape[1:], dtype=np.float32), out)

    def _auto_batch_size(
        self, loaded: _LoadedModel, arrays: dict[str, np.ndarray], as_kwargs: bool, forward: Callable
    ) -> int:
        """Choose a batch size from the row size and, on CUDA, measured memory per row."""
        row_bytes = max(1, sum(int(np.prod(v.shape[1:], dtype=np.int64)) * 4 for v in arrays.values()))
        if self.device.type == "cuda":
            probe = int(min(16, len(next(iter(arrays.values())))))
            torch.cuda.synchronize(self.device)
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            try:
                self._run_batch(loaded, self._prepare(arrays, 0, probe, pin=False), as_kwargs, forward)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                torch.cuda.empty_cache()
                return 1
            per_row = max(row_bytes, (torch.cuda.max_memory_allocated(self.device) - base) / probe)
            free, _ = torch.cuda.mem_get_info(self.device)
            size = int(self.gpu_memory_fraction * free / per_row)
        else:
            target = self.cpu_batch_bytes * (4 if self.device.type == "mps" else 1)
            size = target // row_bytes
        size = max(1, min(self.max_batch_size, size))
        # A power of two keeps kernels' shapes few (and torch.compile recompilations rare).
        return 1 << int(math.log2(size))


def _map_structure_np(fn: Callable[[np.ndarray], np.ndarray], value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_structure_np(fn, v) for k, v in value.items()}
    return tuple(_map_structure_np(fn, v) for v in value)


def _call_single(model: torch.nn.Module, batch: torch.Tensor) -> Any:
    return model(batch)


def _call_kwargs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    return model(**batch)
