"""``keel tune --backend ray``: the study's trials run as Ray Tune trials, on a Ray cluster or a local Ray.

Optuna still proposes every trial (its TPE sampler, through Ray Tune's ``OptunaSearch``) into the same
study keel opened, so ``--storage`` resumes, the identity checks, ``tune.json`` and the refit are those
of ``--backend torch``. Ray runs the trials (``--jobs`` at once, one CPU each) and stops the poor ones
with its median stopping rule (the same rule as keel's default Optuna pruner: after 5 trials and 5
epochs, a trial whose validation metric is worse than the median of the others' at the same epoch).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import warnings
from typing import Any, Iterator

import pandas as pd
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from keel.cluster import ray_session
from keel.config import Config, load_config
from keel.errors import KeelError
from keel.search.space import overrides, suggest
from keel.train.callbacks import Reporter

# Ray results carry the validation metric and keel's step (network k of a bag reports its epoch e as
# (k-1) x epochs + e, as with --backend torch); a trial's last result says it finished, or its error.
_VALUE, _STEP, _FINAL, _ERROR = "keel_value", "keel_step", "keel_final", "keel_error"


def run_trials(optuna: Any, study: Any, frame: pd.DataFrame, settings: Config, space: dict[str, Any], monitor: str,
               direction: str, needed: int, deadline: float | None, jobs: int, address: str | None,
               reporter: Reporter) -> None:
    """Run trials on Ray until ``study`` holds ``needed`` more finished ones (at most twice as many
    started: failed trials are replaced), or the deadline passes (running trials are stopped)."""
    from ray import tune as ray_tune
    from ray.tune.schedulers import MedianStoppingRule

    mode = "max" if direction == "maximize" else "min"
    _fail_abandoned(optuna, study)
    with ray_session(address), tempfile.TemporaryDirectory(prefix="keel-ray-tune-") as scratch, \
            warnings.catch_warnings(), _quiet_tune():
        # Optuna warns that a storage's heartbeats are meant for Study.optimize; Ray asks and tells instead.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        searcher = _StudySearch(optuna, study, space, mode, needed, reporter)
        trainable = ray_tune.with_resources(
            ray_tune.with_parameters(_trial, frame=frame, settings=settings.model_dump(mode="json"), monitor=monitor),
            {"cpu": 1})
        budget = None if deadline is None else max(1.0, deadline - time.time())
        tuner = ray_tune.Tuner(
            trainable,
            tune_config=ray_tune.TuneConfig(
                search_alg=searcher, num_samples=2 * needed, max_concurrent_trials=jobs, time_budget_s=budget,
                scheduler=MedianStoppingRule(time_attr=_STEP, metric=_VALUE, mode=mode, grace_period=5,
                                             min_samples_required=5)),
            run_config=ray_tune.RunConfig(storage_path=scratch, name="keel-tune", verbose=0))
        tuner.fit()
        searcher.settle()


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Ray Tune's old output engine while the search runs (its verbose=0 prints nothing; the new one draws
    tables and paths): keel reports each trial's end itself. The variable is restored after."""
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


