"""Runs: the model directories that ``keel train`` leaves under ``runs/``, listed and compared.

A run is a model directory; everything said about it comes from its ``keel.json``, read with
:func:`keel.artifact.read_manifest` (no torch, no weights, no checksums: listing a hundred runs
must stay instant). Older models lack the run record (rows per part, durations); their figures
come from what the manifest has, or show as missing.

    find_runs("runs")              every run under a folder, oldest first, each with the config
                                   keys that changed since the run before it
    read_run("runs/penguins-...")  one run
    compare_runs([a, b, ...])      scalar metrics side by side and the config keys that differ
    run_directory("data.csv")      where ``keel train`` puts a run when no --output is given
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeGuard

from keel.artifact import METADATA_FILE, read_manifest
from keel.errors import ArtifactError, KeelError

#: The folder ``keel train`` writes to without ``--output``, and ``keel runs`` lists by default.
RUNS_DIR = "runs"

#: The metric a run is ranked by, per task: accuracy for classification, RMSE for regression.
MAIN_METRICS = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse"}

# Which way is better, for the metrics keel computes; others are shown without a winner.
HIGHER_IS_BETTER = {
    "accuracy": True, "roc_auc": True, "r2": True, "log_loss": False, "rmse": False, "mae": False,
    **{f"{name}_{average}": True for name in ("precision", "recall", "f1") for average in ("macro", "weighted")},
}

_UNSET = "(unset)"


@dataclass(frozen=True)
class Change:
    """One config key whose value differs between two runs (``before`` or ``after`` may be :data:`_UNSET`)."""

    key: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.key}: {format_value(self.before)} -> {format_value(self.after)}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "before": self.before, "after": self.after}


@dataclass
class Run:
    """What ``keel runs`` and ``keel compare`` know about one model directory.

    Attributes:
        path: The model directory.
        name: Its folder name.
        created: When it was trained (ISO 8601, UTC); for an unreadable run, its keel.json's time.
        problem: Why the run cannot be read (then most other fields are empty), else None.
        task, target, preset: From the manifest.
        config: The resolved configuration, flattened to dotted keys (``training.lr``).
        metrics: The test metrics at training time (the manifest's ``metrics``), {} when none.
        history: The per-epoch training history.
        rows: Rows used per part (``train``, ``validation``, ``test``...) when recorded, else None.
        seconds: Training time in seconds (the run record's, else the history's), else None.
        data: The training data's name (the run record's ``data.source``), else None.
        changes: The config keys that differ from the previous run (:func:`find_runs`); None for
            the first run or when not computed.
    """

    path: Path
    name: str
    created: str | None = None
    problem: str | None = None
    task: str | None = None
    target: str | None = None
    preset: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] | None = None
    seconds: float | None = None
    data: str | None = None
    changes: list[Change] | None = None

    @property
    def main_metric(self) -> tuple[str, float] | None:
        """``(name, value)`` of the task's main test metric (:data:`MAIN_METRICS`), or None."""
        name = MAIN_METRICS.get(self.task or "")
        value = self.metrics.get(name) if name else None
        if name is None or not _is_scalar(value):
            return None
        return name, float(value)

    @property
    def epochs(self) -> int:
        """Epochs trained (of the first network, with bagging: :attr:`networks` has each one's)."""
        return len(self.history.get("epochs") or [])

    @property
    def networks(self) -> list[dict[str, Any]]:
        """Each network's ``epochs`` trained and ``best_epoch`` (several with bagging, one without)."""
        bags = self.history.get("bags")
        histories = [bag for bag in bags if isinstance(bag, dict)] if isinstance(bags, list) and bags else [self.history]
        return [{"epochs": len(history.get("epochs") or []), "best_epoch": history.get("best_epoch")}
                for history in histories]

    def per_network(self, key: str) -> object:
        """``epochs`` or ``best_epoch``: the network's, or every bagged network's joined by commas."""
        values = [network[key] for network in self.networks]
        return values[0] if len(values) == 1 else ", ".join("–" if value is None else str(value) for value in values)

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-friendly values (``keel runs --json``)."""
        main = self.main_metric
        return {
            "name": self.name, "path": str(self.path), "created": self.created, "problem": self.problem,
            "task": self.task, "target": self.target, "data": self.data, "preset": self.preset,
            "metric": None if main is None else {"name": main[0], "value": main[1]},
            "rows": self.rows, "seconds": self.seconds, "epochs": self.epochs,
            "best_epoch": self.history.get("best_epoch"), "networks": self.networks,
            "changes": None if self.changes is None else [change.to_dict() for change in self.changes],
        }


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read one run from its model directory's manifest (checksums are not verified).

    Args:
        path: A model directory written by ``keel train``.

    Returns:
        The run.

    Raises:
        ArtifactError: No model there, or its ``keel.json`` cannot be read (the message says why).
    """
    directory = Path(path)
    manifest = read_manifest(directory, verify=False)
    schema = manifest.table_schema
    record = manifest.run if isinstance(manifest.run, dict) else {}
    return Run(
        path=directory, name=directory.resolve().name or str(directory), created=manifest.created,
        task=schema.get("task"), target=schema.get("target"), preset=_text(manifest.config.get("preset")),
        config=flatten(manifest.config), metrics=dict(manifest.metrics or {}), history=dict(manifest.history),
        rows=_rows(record, manifest.metrics), seconds=_seconds(record, manifest.history),
        data=_text((record.get("data") or {}).get("source")) if isinstance(record.get("data"), dict) else None,
    )


