"""Figures of the morphology classifier: the classification report and the confusion-matrix PNG.

``macro_f1`` is the shared `lsst.meas.ml.metrics.macro_f1` (re-exported).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics import accuracy, confusion_matrix, macro_f1

__all__ = ["classification_report", "macro_f1", "plot_confusion"]


def classification_report(
    predicted: np.ndarray, truth: np.ndarray, class_names: Sequence[str]
) -> dict[str, object]:
    """Return accuracy, macro-F1 and the confusion matrix.

    Parameters
    ----------
    predicted, truth : `numpy.ndarray`
        Class indices.
    class_names : sequence of `str`
        Names of the classes, in index order.

    Returns
    -------
    report : `dict`
        ``n``, ``accuracy``, ``macro_f1``, ``confusion`` (nested lists,
        true class first) and ``class_names``.
    """
    k = len(class_names)
    return {
        "n": int(len(truth)),
        "accuracy": round(accuracy(predicted, truth), 4),
        "macro_f1": round(macro_f1(predicted, truth, k), 4),
        "confusion": confusion_matrix(np.asarray(predicted, int), np.asarray(truth, int), k).tolist(),
        "class_names": list(class_names),
    }


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> str:
    """Write a row-normalised confusion matrix as a PNG.

    Parameters
    ----------
    matrix : `numpy.ndarray`
        ``(K, K)`` counts, true class on the first axis.
    class_names : sequence of `str`
        Class names.
    path : `str`
        Output PNG.
    title : `str`
        Figure title.

    Returns
    -------
    path : `str`
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_output

    m = np.asarray(matrix, float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    k = len(class_names)
    ax.set_xticks(range(k), class_names)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
