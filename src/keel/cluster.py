"""Ray, for clusters (extra ``keel[ray]``): one place that imports it, joins or starts it, and says what
is wrong when it cannot.

``keel train --backend ray`` (:mod:`keel.train.ray_train`) and ``keel tune --backend ray``
(:mod:`keel.search.ray_tune`) run inside :func:`ray_session`: it connects to the cluster at
``address`` (``ray://host:10001``, ``host:6379``, or ``auto`` for the one ``ray start`` runs on this
machine), or starts a local Ray instance when there is none, and shuts down only what it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any, Iterator

from keel.errors import ConfigError

BACKENDS = ("torch", "ray")


def check_backend(backend: str) -> str:
    """The backend named, or a ConfigError listing the ones there are."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    return backend


def ray_module() -> Any:
    """``ray`` (with Ray Tune and Ray Train), or a ConfigError naming the extra to install."""
    try:
        import ray
        import ray.train.torch  # noqa: F401  (the extras keel[ray] installs)
        import ray.tune  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"--backend ray needs Ray with Ray Tune and Ray Train ({error}): pip install 'keel[ray]'.") \
            from None
    return ray


# How long keel waits for a cluster's address to answer before saying it cannot be reached (Ray's own
# client retries for minutes).
CONNECT_SECONDS = 10.0


def _reachable(address: str) -> str | None:
    """Why ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) cannot be reached, or None when it answers
    (or is ``auto``, which Ray resolves itself)."""
    if address == "auto":
        return None
    where = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        return f"{address!r} is not HOST:PORT, ray://HOST:PORT or auto"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS) as connection:
            # A cluster with TLS (RAY_USE_TLS) answers a plain-text preface with an alert: trust the connection.
            tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
            return None if tls else _speaks_grpc(connection, f"{host}:{port}")
    except OSError as error:
        return f"nothing answers at {host}:{port} ({error.strerror or error})"


# HTTP/2's client connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and its client
# server both are) answers with a SETTINGS frame of its own, whatever else it then says.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04


def _speaks_grpc(connection: socket.socket, where: str) -> str | None:
    """None when the peer answers HTTP/2 (gRPC, as Ray does); else why not. A port that accepted connections
    but was no Ray (a web server) left ray.init retrying for minutes with C++ warnings and no keel line."""
    try:
        connection.sendall(_HTTP2_PREFACE)
        frame = b""
        while len(frame) < 9:
            chunk = connection.recv(9 - len(frame))
            if not chunk:
                break
            frame += chunk
    except TimeoutError:
        return f"something listens at {where}, but said nothing within {CONNECT_SECONDS:g} s (Ray speaks gRPC)"
    except OSError as error:
        return f"the connection to {where} failed ({error.strerror or error})"
    if len(frame) == 9 and frame[3] == _SETTINGS:
        return None
    shown = frame[:16].decode("latin-1").splitlines()[0] if frame else "nothing"
    return f"something listens at {where}, but it is not Ray (no gRPC answer; it sent {shown!r})"


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address``, to the Ray this process already joined, or to a local instance
    started here (and shut down on leaving). Workers' output is not relayed: keel reports rank 0's
    notes and each trial's end itself.

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached or started.
    """
    ray = ray_module()
    if ray.is_initialized():
        joined = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", joined):
            raise ConfigError(f"this process already joined the Ray cluster at {joined}; ray_address {address!r} "
                              "would be another. Leave ray_address out (the joined cluster is used), or call "
                              "ray.shutdown() first.")
        yield ray
        return
    where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
    hint = ("Check --ray-address (ray://HOST:10001, HOST:6379 or auto, with `ray start --head` running there), or leave "
            "it out to start Ray on this machine.")
    problem = None if address is None else _reachable(address)
    if problem is not None:
        raise ConfigError(f"cannot connect to {where}: {problem}. {hint}")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as error:  # ConnectionError, ValueError for an unreadable address, Ray's own errors
        raise ConfigError(f"cannot connect to {where}: "
                          f"{str(error).splitlines()[0] if str(error) else type(error).__name__}. {hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
