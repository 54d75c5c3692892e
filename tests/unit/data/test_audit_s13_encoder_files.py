"""Audit s13: claims of the hostile-encoder commit that no test pinned (the 64 MB cap on an encoder's JSON files,
'up to 1 epoch' in the preset note)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import keel
from keel.data.pretrained import MAX_JSON_BYTES, read_text
from keel.errors import ConfigError


def test_an_encoder_json_file_over_64_mb_is_refused_without_reading_it_all(tmp_path) -> None:
    big = tmp_path / "config.json"
    with open(big, "wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_JSON_BYTES + 10)
    with pytest.raises(ConfigError, match="holds more than 67,108,864 bytes"):
        read_text(big)
    exact = tmp_path / "ok.json"
    exact.write_bytes(b" " * 10)
    assert read_text(exact) == " " * 10


def test_a_device_or_pipe_is_no_encoder_json_file(tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    for path in (tmp_path / "pipe.json", tmp_path):
        with pytest.raises(ConfigError, match="not a regular file"):
            read_text(path)
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "missing.json")


def test_the_preset_note_says_one_epoch_in_the_singular() -> None:
    frame = pd.DataFrame({"x": np.arange(60.0), "y": np.arange(60) % 2})
    model = keel.fit(frame, target="y", quiet=True, importance=False, config={"preset": "fast", "training.epochs": 1})
    text = " ".join(model.notes)
    assert "up to 1 epoch" in text and "up to 1 epochs" not in text, model.notes
