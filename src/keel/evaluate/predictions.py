"""Scored rows: what a model predicted for labelled rows, next to the truth.

A training run keeps the test rows' predictions (not the rows themselves) in the model directory,
so that the report can be drawn again later without the data; ``keel report --data`` makes a new
set from labelled rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from keel.evaluate.metrics import predicted_classes

#: The file in a model directory that holds the test rows' predictions.
PREDICTIONS_FILE = "predictions.safetensors"


@dataclass(frozen=True)
class Predictions:
    """Predictions for labelled rows and their true targets, row by row.

    Attributes:
        task: binary, multiclass or regression.
        target: True class indices (int64, into the model's classes) or true values (float64, target units).
        probabilities: (n, n_classes) class probabilities, classification only (stored as float32).
        values: (n,) predicted values (float64, target units), regression only.
        weight: (n,) row weights, or None when rows are unweighted.
        row: (n,) int64 row numbers in the source (1-based data rows, as error messages count them).
        threshold: A binary model's decision threshold on the positive class's probability; None
            means the most probable class wins.
    """

    task: str
    target: np.ndarray
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    weight: np.ndarray | None = None
    row: np.ndarray | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.row is None:
            object.__setattr__(self, "row", np.arange(1, len(self.target) + 1, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.target)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class indices (the threshold applied) or predicted values."""
        if self.task == "regression":
            assert self.values is not None
            return self.values
        assert self.probabilities is not None
        return predicted_classes(self.probabilities, self.threshold if self.task == "binary" else None)

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The arrays to store (safetensors); the task and threshold live in the model's manifest."""
        arrays = {"target": self.target, "row": self.row}
        for name in ("probabilities", "values", "weight"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        if self.probabilities is not None:  # half the bytes; the figures cannot show the difference
            arrays["probabilities"] = self.probabilities.astype(np.float32)
        return {name: np.ascontiguousarray(value) for name, value in arrays.items()}

    def as_stored(self) -> "Predictions":
        """These predictions as the model directory keeps them (float32 probabilities), so that a
        report drawn now and one drawn from the saved model are the same page."""
        if self.probabilities is None:
            return self
        return dataclasses.replace(self, probabilities=self.probabilities.astype(np.float32))

    @classmethod
    def from_tensors(cls, arrays: dict[str, np.ndarray], task: str, threshold: float | None = None) -> "Predictions":
        return cls(task=task, target=arrays["target"], probabilities=arrays.get("probabilities"),
                   values=arrays.get("values"), weight=arrays.get("weight"), row=arrays.get("row"),
                   threshold=threshold)
