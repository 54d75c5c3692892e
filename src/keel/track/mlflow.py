"""Log a saved model directory to MLflow as one run, through MLflow's own client.

What a run holds:

- parameters: the resolved configuration as dotted keys (``training.lr``), values cut to MLflow's
  limit of 6,000 characters;
- metrics: per epoch (step = epoch) ``loss``, ``val_loss``, ``val_<monitor>``, ``lr`` and any other
  number the trainer recorded; with bagging, networks after the first as ``network<i>/loss`` ...;
  and the test metrics at training time as ``test_<name>`` (numbers only);
- tags: ``keel.version``, ``keel.task``, ``keel.target``, ``keel.data``, ``keel.preset``, ``keel.model_dir``;
- artifacts: ``report.html`` (when the directory has one) and the whole directory under ``model/``.

The run is named after the model directory and its start and end times are the training's, so
MLflow's duration is the training time however much later the run is logged.

Where it goes (:func:`tracking_uri`): no URI means MLflow's own default (``MLFLOW_TRACKING_URI``
when set, else ``sqlite:///mlflow.db`` in the current folder with artifacts under ``./mlruns``:
what ``mlflow ui`` opens there). A URI with a scheme (``sqlite:///...``, ``http://...``,
``databricks``) is used as it is. A plain path is a folder that holds everything:
``DIR/mlflow.db`` and the artifacts under ``DIR/mlruns``; a path ending in ``.db`` is the SQLite
file itself. MLflow 3's plain file store (``./mlruns`` as the tracking URI) is in maintenance mode
and refuses to work unless ``MLFLOW_ALLOW_FILE_STORE=true``, which is why a folder maps to SQLite.

Before training, :func:`check_store` makes sure the store can be used: a tracking server must
answer an HTTP request within a few seconds, a local store's folder must be creatable and writable.
Without that check, an unreachable server cost a whole training and then ~4 minutes of MLflow's own
retries. Logging itself is bounded too (:data:`LOGGING_HTTP`): a server that dies mid-run fails
the logging in seconds, with the model already saved.

``mlflow`` is imported only inside these functions: ``import keel.track.mlflow`` stays cheap.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import json
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from keel.artifact import Manifest, read_manifest, verify_files
from keel.errors import ConfigError
from keel.runs import data_name, flatten

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

INSTALL = "pip install 'keel[track]'"

#: Limits of MLflow's tracking API (mlflow.utils.validation), kept here so the module imports no mlflow.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

#: Seconds :func:`check_store` waits for a tracking server's answer (one try, no retries).
PROBE_TIMEOUT = 5.0

#: MLflow's HTTP settings while a run is logged, each only when the environment does not set it.
#: MLflow's defaults (7 retries with exponential backoff, 120 s timeouts) are made for rate-limited
#: servers and wait ~4 minutes for one that is gone; a keel run logs a handful of requests, after
#: the model is saved, so a few seconds of retrying is enough and the user hears about it at once.
LOGGING_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # retries after 0 s and ~2 s
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",  # seconds without an answer (connect, or between bytes read)
}

# Files of the model directory logged on their own, at the run's top level, besides model/.
REPORT_FILE = "report.html"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class TrackedRun:
    """Where a logged run went.

    Attributes:
        run_id: MLflow's run id.
        experiment_id: The experiment it was logged to.
        tracking_uri: The tracking URI used.
        artifact_uri: Where its artifacts were stored.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    artifact_uri: str


