"""The TFLite conversion itself, run in the TFLite environment (``make tflite-env``), never in keel's.

litert-torch's dependencies hold typing-extensions and pydantic below keel's tested set and bring
jax, so :func:`keel.export.tflite.to_tflite` saves the model and starts this module with that
environment's Python::

    python -m keel.export._tflite_worker MODEL_DIR OUT_DIR INPUTS_DIR

It converts :class:`~keel.export.module.InferenceModule` in float32 (TFLite has no float64), with
numbers shifted by an offset per column (:func:`keel.export.tflite.number_offsets`) and, for
regression, the standardized value as output (``* std + mean`` is the caller's, in float64), with
``litert_torch.convert``, and runs the file with the ``ai_edge_litert`` interpreter on the
inputs (``INPUTS_DIR/<input name>.npy``, ``(n_rows, n_columns)`` each), then writes to ``OUT_DIR``:

- ``model.tflite``: the converted graph;
- ``predictions.npy``: the graph's output, float32: probabilities ``(n, n_classes)`` or
  standardized values ``(n,)``;
- ``interface.json``: the graph's inputs and output as the interpreter reports them (name, dtype,
  shape), the converter's seconds and the packages' versions;
- ``error.txt`` instead, one line, when anything fails (the process then exits with status 1).

The batch dimension is fixed at 1: litert-torch 0.10 lowers most ops through jax, which rejects
a symbolic batch dimension even for a plain Linear layer, and a graph traced at batch 1 cannot be
resized afterwards (its broadcasts are baked in). One row per ``invoke`` is the usual on-device call
for a tabular model anyway.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from keel.export.module import InferenceModule, example_inputs

BATCH = 1
SIGNATURE = "serving_default"
# The regression output is not in target units, and its name says so.
OUTPUTS = {"regression": "standardized_value"}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m keel.export._tflite_worker MODEL_DIR OUT_DIR INPUTS_DIR", file=sys.stderr)
        return 2
    model_dir, out_dir, inputs_dir = (Path(argument) for argument in argv)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        _convert_and_run(model_dir, out_dir, inputs_dir)
    except Exception as error:  # the parent reads error.txt; the traceback goes to stderr for debugging
        traceback.print_exc()
        message = str(error).strip().splitlines()
        (out_dir / "error.txt").write_text(f"{type(error).__name__}: {message[0] if message else ''}")
        return 1
    return 0


def _convert_and_run(model_dir: Path, out_dir: Path, inputs_dir: Path) -> None:
    import litert_torch  # noqa: F401 - imported before the clock starts: the import alone takes seconds

    import keel

    model = keel.load(model_dir)
    started = time.perf_counter()
    _convert(model, out_dir / "model.tflite")
    seconds = time.perf_counter() - started
    flatbuffer = (out_dir / "model.tflite").read_bytes()
    inputs = {path.stem: np.load(path, allow_pickle=False) for path in inputs_dir.glob("*.npy")}
    predictions, interface = _run(flatbuffer, inputs)
    np.save(out_dir / "predictions.npy", predictions, allow_pickle=False)
    interface.update(convert_seconds=seconds, versions={
        package: metadata.version(package) for package in ("litert-torch", "ai-edge-litert", "torch", "keel")})
    (out_dir / "interface.json").write_text(json.dumps(interface, indent=2))


def _convert(model: Any, path: Path) -> None:
    """Write the model as a TFLite flatbuffer with named inputs (numbers, binaries, codes) and output."""
    import litert_torch

    from keel.export.tflite import number_offsets, shift_numbers

    # Numbers arrive shifted by an offset per column, as precise in float32 as keel's own (see number_offsets).
    # A regression value leaves the graph standardized: in target units float32 rounds 1e9 to the nearest 64.
    module = InferenceModule(shift_numbers(model, number_offsets(model)), number_dtype=torch.float32,
                             standardized=True).eval()
    named = NamedModule(module, OUTPUTS.get(model.task, "probabilities")).eval()
    sample = {group.name: tensor for group, tensor in zip(module.groups, example_inputs(module, BATCH))}
    # enable_x64=False (the default) turns the int64 codes input into int32: TFLite kernels and
    # on-device delegates lack int64, and indices never need it.
    litert_torch.convert(named, sample_kwargs=sample).export(str(path))


def _run(flatbuffer: bytes, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    """Predictions for every row, one ``invoke`` per row, and the graph's interface."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner(SIGNATURE)
    wanted = runner.get_input_details()
    (output_name, output), = runner.get_output_details().items()
    interface = {
        "signature": SIGNATURE,
        "inputs": {name: _tensor(detail) for name, detail in wanted.items()},
        "output": {"name": output_name, **_tensor(output)},
    }
    feeds = {name: inputs[name].astype(detail["dtype"]) for name, detail in wanted.items()}
    n_rows = len(next(iter(feeds.values()))) if feeds else 0
    rows = [runner(**{name: values[row:row + BATCH] for name, values in feeds.items()})[output_name][0]
            for row in range(n_rows)]
    width = output["shape"][1:]
    predictions = np.stack(rows) if rows else np.zeros((0, *width), dtype=np.float32)
    return predictions.astype(np.float32), interface


def _tensor(detail: dict[str, Any]) -> dict[str, Any]:
    return {"dtype": np.dtype(detail["dtype"]).name, "shape": [int(size) for size in detail["shape_signature"]]}


class NamedModule(torch.nn.Module):
    """Keyword inputs and a named output, so the TFLite signature reads ``numbers``, ``codes``, ...

    The groups a model lacks are left out of the sample, so they are not inputs of the graph.
    """

    def __init__(self, module: InferenceModule, output: str) -> None:
        super().__init__()
        self.module = module
        self.output = output

    def forward(self, numbers: torch.Tensor | None = None, binaries: torch.Tensor | None = None,
                codes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        given = {"numbers": numbers, "binaries": binaries, "codes": codes}
        return {self.output: self.module(*[given[group.name] for group in self.module.groups])}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
