"""One self-contained ONNX file from a trained model: raw column values in, predictions out.

The graph has one input per feature column, named after it, each of shape ``[batch]``:

- number columns: ``tensor(double)``, NaN for a missing value (double, not float: a timestamp or
  an amount in cents keeps its digits through the scaling);
- date columns: ``tensor(double)``, seconds since 1970-01-01 UTC (a naive time taken as UTC), NaN
  for a missing value; the graph takes them apart into elapsed days, year, month, weekday, day of
  year and hour as keel's own preprocessing does;
- binary and category columns: ``tensor(string)`` in keel's canonical spelling
  (:func:`keel.data.spelling.canonical_category`: ``3`` and ``3.0`` are ``"3"``, ``True`` is
  ``"True"``), the empty string for a missing value.

String lookups are ``ai.onnx.ml`` LabelEncoder nodes; everything after them is
:class:`keel.export.module.InferenceModule`, traced by ``torch.onnx.export``. Outputs are ``label``
(``[batch]``, the class labels' own type: int64, double or string) and ``probabilities``
(``[batch, n_classes]`` float32, columns in ``model.classes`` order) for classification, and
``value`` (``[batch]`` double, in target units) for regression; when a feature column already has
one of those names the output gets a trailing underscore (the metadata key ``keel.outputs`` says).
``label`` is the most probable class, or for a binary model with a decision threshold
(``model.threshold``, also in the metadata as ``keel.threshold``) the second class where its
probability is at least the threshold (compared in float32), else the first.

Opset 17 of the default domain and 2 of ``ai.onnx.ml``, IR version 8: ONNX Runtime 1.13 (2022)
and later, onnxruntime-node and onnxruntime-web run it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.data.images import ImageTransform
from keel.data.spelling import lookup_spellings
from keel.data.text import TextTransform
from keel.data.transforms import MISSING_INDEX, UNKNOWN_INDEX, BinaryTransform, CategoryTransform, DateTransform
from keel.errors import ExportError

if TYPE_CHECKING:
    import onnx

    from keel.model import Model

OPSET = 17
ML_OPSET = 2
IR_VERSION = 8
# Bumped when the graph's inputs, outputs or metadata change in a way a client would notice.
# 2: a binary model's labels may come from a decision threshold (keel.threshold), not the most
# probable class. 3: date columns, double inputs of seconds since 1970-01-01 UTC (keel.features
# lists them with type "date"). A file is written in the oldest format that describes it, so a
# model without a threshold or dates stays readable by keels that know only format 1.
# 4: text columns, int64 inputs of term positions [batch, terms] (keel.text holds each vocabulary).
# 5: image columns, float inputs of pixels [batch, channels, size, size] (keel.images says how to make them);
# text columns on a pretrained encoder, int64 inputs of [empty flag, token ids...] (keel.tokens holds each
# column's tokenizer).
# 6: tfidf text columns with character n-grams (keel.text's char_ngrams, text.char_ngrams): their terms go on with the
# n-grams, which a keel that knows only format 4 or 5 would leave out of the input (so its predictions would be wrong).
# keel.dates (whether a date column refuses years and YYYYMMDD numbers) is no new format: the graph is unchanged, and
# a keel that does not read it goes on as before.
EXPORT_FORMAT = 6
# What a client does with numbers for a date column, keel's own rule (keel.data.digits.written_dates).
DIGITS_RULE = ("where refuses_digits is true, refuse one request's numbers for the column (missing values aside) "
               "when they are all whole numbers from 1000 to 9999 (years) or all valid YYYYMMDD dates from 10000101 "
               "to 29991231 (above 2**24 a day of 00 or 32 too: a float32's rounding of 01 or 31): as seconds since "
               "1970-01-01 UTC they would all be moments of 1970")
# How a text becomes a pretrained column's input, for a client that tokenises itself.
TOKENS_RULE = ("tokenize the text with the tokenizers library's Tokenizer.from_str(tokenizer), truncation at "
               "max_tokens, no padding (a missing text is the empty string); the input row is [1 if the text is empty "
               "or blank else 0, then the token ids], padded with -1 to the batch's longest row")
# How an image becomes its input, for a client that reads images itself.
PIXELS_RULE = ("convert the image to the mode (Pillow's convert: L is 1 channel, RGB 3), resize it to size x size "
               "pixels with Pillow's bilinear filter (Image.resize(..., Image.BILINEAR), which when shrinking averages "
               "every source pixel under a target pixel; OpenCV's INTER_LINEAR and a canvas' drawImage do not, and "
               "give other pixels), divide by 255 (16-bit gray files: divide their values by 65535 as float32 first, "
               "then resize, since convert would clip them at 255; an array of numbers other than uint8: by scale; "
               "NaN pixels read as 0), lay it out as [channels, size, size] float32; a missing image is all NaN")
# How a text becomes its terms, for a client that makes the term positions itself.
TERMS_RULE = ("lower-case the text with Python's str.lower(); words are the matches of Python's regular expression "
              "\\w\\w+ (\\w: characters for which str.isalnum() is true, and _); terms are the words, then each "
              "adjacent pair of words joined by one space; the input row is the positions of the terms found in the "
              "vocabulary, in order, padded with -1 to the batch's longest row; an empty, blank or missing text is "
              "[len(vocabulary)]")
# ... and where keel.text gives a column char_ngrams [low, high] (text.char_ngrams), the terms go on (after the pairs).
CHAR_NGRAMS_RULE = ("; with char_ngrams [low, high], the terms go on with character n-grams: for each token of the "
                    "lower-cased text in order (its runs of characters other than whitespace, punctuation kept: "
                    "Python's str.split() with no argument, whitespace being the characters for which str.isspace() "
                    "is true), the token between two spaces (' ' + token + ' '), and for each length n from low to "
                    "high, each run of n consecutive characters (Unicode code points) of it from left to right, each "
                    "with '#' put in front (the token 'cat' with [3, 4]: '# ca', '#cat', '#at ', '# cat', '#cat ')")
_PREFIX = "keel/"  # every name keel makes inside the graph, so none clashes with a column's


def to_onnx(model: "Model") -> "onnx.ModelProto":
    """The model, its preprocessing and its outputs as one ONNX model (see the module docstring).

    Raises:
        ExportError: The ONNX packages are missing, or the traced graph fails ONNX's checker.
    """
    onnx = require("onnx")
    from onnx import TensorProto, helper

    from keel.export.module import InferenceModule, example_inputs

    module = InferenceModule(model).eval()
    core = _trace(module, example_inputs(module), model.task)
    core = onnx.compose.add_prefix(core, _PREFIX + "net/")
    columns = {t.name: t for t in model.preprocessor.transforms}
    inputs, nodes = [], []
    for group in module.groups:
        if group.name.startswith("text"):  # term positions or tokens, made by keel.runtime (or a client) from the text
            inputs.append(helper.make_tensor_value_info(group.columns[0], TensorProto.INT64,
                                                        ["batch", _text_axis(module, group.name)]))
            nodes.append(helper.make_node("Identity", [group.columns[0]], [_PREFIX + "net/" + group.name]))
            continue
        if group.name.startswith("image"):  # pixels, read and resized by keel.runtime (or a client)
            shape = module.image_shapes[int(group.name[len("image"):])]
            inputs.append(helper.make_tensor_value_info(group.columns[0], TensorProto.FLOAT, ["batch", *shape]))
            nodes.append(helper.make_node("Identity", [group.columns[0]], [_PREFIX + "net/" + group.name]))
            continue
        parts = []
        for column in group.columns:
            transform = columns[column]
            string = group.name not in ("numbers", "dates")
            inputs.append(helper.make_tensor_value_info(
                column, TensorProto.STRING if string else TensorProto.DOUBLE, ["batch"]))
            source = column
            if string:
                source = _name("lookup", column)
                nodes.append(_label_encoder(transform, column, source))
            parts.append(_name("column", column))
            nodes.append(helper.make_node("Unsqueeze", [source, _name("axis1")], [parts[-1]]))
        nodes.append(helper.make_node("Concat", parts, [_PREFIX + "net/" + group.name], axis=1))
    outputs, tail = _outputs(model, core, set(columns))
    constants = [onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), _name("axis1"))]
    if model.task != "regression":
        constants.append(_classes_tensor(model.classes, _name("classes")))
    graph = helper.make_graph(
        nodes + list(core.graph.node) + tail, "keel", inputs, outputs,
        initializer=constants + list(core.graph.initializer))
    result = helper.make_model(
        graph, producer_name="keel", producer_version=_version(), ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        doc_string=f"keel model: {model.task} of {model.target!r} from {len(columns)} column(s)")
    helper.set_model_props(result, metadata(model, [output.name for output in outputs]))
    try:
        onnx.checker.check_model(result, full_check=True)
    except onnx.checker.ValidationError as error:  # a keel bug, not the user's: say so
        raise ExportError(f"the exported graph failed ONNX's checker ({str(error).splitlines()[0]}); "
                          "this is a bug in keel, please report it with the model's keel.json.") from None
    return result


def metadata(model: "Model", output_names: list[str]) -> dict[str, str]:
    """The ``metadata_props`` of the exported file: what a client needs to use it without keel."""
    from keel.artifact import written_format_version

    columns = {t.name: t for t in model.preprocessor.transforms}
    threshold = model.threshold
    dates = {name: t for name, t in columns.items() if isinstance(t, DateTransform)}
    # tfidf and bag columns take term positions (keel.text); pretrained ones tokens (keel.tokens).
    texts = {name: t for name, t in columns.items() if isinstance(t, TextTransform) and t.encoder != "pretrained"}
    tokens = {name: t for name, t in columns.items() if isinstance(t, TextTransform) and t.encoder == "pretrained"}
    images = {name: t for name, t in columns.items() if isinstance(t, ImageTransform)}
    return {
        "keel.version": _version(), "keel.model_format": str(written_format_version(model.config.text.char_ngrams)),
        "keel.export_format": str(6 if any(t.char_ngrams for t in texts.values()) else 5 if images or tokens else
                                  4 if texts else 3 if dates else 1 if threshold is None else 2),
        "keel.task": model.task, "keel.target": model.target,
        "keel.classes": json.dumps(model.classes),
        "keel.features": json.dumps([{"name": f.name, "type": f.type,
                                      "input": "double" if f.type in ("number", "date") else
                                      "int64 empty flag and token ids" if f.name in tokens else
                                      "int64 term positions" if f.type == "text" else
                                      "float pixels [channels, size, size]" if f.type == "image" else "string"}
                                     for f in model.schema.features]),
        "keel.outputs": json.dumps(output_names),
        "keel.vocabularies": json.dumps({name: t.vocabulary for name, t in columns.items()
                                         if isinstance(t, CategoryTransform)}),
        "keel.schema": json.dumps(model.schema.to_dict()),
        "keel.metrics": json.dumps(model.metrics),
        # Text columns: each row's words and word pairs (keel.data.words.terms; and character n-grams with
        # char_ngrams) as positions in this vocabulary, padded with -1; an empty text is [len(vocabulary)].
        **({"keel.text": json.dumps({name: _text_rule(t) for name, t in texts.items()})} if texts else {}),
        # Text columns on a pretrained encoder: each row [empty flag, token ids...] by the column's tokenizer, -1 padding.
        **({"keel.tokens": json.dumps({name: {"tokenizer": t.tokenizer_json(), "max_tokens": t.width_tokens(),
                                              "tokens": TOKENS_RULE} for name, t in tokens.items()})}
           if tokens else {}),
        # Date columns: whether numbers that are all years or all YYYYMMDD dates (2023, 20231106) are refused rather
        # than taken as seconds of 1970 (keel.data.digits): they are, unless the training dates began in 1970.
        **({"keel.dates": json.dumps({name: {"refuses_digits": t.refuses_digits, "digits": DIGITS_RULE}
                                      for name, t in dates.items()})} if dates else {}),
        # Image columns: each image as [channels, size, size] pixels in [0, 1] (keel.data.pixels).
        **({"keel.images": json.dumps({name: {**dataclasses.asdict(t.pixel_spec), "channels": t.bands,
                                              "pixels": PIXELS_RULE} for name, t in images.items()})}
           if images else {}),
        "keel.missing": "numbers: NaN; binary and category columns: the empty string"
                        + ("; dates (seconds since 1970-01-01 UTC): NaN" if dates else "")
                        + ("; text columns: the row [len(vocabulary)] (see keel.text)" if texts else "")
                        + ("; text columns on a pretrained encoder: the empty string (see keel.tokens)" if tokens else "")
                        + ("; image columns: NaN in every pixel" if images else ""),
        # The decision rule of the label output: probabilities[:, 1] >= threshold (float32) -> classes[1].
        **({} if threshold is None else {"keel.threshold": repr(threshold)}),
    }


def _trace(module: Any, example: tuple[Any, ...], task: str) -> "onnx.ModelProto":
    import onnx
    import torch

    names = [group.name for group in module.groups]
    output = "value" if task == "regression" else "probabilities"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy TorchScript exporter: it writes opset 17 directly (the dynamo exporter starts at
        # 18 and down-converts with a known ReduceLogSumExp bug) and needs no onnxscript. Its
        # deprecation and tracer warnings are about Python control flow, which the parity check covers.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buffer,  # type: ignore[arg-type]  # a file-like object is accepted
                          dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=[output],
                          dynamic_axes={name: {0: "batch", **({1: _text_axis(module, name)} if name.startswith("text")
                                                               else {})}
                                        for name in [*names, output]},
                          do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _text_rule(transform: TextTransform) -> dict[str, Any]:
    """A tfidf or bag column's keel.text entry: its vocabulary and how a text becomes its terms' positions."""
    if transform.char_ngrams is None:  # as every export before text.char_ngrams
        return {"vocabulary": transform.vocabulary, "terms": TERMS_RULE}
    return {"vocabulary": transform.vocabulary, "char_ngrams": list(transform.char_ngrams),
            "terms": TERMS_RULE + CHAR_NGRAMS_RULE}


def _text_axis(module: Any, group: str) -> str:
    """The name of a text input's second axis: its terms (tfidf) or its flag and tokens (a pretrained encoder)."""
    return f"{group} {module.text_inputs[int(group[len('text'):])]}"


