"""Audit of data-parallel training (--nproc) and training.time_limit: regression tests for what the
audit found. Each names the defect it guards; at the time of writing all of them fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import load_config
from keel.errors import ConfigError, KeelError
from keel.train.trainer import LearningRate

SMALL = {"preset": "fast", "model.hidden": [16], "model.dropout": 0.0}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """2,000 rows: epochs of a few milliseconds, so a time limit plans many of them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 4))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(4)})
    frame["label"] = np.where(x[:, 0] - x[:, 1] + 0.7 * rng.logistic(size=len(x)) > 0, "a", "b")
    path = tmp_path_factory.mktemp("ddp_audit") / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_time_limit_with_nproc_trains_the_same_epochs_on_every_rank(table, tmp_path) -> None:
    # Each rank plans its epochs from its own clock and deadline (Trainer._plan), so the ranks stop at
    # different epochs: the one still training meets a closed peer at its all-reduce and the job fails,
    # after rank 0 has already saved the model its error says was not saved.
    output = tmp_path / "model"
    config = {**SMALL, "training.epochs": 2000, "training.time_limit": 3, "training.early_stopping": 0}
    try:
        model = keel.fit(table, target="label", config=config, quiet=True, importance=False, nproc=2, output=output)
    except KeelError as error:
        assert not (output / "keel.json").exists(), f"the error says nothing was saved, yet {output} holds a model"
        pytest.fail(f"a time-limited data-parallel run failed: {error}")
    assert model.history is not None and len(model.history["epochs"]) < 2000


def test_batch_norm_is_refused_with_nproc(table) -> None:
    # Running statistics are buffers each rank would learn from its own shard (the audit measured 0.14
    # apart after 3 epochs, and validation losses that differed): refused rather than averaged.
    with pytest.raises(ConfigError, match="model.norm: batch"):
        keel.fit(table, target="label", config={"preset": "fast", "model.norm": "batch"}, quiet=True, nproc=2)

def test_a_fitted_schedule_survives_a_checkpoint() -> None:
    # LearningRate.state() leaves out total_steps and warmup_steps that fit_to (training.time_limit)
    # changed: a resumed time-limited run goes back to the configured epochs' schedule, so its cosine
    # does not anneal in the planned epochs (and a warm-up sized for the configured epochs may not end).
    settings = load_config({"preset": "fast", "training.schedule": "cosine", "training.warmup": 0.1}).training
    planned = LearningRate(settings, total_steps=1000, monitor="accuracy")
    for _ in range(50):
        planned.after_step()
    planned.fit_to(100)  # the time allows 100 steps, not 1,000
    resumed = LearningRate(settings, total_steps=1000, monitor="accuracy")
    resumed.load_state(planned.state())
    for _ in range(40):
        planned.after_step()
        resumed.after_step()
    assert resumed.value == pytest.approx(planned.value)


def test_keel_train_nproc_quiet_prints_nothing_and_logs_the_run(table, tmp_path) -> None:
    # The launcher gets neither the CLI's reporter nor --quiet: rank 0 prints plain notes on stderr under
    # --quiet / --json, and --log-file never sees the notes, the steps or the epochs.
    log = tmp_path / "run.log"
    result = subprocess.run([sys.executable, "-m", "keel", "train", str(table), "--target", "label", "--preset", "fast",
                             "--set", "training.epochs=2", "--set", "model.hidden=[16]", "--nproc", "2", "--output",
                             str(tmp_path / "model"), "--no-report", "--quiet", "--log-file", str(log)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "note:" not in result.stderr
    assert "rows:" in log.read_text()  # the first note, as a single-process run logs it
