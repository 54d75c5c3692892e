"""Audit of ``training.bagging: auto`` (commit 481575d, the balanced preset's default).

The first group of tests FAILS on 481575d: each reproduces a finding of the audit and states the behaviour
the fix should give. The second group passes: it pins combinations the commit's own tests leave open
(which rows and columns the rule counts, resume), so that a later change cannot move them silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import AUTO_BAGGING, AUTO_BAGGING_CELLS
from tests.conftest import FAST, make_classification_frame
from tests.reliability.test_resume import _Interrupted, _same_model, _StopAt
from tests.unit.train.test_auto_bagging import _networks, _rows_note

AUTO = {**FAST, "training.bagging": "auto"}


def _wide(n_rows: int, n_columns: int, seed: int = 0) -> pd.DataFrame:
    """``n_columns`` normal numbers and a binary ``y`` read from the first."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n_rows, n_columns)), columns=[f"x{i}" for i in range(n_columns)])
    frame["y"] = np.where(frame["x0"] + rng.normal(0, 0.5, n_rows) > 0, "yes", "no")
    return frame


# ---- findings: these fail on 481575d ------------------------------------------------------------------------


def test_auto_never_bags_a_network_that_has_no_validation_rows_with_few_groups() -> None:
    """split_by with 5 groups: 4 land in the training + validation pool, auto still makes 5 folds of whole
    groups (keel.data.split._group_folds), and one fold is empty. That network trains on the whole pool with
    no validation rows (no early stopping, nothing to calibrate on), silently; the first note still says each
    network "validated on the rest". README: auto never bags "a run without validation rows"."""
    frame = make_classification_frame(200)
    frame["g"] = np.arange(len(frame)) % 5
    config = {**AUTO, "training.split_by": "g", "training.epochs": 30, "training.early_stopping": 2}
    model = keel.fit(frame, target="label", config=config, quiet=True, importance=False)
    assert model.run is not None
    validation_each = model.run.get("bagging", {}).get("validation_each", [model.run["rows"]["validation"]])
    histories = model.history.get("bags", [model.history])
    assert 0 not in validation_each, (
        f"{_networks(model)} networks, validation rows per network {validation_each}: a network validated on none "
        f"trained {[len(history['epochs']) for history in histories]} epochs (early stopping 2)")


