"""The report's sections: which ones a task gets, and what each one shows.

Each section is a function ``(inputs, context) -> body HTML`` that adds its figures to
``context.plots``; ``SECTIONS`` lists them in page order with the tasks they belong to and, for the
optional ones, what they need.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from keel.evaluate.importance import shuffles_said
from keel.evaluate.metrics import classification_metrics, regression_metrics, undefined
from keel.report import curves, figures
from keel.report.html import (
    bullet_list,
    details,
    heading,
    image,
    key_values,
    paragraph,
    preformatted,
    table,
)
from keel.report.inputs import ReportInputs

#: Curves drawn in the ROC / precision-recall figure; the rest are in the table and the macro average.
MAX_CURVES = 10
#: Rows in the worst-predicted table.
WORST_ROWS = 20
#: Configuration keys shown in the overview (the whole configuration is in a collapsed block).
KEY_SETTINGS = ("preprocessing.normalize", "preprocessing.missing", "preprocessing.categorical_encoding",
                "model.architecture", "model.hidden", "model.activation", "model.dropout", "model.ensemble",
                "training.optimizer", "training.lr", "training.schedule", "training.batch_size", "training.epochs",
                "training.early_stopping", "training.monitor", "training.loss", "training.bagging",
                "training.class_weights", "training.threshold", "training.seed")


@dataclass
class Context:
    """What several sections share, computed once.

    Attributes:
        labels: The class labels as text (classification).
        predicted: Predicted class indices (threshold applied) or values.
        weight: Row weights, or None.
        metrics: The headline metrics for the scored rows.
        plots: File name under ``plots/`` -> PNG bytes, filled by the sections.
    """

    labels: list[str]
    predicted: np.ndarray
    weight: np.ndarray | None
    metrics: dict[str, Any]
    plots: dict[str, bytes] = field(default_factory=dict)

    def figure(self, name: str, png: bytes, alt: str, caption: str | None = None) -> str:
        """Keep ``png`` as ``plots/<name>.png`` and return its embedded ``<figure>``."""
        self.plots[f"{name}.png"] = png
        return image(png, alt, caption=caption)


def make_context(inputs: ReportInputs) -> Context:
    """The shared values for ``inputs``: text labels, predictions, and the metrics (computed when absent)."""
    predictions = inputs.predictions
    weight = None if predictions.weight is None else np.asarray(predictions.weight, dtype=np.float64)
    metrics = inputs.metrics
    if metrics is None and not len(predictions):
        metrics = {"n_rows": 0}
    elif metrics is None:
        if inputs.task == "regression":
            metrics = regression_metrics(predictions.target, predictions.predicted, weight)
        else:
            assert predictions.probabilities is not None
            metrics = classification_metrics(predictions.target, predictions.probabilities, inputs.classes, weight,
                                             threshold=predictions.threshold)
    return Context(labels=[str(label) for label in inputs.classes], predicted=predictions.predicted,
                   weight=weight, metrics=metrics)


def _rows(count: float) -> str:
    return f"{count:,.0f}" if float(count).is_integer() else f"{count:,.2f}"


# ---------------------------------------------------------------- overview, metrics, learning curves


def _seconds(value: float) -> str:
    return f"{value:,.1f} s" if value >= 1 else f"{value:.2g} s"


def _scored_rows(inputs: ReportInputs) -> str:
    """The source of the scored rows, with their count unless the source already says it."""
    if re.search(r"\d[\d,]* (?:labelled |test )?rows", inputs.source):
        return inputs.source
    return f"{inputs.source} ({_rows(len(inputs.predictions))} rows)"


def _bagging(bagging: dict[str, Any]) -> str:
    """The bagged networks trained and their rows; a time limit may have allowed fewer than planned (records
    written before ``planned`` existed list only the networks trained, and only when there were several)."""
    networks, planned = bagging["networks"], bagging.get("planned", bagging["networks"])
    each = [train + validation for train, validation in zip(bagging["train_each"], bagging["validation_each"])]
    trained = (f"{networks} networks" if networks == planned else
               f"{networks} of the {planned} networks of training.bagging (training.time_limit allowed no more)")
    if networks == 1:
        return (f"{trained}, trained on {_rows(bagging['train_each'][0])} of the {_rows(each[0])} training and "
                f"validation rows and validated on the other {_rows(bagging['validation_each'][0])} (its fold)")
    return (f"{trained}, each trained on about {_rows(round(float(np.mean(bagging['train_each']))))} of the "
            f"{_rows(max(each))} training and validation rows and validated on the rest (its own fold)")


def overview(inputs: ReportInputs, context: Context) -> str:
    """Data shape, schema, rows per split, configuration, time, versions, notes."""
    run = inputs.run or {}
    facts: list[tuple[str, object]] = [("task", inputs.task), ("target", inputs.target)]
    if inputs.classes:
        facts.append(("classes", f"{len(inputs.classes)}: " + ", ".join(context.labels[:12])
                      + (" …" if len(inputs.classes) > 12 else "")))
    data = run.get("data") or {}
    if data:
        facts.append(("data", f"{data.get('source', '?')}: {_rows(data.get('rows', 0))} rows × "
                              f"{data.get('columns', '?')} columns"))
    if data.get("test_source"):
        facts.append(("test data", str(data["test_source"])))
    splits = run.get("rows") or {}
    if splits:
        facts.append(("rows", ", ".join(f"{name} {_rows(count)}" for name, count in splits.items())))
    bagging = run.get("bagging")
    if bagging:
        facts.append(("bagging", _bagging(bagging)))
    facts.append(("scored rows", _scored_rows(inputs)))
    seconds = run.get("seconds") or {}
    training = seconds.get("training", inputs.history.get("seconds"))
    if seconds.get("total") is not None:
        facts.append(("time", f"{_seconds(seconds['total'])} in all"
                              + (f", {_seconds(training)} training" if training is not None else "")))
    elif training is not None:
        facts.append(("training time", _seconds(training)))
    if inputs.preset:
        facts.append(("preset", inputs.preset))
    if inputs.created:
        facts.append(("created", inputs.created))
    if inputs.versions:
        facts.append(("versions", ", ".join(f"{name} {version}" for name, version in inputs.versions.items())))
    parts = [_side_by_side(key_values(facts), heading("Columns") + _schema_table(inputs))]
    if inputs.config:
        settings = _key_settings(inputs.config)
        half = (len(settings) + 1) // 2
        parts += [heading("Configuration"),
                  paragraph("The settings that matter most, after the preset:", css_class="note"),
                  _side_by_side(key_values(settings[:half]), key_values(settings[half:])),
                  details("The whole resolved configuration (YAML)",
                          preformatted(yaml.safe_dump(inputs.config, sort_keys=False, allow_unicode=True)))]
    if inputs.notes:
        parts += [heading("Notes"), bullet_list(inputs.notes)]
    return "\n".join(parts)


def _side_by_side(*blocks: str) -> str:
    """Blocks next to each other while the page is wide enough, one under the other otherwise."""
    return '<div class="columns">' + "".join(f"<div>{block}</div>" for block in blocks) + "</div>"


def _schema_table(inputs: ReportInputs) -> str:
    run = inputs.run or {}
    rows: list[tuple[object, ...]]
    if run.get("columns"):
        rows = [(column.get("name"), column.get("role"), _share(column.get("missing")), _distinct(column),
                 column.get("dropped") or "") for column in run["columns"]]
        from keel.train.record import UNIQUE_SAMPLE_ROWS  # (here: keel runs reads this module without pandas)

        sampled = any(_counted_on_sample(column) for column in run["columns"])
        return table(["column", "role", "missing", "distinct values", "dropped because"], rows) + (
            paragraph(f"Distinct values marked \u2265 were counted on a sample of the rows (at most "
                      f"{UNIQUE_SAMPLE_ROWS:,}; a table larger than memory, on the rows it sampled): the whole table "
                      "has at least that many.", css_class="note") if sampled else "")
    features = inputs.schema.get("features") or []
    rows = [(feature.get("name"), feature.get("type"), "") for feature in features]
    rows += [(inputs.target, "target", "")]
    rows += [(name, "dropped", reason) for name, reason in (inputs.schema.get("dropped") or {}).items()]
    note = paragraph("Missing shares and cardinalities were not recorded for this model (saved before run "
                     "records); retrain to see them.", css_class="note")
    return table(["column", "role", "dropped because"], rows) + note


def _distinct(column: dict[str, Any]) -> object:
    """A column's distinct values: counted on a sample, a lower bound (\u2265 200,000 for 250,000 distinct ids)."""
    unique = column.get("unique")
    return f"\u2265 {unique:,}" if _counted_on_sample(column) else unique


