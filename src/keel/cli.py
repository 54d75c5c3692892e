"""The ``keel`` command: a thin layer that turns arguments into Python API calls.

A KeelError prints as one line on stderr and exits with status 2; ``--debug`` shows the traceback.
"""

# No `from __future__ import annotations` here: typer evaluates string annotations with
# typing.get_type_hints, which cost ~80 ms of every command; real annotation objects cost ~2 ms.
import contextlib
import functools
import gc
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import traceback
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from keel.errors import ConfigError, KeelError, KeelWarning
from keel.serve.settings import DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_PORT

app = typer.Typer(
    name="keel", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="From a table to a trained, evaluated, safely saved neural network.",
)
out = Console()
err = Console(stderr=True)

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
TrainingData = Annotated[Path, typer.Argument(help="Training data: CSV, Parquet or JSON Lines.")]
Target = Annotated[Optional[str], typer.Option("--target", "-t", help="Column to predict.")]
Drop = Annotated[Optional[list[str]], typer.Option("--drop", help="A column never to use as a feature, e.g. one that gives the target away (repeatable; adds to the config's drop_columns).")]
SetKeys = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No notes and no progress bar.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Backend = Annotated[str, typer.Option("--backend", help="torch (processes on this machine) or ray (a Ray cluster: --ray-address; extra keel[ray]).")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="The Ray cluster for --backend ray: ray://HOST:10001, HOST:6379 or auto (default: a local Ray instance).")]
Delimiter = Annotated[Optional[str], typer.Option("--delimiter", help="CSV delimiter (default: sniffed).")]
Encoding = Annotated[Optional[str], typer.Option("--encoding", help="CSV encoding (default: UTF-8, else Latin-1).")]
# Where `keel train` puts a run without --output (keel.runs.RUNS_DIR; not imported here to keep start-up light).
RUNS_DIR = Path("runs")


def _read(path: Path, delimiter: str | None, encoding: str | None, model: Any = None) -> Any:
    """A table from the command line; with ``model``, read as that model reads it (Model.read_rows)."""
    from keel.data.io import read_table

    if model is not None:
        return model.read_rows(str(path), delimiter=delimiter, encoding=encoding)
    return read_table(str(path), delimiter=delimiter, encoding=encoding)


def _read_text(path: Path, delimiter: str | None, encoding: str | None, columns: list[str]) -> Any:
    """A CSV's columns as written (``--with-input`` echoes ``00501`` and ``2e5``, not 501 and 200000.0)."""
    from keel.data.io import read_table

    return read_table(str(path), delimiter=delimiter, encoding=encoding, text=columns)


