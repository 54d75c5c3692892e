"""Metrics per task, with scikit-learn's definitions, computed in NumPy.

scikit-learn's own functions would serve, but importing ``sklearn.metrics`` costs about a second
(scipy comes with it), which is half of a whole ``keel train`` on a small table. The tests check
every value here against scikit-learn's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from keel.data.spelling import label_shown


def predicted_classes(probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The predicted class of each row: the decision rule that keel, its exports and its server share.

    Args:
        probabilities: (n, n_classes) class probabilities.
        threshold: A binary model's decision threshold: class 1 where its probability is at least
            this, else class 0. None: the most probable class (class 0 on an exact tie).

    Returns:
        Class indices (n,) int64.

    Raises:
        ValueError: A threshold is given for other than two classes, or lies outside (0, 1).
    """
    if threshold is None:
        return probabilities.argmax(axis=1).astype(np.int64, copy=False)
    if probabilities.shape[1] != 2 or not 0.0 < threshold < 1.0:
        raise ValueError(f"a decision threshold needs two classes and a value in (0, 1); got {threshold!r} for "
                         f"{probabilities.shape[1]} classes.")
    # Compared in the probabilities' own precision: the ONNX graph compares float32 probabilities
    # with a float32 threshold, and keel.runtime reads those same float32 probabilities.
    positive = probabilities[:, 1] >= probabilities.dtype.type(threshold)
    return positive.astype(np.int64)


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[Any],
                           sample_weight: np.ndarray | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Accuracy, precision / recall / F1 (macro and weighted), ROC-AUC, log loss, confusion matrix, report.

    Args:
        y_true: True class indices (n,) into ``labels``.
        probabilities: Predicted probabilities (n, n_classes), rows summing to 1.
        labels: Class labels, in index order.
        sample_weight: Row weights (n,), or None: every figure is then weighted as scikit-learn's
            ``sample_weight`` weights it (the confusion matrix and supports hold weight sums).
        threshold: A binary model's decision threshold (see :func:`predicted_classes`); the figures
            that count predicted classes (accuracy, precision, recall, F1, the confusion matrix)
            use it, ROC-AUC and log loss do not depend on it. None: the most probable class.

    Returns:
        A JSON-friendly dict; ``roc_auc`` is None when the true classes make it undefined, and then
        ``roc_auc_note`` says why (:func:`roc_auc_undefined`).
    """
    n_classes = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = predicted_classes(probabilities, threshold)
    weights_or_none = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    confusion = np.bincount(y_true * n_classes + y_pred, weights=weights_or_none,
                            minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    total = float(confusion.sum())
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    precision = _divide(hits, predicted)
    recall = _divide(hits, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    weights = support / support.sum() if support.sum() else support * 0.0
    # Averages run over the classes present in y_true or y_pred (rows, whatever their weight), as
    # scikit-learn's labels=None does: a test subset lacking a class is not marked down for it.
    # per_class below still lists every class of the model.
    seen = np.bincount(np.r_[y_true, y_pred], minlength=n_classes) > 0
    out: dict[str, Any] = {"n_rows": int(len(y_true)), "accuracy": float(hits.sum() / total) if total else 0.0}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(values[seen].mean()) if seen.any() else 0.0
        out[f"{name}_weighted"] = float((values * weights).sum())  # an absent class has weight 0 anyway
    out["roc_auc"] = roc_auc(y_true, probabilities, sample_weight=weights_or_none)
    if out["roc_auc"] is None:  # say why where the score is shown ("n/a" alone left the user guessing)
        out["roc_auc_note"] = roc_auc_undefined(y_true, labels, sample_weight=weights_or_none)
    clipped = np.clip(probabilities, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    out["log_loss"] = float(np.average(-np.log(clipped[np.arange(len(y_true)), y_true]), weights=weights_or_none))
    out["confusion_matrix"] = (confusion if weights_or_none is not None else confusion.astype(np.int64)).tolist()
    plain = _plain(labels)
    out["per_class"] = [
        {"class": label, "precision": float(p), "recall": float(r), "f1": float(f),
         "support": int(s) if weights_or_none is None else float(s)}
        for label, p, r, f, s in zip(plain, precision, recall, f1, support)
    ]
    out["labels"] = plain
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """RMSE, MAE and R² in the target's own units (R² is None for a single row), weighted by
    ``sample_weight`` as scikit-learn weights them when given."""
    y_true = np.asarray(y_true, dtype=np.float64)
    error = np.asarray(y_pred, dtype=np.float64) - y_true
    w = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    spread = float((w * (y_true - np.average(y_true, weights=w)) ** 2).sum())
    squares = float((w * error ** 2).sum())
    if len(y_true) < 2:
        r2 = None
    elif spread == 0.0:
        r2 = 1.0 if squares == 0.0 else 0.0  # scikit-learn's convention
    else:
        r2 = 1.0 - squares / spread
    return {"n_rows": int(len(y_true)), "rmse": float(np.sqrt(squares / w.sum())),
            "mae": float(np.average(np.abs(error), weights=w)), "r2": r2}


def binary_roc_auc(positive: np.ndarray, score: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Area under the ROC curve: the probability that a positive outranks a negative (ties count half),
    each pair counting with the product of its rows' weights when ``sample_weight`` is given."""
    if sample_weight is not None:
        return _weighted_roc_auc(positive, score, np.asarray(sample_weight, dtype=np.float64))
    return ranked_roc_auc(positive, average_ranks(score))


