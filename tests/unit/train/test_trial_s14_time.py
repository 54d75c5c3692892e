"""A user's trial of presets under --time-limit (fourteenth session): an explicit bagging's first network took a
fifth of the limit up front (a 210,000-row table's only network was cut after 5 of 256 steps, and the other
four fifths went unused: ROC-AUC 0.555, every row "no"); the progress bar's ETA counted the config's epochs, not the
limit's plan; the settings note said "early stopping 16" where early_stopping_steps made it 4 epochs."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import keel
from keel.console import ProgressBar
from keel.train.pipeline import _first_share
from tests.conftest import FAST


def test_the_first_bagged_network_shares_the_time_among_the_networks_that_fit() -> None:
    end = time.perf_counter() + 10.5
    # A pace of 0.5 s an epoch (the first epoch's 3 s of one-time costs left out): 10 epochs take 5 s, so two
    # networks of the five fit; the first takes half of the time left.
    share = _first_share([3.0, 0.5, 0.5], end=end, networks=5, epochs=10) - time.perf_counter()
    assert 5.0 < share <= 5.25
    # A pace at which not even a second network fits: the first takes all of it.
    assert _first_share([2.0, 2.0], end=end, networks=5, epochs=10) == end
    # Never more networks than asked for.
    share = _first_share([0.01, 0.01], end=end, networks=3, epochs=10) - time.perf_counter()
    assert 3.4 < share <= 3.5


def test_an_explicit_bagging_under_a_time_limit_still_trains_every_network_that_fits() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    model = keel.fit(frame, target="y", config={**FAST, "training.bagging": 3, "training.epochs": 3,
                                                "training.time_limit": 120}, quiet=True, importance=False)
    assert len(model.network.networks) == 3
    assert not any("allowed" in note and "bagged" in note for note in model.notes)


def test_the_progress_bar_counts_the_epochs_the_time_limit_plans() -> None:
    bar = ProgressBar(100, "roc_auc", Console(file=open("/dev/null", "w")), rows=10)  # noqa: SIM115
    with bar:
        bar(1, 100, {"epoch": 1, "loss": 0.5})
        bar(2, 12, {"epoch": 2, "loss": 0.4})  # the limit's plan, known from the second epoch
        assert bar.progress.tasks[0].total == 12
        bar(3, 12, {"epoch": 3, "loss": 0.4, "stopped": True, "stopped_by": "early stopping"})
        assert bar.progress.tasks[0].total == 3


@pytest.mark.parametrize(("rows", "said"), [(30_000, "batch auto (256), up to 1 epoch, early stopping 10 epochs, here 4 "
                                                     "(early_stopping_steps 256, at least 4 epochs)"),
                                            (2_000, "batch auto (")])
def test_the_settings_note_says_what_batch_auto_and_early_stopping_steps_came_to(rows: int, said: str) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "y": rng.integers(0, 2, rows)})
    model = keel.fit(frame, target="y", config={"preset": "fast", "training.epochs": 1, "training.batch_size": "auto",
                                                "training.steps_per_epoch": "auto",
                                                "training.early_stopping_steps": 256}, quiet=True, importance=False)
    note = next(note for note in model.notes if note.startswith("preset "))
    assert said in note
    if rows == 2_000:  # 7 epochs of a pass wait less than 256 steps: the config's 10 epochs rule, unannotated
        assert "here" not in note


def test_the_first_bagged_network_replans_its_share_after_each_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring: under a limit an explicit bagging's first network starts with all of the time and asks
    _first_share after each epoch (the others keep an equal share of what is left)."""
    import keel.train.pipeline as pipeline

    calls: list[tuple[int, int, int]] = []

    def recorded(epoch_seconds: list[float], *, end: float, networks: int, epochs: int) -> float:
        calls.append((len(epoch_seconds), networks, epochs))
        return end

    monkeypatch.setattr(pipeline, "_first_share", recorded)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    keel.fit(frame, target="y", config={**FAST, "training.bagging": 3, "training.epochs": 3,
                                        "training.time_limit": 120}, quiet=True, importance=False)
    assert calls == [(1, 3, 3), (2, 3, 3), (3, 3, 3)]  # the first network's three epochs; 3 epochs, fewer than 10
