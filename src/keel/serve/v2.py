"""The KServe / Triton V2 inference protocol (REST), beside keel's own ``/predict``.

- ``POST /v2/models/{name}/infer``: one input tensor per feature, ``shape`` ``[n]`` (or ``[n, 1]``),
  ``data`` flat: number features take a numeric datatype (``FP64``, ``FP32``, ``INT64``, ...),
  binary and category features ``BYTES`` (strings; numbers and booleans are spelled as keel spells
  them), date features ``BYTES`` (ISO 8601 text) or a numeric datatype (seconds since 1970-01-01
  UTC; a tensor of years or YYYYMMDD dates is refused, as the predictor refuses it, unless the model's
  training dates began in 1970). ``null`` in ``data`` is a missing value. The outputs are the ONNX file's: ``label`` and
  ``probabilities`` (``FP32``, ``[n, n_classes]``) for classification, ``value`` (``FP64``) for
  regression; ``parameters.unseen`` counts the category values the model does not know.
- ``GET /v2/models/{name}``: the model's inputs and outputs; ``GET /v2/models/{name}/ready``,
  ``GET /v2/health/live``, ``GET /v2/health/ready`` (the last two also ``HEAD``).

The OpenAPI document carries a one-row example request built from the model's features, which
/docs shows and Schemathesis sends.

``name`` is the model directory's name; another name is a 404. Inputs that are no feature are a
422 here (unlike ``/predict``, which ignores extra keys): V2 clients name tensors exactly.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Literal, Optional, Union

from fastapi import FastAPI
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from keel.serve.answers import Answerer
from keel.serve.body import decode, json_response, read_body
from keel.serve.errors import RequestError, describe, hint_for, problem
from keel.serve.openapi import add_head_routes, answers, request_body
from keel.serve.payload import EXAMPLE_PNG, IMAGE_TEXT, Payload
from keel.serve.settings import ServeSettings
from keel.serve.spec import FeatureSpec, ModelSpec
from keel.serve.state import ServerState, require_ready

NUMERIC: Final = ("FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
DATATYPES: Final = (*NUMERIC, "BOOL", "BYTES")
_INLINE_BODY_BYTES: Final = 32 * 1024

Datatype = Literal["FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8",
                   "BOOL", "BYTES"]
Element = Union[StrictStr, StrictBool, StrictInt, Annotated[float, Strict(), AllowInfNan(False)], None]


class InferInput(BaseModel):
    """One input tensor: one feature's values, one per row."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The feature's name.")
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=2, description="[n] or [n, 1].")
    datatype: Datatype = Field(description="A numeric type for number features, BYTES for binary and category ones.")
    data: list[Element] = Field(description="The n values, flat; null for a missing one.")
    parameters: Optional[dict[str, Any]] = None


class RequestedOutput(BaseModel):
    """An output to return; without ``outputs`` in the request, all are returned."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Optional[dict[str, Any]] = None


class InferRequest(BaseModel):
    """A V2 inference request."""

    model_config = ConfigDict(extra="forbid")

    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: Optional[list[RequestedOutput]] = None


def add_v2_routes(app: FastAPI, settings: ServeSettings, spec: ModelSpec, payload: Payload, answerer: Answerer,
                  state: ServerState) -> None:
    """Add the V2 routes for the one served model."""
    metadata = model_metadata(spec)
    infer = Inference(spec, payload, answerer, settings.max_batch)

    @app.post("/v2/models/{name}/infer", summary="V2 inference", response_model=None, tags=["V2 protocol"],
              openapi_extra=request_body("InferRequest", example_request(spec)),
              responses=answers("InferResponse", 400, 404, 413, 415, 422, 503))
    async def v2_infer(name: str, request: Request) -> Response:
        """The KServe V2 inference protocol: one input tensor per feature."""
        _check_name(name, spec)
        require_ready(state)
        content = await read_body(request, settings.max_body)
        if len(content) <= _INLINE_BODY_BYTES:
            return json_response(infer(decode(content)))
        return await run_in_threadpool(lambda: json_response(infer(decode(content), in_thread=True)))

    @app.get("/v2/models/{name}", summary="V2 model metadata", response_model=None, tags=["V2 protocol"],
             responses=answers("V2ModelMetadata", 404))
    async def v2_model(name: str) -> Response:
        """The model's inputs and outputs, in V2 datatypes."""
        _check_name(name, spec)
        return json_response(metadata)

    @app.get("/v2/models/{name}/ready", summary="V2 model ready", response_model=None, tags=["V2 protocol"],
             responses=answers("V2Ready", 404, 503))
    async def v2_model_ready(name: str) -> Response:
        """200 once the model's warm-up prediction passed."""
        _check_name(name, spec)
        require_ready(state)
        return json_response({"ready": True})

    @app.get("/v2/health/live", summary="V2 live", response_model=None, tags=["V2 protocol"],
             responses=answers("V2Live"))
    async def v2_live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready", summary="V2 ready", response_model=None, tags=["V2 protocol"],
             responses=answers("V2Ready", 503))
    async def v2_ready() -> Response:
        require_ready(state)
        return json_response({"ready": True})

    add_head_routes(app, {"/v2/health/live": v2_live, "/v2/health/ready": v2_ready})


