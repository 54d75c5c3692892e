"""Audit: FirstLayerReuse against a full forward pass where the first layer's input can alias the caller's
numeric array (numbers not embedded, no category columns), which permutation importance shuffles in place."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import keel
from keel.nn.network import FirstLayerReuse, NetworkSpec, TabularNetwork, predict_outputs


def _numbers_only(ensemble: int) -> TabularNetwork:
    torch.manual_seed(0)
    return TabularNetwork(NetworkSpec(numeric_width=3, cardinalities=[], n_outputs=1, hidden=[16],
                                      ensemble=ensemble, task="regression"))


@pytest.mark.parametrize("ensemble", [1, 4])
def test_reuse_sees_an_in_place_change_of_the_reference_array(ensemble: int) -> None:
    network = _numbers_only(ensemble)
    numeric = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    categorical = np.zeros((300, 0), dtype=np.int64)
    reuse = FirstLayerReuse.build(network, torch.from_numpy(numeric), torch.from_numpy(categorical))
    assert reuse is not None
    numeric[:, 0] = numeric[::-1, 0].copy()  # what importance's _shuffled_predict does to the stacked rows
    got = reuse(torch.from_numpy(numeric), torch.from_numpy(categorical))
    torch.testing.assert_close(got, predict_outputs(network, torch.from_numpy(numeric),
                                                    torch.from_numpy(categorical)), rtol=1e-5, atol=1e-5)


def test_a_numbers_only_models_importance_matches_a_full_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400), "noise": rng.normal(size=400)})
    frame["y"] = frame["a"] * 2 + frame["b"] + rng.normal(size=400) * 0.1
    model = keel.fit(frame, target="y", config={"training.epochs": 3, "model.numeric_embedding": "none",
                                                "model.ensemble": 1}, quiet=True)
    features = model._features(frame)
    target = model.target_encoder.encode(frame["y"], "frame")
    reused = model._importance(features.numeric, features.categorical, target, None, "frame")
    monkeypatch.setattr(FirstLayerReuse, "build", lambda *args: None)
    full = model._importance(features.numeric, features.categorical, target, None, "frame")
    assert [f["name"] for f in reused["features"]] == [f["name"] for f in full["features"]]
    for mine, theirs in zip(reused["features"], full["features"]):
        assert mine["mean"] == pytest.approx(theirs["mean"], rel=1e-4, abs=1e-6)
