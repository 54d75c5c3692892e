"""Metrics per task, with scikit-learn's definitions."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, precision / recall / F1 (macro and weighted), ROC-AUC, log loss, confusion matrix, report.

    Args:
        y_true: True class indices (n,) into ``labels``.
        probabilities: Predicted probabilities (n, n_classes), rows summing to 1.
        labels: Class labels, in index order.

    Returns:
        A JSON-friendly dict; ``roc_auc`` is None when the true classes make it undefined.
    """
    indices = np.arange(len(labels))
    y_pred = probabilities.argmax(axis=1)
    out: dict[str, Any] = {"n_rows": int(len(y_true)), "accuracy": float(skm.accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=indices, average=average, zero_division=0)
        out[f"precision_{average}"], out[f"recall_{average}"], out[f"f1_{average}"] = (
            float(precision), float(recall), float(f1))
    out["roc_auc"] = _roc_auc(y_true, probabilities)
    out["log_loss"] = float(skm.log_loss(y_true, np.clip(probabilities, 1e-15, 1.0), labels=indices))
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=indices).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0)
    out["per_class"] = [
        {"class": label, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(_plain(labels), precision, recall, f1, support)
    ]
    out["labels"] = _plain(labels)
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R² in the target's own units."""
    return {
        "n_rows": int(len(y_true)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else None,
    }


def _roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, probabilities[:, 1]))
    if len(present) < probabilities.shape[1]:
        return None  # one-vs-rest AUC is undefined for a class absent from the data
    return float(skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))


def _plain(labels: Sequence[Any]) -> list[Any]:
    return [label.item() if isinstance(label, np.generic) else label for label in labels]