def _import_pipeline() -> None:
    """Import keel's pipeline (torch, pandas, ...) with the cyclic garbage collector paused, then
    freeze what the imports built out of its reach.

    Those imports create about a million long-lived Python objects; the collector would traverse
    them over and over while they load and once more at exit. On the seed case that was ~0.3 s of a
    ~2.1 s `keel train` process. Objects made later are collected as usual.
    """
    if "keel.train.pipeline" in sys.modules:
        return
    gc.disable()
    try:
        import keel.train.pipeline  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """KeelWarnings print as notes the moment they arise; other warnings as Python prints them."""
    if issubclass(category, KeelWarning):
        err.print(f"[yellow]note:[/yellow] {_escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


# Commands that need neither torch nor pandas: they skip the pipeline import (over a second).
_LIGHT_COMMANDS = {"config_", "serve", "runs", "compare"}


def _friendly(command: Callable[..., None]) -> Callable[..., None]:
    """Print KeelErrors as one line and exit 2 (unexpected errors exit 1); tracebacks only with --debug.

    Notes print as they arise; a quiet run that stops on an error shows the notes it had gathered
    (``error.notes``) just before the error, since they often explain it.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        debug = kwargs.get("debug", False)
        try:
            if command.__name__ not in _LIGHT_COMMANDS:
                _import_pipeline()
            with warnings.catch_warnings():
                warnings.simplefilter("always", KeelWarning)
                warnings.showwarning = _show_warning
                command(*args, **kwargs)
        except KeelError as error:
            if debug:  # the traceback, and the same exit status as without --debug: scripts may test for 2
                traceback.print_exc()
                raise typer.Exit(2) from None
            if kwargs.get("quiet") or kwargs.get("as_json"):
                for note in error.notes:
                    err.print(f"[yellow]note:[/yellow] {_escape(note)}", highlight=False, soft_wrap=True)
            # Escaped: a message like "pip install 'keel[track]'" is text, not rich markup.
            err.print(f"[red]error:[/red] {_escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            # No model was saved; a training that had checkpointed can go on from its last one.
            resumable = command.__name__ == "train"
            err.print("interrupted; no model was saved." + (
                " If the run had written a checkpoint, rerun the same command with --resume to continue it."
                if resumable else ""), highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except typer.Exit:  # a command's own exit status (a data-parallel rank's, once rank 0 printed why)
            raise
        except BrokenPipeError:  # the reader of the output left (keel config | head -1): quietly, as head expects
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            raise typer.Exit(1) from None
        except Exception as error:  # noqa: BLE001 - the last line of defence for a readable CLI
            if debug:
                raise
            err.print(f"[red]internal error:[/red] {type(error).__name__}: {_escape(str(error))} "
                      "(rerun with --debug for the traceback, and please report it)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return run


class _OptionalValues(TyperCommand):
    """A command whose options in ``optional_values`` may also be given bare: ``--mlflow`` alone is ``--mlflow=``.

    click spells such an option ``is_flag=False, flag_value=...``, but typer's own parser (0.29)
    ignores ``flag_value`` and asks for the value. So the arguments are rewritten before parsing: a
    bare option (last, or followed by another option) gets an empty value. ``--mlflow URI`` and
    ``--mlflow=URI`` work as usual; a bare ``--mlflow`` just before DATA would take DATA as its URI,
    so it goes after DATA or before another option.
    """

    optional_values = ("--mlflow", "--resume")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        rewritten = []
        for index, arg in enumerate(args):
            if arg == "--":
                rewritten.extend(args[index:])
                break
            bare = index + 1 == len(args) or args[index + 1].startswith("-")
            rewritten.append(f"{arg}=" if arg in self.optional_values and bare else arg)
        return super().parse_args(ctx, rewritten)


@app.command(cls=_OptionalValues)
@_friendly
def train(
    data: TrainingData,
    target: Target = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")] = None,
    set_: SetKeys = None,
    drop: Drop = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="fast, balanced (the default) or best: defaults for every key the config leaves unset.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Model directory to write (default: a new runs/<data>-<time>/).")] = None,
    test: Annotated[Optional[Path], typer.Option("--test", help="Evaluate on this file instead of a held-out split.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (same as --set training.seed=N).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", help="Seconds the run may take (same as --set training.time_limit=S): epochs and bagged networks are planned to fit.")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Train data-parallel over N processes (torch.distributed; gloo on the CPU): each trains on its shard of the rows, gradients averaged every step.")] = 1,
    backend: Backend = "torch",
    workers: Annotated[Optional[int], typer.Option("--workers", help="Ray Train workers for --backend ray (data-parallel ranks; default 1).")] = None,
    ray_address: RayAddress = None,
    ray_storage: Annotated[Optional[str], typer.Option("--ray-storage", help="With --backend ray: a directory or URI every node can write, where rank 0's model passes back (default: a temporary directory here, enough for one machine).")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log-file", help="Append a plain-text log of the run to this file.")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML report (report.html, plots/) and its permutation importance.")] = False,
    embed_encoders: Annotated[bool, typer.Option("--embed-encoders", help="Copy frozen pretrained text encoders into the model directory (encoders/), so the model predicts without them at their paths.")] = False,
    mlflow: Annotated[Optional[str], typer.Option("--mlflow", help="Log the run to MLflow: --mlflow alone for MLflow's default store (MLFLOW_TRACKING_URI, else ./mlflow.db), --mlflow URI or --mlflow DIR (DIR/mlflow.db, artifacts in DIR/mlruns).")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue an unfinished run from its last checkpoint, with the same DATA and config: --resume RUN_DIR, or --resume alone (after DATA) for --output or else the latest unfinished run on DATA under runs/.")] = None,
    delimiter: Delimiter = None,
    encoding: Encoding = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a model on DATA to predict --target, evaluate it and save it to --output (default: runs/<data>-<time>/)."""
    from keel.artifact import check_destination
    from keel.console import RichReporter
    from keel.train.callbacks import Reporters
    from keel.train.checkpoint import output_lock
    from keel.train.pipeline import fit

    settings = _settings(config, set_, seed, preset, time_limit, drop)
    nproc = _processes(backend, nproc, workers)
    if mlflow is not None:  # before any training: a missing extra or an unusable store must not cost one
        from keel.track.mlflow import check_store

        check_store(mlflow or None, what="--mlflow")
    keel_chose = output is None and not resume  # then the folder is always named: it is the only way to find it
    if resume is not None:
        output = _resumed_output(resume, output, data)
    if output is not None:
        check_destination(output)  # before the data is read: an unusable --output must not cost a training
    log = _open_log(log_file)
    reporter = RichReporter(err, quiet=quiet or as_json)
    runner = reporter if log is None else Reporters(reporter, log)
    # The lock is held from before the data is read until the report and tracking are done.
    from keel.train.distributed import join_torchrun

    join_torchrun()  # under torchrun, one rank of its job (WORLD_SIZE, RANK); alone otherwise
    if int(os.environ.get("RANK", "0")) > 0:  # a torchrun rank other than 0: it trains, rank 0 writes and reports
        try:
            fit(str(data), target=target, config=settings, test=None if test is None else str(test), quiet=True,
                importance=False, delimiter=delimiter, encoding=encoding)
        except ConfigError:  # every rank has the same config, so the same error: rank 0 prints it, once
            if debug:
                raise
            raise typer.Exit(2) from None
        return
    with _logged(log), _destination(output, data) as destination, output_lock(destination):
        if log is not None:
            log.line(f"keel train {data} -> {destination}")
        # fit reads the files itself: one larger than data.memory_budget is streamed, never read whole.
        model = fit(str(data), target=target, config=settings, test=None if test is None else str(test),
                    reporter=runner, importance=not no_report, output=destination, resume=resume is not None,
                    delimiter=delimiter, encoding=encoding, nproc=nproc, backend=backend, ray_address=ray_address,
                    ray_storage=ray_storage, quiet=quiet or as_json)
        if embed_encoders:
            embedded = model.embed_encoders()
            if embedded and not (quiet or as_json):
                out.print(f"embedded the encoder(s) of {embedded} in the model directory", highlight=False)
        if log is not None:
            _log_results(log, model.metrics, destination)
        if not as_json:
            _print_metrics(model.metrics, "test")
            if not quiet or keel_chose:
                out.print(f"saved the model to [bold]{destination}[/bold]", highlight=False, soft_wrap=True)
        extras = _after_training(model, destination, runner, mlflow=mlflow, log=log, quiet=quiet or as_json,
                                 report=not no_report, debug=debug)
    if as_json:
        out.print_json(json.dumps({"model": str(destination), "metrics": model.metrics, "notes": model.notes,
                                   **extras}))


def _processes(backend: str, nproc: int, workers: Optional[int]) -> int:
    """The data-parallel ranks: --nproc for the torch backend, --workers for Ray (each refused with the other)."""
    from keel.cluster import check_backend

    if check_backend(backend) == "ray":
        if nproc != 1:
            raise ConfigError("--nproc starts processes on this machine; with --backend ray, ask for --workers N.")
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1; got {workers}.")
        return 1 if workers is None else workers
    if workers is not None:
        raise ConfigError("--workers is the number of Ray Train workers: add --backend ray (or use --nproc N here).")
    return nproc


def _settings(config: Optional[Path], set_: Optional[list[str]], seed: Optional[int], preset: Optional[str],
              time_limit: Optional[float] = None, drop: Optional[list[str]] = None) -> Any:
    """The config file with --set, --seed, --preset and --time-limit laid over it, and --drop added to its
    drop_columns."""
    from keel.config import load_config

    overrides = list(set_ or []) + ([f"training.seed={seed}"] if seed is not None else [])
    overrides += [f"preset={preset}"] if preset is not None else []
    overrides += [f"training.time_limit={time_limit}"] if time_limit is not None else []
    settings = load_config(config, overrides)
    if drop:
        settings = load_config(settings, {"drop_columns": [*(settings.drop_columns or []), *drop]})
    return settings


def _resumed_output(resume: str, output: Optional[Path], data: Path) -> Path:
    """The run directory ``--resume`` continues: RUN_DIR, else --output, else the latest unfinished run on DATA."""
    from keel.errors import ConfigError

    if resume:
        if output is not None and Path(resume) != output:
            raise ConfigError(f"--resume {resume} and --output {output} name two directories; a resumed run writes the "
                              "one it resumes. Pass only --resume RUN_DIR.")
        return Path(resume)
    if output is not None:
        return output
    from keel.train.checkpoint import find_unfinished_run

    return find_unfinished_run(data, RUNS_DIR)


@contextlib.contextmanager
def _destination(output: Optional[Path], data: Path) -> Iterator[Path]:
    """``--output``, or a fresh ``runs/<data>-<time>/`` reserved now (empty), which a run that fails
    before writing to it removes again, with ``runs/`` itself when the run made it."""
    if output is not None:
        yield output
        return
    from keel.runs import run_directory

    parent_existed = RUNS_DIR.is_dir()
    folder = run_directory(data, RUNS_DIR)
    try:
        yield folder
    except BaseException:
        _remove_if_empty(folder)
        if not parent_existed:
            _remove_if_empty(RUNS_DIR)
        raise


@contextlib.contextmanager
def _logged(log: Any) -> Iterator[None]:
    """Around a run with --log-file: KeelWarnings and the error that ends the run go to the log too."""
    if log is None:
        yield
        return
    try:
        with _logged_warnings(log):
            yield
    except BaseException as error:
        log.line(f"error: {_error_text(error)}")
        raise
    finally:
        log.close()


def _after_training(model: Any, output: Path, reporter: Any, *, mlflow: Optional[str], log: Any,
                    quiet: bool, report: bool = True, debug: bool = False) -> dict[str, Any]:
    """What follows a saved training: the report, then tracking (it logs the report too).

    Returns:
        Extra keys for ``keel train --json`` (``"report"``: its path; ``"mlflow"``: where the run was logged).
    """
    extras: dict[str, Any] = {"report": None}  # null: skipped (--no-report) or not drawn
    if report:
        line = _draw_report(model, reporter, debug)
        drawn = line.startswith("report: ")
        if drawn:
            extras["report"] = str(model.path / "report.html")
        if log is not None:
            log.line(line)
        if not quiet or line.startswith("note: the report could not be drawn"):  # a failure shows even then
            err.print(line, highlight=False, soft_wrap=True, markup=False)

    # ---- tracking -------------------------------------------------------------------------------
    if mlflow is not None:
        from keel.track.mlflow import log_run

        with reporter.step("logging the run to MLflow"):
            tracked = log_run(output, uri=mlflow or None)
        extras["mlflow"] = {"run_id": tracked.run_id, "experiment_id": tracked.experiment_id,
                            "tracking_uri": tracked.tracking_uri, "artifact_uri": tracked.artifact_uri}
        line = f"logged the run to MLflow: run {tracked.run_id} at {tracked.tracking_uri}"
        if log is not None:
            log.line(line)
        if not quiet:
            err.print(line + f" (open it with: mlflow ui --backend-store-uri {tracked.tracking_uri})",
                      highlight=False, soft_wrap=True, markup=False)
    return extras


def _draw_report(model: Any, reporter: Any, debug: bool) -> str:
    """Attach the report to the saved model; returns the line that says where it is (or why not).

    The model is saved before: a report that fails (a bug in a figure) costs the page, not the training.
    """
    if model.test_predictions is None:
        return (f"note: no report: there were no test rows to draw it from (training.test_split is 0); draw it on "
                f"labelled rows with: keel report {model.path} --data FILE")
    try:
        with reporter.step("drawing the report"):
            result = model.report()
    except Exception as error:  # noqa: BLE001 - the trained model is already safe on disk
        if debug:
            raise
        return (f"note: the report could not be drawn ({type(error).__name__}: {error}); the model is saved. "
                f"Retry with: keel report {model.path} --debug")
    return f"report: {result.html} ({result.seconds:.1f} s; open it in a browser)"


def _open_log(path: Optional[Path]) -> Any:
    """The --log-file reporter, or None; a file that cannot be opened is a one-line error before any work."""
    if path is None:
        return None
    from keel.errors import ConfigError
    from keel.train.callbacks import LogReporter

    try:
        return LogReporter(path)
    except OSError as error:
        raise ConfigError(f"cannot write the log file {path}: {error.strerror or error}. "
                          "Choose another --log-file.") from None


def _log_results(log: Any, metrics: Optional[dict[str, Any]], output: Path) -> None:
    scalars = {key: value for key, value in (metrics or {}).items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    if scalars:
        log.line("test metrics: " + "  ".join(
            f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in scalars.items()))
    log.line(f"saved the model to {output}")


def _error_text(error: BaseException) -> str:
    if isinstance(error, KeelError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}"


def _remove_if_empty(folder: Path) -> None:
    """Drop a folder keel made for a run that failed before writing to it."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (the model was saved) or gone: either way nothing to undo


@contextlib.contextmanager
def _logged_warnings(log: Any) -> Iterator[None]:
    """KeelWarnings also go to the --log-file while a run is logged."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, KeelWarning):
            log.line(f"note: {message}")
        shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


@app.command()
@_friendly
def tune(
    data: TrainingData,
    target: Target = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file (fixed settings, and tune.space for the search space).")] = None,
    set_: SetKeys = None,
    drop: Drop = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="fast, balanced (the default) or best: what each trial starts from.")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials the study should hold (a resumed study runs only the missing ones).")] = 20,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", help="Start no trial after this many seconds.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Keep the study in this Optuna storage (sqlite:///tune.db) so that a killed search resumes.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="The study's name in --storage (default: <data>-<target>).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Trials run at once, each in its own process (with --backend ray: Ray trials at once).")] = 1,
    backend: Backend = "torch",
    ray_address: RayAddress = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Model directory for the best settings' model (default: a new runs/<data>-<time>/).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (same as --set training.seed=N): the split, the trials' training and the sampler.")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the best model's HTML report.")] = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Search keel's settings on DATA with Optuna, then train and save the best (--output)."""
    from keel.console import RichReporter
    from keel.search import tune as run_tune
    from keel.train.checkpoint import output_lock

    settings = _settings(config, set_, seed, preset, drop=drop)
    reporter = RichReporter(err, quiet=quiet or as_json)
    with _destination(output, data) as destination, output_lock(destination):
        model, result = run_tune(str(data), target=target, config=settings, trials=trials, time_limit=time_limit,
                                 storage=storage, study=study, jobs=jobs, output=destination, reporter=reporter,
                                 backend=backend, ray_address=ray_address)
        extras = _after_training(model, destination, reporter, mlflow=None, log=None, quiet=quiet or as_json,
                                 report=not no_report, debug=debug)
    summary = result.summary
    if as_json:
        out.print_json(json.dumps({"model": str(destination), "metrics": model.metrics, "study": summary, **extras}))
        return
    from keel.search.summary import study_tables

    out.print(study_tables(summary))
    _print_metrics(model.metrics, "test (best settings)")
    out.print(f"saved the model to [bold]{destination}[/bold] (the study: {destination / 'tune.json'})",
              highlight=False, soft_wrap=True)