def _counted_on_sample(column: dict[str, Any]) -> bool:
    return bool(column.get("unique_sampled")) and isinstance(column.get("unique"), int)


def _share(value: object) -> object:
    return f"{100 * float(value):.1f}%" if isinstance(value, (int, float)) else value


def _key_settings(config: dict[str, Any]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key in KEY_SETTINGS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out.append((key, ", ".join(map(str, node)) if isinstance(node, list) else node))
    return out


_METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "roc_auc": "ROC AUC",
                 "log_loss": "log loss", "f1_macro": "F1 (macro)", "f1_weighted": "F1 (weighted)",
                 "precision_macro": "precision (macro)", "recall_macro": "recall (macro)", "f1": "F1",
                 "precision_weighted": "precision (weighted)", "recall_weighted": "recall (weighted)",
                 "rmse": "RMSE", "mae": "MAE", "r2": "R²", "n_rows": "rows"}


def metrics(inputs: ReportInputs, context: Context) -> str:
    """The headline metrics for the scored rows."""
    shown = context.metrics
    # An undefined score with a reason (roc_auc_note) reads "n/a (class 'x' has no row here)"; the reason is no row.
    scalars = [(name, undefined(shown, name) if value is None and f"{name}_note" in shown else value)
               for name, value in shown.items()
               if (value is None or isinstance(value, (int, float, str))) and not name.endswith("_note")]
    scalars.sort(key=lambda item: (list(_METRIC_NAMES).index(item[0]) if item[0] in _METRIC_NAMES else 99))
    rows: list[tuple[str, object]] = [(_METRIC_NAMES.get(name, name.replace("_", " ")), value) for name, value in scalars]
    if inputs.task == "binary":
        threshold = inputs.predictions.threshold
        rows.append(("decision threshold", "0.5 (most probable class)" if threshold is None else threshold))
    units = f" RMSE and MAE are in {inputs.target} units." if inputs.task == "regression" else ""
    return key_values(rows) + paragraph(f"On {_scored_rows(inputs)}.{units}", css_class="note")


