"""`keel train` refuses what it can before any work, and shows every note when it arises or with the error."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from keel.cli import app
from tests.conftest import make_classification_frame


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_unusable_output_is_refused_before_the_data_is_read(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # The data path does not even exist: the output must be the one complaint.
    result = invoke("train", str(tmp_path / "missing.csv"), "--target", "label", "--output", str(blocker / "model"))
    assert result.exit_code == 2
    assert "cannot write a model to" in result.output and "missing.csv" not in result.output
    other = tmp_path / "not-a-model"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    result = invoke("train", str(tmp_path / "missing.csv"), "--target", "label", "--output", str(other))
    assert result.exit_code == 2 and "is not a keel model" in result.output
    assert (other / "precious.txt").read_text() == "keep me"


def test_test_file_problems_are_found_before_training(tmp_path) -> None:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    make_classification_frame(150).to_csv(train, index=False)
    make_classification_frame(40, seed=1).drop(columns="color").to_csv(test, index=False)
    started = time.perf_counter()
    result = invoke("train", str(train), "--target", "label", "--test", str(test), "--preset", "best",
                    "--output", str(tmp_path / "model"))
    assert result.exit_code == 2
    assert "lacks the input column(s) ['color']" in result.output
    assert "training a multiclass model" not in result.output  # no network was trained
    assert time.perf_counter() - started < 30  # the best preset would take minutes


def test_quiet_run_shows_its_notes_with_the_error(tmp_path) -> None:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame = make_classification_frame(150)
    frame["empty"] = None
    frame.to_csv(train, index=False)
    bad = make_classification_frame(40, seed=1)
    bad.loc[2, "label"] = "delta"
    bad.to_csv(test, index=False)
    result = invoke("train", str(train), "--target", "label", "--test", str(test), "--quiet",
                    "--output", str(tmp_path / "model"))
    assert result.exit_code == 2
    lines = result.output.splitlines()
    error_line = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert any("dropped column 'empty'" in line for line in lines[:error_line])
    assert "'delta'" in lines[error_line]


def test_notes_print_before_the_results(tmp_path) -> None:
    data = tmp_path / "train.csv"
    frame = make_classification_frame(150)
    frame["empty"] = None
    frame.to_csv(data, index=False)
    result = invoke("train", str(data), "--target", "label", "--preset", "fast", "--set", "training.epochs=2",
                    "--output", str(tmp_path / "model"))
    assert result.exit_code == 0, result.output
    assert result.output.index("dropped column 'empty'") < result.output.index("accuracy")
    assert result.output.index("note: rows:") < result.output.index("training a")