class Inference:
    """V2 requests to batches, batches to V2 answers."""

    def __init__(self, spec: ModelSpec, payload: Payload, answerer: Answerer, max_batch: int) -> None:
        self.spec, self.payload, self.answerer, self.max_batch = spec, payload, answerer, max_batch
        self.features = {feature.name: feature for feature in spec.features}
        self.label_type = label_datatype(spec.classes)

    def __call__(self, body: Any, *, in_thread: bool = False) -> dict[str, Any]:
        """The V2 answer to a decoded body (``in_thread``: see :meth:`Answerer.outputs`).

        Raises:
            RequestError: 422 for a body that is no V2 request of this model's inputs.
        """
        try:
            request = InferRequest.model_validate(body)
        except ValidationError as error:
            raise _validation_error(error, body, self.features) from None
        columns, n_rows = self._columns(request)
        wanted = self._wanted(request)
        batch = self.payload.batch(columns, n_rows, list(columns))
        result = self.answerer.outputs(batch, in_thread=in_thread)
        answer: dict[str, Any] = {"model_name": self.spec.name, "outputs": [
            tensor for tensor in self._tensors(result, n_rows) if tensor["name"] in wanted]}
        if request.id is not None:
            answer["id"] = request.id
        if batch.unseen:
            answer["parameters"] = {"unseen": batch.unseen}
        return answer

    def _columns(self, request: InferRequest) -> tuple[dict[str, list[Any]], int]:
        problems: list[dict[str, Any]] = []
        columns: dict[str, list[Any]] = {}
        n_rows: int | None = None
        for tensor in request.inputs:
            problems += self._check_tensor(tensor, columns)
            if not problems:
                columns[tensor.name] = tensor.data
                if n_rows is not None and len(tensor.data) != n_rows:
                    problems.append(problem(f"input {tensor.name!r} has {len(tensor.data)} value(s) where input "
                                            f"{request.inputs[0].name!r} has {n_rows}; every input needs one value "
                                            "per row.", "shape", tensor.name))
                n_rows = len(tensor.data) if n_rows is None else n_rows
        missing = [name for name in self.features if name not in columns]
        if missing and not problems:
            problems.append(problem(f"the request lacks the input(s) {missing}; send one tensor per feature "
                                    "(null in 'data' for a missing value).", "missing", missing[0]))
        if problems:
            raise RequestError(422, problems)
        assert n_rows is not None  # inputs has at least one tensor
        return columns, n_rows

    def _check_tensor(self, tensor: InferInput, seen: dict[str, list[Any]]) -> list[dict[str, Any]]:
        name = tensor.name
        feature = self.features.get(name)
        if feature is None:
            return [problem(f"input {name!r} is no feature of this model; its inputs are {list(self.features)}.",
                            "input", name)]
        if name in seen:
            return [problem(f"input {name!r} is sent twice; send each feature once.", "input", name)]
        size = math.prod(tensor.shape)
        if len(tensor.shape) == 2 and tensor.shape[1] != 1 or size != len(tensor.data):
            return [problem(f"input {name!r} has shape {tensor.shape} and {len(tensor.data)} value(s); send shape "
                            "[n] (or [n, 1]) with n values in 'data'.", "shape", name)]
        if not tensor.data:
            return [problem("the batch is empty; send at least one row.", "batch", name)]
        if len(tensor.data) > self.max_batch:
            return [problem(f"the batch has {len(tensor.data)} rows; this server takes at most {self.max_batch} per "
                            "request (its --max-batch). Split it into smaller requests.", "batch", name)]
        if feature.is_date:
            if tensor.datatype not in (*NUMERIC, "BYTES"):
                return [problem(f"input {name!r} is a date feature; its datatype must be BYTES (ISO 8601 text such as "
                                f"2024-02-29T13:45:00Z) or numeric (seconds since 1970-01-01 UTC), not "
                                f"{tensor.datatype}.", "datatype", name)]
            for row, value in enumerate(tensor.data, 1):
                if isinstance(value, bool):
                    return [problem(f"row {row}: input {name!r} takes dates (ISO 8601 text or seconds since "
                                    f"1970-01-01 UTC, null when missing); got {describe(value)}.", "date", name, row)]
        elif feature.is_image:
            if tensor.datatype != "BYTES":
                return [problem(f"input {name!r} is an image feature; its datatype must be BYTES (the base64 of each "
                                f"image file's bytes), not {tensor.datatype}.", "datatype", name)]
            for row, value in enumerate(tensor.data, 1):
                if value is not None and not isinstance(value, str):
                    return [problem(f"row {row}: input {name!r} takes {IMAGE_TEXT}; got {describe(value)}.",
                                    "image", name, row)]
        elif feature.is_number:
            if tensor.datatype not in NUMERIC:
                return [problem(f"input {name!r} is a number feature; its datatype must be numeric (FP64, FP32, "
                                f"INT64, ...), not {tensor.datatype}.", "datatype", name)]
            for row, value in enumerate(tensor.data, 1):
                if isinstance(value, (str, bool)):
                    return [problem(f"row {row}: input {name!r} takes numbers (null when missing); got "
                                    f"{describe(value)}.", "number", name, row)]
        return []

    def _wanted(self, request: InferRequest) -> set[str]:
        if request.outputs is None:
            return set(self.spec.outputs)
        unknown = [output.name for output in request.outputs if output.name not in self.spec.outputs]
        if unknown:
            raise RequestError.one(422, f"the request asks for the output(s) {unknown}; this model's outputs are "
                                   f"{self.spec.outputs}.", "output", unknown[0])
        return {output.name for output in request.outputs}

    def _tensors(self, result: Any, n_rows: int) -> list[dict[str, Any]]:
        if self.spec.is_regression:
            return [{"name": self.spec.outputs[0], "datatype": "FP64", "shape": [n_rows], "data": result.tolist()}]
        classes = self.spec.classes
        labels = self.answerer.labels(result)
        if self.label_type == "BYTES":
            labels = [str(label) for label in labels]
        return [{"name": self.spec.outputs[0], "datatype": self.label_type, "shape": [n_rows], "data": labels},
                {"name": self.spec.outputs[1], "datatype": "FP32", "shape": [n_rows, len(classes)],
                 "data": result.ravel().tolist()}]


