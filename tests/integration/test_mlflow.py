"""`keel train --mlflow`: a run logged to a real, temporary MLflow store and read back through MLflow's API."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from keel.cli import app
from tests.conftest import PENGUINS

mlflow = pytest.importorskip("mlflow", reason="the keel[track] extra (mlflow) is not installed")


@pytest.fixture(scope="module", autouse=True)
def _imported() -> None:
    """The timed calls below measure keel's checks, not this worker's first import of torch and keel's pipeline:
    that took 8.6 s of a 10 s bound on a loaded 2-core machine (the flaky-test audit, s17)."""
    import keel.track.mlflow  # noqa: F401
    import keel.train.pipeline  # noqa: F401

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



# ---- the store is checked before training; logging gives up in seconds ---------------------------------------------


def free_port() -> int:
    """A port nothing listens on (bound and released at once): connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def http_server(status: int) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server that answers every request with ``status``: yields its URI and the paths it was asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            asked.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", f"http://127.0.0.1:{free_port()}/elsewhere")  # nowhere
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_server_fails_before_training_in_seconds(tmp_path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--output", str(tmp_path / "model"),
                    "--mlflow", uri)
    seconds = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert seconds < 30  # was: a whole training, then ~4 minutes of MLflow's retries
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: --mlflow: no MLflow tracking server answers at {uri} (connection refused")
    assert "mlflow server --host 127.0.0.1" in line and "nothing was trained" in line
    assert "epoch" not in result.output and not (tmp_path / "model").exists()


@pytest.mark.parametrize("layout", ["a file in the way", "a read-only folder"])
def test_an_unwritable_store_folder_fails_before_training(tmp_path, layout) -> None:
    if layout == "a file in the way":
        (tmp_path / "taken").write_text("not a folder")
        store, culprit = tmp_path / "taken" / "store", "is a file, not a folder"
    else:
        if sys.platform == "win32" or os.geteuid() == 0:
            pytest.skip("root (and Windows) can write into a folder without write permission")
        (tmp_path / "locked").mkdir(mode=0o500)
        store, culprit = tmp_path / "locked" / "store", "is not writable"
    started = time.perf_counter()
    result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--output", str(tmp_path / "model"),
                    "--mlflow", str(store))
    assert result.exit_code == 2, result.output
    assert time.perf_counter() - started < 30
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: --mlflow: cannot keep the tracking store") and culprit in line
    assert str(store) in line
    assert not (tmp_path / "model").exists() and not store.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("store", ["sqlite:////proc/x.db", "/proc/nope"])
def test_a_folder_that_takes_no_file_fails_before_training_even_for_root(tmp_path, store) -> None:
    """A user's trial (as root, whom os.access lets write anywhere): /proc passed the check, the run trained, then
    MLflow retried for 100 s and ended in an internal error (exit 1)."""
    started = time.perf_counter()
    result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--output", str(tmp_path / "model"),
                    "--mlflow", store)
    assert result.exit_code == 2, result.output
    assert time.perf_counter() - started < 30
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: --mlflow: cannot keep the tracking store") and "/proc takes no new file" in line
    assert not (tmp_path / "model").exists()


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    from keel.errors import ConfigError
    from keel.track.mlflow import check_store

    with socket.socket() as silent:  # the kernel completes connections; nothing ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        started = time.perf_counter()
        with pytest.raises(ConfigError, match=r"no answer within 0.5 s"):
            check_store(f"http://127.0.0.1:{silent.getsockname()[1]}", what="--mlflow", timeout=0.5)
        assert time.perf_counter() - started < 5


@pytest.mark.parametrize("status", [401, 302, 404])
def test_any_http_answer_counts_as_a_server(status) -> None:
    from keel.track.mlflow import check_store

    with http_server(status) as (uri, asked):
        assert check_store(uri + "/prefix/", what="--mlflow") == uri + "/prefix/"
    assert asked == ["/prefix/health"]  # one request, no retries, the redirect not followed


def test_local_stores_are_checked_not_created(tmp_path) -> None:
    from keel.track.mlflow import check_store

    assert check_store(tmp_path / "new" / "store") == f"sqlite:///{tmp_path / 'new' / 'store' / 'mlflow.db'}"
    assert check_store(f"sqlite:///{tmp_path / 'other' / 'x.db'}") == f"sqlite:///{tmp_path / 'other' / 'x.db'}"
    assert not (tmp_path / "new").exists() and not (tmp_path / "other").exists()


@pytest.mark.parametrize(("retries", "requests"), [(None, 3), ("0", 1)])
def test_a_server_that_fails_mid_run_costs_seconds_and_the_model_is_kept(tmp_path, monkeypatch, retries,
                                                                         requests) -> None:
    """The server answers the check, then only 503s: MLflow's default would retry 7 times over ~4 minutes."""
    if retries is None:
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    else:  # the user's own setting wins over keel's bound
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries)
    model = tmp_path / "model"
    started = time.perf_counter()
    with http_server(503) as (uri, asked):
        result = invoke("train", str(PENGUINS), "--target", "species", *TINY, "--output", str(model),
                        "--no-report", "--quiet", "--mlflow", uri)
    assert result.exit_code == 2, result.output
    assert time.perf_counter() - started < 60  # training included; the logging's retries take ~2-3 s
    assert asked[0] == "/health" and asked[1:] == ["/api/2.0/mlflow/runs/create"] * requests
    (line,) = [text for text in result.output.strip().splitlines() if text.startswith("error:")]
    assert f"MLflow at {uri} did not take the run: the server answered HTTP 503 to every try" in line
    assert f"The model itself is saved at {model}" in line
    assert (model / "keel.json").is_file()
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") == retries  # keel's bound is gone after the call


def test_a_deleted_plot_is_logged_without_it_and_a_damaged_one_is_refused(logged, tmp_path) -> None:
    # keel.load detaches a deleted plot (made again by keel report); log_run called it a corrupt model.
    import shutil

    from keel.errors import ArtifactError, KeelWarning
    from keel.track.mlflow import log_run

    _, _, _, model, _ = logged
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    plot = sorted((copy / "plots").iterdir())[0]
    plot.unlink()
    with pytest.warns(KeelWarning, match=rf"plots/{plot.name} listed in keel.json but missing; .*`keel report {copy}`"):
        tracked = log_run(copy, tmp_path / "tracking.db")
    client = mlflow.tracking.MlflowClient(tracked.tracking_uri)
    logged_plots = {item.path for item in client.list_artifacts(tracked.run_id, "model/plots")}
    assert logged_plots and f"model/plots/{plot.name}" not in logged_plots
    (copy / "weights.safetensors").write_bytes(b"damaged")
    with pytest.raises(ArtifactError, match="fails its checksum"):
        log_run(copy, tmp_path / "tracking.db")
