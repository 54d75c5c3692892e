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
from typing import Any, Iterator

from keel.errors import ConfigError

BACKENDS = ("torch", "ray")


def check_backend(backend: str) -> str:
    """The backend named, or a ConfigError listing the ones there are."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    return backend


def ray_module() -> Any:
    """``ray``, or a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'keel[ray]'.") from None
    return ray


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
        yield ray
        return
    # Ray's own start-up and dashboard lines would bury keel's; errors still show.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except Exception as error:  # ConnectionError, ValueError for an unreadable address, Ray's own errors
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise ConfigError(f"cannot connect to {where}: {str(error).splitlines()[0] if str(error) else type(error).__name__}. "
                          "Check --ray-address (ray://HOST:10001, HOST:6379 or auto, with `ray start --head` running "
                          "there), or leave it out to start Ray on this machine.") from None
    try:
        yield ray
    finally:
        ray.shutdown()
