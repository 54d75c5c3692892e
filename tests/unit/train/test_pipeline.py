"""The training pipeline: what it learns from which rows, what it reports and when, splits and weights."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pytest
import torch

import keel
from keel.data.split import split_rows
from keel.errors import DataError
from keel.nn.network import NetworkBag
from keel.train.callbacks import EpochCallback, Reporter
from keel.train.trainer import Batch, Trainer
from tests.conftest import FAST, make_classification_frame, make_regression_frame, settings_note


class Recorder(Reporter):
    """Keeps every event in the order it arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[EpochCallback | None]:
        self.events.append(("progress", (epochs, rows)))
        yield lambda epoch, total, record: self.events.append(("epoch", epoch))

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        self.events.append(("step", description))
        yield lambda done: self.events.append(("advance", done))


# ---- item 2: bagging is reported as trained -----------------------------------------------
def test_bagging_note_says_what_was_trained() -> None:
    frame = make_classification_frame(120)
    bagged = keel.fit(frame, target="label", config={**FAST, "training.bagging": 3}, quiet=True)
    assert isinstance(bagged.network, NetworkBag) and len(bagged.network.networks) == 3
    assert "3 bagged networks" in settings_note(bagged)
    single = keel.fit(frame, target="label", config={**FAST, "training.bagging": 3,
                                                     "training.validation_split": 0}, quiet=True)
    assert not isinstance(single.network, NetworkBag)
    assert "bagged networks" not in settings_note(single)
    assert "training.bagging is 3 but there are no validation rows" in single.notes[0]
    assert "one network is trained" in single.notes[0]


# ---- item 10: the test rows shape nothing ----------------------------------------------------
def test_test_rows_change_nothing_that_was_fitted() -> None:
    frame = make_classification_frame(200)
    config = {**FAST, "training.epochs": 1}
    model = keel.fit(frame, target="label", config=config, quiet=True)
    first = model.notes[0]
    assert first.startswith("rows: ")
    # Find the test rows: change every feature value there, drastically; nothing fitted may move.
    rows = split_rows(len(frame), validation=0.1, test=0.2, seed=42,
                      classes=pd.factorize(frame["label"], sort=True)[0])
    altered = frame.copy()
    altered.loc[rows.test, "size"] = 1e6
    altered.loc[rows.test, "color"] = "only-in-test"
    altered.loc[rows.test, "member"] = None
    other = keel.fit(altered, target="label", config=config, quiet=True)
    assert other.schema.to_dict() == model.schema.to_dict()
    assert other.preprocessor.state() == model.preprocessor.state()
    category = next(t for t in other.preprocessor.transforms if t.name == "color")
    assert "only-in-test" not in category.vocabulary
    for name, tensor in model.network.state_dict().items():
        assert torch.equal(tensor, other.network.state_dict()[name]), name


def test_column_types_come_from_training_rows_only() -> None:
    # A column constant on the training rows and varied only on test rows is dropped as constant.
    frame = make_classification_frame(200)
    rows = split_rows(len(frame), validation=0.1, test=0.2, seed=42,
                      classes=pd.factorize(frame["label"], sort=True)[0])
    frame["flag"] = "same"
    frame.loc[rows.test, "flag"] = [f"v{i}" for i in range(len(rows.test))]
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1}, quiet=True)
    assert "flag" in model.schema.dropped and model.schema.dropped["flag"].startswith("constant")


# ---- items 17, 18, 22, 26: checks before training, notes as they arise -----------------------
def test_notes_reach_the_reporter_as_they_arise_and_first_note_counts_rows() -> None:
    frame = make_classification_frame(150)
    frame["row_id"] = np.arange(len(frame))
    recorder = Recorder()
    model = keel.fit(frame, target="label", config=FAST, reporter=recorder)
    kinds = [kind for kind, _ in recorder.events]
    notes = [text for kind, text in recorder.events if kind == "note"]
    assert notes == model.notes
    assert notes[0] == "rows: 108 for training, 12 for validation, 30 for test (a random split, stratified by class)"
    assert any("dropped column 'row_id'" in note for note in notes)
    # Every note but calibration's comes before training starts; the epochs follow the progress context.
    before = [i for i, (kind, text) in enumerate(recorder.events) if kind == "note" and "temperature" not in text]
    assert kinds.index("message") > max(before)
    assert any(note.startswith("temperature ") for note in notes[len(before):])  # the validation rows, after training
    assert kinds.count("epoch") == len(model.history["epochs"])
    assert ("progress", (FAST["training.epochs"], 108)) in recorder.events  # rows per epoch, for rows/s
    # Long steps are announced: preprocessing before training, permutation importance after, one advance a feature.
    steps = [text for kind, text in recorder.events if kind == "step"]
    assert steps == ["preprocessing 150 rows x 4 features", "permutation importance"]
    assert [done for kind, done in recorder.events if kind == "advance"] == [1, 2, 3, 4]


