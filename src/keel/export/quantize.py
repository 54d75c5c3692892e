"""int8 quantization of an exported ONNX model with ONNX Runtime's quantization tools.

Only matrix products with a constant weight matrix are quantized: the network's linear layers.
The string inputs, the ``ai.onnx.ml`` LabelEncoder lookups, the number scaling, embeddings and the
ensemble heads (an Einsum) stay as they were, in float.

Dynamic (the default): weights are stored as int8 with one scale per output column, and each
batch's activations are quantized on the fly (``quantize_dynamic``); nothing to calibrate.
Static: the activations' ranges come from calibration rows run through the float model
(``quantize_static``, QDQ format), so nothing is measured at prediction time.

``torch.onnx.export`` writes a linear layer as ``Gemm``, which ONNX Runtime's dynamic quantizer
does not handle (its integer-op registry has ``MatMul`` but no ``Gemm``); each such ``Gemm`` is
rewritten as ``MatMul`` + ``Add`` first, which computes the same.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from keel.errors import ConfigError, ExportError
from keel.export.onnx import require

if TYPE_CHECKING:
    import onnx

# Calibration rows go through the float model this many at a time.
_CALIBRATION_BATCH = 256


def quantize_int8(onnx_bytes: bytes, *, calibration: dict[str, np.ndarray] | None = None) -> bytes:
    """The model with its linear layers' weights (and, with calibration, activations) in int8.

    Args:
        onnx_bytes: A model from :func:`keel.export.onnx.to_onnx`, serialized.
        calibration: The model's inputs for some representative rows (input name -> array of one
            value per row, as for an ONNX Runtime session); None for dynamic quantization.

    Returns:
        The quantized model, serialized. Its metadata is the original's plus ``keel.quantization``
        (``int8-dynamic`` or ``int8-static``).

    Raises:
        ConfigError: ``calibration`` lacks one of the model's inputs, has none of its rows, or its
            arrays differ in length.
        ExportError: onnx or onnxruntime is missing, or the quantized model fails to load.
    """
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime import quantization

    model = onnx.load_from_string(onnx_bytes)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    reader = None
    if calibration is not None:
        reader = _reader(quantization.CalibrationDataReader, calibration, [i.name for i in model.graph.input])
    _gemm_to_matmul(model)
    mode = "int8-dynamic" if reader is None else "int8-static"
    # Only constant-weight MatMuls: the string lookups, scaling and heads are left in float. Weights in 7 bits
    # (reduce_range): uint8 activations times full-range int8 weights overflow the int16 pair sums of the
    # AVX2 kernels (vpmaddubsw saturates) on x86 CPUs without VNNI, where a file quantized in 8 bits predicted
    # probabilities 0.46 off its float model (an AMD EPYC; 0.03 on a CPU with VNNI). The file runs anywhere.
    options = {"op_types_to_quantize": ["MatMul"], "per_channel": True, "reduce_range": True,
               "weight_type": quantization.QuantType.QInt8, "extra_options": {"MatMulConstBOnly": True}}
    with tempfile.TemporaryDirectory(prefix="keel-quantize-") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save_model(model, str(source))
        try:
            with _quiet_quantizer():
                if reader is None:
                    quantization.quantize_dynamic(source, target, **options)
                else:
                    quantization.quantize_static(source, target, reader, quant_format=quantization.QuantFormat.QDQ,
                                                 activation_type=quantization.QuantType.QUInt8, **options)
        except Exception as error:  # the quantizer raises whatever its steps raise
            raise ExportError(f"ONNX Runtime's int8 quantizer failed on this model ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); export without --quantize, "
                              "and report this with the model's keel.json.") from None
        quantized = onnx.load_model(str(target))
    del quantized.graph.value_info[:]  # the quantizer's shape annotations: ONNX Runtime infers them again
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, {**metadata, "keel.quantization": mode})
    result: bytes = quantized.SerializeToString()
    _check_loads(result)
    return result


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the quantizer's advice to pre-process the model, logged on the root logger.

    Its pre-processing (symbolic shape inference) fails on the ensemble's graph, and what it would
    do for the others (shape inference, Gemm handling) is done here. The advice would reach a
    user's terminal as ``WARNING:root:...``; worse, ``logging.warning`` configures the root logger
    of a program that had not, unless the root has a handler: a NullHandler stands in meanwhile.
    """
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return not ("onnxruntime" in record.pathname and record.levelno <= logging.WARNING)

    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
        if placeholder is not None:
            root.removeHandler(placeholder)


def _gemm_to_matmul(model: "onnx.ModelProto") -> None:
    """Rewrite each ``Gemm(A, W, C)`` with a constant W, no transposed A and unit alpha and beta as
    ``MatMul(A, W') + C``, W' being W (transposed if ``transB``) stored as a new initializer."""
    from onnx import helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    matrices: set[str] = set()  # made already: a weight shared by several Gemms is stored once
    nodes = []
    for node in model.graph.node:
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in initializers or attributes.get("transA", 0)
                or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        transposed = bool(attributes.get("transB", 0))
        matrix = f"{node.input[1]}/matmul" + ("_t" if transposed else "")
        if matrix not in matrices:
            weight = numpy_helper.to_array(initializers[node.input[1]])
            weight = weight.T if transposed else weight
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), matrix))
            matrices.add(matrix)
        name = node.name or node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}/product" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], matrix], [product], name=f"{name}/matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}/bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _reader(base: type, calibration: dict[str, np.ndarray], names: list[str]) -> Any:
    """A ``CalibrationDataReader`` handing out ``calibration`` a batch at a time."""
    missing = [name for name in names if name not in calibration]
    lengths = {len(np.asarray(calibration[name])) for name in names if name in calibration}
    if missing:
        raise ConfigError(f"the calibration rows lack the model input(s) {missing}; pass one array per input "
                          f"({', '.join(names)}).")
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError(f"the calibration arrays must hold one value per row, the same number of rows each "
                          f"(at least one); got lengths {sorted(lengths)}.")
    n_rows = lengths.pop()

    class Reader(base):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(
                {name: np.asarray(calibration[name])[start:start + _CALIBRATION_BATCH] for name in names}
                for start in range(0, n_rows, _CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Reader()


def _check_loads(model: bytes) -> None:
    """Open the quantized model in ONNX Runtime, so a broken one fails here and not in a user's service."""
    runtime = require("onnxruntime")
    try:
        runtime.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ExportError(f"the int8 model does not load in ONNX Runtime ({str(error).splitlines()[0]}); "
                          "export without quantization, and report this with the model's keel.json.") from None