def find_runs(directory: str | os.PathLike[str] = RUNS_DIR) -> list[Run]:
    """Every run directly under ``directory``, oldest first, each with its changes from the one before.

    Folders without a ``keel.json`` are skipped; a run whose ``keel.json`` cannot be read is listed
    with its ``problem`` (and skipped when working out the next run's changes).

    Args:
        directory: The folder holding the runs (``runs`` by default).

    Returns:
        The runs, sorted by creation time (then name); [] for an empty folder.

    Raises:
        ArtifactError: ``directory`` does not exist or is not a folder.
    """
    folder = Path(directory)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ArtifactError(f"no runs at {folder}: it {what}. Train a model first (keel train DATA --target COLUMN "
                            f"writes {RUNS_DIR}/<data>-<time>/) or pass the folder that holds your model directories.")
    runs = []
    for child in sorted(folder.iterdir()):
        if not (child.is_dir() and (child / METADATA_FILE).is_file()):
            continue
        try:
            runs.append(read_run(child))
        except KeelError as error:
            runs.append(Run(path=child, name=child.name, problem=str(error), created=_modified(child / METADATA_FILE)))
    runs.sort(key=lambda run: (_moment(run.created), run.name))
    previous: Run | None = None
    for run in runs:
        if run.problem is None:
            run.changes = None if previous is None else config_changes(previous.config, run.config)
            previous = run
    return runs


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: ``{"training": {"lr": 0.01}}`` -> ``{"training.lr": 0.01}``.

    Lists and other values are kept as they are; an empty section keeps its key with ``{}``.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """The dotted keys whose values differ between two flattened configs, sorted by key.

    A key that only one side has shows ``(unset)`` on the other.
    """
    keys = sorted(set(before) | set(after))
    return [Change(key, before.get(key, _UNSET), after.get(key, _UNSET))
            for key in keys if before.get(key, _UNSET) != after.get(key, _UNSET)]


def format_value(value: Any, width: int = 40) -> str:
    """A config value as a short string: lists as JSON, long values cut with an ellipsis."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def summarize_changes(changes: Sequence[Change] | None, limit: int = 3) -> str:
    """The changes as one cell of text: at most ``limit`` of them, then ``+N more``; "first run" for None."""
    if changes is None:
        return "first run"
    if not changes:
        return "same config"
    shown = [str(change) for change in changes[:limit]]
    if len(changes) > limit:
        shown.append(f"+{len(changes) - limit} more")
    return "\n".join(shown)


@dataclass
class Comparison:
    """Runs side by side (``keel compare``).

    Attributes:
        runs: The runs, in the order given.
        metrics: Scalar test metric name -> one value per run (None where a run lacks it), in the
            order the metrics first appear.
        config: The dotted config keys whose values differ between the runs -> one value per run
            (:data:`_UNSET` where a run lacks the key).
        warnings: What makes the runs hard to compare (different tasks or targets), one line each.
    """

    runs: list[Run]
    metrics: dict[str, list[float | int | None]]
    config: dict[str, list[Any]]
    warnings: list[str]

    def best(self, metric: str) -> int | None:
        """Index of the run with the best value of ``metric`` (None when unknown which way is better)."""
        higher = HIGHER_IS_BETTER.get(metric)
        values = [(float(value), index) for index, value in enumerate(self.metrics.get(metric, []))
                  if value is not None and not math.isnan(value)]
        if higher is None or len(values) < 2:
            return None
        return (max(values) if higher else min(values))[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (``keel compare --json``)."""
        return {
            "runs": [run.to_dict() for run in self.runs],
            "metrics": self.metrics,
            "config": self.config,
            "warnings": self.warnings,
        }


