"""One spelling per category value: the scalar rule, the vectorised one on every dtype, files vs frames."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.data.io import read_table
from keel.data.spelling import canonical_category, respell_vocabulary
from keel.data.values import category_strings

_floats64 = st.floats(allow_nan=True, allow_infinity=True)
_floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
_ints64 = st.integers(-(2**63), 2**63 - 1)

# dtype -> values a column of it can hold (None is missing).
_COLUMNS = {
    "float64": st.lists(st.one_of(_floats64, st.none()), max_size=30),
    "float32": st.lists(st.one_of(_floats32, st.none()), max_size=30),
    "float16": st.lists(st.floats(width=16), max_size=30),
    "Float64": st.lists(st.one_of(st.floats(allow_nan=False), st.none()), max_size=30),
    "Float32": st.lists(st.one_of(st.floats(width=32, allow_nan=False), st.none()), max_size=30),
    "int64": st.lists(_ints64, max_size=30),
    "int8": st.lists(st.integers(-128, 127), max_size=30),
    "uint64": st.lists(st.integers(0, 2**64 - 1), max_size=30),
    "Int64": st.lists(st.one_of(_ints64, st.none()), max_size=30),
    "UInt8": st.lists(st.one_of(st.integers(0, 255), st.none()), max_size=30),
    "bool": st.lists(st.booleans(), max_size=30),
    "boolean": st.lists(st.one_of(st.booleans(), st.none()), max_size=30),
    "str": st.lists(st.one_of(st.text(max_size=5), st.none()), max_size=30),
    "string": st.lists(st.one_of(st.text(max_size=5), st.none()), max_size=30),
    "object": st.lists(st.one_of(st.text(max_size=5), _floats64, _ints64, st.booleans(), st.none()), max_size=30),
    "category": st.lists(st.one_of(st.sampled_from(["2742", "a", "0.5"]), st.none()), max_size=30),
    "category-float32": st.lists(st.one_of(_floats32.filter(lambda x: x == x), st.none()), max_size=30),
}


def _column(dtype: str, values: list) -> pd.Series:  # type: ignore[type-arg]
    if dtype == "category-float32":
        return pd.Series(values, dtype="float32").astype("category")
    if dtype in ("float64", "float32", "float16"):  # numpy float columns spell missing as NaN
        return pd.Series([np.nan if value is None else value for value in values], dtype=dtype)
    return pd.Series(values, dtype=dtype)


@pytest.mark.parametrize("dtype", sorted(_COLUMNS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_vectorised_spelling_agrees_with_the_scalar_rule_on_every_dtype(dtype, data) -> None:
    series = _column(dtype, data.draw(_COLUMNS[dtype]))
    expected = [canonical_category(series.iloc[i]) for i in range(len(series))]
    out = category_strings(series)
    assert out.dtype == object and out.tolist() == expected


@given(st.lists(_floats32.filter(np.isfinite), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_a_float32_column_and_the_same_numbers_from_a_csv_spell_alike(tmp_path_factory, values) -> None:
    column = pd.Series(values, dtype="float32")
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    column.to_frame("x").to_csv(path, index=False)  # pandas writes float32's own shortest digits
    from_file = read_table(path)["x"]
    assert category_strings(column).tolist() == category_strings(from_file).tolist()


@pytest.mark.parametrize("value, spelling", [
    (np.float32(0.1), "0.1"),  # its own precision, not float64's 0.10000000149011612
    (0.1, "0.1"),
    (np.float64(3.0), "3"), (3.0, "3"), (-0.0, "0"),
    (1e20, "1e+20"),  # integral but beyond 2**53: no int64 overflow
    (np.float32(1e20), "1e+20"),
    (np.float32(1e-4), "0.0001"),  # repr's layout, not NumPy's "1e-04"
    (np.float32(57936448.0), "57936450"),  # the float64 of float32's shortest digits, as a CSV reads it
    (2.0**53, "9007199254740992"),
    (float("inf"), "inf"), (np.float32("-inf"), "-inf"),
    (np.int8(-5), "-5"), (np.uint64(2**64 - 1), "18446744073709551615"), (2**70, str(2**70)),
    (True, "True"), (np.bool_(False), "False"),
    ("0.50", "0.50"), (np.str_("a"), "a"),
    (None, None), (float("nan"), None), (np.float32("nan"), None), (pd.NA, None), (pd.NaT, None),
    (np.datetime64("NaT"), None),
])
def test_canonical_category(value, spelling) -> None:
    assert canonical_category(value) == spelling


def test_the_scalar_rule_imports_no_pandas_numpy_or_torch() -> None:
    code = ("import sys, keel.data.spelling as s; assert s.canonical_category(2.0) == '2'; "
            "print(sorted(m for m in ('numpy', 'pandas', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_old_float32_vocabulary_is_respelled_and_nothing_else() -> None:
    old = category_strings(pd.Series(np.array([0.1, 2.5, 0.3], dtype=np.float32).astype(np.float64)))
    assert old.tolist() == ["0.10000000149011612", "2.5", "0.30000001192092896"]  # the old spelling
    assert respell_vocabulary(old.tolist()) == ["0.1", "2.5", "0.3"]
    # Strings the old rule could not have written for a float32 value stay as they are.
    unchanged = ["0.1", "0.50", "red", "3", "1e+20", "nan", "inf", "0.1000000000000000055511151231257827"]
    assert respell_vocabulary(unchanged) == unchanged


def test_the_empty_string_is_missing_as_in_a_csv() -> None:
    # A CSV's blank cell reads as missing; a DataFrame's "" must mean the same, and the ONNX graph
    # passes missing category values as "".
    assert canonical_category("") is None and canonical_category(np.str_("")) is None
    assert category_strings(pd.Series(["a", "", None], dtype=object)).tolist() == ["a", None, None]
    assert category_strings(pd.Series(["a", "", None], dtype="string")).tolist() == ["a", None, None]
    assert category_strings(pd.Series(["a", "", 3], dtype=object)).tolist() == ["a", None, "3"]


def test_a_model_that_learned_the_empty_string_warns_on_load() -> None:
    # Saved before "" meant missing: its vocabulary may hold "", which now never matches.
    from keel.data.preprocess import Preprocessor
    from keel.errors import KeelWarning

    state = [{"kind": "category", "name": "c", "vocabulary": ["a", ""], "min_count": 1, "min_share": 0.0, "n_rare": 0}]
    with pytest.warns(KeelWarning, match=r"\['c'\].*empty string"):
        Preprocessor.from_state(state)


@pytest.mark.parametrize("values", [["ok", None, "b\ud800d"], ["ok", 3, "b\ud800d"]])
def test_a_lone_surrogate_is_a_data_error_naming_column_and_row(values) -> None:
    # JSON's "\ud800" without its low half makes one; pyarrow and ONNX Runtime cannot encode it
    # (pandas' own string dtype refuses it already; object columns, text or mixed, hold it).
    from keel.errors import DataError

    series = pd.Series(values, dtype=object, name="city")
    with pytest.raises(DataError, match=r"column 'city' row 3 .*not valid Unicode") as caught:
        category_strings(series)
    assert (caught.value.column, caught.value.row) == ("city", 3)
    assert category_strings(pd.Series(["ok", "\U0001f600"], dtype=object)).tolist() == ["ok", "\U0001f600"]


@pytest.mark.parametrize("cell", [list(range(30)), {"colour": "red" * 30}, np.arange(40), ["red"]])
def test_a_container_cell_is_refused_in_the_same_words_from_a_frame_and_from_a_record(cell) -> None:
    # The s18 re-read: keel.data wrote its own copy of the runtime's sentence, quoting the value cut at 40
    # characters without a mark where the runtime cut at 60 with "...": one function words both now.
    from keel.errors import DataError
    from keel.runtime.inputs import to_string

    with pytest.raises(DataError) as from_frame:
        category_strings(pd.Series(["red", cell], dtype=object, name="colour"))
    with pytest.raises(DataError) as from_record:
        to_string(cell, "colour", 2)
    assert str(from_frame.value) == str(from_record.value)
    assert str(from_frame.value).startswith(f"column 'colour' row 2 holds a value of type {type(cell).__name__} (")
