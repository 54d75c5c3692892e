"""Audit (second pass) of permutation importance reusing the first layer (keel.nn.network.FirstLayerReuse) on
paths the first audit did not check: text columns (tfidf, bag, a fine-tuned tiny BERT), an image column, date
columns, a bagged model under bfloat16, a pruned model, a saved and loaded model and the test-file path
(Model._importance_on). Each compares importance with the reuse against importance with FirstLayerReuse.build
patched to return None (a full forward pass for every shuffled prediction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from keel.nn.network import FirstLayerReuse, NetworkBag
from tests.tiny_bert import write_tiny_bert

GOOD = ["great", "lovely", "superb", "excellent", "perfect"]
BAD = ["awful", "broken", "terrible", "late", "poor"]
_BUILD = FirstLayerReuse.build  # bound before any test patches it
BASE = {"preset": "fast", "model.hidden": [16], "model.dropout": 0.0, "training.epochs": 2,
        "training.batch_size": 32, "training.lr": 0.01, "training.test_split": 0.0}


def frame_of(n_rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n_rows)
    return pd.DataFrame({
        "review": [" ".join(rng.choice(GOOD if y else BAD, 2)) + f" order {i % 7} arrived" for i, y in enumerate(label)],
        "pic": [rng.integers(0, 120, (8, 8)).astype(np.uint8) + np.uint8(100 * y) for y in label],
        "x": rng.normal(size=n_rows) + label,
        "noise": rng.normal(size=n_rows),
        "city": rng.choice(["oslo", "rome", "lima"], n_rows),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n_rows) + 30 * label, unit="D"),
        "label": label})


def _compare(model: keel.model.Model, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch,
             precision: str = "float32", rel: float = 1e-4) -> dict[str, Any]:
    features = model._features(frame)
    target = model.target_encoder.encode(frame[model.target], "frame")
    built: list[bool] = []
    original = _BUILD

    def spy(*args: Any) -> Any:
        reuse = original(*args)
        built.append(reuse is not None)
        return reuse

    monkeypatch.setattr(FirstLayerReuse, "build", spy)
    reused = model._importance(features.numeric.copy(), features.categorical.copy(), target, None, "frame",
                               precision=precision)
    assert built == [True], "the reuse was not used: this test checks nothing"
    monkeypatch.setattr(FirstLayerReuse, "build", lambda *args: None)
    full = model._importance(features.numeric.copy(), features.categorical.copy(), target, None, "frame",
                             precision=precision)
    names = [f["name"] for f in full["features"]]
    if precision == "bfloat16":
        # bfloat16 keeps 8 bits of mantissa: the reuse's sums round differently from a full pass (as much as a
        # full bfloat16 pass differs from float32), so a row's class can flip; the means agree to a few rows and
        # features further apart than that keep their order.
        tolerance = 3 / (full["rows"] * full["repeats"])
        by_name = {f["name"]: f["mean"] for f in reused["features"]}
        for theirs in full["features"]:
            assert by_name[theirs["name"]] == pytest.approx(theirs["mean"], abs=tolerance), theirs["name"]
        means = [f["mean"] for f in full["features"]]
        assert all(by_name[a["name"]] >= by_name[b["name"]] for a, b in zip(full["features"], full["features"][1:])
                   if a["mean"] - b["mean"] > 2 * tolerance), means
        return full
    assert [f["name"] for f in reused["features"]] == names
    for mine, theirs in zip(reused["features"], full["features"]):
        assert mine["mean"] == pytest.approx(theirs["mean"], rel=rel, abs=1e-6), mine["name"]
    return full


def _fit(frame: pd.DataFrame, settings: dict[str, Any], columns: tuple[str, ...]) -> keel.model.Model:
    if "input_features" in settings:  # the text column declared, the others inferred
        settings = {**settings, "input_features": [{"name": name, "type": "text" if name == "review" else "auto"}
                                                   for name in columns]}
    return keel.fit(frame[[*columns, "label"]], target="label", config={**BASE, **settings}, quiet=True,
                    importance=False)


@pytest.mark.parametrize("encoder", ["tfidf", "bag"])
def test_text_columns(encoder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = frame_of()
    model = _fit(frame, {"text.encoder": encoder, "input_features": [{"name": "review", "type": "text"}]},
                 ("review", "x", "noise"))
    full = _compare(model, frame, monkeypatch)
    assert {f["name"] for f in full["features"]} >= {"review", "x", "noise"}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_finetuned_tiny_bert(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = frame_of(120)
    model = _fit(frame, {"text.encoder": "pretrained", "text.model_path": str(tiny_bert), "text.finetune": "lora",
                         "text.max_tokens": 16, "text.lr": 1e-2,
                         "input_features": [{"name": "review", "type": "text"}]}, ("review", "x"))
    assert model.network.spec.texts  # the encoder is in the network
    _compare(model, frame, monkeypatch)


def test_image_and_date_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = frame_of(160)
    model = _fit(frame, {"image.dim": 8}, ("pic", "x", "when", "city"))
    assert model.network.spec.images
    _compare(model, frame, monkeypatch)


def test_dates_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = frame_of(300)
    frame["other"] = frame["when"] + pd.to_timedelta(np.random.default_rng(1).integers(0, 50, len(frame)), unit="D")
    model = _fit(frame, {"model.numeric_embedding": "piecewise_linear"}, ("when", "other", "x"))
    _compare(model, frame, monkeypatch)


def test_bagged_networks_under_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = frame_of(300)
    model = _fit(frame, {"training.bagging": 3, "model.ensemble": 4, "model.numeric_embedding": "piecewise_linear"},
                 ("x", "noise", "city", "when"))
    assert isinstance(model.network, NetworkBag)
    # bfloat16 has 8 bits of mantissa: the sums differ by its rounding, not 1e-4
    _compare(model, frame, monkeypatch, precision="bfloat16")


def test_bagged_networks_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = frame_of(300)
    model = _fit(frame, {"training.bagging": 2, "model.ensemble": 4}, ("x", "noise", "city", "when"))
    assert isinstance(model.network, NetworkBag)
    _compare(model, frame, monkeypatch)


def test_pruned_saved_loaded_and_test_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.export.prune import prune

    frame = frame_of(300)
    model = _fit(frame, {"model.hidden": [32, 16], "model.numeric_embedding": "piecewise_linear"},
                 ("x", "noise", "city", "when"))
    pruned = prune(model, 0.5)
    pruned = getattr(pruned, "model", pruned)
    assert pruned.network.spec.inner or pruned.network.mlp[0].out_features < 32
    _compare(pruned, frame, monkeypatch)
    model.save(tmp_path / "m")
    loaded = keel.load(tmp_path / "m")
    _compare(loaded, frame, monkeypatch)
    # the test-file path: _importance_on with and without reuse
    test = frame_of(200, seed=5)[["x", "noise", "city", "when", "label"]]
    test.attrs["source"] = str(tmp_path / "test.csv")
    monkeypatch.undo()
    reused = loaded._importance_on(test)
    monkeypatch.setattr(FirstLayerReuse, "build", lambda *args: None)
    full = loaded._importance_on(test)
    assert [f["name"] for f in reused["features"]] == [f["name"] for f in full["features"]]
    for mine, theirs in zip(reused["features"], full["features"]):
        assert mine["mean"] == pytest.approx(theirs["mean"], rel=1e-4, abs=1e-6)
