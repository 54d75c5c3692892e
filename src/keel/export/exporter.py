"""``keel export`` and ``Model.export``: prune, export, check parity, quantize, measure, write.

Order of work: the options are checked first (nothing is written on a bad one), then the model is
pruned when asked (a new, smaller keel model), exported, parity-checked against keel's own
predictions (above the tolerance the export fails and nothing is written), quantized when asked,
measured side by side with the uncompressed file, and finally written: attached to the model
directory (checksummed in ``keel.json``) or to ``output``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from keel.artifact import check_destination, check_output_file, write_file_atomically
from keel.errors import ArtifactError, ConfigError, ExportError

if TYPE_CHECKING:
    from keel.data.io import TableSource
    from keel.model import Model

FORMATS = ("onnx", "tflite")
QUANTIZATIONS = ("int8",)


@dataclass
class ExportReport:
    """What an export wrote and measured.

    Attributes:
        format: ``onnx`` or ``tflite``.
        files: The files written (paths).
        parity: The parity check of the exported (uncompressed) graph against keel.
        seconds: Wall time of the export, parity check and measurements.
        model: The exported model: the pruned one when pruning was asked for, else the input.
        pruning: The amount and method, and for ``auto`` the amounts tried.
        compression: The original and compressed files side by side (parameters, size, metric,
            latency, throughput), when the export pruned or quantized.
    """

    format: str
    files: list[Path]
    parity: dict[str, Any]
    seconds: float
    model: "Model"
    pruning: dict[str, Any] | None = None
    compression: dict[str, Any] | None = None
    quantized_parity: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "files": [str(path) for path in self.files], "parity": self.parity,
                "seconds": round(self.seconds, 3), "pruning": self.pruning, "compression": self.compression,
                "quantized_parity": self.quantized_parity, "notes": self.notes}


def export(model: "Model", format: str = "onnx", *, quantize: str | None = None, static: bool = False,
           prune: float | str | None = None, prune_method: str = "structured", max_drop: float | None = None,
           finetune_epochs: int = 0, data: "TableSource | None" = None, output: str | os.PathLike[str] | None = None,
           pruned_output: str | os.PathLike[str] | None = None) -> ExportReport:
    """Export ``model`` for ONNX Runtime or LiteRT, with the preprocessing inside (see ``keel export``).

    Args:
        model: A trained model; saved (or loaded) unless ``output`` is given, since the file is
            attached to its directory.
        format: ``onnx`` or ``tflite``.
        quantize: ``int8`` for int8 weights (ONNX only); the float file is attached too.
        static: Quantize activations too, calibrated on ``data`` (needs ``data``).
        prune: A share of hidden neurons (or weights) to remove, in (0, 1), or ``"auto"``: the largest
            share whose main metric on ``data`` stays within ``max_drop`` (relative) of the original.
        prune_method: ``structured`` (whole neurons: smaller matrices) or ``unstructured`` (weights).
        max_drop: The relative metric budget of ``prune="auto"`` (default 0.005).
        finetune_epochs: Epochs of training on ``data`` after pruning (each candidate's, for auto).
        data: Rows to check parity on and measure with (a path or a DataFrame); without them
            parity runs on rows synthesised from the model's preprocessing.
        output: Write the file here instead of attaching it to the model directory.
        pruned_output: Where a pruned model is saved (default: beside the model directory,
            ``<name>-pruned``); its export is attached there.

    Returns:
        What was written and measured.

    Raises:
        ConfigError: An unknown format or quantization, a pruning amount outside (0, 1),
            quantization of a TFLite file, an option that needs ``data`` or ``prune`` without it,
            an ``output`` that is a directory or a model directory's own file.
        DataError: ``data`` cannot be read or lacks a column the model uses.
        ExportError: The exported file does not predict what keel predicts, or an export
            dependency (or the TFLite environment) is missing.
        ArtifactError: The file cannot be attached (the model was never saved: pass ``output``).
    """
    started = time.perf_counter()
    amount = _check_options(format, quantize, static, prune, prune_method, max_drop, finetune_epochs, data,
                            output, pruned_output)
    rows = _rows(model, data)
    if output is None and model.path is None and (amount is None or pruned_output is None):
        raise ArtifactError("this model has no directory to attach the export to: save it first "
                            "(model.save('runs/my-model')), or pass output='model.onnx'"
                            + (" or pruned_output='runs/my-model-pruned'." if amount is not None else "."))
    if amount is not None and output is None:
        pruned_output = Path(pruned_output) if pruned_output is not None else _pruned_directory(model)
        if model.path is not None and _same_place(pruned_output, model.path):
            raise ConfigError(f"--pruned-output {pruned_output} is the model's own directory: the pruned model would "
                              "replace the original. Pass another directory, or leave it out for MODEL-pruned.")
        check_destination(pruned_output)
    if format == "tflite":
        from keel.export.tflite import refuse_unexportable_columns, tflite_python

        refuse_unexportable_columns(model)  # before any pruning is spent, as a missing environment is
        tflite_python()
    pruning: dict[str, Any] | None = None
    unpruned, notes = model, []
    if amount is not None:
        model, pruning = _prune(model, amount, prune_method, max_drop or DEFAULT_MAX_DROP, finetune_epochs, rows)
        if pruning["amount"] == 0.0:  # auto: no share stayed within the budget
            notes.append(f"no pruning kept the metric within --max-drop {pruning['max_drop']:g} (see the trials in "
                         "reports/); the unpruned model was exported, to its own directory.")
            pruning, pruned_output = None, None
    if format == "tflite":
        return _export_tflite(model, rows, output, pruned_output, pruning, started, notes)
    from keel.export.onnx import to_onnx
    from keel.export.parity import compare, onnx_feeds, synthetic_rows

    proto = to_onnx(model)
    session = _session(proto.SerializeToString())
    check_rows = rows if rows is not None else synthetic_rows(model)
    parity = compare(model, check_rows, lambda frame: _run(session, model, onnx_feeds(model, frame)),
                     "data" if rows is not None else "synthetic")
    if not parity.ok:
        raise ExportError(_parity_failure(parity))
    _set_metadata(proto, {"keel.parity": json.dumps(parity.to_dict())})
    files = {"model.onnx": proto.SerializeToString()}
    quantized_parity, compression = None, None
    if quantize is not None:
        from keel.export.quantize import quantize_int8

        calibration = onnx_feeds(model, rows) if static and rows is not None else None
        files[INT8_FILE] = quantize_int8(files["model.onnx"], calibration=calibration)
        from keel.export.measure import run_as_keel
        from keel.runtime.predictor import row_by_row

        quantized = _session(files[INT8_FILE])
        by_row = row_by_row(quantized.get_modelmeta().custom_metadata_map)
        # Measured as keel.runtime predicts the file: a dynamic one a row per call (its scale is each call's).
        quantized_parity = compare(model, check_rows, lambda frame: _probabilities(model, run_as_keel(
            lambda feeds: quantized.run(None, feeds), onnx_feeds(model, frame), by_row=by_row)), parity.source).to_dict()
        del quantized_parity["ok"]  # int8 moves predictions by design: reported, not held to the tolerance
        # The int8 file states its own difference from keel (a copy of the float file's metadata had the float
        # file's, and `keel serve --file model.int8.onnx` showed it as the served file's).
        import onnx

        int8_proto = onnx.load_from_string(files[INT8_FILE])
        _set_metadata(int8_proto, {"keel.parity": json.dumps(quantized_parity)})
        files[INT8_FILE] = int8_proto.SerializeToString()
    main = INT8_FILE if quantize else "model.onnx"
    if quantize is not None or pruning is not None:
        baseline = files["model.onnx"]
        if pruning is not None:  # the unpruned file as it would ship: its size then compares weights, not metadata
            unpruned_proto = to_onnx(unpruned)
            _set_metadata(unpruned_proto, {"keel.parity": json.dumps(parity.to_dict())})
            baseline = unpruned_proto.SerializeToString()
        compression = _measure(baseline, files[main], model, rows if rows is not None else check_rows, notes)
        notes = _compression_notes(compression, quantize, notes, pruning)
    if output is not None:  # only the file asked for: the int8 one when quantized
        files = {main: files[main]}
    targets = [_write(model, name, content, output, pruned_output, pruning is not None and index == 0)
               for index, (name, content) in enumerate(files.items())]
    report = ExportReport("onnx", targets, parity.to_dict(), time.perf_counter() - started, model, pruning,
                          compression, quantized_parity, notes)
    _attach_report(model, main, report, output)
    return report


DEFAULT_MAX_DROP = 0.005
INT8_FILE = "model.int8.onnx"


def _check_options(format: str, quantize: str | None, static: bool, prune: float | str | None, method: str,
                   max_drop: float | None, finetune_epochs: int, data: Any, output: str | os.PathLike[str] | None,
                   pruned_output: str | os.PathLike[str] | None) -> float | str | None:
    """Every option's problem as one ConfigError, before anything is computed or written."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; keel quantizes to: {', '.join(QUANTIZATIONS)}.")
    if quantize is not None and format != "onnx":
        raise ConfigError(f"--quantize {quantize} needs --format onnx: keel's TFLite export keeps float32 "
                          "weights (LiteRT's own quantizer can take the file from there).")
    if static and quantize is None:
        raise ConfigError("--static calibrates int8 activations: it needs --quantize int8.")
    if static and data is None:
        raise ConfigError("--static quantization calibrates on rows: pass them with --data FILE.")
    from keel.export.prune import check_amount, pruner_for

    pruner_for(method)  # an unknown method is a ConfigError listing the known ones
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs is a whole number of epochs, 0 or more; got {finetune_epochs!r}. "
                          "Pass e.g. --finetune-epochs 5, or leave it out for none.")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
                                 or not 0 < max_drop < 1):
        raise ConfigError(f"--max-drop is a relative metric drop in (0, 1), like 0.005 for 0.5%; got {max_drop!r}.")
    _check_output(output)
    if prune is None:
        unused = [flag for flag, given in (("--finetune-epochs", finetune_epochs), ("--max-drop", max_drop is not None),
                                           ("--pruned-output", pruned_output is not None),
                                           (f"--prune-method {method}", method != "structured")) if given]
        if unused:
            raise ConfigError(f"{' and '.join(unused)} only appl{'ies' if len(unused) == 1 else 'y'} with --prune; "
                              f"add --prune AMOUNT (or auto), or leave {'it' if len(unused) == 1 else 'them'} out.")
        return None
    if finetune_epochs and data is None:
        raise ConfigError("--finetune-epochs trains on rows: pass them with --data FILE.")
    if pruned_output is not None and output is not None:
        raise ConfigError("--pruned-output and --output exclude each other: with --output only the exported file is "
                          "written; leave --output out to save the pruned model and attach the file to it.")
    if prune == "auto":
        if data is None:
            raise ConfigError("--prune auto searches for the largest pruning within --max-drop on labelled rows: "
                              "pass them with --data FILE.")
        return "auto"
    if max_drop is not None:
        raise ConfigError("--max-drop is the budget of --prune auto; with a fixed --prune amount, leave it out.")
    return check_amount(prune)


