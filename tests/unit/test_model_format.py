"""Saved models keep loading: committed format-1 directories, attached files, damaged manifests."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import keel
from keel.artifact import PLAIN_FORMAT_VERSION, read_manifest
from keel.data.preprocess import Preprocessor
from keel.errors import ArtifactError, KeelWarning
from tests.conftest import FAST, ROOT, make_classification_frame

FORMAT_1 = ROOT / "tests" / "fixtures" / "models" / "format1"  # written by make_models.py there


def format_1_rows(float32: bool) -> pd.DataFrame:
    rows = pd.read_csv(FORMAT_1 / "inputs.csv")
    if float32:  # as the rows were when the models predicted them
        rows = rows.astype({"level": np.float32, "flag": np.float32})
    return rows


@pytest.mark.parametrize("float32", [True, False])
def test_format_1_models_predict_what_they_predicted_when_saved(float32) -> None:
    rows, expected = format_1_rows(float32), pd.read_csv(FORMAT_1 / "predictions.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeelWarning)  # every value, float32 0.1 included, is still known
        classifier, regressor = keel.load(FORMAT_1 / "classifier"), keel.load(FORMAT_1 / "regressor")
        np.testing.assert_array_equal(classifier.predict(rows), expected["label"])
        columns = [f"proba_{label}" for label in classifier.classes]
        np.testing.assert_allclose(classifier.predict_proba(rows), expected[columns], atol=1e-6, rtol=0)
        np.testing.assert_allclose(regressor.predict(rows), expected["price"], rtol=1e-6)
    assert classifier.preprocessor.transform(rows).unseen == {}
    level = next(t for t in classifier.preprocessor.transforms if t.name == "level")
    assert "0.1" in level.vocabulary and "0.7" in level.vocabulary  # re-spelled by the 1 -> 2 migration


def test_a_resaved_format_1_model_is_written_in_the_current_format(tmp_path) -> None:
    copy = tmp_path / "regressor"
    shutil.copytree(FORMAT_1 / "regressor", copy)
    model = keel.load(copy)
    model.save(copy)
    document = json.loads((copy / "keel.json").read_text())
    assert document["format_version"] == PLAIN_FORMAT_VERSION and "sha256" in document["files"]["weights.safetensors"]
    rows = format_1_rows(float32=True)
    np.testing.assert_array_equal(keel.load(copy).predict(rows), model.predict(rows))


def test_a_bug_while_loading_is_not_reported_as_a_corrupt_model(trained_classifier, monkeypatch) -> None:
    _, directory = trained_classifier

    def broken(state, arrays=None):  # type: ignore[no-untyped-def]
        raise TypeError("a bug in from_state")

    monkeypatch.setattr(Preprocessor, "from_state", broken)
    with pytest.raises(TypeError, match="a bug in from_state"):
        keel.load(directory)


@pytest.mark.parametrize(("change", "message"), [
    ({"hidden": [999]}, r"does not describe its weights \(.*is \(999, .*\) in the description but \(16, .*\) in the "
                        r"weights"),
    ({"ensemble": 3}, r"does not describe its weights \(the weights lack"),
    ({"colour": "blue"}, r"does not describe its weights \(unknown network setting\(s\) colour\)"),
    ({"hidden": "wide"}, r"does not describe its weights \(network: "),
])
def test_a_manifest_that_does_not_describe_its_weights_is_a_corrupt_model(tmp_path, trained_classifier, change,
                                                                          message) -> None:
    _, directory = trained_classifier
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    document = json.loads((copy / "keel.json").read_text())
    document["network"].update(change)  # keel.json is not checksummed: the weights' checksum still matches
    (copy / "keel.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=message):
        keel.load(copy)


def test_config_settings_this_keel_no_longer_has_fall_back_to_defaults(tmp_path, trained_classifier) -> None:
    model, directory = trained_classifier
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    document = json.loads((copy / "keel.json").read_text())
    document["config"]["training"]["learning_rate_v0"] = 0.1  # a setting a later keel renamed
    document["config"]["model"]["activation"] = "swish-v0"  # a choice a later keel removed
    (copy / "keel.json").write_text(json.dumps(document))
    with pytest.warns(KeelWarning, match=r"the saved config has setting\(s\) this keel does not accept") as caught:
        loaded = keel.load(copy)
    message = str(caught[0].message)
    assert "training.learning_rate_v0" in message and "model.activation" in message
    assert loaded.config.model.activation == "relu" and loaded.config.training == model.config.training
    frame = make_classification_frame()
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test_attached_files_survive_a_resave_of_the_same_weights_only(tmp_path, classification_frame) -> None:
    model = keel.fit(classification_frame, target="label", config=FAST, quiet=True)
    with pytest.raises(ArtifactError, match="this model has no directory yet. Save it first"):
        model.attach("model.onnx", b"onnx")
    path = model.save(tmp_path / "model")
    assert model.path == path and model.summary()["path"] == str(path)
    digest = model.attach("model.onnx", b"onnx")
    loaded = keel.load(path)
    assert loaded.summary()["files"] == ["model.onnx", "predictions.safetensors"] and read_manifest(path).files["model.onnx"].sha256 == digest
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeelWarning)
        loaded.save(path)  # the same weights: the export still fits them
    assert (path / "model.onnx").read_bytes() == b"onnx"
    retrained = keel.fit(classification_frame, target="label", config={**FAST, "training.seed": 3}, quiet=True)
    with pytest.warns(KeelWarning, match="model.onnx were made from the previous weights"):
        retrained.save(path)
    # The new model's own test predictions replace the old ones without a word; the export is dropped.
    assert not (path / "model.onnx").exists() and retrained.summary()["files"] == ["predictions.safetensors"]
    with pytest.raises(ArtifactError, match="holds other weights than the model the file was made from"):
        loaded.attach("model.onnx", b"onnx of the old weights")  # loaded's directory was saved over since
