"""The ONNX export: the graph holds all preprocessing and every network form, and predicts what keel predicts."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

import keel
from keel.errors import ArtifactError, ConfigError, DataError, ExportError
from keel.export.onnx import to_onnx
from keel.export.parity import onnx_feeds, synthetic_rows
from tests.conftest import FAST

TINY = {**FAST, "training.epochs": 2}


def mixed_frame(n_rows: int = 160, seed: int = 0) -> pd.DataFrame:
    """Numbers (one with a huge offset, one with gaps), a binary and a category column, three targets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n_rows)
    frame = pd.DataFrame({
        "x": x,
        "stamp": 1.7e9 + rng.normal(0, 3e6, n_rows),  # a timestamp: float32 inputs would lose its digits
        "gappy": np.where(rng.random(n_rows) < 0.2, np.nan, rng.exponential(5, n_rows)),
        "member": rng.choice(["yes", "no"], n_rows),
        "city": rng.choice(["Oslo", "Lima", "Pune", "Kobe", "rare one"], n_rows, p=[0.3, 0.3, 0.2, 0.19, 0.01]),
        "grade": rng.choice([1, 2, 3], n_rows),  # integer-valued, declared a category below
    })
    frame["multi"] = np.where(x > 0.5, "high", np.where(x < -0.5, "low", "mid"))
    frame["flag"] = (x + (frame["member"] == "yes") > 0.5).astype(int)
    frame["amount"] = 3 * x + frame["gappy"].fillna(0) + rng.normal(0, 0.1, n_rows)
    return frame


TARGETS = {"binary": "flag", "multiclass": "multi", "regression": "amount"}
OTHER_TARGETS = {name: [t for t in TARGETS.values() if t != target] for name, target in TARGETS.items()}
FEATURES = ["x", "stamp", "gappy", "member", "city"]
CATEGORY_GRADE = {"input_features": [{"name": name} for name in FEATURES] + [{"name": "grade", "type": "category"}],
                  "preprocessing.rare_category_min_count": 3}


def train(task: str, config: dict, frame: pd.DataFrame | None = None) -> keel.model.Model:
    frame = mixed_frame() if frame is None else frame
    return keel.fit(frame.drop(columns=OTHER_TARGETS[task]), target=TARGETS[task],
                    config={**CATEGORY_GRADE, **config}, quiet=True)


