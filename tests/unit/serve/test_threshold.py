"""The server's answers (/predict and the V2 protocol) label rows by the model's decision threshold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import keel
from keel.serve import ServeSettings, create_app
from tests.unit.export.test_threshold import between, threshold_model
from tests.unit.serve.test_app import call


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, pd.DataFrame, Path]:
    directory = tmp_path_factory.mktemp("serve-threshold") / "model"
    model, frame = threshold_model(directory)
    return model, frame, directory


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"x": float(x), "group": group} for x, group in zip(frame["x"], frame["group"])]


def test_predict_and_v2_answer_the_models_labels_row_by_row(trained) -> None:
    model, frame, directory = trained
    frame = frame.iloc[:100]
    middle = between(model, frame)
    assert middle.sum() >= 3 and (~middle).sum() >= 3
    expected = model.predict(frame).tolist()
    app = create_app(ServeSettings(str(directory), max_batch=100))
    answer = call(app, "POST", "/predict", json=records(frame)).json()
    assert answer["predictions"] == expected
    assert all(p[0] > p[1] for p, inside in zip(answer["probabilities"], middle) if inside)  # argmax says "no"
    body = {"inputs": [{"name": "x", "shape": [len(frame)], "datatype": "FP64", "data": frame["x"].tolist()},
                       {"name": "group", "shape": [len(frame)], "datatype": "BYTES", "data": frame["group"].tolist()}]}
    v2 = call(app, "POST", f"/v2/models/{directory.name}/infer", json=body).json()
    outputs = {output["name"]: output for output in v2["outputs"]}
    assert outputs["label"]["data"] == expected
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(
        outputs["probabilities"]["data"], [v for row in answer["probabilities"] for v in row]))
