"""Training-sample influence and spectroscopic target ranking for MBRNN packages.

Influence (which training galaxies made a prediction what it is) uses
TracIn (Pruthi et al. 2020) restricted to the last layer of each ensemble
member, at the final weights, summed over members.  For the softmax
head, the gradient of the cross-entropy of an object with target ``y`` with
respect to the head's weights and bias is ``(p - y) outer [h, 1]``, so the
influence of training galaxy ``j`` on query ``t`` is::

    sum_m  (p_mj - y_j) . (p_mt - y_t)  *  (h_mj . h_mt + 1)

where ``p`` are a member's bin probabilities, ``h`` its last hidden layer
and ``y`` the soft target of a redshift (for a query: its true redshift
when known, otherwise the predicted mode).  Positive values are
*proponents* (a gradient step on ``j`` lowers the loss at ``t``), negative
values *opponents*.

Ranking for spectroscopy (active learning): an object's spectroscopic
redshift helps most where the ensemble disagrees (epistemic uncertainty,
the mutual information between the redshift bin and the member, as in
BALD) and where the object is unlike the training set (the OOD score).
The utility is ``MI + alpha * log1p(ood_score)`` (the expected gradient
length of the last layer replaces MI for a single-member model), and
objects are picked greedily with a penalty for those close in embedding
space to ones already picked, so a batch of targets is not redundant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from astropy.table import Table

from ..packages import ModelPackage
from .features import PhotozColumns, PhotozInputError, column_names, column_values
from .predict import columns_for_package
from .train import soft_targets

__all__ = ["InfluenceResult", "influence_table", "rank_for_spectroscopy", "rank_table", "training_influence"]


def _member_state(model: Any, inputs: np.ndarray, batch: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Member probabilities ``(M, N, K)`` (T=1, as in training) and embeddings ``(M, N, H)``."""
    probs, embs = [], []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch], dtype=np.float32))
            logits, emb = model.member_outputs(x)
            probs.append(torch.softmax(logits, dim=-1))
            embs.append(emb)
    if not probs:
        m, k, h = len(model.members), model.n_bins, model.embed_dim
        return torch.zeros(m, 0, k), torch.zeros(m, 0, h)
    return torch.cat(probs, dim=1), torch.cat(embs, dim=1)


class InfluenceResult(dict):
    """``indices`` (Q, k) into the training rows, ``scores`` (Q, k), ``query_redshift`` (Q,)."""


def training_influence(
    package: ModelPackage,
    train_inputs: np.ndarray,
    train_redshift: np.ndarray,
    query_inputs: np.ndarray,
    *,
    query_redshift: np.ndarray | None = None,
    top_k: int = 10,
    kind: str = "proponents",
) -> InfluenceResult:
    """Find the training galaxies with the largest last-layer TracIn influence on each query.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The photoz package.
    train_inputs, train_redshift : `numpy.ndarray`
        The training set's raw inputs (`PhotozColumns.extract`) and redshifts.
    query_inputs : `numpy.ndarray`
        Raw inputs of the predictions to explain.
    query_redshift : `numpy.ndarray`, optional
        Their true redshifts; default the predicted modes.
    top_k : `int`
        Number of training galaxies returned per query.
    kind : `str`
        ``"proponents"`` (largest positive influence), ``"opponents"``
        (most negative) or ``"absolute"``.

    Returns
    -------
    result : `InfluenceResult`
        ``indices`` (Q, k) into the training rows, ``scores`` (Q, k), the
        influences, and ``query_redshift`` (Q,), the redshifts used as the
        queries' targets; ``k`` is ``top_k`` capped at the training-set
        size.  Training galaxies whose redshift is not finite get a NaN
        score and are ranked last.

    Raises
    ------
    ValueError
        If ``kind`` is not one of the three above.
    """
    if kind not in ("proponents", "opponents", "absolute"):
        raise ValueError(f"kind must be proponents, opponents or absolute, got {kind!r}.")
    model = package.build_model()
    train_inputs = np.asarray(train_inputs, dtype=np.float32)
    query_inputs = np.asarray(query_inputs, dtype=np.float32)
    train_redshift = np.asarray(train_redshift, dtype=np.float64)
    good = np.isfinite(train_redshift)
    p_tr, h_tr = _member_state(model, train_inputs)
    p_q, h_q = _member_state(model, query_inputs)
    if query_redshift is None:
        with torch.no_grad():
            pdf = model.pdf_from_logits(torch.log(p_q.clamp_min(1e-30)))
        centres = 0.5 * (model.bin_edges[:-1] + model.bin_edges[1:])
        query_redshift = centres[pdf.argmax(dim=1)].numpy().astype(np.float64)
    query_redshift = np.asarray(query_redshift, dtype=np.float64)
    y_tr = soft_targets(
        torch.from_numpy(np.nan_to_num(np.minimum(train_redshift, model.z_max - 1e-6))).float(),
        model.n_bins,
        model.z_min,
        model.z_max,
    )
    y_q = soft_targets(
        torch.from_numpy(np.minimum(query_redshift, model.z_max - 1e-6)).float(),
        model.n_bins,
        model.z_min,
        model.z_max,
    )
    scores = torch.zeros(query_inputs.shape[0], train_inputs.shape[0], dtype=torch.float64)
    for m in range(p_tr.shape[0]):
        a = (p_tr[m] - y_tr).double()  # (N, K)
        b = (p_q[m] - y_q).double()  # (Q, K)
        scores += (b @ a.T) * (h_q[m].double() @ h_tr[m].double().T + 1.0)
    scores[:, torch.from_numpy(~good)] = float("nan")
    k = min(int(top_k), train_inputs.shape[0])
    s = scores.numpy()
    key = {"proponents": -s, "opponents": s, "absolute": -np.abs(s)}[kind]
    key = np.where(np.isfinite(key), key, np.inf)
    idx = np.argsort(key, axis=1, kind="stable")[:, :k]
    return InfluenceResult(
        indices=idx, scores=np.take_along_axis(s, idx, axis=1), query_redshift=query_redshift
    )


