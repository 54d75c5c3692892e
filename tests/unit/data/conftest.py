"""Fixtures shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_bert import write_tiny_bert


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT in the sentence-transformers layout, with MiniLM's tokenizer."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
