"""``keel tune``: an Optuna study over keel's settings, each trial a keel training scored on its
validation rows, pruned early from its per-epoch validation metric, then the best settings refit.

Every trial trains on the same split (the config's seed), so trials differ only by their settings;
the score is the monitored validation metric (``training.monitor``) of the epoch early stopping
kept, averaged over bagged networks; the test rows are never looked at while searching.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from keel.artifact import check_destination
from keel.cluster import check_backend, ray_module
from keel.config import Config, ConfigSource, load_config, with_target
from keel.data.io import TableSource, read_table
from keel.data.schema import check_drop_columns, declared_written, infer_target_task, require_column
from keel.errors import ConfigError, KeelError
from keel.model import Model
from keel.runs import flatten
from keel.search.space import overrides, search_space, suggest
from keel.train.callbacks import Reporter
from keel.train.pipeline import read_data
from keel.train.trainer import MONITORS, resolve_monitor

#: The file in a model directory that holds its study (trials, best trial, parameter importances).
TUNE_FILE = "tune.json"
# How often a running trial tells the storage it is alive, and after how long without a word another
# process takes it for dead (a killed run's trial) and fails it, so a resumed study runs it again.
_HEARTBEAT_SECONDS, _GRACE_SECONDS = 10, 30


@dataclass
class TuneResult:
    """A finished search: the summary stored as ``tune.json`` and the Optuna study itself."""

    summary: dict[str, Any]
    study: Any


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("keel tune needs Optuna: pip install 'keel[tune]'.") from None
    # keel reports each trial itself (failed ones with their reason); Optuna's own warnings would repeat
    # a failed trial's traceback on stderr even under --quiet.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def tune(data: TableSource, target: str | int | None = None, config: ConfigSource = None, *, trials: int = 20,
         time_limit: float | None = None, storage: str | None = None, study: str | None = None, jobs: int = 1,
         output: str | os.PathLike[str] | None = None, quiet: bool = False, reporter: Reporter | None = None,
         pruner: Any = None, backend: str = "torch", ray_address: str | None = None) -> tuple[Model, TuneResult]:
    """Search keel's settings with Optuna (TPE), then train the best ones and return that model.

    Args:
        data: A CSV / Parquet / JSON Lines path or a DataFrame.
        target: The column to predict (or ``target`` in the config); an int names a DataFrame's int-labelled column.
        config: The base configuration (preset, fixed settings, ``tune.space``); each trial overrides
            the searched keys.
        trials: How many finished (complete or pruned) trials the study should hold; a study resumed
            from ``storage`` runs only the missing ones.
        time_limit: Stop starting trials after this many seconds (a running trial finishes).
        storage: An Optuna storage URL (``sqlite:///tune.db``) to keep the study in, so that a killed
            search resumes where it stopped; None keeps it in memory.
        study: The study's name in ``storage`` (default: ``<data name>-<target>``).
        jobs: Trials run at once, each in its own process (needs a storage; a temporary SQLite file
            is used when none is given); with backend ray, Ray trials at once.
        output: Save the refitted model there, with the study as ``tune.json``.
        quiet: Report nothing.
        reporter: Where messages go.
        pruner: An Optuna pruner (default: the median pruner after 5 trials and 5 epochs); backend
            ray stops trials with Ray Tune's median stopping rule instead (the same rule).
        backend: ``torch`` runs the trials in this process (or ``jobs`` processes); ``ray`` runs them
            as Ray Tune trials (keel.search.ray_tune; extra ``keel[ray]``) on the cluster at
            ``ray_address``, or a local Ray instance.

    Returns:
        The best settings' model (trained as the best trial was, so the same model) and the search.

    Raises:
        ConfigError: Optuna is missing, the search space or storage is unusable, the study in the
            storage tunes another target, there are no validation rows to score on, or no trial finished.
    """
    optuna = _optuna()
    ray = check_backend(backend) == "ray"
    if ray:
        ray_module()  # a missing extra is one line, before the data is read
    if ray_address is not None and not ray:
        raise ConfigError("ray_address (--ray-address) is for backend ray (--backend ray).")
    if ray and pruner is not None:
        raise ConfigError("backend ray stops trials with Ray Tune's median stopping rule; an Optuna pruner does not apply.")
    # --time-limit counts from the command's start, as documented: reading the data is part of it.
    deadline = None if time_limit is None else time.time() + time_limit
    settings = with_target(load_config(config), target)
    if trials < 1 or jobs < 1:
        raise ConfigError(f"--trials and --jobs must be at least 1; got {trials} and {jobs}.")
    if not settings.training.validation_split:
        raise ConfigError("keel tune scores each trial on its validation rows, and training.validation_split is 0; "
                          "set it above 0 (0.1 is the default).")
    if output is not None:
        check_destination(output)  # before the search: an unusable output must not cost one
    reporter = reporter or (Reporter() if quiet else _default_reporter())
    frame = read_data(data, reporter, text=declared_written(settings))
    name = str(settings.target)
    require_column(frame, name, "target")
    check_drop_columns(frame, settings)  # before any trial: each would fail on it alike
    task = infer_target_task(frame, settings)
    monitor = resolve_monitor(settings.training.monitor, task)
    space = search_space(settings, task)
    direction = "maximize" if MONITORS[monitor] else "minimize"
    study_name = study or f"{_stem(data)}-{name}"
    identity = _identity(frame, settings, name, task, monitor, direction)
    pruner = _pruner(optuna, pruner)
    # A retrain a crash stopped left its checkpoint: it is continued after the search (keel tune has no --resume),
    # and one of another run is refused now, before any trial.
    stopped = False
    if output is not None:
        from keel.train.checkpoint import RunCheckpoints

        searched = {"model.hidden" if key in ("model.width", "model.depth") else key for key in space}
        stopped = RunCheckpoints.check_continuable(output, settings, frame, searched)
    with _storage(storage, 1 if ray else jobs) as url:
        seed = settings.training.seed
        opened = _open_study(optuna, url, study_name, direction, pruner, identity, seed)
        done = _finished(optuna, opened)
        remaining = max(0, trials - done)
        started = time.perf_counter()
        if remaining:
            reporter.message(f"tuning {len(space)} settings over {remaining} trial(s) ({done} already in the study "
                             f"{study_name!r}), scoring val_{monitor} ({direction})")
            if ray:
                from keel.search.ray_tune import run_trials

                run_trials(optuna, opened, frame, settings, space, monitor, direction, remaining, deadline, jobs,
                           ray_address, reporter)
            elif jobs == 1:
                # One process: failed trials (a training error) are retried, up to as many again.
                _optimize(optuna, opened, _objective(frame, settings, space, monitor), trials, 2 * remaining, deadline,
                          [_progress(reporter, trials, optuna)])
            else:
                assert url is not None
                _run_workers(data if not isinstance(data, pd.DataFrame) else frame, settings, space, monitor, url,
                             study_name, trials, deadline, jobs, pruner)
                opened = _open_study(optuna, url, study_name, direction, pruner, identity, seed)
        notes = []
        if deadline is not None and time.time() >= deadline and (finished := _finished(optuna, opened)) < trials:
            notes.append(f"--time-limit {time_limit:g} s reached: {finished} of the {trials} trials asked for "
                         "finished (a running trial finishes; none starts after the limit)")
            reporter.message(notes[-1])
        summary = summarize(optuna, opened, space, monitor, direction, storage, time.perf_counter() - started,
                            settings.training.seed)
        summary["notes"] = notes  # (keel tune --json and tune.json say it too, not only the terminal)
        if summary["best"] is None:
            raise ConfigError(f"no trial of the study {study_name!r} finished (states: {summary['states']})"
                              f"{_first_failure(optuna, opened)}.")
        best = load_config(settings, overrides=overrides(summary["best"]["params"], settings))
        from keel.train.checkpoint import checkpoint_directory
        from keel.train.pipeline import fit

        reporter.message(f"best trial {summary['best']['number']}: val_{monitor} {summary['best']['value']:.4f}; "
                         + (f"continuing its retrain from the checkpoint a stopped run left in "
                            f"{checkpoint_directory(output)}" if stopped and output is not None
                            else "training it again to keep its model"))
        model = fit(frame, config=best, reporter=reporter, output=output, quiet=quiet, resume=stopped)
    if output is not None:
        model.attach(TUNE_FILE, json.dumps(summary, indent=1).encode())
    return model, TuneResult(summary, opened)


def _default_reporter() -> Reporter:
    from keel.train.callbacks import TextReporter

    return TextReporter()


def _stem(data: TableSource) -> str:
    return "DataFrame" if isinstance(data, pd.DataFrame) else Path(str(data)).name.split(".")[0]


@contextlib.contextmanager
def _storage(storage: str | None, jobs: int) -> Iterator[str | None]:
    """The storage URL: the one given, a temporary SQLite file when parallel trials need one, or None."""
    if storage is not None or jobs == 1:
        yield storage
        return
    directory = tempfile.mkdtemp(prefix="keel-tune-")
    try:
        yield f"sqlite:///{directory}/tune.db"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _identity(frame: pd.DataFrame, settings: Config, target: str, task: str, monitor: str,
              direction: str) -> dict[str, str]:
    """What a study is about, stored with it: a resumed study must be about the same (its trials' values
    would otherwise mix two questions in one ranking)."""
    from keel.train.checkpoint import data_fingerprint

    config = {key: value for key, value in flatten(settings.model_dump(mode="json")).items() if key != "target"}
    return {"keel.target": target, "keel.task": task, "keel.metric": f"val_{monitor}", "keel.direction": direction,
            "keel.data": data_fingerprint(frame), "keel.config": json.dumps(config, sort_keys=True, default=str),
            "keel.source": str(frame.attrs.get("source", "DataFrame"))}


def _pruner(optuna: Any, pruner: Any) -> Any:
    """The pruner given, or keel's: the median of earlier trials at the same epoch, after 5 trials and 5 epochs."""
    return pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)


