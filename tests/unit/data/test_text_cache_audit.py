"""Regression tests from the audit of the per-text embedding cache (keel.data.text._cached).

Three guard lines that test_text.py lets break unnoticed (the cut flags read back, the token limit in
the folder name, the shape checks on a shard): they pass today and fail when those lines go. The last
test fails on the code as audited: a cache directory whose path cannot be looked at fails the run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

import keel.model  # noqa: F401 - plugs the torch encoder into TextTransform
from keel.config import TextConfig
from keel.data.pretrained import DEFAULT_MODEL, BertShape, ModelFiles, resolve_model
from keel.data.text import TextTransform, _cached, _digest
from keel.nn.sentence import BertEncoder, SentenceEncoder

SHAPE = BertShape(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu")
LONG = [f"{'many words here ' * 40}number {index}" for index in range(3)]  # past 64 tokens: cut
SHORT = ["a short text", "another short one"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer BERT (64 positions, so 64 tokens at most) with MiniLM's tokenizer."""
    directory = tmp_path_factory.mktemp("encoder")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **SHAPE.__dict__}))
    shutil.copy(resolve_model(DEFAULT_MODEL) / "tokenizer.json", directory / "tokenizer.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(BertEncoder(SHAPE).state_dict(), str(directory / "model.safetensors"))
    return directory


def test_the_cut_flags_come_back_from_the_cache_and_the_note_counts_them(encoder_dir: Path, tmp_path: Path) -> None:
    encoder = SentenceEncoder(ModelFiles(str(encoder_dir)))
    fresh, hit = _cached(encoder, LONG + SHORT, str(tmp_path / "cache"))
    assert not hit and fresh.truncated == 3
    read, hit = _cached(encoder, SHORT + LONG, str(tmp_path / "cache"))
    assert hit and read.truncated == 3  # mutated (cut not read back): 0
    config = TextConfig(encoder="pretrained", model_path=str(encoder_dir), cache_dir=str(tmp_path / "cache"), dim=2)
    notes = [TextTransform("t", config).fit(pd.Series(LONG + SHORT)).notes[0] for _ in range(2)]
    assert notes[1].endswith("(read from the cache); 3 cut at 64 tokens."), notes
    assert notes[0].replace(" (read from the cache)", "") == notes[1].replace(" (read from the cache)", "")


def test_another_token_limit_does_not_read_the_vectors_of_the_first(encoder_dir: Path, tmp_path: Path) -> None:
    full = SentenceEncoder(ModelFiles(str(encoder_dir)))
    short = SentenceEncoder(ModelFiles(str(encoder_dir), max_tokens=8))
    assert full.sha256 == short.sha256  # same files: only the folder's token limit tells them apart
    _cached(full, LONG, str(tmp_path / "cache"))
    read, hit = _cached(short, LONG, str(tmp_path / "cache"))
    assert not hit  # mutated (folder without the limit): the 64-token vectors
    np.testing.assert_allclose(read.vectors, short.encode(LONG)[0], atol=1e-6)


@pytest.mark.parametrize("stored", [
    {"vectors": np.full((1, 8), 7.0, np.float32), "cut": np.ones(1, np.uint8)},  # another width
    {"vectors": np.full((2, 16), 7.0, np.float32), "cut": np.ones(1, np.uint8)},  # more rows than digests
    {"vectors": np.full((1, 16), 7.0, np.float32), "cut": np.ones(3, np.uint8)},  # cut of another length
])
def test_a_shard_of_another_shape_is_ignored(encoder_dir: Path, tmp_path: Path, stored: dict) -> None:
    encoder = SentenceEncoder(ModelFiles(str(encoder_dir)))
    fresh, _ = _cached(encoder, SHORT[:1], str(tmp_path / "cache"))
    folder = next((tmp_path / "cache").iterdir())
    digests = np.frombuffer(_digest(SHORT[0]), dtype=np.uint8).reshape(1, 32).copy()
    save_numpy({"digests": digests, **stored}, str(folder / "0000-read-first.safetensors"))
    read, hit = _cached(encoder, SHORT[:1], str(tmp_path / "cache"))
    assert hit and read.truncated == 0  # the good shard answers
    np.testing.assert_array_equal(read.vectors, fresh.vectors)


def test_a_cache_directory_that_cannot_be_looked_at_does_not_fail_the_run(encoder_dir: Path, tmp_path: Path) -> None:
    # For a user, a cache_dir under another user's home (mode 0750) makes Path.is_dir raise PermissionError;
    # root ignores modes, so a name too long for the file system stands in (is_dir raises ENAMETOOLONG).
    encoder = SentenceEncoder(ModelFiles(str(encoder_dir)))
    read, hit = _cached(encoder, SHORT, str(tmp_path / ("x" * 300)))  # audited: OSError from _read_cache
    assert not hit and read.vectors.shape == (2, SHAPE.hidden_size)