def learning_curves(inputs: ReportInputs, context: Context) -> str:
    """Loss and monitored metric per epoch, the selected epoch marked."""
    history = inputs.history
    epochs = history.get("epochs") or []
    if not epochs:
        return paragraph("No training history was stored with this model.", css_class="note")
    bags = history.get("bags") or []
    facts = [f"{len(epochs)} epochs trained", f"selected epoch {history.get('best_epoch', '–')} "
             f"(monitoring validation {history.get('monitor', 'loss')})",
             ("stopped by the time limit" if epochs[-1].get("stopped_by") == "time limit" else "stopped early")
             if history.get("stopped_early") else "ran every epoch"]
    if history.get("seconds") is not None:
        facts.append(_seconds(history["seconds"]))
    caption = "; ".join(facts) + "."
    if bags:
        caption += f" Bagging: one line per network ({len(bags)} networks" + (
            ", the first 10 drawn)." if len(bags) > 10 else ").")
    png = figures.learning_curves({"": history})
    return context.figure("learning_curves", png, "Training and validation loss per epoch", caption)


# ---------------------------------------------------------------- classification


def _confusion(inputs: ReportInputs, context: Context) -> np.ndarray:
    k = len(inputs.classes)
    target = np.asarray(inputs.predictions.target, dtype=np.int64)
    return np.bincount(target * k + context.predicted, weights=context.weight, minlength=k * k).reshape(k, k)


