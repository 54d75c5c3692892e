"""keel.runtime: the ONNX predictor predicts what Model predicts, from every input form, without torch or pandas."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keel
from keel.data.values import category_strings, to_numeric
from keel.errors import ArtifactError, ConfigError, DataError, KeelError, KeelWarning
from keel.export.onnx import EXPORT_FORMAT, to_onnx
from keel.runtime import Predictor
from keel.runtime import predictor as predictor_module
from keel.runtime.inputs import InputColumn, to_feeds, to_number, to_string
from tests.conftest import FAST

TINY = {**FAST, "training.epochs": 3}
FEATURES = ["size", "count", "member", "color", "grade"]
# grade holds the integers 1-3 and is declared a category: 3, 3.0 and "3" must all read as "3".
DECLARED = {"input_features": [{"name": name} for name in FEATURES[:-1]] + [{"name": "grade", "type": "category"}]}
TARGETS = {"int": "flag_int", "bool": "flag_bool", "str": "flag_str", "multiclass": "kind", "regression": "amount"}
ROW = {"size": 0.5, "count": 7, "member": "no", "color": "blue", "grade": 2}


def table(n_rows: int = 120, seed: int = 0) -> pd.DataFrame:
    """Every feature type with missing values, and a target of each kind driven by the features."""
    rng = np.random.default_rng(seed)
    size = rng.normal(0, 1, n_rows)
    grade = rng.integers(1, 4, n_rows)
    frame = pd.DataFrame({
        "size": size,
        "count": rng.integers(0, 50, n_rows),
        "member": rng.choice(["yes", "no"], n_rows).astype(object),
        "color": rng.choice(["red", "green", "blue"], n_rows).astype(object),
        "grade": grade,
    })
    score = size + (frame["member"] == "yes") + 0.5 * grade
    frame["flag_int"] = (score > 1.5).astype(int)
    frame["flag_bool"] = score > 1.5
    frame["flag_str"] = np.where(score > 1.5, "pos", "neg")
    frame["kind"] = np.where(score > 2.5, "high", np.where(score < 1.0, "low", "mid"))
    frame["amount"] = 3 * size + grade + rng.normal(0, 0.1, n_rows)
    frame.loc[rng.choice(n_rows, 10, replace=False), "size"] = np.nan
    frame.loc[rng.choice(n_rows, 8, replace=False), "member"] = None
    frame.loc[rng.choice(n_rows, 8, replace=False), "color"] = None
    return frame


def requests() -> pd.DataFrame:
    """Rows to predict: training-like rows, then each odd value alone in an otherwise ordinary row."""
    frame = table(40, seed=1)[FEATURES].astype(object)
    odd_cells = [("size", None), ("size", np.nan), ("size", 40.0), ("size", -2), ("count", None), ("count", 49),
                 ("member", "maybe"), ("member", None), ("color", "purple"), ("color", None), ("grade", 4),
                 ("grade", None), ("grade", 2.0), ("grade", "3")]
    odd = []
    for index, (column, value) in enumerate(odd_cells):
        row = frame.iloc[index % len(frame)].copy()
        row[column] = value
        odd.append(row)
    return pd.concat([frame, pd.DataFrame(odd)], ignore_index=True)


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with None for every missing cell, as JSON would bring it."""
    return frame.astype(object).where(frame.notna(), None)


def input_forms(frame: pd.DataFrame) -> dict[str, Any]:
    """The same rows in every form the predictor takes (the one-row form is checked row by row)."""
    values = plain(frame)
    return {
        "DataFrame": frame,
        "rows": values.to_dict("records"),
        "columns": {name: values[name].tolist() for name in values.columns},
        "arrays": {name: values[name].to_numpy() for name in values.columns},
        "one row at a time": [dict(row) for row in values.to_dict("records")],
    }


def predict(predictor: Predictor, form: str, data: Any, proba: bool = False) -> np.ndarray:
    method = predictor.predict_proba if proba else predictor.predict
    if form == "one row at a time":
        return np.concatenate([method(row) for row in data])
    return method(data)


