"""Metrics per task, with scikit-learn's definitions, computed in NumPy.

scikit-learn's own functions would serve, but importing ``sklearn.metrics`` costs about a second
(scipy comes with it), which is half of a whole ``keel train`` on a small table. The tests check
every value here against scikit-learn's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, precision / recall / F1 (macro and weighted), ROC-AUC, log loss, confusion matrix, report.

    Args:
        y_true: True class indices (n,) into ``labels``.
        probabilities: Predicted probabilities (n, n_classes), rows summing to 1.
        labels: Class labels, in index order.

    Returns:
        A JSON-friendly dict; ``roc_auc`` is None when the true classes make it undefined.
    """
    n_classes = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probabilities.argmax(axis=1)
    confusion = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    precision = _divide(hits, predicted)
    recall = _divide(hits, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    weights = support / max(1, support.sum())
    out: dict[str, Any] = {"n_rows": int(len(y_true)), "accuracy": float(hits.sum() / max(1, len(y_true)))}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(values.mean())
        out[f"{name}_weighted"] = float((values * weights).sum())
    out["roc_auc"] = roc_auc(y_true, probabilities)
    clipped = np.clip(probabilities, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    out["log_loss"] = float(-np.log(clipped[np.arange(len(y_true)), y_true]).mean())
    out["confusion_matrix"] = confusion.tolist()
    plain = _plain(labels)
    out["per_class"] = [
        {"class": label, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(plain, precision, recall, f1, support)
    ]
    out["labels"] = plain
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R² in the target's own units (R² is None for a single row)."""
    error = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    spread = float(((y_true - np.mean(y_true)) ** 2).sum())
    if len(y_true) < 2:
        r2 = None
    elif spread == 0.0:
        r2 = 1.0 if float((error ** 2).sum()) == 0.0 else 0.0  # scikit-learn's convention
    else:
        r2 = 1.0 - float((error ** 2).sum()) / spread
    return {"n_rows": int(len(y_true)), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "mae": float(np.mean(np.abs(error))), "r2": r2}


def binary_roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a positive outranks a negative (ties count half)."""
    ranks = _average_ranks(score)
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """ROC-AUC: binary, or one-vs-rest macro for more classes; None where undefined."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return binary_roc_auc(y_true == 1, probabilities[:, 1])
    if len(present) < probabilities.shape[1]:
        return None  # one-vs-rest AUC is undefined for a class absent from the data
    return float(np.mean([binary_roc_auc(y_true == k, probabilities[:, k]) for k in range(probabilities.shape[1])]))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _plain(labels: Sequence[Any]) -> list[Any]:
    return [label.item() if isinstance(label, np.generic) else label for label in labels]