def test_quiet_library_call_prints_nothing(capsys) -> None:
    keel.fit(make_classification_frame(80), target="label", config=FAST, quiet=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_default_library_call_prints_plain_notes_on_stderr(capsys) -> None:
    keel.fit(make_classification_frame(80), target="label", config=FAST)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("note: rows: ")
    assert "\x1b[" not in captured.err  # no rich markup or colour in a library call


def test_error_carries_the_notes_made_before_it() -> None:
    frame = make_classification_frame(100)
    frame["empty"] = None
    test = make_classification_frame(30, seed=1).drop(columns="weight")
    recorder = Recorder()
    with pytest.raises(DataError, match="lacks the input column") as caught:
        keel.fit(frame, target="label", config=FAST, test=test, reporter=recorder)
    assert any("dropped column 'empty'" in note for note in caught.value.notes)
    assert caught.value.notes[0].startswith("rows: ")
    assert "message" not in [kind for kind, _ in recorder.events]  # refused before any training


def test_unknown_class_in_test_data_is_refused_before_training() -> None:
    test = make_classification_frame(30, seed=1)
    test.loc[3, "label"] = "delta"
    recorder = Recorder()
    with pytest.raises(DataError, match="'delta'"):
        keel.fit(make_classification_frame(100), target="label", config=FAST, test=test, reporter=recorder)
    assert "message" not in [kind for kind, _ in recorder.events]


# ---- item 24: grouped and time-ordered splits ------------------------------------------------
@pytest.mark.parametrize("n_groups", [3, 10, 40])
def test_grouped_split_keeps_each_group_in_one_part(n_groups: int) -> None:
    rng = np.random.default_rng(n_groups)
    groups = rng.integers(0, n_groups, 300)
    split = split_rows(300, validation=0.2, test=0.2, seed=0, groups=groups)
    parts = [set(groups[split.train]), set(groups[split.validation]), set(groups[split.test])]
    assert sorted(np.concatenate([split.train, split.validation, split.test]).tolist()) == list(range(300))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not parts[a] & parts[b]
    assert len(split.train) and len(split.test)


def test_time_ordered_split_holds_out_the_latest_rows() -> None:
    order = np.random.default_rng(0).permutation(100).astype(float)
    split = split_rows(100, validation=0.25, test=0.2, seed=0, order=order)
    assert len(split.test) == 20 and len(split.validation) == 20
    assert order[split.train].max() < order[split.validation].min()
    assert order[split.validation].max() < order[split.test].min()


def test_split_by_and_order_by_in_a_run() -> None:
    frame = make_classification_frame(200)
    frame["customer"] = np.arange(200) // 4
    frame["day"] = pd.date_range("2024-01-01", periods=200, freq="D").strftime("%Y-%m-%d")
    grouped = keel.fit(frame, target="label", config={**FAST, "training.split_by": "customer"}, quiet=True)
    assert "whole groups of 'customer'" in grouped.notes[0]
    assert "customer" not in grouped.feature_names
    timed = keel.fit(frame, target="label", config={**FAST, "training.order_by": "day"}, quiet=True)
    assert "the latest rows by 'day'" in timed.notes[0]
    assert "day" not in timed.feature_names and "day" not in timed.schema.dropped


# ---- item 25: row weights ----------------------------------------------------------------------
def test_weighted_loss_equals_the_loss_of_repeated_rows() -> None:
    frame = make_classification_frame(60)
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1}, quiet=True)
    network = model.network
    settings = model.config.training.model_copy(update={"weight_column": "w"})
    trainer = Trainer(network, settings, "multiclass", "cross_entropy",
                      class_weights=torch.tensor([1.0, 2.0, 0.5]))
    features = model.preprocessor.transform(frame)
    y = torch.from_numpy(model.target_encoder.encode(frame["label"]))
    numeric, categorical = torch.from_numpy(features.numeric), torch.from_numpy(features.categorical)
    counts = torch.from_numpy(np.random.default_rng(0).integers(0, 4, len(frame))).float()
    weighted = trainer.validate(Batch(numeric, categorical, y, counts))["val_loss"]
    repeat = torch.repeat_interleave(torch.arange(len(frame)), counts.long())
    repeated = trainer.validate(Batch(numeric[repeat], categorical[repeat], y[repeat]))["val_loss"]
    assert weighted == pytest.approx(repeated, rel=1e-5)


