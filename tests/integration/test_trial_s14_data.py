"""A user's trial of how keel reads table data (fourteenth session): what it found, one test each.

The as-written CSV columns and boolean spellings are in test_as_written.py; these are the rest: a column of
values near 1e-300 unusable without a word, splits that trained on one class, a European CSV's target read as 585 classes, columns of
numbers in disguise read as categories without a word, and advice that did not fit.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ConfigError, DataError
from tests.conftest import FAST


def test_a_column_of_values_near_1e_minus_300_gets_a_note_saying_it_cannot_be_used() -> None:
    """y = 2k + noise, the feature k * 1e-300: it scored r2 0 without a word (its spread is below what float32, which
    the network reads, holds; scaling it in float64 made ONNX Runtime's answers differ from run to run)."""
    rng = np.random.default_rng(0)
    k = rng.normal(size=200)
    frame = pd.DataFrame({"tiny": k * 1e-300, "plain": rng.normal(size=200), "y": 2 * k})
    model = keel.fit(frame, target="y", config={**FAST, "training.epochs": 1}, quiet=True, importance=False)
    notes = " ".join(model.notes)
    assert "column 'tiny' holds only numbers smaller than 1e-30 in size (e.g. " in notes
    assert "column 'plain' holds only" not in notes


@pytest.mark.parametrize("key", ["split_by", "order_by", "weight_column"])
def test_the_target_cannot_be_the_split_order_or_weight_column(key: str) -> None:
    frame = pd.DataFrame({"x": np.arange(40.0), "y": [0, 1] * 20})
    with pytest.raises(ConfigError, match=f"training.{key} is the target 'y'"):
        keel.fit(frame, target="y", config={**FAST, f"training.{key}": "y"}, quiet=True)


def test_a_split_that_leaves_training_one_class_is_refused() -> None:
    """split_by a column that follows the class: 498 training rows of class a, 502 test rows of b; it trained,
    scored accuracy 0 and saved the model."""
    rng = np.random.default_rng(1)
    label = rng.choice(["a", "b"], 300)
    frame = pd.DataFrame({"x": rng.normal(size=300), "team": np.where(label == "a", "red", "blue"), "y": label})
    with pytest.raises(DataError, match=r"the training rows hold only the class '[ab]' of target 'y': "
                                        r"training.split_by 'team'"):
        keel.fit(frame, target="y", config={**FAST, "training.split_by": "team"}, quiet=True)


def test_missing_split_by_values_are_one_group_and_the_notes_say_so() -> None:
    rng = np.random.default_rng(2)
    team = rng.choice(["r", "g", "b", "w", "k", "c", "m"], 200).astype(object)
    team[:9] = None
    frame = pd.DataFrame({"x": rng.normal(size=200), "team": team, "y": rng.integers(0, 2, 200)})
    model = keel.fit(frame, target="y", config={**FAST, "training.split_by": "team"}, quiet=True, importance=False)
    assert any("'team' is missing on 9 row(s); they count as one group" in note for note in model.notes)


def test_a_target_of_numbers_with_decimal_commas_is_refused_not_585_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"temp": rng.normal(50, 10, 300).round(1), "y": rng.normal(5, 2, 300).round(2)})
    frame.to_csv(tmp_path / "euro.csv", sep=";", decimal=",", index=False)
    with pytest.raises(DataError, match=r"target column 'y' holds numbers written with a comma \(e.g. '.*a decimal "
                                        r"comma"):
        keel.fit(str(tmp_path / "euro.csv"), target="y", config=FAST, quiet=True)
    # Declared classes are still classes.
    model = keel.fit(str(tmp_path / "euro.csv"), target="y", config={**FAST, "task": "multiclass",
                                                                     "training.epochs": 1}, quiet=True,
                     importance=False)
    assert model.task == "multiclass"


def test_a_category_of_numbers_in_disguise_gets_a_note_naming_the_form() -> None:
    rng = np.random.default_rng(4)
    n = 300
    values = rng.normal(5, 2, n).round(2)
    frame = pd.DataFrame({
        "qmark": np.where(rng.random(n) < 0.12, "?", values.astype(str)),
        "comma": [f"{v:.2f}".replace(".", ",") for v in values],
        "pct": [f"{v:.0f}%" for v in values * 10],
        "label": rng.choice(["north", "south", "east"], n),
        "y": values + rng.normal(0, 0.1, n),
    })
    model = keel.fit(frame, target="y", config={**FAST, "training.epochs": 1}, quiet=True, importance=False)
    notes = " ".join(model.notes)
    assert re.search(r"'qmark' is read as a category, though 8\d% of its values are numbers; the others \('\?'\)", notes)
    assert "'comma' is read as a category, though 100% of its values are numbers written with a comma" in notes
    assert "(a decimal comma: pandas.read_csv(..., decimal=',') reads them)" in notes
    assert "'pct' is read as a category, though 100% of its values are numbers written with a % sign" in notes
    assert "'label' is read as a category, though" not in notes


def test_commas_before_three_digits_are_called_thousands_separators_or_either() -> None:
    from keel.data.schema import _numbers_in_disguise

    said = _numbers_in_disguise(pd.Series(["3,338", "12,500", "1,000,200"] * 5), "t")
    assert said is not None and "(thousands separators: pandas.read_csv(..., thousands=',') reads them)" in said
    said = _numbers_in_disguise(pd.Series(["1,500", "2,250"] * 5), "e")
    assert said is not None and "a decimal comma or thousands separators" in said
    assert _numbers_in_disguise(pd.Series(["A1", "B2", "C3", "4"] * 5), "c") is None
    said = _numbers_in_disguise(pd.Series(["0,500", "0,250"] * 5), "z")  # a leading 0 is no thousands group
    assert said is not None and "(a decimal comma: " in said


def test_a_weight_column_of_text_gets_weight_advice_not_feature_advice() -> None:
    frame = pd.DataFrame({"x": np.arange(40.0), "city": ["a", "b"] * 20, "y": [0.0, 1.0] * 20})
    with pytest.raises(DataError) as caught:
        keel.fit(frame, target="y", config={**FAST, "training.weight_column": "city"}, quiet=True)
    assert "training.weight_column" in str(caught.value) and "declare the column a category" not in str(caught.value)
