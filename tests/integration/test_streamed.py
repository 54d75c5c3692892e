"""Training on a file larger than the memory budget (issue 13), for real: a small ``data.memory_budget``
makes a 60,000-row file (about 4 MB of CSV, 5 MB as a table) stream through a row store on disk.

What must hold: the streamed model is as good as the in-memory one, every row is counted, category
vocabularies come from exact counts over the training rows (not the sample), bagging, row weights,
grouped splits, regression and a separate test file work, an interrupted run resumes to the same
bits, the row stores never outlive the run, errors name the row of the file, and ``keel train`` streams.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import load_config
from keel.data.transforms import CategoryTransform
from keel.errors import ConfigError, DataError
from keel.nn.network import NetworkBag
from keel.train.callbacks import Reporter
from keel.train.checkpoint import checkpoint_directory, lock_path, read_checkpoint
from keel.train.streamed import streaming_plan

N_ROWS = 60_000
UNLABELLED = 150  # rows of the data file with a missing target
# Preset fast, tiny network, two epochs; the budget makes the 60,000-row file stream.
STREAMED = {"preset": "fast", "model.hidden": [16], "model.dropout": 0.0, "training.epochs": 2,
            "training.batch_size": 256, "data.memory_budget": "2MB"}
IN_MEMORY = {key: value for key, value in STREAMED.items() if key != "data.memory_budget"}


def _table(n_rows: int, seed: int, unlabelled: int = 0) -> pd.DataFrame:
    """Ten columns: seven numbers, a category, an integer count and a binary target ``y`` that the
    first two numbers and the category decide (about 80% accuracy is reachable)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, 7))
    color = rng.choice(["red", "green", "blue", "grey"], n_rows)
    logit = 2.0 * x[:, 0] - x[:, 1] + np.where(color == "red", 1.5, 0.0)
    frame = pd.DataFrame({f"x{i}": x[:, i].round(5) for i in range(7)})
    frame["color"] = color
    frame["count"] = rng.integers(0, 100, n_rows)
    frame["y"] = np.where(logit + rng.logistic(size=n_rows) > 0, "yes", "no").astype(object)
    if unlabelled:
        frame.loc[rng.choice(n_rows, unlabelled, replace=False), "y"] = None
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    """The data as CSV and as Parquet (the same rows), and held-out rows to compare models on."""
    directory = tmp_path_factory.mktemp("streamed")
    frame = _table(N_ROWS, seed=0, unlabelled=UNLABELLED)
    frame.to_csv(directory / "data.csv", index=False)
    frame.to_parquet(directory / "data.parquet", index=False)
    return {"frame": frame, "csv": directory / "data.csv", "parquet": directory / "data.parquet",
            "holdout": _table(5000, seed=1)}


def _streamed(model: keel.model.Model) -> bool:
    return bool(model.notes) and model.notes[0].startswith("streaming ")


def _rows_note(model: keel.model.Model) -> str:
    return next(note for note in model.notes if note.startswith("rows: "))


def _run(model: keel.model.Model) -> dict[str, Any]:
    """The run record (a trained model always has one)."""
    assert model.run is not None
    return model.run


def _metrics(model: keel.model.Model) -> dict[str, Any]:
    assert model.metrics is not None
    return model.metrics


def _test_positions(model: keel.model.Model) -> np.ndarray:
    """The test rows' positions in the file's data rows (the stored predictions number them from 1)."""
    predictions = model.test_predictions
    assert predictions is not None and predictions.row is not None
    return np.asarray(predictions.row) - 1


def _categories(model: keel.model.Model, name: str) -> CategoryTransform:
    transform = next(transform for transform in model.preprocessor.transforms if transform.name == name)
    assert isinstance(transform, CategoryTransform)
    return transform


class _Watch(Reporter):
    """A quiet reporter that records, at every epoch and at the start of every step, which of some
    directories exist and what they hold (the row stores live only while a run does)."""

    def __init__(self, *directories: Path) -> None:
        self.directories = directories
        self.seen: list[dict[str, list[str]]] = []
        self.steps: list[str] = []

    def _look(self, moment: str) -> None:
        self.steps.append(moment)
        self.seen.append({str(directory): sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))
                          for directory in self.directories if directory.exists()})

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Any]:
        self._look(description)
        yield lambda done: None

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[Any]:
        yield lambda epoch, total, record: self._look(f"epoch {epoch}")

    def at(self, moment: str) -> list[dict[str, list[str]]]:
        """What was seen at the moments whose description starts with ``moment``."""
        return [seen for step, seen in zip(self.steps, self.seen) if step.startswith(moment)]


