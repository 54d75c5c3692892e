"""Ray for clusters (keel[ray]): a real local Ray instance (2 CPUs), 4 tuning trials through Ray Tune
into keel's Optuna study, and 2-worker data-parallel trainings through Ray Train's TorchTrainer, from
Python and from the CLI (which joins this instance with --ray-address)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ConfigError, DataError

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'keel[ray]')")
# One Ray instance for the whole module: its tests stay on one pytest-xdist worker (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("ray")

CONFIG = {"preset": "fast", "training.epochs": 6, "model.dropout": 0.0}
PENGUINS = Path(__file__).resolve().parents[2] / "examples" / "penguins.csv"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for this module's tests; they skip, saying why, only if it cannot start."""
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as error:  # no shared memory, no loopback: the reason is the skip message
        pytest.skip(f"Ray cannot start here: {error}")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6_000, 5))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(5)})
    frame["label"] = np.where(x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + 0.5 * rng.logistic(size=len(x)) > 0, "a", "b")
    path = tmp_path_factory.mktemp("ray") / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_ray_train_with_two_workers_is_the_two_process_run(cluster, table, tmp_path) -> None:
    """The workers run keel's own data-parallel ranks, so Ray's model is --nproc 2's model."""
    on_ray = keel.fit(table, target="label", config=CONFIG, quiet=True, importance=False, nproc=2, backend="ray",
                      output=tmp_path / "ray")
    processes = keel.fit(table, target="label", config=CONFIG, quiet=True, importance=False, nproc=2)
    single = keel.fit(table, target="label", config=CONFIG, quiet=True, importance=False)
    assert on_ray.metrics["accuracy"] == pytest.approx(processes.metrics["accuracy"], abs=1e-9)
    assert on_ray.metrics["log_loss"] == pytest.approx(processes.metrics["log_loss"], rel=1e-4)
    assert abs(on_ray.metrics["accuracy"] - single.metrics["accuracy"]) <= 0.02
    saved = keel.load(tmp_path / "ray")  # a normal keel model, copied from rank 0's Ray checkpoint
    assert saved.metrics == on_ray.metrics
    frame = pd.read_csv(table).head(50)
    assert (saved.predict(frame) == on_ray.predict(frame)).all()
    assert any("rows:" in note for note in on_ray.notes)  # rank 0's notes came back


def test_ray_train_takes_a_dataframe_and_names_a_workers_error(cluster, table) -> None:
    frame = pd.read_csv(table)
    model = keel.fit(frame, target="label", config=CONFIG, quiet=True, importance=False, nproc=2, backend="ray")
    assert model.metrics["accuracy"] > 0.7
    with pytest.raises(DataError, match="target column 'nope' is not in the data"):  # raised in a worker
        keel.fit(table, target="nope", config=CONFIG, quiet=True, nproc=2, backend="ray")


def test_ray_train_refuses_more_workers_than_the_local_instance_has(cluster, table, tmp_path) -> None:
    with pytest.raises(ConfigError, match="--workers 3 needs 3 CPUs and the local Ray instance has 2"):
        keel.fit(table, target="label", config=CONFIG, quiet=True, nproc=3, backend="ray", output=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_keel_train_cli_joins_a_cluster_by_address(cluster, table, tmp_path) -> None:
    output = tmp_path / "model"
    done = subprocess.run([sys.executable, "-m", "keel", "train", str(table), "--target", "label", "--preset", "fast",
                           "--set", "training.epochs=3", "--backend", "ray", "--workers", "2", "--ray-address", cluster,
                           "--no-report", "--json", "-o", str(output)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]["accuracy"] > 0.7
    assert keel.load(output).metrics["accuracy"] == json.loads(done.stdout)["metrics"]["accuracy"]


@pytest.mark.parametrize(("arguments", "message"), [
    (["--nproc", "2", "--backend", "ray"], "with --backend ray, ask for --workers N"),
    (["--workers", "2"], "--workers is the number of Ray Train workers: add --backend ray"),
    (["--backend", "spark"], "unknown backend 'spark'; choose one of torch, ray"),
    (["--ray-address", "auto"], "are for backend ray"),
])
def test_cli_backend_options_are_checked_before_any_work(arguments, message, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "keel", "train", str(PENGUINS), "--target", "species",
                           "-o", str(tmp_path / "m"), *arguments], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "300"})
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()


