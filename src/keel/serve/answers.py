"""A validated batch through the predictor, and the answer in the request's row order.

Classification answers carry the labels in the target's own JSON types (ints stay ints, booleans
booleans), the probabilities with columns in ``classes`` order, and the classes; regression answers
carry the values. Both carry the unseen-value counts and the ignored keys of the request.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from typing import Any, ContextManager, Final

import numpy as np

from keel.errors import DataError
from keel.runtime import Predictor
from keel.serve.errors import RequestError, from_data_error, problem
from keel.serve.payload import Batch
from keel.serve.spec import ModelSpec

# Rows named in the message about non-finite outputs.
_ROWS_SHOWN: Final = 10
_JSON_TYPES: Final = {bool: "boolean", int: "integer", float: "number", str: "string"}


def prediction_slots(workers: int = 1) -> int:
    """How many predictions one server process runs at a time on its worker threads: one per core
    this process may use, shared among the ``--workers`` processes (at least one each).

    Each ONNX Runtime call running at the same time keeps buffers of its own: 32 concurrent 256-row
    requests took the balanced penguins server from 91 to 200 MB without a limit, to 122 MB with one
    prediction per core (2 cores), at the same throughput.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


class Answerer:
    """Runs batches through one predictor.

    Args:
        predictor: The loaded model.
        spec: Its description.
        slots: The most predictions run at a time from worker threads (:func:`prediction_slots`);
            a prediction on the event loop (a small body) never waits for one.
    """

    def __init__(self, predictor: Predictor, spec: ModelSpec, slots: int = 1) -> None:
        self.predictor = predictor
        self.spec = spec
        self._slots = threading.BoundedSemaphore(slots)

    def outputs(self, batch: Batch, *, in_thread: bool = False) -> np.ndarray:
        """Probabilities (n_rows, n_classes) or values (n_rows,), float64, all finite.

        Args:
            batch: The validated request.
            in_thread: True on a worker thread: the prediction then waits for one of the slots.
                False on the event loop, which must never block on a lock.

        Raises:
            RequestError: 422 for the predictor's DataError (it names column and row), or for rows
                whose output is not finite (numbers far beyond anything the model was trained on).
        """
        slot: ContextManager[Any] = self._slots if in_thread else nullcontext()
        try:
            with slot:
                if self.spec.is_regression:
                    result = self.predictor.predict(batch.columns)
                else:
                    result = self.predictor.predict_proba(batch.columns)
        except DataError as error:
            raise from_data_error(error) from None
        finite = np.isfinite(result) if result.ndim == 1 else np.isfinite(result).all(axis=1)
        if not finite.all():
            rows = (np.flatnonzero(~finite)[:_ROWS_SHOWN] + 1).tolist()
            raise RequestError(422, [problem(
                f"the model's output for row(s) {rows} is not a finite number: their number values lie so far "
                "beyond the training data that the network overflows. Check those values (units, typos), or send "
                "null for ones you do not know.", "overflow", None, rows[0])])
        return result

    def answer(self, batch: Batch, *, in_thread: bool = False) -> dict[str, Any]:
        """The ``/predict`` answer for ``batch`` (``in_thread`` as for :meth:`outputs`).

        Raises:
            RequestError: As for :meth:`outputs`.
        """
        result = self.outputs(batch, in_thread=in_thread)
        if self.spec.is_regression:
            answer: dict[str, Any] = {"predictions": result.tolist()}
        else:
            answer = {"predictions": self.labels(result), "probabilities": result.tolist(),
                      "classes": self.spec.classes}
        answer["unseen"] = batch.unseen
        answer["ignored_columns"] = batch.ignored
        return answer

    def labels(self, probabilities: np.ndarray) -> list[Any]:
        """Each row's predicted class, in the classes' JSON types: the predictor's decision rule
        (:meth:`keel.runtime.Predictor.class_indices`, a binary model's threshold included)."""
        classes = self.spec.classes
        return [classes[index] for index in self.predictor.class_indices(probabilities).tolist()]

    def warm_up(self) -> None:
        """One prediction of a row with every value missing: the first call allocates ONNX Runtime's
        buffers, so the first request does not pay for it, and a model that cannot predict is found
        before the server says it is ready.

        Raises:
            RequestError: The model's output is not finite.
            DataError: The model cannot predict a row.
        """
        columns = {feature.name: [None if feature.is_number else ""] for feature in self.spec.features}
        self.outputs(Batch(columns, 1, {}, []))


def label_schema(classes: list[Any]) -> dict[str, Any]:
    """The JSON schema of one class label: the classes themselves, as an enum."""
    kinds = sorted({_JSON_TYPES.get(type(label), "string") for label in classes})
    return {"enum": classes, "type": kinds[0] if len(kinds) == 1 else kinds}


def response_schemas(spec: ModelSpec) -> dict[str, Any]:
    """The JSON schema of the ``/predict`` answer, for the OpenAPI document's components."""
    n_rows = "one per row, in request order"
    properties: dict[str, Any] = {
        "unseen": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1},
                   "description": "By binary or category feature, how many values the model does not know (they "
                                  "went to its unknown bucket); features without any are left out."},
        "ignored_columns": {"type": "array", "items": {"type": "string"},
                            "description": "The request's keys that are no feature of the model, ignored."},
    }
    if spec.is_regression:
        properties["predictions"] = {"type": "array", "items": {"type": "number"},
                                     "description": f"Predicted {spec.target!r}, {n_rows}."}
    else:
        label = label_schema(spec.classes)
        n_classes = len(spec.classes)
        properties["predictions"] = {"type": "array", "items": label,
                                     "description": f"Predicted {spec.target!r} labels, {n_rows}."}
        properties["probabilities"] = {
            "type": "array", "description": f"Class probabilities, {n_rows}; columns in 'classes' order.",
            "items": {"type": "array", "minItems": n_classes, "maxItems": n_classes,
                      "items": {"type": "number"}}}
        properties["classes"] = {"type": "array", "items": label, "description": "The classes, in column order."}
    return {"PredictResponse": {"title": "PredictResponse", "type": "object", "properties": properties,
                                "required": sorted(properties)}}