def available() -> bool:
    """Whether the ``mlflow`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # a module entry set to None (blocked) raises ValueError
        return False


def require_mlflow(what: str = "MLflow tracking") -> None:
    """Fail early, before any training, when MLflow is not installed.

    Args:
        what: What needs it, for the message (``--mlflow`` in the CLI).

    Raises:
        ConfigError: ``mlflow`` cannot be imported.
    """
    if not available():
        raise ConfigError(f"{what} needs MLflow: {INSTALL}")


def check_store(uri: str | os.PathLike[str] | None = None, *, what: str = "MLflow tracking",
                timeout: float = PROBE_TIMEOUT) -> str:
    """Fail early, before any training, when MLflow or the tracking store cannot be used.

    An ``http(s)://`` server must answer one request within ``timeout`` seconds: any HTTP answer
    counts (even 401 or 404: what it means is MLflow's to say when the run is logged), and so does
    a TLS handshake that fails on the certificate (MLflow's own TLS settings may accept it). A
    local store (a folder, a ``.db`` path, ``sqlite:///...``, ``file:...``) must be in a folder that
    exists or can be created, and that keel can write to (a file made there and removed at once). Other schemes
    (``databricks``, ``postgresql://`` ...) are left to MLflow.

    Args:
        uri: As for :func:`log_run`: None or "" for MLflow's default store.
        what: What needs it, for the message (``--mlflow`` in the CLI).
        timeout: Seconds to wait for a tracking server.

    Returns:
        The tracking URI that :func:`log_run` will use.

    Raises:
        ConfigError: MLflow is not installed, the server does not answer, or the store's folder
            cannot be created or written.

    Example:
        >>> check_store("http://127.0.0.1:9", what="--mlflow")  # doctest: +SKIP
        Traceback (most recent call last):
        keel.errors.ConfigError: --mlflow: no MLflow tracking server answers at http://127.0.0.1:9 ...
    """
    require_mlflow(what)
    resolved = tracking_uri(uri)
    if re.match(r"^https?://", resolved, re.IGNORECASE):
        _probe_server(resolved, what, timeout)
    elif (local := _local_target(uri, resolved)) is not None:
        _check_local(*local, resolved, what)
    return resolved


def _probe_server(uri: str, what: str, timeout: float) -> None:
    """One GET of ``<uri>/health`` (MLflow's health check): any HTTP answer means the server is there.

    Plain urllib, not MLflow's client: its session retries and backs off, and its errors would
    have to be told apart by their text. Credentials are neither needed nor sent: a 401 is an answer.
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # urllib then raises the 3xx as an HTTPError: an answer; following it is MLflow's job

    example = "expected http://HOST:PORT, e.g. http://127.0.0.1:5000"
    parts = urllib.parse.urlsplit(uri)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as error:  # a port that is not a number
        raise ConfigError(f"{what}: {uri} is not a usable tracking URI ({error}); {example}.") from None
    if not host:
        raise ConfigError(f"{what}: {uri} names no host; {example}.")
    netloc = f"[{host}]" if ":" in host else host  # credentials in the URI are MLflow's to send, not the probe's
    netloc += f":{port}" if port is not None else ""
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    reason: BaseException
    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except urllib.error.URLError as error:
        reason = error.reason if isinstance(error.reason, BaseException) else error
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = error
    if isinstance(reason, ssl.SSLError):
        return  # something speaks TLS there; whether its certificate is accepted is MLflow's setting
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    raise ConfigError(
        f"{what}: no MLflow tracking server answers at {uri} ({_unreachable(reason, host, timeout)}). Start it "
        f"(mlflow server --host {host} --port {port}, on that machine) or fix the URI; nothing was trained.")


def _unreachable(reason: BaseException, host: str, timeout: float) -> str:
    """Why a request got no HTTP answer, in a few words."""
    import http.client
    import socket

    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: nothing listens on that port"
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"unknown host {host!r}"
    if isinstance(reason, http.client.HTTPException):
        return f"the connection closed without an HTTP answer ({type(reason).__name__})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason) or type(reason).__name__


def _local_target(uri: str | os.PathLike[str] | None, resolved: str) -> tuple[Path | None, Path] | None:
    """``(database or None, folder)`` of a local store; None for a server or a scheme left to MLflow."""
    text = os.fspath(uri) if uri is not None else ""
    if text and resolved != text:  # a plain path: keel's folder layout
        return _local_store(text)
    database = _sqlite_path(resolved)
    if database is not None:
        return database, database.parent
    if resolved.lower().startswith("file:"):  # MLflow's file store
        import urllib.parse
        import urllib.request

        return None, Path(urllib.request.url2pathname(urllib.parse.urlsplit(resolved).path)).absolute()
    return None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI; None for an in-memory one or another scheme."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path).absolute()


def _check_local(database: Path | None, folder: Path, uri: str, what: str) -> None:
    """``folder`` exists or can be made, and keel can write there (and to ``database``, when it exists)."""
    fix = "pass a folder you can write to, e.g. --mlflow runs/mlflow"
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what}: cannot keep the tracking store {uri} in {folder}: {existing} is a file, not a "
                          f"folder; {fix}.")
    if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only file system (EROFS)
        raise ConfigError(f"{what}: cannot keep the tracking store {uri} in {folder}: {existing} is not writable "
                          f"(permissions or a read-only file system); {fix}.")
    # os.access says yes to root for a folder that refuses files anyway (/proc, a read-only bind mount): a
    # file made and removed at once is the real test. MLflow otherwise retried for 100 s after training and
    # ended in an internal error.
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".keel-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"{what}: cannot keep the tracking store {uri} in {folder}: {existing} takes no new file "
                          f"({error.strerror or error}); {fix}.") from None
    if database is not None and database.exists() and (
            not database.is_file() or not os.access(database, os.R_OK | os.W_OK)):
        kind = "not a file" if not database.is_file() else "not readable and writable"
        raise ConfigError(f"{what}: cannot use the tracking database {database}: it is {kind}; {fix}.")


def tracking_uri(uri: str | os.PathLike[str] | None = None) -> str:
    """The tracking URI that :func:`log_run` uses for ``uri`` (see the module docstring).

    Args:
        uri: None or "" for MLflow's default; a URI with a scheme as it is; a folder path for
            ``sqlite:///<folder>/mlflow.db``; a ``.db`` path for that SQLite file.

    Returns:
        A tracking URI MLflow's client accepts.
    """
    if uri is None or os.fspath(uri) == "":
        import mlflow

        return str(mlflow.get_tracking_uri())
    text = os.fspath(uri)
    if _SCHEME.match(text) and not re.match(r"^[A-Za-z]:[\\/]", text):  # C:\... is a Windows path
        return text
    database, _ = _local_store(text)
    return f"sqlite:///{database.as_posix()}"  # absolute: sqlite:////home/... on POSIX, sqlite:///C:/... on Windows


def log_run(model_dir: str | os.PathLike[str], uri: str | os.PathLike[str] | None = None, *,
            experiment: str | None = None) -> TrackedRun:
    """Log a saved model directory to MLflow as one finished run.

    Args:
        model_dir: A model directory written by ``keel train`` / ``Model.save`` (its report, when
            there is one, is logged too).
        uri: Where to log (see :func:`tracking_uri`); None for MLflow's default.
        experiment: The experiment's name (created when missing); None for MLflow's default
            (``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` when set, else ``Default``).

    Returns:
        Where the run went.

    Raises:
        ConfigError: MLflow is not installed, or the tracking store refuses the run (the message
            has MLflow's reason).
        ArtifactError: ``model_dir`` is not a readable keel model.

    Example:
        >>> tracked = log_run("runs/penguins-20260101-120000", "runs/mlflow")  # doctest: +SKIP
        >>> tracked.artifact_uri  # doctest: +SKIP
        'file:///.../runs/mlflow/mlruns/0/<run id>/artifacts'
    """
    require_mlflow("keel.track.mlflow.log_run")
    directory = Path(model_dir)
    manifest = read_manifest(directory, verify=False)
    verify_files(directory, manifest, list(manifest.files))  # a damaged model is not worth tracking; a deleted plot is
    resolved = tracking_uri(uri)
    with _quiet_mlflow(), _bounded_http():
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        refused: tuple[type[Exception], ...] = (MlflowException, OSError)
        with contextlib.suppress(ImportError):  # a SQL store's database error (sqlite's "unable to open") is one too
            from sqlalchemy.exc import SQLAlchemyError

            refused += (SQLAlchemyError,)
        try:
            folder = None
            if uri is not None and os.fspath(uri) != "" and resolved != os.fspath(uri):
                database, folder = _local_store(os.fspath(uri))
                _create_store(resolved, database, folder)
            client = MlflowClient(resolved)
            experiment_id = _experiment_id(client, experiment, folder)
            return _log(client, resolved, experiment_id, directory, manifest)
        except refused as error:
            raise ConfigError(
                f"MLflow at {resolved} did not take the run: {_failure(error)}. The model itself is saved at "
                f"{directory}; check the tracking URI (--mlflow URI or MLFLOW_TRACKING_URI) and the server, then "
                f"log it again with keel.track.mlflow.log_run({str(directory)!r}, uri=...).") from None


def _failure(error: Exception) -> str:
    """MLflow's error in one line; a lost server in a few words rather than urllib3's repr chain."""
    text = " ".join(str(error).split()) or type(error).__name__
    if "Connection refused" in text:
        return "connection refused (the server is not running, or no longer)"
    if (match := re.search(r"too many (\d{3}) error responses", text)) is not None:
        return f"the server answered HTTP {match.group(1)} to every try"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    return text


@contextlib.contextmanager
def _bounded_http() -> Iterator[None]:
    """:data:`LOGGING_HTTP` in the environment while a run is logged, for the settings the user left unset.

    MLflow reads these variables at each request, so setting them around the call is enough.
    """
    added = [name for name in LOGGING_HTTP if name not in os.environ]
    for name in added:
        os.environ[name] = LOGGING_HTTP[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _log(client: MlflowClient, uri: str, experiment_id: str, directory: Path, manifest: Manifest) -> TrackedRun:
    """Create the run, log everything, finish it; a failure marks the run FAILED before re-raising."""
    record = manifest.run if isinstance(manifest.run, dict) else {}
    ended = _milliseconds(manifest.created)
    total = (record.get("seconds") or {}).get("total") if isinstance(record.get("seconds"), dict) else None
    started = ended - int(1000 * total) if ended is not None and isinstance(total, (int, float)) else ended
    run = client.create_run(experiment_id, start_time=started, tags=_tags(directory, manifest),
                            run_name=directory.resolve().name)
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, manifest, ended)
        report = directory / REPORT_FILE
        if report.is_file():
            client.log_artifact(run_id, str(report))
        client.log_artifacts(run_id, str(directory), "model")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED", end_time=ended)
    return TrackedRun(run_id, experiment_id, uri, str(run.info.artifact_uri))


def _log_values(client: MlflowClient, run_id: str, manifest: Manifest, timestamp: int | None) -> None:
    """Parameters, per-epoch metrics and test metrics, in batches within MLflow's limits."""
    from mlflow.entities import Metric, Param

    stamp = timestamp if timestamp is not None else int(time.time() * 1000)
    params = [Param(key, _param_value(value)) for key, value in flatten(manifest.config).items()]
    for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start:start + MAX_PARAMS_PER_BATCH])
    metrics = [Metric(key, value, stamp, step) for key, value, step in epoch_metrics(manifest.history)]
    metrics += [Metric(key, value, stamp, 0) for key, value in scalar_test_metrics(manifest.metrics).items()]
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])


