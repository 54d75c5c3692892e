"""Regression tests from the audit of streamed training (issue 13): each one failed when written.

A 1 MiB ``data.memory_budget`` makes a 20,000-row file stream. What must hold, as in memory: a file
with no category column trains; a CSV column's values are spelled alike in every chunk (a chunk of
digits only must not turn the text "00042" into the number 42, which splits a split_by group across
parts and a category's rows across two vocabulary entries); a test DataFrame's stored predictions
are numbered as in memory (1..n), whatever its index; the rows that calibration, importance and the
test metrics read are on the CPU, where the trained network is; an unusable data.spill_directory is
a KeelError that names the setting; a resumed run under data.memory_budget auto ends as the run would
have without the interruption, or is refused.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import keel
import keel.config
from keel.config import load_config
from keel.data.io import read_table
from keel.data.transforms import CategoryTransform
from keel.errors import KeelError
from keel.train.callbacks import Notes, Reporter
from keel.train.streamed import Streamer, prepare_streamed, streaming_plan
from tests.integration.test_streamed import _Interrupted, _StopAt

N_ROWS = 20_000
STREAMED = {"preset": "fast", "model.hidden": [16], "model.dropout": 0.0, "training.epochs": 2,
            "training.batch_size": 256, "data.memory_budget": "1MiB"}


def _table(n_rows: int, seed: int, category: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, 3))
    frame = pd.DataFrame({f"x{i}": x[:, i].round(4) for i in range(3)})
    if category:
        frame["color"] = rng.choice(["red", "green", "blue", "grey"], n_rows)
    frame["y"] = np.where(x[:, 0] + rng.logistic(size=n_rows) > 0, "yes", "no")
    return frame


def _streamed(model: keel.model.Model) -> bool:
    return bool(model.notes) and model.notes[0].startswith("streaming ")


def _padded_codes(n_rows: int, seed: int) -> np.ndarray:
    """Zero-padded text codes ("00042"), three of them with a letter: text file-wide, digits only in most chunks."""
    rng = np.random.default_rng(seed)
    codes = np.array([f"{number:05d}" for number in rng.integers(0, 300, n_rows)], dtype=object)
    codes[[n_rows // 2, n_rows // 2 + 1, n_rows - 1]] = "X0001"
    return codes


def test_a_file_whose_features_are_all_numbers_trains_streamed(tmp_path) -> None:
    path = tmp_path / "numbers.csv"
    _table(N_ROWS, seed=0, category=False).to_csv(path, index=False)
    model = keel.fit(path, target="y", config=STREAMED, quiet=True)  # failed: ValueError from RowStore.read
    assert _streamed(model) and model.preprocessor.categorical == []
    assert model.metrics is not None and model.metrics["accuracy"] > 0.6


def test_a_split_by_group_of_zero_padded_ids_stays_in_one_part(tmp_path) -> None:
    frame = _table(N_ROWS, seed=1)
    frame["g"] = _padded_codes(N_ROWS, seed=1)
    path = tmp_path / "groups.csv"
    frame.to_csv(path, index=False)
    settings = load_config({**STREAMED, "target": "y", "training.split_by": "g"})
    plan = streaming_plan(path, settings)
    assert plan is not None and plan.chunk_rows < N_ROWS // 2  # several chunks, most of them digits only
    parts = np.concatenate([chunk_parts for _, chunk_parts, _ in Streamer(path, settings, plan, False).chunks()])
    per_group = pd.DataFrame({"g": frame["g"], "part": parts}).groupby("g")["part"].nunique()
    assert (per_group == 1).all(), f"{int((per_group > 1).sum())} of {len(per_group)} groups straddle parts"


def test_a_zero_padded_category_is_spelled_as_prediction_reads_it(tmp_path) -> None:
    frame = _table(N_ROWS, seed=2)
    frame["shop"] = _padded_codes(N_ROWS, seed=2)
    path = tmp_path / "shops.csv"
    frame.to_csv(path, index=False)
    # The three letter codes make read_table see text; without input_features it refuses the column.
    config = {**STREAMED, "input_features": [{"name": name, "type": "auto"} for name in ("x0", "x1", "x2", "color")]
              + [{"name": "shop", "type": "category"}], "preprocessing.rare_category_min_count": 1}
    model = keel.fit(path, target="y", config=config, quiet=True, importance=False)
    assert _streamed(model)
    shop = next(t for t in model.preprocessor.transforms if t.name == "shop")
    assert isinstance(shop, CategoryTransform)
    spelled = set(read_table(path)["shop"])
    assert set(shop.vocabulary) <= spelled, sorted(set(shop.vocabulary) - spelled)[:5]


@pytest.mark.parametrize("index", ["shuffled", "text"])
def test_a_test_dataframe_is_numbered_as_in_memory_whatever_its_index(tmp_path, index) -> None:
    path = tmp_path / "data.csv"
    _table(N_ROWS, seed=3).to_csv(path, index=False)
    test = _table(1000, seed=4)
    test = test.sample(frac=1.0, random_state=0) if index == "shuffled" else test.set_axis([f"r{i}" for i in range(1000)])
    model = keel.fit(path, target="y", config=STREAMED, test=test, quiet=True, importance=False)
    assert _streamed(model)
    predictions = model.test_predictions
    assert predictions is not None and predictions.row is not None
    assert np.array_equal(np.sort(predictions.row), np.arange(1, 1001))
    assert np.array_equal(predictions.row, np.arange(1, 1001))  # in the frame's order, as Model._scored numbers them


def test_rows_read_after_training_are_on_the_cpu_whatever_the_training_device(tmp_path) -> None:
    # "meta" stands in for a GPU: the network is back on the CPU when calibration, importance and
    # the test metrics run, so their rows must be too (the in-memory path calls .to("cpu") on them).
    path = tmp_path / "data.csv"
    _table(N_ROWS, seed=5).to_csv(path, index=False)
    settings = load_config({**STREAMED, "target": "y"})
    plan = streaming_plan(path, settings)
    assert plan is not None
    prepared, _, _ = prepare_streamed(path, None, settings, settings.training, plan, Notes(Reporter()), Reporter(),
                                      torch.device("meta"), tmp_path / "rows")
    calibration, _ = prepared.calibration_rows(len(prepared.bags))
    held_out = prepared.held_out()
    assert held_out is not None
    assert calibration.numeric.device.type == "cpu"
    assert held_out[0].numeric.device.type == "cpu"


@pytest.mark.parametrize("spill", ["a-file", "a-file/below"])
def test_an_unusable_spill_directory_is_a_keel_error_naming_the_setting(tmp_path, spill) -> None:
    path = tmp_path / "data.csv"
    _table(N_ROWS, seed=6).to_csv(path, index=False)
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(KeelError, match="spill_directory"):  # was FileExistsError / NotADirectoryError
        keel.fit(path, target="y", config={**STREAMED, "data.spill_directory": str(tmp_path / spill)}, quiet=True)




def test_a_resume_on_a_machine_with_other_memory_ends_as_the_uninterrupted_run_or_is_refused(tmp_path,
                                                                                          monkeypatch) -> None:
    # data.memory_budget auto is a quarter of the machine's memory, and the training window follows
    # the budget. SAMPLE_ROWS is lowered so that both budgets draw the same sample, as they do at
    # scale (500,000 rows for any budget over a few hundred MB).
    monkeypatch.setattr("keel.train.streamed.SAMPLE_ROWS", 2000)
    path = tmp_path / "data.csv"
    _table(30_000, seed=7).to_csv(path, index=False)
    config = {key: value for key, value in STREAMED.items() if key != "data.memory_budget"}
    config.update({"training.epochs": 4, "training.early_stopping": 0, "training.batch_size": 64,
                   "training.checkpoint": True, "training.checkpoint_every": 1})

    def machine(mebibytes: int) -> None:
        monkeypatch.setattr(keel.config, "physical_memory", lambda: mebibytes << 20)

    machine(8)
    whole = keel.fit(path, target="y", config=config, output=tmp_path / "whole", quiet=True, importance=False)
    assert _streamed(whole)
    with pytest.raises(_Interrupted):
        keel.fit(path, target="y", config=config, output=tmp_path / "cut", reporter=_StopAt(2), importance=False)
    machine(4)
    try:
        resumed = keel.fit(path, target="y", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                           importance=False)
    except KeelError as error:
        assert "memory_budget" in str(error)  # refused, saying why
        return
    finally:
        shutil.rmtree(tmp_path / "cut.checkpoint", ignore_errors=True)
    assert _streamed(resumed)
    assert (tmp_path / "cut" / "weights.safetensors").read_bytes() == (tmp_path / "whole" / "weights.safetensors").read_bytes()