@app.command()
@_friendly
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    data: Annotated[Path, typer.Argument(help="Labelled data (with the target column).")],
    delimiter: Delimiter = None,
    encoding: Encoding = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Evaluate MODEL on labelled DATA."""
    from keel.model import load

    loaded = load(model)
    metrics = loaded.evaluate(_read(data, delimiter, encoding, loaded))
    if as_json:
        out.print_json(json.dumps(metrics))
    else:
        _print_metrics(metrics, f"evaluation on {data}")


@app.command()
@_friendly
def report(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Labelled rows to draw the report on (default: the test rows kept from training).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the HTML page here instead of attaching report.html and plots/ to MODEL.")] = None,
    delimiter: Delimiter = None,
    encoding: Encoding = None,
    debug: Debug = False,
) -> None:
    """Draw MODEL's one-file HTML report again: on the kept test predictions, or on labelled --data."""
    from keel.model import load

    loaded = load(model)
    result = loaded.report(_read(data, delimiter, encoding, loaded) if data is not None else None, output=output)
    out.print(f"wrote the report to [bold]{result.html}[/bold] ({result.source}, {result.seconds:.1f} s)",
              highlight=False, soft_wrap=True)


@app.command()
@_friendly
def predict(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    data: Annotated[Path, typer.Argument(help="Rows to predict.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: .csv, .parquet or .jsonl.")],
    proba: Annotated[bool, typer.Option("--proba", help="Add a proba_<class> column per class.")] = False,
    with_input: Annotated[bool, typer.Option("--with-input", help="Put the input columns before the predictions.")] = False,
    delimiter: Delimiter = None,
    encoding: Encoding = None,
    debug: Debug = False,
) -> None:
    """Predict DATA with MODEL and write the predictions, in the input's row order, to --output."""
    import pandas as pd

    from keel.data.io import writable, write_table
    from keel.model import load

    written = writable(output)  # before reading and predicting: a wrong extension is known now
    if output.exists() and data.exists() and os.path.samefile(output, data):
        raise ConfigError(f"--output {output} is the input file {data}: the predictions would replace the rows they "
                          "were made from. Write them to another file (--with-input keeps the input's columns).")
    loaded = load(model)
    frame = _read(data, delimiter, encoding, loaded)
    predictions = loaded.predict_frame(frame, proba=proba)
    if with_input:
        # CSV to CSV: the cells echoed as written (00501, 2e5); a typed output (Parquet, JSON Lines) keeps types.
        if "csv" in frame.attrs and written == "csv":  # read_table marks a CSV's frame
            frame = _read_text(data, delimiter, encoding, list(frame.columns))
        renamed = _beside_input(list(frame.columns), list(predictions.columns))
        for old, new in renamed.items():
            err.print(f"[yellow]note:[/yellow] {_escape(data.name)} has a column {_escape(repr(old))} too (kept as it "
                      f"was): the prediction is in {_escape(repr(new))}",
                      highlight=False, soft_wrap=True)
        predictions = pd.concat([frame, predictions.rename(columns=renamed)], axis=1)
    write_table(predictions, output)
    err.print(f"wrote {len(predictions)} predictions to {output}")