def keel_says(model: keel.Model, frame: pd.DataFrame, proba: bool = False) -> np.ndarray:
    with warnings.catch_warnings():  # Model warns about the unseen values on purpose
        warnings.simplefilter("ignore", KeelWarning)
        return model.predict_proba(frame) if proba else model.predict(frame)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[keel.Model, Path]]:
    """One tiny model per target kind, saved with its ONNX export attached."""
    frame = table()
    trained = {}
    for kind, target in TARGETS.items():
        others = [t for t in TARGETS.values() if t != target]
        model = keel.fit(frame.drop(columns=others), target=target, config={**TINY, **DECLARED}, quiet=True)
        directory = tmp_path_factory.mktemp("runtime") / kind
        model.save(directory)
        model.attach("model.onnx", to_onnx(model).SerializeToString())
        trained[kind] = (model, directory)
    return trained


# ---- what it predicts ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TARGETS))
def test_predictions_match_the_model_from_every_input_form(models, kind: str) -> None:
    model, directory = models[kind]
    predictor = Predictor.load(directory)
    frame = requests()
    expected = keel_says(model, frame)
    for form, data in input_forms(frame).items():
        got = predict(predictor, form, data)
        assert got.dtype == expected.dtype, form
        if kind == "regression":
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=form)
        else:
            assert got.tolist() == expected.tolist(), form
            np.testing.assert_allclose(predict(predictor, form, data, proba=True), keel_says(model, frame, proba=True),
                                       atol=1e-5, err_msg=form)
    typed = table(40, seed=2)[FEATURES]  # float64 with NaN, int64, object: as a file reads
    np.testing.assert_allclose(predictor.predict(typed) if kind == "regression" else predictor.predict_proba(typed),
                               keel_says(model, typed, proba=kind != "regression"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, classes", [("int", [0, 1]), ("bool", [False, True]), ("str", ["neg", "pos"])])
def test_binary_labels_keep_their_python_types(models, kind: str, classes: list[Any]) -> None:
    predictor = Predictor.load(models[kind][1])
    assert predictor.classes == classes and [type(c) for c in predictor.classes] == [type(c) for c in classes]
    labels = predictor.predict(plain(requests()).to_dict("records")).tolist()
    assert {type(label) for label in labels} == {type(classes[0])}
    assert set(labels) <= set(classes)


def test_classes_of_mixed_types_keep_their_own_types(tmp_path: Path) -> None:
    """[1, "yes"]: np.asarray would make every label a string ("1"); Model, Predictor and the
    encoder give the labels themselves, as the server does."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 80), "y": rng.choice(["a", "b"], 80)})
    frame["label"] = pd.Series(np.where(frame["x"] > 0, "yes", "1"), dtype=object).map(lambda v: 1 if v == "1" else v)
    model = keel.fit(frame, target="label", config=TINY, quiet=True)
    model.save(tmp_path / "mixed")
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    predictor = Predictor.load(tmp_path / "mixed")
    assert predictor.classes == model.classes == [1, "yes"]
    rows = frame[["x", "y"]].iloc[:40]
    labels = model.predict(rows)
    assert set(labels.tolist()) == {1, "yes"}  # both classes predicted, each in its own type
    assert [type(label) for label in labels] == [int if label == 1 else str for label in labels]
    assert predictor.predict(plain(rows).to_dict("records")).tolist() == labels.tolist()
    assert [type(label) for label in predictor.predict(rows)] == [type(label) for label in labels]
    assert model.target_encoder.decode(np.array([1, 0])).tolist() == ["yes", 1]
    assert predictor.predict(rows).dtype == labels.dtype == object


def test_an_integer_category_reads_alike_as_int_float_and_string(models) -> None:
    model, directory = models["multiclass"]
    predictor = Predictor.load(directory)
    row = {"size": 0.3, "count": 10, "member": "yes", "color": "red"}
    spellings = [3, 3.0, "3", np.int64(3), np.float32(3.0), Decimal(3)]
    probabilities = [predictor.predict_proba({**row, "grade": grade}) for grade in spellings]
    for other in probabilities[1:]:
        np.testing.assert_array_equal(other, probabilities[0])
    np.testing.assert_allclose(probabilities[0], keel_says(model, pd.DataFrame([{**row, "grade": 3}]), proba=True),
                               atol=1e-5)
    # and the grade does matter, so the equality above is no accident
    assert not np.array_equal(predictor.predict_proba({**row, "grade": 1}), probabilities[0])


def test_numeric_strings_bools_and_missing_numbers_read_as_keel_reads_them(models) -> None:
    predictor = Predictor.load(models["regression"][1])
    row = {"size": 0.5, "count": 7, "member": "no", "color": "blue", "grade": 2}
    value = predictor.predict(row)
    assert predictor.predict({**row, "size": " 0.5 ", "count": "7"}) == value
    assert predictor.predict({**row, "count": 7.0}) == value
    for missing in (None, float("nan"), np.nan, pd.NA):
        assert predictor.predict({**row, "size": missing}) == predictor.predict({**row, "size": None})
    assert predictor.predict({**row, "size": None}) != value
    assert predictor.predict({**row, "count": True}) == predictor.predict({**row, "count": 1})


def test_an_empty_string_is_a_missing_category_as_the_onnx_file_defines_it(models) -> None:
    # Model.predict reads "" in a DataFrame as an unseen category; the ONNX graph takes "" as missing.
    predictor = Predictor.load(models["multiclass"][1])
    missing = predictor.predict_proba({**ROW, "color": None}).tolist()
    assert predictor.predict_proba({**ROW, "color": ""}).tolist() == missing
    assert predictor.predict_proba({**ROW, "color": None}).tolist() != predictor.predict_proba(ROW).tolist()


def test_a_large_batch_runs_in_chunks_and_matches(models) -> None:
    model, directory = models["multiclass"]
    frame = requests().sample(predictor_module.CHUNK_ROWS * 2 + 17, replace=True, random_state=0)
    predictor = Predictor.load(directory, threads=2)
    assert predictor.predict(frame).tolist() == keel_says(model, frame).tolist()
    np.testing.assert_allclose(predictor.predict_proba(frame), keel_says(model, frame, proba=True), atol=1e-5)


def test_columns_may_be_pandas_series_or_float32_arrays(models) -> None:
    model, directory = models["multiclass"]
    predictor = Predictor.load(directory)
    frame = table(30, seed=2)[FEATURES]
    columns = {name: frame[name] for name in FEATURES}
    columns["size"] = frame["size"].to_numpy(dtype=np.float32)
    expected = keel_says(model, frame.assign(size=frame["size"].astype(np.float32)), proba=True)
    np.testing.assert_allclose(predictor.predict_proba(columns), expected, atol=1e-5)


# ---- conversion, value by value ------------------------------------------------------------
NUMBER_TEXT = st.text(alphabet="0123456789+-.eE _naif\u00a0\t", max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(NUMBER_TEXT, st.floats(allow_infinity=True), st.integers(-10**6, 10**6), st.booleans(),
                          st.none()), min_size=1, max_size=5))
def test_numbers_convert_as_keels_to_numeric_does(values: list[Any]) -> None:
    try:
        expected: list[float] | str = to_numeric(pd.Series(values, dtype=object), column="c").tolist()
    except DataError:
        expected = "error"
    try:
        got: list[float] | str = [to_number(value, "c", row) for row, value in enumerate(values, 1)]
    except DataError:
        got = "error"
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
    else:
        # NaN equals NaN here; the sign of zero may differ ("-0" alone reads as the integer 0 in pandas,
        # -0.0 in the runtime), which no prediction can tell apart: x - center is the same number.
        assert all((a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, expected))
        assert len(got) == len(expected)


@pytest.mark.parametrize("values", [
    [3, 3.0, "3", None, True], [0.1, 1e20, -0.0, float("nan")], np.array([0.1, 2.5, 3.0], dtype=np.float32),
    np.array([1, 2, 3]), np.array([True, False]), ["a", "b", None], np.array(["x", "y"]),
])
def test_category_values_are_spelled_as_category_strings_spells_them(values: Any) -> None:
    column = InputColumn("c", number=False)
    got = to_feeds({"c": values}, [column])[0]["c"].tolist()
    expected = ["" if s is None else s for s in category_strings(pd.Series(values)).tolist()]
    assert got == expected
    assert [to_string(value, "c", 1) for value in values] == expected  # NumPy scalars from arrays


# ---- what it refuses -----------------------------------------------------------------------

@pytest.mark.parametrize("data, column, row, words", [
    ({k: v for k, v in ROW.items() if k != "color"}, "color", 1, "lacks the input column 'color'"),
    ([ROW, {k: v for k, v in ROW.items() if k != "grade"}], "grade", 2, "row 2 lacks"),
    ({**{k: [v] * 3 for k, v in ROW.items()}, "count": [1, "abc", 3]}, "count", 2, "'abc'"),
    ({**ROW, "size": "nan"}, "size", 1, "holds numbers"),
    ({**ROW, "size": math.inf}, "size", 1, "finite"),
    ({**{k: [v] * 3 for k, v in ROW.items()}, "size": [1.0, 2.0, -math.inf]}, "size", 3, "finite"),
    ({**ROW, "count": {"value": 7}}, "count", 1, "of type dict"),
    ([ROW, {**ROW, "color": ["red", "blue"]}], "color", 2, "of type list"),
    ({**ROW, "member": {"yes"}}, "member", 1, "of type set"),
    ({**{k: [v] * 3 for k, v in ROW.items()}, "grade": [1, 2]}, "grade", None, "has 2 value(s)"),
    ({**{k: [v] * 3 for k, v in ROW.items()}, "color": "red"}, "color", None, "single value"),
    (pd.DataFrame([ROW, {**ROW, "size": "big"}]), "size", 2, "'big'"),
    ({k: [v] * 2 for k, v in ROW.items() if k != "size"}, "size", None, "lacks the input column 'size'"),
])
def test_bad_input_is_a_data_error_naming_column_and_row(models, data: Any, column: str, row: int | None,
                                                         words: str) -> None:
    predictor = Predictor.load(models["int"][1])
    with pytest.raises(DataError, match=".") as caught:
        predictor.predict(data)
    assert (caught.value.column, caught.value.row) == (column, row)
    assert repr(column) in str(caught.value) and words in str(caught.value)
    if row is not None:
        assert f"row {row}" in str(caught.value)


@pytest.mark.parametrize("data, row", [({"a": 1, 0: 1.5}, 1), ([{"a": 1, "0": 1.0}, {"a": 1, 0: 1.5}], 2),
                                       ({"a": [1, 2], 0: [1.5, 2.5]}, None)])
def test_an_int_key_where_the_model_reads_its_text_says_so(data: Any, row: int | None) -> None:
    # The s19 audit: a model trained on pd.DataFrame(array) reads the column "0"; its df.to_dict("records") has the
    # key 0, and the runtime said the row lacked '0', which it seemed to hold.
    with pytest.raises(DataError, match="lacks the input column '0' that the model was trained on; its key 0 is of "
                                        "type int, and keel names columns by text: use the key '0'") as caught:
        to_feeds(data, [InputColumn("a", number=True), InputColumn("0", number=True)])
    assert (caught.value.column, caught.value.row) == ("0", row)


SURROGATE_FORMS = {  # the lone surrogate "\ud800" (json.loads makes one of the escape) in row 2 of color
    "one row": ({**ROW, "color": "\ud800"}, 1),
    "rows": ([ROW, {**ROW, "color": "a\ud800"}], 2),
    "columns": ({**{k: [v, v] for k, v in ROW.items()}, "color": ["red", "\udfff"]}, 2),
    "mixed column": ({**{k: [v, v] for k, v in ROW.items()}, "color": [3, "\ud83d"]}, 2),
    "array": ({**{k: np.array([v, v]) for k, v in ROW.items()}, "color": np.array(["red", "\udc00"])}, 2),
    "DataFrame": (pd.DataFrame({**{k: [v, v] for k, v in ROW.items()},
                                "color": pd.Series(["red", "\ud800"], dtype=object)}), 2),
}


@pytest.mark.parametrize("form", list(SURROGATE_FORMS))
def test_text_that_is_not_valid_unicode_is_a_data_error(models, form: str) -> None:
    """ONNX Runtime encodes strings as UTF-8, which cannot hold a lone surrogate (a UnicodeEncodeError once)."""
    data, row = SURROGATE_FORMS[form]
    with pytest.raises(DataError) as caught:
        Predictor.load(models["int"][1]).predict(data)
    assert (caught.value.column, caught.value.row) == ("color", row)
    assert "not valid Unicode text" in str(caught.value) and "send UTF-8" in str(caught.value)


def test_text_beyond_ascii_is_fine(models) -> None:
    predictor = Predictor.load(models["int"][1])
    assert predictor.predict([{**ROW, "color": "\U0001F600"}, {**ROW, "member": "\u00e9t\u00e9"}]).shape == (2,)


@pytest.mark.parametrize("data", [[], {k: [] for k in ROW}, pd.DataFrame(columns=list(ROW))])
def test_an_empty_batch_is_a_data_error(models, data: Any) -> None:
    with pytest.raises(DataError, match="no rows"):
        Predictor.load(models["int"][1]).predict(data)


@pytest.mark.parametrize("data, words", [("rows.csv", "of type str"), ([ROW, 3], "row 2 is of type int"),
                                         (np.zeros((2, 5)), "of type ndarray")])
def test_data_of_another_shape_is_a_data_error(models, data: Any, words: str) -> None:
    with pytest.raises(DataError, match=words):
        Predictor.load(models["int"][1]).predict(data)


def test_columns_the_model_never_saw_are_warned_about_once(models) -> None:
    predictor = Predictor.load(models["int"][1])
    with pytest.warns(KeelWarning) as caught:
        first = predictor.predict([{**ROW, "colour": "red", "note": 1}, {**ROW, "colour": "blue"}])
    assert len(caught) == 1 and "['colour', 'note']" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = predictor.predict([{**ROW, "colour": "red", "note": 1}, {**ROW, "colour": "blue"}])
        # the model's own target is a column of its table, not a mistake: no warning
        predictor.predict({**ROW, "flag_int": 1})
    assert first.tolist() == again.tolist() == predictor.predict([ROW, ROW]).tolist()


def test_predict_proba_on_regression_is_a_config_error(models) -> None:
    with pytest.raises(ConfigError, match="regression"):
        Predictor.load(models["regression"][1]).predict_proba(ROW)


# ---- loading -------------------------------------------------------------------------------
def test_a_bare_onnx_file_predicts_from_its_own_metadata(models, tmp_path: Path) -> None:
    model, directory = models["bool"]
    path = tmp_path / "exported.onnx"
    path.write_bytes((directory / "model.onnx").read_bytes())
    predictor = Predictor.load(path)
    assert (predictor.task, predictor.target, predictor.classes) == ("binary", "flag_bool", [False, True])
    frame = requests()
    assert predictor.predict(frame).tolist() == keel_says(model, frame).tolist()


def test_a_model_without_an_export_says_to_run_keel_export(models, tmp_path: Path) -> None:
    model, _ = models["int"]
    model.save(tmp_path / "plain")
    with pytest.raises(ArtifactError, match="keel export"):
        Predictor.load(tmp_path / "plain")


def test_the_int8_export_of_a_directory_loads_by_name_with_its_checksum(models, tmp_path: Path) -> None:
    model = keel.load(models["multiclass"][1])
    model.save(tmp_path / "m")
    model.export(quantize="int8")  # attaches the float model.onnx too
    with pytest.raises(ArtifactError, match=r"no ONNX export named 'model.fp16.onnx'.*'model.int8.onnx'.*"):
        Predictor.load(tmp_path / "m", file="model.fp16.onnx")
    predictor = Predictor.load(tmp_path / "m", file="model.int8.onnx")
    frame = requests()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)
        own = model.predict_proba(frame)
    # int8: close, not equal (7-bit weights, reduce_range: 0.055 measured on an AMD EPYC; the static test allows 0.1)
    assert np.abs(predictor.predict_proba(frame) - own).max() < 0.1
    (tmp_path / "m" / "model.int8.onnx").write_bytes(b"changed")
    with pytest.raises(ArtifactError, match="checksum"):
        Predictor.load(tmp_path / "m", file="model.int8.onnx")


def test_a_dynamic_int8_files_answer_for_a_row_does_not_depend_on_the_rows_beside_it(models, tmp_path: Path) -> None:
    # Dynamic int8 scales each call's activations by all its rows: a user's trial saw one outlier in a batch move
    # its neighbours' probabilities by 0.09 and change 6 of 20 labels. The predictor calls such a file a row at a time.
    model = keel.load(models["multiclass"][1])
    model.save(tmp_path / "m")
    model.export(quantize="int8")
    predictor = Predictor.load(tmp_path / "m", file="model.int8.onnx")
    ordinary = table(20, seed=2)[FEATURES]
    outlier = ordinary.iloc[:1].assign(size=1e6, count=10**6)
    alone = predictor.predict_proba(ordinary)
    beside = predictor.predict_proba(pd.concat([ordinary, outlier], ignore_index=True))[:len(ordinary)]
    assert np.array_equal(alone, beside)
    # The premise: one call of the file for all rows does move the ordinary rows.
    import onnxruntime

    from keel.export.parity import onnx_feeds

    session = onnxruntime.InferenceSession(str(tmp_path / "m" / "model.int8.onnx"))
    def raw(frame: pd.DataFrame) -> np.ndarray:
        return session.run(None, onnx_feeds(model, frame))[1]
    assert not np.array_equal(raw(ordinary), raw(pd.concat([ordinary, outlier], ignore_index=True))[:len(ordinary)])


def test_a_changed_onnx_file_fails_its_checksum(models, tmp_path: Path) -> None:
    model, _ = models["int"]
    copy = keel.load(models["int"][1])
    copy.save(tmp_path / "copy")
    copy.attach("model.onnx", to_onnx(model).SerializeToString())
    Predictor.load(tmp_path / "copy")  # intact: loads
    content = bytearray((tmp_path / "copy" / "model.onnx").read_bytes())
    content[-1] ^= 1
    (tmp_path / "copy" / "model.onnx").write_bytes(bytes(content))
    with pytest.raises(ArtifactError, match="checksum"):
        Predictor.load(tmp_path / "copy")


@pytest.mark.parametrize("problem", ["nothing there", "not onnx", "no keel metadata", "newer export format"])
def test_files_it_cannot_use_are_artifact_errors(models, tmp_path: Path, problem: str) -> None:
    path = tmp_path / "file.onnx"
    if problem == "not onnx":
        path.write_bytes(b"not a protobuf at all")
    elif problem == "no keel metadata":
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, ["n"])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, ["n"])])
        path.write_bytes(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                                ir_version=8).SerializeToString())
    elif problem == "newer export format":
        proto = onnx.load(str(models["int"][1] / "model.onnx"))
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                            "keel.export_format": str(EXPORT_FORMAT + 1)})
        path.write_bytes(proto.SerializeToString())
    with pytest.raises(ArtifactError, match={"nothing there": "no model at", "not onnx": "cannot be loaded",
                                             "no keel metadata": "without keel's metadata",
                                             "newer export format": "Upgrade keel"}[problem]):
        Predictor.load(path)


def test_the_export_format_it_reads_is_the_one_keel_writes() -> None:
    assert predictor_module.EXPORT_FORMAT == EXPORT_FORMAT


def test_a_missing_onnxruntime_names_the_install(models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is absent
    with pytest.raises(KeelError, match="pip install"):
        Predictor.load(models["int"][1])


def test_threads_must_be_a_whole_number(models) -> None:
    with pytest.raises(ConfigError, match="threads"):
        Predictor.load(models["int"][1], threads=-1)


# ---- what it imports -----------------------------------------------------------------------
def test_the_runtime_loads_neither_torch_nor_pandas(models, tmp_path: Path) -> None:
    directory = models["multiclass"][1]
    bare = tmp_path / "bare.onnx"
    bare.write_bytes((directory / "model.onnx").read_bytes())
    script = f"""
import json, sys
import keel.runtime
heavy = lambda: sorted(m for m in ("torch", "pandas", "keel.model", "keel.config", "keel.data.values")
                       if m in sys.modules)
after_import = heavy()
row = {ROW!r}
labels = [keel.runtime.Predictor.load(p).predict(row).tolist() for p in ({str(directory)!r}, {str(bare)!r})]
print(json.dumps({{"after_import": after_import, "after_predict": heavy(), "labels": labels}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after_import"] == [] and report["after_predict"] == []
    expected = keel_says(models["multiclass"][0], pd.DataFrame([ROW])).tolist()
    assert report["labels"][0] == report["labels"][1] == expected
