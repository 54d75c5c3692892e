"""Audit s12: a model whose threshold was chosen for the FIRST class's F1 (labels 'F' / 'ok', 'F' rare) labels rows
alike in Model.predict, a loaded copy, the ONNX export through keel.runtime, and both of the server's protocols; its
report names the class; a model saved before threshold_class existed still loads and reports."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.runtime import Predictor
from keel.serve import ServeSettings, create_app
from tests.unit.serve.test_app import call

CONFIG = {"preset": "fast", "model.hidden": [16], "training.epochs": 6, "training.threshold": "auto",
          "training.validation_split": 0.3, "training.lr": 0.01}


def fraud_frame(n_rows: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n_rows)
    group = rng.choice(["a", "b", "c"], n_rows)
    logit = 1.5 * x + np.where(group == "a", 0.8, 0.0) - 2.6
    label = np.where(rng.random(n_rows) < 1 / (1 + np.exp(-logit)), "F", "ok")  # F: about 12 %
    return pd.DataFrame({"x": x, "group": group, "label": label})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, pd.DataFrame, Path]:
    frame = fraud_frame()
    directory = tmp_path_factory.mktemp("fraud") / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keel.fit(frame, target="label", config=CONFIG, quiet=True, output=directory)
        model.export()
    return model, frame, directory


def test_the_threshold_was_chosen_for_the_first_class(trained) -> None:  # type: ignore[no-untyped-def]
    model, frame, _ = trained
    assert model.classes == ["F", "ok"]
    assert model.calibration["threshold_class"] == 0
    note = next(note for note in model.notes if note.startswith("decision threshold"))
    assert "on the probability of 'ok'" in note and "f1 of 'F', the rarer class" in note
    # The rule: 'ok' where P(ok) >= threshold.
    proba = model.predict_proba(frame)
    expected = np.where(proba[:, 1] >= model.threshold, "ok", "F")
    assert model.predict(frame).tolist() == expected.tolist()


def test_every_path_labels_rows_alike(trained) -> None:  # type: ignore[no-untyped-def]
    model, frame, directory = trained
    rows = frame.drop(columns="label").iloc[:200]
    expected = model.predict(rows).tolist()
    assert "F" in expected and "ok" in expected
    assert keel.load(directory).predict(rows).tolist() == expected
    predictor = Predictor.load(directory)
    assert predictor.threshold == pytest.approx(model.threshold)
    assert predictor.predict(rows).tolist() == expected
    app = create_app(ServeSettings(str(directory), max_batch=500))
    records = [{"x": float(x), "group": g} for x, g in zip(rows["x"], rows["group"])]
    answer = call(app, "POST", "/predict", json=records)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected
    body = {"inputs": [{"name": "x", "shape": [len(rows)], "datatype": "FP64", "data": rows["x"].tolist()},
                       {"name": "group", "shape": [len(rows)], "datatype": "BYTES", "data": rows["group"].tolist()}]}
    v2 = call(app, "POST", f"/v2/models/{directory.name}/infer", json=body)
    assert v2.status_code == 200, v2.text
    assert {o["name"]: o for o in v2.json()["outputs"]}["label"]["data"] == expected


def test_the_report_names_the_rarer_class(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, frame, directory = trained
    frame.to_csv(tmp_path / "data.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "keel.cli", "report", str(directory), "--data",
                             str(tmp_path / "data.csv"), "--output", str(tmp_path / "report.html")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "report.html").read_text()
    assert "the F1 of F, the rarer class" in html


def test_a_model_saved_before_threshold_class_loads_and_reports(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    model, frame, directory = trained
    old = tmp_path / "old"
    shutil.copytree(directory, old)
    manifest = json.loads((old / "keel.json").read_text())
    del manifest["calibration"]["threshold_class"]
    (old / "keel.json").write_text(json.dumps(manifest))
    loaded = keel.load(old)
    assert loaded.predict(frame).tolist() == model.predict(frame).tolist()
    frame.to_csv(tmp_path / "data.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "keel.cli", "report", str(old), "--data", str(tmp_path / "data.csv"),
                             "--output", str(tmp_path / "report.html")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "report.html").read_text()
    assert "chosen on the validation rows for f1: " in html and "the F1 of F, the rarer class" not in html
    info = subprocess.run([sys.executable, "-m", "keel.cli", "info", str(old)], capture_output=True, text=True,
                          timeout=300)
    assert info.returncode == 0, info.stderr