def _threshold_note(inputs: ReportInputs, context: Context) -> str:
    threshold = inputs.predictions.threshold
    if inputs.task != "binary" or threshold is None:
        return "the most probable class is the prediction"
    return f"predicted {context.labels[1]} when its probability is at least {threshold:.3g}"


def confusion_matrix(inputs: ReportInputs, context: Context) -> str:
    """Counts and row-normalised confusion matrix."""
    matrix = _confusion(inputs, context)
    caption = f"Rows: true class; columns: predicted class ({_threshold_note(inputs, context)})."
    if len(inputs.classes) > 15:
        caption += " With this many classes the cells carry colour only; the per-class table has the numbers."
    return context.figure("confusion_matrix", figures.confusion_matrix(matrix, context.labels),
                          "Confusion matrix: counts and row-normalised", caption)


def per_class(inputs: ReportInputs, context: Context) -> str:
    """Precision, recall, F1 and support per class."""
    matrix = _confusion(inputs, context)
    hits, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    integer = context.weight is None
    rows = [(label, float(p), float(r), float(f), int(s) if integer else float(s))
            for label, p, r, f, s in zip(context.labels, precision, recall, f1, support)]
    return table(["class", "precision", "recall", "F1", "support"], rows, numbers=3) + paragraph(
        f"Support: true rows of the class ({'weighted' if not integer else 'counted'}); "
        f"{_threshold_note(inputs, context)}.", css_class="note")


def _class_curves(inputs: ReportInputs, context: Context) -> tuple[list[curves.ClassCurves], curves.ClassCurves | None]:
    probabilities = inputs.predictions.probabilities
    assert probabilities is not None
    target = np.asarray(inputs.predictions.target, dtype=np.int64)
    if inputs.task == "binary":
        return [curves.class_curves(context.labels[1], target == 1, probabilities[:, 1], context.weight)], None
    every = [curves.class_curves(label, target == index, probabilities[:, index], context.weight)
             for index, label in enumerate(context.labels)]
    return every, curves.macro_average(every)


def roc_pr(inputs: ReportInputs, context: Context) -> str:
    """ROC and precision-recall curves with their areas, one-vs-rest for multiclass."""
    every, macro = _class_curves(inputs, context)
    drawn = sorted(every, key=lambda curve: -curve.support)[:MAX_CURVES] if len(every) > MAX_CURVES else every
    if inputs.task == "binary":
        caption = f"The positive class is {context.labels[1]}; the dotted line is a model with no skill."
    else:
        caption = "One class against the rest; the thick black line is the macro average over all classes."
        if len(every) > MAX_CURVES:
            caption += f" Drawn: the {MAX_CURVES} largest of {len(every)} classes; the table lists them all."
    parts = [context.figure("roc_pr", figures.roc_pr_curves(drawn, macro, binary=inputs.task == "binary"),
                            "ROC and precision-recall curves", caption)]
    rows = [(curve.label, curve.roc_auc, curve.average_precision, curve.support) for curve in every]
    if macro is not None:
        rows.append(("macro average", macro.roc_auc, macro.average_precision, macro.support))
    area_table = table(["class", "ROC AUC", "average precision", "support"], rows, numbers=3)
    parts.append(details(f"Areas for all {len(every)} classes", area_table) if len(every) > MAX_CURVES else area_table)
    return "\n".join(parts)