def label_datatype(classes: list[Any]) -> str:
    """The V2 datatype of the label output: BOOL, INT64 or FP64 when every class is one, else BYTES."""
    kinds = {type(label) for label in classes}
    for kind, datatype in ((bool, "BOOL"), (int, "INT64")):
        if kinds == {kind}:
            return datatype
    return "FP64" if kinds and kinds <= {int, float} else "BYTES"


def example_request(spec: ModelSpec) -> dict[str, Any]:
    """A V2 request of one row, for the OpenAPI document: each category's first known value, 0 for
    numbers (null, a missing value, where a category knows none)."""
    inputs = []
    for feature in spec.features:
        value = (0.0 if feature.is_number else "2024-02-29T13:45:00Z" if feature.is_date else
                 EXAMPLE_PNG if feature.is_image else feature.values[0] if feature.values else None)
        inputs.append({"name": feature.name, "shape": [1], "datatype": "FP64" if feature.is_number else "BYTES",
                       "data": [value]})
    return {"inputs": inputs}


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    """The ``GET /v2/models/{name}`` answer."""
    inputs = [{"name": feature.name, "datatype": "FP64" if feature.is_number else "BYTES", "shape": [-1]}
              for feature in spec.features]
    if spec.is_regression:
        outputs = [{"name": spec.outputs[0], "datatype": "FP64", "shape": [-1]}]
    else:
        outputs = [{"name": spec.outputs[0], "datatype": label_datatype(spec.classes), "shape": [-1]},
                   {"name": spec.outputs[1], "datatype": "FP32", "shape": [-1, len(spec.classes)]}]
    return {"name": spec.name, "versions": [], "platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs}


def v2_schemas(spec: ModelSpec) -> dict[str, Any]:
    """The V2 request and answer JSON schemas, for the OpenAPI document's components."""
    template = "#/components/schemas/{model}"
    schema = InferRequest.model_json_schema(ref_template=template)
    schemas: dict[str, Any] = {**schema.pop("$defs", {}), "InferRequest": schema}
    # The names the model takes and gives, for /docs (validation says the same with a message).
    schemas["InferInput"]["properties"]["name"]["enum"] = [feature.name for feature in spec.features]
    schemas["RequestedOutput"]["properties"]["name"]["enum"] = list(spec.outputs)
    tensor = {"type": "object", "required": ["name", "datatype", "shape", "data"], "properties": {
        "name": {"enum": list(spec.outputs)}, "datatype": {"enum": list(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
        "data": {"type": "array", "description": "The values, flat, row after row."}}}
    metadata_tensor = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}}
    schemas["InferResponse"] = {"title": "InferResponse", "type": "object", "required": ["model_name", "outputs"],
                                "properties": {"model_name": {"enum": [spec.name]}, "id": {"type": "string"},
                                               "outputs": {"type": "array", "items": tensor, "minItems": 1},
                                               "parameters": {"type": "object", "properties": {"unseen": {
                                                   "type": "object",
                                                   "additionalProperties": {"type": "integer", "minimum": 1},
                                                   "description": "By binary or category input, how many values "
                                                                  "the model does not know."}}}}}
    schemas["V2ModelMetadata"] = {
        "title": "V2ModelMetadata", "type": "object", "required": ["name", "platform", "inputs", "outputs"],
        "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                       "platform": {"type": "string"}, "inputs": {"type": "array", "items": metadata_tensor},
                       "outputs": {"type": "array", "items": metadata_tensor}}}
    schemas["V2Ready"] = {"title": "V2Ready", "type": "object", "required": ["ready"],
                          "properties": {"ready": {"type": "boolean"}}}
    schemas["V2Live"] = {"title": "V2Live", "type": "object", "required": ["live"],
                         "properties": {"live": {"type": "boolean"}}}
    return schemas