def _open_study(optuna: Any, url: str | None, name: str, direction: str, pruner: Any,
                identity: dict[str, str], seed: int) -> Any:
    """Create the study, or load it from the storage after checking it is keel's study of the same
    question: target, task, metric, data and configuration (every difference is listed)."""
    storage: Any = None
    if url is not None:
        try:
            storage = _rdb_storage(optuna, url)
        except Exception as error:  # sqlalchemy's and optuna's own errors: a path, a driver, a URL
            raise ConfigError(f"cannot open the study storage {_shown(url)}: {str(error).splitlines()[0]}. Pass an "
                              "Optuna storage URL such as sqlite:///tune.db (a file in a directory that exists).") from None
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, pruner=pruner,
                                load_if_exists=True)
    if storage is not None:
        with contextlib.suppress(Exception), warnings.catch_warnings():  # a killed run's trial, heartbeat too old
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    stored = study.user_attrs
    if "keel.target" not in stored and (study.trials or stored):
        raise ConfigError(f"the study {name!r} in {_shown(url)} was not made by keel tune ({len(study.trials)} "
                          "trials); choose another --study (it is left as it was).")
    differences = [f"{key[5:]} {stored[key]!r} -> {value!r}" for key, value in identity.items()
                   if key in stored and stored[key] != value and key not in ("keel.source", "keel.config", "keel.data")]
    if "keel.data" in stored and stored["keel.data"] != identity["keel.data"]:
        differences.append(f"the data (fingerprint {stored['keel.data'][:12]} -> {identity['keel.data'][:12]})")
    if "keel.config" in stored and stored["keel.config"] != identity["keel.config"]:
        before, now = json.loads(stored["keel.config"]), json.loads(identity["keel.config"])
        differences += [f"{key} {before.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}"
                        for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if study.direction.name.lower() != direction:
        differences.append(f"direction {study.direction.name.lower()} -> {direction}")
    if differences:
        where = f" (it was made on {stored.get('keel.source')})" if "keel.source" in stored else ""
        raise ConfigError(f"the study {name!r} in {_shown(url)} answers another question{where}: "
                          f"{'; '.join(differences)}. Continue it with the same data and config, or choose another "
                          "--study (its trials are kept).")
    if not stored:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    # Seeded by the trials already there: a resumed study must not draw its first settings again.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _shown(url: str | None) -> str:
    """A storage URL without its password (errors and tune.json are shown and shared)."""
    if url is None:
        return "memory"
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy reads: show it as it was given
        return url


def _optimize(optuna: Any, study: Any, objective: Callable[[Any], float], trials: int, attempts: int,
              deadline: float | None, callbacks: list[Any]) -> None:
    """Run at most ``attempts`` trials, stopping once the study holds ``trials`` finished ones or the
    deadline passes."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    study.optimize(objective, n_trials=attempts, timeout=timeout, catch=(KeelError,),
                   callbacks=[*callbacks, optuna.study.MaxTrialsCallback(trials, states=states)])


def _first_failure(optuna: Any, study: Any) -> str:
    """What the first failed trial's training said, for the error when no trial finished."""
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    for trial in failed:
        reason = trial.user_attrs.get("error")
        if reason:
            return f"; the first failed trial ({trial.number}) said: {reason}"
    return "; widen --time-limit, or run with --debug to see the trials' errors"


def _rdb_storage(optuna: Any, url: str) -> Any:
    """The storage, with heartbeats: a trial whose process was killed is failed and run again."""
    import warnings

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8; keel relies on them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=_HEARTBEAT_SECONDS, grace_period=_GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))