def compare_runs(paths: Iterable[str | os.PathLike[str]]) -> Comparison:
    """Read runs and set them side by side: scalar test metrics and the config keys that differ.

    Runs of different tasks or targets are allowed; :attr:`Comparison.warnings` says so, and each
    metric shows where it exists.

    Args:
        paths: Two or more model directories.

    Returns:
        The comparison.

    Raises:
        ArtifactError: A run cannot be read, or fewer than two runs were given.
    """
    directories = [Path(path) for path in paths]
    if len(directories) < 2:
        raise ArtifactError(f"compare needs at least two runs; got {len(directories)}. "
                            "Pass two or more model directories: keel compare runs/a runs/b.")
    runs = [read_run(directory) for directory in directories]
    names = list(dict.fromkeys(name for run in runs for name, value in run.metrics.items() if _is_scalar(value)))
    metrics = {name: [run.metrics[name] if _is_scalar(run.metrics.get(name)) else None for run in runs]
               for name in names}
    keys = sorted({key for run in runs for key in run.config})
    config = {key: [run.config.get(key, _UNSET) for run in runs] for key in keys
              if any(run.config.get(key, _UNSET) != runs[0].config.get(key, _UNSET) for run in runs)}
    warnings = []
    for what, values in (("tasks", [run.task for run in runs]), ("targets", [run.target for run in runs])):
        if len(set(values)) > 1:
            shown = ", ".join(f"{run.name}: {value}" for run, value in zip(runs, values))
            warnings.append(f"these runs have different {what} ({shown}); metrics are shown where they exist.")
    return Comparison(runs, metrics, config, warnings)


def run_labels(runs: Sequence[Run]) -> list[str]:
    """A column label per run: its folder name, or its path where two runs share a name."""
    names = [run.name for run in runs]
    return [str(run.path) if names.count(run.name) > 1 else run.name for run in runs]


def run_directory(data: str | os.PathLike[str], parent: str | os.PathLike[str] = RUNS_DIR,
                  now: _dt.datetime | None = None) -> Path:
    """Create and return a fresh run folder ``parent/<data-name>-<YYYYMMDD-HHMMSS>`` (UTC).

    The data name is the file's stem with anything but letters, digits, ``.``, ``_`` and ``-``
    replaced by ``-``. A folder that exists already gets ``-2``, ``-3``, ...: the new folder is
    created empty here, atomically, so two trainings started in the same second never share one.

    Args:
        data: The training data's path.
        parent: Where runs go.
        now: The time to stamp (the current time by default).

    Returns:
        The new, empty folder.

    Raises:
        ArtifactError: ``parent`` cannot be created or written.
    """
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = f"{data_name(data)}-{stamp}"
    try:
        Path(parent).mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            candidate = Path(parent) / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
    except OSError as error:
        raise ArtifactError(f"cannot create a run folder under {parent}: {error.strerror or error}. "
                            "Pass --output DIR to write the model elsewhere.") from None
    raise ArtifactError(f"{parent} already holds 999 runs named {base}; pass --output DIR.")


def data_name(data: str | os.PathLike[str]) -> str:
    """A file's stem made safe for a folder name (``my data (v2).csv`` -> ``my-data-v2``); ``data`` if empty."""
    stem = Path(os.fspath(data)).name
    for suffix in (".gz", ".bz2", ".zst", ".xz", ".zip"):
        stem = stem.removesuffix(suffix)
    stem = Path(stem).stem if "." in stem.lstrip(".") else stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
    return cleaned or "data"


# ---- helpers ---------------------------------------------------------------------------------
def _is_scalar(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _rows(record: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> dict[str, int] | None:
    """Rows per part from the run record; else the test rows the metrics counted."""
    rows = record.get("rows")
    if isinstance(rows, Mapping):
        return {str(key): int(value) for key, value in rows.items() if _is_scalar(value)}
    counted = (metrics or {}).get("n_rows")
    return {"test": int(counted)} if _is_scalar(counted) else None


def _seconds(record: Mapping[str, Any], history: Mapping[str, Any]) -> float | None:
    """Training seconds: the run record's, else the history's (summed over bagged networks)."""
    seconds = record.get("seconds")
    if isinstance(seconds, Mapping) and _is_scalar(seconds.get("training")):
        return float(seconds["training"])
    bags = history.get("bags")
    parts = bags if isinstance(bags, list) and bags else [history]
    values = [part.get("seconds") for part in parts if isinstance(part, Mapping)]
    numbers = [value for value in values if _is_scalar(value)]
    if not values or len(numbers) != len(values):
        return None
    return float(sum(numbers))


def _moment(created: str | None) -> _dt.datetime:
    """A sortable time from an ISO string; unknown or unreadable times sort first."""
    earliest = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    if not created:
        return earliest
    try:
        moment = _dt.datetime.fromisoformat(created)
    except ValueError:
        return earliest
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _modified(path: Path) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
    except OSError:
        return None