# ---- streamed as well as in memory -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_over_the_budget_trains_streamed_as_well_as_in_memory(files, kind, tmp_path) -> None:
    path = files[kind]
    model = keel.fit(path, target="y", config=STREAMED, quiet=True, importance=False)
    assert _streamed(model), model.notes[:1]
    assert _run(model)["data"]["rows"] == N_ROWS
    rows = _run(model)["rows"]
    assert rows["train"] + rows["validation"] + rows["test"] + rows["unlabelled"] == N_ROWS
    assert rows["unlabelled"] == UNLABELLED
    assert f"dropped {UNLABELLED} row(s) of the training data with a missing 'y'" in _rows_note(model)
    labelled = N_ROWS - UNLABELLED  # a draw per row: the parts are near their shares, not exact
    assert rows["test"] == pytest.approx(0.2 * labelled, rel=0.05)
    assert rows["validation"] == pytest.approx(0.08 * labelled, rel=0.1)
    assert _metrics(model)["n_rows"] == rows["test"]

    memory = keel.fit(path, target="y", config=IN_MEMORY, quiet=True, importance=False)
    assert not _streamed(memory) and _run(memory)["data"]["rows"] == N_ROWS
    holdout = files["holdout"]
    streamed_accuracy, memory_accuracy = (m.evaluate(holdout)["accuracy"] for m in (model, memory))
    assert streamed_accuracy > 0.75
    assert abs(streamed_accuracy - memory_accuracy) < 0.03
    assert _metrics(model)["accuracy"] == pytest.approx(_metrics(memory)["accuracy"], abs=0.03)

    predicted = model.predict(path)
    assert len(predicted) == N_ROWS and set(predicted) <= {"yes", "no"}
    model.save(tmp_path / "model")
    loaded = keel.load(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(holdout), model.predict_proba(holdout))
    assert _streamed(loaded) and _run(loaded)["rows"] == rows


def test_a_dataframe_is_never_streamed_whatever_the_budget(files) -> None:
    frame = files["frame"]
    config = {**STREAMED, "data.memory_budget": "1MiB"}
    assert streaming_plan(frame, load_config(config)) is None
    assert streaming_plan(files["csv"], load_config(config)) is not None  # the same rows as a file would be
    model = keel.fit(frame, target="y", config=config, quiet=True, importance=False)
    assert not _streamed(model) and model.notes[0].startswith("rows: ")


# ---- what the scan counts ----------------------------------------------------------------------


def test_category_vocabularies_come_from_exact_counts_over_the_training_rows(tmp_path) -> None:
    # Values of "tag" with 10 to 44 rows each, all in the file's last rows: a sample of ~3,000 of
    # 60,000 rows holds one or two of each, so only exact counts can tell which reach the threshold.
    # Without validation rows every labelled row not in the test part is a training row, and the
    # stored test predictions name the test rows: each value's training count is known exactly.
    frame = _table(N_ROWS, seed=2)
    counts = {f"v{count}": count for count in range(10, 46, 2)}
    tags = np.concatenate([np.full(count, name) for name, count in counts.items()])
    frame["tag"] = "common"
    frame.loc[N_ROWS - len(tags):, "tag"] = tags
    path = tmp_path / "tags.csv"
    frame.to_csv(path, index=False)
    threshold = 20
    config = {**STREAMED, "training.validation_split": 0.0, "preprocessing.rare_category_min_count": threshold,
              "training.epochs": 1}
    model = keel.fit(path, target="y", config=config, quiet=True, importance=False)
    assert _streamed(model)
    test_rows = _test_positions(model)
    in_test = frame["tag"].iloc[test_rows].value_counts()
    training = {name: count - int(in_test.get(name, 0)) for name, count in counts.items()}
    kept = {name for name, count in training.items() if count >= threshold}
    assert 0 < len(kept) < len(counts) - 1  # values on both sides of the threshold
    assert any(counts[name] >= threshold > training[name] for name in counts)  # enough rows, too few in training
    tag = _categories(model, "tag")
    assert set(tag.vocabulary) == kept | {"common"}
    assert tag.n_rare == len(counts) - len(kept)