def calibration(inputs: ReportInputs, context: Context) -> str:
    """Reliability diagram with the expected calibration error, and the fitted temperature and threshold."""
    probabilities = inputs.predictions.probabilities
    assert probabilities is not None
    curve = curves.reliability(probabilities, np.asarray(inputs.predictions.target, dtype=np.int64),
                               context.weight, predicted=context.predicted)
    caption = (f"Expected calibration error {curve.ece:.3f}: over 10 equal-width bins of the predicted class's "
               "probability, the row-weighted gap between accuracy and mean probability. On the dotted line "
               "a probability of 0.8 is right 80% of the time.")
    parts = [context.figure("calibration", figures.reliability(curve, label="probability of the predicted class"),
                            "Reliability diagram", caption)]
    fitted = inputs.calibration
    if fitted is None:
        parts.append(paragraph("No temperature or decision threshold was fitted for this model.", css_class="note"))
    else:
        parts += [heading("Temperature and threshold"),
                  key_values([("temperature", _temperature_text(fitted)),
                              ("decision rule", _decision_text(fitted, inputs.task, context.labels))])]
    return "\n".join(parts)


def _temperature_text(fitted: dict[str, Any]) -> str:
    """What became of the temperature, in one line."""
    temperature, before, after = fitted.get("temperature"), fitted.get("log_loss_before"), fitted.get("log_loss_after")
    if temperature is None:
        return "not fitted (training.calibrate is off)"
    if before is None:
        return "not fitted: the validation rows were missing or held one class only"
    losses = f"validation log loss {before:.4g} at T = 1, {after:.4g} at T = {temperature:.3g}, on {fitted.get('rows')} rows"
    if fitted.get("kept"):
        return f"{temperature:.3g}, kept: every logit is divided by it ({losses})"
    return f"{temperature:.3g} fitted, not kept: the drop was within chance ({losses})"


def _decision_text(fitted: dict[str, Any], task: str, labels: list[str]) -> str:
    """How a class is chosen, in one line."""
    threshold = fitted.get("threshold")
    if task != "binary" or threshold is None:
        return "the most probable class"
    rule = f"{labels[1]} where its probability is at least {threshold:.4g}"
    if fitted.get("threshold_auto"):
        metric = str(fitted.get("threshold_metric")).replace("_", " ")
        scored = fitted.get("threshold_class")
        if metric == "f1" and type(scored) is int and scored in (0, 1):  # a hand-edited keel.json is not trusted
            metric = f"the F1 of {labels[scored]}, the rarer class"
        score = fitted.get("threshold_score")
        return rule + f" (chosen on the validation rows for {metric}" + (f": {score:.4g})" if score is not None else ")")
    return rule + " (training.threshold)"


def probabilities(inputs: ReportInputs, context: Context) -> str:
    """Histogram of predicted probabilities per class."""
    probabilities_ = inputs.predictions.probabilities
    assert probabilities_ is not None
    target = np.asarray(inputs.predictions.target, dtype=np.int64)
    png = figures.probability_histogram(probabilities_, target, context.labels,
                                        threshold=inputs.predictions.threshold, weight=context.weight)
    if inputs.task == "binary":
        caption = (f"The probability of {context.labels[1]} for rows of each true class: well separated humps "
                   "mean a confident model; the dashed line is the decision threshold.")
    else:
        caption = ("The probability the model gave to the right class: near 1 is confident and right, near 0 "
                   "confidently wrong.")
    return context.figure("probabilities", png, "Predicted probabilities by true class", caption)


# ---------------------------------------------------------------- regression


def _sample_note(n_rows: int, sample: np.ndarray | None) -> str:
    return "" if sample is None else f" {len(sample):,} of {n_rows:,} rows drawn at random (seed 0)."


