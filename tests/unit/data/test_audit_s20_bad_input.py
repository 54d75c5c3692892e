"""Audit s20 (issue 14, bad input): a pretrained path that does not exist or is not a model is one line naming the
column, exit 2, nothing saved. The text and image encoders' path errors named the setting but not the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.errors import ConfigError

CONFIG = {"preset": "fast", "training.epochs": 1}
TEXT = [{"name": "review", "type": "text"}, {"name": "x"}]


def _table(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = np.array(["good", "bad", "fine", "poor", "great", "awful"])
    return pd.DataFrame({"review": [" ".join(rng.choice(words, 4)) + f" item {i}" for i in range(n)],
                         "x": rng.normal(size=n), "y": np.arange(n) % 2})


@pytest.mark.parametrize("where", ["nowhere", "folder"])
def test_a_text_model_path_that_is_no_model_names_the_column(tmp_path: Path, where: str) -> None:
    (tmp_path / "folder").mkdir()  # a directory, but no sentence-transformers model
    config = {**CONFIG, "input_features": TEXT, "text.encoder": "pretrained", "text.model_path": str(tmp_path / where)}
    with pytest.raises(ConfigError, match="^text column 'review': "):  # audited: the setting, not the column
        keel.fit(_table(), target="y", config=config, quiet=True)


def test_an_image_model_path_that_is_no_resnet_file_names_the_column(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"not a pickle keel would read")
    frame = pd.DataFrame({"photo": [np.full((8, 8), i % 7, dtype=np.uint8) for i in range(40)],
                          "y": np.arange(40) % 2})
    config = {**CONFIG, "image.encoder": "resnet", "image.model_path": str(tmp_path / "weights.pt")}
    with pytest.raises(ConfigError, match="^image column 'photo': image.model_path .* pickle"):
        keel.fit(frame, target="y", config=config, quiet=True)


def test_the_cli_says_it_in_one_line_exits_2_and_saves_nothing(tmp_path: Path) -> None:
    data = tmp_path / "reviews.csv"
    _table().to_csv(data, index=False)
    (tmp_path / "keel.yaml").write_text("input_features: [{name: review, type: text}, {name: x}]\n")
    result = CliRunner().invoke(app, ["train", str(data), "--target", "y", "--preset", "fast", "--output",
                                      str(tmp_path / "model"), "--config", str(tmp_path / "keel.yaml"),
                                      "--set", "text.encoder=pretrained",
                                      "--set", f"text.model_path={tmp_path / 'nowhere'}"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1
    assert errors[0].startswith("error: text column 'review': text.model_path") and "never downloads" in errors[0]
    assert not (tmp_path / "model").exists()
