"""The report from the command line: drawn by keel train, redrawn by keel report, skipped by --no-report."""

from __future__ import annotations

import html as html_module
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from keel.artifact import read_manifest
from keel.cli import app
from tests.conftest import PENGUINS
from tests.integration.test_cli import keel

FAST = ["--preset", "fast", "--set", "training.epochs=5", "--set", "model.hidden=[16]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("report") / "model"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output), "--json", *FAST)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["report"] == str(output / "report.html")
    return output


def test_keel_report_without_data_draws_the_page_train_drew(trained, tmp_path) -> None:
    drawn = (trained / "report.html").read_bytes()
    copy = tmp_path / "again.html"
    result = keel("report", str(trained), "--output", str(copy))
    assert result.returncode == 0, result.stderr
    assert copy.read_bytes() == drawn  # the kept test predictions are the whole of what it needs
    assert "held-out test rows at training time" in result.stdout


def test_keel_report_on_data_shows_its_rows_and_leaves_the_model_alone(trained, tmp_path) -> None:
    manifest = (trained / "keel.json").read_text()
    frame = pd.read_csv(PENGUINS).head(60)
    frame.loc[3, "species"] = None  # unlabelled rows are left out
    data = tmp_path / "some.csv"
    frame.to_csv(data, index=False)
    page = tmp_path / "page.html"
    result = keel("report", str(trained), "--data", str(data), "--output", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text(encoding="utf-8")
    assert "some.csv (59 labelled rows)" in html
    worst = html.split('id="worst-rows"')[1]
    assert "bill_length_mm" in worst  # feature values in the worst-rows table, each beside its own row number
    cells = re.findall(r"<tr><td class=\"number\">(\d+)</td>(.*?)</tr>", worst)
    assert len(cells) == 20
    for row, rest in cells:
        values = re.findall(r"<td[^>]*>([^<]*)</td>", rest)
        source = frame.iloc[int(row) - 1]  # row numbers count the file's data rows from 1
        assert html_module.unescape(values[0]) == source["species"]
        assert f"{source['bill_length_mm']:g}" in values or pd.isna(source["bill_length_mm"])
    assert (trained / "keel.json").read_text() == manifest


def test_keel_report_attaches_the_page_and_figures_with_checksums(trained) -> None:
    result = keel("report", str(trained), "--data", str(PENGUINS))
    assert result.returncode == 0, result.stderr
    files = read_manifest(trained).files  # verifies every checksum
    assert "report.html" in files and any(name.startswith("plots/") for name in files)
    assert "penguins.csv (344 labelled rows)" in (trained / "report.html").read_text(encoding="utf-8")


def test_no_report_skips_the_page_the_figures_and_the_importance(tmp_path) -> None:
    output = tmp_path / "bare"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output), "--no-report", "--quiet",
                  *FAST)
    assert result.returncode == 0, result.stderr
    assert not (output / "report.html").exists() and not (output / "plots").exists()
    assert json.loads((output / "keel.json").read_text())["importance"] is None
    assert (output / "predictions.safetensors").is_file()  # keel report can still draw it later


def test_a_model_without_test_predictions_needs_data_in_one_line(tmp_path) -> None:
    output = tmp_path / "all-rows"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output),
                  "--set", "training.test_split=0", *FAST)
    assert result.returncode == 0, result.stderr
    assert not (output / "report.html").exists()  # nothing to draw it from: said, and the model is kept
    assert f"no report: there were no test rows to draw it from (training.test_split is 0); draw it on labelled " \
           f"rows with: keel report {output} --data FILE" in " ".join(result.stderr.split())
    result = keel("report", str(output))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "keel report MODEL --data FILE" in result.stderr
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(PENGUINS).drop(columns="species").to_csv(unlabelled, index=False)
    result = keel("report", str(output), "--data", str(unlabelled))
    assert result.returncode == 2 and "lacks the target column 'species'" in result.stderr


def test_a_report_that_fails_costs_the_page_not_the_model(tmp_path, monkeypatch) -> None:
    import keel.report.build

    def broken(inputs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a figure failed")

    monkeypatch.setattr(keel.report.build, "build_report", broken)
    output = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", str(PENGUINS), "--target", "species", "--output", str(output),
                                      "--quiet", *FAST])
    assert result.exit_code == 0, result.output
    # shown even with --quiet: the user expects a report there
    assert "the report could not be drawn (RuntimeError: a figure failed); the model is saved" in result.output
    assert (output / "keel.json").is_file() and not (output / "report.html").exists()


def test_an_output_inside_a_model_directory_is_refused(trained, tmp_path) -> None:
    result = keel("report", str(trained), "--output", str(trained / "report.html"))
    assert result.returncode == 2 and "is inside the model directory" in result.stderr
    assert read_manifest(trained).files  # every checksum still holds


def test_figures_of_an_earlier_report_that_the_new_one_does_not_draw_are_removed(tmp_path) -> None:
    output = tmp_path / "bare"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output), "--no-report", "--quiet",
                  *FAST)
    assert result.returncode == 0, result.stderr
    assert keel("report", str(output), "--data", str(PENGUINS)).returncode == 0
    assert (output / "plots" / "importance.png").is_file()  # measured on the data
    assert keel("report", str(output)).returncode == 0  # no importance kept from training: no such figure
    assert not (output / "plots" / "importance.png").exists()
    assert "plots/importance.png" not in read_manifest(output).files
