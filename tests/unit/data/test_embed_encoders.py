"""Model.embed_encoders / keel train --embed-encoders: a frozen pretrained text column's encoder inside the model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keel
from keel.errors import ConfigError
from tests.unit.data.test_text import reviews

CONFIG = {"preset": "fast", "training.epochs": 2, "model.hidden": [16], "text.encoder": "pretrained", "text.dim": 4,
          "text.cache_dir": "off"}


def test_an_embedded_encoder_lets_the_model_predict_after_its_path_is_gone(tiny_model: Path, tmp_path: Path) -> None:
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_model, encoder)
    model = keel.fit(reviews(80), target="label", quiet=True, importance=False,
                     config={**CONFIG, "text.model_path": str(encoder)})
    model.save(tmp_path / "m")
    assert model.embed_encoders() == ["review"]
    assert (tmp_path / "m" / "encoders" / "0" / "model.safetensors").is_file()
    expected = model.predict_proba(reviews(20, seed=2))
    shutil.rmtree(encoder)  # the encoder's own path is gone: the model reads its copy
    again = keel.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(reviews(20, seed=2)), expected)
    # without the copy, the missing path is the error it always was
    shutil.copytree(tiny_model, encoder)
    bare = keel.fit(reviews(80), target="label", quiet=True, importance=False,
                    config={**CONFIG, "text.model_path": str(encoder)})
    bare.save(tmp_path / "bare")
    shutil.rmtree(encoder)
    # It names where the model was trained to find its encoder, and that the copy would have helped.
    with pytest.raises(ConfigError, match=r"trained with, at .*encoder, which cannot be used here: .*not a directory.*"
                                        r"--embed-encoders"):
        keel.load(tmp_path / "bare").predict_proba(reviews(5))


def test_keel_train_embed_encoders(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "reviews.csv"
    reviews(80).to_csv(data, index=False)
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_model, encoder)
    result = subprocess.run(
        [sys.executable, "-m", "keel", "train", str(data), "--target", "label", "--output", str(tmp_path / "m"),
         "--no-report", "--embed-encoders", "--preset", "fast", "--set", "training.epochs=2",
         "--set", "text.encoder=pretrained", "--set", f"text.model_path={encoder}", "--set", f"text.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "embedded the encoder(s) of ['review']" in result.stdout
    shutil.rmtree(encoder)
    predicted = subprocess.run([sys.executable, "-m", "keel", "predict", str(tmp_path / "m"), str(data), "--output",
                                str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