def _finished(optuna: Any, study: Any) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


class EpochReporter(Reporter):
    """A quiet reporter whose epoch callback hands each epoch's validation metric to ``emit(value, step)``
    (Optuna's trial.report and pruning, or Ray Tune's report); an exception ``emit`` raises (Optuna's
    ``TrialPruned``) leaves keel.fit like any other. Network k of a bag reports its epoch e as step
    (k-1) x epochs + e in every trial."""

    def __init__(self, monitor: str, epochs: int, emit: Callable[[float, int], None]) -> None:
        self.key, self.epochs, self.emit, self.networks = f"val_{monitor}", epochs, emit, 0

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[Any]:
        self.networks += 1  # one progress per network of a bag
        offset = (self.networks - 1) * self.epochs

        def callback(epoch: int, total: int, record: dict[str, Any]) -> None:
            if self.key in record:
                self.emit(float(record[self.key]), offset + epoch)

        yield callback


def score(history: dict[str, Any], monitor: str, keeps_last: bool = False) -> float:
    """A trained model's validation score: the monitored metric at the epoch whose weights it kept (the
    best one under early stopping; ``keeps_last``, early stopping off: the last one), averaged over
    bagged networks."""
    values = []
    for network in history.get("bags", [history]):
        epochs = [record for record in network["epochs"] if f"val_{monitor}" in record]
        if not epochs:
            raise ConfigError("a trial trained without validation rows, so it has no score; keep "
                              "training.validation_split above 0 and the table large enough to hold some.")
        best = None if keeps_last else network.get("best_epoch")
        chosen = next((record for record in epochs if record["epoch"] == best), epochs[-1])
        values.append(float(chosen[f"val_{monitor}"]))
    return sum(values) / len(values)


