"""DataFrames whose column labels are not strings (``pd.DataFrame(array)`` numbers them 0, 1, ...): every entry
that takes a frame reads a label as its ``str()`` (keel.data.spelling.column_names), or refuses it by name."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

import keel
from keel.data.io import read_table
from keel.data.schema import require_column
from keel.data.spelling import column_name, column_names
from keel.errors import DataError
from keel.export.onnx import to_onnx
from keel.runtime import Predictor
from keel.sklearn import KeelClassifier, KeelRegressor
from tests.conftest import FAST, make_classification_frame


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its columns labelled 0, 1, ... as ``pd.DataFrame(array)`` labels them."""
    return frame.set_axis(range(frame.shape[1]), axis=1)


@pytest.fixture(scope="module")
def numbered() -> pd.DataFrame:
    return _numbered(make_classification_frame())  # 0 size, 1 weight, 2 color, 3 member, 4 label


@pytest.fixture(scope="module")
def model(numbered: pd.DataFrame) -> keel.Model:
    return keel.fit(numbered, target=4, config=FAST, quiet=True)


def test_labels_read_as_their_str_where_it_is_readable_and_as_nothing_otherwise() -> None:
    readable = ["a", 3, np.int64(3), True, np.True_, 1.5, np.float32(1.5), pd.Timestamp("2024-01-02"),
                datetime.date(2024, 1, 2)]
    assert [column_name(label) for label in readable] == [
        "a", "3", "3", "True", "True", "1.5", "1.5", "2024-01-02 00:00:00", "2024-01-02"]
    for unreadable in (None, float("nan"), np.nan, pd.NaT, float("inf"), ("a", "b"), object(), b"a"):
        assert column_name(unreadable) is None


def test_an_int_named_frame_trains_predicts_evaluates_and_round_trips(numbered: pd.DataFrame, model: keel.Model,
                                                                       tmp_path) -> None:
    assert model.target == "4"
    assert [feature.name for feature in model.schema.features] == ["0", "1", "2", "3"]
    assert list(numbered.columns) == [0, 1, 2, 3, 4]  # the caller's frame keeps its labels
    predicted = model.predict(numbered)
    assert predicted.shape == (len(numbered),)
    assert model.evaluate(numbered)["n_rows"] == len(numbered)
    assert list(model.predict_frame(numbered).columns) == ["4"]
    model.save(tmp_path / "model")
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    loaded = keel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(numbered), predicted)
    # keel.runtime (torch-free) names the frame's columns as training did, and so does a frame named by text.
    runtime = Predictor.load(tmp_path / "model").predict_proba(numbered.drop(columns=[4]))
    np.testing.assert_allclose(runtime, model.predict_proba(numbered), atol=1e-5)
    np.testing.assert_array_equal(model.predict(numbered.rename(columns=str)), predicted)


def test_the_target_may_be_given_as_the_int_or_as_its_str(numbered: pd.DataFrame, model: keel.Model) -> None:
    by_text = keel.fit(numbered, target="4", config=FAST, quiet=True)
    assert by_text.target == model.target == "4"
    np.testing.assert_array_equal(by_text.predict(numbered), model.predict(numbered))
    assert keel.fit(numbered, target=4, config={**FAST, "target": "4"}, quiet=True).target == "4"  # they agree


def test_an_int_and_a_str_that_read_alike_are_refused_naming_both() -> None:
    frame = pd.DataFrame({1: [1.0, 2.0], "1": [3.0, 4.0], "y": [0, 1]})
    with pytest.raises(DataError, match=r"the DataFrame has columns 1 \(int\) and '1' \(str\), which keel would both "
                                        r"name '1'.*rename one of them") as caught:
        read_table(frame)
    assert caught.value.column == "1"
    with pytest.raises(DataError, match=r"columns 1 \(int\) and '1' \(str\)"):
        keel.fit(frame, target="y", config=FAST, quiet=True)


def test_a_multiindex_or_an_unnamed_column_is_refused_saying_how_to_rename() -> None:
    multi = pd.DataFrame(np.ones((2, 2)), columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")]))
    with pytest.raises(DataError, match=r"column labelled by the tuple \('a', 'x'\).*Join the levels"):
        read_table(multi)
    for unnamed in (None, np.nan):  # pandas keeps None in some indexes and makes it NaN in others
        with pytest.raises(DataError, match=r"a column without a name \((None|nan)\).*Give it one"):
            read_table(pd.DataFrame([[1.0, 0]], columns=pd.Index([unnamed, "y"], dtype=object)))
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):  # the same label twice, as before
        column_names(["a", "b", "a"])


def test_the_close_name_hint_never_fails_whatever_the_names() -> None:
    frame = pd.DataFrame({0: [1.0], "size": [2.0]})
    with pytest.raises(DataError, match=r"target column '3' is not in the data; its columns are: 0, size\."):
        require_column(frame, 3, "target")  # type: ignore[arg-type]  # a number, as a config's target may be
    with pytest.raises(DataError, match=r"target column 'sise' is not in the data.*Did you mean 'size'\?"):
        require_column(frame, "sise", "target")


def test_the_estimators_take_an_int_named_frame_with_categories() -> None:
    frame = make_classification_frame()
    X, y = _numbered(frame.drop(columns=["label"])), frame["label"]
    classifier = KeelClassifier(preset="fast", hidden=(8,), epochs=2).fit(X, y)
    # scikit-learn records feature names only when every one is a string: none here, as it does itself.
    assert not hasattr(classifier, "feature_names_in_")
    assert classifier.n_features_in_ == 4
    types = {feature.name: feature.type for feature in classifier.model_.schema.features}
    assert types["2"] == "category"  # a frame's types, not an array's numbers
    assert classifier.predict(X).shape == (len(X),)
    assert classifier.predict_proba(X).shape == (len(X), 3)
    named = KeelClassifier(preset="fast", hidden=(8,), epochs=2).fit(frame.drop(columns=["label"]), y)
    assert list(named.feature_names_in_) == ["size", "weight", "color", "member"]


def test_the_estimators_read_an_array_or_a_frame_by_position_as_scikit_learn_does() -> None:
    """Fitted on a frame, predicting from its array (or the reverse) failed: 'the data lacks the input column(s)
    ['0', '1', '2']' (audit s19a); scikit-learn reads such X by position, with a warning where names go missing."""
    frame = make_classification_frame()
    X, y = frame.drop(columns=["label"]), frame["label"]
    named = KeelClassifier(preset="fast", hidden=(8,), epochs=2).fit(X, y)
    expected = named.predict(X)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(named.predict(X.to_numpy()), expected)  # an object array: 'color' stays text
    numbered = KeelClassifier(preset="fast", hidden=(8,), epochs=2).fit(_numbered(X), y)
    np.testing.assert_array_equal(numbered.predict(X.to_numpy()), numbered.predict(_numbered(X)))
    numbers = X[["size", "weight"]].to_numpy()
    regressor = KeelRegressor(preset="fast", hidden=(8,), epochs=2).fit(numbers, frame["size"] * 2)
    with pytest.warns(UserWarning, match="has feature names"):
        by_frame = regressor.predict(pd.DataFrame(numbers, columns=["a", "b"]))
    np.testing.assert_allclose(by_frame, regressor.predict(numbers), rtol=1e-6)
