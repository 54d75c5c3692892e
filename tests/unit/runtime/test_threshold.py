"""keel.runtime applies a binary model's decision threshold, read from the ONNX file's metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

import keel
from keel.errors import ArtifactError
from keel.runtime import Predictor
from tests.unit.export.test_threshold import THRESHOLD, between, threshold_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, pd.DataFrame, Path]:
    directory = tmp_path_factory.mktemp("runtime-threshold") / "model"
    model, frame = threshold_model(directory)
    return model, frame, directory


def test_the_predictor_labels_rows_as_the_model_does(trained) -> None:
    model, frame, directory = trained
    predictor = Predictor.load(directory)
    assert predictor.threshold == THRESHOLD
    middle = between(model, frame)
    assert middle.sum() >= 10 and (~middle).sum() >= 10
    labels = predictor.predict(frame)
    assert labels.tolist() == model.predict(frame).tolist()
    assert set(labels[middle]) == {"yes"}
    probabilities = predictor.predict_proba(frame)
    assert (probabilities[middle].argmax(1) == 0).all()  # the most probable class would say "no"
    assert predictor.class_indices(probabilities).tolist() == (labels == "yes").astype(int).tolist()
    one = predictor.predict(frame.iloc[int(np.flatnonzero(middle)[0])].to_dict())
    assert one.tolist() == ["yes"]


def test_a_threshold_that_is_no_probability_is_refused(trained, tmp_path: Path) -> None:
    _, _, directory = trained
    proto = onnx.load(str(directory / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "keel.threshold":
            prop.value = "1.5"
    path = tmp_path / "edited.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ArtifactError, match=r"decision threshold '1.5'.*strictly between 0 and 1"):
        Predictor.load(path)