def _label_encoder(transform: Any, column: str, output: str) -> "onnx.NodeProto":
    """String values to the module's input: binary 0 / 1 (NaN else), category index (1 for "")."""
    from onnx import helper

    # "" is the missing value (canonical_category spells it None): a vocabulary of a model saved
    # before that rule may hold it, and keel now sends it to the missing bucket too.
    if isinstance(transform, BinaryTransform):
        codes = {value: float(code) for value, code in lookup_spellings(transform.values).items() if value}
        return helper.make_node("LabelEncoder", [column], [output], domain="ai.onnx.ml",
                                keys_strings=list(codes), values_floats=list(codes.values()),
                                default_float=float("nan"))
    if not isinstance(transform, CategoryTransform):
        raise TypeError(f"column {column!r} is not a string-valued transform")
    indices = {"": MISSING_INDEX, **{value: 2 + i for value, i in lookup_spellings(transform.vocabulary).items() if value}}
    return helper.make_node("LabelEncoder", [column], [output], domain="ai.onnx.ml",
                            keys_strings=list(indices), values_int64s=list(indices.values()),
                            default_int64=UNKNOWN_INDEX)


def _outputs(model: "Model", core: "onnx.ModelProto", taken: set[str]) -> tuple[list[Any], list[Any]]:
    """The graph outputs and the nodes that make them from the traced module's output."""
    from onnx import TensorProto, helper

    def free(name: str) -> str:
        while name in taken:
            name += "_"
        return name

    produced = core.graph.output[0].name
    if model.task == "regression":
        value = free("value")
        return ([helper.make_tensor_value_info(value, TensorProto.DOUBLE, ["batch"])],
                [helper.make_node("Identity", [produced], [value])])
    label, probabilities = free("label"), free("probabilities")
    index = _name("index")
    nodes = [helper.make_node("Identity", [produced], [probabilities]),
             *_decision(produced, index, model.threshold),
             helper.make_node("Gather", [_name("classes"), index], [label], axis=0)]
    label_type = _classes_array(model.classes).dtype
    element = {np.dtype(np.int64): TensorProto.INT64, np.dtype(np.float64): TensorProto.DOUBLE}.get(
        label_type, TensorProto.STRING)
    return ([helper.make_tensor_value_info(label, element, ["batch"]),
             helper.make_tensor_value_info(probabilities, TensorProto.FLOAT, ["batch", len(model.classes)])], nodes)


