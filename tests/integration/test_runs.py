"""`keel train` into runs/, `keel runs`, `keel compare` and `--log-file`, run for real in a temporary folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app
from tests.conftest import PENGUINS, make_classification_frame

KEEL = Path(sys.executable).parent / "keel"
TINY = ["--preset", "fast", "--set", "training.epochs=3", "--set", "model.hidden=[16]"]
RUN_NAME = r"penguins-\d{8}-\d{6}(-\d+)?"


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def keel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # Wide enough that the runs table does not fold its cells.
    return subprocess.run([str(KEEL), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Two runs trained with the default output, from a temporary current folder."""
    folder = tmp_path_factory.mktemp("runs-cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        first = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--log-file", "logs/run.log")
        second = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--set", "training.lr=0.01",
                        "--seed", "7", "--quiet")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    return folder, first.output, second.output


def test_train_without_output_writes_a_fresh_run_folder_and_says_where(workdir) -> None:
    folder, first, second = workdir
    names = sorted(path.name for path in (folder / "runs").iterdir())
    assert len(names) == 2 and all(re.fullmatch(RUN_NAME, name) for name in names)
    for name in names:
        assert (folder / "runs" / name / "keel.json").is_file()
    said = [re.search(rf"saved the model to (runs/{RUN_NAME})", text) for text in (first, second)]
    assert all(said), (first, second)  # even the --quiet run names the folder keel chose
    assert sorted(Path(match.group(1)).name for match in said if match) == names


def test_runs_lists_each_run_with_what_changed(workdir) -> None:
    folder, _, _ = workdir
    result = keel("runs", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "runs in runs, oldest first" in result.stdout
    assert "first run" in result.stdout
    assert "training.lr: 0.001 -> 0.01" in result.stdout and "training.seed: 42 -> 7" in result.stdout
    assert re.search(r"accuracy \d\.\d{4}", result.stdout) and "multiclass, fast" in result.stdout
    listed = json.loads(keel("runs", "--json", cwd=folder).stdout)
    assert [run["changes"] for run in listed][0] is None
    assert {change["key"] for change in listed[1]["changes"]} == {"training.lr", "training.seed"}
    for run in listed:
        assert run["task"] == "multiclass" and run["metric"]["name"] == "accuracy"
        assert sum(run["rows"][part] for part in ("train", "validation", "test")) == 344  # every penguin used once
        assert run["seconds"] > 0 and run["preset"] == "fast" and run["epochs"] == 3


def test_runs_of_an_empty_or_missing_folder_says_how_to_make_one(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    empty = keel("runs", "empty", cwd=tmp_path)
    assert empty.returncode == 0
    assert empty.stdout.strip() == ("no runs in empty yet; train one with: keel train DATA --target COLUMN "
                                    "(it writes runs/<data>-<time>/)")
    missing = keel("runs", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "no runs at runs: it does not exist" in missing.stderr


def test_a_corrupt_run_is_listed_with_its_problem(workdir, tmp_path) -> None:
    folder, _, _ = workdir
    runs = tmp_path / "runs"
    for path in (folder / "runs").iterdir():
        (runs / path.name).mkdir(parents=True)
        (runs / path.name / "keel.json").write_text((path / "keel.json").read_text())
    (runs / "zz-broken").mkdir()
    (runs / "zz-broken" / "keel.json").write_text('{"format": "keel-model", "format_version": 99}')
    result = keel("runs", cwd=tmp_path)
    assert result.returncode == 0
    assert "cannot be read" in result.stdout
    assert "zz-broken" in result.stderr and "format version 99" in result.stderr


def test_compare_shows_metrics_differences_and_writes_the_page(workdir, tmp_path) -> None:
    folder, _, _ = workdir
    first, second = sorted((folder / "runs").iterdir())
    page = tmp_path / "pages" / "cmp.html"
    result = keel("compare", str(first), str(second), "--output", str(page), cwd=folder)
    assert result.returncode == 0, result.stderr
    for text in ("test metrics", "accuracy", "log_loss", "configuration differences", "training.lr", "0.01",
                 f"wrote the comparison with learning curves to {page}"):
        assert text in result.stdout
    assert "model.hidden" not in result.stdout  # the same in both: not a difference
    document = page.read_text(encoding="utf-8")
    assert document.startswith("<!doctype html>") and 'id="learning-curves"' in document
    assert "data:image/png;base64," in document
    default = keel("compare", str(first), str(second), "--json", cwd=tmp_path)
    comparison = json.loads(default.stdout)
    assert comparison["html"] == "compare.html" and (tmp_path / "compare.html").is_file()
    assert set(comparison["config"]) == {"training.lr", "training.seed"}
    assert comparison["warnings"] == []


def test_compare_of_different_targets_says_so(workdir, tmp_path) -> None:
    folder, _, _ = workdir
    data = tmp_path / "table.csv"
    make_classification_frame(120).to_csv(data, index=False)
    other = tmp_path / "other"
    trained = invoke("train", str(data), "--target", "label", *TINY, "--output", str(other), "--quiet")
    assert trained.exit_code == 0, trained.output
    result = keel("compare", str(next((folder / "runs").iterdir())), str(other), "-o", str(tmp_path / "c.html"),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "different targets" in result.stderr and "accuracy" in result.stdout


def test_the_log_file_holds_the_whole_run_in_plain_text(workdir) -> None:
    folder, _, _ = workdir
    text = (folder / "logs" / "run.log").read_text(encoding="utf-8")
    assert "\x1b[" not in text
    bodies = [line[21:] for line in text.splitlines()]
    assert bodies[0].startswith(f"keel train {PENGUINS} -> runs/penguins-")
    assert bodies[1] == f"start: reading {PENGUINS}" and bodies[2].startswith(f"done: reading {PENGUINS} in ")
    assert any(body.startswith("note: rows: ") for body in bodies)
    epochs = [body for body in bodies if body.startswith("epoch ")]
    assert [body.split("  ")[0] for body in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(re.search(r"loss \d\.\d{4}  val_loss \d\.\d{4}  [\d,]+ rows/s", body) for body in epochs)
    assert any(body.startswith("test metrics: n_rows ") and " accuracy " in body for body in bodies)
    assert any(re.fullmatch(rf"saved the model to runs/{RUN_NAME}", body) for body in bodies)


def test_a_failed_run_logs_its_error_and_leaves_no_empty_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "table.csv"
    make_classification_frame(60).to_csv(data, index=False)
    result = invoke("train", str(data), "--target", "nope", *TINY, "--log-file", "run.log")
    assert result.exit_code == 2
    log = (tmp_path / "run.log").read_text(encoding="utf-8").splitlines()
    assert log[-1][21:].startswith("error: ") and "'nope'" in log[-1]
    assert not (tmp_path / "runs").exists()  # the reserved folder, and runs/ that it made, were removed again
    unwritable = invoke("train", str(data), "--target", "label", "--log-file", str(data / "run.log"))
    assert unwritable.exit_code == 2 and "cannot write the log file" in unwritable.output
