"""Audit of 853d15c (time limit: the trainer checks the limit's end before each step; importance re-plans its
shuffles after every feature). Each test here shows one finding: it fails on 853d15c.

The trainer's clock is faked where timing matters (``keel.train.trainer.time``), so the cuts land exactly where the
test puts them, on any machine, however busy."""

from __future__ import annotations

import copy
import re
import time as real_time
import types

import numpy as np
import pytest
import torch

import keel
import keel.train.trainer as trainer_module
from keel.config import TrainingConfig
from keel.nn.network import NetworkSpec, TabularNetwork
from keel.train.callbacks import epoch_line
from keel.train.trainer import Batch, Trainer
from tests.conftest import make_classification_frame
from tests.unit.evaluate.conftest import Clock  # perf_counter reads now, which the tests move


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def _data() -> Batch:
    torch.manual_seed(0)
    return Batch(torch.randn(128, 4), torch.zeros(128, 0, dtype=torch.long), torch.randint(0, 2, (128,)))


def _trainer(epochs: int = 4, **settings) -> Trainer:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    network = TabularNetwork(NetworkSpec(numeric_width=4, cardinalities=[], n_outputs=2, hidden=[8], ensemble=1))
    return Trainer(network, TrainingConfig(epochs=epochs, batch_size=8, **settings), "multiclass", "cross_entropy")


class _Checkpoints:
    """An EpochCheckpoint that keeps a copy of every state it is handed; ``on_save`` runs while it "writes"."""

    def __init__(self, due=lambda epoch: True, on_save=lambda: None) -> None:  # type: ignore[no-untyped-def]
        self.states: list = []
        self._due, self._on_save = due, on_save

    def due(self, epoch: int) -> bool:
        return self._due(epoch)

    def save(self, state) -> None:  # type: ignore[no-untyped-def]
        self.states.append(copy.deepcopy(state))
        self._on_save()


# ------------------------------------------------------------------ finding 1: an epoch cut before its first step


def test_a_checkpoint_written_across_the_limits_end_does_not_crash_the_next_epoch(clock: Clock) -> None:
    """After epoch 1 the plan allows more (plenty of time left); writing the checkpoint (training.checkpoint, a slow
    disk or a busy machine) takes the clock past the end. Epoch 2's first step is checked (``epoch > 1``) and the
    epoch takes 0 steps: ``assert previous is not None`` fails (and under ``python -O`` the loss divides by 0
    rows). A whole training is lost to an AssertionError instead of stopping with the epochs it has."""
    data = _data()
    trainer = _trainer(epochs=4, early_stopping=0)

    def slow_write() -> None:
        clock.now += 20.0  # the write ends past the limit's end

    trainer.checkpoint = _Checkpoints(due=lambda epoch: epoch == 1, on_save=slow_write)
    trainer.deadline = clock.now + 10.0
    history = trainer.fit(data, data)  # 853d15c: AssertionError in _train_epoch
    assert history.epochs[-1]["stopped_by"] == "time limit"
    assert all(np.isfinite(record["loss"]) for record in history.epochs)


def test_a_resumed_fit_whose_share_of_the_limit_is_spent_stops_instead_of_crashing() -> None:
    """keel train --resume under training.time_limit: the limit counts from the resumed run's start, reading the
    data included; where that (or the bagged networks before this one) spent this network's share, the resumed
    fit's first epoch (epoch > 1: its first step is checked) takes 0 steps and the run dies with an
    AssertionError."""
    data = _data()
    first = _trainer(epochs=4, early_stopping=0)
    first.checkpoint = _Checkpoints(due=lambda epoch: epoch == 2)
    first.fit(data, data)
    state = first.checkpoint.states[0]
    assert state.epoch == 2

    resumed = _trainer(epochs=4, early_stopping=0)
    resumed.deadline = real_time.perf_counter() - 1.0  # this network's share already spent
    history = resumed.fit(data, data, resume=state)  # 853d15c: AssertionError in _train_epoch
    assert history.epochs[-1]["stopped_by"] == "time limit"
    assert all(np.isfinite(record["loss"]) for record in history.epochs)


# ------------------------------------------------------------------ finding 2: a cut last epoch leaves no note


