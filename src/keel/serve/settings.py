"""What a server is started with: the model and the limits, checked once at the edge.

Imports nothing heavy (no fastapi, no onnxruntime), so ``keel serve`` can check its options before
it exports or starts anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from keel.errors import ConfigError

DEFAULT_HOST: Final = "127.0.0.1"  # loopback: serving beyond this machine is an explicit --host
DEFAULT_PORT: Final = 8000
# 10,000 rows of a few dozen columns is a few MB of JSON and well under a second of inference;
# larger batches belong to `keel predict` on a file.
DEFAULT_MAX_BATCH: Final = 10_000
DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024
# The environment variable through which `--workers N` hands the settings to each worker process.
ENVIRONMENT_KEY: Final = "KEEL_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """The options of ``keel serve`` / ``python -m keel.serve``.

    Attributes:
        model: The model directory (with ``model.onnx`` attached by ``keel export``).
        host: The address to bind; 127.0.0.1 unless serving beyond this machine is meant.
        port: The TCP port.
        workers: Server processes; each loads the model and answers requests on the shared port.
        max_batch: The most rows one request may hold.
        max_body: The largest request body, in bytes; a larger one is answered 413.
        file: Which ONNX export of the directory to serve: ``model.onnx``, or ``model.int8.onnx``
            (``keel export --quantize int8``).
    """

    model: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    max_batch: int = DEFAULT_MAX_BATCH
    max_body: int = DEFAULT_MAX_BODY
    file: str = "model.onnx"

    def __post_init__(self) -> None:
        _check_whole("--port", self.port, 0, 65535, "0 lets the system pick a free port")
        _check_whole("--workers", self.workers, 1, 1024, "one process per core is the usual choice")
        _check_whole("--max-batch", self.max_batch, 1, 10_000_000, "it caps the rows of one request")
        _check_whole("--max-body", self.max_body, 1024, 2**40, "it caps the bytes of one request body")
        if not isinstance(self.file, str) or not self.file.endswith(".onnx") or "/" in self.file or "\\" in self.file:
            raise ConfigError(f"--file must name an ONNX export in the model directory, such as model.onnx or "
                              f"model.int8.onnx; got {self.file!r}.")
        if not self.host:
            raise ConfigError("--host must not be empty; pass 127.0.0.1 for this machine only, or 0.0.0.0 for "
                              "every interface.")

    @property
    def model_path(self) -> Path:
        return Path(self.model)

    def to_environment(self) -> str:
        """The settings as the JSON that :meth:`from_environment` reads back (for worker processes)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> "ServeSettings":
        """The settings a parent process put in ``KEEL_SERVE_SETTINGS``.

        Raises:
            ConfigError: The variable is unset or holds no settings.
        """
        text = os.environ.get(ENVIRONMENT_KEY)
        if not text:
            raise ConfigError(f"{ENVIRONMENT_KEY} is not set; start the server with `python -m keel.serve MODEL`.")
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{ENVIRONMENT_KEY} holds no server settings ({error}); start the server with "
                              "`python -m keel.serve MODEL`.") from None


def _check_whole(option: str, value: object, low: int, high: int, hint: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{option} must be a whole number from {low} to {high}; got {value!r} ({hint}).")
