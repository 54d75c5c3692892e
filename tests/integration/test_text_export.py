"""A model with a TF-IDF text column exported to ONNX: the graph counts the terms keel.runtime feeds it and
predicts what keel predicts; the runtime and the server take the texts as strings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

import keel
from keel.errors import ExportError
from keel.export.tflite import to_tflite
from keel.runtime import Predictor
from keel.serve import ServeSettings, create_app
from tests.integration.test_dates_export import call
from tests.unit.data.test_text import reviews


def table(n_rows: int = 240, seed: int = 0) -> pd.DataFrame:
    frame = reviews(n_rows, seed).assign(age=np.arange(n_rows) % 40, city=np.resize(["oslo", "rome", "paris"], n_rows))
    frame.loc[3, "review"], frame.loc[4, "review"] = "", None
    return frame


def check_rows() -> pd.DataFrame:
    rows = table(30, seed=5)
    rows.loc[0, "review"] = "words never seen in training at all"
    rows.loc[1, "review"] = "GREAT!!! product, works; well?"  # case and punctuation
    rows.loc[2, "review"], rows.loc[5, "review"] = None, "   "
    rows.loc[6, "review"] = "great " * 300  # a long text
    return rows


@pytest.fixture(scope="module", params=["fast", "balanced"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    config = {"preset": request.param, "training.epochs": 3, "text.dim": 8, "model.hidden": [16],
              "model.ensemble": 1 if request.param == "fast" else 2}
    model = keel.fit(table(), target="label", config=config, quiet=True)
    directory = tmp_path_factory.mktemp("text") / request.param
    model.save(directory)
    report = model.export()
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-5  # synthetic texts
    return model, directory


def test_the_graph_takes_term_positions_and_the_metadata_holds_the_vocabulary(exported) -> None:
    model, directory = exported
    graph = onnx.load(str(directory / "model.onnx"))
    review = next(item for item in graph.graph.input if item.name == "review")
    assert review.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in review.type.tensor_type.shape.dim] == ["batch", "text0 terms"]
    metadata = {prop.key: prop.value for prop in graph.metadata_props}
    assert metadata["keel.export_format"] == "4"
    assert json.loads(metadata["keel.text"])["review"]["vocabulary"] == model.preprocessor.transforms[0].vocabulary


def test_the_runtime_predicts_what_keel_predicts_from_strings(exported) -> None:
    model, directory = exported
    predictor = Predictor.load(directory)
    rows = check_rows()
    np.testing.assert_allclose(predictor.predict_proba(rows), model.predict_proba(rows), rtol=0, atol=1e-6)
    records = rows.drop(columns="label").to_dict(orient="records")
    np.testing.assert_allclose(predictor.predict_proba(records), model.predict_proba(rows), rtol=0, atol=1e-6)
    one = records[1]
    np.testing.assert_allclose(predictor.predict_proba(one), model.predict_proba(rows.iloc[[1]]), rtol=0, atol=1e-6)


def test_the_server_takes_texts_as_strings(exported) -> None:
    model, directory = exported
    app = create_app(ServeSettings(str(directory), max_batch=10))
    rows = check_rows().drop(columns="label").head(4).replace({np.nan: None}).to_dict(orient="records")
    answer = call(app, "POST", "/predict", json=rows)
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.json()["probabilities"], model.predict_proba(pd.DataFrame(rows)), atol=1e-6)
    described = call(app, "GET", "/metadata").json()["features"]
    assert {f["name"]: f["type"] for f in described}["review"] == "text"
    v2 = call(app, "POST", f"/v2/models/{directory.name}/infer", json={"inputs": [
        {"name": "review", "shape": [1], "datatype": "BYTES", "data": [rows[1]["review"]]},
        {"name": "noise", "shape": [1], "datatype": "FP64", "data": [rows[1]["noise"]]},
        {"name": "age", "shape": [1], "datatype": "FP64", "data": [rows[1]["age"]]},
        {"name": "city", "shape": [1], "datatype": "BYTES", "data": [rows[1]["city"]]}]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][1]["data"] == pytest.approx(answer.json()["probabilities"][1], abs=1e-7)
    # A value of the wrong kind for the text feature is an error of type text (it said "category": a user's trial).
    wrong = call(app, "POST", "/predict", json=[{**rows[0], "review": ["two", "texts"]}])
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["type"] == "text"
    assert wrong.json()["errors"][0]["field"] == "review"


def test_tflite_refuses_text_by_name_and_all_minilm_exports_with_its_encoder(exported, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"TFLite export does not take the text column\(s\) \[.review.\] \(the TF-IDF"):
        to_tflite(exported[0])
    model = keel.fit(table(120), target="label", quiet=True, config={
        "preset": "fast", "training.epochs": 1, "text.encoder": "pretrained", "text.dim": 4,
        "text.cache_dir": str(tmp_path / "cache")})
    report = model.export(output=tmp_path / "m.onnx", data=table(40, seed=3))  # the default all-MiniLM-L6-v2
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-5
    # The reason is the encoder's (it said "TF-IDF counting" for every text column: a user's trial).
    with pytest.raises(ExportError, match=r"text column\(s\) \['review'\] \(a pretrained or bag encoder reads"):
        to_tflite(model)


def test_tflite_names_every_kind_of_column_it_refuses_in_one_error(tmp_path: Path) -> None:
    # It named the dates alone; the user removed them and met the text column on the next run.
    frame = table(120).assign(day=pd.date_range("2020-01-01", periods=120, freq="D").astype(str))
    model = keel.fit(frame, target="label", quiet=True, importance=False,
                     config={"preset": "fast", "training.epochs": 1})
    with pytest.raises(ExportError, match=r"does not take the date column\(s\) \['day'\].*; the text column\(s\) "
                                          r"\['review'\].*train without the date and text columns"):
        to_tflite(model)


def test_int8_and_pruned_exports_of_a_text_model_are_measured(exported, tmp_path: Path) -> None:
    model, _ = exported
    quantized = model.export(quantize="int8", data=table(90, seed=7), output=tmp_path / "m.onnx").to_dict()
    assert quantized["parity"]["ok"] and quantized["quantized_parity"]["rows"] == 90
    assert quantized["compression"]["compressed"]["batch_rows"] == 1000  # the text feed repeated row by row
    pruned = model.export(prune=0.3, data=table(90, seed=7), output=tmp_path / "p.onnx").to_dict()
    assert pruned["parity"]["ok"] and pruned["pruning"]["amount"] == 0.3
