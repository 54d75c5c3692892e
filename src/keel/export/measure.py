"""What a compression did: parameters, file size, the main metric and speed in ONNX Runtime, side by side.

Speed is measured with one intra-op and one inter-op thread: on a shared machine, thread
scheduling otherwise moves the figures more than the compression does, and one thread is what a
service running a model per core gets. Latency is one row per call (p50 and p99 of many calls,
after a warm-up); throughput is a 1,000-row batch per call (the median call).
"""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from keel.model import Model

# Input name -> one value per row, as an ONNX Runtime session takes them.
Feeds = dict[str, np.ndarray]
# Runs the model on feeds; returns its outputs in the graph's output order.
Runner = Callable[[Feeds], list[np.ndarray]]
# Takes a runner, returns (metric name, value).
MetricFn = Callable[[Runner], tuple[str, float]]

# Tensors of these ONNX element types hold the model's numbers (weights, biases, scaling state);
# int64 and string tensors hold indices, shapes and labels. FLOAT, UINT8, INT8, FLOAT16, DOUBLE, BFLOAT16.
_NUMBER_TYPES = frozenset({1, 2, 3, 10, 11, 16})
# Names ONNX Runtime's quantizer gives its per-tensor or per-column bookkeeping.
_QUANTIZATION_SUFFIXES = ("_scale", "_zero_point")
_WARMUP = 20


# Rows a metric's ONNX Runtime call takes at most (keel.runtime's chunk): a 256-token transformer's attention for
# 1,000 rows at once is gigabytes.
_METRIC_CHUNK = 256


def measure(onnx_bytes: bytes, feeds_one_row: Feeds, feeds_1000_rows: Feeds, *, metric_fn: MetricFn | None = None,
            repeats: int = 1000, batch_repeats: int = 20) -> dict[str, Any]:
    """Size, metric and speed of one ONNX model in ONNX Runtime on the CPU (one thread).

    Args:
        onnx_bytes: The serialized model.
        feeds_one_row: Inputs of a single row, for latency.
        feeds_1000_rows: Inputs of a batch (1,000 rows is the reported figure), for throughput.
        metric_fn: Computes the main metric with the model (see :func:`main_metric`); None skips it.
        repeats: Timed single-row calls (after ``_WARMUP`` untimed ones).
        batch_repeats: Timed batch calls (after two untimed ones).

    Returns:
        ``parameters`` (numbers stored in the file's initializers, quantization scales and zero
        points left out), ``nonzero_parameters``, ``size_bytes``, ``compressed_bytes`` (deflated,
        as in a zip), ``latency_p50_ms``, ``latency_p99_ms``, ``throughput_rows_per_s``,
        ``batch_rows``, ``threads`` (1), and ``metric`` / ``metric_value`` when ``metric_fn`` is given.

    Raises:
        ExportError: onnx or onnxruntime is missing.
    """
    from keel.export.onnx import require
    from keel.runtime.predictor import row_by_row

    runtime = require("onnxruntime")
    onnx = require("onnx")
    options = runtime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ONNX Runtime's warnings about unused initializers are not the user's
    session = runtime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def run(feeds: Feeds) -> list[np.ndarray]:
        return list(session.run(None, feeds))

    proto = onnx.load_from_string(onnx_bytes)
    by_row = row_by_row({item.key: item.value for item in proto.metadata_props})

    def scored(feeds: Feeds) -> list[np.ndarray]:
        return run_as_keel(run, feeds, by_row=by_row)

    parameters, nonzero = _count_parameters(proto)
    result: dict[str, Any] = {
        "parameters": parameters, "nonzero_parameters": nonzero, "size_bytes": len(onnx_bytes),
        "compressed_bytes": len(zlib.compress(onnx_bytes, 6)), "threads": 1,
    }
    latencies = _timings(run, feeds_one_row, _WARMUP, repeats)
    result["latency_p50_ms"] = float(np.percentile(latencies, 50) * 1e3)
    result["latency_p99_ms"] = float(np.percentile(latencies, 99) * 1e3)
    batch_rows = len(next(iter(feeds_1000_rows.values())))
    result["batch_rows"] = batch_rows
    result["throughput_rows_per_s"] = float(batch_rows / np.median(_timings(run, feeds_1000_rows, 2, batch_repeats)))
    if metric_fn is not None:
        result["metric"], result["metric_value"] = metric_fn(scored)
    return result


def run_as_keel(run: Runner, feeds: Feeds, *, by_row: bool) -> list[np.ndarray]:
    """``run``'s outputs for ``feeds`` as keel.runtime computes them: one row a call where ``by_row`` (each row's
    text inputs without the batch's padding), else a chunk of rows at a time (a transformer's activations for
    thousands of rows at once would take gigabytes)."""
    rows = len(next(iter(feeds.values())))
    size = 1 if by_row else _METRIC_CHUNK
    parts = [run({name: _trimmed(values[start:start + size]) if by_row else values[start:start + size]
                  for name, values in feeds.items()}) for start in range(0, rows, size)]
    return [np.concatenate([part[index] for part in parts]) for index in range(len(parts[0]))]


def _trimmed(values: np.ndarray) -> np.ndarray:
    """One row of a text input without the -1 padding a batch gave it (keel.runtime feeds a row its own length)."""
    if values.dtype != np.int64 or values.ndim != 2:
        return values
    used = np.flatnonzero((values != -1).any(axis=0))
    return values[:, :used[-1] + 1] if len(used) else values[:, :1]


