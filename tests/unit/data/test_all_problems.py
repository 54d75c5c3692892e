"""A data error reports every bad column found in one pass, each with a sample of rows and values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import load_config
from keel.data.io import read_table
from keel.data.preprocess import Preprocessor
from keel.data.schema import Feature, Schema, infer_schema
from keel.data.values import combine_errors, map_gathering, to_numeric
from keel.errors import DataError
from tests.conftest import FAST


def _frame(n_rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.normal(size=n_rows).round(3).astype(object), "b": rng.normal(size=n_rows).round(3).astype(object),
        "c": rng.normal(size=n_rows).round(3).astype(object), "ok": rng.normal(size=n_rows),
        "label": rng.choice(["x", "y"], n_rows),
    })


def _declared(*names: str) -> dict:
    # No test rows: the column types are read from every row, so every bad value is counted.
    return {**FAST, "training.test_split": 0.0, "input_features": [{"name": name, "type": "number"} for name in names]}


def test_every_bad_number_column_is_listed_in_one_error() -> None:
    frame = _frame()
    frame.loc[[1, 4], "a"] = ["12kg", "n/a?"]
    frame.loc[list(range(10, 22)), "c"] = [f"bad{i}" for i in range(12)]
    frame.loc[30, "b"] = float("inf")
    with pytest.raises(DataError) as error:
        keel.fit(frame, target="label", config=_declared("a", "b", "c", "ok"), quiet=True)
    message = str(error.value)
    assert message.startswith("DataFrame: 3 columns have problems ('a', 'b', 'c'); each is listed: (1) column 'a' holds numbers, "
                              "but row 2 has the value '12kg' (2 such value(s) in all; also row 5 'n/a?'). Fix or blank "
                              "out the values")
    assert "(2) column 'b' row 31 has the value inf; keel needs finite numbers (1 infinite value(s) in all)" in message
    # Up to five values a column: the first, four more, and a count of the rest.
    assert ("(3) column 'c' holds numbers, but row 11 has the value 'bad0' (12 such value(s) in all; also row 12 "
            "'bad1', row 13 'bad2', row 14 'bad3', row 15 'bad4' and 7 more)") in message
    assert "'ok'" not in message
    assert (error.value.column, error.value.row) == ("a", 2)  # the first problem's, for code that reads them


def test_columns_inferred_as_numbers_with_typos_are_all_listed() -> None:
    frame = _frame()
    frame.loc[3, "a"] = "1,5"
    frame.loc[[7, 8], "b"] = ["oops", "?"]
    config = load_config({"target": "label"})
    with pytest.raises(DataError) as error:
        infer_schema(frame, config)
    message = str(error.value)
    assert message.startswith("2 columns have problems ('a', 'b'); each is listed: (1) column 'a' holds numbers, but "
                              "row 4 has the value '1,5' (1 such value(s) in all).")
    assert "(2) column 'b' holds numbers, but row 8 has the value 'oops' (2 such value(s) in all; also row 9 '?')" in message


def test_a_file_is_named_once_not_in_every_part(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frame = _frame()
    frame.loc[0, "a"] = "zero"
    frame.loc[1, "b"] = "one"
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as error:
        keel.fit(path, target="label", config=_declared("a", "b"), quiet=True)
    assert str(error.value).startswith(f"{path}: 2 columns have problems ('a', 'b')")
    assert str(error.value).count(str(path)) == 1 and error.value.file == str(path)


def test_prediction_lists_every_bad_column(trained_classifier) -> None:  # type: ignore[no-untyped-def]
    model, _ = trained_classifier
    frame = pd.DataFrame({"size": [1.0, "big", 2.0], "weight": [float("-inf"), 3.0, "heavy"],
                          "color": ["red", "blue", "red"], "member": ["yes", "no", "yes"]})
    with pytest.raises(DataError) as error:
        model.predict(frame)
    message = str(error.value)
    assert message.startswith("DataFrame: 2 columns have problems ('size', 'weight'); each is listed: (1) column 'size' holds "
                              "numbers, but row 2 has the value 'big'")
    assert "(2) column 'weight' holds numbers, but row 3 has the value 'heavy'" in message


def test_a_lone_problem_keeps_its_own_message() -> None:
    frame = _frame()
    frame.loc[17, "b"] = "12,3kg"
    with pytest.raises(DataError, match=r"^DataFrame: column 'b' holds numbers, but row 18 has the value '12,3kg' \(1 such value\(s\) "
                                        r"in all\)\. Fix or blank out the value, or declare"):
        keel.fit(frame, target="label", config=_declared("a", "b"), quiet=True)


def test_fitting_the_preprocessing_gathers_errors_of_every_kind() -> None:
    frame = pd.DataFrame({"n": [1, 2, "x", 4], "flag": ["a", "b", "c", "a"], "label": [0, 1, 0, 1]})
    schema = Schema("label", "binary", [Feature("flag", "binary"), Feature("n", "number")])
    with pytest.raises(DataError) as error:
        Preprocessor(schema).fit(frame)
    message = str(error.value)
    assert message.startswith("2 columns have problems ('flag', 'n'); each is listed: (1) column 'flag' is binary, but "
                              "its training rows hold 3 distinct values")
    assert "(2) column 'n' holds numbers, but row 3 has the value 'x'" in message


def test_infinite_values_name_their_rows_and_signs() -> None:
    series = pd.Series([1.0, np.inf, 2.0, -np.inf, np.inf])
    with pytest.raises(DataError, match=r"^column 'x' row 2 has the value inf; keel needs finite numbers \(3 infinite "
                                        r"value\(s\) in all; also row 4 -inf, row 5 inf\)"):
        to_numeric(series, column="x")


def test_map_gathering_returns_results_in_order_and_raises_other_errors_at_once() -> None:
    assert map_gathering(lambda x: x * 2, [1, 2, 3], cells=3) == [2, 4, 6]

    def fail(x: int) -> int:
        if x == 2:
            raise KeyError("not a data error")
        return x

    with pytest.raises(KeyError):  # only DataErrors are gathered: a bug is not one of the user's problems
        map_gathering(fail, [1, 2, 3], cells=3)


def test_combine_errors_keeps_a_single_error_as_it_is() -> None:
    only = DataError("column 'a' is bad.", column="a", row=3)
    assert combine_errors([only]) is only
    combined = combine_errors([DataError("p.", file="f.csv", column="a", row=3), DataError("q.", file="f.csv", column="b")])
    assert str(combined) == "f.csv: 2 columns have problems ('a', 'b'); each is listed: (1) p. (2) q."
    assert (combined.file, combined.column, combined.row) == ("f.csv", "a", 3)


def test_reading_then_training_reports_the_csv_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Row numbers count data rows of the file (the header is not one), as read_table's index does.
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,x\n3,oops,y\n5,6,x\n7,8,y\nbad,9,x\n" + "1,2,x\n3,4,y\n" * 10)
    frame = read_table(path)
    with pytest.raises(DataError) as error:
        Preprocessor(Schema("label", "binary", [Feature("a", "number"), Feature("b", "number")])).fit(frame)
    assert "column 'a' holds numbers, but row 5 has the value 'bad'" in str(error.value)
    assert "column 'b' holds numbers, but row 2 has the value 'oops'" in str(error.value)


def test_inferred_columns_list_infinities_and_the_test_rows_problems_in_the_same_error() -> None:
    # Undeclared columns with the default test split: an infinity came in a second error once the typos were
    # fixed, and the typos of the test rows went uncounted ("row 12 'bad1' (9 such value(s) in all)").
    frame = _frame(200)
    frame.loc[[1, 4], "a"] = ["12kg", "n/a?"]
    frame.loc[list(range(10, 22)), "c"] = [f"bad{i}" for i in range(12)]
    frame.loc[30, "b"] = float("inf")
    frame["b"] = frame["b"].astype(float)
    with pytest.raises(DataError) as error:
        keel.fit(frame, target="label", config=FAST, quiet=True)
    message = str(error.value)
    assert message.startswith("DataFrame: 3 columns have problems ('a', 'b', 'c')")
    assert "column 'b' row 31 has the value inf" in message
    assert "row 11 has the value 'bad0' (12 such value(s) in all" in message  # every row, the test rows' too
    assert "row 2 has the value '12kg' (2 such value(s) in all; also row 5 'n/a?')" in message
    # A problem only in the test rows is still found where it was: when those rows are transformed.
    clean = _frame(200)
    clean["ok"] = clean["ok"].astype(float)
    split_inf = clean.copy()
    split_inf.loc[:, "ok"] = np.where(np.arange(200) % 50 == 7, np.inf, split_inf["ok"])
    with pytest.raises(DataError, match="'ok'.*inf"):
        keel.fit(split_inf, target="label", config=FAST, quiet=True)
