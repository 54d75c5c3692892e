"""Audit s20 (issue 14): sentence-transformers directories keel accepted but ran another way than they declare, or
crashed on.

keel read only the legacy cls flag of 1_Pooling/config.json and the names in modules.json, not their order or where
the Pooling module keeps its settings: lasttoken, weighted-mean or concatenated (mean and cls) pooling, sentence-
transformers' own ``"pooling_mode": "cls"``, Normalize before Pooling and a Pooling folder elsewhere were all run as
mean pooling, every embedding other than the model's without a word. do_lower_case over a cased tokenizer and a
default prompt were ignored the same way; a tokenizer beyond the encoder's vocabulary crashed with an IndexError.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import keel.model  # noqa: F401 - plugs the torch sentence encoder in
from keel.data.pretrained import ModelFiles
from keel.errors import ConfigError
from keel.nn.sentence import SentenceEncoder

TRANSFORMER, POOLING, NORMALIZE = (f"sentence_transformers.models.{name}" for name in ("Transformer", "Pooling",
                                                                                    "Normalize"))


def _copy(tiny_model: Path, tmp_path: Path, pooling: dict[str, Any] | None = None,
          modules: list[dict[str, str]] | None = None) -> Path:
    directory = tmp_path / "model"
    shutil.copytree(tiny_model, directory)
    if pooling is not None:
        (directory / "1_Pooling").mkdir()
        (directory / "1_Pooling/config.json").write_text(json.dumps(pooling))
    if modules is not None:
        (directory / "modules.json").write_text(json.dumps(modules))
    return directory


@pytest.mark.parametrize(("pooling", "modules", "message"), [
    ({"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}, None, "lasttoken pooling"),
    ({"pooling_mode_weightedmean_tokens": True, "pooling_mode_mean_tokens": False}, None, "weightedmean pooling"),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, None, "cls and mean pooling"),
    ({"pooling_mode": ["mean", "cls"]}, None, "mean and cls pooling"),
    ({"pooling_mode": "lasttoken"}, None, "lasttoken pooling"),
    (None, [{"type": TRANSFORMER}, {"type": NORMALIZE}, {"type": POOLING}], "then Pooling, then optionally Normalize"),
    (None, [{"type": TRANSFORMER}], "then Pooling, then optionally Normalize"),
    (None, [{"type": TRANSFORMER}, {"type": POOLING}, {"type": POOLING}], "then Pooling, then optionally Normalize"),
    (None, [{"type": TRANSFORMER}, {"type": POOLING, "path": "2_Pooling"}], "reads them from '1_Pooling'"),
])
def test_a_pooling_keel_does_not_run_as_declared_is_refused(tiny_model: Path, tmp_path: Path, pooling: Any,
                                                           modules: Any, message: str) -> None:
    directory = _copy(tiny_model, tmp_path, pooling, modules)
    with pytest.raises(ConfigError, match=message):
        ModelFiles(str(directory))  # audited: accepted, and run as mean pooling


def test_a_directory_saved_by_a_newer_sentence_transformers_is_refused_saying_so(tiny_model: Path,
                                                                                 tmp_path: Path) -> None:
    # sentence-transformers 6.2 (installed here) saves modules.json with these paths and its token limit in
    # tokenizer_config.json; the message said "keel runs a Transformer, then Pooling", which it names.
    newer = [{"type": "sentence_transformers.base.modules.transformer.Transformer", "path": ""},
             {"type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling", "path": "1_Pooling"},
             {"type": "sentence_transformers.base.modules.normalize.Normalize", "path": "2_Normalize"}]
    directory = _copy(tiny_model, tmp_path, {"pooling_mode": "mean"}, newer)
    with pytest.raises(ConfigError, match="a layout newer than keel reads.*as published"):
        ModelFiles(str(directory))


@pytest.mark.parametrize("declare", [
    lambda: {"pooling_mode": "cls"},  # sentence-transformers 6 writes this
    lambda: {"pooling_mode": ["cls"]},
    lambda: {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},  # and before 6, this
])
def test_cls_pooling_is_read_in_either_of_sentence_transformers_spellings(
        tiny_model: Path, tmp_path: Path, declare: Callable[[], dict[str, Any]]) -> None:
    directory = _copy(tiny_model, tmp_path, declare())
    files = ModelFiles(str(directory))
    assert files.pooling == "cls"  # audited: "pooling_mode": "cls" was read as mean
    mean = SentenceEncoder(ModelFiles(str(tiny_model))).encode(["a short text about cats"])[0]
    assert not np.allclose(SentenceEncoder(files).encode(["a short text about cats"])[0], mean)


@pytest.mark.parametrize("pooling", [None, {}, {"pooling_mode": "mean"}, {"pooling_mode_mean_tokens": True},
                                     {"pooling_mode_mean_tokens": False}])
def test_mean_pooling_in_every_spelling_is_still_accepted(tiny_model: Path, tmp_path: Path, pooling: Any) -> None:
    assert ModelFiles(str(_copy(tiny_model, tmp_path, pooling))).pooling == "mean"


def _normalizer(directory: Path, normalizer: dict[str, Any]) -> None:
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    (directory / "tokenizer.json").write_text(json.dumps({**tokenizer, "normalizer": normalizer}))


CASED = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None,
         "lowercase": False}


@pytest.mark.parametrize(("normalizer", "refused"), [
    (None, False),  # MiniLM's tokenizer lower-cases already: do_lower_case changes nothing
    ({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}, False),
    (CASED, True),
])
def test_do_lower_case_over_a_tokenizer_that_keeps_case_is_refused(tiny_model: Path, tmp_path: Path,
                                                                   normalizer: Any, refused: bool) -> None:
    """sentence-transformers lower-cases the texts before such a tokenizer; keel tokenised them as they are."""
    directory = _copy(tiny_model, tmp_path)
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": True}))
    if normalizer is not None:
        _normalizer(directory, normalizer)
    if refused:
        with pytest.raises(ConfigError, match="do_lower_case"):
            ModelFiles(str(directory))  # audited: accepted, "Cats" and "cats" embedded apart
    else:
        ModelFiles(str(directory))


def test_a_tokenizer_that_keeps_case_is_accepted_without_do_lower_case(tiny_model: Path, tmp_path: Path) -> None:
    directory = _copy(tiny_model, tmp_path)
    _normalizer(directory, CASED)
    encoder = SentenceEncoder(ModelFiles(str(directory)))
    vectors = encoder.encode(["Cats", "cats"])[0]
    assert not np.allclose(vectors[0], vectors[1])  # the tokenizer keeps case, as the model was trained


@pytest.mark.parametrize(("settings", "refused"), [
    ({"default_prompt_name": "query", "prompts": {"query": "query: ", "document": ""}}, True),
    ({"default_prompt_name": "document", "prompts": {"query": "query: ", "document": ""}}, False),  # empty prompt
    ({"default_prompt_name": None, "prompts": {"query": "query: "}}, False),  # sentence-transformers 6 writes this
    ({"__version__": {"sentence_transformers": "2.0.0"}}, False),  # all-MiniLM-L6-v2's
])
def test_a_default_prompt_keel_would_not_put_before_each_text_is_refused(tiny_model: Path, tmp_path: Path,
                                                                        settings: dict[str, Any], refused: bool) -> None:
    directory = _copy(tiny_model, tmp_path)
    (directory / "config_sentence_transformers.json").write_text(json.dumps(settings))
    if refused:
        with pytest.raises(ConfigError, match="default prompt 'query'"):
            ModelFiles(str(directory))  # audited: accepted, every text embedded without the model's prompt
    else:
        ModelFiles(str(directory))


def test_a_prompt_file_put_into_an_embedded_encoder_is_refused_at_load(tiny_model: Path, tmp_path: Path) -> None:
    """keel now reads config_sentence_transformers.json; an embedded encoder's files keel reads must all be ones
    keel.json lists (embedding copies no such file, so one there was put there after saving)."""
    import keel
    from keel.errors import ArtifactError
    from tests.unit.data.test_text import reviews

    config = {"preset": "fast", "training.epochs": 1, "model.hidden": [8], "text.encoder": "pretrained", "text.dim": 4,
              "text.cache_dir": "off", "text.model_path": str(tiny_model)}
    model = keel.fit(reviews(80), target="label", quiet=True, importance=False, config=config)
    model.save(tmp_path / "m")
    assert model.embed_encoders() == ["review"]
    keel.load(tmp_path / "m")
    (tmp_path / "m/encoders/0/config_sentence_transformers.json").write_text('{"default_prompt_name": null}')
    with pytest.raises(ArtifactError, match="config_sentence_transformers.json, which keel.json does not list"):
        keel.load(tmp_path / "m")


def test_a_tokenizer_beyond_the_encoders_vocabulary_is_refused_not_an_index_error(tmp_path: Path) -> None:
    """MiniLM's tokenizer (30,522 tokens) beside a BERT of 1,000: every text with a later token crashed with torch's
    'IndexError: index out of range in self', in training and in prediction."""
    import torch
    from safetensors.torch import save_file

    from keel.data.pretrained import DEFAULT_MODEL, BertShape, resolve_model
    from keel.nn.sentence import BertEncoder

    directory = tmp_path / "small"
    directory.mkdir()
    shape = BertShape(vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
                      hidden_act="gelu")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **shape.__dict__}))
    shutil.copy(resolve_model(DEFAULT_MODEL) / "tokenizer.json", directory / "tokenizer.json")
    with torch.random.fork_rng(devices=[]):
        save_file(BertEncoder(shape).state_dict(), str(directory / "model.safetensors"))
    with pytest.raises(ConfigError, match="token ids up to 30,521, but config.json's vocab_size is 1,000"):
        SentenceEncoder(ModelFiles(str(directory))).encode(["hello world"])
