"""A randomly initialised 2-layer BERT in the sentence-transformers layout, with MiniLM's tokenizer: the pretrained
text encoder of the tests (no hub is reachable, and the real all-MiniLM-L6-v2 is slow to fine-tune)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from keel.data.pretrained import DEFAULT_MODEL, BertShape, resolve_model
from keel.nn.sentence import BertEncoder


def write_tiny_bert(directory: Path) -> Path:
    """Write the model's files into ``directory`` (created) and return it; its weights are the same every time."""
    directory.mkdir(parents=True, exist_ok=True)
    shape = BertShape(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
                      hidden_act="gelu")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **shape.__dict__}))
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    shutil.copy(resolve_model(DEFAULT_MODEL) / "tokenizer.json", directory / "tokenizer.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(BertEncoder(shape).state_dict(), str(directory / "model.safetensors"))
    return directory
