from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.config import load_config
from keel.data.io import read_table
from keel.data.schema import Schema, infer_column_type, infer_schema, infer_task
from keel.errors import ConfigError, DataError


def _schema(frame: pd.DataFrame, **config):  # type: ignore[no-untyped-def]
    return infer_schema(read_table(frame), load_config(config))


def test_column_types_are_inferred_and_useless_columns_dropped_with_a_reason() -> None:
    n = 60
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "number": rng.normal(size=n),
        "numeric_text": [str(v) for v in rng.normal(size=n)],
        "flag": rng.choice([True, False], n),
        "two_strings": rng.choice(["yes", "no"], n),
        "city": rng.choice(["paris", "rome", "oslo"], n),
        "row_id": np.arange(n),
        "customer_uuid": [f"c-{i:05d}" for i in range(n)],
        "comment": [f"this is a long free text comment number {i} about things" for i in range(n)],
        "constant": 7,
        "empty": [None] * n,
        "y": rng.integers(0, 2, n),
    })
    schema = _schema(frame, target="y")
    assert {f.name: f.type for f in schema.features} == {
        "number": "number", "numeric_text": "number", "flag": "binary", "two_strings": "binary", "city": "category",
        "comment": "text"}
    assert schema.dropped["row_id"].startswith("id-like")
    assert schema.dropped["customer_uuid"].startswith("id-like")
    assert schema.dropped["constant"].startswith("constant")
    assert schema.dropped["empty"] == "all values are missing"
    assert schema.task == "binary"


def test_declared_features_are_used_as_declared() -> None:
    frame = pd.DataFrame({"zip": [1000, 2000, 3000, 1000] * 5, "other": range(20), "y": [0, 1] * 10})
    schema = _schema(frame, target="y", input_features=[{"name": "zip", "type": "category"}])
    assert [(f.name, f.type) for f in schema.features] == [("zip", "category")]


@pytest.mark.parametrize("values, task", [
    (["a", "b", "a", "b"], "binary"),
    (["a", "b", "c", "a"], "multiclass"),
    ([0, 1, 2, 3, 2, 1], "multiclass"),
    ([0.5, 1.25, 2.0, 3.5], "regression"),
    (list(range(100)), "regression"),
    ([True, False, True, True], "binary"),
])
def test_task_is_inferred_from_the_target(values, task) -> None:
    assert infer_task(pd.Series(values), "y", "auto", None) == task


def test_task_override_and_its_checks() -> None:
    assert infer_task(pd.Series([0, 1, 2, 3]), "y", "regression", None) == "regression"
    with pytest.raises(ConfigError, match="task is binary but target 'y' has 3 classes"):
        infer_task(pd.Series(["a", "b", "c"]), "y", "binary", None)


def test_missing_target_lists_columns_and_suggests_the_closest() -> None:
    frame = pd.DataFrame({"species": ["a", "b"], "island": ["x", "y"]})
    with pytest.raises(DataError, match=r"target column 'specis' is not in the data; its columns are: species, island\. Did you mean 'species'\?"):
        _schema(frame, target="specis")
    with pytest.raises(DataError, match="Did you mean 'species'"):
        _schema(frame, target="SPECIES")


def test_target_with_one_class_or_no_values() -> None:
    with pytest.raises(DataError, match=r"target column 'y' holds one class \('a'\) on every labelled row: there is "
                                        r"nothing to learn"):
        _schema(pd.DataFrame({"x": [1, 2, 3], "y": ["a", "a", None]}), target="y")
    # A constant number: plainly shown (not np.float64(100.0)), and refused as a regression target too (it
    # trained, scored R^2 0 and saved, with no word).
    constant = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [100.0, 100.0, 100.0]})
    with pytest.raises(DataError, match=r"target column 'y' holds one class \(100\.0\) on every labelled row"):
        _schema(constant, target="y")  # whole numbers, task auto: read as classes
    with pytest.raises(DataError, match=r"holds one value \(100\.0\) on every labelled row"):
        infer_task(constant["y"], "y", "regression", None)
    assert infer_column_type(constant["y"], "y", None) == (None, "constant (every value is 100.0)")
    with pytest.raises(DataError, match=r"target column 'y' has no values \(all 3 are missing\)"):
        _schema(pd.DataFrame({"x": [1, 2, 3], "y": [None, None, None]}), target="y")


