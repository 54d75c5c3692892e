"""``python -m keel.serve MODEL [--host] [--port] [--workers] [--max-batch] [--max-body]``.

The server's own entry point: argparse, no typer or rich, and nothing that needs PyTorch. A model
without an ONNX export is refused in one line that says to run ``keel export`` (``keel serve``, the
CLI command, exports it first where PyTorch is installed). A bad option, a model that cannot be
loaded, or an address that cannot be bound (the port in use, a host that is no address of this
machine) prints one line and exits 2, before the server starts or says it is ready.

SIGTERM (or Ctrl-C) stops the server gracefully: it stops accepting connections, lets the requests
in flight finish (for up to :data:`GRACEFUL_SECONDS`), and the process exits 0.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn

from keel.errors import ArtifactError, ConfigError, KeelError
from keel.serve.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_PORT,
    ENVIRONMENT_KEY,
    ServeSettings,
)

# How long a stopping server waits for requests in flight before it cancels them.
GRACEFUL_SECONDS: Final = 30
ONNX_FILE: Final = "model.onnx"


def parse_arguments(argv: Sequence[str] | None = None) -> ServeSettings:
    """The settings from the command line.

    Raises:
        ConfigError: An option out of range, of the wrong type, unknown, or missing (one line, where
            argparse would print its usage).
        SystemExit: argparse's own exit after --help (status 0).
    """
    parser = _Parser(
        prog="python -m keel.serve", description="Serve a keel model over HTTP (ONNX Runtime; no PyTorch needed).")
    parser.add_argument("model", help="The model directory, with model.onnx attached by `keel export`.")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"Address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 for every interface).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}).")
    parser.add_argument("--workers", type=int, default=1, help="Server processes (default 1); one per core at most.")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"Most rows in one request (default {DEFAULT_MAX_BATCH}).")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY,
                        help=f"Largest request body in bytes (default {DEFAULT_MAX_BODY}); larger ones get 413.")
    parser.add_argument("--file", default=ONNX_FILE,
                        help=f"Which export to serve (default {ONNX_FILE}; model.int8.onnx after keel export --quantize "
                             "int8, answered a row per call when dynamic).")
    arguments = parser.parse_args(argv)
    return ServeSettings(model=arguments.model, host=arguments.host, port=arguments.port, workers=arguments.workers,
                         max_batch=arguments.max_batch, max_body=arguments.max_body, file=arguments.file)


class _Parser(argparse.ArgumentParser):
    """argparse, whose mistakes are one line (a ConfigError) rather than its usage and an exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; run `{self.prog} --help` for the options.")


def check_address(host: str, port: int) -> None:
    """Bind the server's address once, as uvicorn will, so that one that cannot be served is found
    before the server starts (uvicorn binds only after the model is loaded and warm, and then exits
    3 with the bare errno).

    Raises:
        ConfigError: The port is in use or needs privileges, or the host is no address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except socket.gaierror as error:
        raise ConfigError(f"--host {host!r} is no address this machine can bind ({error.strerror}); pass 127.0.0.1 "
                          "for this machine only, 0.0.0.0 for every interface, or one of its own addresses.") from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            reason = "is in use by another process"
        elif error.errno == errno.EACCES:
            reason = "needs privileges this process lacks (ports below 1024 usually do)"
        elif error.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host!r} is no address of this machine; pass 127.0.0.1 for this machine only, "
                              "0.0.0.0 for every interface, or one of its own addresses.") from None
        else:
            reason = f"cannot be bound ({error.strerror or error})"
        raise ConfigError(f"port {port} on {host} {reason}; pick another --port.") from None


def check_export(directory: Path, file: str = ONNX_FILE, needs_onnx: bool = True) -> None:
    """Refuse a model directory without the ONNX export ``file``, saying how to make one; without ``needs_onnx``
    (``keel serve``, which exports model.onnx first where it is missing), only a ``file`` other than model.onnx.

    Raises:
        ArtifactError: No model at ``directory``, or no ``file`` attached to it.
    """
    from keel.artifact import read_manifest

    if directory.is_file():
        raise ArtifactError(f"{directory} is a file; pass the model directory (the one `keel train --output` wrote).")
    manifest = read_manifest(directory, verify=False)
    if file != ONNX_FILE and file not in manifest.files:
        exports = sorted(name for name in manifest.files if name.endswith(".onnx"))
        raise ArtifactError(f"{directory} has no export named {file} (it has {exports or 'none'}); run `keel export "
                            f"{directory} --quantize int8` for model.int8.onnx, or leave --file out to serve {ONNX_FILE}.")
    if ONNX_FILE not in manifest.files and needs_onnx:
        raise ArtifactError(f"{directory} has no ONNX export ({ONNX_FILE}), which the server runs; run `keel export "
                            f"{directory}` where keel is installed with PyTorch (or serve it with `keel serve "
                            f"{directory}`, which exports first), then start the server again.")


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server; returns the exit status (0 after a graceful stop, 2 for a bad option or model)."""
    try:
        settings = parse_arguments(argv)
        check_export(settings.model_path, settings.file)
        check_address(settings.host, settings.port)
        try:
            import uvicorn
        except ImportError:
            raise KeelError("the server needs fastapi and uvicorn, which are not installed; install keel's serve "
                            "extra: pip install 'keel[serve]'.") from None
        from keel.serve.app import create_app, load_predictor
        from keel.serve.logs import log_config

        # Loaded here, before any port is bound, so that a model that cannot be served is one line.
        app = create_app(settings, load_predictor(settings.model, settings.file))
    except KeelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_config": log_config(), "access_log": False,
               "timeout_graceful_shutdown": GRACEFUL_SECONDS, "lifespan": "on"}
    # uvicorn stops gracefully on SIGTERM and SIGINT, then raises the signal again once it has
    # restored the previous handlers: these make that a clean exit instead of a kill or a traceback.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    if settings.workers == 1:
        uvicorn.run(app, **options)
    else:
        del app  # each worker process loads its own copy
        os.environ[ENVIRONMENT_KEY] = settings.to_environment()
        uvicorn.run("keel.serve.app:create_app_from_environment", factory=True, workers=settings.workers, **options)
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