# The most seconds one timing takes (after its first call): a transformer's one-row call of 0.1 s would make 1,000
# latency repeats 100 s a file.
_TIMING_BUDGET = 10.0


def _timings(run: Runner, feeds: Feeds, warmup: int, repeats: int) -> np.ndarray:
    """Seconds of each of ``repeats`` calls (fewer, at least 20, where they would take over ``_TIMING_BUDGET``),
    after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run(feeds)
    seconds = np.empty(max(1, repeats))
    for index in range(len(seconds)):
        started = time.perf_counter()
        run(feeds)
        seconds[index] = time.perf_counter() - started
        if index >= 19 and seconds[:index + 1].sum() > _TIMING_BUDGET:
            return seconds[:index + 1]
    return seconds


def _count_parameters(model: Any) -> tuple[int, int]:
    """(all, nonzero) numbers in the initializers and Constant nodes, quantization bookkeeping left out."""
    from onnx import numpy_helper

    tensors = list(model.graph.initializer)
    tensors += [attribute.t for node in model.graph.node if node.op_type == "Constant"
                for attribute in node.attribute if attribute.name == "value"]
    total = nonzero = 0
    for tensor in tensors:
        if tensor.data_type not in _NUMBER_TYPES or tensor.name.endswith(_QUANTIZATION_SUFFIXES):
            continue
        values = numpy_helper.to_array(tensor)
        if values.ndim == 0:  # scalars are constants of the arithmetic, not parameters
            continue
        total += values.size
        nonzero += int(np.count_nonzero(values))
    return total, nonzero


# measure() key -> the row's label in a comparison, in the order rows are shown.
MEASURES = {
    "parameters": "parameters", "nonzero_parameters": "nonzero parameters", "size_bytes": "file size (bytes)",
    "compressed_bytes": "zipped size (bytes)", "metric_value": "{metric}", "latency_p50_ms": "latency p50 (ms, 1 row)",
    "latency_p99_ms": "latency p99 (ms, 1 row)", "throughput_rows_per_s": "throughput (rows/s, {batch_rows}-row batches)",
}


def compare(original: dict[str, Any], compressed: dict[str, Any]) -> dict[str, Any]:
    """Two :func:`measure` results side by side.

    Returns:
        ``rows``: one dict per figure both have, in ``MEASURES`` order: ``key``, ``measure`` (a
        label), ``original``, ``compressed`` and ``ratio`` = compressed / original (0.25 for a file
        four times smaller; above 1 for a higher throughput; None when the original is 0).
        ``metric`` and ``metric_change`` (compressed - original) when both were measured with one;
        ``original`` and ``compressed``: the two results as given.
    """
    rows = []
    for key, label in MEASURES.items():
        before, after = original.get(key), compressed.get(key)
        if not _is_number(before) or not _is_number(after):
            continue
        rows.append({"key": key, "measure": label.format(metric=original.get("metric"),
                                                           batch_rows=original.get("batch_rows")),
                     "original": before, "compressed": after, "ratio": after / before if before else None})
    out: dict[str, Any] = {"rows": rows, "original": original, "compressed": compressed}
    if _is_number(original.get("metric_value")) and _is_number(compressed.get("metric_value")):
        out["metric"] = original.get("metric")
        out["metric_change"] = compressed["metric_value"] - original["metric_value"]
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def main_metric(model: "Model", frame: pd.DataFrame) -> MetricFn:
    """A ``metric_fn`` for :func:`measure`: the metric keel reports first, computed from the ONNX outputs.

    The metric pruning is judged by (:func:`keel.export.prune.selection_metric`): ROC-AUC for
    binary targets, accuracy for multiclass, RMSE in target units for regression. Rows without a
    target are left out; row weights are not applied.

    Raises:
        DataError: ``frame`` lacks the target, has no labelled row, or holds a class the model does not know.
    """
    from keel.data.schema import labelled_rows
    from keel.export.parity import onnx_feeds

    target = model.target
    source = frame.attrs.get("source")
    frame = labelled_rows(frame, target, "to measure on")
    feeds = onnx_feeds(model, frame)
    if model.task == "regression":
        truth = frame[target].to_numpy(dtype=np.float64)

        def rmse(run: Runner) -> tuple[str, float]:
            values = run(feeds)[0].astype(np.float64)
            return "rmse", float(np.sqrt(np.mean((values - truth) ** 2)))

        return rmse
    classes = model.target_encoder.encode(frame[target], source)
    if model.task == "binary" and 0 < classes.sum() < len(classes):
        from keel.evaluate.metrics import binary_roc_auc

        def roc_auc(run: Runner) -> tuple[str, float]:
            return "roc_auc", binary_roc_auc(classes == 1, run(feeds)[1][:, 1].astype(np.float64))

        return roc_auc

    from keel.evaluate.metrics import predicted_classes

    threshold = model.threshold  # a binary model's labels follow its decision threshold, as the file's do

    def accuracy(run: Runner) -> tuple[str, float]:
        probabilities = run(feeds)[1]
        return "accuracy", float(np.mean(predicted_classes(probabilities, threshold) == classes))

    return accuracy
