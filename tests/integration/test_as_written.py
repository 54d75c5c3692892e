"""A CSV's category, binary, text and image columns are read as written, at training and at prediction.

A user's trial (fourteenth session) found pandas deciding a CSV column's type before keel looked at the type
declared for it: a category of codes "1", "01" and "001" became one value, ZIP codes lost their leading zeros
(so the same rows from Parquet or JSON were unseen values), 19-digit ids with one blank cell collapsed into one
float, and one odd cell in a file to predict turned a whole column to text and moved every other row's
prediction. Booleans: pandas reads TRUE / false as booleans, Parquet and JSON keep the text, and a model trained
on one form met the other as unseen values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.data.io import read_table
from keel.data.spelling import lookup_spellings as binary_spellings  # a binary column's codes are its positions
from keel.data.transforms import BinaryTransform
from keel.runtime import Predictor
from tests.conftest import FAST

CODES = {"input_features": [{"name": "code", "type": "category"}, {"name": "x", "type": "number"}]}


def codes_table(folder: Path, n: int = 300) -> tuple[Path, Path]:
    """``code`` in {"1", "01", "001"} drives y (2, -2, 0): written as CSV and as Parquet (text)."""
    rng = np.random.default_rng(9)
    code = rng.choice(["1", "01", "001"], n)
    x = rng.normal(size=n)
    y = np.select([code == "1", code == "01"], [2.0, -2.0], 0.0) + 0.3 * x + rng.normal(0, 0.1, n)
    frame = pd.DataFrame({"code": code, "x": x, "y": y})
    frame.to_csv(folder / "codes.csv", index=False)
    frame.to_parquet(folder / "codes.parquet")
    return folder / "codes.csv", folder / "codes.parquet"


@pytest.fixture(scope="module")
def codes(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path, Path]:
    folder = tmp_path_factory.mktemp("codes")
    csv, parquet = codes_table(folder)
    model = keel.fit(str(csv), target="y", config={**FAST, **CODES, "training.epochs": 20}, quiet=True,
                     importance=False)
    model.save(folder / "model")
    model.export()
    return model, csv, parquet


def test_a_declared_category_keeps_its_codes_as_written(codes: tuple[keel.Model, Path, Path]) -> None:
    model, csv, parquet = codes
    category = next(t for t in model.preprocessor.transforms if t.name == "code")
    assert sorted(category.vocabulary) == ["001", "01", "1"]  # pandas made them one value, 1
    assert model.metrics["r2"] > 0.9  # the codes carry y: merged, r2 was about 0
    # The same rows from the CSV and from Parquet's text predict alike (they were unseen values from Parquet).
    from_csv, from_parquet = model.predict(str(csv)), model.predict(str(parquet))
    np.testing.assert_array_equal(from_csv, from_parquet)
    # ... and through the exported file, fed the CSV's rows as a DataFrame read as the model reads them.
    predictor = Predictor.load(model.path)
    np.testing.assert_allclose(predictor.predict(model.read_rows(str(csv))), from_csv, atol=1e-4)


def test_one_odd_cell_in_a_file_to_predict_changes_only_its_own_row(
        codes: tuple[keel.Model, Path, Path], tmp_path: Path) -> None:
    model, csv, _ = codes
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[0, "code"] = "K1A0B1"  # not a number: pandas would have read the whole column as text
    frame.to_csv(tmp_path / "odd.csv", index=False)
    with pytest.warns(keel.KeelWarning, match="1 value"):
        odd = model.predict(str(tmp_path / "odd.csv"))
    same = model.predict(str(csv))
    assert odd[0] != same[0]
    np.testing.assert_array_equal(odd[1:], same[1:])


def test_long_ids_with_a_blank_cell_stay_distinct(tmp_path: Path) -> None:
    """Six 19-digit ids with one blank cell were floats, all spelled 1.2345678901234568e+18."""
    rng = np.random.default_rng(1)
    ids = [str(1234567890123456700 + i) for i in range(6)]
    account = rng.choice(ids, 240).astype(object)
    account[5] = None
    y = np.array([ids.index(a) if a else 0 for a in account], dtype=float) + rng.normal(0, 0.1, 240)
    pd.DataFrame({"account": account, "y": y}).to_csv(tmp_path / "ids.csv", index=False)
    config = {**FAST, "input_features": [{"name": "account", "type": "category"}], "training.epochs": 30}
    model = keel.fit(str(tmp_path / "ids.csv"), target="y", config=config, quiet=True, importance=False)
    assert sorted(next(t for t in model.preprocessor.transforms if t.name == "account").vocabulary) == ids
    assert model.metrics["r2"] > 0.8


def flag_tables(folder: Path, n: int = 300) -> tuple[Path, Path]:
    """``flag`` in {TRUE, false} drives y: a CSV (pandas reads booleans) and a Parquet of the same text."""
    rng = np.random.default_rng(3)
    flag = rng.choice(["TRUE", "false"], n)
    x = rng.normal(size=n)
    y = np.where(flag == "TRUE", 2.0, -2.0) + 0.3 * x + rng.normal(0, 0.1, n)
    frame = pd.DataFrame({"flag": flag, "x": x, "y": y})
    frame.to_csv(folder / "flag.csv", index=False)
    frame.to_parquet(folder / "flag.parquet")
    return folder / "flag.csv", folder / "flag.parquet"


@pytest.mark.parametrize("trained_on", ["csv", "parquet"])
def test_a_boolean_column_predicts_alike_from_csv_parquet_json_and_python_booleans(tmp_path: Path,
                                                                                   trained_on: str) -> None:
    csv, parquet = flag_tables(tmp_path)
    model = keel.fit(str(csv if trained_on == "csv" else parquet), target="y",
                     config={**FAST, "training.epochs": 20}, quiet=True, importance=False)
    model.save(tmp_path / "model")
    model.export()
    expected = model.predict(str(csv))
    np.testing.assert_array_equal(model.predict(str(parquet)), expected)  # was r2 0.01 the other way round
    frame = pd.read_csv(csv, dtype=str)
    as_booleans = frame.assign(flag=frame["flag"] == "TRUE", x=frame["x"].astype(float))
    np.testing.assert_array_equal(model.predict(as_booleans), expected)
    # One odd cell in a CSV to predict: pandas then leaves the column as text; the rest keep their answers.
    frame.loc[0, "flag"] = "maybe"
    frame.to_csv(tmp_path / "odd.csv", index=False)
    with pytest.warns(keel.KeelWarning, match="1 value"):
        odd = model.predict(str(tmp_path / "odd.csv"))
    np.testing.assert_array_equal(odd[1:], expected[1:])
    # The exported graph and the torch-free runtime take every spelling too (JSON's true included).
    predictor = Predictor.load(tmp_path / "model")
    rows = {"flag": [True, "TRUE", "true", "True", False, "FALSE", "false"], "x": [0.0] * 7}
    got = predictor.predict(rows)
    np.testing.assert_allclose(got, model.predict(pd.DataFrame(rows)), atol=1e-4)
    assert np.ptp(got[:4]) < 1e-6 and np.ptp(got[4:]) < 1e-6 and got[0] - got[4] > 2  # true rows high, false low


def test_binary_spellings_and_a_column_of_mixed_boolean_spellings() -> None:
    assert binary_spellings(["False", "True"]) == {"False": 0, "FALSE": 0, "false": 0, "True": 1, "TRUE": 1,
                                                   "true": 1}
    assert binary_spellings(["no", "yes"]) == {"no": 0, "yes": 1}
    assert binary_spellings(["TRUE", "false"])["True"] == 0  # TRUE sorts before false: its code stays its own
    transform = BinaryTransform("flag").fit(pd.Series(["TRUE", "true", "false", "FALSE", None]))
    assert transform.values == ["False", "True"] and transform.fill == 0.5
    values, unseen = transform.transform(pd.Series(["true", "False", "maybe", None]))
    assert values[:2, 0].tolist() == [1.0, 0.0] and unseen == 1
    with pytest.raises(keel.DataError, match="more than two|three|values"):
        BinaryTransform("flag").fit(pd.Series(["TRUE", "false", "maybe"]))
    # Two spellings of one word are one value (the audit: TRUE and True were two codes, and true then 0).
    one = BinaryTransform("flag").fit(pd.Series(["TRUE", "True", "TRUE"]))
    assert one.values == ["True"]
    # Numbers: a value learnt as written ("1.0") matches the number 1, and a written "1.0" a value learnt as 1.
    assert binary_spellings(["0.0", "1.0"])["1"] == 1
    learnt = BinaryTransform("flag").fit(pd.Series([0, 1, 1]))
    assert learnt.transform(pd.Series(["1.0", "0", "2"]))[0][:, 0].tolist()[:2] == [1.0, 0.0]


def test_a_model_saved_before_the_rule_reads_csvs_as_it_did(codes: tuple[keel.Model, Path, Path],
                                                             tmp_path: Path) -> None:
    """Its vocabulary came from pandas' parse: reading its columns as written now would make them unseen."""
    model, csv, _ = codes
    old = tmp_path / "old"
    shutil.copytree(model.path, old)  # not model.save, which would move the shared model's path here
    document = json.loads((old / "keel.json").read_text())
    assert document["schema"]["as_written"] is True
    del document["schema"]["as_written"]
    (old / "keel.json").write_text(json.dumps(document))
    loaded = keel.load(old)
    assert set(loaded.read_rows(str(csv))["code"]) == {1}  # pandas' parse, as this model was trained on
    assert set(model.read_rows(str(csv))["code"]) == {"1", "01", "001"}
    assert read_table(str(csv), text=["code"])["code"].tolist() == pd.read_csv(csv, dtype=str)["code"].tolist()


