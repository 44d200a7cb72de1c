"""``meas-ml bench embedding``: embedding throughput and similarity-search speed.

Figures, each with its ratio to a baseline measured in the same process:

* embeddings per second through `predict_embedding` (engine, batching,
  normalisation, table), against the bare encoder loop (``model(x)`` on
  fixed batches under ``torch.inference_mode``): the ratio is the overhead
  of the product path;
* exact search queries per second over ``n_vectors`` unit vectors (in
  clusters of about 500, as embeddings of galaxy populations are)
  (`exact_search`, torch, batched), against NumPy brute force (one matrix
  product and ``argpartition`` per block of queries);
* approximate search (faiss IVF, when installed) queries per second and
  its recall@k against the exact answer, with the speed-up over the exact
  search.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..engine import InferenceConfig, InferenceEngine
from ..packages import ModelPackage
from .features import StampBatch
from .predict import predict_embedding
from .search import ApproximateIndex, exact_search, faiss_available, numpy_search

__all__ = ["run_benchmark", "untrained_package"]


def untrained_package(channels: int = 6, stamp_size: int = 40) -> ModelPackage:
    """Return a freshly initialised encoder package (for speed figures without a trained one).

    Parameters
    ----------
    channels : `int`
        Input channels.
    stamp_size : `int`
        Input side.

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        Family ``embedding``, version ``untrained``.
    """
    from ..models import build_model
    from .features import NORMALISATION
    from .train import EmbeddingTrainingConfig

    defaults = EmbeddingTrainingConfig()
    hyper = {
        "in_channels": channels,
        "stamp_size": stamp_size,
        "pool": defaults.pool,
        "colour_input": defaults.colour_input,
        "aperture": defaults.aperture,
    }
    model = build_model("embedding_cnn", hyper)
    return ModelPackage.from_model(
        model,
        family="embedding",
        architecture="embedding_cnn",
        hyperparameters=hyper,
        inputs={
            "channels": channels,
            "bands": list("ugrizy")[:channels] if channels <= 6 else None,
            "stamp_size": stamp_size,
            "bin_factor": 1,
            "normalisation": NORMALISATION,
        },
        outputs={"embedding_dim": int(model.embed_dim), "normalised": True},
        version="untrained",
        provenance={"note": "untrained, for benchmarks"},
        name="embedding-untrained",
    )


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_benchmark(
    package: ModelPackage | None,
    *,
    n_stamps: int = 2048,
    n_vectors: int = 1_000_000,
    n_queries: int = 1000,
    dim: int = 128,
    k: int = 10,
    threads: int = 2,
    device: str = "cpu",
    repeats: int = 3,
) -> dict[str, Any]:
    """Measure embedding and search speed.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage` or `None`
        The encoder (None: an untrained one of the default architecture,
        same speed).
    n_stamps : `int`
        Stamps embedded.
    n_vectors, n_queries, dim, k : `int`
        Search database size, queries, vector dimension and neighbours.
    threads : `int`
        CPU threads of torch and faiss.
    device : `str`
        Device of the embedding and exact search (``cpu``, ``cuda``, ``auto``).
    repeats : `int`
        Best of this many runs per figure.

    Returns
    -------
    report : `dict` [`str`, `~typing.Any`]
        The figures and ratios.
    """
    torch.set_num_threads(int(threads))
    package = package or untrained_package()
    c, s = int(package.inputs["channels"]), int(package.inputs["stamp_size"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_stamps, c, s, s)).astype(np.float32)
    stamps = StampBatch(
        x,
        np.zeros(n_stamps, np.float32),
        np.zeros(n_stamps, bool),
        np.zeros(n_stamps, bool),
        np.zeros(n_stamps, bool),
    )
    config = InferenceConfig()
    config.device = device
    engine = InferenceEngine(config)
    predict_embedding(package, np.arange(64), _head(stamps, 64), engine)  # warm-up
    t_product = _best(lambda: predict_embedding(package, np.arange(n_stamps), stamps, engine), repeats)
    model = package.build_model().to(engine.device)
    batch = engine.batch_size_for(package, x[:16])
    xt = torch.from_numpy(x).to(engine.device)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, n_stamps, batch):
                model(xt[start : start + batch])
        if engine.device.type == "cuda":
            torch.cuda.synchronize()

    t_bare = _best(bare, repeats)
    report: dict[str, Any] = {
        "threads": threads,
        "device": str(engine.device),
        "stamps": n_stamps,
        "stamp_shape": [c, s, s],
        "embeddings_per_s": n_stamps / t_product,
        "bare_encoder_loop_per_s": n_stamps / t_bare,
        "ratio_to_bare_loop": t_bare / t_product,
    }
    # Search over unit vectors clustered like embeddings of galaxy populations (uniform random
    # vectors on the sphere are the worst case of any inverted-file index: no structure).
    centres = rng.normal(size=(max(1, n_vectors // 500), dim)).astype(np.float32)
    db = centres[rng.integers(0, len(centres), n_vectors)]
    db += (
        (0.5 / np.sqrt(dim))
        * np.linalg.norm(centres, axis=1).mean()
        * rng.normal(size=(n_vectors, dim)).astype(np.float32)
    )
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.choice(n_vectors, n_queries, replace=False)]
    q = q + (0.1 / np.sqrt(dim)) * rng.normal(size=q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    search_device = engine.device
    exact_s, exact_i = exact_search(q[:8], db, k, device=search_device)
    t_exact = _best(lambda: exact_search(q, db, k, device=search_device), 1 if n_vectors > 2e6 else 2)
    exact_s, exact_i = exact_search(q, db, k, device=search_device)
    n_np = min(n_queries, 200)

    def numpy_blocks() -> None:
        for start in range(0, n_np, 50):
            numpy_search(q[start : start + 50], db, k)

    t_numpy = _best(numpy_blocks, 1) * n_queries / n_np
    report.update(
        {
            "search_vectors": n_vectors,
            "search_dim": dim,
            "queries": n_queries,
            "k": k,
            "exact_queries_per_s": n_queries / t_exact,
            "numpy_brute_force_queries_per_s": n_queries / t_numpy,
            "exact_ratio_to_numpy": t_numpy / t_exact,
        }
    )
    if faiss_available():
        import faiss

        faiss.omp_set_num_threads(int(threads))
        t0 = time.perf_counter()
        index = ApproximateIndex(db, nprobe=16)
        t_build = time.perf_counter() - t0
        t_approx = _best(lambda: index.search(q, k), repeats)
        _, approx_i = index.search(q, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(approx_i, exact_i)]))
        report.update(
            {
                "approximate_index": f"faiss IVFFlat, {index.n_lists} lists, nprobe {index.index.nprobe}",
                "approximate_build_s": t_build,
                "approximate_queries_per_s": n_queries / t_approx,
                "approximate_speedup_over_exact": t_exact / t_approx,
                f"approximate_recall_at_{k}": recall,
            }
        )
    else:
        report["approximate_index"] = "faiss not installed (pip install faiss-cpu)"
    return report


def _head(stamps: StampBatch, n: int) -> StampBatch:
    return StampBatch(
        stamps.x[:n], stamps.nan_fraction[:n], stamps.edge[:n], stamps.offimage[:n], stamps.resized[:n]
    )