def predicted_vs_actual(inputs: ReportInputs, context: Context) -> str:
    """Predicted against true values with the y = x line."""
    actual = np.asarray(inputs.predictions.target, dtype=np.float64)
    predicted = np.asarray(context.predicted, dtype=np.float64)
    sample = curves.sample(len(actual))
    shown = slice(None) if sample is None else sample
    png = figures.predicted_vs_actual(actual[shown], predicted[shown], inputs.target)
    caption = "Points on the dashed line are predicted exactly." + _sample_note(len(actual), sample)
    return context.figure("predicted_vs_actual", png, f"Predicted vs actual {inputs.target}", caption)


def residuals(inputs: ReportInputs, context: Context) -> str:
    """Residuals against predictions, and their histogram."""
    actual = np.asarray(inputs.predictions.target, dtype=np.float64)
    predicted = np.asarray(context.predicted, dtype=np.float64)
    sample = curves.sample(len(actual))
    png = figures.residuals(actual, predicted, inputs.target, sample=sample)
    caption = ("A good model leaves residuals centred on 0 with no pattern along the predictions. Scatter:"
               + (_sample_note(len(actual), sample) or " every row.") + " Histogram: every row.")
    return context.figure("residuals", png, "Residuals vs predicted and residual histogram", caption)


def error_by_decile(inputs: ReportInputs, context: Context) -> str:
    """MAE and RMSE by decile of the true target."""
    groups = curves.deciles(inputs.predictions.target, context.predicted, context.weight)
    png = figures.error_by_decile(groups, inputs.target)
    rows = [(f"{group.low:.4g} – {group.high:.4g}", group.rows, group.mae, group.rmse, group.bias) for group in groups]
    return "\n".join([
        context.figure("error_by_decile", png, f"Error by decile of {inputs.target}",
                       "Rows grouped by their true value into ten equal-count groups."),
        table([f"true {inputs.target}", "rows", "MAE", "RMSE", "bias (predicted − true)"], rows, numbers=4)])


# ---------------------------------------------------------------- importance, worst rows, exports


def importance(inputs: ReportInputs, context: Context) -> str:
    """Permutation importance: the top 20 as bars with their spread, all features in a table."""
    result = inputs.importance or {}
    features = result.get("features") or []
    metric = result.get("metric", "score")
    higher = bool(result.get("higher_is_better", True))
    png = figures.importance(features, metric, higher_is_better=higher)
    seconds = result.get("seconds")
    caption = (f"Each feature's values shuffled {shuffles_said(result)} times on "
               f"{_rows(result.get('rows', 0))} {result.get('source', '')} rows; the bar is the {metric} lost "
               f"(baseline {result.get('baseline', float('nan')):.4g}), the whisker its standard deviation. "
               "Near 0: the model does not rely on the feature (or another feature carries the same information)."
               + (f" Took {seconds:.2f} s." if seconds is not None else ""))
    rows = [(rank, feature["name"], feature["mean"], feature["std"]) for rank, feature in enumerate(features, 1)]
    change = "drop" if higher else "rise"
    return "\n".join([context.figure("importance", png, "Permutation importance", caption),
                      table(["rank", "feature", f"{metric} {change} (mean)", "std"], rows, numbers=3)])


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    if (isinstance(value, float) and np.isnan(value)) or type(value).__name__ in ("NAType", "NaTType"):
        return None  # pandas' missing markers print as "–" like NaN
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # as written: a year 2007 or a code is no quantity to read as "2,007"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # 2007.0: an integer column with a blank cell, read as floats
    return value


