"""Audit (helper-47) of the last issue-14 text changes: text.encoder bag, Model.embed_encoders, the fine-tuned
tokenizer kept in the weights, keel info's encoders and the streamed run's notes.

The five findings were fixed in the same session; their tests pass now. What it checked and found right (bag ONNX parity on
texts far beyond the cut with unseen terms between known ones, bag with balanced / best / bagging, a fine-tuned
model saved, loaded, exported and run by keel.runtime with its checkpoint deleted, the uint8 tokenizer through
safetensors, two embedded encoders, embedding the default package model, a re-save over the same directory)
was run by hand during the audit and is not repeated here.

Tiny models throughout: a 2-layer BERT of width 16 (MiniLM's tokenizer), 2 epochs, hidden [16].
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import keel
from keel.config import TextConfig
from keel.errors import ConfigError
from tests.tiny_bert import write_tiny_bert
from tests.unit.data.test_text import reviews

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = {"preset": "fast", "training.epochs": 2, "model.hidden": [16]}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT in the sentence-transformers layout, with MiniLM's tokenizer."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_a_loaded_model_with_an_embedded_encoder_saved_elsewhere_does_not_depend_on_the_old_directory(
        tiny_model: Path, tmp_path: Path) -> None:
    model = keel.fit(reviews(80), target="label", quiet=True, importance=False, config={
        **FAST, "text.encoder": "pretrained", "text.dim": 4, "text.cache_dir": "off", "text.model_path": str(tiny_model)})
    model.save(tmp_path / "a")
    assert model.embed_encoders() == ["review"]
    rows = reviews(10, seed=3)
    expected = model.predict_proba(rows)
    keel.load(tmp_path / "a").save(tmp_path / "b")  # a copy of the model, as any user makes one
    shutil.rmtree(tmp_path / "a")
    np.testing.assert_allclose(keel.load(tmp_path / "b").predict_proba(rows), expected, atol=1e-6)


def test_a_bag_token_limit_keel_does_not_build_is_a_config_error() -> None:
    frame = reviews(40)
    with pytest.raises(ConfigError, match="max_tokens"):
        keel.fit(frame, target="label", quiet=True, importance=False, config={
            **FAST, "text.encoder": "bag", "text.dim": 8, "text.max_tokens": 100_001,
            "input_features": [{"name": "review", "type": "text"}, {"name": "noise", "type": "number"}]})


def test_a_streamed_bag_column_notes_how_many_training_texts_were_cut(tmp_path: Path) -> None:
    frame = reviews(6000)  # every text has more than 10 vocabulary terms: each one is cut
    frame.to_csv(tmp_path / "rows.csv", index=False)
    model = keel.fit(tmp_path / "rows.csv", target="label", quiet=True, importance=False, config={
        **FAST, "text.encoder": "bag", "text.dim": 8, "text.max_tokens": 10, "data.memory_budget": "1MiB"})
    assert any(note.startswith("streaming") for note in model.notes)
    rows = next(note for note in model.notes if note.startswith("rows:"))
    n_train = int(re.search(r"([\d,]+) for training", rows).group(1).replace(",", ""))  # type: ignore[union-attr]
    note = next(note for note in model.notes if "a bag of" in note)
    note = next(note for note in model.notes if "texts read in training cut" in note)
    found = re.search(r"([\d,]+) of the ([\d,]+) texts read in training cut at 10 terms", note)
    assert found is not None, note
    cut, read = (int(group.replace(",", "")) for group in found.groups())
    assert cut == read >= n_train, note  # every row was read (and cut), not only the fitted sample


def test_the_readme_knows_the_bag_encoder() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "(an embedding bag or a 1-D CNN) is not built yet" not in text
    assert "Two encoders (`text.encoder`)" not in text
    section = README.read_text(encoding="utf-8").split("### The ONNX file", 1)[1].split("\n### ", 1)[0]
    assert any("bag" in line for line in section.splitlines() if line.startswith("| text"))


def test_the_text_config_descriptions_cover_bag() -> None:
    fields = TextConfig.model_fields
    for name in ("max_tokens", "max_features", "dim"):
        assert "bag" in (fields[name].description or ""), name
