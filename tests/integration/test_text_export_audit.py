"""Auditor's regression tests for the ONNX export of TF-IDF text columns (export format 4) and the text layout
of the network (plain_width). Each test names the finding it holds; all but the last failed when written."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

import keel
from keel.errors import ArtifactError
from keel.runtime import Predictor
from keel.serve import ServeSettings, create_app
from tests.integration.test_dates_export import call
from tests.unit.data.test_text import reviews

CONFIG = {"preset": "balanced", "training.epochs": 2, "model.hidden": [16], "model.ensemble": 1, "text.dim": 4}


def two_texts(n_rows: int = 160, seed: int = 0) -> pd.DataFrame:
    """Two text columns (a title before the numbers, a review after them) of different lengths."""
    frame = reviews(n_rows, seed)
    rng = np.random.default_rng(seed)
    titles = [" ".join(rng.choice(["red", "blue", "green", "big", "small", "box"], rng.integers(1, 4)))
              for _ in range(n_rows)]
    frame.insert(0, "title", titles)
    return frame.assign(age=np.arange(n_rows) % 30)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    frame = reviews(160).assign(age=np.arange(160) % 30)
    model = keel.fit(frame, target="label", config=CONFIG, quiet=True)
    directory = tmp_path_factory.mktemp("audit") / "m"
    model.save(directory)
    model.export()
    return model, directory


def test_two_text_columns_export_and_predict_like_keel(tmp_path: Path) -> None:
    """Finding 1: both text inputs share the dim_param "terms", so ONNX Runtime fails as soon as the two
    columns' padded widths differ (which the synthetic parity rows always make them)."""
    features = [{"name": name, "type": "text" if name in ("title", "review") else "auto"}
                for name in ("title", "review", "noise", "age")]
    model = keel.fit(two_texts(), target="label", config={**CONFIG, "input_features": features}, quiet=True)
    model.save(tmp_path / "m")
    report = model.export()
    assert report.parity["ok"]
    graph = onnx.load(str(tmp_path / "m" / "model.onnx"))
    terms = {item.name: item.type.tensor_type.shape.dim[1].dim_param for item in graph.graph.input
             if item.name in ("title", "review")}
    assert terms["title"] != terms["review"]  # each text column pads to its own width
    rows = two_texts(20, seed=3)
    rows.loc[0, "review"] = "great " * 50  # a long review beside short titles
    np.testing.assert_allclose(Predictor.load(tmp_path / "m").predict_proba(rows), model.predict_proba(rows),
                               rtol=0, atol=1e-6)


def test_a_text_model_saved_before_plain_width_is_not_called_corrupt(text_model, tmp_path: Path) -> None:
    """Finding 2: a text model saved before 2ddfacf (its network spec has no plain_width: text components
    were embedded, in schema order) is refused as "corrupt"; it is a layout this keel no longer runs."""
    _, directory = text_model
    shutil.copytree(directory, tmp_path / "m")
    document = json.loads((tmp_path / "m" / "keel.json").read_text())
    del document["network"]["plain_width"]
    (tmp_path / "m" / "keel.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError) as caught:
        keel.load(tmp_path / "m")
    message = str(caught.value)
    assert "corrupt" not in message and "retrain" in message and "text" in message


def test_the_server_counts_no_text_as_unseen_and_documents_text_as_text(text_model) -> None:
    """Finding 3: every non-empty text is counted in the answer's 'unseen' (the known values of a text
    feature are the empty set), and the OpenAPI schema calls it 'one of the 0 values the model knows'."""
    _, directory = text_model
    app = create_app(ServeSettings(str(directory), max_batch=10))
    answer = call(app, "POST", "/predict", json=[{"review": "great product works well", "noise": 0.1, "age": 3}])
    assert answer.status_code == 200
    assert "review" not in answer.json().get("unseen", {})
    schema = call(app, "GET", "/openapi.json").json()["components"]["schemas"]
    described = json.dumps(schema)
    assert "one of the 0 values" not in described


def test_the_metadata_alone_says_how_to_pad_and_flag_an_empty_text(text_model) -> None:
    """Finding 4: keel.text gives the vocabulary and the word rule, but not the -1 padding nor the empty-text
    id len(vocabulary); a client that reads only the metadata feeds an empty text as no terms, which the
    graph reads as a non-empty text."""
    _, directory = text_model
    graph = onnx.load(str(directory / "model.onnx"))
    metadata = {prop.key: prop.value for prop in graph.metadata_props}
    described = json.dumps(json.loads(metadata["keel.text"])["review"]) + metadata["keel.missing"]
    assert "-1" in described and "empty" in described


def test_one_long_text_does_not_pad_the_whole_batch(text_model) -> None:
    """Finding 5: the runtime pads every row of a batch to the longest text's term count, so one 10,000-word
    text among 600 rows makes a 600 x 15,000 int64 feed (72 MB); in keel serve a 16 MB body can ask for
    hundreds of GB."""
    model, directory = text_model
    predictor = Predictor.load(directory)
    rows = reviews(600, seed=2).assign(age=1)
    rows.loc[0, "review"] = "great product " * 5_000
    tracemalloc.start()
    try:
        probabilities = predictor.predict_proba(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(probabilities, model.predict_proba(rows), rtol=0, atol=1e-6)
    assert peak < 20e6, f"peak {peak / 1e6:.0f} MB"


def test_an_old_model_without_text_loads_and_exports_the_same_graph(tmp_path: Path) -> None:
    """No finding: a model without text columns writes no plain_width (older keels read it) and exports
    the same graph after a save / load (passed when written)."""
    model = keel.fit("examples/penguins.csv", target="species", config={**CONFIG, "training.epochs": 1}, quiet=True)
    model.save(tmp_path / "m")
    assert "plain_width" not in json.loads((tmp_path / "m" / "keel.json").read_text())["network"]
    first = model.export(output=tmp_path / "a.onnx")
    second = keel.load(tmp_path / "m").export(output=tmp_path / "b.onnx")
    assert first.parity["ok"] and second.parity["ok"]
    a, b = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "b.onnx"))
    assert [node.op_type for node in a.graph.node] == [node.op_type for node in b.graph.node]
    assert all(np.array_equal(onnx.numpy_helper.to_array(x), onnx.numpy_helper.to_array(y))
               for x, y in zip(a.graph.initializer, b.graph.initializer))