def test_weight_column_weights_metrics_and_is_not_a_feature() -> None:
    frame = make_regression_frame(200)
    frame["w"] = np.random.default_rng(0).integers(0, 3, len(frame)).astype(float)
    config = {**FAST, "training.weight_column": "w", "training.test_split": 0.3}
    model = keel.fit(frame, target="price", config=config, quiet=True)
    assert "w" not in model.feature_names
    assert "rows weighted by 'w'" in model.notes[-1]
    test = frame.iloc[split_rows(len(frame), validation=0.1, test=0.3, seed=42).test]
    weighted = model.evaluate(test)
    assert weighted["rmse"] == pytest.approx(model.metrics["rmse"], rel=1e-6)
    unweighted = model.evaluate(test.drop(columns="w"))
    assert unweighted["rmse"] != pytest.approx(weighted["rmse"], rel=1e-6)


def test_rows_of_weight_zero_do_not_move_a_regression_target_scale() -> None:
    """A row weighing nothing changes nothing: its target once set the scale the loss is measured in (a combination
    audit: outlying labels on 15% of rows, all of weight 0, took a weighted test R^2 from 0.58 to 0.27)."""
    frame = make_regression_frame(240)
    rng = np.random.default_rng(1)
    frame["t"], frame["w"] = rng.permutation(len(frame)), rng.uniform(0.2, 3.0, len(frame))
    zero = rng.choice(len(frame), 36, replace=False)
    frame.loc[zero, "w"] = 0.0
    config = {**FAST, "training.epochs": 4, "training.order_by": "t", "training.weight_column": "w"}
    changed = frame.copy()
    changed.loc[zero, "price"] = changed.loc[zero, "price"] * 5 + 1000
    first = keel.fit(frame, target="price", config=config, quiet=True, importance=False)
    second = keel.fit(changed, target="price", config=config, quiet=True, importance=False)
    assert second.target_encoder.std == pytest.approx(first.target_encoder.std, rel=1e-9)
    features = frame.drop(columns="price")
    np.testing.assert_array_equal(first.predict(features), second.predict(features))


def test_negative_or_missing_weights_are_refused_with_the_row() -> None:
    frame = make_regression_frame(60)
    frame["w"] = 1.0
    frame.loc[7, "w"] = -2.0
    with pytest.raises(DataError, match="row 8 has the value -2.0"):
        keel.fit(frame, target="price", config={**FAST, "training.weight_column": "w"}, quiet=True)


def test_a_rows_prediction_does_not_depend_on_its_batch() -> None:
    frame = make_classification_frame(120)
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    together = model.predict_proba(frame)
    for row in (0, 17, 119):
        alone = model.predict_proba(frame.iloc[[row]])
        np.testing.assert_allclose(alone[0], together[row], rtol=0, atol=1e-12)


def test_order_by_day_first_text_dates_keeps_the_future_out_of_training() -> None:
    from keel.config import TrainingConfig
    from keel.train.pipeline import _order

    days = pd.date_range("2020-01-01", periods=40, freq="D")
    frame = pd.DataFrame({"d": days.strftime("%d/%m/%Y")})  # 01/01 ... 09/02: day first, ambiguous early on
    keys = _order(frame, TrainingConfig(order_by="d"))
    assert keys is not None
    assert (np.diff(keys) > 0).all()  # read in one format: calendar order


def test_evaluate_checks_weights_and_says_when_they_are_missing() -> None:
    frame = make_regression_frame(120)
    frame["w"] = 1.0
    model = keel.fit(frame, target="price", config={**FAST, "training.weight_column": "w"}, quiet=True)
    bad = frame.copy()
    bad.loc[5, "w"] = np.nan
    with pytest.raises(DataError, match="weight column 'w' row 6"):
        model.evaluate(bad)
    with pytest.warns(keel.KeelWarning, match="metrics are unweighted"):
        model.evaluate(frame.drop(columns="w"))


def test_weighted_roc_auc_is_undefined_when_a_class_weighs_nothing() -> None:
    from keel.evaluate.metrics import roc_auc

    y = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.9, 0.1]])
    assert roc_auc(y, probabilities, sample_weight=np.array([1.0, 1.0, 0.0, 0.0])) is None
    assert roc_auc(y, probabilities, sample_weight=np.array([1.0, 1.0, 1.0, 1.0])) == roc_auc(y, probabilities)


def test_a_target_missing_on_every_row_says_how_many_rows_there_are() -> None:
    # The unlabelled rows were dropped before the check, so the message said "all 0 are missing".
    frame = make_classification_frame(300).assign(label=np.nan)
    with pytest.raises(DataError, match=r"^DataFrame: target column 'label' has no values \(all 300 are missing\)"):
        keel.fit(frame, target="label", config=FAST, quiet=True)


