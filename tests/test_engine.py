"""Tests of the shared inference engine."""

from __future__ import annotations

import logging

import lsst.meas.ml.engine as engine_module
import numpy as np
import pytest
import torch
from lsst.meas.ml.engine import (
    EngineError,
    InferenceConfig,
    InferenceEngine,
    clear_model_cache,
    dihedral_average,
    resolve_precision,
    select_device,
)
from lsst.meas.ml.models import build_model
from lsst.meas.ml.packages import ModelPackage
from lsst.pex.config import Config, ConfigField

CNN_HP = {"in_channels": 3, "stamp_size": 15, "n_outputs": 4, "widths": [4, 8]}
MLP_HP = {"n_features": 6, "n_outputs": 3, "hidden": [16, 16]}


def _package(arch: str, hp: dict, seed: int = 0) -> ModelPackage:
    torch.manual_seed(seed)
    model = build_model(arch, hp)
    # Non-trivial batch-norm statistics so eval mode matters.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return ModelPackage.from_model(
        model,
        family="generic",
        architecture=arch,
        hyperparameters=hp,
        inputs={},
        outputs={},
        version="1",
        provenance={},
    )


@pytest.fixture(scope="module")
def cnn() -> ModelPackage:
    return _package("stamp_cnn", CNN_HP)


@pytest.fixture(scope="module")
def mlp() -> ModelPackage:
    return _package("mlp", MLP_HP)


@pytest.fixture
def stamps() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(37, 3, 15, 15)).astype(np.float32)


def cpu_engine(**overrides) -> InferenceEngine:
    config = InferenceConfig()
    config.device = "cpu"
    for key, value in overrides.items():
        setattr(config, key, value)
    return InferenceEngine(config)


