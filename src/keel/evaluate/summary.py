"""Metrics as rich tables, for the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from keel.evaluate.metrics import undefined

_HEADLINE = {
    "classification": ["accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "roc_auc", "log_loss"],
    "regression": ["rmse", "mae", "r2"],
}


def metrics_tables(metrics: dict[str, Any], title: str = "evaluation") -> Group:
    """A headline table, and for classification a per-class report and a confusion matrix."""
    kind = "classification" if "accuracy" in metrics else "regression"
    headline = Table(title=f"{title} ({metrics['n_rows']} rows)", show_header=True)
    headline.add_column("metric")
    headline.add_column("value", justify="right")
    for name in _HEADLINE[kind]:
        value = metrics.get(name)
        headline.add_row(name, escape(undefined(metrics, name)) if value is None else f"{value:.4f}")
    if kind == "regression":
        return Group(headline)
    report = Table(title="per class", show_header=True)
    for column in ("class", "precision", "recall", "f1", "support"):
        report.add_column(column, justify="left" if column == "class" else "right")
    for row in metrics["per_class"]:
        report.add_row(str(row["class"]), f"{row['precision']:.4f}", f"{row['recall']:.4f}",
                       f"{row['f1']:.4f}", str(row["support"]))
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)", show_header=True)
    confusion.add_column("")
    for label in metrics["labels"]:
        confusion.add_column(str(label), justify="right")
    for label, counts in zip(metrics["labels"], metrics["confusion_matrix"]):
        confusion.add_row(str(label), *(str(count) for count in counts))
    return Group(headline, report, confusion)