def test_auto_never_bags_more_folds_than_the_pool_has_rows() -> None:
    """The same empty fold without groups: 5 rows, a validation share of 0.5, a pool of 4 rows cut into 5 folds."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=5), "y": rng.normal(size=5)})
    model = keel.fit(frame, target="y", config={**AUTO, "training.validation_split": 0.5}, quiet=True,
                     importance=False)
    assert model.run is not None
    validation_each = model.run.get("bagging", {}).get("validation_each", [model.run["rows"]["validation"]])
    assert 0 not in validation_each, f"validation rows per network: {validation_each}"


def test_auto_counts_the_columns_input_features_lists_not_the_whole_frame() -> None:
    """1,600 training + validation rows of 70 columns, of which input_features keeps 5: the model learns from
    8,000 cells, but pipeline._prepare counts frame.shape[1] - 1 - len(special) = 70 columns (112,000 cells)
    and trains one network."""
    frame = _wide(2000, 70)
    assert 1600 * 70 > AUTO_BAGGING_CELLS >= 1600 * 5
    config = {**AUTO, "input_features": [{"name": f"x{i}", "type": "auto"} for i in range(5)]}
    model = keel.fit(frame, target="y", config=config, quiet=True, importance=False)
    assert len(model.schema.features) == 5
    assert _networks(model) == AUTO_BAGGING, _rows_note(model)


def test_auto_does_not_count_columns_the_schema_drops() -> None:
    """60 useful columns and 10 constant ones (dropped, as id-like columns are): 96,000 cells are learned from,
    112,000 are counted, and one network is trained where the same table without the dead columns bags five."""
    frame = _wide(2000, 60)
    for i in range(10):
        frame[f"constant{i}"] = 1.0
    assert 1600 * 70 > AUTO_BAGGING_CELLS >= 1600 * 60
    model = keel.fit(frame, target="y", config=AUTO, quiet=True, importance=False)
    assert len(model.schema.dropped) == 10 and len(model.schema.features) == 60
    assert _networks(model) == AUTO_BAGGING, _rows_note(model)


def test_auto_bagging_with_a_test_file_keeps_permutation_importance() -> None:
    """`keel train small.csv --test test.csv` with the default preset: auto bags, held_out() offers no rows
    (bagged networks trained on every validation row, and a --test file's rows are not offered), so the
    model has no importance and the report drops its importance section without a word. One network (the
    default before 481575d) measures it. README (Report): "with bagging, on the test rows"."""
    frame, test = make_classification_frame(200), make_classification_frame(100, seed=1)
    single = keel.fit(frame, target="label", config=FAST, test=test, quiet=True)
    assert single.importance is not None
    bagged = keel.fit(frame, target="label", config=AUTO, test=test, quiet=True)
    assert _networks(bagged) == AUTO_BAGGING
    assert bagged.importance is not None, "no permutation importance for the default preset with a --test file"


# ---- pins: these pass (what the commit's tests leave open) ----------------------------------------------------


def test_auto_counts_training_and_validation_rows_not_test_or_unlabelled_rows() -> None:
    """6,000 labelled rows and 1,000 unlabelled ones: 4,800 are training + validation (20% test), under the
    bound, so five networks. Counting every labelled row (6,000) or the frame (7,000) would train one."""
    frame = _wide(7000, 1)
    frame.loc[frame.index[::7], "y"] = None
    config = {**AUTO, "training.epochs": 1, "training.batch_size": 512}
    model = keel.fit(frame, target="y", config=config, quiet=True, importance=False)
    assert model.run is not None and model.run["rows"]["unlabelled"] == 1000
    assert model.run["rows"]["train"] + model.run["rows"]["validation"] == 4800
    assert _networks(model) == AUTO_BAGGING


def test_auto_does_not_count_the_weight_and_group_columns() -> None:
    """62 feature columns x 1,600 rows = 99,200 cells, under the bound; a weight column and a group column
    make 64 columns besides the target (102,400 cells if counted). Neither is a feature: five networks."""
    frame = _wide(2000, 62)
    frame["w"] = 1.0
    frame["g"] = np.arange(len(frame)) % 50
    config = {**AUTO, "training.weight_column": "w", "training.split_by": "g", "training.epochs": 2}
    model = keel.fit(frame, target="y", config=config, quiet=True, importance=False)
    assert len(model.schema.features) == 62
    assert _networks(model) == AUTO_BAGGING


def test_an_interrupted_auto_run_resumes_to_the_same_bagged_model(tmp_path) -> None:
    """The checkpoint keeps "auto" and the data's fingerprint, so the resumed run decides again on the same
    table, rebuilds the same five folds and ends with the uninterrupted run's model."""
    frame = make_classification_frame(120)
    config = {**AUTO, "training.epochs": 3, "training.checkpoint": True, "training.checkpoint_every": 1,
              "model.dropout": 0.2}
    whole = keel.fit(frame, target="label", config=config, output=tmp_path / "whole", quiet=True, importance=False)
    assert _networks(whole) == AUTO_BAGGING
    with pytest.raises(_Interrupted):  # within the third network
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(8),
                 importance=False)
    model = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    assert any(note.startswith("resumed from the checkpoint") and "(network 3 of 5 after epoch " in note
               for note in model.notes)
    assert model.run is not None and whole.run is not None and model.run["bagging"] == whole.run["bagging"]
    _same_model(tmp_path / "whole", tmp_path / "cut")


def test_a_small_file_that_streams_trains_one_network(tmp_path) -> None:
    """README: auto never bags "a streamed file". The commit's streamed test uses 60,000 rows, over the row
    bound either way; here 5,000 rows x 20 columns (4,000 x 20 = 80,000 cells for training and validation, a
    small table that bags in memory) stream because of the smallest memory budget."""
    path = tmp_path / "small.csv"
    _wide(5000, 20).to_csv(path, index=False)
    config = {**AUTO, "data.memory_budget": "1MiB", "training.batch_size": 256, "training.epochs": 1}
    model = keel.fit(path, target="y", config=config, quiet=True, importance=False)
    if not model.notes[0].startswith("streaming "):
        pytest.skip(f"the file was read into memory: {model.notes[0][:120]}")
    assert _networks(model) == 1
