"""Every kind of column and encoder, saved, loaded, exported and read by the torch-free runtime: the same
predictions at each step. A bag text model once saved fine and could never be loaded again (a user's trial); each
path had its own tests, but none went from fit to load to the runtime for every encoder."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import keel
from keel.runtime import Predictor
from tests.tiny_bert import write_tiny_bert

FAST = {"preset": "fast", "model.hidden": [16], "training.epochs": 2, "training.batch_size": 32}
CASES: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    "tfidf with dates": (["num", "cat", "flag", "when", "text"], "y", FAST),
    "tfidf, no linear": (["num", "cat", "text"], "y", {**FAST, "text.linear": False}),
    "tfidf, regression": (["num", "cat", "text"], "price", FAST),
    "tfidf, binary": (["num", "cat", "text"], "bin", FAST),
    "bag": (["num", "cat", "text"], "y", {**FAST, "text.encoder": "bag", "text.dim": 8}),
    "pretrained, frozen": (["num", "text"], "y", {**FAST, "text.encoder": "pretrained", "text.cache_dir": "off"}),
    "pretrained, lora": (["num", "text"], "y", {**FAST, "text.encoder": "pretrained", "text.finetune": "lora"}),
    "pretrained, full": (["num", "text"], "price", {**FAST, "text.encoder": "pretrained", "text.finetune": "full"}),
    "image": (["num", "img"], "y", FAST),
    "balanced, bagged": (["num", "cat", "flag", "when", "text"], "y",
                         {"preset": "balanced", "training.epochs": 2, "training.bagging": 2, "model.hidden": [16, 16]}),
    "resnet": (["num", "cat", "when"], "price", {**FAST, "model.architecture": "resnet"}),
    "periodic ensemble": (["num", "cat"], "bin", {**FAST, "model.numeric_embedding": "periodic", "model.ensemble": 4}),
    "one-hot": (["num", "cat", "flag"], "y", {**FAST, "preprocessing.categorical_encoding": "onehot"}),
    "text declared a category": (["num", "text"], "y",
                                 {**FAST, "input_features": [{"name": "num"}, {"name": "text", "type": "category"}]}),
}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    root = tmp_path_factory.mktemp("matrix")
    rng = np.random.default_rng(0)
    n_rows = 160
    label = rng.integers(0, 3, n_rows)
    words = ["good", "bad", "great", "awful", "fine", "meh", "nice", "poor"]
    paths = []
    for index in range(n_rows):
        pixels = (rng.random((8, 8)) * 80 + label[index] * 60).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{index}.png")
        paths.append(str(root / f"{index}.png"))
    frame = pd.DataFrame({
        "num": label + rng.normal(0, 0.5, n_rows), "cat": rng.choice(list("abcdefgh"), n_rows),
        "flag": rng.choice(["yes", "no"], n_rows),
        "when": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n_rows), unit="D"),
        "text": [" ".join(rng.choice(words, 5)) + f" w{label[index]}" for index in range(n_rows)],
        "img": paths, "y": np.array(["lo", "mid", "hi"])[label],
        "price": label * 3.0 + rng.normal(0, 0.2, n_rows), "bin": label > 0,
    })
    frame.loc[rng.choice(n_rows, 8, replace=False), "num"] = np.nan
    frame.loc[rng.choice(n_rows, 8, replace=False), "text"] = None
    return frame, str(write_tiny_bert(root / "tiny-bert"))


def _outputs(model: Any, rows: pd.DataFrame, task: str) -> np.ndarray:
    return np.asarray(model.predict(rows) if task == "regression" else model.predict_proba(rows), dtype=np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_fit_save_load_export_and_the_runtime_agree(case: str, table: tuple[pd.DataFrame, str],
                                                    tmp_path: Path) -> None:
    frame, tiny_bert = table
    columns, target, config = CASES[case]
    if config.get("text.encoder") == "pretrained":
        config = {**config, "text.model_path": tiny_bert}
    data = frame[[*columns, target]]
    rows = data.sample(40, random_state=1).drop(columns=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keel.fit(data, target=target, config=config, quiet=True)
        model.save(tmp_path / "m")
        loaded = keel.load(tmp_path / "m")
        expected = _outputs(model, rows, model.task)
        np.testing.assert_array_equal(_outputs(loaded, rows, model.task), expected)
        assert loaded.export().parity["ok"]
        runtime = Predictor.load(tmp_path / "m")
        np.testing.assert_allclose(_outputs(runtime, rows, model.task), expected, rtol=1e-5, atol=1e-5)