def worst_rows(inputs: ReportInputs, context: Context) -> str:
    """The worst-predicted rows, with feature values when the raw rows are given."""
    predictions = inputs.predictions
    positions = curves.worst_rows(inputs.task, predictions.target, predictions.probabilities,
                                  predictions.values, WORST_ROWS)
    assert predictions.row is not None
    cells: list[list[object]]
    if inputs.task == "regression":
        columns = ["row", f"true {inputs.target}", f"predicted {inputs.target}", "error (predicted − true)"]
        cells = [[int(predictions.row[i]), float(predictions.target[i]), float(context.predicted[i]),
                  float(context.predicted[i] - predictions.target[i])] for i in positions]
        what = "largest absolute error"
    else:
        assert predictions.probabilities is not None
        columns = ["row", "true class", "predicted class", "probability of the true class",
                   "probability of the predicted class"]
        cells = [[int(predictions.row[i]), context.labels[int(predictions.target[i])],
                  context.labels[int(context.predicted[i])],
                  float(predictions.probabilities[i, int(predictions.target[i])]),
                  float(predictions.probabilities[i, int(context.predicted[i])])] for i in positions]
        what = "lowest probability given to the true class"
    if inputs.rows is not None:
        features = [name for name in _feature_names(inputs) if name in inputs.rows.columns]
        columns += features
        for cell, position in zip(cells, positions):
            cell += [_plain(value) for value in inputs.rows.iloc[int(position)][features].tolist()]
        note = "Feature values are the raw values of the rows given."
    else:
        note = "Feature values are shown when the report is made with labelled data (keel report MODEL --data FILE)."
    return table(columns, cells) + paragraph(
        f"The {len(positions)} rows with the {what}, worst first; row numbers count data rows of the source "
        f"from 1. {note}", css_class="note")


def _feature_names(inputs: ReportInputs) -> list[str]:
    features = [feature.get("name") for feature in inputs.schema.get("features") or []]
    if features:
        return [name for name in features if name is not None]
    assert inputs.rows is not None
    return [name for name in inputs.rows.columns if name != inputs.target]


def exports(inputs: ReportInputs, context: Context) -> str:
    """Export parity and compression results of each export report in the model directory."""
    parts = []
    for report in inputs.exports:
        files = [os.path.basename(str(path)) for path in report.get("files") or []]
        parts.append(heading(f"{str(report.get('format', 'export')).upper()}: {', '.join(files) or 'no file'}"))
        parity = report.get("parity")
        if parity:
            parts.append(key_values(list(parity.items()), caption="Parity with the PyTorch model"))
        if report.get("quantized_parity"):
            parts.append(key_values(list(report["quantized_parity"].items()),
                                    caption="Parity of the quantized file with the PyTorch model"))
        if report.get("pruning"):
            parts.append(key_values(list(report["pruning"].items()), caption="Pruning"))
        compression = report.get("compression")
        if compression:
            parts.append(_compression(compression))
        if report.get("notes"):
            parts.append(bullet_list(report["notes"]))
    return "\n".join(parts)


def search(inputs: ReportInputs, context: Context) -> str:
    """The hyperparameter search (keel tune) that chose the settings: its best trials and the best
    settings with each one's importance."""
    study = inputs.study or {}
    metric, maximize = str(study.get("metric", "score")), study.get("direction") == "maximize"
    trials = [row for row in study.get("trials") or [] if isinstance(row, dict)]
    finished = sorted((row for row in trials if row.get("state") == "complete" and isinstance(row.get("value"), (int, float))),
                      key=lambda row: -row["value"] if maximize else row["value"])
    states = study.get("states") or {}
    parts = [paragraph(f"keel tune searched {len(study.get('space') or {})} settings in {len(trials)} trials "
                       f"({', '.join(f'{count} {state}' for state, count in sorted(states.items()))}), scoring "
                       f"{metric} on the validation rows ({'higher' if maximize else 'lower'} is better); the "
                       "model was trained again with the best trial's settings.")]
    best = study.get("best") or {}
    importances = study.get("importances") or {}
    params = best.get("params") or {}
    if params:
        rows = [(key, _flat(params[key]), importances.get(key)) for key in
                sorted(params, key=lambda name: -float(importances.get(name) or 0.0))]
        parts.append(table(["setting", "best value", "importance (fANOVA)"], rows,
                           caption=f"Best trial {best.get('number')}: {metric} {_number(best.get('value'))}"))
    keys = list(params) or sorted({key for row in finished for key in row.get("params") or {}})
    parts.append(table(["trial", metric, "epochs", "seconds", *keys],
                       [[row.get("number"), _number(row.get("value")), row.get("epochs"), row.get("seconds"),
                         *[_flat((row.get("params") or {}).get(key)) for key in keys]] for row in finished[:20]],
                       caption=f"The {min(20, len(finished))} best complete trials (tune.json holds all, pruned and "
                               "failed ones too)"))
    return "\n".join(parts)


