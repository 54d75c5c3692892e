"""Audit s13: the ONNX metadata of text columns is checked for its types and sizes (keel.text, keel.tokens), but
not against the graph it feeds: a vocabulary longer than the graph's term table, or a tokenizer whose ids pass its
embedding table, loads and then crashes every prediction with onnxruntime's InvalidArgument (not a KeelError;
the server answers 500). The fine-tuned Python path got exactly this check in the same commit (tokenizer_problem)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import KeelError
from keel.runtime import Predictor
from tests.security.corpus import edit_onnx
from tests.tiny_bert import write_tiny_bert

_WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"review": [" ".join(rng.choice(_WORDS, 4)) for _ in range(n)], "x": rng.normal(size=n),
                         "y": rng.integers(0, 2, n)})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit13-meta")
    bert = write_tiny_bert(root / "bert")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, extra in [("tfidf", {}), ("pretrained", {"text.encoder": "pretrained", "text.model_path": str(bert),
                                                           "text.cache_dir": str(root / "cache"), "text.dim": 4})]:
            model = keel.fit(_frame(80), target="y", quiet=True, importance=False, output=root / name, config={
                "preset": "fast", "training.epochs": 1, "model.hidden": [8],
                "input_features": [{"name": "review", "type": "text"}, {"name": "x"}], **extra})
            model.export()
            out[name] = root / name
    return out


def _longer_vocabulary(proto: Any, case_dir: Path) -> None:
    item = next(item for item in proto.metadata_props if item.key == "keel.text")
    texts = json.loads(item.value)
    texts["review"]["vocabulary"] += [f"w{index}" for index in range(50)]
    item.value = json.dumps(texts)


def _far_token(proto: Any, case_dir: Path) -> None:
    item = next(item for item in proto.metadata_props if item.key == "keel.tokens")
    tokens = json.loads(item.value)
    tokenizer = json.loads(tokens["review"]["tokenizer"])
    tokenizer["model"]["vocab"]["cat"] = 999_999
    tokens["review"]["tokenizer"] = json.dumps(tokenizer)
    item.value = json.dumps(tokens)


@pytest.mark.parametrize(("which", "attack"), [("tfidf", _longer_vocabulary), ("pretrained", _far_token)],
                         ids=["keel.text-vocabulary-longer-than-the-graph", "keel.tokens-id-beyond-the-embeddings"])
def test_text_metadata_that_does_not_fit_the_graph_is_a_keel_error_not_an_onnxruntime_crash(
        exported, tmp_path, which, attack) -> None:
    model = tmp_path / which
    shutil.copytree(exported[which], model)
    edit_onnx(attack)(model, tmp_path)  # checksums rewritten, as an attacker would
    rows = pd.DataFrame({"review": ["the cat sat", ""], "x": [0.0, 1.0]})
    try:
        predictor = Predictor.load(model)
    except KeelError:
        return  # refused at load: what the README's security section promises
    with pytest.raises(KeelError):
        predictor.predict_proba(rows)
