"""A binary model's decision threshold in the ONNX export: the label output, the metadata, parity, metrics.

:func:`threshold_model` is shared with the runtime's and the server's threshold tests: a binary
model whose probabilities spread around 0.3-0.5, saved with its ONNX export attached, and with a
threshold of 0.3 set directly on it, so that many rows are "yes" by the threshold and "no" by the
most probable class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

import keel
from keel.export.measure import main_metric
from keel.export.onnx import to_onnx
from keel.export.parity import compare, onnx_feeds
from keel.export.tflite import _description
from tests.conftest import FAST

THRESHOLD = 0.3
CALIBRATION = {"temperature": 1.0, "kept": False, "log_loss_before": None, "log_loss_after": None, "rows": 0,
               "threshold": THRESHOLD, "threshold_auto": False, "threshold_metric": None, "threshold_score": None}


def noisy_binary_frame(n_rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A weak signal, so the probabilities spread over the middle rather than piling up at 0 and 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n_rows)
    group = rng.choice(["a", "b", "c"], n_rows)
    logit = 0.9 * x + np.where(group == "a", 0.6, 0.0) - 0.6
    answer = np.where(rng.random(n_rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"x": x, "group": group, "answer": answer})


def threshold_model(directory: Path) -> tuple[keel.Model, pd.DataFrame]:
    """The shared binary model with threshold 0.3, saved at ``directory`` with ``model.onnx`` attached."""
    frame = noisy_binary_frame()
    model = keel.fit(frame, target="answer", config={**FAST, "training.epochs": 3}, quiet=True)
    model.calibration = dict(CALIBRATION)
    model.save(directory)
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    return model, frame


def between(model: keel.Model, frame: pd.DataFrame) -> np.ndarray:
    """Rows whose positive probability lies in [threshold, 0.5): the threshold and the argmax disagree."""
    positive = model.predict_proba(frame)[:, 1]
    return (positive >= THRESHOLD) & (positive < 0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, pd.DataFrame, Path]:
    directory = tmp_path_factory.mktemp("threshold") / "model"
    model, frame = threshold_model(directory)
    return model, frame, directory


def run_onnx(proto: onnx.ModelProto, model: keel.Model, frame: pd.DataFrame) -> list[Any]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, onnx_feeds(model, frame))


def test_the_label_output_applies_the_threshold_row_by_row(trained) -> None:
    model, frame, _ = trained
    assert model.threshold == THRESHOLD and model.classes == ["no", "yes"]
    middle = between(model, frame)
    assert middle.sum() >= 10 and (~middle).sum() >= 10  # rows on both sides of each rule
    label, probabilities = run_onnx(to_onnx(model), model, frame)
    expected = model.predict(frame)
    assert label.tolist() == expected.tolist()
    assert set(expected[middle]) == {"yes"}  # the most probable class there is "no"
    assert (probabilities[middle].argmax(1) == 0).all()
    assert (model.predict_frame(frame)["answer"].to_numpy() == expected).all()


def test_the_metadata_holds_the_threshold_and_a_model_without_one_keeps_format_1(trained) -> None:
    model, frame, _ = trained
    proto = to_onnx(model)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert float(metadata["keel.threshold"]) == THRESHOLD and metadata["keel.export_format"] == "2"
    assert "GreaterOrEqual" in {node.op_type for node in proto.graph.node}
    model.calibration = None
    try:
        plain = to_onnx(model)
        metadata = {prop.key: prop.value for prop in plain.metadata_props}
        assert "keel.threshold" not in metadata and metadata["keel.export_format"] == "1"
        assert "ArgMax" in {node.op_type for node in plain.graph.node}
        label, probabilities = run_onnx(plain, model, frame)
        assert label.tolist() == np.array(model.classes)[probabilities.argmax(1)].tolist()
    finally:
        model.calibration = dict(CALIBRATION)


def test_parity_compares_labels_by_the_threshold(trained) -> None:
    model, frame, _ = trained
    own = model.predict_proba(frame)
    positive = own[:, 1]
    row = int(np.flatnonzero((positive > THRESHOLD + 0.02) & (positive < 0.5))[0])
    moved = own.copy()
    moved[row] = [1 - THRESHOLD + 0.02, THRESHOLD - 0.02]  # now below the threshold: another label
    assert compare(model, frame, lambda _: own, "data").label_mismatches == 0
    assert compare(model, frame, lambda _: moved, "data").label_mismatches == 1
    model.calibration = None
    try:  # by the most probable class both sides of the move are "no"
        assert compare(model, frame, lambda _: moved, "data").label_mismatches == 0
    finally:
        model.calibration = dict(CALIBRATION)


def test_the_accuracy_measured_on_the_file_uses_the_threshold(trained) -> None:
    model, frame, _ = trained
    positives = frame[frame["answer"] == "yes"]  # one class: accuracy, not ROC-AUC, is measured
    session = ort.InferenceSession(to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
    name, value = main_metric(model, positives)(lambda feeds: session.run(None, feeds))
    assert name == "accuracy" and value == pytest.approx(np.mean(model.predict(positives) == "yes"))
    assert value > np.mean(model.predict_proba(positives).argmax(1) == 1)


def test_the_tflite_description_carries_the_threshold(trained) -> None:
    model, _, _ = trained
    interface = {"signature": "serving_default", "inputs": {}, "output": {}, "versions": {}}
    assert _description(model, [], {}, interface)["threshold"] == THRESHOLD


@pytest.mark.parametrize("value", [1e15, 1e300, -1e300])
def test_the_export_clips_extreme_numbers_as_keel_does(tmp_path, value) -> None:
    """keel clips scaled numbers to +-SCALED_LIMIT; an export that did not gave NaN (1e300) or another answer."""
    import keel
    from keel.runtime import Predictor
    from tests.conftest import FAST, PENGUINS

    frame = pd.read_csv(PENGUINS)
    for target in ("species", "body_mass_g"):
        model = keel.fit(frame, target=target, config=FAST, quiet=True)
        model.save(tmp_path / target)
        model.export()
        rows = frame.drop(columns=[target]).head(3).copy()
        rows["flipper_length_mm"] = value
        ours = model.predict_proba(rows) if target == "species" else model.predict(rows)
        served = Predictor.load(tmp_path / target)
        theirs = served.predict_proba(rows) if target == "species" else served.predict(rows)
        assert np.isfinite(ours).all() and np.isfinite(theirs).all()
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