def test_a_text_column_counts_the_chunks_where_its_values_all_look_like_numbers(tmp_path) -> None:
    # "floor" is text ("G", "B") only in the last third of the file; before that every chunk holds
    # numbers and missing cells, so a CSV chunk types it float64 there. Its values in those chunks
    # are still training rows of a category column: "7", found only there, has 30-odd training rows
    # (the threshold is 5) and belongs in the vocabulary, as it does in memory.
    frame = _table(N_ROWS, seed=8)
    rng = np.random.default_rng(8)
    head = 40_000
    floor = np.concatenate([rng.choice(["1", "2", "3"], head),
                            rng.choice(["G", "B", "1", "2", "3"], N_ROWS - head)]).astype(object)
    floor[rng.choice(N_ROWS, 1200, replace=False)] = None
    floor[rng.choice(head, 40, replace=False)] = "7"
    frame["floor"] = floor
    path = tmp_path / "floors.csv"
    frame.to_csv(path, index=False)
    config = {**STREAMED, "training.validation_split": 0.0, "training.epochs": 1}
    model = keel.fit(path, target="y", config=config, quiet=True, importance=False)
    assert _streamed(model) and {f.name: f.type for f in model.schema.features}["floor"] == "category"
    training = frame["floor"].drop(index=_test_positions(model)).value_counts()
    assert training["7"] >= 5
    vocabulary = _categories(model, "floor").vocabulary
    # The vocabulary in count order, as the exact training counts give it (ties by spelling).
    assert vocabulary == sorted(training.index, key=lambda value: (-training[value], value))


# ---- bagging, weights, groups, regression, a test file -----------------------------------------


def test_bagged_networks_train_on_folds_of_the_streamed_rows(files) -> None:
    model = keel.fit(files["csv"], target="y", config={**STREAMED, "training.bagging": 3}, quiet=True,
                     importance=False)
    assert _streamed(model) and isinstance(model.network, NetworkBag) and len(model.network.networks) == 3
    rows, bagging = _run(model)["rows"], _run(model)["bagging"]
    assert rows["validation"] == 0 and "in 3 folds" in _rows_note(model)
    assert bagging["networks"] == 3 and sum(bagging["validation_each"]) == rows["train"]
    assert all(train + validation == rows["train"]
               for train, validation in zip(bagging["train_each"], bagging["validation_each"]))
    assert all(validation == pytest.approx(rows["train"] / 3, rel=0.05) for validation in bagging["validation_each"])
    assert model.evaluate(files["holdout"])["accuracy"] > 0.75


def test_bagging_auto_streams_one_network(files) -> None:
    """The balanced preset's bagging auto never bags a streamed file (it is no small table); the streamer
    compared "auto" with a number before the pipeline resolved it."""
    model = keel.fit(files["parquet"], target="y", config={**STREAMED, "training.bagging": "auto"}, quiet=True,
                     importance=False)
    assert _streamed(model) and not isinstance(model.network, NetworkBag)
    assert _run(model)["rows"]["validation"] > 0 and "folds" not in _rows_note(model)


def test_row_weights_are_read_from_the_streamed_rows(tmp_path) -> None:
    # The label is a draw independent of the features, "yes" in 30% of the rows: a model says "no",
    # unless the "yes" rows weigh 10 times as much (81% of the weight).
    frame = _table(N_ROWS, seed=3)
    rng = np.random.default_rng(3)
    frame["y"] = np.where(rng.random(N_ROWS) < 0.3, "yes", "no")
    frame["w"] = np.where(frame["y"] == "yes", 10.0, 1.0)
    path = tmp_path / "weighted.csv"
    frame.to_csv(path, index=False)
    model = keel.fit(path, target="y", config={**STREAMED, "training.weight_column": "w"}, quiet=True,
                     importance=False)
    assert _streamed(model) and "w" not in model.feature_names
    assert any("rows weighted by 'w'" in note for note in model.notes)
    assert (model.predict(frame.head(2000)) == "yes").mean() > 0.9