def _number(value: object) -> object:
    return f"{value:.4f}" if isinstance(value, float) else value


def _compression(compression: Any) -> str:
    if isinstance(compression, dict) and isinstance(compression.get("rows"), list):
        rows = [(row.get("measure", row.get("key")), row.get("original"), row.get("compressed"), row.get("ratio"))
                for row in compression["rows"]]
        return table(["measure", "original", "compressed", "compressed / original"], rows,
                     caption="Compression: the original and the compressed file side by side")
    if isinstance(compression, list) and compression and all(isinstance(row, dict) for row in compression):
        columns = list(dict.fromkeys(key for row in compression for key in row))
        return table(columns, [[_flat(row.get(column)) for column in columns] for row in compression],
                     caption="Compression results per variant")
    if isinstance(compression, dict):
        return key_values([(key, _flat(value)) for key, value in compression.items()], caption="Compression")
    return preformatted(str(compression))


def _flat(value: object) -> object:
    return value if value is None or isinstance(value, (int, float, str, bool)) else yaml.safe_dump(value).strip()


# ---------------------------------------------------------------- the list


@dataclass(frozen=True)
class SectionSpec:
    """A section of the report: its id, title, the tasks that get it and what else it needs."""

    id: str
    title: str
    tasks: tuple[str, ...]
    draw: Callable[[ReportInputs, Context], str]
    needs: Callable[[ReportInputs], bool] = lambda inputs: True


def _scored(inputs: ReportInputs) -> bool:
    return len(inputs.predictions) > 0


CLASSIFICATION = ("binary", "multiclass")
ALL = ("binary", "multiclass", "regression")
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("overview", "Overview", ALL, overview),
    SectionSpec("metrics", "Metrics", ALL, metrics),
    SectionSpec("learning-curves", "Learning curves", ALL, learning_curves),
    SectionSpec("confusion-matrix", "Confusion matrix", CLASSIFICATION, confusion_matrix, _scored),
    SectionSpec("per-class", "Per-class precision, recall and F1", CLASSIFICATION, per_class, _scored),
    SectionSpec("roc-pr", "ROC and precision-recall curves", CLASSIFICATION, roc_pr, _scored),
    SectionSpec("calibration", "Calibration", CLASSIFICATION, calibration, _scored),
    SectionSpec("probabilities", "Predicted probabilities", CLASSIFICATION, probabilities, _scored),
    SectionSpec("predicted-vs-actual", "Predicted vs actual", ("regression",), predicted_vs_actual, _scored),
    SectionSpec("residuals", "Residuals", ("regression",), residuals, _scored),
    SectionSpec("error-by-decile", "Error by target decile", ("regression",), error_by_decile, _scored),
    SectionSpec("importance", "Permutation feature importance", ALL, importance,
                lambda inputs: bool(inputs.importance and inputs.importance.get("features"))),
    SectionSpec("worst-rows", "Worst-predicted rows", ALL, worst_rows, _scored),
    SectionSpec("exports", "Export parity and compression", ALL, exports, lambda inputs: bool(inputs.exports)),
    SectionSpec("search", "Hyperparameter search", ALL, search, lambda inputs: bool(inputs.study)),
)


def sections_for(inputs: ReportInputs) -> Iterable[SectionSpec]:
    """The sections ``inputs`` gets, in page order."""
    return [spec for spec in SECTIONS if inputs.task in spec.tasks and spec.needs(inputs)]