def epoch_metrics(history: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``(name, value, epoch)`` for every number of every epoch record (not ``epoch`` or ``stopped``).

    With bagging (``history["bags"]``), the first network's values keep their names and network
    ``i`` (from 2) gets ``network<i>/`` in front of them.
    """
    bags = history.get("bags")
    networks = bags if isinstance(bags, list) and len(bags) > 1 else [history]
    out = []
    for index, network in enumerate(networks, start=1):
        prefix = "" if index == 1 else f"network{index}/"
        for position, record in enumerate(network.get("epochs") or [], start=1):
            step = record.get("epoch", position)
            for key, value in record.items():
                if key not in ("epoch", "stopped") and _is_number(value):
                    out.append((prefix + key, float(value), int(step)))
    return out


def scalar_test_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The test metrics that are numbers, as ``test_<name>`` (tables and lists are left out)."""
    return {f"test_{key}": float(value) for key, value in (metrics or {}).items() if _is_number(value)}


def _tags(directory: Path, manifest: Manifest) -> dict[str, str]:
    record = manifest.run if isinstance(manifest.run, dict) else {}
    raw = record.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    tags = {
        "keel.version": manifest.versions.get("keel", "unknown"),
        "keel.task": str(manifest.table_schema.get("task")),
        "keel.target": str(manifest.table_schema.get("target")),
        "keel.preset": str(manifest.config.get("preset")),
        "keel.model_dir": str(directory.resolve()),
    }
    if data.get("source"):
        tags["keel.data"] = data_name(str(data["source"]))
    return {key: value[:MAX_TAG_VALUE] for key, value in tags.items()}


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _milliseconds(created: str) -> int | None:
    try:
        moment = _dt.datetime.fromisoformat(created)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def _local_store(path: str) -> tuple[Path, Path]:
    """``(database, folder)`` of a plain-path URI: a ``.db`` file and its folder, or a folder and its mlflow.db."""
    location = Path(path).expanduser().absolute()
    if location.suffix.lower() in _SQLITE_SUFFIXES:
        return location, location.parent
    return location / "mlflow.db", location


def _create_store(uri: str, database: Path, folder: Path) -> None:
    """Create a folder's SQLite store with its artifact root in ``folder/mlruns``, once.

    MLflow's client would create the database with the artifact root ``./mlruns`` of the current
    folder, so a run logged to ``--mlflow DIR`` from elsewhere would leave its files outside DIR.
    The store's own class takes the root; the Default experiment made with the tables keeps it.
    """
    if database.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, (folder / "mlruns").as_uri())


def _experiment_id(client: MlflowClient, name: str | None, folder: Path | None) -> str:
    """The experiment to log to: ``name`` (created when missing), else MLflow's environment, else Default."""
    from mlflow.environment_variables import MLFLOW_EXPERIMENT_ID, MLFLOW_EXPERIMENT_NAME

    name = name or MLFLOW_EXPERIMENT_NAME.get()
    if not name:
        return str(MLFLOW_EXPERIMENT_ID.get() or "0")  # "0" is the Default experiment of every store
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if folder is not None:  # as for the Default experiment: files stay inside the store's folder
        location = (folder / "mlruns" / re.sub(r"[^A-Za-z0-9._-]+", "-", name)).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's and alembic's INFO lines ("Creating initial MLflow database tables...") off while logging."""
    import mlflow  # noqa: F401 - its import sets its loggers' levels; quieten them after that
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        with warnings.catch_warnings():
            # SQLAlchemy deprecations inside MLflow's store: MLflow's to fix, nothing a keel user can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