def test_a_streamed_regression_target_is_scaled_by_the_row_weights(tmp_path) -> None:
    frame = _table(N_ROWS, seed=5)
    rng = np.random.default_rng(5)
    frame["y"] = rng.normal(10.0, 1.0, N_ROWS)
    frame["w"] = 1.0
    outliers = rng.random(N_ROWS) < 0.2
    frame.loc[outliers, "y"], frame.loc[outliers, "w"] = 1000.0, 0.0  # labels that weigh nothing
    path = tmp_path / "weighted_regression.csv"
    frame.to_csv(path, index=False)
    model = keel.fit(path, target="y", config={**STREAMED, "training.weight_column": "w"}, quiet=True,
                     importance=False)
    assert _streamed(model)
    # Unweighted, the outliers would put the mean near 208 and the spread near 396.
    assert model.target_encoder.mean == pytest.approx(10.0, abs=0.2)
    assert model.target_encoder.std == pytest.approx(1.0, abs=0.1)


def test_a_split_by_group_never_straddles_training_and_test(tmp_path) -> None:
    frame = _table(N_ROWS, seed=4, unlabelled=UNLABELLED)
    frame["g"] = [f"g{number}" for number in np.random.default_rng(4).integers(0, 400, N_ROWS)]
    path = tmp_path / "groups.csv"
    frame.to_csv(path, index=False)
    model = keel.fit(path, target="y", config={**STREAMED, "training.split_by": "g"}, quiet=True,
                     importance=False)
    assert _streamed(model) and "g" not in model.feature_names
    assert "whole groups of 'g'" in _rows_note(model)
    tested = np.zeros(N_ROWS, dtype=bool)
    tested[_test_positions(model)] = True
    labelled = frame["y"].notna().to_numpy()
    assert not (tested & ~labelled).any() and tested.sum() == _run(model)["rows"]["test"]
    test_groups, other_groups = set(frame["g"][tested]), set(frame["g"][labelled & ~tested])
    assert not test_groups & other_groups
    assert 40 <= len(test_groups) <= 120  # about a fifth of the 400 groups


def test_a_streamed_regression_learns_its_target(tmp_path) -> None:
    frame = _table(N_ROWS, seed=5).drop(columns="y")
    rng = np.random.default_rng(5)
    frame["price"] = (100 + 3 * frame["x0"] - 2 * frame["x1"] + np.where(frame["color"] == "red", 2.0, 0.0)
                      + rng.normal(0, 0.5, N_ROWS))
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    model = keel.fit(path, target="price", config=STREAMED, quiet=True, importance=False)
    assert _streamed(model) and model.task == "regression"
    assert model.target_encoder.mean == pytest.approx(100.5, abs=0.3)  # fitted on the sample
    assert _metrics(model)["rmse"] < 0.3 * frame["price"].std()
    assert _metrics(model)["n_rows"] == _run(model)["rows"]["test"] > 10_000


def test_a_test_file_replaces_the_held_out_rows_and_its_unlabelled_rows_are_dropped(files, tmp_path) -> None:
    test = _table(3000, seed=6, unlabelled=40)
    test_path = tmp_path / "test.csv"
    test.to_csv(test_path, index=False)
    model = keel.fit(files["csv"], target="y", config=STREAMED, test=test_path, quiet=True, importance=False)
    assert _streamed(model)
    rows = _run(model)["rows"]
    assert rows["test"] == 2960 and _metrics(model)["n_rows"] == 2960
    assert rows["train"] + rows["validation"] + rows["unlabelled"] == N_ROWS
    assert _run(model)["data"]["test_source"] == str(test_path)
    assert "dropped 40 row(s) of the test data with a missing 'y'" in model.notes
    assert "test rows from the test data" in _rows_note(model)
    assert _metrics(model)["accuracy"] == pytest.approx(model.evaluate(test)["accuracy"], abs=1e-9)


# ---- resuming and determinism ------------------------------------------------------------------


class _Interrupted(Exception):
    """Stands for a crash in the middle of training."""


class _StopAt(Reporter):
    """A reporter whose epoch callback raises after the given number of epochs (as in tests/reliability)."""

    def __init__(self, epochs: int) -> None:
        self.left = epochs

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[Any]:
        def callback(epoch: int, total: int, record: dict[str, Any]) -> None:
            self.left -= 1
            if self.left == 0:
                raise _Interrupted

        yield callback


