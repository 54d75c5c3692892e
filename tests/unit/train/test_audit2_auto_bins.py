"""Audit (second pass) of model.numeric_embedding_size auto on paths its own tests do not train: --resume from a
checkpoint of a 48-bin run, the sklearn estimators (clone, get_params, set_params), the ONNX export of a 48-bin
model and a streamed run of 10,000 rows."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.base

import keel
from keel.config import AUTO_BINS, AUTO_BINS_LARGE, AUTO_BINS_ROWS
from keel.sklearn import KeelClassifier
from tests.conftest import FAST, make_classification_frame
from tests.reliability.test_resume import _Interrupted, _StopAt

AUTO = {**FAST, "model.numeric_embedding": "piecewise_linear", "model.numeric_embedding_size": "auto",
        "training.epochs": 2, "training.batch_size": 512, "training.validation_split": 0.1,
        "training.test_split": 0.0}


def test_resume_from_a_48_bin_checkpoint(tmp_path) -> None:
    frame = make_classification_frame(AUTO_BINS_ROWS)
    config = {**AUTO, "training.epochs": 3, "training.checkpoint": True, "training.checkpoint_every": 1}
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(2),
                 importance=False)
    model = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    assert any(note.startswith("resumed from the checkpoint") for note in model.notes)
    assert model.network.spec.numeric_embedding_size == AUTO_BINS_LARGE
    assert model.network.numbers.left.shape[1] == AUTO_BINS_LARGE


def test_sklearn_auto_survives_clone_and_set_params() -> None:
    estimator = KeelClassifier(preset="fast", numeric_embedding="piecewise_linear", numeric_embedding_size="auto",
                               epochs=1, batch_size=512, quiet=True)
    assert estimator.get_params()["numeric_embedding_size"] == "auto"
    copy = sklearn.base.clone(estimator)
    assert copy.get_params()["numeric_embedding_size"] == "auto"
    copy.set_params(numeric_embedding_size=24)
    assert copy.get_params()["numeric_embedding_size"] == 24
    frame = make_classification_frame(AUTO_BINS_ROWS + 200)
    X, y = frame.drop(columns="label"), frame["label"]
    estimator.fit(X, y)
    model = estimator.model_
    rows = model.run["rows"]
    expected = AUTO_BINS_LARGE if rows["train"] + rows["validation"] >= AUTO_BINS_ROWS else AUTO_BINS
    assert model.network.spec.numeric_embedding_size == expected
    assert estimator.get_params()["numeric_embedding_size"] == "auto"  # fitting does not rewrite the param


def test_onnx_export_of_a_48_bin_model(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    frame = make_classification_frame(AUTO_BINS_ROWS)
    model = keel.fit(frame, target="label", config={**AUTO, "training.epochs": 1}, quiet=True, importance=False)
    assert model.network.spec.numeric_embedding_size == AUTO_BINS_LARGE
    model.save(tmp_path / "m")
    saved = keel.load(tmp_path / "m")
    saved.export()  # model.onnx beside the saved model, checked for parity by the exporter
    from keel.runtime import Predictor

    sample = make_classification_frame(300, seed=7).drop(columns="label")
    np.testing.assert_allclose(Predictor.load(tmp_path / "m").predict_proba(sample), saved.predict_proba(sample),
                               atol=1e-5)


def test_a_streamed_run_of_10000_rows_gets_48_bins(tmp_path) -> None:
    path = tmp_path / "big.csv"
    make_classification_frame(AUTO_BINS_ROWS + 500).to_csv(path, index=False)
    model = keel.fit(str(path), target="label", config={**AUTO, "training.epochs": 1, "data.memory_budget": "1MiB"},
                     quiet=True, importance=False)
    assert any("stream" in note.lower() for note in model.notes), model.notes
    rows = model.run["rows"]
    assert rows["train"] + rows["validation"] >= AUTO_BINS_ROWS
    assert model.network.spec.numeric_embedding_size == AUTO_BINS_LARGE
