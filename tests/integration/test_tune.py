"""keel tune: an Optuna study over keel's settings on the shipped penguins table, for real (TPE, a
SQLite storage, parallel processes, pruning), and the best settings' model saved with its study."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

import keel
from keel.errors import ConfigError
from keel.search import TUNE_FILE, tune
from keel.search.space import DEFAULT_SPACE
from keel.search.study import score
from tests.conftest import PENGUINS

BASE = {"preset": "fast", "training.epochs": 5, "model.hidden": [16]}


def test_a_study_finds_settings_and_the_saved_model_is_the_best_trials(tmp_path) -> None:
    model, result = tune(PENGUINS, "species", BASE, trials=4, output=tmp_path / "model", quiet=True)
    summary = result.summary
    assert summary["states"] == {"complete": 4} and len(summary["trials"]) == 4
    assert summary["metric"] == "val_loss" and summary["direction"] == "minimize"
    best = summary["best"]
    assert set(best["params"]) == set(DEFAULT_SPACE)  # every default setting was searched
    assert best["value"] == min(row["value"] for row in summary["trials"])
    # Trials train on the same split with the same seed, so the refit is the best trial's model again.
    assert score(model.history, "loss") == pytest.approx(best["value"], abs=1e-12)
    assert model.config.model.hidden == [best["params"]["model.width"]] * best["params"]["model.depth"]
    assert model.config.training.lr == best["params"]["training.lr"]
    saved = json.loads((tmp_path / "model" / TUNE_FILE).read_text())
    assert saved["best"] == best and keel.load(tmp_path / "model").metrics == model.metrics
    assert model.metrics["accuracy"] > 0.9


def test_a_study_in_a_storage_resumes_and_refuses_another_target(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    _, first = tune(PENGUINS, "species", BASE, trials=2, storage=storage, quiet=True)
    _, second = tune(PENGUINS, "species", BASE, trials=4, storage=storage, quiet=True)
    assert [row["number"] for row in second.summary["trials"]] == [0, 1, 2, 3]  # two more, not four
    assert second.summary["trials"][:2] == first.summary["trials"]  # the first two were kept as they were
    with pytest.raises(ConfigError, match="answers another question .*: target 'species' -> 'island'"):
        tune(PENGUINS, "island", BASE, trials=4, storage=storage, study="penguins-species", quiet=True)
    kept = optuna.load_study(study_name="penguins-species", storage=storage)
    assert len(kept.trials) == 4  # nothing lost


def test_a_pruned_trial_stops_at_the_epoch_the_pruner_says(tmp_path) -> None:
    # Validation losses are positive: this pruner stops every trial at the first epoch past its warm-up
    # (steps below n_warmup_steps are never pruned), the second.
    pruner = optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=2)
    with pytest.raises(ConfigError, match=r"no trial of the study .* finished \(states: \{'pruned': 2\}\)"):
        tune(PENGUINS, "species", BASE, trials=2, storage=f"sqlite:///{tmp_path / 'tune.db'}", quiet=True,
             pruner=pruner)
    study = optuna.load_study(study_name="penguins-species", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert [sorted(trial.intermediate_values) for trial in study.trials] == [[1, 2], [1, 2]]


def test_parallel_trials_share_one_study(tmp_path) -> None:
    model, result = tune(PENGUINS, "species", BASE, trials=4, jobs=2, quiet=True,
                         storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert result.summary["states"] == {"complete": 4}
    assert len({json.dumps(row["params"], sort_keys=True) for row in result.summary["trials"]}) == 4  # no repeats
    # The refit in this process is the model of the best trial a worker process trained.
    assert score(model.history, "loss") == pytest.approx(result.summary["best"]["value"], abs=1e-12)


@pytest.mark.parametrize("space, message", [
    ({"training.lrr": {"low": 0.001, "high": 0.1}}, r"'training.lrr' is not a setting keel can search \(did you mean "
                                                    r"training.lr\?\)"),
    ({"model.dropout": {"low": 0.3, "high": 0.3}}, "an empty range: low 0.3 is not below high 0.3"),
    ({"model.dropout": {"choices": [0.1, 1.5]}}, r"tune.space model.dropout: the value 1.5 is not a valid setting"),
    ({"model.width": {"choices": [[64, 64]]}}, "choices must be numbers, text or true/false"),
])
def test_a_bad_search_space_is_one_clear_config_error(space, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(PENGUINS, "species", {**BASE, "tune": {"space": space}}, trials=1, quiet=True)


def test_a_custom_space_is_searched_and_nothing_else(tmp_path) -> None:
    space = {"training.lr": {"low": 0.001, "high": 0.05, "log": True}, "model.depth": {"choices": [1, 2]}}
    model, result = tune(PENGUINS, "species", {**BASE, "tune": {"space": space}}, trials=2, quiet=True)
    assert set(result.summary["best"]["params"]) == {"training.lr", "model.depth"}
    assert model.config.model.hidden in ([16], [16, 16])  # the width stays the config's


@pytest.mark.parametrize("kwargs, message", [
    ({"storage": "sqlite:////no/such/directory/tune.db"}, "cannot open the study storage"),
    ({"config": {**BASE, "training.validation_split": 0.0}}, "validation_split is 0"),
])
def test_unusable_storage_or_no_validation_rows_is_a_config_error(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(PENGUINS, "species", **{"config": BASE, **kwargs}, trials=1, quiet=True)


def test_keel_tune_saves_the_model_its_study_and_a_report_with_the_search(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "tune", str(PENGUINS), "--target", "species", "--preset", "fast",
         "--set", "training.epochs=4", "--set", "model.hidden=[16]", "--trials", "2", "--output",
         str(tmp_path / "model"), "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["study"]["states"] == {"complete": 2} and document["report"].endswith("report.html")
    html = (tmp_path / "model" / "report.html").read_text()
    assert "Hyperparameter search" in html and "Best trial" in html
    assert (tmp_path / "model" / TUNE_FILE).is_file()


def test_a_retrain_killed_by_a_crash_is_continued_by_the_next_tune(tmp_path) -> None:
    # A user's trial: the rerun said to continue "with --resume", which keel tune does not have.
    import os
    import signal

    from tests.reliability.test_resume import _same_model

    options = ["-t", "species", "-p", "fast", "-s", "training.epochs=4", "-s", "model.hidden=[16]",
               "-s", "training.checkpoint=true", "-s", "training.checkpoint_every=1", "--trials", "1", "--no-report"]
    command = [sys.executable, "-m", "keel.cli", "tune", str(PENGUINS), *options, "--storage",
               f"sqlite:///{tmp_path / 'study.db'}"]
    reference = subprocess.run([*command[:-1], f"sqlite:///{tmp_path / 'other.db'}", "-o", str(tmp_path / "reference")],
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    killed = subprocess.run([*command, "-o", str(tmp_path / "model")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KEEL_TEST_KILL_AT": "checkpoint-synced@2"})
    assert killed.returncode == -signal.SIGKILL  # trials write no checkpoints: this is the retrain's second
    again = subprocess.run([*command, "-o", str(tmp_path / "model")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing its retrain from the checkpoint" in again.stdout + again.stderr
    _same_model(tmp_path / "reference", tmp_path / "model")
    assert not (tmp_path / "model.checkpoint").exists()


def test_a_time_limit_starts_no_trial_after_it_and_says_when_it_cut_the_search(tmp_path) -> None:
    # A user's trial: the limit ended the search at 4 of 5 trials without a word, and --time-limit 0.01 still
    # started a trial (Optuna checks its timeout after each one).
    from keel.train.callbacks import Reporter

    class Said(Reporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def message(self, text: str) -> None:
            self.lines.append(text)

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tune(PENGUINS, "species", BASE, trials=1, storage=storage, quiet=True)
    said = Said()
    _, result = tune(PENGUINS, "species", BASE, trials=3, time_limit=1e-6, storage=storage, reporter=said)
    assert result.summary["states"] == {"complete": 1}  # no trial started after the limit
    assert any("--time-limit 1e-06 s reached: 1 of the 3 trials asked for finished" in line for line in said.lines)
    with pytest.raises(ConfigError, match="no trial of the study .* finished"):
        tune(PENGUINS, "species", BASE, trials=2, time_limit=1e-6, storage=f"sqlite:///{tmp_path / 'new.db'}",
             quiet=True)
