"""Audit s10 of ce12ec0 / 805f542 in whole runs: the note on a cut importance, the rows the time limit's reserve
counts against the rows importance predicts, and a cut importance saved and loaded."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import keel
import keel.train.pipeline as pipeline
from keel.evaluate.importance import DEADLINE_ROWS, IMPORTANCE_ROWS
from tests.conftest import FAST, make_classification_frame

ONE_EPOCH = {**FAST, "training.epochs": 1}


@pytest.fixture
def importance_past_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importance always finds its deadline a second gone (as after training that ran past a time limit's end),
    so it takes one shuffle of its fewest rows and the run's note must say of how many."""
    original = pipeline._importance

    def late(model, rows, source, training, reporter, deadline=None, threads=None):  # type: ignore[no-untyped-def]
        return original(model, rows, source, training, reporter, time.perf_counter() - 1.0, threads)

    monkeypatch.setattr(pipeline, "_importance", late)


def _note(model) -> str:  # type: ignore[no-untyped-def]
    return next(note for note in model.notes if "permutation importance took" in note)


@pytest.mark.parametrize("case", ["validation", "validation over 2,000", "bagged: test split", "bagged: test file"])
def test_the_cut_note_names_the_held_out_rows_importance_would_have_taken(importance_past_its_deadline, case) -> None:
    """Guard: "(not 5 of N)" names min(2,000, the held-out rows): a single network's validation rows, else
    (bagged) the test split's rows, else the --test file's."""
    frame = make_classification_frame(1500 if case != "validation over 2,000" else 5000)
    config, test = dict(ONE_EPOCH), None
    if case == "validation over 2,000":
        config["training.validation_split"] = 0.6  # 2,400 validation rows
    if case.startswith("bagged"):
        config["training.bagging"] = 3
    if case == "bagged: test file":
        test = make_classification_frame(400, seed=1)
    model = keel.fit(frame, target="label", config=config, quiet=True, test=test)
    held = {"validation": model.run["rows"]["validation"], "validation over 2,000": IMPORTANCE_ROWS,
            "bagged: test split": model.run["rows"]["test"], "bagged: test file": 400}[case]
    assert model.importance["source"] == ("validation" if case.startswith("validation") else "test")
    rows = min(held, IMPORTANCE_ROWS, DEADLINE_ROWS) if min(held, IMPORTANCE_ROWS) > DEADLINE_ROWS else held
    assert (model.importance["rows"], model.importance["repeats"]) == (rows, 1)
    assert f"took 1 shuffle(s) of {rows} rows a feature (not 5 of {min(held, IMPORTANCE_ROWS)})" in _note(model)


def test_a_cut_importance_saves_and_loads(importance_past_its_deadline, tmp_path) -> None:
    """Guard: keel.json keeps a cut importance's rows and repeats (the report's caption reads them) and the note."""
    model = keel.fit(make_classification_frame(1500), target="label", config={**ONE_EPOCH, "training.bagging": 3},
                     quiet=True)
    model.save(tmp_path / "model")
    loaded = keel.load(tmp_path / "model")
    assert loaded.importance == model.importance
    assert (loaded.importance["rows"], loaded.importance["repeats"]) == (DEADLINE_ROWS, 1)
    assert _note(model) in loaded.notes


class _Seen(Exception):
    pass