def test_a_cut_in_the_configs_last_epoch_is_said_in_the_runs_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    """training.epochs 2 under a time limit; the machine is slowed within epoch 2 and the trainer cuts it. The
    epoch line says '(time limit, after k of n steps)', but ``planned = epoch == settings.epochs`` makes
    ``history.planned_epochs`` None, so pipeline.train_networks writes no time-limit note at all: the run's notes
    (README: "The run's notes say what the time allowed"; the commit: "the run's note (pipeline._cut)") never say
    that the model's last epoch trained on part of its steps."""
    steps = [0]
    extra = [0.0]

    def fake_perf_counter() -> float:
        return real_time.perf_counter() + extra[0]

    original = Trainer._autograd_step

    def counting_step(self, rows, optimizer, check="all"):  # type: ignore[no-untyped-def]
        steps[0] += 1
        if steps[0] == self.steps_per_epoch + 3:  # epoch 2, third step: the machine gets busy
            extra[0] += 10_000.0
        return original(self, rows, optimizer, check)

    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake_perf_counter))
    monkeypatch.setattr(Trainer, "_autograd_step", counting_step)
    monkeypatch.setattr(trainer_module, "fused_step_supported", lambda *args, **kwargs: False)
    frame = make_classification_frame(600)
    model = keel.fit(frame, target="label", quiet=True, importance=False,
                     config={"preset": "fast", "model.hidden": [16], "training.epochs": 2,
                             "training.batch_size": 32, "training.early_stopping": 0,
                             "training.time_limit": 600.0})
    last = model.history["epochs"][-1]
    assert last["epoch"] == 2 and last.get("steps") == 3  # cut: the fourth step of epoch 2 was not taken
    assert last["stopped_by"] == "time limit"
    assert any("cut after 3 of" in note for note in model.notes), model.notes


# ------------------------------------------------------------------ finding 3: a cut that is also an early stop


def test_a_cut_epoch_that_is_also_an_early_stop_says_it_was_cut(clock: Clock) -> None:
    """Early stopping's wait runs out in the epoch the time limit cut: ``stopped_by`` is not set (``stop and not
    waited``), so the epoch line says '(early stop)' with no word of the cut, and the report's learning curves say
    'stopped early', while the run's note says 'the last one cut after k of n steps' and rows/s is scaled by the
    share of steps taken. The epoch line should say the cut too."""
    data = _data()
    trainer = _trainer(epochs=10, early_stopping=1)
    scores = iter([1.0, 2.0, 3.0])  # validation worsens after epoch 1: a wait of 1 runs out in epoch 2

    def validate(rows):  # type: ignore[no-untyped-def]
        value = next(scores)
        return {"val_loss": value}

    trainer.validate = validate  # type: ignore[method-assign]
    original = Trainer._autograd_step
    count = [0]

    def stepping(self, rows, optimizer, check="all"):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] == self.steps_per_epoch + 5:  # within epoch 2
            clock.now += 50.0
        return original(self, rows, optimizer, check)

    trainer.fused = None
    trainer._autograd_step = types.MethodType(stepping, trainer)  # type: ignore[method-assign]
    trainer.deadline = clock.now + 10.0
    history = trainer.fit(data, data)
    last = history.epochs[-1]
    assert last["epoch"] == 2 and last["steps"] == 5 and last["stopped"]
    assert "after 5 of 16 steps" in epoch_line(2, 2, last, "loss"), epoch_line(2, 2, last, "loss")


# ------------------------------------------------------------------ audit of issue 15: the pace of a cut first epoch


def test_a_first_epoch_cut_after_one_step_says_the_seconds_it_took_not_a_pass_extrapolated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A limit spent before training got far (a slow read, a busy machine) cuts the first epoch after its first step.
    The note divided the seconds by the share of the pass taken: 0.72 s for 1 of 15 steps (one-time costs and the
    validation included) read 'about 10.78 s each', seconds that never passed. A figure the note gives for what
    happened must not exceed the training's own seconds."""
    extra = [0.0]
    monkeypatch.setattr(trainer_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: real_time.perf_counter() + extra[0]))
    original = Trainer._autograd_step

    def first_step_slow(self, rows, optimizer, check="all"):  # type: ignore[no-untyped-def]
        extra[0] += 10_000.0  # each step seems to take hours: the limit's end comes after the first
        return original(self, rows, optimizer, check)

    monkeypatch.setattr(Trainer, "_autograd_step", first_step_slow)
    monkeypatch.setattr(trainer_module, "fused_step_supported", lambda *args, **kwargs: False)
    model = keel.fit(make_classification_frame(600), target="label", quiet=True, importance=False,
                     config={"preset": "fast", "model.hidden": [16], "training.batch_size": 32,
                             "training.time_limit": 600.0})
    first = model.history["epochs"][0]
    assert len(model.history["epochs"]) == 1 and first["steps"] == 1, model.history["epochs"]
    note = next(note for note in model.notes if "allowed 1 of" in note and "epochs" in note)
    said = float(re.search(r"\((?:about )?([\d.]+) s", note).group(1))  # type: ignore[union-attr]
    assert said <= model.history["seconds"] + 0.01, (note, model.history["seconds"])
    assert "cut after 1 of" in note
