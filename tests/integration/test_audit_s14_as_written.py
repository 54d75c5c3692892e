"""Audit (s14) of "a CSV's category, binary, text and image columns are read as written".

A column declared a category or binary value whose cells a CSV writes as numbers (``3.0``: pandas writes an
integer column with a blank cell so) is now learnt as the text ``"3.0"``; the same rows as numbers (a DataFrame,
Parquet, JSON Lines, a keel serve / keel.runtime request) are spelled ``"3"`` (canonical_category) and miss every
value. Before the rule both read ``"3"``. The runtime says nothing: every row gets the unknown bucket's answer.
Fixed: keel.data.spelling.lookup_spellings gives each learnt value that writes a number that number's spelling
too, in keel, the ONNX lookup and TFLite's feeder (and a whole number learnt as 3 takes 3.0).
Also fixed here: a training run's --test CSV is read as written (read_as_written) once the schema is known, and a
CSV whose last row is over 4 KB is read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from tests.conftest import FAST


def _store_table(folder: Path, n: int = 240) -> pd.DataFrame:
    """``store`` codes 3 / 4 / 5 (floats, one blank: pandas writes 3.0) drive y."""
    rng = np.random.default_rng(0)
    store = rng.choice([3.0, 4.0, 5.0], n)
    store[7] = np.nan
    x = rng.normal(size=n)
    y = np.select([store == 3, store == 4], [2.0, -2.0], 0.0) + 0.3 * x
    frame = pd.DataFrame({"store": store, "x": x, "y": y})
    frame.to_csv(folder / "stores.csv", index=False)
    return frame


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, pd.DataFrame, Path]:
    folder = tmp_path_factory.mktemp("stores")
    frame = _store_table(folder)
    config = {**FAST, "training.epochs": 15,
              "input_features": [{"name": "store", "type": "category"}, {"name": "x", "type": "number"}]}
    model = keel.fit(str(folder / "stores.csv"), target="y", config=config, quiet=True, importance=False)
    model.save(folder / "model")
    model.export()
    return model, frame, folder


def test_a_declared_category_of_float_codes_predicts_alike_from_the_csv_and_the_dataframe(stores) -> None:
    model, frame, folder = stores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", keel.KeelWarning)
        from_csv = model.predict(str(folder / "stores.csv"))
        from_frame = model.predict(frame.drop(columns="y"))  # the DataFrame the CSV was written from
    np.testing.assert_allclose(from_frame, from_csv, atol=1e-5)


def test_the_runtime_given_json_numbers_answers_as_keel_does_for_the_csv(stores) -> None:
    from keel.runtime import Predictor

    model, _, folder = stores
    predictor = Predictor.load(folder / "model")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        as_numbers = predictor.predict({"store": [3, 4, 5], "x": [0.0, 0.0, 0.0]})
    as_written = model.predict(pd.DataFrame({"store": ["3.0", "4.0", "5.0"], "x": [0.0, 0.0, 0.0]}))
    np.testing.assert_allclose(as_numbers, as_written, atol=1e-4)


def test_a_declared_binary_of_float_cells_matches_the_same_numbers(tmp_path: Path) -> None:
    from keel.data.io import read_table
    from keel.data.transforms import BinaryTransform

    flag = np.array([0.0, 1.0] * 20 + [np.nan])
    pd.DataFrame({"flag": flag, "y": np.arange(41.0)}).to_csv(tmp_path / "f.csv", index=False)
    trained = BinaryTransform("flag").fit(read_table(str(tmp_path / "f.csv"), text=["flag"])["flag"])
    _, unseen = trained.transform(pd.Series([0.0, 1.0, 1.0]))  # the same values from a DataFrame / Parquet / JSON
    assert unseen == 0


def test_a_csv_whose_last_row_is_longer_than_4_kb_is_read(tmp_path: Path) -> None:
    """Not from these commits, found on the way: a valid CSV over 64 KB whose last row holds an unquoted cell of
    4.4 KB is refused as 'the last line has 1 field(s) ... the file may be truncated'."""
    from keel.data.io import read_table

    frame = pd.DataFrame({"x": range(400), "note": ["word " * 40] * 400})
    frame.loc[399, "note"] = "word" * 1100
    frame.to_csv(tmp_path / "long.csv", index=False)
    assert (tmp_path / "long.csv").stat().st_size > 64 * 1024
    assert read_table(str(tmp_path / "long.csv")).shape == (400, 2)


def _code_table(n: int, codes: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    code = rng.choice(codes, n)
    x = rng.normal(size=n)
    return pd.DataFrame({"code": code, "x": x, "y": np.select([code == "01", code == "02"], [2.0, -2.0], 0.0) + 0.3 * x})


def test_the_test_files_metrics_read_an_inferred_category_as_keel_evaluate_does(tmp_path: Path) -> None:
    """The training file's codes 01 / 02 / 03 / x are text to pandas (an inferred category, vocabulary '01' ...);
    a --test file of 01 / 02 / 03 alone is parsed as the numbers 1 / 2 / 3. The fit's test metrics (model.metrics,
    the report) then score every test row as an unseen code, silently, while keel evaluate on the same file reads
    '01' as written (Model.read_rows: the model's category features) and scores it right."""
    _code_table(300, ["1", "01", "02", "x"], 0).to_csv(tmp_path / "train.csv", index=False)  # see the streamed one
    _code_table(100, ["1", "01", "02"], 1).to_csv(tmp_path / "test.csv", index=False)
    model = keel.fit(str(tmp_path / "train.csv"), target="y", test=str(tmp_path / "test.csv"),
                     config={**FAST, "training.epochs": 15}, quiet=True, importance=False)
    assert [f.type for f in model.schema.features] == ["category", "number"]
    evaluated = model.evaluate(str(tmp_path / "test.csv"))
    assert evaluated["r2"] > 0.9
    assert model.metrics["r2"] == pytest.approx(evaluated["r2"], abs=1e-3)


def test_a_streamed_runs_test_file_reads_an_inferred_category_as_written(tmp_path: Path) -> None:
    """The same through a streamed run (data.memory_budget below the table): its --test file is read a chunk at a
    time with the schema's as-written columns (streamed._write_test)."""
    # "1" beside "01": a number 1 cannot stand for "01" (lookup_spellings gives it no alias), so only reading the
    # test file as written scores its "01" rows right.
    _code_table(60000, ["1", "01", "02", "x"], 0).to_csv(tmp_path / "train.csv", index=False)
    _code_table(300, ["1", "01", "02"], 1).to_csv(tmp_path / "test.csv", index=False)
    model = keel.fit(str(tmp_path / "train.csv"), target="y", test=str(tmp_path / "test.csv"),
                     config={**FAST, "training.epochs": 2, "data.memory_budget": "1MiB"}, quiet=True,
                     importance=False)
    assert any("stream" in note for note in model.notes)
    evaluated = model.evaluate(str(tmp_path / "test.csv"))
    assert evaluated["r2"] > 0.9
    assert model.metrics["r2"] == pytest.approx(evaluated["r2"], abs=1e-3)
