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


def _notes(frame: pd.DataFrame, target: np.ndarray, task: str, columns: dict[str, str], **halving: object) -> list[str]:
    return leak_notes(frame, np.arange(len(frame)), list(columns.items()), "y", target, task, seed=0,
                      **halving)  # type: ignore[arg-type]


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
    few = np.arange(leaks.MIN_ROWS - 1)
    assert leak_notes(frame, few, [("copy", "number")], "y", classes[few], "binary", seed=0) == []
    enough = np.arange(leaks.MIN_ROWS)
    assert len(leak_notes(frame, enough, [("copy", "number")], "y", classes[enough], "binary", seed=0)) == 1


def test_a_large_table_is_scored_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaks, "SAMPLE", 300)
    frame = _frame(2000)
    frame["copy"] = frame.y
    notes = _notes(frame, (frame.y > 0).astype(int).to_numpy(), "binary", {"copy": "number", "signal": "number"})
    assert len(notes) == 1 and "on 300 sampled training and validation rows" in notes[0]


def test_training_says_so_and_penguins_gets_no_such_note() -> None:
    frame = _frame(1500)
    frame["grade"] = np.where(frame.y > 0.5, "A", np.where(frame.y > -0.5, "B", "C"))
    model = keel.fit(frame.drop(columns="y"), target="grade", config={**FAST, "training.epochs": 1}, quiet=True)
    assert not [note for note in model.notes if "almost exactly" in note]
    frame["score"] = frame.y.round(3)
    model = keel.fit(frame.drop(columns="y"), target="grade", config={**FAST, "training.epochs": 1}, quiet=True)
    leaked = [note for note in model.notes if "almost exactly" in note]
    assert len(leaked) == 1 and leaked[0].startswith("column 'score' alone predicts the target 'grade'")
    model = keel.fit(pd.read_csv(PENGUINS), target="species", config={**FAST, "training.epochs": 1}, quiet=True)
    assert not [note for note in model.notes if "almost exactly" in note]


def test_only_the_rows_given_are_scored() -> None:
    # The copy matches the target on the rows scored and is noise elsewhere (as test rows would be): named on
    # those rows, on the others not.
    frame = _frame(1000)
    classes = (frame.y > 0).astype(int).to_numpy()
    frame["copy"] = np.where(np.arange(1000) < 500, classes, np.random.default_rng(3).integers(0, 2, 1000))
    first, last = np.arange(500), np.arange(500, 1000)
    assert len(leak_notes(frame, first, [("copy", "category")], "y", classes[first], "binary", seed=0)) == 1
    assert leak_notes(frame, last, [("copy", "category")], "y", classes[last], "binary", seed=0) == []


def test_a_copy_of_the_label_is_named_beside_a_class_of_one_row() -> None:
    # The class of one row is in one half only: the lookup scores the classes found in both.
    rng = np.random.default_rng(4)
    classes = np.r_[rng.integers(0, 9, 999), 9]
    frame = pd.DataFrame({"species_copy": np.array([f"s{k}" for k in range(10)])[classes]})
    notes = _notes(frame, classes, "multiclass", {"species_copy": "category"})
    assert len(notes) == 1 and notes[0].startswith("column 'species_copy' alone")
    binary = np.r_[np.zeros(999, dtype=int), 1]
    frame = pd.DataFrame({"flag": binary.astype(float) + rng.normal(scale=1e-6, size=1000)})
    assert len(_notes(frame, binary, "binary", {"flag": "number"})) == 1  # the ranks see the one row


def test_a_number_that_codes_one_of_a_hundred_classes_is_named() -> None:
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 100, 5000)
    frame = pd.DataFrame({"code": classes * 10.0, "noise": rng.normal(size=5000)})
    notes = _notes(frame, classes, "multiclass", {"code": "number", "noise": "number"})
    assert [note.split("'")[1] for note in notes] == ["code"]


def test_a_column_naming_the_group_is_no_leak_when_whole_groups_are_held_out() -> None:
    # 150 patients of 4 visits each, the outcome the patient's: a name per patient predicts the visits of a
    # patient seen, not those of a new one, which is what a split_by split holds out.
    rng = np.random.default_rng(6)
    patient = np.repeat(np.arange(150), 4)
    outcome = rng.integers(0, 2, 150)[patient]
    frame = pd.DataFrame({"patient_name": [f"p{p}" for p in patient]})
    assert len(_notes(frame, outcome, "binary", {"patient_name": "category"})) == 1
    assert _notes(frame, outcome, "binary", {"patient_name": "category"}, groups=patient) == []


def test_a_time_ordered_split_learns_on_the_earlier_rows() -> None:
    # The target is the month's level: the month names it for rows of a month seen, not for the later months a
    # time-ordered split holds out.
    n_rows = 800
    month = np.repeat(np.arange(40), 20)
    target = np.random.default_rng(7).normal(size=40)[month] + np.random.default_rng(8).normal(scale=1e-3, size=n_rows)
    frame = pd.DataFrame({"month_name": [f"m{m}" for m in month]})
    assert len(_notes(frame, target, "regression", {"month_name": "category"})) == 1
    assert _notes(frame, target, "regression", {"month_name": "category"}, order=np.arange(n_rows)) == []


