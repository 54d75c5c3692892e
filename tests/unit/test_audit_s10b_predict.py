"""Audit of b39133d (predict --with-input keeps the input's columns) and 68102f2's infer_task on a streamed
run's distinct labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import keel
from keel.cli import _beside_input, app
from keel.config import Config
from keel.errors import DataError
from keel.train.streamed import Scan, _target_encoder
from tests.conftest import FAST, make_classification_frame


@pytest.fixture(scope="module")
def proba_named(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A binary model whose target is named 'proba_alpha' and one of whose classes is 'alpha'."""
    frame = make_classification_frame(200)
    frame["label"] = np.where(frame["label"] == "alpha", "alpha", "other")
    frame = frame.rename(columns={"label": "proba_alpha"})
    model = keel.fit(frame, target="proba_alpha", config=dict(FAST), quiet=True)
    directory = tmp_path_factory.mktemp("audit_s10b") / "model"
    model.save(directory)
    return model, directory, frame


def test_a_target_named_like_a_proba_column_keeps_its_labels(proba_named) -> None:
    """Expected: predict_frame(proba=True) holds the predicted labels ('alpha' / 'other') in the target's
    column and the probabilities in proba_alpha / proba_other, or the clash is refused. Now the target's
    column 'proba_alpha' is overwritten by the probability of class 'alpha' (floats): the labels are lost
    silently (predict --proba writes no label column at all)."""
    model, _, frame = proba_named
    predicted = model.predict_frame(frame.head(20), proba=True)
    assert set(predicted["proba_alpha"].astype(str)) <= {"alpha", "other"} or "proba_alpha" not in predicted
    assert len(predicted.columns) == 3  # labels + two probabilities


def test_predict_with_input_and_proba_on_a_proba_named_target(proba_named, tmp_path) -> None:
    """Expected (CLI, --with-input --proba on labelled rows): the input's true 'proba_alpha' kept, and a column
    of predicted labels beside it. Now 'proba_alpha_predicted', which the note calls 'the prediction', holds
    class alpha's probabilities; no predicted label is written anywhere."""
    _, directory, frame = proba_named
    data, output = tmp_path / "rows.csv", tmp_path / "out.csv"
    frame.head(30).to_csv(data, index=False)
    result = CliRunner().invoke(app, ["predict", str(directory), str(data), "-o", str(output), "--with-input",
                                      "--proba"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(output)
    assert written["proba_alpha"].tolist() == frame.head(30)["proba_alpha"].tolist()  # the truth, untouched
    label_columns = [c for c in written.columns[len(frame.columns):]
                     if set(written[c].astype(str)) <= {"alpha", "other"}]
    assert label_columns, f"no predicted-label column among {list(written.columns)}"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_with_input_renamed_columns_reach_jsonl_and_parquet(tmp_path, suffix) -> None:
    """Guard: the renamed columns written by the JSONL and Parquet writers, in order, the input's own
    'label' and 'label_predicted' kept (the prediction goes to 'label_predicted_predicted')."""
    frame = make_classification_frame(120)
    model = keel.fit(frame, target="label", config=dict(FAST), quiet=True)
    directory = tmp_path / "model"
    model.save(directory)
    rows = frame.head(25).assign(label_predicted="mine")
    data, output = tmp_path / "rows.csv", tmp_path / f"out{suffix}"
    rows.to_csv(data, index=False)
    result = CliRunner().invoke(app, ["predict", str(directory), str(data), "-o", str(output), "--with-input",
                                      "--proba"])
    assert result.exit_code == 0, result.output
    written = pd.read_json(output, lines=True) if suffix == ".jsonl" else pd.read_parquet(output)
    assert list(written.columns) == [*rows.columns, "label_predicted_predicted", "proba_alpha", "proba_beta",
                                     "proba_gamma"]
    assert written["label"].tolist() == rows["label"].tolist() and written["label_predicted"].eq("mine").all()
    assert written["label_predicted_predicted"].tolist() == model.predict(rows).tolist()


def test_beside_input_never_collides() -> None:
    """Guard: new names avoid the input's and the predictions' own names, and each other."""
    inputs = ["y", "proba_a", "proba_a_predicted", "y_predicted"]
    predicted = ["y", "proba_a", "proba_b"]
    renamed = _beside_input(inputs, predicted)
    assert renamed == {"y": "y_predicted_predicted", "proba_a": "proba_a_predicted_predicted"}
    final = inputs + [renamed.get(name, name) for name in predicted]
    assert len(final) == len(set(final))


@pytest.mark.parametrize("task", ["auto", "regression"])
def test_a_streamed_constant_target_says_constant_not_one_row(task) -> None:
    """Expected: a streamed run (scan.labels: the distinct labels of every labelled row) whose 1,000 labelled
    rows all hold 100.0 is refused as a constant target ('holds one value ... on every labelled row'), as an
    in-memory run says. Now _target_encoder passes infer_task the one distinct label as a one-row series, so
    the message says 'has one labelled row (one sample)': false, and it points the user at the wrong fix."""
    scan = Scan("big.csv", ["x", "y"], n_rows=1000, labels={"100": 100.0})
    with pytest.raises(DataError) as raised:
        _target_encoder(scan, Config(target="y", task=task))
    assert "one labelled row" not in str(raised.value), str(raised.value)
    assert "on every labelled row" in str(raised.value)


def test_a_streamed_regression_with_two_distinct_labels_is_accepted() -> None:
    """Guard: distinct labels [1.5, 2.5] of a streamed regression: accepted (two values are enough)."""
    scan = Scan("big.csv", ["x", "y"], n_rows=1000, labels={"1.5": 1.5, "2.5": 2.5})
    assert _target_encoder(scan, Config(target="y", task="regression")).task == "regression"