def influence_table(
    package: ModelPackage,
    train_table: Any,
    query_table: Any,
    *,
    redshift_column: str,
    columns: PhotozColumns | None = None,
    train_columns: PhotozColumns | None = None,
    query_ids: Sequence[Any] | None = None,
    top_k: int = 10,
    kind: str = "proponents",
) -> Table:
    """Run `training_influence` on tables; one row per (query, rank).

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The photoz package.
    train_table : `~typing.Any`
        The training table (astropy, pandas, pyarrow or a mapping of
        arrays); it must have ``redshift_column``.
    query_table : `~typing.Any`
        The table holding the objects to explain.
    redshift_column : `str`
        True-redshift column.
    columns : `PhotozColumns` or `None`, optional
        Input columns of the query table; default those of the package
        (`columns_for_package`).
    train_columns : `PhotozColumns` or `None`, optional
        Input columns of the training table; default ``columns``.
    query_ids : `~collections.abc.Sequence` or `None`, optional
        Identifiers (``columns.id_column``) of the query rows to explain;
        default every row of ``query_table``.  The query's true redshift is
        used when ``query_table`` has ``redshift_column``.
    top_k : `int`, optional
        Number of training galaxies returned per query.
    kind : `str`, optional
        ``"proponents"``, ``"opponents"`` or ``"absolute"`` (see
        `training_influence`).

    Returns
    -------
    table : `astropy.table.Table`
        ``query_id``, ``rank``, ``train_id``, ``train_redshift``,
        ``influence`` and ``query_redshift`` (the target used).  Rows
        without an id column are identified by their position.

    Raises
    ------
    PhotozInputError
        If ``query_ids`` is given and the query table has no id column or
        lacks one of them, if the training table lacks
        ``redshift_column``, or if an input column is absent or not
        numeric.
    ValueError
        If ``kind`` is not valid.
    """
    columns = columns or columns_for_package(package)
    train_columns = train_columns or columns
    q_names = column_names(query_table)
    if query_ids is not None:
        if columns.id_column not in q_names:
            raise PhotozInputError(f"The query table has no id column {columns.id_column!r}.")
        all_ids = column_values(query_table, columns.id_column, dtype=None)
        positions = []
        for qid in query_ids:
            hit = np.flatnonzero(all_ids == type(all_ids[0])(qid) if len(all_ids) else [])
            if hit.size == 0:
                raise PhotozInputError(
                    f"Object {qid!r} is not in the query table's {columns.id_column!r} column."
                )
            positions.append(int(hit[0]))
        query_table = query_table[positions]
    q_inputs = columns.extract(query_table)
    q_z = None
    if redshift_column in column_names(query_table):
        q_z = column_values(query_table, redshift_column)
    if redshift_column not in column_names(train_table):
        raise PhotozInputError(f"The training table lacks the redshift column {redshift_column!r}.")
    t_z = column_values(train_table, redshift_column)
    res = training_influence(
        package, train_columns.extract(train_table), t_z, q_inputs, query_redshift=q_z, top_k=top_k, kind=kind
    )
    n_q, k = res["indices"].shape
    q_ids = (
        column_values(query_table, columns.id_column, dtype=None)
        if columns.id_column in column_names(query_table)
        else np.arange(n_q)
    )
    t_ids = (
        column_values(train_table, train_columns.id_column, dtype=None)
        if train_columns.id_column in column_names(train_table)
        else np.arange(len(t_z))
    )
    flat = res["indices"].ravel()
    return Table(
        {
            "query_id": np.repeat(np.asarray(q_ids), k),
            "rank": np.tile(np.arange(1, k + 1), n_q),
            "train_id": np.asarray(t_ids)[flat],
            "train_redshift": t_z[flat],
            "influence": res["scores"].ravel(),
            "query_redshift": np.repeat(res["query_redshift"], k),
        }
    )


