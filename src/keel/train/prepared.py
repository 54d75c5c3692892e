"""The seam between reading the data and training on it: what the networks, calibration, the test
metrics and importance need, however the rows are held (in memory, or streamed from disk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from keel.data.preprocess import Preprocessor, TargetEncoder
from keel.data.schema import Schema
from keel.evaluate.predictions import Predictions
from keel.model import Model
from keel.train.trainer import Batch, Rows


@dataclass
class PreparedData:
    """What training needs from the data, held in memory or streamed from disk (keel.train.streamed).

    Attributes:
        schema, preprocessor, target: What was fitted on the training rows.
        bags: (training rows, validation rows or None) for each network.
        fitted: The rows the class weights are counted on (the training rows; with bagging, the pool).
        n_test: Test rows.
        calibration_rows: The validation rows calibration reads (at most ``calibration.MAX_ROWS`` when
            streamed) of the first n networks (fewer than ``bags`` when the time limit cut bagging short)
            and, with several, each network's positions among them.
        test_predictions: The test rows' predictions by a model, or None without test rows.
        held_out: Rows for permutation importance and where they come from, or None.
        record: The run record's arguments besides ``seconds``.
        sharded: The training rows are this data-parallel rank's own (keel.train.sharded), and
            ``fitted`` a sample of every rank's: training must not shard them again.
    """

    schema: Schema
    preprocessor: Preprocessor
    target: TargetEncoder
    bags: list[tuple[Rows, Rows | None]]
    fitted: Rows
    n_test: int
    calibration_rows: Callable[[int], tuple[Batch, list[np.ndarray] | None]]
    test_predictions: Callable[[Model], Predictions | None]
    held_out: Callable[[], tuple[Batch, str] | None]
    record: dict[str, Any]
    sharded: bool = False
