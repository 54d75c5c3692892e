"""What a report is drawn from: the test rows' predictions and what the training run recorded.

The pipeline (``keel train``), ``keel report`` and ``Model.report`` fill a ``ReportInputs``; the
report itself reads nothing else, so any set of predictions can be drawn, trained or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ConfigError, DataError
from keel.evaluate.predictions import Predictions

if TYPE_CHECKING:
    import pandas as pd

TASKS = ("binary", "multiclass", "regression")


@dataclass
class ReportInputs:
    """Everything a report shows.

    Attributes:
        title: The page title, e.g. ``"species — runs/penguins-model"``.
        task: ``binary``, ``multiclass`` or ``regression``.
        target: The target column's name (regression axes are labelled with it).
        classes: Class labels in probability-column order (plain Python values; [] for regression).
        predictions: The scored rows: test rows at training time, or the ``--data`` rows.
        source: Where those rows came from, e.g. ``"held-out test rows at training time"``.
        metrics: ``keel.evaluate.metrics`` output for those rows; None computes it from ``predictions``.
        history: ``model.history`` (``epochs``, ``best_epoch``, ``stopped_early``, ``monitor``,
            ``seconds``, and ``bags`` with one such dict per network when bagging).
        config: The resolved configuration (``model.config.model_dump(mode="json")``).
        preset: The preset the configuration started from.
        run: What the training run recorded about the data (``data``, ``rows``, ``columns``,
            ``seconds``), or None for a model saved before runs were recorded.
        importance: ``keel.evaluate.importance.permutation_importance`` output, or None.
        calibration: Temperature and threshold fitting results (classification), or None.
        notes: What keel decided or worked around while training.
        created: When the model was trained (ISO timestamp).
        versions: ``{"keel": ..., "torch": ..., "python": ...}``.
        schema: ``model.schema.to_dict()`` (features with name and type, target, task, dropped).
        rows: The raw labelled rows, aligned with ``predictions`` (only with ``--data``), or None.
        exports: The model directory's export reports (``ExportReport.to_dict()``), [] when none.
        study: The hyperparameter search that chose this model's settings (``tune.json`` of
            ``keel tune``), or None.
    """

    title: str
    task: str
    target: str
    classes: list[Any]
    predictions: Predictions
    source: str
    metrics: dict[str, Any] | None = None
    history: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    preset: str = ""
    run: dict[str, Any] | None = None
    importance: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)
    rows: "pd.DataFrame | None" = None
    exports: list[dict[str, Any]] = field(default_factory=list)
    study: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"a report needs task binary, multiclass or regression; got {self.task!r}. "
                              "Pass the model's task (model.task).")
        if self.predictions.task != self.task:
            raise DataError(f"the predictions are for task {self.predictions.task!r} but the report is for "
                            f"{self.task!r}; build both from the same model.")
        n_rows = len(self.predictions)
        if self.task == "regression":
            if self.predictions.values is None or len(self.predictions.values) != n_rows:
                raise DataError("regression predictions need one predicted value per row (Predictions.values); "
                                "pass the model's predictions for the same rows as the targets.")
        else:
            probabilities = self.predictions.probabilities
            if probabilities is None or probabilities.shape != (n_rows, len(self.classes)):
                shape = None if probabilities is None else tuple(probabilities.shape)
                raise DataError(f"classification predictions need probabilities of shape ({n_rows}, "
                                f"{len(self.classes)}) (rows, classes); got {shape}. Pass the model's classes in "
                                "probability-column order and predict_proba for the same rows.")
            target = np.asarray(self.predictions.target)
            if n_rows and (target.min() < 0 or target.max() >= len(self.classes)):
                raise DataError(f"the true classes must be indices into the {len(self.classes)} classes; got values "
                                f"from {target.min()} to {target.max()}. Encode the targets with the model's classes.")
        if self.rows is not None and len(self.rows) != n_rows:
            raise DataError(f"the raw rows ({len(self.rows)}) are not aligned with the predictions ({n_rows}); "
                            "pass the same labelled rows the predictions were made for.")