ONE_EPOCH = {"preset": "fast", "model.hidden": [8], "training.epochs": 1}


def _count_frame(n_rows: int = 200, values: int = 9) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n_rows), "hospital": rng.integers(0, values, n_rows)})


def _whole_number_notes(model: keel.model.Model) -> list[str]:
    return [note for note in model.notes if "whole numbers" in note]


def test_a_count_target_read_as_classes_says_so_after_the_rows_note() -> None:
    """NMES1988's hospital stays (0 to 8) trained as 9 classes without a word: the run now says so and how to
    train a regression; the rows note stays first."""
    model = keel.fit(_count_frame(), target="hospital", config=ONE_EPOCH, quiet=True, importance=False)
    assert model.task == "multiclass" and model.notes[0].startswith("rows: ")
    assert _whole_number_notes(model) == [
        "target 'hospital' holds 9 whole numbers (0 to 8), read as 9 classes (multiclass); if they are counts or "
        "amounts, train a regression with --set task=regression (task: regression in YAML, config={'task': "
        "'regression'} in Python)."]


@pytest.mark.parametrize("config", [
    {"task": "multiclass"},
    {"input_features": [{"name": "hospital", "type": "category"}]},  # the target declared a category
    {"task": "regression"},
])
def test_no_whole_number_note_where_the_task_was_declared(config: dict[str, Any]) -> None:
    model = keel.fit(_count_frame(), target="hospital", config={**ONE_EPOCH, **config}, quiet=True, importance=False)
    assert not _whole_number_notes(model)


def test_no_whole_number_note_for_two_classes_or_a_quantity() -> None:
    binary = keel.fit(_count_frame(values=2), target="hospital", config=ONE_EPOCH, quiet=True, importance=False)
    assert binary.task == "binary" and not _whole_number_notes(binary)
    frame = _count_frame()
    frame["hospital"] = frame["hospital"] * 3 + np.arange(len(frame)) % 7  # 41 values: a quantity
    quantity = keel.fit(frame, target="hospital", config=ONE_EPOCH, quiet=True, importance=False)
    assert quantity.task == "regression" and not _whole_number_notes(quantity)


def test_the_first_note_says_why_a_random_split_was_not_stratified() -> None:
    """One class of a single labelled row turned stratification off for every class and said only "(a random
    split)": the note names the class as the messages spell it."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.choice(["up", "down"], 120)})
    frame.loc[7, "y"] = "sideways"
    model = keel.fit(frame, target="y", config=ONE_EPOCH, quiet=True, importance=False)
    assert model.notes[0] == ("rows: 86 for training, 10 for validation, 24 for test (a random split, not stratified: "
                              "class 'sideways' has a single labelled row)")
    frame["y"] = rng.choice([1.0, 2.0], 120)
    frame.loc[7, "y"] = 5.0  # a number class as the messages spell it: 5, not 5.0
    model = keel.fit(frame, target="y", config=ONE_EPOCH, quiet=True, importance=False)
    assert model.notes[0].endswith("(a random split, not stratified: class 5 has a single labelled row)")
    frame.loc[7, "y"] = 1.0
    stratified = keel.fit(frame, target="y", config=ONE_EPOCH, quiet=True, importance=False)
    assert stratified.notes[0].endswith("(a random split, stratified by class)")


def test_bagged_folds_keep_no_reason_about_a_validation_draw_they_replace() -> None:
    # Bagging's folds are dealt class by class (fold_rows); the validation draw the reason was about is not used.
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.choice(["up", "down"], 120)})
    frame.loc[7, "y"] = "solo"
    bagged = keel.fit(frame, target="y", config={**ONE_EPOCH, "training.bagging": 3, "training.test_split": 0.0},
                      quiet=True, importance=False)
    assert bagged.notes[0].startswith("rows: ") and "not stratified" not in bagged.notes[0]
    assert "(a random split, stratified by class); 3 bagged networks" in bagged.notes[0]
    tested = keel.fit(frame, target="y", config={**ONE_EPOCH, "training.bagging": 3}, quiet=True, importance=False)
    assert "(a random split, not stratified: class 'solo' has a single labelled row); 3 bagged" in tested.notes[0]


def test_a_list_in_a_category_cell_is_refused_at_training_as_at_prediction() -> None:
    frame = pd.DataFrame({"x": np.arange(60.0), "colour": [["red"]] + ["blue", "green"] * 29 + ["red"],
                          "y": ["a", "b"] * 30})
    with pytest.raises(DataError, match=r"column 'colour' row 1 holds a value of type list"):
        keel.fit(frame, target="y", config=ONE_EPOCH, quiet=True, importance=False)