def reference(package: ModelPackage, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return package.build_model()(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def test_predict_matches_plain_model(cnn, stamps):
    engine = cpu_engine(batchSize=8)
    out = engine.predict(cnn, stamps)
    assert out.dtype == np.float32 and out.shape == (37, 4)
    np.testing.assert_allclose(out, reference(cnn, stamps), rtol=1e-5, atol=1e-5)


def test_mlp_float64_and_int_inputs(mlp):
    rows = np.random.default_rng(2).normal(size=(50, 6))
    engine = cpu_engine()
    out = engine.predict(mlp, rows)  # float64 in, float32 out
    np.testing.assert_allclose(out, reference(mlp, rows), rtol=1e-5, atol=1e-6)
    ints = np.arange(12).reshape(2, 6)
    np.testing.assert_allclose(engine.predict(mlp, ints), reference(mlp, ints), rtol=1e-5, atol=1e-5)


def test_cpu_results_deterministic_and_batch_independent(cnn, stamps):
    engine = cpu_engine()
    a = engine.predict(cnn, stamps, batch_size=5)
    b = engine.predict(cnn, stamps, batch_size=5)
    c = engine.predict(cnn, stamps, batch_size=37)
    np.testing.assert_array_equal(a, b)
    engine.prefetch = True
    np.testing.assert_array_equal(engine.predict(cnn, stamps, batch_size=5), a)
    np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_model_cached_across_engines(cnn):
    clear_model_cache()
    first = cpu_engine().model(cnn)
    # A new engine (as a new task object per quantum would make) reuses it.
    assert cpu_engine().model(cnn) is first
    # Same weights read back from bytes: same checksum, same cached model.
    assert cpu_engine().model(ModelPackage.from_bytes(cnn.to_bytes())) is first
    # Different precision: a different entry.
    assert cpu_engine(precision="bf16").model(cnn) is not first
    assert not first.training
    assert not any(p.requires_grad for p in first.parameters())


def test_channels_last_used_for_convolutions_only(cnn, mlp):
    conv = cpu_engine(channelsLast=True).model(cnn)
    weight = next(m.weight for m in conv.modules() if isinstance(m, torch.nn.Conv2d))
    assert weight.is_contiguous(memory_format=torch.channels_last)
    plain = cpu_engine(channelsLast=False).model(cnn)
    weight = next(m.weight for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    assert weight.is_contiguous()
    seen = []
    handle = conv.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        cpu_engine(channelsLast=True).predict(cnn, np.zeros((2, 3, 15, 15), np.float32))
    finally:
        handle.remove()
    assert seen == [True]


def test_bf16_close_to_fp32(cnn, stamps):
    fp32 = cpu_engine(precision="fp32").predict(cnn, stamps)
    bf16_engine = cpu_engine(precision="bf16")
    assert bf16_engine.dtype == torch.bfloat16
    bf16 = bf16_engine.predict(cnn, stamps)
    assert bf16.dtype == np.float32
    assert np.abs(bf16 - fp32).max() < 0.1 * np.abs(fp32).max()


def test_zero_rows_give_empty_typed_outputs(cnn, mlp):
    engine = cpu_engine()
    out = engine.predict(cnn, np.zeros((0, 3, 15, 15), np.float32))
    assert out.shape == (0, 4) and out.dtype == np.float32
    out = engine.predict(mlp, np.zeros((0, 6)))
    assert out.shape == (0, 3) and out.dtype == np.float32
    with pytest.raises(EngineError, match="zero input rows"):
        engine.predict(mlp, np.zeros((0, 7)))


def test_tuple_and_dict_outputs_and_dict_inputs(mlp):
    rows = np.random.default_rng(3).normal(size=(9, 6)).astype(np.float32)
    engine = cpu_engine(batchSize=4)
    ref = reference(mlp, rows)

    def as_tuple(model, x):
        y = model(x)
        return y, y.sum(dim=1)

    first, total = engine.predict(mlp, rows, forward=as_tuple)
    np.testing.assert_allclose(first, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total, ref.sum(axis=1), rtol=1e-5, atol=1e-5)
    out = engine.predict(mlp, rows, forward=lambda m, x: {"logits": m(x), "p": torch.softmax(m(x), 1)})
    assert set(out) == {"logits", "p"} and out["p"].shape == (9, 3)
    empty = engine.predict(mlp, rows[:0], forward=as_tuple)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0,)

    def kw_forward(model, batch):
        return model(batch["a"] + batch["b"])

    out = engine.predict(mlp, {"a": rows, "b": rows}, forward=kw_forward)
    np.testing.assert_allclose(out, reference(mlp, 2 * rows), rtol=1e-5, atol=1e-5)
    with pytest.raises(EngineError, match="different numbers of rows"):
        engine.predict(mlp, {"a": rows, "b": rows[:3]}, forward=kw_forward)


def test_bad_inputs(mlp):
    engine = cpu_engine()
    with pytest.raises(EngineError, match="dtype"):
        engine.predict(mlp, np.array([["a"] * 6]))
    with pytest.raises(EngineError, match="scalar"):
        engine.predict(mlp, np.float32(1.0))


@pytest.mark.parametrize("prefetch", [False, True])
def test_out_of_memory_halves_batch_and_completes(cnn, stamps, caplog, prefetch):
    """A forward hook plays a GPU that cannot hold more than 6 stamps."""
    clear_model_cache()
    engine = cpu_engine()
    engine.prefetch = prefetch  # the background preparation used on GPUs
    unconstrained = engine.predict(cnn, stamps, batch_size=32)
    # The same batches as the run that ends at 4 rows per batch.
    expected = engine.predict(cnn, stamps, batch_size=4)
    model = engine.model(cnn)
    sizes = []

    def hook(module, args):
        sizes.append(args[0].shape[0])
        if args[0].shape[0] > 6:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.register_forward_pre_hook(hook)
    try:
        with caplog.at_level(logging.WARNING, logger="lsst.meas.ml.engine"):
            out = engine.predict(cnn, stamps, batch_size=32)
        # The halved size is remembered, process-wide, for the next call of this model.
        sizes.clear()
        cpu_engine().predict(cnn, stamps, batch_size=32)
        assert max(sizes) == 4
    finally:
        handle.remove()
        clear_model_cache()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, unconstrained, rtol=1e-5, atol=1e-6)
    assert "retrying with batch size 16" in caplog.text and "retrying with batch size 4" in caplog.text


def test_out_of_memory_with_one_row_is_a_clear_error(mlp):
    engine = cpu_engine()
    model = engine.model(mlp)

    def hook(module, args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    handle = model.register_forward_pre_hook(hook)
    try:
        with pytest.raises(EngineError, match="out of memory .* even with a batch of one row"):
            engine.predict(mlp, np.zeros((3, 6)), batch_size=2)
    finally:
        handle.remove()


def test_other_errors_are_not_retried(mlp):
    with pytest.raises(ValueError, match=r"MLP expects rows of shape \(N, 6\)"):
        cpu_engine().predict(mlp, np.zeros((3, 5)))


def test_no_gpu_falls_back_to_cpu_with_one_log_line(caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(engine_module, "_ANNOUNCED_CPU_FALLBACK", False)
    with caplog.at_level(logging.INFO, logger="lsst.meas.ml.engine"):
        engine = InferenceEngine()
        InferenceEngine()
    assert engine.device == torch.device("cpu") and engine.dtype == torch.float32
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and "No GPU" in r.getMessage()]
    assert len(lines) == 1 and "running inference on the CPU" in lines[0].getMessage()
    with pytest.raises(EngineError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(EngineError, match="MPS is not available"):
        select_device("mps")


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("fp16", cpu) == torch.float16
    with pytest.raises(EngineError, match="Unknown precision"):
        resolve_precision("int4", cpu)


def test_config_embeds_and_validates():
    class TaskConfig(Config):
        inference = ConfigField(dtype=InferenceConfig, doc="engine")

    config = TaskConfig()
    config.inference.batchSize = 64
    config.inference.device = "cuda:1"
    config.validate()
    with pytest.raises(Exception, match="device"):
        config.inference.device = "gpu"
        config.validate()
    with pytest.raises(Exception):
        config.inference.precision = "fp8"


def test_num_threads_config():
    before = torch.get_num_threads()
    try:
        cpu_engine(numThreads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_auto_batch_size_cpu(cnn, mlp):
    engine = cpu_engine()
    loaded = engine._load(cnn)
    size = engine._auto_batch_size(loaded, {"": np.zeros((1, 3, 15, 15))}, False, engine_module._call_single)
    assert size & (size - 1) == 0 and 1 <= size <= engine.max_batch_size
    assert size == 2 ** int(np.log2(engine.cpu_batch_bytes // (3 * 15 * 15 * 4)))


def test_dihedral_average_invariant_and_matches_manual(cnn, stamps):
    engine = cpu_engine()
    tta = engine.predict(cnn, stamps, forward=dihedral_average)
    rotated = np.ascontiguousarray(np.rot90(stamps, 1, axes=(2, 3)))
    flipped = np.ascontiguousarray(stamps[..., ::-1])
    for variant in (rotated, flipped):
        out = engine.predict(cnn, variant, forward=dihedral_average)
        np.testing.assert_allclose(out, tta, rtol=1e-4, atol=1e-5)
    manual = np.mean(
        [
            reference(cnn, np.ascontiguousarray(np.rot90(s, k, axes=(2, 3))))
            for s in (stamps, stamps[..., ::-1])
            for k in range(4)
        ],
        axis=0,
    )
    np.testing.assert_allclose(tta, manual, rtol=1e-4, atol=1e-5)


def test_progress_logging(mlp, caplog):
    engine = cpu_engine(batchSize=10)
    engine.progress_interval = 0.0
    with caplog.at_level(logging.INFO, logger="lsst.meas.ml.engine"):
        engine.predict(mlp, np.zeros((35, 6)))
    text = caplog.text
    assert "10/35 rows done" in text and "35 rows in" in text


@pytest.mark.slow
def test_compile_matches_eager(mlp):
    rows = np.random.default_rng(4).normal(size=(16, 6)).astype(np.float32)
    eager = cpu_engine().predict(mlp, rows)
    compiled = cpu_engine(compile=True).predict(mlp, rows)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_engine_benchmark_runs_small():
    """The benchmark code path works (figures are printed by `meas-ml bench core`, not judged here)."""
    from lsst.meas.ml.bench import bench_engine

    figures = bench_engine(n_stamps=4, n_rows=64, stamp_size=9, repeats=1, precisions=("fp32",))
    for key in ("cnn_baseline_per_s", "cnn_fp32_per_s", "cnn_fp32_channels_last_per_s", "mlp_fp32_per_s"):
        assert figures[key] > 0


def _threads_in_worker() -> tuple[int, str | None]:
    import os

    config = InferenceConfig()
    config.device = "cpu"
    InferenceEngine(config)
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_one_thread_per_multiprocessing_worker():
    """Worker processes (as pipetask -j N makes) use one torch thread each."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        threads, omp = pool.apply(_threads_in_worker)
    assert threads == (int(omp) if omp else 1)
