"""The numbers behind the figures, in NumPy: ROC and precision-recall curves from sorted scores,
reliability bins, errors by target decile, and the worst-predicted rows.

scikit-learn would give the same curves but costs a second to import; these run on 100k rows
in milliseconds per class. The tests compare them with scikit-learn's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rows kept for a scatter plot: more only darken the picture and slow the drawing.
SCATTER_ROWS = 5000
#: Points kept per curve: 100k-point step curves look the same as 1,000-point ones at 100 dpi.
CURVE_POINTS = 1000


@dataclass(frozen=True)
class ClassCurves:
    """One class's one-vs-rest ROC and precision-recall curves.

    Attributes:
        label: The class label shown in the legend.
        fpr, tpr: ROC curve points, from (0, 0) to (1, 1).
        recall, precision: Precision-recall curve points, recall rising from 0 to 1.
        roc_auc: Area under the ROC curve (NaN when the class is absent or everything is this class).
        average_precision: Area under the precision-recall step curve, as scikit-learn defines it.
        prevalence: The (weighted) share of rows of this class: the no-skill precision.
        support: The (weighted) number of rows of this class.
    """

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    roc_auc: float
    average_precision: float
    prevalence: float
    support: float


def class_curves(label: str, positive: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> ClassCurves:
    """ROC and precision-recall curves of one class against the rest.

    Args:
        label: The class's label.
        positive: (n,) bool, True for rows of the class.
        score: (n,) the class's predicted probability.
        weight: (n,) row weights, or None.

    Returns:
        The curves and their areas.
    """
    w = np.ones(len(score)) if weight is None else np.asarray(weight, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")  # highest score first
    sorted_score = score[order]
    true_weight = np.where(positive[order], w[order], 0.0)
    false_weight = np.where(positive[order], 0.0, w[order])
    # One point per distinct score: the last row of each run of ties.
    last = np.r_[np.flatnonzero(np.diff(sorted_score)), len(score) - 1] if len(score) else np.array([], dtype=int)
    tp = np.cumsum(true_weight)[last]
    fp = np.cumsum(false_weight)[last]
    total_true, total_false = (tp[-1], fp[-1]) if len(last) else (0.0, 0.0)
    tpr = np.r_[0.0, tp / total_true] if total_true > 0 else np.r_[0.0, np.full(len(tp), np.nan)]
    fpr = np.r_[0.0, fp / total_false] if total_false > 0 else np.r_[0.0, np.full(len(fp), np.nan)]
    roc_auc = _trapezoid(fpr, tpr) if total_true > 0 and total_false > 0 else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
    recall = tp / total_true if total_true > 0 else np.zeros(len(tp))
    average_precision = float(np.sum(np.diff(np.r_[0.0, recall]) * precision)) if total_true > 0 else float("nan")
    total = total_true + total_false
    return ClassCurves(label=label, fpr=fpr, tpr=tpr, recall=np.r_[0.0, recall], precision=np.r_[1.0, precision],
                       roc_auc=roc_auc, average_precision=average_precision,
                       prevalence=float(total_true / total) if total else float("nan"), support=float(total_true))


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Area under y(x) by the trapezoid rule (numpy renamed trapz; this works with either version)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def macro_average(curves: list[ClassCurves], label: str = "macro average") -> ClassCurves:
    """The classes' curves averaged point-wise (ROC on a common FPR grid, precision on a common recall grid).

    The areas are the mean of the classes' areas (defined ones only), as the macro scores are.

    Args:
        curves: Every class's curves.
        label: The legend label.

    Returns:
        The averaged curves.
    """
    grid = np.linspace(0.0, 1.0, 201)
    defined = [curve for curve in curves if not np.isnan(curve.roc_auc)]
    tpr = np.mean([np.interp(grid, curve.fpr, curve.tpr) for curve in defined], axis=0) if defined else grid * np.nan
    # Interpolated precision: the best precision at this recall or above, so the curve is monotone.
    precisions = []
    for curve in defined:
        best_above = np.maximum.accumulate(curve.precision[::-1])[::-1]
        precisions.append(best_above[np.minimum(np.searchsorted(curve.recall, grid), len(curve.recall) - 1)])
    precision = np.mean(precisions, axis=0) if precisions else grid * np.nan
    ap = [curve.average_precision for curve in defined]
    return ClassCurves(label=label, fpr=grid, tpr=tpr, recall=grid, precision=precision,
                       roc_auc=float(np.mean([curve.roc_auc for curve in defined])) if defined else float("nan"),
                       average_precision=float(np.mean(ap)) if ap else float("nan"),
                       prevalence=float(np.mean([curve.prevalence for curve in curves])) if curves else float("nan"),
                       support=float(sum(curve.support for curve in curves)))


def thin(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points of a curve, evenly spaced along it, first and last kept."""
    if len(x) <= points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(np.int64))
    return x[keep], y[keep]


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's bins of the top-class probability.

    Attributes:
        edges: The 11 bin edges, 0 to 1.
        confidence: Mean top-class probability per bin (NaN for an empty bin).
        accuracy: Share of rows whose top class is right, per bin (NaN for an empty bin).
        count: (Weighted) rows per bin.
        ece: Expected calibration error: the count-weighted mean of |accuracy − confidence|.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float