def _decision(probabilities: str, index: str, threshold: float | None) -> list[Any]:
    """Nodes from the probabilities to each row's class index (int64): the most probable class, or
    with a threshold, 1 where the second class's probability is at least it (as
    :func:`keel.evaluate.metrics.predicted_classes` decides on float32 probabilities)."""
    from onnx import TensorProto, helper

    if threshold is None:
        return [helper.make_node("ArgMax", [probabilities], [index], axis=1, keepdims=0)]
    return [
        helper.make_node("Constant", [], [_name("second")], value=helper.make_tensor(
            _name("second"), TensorProto.INT64, [], [1])),
        helper.make_node("Constant", [], [_name("threshold")], value=helper.make_tensor(
            _name("threshold"), TensorProto.FLOAT, [], [float(np.float32(threshold))])),
        helper.make_node("Gather", [probabilities, _name("second")], [_name("positive")], axis=1),  # (batch,)
        helper.make_node("GreaterOrEqual", [_name("positive"), _name("threshold")], [_name("decision")]),
        helper.make_node("Cast", [_name("decision")], [index], to=TensorProto.INT64),
    ]


def _classes_array(classes: list[Any]) -> np.ndarray:
    """The class labels as the ``label`` output's element type: int64, double, else their spelling."""
    from keel.data.spelling import canonical_category

    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.array(classes, dtype=np.int64)
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return np.array(classes, dtype=np.float64)
    return np.array([canonical_category(c) for c in classes], dtype=object)


def _classes_tensor(classes: list[Any], name: str) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    array = _classes_array(classes)
    if array.dtype == object:
        return helper.make_tensor(name, TensorProto.STRING, [len(array)], [str(c).encode() for c in array])  # type: ignore[misc]
    return numpy_helper.from_array(array, name)


def _name(*parts: str) -> str:
    return _PREFIX + "/".join(parts)


def _version() -> str:
    from keel import __version__

    return __version__


def require(package: str) -> Any:
    """Import an export dependency, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ExportError(f"ONNX export needs the {package!r} package, which is not installed; "
                          "install keel's export extra: pip install 'keel[export]'.") from None
