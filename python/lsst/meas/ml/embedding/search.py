"""Similarity search over embeddings: exact in torch, approximate through faiss.

* `exact_search`: inner product (cosine similarity for unit vectors) of
  every query with every database vector, in blocks of queries and of
  database rows so that memory stays bounded (a ``(query_batch,
  database_batch)`` score block at a time) up to 10^7 vectors and more,
  keeping a running top-k; on the GPU when one is present.
* `ApproximateIndex`: an inverted-file index (``faiss.IndexIVFFlat`` with
  inner-product metric; ``nprobe`` lists searched per query) for sets where
  the exact search is too slow.  faiss is an optional dependency
  (``pip install 'lsst-meas-ml[search]'``, i.e. ``faiss-cpu``); without it
  `ApproximateIndex` raises `SearchError` naming the extra.
* `similar`: the result as a table (query id, rank, neighbour id, score);
  `mosaic_png` draws the query and its neighbours from their images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..engine import select_device
from ..errors import MeasMlUserError

__all__ = [
    "ApproximateIndex",
    "SearchError",
    "exact_search",
    "faiss_available",
    "load_embeddings",
    "mosaic_png",
    "numpy_search",
    "similar",
]


class SearchError(MeasMlUserError, ValueError):
    """A search that cannot run: wrong dimension, unknown id, missing faiss."""


def faiss_available() -> bool:
    """Return whether the optional faiss library can be imported.

    Returns
    -------
    available : `bool`
        True when ``import faiss`` works.
    """
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _as_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise SearchError(f"{name} must be a (N, D) array of vectors, got shape {a.shape}.")
    if dim is not None and a.shape[1] != dim:
        raise SearchError(
            f"{name} have dimension {a.shape[1]} but the database vectors have dimension {dim}; embed the "
            "queries with the same model package as the database."
        )
    return np.ascontiguousarray(a)


def exact_search(
    queries: Any,
    database: Any,
    k: int = 10,
    *,
    query_batch: int = 1024,
    database_batch: int = 65536,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search, batched.

    Parameters
    ----------
    queries : array-like
        ``(Q, D)`` (or ``(D,)``) query vectors.
    database : array-like
        ``(N, D)`` database vectors (rows with NaN never match).
    k : `int`
        Neighbours per query (at most ``N``).
    query_batch, database_batch : `int`
        Block sizes; the score block is ``query_batch x database_batch``
        float32.
    device : `str` or `torch.device`, optional
        Where to compute (default: CUDA when present, else CPU).

    Returns
    -------
    scores : `numpy.ndarray`
        ``(Q, k)`` float32 inner products, best first.
    indices : `numpy.ndarray`
        ``(Q, k)`` int64 database rows.

    Raises
    ------
    SearchError
        Wrong shapes or dimensions, an empty database, or ``k < 1``.
    """
    db = _as_matrix(database, "database vectors")
    q = _as_matrix(queries, "query vectors", db.shape[1])
    if len(db) == 0:
        raise SearchError("The database holds no vectors.")
    if k < 1:
        raise SearchError(f"k must be at least 1, got {k}.")
    k = min(int(k), len(db))
    dev = select_device(str(device) if device is not None else "auto")
    finite = np.isfinite(db).all(axis=1)
    # No copy of the database unless it has rows to blank out.
    db_t = torch.from_numpy(db if finite.all() else np.where(finite[:, None], db, np.float32(0)))
    bad_t = torch.from_numpy(~finite)
    out_s = np.empty((len(q), k), np.float32)
    out_i = np.empty((len(q), k), np.int64)
    with torch.inference_mode():
        blocks = [(s, min(s + database_batch, len(db))) for s in range(0, len(db), database_batch)]
        db_blocks = None
        if dev.type != "cpu" and db_t.numel() * 4 < 0.5 * _free_memory(dev):
            db_blocks = [(db_t[a:b].to(dev), bad_t[a:b].to(dev)) for a, b in blocks]
        for qs in range(0, len(q), query_batch):
            qt = torch.from_numpy(q[qs : qs + query_batch]).to(dev)
            best_s = torch.full((len(qt), k), -torch.inf, device=dev)
            best_i = torch.zeros((len(qt), k), dtype=torch.long, device=dev)
            for j, (a, b) in enumerate(blocks):
                if db_blocks is not None:
                    block, bad = db_blocks[j]
                else:
                    block, bad = db_t[a:b].to(dev), bad_t[a:b].to(dev)
                scores = qt @ block.T
                scores.masked_fill_(bad[None, :], -torch.inf)
                kk = min(k, b - a)
                s, i = torch.topk(scores, kk, dim=1)
                cat_s = torch.cat([best_s, s], dim=1)
                cat_i = torch.cat([best_i, i + a], dim=1)
                best_s, pos = torch.topk(cat_s, k, dim=1)
                best_i = torch.gather(cat_i, 1, pos)
            out_s[qs : qs + len(qt)] = best_s.cpu().numpy()
            out_i[qs : qs + len(qt)] = best_i.cpu().numpy()
    return out_s, out_i


