"""Audit s20: text.cache_dir's documented value ``off`` was refused as YAML reads it (false): `--set
text.cache_dir=off` and ``cache_dir: off`` in a config file both ended in 'Input should be a valid string'."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import load_config
from keel.data.text import _cache_directory


@pytest.mark.parametrize("written", ["off", "'off'", "no", "false"])
def test_cache_dir_off_is_read_as_off_from_a_set_and_from_a_file(tmp_path: Path, written: str) -> None:
    assert load_config(overrides=[f"text.cache_dir={written}"]).text.cache_dir == "off"  # audited: ConfigError
    (tmp_path / "keel.yaml").write_text(f"text:\n  encoder: pretrained\n  cache_dir: {written}\n")
    settings = load_config(tmp_path / "keel.yaml")
    assert settings.text.cache_dir == "off" and _cache_directory(settings.text.cache_dir) is None


def test_a_cache_directory_named_as_usual_is_kept(tmp_path: Path) -> None:
    assert load_config({"text.cache_dir": str(tmp_path)}).text.cache_dir == str(tmp_path)
    assert load_config({"text.cache_dir": None}).text.cache_dir is None
