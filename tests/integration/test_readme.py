"""The README cannot rot: its code runs, its config example is the shipped file, every key is documented."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from keel.cli import app
from keel.config import PRESETS, Config, load_config
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
KEEL = Path(sys.executable).parent / "keel"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(workdir, index) -> None:
    exec(compile(blocks("python")[index], f"README python block {index}", "exec"), {})


def test_console_examples_run_in_order(workdir) -> None:
    commands = [line[2:] for block in blocks("console") for line in block.splitlines() if line.startswith("$ ")]
    assert len(commands) >= 8
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "keel"
        result = subprocess.run([str(KEEL), *words[1:]], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr}"


def test_yaml_example_is_the_shipped_config() -> None:
    assert blocks("yaml")[0] == (ROOT / "examples" / "penguins.yaml").read_text()


def test_every_config_key_is_documented() -> None:
    sections = ("preprocessing", "model", "training", "data", "text", "image", "tune")
    for name in set(Config.model_fields) - set(sections):
        assert f"| `{name}` |" in README, name
    for section in sections:
        for name in Config.model_fields[section].annotation.model_fields:  # type: ignore[union-attr]
            assert f"| `{section}.{name}` |" in README, f"{section}.{name}"


def test_every_command_and_option_is_documented() -> None:
    group = typer.main.get_command(app)
    assert set(group.commands) == {"train", "evaluate", "predict", "info", "config", "demo", "export", "serve", "report", "runs", "compare", "tune"}
    for name, command in group.commands.items():
        assert f"### `keel {name}" in README, name
        for parameter in command.params:
            for flag in getattr(parameter, "opts", []):
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in README, f"keel {name} {flag}"


def _cell(value: object) -> str:
    """A value as the README's tables write it: `yaml-ish` in backticks, or "empty" for None."""
    if value is None:
        return "empty"
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`"


def test_config_tables_show_each_presets_values() -> None:
    # Each section row is generated from the code: | `key` | fast | balanced | best | ...; a failure
    # message is the row's expected start, to paste into the README.
    resolved = {name: load_config({"preset": name}).model_dump(mode="json") for name in PRESETS}
    assert list(PRESETS) == ["fast", "balanced", "best"]
    assert README.count("| key | fast | balanced | best | values | what it does |") == 3
    for section in ("preprocessing", "model", "training", "data", "text", "image", "tune"):
        for name in resolved["fast"][section]:
            row = f"| `{section}.{name}` | " + " | ".join(_cell(resolved[p][section][name]) for p in PRESETS) + " | "
            assert README.count(f"| `{section}.{name}` |") == 1 and row in README, row
    for name, field in Config.model_fields.items():
        if name not in ("preprocessing", "model", "training", "data", "text", "image", "tune"):
            row = f"| `{name}` | {_cell(field.default)} | "
            assert row in README, row


def test_the_target_notes_quoted_in_the_readme_are_the_codes() -> None:
    """The whole-number task note, the unstratified split's reason and the undefined ROC-AUC's are quoted as
    the code writes them (the README wraps lines, so spaces are compared loosely)."""
    import numpy as np

    from keel.data.schema import integer_classes_note
    from keel.data.split import split_rows
    from keel.evaluate.metrics import classification_metrics, undefined

    text = " ".join(README.split())
    assert f"`{integer_classes_note(list(range(9)), 'hospital', 'auto', 'multiclass')}`" in text
    lonely = np.r_[np.repeat([0, 1], 50), 2]
    split = split_rows(101, validation=0.1, test=0.2, seed=0, classes=lonely, labels=["'a'", "'b'", "'x'"])
    assert f"`(a random split, {split.unstratified})`" in text
    many = split_rows(40, validation=0.1, test=0.2, seed=0, classes=np.repeat(np.arange(20), 2))
    assert f"`{str(many.unstratified).removeprefix('not stratified: ')}`" in text
    metrics = classification_metrics(np.array([0, 1]), np.full((2, 3), 1 / 3), ["Adelie", "Gentoo", "Chinstrap"])
    assert f"`{undefined(metrics, 'roc_auc')}`" in text
