"""Regression tests from the audit of ``keel tune`` (issue 16): each one failed when it was written.

Every study here is tiny (penguins, a network of 16 units, a few epochs, one or two searched keys),
so each test takes a few seconds; the parallel one pays for two spawned processes.
"""

from __future__ import annotations

import optuna
import pytest

from keel.errors import ArtifactError, ConfigError
from keel.search import tune
from tests.conftest import PENGUINS

BASE = {"preset": "fast", "training.epochs": 3, "model.hidden": [16]}
LR = {"training.lr": {"low": 1e-3, "high": 0.05, "log": True}}


def _config(space: dict, **settings: object) -> dict:
    return {**BASE, **settings, "tune": {"space": space}}


def _storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'tune.db'}"


def test_without_early_stopping_a_trial_scores_the_epoch_it_keeps() -> None:
    # Early stopping off keeps the last epoch's weights, so the trial must be scored on that epoch,
    # not on the best epoch it passed through (a noisy run would look better than the model it makes).
    config = _config({"training.lr": {"choices": [0.3]}}, **{"training.epochs": 12, "training.early_stopping": 0})
    model, result = tune(PENGUINS, "species", config, trials=1, quiet=True)
    epochs = model.history["epochs"]
    assert min(epochs, key=lambda record: record["val_loss"]) is not epochs[-1], "the run must not end on its best epoch"
    assert result.summary["best"]["value"] == pytest.approx(epochs[-1]["val_loss"], abs=1e-12)


def test_a_study_resumed_with_another_monitor_is_refused(tmp_path) -> None:
    # The stored study minimizes val_loss; continuing it on val_accuracy would keep minimizing and
    # mix the two metrics' values in one ranking.
    tune(PENGUINS, "species", _config(LR), trials=1, storage=_storage(tmp_path), quiet=True)
    with pytest.raises(ConfigError, match="val_loss"):
        tune(PENGUINS, "species", _config(LR, **{"training.monitor": "accuracy"}), trials=2,
             storage=_storage(tmp_path), quiet=True)
    assert len(optuna.load_study(study_name="penguins-species", storage=_storage(tmp_path)).trials) == 1


def test_a_study_resumed_on_other_data_of_the_same_name_is_refused(tmp_path) -> None:
    other = tmp_path / "other" / "penguins.csv"
    other.parent.mkdir()
    lines = PENGUINS.read_text().splitlines(keepends=True)
    other.write_text(lines[0] + "".join(lines[1::2]))  # every other row: another table, the same file name
    tune(other, "species", _config(LR), trials=1, storage=_storage(tmp_path), quiet=True)
    with pytest.raises(ConfigError, match="penguins"):
        tune(PENGUINS, "species", _config(LR), trials=2, storage=_storage(tmp_path), quiet=True)


def test_a_study_made_without_keel_is_refused_and_left_as_it_was(tmp_path) -> None:
    foreign = optuna.create_study(study_name="penguins-species", storage=_storage(tmp_path), direction="maximize")
    foreign.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    with pytest.raises(ConfigError, match="penguins-species"):
        tune(PENGUINS, "species", _config(LR), trials=3, storage=_storage(tmp_path), quiet=True)
    kept = optuna.load_study(study_name="penguins-species", storage=_storage(tmp_path))
    assert len(kept.trials) == 2 and kept.user_attrs == {}


def test_a_resumed_study_proposes_new_settings(tmp_path) -> None:
    # The sampler is seeded by training.seed: a resumed run that restarts it at the same seed draws
    # the first run's settings again and trains them twice.
    space = {**LR, "model.dropout": {"low": 0.0, "high": 0.4}}
    tune(PENGUINS, "species", _config(space), trials=2, storage=_storage(tmp_path), quiet=True)
    _, result = tune(PENGUINS, "species", _config(space), trials=4, storage=_storage(tmp_path), quiet=True)
    first, second = result.summary["trials"][:2], result.summary["trials"][2:]
    assert all(row["params"] not in [old["params"] for old in first] for row in second)


def test_parallel_trials_use_the_pruner_given(tmp_path) -> None:
    # Each worker loaded the study without a pruner, so it ran Optuna's default median pruner (no
    # warm-up) instead of keel's or the one passed: this one must prune both trials at step 2.
    pruner = optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=2)
    with pytest.raises(ConfigError, match="no trial"):
        tune(PENGUINS, "species", _config(LR), trials=2, jobs=2, storage=_storage(tmp_path), quiet=True,
             pruner=pruner)
    study = optuna.load_study(study_name="penguins-species", storage=_storage(tmp_path))
    assert [trial.state.name for trial in study.trials] == ["PRUNED", "PRUNED"]


def test_bagged_networks_report_their_epochs_at_aligned_steps(tmp_path) -> None:
    # The pruner compares trials step by step: the second network's first epoch must land on the
    # same step in every trial (after all of the first network's possible epochs), however early
    # the first network stopped.
    epochs = 16
    config = _config({"training.lr": {"choices": [0.3]}},
                     **{"training.epochs": epochs, "training.early_stopping": 2, "training.bagging": 2})
    model, _ = tune(PENGUINS, "species", config, trials=1, storage=_storage(tmp_path), quiet=True)
    first, second = model.history["bags"]
    assert len(first["epochs"]) < epochs, "the first network must stop early for this test to mean anything"
    trial = optuna.load_study(study_name="penguins-species", storage=_storage(tmp_path)).trials[0]
    assert trial.intermediate_values[epochs + 1] == pytest.approx(second["epochs"][0]["val_loss"], abs=1e-12)


@pytest.mark.parametrize("space", [
    {"training.lr": {"low": 1e-3, "high": 0.1, "log": True, "step": 0.01}},  # Optuna: no step on a log scale
    {"model.depth": {"low": 1, "high": 3, "step": 0.5}},  # an integer key with a fractional step
    {"preprocessing.missing_indicator": {"low": 0, "high": 1}},  # a range over a true/false key
])
def test_a_space_optuna_cannot_draw_is_a_config_error_before_any_trial(space) -> None:
    with pytest.raises(ConfigError, match="tune.space"):
        tune(PENGUINS, "species", _config(space), trials=2, quiet=True)


@pytest.mark.parametrize("key, entry", [
    ("training.seed", {"low": 0, "high": 100}),
    ("training.test_split", {"choices": [0.2, 0.5]}),
    ("training.validation_split", {"choices": [0.1, 0.3]}),
    ("training.monitor", {"choices": ["loss", "accuracy"]}),
])
def test_keys_that_change_the_split_or_the_score_cannot_be_searched(key, entry) -> None:
    # Trials are compared on one split and one metric; these keys change them between trials.
    with pytest.raises(ConfigError, match=key):
        tune(PENGUINS, "species", _config({key: entry}), trials=2, quiet=True)


def test_an_unusable_output_is_refused_before_the_search(tmp_path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("not a model")
    with pytest.raises(ArtifactError, match="not a keel model"):
        tune(PENGUINS, "species", _config(LR), trials=2, storage=_storage(tmp_path), output=taken, quiet=True)
    assert optuna.get_all_study_names(_storage(tmp_path)) == []  # no trial was spent first


def test_when_every_trial_fails_the_error_says_why() -> None:
    space = {"training.lr": {"low": 1e5, "high": 1e6, "log": True}}  # every trial diverges (NumericError)
    with pytest.raises(ConfigError, match="learning rate"):
        tune(PENGUINS, "species", _config(space), trials=2, quiet=True)
