"""The FastAPI application over one exported model: :func:`create_app`.

Routes: ``POST /predict``, ``GET /health``, ``GET /ready`` (both also ``HEAD``, as load balancers
probe), ``GET /metadata``, and the KServe V2 inference protocol under ``/v2`` (:mod:`keel.serve.v2`).
The OpenAPI document (``/openapi.json``, ``/docs``) is built from the model's own features. Every
request the server cannot serve gets a 4xx whose JSON body names the field and the problem
(:mod:`keel.serve.errors`).

Imports neither torch nor pandas, nor keel's training modules: the process stays small and starts
fast, and a serving-only install (onnxruntime, numpy, pydantic, fastapi, uvicorn) runs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

import keel
from keel.errors import ArtifactError
from keel.runtime import Predictor
from keel.serve.answers import Answerer, prediction_slots, response_schemas
from keel.serve.body import decode, error_response, json_response, read_body
from keel.serve.errors import RequestError
from keel.serve.logs import AccessLog
from keel.serve.openapi import add_head_routes, answers, document, request_body
from keel.serve.payload import Payload
from keel.serve.settings import ServeSettings
from keel.serve.spec import ModelSpec, read_spec
from keel.serve.state import ServerState, require_ready
from keel.serve.v2 import add_v2_routes, v2_schemas

# Bodies up to this size are parsed and predicted on the event loop: the thread hop costs about as
# much as a one-row prediction (one-row p50 over HTTP 0.96 ms inline against 1.06 ms through the
# thread pool, balanced penguins model). Larger ones go to a worker thread, so /health and small
# requests keep being answered while a 10,000-row batch is converted and predicted; at most one
# prediction per core runs on those threads at a time (answers.prediction_slots).
INLINE_BODY_BYTES: Final = 32 * 1024
logger = logging.getLogger("keel.serve")


def load_predictor(directory: str | os.PathLike[str], file: str = "model.onnx") -> Predictor:
    """The predictor of a model directory with ``file`` (``model.onnx`` unless told) attached.

    Raises:
        ArtifactError: No model there, a bare file, no ONNX export (the message says to run
            ``keel export``), or an export that fails its checks.
    """
    path = Path(directory)
    if path.is_file():
        raise ArtifactError(f"{path} is a file; keel serve takes the model directory (the one `keel train --output` "
                            "wrote, with model.onnx attached by `keel export`).")
    return Predictor.load(path, file=file)


def create_app(settings: ServeSettings, predictor: Predictor | None = None) -> FastAPI:
    """The server's ASGI application for ``settings.model``.

    Args:
        settings: The model directory and the limits.
        predictor: The model, when the caller loaded it already.

    Returns:
        The application; it warms the model up when it starts (uvicorn's lifespan) and answers
        ``/ready`` with 503 until then.

    Raises:
        ArtifactError: The model cannot be loaded (see :func:`load_predictor`).

    Example:
        >>> import uvicorn
        >>> from keel.serve import ServeSettings, create_app
        >>> uvicorn.run(create_app(ServeSettings("runs/penguins")), port=8000)
    """
    predictor = predictor if predictor is not None else load_predictor(settings.model, settings.file)
    spec = read_spec(predictor, settings.model_path)
    payload = Payload(spec, settings.max_batch)
    answerer = Answerer(predictor, spec, prediction_slots(settings.workers))
    # Once now, before any server starts: a model that cannot predict (a file changed after export) is a KeelError
    # its caller prints in one line, not a traceback in uvicorn's start-up log.
    answerer.warm_up()
    state = ServerState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        answerer.warm_up()
        state.ready = True
        logger.info("ready", extra={"model": str(settings.model), "task": spec.task,
                                    "features": len(spec.features), "pid": os.getpid()})
        yield
        state.ready = False

    app = FastAPI(title=f"keel model {spec.name!r}", version=keel.__version__, lifespan=lifespan, redoc_url=None,
                  description=_description(spec))
    app.add_middleware(AccessLog)
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    _add_routes(app, settings, spec, payload, answerer, state)
    add_v2_routes(app, settings, spec, payload, answerer, state)
    document(app, {**payload.schemas(), **response_schemas(spec), **v2_schemas(spec)}, {"name": [spec.name]})
    return app


def create_app_from_environment() -> FastAPI:
    """The application for the settings in ``KEEL_SERVE_SETTINGS``: each ``--workers`` process calls this."""
    return create_app(ServeSettings.from_environment())


def _add_routes(app: FastAPI, settings: ServeSettings, spec: ModelSpec, payload: Payload, answerer: Answerer,
                state: ServerState) -> None:
    metadata = describe(spec, settings)

    @app.post("/predict", summary="Predict rows", response_model=None, openapi_extra=request_body("PredictRequest"),
              responses=answers("PredictResponse", 400, 413, 415, 422, 503))
    async def predict(request: Request) -> Response:
        """Labels and probabilities (classification) or values (regression), one per row, in request order."""
        require_ready(state)
        content = await read_body(request, settings.max_body)
        if len(content) <= INLINE_BODY_BYTES:
            return json_response(answerer.answer(payload.parse(decode(content))))
        return await run_in_threadpool(
            lambda: json_response(answerer.answer(payload.parse(decode(content)), in_thread=True)))

    @app.get("/health", summary="Alive", response_model=None, responses=answers("Status"))
    async def health() -> Response:
        """200 while the process runs."""
        return json_response({"status": "alive"})

    @app.get("/ready", summary="Ready", response_model=None, responses=answers("Status", 503))
    async def ready() -> Response:
        """200 once the model is loaded and a warm-up prediction passed; 503 before."""
        require_ready(state)
        return json_response({"status": "ready"})

    add_head_routes(app, {"/health": health, "/ready": ready})

    @app.get("/metadata", summary="The model", response_model=None, responses=answers("ModelMetadata"))
    async def model_metadata() -> Response:
        """Task, target, classes, features with their types and known values, metrics, versions, export parity."""
        return json_response(metadata)


def describe(spec: ModelSpec, settings: ServeSettings) -> dict[str, Any]:
    """The ``/metadata`` document."""
    features = []
    for feature in spec.features:
        item: dict[str, Any] = {"name": feature.name, "type": feature.type}
        if not feature.is_number:
            item["values"] = list(feature.values)
        features.append(item)
    return {"model": spec.name, "task": spec.task, "target": spec.target, "classes": spec.classes,
            "features": features, "outputs": spec.outputs, **spec.metadata,
            "limits": {"max_batch": settings.max_batch, "max_body": settings.max_body}}


# ---- errors --------------------------------------------------------------------------------
async def _internal_error(request: Request, error: Exception) -> Response:
    """A bug, not the request's fault: a 500 in the server's error shape (uvicorn logs the traceback)."""
    return error_response(RequestError.one(
        500, f"internal error ({type(error).__name__}) while answering {request.method} {request.url.path}; this is a "
        "bug in keel, please report it with the request.", "internal"))


async def _request_error(_: Request, error: RequestError) -> Response:
    return error_response(error)


async def _http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own 404 and 405, in the server's error shape."""
    if error.status_code == 404:
        message = f"no route {request.method} {request.url.path}; the routes are listed at /docs."
    elif error.status_code == 405:
        message = f"{request.url.path} does not take {request.method}; the routes are listed at /docs."
    else:
        message = str(error.detail)
    return error_response(RequestError.one(error.status_code, message, "route"))


def _description(spec: ModelSpec) -> str:
    what = (f"the value of {spec.target!r}" if spec.is_regression else
            f"{spec.target!r} ({', '.join(map(str, spec.classes[:10]))}{', ...' if len(spec.classes) > 10 else ''})")
    return (f"A keel model ({spec.task}) predicting {what} from {len(spec.features)} feature(s). POST rows to "
            "/predict: one record, a list of records, or {\"columns\": {feature: [values]}}; null is a missing value. "
            "Served by keel.runtime (ONNX Runtime), without PyTorch.")