def test_predict_with_input_echoes_a_csvs_cells_as_written(codes: tuple[keel.Model, Path, Path],
                                                          tmp_path: Path) -> None:
    """--with-input wrote 00501 back as 501 and 2e5 as 200000.0: joining the predictions back on a code broke."""
    from typer.testing import CliRunner

    from keel.cli import app

    model, _, _ = codes
    (tmp_path / "rows.csv").write_text("code,x,ref\n001,2e0,00042\n01,-0.50,7\n")
    result = CliRunner().invoke(app, ["predict", str(model.path), str(tmp_path / "rows.csv"), "-o",
                                      str(tmp_path / "out.csv"), "--with-input"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "code,x,ref,y" and lines[1].startswith("001,2e0,00042,") and lines[2].startswith("01,-0.50,7,")
    values = pd.read_csv(tmp_path / "out.csv")["y"].to_numpy()
    np.testing.assert_allclose(values, model.predict(pd.DataFrame({"code": ["001", "01"], "x": [2.0, -0.5]})))


def test_a_target_declared_category_keeps_its_classes_from_training_to_evaluate(tmp_path: Path) -> None:
    """Classes 1, 01 and 2 in a CSV: pandas made 1 and 01 one class, silently; now that is an error, and the
    target declared a category keeps three classes, in training, in a --test file and in keel evaluate."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=240)
    frame = pd.DataFrame({"x": x, "y": np.array(["1", "01", "2"])[np.digitize(x, [-0.4, 0.4])]})
    frame.iloc[:180].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[180:].to_csv(tmp_path / "test.csv", index=False)
    config = {**FAST, "training.epochs": 30}
    with pytest.raises(keel.DataError, match="writes the number 1 two ways"):
        keel.fit(str(tmp_path / "train.csv"), target="y", config=config, quiet=True, importance=False)
    declared = {**config, "input_features": [{"name": "y", "type": "category"}]}
    model = keel.fit(str(tmp_path / "train.csv"), target="y", config=declared, test=str(tmp_path / "test.csv"),
                     quiet=True, importance=False)
    assert model.classes == ["01", "1", "2"] and model.feature_names == ["x"]
    assert model.metrics["n_rows"] == 60 and model.metrics["accuracy"] > 0.8  # the --test rows, as written
    model.save(tmp_path / "model")
    loaded = keel.load(tmp_path / "model")
    metrics = loaded.evaluate(str(tmp_path / "test.csv"))
    assert metrics["accuracy"] == model.metrics["accuracy"]  # 01 rows scored as 01, not as 1
    assert set(loaded.predict(str(tmp_path / "test.csv"))) <= {"01", "1", "2"}


def test_a_model_saved_before_the_target_rule_reads_its_target_as_it_did(tmp_path: Path) -> None:
    """A model whose keel.json has no target_written read its CSV target as pandas parsed it, and still does."""
    (tmp_path / "rows.csv").write_text("x,y\n" + "".join(f"{i % 7},{i % 2}\n" for i in range(60)))
    model = keel.fit(str(tmp_path / "rows.csv"), target="y", config=FAST, quiet=True, importance=False)
    model.save(tmp_path / "model")
    document = json.loads((tmp_path / "model" / "keel.json").read_text())
    assert document["schema"]["target_written"] is False
    del document["schema"]["target_written"]
    (tmp_path / "model" / "keel.json").write_text(json.dumps(document))
    loaded = keel.load(tmp_path / "model")
    assert loaded.read_rows(str(tmp_path / "rows.csv"))["y"].dtype == np.int64 and loaded.classes == [0, 1]
    assert loaded.evaluate(str(tmp_path / "rows.csv"))["accuracy"] == model.evaluate(str(tmp_path / "rows.csv"))["accuracy"]


def test_a_declared_target_keeps_its_classes_in_a_streamed_run(tmp_path: Path) -> None:
    """A file over data.memory_budget reads its chunks, and its --test file, with the declared target as written."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30_000, 3))
    frame = pd.DataFrame({f"x{i}": x[:, i].round(4) for i in range(3)})
    frame["y"] = np.array(["1", "01", "2"])[np.digitize(x[:, 0], [-0.4, 0.4])]
    frame.iloc[:25_000].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[25_000:].to_csv(tmp_path / "test.csv", index=False)
    config = {**FAST, "training.epochs": 2, "training.batch_size": 256, "data.memory_budget": "1MiB",
              "input_features": [{"name": "y", "type": "category"}]}
    model = keel.fit(str(tmp_path / "train.csv"), target="y", config=config, test=str(tmp_path / "test.csv"),
                     quiet=True, importance=False)
    assert any(note.startswith("streaming") for note in model.notes)
    assert model.classes == ["01", "1", "2"] and model.metrics["n_rows"] == 5_000
    assert model.evaluate(str(tmp_path / "test.csv"))["accuracy"] == model.metrics["accuracy"]
