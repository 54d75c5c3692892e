"""The ``keel`` command: a thin layer that turns arguments into Python API calls.

A KeelError prints as one line on stderr and exits with status 2; ``--debug`` shows the traceback.
"""

# No `from __future__ import annotations` here: typer evaluates string annotations with
# typing.get_type_hints, which cost ~80 ms of every command; real annotation objects cost ~2 ms.
import functools
import gc
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from keel.errors import KeelError, KeelWarning
from keel.serve.settings import DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_PORT

app = typer.Typer(
    name="keel", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="From a table to a trained, evaluated, safely saved neural network.",
)
out = Console()
err = Console(stderr=True)

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No notes and no progress bar.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Delimiter = Annotated[Optional[str], typer.Option("--delimiter", help="CSV delimiter (default: sniffed).")]
Encoding = Annotated[Optional[str], typer.Option("--encoding", help="CSV encoding (default: UTF-8, else Latin-1).")]


def _read(path: Path, delimiter: str | None, encoding: str | None) -> Any:
    from keel.data.io import read_table

    return read_table(str(path), delimiter=delimiter, encoding=encoding)


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
        err.print(f"[yellow]note:[/yellow] {message}", highlight=False, soft_wrap=True)
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


# Commands that need neither torch nor pandas: they skip the pipeline import (over a second).
_LIGHT_COMMANDS = {"config_", "serve"}


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
            if debug:
                raise
            if kwargs.get("quiet") or kwargs.get("as_json"):
                for note in error.notes:
                    err.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
            err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written.")
            raise typer.Exit(130) from None
        except Exception as error:  # noqa: BLE001 - the last line of defence for a readable CLI
            if debug:
                raise
            err.print(f"[red]internal error:[/red] {type(error).__name__}: {error} "
                      "(rerun with --debug for the traceback, and please report it)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return run


@app.command()
@_friendly
def train(
    data: Annotated[Path, typer.Argument(help="Training data: CSV, Parquet or JSON Lines.")],
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Column to predict.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="fast, balanced (the default) or best: defaults for every key the config leaves unset.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")] = Path("model"),
    test: Annotated[Optional[Path], typer.Option("--test", help="Evaluate on this file instead of a held-out split.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (same as --set training.seed=N).")] = None,
    delimiter: Delimiter = None,
    encoding: Encoding = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a model on DATA to predict --target, evaluate it and save it to --output."""
    from keel.artifact import check_destination
    from keel.config import load_config
    from keel.console import RichReporter
    from keel.train.pipeline import fit

    overrides = list(set_ or []) + ([f"training.seed={seed}"] if seed is not None else [])
    overrides += [f"preset={preset}"] if preset is not None else []
    settings = load_config(config, overrides)
    check_destination(output)  # before the data is read: an unusable --output must not cost a training
    model = fit(_read(data, delimiter, encoding), target=target, config=settings,
                test=_read(test, delimiter, encoding) if test else None,
                reporter=RichReporter(err, quiet=quiet or as_json))
    model.save(output)
    if as_json:
        out.print_json(json.dumps({"model": str(output), "metrics": model.metrics, "notes": model.notes}))
        return
    _print_metrics(model.metrics, "test")
    if not quiet:
        out.print(f"saved the model to [bold]{output}[/bold]")


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

    metrics = load(model).evaluate(_read(data, delimiter, encoding))
    if as_json:
        out.print_json(json.dumps(metrics))
    else:
        _print_metrics(metrics, f"evaluation on {data}")


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

    from keel.data.io import write_table
    from keel.model import load

    frame = _read(data, delimiter, encoding)
    predictions = load(model).predict_frame(frame, proba=proba)
    if with_input:
        predictions = pd.concat([frame.drop(columns=[c for c in predictions if c in frame]), predictions], axis=1)
    write_table(predictions, output)
    err.print(f"wrote {len(predictions)} predictions to {output}")


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
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"keel model {model}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("task", "target", "classes", "created", "epochs_trained", "best_epoch"):
        table.add_row(key, str(summary[key]))
    for label, text in network_lines(network):
        table.add_row(label, text)
    table.add_row("features", ", ".join(f"{f['name']} ({f['type']})" for f in summary["features"]))
    for name, reason in summary["dropped"].items():
        table.add_row("dropped", f"{name}: {reason}")
    out.print(table)
    _print_metrics(summary["metrics"], "test (at training time)")


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

    rows = _read(data, delimiter, encoding) if data is not None else None
    report = export(load(model), format_, quantize=quantize, static=static, prune=prune, prune_method=prune_method,
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
        model = fit(str(data), target="species", reporter=RichReporter(err, quiet=quiet))
        _print_metrics(model.metrics, "held-out test rows")
        model.save(output)
        out.print(f"saved the model to [bold]{output}[/bold]")
        rows = read_table(str(data)).sample(5, random_state=0)
        predictions = load(output).predict_frame(rows.drop(columns="species"), proba=True)
        predictions = predictions.rename(columns={"species": "predicted"})
        predictions.insert(0, "true species", rows["species"].to_numpy())
        out.print(predictions.round(3).to_string(index=False))
    out.rule("next")
    out.print(f"  keel info {output}\n"
              f"  keel evaluate {output} examples/penguins.csv\n"
              f"  keel predict {output} examples/penguins.csv --output predictions.csv --proba\n"
              "  keel train YOUR_DATA.csv --target YOUR_COLUMN --output my-model", highlight=False, soft_wrap=True)


@app.command()
@_friendly
def serve(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind: 127.0.0.1 (the default) serves this machine only; 0.0.0.0 every interface.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option("--workers", help="Server processes, each with its own copy of the model.")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most rows in one request.")] = DEFAULT_MAX_BATCH,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes; larger ones get 413.")] = DEFAULT_MAX_BODY,
    debug: Debug = False,
) -> None:
    """Serve MODEL over HTTP: POST /predict, /health, /ready, /metadata, /docs. Exports it to ONNX first when needed."""
    from keel.serve import ServeSettings

    settings = ServeSettings(str(model), host, port, workers, max_batch, max_body)  # bad options: before any export
    _export_for_serving(model)
    # The server is a fresh process (python -m keel.serve) that never imports torch; exec keeps
    # this process's id, so a supervisor's SIGTERM reaches the server itself.
    command = [sys.executable, "-m", "keel.serve", settings.model, "--host", settings.host, "--port", str(settings.port),
               "--workers", str(settings.workers), "--max-batch", str(settings.max_batch),
               "--max-body", str(settings.max_body)]
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
    if record is not None and record.made_from in (None, manifest.files[WEIGHTS_FILE].sha256):
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
    """Console-script entry point."""
    app(prog_name="keel")


if __name__ == "__main__":
    main()
