"""keel.runs and the compare page, on copies of a stored model whose keel.json is edited (no training)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keel.errors import ArtifactError
from keel.runs import (
    Change,
    compare_runs,
    config_changes,
    data_name,
    find_runs,
    flatten,
    read_run,
    run_directory,
    run_labels,
    summarize_changes,
)

# A format-2 model: older than the run record, so rows and times come from what it has.
STORED = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "format2" / "classifier"


def copy_run(folder: Path, name: str, created: str, **changes: Any) -> Path:
    """A copy of the stored model with its creation time and some dotted config keys changed."""
    target = folder / name
    shutil.copytree(STORED, target)
    document = json.loads((target / "keel.json").read_text())
    document["created"] = created
    for key, value in changes.items():
        section, _, field = key.rpartition(".")
        (document["config"][section] if section else document["config"])[field] = value
    (target / "keel.json").write_text(json.dumps(document))
    return target


def test_flatten_and_changes() -> None:
    flat = flatten({"preset": "fast", "training": {"lr": 0.01, "epochs": 5}, "model": {"hidden": [16]}, "empty": {}})
    assert flat == {"preset": "fast", "training.lr": 0.01, "training.epochs": 5, "model.hidden": [16], "empty": {}}
    changes = config_changes({"a": 1, "b": [1, 2], "c": "x"}, {"a": 1, "b": [1, 3], "d": True})
    assert [str(change) for change in changes] == ["b: [1, 2] -> [1, 3]", "c: x -> (unset)", "d: (unset) -> true"]
    many = [Change(f"k{index}", index, index + 1) for index in range(5)]
    assert summarize_changes(many) == "k0: 0 -> 1\nk1: 1 -> 2\nk2: 2 -> 3\n+2 more"
    assert summarize_changes(None) == "first run" and summarize_changes([]) == "same config"


def test_an_older_model_reads_with_what_it_has() -> None:
    run = read_run(STORED)
    assert (run.task, run.target, run.preset) == ("binary", "label", "fast")
    assert run.main_metric == ("accuracy", pytest.approx(0.90625))
    assert run.rows == {"test": 32}  # no run record: the test rows the metrics counted
    assert run.seconds is not None and run.seconds > 0  # from the history
    assert run.data is None and run.epochs == len(run.history["epochs"])
    assert run.config["training.lr"] == 0.001


def test_runs_sort_by_creation_and_each_shows_what_changed_since_the_one_before(tmp_path) -> None:
    copy_run(tmp_path, "b-second", "2026-01-02T10:00:00+00:00", **{"training.lr": 0.5})
    copy_run(tmp_path, "a-first", "2026-01-01T10:00:00+00:00")
    copy_run(tmp_path, "c-third", "2026-01-03T10:00:00+00:00",
             **{"training.lr": 0.5, "training.epochs": 50, "model.hidden": [64, 32]})
    broken = tmp_path / "d-broken"
    broken.mkdir()
    (broken / "keel.json").write_text("{ not json")
    (tmp_path / "not-a-run").mkdir()  # no keel.json: skipped silently
    (tmp_path / "notes.txt").write_text("a file")
    runs = find_runs(tmp_path)
    # The broken one sorts by its keel.json's time (now): after the others.
    assert [run.name for run in runs] == ["a-first", "b-second", "c-third", "d-broken"]
    first, second, third, corrupt = runs
    assert first.changes is None
    assert [str(change) for change in second.changes or []] == ["training.lr: 0.001 -> 0.5"]
    assert [change.key for change in third.changes or []] == ["model.hidden", "training.epochs"]
    assert corrupt.problem is not None and "not valid JSON" in corrupt.problem and corrupt.changes is None
    document = [run.to_dict() for run in runs]
    json.dumps(document)  # JSON-friendly as it is
    assert document[1]["changes"] == [{"key": "training.lr", "before": 0.001, "after": 0.5}]
    assert document[0]["metric"] == {"name": "accuracy", "value": pytest.approx(0.90625)}


def test_a_missing_folder_is_an_error_that_says_how_to_make_a_run(tmp_path) -> None:
    with pytest.raises(ArtifactError, match=r"no runs at .*does not exist.*keel train DATA --target COLUMN"):
        find_runs(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="is a file"):
        find_runs(tmp_path / "file")
    assert find_runs(tmp_path) == []


@pytest.mark.parametrize(("path", "expected"), [
    ("data/penguins.csv", "penguins"),
    ("my data (v2).csv", "my-data-v2"),
    ("sales.2024.parquet", "sales.2024"),
    ("table.csv.gz", "table"),
    ("ÄÖ.csv", "data"),
    ("/tmp/.hidden", "hidden"),
])
def test_data_names_are_safe_folder_names(path: str, expected: str) -> None:
    assert data_name(path) == expected


def test_run_folders_are_stamped_in_utc_and_never_shared(tmp_path) -> None:
    moment = dt.datetime(2026, 3, 4, 6, 7, 8, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    folders = [run_directory("data/my table.csv", tmp_path / "runs", now=moment) for _ in range(3)]
    assert [folder.name for folder in folders] == ["my-table-20260304-040708", "my-table-20260304-040708-2",
                                                   "my-table-20260304-040708-3"]
    assert all(folder.is_dir() and not any(folder.iterdir()) for folder in folders)
    (tmp_path / "blocker").write_text("a file where the runs folder should be")
    with pytest.raises(ArtifactError, match="cannot create a run folder under .*--output"):
        run_directory("x.csv", tmp_path / "blocker")


def test_compare_sets_scalar_metrics_side_by_side_and_keeps_only_differing_keys(tmp_path) -> None:
    first = copy_run(tmp_path, "first", "2026-01-01T10:00:00+00:00")
    second = copy_run(tmp_path, "second", "2026-01-02T10:00:00+00:00", **{"training.lr": 0.1})
    document = json.loads((second / "keel.json").read_text())
    document["metrics"]["accuracy"], document["metrics"]["log_loss"] = 0.95, 0.9
    del document["metrics"]["roc_auc"]
    (second / "keel.json").write_text(json.dumps(document))
    comparison = compare_runs([first, second])
    assert comparison.metrics["accuracy"] == [pytest.approx(0.90625), 0.95]
    assert comparison.metrics["roc_auc"][1] is None  # shown where it exists
    assert "confusion_matrix" not in comparison.metrics and "per_class" not in comparison.metrics
    assert comparison.best("accuracy") == 1 and comparison.best("log_loss") == 0  # lower is better
    assert comparison.best("n_rows") is None
    assert comparison.config == {"training.lr": [0.001, 0.1]}
    assert comparison.warnings == []
    with pytest.raises(ArtifactError, match="at least two runs"):
        compare_runs([first])


def test_compare_says_when_tasks_or_targets_differ(tmp_path) -> None:
    first = copy_run(tmp_path, "first", "2026-01-01T10:00:00+00:00")
    second = copy_run(tmp_path, "second", "2026-01-02T10:00:00+00:00")
    document = json.loads((second / "keel.json").read_text())
    document["schema"]["target"] = "other"
    (second / "keel.json").write_text(json.dumps(document))
    (warning,) = compare_runs([first, second]).warnings
    assert "different targets (first: label, second: other)" in warning


def test_labels_fall_back_to_paths_when_names_repeat(tmp_path) -> None:
    one = copy_run(tmp_path / "a", "model", "2026-01-01T10:00:00+00:00")
    two = copy_run(tmp_path / "b", "model", "2026-01-02T10:00:00+00:00")
    three = copy_run(tmp_path, "other", "2026-01-03T10:00:00+00:00")
    assert run_labels([read_run(one), read_run(two), read_run(three)]) == [str(one), str(two), "other"]


def test_the_compare_page_is_self_contained_escaped_and_has_its_sections(tmp_path) -> None:
    from PIL import Image

    from keel.report.compare import SECTION_IDS, write_compare_page
    from keel.report.html import external_references

    first = copy_run(tmp_path, "<b>first</b>", "2026-01-01T10:00:00+00:00")
    second = copy_run(tmp_path, "second", "2026-01-02T10:00:00+00:00", **{"training.lr": 0.1})
    path = write_compare_page(compare_runs([first, second]), tmp_path / "out" / "compare.html")
    document = path.read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"', document) == list(SECTION_IDS)
    assert external_references(document) == []
    assert "<b>first</b>" not in document and "&lt;b&gt;first&lt;/b&gt;" in document
    assert "training.lr" in document and "0.1" in document
    (encoded,) = re.findall(r'src="data:image/png;base64,([^"]+)"', document)
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    assert image.size[0] > 300 and len(image.convert("L").getcolors(maxcolors=1 << 16) or []) > 10  # a drawn figure, not blank


def test_listing_and_tracking_modules_import_no_heavy_package() -> None:
    code = ("import sys, keel.runs, keel.track.mlflow, keel.report.compare, keel.console; "
            "print(sorted(m for m in ('torch', 'pandas', 'mlflow', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # `keel runs` stays instant; mlflow and matplotlib load when used


def test_a_bagged_run_shows_every_networks_epochs(tmp_path) -> None:
    # keel runs --json and keel compare showed the first network's 72 (56) of five, nothing saying so.
    plain = copy_run(tmp_path, "plain", "2026-01-01T00:00:00+00:00")
    bagged = copy_run(tmp_path, "bagged", "2026-01-02T00:00:00+00:00")
    document = json.loads((bagged / "keel.json").read_text())
    first = document["history"]
    document["history"] = {**first, "bags": [first, {**first, "epochs": first["epochs"][:2], "best_epoch": 1}]}
    (bagged / "keel.json").write_text(json.dumps(document))
    one, two = read_run(plain), read_run(bagged)
    n = len(first["epochs"])
    assert one.networks == [{"epochs": n, "best_epoch": first["best_epoch"]}] and one.per_network("epochs") == n
    assert two.networks == [{"epochs": n, "best_epoch": first["best_epoch"]}, {"epochs": 2, "best_epoch": 1}]
    assert two.per_network("epochs") == f"{n}, 2" and two.per_network("best_epoch") == f"{first['best_epoch']}, 1"
    assert two.to_dict()["networks"] == two.networks and two.to_dict()["epochs"] == n  # the first's, as before
    from keel.report.compare import compare_page

    assert f">{n}, 2<" in compare_page(compare_runs([plain, bagged]))  # the epochs trained row, each network's
