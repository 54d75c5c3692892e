"""int8 quantization: a much smaller file that still loads, keeps the string lookups and predicts
nearly what the float file predicts; and the side-by-side measurement of two files."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

import keel
from keel.errors import ConfigError
from keel.export.measure import compare, main_metric, measure
from keel.export.onnx import to_onnx
from keel.export.parity import onnx_feeds
from keel.export.quantize import quantize_int8
from keel.model import Model
from tests.conftest import FAST, make_classification_frame, make_regression_frame

# Big matrices (256 x 256), as quantization is for; the float file is ~280 kB.
WIDE = {**FAST, "model.hidden": [256, 256], "training.epochs": 3}


@pytest.fixture(scope="module")
def wide() -> tuple[Model, pd.DataFrame, bytes]:
    frame = make_classification_frame(300)
    model = keel.fit(frame, target="label", config=WIDE, quiet=True)
    return model, frame, to_onnx(model).SerializeToString()


def run(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, feeds)


def op_counts(model_bytes: bytes) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load_from_string(model_bytes).graph.node)


def assert_front_untouched(original: bytes, quantized: bytes, mode: str) -> None:
    """Inputs, string lookups and metadata as the float file has them."""
    before, after = onnx.load_from_string(original), onnx.load_from_string(quantized)
    assert [(i.name, i.type.tensor_type.elem_type) for i in after.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in before.graph.input]
    def encoders(model: onnx.ModelProto) -> list[onnx.NodeProto]:  # the quantizer may reorder nodes
        return sorted((n for n in model.graph.node if n.op_type == "LabelEncoder"), key=lambda n: n.output[0])

    assert encoders(after) == encoders(before) and encoders(before)
    metadata = {p.key: p.value for p in after.metadata_props}
    assert metadata == {**{p.key: p.value for p in before.metadata_props}, "keel.quantization": mode}


def test_dynamic_int8_is_a_third_of_the_size_and_predicts_nearly_the_same(wide) -> None:  # type: ignore[no-untyped-def]
    model, frame, original = wide
    feeds = onnx_feeds(model, frame)

    quantized = quantize_int8(original)

    assert len(original) / len(quantized) >= 3.0  # measured 3.3x
    assert op_counts(quantized)["MatMulInteger"] == 3  # all three linear layers
    assert_front_untouched(original, quantized, "int8-dynamic")
    expected, got = run(original, feeds)[1], run(quantized, feeds)[1]
    assert np.abs(got - expected).max() < 0.05  # measured 0.03 on these rows
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98  # measured 1.0


def test_static_int8_calibrates_on_rows_and_runs(wide) -> None:  # type: ignore[no-untyped-def]
    model, frame, original = wide
    feeds = onnx_feeds(model, frame)

    quantized = quantize_int8(original, calibration=onnx_feeds(model, frame.iloc[:200]))

    assert len(original) / len(quantized) >= 3.0  # measured 3.2x
    assert op_counts(quantized)["QuantizeLinear"] >= 3  # each linear layer's input, from calibrated ranges
    assert_front_untouched(original, quantized, "int8-static")
    expected, got = run(original, feeds)[1], run(quantized, feeds)[1]
    assert np.abs(got - expected).max() < 0.1  # measured 0.05
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98


@pytest.mark.parametrize("config", [
    {"preset": "balanced", "model.hidden": [16, 16], "training.epochs": 10},  # ensemble heads, number embeddings
    {**FAST, "model.architecture": "resnet", "model.hidden": [16, 16]},
    {**FAST, "training.bagging": 2},
], ids=["ensemble", "resnet", "bagging"])
def test_every_network_form_quantizes_and_loads(config: dict) -> None:
    frame = make_regression_frame()
    model = keel.fit(frame, target="price", config=config, quiet=True)
    original, feeds = to_onnx(model).SerializeToString(), onnx_feeds(model, frame)
    for calibration in (None, feeds):
        quantized = quantize_int8(original, calibration=calibration)
        expected, got = run(original, feeds)[0], run(quantized, feeds)[0]
        assert np.abs(got - expected).max() < 0.1 * frame["price"].std()  # measured at most 0.05 (ResNet, static)


def test_calibration_without_an_input_is_a_config_error(wide) -> None:  # type: ignore[no-untyped-def]
    model, frame, original = wide
    feeds = onnx_feeds(model, frame)
    del feeds["color"]
    with pytest.raises(ConfigError, match="lack the model input.*'color'"):
        quantize_int8(original, calibration=feeds)


def test_measure_and_compare_side_by_side(wide) -> None:  # type: ignore[no-untyped-def]
    model, frame, original = wide
    feeds = onnx_feeds(model, frame)
    one, batch = {k: v[:1] for k, v in feeds.items()}, {k: np.resize(v, 1000) for k, v in feeds.items()}
    metric = main_metric(model, frame)

    figures = [measure(data, one, batch, metric_fn=metric, repeats=20, batch_repeats=3)
               for data in (original, quantize_int8(original))]

    before, after = figures
    n_parameters = sum(p.numel() for p in model.network.parameters())
    # The file also stores the scaling state (a few numbers a column); int8 keeps the count.
    assert n_parameters <= before["parameters"] <= n_parameters + 20
    assert after["parameters"] == before["parameters"]
    assert before["size_bytes"] == len(original) and before["batch_rows"] == 1000
    assert before["metric"] == "accuracy" and before["metric_value"] == pytest.approx(model.evaluate(frame)["accuracy"])
    for figures_of_one in figures:
        assert 0 < figures_of_one["latency_p50_ms"] <= figures_of_one["latency_p99_ms"]
        assert figures_of_one["throughput_rows_per_s"] > 0
    comparison = compare(before, after)
    rows = {row["key"]: row for row in comparison["rows"]}
    assert rows["size_bytes"]["ratio"] == pytest.approx(after["size_bytes"] / before["size_bytes"])
    assert rows["size_bytes"]["ratio"] < 0.34
    assert rows["metric_value"]["measure"] == "accuracy"
    assert comparison["metric_change"] == after["metric_value"] - before["metric_value"]
    assert [row["key"] for row in comparison["rows"]][:3] == ["parameters", "nonzero_parameters", "size_bytes"]
    json.dumps(comparison)  # stored as JSON by the exporter


def test_main_metric_of_a_regressor_is_rmse_in_target_units() -> None:
    frame = make_regression_frame()
    model = keel.fit(frame, target="price", config=FAST, quiet=True)
    original = to_onnx(model).SerializeToString()
    session = ort.InferenceSession(original, providers=["CPUExecutionProvider"])

    name, value = main_metric(model, frame)(lambda feeds: session.run(None, feeds))

    assert name == "rmse" and value == pytest.approx(model.evaluate(frame)["rmse"], rel=1e-5)


def test_slow_calls_are_timed_fewer_times_within_the_budget(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A transformer's one-row call of 0.1 s made 1,000 latency repeats take 100 s a file (a user's trial).
    import time

    from keel.export import measure as measuring

    calls = []
    monkeypatch.setattr(measuring, "_TIMING_BUDGET", 0.05)
    timings = measuring._timings(lambda feeds: calls.append(time.sleep(0.005)), {}, 2, 1000)
    assert len(timings) == 20 and len(calls) == 22  # at least 20 timed, after the 2 untimed
    assert len(measuring._timings(lambda feeds: None, {}, 0, 300)) == 300  # fast calls: every repeat