def test_a_huge_regression_target_and_its_copy() -> None:
    frame = _frame()
    frame["copy"] = frame.y * 1e300
    notes = _notes(frame, (frame.y * 1e300).to_numpy(), "regression", {"copy": "number"})
    assert len(notes) == 1 and "Spearman's rank correlation 1.000" in notes[0]


def test_many_classes_cost_no_more_than_twenty(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = leaks.ranked_roc_auc
    monkeypatch.setattr(leaks, "ranked_roc_auc", lambda *args: calls.append(1) or real(*args))
    classes = np.random.default_rng(9).integers(0, 200, 5000)
    frame = pd.DataFrame({"label_copy": [f"c{k}" for k in classes]})
    assert len(_notes(frame, classes, "multiclass", {"label_copy": "category"})) == 1
    assert len(calls) == leaks.CLASSES


def test_training_halves_the_rows_by_split_by_groups() -> None:
    # 100 patients of 10 visits: with a random split, each patient's visits are in both halves of the lookup.
    rng = np.random.default_rng(10)
    patient = np.repeat(np.arange(100), 10)
    frame = pd.DataFrame({"patient_id": patient, "patient_name": [f"p{p}" for p in patient],
                          "dose": rng.normal(size=1000),
                          "outcome": np.array(["ill", "well"])[rng.integers(0, 2, 100)[patient]]})
    config = {**FAST, "training.epochs": 1}
    named = keel.fit(frame.drop(columns="patient_id"), target="outcome", config=config, quiet=True)
    assert [note for note in named.notes if note.startswith("column 'patient_name' alone")]
    grouped = keel.fit(frame, target="outcome", config={**config, "training.split_by": "patient_id"}, quiet=True)
    assert not [note for note in grouped.notes if "almost exactly" in note]


def test_the_bar_rises_on_small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert leaks.threshold(10_000) == leaks.threshold(1000) == pytest.approx(0.99)
    assert leaks.threshold(120) == pytest.approx(0.9988)
    # iris' Petal.Width, an honest column, scored 0.997 on its 120 training and validation rows: named at a flat
    # 0.99, not at the risen bar.
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    config = {**FAST, "training.epochs": 1}
    assert not [note for note in keel.fit(iris, target="species", config=config, quiet=True).notes
                if "almost exactly" in note]
    monkeypatch.setattr(leaks, "FULL_BAR_ROWS", 1)
    flat = keel.fit(iris, target="species", config=config, quiet=True).notes
    assert [note for note in flat if note.startswith("column 'petal width (cm)' alone")]


def test_leak_check_false_skips_it_as_tune_trials_and_estimators_do() -> None:
    from keel.sklearn import KeelClassifier

    frame = _frame(1500)
    frame["grade"] = np.where(frame.y > 0, "A", "B")
    frame["score"] = frame.y.round(3)
    config = {**FAST, "training.epochs": 1}
    table = frame.drop(columns="y")

    def named(model: keel.Model) -> list[str]:
        return [note for note in model.notes if "almost exactly" in note]
    # importance=False (keel train --no-report) skips the report's importance, not this note.
    assert named(keel.fit(table, target="grade", config=config, quiet=True, importance=False))
    assert not named(keel.fit(table, target="grade", config=config, quiet=True, leak_check=False))
    estimator = KeelClassifier(preset="fast", epochs=1, quiet=True).fit(frame[["signal", "score"]], frame.grade)
    assert not named(estimator.model_)


def test_a_sparse_number_meets_the_bar_of_the_rows_it_has() -> None:
    # Present on 120 of 2,000 rows and ranking them with ROC-AUC 0.9967: named at 2,000 rows' bar (0.99), not at
    # 120's (0.9988), which its score was taken on; the note counts those 120.
    rng = np.random.default_rng(11)
    classes = rng.integers(0, 2, 2000)
    sparse = np.full(2000, np.nan)
    head = classes[:120]
    negatives, positives = np.flatnonzero(head == 0), np.flatnonzero(head == 1)
    sparse[negatives] = np.arange(len(negatives))
    sparse[positives] = 1000.0 + np.arange(len(positives))
    sparse[positives[0]] = len(negatives) - 12.5  # 12 negatives rank above one positive
    frame = pd.DataFrame({"sparse": sparse})
    assert _notes(frame, classes, "binary", {"sparse": "number"}) == []
    sparse[positives[0]] = 2000.0
    notes = _notes(pd.DataFrame({"sparse": sparse}), classes, "binary", {"sparse": "number"})
    assert len(notes) == 1 and "(ROC-AUC of its values 1.000, on 120 training and validation rows)" in notes[0]