def _beside_input(inputs: list[str], predicted: list[str]) -> dict[str, str]:
    """New names for the prediction columns that an input column already has (the target's, when the rows
    predicted hold their answers): ``<name>_predicted`` (more ``_predicted`` while that is taken too), so the
    input's own values are never overwritten."""
    taken, renamed = set(inputs) | set(predicted), {}
    for name in predicted:
        if name in inputs:
            new = f"{name}_predicted"
            while new in taken:
                new += "_predicted"
            taken.add(new)
            renamed[name] = new
    return renamed


@app.command()
@_friendly
def info(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Describe MODEL: task, target, classes, features, the network trained and its metrics."""
    from keel.describe import describe_network, network_lines
    from keel.model import load

    loaded = load(model)
    summary = loaded.summary()
    network = describe_network(loaded)
    # Added to the raw shape, not in place of it: scripts reading the spec's keys keep working.
    summary["network"] = {**summary["network"], **network}
    summary["notes"] = list(loaded.notes)  # what the run said: the preset line, dropped columns, thread moves
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"keel model {model}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("task", "target", "classes", "created", "epochs_trained", "best_epoch"):
        if key in ("epochs_trained", "best_epoch") and summary.get("bagged"):  # every network's, not the first's
            table.add_row(key, ", ".join(str(bag[key]) for bag in summary["bagged"])
                          + f" ({len(summary['bagged'])} bagged networks)")
        else:
            table.add_row(key, str(summary[key]))
    for label, text in network_lines(network):
        table.add_row(label, text)
    table.add_row("features", ", ".join(f"{f['name']} ({f['type']})" for f in summary["features"]))
    for name, reason in summary["dropped"].items():
        table.add_row("dropped", f"{name}: {reason}")
    for note in summary["notes"]:
        table.add_row("note", _escape(note))
    out.print(table)
    _print_metrics(summary["metrics"], "test (at training time)")


@app.command()
@_friendly
def runs(
    directory: Annotated[Path, typer.Argument(help="The folder holding the model directories.")] = Path("runs"),
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """List the runs under DIRECTORY (default runs/), oldest first: task, main metric, rows, time, preset, changes."""
    from keel.runs import find_runs

    found = find_runs(directory)
    if as_json:
        out.print_json(json.dumps([run.to_dict() for run in found]))
        return
    if not found:
        out.print(f"no runs in {directory} yet; train one with: keel train DATA --target COLUMN "
                  f"(it writes runs/<data>-<time>/)", highlight=False, soft_wrap=True, markup=False)
        return
    out.print(_runs_table(found, directory, out.width))
    _print_problems(found)


def _runs_table(found: list[Any], directory: Path, width: int) -> Table:
    from keel.runs import summarize_changes

    # Short lines stacked in four columns, widths set here: rich's own sharing squeezes the changes
    # column to nothing at 80 columns, and it is the one that needs the room.
    readable = [run for run in found if run.problem is None]
    wide = width >= 120
    fixed = {
        "run\ntraining time": min(max(len(run.name) for run in found), 26 if wide else 15),
        "target\ntask, preset": min(max([len(f"{run.task}, {run.preset}") for run in readable] + [12]), 20 if wide else 12),
        "test metric\nrows train/val/test": 18 if wide else 15,
    }
    table = Table(title=f"runs in {_escape(str(directory))}, oldest first", title_justify="left",
                  box=box.SIMPLE_HEAD, show_lines=True)
    for name, size in fixed.items():
        table.add_column(name, width=size, overflow="fold")
    table.add_column("changes from the previous run", overflow="fold",
                     width=max(20, width - sum(fixed.values()) - 3 * (len(fixed) + 1) - 1))  # padding, rules
    for run in found:
        if run.problem is not None:
            table.add_row(_escape(run.name), "–", "–", "[red]cannot be read (see below)[/red]")
            continue
        main = run.main_metric
        table.add_row(_escape(f"{run.name}\n{_duration(run.seconds)}"),
                      _escape(f"{run.target or '–'}\n{run.task or '–'}, {run.preset or '–'}"),
                      ("–" if main is None else f"{main[0]} {main[1]:.4f}") + "\n" + _rows_text(run.rows),
                      _escape(summarize_changes(run.changes)))
    return table


def _print_problems(found: list[Any]) -> None:
    for run in found:
        if run.problem is not None:
            err.print(f"[red]cannot read[/red] {_escape(str(run.path))}: {_escape(run.problem)}",
                      highlight=False, soft_wrap=True)


@app.command()
@_friendly
def compare(
    models: Annotated[list[Path], typer.Argument(help="Two or more model directories (runs).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML page to write.")] = Path("compare.html"),
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Compare runs: test metrics side by side, the config keys that differ, and learning curves (HTML page)."""
    from keel.report.compare import write_compare_page
    from keel.runs import compare_runs

    comparison = compare_runs(models)
    page = write_compare_page(comparison, output)
    if as_json:
        out.print_json(json.dumps({**comparison.to_dict(), "html": str(page)}))
        return
    for warning in comparison.warnings:
        err.print(f"[yellow]note:[/yellow] {_escape(warning)}", highlight=False, soft_wrap=True)
    for table in _comparison_tables(comparison):
        out.print(table)
    out.print(f"wrote the comparison with learning curves to [bold]{_escape(str(page))}[/bold]",
              highlight=False, soft_wrap=True)


def _comparison_tables(comparison: Any) -> list[Table]:
    from keel.runs import format_value, run_labels

    labels = run_labels(comparison.runs)
    overview = Table(title="runs", title_justify="left")
    metrics = Table(title="test metrics", title_justify="left")
    config = Table(title="configuration differences", title_justify="left")
    for table, first in ((overview, ""), (metrics, "metric"), (config, "key")):
        table.add_column(first)
        for label in labels:
            # Folded, not cut with an ellipsis: run names often differ only at their end (their time).
            table.add_column(_escape(label), justify="right" if table is metrics else "left", overflow="fold")
    for name, values in (("task", [run.task for run in comparison.runs]),
                         ("target", [run.target for run in comparison.runs]),
                         ("data", [run.data for run in comparison.runs]),
                         ("created", [run.created for run in comparison.runs]),
                         ("epochs (best)", [", ".join(f"{network['epochs']} ({network['best_epoch'] or '–'})"
                                                      for network in run.networks) for run in comparison.runs]),
                         ("training time", [_duration(run.seconds) for run in comparison.runs])):
        overview.add_row(name, *[_escape(str(value)) if value is not None else "–" for value in values])
    for name, numbers in comparison.metrics.items():
        best = comparison.best(name)
        cells = ["–" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
                 for value in numbers]
        if best is not None:
            cells[best] = f"[bold green]{cells[best]}[/bold green]"
        metrics.add_row(name, *cells)
    for key, settings in comparison.config.items():
        config.add_row(_escape(key), *[_escape(format_value(value)) for value in settings])
    if not comparison.config:
        config.add_row("(none: the same configuration)", *["" for _ in labels])
    return [overview, metrics, config]


def _rows_text(rows: Optional[dict[str, int]]) -> str:
    if not rows:
        return "–"
    return "/".join(f"{rows[part]:,}" if part in rows else "–" for part in ("train", "validation", "test"))


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command("export")
@_friendly
def export_(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    format_: Annotated[str, typer.Option("--format", "-f", help="onnx (the default) or tflite.")] = "onnx",
    quantize: Annotated[Optional[str], typer.Option("--quantize", help="int8: int8 weights (ONNX only).")] = None,
    static: Annotated[bool, typer.Option("--static", help="With --quantize: int8 activations too, calibrated on --data.")] = False,
    prune: Annotated[Optional[str], typer.Option("--prune", help="Share of hidden neurons to remove, in (0, 1), or auto (largest within --max-drop on --data).")] = None,
    prune_method: Annotated[str, typer.Option("--prune-method", help="structured (whole neurons) or unstructured (weights).")] = "structured",
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="--prune auto: the largest relative drop of the main metric (default 0.005).")] = None,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Epochs of training on --data after pruning.")] = 0,
    data: Annotated[Optional[Path], typer.Option("--data", help="Rows to check parity, calibrate and measure on (labelled for metrics).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the file here instead of attaching it to MODEL.")] = None,
    pruned_output: Annotated[Optional[Path], typer.Option("--pruned-output", help="Where a pruned model is saved (default: MODEL-pruned).")] = None,
    delimiter: Delimiter = None,
    encoding: Encoding = None,
    as_json: AsJson = False,
    debug: Debug = False,
) -> None:
    """Export MODEL with its preprocessing inside: ONNX (or TFLite), optionally pruned and int8, parity-checked."""
    from keel.export.exporter import export
    from keel.export.summary import report_tables
    from keel.model import load

    loaded = load(model)
    rows = _read(data, delimiter, encoding, loaded) if data is not None else None
    report = export(loaded, format_, quantize=quantize, static=static, prune=prune, prune_method=prune_method,
                    max_drop=max_drop, finetune_epochs=finetune_epochs, data=rows, output=output,
                    pruned_output=pruned_output)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    for table in report_tables(report):
        out.print(table)


