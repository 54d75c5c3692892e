"""The report's figures, one function each; every one returns PNG bytes.

matplotlib is imported by ``style.pyplot()`` when a function here is first called. Labels are user
strings: they are truncated (``style.truncate``) and printed as text, never as mathtext. Figures
grow with the number of classes, so 30 classes with 40-character names stay readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from keel.report.curves import ClassCurves, Decile, Reliability, thin
from keel.report.style import COLORS, pyplot, to_png, truncate, truncate_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABEL_WIDTH = 20


def _series(history: Mapping[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one per-epoch record, NaN where an epoch lacks it."""
    epochs = history.get("epochs") or []
    x = np.array([record.get("epoch", position + 1) for position, record in enumerate(epochs)], dtype=np.float64)
    y = np.array([np.nan if record.get(key) is None else record[key] for record in epochs], dtype=np.float64)
    return x, y


def _monitored(history: Mapping[str, Any]) -> str | None:
    """The per-epoch key of the monitored validation metric, when it is not the loss and was recorded."""
    monitor = history.get("monitor") or "loss"
    key = f"val_{monitor}"
    if monitor == "loss" or not any(key in record for record in history.get("epochs") or []):
        return None
    return key


def learning_curves(histories: Mapping[str, Mapping[str, Any]], *, title: str = "Learning curves") -> bytes:
    """Training and validation loss per epoch, and the monitored validation metric, for one or more runs.

    Args:
        histories: Run label -> ``model.history``. One run with ``bags`` draws one line per network
            (at most 10); several runs draw one colour per run (their first network).
        title: The figure's title.

    Returns:
        PNG bytes. The best epoch of each line is marked with a dot and a dotted vertical line;
        dashed lines are training loss, solid ones validation.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    series: list[tuple[str, str, Mapping[str, Any]]] = []
    if len(histories) == 1 and next(iter(histories.values())).get("bags"):
        bags = next(iter(histories.values()))["bags"][:10]
        series = [(f"network {index + 1}", COLORS[index % len(COLORS)], bag) for index, bag in enumerate(bags)]
    else:
        series = [(label, COLORS[index % len(COLORS)], history) for index, (label, history) in enumerate(histories.items())]
    metric_keys = {key for key in (_monitored(history) for _, _, history in series) if key is not None}
    figure, axes = plt.subplots(1, 2 if metric_keys else 1, figsize=(11.5 if metric_keys else 6.5, 4.2), squeeze=False)
    loss_axis = axes[0, 0]
    drawn = False
    for label, color, history in series:
        x, loss = _series(history, "loss")
        _, val_loss = _series(history, "val_loss")
        if not len(x):
            continue
        drawn = True
        loss_axis.plot(x, loss, "--", color=color, alpha=0.75, linewidth=1.3)
        loss_axis.plot(x, val_loss, "-", color=color, linewidth=1.6, label=truncate(label, 30) or "validation")
        _mark_best(loss_axis, history, x, val_loss, color)
        key = _monitored(history)
        if key is not None:
            _, metric = _series(history, key)
            metric_axis = axes[0, 1]
            metric_axis.plot(x, metric, "-", color=color, linewidth=1.6, label=truncate(label, 30) or key)
            _mark_best(metric_axis, history, x, metric, color)
    if not drawn:
        loss_axis.text(0.5, 0.5, "no training history", ha="center", va="center", transform=loss_axis.transAxes,
                       color="#777777")
    loss_axis.set(title="Loss (dashed: training, solid: validation)", xlabel="epoch", ylabel="loss")
    handles = [Line2D([], [], color="#333333", linestyle="--", label="training"),
               Line2D([], [], color="#333333", linestyle="-", label="validation"),
               Line2D([], [], color="#333333", marker="o", linestyle=":", label="selected epoch")]
    if len(series) > 1:
        handles += [Line2D([], [], color=color, label=truncate(label, 30)) for label, color, _ in series]
    loss_axis.legend(handles=handles, loc="upper right", ncol=2 if len(handles) > 6 else 1)
    if metric_keys:
        metric_axis = axes[0, 1]
        name = " / ".join(sorted(key.removeprefix("val_") for key in metric_keys))
        metric_axis.set(title=f"Validation {name}", xlabel="epoch", ylabel=name)
    for axis in axes[0]:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title)
    return to_png(figure)


def _mark_best(axis: Any, history: Mapping[str, Any], x: np.ndarray, y: np.ndarray, color: str) -> None:
    best = history.get("best_epoch")
    if best is None or best not in x:
        return
    position = int(np.flatnonzero(x == best)[0])
    axis.axvline(best, color=color, linestyle=":", linewidth=1.0, alpha=0.8)
    axis.plot([best], [y[position]], "o", color=color, markersize=6)


def _tick_font(count: int) -> float:
    return float(np.clip(220 / max(count, 1), 6.5, 10))


def confusion_matrix(matrix: np.ndarray, labels: Sequence[Any]) -> bytes:
    """The confusion matrix as counts and row-normalised (each true class's row sums to 1).

    Args:
        matrix: (k, k) counts (or weight sums), true classes in rows, predicted in columns.
        labels: The k class labels.

    Returns:
        PNG bytes: two panels side by side up to 12 classes, stacked above that. Cells carry
        their numbers up to 15 classes; above that the colour scale alone reads better.
    """
    return to_png(draw_confusion_matrix(matrix, labels))


def draw_confusion_matrix(matrix: np.ndarray, labels: Sequence[Any]) -> "Figure":
    """The matplotlib figure behind ``confusion_matrix`` (the tests measure its labels)."""
    plt = pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(labels)
    names = truncate_labels(labels, LABEL_WIDTH)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    size = max(4.2, 0.34 * k + 2.2)
    side_by_side = k <= 12
    figure, axes = plt.subplots(1 if side_by_side else 2, 2 if side_by_side else 1,
                                figsize=(2 * size + 1.5, size) if side_by_side else (size + 1.5, 2 * size + 1.0))
    integer = np.allclose(matrix, np.round(matrix))
    font = _tick_font(k)
    # Upright column labels when they fit their cell (about 0.6 em per character), vertical otherwise:
    # slanted ones collide at 30 classes.
    cell_inches = (size - 1.2) / max(k, 1)
    rotate = max((len(name) for name in names), default=0) * font * 0.6 / 72 > 0.9 * cell_inches
    for axis, values, title, kind in ((axes[0], matrix, "Counts", "count"),
                                      (axes[1], normalised, "Row-normalised (recall on the diagonal)", "share")):
        shown = axis.imshow(values, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-12) if kind == "count" else 1)
        axis.grid(False)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
        axis.set_xticks(range(k), names, fontsize=font, rotation=90 if rotate else 0, ha="center")
        axis.set_yticks(range(k), names, fontsize=font)
        axis.set(title=title, xlabel="predicted class", ylabel="true class")
        if k <= 15:
            peak = values.max() if values.size else 0
            for row in range(k):
                for column in range(k):
                    value = values[row, column]
                    text = (f"{value:.0f}" if integer else f"{value:.3g}") if kind == "count" else f"{value:.2f}"
                    axis.text(column, row, text, ha="center", va="center", fontsize=font - 0.5,
                              color="white" if peak and value > 0.55 * peak else "#1d2330")
    figure.tight_layout()
    return figure


def roc_pr_curves(curves: Sequence[ClassCurves], macro: ClassCurves | None = None, *,
                  binary: bool = False) -> bytes:
    """ROC and precision-recall curves, one line per class (one-vs-rest) and the macro average.

    Args:
        curves: The classes to draw (the caller picks at most about 10).
        macro: The macro-average curves, drawn thick and black, or None.
        binary: One positive class: the precision-recall panel shows its no-skill line.

    Returns:
        PNG bytes, legends under the panels with each line's area.
    """
    plt = pyplot()
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(11.5, 5.0))
    roc_axis.plot([0, 1], [0, 1], ":", color="#999999", linewidth=1)
    lines = [(curve, COLORS[index % len(COLORS)], 1.4) for index, curve in enumerate(curves)]
    if macro is not None:
        lines.append((macro, "#000000", 2.4))
    names = truncate_labels([curve.label for curve, _, _ in lines], LABEL_WIDTH)
    for (curve, color, width), name in zip(lines, names):
        roc_axis.plot(*thin(curve.fpr, curve.tpr), color=color, linewidth=width,
                      label=f"{name} (AUC {curve.roc_auc:.3f})", drawstyle="default")
        pr_axis.plot(*thin(curve.recall, curve.precision), color=color, linewidth=width,
                     label=f"{name} (AP {curve.average_precision:.3f})", drawstyle="steps-post")
    if binary and curves:
        pr_axis.axhline(curves[0].prevalence, color="#999999", linestyle=":", linewidth=1,
                        label=f"no skill ({curves[0].prevalence:.3f})")
    roc_axis.set(title="ROC curve", xlabel="false positive rate", ylabel="true positive rate",
                 xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    pr_axis.set(title="Precision-recall curve", xlabel="recall", ylabel="precision",
                xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    for axis in (roc_axis, pr_axis):
        axis.set_aspect("equal")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2 if len(lines) > 3 else 1, fontsize=8.5)
    figure.tight_layout()
    return to_png(figure)


def reliability(curve: Reliability, *, label: str = "top-class probability") -> bytes:
    """A reliability diagram: accuracy against mean predicted probability per bin, rows per bin below.

    Args:
        curve: The bins (``curves.reliability``).
        label: What the probability is (the x axis label).

    Returns:
        PNG bytes; the title carries the expected calibration error.
    """
    plt = pyplot()
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(6.2, 6.4), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    filled = curve.count > 0
    centers = (curve.edges[:-1] + curve.edges[1:]) / 2
    widths = np.diff(curve.edges)
    axis.plot([0, 1], [0, 1], ":", color="#999999", linewidth=1, label="perfectly calibrated")
    axis.bar(centers[filled], curve.accuracy[filled], width=widths[filled] * 0.9, color=COLORS[0], alpha=0.25,
             edgecolor=COLORS[0], label="accuracy per bin")
    axis.plot(curve.confidence[filled], curve.accuracy[filled], "o-", color=COLORS[0], label="model")
    axis.set(title=f"Reliability (ECE {curve.ece:.3f}, {len(centers)} equal-width bins)", ylabel="accuracy (share right)",
             xlim=(0, 1), ylim=(0, 1.02))
    axis.legend(loc="upper left")
    total = curve.count.sum()
    counts.bar(centers, curve.count / total if total else curve.count, width=widths * 0.9, color=COLORS[8])
    counts.set(xlabel=label, ylabel="share of rows")
    figure.tight_layout()
    return to_png(figure)


def probability_histogram(probabilities: np.ndarray, target: np.ndarray, labels: Sequence[Any], *,
                          threshold: float | None = None, weight: np.ndarray | None = None) -> bytes:
    """How sure the model is: the predicted probabilities, split by true class.

    Binary: the positive class's probability, one histogram per true class, the threshold marked.
    Multiclass: the probability given to the true class, all rows, and per true class as box plots
    (one row per class, so 30 classes stay readable).

    Args:
        probabilities: (n, k) predicted probabilities.
        target: (n,) true class indices.
        labels: The k class labels.
        threshold: A binary model's decision threshold, or None (0.5 is drawn then).
        weight: (n,) row weights, or None.

    Returns:
        PNG bytes.
    """
    return to_png(draw_probability_histogram(probabilities, target, labels, threshold=threshold, weight=weight))


def draw_probability_histogram(probabilities: np.ndarray, target: np.ndarray, labels: Sequence[Any], *,
                               threshold: float | None = None, weight: np.ndarray | None = None) -> "Figure":
    """The matplotlib figure behind ``probability_histogram`` (the tests measure its labels)."""
    plt = pyplot()
    bins = np.linspace(0, 1, 21)
    if len(labels) == 2:
        figure, axis = plt.subplots(figsize=(7.5, 4.2))
        positive = probabilities[:, 1]
        names = truncate_labels(labels, LABEL_WIDTH)
        for index in (0, 1):
            rows = target == index
            axis.hist(positive[rows], bins=bins, weights=None if weight is None else weight[rows], alpha=0.55,
                      color=COLORS[index], label=f"true class {names[index]}")
        cut = 0.5 if threshold is None else threshold
        axis.axvline(cut, color="#333333", linestyle="--", linewidth=1.2, label=f"threshold {cut:.3g}")
        axis.set(title="Predicted probabilities by true class",
                 xlabel=f"predicted probability of {truncate(labels[1], LABEL_WIDTH)}", ylabel="rows")
        axis.legend()
        return figure
    k = len(labels)
    true_probability = probabilities[np.arange(len(target)), target]
    figure, (histogram, boxes) = plt.subplots(1, 2, figsize=(12, max(4.2, 0.3 * k + 1.4)),
                                              gridspec_kw={"width_ratios": [1, 1.2]})
    histogram.hist(true_probability, bins=bins, weights=weight, color=COLORS[0], alpha=0.8)
    histogram.set(title="Probability given to the true class", xlabel="predicted probability of the true class",
                  ylabel="rows")
    present = [index for index in range(k) if np.any(target == index)]
    if present:
        groups = [true_probability[target == index] for index in present]
        try:
            boxes.boxplot(groups, positions=range(len(present)), orientation="horizontal", showfliers=False,
                          widths=0.6)
        except TypeError:  # matplotlib before 3.10 says vert=False
            boxes.boxplot(groups, positions=range(len(present)), vert=False, showfliers=False, widths=0.6)
    names = truncate_labels(labels, LABEL_WIDTH)
    boxes.set_yticks(range(len(present)), [names[index] for index in present],
                     fontsize=_tick_font(k))
    boxes.invert_yaxis()
    boxes.set(title="…per true class (box: quartiles, whiskers: 1.5 IQR)",
              xlabel="predicted probability of the true class", xlim=(-0.02, 1.02))
    figure.tight_layout()
    return figure


def _scatter_alpha(n_points: int) -> float:
    return float(np.clip(60 / np.sqrt(max(n_points, 1)), 0.15, 0.9))


def predicted_vs_actual(actual: np.ndarray, predicted: np.ndarray, target: str) -> bytes:
    """Predicted against true values with the y = x line.

    Args:
        actual: (n,) true values (already subsampled for large sets).
        predicted: (n,) predicted values.
        target: The target's name, for the axis labels.

    Returns:
        PNG bytes.
    """
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 6.0))
    axis.scatter(actual, predicted, s=9, alpha=_scatter_alpha(len(actual)), color=COLORS[0], linewidths=0)
    both = np.r_[actual, predicted]
    both = both[np.isfinite(both)]
    low, high = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    axis.plot([low, high], [low, high], "--", color=COLORS[3], linewidth=1.2, label="y = x (perfect)")
    name = truncate(target, 30)
    axis.set(title="Predicted vs actual", xlabel=f"actual {name}", ylabel=f"predicted {name}")
    axis.legend(loc="upper left")
    return to_png(figure)


def residuals(actual: np.ndarray, predicted: np.ndarray, target: str, *, sample: np.ndarray | None = None) -> bytes:
    """Residuals (actual − predicted) against predicted values, and their histogram.

    Args:
        actual: (n,) true values (all rows: the histogram uses them all).
        predicted: (n,) predicted values.
        target: The target's name, for the axis labels.
        sample: Positions of the rows to scatter (None: all).

    Returns:
        PNG bytes, two panels.
    """
    plt = pyplot()
    residual = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    shown = slice(None) if sample is None else sample
    figure, (scatter, histogram) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    scatter.scatter(predicted[shown], residual[shown], s=9, alpha=_scatter_alpha(len(residual[shown])),
                    color=COLORS[0], linewidths=0)
    scatter.axhline(0, color=COLORS[3], linestyle="--", linewidth=1.2)
    name = truncate(target, 30)
    scatter.set(title="Residuals vs predicted", xlabel=f"predicted {name}", ylabel=f"residual (actual − predicted) {name}")
    finite = residual[np.isfinite(residual)]
    histogram.hist(finite, bins=50, color=COLORS[0], alpha=0.85)
    if len(finite):
        histogram.axvline(float(finite.mean()), color=COLORS[3], linestyle="--", linewidth=1.2,
                          label=f"mean {finite.mean():.3g}")
        histogram.legend()
    histogram.set(title="Residual distribution", xlabel=f"residual (actual − predicted) {name}", ylabel="rows")
    figure.tight_layout()
    return to_png(figure)


def _short(value: float) -> str:
    """A tick label: 3 significant digits, thousands separated, no exponent below a billion."""
    if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
        return f"{value:.2e}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def error_by_decile(groups: Sequence[Decile], target: str) -> bytes:
    """MAE and RMSE for each decile of the true target: where along the range the model errs.

    Args:
        groups: ``curves.deciles`` output.
        target: The target's name, for the axis labels.

    Returns:
        PNG bytes.
    """
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(9.5, 4.4))
    x = np.arange(len(groups))
    axis.bar(x - 0.2, [group.mae for group in groups], width=0.4, color=COLORS[0], label="MAE")
    axis.bar(x + 0.2, [group.rmse for group in groups], width=0.4, color=COLORS[1], label="RMSE")
    axis.set_xticks(x, [f"{_short(group.low)} – {_short(group.high)}" for group in groups], rotation=30, ha="right",
                    fontsize=8.5)
    name = truncate(target, 30)
    axis.set(title=f"Error by decile of the true {name}", xlabel=f"true {name} (decile range)",
             ylabel=f"error ({name} units)")
    axis.legend()
    return to_png(figure)


def importance(features: Sequence[Mapping[str, Any]], metric: str, *, higher_is_better: bool = True,
               top: int = 20) -> bytes:
    """Permutation importance: a horizontal bar per feature with its spread over repeats.

    Args:
        features: ``{"name", "mean", "std"}`` dicts, most important first.
        metric: The score shuffled against (``accuracy``, ``rmse``).
        higher_is_better: Whether the score rises with quality (accuracy) or falls (RMSE).
        top: How many features to draw.

    Returns:
        PNG bytes, the most important feature at the top.
    """
    plt = pyplot()
    shown = list(features[:top])
    figure, axis = plt.subplots(figsize=(8.5, max(2.6, 0.32 * len(shown) + 1.3)))
    y = np.arange(len(shown))
    axis.barh(y, [feature["mean"] for feature in shown], xerr=[feature["std"] for feature in shown],
              color=COLORS[0], alpha=0.85, error_kw={"ecolor": "#333333", "capsize": 3, "linewidth": 1})
    axis.set_yticks(y, truncate_labels([feature["name"] for feature in shown], 30), fontsize=_tick_font(len(shown)))
    axis.invert_yaxis()
    axis.axvline(0, color="#333333", linewidth=0.8)
    change = "drop" if higher_is_better else "rise"
    axis.set(title=f"Permutation importance (top {len(shown)} of {len(features)})",
             xlabel=f"{change} in {metric} when the feature is shuffled (mean ± std over repeats)")
    return to_png(figure)