def onnx_outputs(model, frame: pd.DataFrame, proto: onnx.ModelProto | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession((proto or to_onnx(model)).SerializeToString())
    return session.run(None, onnx_feeds(model, frame))


def assert_matches_keel(model, frame: pd.DataFrame) -> None:
    outputs = onnx_outputs(model, frame)
    if model.task == "regression":
        own = model.predict(frame)
        assert outputs[0].dtype == np.float64
        np.testing.assert_allclose(outputs[0], own, rtol=1e-5, atol=1e-5 * model.target_encoder.std)
    else:
        np.testing.assert_allclose(outputs[1], model.predict_proba(frame), atol=1e-5)
        assert list(outputs[0]) == list(model.predict(frame))


@pytest.mark.parametrize("preset", ["fast", "balanced", "best"])
@pytest.mark.parametrize("task", list(TARGETS))
def test_every_preset_and_task_predicts_as_keel_on_data_and_synthetic_rows(preset: str, task: str) -> None:
    model = train(task, {**TINY, "preset": preset, "model.hidden": [8], "training.bagging": 2 if preset == "best" else 1})
    with pytest.warns(keel.errors.KeelWarning):  # synthetic rows hold unseen categories
        assert_matches_keel(model, synthetic_rows(model))
    assert_matches_keel(model, mixed_frame(seed=1))


@pytest.mark.parametrize("settings", [
    {"preprocessing.normalize": "zscore", "preprocessing.missing_indicator": True},
    {"preprocessing.normalize": "minmax", "preprocessing.missing": "mean"},
    {"preprocessing.normalize": "robust", "preprocessing.missing": "constant", "preprocessing.fill_value": -1.0},
    {"preprocessing.normalize": "quantile", "preprocessing.missing_indicator": True},
    {"preprocessing.normalize": "none"},
    {"model.architecture": "resnet", "model.norm": "batch", "model.hidden": [8, 8]},
    {"model.architecture": "resnet", "model.norm": "layer", "model.hidden": [8, 6]},
    {"model.numeric_embedding": "periodic", "model.ensemble": 3},
    {"model.numeric_embedding": "piecewise_linear", "preprocessing.normalize": "quantile"},
    {"preprocessing.categorical_encoding": "onehot"},
    {"preprocessing.categorical_encoding": "auto", "model.ensemble": 4},
    *({"model.activation": name} for name in ["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu"]),
])
def test_each_preprocessing_and_network_setting_exports_exactly(settings: dict) -> None:
    for task in ("multiclass", "regression"):
        model = train(task, {**TINY, **settings})
        with pytest.warns(keel.errors.KeelWarning):
            assert_matches_keel(model, synthetic_rows(model, seed=3))


def test_inputs_are_one_per_raw_column_with_a_dynamic_batch() -> None:
    model = train("multiclass", TINY)
    proto = to_onnx(model)
    kinds = {i.name: (i.type.tensor_type.elem_type, i.type.tensor_type.shape.dim[0].dim_param) for i in proto.graph.input}
    assert kinds == {
        "x": (onnx.TensorProto.DOUBLE, "batch"), "stamp": (onnx.TensorProto.DOUBLE, "batch"),
        "gappy": (onnx.TensorProto.DOUBLE, "batch"), "member": (onnx.TensorProto.STRING, "batch"),
        "city": (onnx.TensorProto.STRING, "batch"), "grade": (onnx.TensorProto.STRING, "batch"),
    }
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]
    assert {o.domain: o.version for o in proto.opset_import} == {"": 17, "ai.onnx.ml": 2}
    assert proto.ir_version == 8
    frame = mixed_frame(n_rows=1000, seed=2)
    for rows in (frame.iloc[:1], frame):  # traced on 3 rows, runs on any number
        assert_matches_keel(model, rows)


def test_metadata_describes_the_model() -> None:
    model = train("multiclass", TINY)
    props = {p.key: p.value for p in to_onnx(model).metadata_props}
    assert json.loads(props["keel.classes"]) == ["high", "low", "mid"]
    assert [f["name"] for f in json.loads(props["keel.features"])] == model.feature_names
    assert json.loads(props["keel.metrics"])["accuracy"] == model.metrics["accuracy"]
    assert json.loads(props["keel.schema"])["target"] == "multi"
    assert props["keel.version"] == keel.__version__ and props["keel.task"] == "multiclass"
    assert sorted(json.loads(props["keel.vocabularies"])["grade"]) == ["1", "2", "3"]  # integers, spelled


def test_missing_and_unseen_values_take_keel_buckets() -> None:
    model = train("binary", TINY)
    frame = mixed_frame(n_rows=6, seed=4)
    frame.loc[0, "city"] = None
    frame.loc[1, "city"] = "Atlantis"
    frame.loc[2, "member"] = None
    frame.loc[3, "member"] = "maybe"
    frame.loc[4, ["x", "stamp", "gappy"]] = np.nan
    with pytest.warns(keel.errors.KeelWarning):
        assert_matches_keel(model, frame)


def test_integer_labels_come_back_as_int64_and_bool_labels_as_strings() -> None:
    frame = mixed_frame()
    model = train("binary", TINY, frame)
    label, _ = onnx_outputs(model, frame)
    assert label.dtype == np.int64 and set(label) <= {0, 1}
    frame["flag"] = frame["flag"].astype(bool)
    model = train("binary", TINY, frame)
    label, _ = onnx_outputs(model, frame)
    assert set(label) <= {"True", "False"} and model.classes == [False, True]