def _check_name(name: str, spec: ModelSpec) -> None:
    if name != spec.name:
        raise RequestError.one(404, f"no model named {name!r}; this server serves {spec.name!r}.", "model", "name")


def _validation_error(error: ValidationError, body: Any, features: dict[str, FeatureSpec]) -> RequestError:
    """The request's validation errors, one per place (pydantic reports one per member of a union value)."""
    problems: dict[str, dict[str, Any]] = {}
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if "data" in loc:  # what follows the element's index names the union member tried
            loc = loc[:loc.index("data") + 2]
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "the body"
        if path in problems:
            continue
        index = loc[3] if len(loc) == 4 and loc[2] == "data" else None
        field, row = _input_name(body, loc), (index + 1 if isinstance(index, int) else None)
        value, kind = item.get("input"), item["type"]
        if row is not None:  # one element of 'data': say what the input takes, not which union member failed
            feature = features.get(field or "")
            kind = "value" if feature is None else feature.problem_type
            message = f"{path} (row {row}): {_element_expected(feature, field)}; got {describe(value)}"
            if isinstance(value, (list, dict)):
                message += " ('data' is flat: one value per row, [v1, v2, ...])"
            message += "." + hint_for(value)
        elif not loc:
            message = f"the body must be a JSON object {{\"inputs\": [...]}}; got {describe(value)}."
        elif item["type"] == "missing":
            message = f"{path}: is required."
        else:
            message = f"{path}: {item['msg'].rstrip('.')}; got {describe(value)}."
        problems[path] = problem(message, kind, field, row)
    return RequestError(422, list(problems.values()))


def _element_expected(feature: FeatureSpec | None, name: str | None) -> str:
    if feature is None:
        return f"input {name!r}: each value in 'data' is one number, string or boolean, or null when missing"
    if feature.is_number:
        return f"input {name!r} takes numbers in 'data' (a number per row, null when missing)"
    if feature.is_date:
        return (f"input {name!r} takes dates in 'data' (ISO 8601 text or seconds since 1970-01-01 UTC per row, null "
                "when missing)")
    if feature.is_image:
        return f"input {name!r} takes {IMAGE_TEXT} in 'data', one per row"
    return (f"input {name!r} takes strings in 'data' (a string per row, null when missing; numbers and booleans are "
            "spelled as keel spells categories)")


def _input_name(body: Any, loc: list[Any]) -> str | None:
    """The name of the input tensor an error location points into, when the body says it."""
    if len(loc) >= 2 and loc[0] == "inputs" and isinstance(loc[1], int) and isinstance(body, dict):
        tensors = body.get("inputs")
        if isinstance(tensors, list) and loc[1] < len(tensors) and isinstance(tensors[loc[1]], dict):
            name = tensors[loc[1]].get("name")
            return name if isinstance(name, str) else None
    return str(loc[0]) if loc else None