def _objective(frame: pd.DataFrame, settings: Config, space: dict[str, Any], monitor: str) -> Callable[[Any], float]:
    from keel.train.pipeline import fit

    def objective(trial: Any) -> float:
        values = suggest(trial, space)
        trial_settings = load_config(settings, overrides=overrides(values, settings))
        started = time.perf_counter()
        try:
            model = fit(frame, config=trial_settings, importance=False, leak_check=False,
                        reporter=EpochReporter(monitor, trial_settings.training.epochs, _pruned_by(trial, monitor)))
        except KeelError as error:  # the trial fails; its reason is kept for the "no trial finished" error
            trial.set_user_attr("error", str(error).splitlines()[0][:500])
            raise
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
        trial.set_user_attr("epochs", sum(len(network["epochs"]) for network in model.history.get("bags", [model.history])))
        return score(model.history, monitor, keeps_last=not trial_settings.training.early_stopping)

    return objective


def _pruned_by(trial: Any, monitor: str) -> Callable[[float, int], None]:
    """Report an epoch's value to the Optuna trial; stop the trial (``TrialPruned``) if its pruner says so."""
    import optuna

    def emit(value: float, step: int) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"step {step}: val_{monitor} {value:.4f}")

    return emit


def _progress(reporter: Reporter, total: int, optuna: Any) -> Callable[[Any, Any], None]:
    def callback(study: Any, trial: Any) -> None:
        value = "" if trial.value is None else f" {trial.value:.4f}"
        try:
            best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:  # no complete trial yet
            best = ""
        reporter.message(f"trial {trial.number} ({_finished(optuna, study)} of {total} finished): "
                         f"{trial.state.name.lower()}{value}{best}")

    return callback


