"""Regression tests from the text-column audit (issue 14): each names the finding it guards.

Several fail on the code as audited (they describe the behaviour the fix should give); the two
mutation guards (most frequent terms kept, the model hash in the cache key) pass today and fail
when those lines are broken.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import keel
from keel.config import TextConfig
from keel.data.pretrained import DEFAULT_MODEL, BertShape, ModelFiles, resolve_model
from keel.data.text import TextTransform, _cached
from keel.errors import ConfigError
from keel.nn.sentence import BertEncoder, SentenceEncoder
from keel.train.guards import numeric_input_names

GOOD = ["great product works well", "love it excellent quality", "fantastic value highly recommend"]
BAD = ["terrible broke after a day", "awful quality do not buy", "waste of money very disappointed"]
SHAPE = BertShape(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu")


# Declared, so that small tables (whose training rows hold too few distinct texts to be inferred text) keep it.
DECLARED = {"input_features": [{"name": "review", "type": "text"}, {"name": "noise", "type": "auto"}]}


def reviews(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Templated reviews whose label only the text tells (as in test_text.py)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    texts = [" ".join(rng.choice(GOOD if y else BAD, 2)) + f" order {i} arrived on tuesday" for i, y in enumerate(label)]
    return pd.DataFrame({"review": texts, "noise": rng.normal(size=n), "label": label})


def make_encoder(directory: Path, seed: int = 0, pooling: dict[str, bool] | None = None) -> Path:
    """A random 1-layer BERT in the sentence-transformers layout with MiniLM's tokenizer."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **SHAPE.__dict__}))
    (directory / "modules.json").write_text(json.dumps([
        {"type": "sentence_transformers.models.Transformer"}, {"type": "sentence_transformers.models.Pooling"}]))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling/config.json").write_text(json.dumps(pooling or {"pooling_mode_mean_tokens": True}))
    shutil.copy(resolve_model(DEFAULT_MODEL) / "tokenizer.json", directory / "tokenizer.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_file(BertEncoder(SHAPE).state_dict(), str(directory / "model.safetensors"))
    return directory


# ---- 1. rank-deficient projections: components of (near) zero variance are blown up to unit variance ----
@pytest.mark.parametrize("train", [
    pd.Series(["good day"] * 100 + ["bad day"] * 100),  # two distinct texts, five terms
    reviews(120)["review"],  # the templated reviews: many terms always appear together
])
def test_an_unseen_text_stays_on_the_scale_of_the_training_rows(train: pd.Series) -> None:
    transform = TextTransform("t", TextConfig(dim=32)).fit(train)
    assert np.abs(transform.transform(train)[0]).max() < 10
    unseen = transform.transform(pd.Series(["day", "great", "good bad day", "love it"]))[0]
    assert np.abs(unseen).max() < 100  # audited: 1.7e7 (components whose training spread is float32 noise)


def test_a_model_does_not_answer_off_template_texts_with_certainty_from_noise() -> None:
    model = keel.fit(reviews(300), target="label", config={"preset": "fast", "training.epochs": 3}, quiet=True)
    probe = pd.DataFrame({"review": ["great", "awful", "love it"], "noise": 0.0})
    assert np.abs(model.preprocessor.transform(probe).numeric).max() < 100


# ---- 2. the encoder's identity: pooling and the token limit change embeddings without changing the hash ----
@pytest.mark.parametrize(("name", "content"), [
    ("1_Pooling/config.json", {"pooling_mode_cls_token": True}),
    ("sentence_bert_config.json", {"max_seq_length": 8}),
])
def test_a_change_that_alters_embeddings_changes_the_model_hash(tmp_path: Path, name: str, content: dict) -> None:
    directory = make_encoder(tmp_path / "encoder")
    before = SentenceEncoder(ModelFiles(str(directory)))
    (directory / name).write_text(json.dumps(content))
    after = SentenceEncoder(ModelFiles(str(directory)))
    text = ["a sentence long enough to be cut at eight tokens by the changed limit"]
    assert not np.allclose(before.encode(text)[0], after.encode(text)[0])  # the embeddings do change
    assert after.sha256 != before.sha256  # audited: equal, so a saved model and the cache cannot tell


# ---- 3. the cache key: texts are joined with NUL, so lists that join alike share an entry ----
def test_texts_containing_nul_do_not_share_a_cache_entry_with_other_texts(tmp_path: Path) -> None:
    encoder = SentenceEncoder(ModelFiles(str(make_encoder(tmp_path / "encoder"))))
    _cached(encoder, ["a\0b c", "d"], str(tmp_path / "cache"))
    read, hit = _cached(encoder, ["a", "b c\0d"], str(tmp_path / "cache"))
    assert not hit  # audited: a hit, returning the other list's embeddings (max error 0.77)
    np.testing.assert_allclose(read.vectors, encoder.encode(["a", "b c\0d"])[0], atol=1e-6)


def test_the_cache_key_holds_the_model_hash(tmp_path: Path) -> None:  # passes; guards a surviving mutation
    first = SentenceEncoder(ModelFiles(str(make_encoder(tmp_path / "one", seed=0))))
    second = SentenceEncoder(ModelFiles(str(make_encoder(tmp_path / "two", seed=1))))
    _cached(first, ["same text"], str(tmp_path / "cache"))
    read, hit = _cached(second, ["same text"], str(tmp_path / "cache"))
    assert not hit and np.allclose(read.vectors, second.encode(["same text"])[0], atol=1e-6)


def _unwritable(tmp_path: Path) -> str:
    """A directory no file can be written into (root ignores modes: then /sys, which refuses root too)."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    for candidate in (directory, Path("/sys")):
        try:
            (candidate / "probe").write_bytes(b"")
        except OSError:
            return str(candidate)
        (candidate / "probe").unlink()
    pytest.skip("no unwritable directory here")


def test_an_unwritable_cache_directory_does_not_fail_the_run(tmp_path: Path) -> None:
    encoder = SentenceEncoder(ModelFiles(str(make_encoder(tmp_path / "encoder"))))
    vectors, hit = _cached(encoder, ["a text to embed"], _unwritable(tmp_path))  # audited: SafetensorError
    assert not hit and vectors.vectors.shape == (1, SHAPE.hidden_size)


# ---- 4. what a saved model keeps of the text settings ----
def test_a_loaded_model_keeps_the_cache_setting_it_was_trained_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = {**DECLARED, "preset": "fast", "training.epochs": 1, "text.encoder": "pretrained", "text.dim": 2,
              "text.cache_dir": "off",
              "text.model_path": str(make_encoder(tmp_path / "encoder"))}
    frame = reviews(60)
    keel.fit(frame, target="label", config=config, quiet=True).save(tmp_path / "m")
    keel.load(tmp_path / "m").predict(frame)
    assert not list((tmp_path / "xdg").rglob("*.safetensors"))  # audited: predicting wrote the default cache


def test_a_relative_model_path_still_resolves_from_another_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_encoder(tmp_path / "here" / "encoder")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    frame = reviews(60)
    keel.fit(frame, target="label", config={**DECLARED, "preset": "fast", "training.epochs": 1,
                                            "text.encoder": "pretrained", "text.dim": 2, "text.cache_dir": "off", "text.model_path": "encoder"},
             quiet=True).save(tmp_path / "m")
    monkeypatch.chdir(tmp_path / "elsewhere")
    keel.load(tmp_path / "m").predict(frame)  # audited: ConfigError "text.model_path 'encoder' is not a directory"


# ---- 5. a model directory's config values are checked before anything is allocated ----
@pytest.mark.parametrize("change", [{"vocab_size": 10**13}, {"num_attention_heads": 3}, {"hidden_size": -1}])
def test_impossible_bert_sizes_are_a_config_error(tmp_path: Path, change: dict) -> None:
    directory = make_encoder(tmp_path / "encoder")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **SHAPE.__dict__, **change}))
    with pytest.raises(ConfigError):  # audited: RuntimeError from the allocator or a reshape
        SentenceEncoder(ModelFiles(str(directory))).encode(["some text"])


# ---- 6. smaller things ----
def test_the_most_frequent_terms_are_the_ones_kept() -> None:  # passes; guards a surviving mutation
    texts = pd.Series(["cat sat"] * 5 + ["dog sat"] * 3 + ["bird flew"] * 2)
    assert TextTransform("t", TextConfig(max_features=2)).fit(texts).vocabulary == ["sat", "cat"]


def test_every_numeric_input_column_of_a_text_column_has_a_name() -> None:
    model = keel.fit(reviews(60), target="label", config={**DECLARED, "preset": "fast", "training.epochs": 1, "text.dim": 3},
                     quiet=True)
    assert len(numeric_input_names(model.preprocessor)) == model.preprocessor.numeric_width  # audited: 2 names, 5 columns


def test_a_streamed_run_notes_its_embedding_like_an_in_memory_one(tmp_path: Path) -> None:
    frame = reviews(3000)
    frame["review"] = frame["review"] + " " + frame["review"].str[::-1]
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    model = keel.fit(str(tmp_path / "reviews.csv"), target="label", quiet=True, config={
        "preset": "fast", "training.epochs": 1, "text.dim": 2, "data.memory_budget": "1MiB", "text.encoder": "pretrained",
        "text.model_path": str(make_encoder(tmp_path / "encoder")), "text.cache_dir": str(tmp_path / "cache")})
    assert any("stream" in note.lower() for note in model.notes)  # the budget did stream it
    assert any("distinct training texts embedded" in note for note in model.notes)  # audited: absent when streamed