def test_no_target_and_no_features() -> None:
    with pytest.raises(ConfigError, match="no target column; pass --target"):
        _schema(pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(DataError, match="no usable input columns"):
        _schema(pd.DataFrame({"x": [1, 1, 1], "y": [0, 1, 0]}), target="y")


def test_a_typo_in_a_number_column_names_column_row_and_value(tmp_path) -> None:
    path = tmp_path / "data.csv"
    values = [str(i * 1.5) for i in range(30)]
    values[17] = "12,3kg"
    pd.DataFrame({"weight": values, "y": [0, 1] * 15}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'weight' holds numbers, but row 18 has the value '12,3kg'") as error:
        _schema(read_table(path), target="y")
    assert (error.value.column, error.value.row, error.value.file) == ("weight", 18, str(path))


def test_infinite_values_are_an_error_nan_is_missing(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x,y\n1,0\nnan,1\n3,0\ninf,1\n5,0\n-inf,1\n")
    frame = read_table(path)
    assert np.isnan(frame["x"].iloc[1])
    with pytest.raises(DataError, match=r"column 'x' row 4 has the value inf; keel needs finite numbers \(2 infinite"):
        _schema(frame, target="y", input_features=[{"name": "x", "type": "number"}])


def test_mostly_text_column_with_numbers_is_a_category() -> None:
    series = pd.Series(["a", "b", "1", "c", "2"] * 4)
    assert infer_column_type(series, "mixed", None) == ("category", "")


def test_a_two_valued_number_column_stays_a_number_unless_declared_binary() -> None:
    frame = pd.DataFrame({"dose": [10.0, 20.0] * 15, "flag": [True, False] * 15, "answer": ["yes", "no"] * 15,
                          "y": [0, 1, 1] * 10})
    assert {f.name: f.type for f in _schema(frame, target="y").features} == {
        "dose": "number", "flag": "binary", "answer": "binary"}
    declared = _schema(frame, target="y", input_features=[{"name": "dose", "type": "binary"}])
    assert [(f.name, f.type) for f in declared.features] == [("dose", "binary")]


def test_a_category_dtype_is_a_category_even_when_its_values_look_like_numbers(tmp_path) -> None:
    n = 60
    frame = pd.DataFrame({"school": pd.Series([str(2742 + i % 4) for i in range(n)], dtype="category"),
                          "pair": pd.Series(["1", "2"] * (n // 2), dtype="category"),
                          "student_id": pd.Series([str(i) for i in range(n)], dtype="category"), "y": [0, 1] * (n // 2)})
    schema = _schema(frame, target="y")
    assert {f.name: f.type for f in schema.features} == {"school": "category", "pair": "binary"}
    assert schema.dropped["student_id"].startswith("id-like")  # the drop rules of categories still apply
    assert schema.notes == []
    path = tmp_path / "data.parquet"  # a Parquet dictionary column reads back as a category dtype
    frame[["school", "y"]].to_parquet(path)
    assert [(f.name, f.type) for f in _schema(read_table(path), target="y").features] == [("school", "category")]


def test_numeric_text_is_read_as_a_number_with_a_note_saying_how_to_declare_it(tmp_path) -> None:
    n = 30
    frame = pd.DataFrame({"code": [str(100 + i % 7) for i in range(n)], "count": [i % 7 for i in range(n)],
                          "y": [0, 1] * 15})
    schema = _schema(frame, target="y")
    assert {f.name: f.type for f in schema.features} == {"code": "number", "count": "number"}
    assert schema.notes == [
        "column 'code' holds numbers written as text; read as a number (a value that does not parse is an error "
        "naming it). Declare it a category with "
        "input_features: [{name: code, type: category}] if the numbers are codes (input_features lists every "
        "feature to use; give the others type auto)."]  # integer columns get no note
    state = schema.to_dict()
    assert Schema.from_dict(state) == schema
    del state["notes"]  # a schema saved before notes existed still loads
    assert Schema.from_dict(state).notes == []


def test_a_bad_regression_target_value_gets_a_target_s_advice() -> None:
    """'n.a.' in a regression target: the message says to drop the rows or change the task, not to declare the
    column a category in input_features (a feature's advice; the target is no feature)."""
    from keel.data.preprocess import TargetEncoder

    bad = pd.Series([1.5, 2.5, "n.a."], name="wage")
    for call in (lambda: infer_task(bad, "wage", "regression", "data.csv"),
                 lambda: TargetEncoder("wage", "regression").fit(bad),
                 lambda: TargetEncoder("wage", "regression").fit(bad.iloc[:2]).encode(bad, "holdout.csv")):
        with pytest.raises(DataError, match=r"column 'wage' holds numbers, but row 3 has the value 'n\.a\.'.*or drop "
                                            r"those rows .*set task to binary or multiclass") as error:
            call()
        assert "input_features" not in str(error.value)
    from keel.data.values import to_numeric

    with pytest.raises(DataError, match="declare the column a category in input_features"):  # a feature's, still
        to_numeric(bad, column="x")


def test_dates_in_another_format_than_iso_are_noted_not_silently_a_category() -> None:
    # A user's trial: openintro birds' '10/31/1996 0:00:00' became a category of rare values, without a word.
    rng = np.random.default_rng(0)
    days = pd.Timestamp("1996-01-01") + pd.to_timedelta(rng.integers(0, 3000, 200), unit="D")
    frame = pd.DataFrame({"us": days.strftime("%m/%d/%Y 0:00:00"), "german": days.strftime("%d.%m.%Y"),
                          "iso": days.strftime("%Y-%m-%d"), "version": [f"1.{i % 13}.{i % 7}" for i in range(200)],
                          "y": [0, 1] * 100})
    schema = _schema(frame, target="y")
    types = {f.name: f.type for f in schema.features}
    assert types["iso"] == "date" and "us" not in types and "german" not in types  # nearly unique: dropped
    for name in ("us", "german"):
        assert "looks like dates not written as ISO 8601" in schema.dropped[name]
        assert f"e.g. {frame[name][0]!r}" in schema.dropped[name]
    assert "ISO" not in schema.dropped.get("version", "") and not any("ISO 8601" in note for note in schema.notes)
    # Fewer distinct values: kept as a category, with a note.
    frame = pd.DataFrame({"when": np.tile(["03/01/2020", "04/01/2020", "05/02/2020"], 40), "y": [0, 1] * 60})
    schema = _schema(frame, target="y")
    assert [f.type for f in schema.features] == ["category"]
    assert schema.notes == ["column 'when' looks like dates not written as ISO 8601 (e.g. '03/01/2020'), so it is "
                            "read as a category: keel reads only ISO dates as dates (in other forms day and month may "
                            "be either way round); convert the column (pd.to_datetime(..., format=...), or write "
                            "1996-10-31) for its date features."]


def test_a_target_declared_category_or_binary_is_classes_and_no_feature() -> None:
    """input_features may list the target as category or binary: its labels then come from a CSV as written
    (Schema.target_written), the task is a classification however the labels look, and the other entries (or,
    with none, every column) are the features."""
    from keel.data.schema import declared_target, declared_task, written_columns

    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4] * 10, "c": ["a", "b"] * 20, "y": list(range(40))})
    declared = _schema(frame, target="y", input_features=[{"name": "y", "type": "category"}])
    assert declared.task == "multiclass" and declared.feature_names == ["x", "c"]  # 40 integers: classes here
    assert declared.target_written and written_columns(declared) == ["c", "y"]
    assert Schema.from_dict(declared.to_dict()).target_written
    listed = _schema(frame, target="y", input_features=[{"name": "x", "type": "number"}, {"name": "y", "type": "category"}])
    assert listed.feature_names == ["x"]
    assert not _schema(frame, target="y").target_written  # undeclared: read as pandas parses it
    assert declared_task(load_config({"target": "y", "input_features": [{"name": "y", "type": "binary"}]})) == "binary"
    assert declared_target(load_config({"target": "y"})) is None
    with pytest.raises(ConfigError, match="lists the target 'y' with type number.*task: regression"):
        _schema(frame, target="y", input_features=[{"name": "y", "type": "number"}])
    with pytest.raises(ConfigError, match=r"declares the target 'y' category \(classes\), but task is regression"):
        _schema(frame, target="y", task="regression", input_features=[{"name": "y", "type": "category"}])
    with pytest.raises(ConfigError, match="task is binary but target 'y' has 40 classes.*declare it category"):
        _schema(frame, target="y", input_features=[{"name": "y", "type": "binary"}])


def test_a_csv_target_whose_spellings_pandas_merges_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """1 and 01 (or 1 and 1.0) in a CSV's class column: pandas reads one number, and the classes merged silently."""
    from keel.data.schema import check_label_spellings, infer_target_task

    path = tmp_path / "codes.csv"
    path.write_text("x,y\n" + "".join(f"{i},{code}\n" for i, code in enumerate(["1", "2", "01", "2", "1.0", "3"] * 5)))
    frame = read_table(str(path))
    assert frame["y"].dtype == np.float64  # pandas' parse: 1, 01 and 1.0 are 1.0
    with pytest.raises(DataError, match=r"target column 'y' writes the number 1 two ways, '1' \(row 1\) and '01' "
                                        r"\(row 3\).*one class.*input_features: \[\{name: y, type: category\}\]") as error:
        infer_target_task(frame, load_config({"target": "y"}))
    assert error.value.column == "y" and error.value.row == 3
    # Read as written, a declared target keeps them apart; a regression target is a number however written.
    declared = load_config({"target": "y", "input_features": [{"name": "y", "type": "category"}]})
    assert infer_target_task(read_table(str(path), text=["y"]), declared) == "multiclass"
    assert infer_target_task(frame, load_config({"target": "y", "task": "regression"})) == "regression"
    # Parquet keeps its types (nothing to re-read), and one spelling a number is no collision.
    pd.DataFrame({"y": [1, 2, 1, 3] * 5}).to_parquet(tmp_path / "codes.parquet")
    check_label_spellings(read_table(str(tmp_path / "codes.parquet")), "y")
    (tmp_path / "plain.csv").write_text("y\n" + "1\n2\n\n3\n" * 5)
    check_label_spellings(read_table(str(tmp_path / "plain.csv")), "y")
    # The two spellings as the only labels: pandas' one number was "one class on every labelled row" (the trial's).
    for other in ("01", "1.0"):
        (tmp_path / "two.csv").write_text("x,y\n" + "".join(f"{i},{code}\n" for i, code in enumerate(["1", other] * 10)))
        with pytest.raises(DataError, match=f"writes the number 1 two ways, '1' \\(row 1\\) and '{other}'"):
            infer_target_task(read_table(str(tmp_path / "two.csv")), load_config({"target": "y"}))
    # A regression target is a number however written: its own error, not the classes' (the audit's 2.5 / 2.50).
    (tmp_path / "constant.csv").write_text("x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(["2.5", "2.50"] * 10)))
    with pytest.raises(DataError) as constant:
        infer_target_task(read_table(str(tmp_path / "constant.csv")), load_config({"target": "y", "task": "regression"}))
    assert "two ways" not in str(constant.value)
    (tmp_path / "one.csv").write_text("x,y\n" + "".join(f"{i},1\n" for i in range(20)))
    with pytest.raises(DataError, match="holds one class"):  # one class, one spelling: as before
        infer_target_task(read_table(str(tmp_path / "one.csv")), load_config({"target": "y"}))


def test_a_space_around_a_class_code_is_not_a_second_spelling(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pandas reads " 1" as 1, and so did keel before the spelling check: an exported CSV's stray space must not
    turn a file that trained into an error (found by the audit)."""
    from keel.data.schema import check_label_spellings

    path = tmp_path / "space.csv"
    path.write_text("x,y\n" + "".join(f"{i},{code}\n" for i, code in enumerate(["0", "1", " 1", "1 ", "0"] * 4)))
    frame = read_table(str(path))
    assert frame["y"].dtype.kind in "if" and set(frame["y"]) == {0, 1}
    check_label_spellings(frame, "y")  # no error
    (tmp_path / "both.csv").write_text("x,y\n" + "".join(f"{i},{code}\n" for i, code in enumerate([" 1", "0", "01"] * 4)))
    with pytest.raises(DataError, match=r"writes the number 1 two ways, '1' \(row 1\) and '01' \(row 3\)"):
        check_label_spellings(read_table(str(tmp_path / "both.csv")), "y")


def test_row_numbers_are_dropped_by_their_name_and_a_year_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # pandas' to_csv writes its index as an unnamed 0..n-1 column; types are inferred on the training and
    # validation rows, which were never consecutive once the test rows left, so it was kept as a number feature.
    # A year fills its range as a numbering does, and must stay a feature (the audit's yearly table lost it).
    import keel

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=400), "row": rng.permutation(400), "year": np.arange(1700, 2100),
                          "reading": rng.choice(100_000, 400, replace=False)})  # unique integers, no numbering
    frame["y"] = frame["a"] * 2 + rng.normal(size=400)
    frame.to_csv(tmp_path / "with_index.csv")  # index=True: the unnamed first column
    model = keel.fit(tmp_path / "with_index.csv", target="y", config={"preset": "fast", "training.epochs": 1},
                     quiet=True, importance=False)
    assert set(model.schema.dropped) == {"", "row"}  # keel reads the unnamed header as ""
    assert [feature.name for feature in model.schema.features] == ["a", "year", "reading"]
    assert model.schema.dropped["row"] == ("id-like (a unique integer per row); to keep it, declare it in "
                                           "input_features as {name: 'row', type: number}")
    # Streamed, the types come from a sample of the rows (4,096 of 20,000): the name still tells.
    big = pd.DataFrame({"a": rng.normal(size=20_000), "row": rng.permutation(20_000)}).assign(y=lambda f: f["a"])
    big.to_csv(tmp_path / "big.csv")
    streamed = keel.fit(tmp_path / "big.csv", target="y", quiet=True, importance=False,
                        config={"preset": "fast", "training.epochs": 1, "data.memory_budget": "1MiB"})
    assert streamed.notes[0].startswith("streaming") and set(streamed.schema.dropped) == {"", "row"}
    for name in ("Unnamed: 0", "index", "rownames", "row_number", "Row No"):
        assert infer_column_type(pd.Series(rng.permutation(50)), name, None)[0] is None, name
    for name in ("rows", "arrow", "x", "year"):
        assert infer_column_type(pd.Series(rng.permutation(80)[:50]), name, None)[0] == "number", name


def test_row_names_of_text_are_dropped_by_their_name() -> None:
    # A new user's trial on R tables (s17): TitanicSurvival's rownames (a passenger's name each) trained as free
    # text, and mtcars' (a car's name each) as a category, without a note; ROC-AUC 0.781 against 0.787 without.
    names = pd.Series([f"Allen, Miss. Elisabeth {index}" for index in range(60)])
    kind, reason = infer_column_type(names, "rownames", None)
    assert kind is None and reason.startswith("row names (a unique label per row")
    assert "{name: 'rownames', type: category}" in reason
    cars = pd.Series([f"Mazda RX{index}" for index in range(32)])
    assert infer_column_type(cars, "rownames", None)[0] is None
    assert infer_column_type(cars, "", None)[0] is None  # a saved pandas index of labels
    assert infer_column_type(cars, "model", None)[0] == "category"  # another name: a feature as before
    assert infer_column_type(pd.concat([cars, cars.head(1)]), "rownames", None)[0] == "category"  # repeats: no row names
    # A daily table saved with df.to_csv() and read back by pandas: its dates are the unnamed column, and stay one.
    days = pd.Series(pd.date_range("2024-01-01", periods=40).strftime("%Y-%m-%d"))
    assert infer_column_type(days, "Unnamed: 0", None)[0] == "date"
    assert infer_column_type(pd.Series([f"{value / 7:.3f}" for value in range(40)]), "index", None)[0] == "number"


def test_whole_numbers_read_as_three_or_more_classes_get_a_note() -> None:
    """NMES1988's hospital (0-8 stays, a count) trained as 9 classes without a word: the note says what was decided,
    from what, and how to train a regression instead."""
    from keel.data.schema import integer_classes_note

    note = integer_classes_note(list(range(9)), "hospital", "auto", "multiclass")
    assert note == ("target 'hospital' holds 9 whole numbers (0 to 8), read as 9 classes (multiclass); if they are "
                    "counts or amounts, train a regression with --set task=regression (task: regression in YAML, "
                    "config={'task': 'regression'} in Python).")
    assert "holds 3 whole numbers (1 to 12), read as 3 classes" in str(integer_classes_note([1, 4, 12], "y", "auto",
                                                                                             "multiclass"))


@pytest.mark.parametrize(("labels", "declared", "task"), [
    ([0, 1], "auto", "binary"),  # 0/1 is plainly classes
    ([3, 7], "auto", "binary"),
    (["a", "b", "c"], "auto", "multiclass"),  # text labels are classes whatever their number
    (list(range(9)), "multiclass", "multiclass"),  # declared: task multiclass, or the target declared a category
    (list(range(9)), "binary", "multiclass"),
    ([], "auto", "regression"),
    ([0.5, 1.5, 2.5], "auto", "multiclass"),  # fractional classes (a category or text column) are no counts
])
def test_no_whole_number_note_where_the_classes_are_plain_or_declared(labels: list, declared: str, task: str) -> None:  # type: ignore[type-arg]
    from keel.data.schema import integer_classes_note

    assert integer_classes_note(labels, "y", declared, task) is None


def test_a_pandas_category_target_of_whole_numbers_gets_no_regression_advice() -> None:
    # A pandas category is the user's own declaration of classes, as for a feature (_numbers_in_disguise).
    import keel
    from tests.conftest import FAST

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "y": rng.integers(0, 5, 300)})
    plain = keel.fit(frame, target="y", config={**FAST, "training.epochs": 1}, quiet=True)
    assert [note for note in plain.notes if note.startswith("target 'y' holds 5 whole numbers")]
    frame["y"] = pd.Categorical(frame["y"])
    declared = keel.fit(frame, target="y", config={**FAST, "training.epochs": 1}, quiet=True)
    assert not [note for note in declared.notes if "whole numbers" in note]
