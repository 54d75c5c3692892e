"""Report inputs made in code: predictions whose quality is known, for tests, the benchmark and screenshots.

No training: probabilities are drawn around the true class, so every figure has something to show.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keel.evaluate.predictions import Predictions
from keel.report import ReportInputs


def history(epochs: int = 12, monitor: str = "accuracy", bags: int = 0, seed: int = 0) -> dict[str, Any]:
    """A training history whose validation loss bottoms out two epochs before the end."""
    rng = np.random.default_rng(seed)

    def one(offset: float) -> dict[str, Any]:
        records = []
        for epoch in range(1, epochs + 1):
            loss = 1.0 / epoch + offset + rng.normal(0, 0.01)
            record = {"epoch": epoch, "lr": 0.001, "loss": loss,
                      "val_loss": loss + 0.05 + 0.02 * max(0, epoch - (epochs - 2)), "stopped": False}
            if monitor != "loss":
                record[f"val_{monitor}"] = 0.5 + 0.4 * (1 - 1 / epoch)
            records.append(record)
        return {"epochs": records, "best_epoch": epochs - 2, "stopped_early": True, "monitor": monitor,
                "seconds": 1.5}

    out = one(0.0)
    if bags:
        out["bags"] = [one(0.03 * index) for index in range(bags)]
    return out


def classification(n_rows: int = 300, n_classes: int = 3, *, names: list[Any] | None = None, seed: int = 0,
                   threshold: float | None = None, weighted: bool = False) -> ReportInputs:
    """A classifier's report inputs: right about 80% of the time, with sensible probabilities."""
    rng = np.random.default_rng(seed)
    labels = names if names is not None else [f"class {index}" for index in range(n_classes)]
    n_classes = len(labels)
    # Imbalanced classes, so "the largest classes" is a real choice.
    shares = np.linspace(2.0, 1.0, n_classes)
    target = rng.choice(n_classes, size=n_rows, p=shares / shares.sum())
    logits = rng.normal(0, 1, (n_rows, n_classes))
    logits[np.arange(n_rows), target] += 2.2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    task = "binary" if n_classes == 2 else "multiclass"
    predictions = Predictions(task=task, target=target.astype(np.int64), probabilities=probabilities.astype(np.float32),
                              weight=rng.uniform(0.5, 2.0, n_rows) if weighted else None,
                              row=np.arange(1, n_rows + 1, dtype=np.int64) * 3, threshold=threshold)
    features = [{"name": "size", "type": "number"}, {"name": "colour", "type": "category"},
                {"name": "member", "type": "binary"}]
    return ReportInputs(
        title="label — runs/synthetic", task=task, target="label", classes=list(labels), predictions=predictions,
        source="held-out test rows at training time", history=history(monitor="accuracy"),
        config={"preset": "balanced", "model": {"hidden": [16], "dropout": 0.1}, "training": {"lr": 0.01, "epochs": 12}},
        preset="balanced", run=_run(n_rows, features),
        importance=_importance(features, "accuracy", True),
        calibration={"temperature": 1.31, "kept": True, "log_loss_before": 0.41, "log_loss_after": 0.38, "rows": 55,
                     "threshold": threshold if threshold is not None else 0.5, "threshold_auto": threshold is not None,
                     "threshold_metric": "f1" if threshold is not None else None, "threshold_score": None}
        if n_classes == 2 else {"temperature": 1.1, "kept": False, "log_loss_before": 0.5, "log_loss_after": 0.51,
                                "rows": 55},
        notes=["rows: 220 for training, 55 for validation, 69 for test"], created="2025-01-01T12:00:00+00:00",
        versions={"keel": "0.1.0", "torch": "2.13.0", "python": "3.11"},
        schema={"target": "label", "task": task, "features": features, "dropped": {"id": "an identifier"}},
    )


def regression(n_rows: int = 300, seed: int = 0, *, bags: int = 0) -> ReportInputs:
    """A regressor's report inputs: errors grow with the target, as they often do."""
    rng = np.random.default_rng(seed)
    target = rng.gamma(4.0, 1000.0, n_rows)
    values = target + rng.normal(0, 1, n_rows) * (100 + 0.1 * target)
    predictions = Predictions(task="regression", target=target, values=values)
    features = [{"name": "bill_length_mm", "type": "number"}, {"name": "island", "type": "category"}]
    return ReportInputs(
        title="body_mass_g — runs/synthetic", task="regression", target="body_mass_g", classes=[],
        predictions=predictions, source="held-out test rows at training time",
        history=history(monitor="rmse", bags=bags), config={"preset": "fast"}, preset="fast",
        run=_run(n_rows, features), importance=_importance(features, "rmse", False), notes=[],
        created="2025-01-01T12:00:00+00:00", versions={"keel": "0.1.0"},
        schema={"target": "body_mass_g", "task": "regression", "features": features, "dropped": {}},
    )


def _run(n_rows: int, features: list[dict[str, Any]]) -> dict[str, Any]:
    columns = [{"name": feature["name"], "role": feature["type"], "missing": 0.01 * index, "unique": 10 + index,
                "dropped": None} for index, feature in enumerate(features)]
    columns.append({"name": "id", "role": "dropped", "missing": 0.0, "unique": n_rows, "dropped": "an identifier"})
    return {"data": {"source": "synthetic.csv", "rows": 5 * n_rows, "columns": len(columns) + 1},
            "rows": {"train": 3 * n_rows, "validation": n_rows, "test": n_rows, "unlabelled": 0},
            "columns": columns, "seconds": {"total": 3.1, "training": 2.5}}


def _importance(features: list[dict[str, Any]], metric: str, higher: bool) -> dict[str, Any]:
    return {"metric": metric, "higher_is_better": higher, "baseline": 0.8, "rows": 200, "repeats": 5,
            "source": "validation", "seconds": 0.05,
            "features": [{"name": feature["name"], "mean": 0.2 / (index + 1), "std": 0.01 * (index + 1)}
                         for index, feature in enumerate(features)]}


def rows_for(inputs: ReportInputs, seed: int = 0) -> pd.DataFrame:
    """Raw rows aligned with ``inputs.predictions``, with the schema's feature columns."""
    rng = np.random.default_rng(seed)
    n_rows = len(inputs.predictions)
    frame = pd.DataFrame({feature["name"]: rng.normal(size=n_rows) if feature["type"] == "number"
                          else rng.choice(["a", "b", "<b>bold</b>"], n_rows) for feature in inputs.schema["features"]})
    frame.iloc[0, 0] = np.nan
    return frame
