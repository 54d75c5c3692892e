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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from keel.artifact import check_destination, write_file_atomically
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
           prune: float | str | None = None, prune_method: str = "structured", max_drop: float = 0.005,
           finetune_epochs: int = 0, data: "TableSource | None" = None, output: str | os.PathLike[str] | None = None,
           pruned_output: str | os.PathLike[str] | None = None) -> ExportReport:
    """Export ``model`` for ONNX Runtime or LiteRT, with the preprocessing inside (see ``keel export``).

    Args:
        model: A trained model; saved (or loaded) unless ``output`` is given, since the file is
            attached to its directory.
        format: ``onnx`` or ``tflite``.
        quantize: ``int8`` for int8 weights (ONNX only).
        static: Quantize activations too, calibrated on ``data`` (needs ``data``).
        prune: A share of hidden neurons (or weights) to remove, in (0, 1), or ``"auto"``: the largest
            share whose main metric on ``data`` stays within ``max_drop`` (relative) of the original.
        prune_method: ``structured`` (whole neurons: smaller matrices) or ``unstructured`` (weights).
        max_drop: The relative metric budget of ``prune="auto"``.
        finetune_epochs: Epochs of training on ``data`` after pruning.
        data: Rows to check parity on and measure with (a path or a DataFrame); without them
            parity runs on rows synthesised from the model's preprocessing.
        output: Write the file here instead of attaching it to the model directory.
        pruned_output: Where a pruned model is saved (default: beside the model directory,
            ``<name>-pruned``); its export is attached there.

    Returns:
        What was written and measured.

    Raises:
        ConfigError: An unknown format or quantization, a pruning amount outside (0, 1),
            quantization of a TFLite file, or an option that needs ``data`` without it.
        DataError: ``data`` cannot be read or lacks a column the model uses.
        ExportError: The exported file does not predict what keel predicts, or an export
            dependency is missing.
        ArtifactError: The file cannot be attached (the model was never saved: pass ``output``).
    """
    started = time.perf_counter()
    amount = _check_options(format, quantize, static, prune, prune_method, max_drop, finetune_epochs, data)
    rows = _rows(model, data)
    if output is None and model.path is None and (amount is None or pruned_output is None):
        raise ArtifactError("this model has no directory to attach the export to: save it first "
                            "(model.save('runs/my-model')), or pass output='model.onnx'"
                            + (" or pruned_output='runs/my-model-pruned'." if amount is not None else "."))
    if amount is not None and output is None:
        pruned_output = Path(pruned_output) if pruned_output is not None else _pruned_directory(model)
        check_destination(pruned_output)
    pruning, unpruned = None, model
    if amount is not None:
        model, pruning = _prune(model, amount, prune_method, max_drop, finetune_epochs, rows)
    if format == "tflite":
        return _export_tflite(model, rows, output, pruned_output, pruning, started)
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
    original = proto.SerializeToString()
    written, quantized_parity, compression, notes = original, None, None, []
    if quantize is not None:
        from keel.export.quantize import quantize_int8

        calibration = onnx_feeds(model, rows) if static and rows is not None else None
        written = quantize_int8(original, calibration=calibration)
        quantized = _session(written)
        quantized_parity = compare(model, check_rows, lambda frame: _run(quantized, model, onnx_feeds(model, frame)),
                                   parity.source).to_dict()
    if quantize is not None or pruning is not None:
        baseline = original if pruning is None else to_onnx(unpruned).SerializeToString()
        compression = _measure(baseline, written, model, rows if rows is not None else check_rows)
        notes += _compression_notes(compression, quantize)
    name = "model.int8.onnx" if quantize else "model.onnx"
    target = _write(model, name, written, output, pruned_output, pruning)
    report = ExportReport("onnx", [target], parity.to_dict(), time.perf_counter() - started, model, pruning,
                          compression, quantized_parity, notes)
    _attach_report(model, name, report, output)
    return report


def _check_options(format: str, quantize: str | None, static: bool, prune: float | str | None, method: str,
                   max_drop: float, finetune_epochs: int, data: Any) -> float | str | None:
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
    if finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be 0 or more; got {finetune_epochs}.")
    if finetune_epochs and data is None:
        raise ConfigError("--finetune-epochs trains on rows: pass them with --data FILE.")
    if not 0 < max_drop < 1:
        raise ConfigError(f"--max-drop is a relative metric drop in (0, 1), like 0.005; got {max_drop}.")
    if prune is None:
        return None
    if prune == "auto":
        if data is None:
            raise ConfigError("--prune auto searches for the largest pruning within --max-drop on labelled rows: "
                              "pass them with --data FILE.")
        return "auto"
    return check_amount(prune)