def _fail_abandoned(optuna: Any, study: Any) -> None:
    """Fail the trials a killed search left running, so that they are run again. Ray's trials are asked
    and told by the driver, which sends no heartbeats: a trial still running when a search starts was
    abandoned (one search per study at a time, as the README says)."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)


class _StudySearch(OptunaSearch):
    """Ray Tune's OptunaSearch over keel's study: proposes trials until ``needed`` have finished; a trial
    Ray stopped is pruned (not complete), a failed one keeps its error; each end is reported as keel's
    own trials are."""

    def __init__(self, optuna: Any, study: Any, space: dict[str, Any], mode: str, needed: int,
                 reporter: Reporter) -> None:
        super().__init__(space=_DefineByRun(space), metric=_VALUE, mode=mode, sampler=study.sampler,
                         study_name=study.study_name, storage=study._storage)
        self.states, self.reporter = optuna.trial.TrialState, reporter
        self.needed, self.done = needed, 0
        self.errors: dict[str, str] = {}
        self.steps: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles its Tuner (search algorithm included) to restore an experiment; keel resumes from
        # the study's storage instead, and the study, sampler and reporter hold locks that do not pickle.
        return {"needed": self.needed, "done": self.done}

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the study's storage is the record (Ray would pickle the study here)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing: see :meth:`save`."""

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Searcher.FINISHED
        live = len(self._ot_trials) - len(self._completed_trials)
        if self.done >= self.needed:
            return Searcher.FINISHED
        if self.done + live >= self.needed:
            return None  # enough are running; ask again when one ends (it may fail)
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if _ERROR in result:
            self.errors[trial_id] = result[_ERROR]
            return
        step = int(result.get(_STEP, 0))
        if _FINAL in result or trial_id not in self._ot_trials or step <= self.steps.get(trial_id, 0):
            return  # the score is not an epoch; a result Ray delivered again keeps its first value
        self.steps[trial_id] = step
        self._ot_trials[trial_id].report(float(result[_VALUE]), step)

    def settle(self) -> None:
        """End the trials Ray stopped without telling (its time budget): pruned at their last reported
        epoch, or failed when they reported none, never left running in the study."""
        assert self._ot_study is not None
        for trial_id, trial in self._ot_trials.items():
            if trial_id in self._completed_trials:
                continue
            if self.steps.get(trial_id):
                self._ot_study.tell(trial, state=self.states.PRUNED)
                self.done += 1
            else:
                trial.set_user_attr("error", "stopped by --time-limit before its first epoch ended")
                self._ot_study.tell(trial, state=self.states.FAIL)
            self._completed_trials.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return
        result, study = result or {}, self._ot_study
        assert study is not None
        if error or _ERROR in result or not math.isfinite(float(result.get(_VALUE, math.nan))):
            trial.set_user_attr("error", self.errors.get(trial_id, result.get(_ERROR, "the trial's Ray worker failed")))
            study.tell(trial, state=self.states.FAIL)
            state = "fail"
        elif result.get(_FINAL):
            trial.set_user_attr("seconds", result["seconds"])
            trial.set_user_attr("epochs", result["epochs"])
            study.tell(trial, float(result[_VALUE]))
            state, self.done = "complete", self.done + 1
        else:  # stopped by the median rule or the time budget: pruned at its last reported epoch
            study.tell(trial, state=self.states.PRUNED)
            state, self.done = "pruned", self.done + 1
        self._completed_trials.add(trial_id)
        value = f" {result[_VALUE]:.4f}" if state == "complete" else ""
        self.reporter.message(f"trial {trial.number} ({self.done} of {self.needed} to run finished): {state}{value}")


class _DefineByRun:
    """The search space as Ray's OptunaSearch asks for it: a function of an Optuna trial (a class, so
    that Ray can pickle the searcher when it saves the experiment)."""

    def __init__(self, space: dict[str, Any]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        suggest(trial, self.space)  # OptunaSearch records the values its trial hands out


def _trial(values: dict[str, Any], frame: pd.DataFrame, settings: dict[str, Any], monitor: str) -> None:
    """One Ray Tune trial: keel's training with the trial's values, each epoch's validation metric
    reported (the median rule stops the poor ones), then the trial's score."""
    import ray
    import torch
    from ray import tune as ray_tune

    from keel.search.study import EpochReporter, score
    from keel.train.pipeline import fit

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    base = load_config(settings)
    trial_settings = load_config(base, overrides=overrides(values, base))
    started = time.perf_counter()
    last = [0]  # the last step reported: the score and an error come after it

    def emit(value: float, step: int) -> None:
        last[0] = step
        ray_tune.report({_VALUE: value, _STEP: step})

    try:
        model = fit(frame, config=trial_settings, importance=False, leak_check=False,
                    reporter=EpochReporter(monitor, trial_settings.training.epochs, emit))
    except KeelError as error:  # the trial fails; its reason is kept for the "no trial finished" error
        ray_tune.report({_VALUE: math.nan, _STEP: last[0] + 1, _ERROR: str(error).splitlines()[0][:500]})
        raise
    epochs = sum(len(network["epochs"]) for network in model.history.get("bags", [model.history]))
    ray_tune.report({_VALUE: score(model.history, monitor, keeps_last=not trial_settings.training.early_stopping),
                     _STEP: last[0] + 1, _FINAL: 1, "seconds": round(time.perf_counter() - started, 3),
                     "epochs": epochs})
