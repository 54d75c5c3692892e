"""The note on a column that alone predicts the target almost exactly (keel.data.leaks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import keel
from keel.data import leaks
from keel.data.leaks import leak_notes
from tests.conftest import FAST, PENGUINS


def _frame(n_rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n_rows)
    return pd.DataFrame({
        "signal": signal,
        "noise": rng.normal(size=n_rows),
        "town": rng.choice(["a", "b", "c", "d"], n_rows),
        "y": signal + rng.normal(scale=0.7, size=n_rows),
    })


def _notes(frame: pd.DataFrame, target: np.ndarray, task: str, columns: dict[str, str]) -> list[str]:
    return leak_notes(frame, list(columns.items()), "y", target, task, seed=0)


def test_a_threshold_of_the_target_is_named_with_its_score() -> None:
    frame = _frame()
    frame["weight_grams"] = np.exp(frame.y + 8)  # the target's threshold below is weight_grams < e^8
    classes = (frame.y < 0).astype(int).to_numpy()
    notes = _notes(frame, classes, "binary",
                   {"signal": "number", "noise": "number", "town": "category", "weight_grams": "number"})
    assert len(notes) == 1
    assert notes[0].startswith("column 'weight_grams' alone predicts the target 'y' almost exactly (ROC-AUC of its "
                               "values 1.000, on 600 training and validation rows)")
    assert notes[0].endswith("drop it (--drop weight_grams, or drop_columns: [\"weight_grams\"] in the config). If "
                             "it is a genuine input, ignore this note.")


def test_a_regression_target_and_its_logarithm() -> None:
    frame = _frame()
    frame["wage"] = np.exp(frame.y)
    frame["log_wage"] = frame.y + 1e-9 * np.arange(len(frame))  # a monotone function of the target
    notes = _notes(frame, frame.wage.to_numpy(), "regression",
                   {"signal": "number", "noise": "number", "town": "category", "log_wage": "number"})
    assert [note.split("'")[1] for note in notes] == ["log_wage"]
    assert "Spearman's rank correlation 1.000" in notes[0]


def test_an_honest_strong_column_gets_no_note() -> None:
    # signal explains about 2/3 of y's variance: a strong feature, no leak (the binned lookup and the ranks both < 0.99)
    frame = _frame(5000)
    assert _notes(frame, frame.y.to_numpy(), "regression", {"signal": "number", "noise": "number"}) == []
    assert _notes(frame, (frame.y > 0).astype(int).to_numpy(), "binary", {"signal": "number"}) == []


def test_a_category_that_names_the_class_is_found_by_its_lookup() -> None:
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 3, 900)
    frame = pd.DataFrame({"band": np.array(["low", "mid", "high"])[classes],
                          "other": rng.choice(["x", "y"], 900)})
    frame.loc[::97, "band"] = None  # a few missing: still almost exact
    notes = _notes(frame, classes, "multiclass", {"band": "category", "other": "category"})
    assert len(notes) == 1 and notes[0].startswith("column 'band' alone")
    assert "ROC-AUC of its per-value class shares on held-out rows" in notes[0]


def test_an_identifier_unique_per_row_is_no_leak() -> None:
    # Each value names one row: a lookup learned on the rows themselves would be perfect; held-out rows see none.
    frame = _frame()
    frame["order_id"] = [f"id{i}" for i in range(len(frame))]
    frame["row_number"] = np.arange(len(frame), dtype=float)
    classes = (frame.y > 0).astype(int).to_numpy()
    assert _notes(frame, classes, "binary", {"order_id": "category", "row_number": "number"}) == []


def test_a_number_that_tells_one_class_of_three_apart_is_no_leak() -> None:
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 3, 900)
    frame = pd.DataFrame({"is_first": (classes == 0) * 10.0 + rng.normal(scale=0.01, size=900)})
    notes = _notes(frame, classes, "multiclass", {"is_first": "number"})
    assert notes == []


def test_text_and_date_columns_and_tiny_tables_are_not_scored() -> None:
    frame = _frame()
    classes = (frame.y > 0).astype(int).to_numpy()
    frame["copy"] = frame.y
    assert _notes(frame, classes, "binary", {"copy": "text"}) == []
    small = frame.iloc[:leaks.MIN_ROWS - 1]
    assert leak_notes(small, [("copy", "number")], "y", classes[:len(small)], "binary", seed=0) == []
    assert len(leak_notes(frame.iloc[:leaks.MIN_ROWS], [("copy", "number")], "y", classes[:leaks.MIN_ROWS],
                          "binary", seed=0)) == 1


def test_a_large_table_is_scored_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaks, "SAMPLE", 300)
    frame = _frame(2000)
    frame["copy"] = frame.y
    notes = _notes(frame, (frame.y > 0).astype(int).to_numpy(), "binary", {"copy": "number", "signal": "number"})
    assert len(notes) == 1 and "on 300 sampled training and validation rows" in notes[0]


def test_training_says_so_and_penguins_gets_no_such_note() -> None:
    frame = _frame(300)
    frame["grade"] = np.where(frame.y > 0.5, "A", np.where(frame.y > -0.5, "B", "C"))
    model = keel.fit(frame.drop(columns="y"), target="grade", config={**FAST, "training.epochs": 1}, quiet=True)
    assert not [note for note in model.notes if "almost exactly" in note]
    frame["score"] = frame.y.round(3)
    model = keel.fit(frame.drop(columns="y"), target="grade", config={**FAST, "training.epochs": 1}, quiet=True)
    leaked = [note for note in model.notes if "almost exactly" in note]
    assert len(leaked) == 1 and leaked[0].startswith("column 'score' alone predicts the target 'grade'")
    model = keel.fit(pd.read_csv(PENGUINS), target="species", config={**FAST, "training.epochs": 1}, quiet=True)
    assert not [note for note in model.notes if "almost exactly" in note]
