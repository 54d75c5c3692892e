"""An HTTP server for a keel model, over the torch-free predictor (keel.runtime).

    $ keel serve runs/penguins                  # exports first when the model has no model.onnx
    $ python -m keel.serve runs/penguins --port 8000 --workers 2

Routes: ``POST /predict`` (one record, a list of records, or ``{"columns": {...}}``), ``GET /health``,
``GET /ready``, ``GET /metadata``, the KServe V2 protocol under ``/v2``, and the OpenAPI document
(``/openapi.json``, ``/docs``) built from the model's own features.

``import keel.serve`` is light (the settings only); :func:`create_app` loads FastAPI on first use.
Nothing here imports torch or pandas: the server runs in a serving-only install (onnxruntime,
numpy, pydantic, fastapi, uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.serve.settings import ServeSettings

if TYPE_CHECKING:
    from keel.serve.app import create_app

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from keel.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'keel.serve' has no attribute {name!r}")