def reliability(probabilities: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                bins: int = 10, predicted: np.ndarray | None = None) -> Reliability:
    """Equal-width bins of the top-class probability, with the accuracy in each.

    Args:
        probabilities: (n, n_classes) predicted probabilities.
        target: (n,) true class indices.
        weight: (n,) row weights, or None.
        bins: How many equal-width bins over [0, 1].
        predicted: (n,) predicted class indices, when a threshold decides them; None takes the top class.

    Returns:
        The bins and the expected calibration error.
    """
    top = probabilities.argmax(axis=1) if predicted is None else predicted
    confidence = probabilities[np.arange(len(top)), top].astype(np.float64)
    correct = (top == target).astype(np.float64)
    w = np.ones(len(top)) if weight is None else np.asarray(weight, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(index, weights=w, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=w * confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=w * correct, minlength=bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(accuracy[filled] - mean_confidence[filled])) / count.sum()) \
        if count.sum() else float("nan")
    return Reliability(edges=edges, confidence=mean_confidence, accuracy=accuracy, count=count, ece=ece)


@dataclass(frozen=True)
class Decile:
    """Errors of the rows whose true value falls in one decile of the target."""

    low: float
    high: float
    rows: int
    mae: float
    rmse: float
    bias: float  # mean of predicted − true


def deciles(actual: np.ndarray, predicted: np.ndarray, weight: np.ndarray | None = None, parts: int = 10) -> list[Decile]:
    """MAE, RMSE and bias per decile of the true target (fewer groups when values repeat a lot).

    Args:
        actual: (n,) true values.
        predicted: (n,) predicted values.
        weight: (n,) row weights, or None.
        parts: How many quantile groups.

    Returns:
        One entry per non-empty group, lowest target values first.
    """
    actual = np.asarray(actual, dtype=np.float64)
    error = np.asarray(predicted, dtype=np.float64) - actual
    w = np.ones(len(actual)) if weight is None else np.asarray(weight, dtype=np.float64)
    edges = np.unique(np.quantile(actual, np.linspace(0, 1, parts + 1))) if len(actual) else np.array([])
    if len(edges) < 2:
        edges = np.array([actual.min(), actual.max()]) if len(actual) else np.array([0.0, 0.0])
    index = np.clip(np.searchsorted(edges, actual, side="right") - 1, 0, len(edges) - 2)
    out = []
    for group in range(len(edges) - 1):
        members = index == group
        if not members.any():
            continue
        ew, e = w[members], error[members]
        out.append(Decile(low=float(edges[group]), high=float(edges[group + 1]), rows=int(members.sum()),
                          mae=float(np.average(np.abs(e), weights=ew)),
                          rmse=float(np.sqrt(np.average(e ** 2, weights=ew))), bias=float(np.average(e, weights=ew))))
    return out


def worst_rows(task: str, target: np.ndarray, probabilities: np.ndarray | None, values: np.ndarray | None,
               count: int = 20) -> np.ndarray:
    """Positions of the ``count`` worst-predicted rows, worst first.

    Classification: the lowest probability of the true class; regression: the largest absolute error.

    Args:
        task: binary, multiclass or regression.
        target: (n,) true class indices or values.
        probabilities: (n, n_classes), classification.
        values: (n,) predictions, regression.
        count: How many rows.

    Returns:
        (min(count, n),) int64 positions.
    """
    if task == "regression":
        assert values is not None
        badness = np.abs(np.asarray(values, dtype=np.float64) - np.asarray(target, dtype=np.float64))
    else:
        assert probabilities is not None
        badness = -probabilities[np.arange(len(target)), np.asarray(target, dtype=np.int64)].astype(np.float64)
    count = min(count, len(badness))
    if count == 0:
        return np.array([], dtype=np.int64)
    candidates = np.argpartition(-badness, count - 1)[:count]
    return candidates[np.argsort(-badness[candidates], kind="mergesort")].astype(np.int64)


def sample(n_rows: int, size: int = SCATTER_ROWS, seed: int = 0) -> np.ndarray | None:
    """Sorted positions of ``size`` rows drawn with ``seed``, or None when there are no more than that."""
    if n_rows <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=size, replace=False))