def _same_model(first: Path, second: Path) -> None:
    """Two saved models hold the same weights and test predictions (bytes) and the same metrics and history."""
    for name in ("weights.safetensors", "predictions.safetensors"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    documents = [json.loads((folder / "keel.json").read_text()) for folder in (first, second)]
    for key in ("metrics", "calibration", "network", "preprocessing"):
        assert documents[0].get(key) == documents[1].get(key), key
    assert documents[0]["history"]["epochs"] == documents[1]["history"]["epochs"]


def test_an_interrupted_streamed_run_resumes_to_the_same_model_and_runs_repeat_bit_for_bit(files, tmp_path) -> None:
    config = {**STREAMED, "training.epochs": 4, "training.checkpoint": True, "training.checkpoint_every": 1,
              "model.dropout": 0.2}
    path = files["csv"]
    whole = keel.fit(path, target="y", config=config, output=tmp_path / "whole", quiet=True, importance=False)
    assert _streamed(whole) and len(whole.history["epochs"]) == 4
    keel.fit(path, target="y", config=config, output=tmp_path / "again", quiet=True, importance=False)
    _same_model(tmp_path / "whole", tmp_path / "again")  # deterministic: the same draws, the same batches

    with pytest.raises(_Interrupted):
        keel.fit(path, target="y", config=config, output=tmp_path / "cut", reporter=_StopAt(2), importance=False)
    saved = read_checkpoint(checkpoint_directory(tmp_path / "cut"))
    assert saved is not None and not (tmp_path / "cut").exists()
    assert not lock_path(tmp_path / "cut").exists() and not (tmp_path / ".cut.rows").exists()
    with pytest.raises(ConfigError, match="unfinished run"):
        keel.fit(path, target="y", config=config, output=tmp_path / "cut", quiet=True)
    model = keel.fit(path, target="y", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    assert _streamed(model) and any(note.startswith("resumed from the checkpoint") for note in model.notes)
    _same_model(tmp_path / "whole", tmp_path / "cut")
    assert not checkpoint_directory(tmp_path / "cut").exists()


def test_a_streamed_run_does_not_resume_on_changed_data(tmp_path) -> None:
    # The fingerprint of a streamed file is hashed chunk by chunk; a change in its last row counts.
    frame = _table(N_ROWS, seed=9)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    config = {**STREAMED, "training.epochs": 3, "training.checkpoint": True, "training.checkpoint_every": 1}
    with pytest.raises(_Interrupted):  # after the second epoch, with the first one's checkpoint written
        keel.fit(path, target="y", config=config, output=tmp_path / "cut", reporter=_StopAt(2), importance=False)
    assert read_checkpoint(checkpoint_directory(tmp_path / "cut")) is not None
    frame.loc[N_ROWS - 1, "x5"] += 1.0
    frame.to_csv(path, index=False)
    with pytest.raises(ConfigError, match="cannot resume") as caught:
        keel.fit(path, target="y", config=config, output=tmp_path / "cut", resume=True, quiet=True)
    assert "the data (fingerprint" in str(caught.value)


# ---- the row stores' directory -----------------------------------------------------------------


def test_the_row_stores_live_beside_the_output_only_while_the_run_does(files, tmp_path) -> None:
    output = tmp_path / "model"
    rows = tmp_path / ".model.rows"
    watch = _Watch(rows)
    model = keel.fit(files["csv"], target="y", config=STREAMED, output=output, reporter=watch, importance=False)
    assert _streamed(model)
    assert [seen.get(str(rows)) for seen in watch.at("scanning ")] == [[]]  # made before the first pass
    epochs = watch.at("epoch ")
    assert len(epochs) == 2
    for seen in epochs:
        assert {"train/numeric", "train/fold", "test/numeric", "test/row"} <= set(seen[str(rows)])
    assert not rows.exists() and (output / "keel.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]  # no stores, checkpoint or lock left


def test_the_row_stores_go_to_the_spill_directory_when_one_is_set(files, tmp_path) -> None:
    spill = tmp_path / "spill"
    watch = _Watch(spill, tmp_path / ".model.rows")
    model = keel.fit(files["csv"], target="y", config={**STREAMED, "data.spill_directory": str(spill)},
                     output=tmp_path / "model", reporter=watch, importance=False)
    assert _streamed(model)
    assert all(list(seen) == [str(spill)] for seen in watch.seen)  # never beside the output
    epochs = watch.at("epoch ")
    assert len(epochs) == 2
    for seen in epochs:
        listing = seen[str(spill)]
        assert len({name.split("/")[0] for name in listing}) == 1 and listing[0].startswith(".model-")  # named after the output: a killed run's is removed by the next
        assert f"{listing[0]}/train/numeric" in listing
    assert spill.is_dir() and not list(spill.iterdir())


def _bad_late_row(tmp_path: Path) -> tuple[Path, int]:
    """The data file with a word in a number column near its end, and that row's number (from 1)."""
    frame = _table(N_ROWS, seed=7)
    frame["x3"] = frame["x3"].astype(object)
    frame.loc[N_ROWS - 10, "x3"] = "oops"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path, N_ROWS - 10 + 1


def test_a_failed_run_removes_its_row_stores_and_the_error_names_the_files_row(tmp_path) -> None:
    path, row = _bad_late_row(tmp_path)
    output = tmp_path / "model"
    watch = _Watch(tmp_path / ".model.rows")
    with pytest.raises(DataError) as caught:
        keel.fit(path, target="y", config=STREAMED, output=output, reporter=watch, importance=False)
    error = caught.value
    assert error.row == row and error.column == "x3" and error.file == str(path)
    assert f"row {row}" in str(error) and "'oops'" in str(error)
    assert any(note.startswith("streaming ") for note in error.notes)
    writing = [seen for step, seen in zip(watch.steps, watch.seen) if " rows into " in step]
    assert len(writing) == 1 and "train" in writing[0][str(tmp_path / ".model.rows")]  # the write had begun
    assert not (tmp_path / ".model.rows").exists() and not output.exists() and not lock_path(output).exists()
    with pytest.raises(DataError) as in_memory:  # the same row as a run in memory names
        keel.fit(path, target="y", config=IN_MEMORY, quiet=True, importance=False)
    assert (in_memory.value.row, in_memory.value.column) == (error.row, error.column)


# ---- settings that cannot stream ---------------------------------------------------------------


def test_order_by_is_refused_for_a_streamed_file(files) -> None:
    with pytest.raises(ConfigError, match="memory_budget") as caught:
        keel.fit(files["csv"], target="y", config={**STREAMED, "training.order_by": "x0"}, quiet=True)
    assert "order_by" in str(caught.value)


@pytest.mark.parametrize("budget", ["lots", "10KB", -5, "12 parsecs"])
def test_a_bad_memory_budget_is_a_config_error(files, budget) -> None:
    with pytest.raises(ConfigError, match="memory_budget"):
        keel.fit(files["csv"], target="y", config={**STREAMED, "data.memory_budget": budget}, quiet=True)


# ---- the command line --------------------------------------------------------------------------


def test_keel_train_streams_a_file_over_the_budget(files, tmp_path) -> None:
    output = tmp_path / "model"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "train", str(files["csv"]), "--target", "y", "--preset", "fast",
         "--set", "data.memory_budget=2MB", "--set", "training.epochs=2", "--set", "model.hidden=[16]",
         "--set", "training.batch_size=256", "--output", str(output), "--no-report", "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    model = keel.load(output)
    assert any(note.startswith("streaming ") for note in model.notes), model.notes[:2]
    assert _run(model)["data"]["rows"] == N_ROWS
    assert not (tmp_path / ".model.rows").exists()


def test_a_streamed_run_keeps_a_sample_of_test_predictions_past_its_cap(files, monkeypatch) -> None:
    import keel.train.streamed as streamed

    monkeypatch.setattr(streamed, "MAX_TEST_ROWS", 1000)  # the real cap is 500,000 rows
    model = keel.fit(files["csv"], target="y", config=STREAMED, quiet=True, importance=False)
    kept = model._test_predictions
    assert kept is not None and len(kept) == 1000 < _run(model)["rows"]["test"]
    assert len(set(kept.row.tolist())) == 1000  # distinct rows of the file
    truth = files["frame"]["y"].to_numpy()[kept.row - 1]  # row numbers are the file's (1-based)
    assert [model.classes[index] for index in kept.target] == truth.tolist()
    assert 0.7 < model.metrics["accuracy"] < 0.95


def test_a_killed_runs_store_in_the_spill_directory_is_removed_by_the_next_run(files, tmp_path) -> None:
    spill = tmp_path / "spill"
    config = {**STREAMED, "data.spill_directory": str(spill)}
    first = keel.fit(files["csv"], target="y", config=config, output=tmp_path / "model", quiet=True, importance=False)
    assert _streamed(first) and not list(spill.iterdir())
    # What a SIGKILL leaves: the directory named after this output, full of rows.
    from keel.train.streamed import row_directory

    with row_directory(tmp_path / "model", str(spill)) as directory:
        name = directory.name
    stale = spill / name
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "numeric").write_bytes(b"\0" * 1000)
    keel.fit(files["csv"], target="y", config=config, output=tmp_path / "model2", quiet=True, importance=False)
    assert stale.exists()  # another output's store is not this run's to remove
    keel.fit(files["csv"], target="y", config=config, output=tmp_path / "model", quiet=True, importance=False)
    assert not stale.exists() and not list(spill.iterdir())


def test_a_store_that_cannot_fit_on_disk_is_refused_before_the_write_pass(files, tmp_path, monkeypatch) -> None:
    import shutil

    import keel.train.streamed as streamed

    real = shutil.disk_usage
    monkeypatch.setattr(streamed.shutil, "disk_usage",  # a nearly full disk cannot be made here
                        lambda path: real(path)._replace(free=1_000_000))
    with pytest.raises(ConfigError, match=r"need about 0\.\d+ GB on disk in .*, which has 0\.00 GB free; .*"
                                          r"data\.spill_directory"):
        keel.fit(files["csv"], target="y", config=STREAMED, output=tmp_path / "model", quiet=True)
    assert not (tmp_path / ".model.rows").exists() and not (tmp_path / "model").exists()


def test_a_spill_directory_that_is_a_file_is_a_config_error(files, tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="data.spill_directory .*writable directory"):
        keel.fit(files["csv"], target="y", config={**STREAMED, "data.spill_directory": str(tmp_path / "file")},
                 output=tmp_path / "model", quiet=True)


def test_a_target_typed_differently_in_different_chunks_keeps_its_labels_as_written(tmp_path) -> None:
    # Labels 1, 2, 3 in every chunk but the last, where "x" appears: pandas types the early chunks
    # as integers and the last as text; the classes must be the file's spellings, as in memory.
    rng = np.random.default_rng(5)
    frame = _table(N_ROWS, seed=4)
    labels = rng.choice(["1", "2", "3"], N_ROWS).astype(object)
    labels[-300:] = "x"
    frame["y"] = labels
    frame.to_csv(tmp_path / "data.csv", index=False)
    streamed = keel.fit(tmp_path / "data.csv", target="y", config=STREAMED, quiet=True, importance=False)
    in_memory = keel.fit(tmp_path / "data.csv", target="y", config=IN_MEMORY, quiet=True, importance=False)
    assert _streamed(streamed) and not _streamed(in_memory)
    assert streamed.classes == in_memory.classes == ["1", "2", "3", "x"]


def test_a_blank_label_in_parquet_is_a_missing_label_in_memory_and_streamed(tmp_path) -> None:
    frame = _table(N_ROWS, seed=6)
    frame.loc[:9, "y"] = ""
    frame.to_parquet(tmp_path / "data.parquet", index=False)
    for config in (IN_MEMORY, STREAMED):
        model = keel.fit(tmp_path / "data.parquet", target="y", config=config, quiet=True, importance=False)
        assert _run(model)["rows"]["unlabelled"] == 10 and model.classes == ["no", "yes"]


def test_a_streamed_count_target_read_as_classes_says_so(tmp_path: Path) -> None:
    """The streamed path infers the task from the scan's labels: the same whole-number note as in memory."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=20_000).round(4) for i in range(4)})
    frame["visits"] = rng.integers(0, 6, len(frame))
    frame.to_csv(tmp_path / "visits.csv", index=False)
    config = {"preset": "fast", "model.hidden": [8], "training.epochs": 1, "data.memory_budget": "1MiB"}
    model = keel.fit(tmp_path / "visits.csv", target="visits", config=config, quiet=True, importance=False)
    assert _streamed(model)
    assert ("target 'visits' holds 6 whole numbers (0 to 5), read as 6 classes (multiclass); if they are counts or "
            "amounts, train a regression with --set task=regression") in " ".join(model.notes)


def test_a_streamed_run_drops_the_columns_asked_without_saying_it_judged_them(tmp_path) -> None:
    frame = _table(N_ROWS, seed=4)
    path = tmp_path / "dropping.csv"
    frame.to_csv(path, index=False)
    model = keel.fit(path, target="y", config={**STREAMED, "drop_columns": ["x0", "count"]}, quiet=True,
                     importance=False)
    assert _streamed(model) and not {"x0", "count"} & set(model.feature_names)
    assert "dropped column 'x0': drop_columns lists it" in model.notes  # no "(judged on a sample ...)": asked
