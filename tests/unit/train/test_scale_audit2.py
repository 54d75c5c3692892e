"""Audit of issue 15's latest changes (the time limit's after-training estimate): regression tests for what
the audit found. Both tests failed on the audited code (cffa3bb); each says what the fix must make true."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

import keel
from keel.train.pipeline import rows_predicted_after_training


def test_bagged_calibration_counts_each_fold_once() -> None:
    # Calibration scores each validation row with the one network that held it out (calibration.member_outputs
    # with folds), so it predicts sum(validation) rows once, not through every network of the bag.
    data = SimpleNamespace(bags=[(list(range(4000)), list(range(800)))] * 5, n_test=1000,
                           schema=SimpleNamespace(features=[None] * 10), record={"test_frame": None})
    assert sum(rows_predicted_after_training(data, False).values()) == 5 * 800 + 5 * 1000  # type: ignore[arg-type]


def test_a_streamed_run_under_a_time_limit_keeps_time_for_what_follows(tmp_path: Path) -> None:
    # A streamed table has no in-memory Batch to time, so after_training_seconds returns 0 and the note reads
    # "about 0 s of it kept"; the test rows (here ~4,000) and importance still run after training.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3)).round(4)
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(3)})
    frame["y"] = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    config = {"preset": "fast", "model.hidden": [16], "model.dropout": 0.0, "training.epochs": 2,
              "training.batch_size": 256, "data.memory_budget": "1MiB", "training.time_limit": 600.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keel.fit(str(path), target="y", quiet=True, config=config)
    assert any(note.startswith("streaming") for note in model.notes), model.notes  # the run did stream
    notes = [note for note in model.notes if "kept for calibration" in note]
    assert len(notes) == 1, model.notes
    kept = float(re.search(r"about ([\d.e+-]+) s of it kept", notes[0]).group(1))  # type: ignore[union-attr]
    assert kept > 0, notes[0]