def _rows(model: "Model", data: "TableSource | None") -> pd.DataFrame | None:
    """The user's rows, read and checked for the columns the model uses."""
    if data is None:
        return None
    from keel.data.io import read_table
    from keel.errors import DataError

    frame = read_table(data)
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
        pruned, chosen, trials = auto_prune(model, rows, max_drop=max_drop, method=method)
        return pruned, {"amount": chosen, "method": method, "auto": True, "max_drop": max_drop, "trials": trials}
    pruned = prune(model, float(amount), method=method, finetune=finetune, finetune_epochs=finetune_epochs)
    return pruned, {"amount": float(amount), "method": method, "auto": False, "finetune_epochs": finetune_epochs}


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ONNX Runtime's warnings about unused initializers are not the user's
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _run(session: Any, model: "Model", feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The file's probabilities (classification) or values (regression)."""
    outputs = session.run(None, feeds)
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


def _measure(original: bytes, compressed: bytes, model: "Model", rows: pd.DataFrame) -> dict[str, Any]:
    """The uncompressed and compressed files side by side (keel.export.measure): one-row latency on
    the first row, throughput on 1,000 rows (the rows repeated when there are fewer), and the main
    metric on ``rows`` when they hold the target."""
    from keel.export.measure import compare, main_metric, measure
    from keel.export.parity import onnx_feeds

    feeds = onnx_feeds(model, rows)
    one_row = {name: values[:1] for name, values in feeds.items()}
    batch = {name: np.resize(values, 1000) for name, values in feeds.items()}
    metric = main_metric(model, rows) if model.target in rows.columns and rows[model.target].notna().any() else None
    return compare(measure(original, one_row, batch, metric_fn=metric),
                   measure(compressed, one_row, batch, metric_fn=metric))


def _compression_notes(compression: dict[str, Any], quantize: str | None) -> list[str]:
    """What the figures say that a user could miss: no metric measured, an int8 file that is not smaller."""
    notes = []
    if "metric" not in compression:
        notes.append("the metric was not measured: pass labelled rows (with the target column) as --data.")
    sizes = {row["key"]: row for row in compression["rows"]}
    if quantize and sizes["size_bytes"]["ratio"] >= 1:
        notes.append("the int8 file is not smaller than the float one: this network's matrices are too small for "
                     "int8 weights to outweigh the quantization bookkeeping; export without --quantize.")
    return notes


def _write(model: "Model", name: str, data: bytes, output: str | os.PathLike[str] | None, pruned_output: str | os.PathLike[str] | None,
           pruning: dict[str, Any] | None) -> Path:
    """Write the file to ``output``, or save a pruned model and attach it, or attach it to the model."""
    if output is not None:
        write_file_atomically(output, data)
        return Path(output)
    if pruning is not None:
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
                   started: float) -> ExportReport:
    """Convert in the TFLite environment (keel.export.tflite), then write the graph and its lookups:
    ``model.tflite`` and ``model.tflite.json``, or ``output`` and ``output`` + ``.json``."""
    from keel.export.tflite import to_tflite

    converted = to_tflite(model, rows)
    graph, lookups = converted.files["model.tflite"], converted.files["model.tflite.json"]
    if output is not None:
        targets = [_write(model, "model.tflite", graph, output, pruned_output, pruning),
                   _write(model, "model.tflite.json", lookups, f"{os.fspath(output)}.json", None, None)]
    else:
        targets = [_write(model, "model.tflite", graph, None, pruned_output, pruning)]
        targets.append(_write(model, "model.tflite.json", lookups, None, None, None))
    report = ExportReport("tflite", targets, converted.parity, time.perf_counter() - started, model, pruning,
                          notes=["the TFLite graph takes one row per call (a fixed batch of 1) and numbers minus "
                                 "their offsets; model.tflite.json says how (see the README)."])
    _attach_report(model, "model.tflite", report, output)
    return report


Format = Literal["onnx", "tflite"]
