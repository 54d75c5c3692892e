"""Shared fixtures: tiny tables made in code, the shipped penguins file, and a fast config."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# `make test` runs two xdist workers on two cores. Each worker, and every `keel` subprocess it starts,
# gets one OpenMP thread: two processes of two spinning threads each on two cores made a 9 s
# `keel demo` take 150 s (measured), which timed out in CI. Set before torch is
# imported (numpy and pandas above do not load it).
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

ROOT = Path(__file__).resolve().parents[1]
PENGUINS = ROOT / "examples" / "penguins.csv"

# Small enough to train in well under a second, big enough to learn the tiny tables below.
FAST = {"preset": "fast", "model.hidden": [16], "model.dropout": 0.0, "training.epochs": 5, "training.batch_size": 16,
        "training.lr": 0.01}


def settings_note(model) -> str:  # type: ignore[no-untyped-def]
    """The run's note naming the preset and the settings trained with (calibration notes follow it)."""
    return next(note for note in model.notes if note.startswith("preset "))


def make_classification_frame(n_rows: int = 150, seed: int = 0) -> pd.DataFrame:
    """Three classes driven by a number and a category, with missing values sprinkled in."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n_rows)
    frame = pd.DataFrame({
        "size": label * 2.0 + rng.normal(0, 0.5, n_rows),
        "weight": rng.normal(10, 2, n_rows),
        "color": np.array(["red", "green", "blue"])[label],
        "member": rng.choice(["yes", "no"], n_rows),
        "label": np.array(["alpha", "beta", "gamma"])[label],
    })
    frame.loc[rng.choice(n_rows, 10, replace=False), "weight"] = np.nan
    frame.loc[rng.choice(n_rows, 5, replace=False), "color"] = None
    return frame


def make_regression_frame(n_rows: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n_rows, 2))
    group = rng.choice(["a", "b"], n_rows)
    y = 3 * x[:, 0] - 2 * x[:, 1] + np.where(group == "a", 1.0, -1.0) + rng.normal(0, 0.1, n_rows) + 50
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "group": group, "price": y})


@pytest.fixture
def classification_frame() -> pd.DataFrame:
    return make_classification_frame()


@pytest.fixture
def regression_frame() -> pd.DataFrame:
    return make_regression_frame()


@pytest.fixture
def fast_config() -> dict:
    return dict(FAST)


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One small classifier trained once and saved, shared by read-only tests."""
    import keel

    model = keel.fit(make_classification_frame(), target="label", config={**FAST, "training.epochs": 20}, quiet=True)
    directory = tmp_path_factory.mktemp("models") / "classifier"
    model.save(directory)
    return model, directory
