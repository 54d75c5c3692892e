"""TFLite (LiteRT) export: a graph of numbers and category indices, and the lookups beside it.

TFLite has no practical string handling, so the graph starts after the string lookups. Its
signature ``serving_default`` takes up to three inputs, each ``(1, n_columns)`` (one row per
``invoke``; the batch dimension is fixed, see ``keel.export._tflite_worker``), only those the model
has, columns in the order ``model.tflite.json`` lists:

- ``numbers``: float32, ``value - offset`` (the offset per column is in ``model.tflite.json``;
  subtract it before the cast to float32), NaN for a missing value;
- ``binaries``: float32, 0 for a column's first value, 1 for its second, NaN for anything else;
- ``codes``: int32, ``vocabulary.index(value) + 2``, 1 for a missing value, 0 for anything else.

Its output is ``probabilities`` (float32 ``(1, n_classes)``, columns in ``classes`` order) or
``standardized_value`` (float32 ``(1,)``): the network's standardized value, which the caller turns
into target units in float64, ``value * target_std + target_mean`` (:func:`target_values`), as it
subtracts the number offsets in float64. In target units float32 would round: its spacing at 1e9
is 64. ``model.tflite.json`` carries what a caller needs: the inputs' columns, dtypes and shapes,
the vocabularies (keel's canonical spelling, see :func:`keel.data.spelling.canonical_category`; a
missing value is None, NaN or, in binary and category columns, the empty string), the classes and
a binary model's decision ``threshold`` (the label is ``classes[1]`` where ``probabilities[1]`` is at
least it; None: the most probable class),
the target's mean and standard deviation, and the parity figures.

litert-torch cannot share keel's environment (it pins typing-extensions and pydantic below keel's
tested versions and pulls in jax), so the conversion runs in its own one, made by ``make
tflite-env``: this module saves the model, starts ``keel.export._tflite_worker`` with that
environment's Python, and compares the interpreter's predictions with keel's own here.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from keel.errors import DataError, ExportError

if TYPE_CHECKING:
    from keel.model import Model

ENVIRONMENT_VARIABLE = "KEEL_TFLITE_PYTHON"
ENVIRONMENT_DIRECTORY = ".venv-tflite"
# Bumped when model.tflite's inputs or outputs or model.tflite.json's keys change in a way a caller would notice.
EXPORT_FORMAT = 2  # 2: the regression output is standardized_value; target_mean and target_std
TIMEOUT = 600.0  # seconds; a tiny tabular model converts in about ten, environment start included
_NOT_SET_UP = ("TFLite export runs in its own environment, which is not set up: run `make tflite-env` in the keel "
               f"checkout, or set {ENVIRONMENT_VARIABLE} to a Python with litert-torch and keel installed")


@dataclass
class TfliteExport:
    """A converted, parity-checked TFLite export.

    Attributes:
        files: The files to attach: ``model.tflite`` (the graph) and ``model.tflite.json`` (inputs,
            lookups, classes, parity).
        parity: The comparison with keel's own predictions (see :class:`keel.export.parity.Parity`).
        seconds: Wall time of the conversion process: environment start, conversion, interpreter run.
        convert_seconds: The converter's own share of it.
    """

    files: dict[str, bytes]
    parity: dict[str, Any]
    seconds: float
    convert_seconds: float


def tflite_python() -> Path:
    """The Python of the TFLite environment.

    ``$KEEL_TFLITE_PYTHON`` when set, else ``.venv-tflite/bin/python`` in the current directory,
    else in the keel checkout this package was installed from (``pip install -e``).

    Raises:
        ExportError: None of them exists; the message says how to create the environment.
    """
    given = os.environ.get(ENVIRONMENT_VARIABLE)
    if given:
        if Path(given).is_file():
            return Path(given)
        raise ExportError(f"{_NOT_SET_UP}. ({ENVIRONMENT_VARIABLE} is set to {given!r}, which is not a file.)")
    import keel

    roots = [Path.cwd(), Path(keel.__file__).resolve().parents[2]]
    candidates = [root / ENVIRONMENT_DIRECTORY / "bin" / "python" for root in dict.fromkeys(roots)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ExportError(f"{_NOT_SET_UP}. (Looked for {' and '.join(str(c) for c in candidates)}.)")


def to_tflite(model: "Model", rows: pd.DataFrame | None = None, *, python: str | os.PathLike[str] | None = None,
              timeout: float = TIMEOUT) -> TfliteExport:
    """Convert ``model`` to TFLite in the TFLite environment and check the file against keel.

    Args:
        model: A trained model (it is saved to a temporary directory; its own directory is untouched).
        rows: Rows to check parity on; without them, rows synthesised from the model's preprocessing
            (:func:`keel.export.parity.synthetic_rows`).
        python: The TFLite environment's Python; default :func:`tflite_python`.
        timeout: Seconds the conversion may take.

    Returns:
        The files and the parity figures.

    Raises:
        ExportError: The model has date columns, the environment is missing, the converter failed
            (its last error line is quoted), or the file's predictions differ from keel's beyond the
            tolerance.
        DataError: ``rows`` lacks a column the model uses.
    """
    from keel.export.module import lookup_tables
    from keel.export.parity import compare, synthetic_rows

    refuse_unexportable_columns(model)

    executable = Path(python) if python is not None else tflite_python()
    source = "data" if rows is not None else "synthetic"
    frame = rows if rows is not None else synthetic_rows(model)
    layout = input_layout(model)
    tables = lookup_tables(model)
    inputs = tflite_inputs({"inputs": layout, **tables}, frame, codes_dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="keel-tflite-") as scratch:
        directory = Path(scratch)
        # A copy, so saving does not point the caller's model at the temporary directory.
        copy.copy(model).save(directory / "model")
        (directory / "inputs").mkdir()
        for name, array in inputs.items():
            np.save(directory / "inputs" / f"{name}.npy", array, allow_pickle=False)
        started = time.perf_counter()
        _run_worker(executable, directory, timeout)
        seconds = time.perf_counter() - started
        flatbuffer = (directory / "out" / "model.tflite").read_bytes()
        predictions = np.load(directory / "out" / "predictions.npy", allow_pickle=False)
        interface = json.loads((directory / "out" / "interface.json").read_text())
    description = _description(model, layout, tables, interface)
    if model.task == "regression":  # checked as a caller gets them: from model.tflite.json's mean and std
        predictions = target_values(description, predictions)
    parity = compare(model, frame, lambda _: predictions, source)
    if not parity.ok:
        mismatch = f" and {parity.label_mismatches} row(s) got another label" if parity.label_mismatches else ""
        raise ExportError(
            f"the TFLite file does not predict what keel predicts: the largest difference on {parity.rows} {source} "
            f"row(s) is {parity.max_difference:.3g} ({parity.measure}), above the tolerance {parity.tolerance:g}"
            f"{mismatch}. Nothing was written. This is a bug in keel or in litert-torch "
            f"{interface['versions']['litert-torch']}; please report it with the model's keel.json.")
    description["parity"] = parity.to_dict()
    files = {"model.tflite": flatbuffer, "model.tflite.json": json.dumps(description, indent=2).encode()}
    return TfliteExport(files, parity.to_dict(), seconds, float(interface["convert_seconds"]))


def refuse_unexportable_columns(model: "Model") -> None:
    """Raise for a model with date, text or image columns, before anything is converted.

    TFLite computes in float32, which holds seconds since 1970 only to the nearest 128 s (in 2024):
    the hour and the day a time falls in would move near their boundaries, and the graph would not
    predict what keel predicts.

    Raises:
        ExportError: The model has date, text or image columns; the message names them.
    """
    refused = []  # every kind at once: a user fixing one would otherwise meet the next on the following run
    for kind, why in _UNEXPORTABLE.items():
        columns = [t for t in model.preprocessor.transforms if t.kind == kind]
        if columns:
            if kind == "text":
                why = _TEXT_WHY["tfidf" if all(getattr(t, "encoder", "") == "tfidf" for t in columns) else "encoder"]
            refused.append((kind, [t.name for t in columns], why))
    if refused:
        listed = "; ".join(f"the {kind} column(s) {names}{why}" for kind, names, why in refused)
        kinds = " and ".join(kind for kind, _, _ in refused)
        raise ExportError(f"TFLite export does not take {listed}. Export to ONNX instead (keel export MODEL --format "
                          f"onnx), or train without the {kinds} columns (list the other features in input_features).")


# Column kinds TFLite export refuses -> why.
_UNEXPORTABLE = {
    "date": (": TFLite computes in float32, which holds seconds since 1970 only to the nearest 128 s and so would "
             "move the hour and day each date is taken apart into"),
    "text": "",  # by encoder: _TEXT_WHY
    "image": " yet (its graph takes tables of numbers; the image encoders' convolutions are untested there)",
}


_TEXT_WHY = {"tfidf": " (the TF-IDF counting is a scatter-add of a variable number of terms per row)",
             "encoder": " (a pretrained or bag encoder reads a variable number of tokens per row, which the TFLite "
                        "graph does not take)"}


def input_layout(model: "Model") -> list[dict[str, Any]]:
    """The graph's inputs in order: ``{"name": "numbers" | "binaries" | "codes", "columns": [...]}``,
    and for numbers the ``offsets`` (see :func:`number_offsets`)."""
    from keel.export.module import InferenceModule

    offsets = number_offsets(model)
    return [{"name": group.name, "columns": list(group.columns),
             **({"offsets": [offsets[c] for c in group.columns]} if group.name == "numbers" else {})}
            for group in InferenceModule(model).groups]


def tflite_inputs(description: dict[str, Any], frame: pd.DataFrame,
                  codes_dtype: np.dtype[Any] | type = np.int32) -> dict[str, np.ndarray]:
    """The graph's inputs for ``frame``, made from ``model.tflite.json`` as any caller would.

    Values are spelled as keel spells them (``category_strings``), so a row predicts as it does in
    keel; a caller without keel compares ``str(value)`` with the vocabulary.

    Args:
        description: ``model.tflite.json``'s content (``inputs``, ``binaries``, ``codes``, ...).
        frame: The rows, with every column the inputs list.
        codes_dtype: The dtype of the ``codes`` input (int32 in the graph).

    Returns:
        ``{input name: (n_rows, n_columns) array}``.

    Raises:
        DataError: ``frame`` lacks a column.
    """
    from keel.data.spelling import lookup_spellings
    from keel.data.values import category_strings, to_numeric

    missing_columns = [c for group in description["inputs"] for c in group["columns"] if c not in frame.columns]
    if missing_columns:
        raise DataError(f"the rows lack the column(s) {missing_columns} that the model takes; pass rows with every "
                        "feature column the model was trained on.", column=missing_columns[0])
    arrays: dict[str, np.ndarray] = {}
    for group in description["inputs"]:
        columns: list[np.ndarray] = []
        for column in group["columns"]:
            if group["name"] == "numbers":
                offset = group["offsets"][group["columns"].index(column)]
                columns.append((to_numeric(frame[column], column=column) - offset).astype(np.float32))
                continue
            strings = category_strings(frame[column])
            if group["name"] == "binaries":
                codes = lookup_spellings(description["binaries"][column])
                columns.append(np.array([codes.get(s, np.nan) if s is not None else np.nan for s in strings],
                                        np.float32))
            else:
                vocabulary = {value: index + 2 for value, index in lookup_spellings(description["codes"][column]).items()}
                missing, unknown = description["missing_index"], description["unknown_index"]
                columns.append(np.array([missing if s is None else vocabulary.get(s, unknown) for s in strings],
                                        codes_dtype))
        arrays[group["name"]] = np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0))
    return arrays


def target_values(description: dict[str, Any], outputs: np.ndarray) -> np.ndarray:
    """A regression graph's outputs in target units, as any caller computes them.

    The graph gives the standardized value (float32); ``value * target_std + target_mean`` in
    float64 keeps a target such as 1e9 plus a few units of noise in its units, where float32's
    spacing is 64. keel's own prediction scales its network's float32 output back the same way.

    Args:
        description: ``model.tflite.json``'s content (``target_mean``, ``target_std``).
        outputs: The graph's ``standardized_value`` outputs, ``(n_rows,)``.

    Returns:
        The values in target units, float64 ``(n_rows,)``.
    """
    return np.asarray(outputs, dtype=np.float64) * description["target_std"] + description["target_mean"]


def number_offsets(model: "Model") -> dict[str, float]:
    """Per number column, what a caller subtracts from its values (in float64) before the float32 cast.

    float32 keeps 24 bits: a year such as 2008.8 moves by up to 6e-5 when cast, and through a
    steep quantile segment that moved probabilities by 1.2e-5 on penguins (balanced preset), above
    the tolerance. keel itself subtracts a column's center in float64 before its float32 cast; the
    offset is that center (for quantile columns, the middle knot), so the graph gets numbers as
    precise as keel's network does.
    """
    from keel.data.transforms import NumberTransform

    return {t.name: float(t.knots[0][len(t.knots[0]) // 2] if t.knots[0] else t.center)
            for t in model.preprocessor.transforms if isinstance(t, NumberTransform)}


def shift_numbers(model: "Model", offsets: dict[str, float]) -> "Model":
    """A copy of ``model`` whose number columns take ``value - offsets[column]`` (what the graph is traced from).

    Fill, center and knots move by the offset in float64, before InferenceModule casts them to
    float32; scales, slopes and scores stay. The network is shared, not copied.
    """
    from keel.data.preprocess import Preprocessor

    state = model.preprocessor.state()
    for item in state:
        offset = offsets.get(item["name"]) if item["kind"] == "number" else None
        if offset is not None:
            item.update(fill=item["fill"] - offset, center=item["center"] - offset,
                        knots=[[x - offset for x in item["knots"][0]], item["knots"][1]])
    shifted = copy.copy(model)
    shifted.preprocessor = Preprocessor.from_state(state)
    return shifted


def _run_worker(python: Path, directory: Path, timeout: float) -> None:
    """Run the conversion in the TFLite environment; any failure becomes an ExportError quoting it."""
    command = [str(python), "-m", "keel.export._tflite_worker", str(directory / "model"), str(directory / "out"),
               str(directory / "inputs")]
    try:
        # cwd: `python -m` puts the working directory first on sys.path, where a user's torch.py could shadow torch.
        completed = subprocess.run(command, cwd=directory, capture_output=True, text=True, errors="replace",
                                   timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportError(f"the TFLite conversion took longer than {timeout:g} s and was stopped; run "
                          f"`{' '.join(command[:3])}` by hand to see where it hangs.") from None
    except OSError as error:
        raise ExportError(f"{_NOT_SET_UP}. ({python} cannot be started: {error.strerror or error}.)") from None
    if completed.returncode == 0:
        return
    error_file = directory / "out" / "error.txt"
    lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
    last = error_file.read_text().strip() if error_file.is_file() else (lines[-1] if lines else "no output")
    hint = ("The TFLite environment lacks a package: rebuild it with `make tflite-env` in the keel checkout"
            if "No module named" in last else
            "This is a bug in keel or litert-torch; please report it with the model's keel.json")
    raise ExportError(f"the TFLite converter failed ({python}, exit status {completed.returncode}): {last}. {hint}.")


def _description(model: "Model", layout: list[dict[str, Any]], tables: dict[str, Any],
                 interface: dict[str, Any]) -> dict[str, Any]:
    """``model.tflite.json``: everything a caller needs besides the graph (``parity`` is filled in once known)."""
    from keel import __version__

    regression = model.task == "regression"
    inputs = [{**group, **interface["inputs"][group["name"]]} for group in layout]
    return {
        "keel_version": __version__, "export_format": EXPORT_FORMAT, "signature": interface["signature"],
        "task": model.task, "target": model.target,
        "classes": None if regression else model.classes,
        # A binary model's decision threshold: classes[1] where probabilities[1] >= it, else classes[0];
        # None: the most probable class.
        "threshold": model.threshold,
        "inputs": inputs, "output": interface["output"],
        # The regression output is standardized: value * target_std + target_mean, in float64, is in target units.
        "target_mean": float(model.target_encoder.mean) if regression else None,
        "target_std": float(model.target_encoder.std) if regression else None,
        **tables,
        "missing": "a missing value (None, NaN, or \"\" in a binary or category column) is NaN in numbers and "
                   "binaries and missing_index in codes; any other value a column never had is NaN in binaries "
                   "and unknown_index in codes",
        "parity": None, "versions": interface["versions"],
    }
