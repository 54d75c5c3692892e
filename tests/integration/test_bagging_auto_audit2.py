"""Audit, round 2, of commits 3f78001 (bagging auto after the schema; permutation importance on a --test file's
rows for a bagged run) and b08104e (int8 weights in 7 bits).

The first group FAILS at b08104e: each reproduces a finding and states the behaviour a fix should give. The
second group passes: it pins what was checked and found right (the test file's targets and weights are
encoded as the training rows' are), so that a later change cannot move it silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import DataError
from tests.conftest import FAST, make_classification_frame, make_regression_frame
from tests.integration.test_bagging_auto_audit import _wide
from tests.unit.train.test_auto_bagging import _networks

BAGGED = {**FAST, "training.bagging": 3}


# ---- findings: these fail at b08104e ------------------------------------------------------------------------


def test_a_bagged_run_whose_test_file_has_no_labelled_row_does_not_crash_after_training() -> None:
    """A test file whose target column is empty (a Kaggle-style test.csv): _checked_test_frame drops every row
    and goes on; the new held_out() branch then hands permutation importance a Batch of 0 rows, and
    keel.evaluate.importance raises a bare ValueError ("cannot reshape array of size 0") after every network
    has trained. Before 3f78001 the bagged run returned None there and finished. Either refuse the file before
    training (as labelled_rows does for `keel evaluate` / `keel report --data`) or skip importance on 0 rows."""
    frame, test = make_classification_frame(200), make_classification_frame(60, seed=1)
    test["label"] = None
    for config in (BAGGED, FAST):  # refused before training, bagged or not, with the column named
        with pytest.raises(DataError, match="the test data has no row with a 'label'") as caught:
            keel.fit(frame, target="label", config=config, test=test, quiet=True)
        assert caught.value.column == "label"


def test_a_streamed_bagged_run_with_a_test_file_measures_permutation_importance(tmp_path: Path) -> None:
    """3f78001 fixed "a bagged run with a --test file has silently no importance" in memory only:
    keel.train.streamed.held_out() (and keel.train.sharded's) still return None when a --test file is given
    and the run bags (training.bagging: 3, which streaming honours; only auto is forced to 1). The README's
    Report section promises importance "with bagging, on the test rows (the test split, or the --test file's
    rows)". rows_predicted_after_training meanwhile reserves time for that importance (record["test_frame"] is
    None for a streamed run), so a time limit also loses time to work that never happens."""
    path, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _wide(5000, 20).to_csv(path, index=False)
    _wide(300, 20, seed=1).to_csv(test, index=False)
    config = {**BAGGED, "data.memory_budget": "1MiB", "training.batch_size": 256, "training.epochs": 1}
    model = keel.fit(path, target="y", test=test, config=config, quiet=True)
    if not model.notes[0].startswith("streaming "):
        pytest.skip(f"the file was read into memory: {model.notes[0][:120]}")
    assert _networks(model) == 3
    assert model.importance is not None, "streamed, bagged, with --test: no permutation importance, silently"


def test_a_regression_test_file_with_blank_targets_drops_them_as_the_training_data_does() -> None:
    """Pre-existing, on the path 3f78001 now also takes: _labelled drops training rows whose target is blank
    (missing_values: NaN, None, '' and whitespace) but _checked_test_frame keeps test rows unless notna() says
    they are missing. A regression test DataFrame with '' targets passes the checks, every network trains, then
    TargetEncoder.encode raises in test_predictions ("row 1 has the value ''... Fix or blank out the values":
    the value is blank). Use missing_values in _checked_test_frame, as _labelled and labelled_rows do."""
    frame, test = make_regression_frame(200), make_regression_frame(60, seed=1)
    test["price"] = test["price"].astype(object)
    test.loc[test.index[:3], "price"] = ""
    model = keel.fit(frame, target="price", config=BAGGED, test=test, quiet=True)
    assert model.metrics is not None and model.metrics["n_rows"] == 57
    assert model.importance is not None and model.importance["rows"] == 57


# ---- pins: these pass (checked and found right) -------------------------------------------------------------


def _same_as_measured_afterwards(model: keel.model.Model, test: pd.DataFrame) -> None:
    """The importance held_out() measured on the test file equals Model._importance_on(test file) (the
    `keel report --data` path: its own target encoding and weights), baseline for baseline."""
    assert model.importance is not None and model.importance["source"] == "test"
    again = model._importance_on(test)
    assert model.importance["rows"] == again["rows"] == min(len(test), 2000)
    assert model.importance["baseline"] == pytest.approx(again["baseline"], rel=1e-6)
    assert [f["name"] for f in model.importance["features"]] == [f["name"] for f in again["features"]]


def test_a_regression_test_file_is_standardised_as_the_training_target() -> None:
    frame, test = make_regression_frame(200), make_regression_frame(80, seed=1)
    model = keel.fit(frame, target="price", config=BAGGED, test=test, quiet=True)
    _same_as_measured_afterwards(model, test)
    assert model.importance is not None and model.importance["baseline"] == pytest.approx(model.metrics["rmse"])


def test_numeric_classes_a_weight_column_and_unlabelled_test_rows() -> None:
    frame, test = make_classification_frame(200), make_classification_frame(80, seed=1)
    codes = {"alpha": 3, "beta": 7, "gamma": 11}
    frame["label"], test["label"] = frame["label"].map(codes), test["label"].map(codes).astype(float)
    rng = np.random.default_rng(0)
    frame["w"], test["w"] = rng.uniform(0.1, 5, len(frame)), rng.uniform(0.1, 5, len(test))
    test.loc[test.index[:4], "label"] = np.nan
    model = keel.fit(frame, target="label", config={**BAGGED, "training.weight_column": "w"}, test=test,
                     quiet=True)
    labelled = test.dropna(subset=["label"])
    _same_as_measured_afterwards(model, labelled)
    assert model.importance is not None and model.importance["baseline"] == pytest.approx(model.metrics["accuracy"])
