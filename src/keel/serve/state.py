"""Whether the server is ready: the model loaded and its warm-up prediction passed."""

from __future__ import annotations

from dataclasses import dataclass

from keel.serve.errors import RequestError


@dataclass
class ServerState:
    """What the routes ask before they predict.

    Attributes:
        ready: True once the warm-up prediction passed, False again when the server shuts down.
    """

    ready: bool = False


def require_ready(state: ServerState) -> None:
    """Raise a 503 until the warm-up prediction passed.

    Raises:
        RequestError: 503 while the server is not ready.
    """
    if not state.ready:
        raise RequestError.one(503, "the model is not ready yet (its warm-up prediction has not passed); retry in a "
                               "moment.", "not_ready")
