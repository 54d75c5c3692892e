"""keel.fit, keel.load and predict leave the caller's global state as they found it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import keel
from tests.conftest import FAST


def global_state() -> tuple[int, torch.Tensor, Any]:
    return torch.get_num_threads(), torch.random.get_rng_state(), np.random.get_state()


def assert_unchanged(before: tuple[int, torch.Tensor, Any], what: str) -> None:
    threads, torch_rng, numpy_rng = global_state()
    assert threads == before[0], f"{what} changed torch's thread count"
    assert torch.equal(torch_rng, before[1]), f"{what} drew from torch's global generator"
    assert numpy_rng[0] == before[2][0] and np.array_equal(numpy_rng[1], before[2][1]) \
        and numpy_rng[2:] == before[2][2:], f"{what} drew from NumPy's global generator"


def test_fit_load_and_predict_leave_threads_and_random_state_alone(tmp_path, classification_frame) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(max(2, previous))  # thread_budget drops to one thread for small networks
    try:
        torch.manual_seed(5)
        np.random.seed(5)
        before = global_state()
        # Bagging and an ensemble with number embeddings: every path that draws or builds weights.
        model = keel.fit(classification_frame, target="label", quiet=True, config={
            **FAST, "training.epochs": 2, "training.bagging": 2, "model.ensemble": 2,
            "model.numeric_embedding": "piecewise_linear"})
        assert_unchanged(before, "keel.fit")
        loaded = keel.load(model.save(tmp_path / "model"))
        assert_unchanged(before, "keel.load")
        loaded.predict(classification_frame)
        loaded.predict_proba(classification_frame)
        model.evaluate(classification_frame)
        assert_unchanged(before, "predict")
    finally:
        torch.set_num_threads(previous)