def ranked_roc_auc(positive: np.ndarray, ranks: np.ndarray) -> float:
    """ROC-AUC from the scores' 1-based average ranks (ties sharing theirs): one ranking then serves every class."""
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def _weighted_roc_auc(positive: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    order = np.argsort(score, kind="mergesort")
    sorted_score, w, pos = score[order], weight[order], positive[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    negative_per_group = np.add.reduceat(np.where(pos, 0.0, w), starts)
    positive_per_group = np.add.reduceat(np.where(pos, w, 0.0), starts)
    below = np.cumsum(negative_per_group) - negative_per_group  # negative weight strictly lower
    total_positive, total_negative = positive_per_group.sum(), negative_per_group.sum()
    if total_positive == 0 or total_negative == 0:
        return float("nan")  # undefined, as scikit-learn's: every positive or negative weighs 0
    wins = (positive_per_group * (below + 0.5 * negative_per_group)).sum()
    return float(wins / (total_positive * total_negative))


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, sample_weight: np.ndarray | None = None) -> float | None:
    """ROC-AUC: binary, or one-vs-rest macro for more classes; None where undefined (:func:`roc_auc_undefined`
    says why)."""
    if _missing_classes(y_true, probabilities.shape[1], sample_weight) is not None:
        return None
    if probabilities.shape[1] == 2:
        areas = [binary_roc_auc(y_true == 1, probabilities[:, 1], sample_weight)]
    else:
        areas = [binary_roc_auc(y_true == k, probabilities[:, k], sample_weight) for k in range(probabilities.shape[1])]
    # A class whose positives (or negatives) all weigh 0 leaves the area undefined, as in scikit-learn.
    return None if any(np.isnan(area) for area in areas) else float(np.mean(areas))


def roc_auc_undefined(y_true: np.ndarray, labels: Sequence[Any], sample_weight: np.ndarray | None = None) -> str | None:
    """Why ROC-AUC is undefined on these rows, naming the classes (``"class 'x' has no row here"``), or None where
    it is defined. One-vs-rest AUC over the classes present would not compare with other runs' scores, so a
    multiclass score needs every class.

    Args:
        y_true: True class indices (n,) into ``labels``.
        labels: Class labels, in index order.
        sample_weight: Row weights (n,), or None; a class whose rows all weigh 0 counts as absent.
    """
    missing = _missing_classes(y_true, len(labels), sample_weight)
    if missing is None:
        return None
    weighted = "" if sample_weight is None else " of weight above 0"
    present = sorted(set(range(len(labels))) - set(missing))
    if not present:
        return f"there is no row{weighted} here"
    if len(present) == 1:  # binary, or multiclass with a single class left: two classes are the least AUC needs
        return f"every row{weighted} here is of class {label_shown(labels[present[0]])}"
    shown = [label_shown(labels[k]) for k in missing[:3]]
    names = (f"class {shown[0]} has" if len(missing) == 1 else
             f"classes {', '.join(shown)} and {len(missing) - 3} more have" if len(missing) > 3 else
             f"classes {', '.join(shown[:-1])} and {shown[-1]} have")
    return f"{names} no row{weighted} here"


def undefined(metrics: dict[str, Any], name: str) -> str:
    """How an undefined metric is shown: n/a, with the reason where the metrics give one (``roc_auc_note``:
    "n/a (class 'x' has no row here)")."""
    reason = metrics.get(f"{name}_note")
    return f"n/a ({reason})" if reason else "n/a"


def _missing_classes(y_true: np.ndarray, n_classes: int, sample_weight: np.ndarray | None) -> list[int] | None:
    """The classes without rows (or without weight) that leave ROC-AUC undefined, or None where it is defined:
    binary AUC needs both classes, one-vs-rest AUC every class (each class's positives and negatives)."""
    mass = np.bincount(np.asarray(y_true, dtype=np.int64), weights=sample_weight, minlength=n_classes)[:n_classes]
    missing = [int(k) for k in np.flatnonzero(~(mass > 0))]
    if n_classes - len(missing) < 2 or (n_classes > 2 and missing):
        return missing
    return None


def average_ranks(values: np.ndarray) -> np.ndarray:
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