@app.command("config")
@_friendly
def config_(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file to resolve.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="fast, balanced (the default) or best.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
    debug: Debug = False,
) -> None:
    """Print the configuration `keel train` would run with: every key, the preset applied, as YAML."""
    from keel.config import load_config, resolved_config_yaml

    # The same resolution as `keel train`, so what this prints is what a training would use.
    overrides = list(set_ or []) + ([f"preset={preset}"] if preset is not None else [])
    settings = load_config(config, overrides)
    if as_json:
        out.print_json(json.dumps(settings.model_dump(mode="json")))
    else:
        sys.stdout.write(resolved_config_yaml(settings))  # exact text: no rich markup or wrapping


@app.command()
@_friendly
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")] = Path("runs/penguins-model"),
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train on the shipped Palmer penguins table, evaluate, save, predict a few rows."""
    from keel.artifact import check_destination
    from keel.console import RichReporter
    from keel.data.io import read_table
    from keel.model import load
    from keel.train.pipeline import fit

    check_destination(output)
    with resources.as_file(resources.files("keel") / "resources" / "penguins.csv") as data:
        out.rule("keel demo: predict a penguin's species from its measurements (Palmer penguins, CC0)")
        reporter = RichReporter(err, quiet=quiet)
        model = fit(str(data), target="species", reporter=reporter)
        _print_metrics(model.metrics, "held-out test rows")
        model.save(output)
        out.print(f"saved the model to [bold]{output}[/bold]")
        report_line = _draw_report(model, reporter, debug)
        rows = read_table(str(data)).sample(5, random_state=0)
        predictions = load(output).predict_frame(rows.drop(columns="species"), proba=True)
        predictions = predictions.rename(columns={"species": "predicted"})
        predictions.insert(0, "true species", rows["species"].to_numpy())
        out.print(predictions.round(3).to_string(index=False))
    out.rule("next")
    # The repository's copy where the demo runs in it; elsewhere (after pip install) the packaged one.
    table = "examples/penguins.csv" if Path("examples/penguins.csv").is_file() else shlex.quote(str(data))
    out.print(f"  keel info {output}\n"
              f"  keel report {output} --data {table}\n"
              f"  keel evaluate {output} {table}\n"
              f"  keel predict {output} {table} --output predictions.csv --proba\n"
              "  keel train YOUR_DATA.csv --target YOUR_COLUMN --output my-model", highlight=False, soft_wrap=True)
    out.print(report_line, highlight=False, soft_wrap=True, markup=False)


@app.command()
@_friendly
def serve(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind: 127.0.0.1 (the default) serves this machine only; 0.0.0.0 every interface.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option("--workers", help="Server processes, each with its own copy of the model.")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most rows in one request.")] = DEFAULT_MAX_BATCH,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes; larger ones get 413.")] = DEFAULT_MAX_BODY,
    file: Annotated[str, typer.Option("--file", help="Which export to serve: model.onnx, or model.int8.onnx (keel export --quantize int8; a dynamic one answers a row per call).")] = "model.onnx",
    debug: Debug = False,
) -> None:
    """Serve MODEL over HTTP: POST /predict, /health, /ready, /metadata, /docs. Exports it to ONNX first when needed."""
    from keel.serve import ServeSettings
    from keel.serve.__main__ import check_address, check_export

    settings = ServeSettings(str(model), host, port, workers, max_batch, max_body, file)  # bad options: before any export
    check_address(settings.host, settings.port)  # an address that cannot be served, too (the server checks again)
    check_export(model, settings.file, needs_onnx=False)  # --file model.int8.onnx that is not there: before exporting
    _export_for_serving(model)
    # The server is a fresh process (python -m keel.serve) that never imports torch; exec keeps
    # this process's id, so a supervisor's SIGTERM reaches the server itself.
    command = [sys.executable, "-m", "keel.serve", settings.model, "--host", settings.host, "--port", str(settings.port),
               "--workers", str(settings.workers), "--max-batch", str(settings.max_batch),
               "--max-body", str(settings.max_body), "--file", settings.file]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, command)
    raise typer.Exit(subprocess.call(command))


def _export_for_serving(model: Path) -> None:
    """Export MODEL to ONNX (parity-checked) when it has no export made from its current weights.

    Without PyTorch (a serving-only install) nothing is exported: the server then says to run
    ``keel export`` where keel is fully installed.
    """
    from keel.artifact import WEIGHTS_FILE, read_manifest

    manifest = read_manifest(model, verify=False)  # loading the model for an export verifies every checksum
    record = manifest.files.get("model.onnx")
    if (record is not None and record.made_from in (None, manifest.files[WEIGHTS_FILE].sha256)
            and os.path.lexists(model / "model.onnx")):  # (a deleted export is made again)
        return
    if importlib.util.find_spec("torch") is None:
        return
    _import_pipeline()
    from keel.export.exporter import export
    from keel.model import load

    err.print(f"{model} has no ONNX export of its current weights; exporting it first")
    report = export(load(model))
    parity = report.parity
    err.print(f"exported {model / 'model.onnx'}: largest difference from keel {parity['max_difference']:.1e} on "
              f"{parity['rows']} {parity['source']} rows", highlight=False)


def _print_metrics(metrics: dict[str, Any] | None, title: str) -> None:
    from keel.evaluate.summary import metrics_tables

    if metrics:
        out.print(metrics_tables(metrics, title))


def main() -> None:
    """Console-script entry point. A mistake on the command line (an unknown option, a value of the wrong type, a
    missing argument) is one line naming the command and what was wrong, exit status 2, as every other error a
    user can cause; typer's own report is a framed box of several lines."""
    try:
        from typer._click import exceptions  # typer >= 0.2x vendors its own click
    except ImportError:  # pragma: no cover - older typer, on click
        from click import exceptions  # type: ignore[no-redef]
    help_asked = getattr(exceptions, "NoArgsIsHelpError", ())  # click >= 8.2; before, the help exits 0 itself
    try:
        code = app(prog_name="keel", standalone_mode=False)
    except help_asked as error:  # `keel` alone: the help (typer's rich help printed it already; plain click's not)
        text = error.format_message()
        if text.strip():
            print(text)
        sys.exit(error.exit_code)
    except exceptions.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else _command_named(sys.argv[1:])
        err.print(f"error: {command}: {error.format_message().rstrip('.')}; see '{command} --help'.",
                  highlight=False, markup=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except typer.Abort:  # Ctrl-C at a prompt
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _command_named(arguments: list[str]) -> str:
    """``keel CMD`` for the command the arguments name (an error without a context: an option missing its value),
    else ``keel``."""
    names = {command.name or command.callback.__name__.replace("_", "-")
             for command in app.registered_commands if command.callback is not None}
    first = next((argument for argument in arguments if not argument.startswith("-")), None)
    return f"keel {first}" if first in names else "keel"


if __name__ == "__main__":
    main()
