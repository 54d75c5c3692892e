"""What a training run keeps for the report: the run record, the test predictions, importance, format 3."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import keel
from keel.artifact import FORMAT_VERSION, read_manifest
from keel.errors import ConfigError, KeelWarning
from keel.evaluate.metrics import classification_metrics
from keel.evaluate.predictions import PREDICTIONS_FILE
from tests.conftest import FAST, ROOT, make_classification_frame, make_regression_frame

FORMAT_2 = ROOT / "tests" / "fixtures" / "models" / "format2"  # written by make_models.py there


def test_the_run_record_describes_the_data_and_the_split(tmp_path) -> None:
    frame = make_classification_frame(200)
    frame["row_id"] = np.arange(len(frame))  # an id column: dropped, and said why
    frame.loc[[0, 1], "label"] = None
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    run = model.run
    assert run["data"] == {"source": "DataFrame", "rows": 200, "columns": 6, "test_source": None}
    rows = run["rows"]
    assert rows["unlabelled"] == 2
    assert rows["train"] + rows["validation"] + rows["test"] == 198 and min(rows.values()) >= 0 and rows["test"] > 0
    columns = {column["name"]: column for column in run["columns"]}
    assert columns["label"]["role"] == "target" and columns["color"]["role"] == "category"
    assert columns["size"]["role"] == "number" and columns["member"]["role"] == "binary"
    assert columns["weight"]["missing"] == pytest.approx(frame["weight"].isna().mean())
    assert columns["color"]["unique"] == 3
    assert columns["row_id"]["role"] == "dropped" and columns["row_id"]["dropped"]
    assert run["seconds"]["total"] >= run["seconds"]["training"] > 0


def test_test_predictions_are_the_metrics_rows_and_survive_a_save(tmp_path) -> None:
    frame = make_classification_frame(200)
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    predictions = model.test_predictions
    assert len(predictions) == model.run["rows"]["test"] == model.metrics["n_rows"]
    # The row numbers point at the rows of the data (1-based), and their labels are the stored targets.
    labels = frame["label"].to_numpy()[predictions.row - 1]
    np.testing.assert_array_equal(np.array(model.classes)[predictions.target], labels)
    again = classification_metrics(predictions.target, predictions.probabilities, model.classes)
    assert again["accuracy"] == model.metrics["accuracy"] and again["log_loss"] == pytest.approx(model.metrics["log_loss"])
    model.save(tmp_path / "m")
    assert PREDICTIONS_FILE in read_manifest(tmp_path / "m").files  # written and checksummed with the model
    loaded = keel.load(tmp_path / "m")
    stored = loaded.test_predictions
    np.testing.assert_array_equal(stored.target, predictions.target)
    np.testing.assert_array_equal(stored.row, predictions.row)
    np.testing.assert_allclose(stored.probabilities, predictions.probabilities, atol=1e-7)
    assert loaded.run == model.run and loaded.importance == model.importance and loaded.versions == model.versions


def test_regression_predictions_are_in_target_units_and_match_the_metrics() -> None:
    frame = make_regression_frame(200)
    model = keel.fit(frame, target="price", config=FAST, quiet=True)
    predictions = model.test_predictions
    np.testing.assert_allclose(predictions.target, frame["price"].to_numpy()[predictions.row - 1])
    rmse = float(np.sqrt(np.mean((predictions.values - predictions.target) ** 2)))
    assert rmse == pytest.approx(model.metrics["rmse"])


def test_a_test_file_gives_predictions_with_its_own_row_numbers(tmp_path) -> None:
    train, test = make_classification_frame(150), make_classification_frame(40, seed=1)
    test.loc[[5], "label"] = None  # dropped, so row numbers skip it
    model = keel.fit(train, target="label", config=FAST, test=test, quiet=True)
    predictions = model.test_predictions
    assert len(predictions) == 39 and 6 not in predictions.row and predictions.row.max() == 40


def test_importance_ranks_the_feature_that_decides_the_target_first() -> None:
    model = keel.fit(make_classification_frame(300), target="label", config={**FAST, "training.epochs": 20},
                     quiet=True)
    importance = model.importance
    names = [feature["name"] for feature in importance["features"]]
    assert sorted(names) == sorted(model.feature_names)
    assert names[0] in {"size", "color"}  # the label is written in both
    assert importance["source"] == "validation" and importance["rows"] <= 2000


def test_bagged_models_measure_importance_on_the_test_rows() -> None:
    model = keel.fit(make_classification_frame(200), target="label",
                     config={**FAST, "training.bagging": 2}, quiet=True)
    assert model.importance["source"] == "test"


def test_no_test_rows_no_predictions_and_the_report_asks_for_data(tmp_path) -> None:
    model = keel.fit(make_classification_frame(), target="label", config={**FAST, "training.test_split": 0},
                     quiet=True)
    assert model.test_predictions is None
    model.save(tmp_path / "m")
    assert PREDICTIONS_FILE not in read_manifest(tmp_path / "m").files
    with pytest.raises(ConfigError, match="--data"):
        keel.load(tmp_path / "m").report()


def test_format_2_models_load_without_a_run_record_and_keep_predicting(tmp_path) -> None:
    model = keel.load(FORMAT_2 / "classifier")
    assert model.run is None and model.calibration is None and model.importance is None
    assert model.test_predictions is None
    rows, expected = pd.read_csv(FORMAT_2 / "inputs.csv"), pd.read_csv(FORMAT_2 / "predictions.csv")
    np.testing.assert_array_equal(model.predict(rows), expected["label"])
    np.testing.assert_allclose(model.predict_proba(rows), expected[[f"proba_{c}" for c in model.classes]], atol=1e-6)
    copy = tmp_path / "classifier"
    shutil.copytree(FORMAT_2 / "classifier", copy)
    keel.load(copy).save(copy)  # re-saved as format 3; its ONNX export (same weights) is kept
    document = json.loads((copy / "keel.json").read_text())
    assert document["format_version"] == FORMAT_VERSION - 1 == 3 and "model.onnx" in document["files"]
    assert document["run"] is None


def test_a_directory_saved_over_does_not_lend_its_predictions_to_the_model_loaded_before(tmp_path) -> None:
    first = keel.fit(make_classification_frame(200), target="label", config=FAST, quiet=True)
    first.save(tmp_path / "m")
    loaded = keel.load(tmp_path / "m")
    other = keel.fit(make_classification_frame(300, seed=5), target="label",
                     config={**FAST, "training.test_split": 0.4}, quiet=True)
    other.save(tmp_path / "m")  # saved over before `loaded` first asked for its predictions
    with pytest.warns(KeelWarning, match="not the file this model was loaded with"):
        assert loaded.test_predictions is None
    with pytest.warns(KeelWarning, match="not the file this model was loaded with"):
        loaded.save(tmp_path / "copy")
    assert PREDICTIONS_FILE not in read_manifest(tmp_path / "copy").files


def test_a_changed_decision_threshold_drops_the_exports_made_with_the_old_one(tmp_path) -> None:
    frame = make_classification_frame(200)
    frame["label"] = np.where(frame["label"] == "alpha", "yes", "no")
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    model.save(tmp_path / "m")
    model.attach("model.onnx", b"an export made with the old threshold")
    model.save(tmp_path / "m")  # same weights, same decision: the export is still right
    assert (tmp_path / "m" / "model.onnx").exists()
    model.calibration = {**(model.calibration or {}), "threshold": 0.3}
    with pytest.warns(KeelWarning, match="model.onnx were made from the previous weights"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m" / "model.onnx").exists()
    assert keel.load(tmp_path / "m").threshold == 0.3


def test_bagging_and_a_test_file_are_recorded_as_they_were_run() -> None:
    train, test = make_classification_frame(200), make_classification_frame(40, seed=1)
    model = keel.fit(train, target="label", config={**FAST, "training.bagging": 3}, test=test, quiet=True)
    run = model.run
    assert run["data"]["test_source"] == "DataFrame" and run["rows"]["test"] == 40
    bagging = run["bagging"]
    pool = run["rows"]["train"] + run["rows"]["validation"]
    assert bagging["networks"] == 3 and len(bagging["train_each"]) == 3
    assert set(bagging) == {"networks", "train_each", "validation_each"}  # "planned" only where a limit cut it
    assert any("; 3 bagged networks, each trained on about" in note for note in model.notes)
    assert all(train + validation == pool for train, validation in zip(bagging["train_each"],
                                                                        bagging["validation_each"]))
    assert sum(bagging["validation_each"]) == pool  # every pooled row validates exactly one network
    single = keel.fit(train, target="label", config=FAST, quiet=True)
    assert "bagging" not in single.run and single.run["data"]["test_source"] is None


def test_threshold_auto_reaches_predict_the_onnx_file_and_the_runtime(tmp_path) -> None:
    from keel.runtime import Predictor

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"x": rng.normal(0, 1, n), "z": rng.normal(0, 1, n)})
    frame["rare"] = np.where(rng.random(n) < 1 / (1 + np.exp(-(2 * frame["x"] - 4))), "yes", "no")  # ~5% yes
    model = keel.fit(frame, target="rare", config={**FAST, "training.threshold": "auto", "training.epochs": 10},
                     quiet=True)
    assert model.calibration["threshold_auto"] and model.threshold is not None and model.threshold < 0.5
    model.save(tmp_path / "m")
    model.export()
    labels = model.predict(frame)
    between = (model.predict_proba(frame)[:, 1] >= model.threshold) & (model.predict_proba(frame)[:, 1] < 0.5)
    assert between.sum() > 0  # rows the threshold decides differently from the most probable class
    assert (labels[between] == "yes").all()
    predictor = Predictor.load(tmp_path / "m")
    assert predictor.threshold == pytest.approx(model.threshold)
    np.testing.assert_array_equal(predictor.predict(frame), labels)
    report = keel.load(tmp_path / "m").report().html.read_text(encoding="utf-8")
    assert f"at least {model.threshold:.4g} (chosen on the validation rows for the F1 of yes, the rarer class" in report
