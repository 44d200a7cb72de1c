"""Classification metrics shared by every ``meas_ml`` product.

Real/bogus scores and coarse classes (DIA sources today; morphology and
asteroid classes next): ROC AUC, purity and completeness at a threshold,
the threshold that maximises F1, accuracy, confusion matrices, agreement
with a reference score.  A product's own metrics live in its folder
(`lsst.meas.ml.photoz.metrics` for photometric redshifts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "agreement",
    "balanced_accuracy",
    "best_threshold",
    "confusion_matrix",
    "macro_f1",
    "purity_completeness",
    "real_bogus_metrics",
    "roc_auc",
]


# ----------------------------------------------------------------------
# Classification: real/bogus scores and coarse classes (DIA sources).


def _clean(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    ok = np.isfinite(scores)
    return scores[ok], labels[ok]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Compute the area under the ROC curve (rank statistic; ties count one half).

    Parameters
    ----------
    scores : `numpy.ndarray`
        Real/bogus scores; NaN scores are ignored.
    labels : `numpy.ndarray`
        True labels (truthy for real), one per score.

    Returns
    -------
    auc : `float`
        The area; NaN when one class is absent.

    Raises
    ------
    ValueError
        If ``scores`` and ``labels`` differ in shape.
    """
    s, y = _clean(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), float)
    sorted_s = s[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def purity_completeness(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """Compute purity (precision) and completeness (recall) of ``scores >= threshold``.

    Parameters
    ----------
    scores : `numpy.ndarray`
        Real/bogus scores; NaN scores are ignored.
    labels : `numpy.ndarray`
        True labels (truthy for real), one per score.
    threshold : `float`
        The selection threshold.

    Returns
    -------
    purity : `float`
        The fraction of selected objects that are real (NaN if none is
        selected).
    completeness : `float`
        The fraction of real objects selected (NaN if none is real).

    Raises
    ------
    ValueError
        If ``scores`` and ``labels`` differ in shape.
    """
    s, y = _clean(scores, labels)
    selected = s >= threshold
    tp = int((selected & y).sum())
    purity = tp / int(selected.sum()) if selected.any() else float("nan")
    completeness = tp / int(y.sum()) if y.any() else float("nan")
    return float(purity), float(completeness)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Find the threshold maximising F1.

    Candidate thresholds are the distinct scores rounded to 3 decimals.

    Parameters
    ----------
    scores : `numpy.ndarray`
        Real/bogus scores; NaN scores are ignored.
    labels : `numpy.ndarray`
        True labels (truthy for real), one per score.

    Returns
    -------
    threshold : `float`
        The threshold of highest F1; 0.5 when it cannot be determined.

    Raises
    ------
    ValueError
        If ``scores`` and ``labels`` differ in shape.
    """
    s, y = _clean(scores, labels)
    if not y.any() or y.all():
        return 0.5
    best, best_f1 = 0.5, -1.0
    for t in np.unique(np.round(s, 3)):
        p, c = purity_completeness(s, y, t)
        if np.isfinite(p) and p + c > 0:
            f1 = 2 * p * c / (p + c)
            if f1 > best_f1:
                best, best_f1 = float(t), f1
    return best


def accuracy(predicted: Sequence[int] | np.ndarray, truth: Sequence[int] | np.ndarray) -> float:
    """Return the fraction of equal entries.

    Parameters
    ----------
    predicted : `~collections.abc.Sequence` [`int`] or `numpy.ndarray`
        Predicted classes.
    truth : `~collections.abc.Sequence` [`int`] or `numpy.ndarray`
        True classes.

    Returns
    -------
    accuracy : `float`
        The fraction; NaN when ``truth`` is empty.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    return float((predicted == truth).mean()) if len(truth) else float("nan")


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Count ``M[true, predicted]`` class pairs.

    Parameters
    ----------
    predicted : `numpy.ndarray`
        Predicted classes (integers from 0 to ``n_classes - 1``).
    truth : `numpy.ndarray`
        True classes (integers from 0 to ``n_classes - 1``).
    n_classes : `int`
        The number of classes.

    Returns
    -------
    matrix : `numpy.ndarray`, (n_classes, n_classes)
        The int64 counts, true class on the first axis.
    """
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(truth, int), np.asarray(predicted, int)), 1)
    return m


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Return the recall averaged over the classes present in ``truth``.

    Parameters
    ----------
    predicted : `numpy.ndarray`
        Predicted classes.
    truth : `numpy.ndarray`
        True classes.

    Returns
    -------
    balanced : `float`
        Mean per-class recall; NaN when ``truth`` is empty.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if not len(truth):
        return float("nan")
    return float(np.mean([(predicted[truth == k] == k).mean() for k in np.unique(truth)]))


def macro_f1(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """Return the F1 score averaged over the classes present in ``truth``.

    Parameters
    ----------
    predicted : `numpy.ndarray`
        Predicted class indices.
    truth : `numpy.ndarray`
        True class indices.
    n_classes : `int`
        Number of classes.

    Returns
    -------
    f1 : `float`
        Mean over the classes with at least one true member; NaN when
        ``truth`` is empty.
    """
    truth = np.asarray(truth, int)
    if not len(truth):
        return float("nan")
    m = confusion_matrix(np.asarray(predicted, int), truth, n_classes).astype(float)
    tp = np.diag(m)
    support = m.sum(axis=1)
    predicted_n = m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support + predicted_n > 0, 2 * tp / (support + predicted_n), 0.0)
    return float(f1[support > 0].mean())


def agreement(scores: np.ndarray, reference: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Measure the agreement of two real/bogus scores.

    Pairs where either score is not finite are ignored.

    Parameters
    ----------
    scores : `numpy.ndarray`
        The scores to compare.
    reference : `numpy.ndarray`
        The reference scores, one per score.
    threshold : `float`, optional
        The decision threshold of both scores.

    Returns
    -------
    agreement : `dict` [`str`, `float`]
        ``n`` (pairs used), ``spearman`` and ``pearson`` correlations,
        ``same_decision`` (fraction of the same decision at
        ``threshold``) and ``auc_vs_reference`` (ROC AUC of ``scores``
        against ``reference >= threshold``); all but ``n`` are NaN with
        fewer than 3 pairs.
    """
    a = np.asarray(scores, float)
    b = np.asarray(reference, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return {
            "n": float(len(a)),
            "spearman": float("nan"),
            "pearson": float("nan"),
            "same_decision": float("nan"),
            "auc_vs_reference": float("nan"),
        }

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        return r

    def corr(u: np.ndarray, v: np.ndarray) -> float:
        if u.std() == 0 or v.std() == 0:
            return float("nan")
        return float(np.corrcoef(u, v)[0, 1])

    return {
        "n": float(len(a)),
        "spearman": corr(rank(a), rank(b)),
        "pearson": corr(a, b),
        "same_decision": float(((a >= threshold) == (b >= threshold)).mean()),
        "auc_vs_reference": roc_auc(a, b >= threshold),
    }


def real_bogus_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Compute ROC AUC, purity and completeness at ``threshold`` and the counts.

    Parameters
    ----------
    scores : `numpy.ndarray`
        Real/bogus scores; NaN scores are ignored.
    labels : `numpy.ndarray`
        True labels (truthy for real), one per score.
    threshold : `float`
        The selection threshold.

    Returns
    -------
    metrics : `dict` [`str`, `float`]
        ``n``, ``n_real``, ``roc_auc``, ``threshold``, ``purity`` and
        ``completeness``.

    Raises
    ------
    ValueError
        If ``scores`` and ``labels`` differ in shape.
    """
    s, y = _clean(scores, labels)
    purity, completeness = purity_completeness(s, y, threshold)
    return {
        "n": float(len(s)),
        "n_real": float(y.sum()),
        "roc_auc": roc_auc(s, y),
        "threshold": float(threshold),
        "purity": purity,
        "completeness": completeness,
    }