def _run_workers(data: Any, settings: Config, space: dict[str, Any], monitor: str, url: str, name: str, trials: int,
                 deadline: float | None, jobs: int, pruner: Any) -> None:
    """Run the remaining trials in ``jobs`` processes sharing the study's storage."""
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # Each process runs its share of the missing trials: a shared count alone lets every process start
    # one more trial while the last ones finish.
    optuna = _optuna()
    missing = trials - _finished(optuna, optuna.load_study(study_name=name, storage=url))
    shares = [missing // jobs + (1 if index < missing % jobs else 0) for index in range(jobs)]
    processes = [context.Process(target=_worker, args=(data, settings.model_dump(mode="json"), space, monitor, url,
                                                       name, trials, shares[index], deadline, index, threads, pruner))
                 for index in range(jobs) if shares[index]]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [process.exitcode for process in processes if process.exitcode]
    if failed:
        raise ConfigError(f"{len(failed)} of the {len(processes)} tuning processes failed (exit codes {failed}); the "
                          f"trials they finished are in {_shown(url)}. Run with --jobs 1 to see the error (in Python, "
                          "call tune with jobs > 1 under `if __name__ == '__main__':`, as spawned processes need).")


def _worker(data: Any, settings: dict[str, Any], space: dict[str, Any], monitor: str, url: str, name: str,
            trials: int, share: int, deadline: float | None, index: int, threads: int, pruner: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    optuna = _optuna()
    config = load_config(settings)
    frame = data if isinstance(data, pd.DataFrame) else read_table(data, text=declared_written(config))
    storage = _rdb_storage(optuna, url)
    study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    # Each process samples with its own seed (and past the trials there): the same seed would propose
    # the same settings in every process.
    study.sampler = optuna.samplers.TPESampler(seed=config.training.seed + len(study.trials) + 1000 * (index + 1))
    _optimize(optuna, study, _objective(frame, config, space, monitor), trials, share, deadline, [])


def summarize(optuna: Any, study: Any, space: dict[str, Any], monitor: str, direction: str, storage: str | None,
              seconds: float, seed: int = 0) -> dict[str, Any]:
    """The study as plain JSON: every trial, the best one, and each setting's importance (fANOVA)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append({"number": trial.number, "state": trial.state.name.lower(),
                     "value": None if trial.value is None or not math.isfinite(trial.value) else trial.value,
                     "params": dict(trial.params), "seconds": trial.user_attrs.get("seconds"),
                     "epochs": trial.user_attrs.get("epochs")})
    complete = [trial for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = None
    if complete:
        trial = study.best_trial
        best = {"number": trial.number, "value": trial.value, "params": dict(trial.params)}
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        with contextlib.suppress(Exception):  # fANOVA needs variation in the values and the params
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            importances = {key: round(float(value), 4) for key, value in
                           optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    return {"study": study.study_name, "storage": None if storage is None else _shown(storage),
            "metric": f"val_{monitor}", "direction": direction,
            "space": {key: entry.model_dump(exclude_none=True) for key, entry in space.items()},
            "trials": rows, "states": states, "best": best, "importances": importances,
            "seconds": round(seconds, 3)}