def test_ray_tune_runs_four_trials_into_the_study_and_resumes_it(cluster, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    config = {"preset": "fast", "training.epochs": 4,
              "tune.space": {"training.lr": {"low": 1e-3, "high": 1e-2, "log": True},
                             "model.width": {"choices": [32, 64]}}}
    model, result = keel.tune(PENGUINS, target="species", config=config, trials=4, jobs=2, storage=storage,
                              backend="ray", output=tmp_path / "best", quiet=True)
    summary = result.summary
    assert summary["states"] == {"complete": 4}
    assert [trial["number"] for trial in summary["trials"]] == [0, 1, 2, 3]
    for trial in summary["trials"]:  # each trial's value is keel's score of its own training
        assert trial["epochs"] >= 1 and trial["seconds"] > 0 and math.isfinite(trial["value"])
        assert set(trial["params"]) == {"training.lr", "model.width"}
    assert summary["best"]["value"] == min(trial["value"] for trial in summary["trials"])  # val_loss: minimised
    assert json.loads((tmp_path / "best" / "tune.json").read_text())["best"] == summary["best"]
    assert model.config.training.lr == pytest.approx(summary["best"]["params"]["training.lr"])
    # Resumed from the storage: only the missing trial runs, numbered after the others.
    _, again = keel.tune(PENGUINS, target="species", config=config, trials=5, storage=storage, backend="ray",
                         quiet=True)
    assert [trial["number"] for trial in again.summary["trials"]] == [0, 1, 2, 3, 4]
    assert again.summary["trials"][:4] == summary["trials"]


def test_ray_tune_marks_stopped_trials_pruned_and_failed_ones_with_their_reason(cluster) -> None:
    """What Ray reports at a trial's end becomes the Optuna state keel's summary shows."""
    import optuna

    from keel.search.ray_tune import _ERROR, _FINAL, _STEP, _VALUE, _StudySearch
    from keel.search.space import search_space
    from keel.train.callbacks import Reporter

    study = optuna.create_study(direction="minimize")
    space = search_space(keel.load_config({"tune.space": {"training.lr": {"low": 1e-3, "high": 1e-2}}}), "binary")
    search = _StudySearch(optuna, study, space, "min", needed=2, reporter=Reporter())
    assert all(isinstance(search.suggest(trial_id), dict) for trial_id in ("a", "b"))
    assert search.suggest("c") is None  # two running, two needed: wait for one to end (it may fail)
    search.on_trial_result("a", {_VALUE: 0.7, _STEP: 1})
    search.on_trial_result("a", {_VALUE: 0.6, _STEP: 1})  # delivered again: the first value stays
    search.on_trial_complete("a", {_VALUE: 0.7, _STEP: 1})  # stopped by the median rule
    search.on_trial_result("b", {_VALUE: math.nan, _ERROR: "column x is all missing"})
    search.on_trial_complete("b", None, error=True)
    assert isinstance(search.suggest("c"), dict)  # the failed trial is replaced
    search.on_trial_result("c", {_VALUE: 0.6, _STEP: 1})
    search.on_trial_result("c", {_VALUE: 0.5, _STEP: 2, _FINAL: 1, "seconds": 1.5, "epochs": 1})  # the score: no epoch
    search.on_trial_complete("c", {_VALUE: 0.5, _STEP: 2, _FINAL: 1, "seconds": 1.5, "epochs": 1})
    states = [trial.state.name for trial in study.trials]
    assert states == ["PRUNED", "FAIL", "COMPLETE"]
    assert study.trials[0].intermediate_values == {1: 0.7}
    assert study.trials[1].user_attrs["error"] == "column x is all missing"
    assert study.trials[2].value == 0.5 and study.trials[2].user_attrs == {"seconds": 1.5, "epochs": 1}
    assert study.trials[2].intermediate_values == {1: 0.6}
    assert search.suggest("d") == "FINISHED"  # the pruned and the complete trial make the two needed


def test_ray_tune_refuses_an_optuna_pruner_and_a_stray_address(tmp_path) -> None:
    import optuna

    with pytest.raises(ConfigError, match="median stopping rule; an Optuna pruner does not apply"):
        keel.tune(PENGUINS, target="species", backend="ray", pruner=optuna.pruners.NopPruner(), quiet=True)
    with pytest.raises(ConfigError, match=r"ray_address \(--ray-address\) is for backend ray"):
        keel.tune(PENGUINS, target="species", ray_address="auto", quiet=True)