def test_an_output_name_taken_by_a_column_gets_an_underscore() -> None:
    frame = mixed_frame().rename(columns={"x": "label"})
    model = keel.fit(frame.drop(columns=["flag", "amount"]), target="multi", config=TINY, quiet=True)
    proto = to_onnx(model)
    assert [o.name for o in proto.graph.output] == ["label_", "probabilities"]
    assert json.loads({p.key: p.value for p in proto.metadata_props}["keel.outputs"]) == ["label_", "probabilities"]
    assert_matches_keel(model, frame)


def test_export_attaches_the_file_with_its_checksum_and_stores_parity(tmp_path) -> None:
    model = train("multiclass", TINY)
    model.save(tmp_path / "m")
    report = model.export(data=mixed_frame(seed=5))
    assert report.parity["ok"] and report.parity["rows"] == 160 and report.parity["source"] == "data"
    assert report.files == [tmp_path / "m" / "model.onnx"]
    loaded = keel.load(tmp_path / "m")
    assert "model.onnx" in loaded.summary()["files"]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m" / "model.onnx")).metadata_props}
    assert json.loads(props["keel.parity"])["max_difference"] == report.parity["max_difference"]
    stored = json.loads((tmp_path / "m" / "reports" / "model.onnx.json").read_text())
    assert stored["parity"] == report.parity
    # The checksum guards the file: a changed byte makes loading fail.
    onnx_file = tmp_path / "m" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ArtifactError, match="model.onnx"):
        keel.load(tmp_path / "m")


def test_output_writes_only_that_file(tmp_path) -> None:
    model = train("regression", TINY)
    report = model.export(output=tmp_path / "out" / "price.onnx")
    assert report.files == [tmp_path / "out" / "price.onnx"] and report.parity["source"] == "synthetic"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "price.onnx"]
    session = ort.InferenceSession(str(tmp_path / "out" / "price.onnx"))
    assert [o.name for o in session.get_outputs()] == ["value"]


def test_an_unsaved_model_without_output_is_told_to_save(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="save it first"):
        train("binary", TINY).export()


@pytest.mark.parametrize("options, match", [
    ({"format": "pmml"}, "unknown export format 'pmml'"),
    ({"quantize": "int4"}, "unknown quantization 'int4'"),
    ({"format": "tflite", "quantize": "int8"}, "needs --format onnx"),
    ({"prune": 0.0}, "strictly between 0 and 1; got 0.0"),
    ({"prune": 1}, "strictly between 0 and 1; got 1"),
    ({"prune": "half"}, "got 'half'"),
    ({"prune": "auto"}, "--data"),
    ({"quantize": "int8", "static": True}, "--data"),
    ({"prune_method": "random"}, "prune method must be one of structured, unstructured; got .random."),
])
def test_bad_options_are_config_errors_and_write_nothing(tmp_path, options: dict, match: str) -> None:
    model = train("binary", TINY)
    model.save(tmp_path / "m")
    before = sorted(p.name for p in (tmp_path / "m").rglob("*"))
    with pytest.raises(ConfigError, match=match):
        model.export(**options)
    assert sorted(p.name for p in (tmp_path / "m").rglob("*")) == before


def test_data_missing_a_column_is_named(tmp_path) -> None:
    model = train("binary", TINY)
    model.save(tmp_path / "m")
    with pytest.raises(DataError, match="'city'"):
        model.export(data=mixed_frame().drop(columns="city"))


def test_a_graph_that_disagrees_with_keel_fails_the_export_and_writes_nothing(tmp_path, monkeypatch) -> None:
    model = train("multiclass", TINY)
    model.save(tmp_path / "m")
    def skewed(model):  # the graph of a model whose first layer was nudged after training
        import copy

        other = copy.deepcopy(model)
        first = next(p for n, p in other.network.named_parameters() if n.endswith("weight") and p.ndim == 2)
        first.data += 0.05
        return to_onnx(other)

    monkeypatch.setattr("keel.export.onnx.to_onnx", skewed)  # export() imports it when it runs
    with pytest.raises(ExportError, match="does not predict what keel predicts"):
        model.export()
    assert not (tmp_path / "m" / "model.onnx").exists()