def _free_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return float("inf")


def numpy_search(queries: Any, database: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k inner-product search in NumPy (the reference answer and baseline).

    Parameters
    ----------
    queries : array-like
        ``(Q, D)`` query vectors.
    database : array-like
        ``(N, D)`` database vectors.
    k : `int`
        Neighbours per query.

    Returns
    -------
    scores, indices : `numpy.ndarray`
        ``(Q, k)`` inner products (best first) and database rows.
    """
    db = np.asarray(database, dtype=np.float32)
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(int(k), len(db))
    scores = q @ db.T
    scores[:, ~np.isfinite(db).all(axis=1)] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, idx, axis=1), idx


class ApproximateIndex:
    """Inverted-file inner-product index (faiss ``IndexIVFFlat``).

    Parameters
    ----------
    database : array-like
        ``(N, D)`` vectors (rows with NaN are left out, never returned).
    n_lists : `int`, optional
        Number of k-means cells; default ``sqrt(N)`` (at most N / 39,
        faiss's minimum of training points per cell), trained on a sample
        of 64 points per cell.
    nprobe : `int`
        Cells searched per query (more: better recall, slower).
    seed : `int`
        Seed of the k-means training.

    Raises
    ------
    SearchError
        faiss is not installed (the message names the extra), or the
        database is empty.
    """

    def __init__(self, database: Any, *, n_lists: int | None = None, nprobe: int = 16, seed: int = 0) -> None:
        try:
            import faiss
        except ImportError:
            raise SearchError(
                "The approximate index needs faiss: pip install faiss-cpu (the 'search' extra of "
                "lsst-meas-ml); exact_search needs nothing more."
            ) from None
        db = _as_matrix(database, "database vectors")
        finite = np.isfinite(db).all(axis=1)
        self.rows = np.flatnonzero(finite)
        if len(self.rows) == 0:
            raise SearchError("The database holds no finite vectors.")
        good = np.ascontiguousarray(db[finite])
        self.dim = db.shape[1]
        n = len(good)
        if n_lists is None:
            n_lists = int(np.sqrt(n))
        n_lists = int(max(1, min(n_lists, n // 39 if n >= 39 else 1)))
        quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = int(seed)
        sample = good
        if n > 64 * n_lists:  # k-means on a sample: 64 points per cell are plenty
            pick = np.random.default_rng(seed).choice(n, 64 * n_lists, replace=False)
            sample = good[np.sort(pick)]
        self.index.train(sample)
        self.index.add(good)
        self.index.nprobe = int(min(nprobe, n_lists))
        self.n_lists = n_lists

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return the approximate top-k of each query.

        Parameters
        ----------
        queries : array-like
            ``(Q, D)`` query vectors.
        k : `int`
            Neighbours per query.

        Returns
        -------
        scores, indices : `numpy.ndarray`
            ``(Q, k)`` inner products and database rows (-1 where fewer
            than ``k`` were found).

        Raises
        ------
        SearchError
            Queries of another dimension.
        """
        q = _as_matrix(queries, "query vectors", self.dim)
        scores, idx = self.index.search(q, int(k))
        rows = np.where(idx >= 0, self.rows[np.clip(idx, 0, None)], -1)
        return scores.astype(np.float32), rows.astype(np.int64)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ids and embeddings from a table written by this product.

    Parameters
    ----------
    path : path-like
        Parquet (or any astropy-readable) table with ``id`` or
        ``objectId`` and ``embedding``.

    Returns
    -------
    ids : `numpy.ndarray`
        The ids, as strings.
    vectors : `numpy.ndarray`
        ``(N, D)`` float32.

    Raises
    ------
    SearchError
        The table has no ``embedding`` or id column.
    """
    from astropy.table import Table

    try:
        table = Table.read(os.fspath(path))
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise SearchError(f"Cannot read embedding table {path}: {type(exc).__name__}: {exc}") from exc
    id_col = next((c for c in ("id", "objectId") if c in table.colnames), None)
    if "embedding" not in table.colnames or id_col is None:
        raise SearchError(
            f"Table {path} needs an 'embedding' column and an 'id' or 'objectId' column; it has "
            f"{table.colnames[:20]}."
        )
    vectors = np.asarray(table["embedding"], dtype=np.float32)
    return np.asarray([str(i) for i in table[id_col]]), vectors.reshape(len(table), -1)


def similar(
    query_ids: Sequence[str] | None,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    query_vectors: np.ndarray | None = None,
    k: int = 10,
    method: str = "exact",
    include_self: bool = False,
    nprobe: int = 16,
) -> Any:
    """Find the nearest neighbours of queries and return them as a table.

    Parameters
    ----------
    query_ids : sequence of `str` or `None`
        Ids (of ``ids``) whose vectors are the queries.
    ids : sequence of `str`
        Id of each database vector.
    vectors : `numpy.ndarray`
        ``(N, D)`` database vectors.
    query_vectors : `numpy.ndarray`, optional
        ``(Q, D)`` query vectors instead of ``query_ids`` (named ``q0``, ``q1``...).
    k : `int`
        Neighbours per query.
    method : `str`
        ``"exact"`` (`exact_search`) or ``"approximate"`` (`ApproximateIndex`).
    include_self : `bool`
        Keep a query itself among its neighbours (default: dropped).
    nprobe : `int`
        Cells searched by the approximate index.

    Returns
    -------
    table : `astropy.table.Table`
        ``query``, ``rank`` (1 = nearest), ``neighbour``, ``score`` (inner
        product).

    Raises
    ------
    SearchError
        Unknown query id, wrong query dimension, unknown method.
    """
    from astropy.table import Table

    ids = [str(i) for i in ids]
    vectors = _as_matrix(vectors, "database vectors")
    if query_vectors is None:
        if not query_ids:
            raise SearchError("Give query ids or query vectors.")
        where = {i: n for n, i in enumerate(ids)}
        missing = [q for q in query_ids if str(q) not in where]
        if missing:
            raise SearchError(f"Query id(s) {missing[:5]} are not in the database ({len(ids)} ids).")
        rows = [where[str(q)] for q in query_ids]
        qv = vectors[rows]
        names = [str(q) for q in query_ids]
    else:
        qv = _as_matrix(query_vectors, "query vectors", vectors.shape[1])
        rows = [-1] * len(qv)
        names = [f"q{i}" for i in range(len(qv))]
    if not np.isfinite(qv).all():
        raise SearchError("A query vector is NaN (its object was not embedded: see its flags).")
    extra = 0 if include_self else 1
    if method == "exact":
        scores, idx = exact_search(qv, vectors, k + extra)
    elif method == "approximate":
        scores, idx = ApproximateIndex(vectors, nprobe=nprobe).search(qv, k + extra)
    else:
        raise SearchError(f"Unknown search method {method!r}; use 'exact' or 'approximate'.")
    out_q, out_r, out_n, out_s = [], [], [], []
    for qi, (name, row) in enumerate(zip(names, rows)):
        rank = 0
        for s, j in zip(scores[qi], idx[qi]):
            if j < 0 or (not include_self and j == row) or rank >= k:
                continue
            rank += 1
            out_q.append(name)
            out_r.append(rank)
            out_n.append(ids[j])
            out_s.append(float(s))
    table = Table()
    table["query"] = np.asarray(out_q, dtype=str)
    table["rank"] = np.asarray(out_r, dtype=np.int32)
    table["neighbour"] = np.asarray(out_n, dtype=str)
    table["score"] = np.asarray(out_s, dtype=np.float32)
    table.meta["method"] = method
    return table


def _display(image: np.ndarray) -> np.ndarray:
    """``(C, S, S)`` to an RGB or grey image in [0, 1] with an asinh stretch."""
    img = np.nan_to_num(np.asarray(image, dtype=np.float32))
    c = img.shape[0]
    if c >= 3:
        picks = [c - 1, c // 2, 0] if c > 3 else [0, 1, 2]  # reddest band as red for multi-band stamps
        rgb = np.stack([img[p] for p in picks], axis=-1)
    else:
        rgb = img[0][..., None].repeat(3, axis=-1)
    rgb = np.arcsinh(rgb / max(float(np.percentile(np.abs(rgb), 50)), 1e-6))
    lo, hi = np.percentile(rgb, 1), np.percentile(rgb, 99.7)
    return np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)


def mosaic_png(
    path: str | os.PathLike[str],
    results: Any,
    images: dict[str, np.ndarray],
    *,
    max_queries: int = 8,
) -> str:
    """Draw each query and its neighbours as one row of a PNG mosaic.

    Parameters
    ----------
    path : path-like
        PNG file to write (atomically).
    results : `astropy.table.Table`
        From `similar`.
    images : `dict` [`str`, `numpy.ndarray`]
        ``(C, S, S)`` image per id (queries and neighbours); missing ones
        are drawn blank.
    max_queries : `int`
        Rows drawn at most.

    Returns
    -------
    path : `str`
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_output

    queries = list(dict.fromkeys(str(q) for q in results["query"]))[:max_queries]
    k = int(max(results["rank"])) if len(results) else 0
    fig, axes = plt.subplots(
        max(1, len(queries)), k + 1, figsize=(1.6 * (k + 1), 1.7 * max(1, len(queries))), squeeze=False
    )
    for r, q in enumerate(queries):
        sel = results[results["query"] == q]
        entries = [(q, "query", None)] + [
            (str(n), f"#{int(rk)}", float(s)) for n, rk, s in zip(sel["neighbour"], sel["rank"], sel["score"])
        ]
        for c in range(k + 1):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(entries):
                ax.axis("off")
                continue
            ident, label, score = entries[c]
            if ident in images:
                ax.imshow(_display(images[ident]), origin="lower")
            title = f"{label} {ident}" if score is None else f"{label} {score:.3f}\n{ident}"
            ax.set_title(title, fontsize=6)
    fig.tight_layout()
    path = os.fspath(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