def _counted_and_predicted(monkeypatch: pytest.MonkeyPatch, data_source, config: dict,
                           test=None) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """importance_sample's count for the run, and the rows importance would predict (its held-out rows, at most
    2,000, through every network), read where training would start."""
    def stop(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        held = data.held_out()
        predicted = 0 if held is None else min(IMPORTANCE_ROWS, len(held[0].target)) * len(data.bags)
        raise _Seen(pipeline.importance_sample(data, True), predicted)

    monkeypatch.setattr(pipeline, "train_networks", stop)
    with pytest.raises(_Seen) as seen:
        keel.fit(data_source, target="label", config=config, quiet=True, test=test)
    return seen.value.args


@pytest.mark.parametrize("case", ["validation", "no validation: test split", "no validation: test file",
                                  "bagged: test split", "bagged: test file"])
def test_the_reserve_counts_the_rows_importance_predicts_in_memory(monkeypatch, case) -> None:
    """Guard: for a table in memory, importance_sample (what the time limit's reserve counts) is the rows
    held_out() gives importance, through every network."""
    config = dict(ONE_EPOCH)
    if case.startswith("no validation"):
        config["training.validation_split"] = 0.0
    if case.startswith("bagged"):
        config["training.bagging"] = 3
    test = make_classification_frame(300, seed=1) if case.endswith("test file") else None
    counted, predicted = _counted_and_predicted(monkeypatch, make_classification_frame(600), config, test)
    assert counted == predicted


def _big_csv(path, n_rows: int = 30_000) -> str:  # type: ignore[no-untyped-def]
    """A file over the 1MiB budget's half, so that it is streamed."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=n_rows), "y": rng.normal(size=n_rows)})
    frame["label"] = np.where(frame.x + frame.y > 0, "a", "b")
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("case", ["validation", "no validation: test file"])
def test_the_reserve_counts_the_rows_importance_predicts_when_streamed(monkeypatch, tmp_path, case) -> None:
    """BUG (805f542's importance_sample, kept from rows_predicted_after_training; low): a streamed run (and a
    sharded one, whose record has "test_frame": None too) with one network, no validation rows and a --test
    file runs no importance (held_out() is None: a single network's test file is never its held-out rows), but
    importance_sample counts min(2,000, the test file's rows) as if it did, since it reads
    ``record["test_frame"]``, which streamed and sharded runs leave None. Expected: the reserve counts the rows
    importance predicts, here 0 (the reserve then keeps time for 5 x features shuffles of rows never shuffled,
    up to half the time left)."""
    config = {**ONE_EPOCH, "data.memory_budget": "1MiB"}
    test = None
    if case.startswith("no validation"):
        config["training.validation_split"] = 0.0
        test = _big_csv(tmp_path / "test.csv", 3000)
    counted, predicted = _counted_and_predicted(monkeypatch, _big_csv(tmp_path / "big.csv"), config, test)
    assert counted == predicted, (counted, predicted)


class _StepClock:
    """perf_counter advancing 0.01 s a call: importance's timings read as a fixed pace, whatever the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += 0.01
        return self.now


def test_a_bag_s_reuse_rebuilt_on_fewer_repeats_predicts_as_the_full_network(monkeypatch) -> None:
    """Guard: a bagged model's importance cut to fewer repeats after its first feature (the reuse rebuilt on views
    of the stacked rows, shuffled in place and restored) gives what predicting every shuffled row through the
    whole bag gives, feature by feature, and the same rows and repeats."""
    import types

    import keel.evaluate.importance as importance

    frame = make_classification_frame(600)
    frame["extra"] = np.random.default_rng(2).normal(size=len(frame))
    model = keel.fit(frame, target="label", config={**ONE_EPOCH, "training.bagging": 3, "model.hidden": [16, 16]},
                     quiet=True, importance=False)
    captured = {}
    original = importance.permutation_importance

    def capture(predict, *args, around=None, deadline=None, **kwargs):  # type: ignore[no-untyped-def]
        captured.update(predict=predict, args=args, around=around, kwargs=kwargs)
        return original(predict, *args, around=around, deadline=deadline, **kwargs)

    monkeypatch.setattr(importance, "permutation_importance", capture)
    test = make_classification_frame(300, seed=4)
    test["extra"] = 0.0
    model._importance_on(test)
    predict, args, around, kwargs = (captured[key] for key in ("predict", "args", "around", "kwargs"))
    n_features = sum(1 for numbers, codes in args[4].values() if len(numbers) or len(codes))
    results = []
    # The same bookkeeping both ways (a reuse to build), only the predictor differs: the whole bag's or the reuse.
    for reuse in (around, lambda numbers, codes: predict):
        clock = _StepClock()
        monkeypatch.setattr(importance, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
        # Four calls to the up-front check (started, timed, the pass's end, the check): one shuffle of every
        # feature and the reuse's build fit then; the first feature's 5 shuffles then say fewer repeats.
        deadline = clock.now + 0.04 + 0.01 * (n_features + 1) + 0.005
        results.append(original(predict, *args, around=reuse, deadline=deadline, **kwargs))
    cut, full = results
    assert (cut["rows"], cut["repeats"]) == (full["rows"], full["repeats"]) and 1 <= cut["repeats"] < 5
    assert cut["baseline"] == full["baseline"]
    by_name = {feature["name"]: feature for feature in full["features"]}
    for feature in cut["features"]:
        assert feature["mean"] == pytest.approx(by_name[feature["name"]]["mean"], abs=1e-6)
        assert feature["std"] == pytest.approx(by_name[feature["name"]]["std"], abs=1e-6)