def rank_for_spectroscopy(
    package: ModelPackage,
    inputs: np.ndarray,
    *,
    n_select: int | None = None,
    ood_weight: float = 0.05,
    diversity: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank unlabelled objects by how much their spectroscopic redshift would help.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The photoz package.
    inputs : `numpy.ndarray`
        Raw inputs of the unlabelled objects.
    n_select : `int`, optional
        Length of the greedy, diversity-aware head of the ranking (default
        ``min(N, 1000)``), picked among the ``3 n_select`` most useful
        objects; the rest follows by utility.
    ood_weight : `float`
        Weight ``alpha`` of ``log1p(ood_score)`` in the utility.
    diversity : `float`
        Strength of the penalty on objects near already selected ones
        (0 ranks by utility alone).

    Returns
    -------
    order : `numpy.ndarray` [int]
        Row indices, most useful first; objects with no usable band last.
    utility : `numpy.ndarray`
        The utility of each row (NaN for objects with no usable band).
    """
    from .features import missing_mask

    model = package.build_model()
    inputs = np.asarray(inputs, dtype=np.float32)
    n = inputs.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    probs, emb = _member_state(model, inputs)
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        ood = model.ood_distance(emb) / model.ood_scale
        nb = model.n_bands
        no_data = missing_mask(x[:, :nb], x[:, nb : 2 * nb]).all(dim=1)
    mean_p = probs.mean(dim=0)
    entropy = lambda p: -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)  # noqa: E731
    if probs.shape[0] > 1:
        info = entropy(mean_p) - entropy(probs).mean(dim=0)
    else:
        info = torch.sqrt((1.0 - (mean_p**2).sum(dim=-1)) * ((emb[0] ** 2).sum(dim=-1) + 1.0))
        info = info / info.median().clamp_min(1e-12)
    utility = (info + ood_weight * torch.log1p(ood)).double().numpy()
    utility[no_data.numpy()] = np.nan
    base = np.where(np.isfinite(utility), utility, -np.inf)
    order = list(np.argsort(-base, kind="stable"))
    n_select = min(n, 1000 if n_select is None else int(n_select))
    if diversity > 0 and n_select > 1:
        # Greedy selection inside the 3 x n_select most useful objects: each pick lowers the
        # utility of candidates close to it in embedding space (by its nearest pick only).
        pool = np.asarray([i for i in order[: 3 * n_select] if np.isfinite(base[i])], dtype=np.int64)
        e = emb.mean(dim=0).double().numpy()
        e = (e - e.mean(axis=0)) / np.clip(e.std(axis=0), 1e-9, None)
        ep = e[pool]
        rng = np.random.default_rng(0)
        scale2 = 0.05 * float(np.median(np.sum((ep - ep[rng.permutation(len(pool))]) ** 2, axis=1)) + 1e-12)
        nearest = np.full(len(pool), np.inf)
        taken = np.zeros(len(pool), dtype=bool)
        chosen: list[int] = []
        for _ in range(min(n_select, len(pool))):
            adjusted = base[pool] * (1.0 - diversity * np.exp(-nearest / scale2))
            adjusted[taken] = -np.inf
            j = int(np.argmax(adjusted))
            taken[j] = True
            chosen.append(int(pool[j]))
            nearest = np.minimum(nearest, np.sum((ep - ep[j]) ** 2, axis=1))
        chosen_set = set(chosen)
        order = chosen + [i for i in order if i not in chosen_set]
    return np.asarray(order, dtype=np.int64), utility


def rank_table(
    package: ModelPackage,
    table: Any,
    *,
    columns: PhotozColumns | None = None,
    n_select: int | None = None,
    ood_weight: float = 0.05,
    diversity: float = 0.5,
) -> Table:
    """Run `rank_for_spectroscopy` on a table: ``rank``, id, ``utility``, most useful first.

    Parameters
    ----------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The photoz package.
    table : `~typing.Any`
        Table of unlabelled objects (astropy, pandas, pyarrow or a mapping
        of arrays).
    columns : `PhotozColumns` or `None`, optional
        Input columns; default those of the package (`columns_for_package`).
    n_select : `int` or `None`, optional
        Length of the diversity-aware head (see `rank_for_spectroscopy`).
    ood_weight : `float`, optional
        Weight of ``log1p(ood_score)`` in the utility.
    diversity : `float`, optional
        Strength of the penalty on objects near already selected ones.

    Returns
    -------
    ranking : `astropy.table.Table`
        ``rank`` (from 1), the id column (row positions if the table has
        none) and ``utility``, one row per object, most useful first.
    """
    columns = columns or columns_for_package(package)
    order, utility = rank_for_spectroscopy(
        package, columns.extract(table), n_select=n_select, ood_weight=ood_weight, diversity=diversity
    )
    names = column_names(table)
    ids = (
        column_values(table, columns.id_column, dtype=None)
        if columns.id_column in names
        else np.arange(len(utility))
    )
    return Table(
        {
            "rank": np.arange(1, order.size + 1),
            columns.id_column: np.asarray(ids)[order],
            "utility": utility[order],
        }
    )
