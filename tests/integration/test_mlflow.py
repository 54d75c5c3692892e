"""`keel train --mlflow`: a run logged to a real, temporary MLflow store and read back through MLflow's API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app
from tests.conftest import PENGUINS

mlflow = pytest.importorskip("mlflow", reason="the keel[track] extra (mlflow) is not installed")

TINY = ["--preset", "fast", "--set", "training.epochs=3", "--set", "model.hidden=[16]", "--set", "training.lr=0.01"]


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One model trained with `--mlflow DIR` (DIR: a plain folder, so DIR/mlflow.db and DIR/mlruns)."""
    folder = tmp_path_factory.mktemp("mlflow")
    store, model = folder / "store", folder / "model"
    result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--output", str(model),
                    "--mlflow", str(store), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs(["0"])
    return answer, client, run, model, store


def test_the_run_holds_params_epoch_metrics_test_metrics_and_tags(logged) -> None:
    answer, client, run, model, _ = logged
    assert answer["mlflow"]["run_id"] == run.info.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "model"
    params = run.data.params
    assert params["training.lr"] == "0.01" and params["preset"] == "fast" and params["model.hidden"] == "[16]"
    assert params["target"] == "species"
    manifest = json.loads((model / "keel.json").read_text())
    epochs = len(manifest["history"]["epochs"])
    assert epochs == 3
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [point.step for point in history] == [1, 2, 3]
    assert [point.value for point in history] == pytest.approx([e["val_loss"] for e in manifest["history"]["epochs"]])
    assert len(client.get_metric_history(run.info.run_id, "loss")) == epochs
    assert run.data.metrics["test_accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
    assert "test_confusion_matrix" not in run.data.metrics  # numbers only
    tags = run.data.tags
    assert tags["keel.task"] == "multiclass" and tags["keel.target"] == "species" and tags["keel.data"] == "penguins"
    assert tags["keel.version"] == manifest["versions"]["keel"]


def test_the_model_directory_is_an_artifact_inside_the_store_folder(logged) -> None:
    _, client, run, model, store = logged
    logged_files = {item.path for item in client.list_artifacts(run.info.run_id, "model")}
    assert {f"model/{path.name}" for path in model.iterdir() if path.is_file()} <= logged_files
    assert "model/keel.json" in logged_files
    # A plain folder keeps everything: the artifacts are under it, not in ./mlruns of the current folder.
    assert run.info.artifact_uri.startswith((store / "mlruns").as_uri())
    if (model / "report.html").is_file():  # once keel train writes a report, it is logged at the top
        assert "report.html" in {item.path for item in client.list_artifacts(run.info.run_id)}


def test_a_bare_flag_logs_to_mlflows_default_store_in_the_current_folder(tmp_path, monkeypatch) -> None:
    from keel.track.mlflow import tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The flag last and the flag before another option: both bare, neither takes a value.
    result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--output", "m", "--mlflow", "--quiet")
    assert result.exit_code == 0, result.output
    assert "Creating initial MLflow database tables" not in result.output  # MLflow's chatter is silenced
    runs = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["0"])
    assert [run.info.run_name for run in runs] == ["m"]
    assert (tmp_path / "mlruns").is_dir()


def test_log_run_from_python_to_a_sqlite_file(logged, tmp_path) -> None:
    from keel.track.mlflow import log_run

    _, _, _, model, _ = logged
    tracked = log_run(model, tmp_path / "tracking.db", experiment="keel tests")
    assert tracked.tracking_uri == f"sqlite:///{tmp_path / 'tracking.db'}"
    assert tracked.artifact_uri.startswith((tmp_path / "mlruns").as_uri())
    client = mlflow.tracking.MlflowClient(tracked.tracking_uri)
    experiment = client.get_experiment_by_name("keel tests")
    assert experiment is not None and tracked.experiment_id == experiment.experiment_id
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["training.epochs"] == "3"


def test_without_mlflow_the_flag_fails_before_training(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what a missing package looks like to an import
    result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--mlflow", str(tmp_path / "store"))
    assert result.exit_code == 2
    assert result.output.strip() == "error: --mlflow needs MLflow: pip install 'keel[track]'"
    assert not Path("runs").exists() and not (tmp_path / "store").exists()  # nothing trained, nothing reserved