def _check_output(output: str | os.PathLike[str] | None) -> None:
    """``output`` must be a file path, and not one a model directory's keel.json owns."""
    if output is None:
        return
    check_output_file(output, "attach the export to the model directory")


def _same_place(first: Path, second: Path) -> bool:
    return first.resolve() == second.resolve()


def _rows(model: "Model", data: "TableSource | None") -> pd.DataFrame | None:
    """The user's rows, read and checked for the columns the model uses."""
    if data is None:
        return None
    from keel.errors import DataError

    frame = model.read_rows(data)
    missing = [name for name in model.feature_names if name not in frame.columns]
    if missing:
        raise DataError(f"--data lacks the column(s) {missing} that the model was trained on; export checks "
                        "parity on the model's inputs, so pass rows with all of them.",
                        file=frame.attrs.get("source"), column=missing[0])
    if frame.empty:
        raise DataError("--data has no rows to check the export on; pass a file with rows, or leave --data out "
                        "to check on rows keel synthesises.", file=frame.attrs.get("source"))
    return frame


def _prune(model: "Model", amount: float | str, method: str, max_drop: float, finetune_epochs: int,
           rows: pd.DataFrame | None) -> tuple["Model", dict[str, Any]]:
    from keel.export.prune import auto_prune, prune

    finetune = rows if finetune_epochs else None
    if amount == "auto":
        assert rows is not None  # _check_options demands data for auto
        pruned, chosen, trials = auto_prune(model, rows, max_drop=max_drop, method=method, finetune=finetune,
                                            finetune_epochs=finetune_epochs)
        return pruned, {"amount": chosen, "method": method, "auto": True, "max_drop": max_drop,
                        "finetune_epochs": finetune_epochs, "trials": trials}
    pruned = prune(model, float(amount), method=method, finetune=finetune, finetune_epochs=finetune_epochs)
    return pruned, {"amount": float(amount), "method": method, "auto": False, "finetune_epochs": finetune_epochs}


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ONNX Runtime's warnings about unused initializers are not the user's
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _run(session: Any, model: "Model", feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The file's probabilities (classification) or values (regression)."""
    return _probabilities(model, session.run(None, feeds))


def _probabilities(model: "Model", outputs: list[np.ndarray]) -> np.ndarray:
    """Of a file's outputs, the probabilities (classification) or values (regression)."""
    return outputs[0] if model.task == "regression" else outputs[1]


def _parity_failure(parity: Any) -> str:
    figure = f"{parity.max_difference:.3g} ({parity.measure})"
    mismatch = f" and {parity.label_mismatches} row(s) got another label" if parity.label_mismatches else ""
    return (f"the exported file does not predict what keel predicts: the largest difference on {parity.rows} "
            f"{parity.source} row(s) is {figure}, above the tolerance {parity.tolerance:g}{mismatch}. Nothing was "
            "written. This is a bug in keel; please report it with the model's keel.json.")


def _set_metadata(proto: Any, values: dict[str, str]) -> None:
    from onnx import helper

    existing = {prop.key: prop.value for prop in proto.metadata_props}
    helper.set_model_props(proto, {**existing, **values})


def _measure(original: bytes, compressed: bytes, model: "Model", rows: pd.DataFrame,
             notes: list[str]) -> dict[str, Any]:
    """The uncompressed and compressed files side by side (keel.export.measure): one-row latency on
    the first row, throughput on 1,000 rows (64 with a pretrained text or image column; the rows repeated when
    there are fewer), and the main
    metric on ``rows`` when they hold the target (a metric the rows cannot give becomes a note)."""
    from keel.data.text import TextTransform
    from keel.errors import DataError
    from keel.export.measure import compare, main_metric, measure
    from keel.export.parity import onnx_feeds

    feeds = onnx_feeds(model, rows)
    one_row = {name: values[:1] for name, values in feeds.items()}
    # Row positions (a text column's feed is 2-D). A transformer or image column's batch is 64 rows: 1,000 rows of
    # all-MiniLM-L6-v2 tokens took 19 GB (its attention holds rows x heads x tokens^2 numbers a layer).
    heavy = model.preprocessor.images or any(
        text.encoder == "pretrained" for text in model.preprocessor.transforms if isinstance(text, TextTransform))
    repeated = np.resize(np.arange(len(rows)), 64 if heavy else 1000)
    batch = {name: values[repeated] for name, values in feeds.items()}
    metric = None
    if model.target in rows.columns and rows[model.target].notna().any():
        try:
            metric = main_metric(model, rows)
        except DataError as error:  # e.g. a class the model never saw: the export itself is still good
            notes.append(f"the metric was not measured: {error}")
    return compare(measure(original, one_row, batch, metric_fn=metric),
                   measure(compressed, one_row, batch, metric_fn=metric))


def _compression_notes(compression: dict[str, Any], quantize: str | None, notes: list[str],
                       pruning: dict[str, Any] | None = None) -> list[str]:
    """What the figures say that a user could miss: no metric measured, an int8 file that is not smaller, an
    unstructured pruning whose zeros shrink only the zipped file."""
    notes = list(notes)
    sizes = {row["key"]: row for row in compression["rows"]}
    if pruning is not None and pruning.get("method") == "unstructured" and not quantize:
        zipped = sizes.get("compressed_bytes", {}).get("ratio")
        notes.append("unstructured pruning zeroes weights inside matrices that keep their shape: the file is "
                     f"{sizes['size_bytes']['ratio']:.2f}x the unpruned one's size"
                     + (f" and {zipped:.2f}x zipped" if zipped is not None else "")
                     + ", and it runs no faster; --prune-method structured removes whole neurons instead.")
    if "metric" not in compression and not any(note.startswith("the metric was not measured") for note in notes):
        notes.append("the metric was not measured: pass labelled rows (with the target column) as --data.")
    if quantize and sizes["size_bytes"]["ratio"] >= 1:
        notes.append("the int8 file is not smaller than the float one: this network's matrices are too small for "
                     "int8 weights to outweigh the quantization bookkeeping; export without --quantize.")
    return notes


def _write(model: "Model", name: str, data: bytes, output: str | os.PathLike[str] | None,
           pruned_output: str | os.PathLike[str] | None, save_pruned: bool) -> Path:
    """Write the file to ``output``, or attach it to the model directory, saving the pruned model
    to ``pruned_output`` first when ``save_pruned``."""
    if output is not None:
        write_file_atomically(output, data)
        return Path(output)
    if save_pruned:
        assert pruned_output is not None  # export() resolved it
        model.save(pruned_output)
    model.attach(name, data)
    assert model.path is not None
    return model.path / name


def _pruned_directory(model: "Model") -> Path:
    """``<model directory>-pruned``, beside the original (export() demands a directory or pruned_output)."""
    assert model.path is not None
    return model.path.with_name(model.path.name + "-pruned")


def _attach_report(model: "Model", name: str, report: ExportReport, output: str | os.PathLike[str] | None) -> None:
    if output is None:
        model.attach(f"reports/{name}.json", json.dumps(report.to_dict(), indent=2).encode())


def _export_tflite(model: "Model", rows: pd.DataFrame | None, output: str | os.PathLike[str] | None,
                   pruned_output: str | os.PathLike[str] | None, pruning: dict[str, Any] | None,
                   started: float, notes: list[str]) -> ExportReport:
    """Convert in the TFLite environment (keel.export.tflite), then write the graph and its lookups:
    ``model.tflite`` and ``model.tflite.json``, or ``output`` and ``output`` + ``.json``.

    A pruned model's TFLite file is parity-checked but not measured side by side: the compression
    figures come from ONNX Runtime, so export the pruned model to ONNX for them.
    """
    from keel.export.tflite import to_tflite

    converted = to_tflite(model, rows)
    graph, lookups = converted.files["model.tflite"], converted.files["model.tflite.json"]
    lookups_path = None if output is None else f"{os.fspath(output)}.json"
    targets = [_write(model, "model.tflite", graph, output, pruned_output, pruning is not None),
               _write(model, "model.tflite.json", lookups, lookups_path, None, False)]
    notes = [*notes, "the TFLite graph takes one row per call (a fixed batch of 1) and numbers minus their "
             "offsets; model.tflite.json says how (see the README)."]
    if pruning is not None:
        notes.append("compression figures are measured in ONNX Runtime: export the pruned model "
                     f"({model.path}) to ONNX with --quantize or --data to see them.")
    report = ExportReport("tflite", targets, converted.parity, time.perf_counter() - started, model, pruning,
                          notes=notes)
    _attach_report(model, "model.tflite", report, output)
    return report

