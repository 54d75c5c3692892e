"""The OpenAPI document: the routes' answers and the model's own request and answer schemas.

FastAPI documents what it validates; the server validates the body itself (it must tell a
record from a list from columns, and read the body under --max-body first), so the request and
answer schemas built from the model's features are added to the document's components here, and
each route names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keel.serve.errors import ERROR_SCHEMA

_REASONS: Final = {
    400: "The body is empty or not JSON.",
    404: "No such model (the V2 routes take the model's name).",
    413: "The body is larger than the server's --max-body.",
    415: "The Content-Type is not JSON.",
    422: "The body is JSON but not rows of this model: the error names the field and the row.",
    503: "The model is not ready yet.",
}


def request_body(schema: str, example: Any = None) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON body has the component ``schema`` (and ``example``,
    which /docs shows and Schemathesis sends, where one is given)."""
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def answers(schema: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The route's documented answers: 200 with ``schema``, and each error status with the Error schema."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    documented: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}}
    documented.update({status: {"description": _REASONS[status], "content": error} for status in statuses})
    return documented


def add_head_routes(app: FastAPI, routes: dict[str, Callable[..., Any]]) -> None:
    """HEAD for the probe routes, answered as their GET (load balancers probe with HEAD; uvicorn
    sends the headers only). Left out of the document, which lists the GET."""
    for path, endpoint in routes.items():
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False, response_model=None)


def document(app: FastAPI, schemas: dict[str, Any], path_values: dict[str, list[str]]) -> None:
    """Have ``app`` build its OpenAPI document once.

    Args:
        app: The application.
        schemas: The model's request and answer schemas, by name, added to the components.
        path_values: The values each path parameter takes (the V2 routes' ``name``: the one
            model's), documented as an enum.
    """
    components = {"Error": ERROR_SCHEMA, **schemas, **static_schemas()}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(components)
            for operations in document["paths"].values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "path" and parameter["name"] in path_values:
                            parameter["schema"]["enum"] = path_values[parameter["name"]]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def static_schemas() -> dict[str, Any]:
    """The answers of /health, /ready and /metadata."""
    text, maybe_object = {"type": "string"}, {"anyOf": [{"type": "object"}, {"type": "null"}]}
    return {
        "Status": {"title": "Status", "type": "object", "required": ["status"], "properties": {"status": text}},
        "ModelMetadata": {
            "title": "ModelMetadata", "type": "object",
            "required": ["model", "task", "target", "classes", "features", "outputs", "metrics", "parity", "versions",
                         "limits"],
            "properties": {
                "model": text, "task": {"enum": ["binary", "multiclass", "regression"]}, "target": text,
                "classes": {"type": "array"}, "outputs": {"type": "array", "items": text},
                "features": {"type": "array", "items": {
                    "type": "object", "required": ["name", "type"],
                    "properties": {"name": text, "type": {"enum": ["number", "binary", "category", "date", "text", "image"]},
                                   "values": {"type": "array", "items": text}}}},
                "metrics": maybe_object, "parity": maybe_object, "dropped": {"type": "object"},
                "versions": {"type": "object"}, "created": text,
                "limits": {"type": "object", "properties": {"max_batch": {"type": "integer"},
                                                             "max_body": {"type": "integer"}}},
            },
        },
    }
