"""Regression tests from the audit of "the balanced preset at scale" (issue 15): training.steps_per_epoch,
training.early_stopping_steps, precision auto. Each test here failed when it was written; see the audit report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import keel
from keel.train.checkpoint import _write_checkpoint, checkpoint_directory, read_checkpoint
from tests.conftest import FAST, make_classification_frame
from tests.reliability.test_resume import _Interrupted, _StopAt


def test_plateau_halves_the_rate_before_a_wait_counted_in_steps_stops_training() -> None:
    # early_stopping_steps 8 of 2-step epochs waits 4 epochs (MIN_PATIENCE); plateau still counted its
    # patience from early_stopping (16 // 3 = 5 epochs): it could never halve before the stop.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600), "y": rng.choice(["p", "q"], 600)})
    config = {"preset": "fast", "model.hidden": [16], "training.epochs": 200, "training.early_stopping": 16,
              "training.schedule": "plateau", "training.lr": 0.01, "training.early_stopping_steps": 8,
              "training.steps_per_epoch": 2}
    model = keel.fit(frame, target="y", config=config, quiet=True, importance=False)
    assert model.history["stopped_early"]
    rates = {record["lr"] for record in model.history["epochs"]}
    assert min(rates) < 0.01, "the plateau schedule never halved the rate before early stopping ended the run"


def _drop(document: Any, names: set[str]) -> Any:
    """``document`` without the keys in ``names``, at any depth (what an older keel did not write)."""
    if isinstance(document, dict):
        return {key: _drop(value, names) for key, value in document.items() if key not in names}
    if isinstance(document, list):
        return [_drop(value, names) for value in document]
    return document


def test_a_checkpoint_written_before_steps_per_epoch_existed_still_resumes(tmp_path: Path) -> None:
    # The checkpoint of the keel before commit 1b981fd: no training.steps_per_epoch, early_stopping_steps
    # or pass_position (TrainerState.unpack defaults it to 0 for this case). Its epochs were whole passes, so
    # it is the "pass" run; it was refused instead: "training.steps_per_epoch (unset) -> pass".
    config = {**FAST, "training.epochs": 6, "training.checkpoint": True, "training.checkpoint_every": 1}
    frame = make_classification_frame(120)
    whole = keel.fit(frame, target="label", config=config, quiet=True, importance=False)
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(3), importance=False)
    directory = checkpoint_directory(tmp_path / "cut")
    saved = read_checkpoint(directory)
    assert saved is not None
    old = _drop(saved.document, {"steps_per_epoch", "early_stopping_steps", "pass_position"})
    _write_checkpoint(directory, dict(saved.tensors), old)
    model = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    for a, b in zip(whole.network.state_dict().values(), model.network.state_dict().values()):
        assert torch.equal(a, b)


def test_a_run_resumed_on_a_cpu_without_amx_keeps_the_precision_it_trained_in(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # precision auto chose bfloat16 (AMX, a large step); resumed where amx_available() is False, the rest of
    # the run silently trained in float32: another model than the uninterrupted run, with no note saying so.
    from keel.train import device as devices

    frame = make_classification_frame(600)
    config = {"preset": "balanced", "training.epochs": 3, "training.batch_size": 128, "training.checkpoint": True,
              "training.checkpoint_every": 1}
    monkeypatch.setattr(devices, "amx_available", lambda: True)
    whole = keel.fit(frame, target="label", config=config, quiet=True, importance=False)
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(2), importance=False)
    monkeypatch.setattr(devices, "amx_available", lambda: False)
    model = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                     importance=False)
    note = next(note for note in model.notes if note.startswith("preset balanced"))
    assert "bfloat16 matmuls" in note, "the resumed run changed arithmetic mid-run"
    for a, b in zip(whole.network.state_dict().values(), model.network.state_dict().values()):
        assert torch.equal(a, b)
