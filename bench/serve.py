"""Serving over HTTP: keel's server against PyTorch in FastAPI, on loopback, in one run.

    .venv/bin/python bench/serve.py                        # about 2 minutes on 2 cores
    .venv/bin/python bench/serve.py --server-python ~/.cache/keel/serve-venv-*/bin/python

One balanced-preset penguins model (trained here, about 10 s), served two ways on 127.0.0.1:

- keel: ``python -m keel.serve MODEL`` (FastAPI on uvicorn, ONNX Runtime through keel.runtime, no
  PyTorch in the process); ``--server-python`` runs it from another environment, such as the
  serving-only one tests/integration/test_serving_install.py builds;
- the baseline, the way Ludwig and most tutorials serve: ``keel.load(MODEL).predict`` on a DataFrame
  inside a FastAPI route on uvicorn (this file, ``--baseline``), answering labels only (less work
  than keel's labels and probabilities, so the ratios lean the baseline's way).

Both are one process with one compute thread (OMP_NUM_THREADS=1; ONNX Runtime's default of one
thread in the server), logging each request, on the same 2 cores as the load generator. For each: start-up
(process start to the first 200 from ``/ready``; median of ``--starts``), resident memory (VmRSS)
when ready and after the load, then single-row and 256-row ``POST /predict`` at 1, 8 and 32
concurrent clients, each cell bounded by ``--requests`` and ``--seconds``.

The load generator is Python threads, each with its own keep-alive ``http.client`` connection:
the cheapest client CPython has (httpx added about 0.5 ms a request in the stage-1 measurement),
and a thread blocked on its socket releases the GIL. Its ceiling is measured on ``GET /health`` at
8 clients and printed, so that a server figure near it reads as the client's limit, not the
server's. The client shares the 2 cores with the server under test.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PENGUINS = ROOT / "examples" / "penguins.csv"
TARGET = "species"
HOST = "127.0.0.1"  # load goes to this machine only
CLIENTS = (1, 8, 32)
SIZES = (1, 256)
HEADERS = {"Content-Type": "application/json"}


# ---- the baseline server -------------------------------------------------------------------
def baseline_app(directory: str) -> Any:
    """PyTorch in FastAPI: ``keel.load(...).predict`` on a DataFrame in a plain (threadpool) route."""
    from contextlib import asynccontextmanager

    import pandas as pd
    from fastapi import FastAPI

    import keel

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        model = keel.load(directory)
        model.predict(pd.read_csv(PENGUINS, nrows=1).drop(columns=[TARGET]))  # the warm-up, as keel's server does
        state["model"] = model
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.post("/predict")
    def predict(body: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        rows = body if isinstance(body, list) else [body]
        return {"predictions": state["model"].predict(pd.DataFrame(rows)).tolist()}

    return app


def run_baseline(directory: str, port: int) -> None:
    import uvicorn

    # uvicorn's default access log stays on: keel's server logs every request too.
    uvicorn.run(baseline_app(directory), host=HOST, port=port)


# ---- processes -----------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    startups: list[float] = field(default_factory=list)

    def start(self) -> float:
        """Start the server; seconds from process start to the first 200 from /ready."""
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with self.log.open("ab") as sink:
            started = time.perf_counter()
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        deadline = started + 120
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            if ready(self.port):
                self.startups.append(time.perf_counter() - started)
                return self.startups[-1]
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within 120 s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def memory_mb(self) -> dict[str, float]:
        """Resident memory now (VmRSS) and its peak (VmHWM), in MB, from /proc."""
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


# ---- load ----------------------------------------------------------------------------------
@dataclass
class Cell:
    """One load run: latencies of the answered requests, the errors, and the wall time."""

    latencies: list[float]
    errors: int
    seconds: float
    rows: int

    def figures(self) -> dict[str, float]:
        ms = np.array(self.latencies) * 1e3 if self.latencies else np.array([np.nan])
        return {"requests": len(self.latencies), "errors": self.errors, "p50": float(np.percentile(ms, 50)),
                "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
                "requests_s": len(self.latencies) / self.seconds, "rows_s": len(self.latencies) * self.rows / self.seconds}


def send(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> int:
    connection.request(method, path, body=body, headers=HEADERS if body is not None else {})
    response = connection.getresponse()
    response.read()
    return response.status


def load(port: int, bodies: list[bytes], clients: int, max_requests: int, max_seconds: float, rows: int,
         method: str = "POST", path: str = "/predict") -> Cell:
    """``clients`` threads, each on its own keep-alive connection, until either bound is reached."""
    issued = itertools.count()
    deadline = [0.0]
    # The clock starts once every client is connected and warmed up: the barrier's action sets it.
    barrier = threading.Barrier(clients + 1, action=lambda: deadline.__setitem__(0, time.perf_counter() + max_seconds))
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            for warm_up in (bodies * 3)[index % len(bodies):][:3]:  # warm the connection up, uncounted
                send(connection, method, path, warm_up if method == "POST" else None)
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=60)
        barrier.wait()
        for number in issued:
            if number >= max_requests or time.perf_counter() > deadline[0]:
                break
            body = bodies[number % len(bodies)] if method == "POST" else None
            started = time.perf_counter()
            try:
                status = send(connection, method, path, body)
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=60)
                continue
            if status == 200:
                latencies[index].append(time.perf_counter() - started)
            else:
                errors[index] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(max_seconds + 120)
    return Cell([value for values in latencies for value in values], sum(errors), time.perf_counter() - started, rows)


# ---- the run -------------------------------------------------------------------------------
def train(folder: Path) -> Path:
    """The balanced penguins model, saved and exported (parity-checked) by keel's exporter."""
    import keel

    model = keel.fit(str(PENGUINS), target=TARGET, config={"preset": "balanced", "training.bagging": 1}, quiet=True)
    directory = folder / "penguins-balanced"
    model.save(directory)
    model.export()
    return directory


def request_bodies() -> dict[int, list[bytes]]:
    """JSON bodies, the same for both servers: single rows (objects) and 256-row lists, NaN as null."""
    import pandas as pd

    frame = pd.read_csv(PENGUINS).drop(columns=[TARGET])
    records = json.loads(frame.to_json(orient="records"))
    rng = np.random.default_rng(0)
    single = [json.dumps(records[index]).encode() for index in rng.permutation(len(records))[:64]]
    batches = [json.dumps([records[index] for index in rng.choice(len(records), 256)]).encode() for _ in range(8)]
    return {1: single, 256: batches}


def agreement(servers: dict[str, Server], body: bytes) -> tuple[int, int]:
    """How many labels of one 256-row request the two servers agree on (a check that both do the same work)."""
    answers = []
    for server in servers.values():
        connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
        connection.request("POST", "/predict", body=body, headers=HEADERS)
        answers.append(json.loads(connection.getresponse().read())["predictions"])
        connection.close()
    return sum(a == b for a, b in zip(*answers)), len(answers[0])


@contextmanager
def running(servers: dict[str, Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers.values():
            server.stop()


def measure(arguments: argparse.Namespace, directory: Path, logs: Path) -> dict[str, Any]:
    servers = {
        "keel": Server("keel", [arguments.server_python, "-m", "keel.serve", str(directory), "--port", "{port}"],
                       logs / "keel.log"),
        "torch in FastAPI": Server("torch in FastAPI", [sys.executable, __file__, "--baseline", str(directory),
                                                        "--port", "{port}"], logs / "baseline.log"),
    }
    bodies = request_bodies()
    results: dict[str, Any] = {"cells": {}, "startup": {}, "memory": {}}
    with running(servers):
        for name, server in servers.items():
            for attempt in range(arguments.starts):
                if attempt:
                    server.stop()
                print(f"{name}: start-up {server.start():.3f} s", flush=True)
            results["startup"][name] = statistics.median(server.startups)
            results["memory"][name] = {"ready": server.memory_mb()["VmRSS"]}
        results["agreement"] = agreement(servers, bodies[256][0])
        ceiling = load(servers["keel"].port, [b""], 8, arguments.requests, arguments.seconds / 2, 0, "GET", "/health")
        results["ceiling"] = ceiling.figures()["requests_s"]
        for size in SIZES:
            for clients in CLIENTS:
                for name, server in servers.items():
                    bound = arguments.requests if size == 1 else max(arguments.requests // 8, 50)
                    cell = load(server.port, bodies[size], clients, bound, arguments.seconds, size).figures()
                    results["cells"][(name, size, clients)] = cell
                    print(f"{name:>16} {size:>3} row(s) {clients:>2} client(s): {cell['requests']:>5} requests, "
                          f"{cell['errors']} errors, p50 {cell['p50']:.2f} ms, p99 {cell['p99']:.2f} ms, "
                          f"{cell['requests_s']:.0f} requests/s", flush=True)
        for name, server in servers.items():
            memory = server.memory_mb()
            results["memory"][name].update(after=memory["VmRSS"], peak=memory["VmHWM"])
    return results


def versions() -> str:
    from importlib.metadata import version

    names = ("keel", "onnxruntime", "torch", "fastapi", "uvicorn")
    return ", ".join(f"{name} {version(name)}" for name in names)


def report(results: dict[str, Any], arguments: argparse.Namespace, load_before: float) -> str:
    cells, startup, memory = results["cells"], results["startup"], results["memory"]
    lines = [
        "## Serving: keel's server against PyTorch in FastAPI (bench/serve.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared by the load generator and the server under "
        f"test (load average {load_before:.2f} when the run began: other jobs ran), Python {platform.python_version()}, "
        f"{versions()}. Model: balanced preset on penguins, one network (training.bagging 1; auto would bag five): an ensemble of 8 MLPs of 256-256. Both servers: one "
        "process, one compute thread, one access-log line per request. Client: Python threads with keep-alive "
        f"`http.client` connections; its ceiling on `GET /health` at 8 clients: {results['ceiling']:,.0f} requests/s. "
        f"Each cell: at most {arguments.requests:,} requests (256-row: {max(arguments.requests // 8, 50):,}) or "
        f"{arguments.seconds:g} s. The baseline answers labels only, keel labels and probabilities. Labels agree on "
        f"{results['agreement'][0]}/{results['agreement'][1]} rows of one 256-row request.",
        "",
        "| server | rows per request | clients | requests | errors | p50 ms | p90 ms | p99 ms | requests/s | rows/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, size, clients), cell in cells.items():
        lines.append(f"| {name} | {size} | {clients} | {cell['requests']:,} | {cell['errors']} | {cell['p50']:.2f} | "
                     f"{cell['p90']:.2f} | {cell['p99']:.2f} | {cell['requests_s']:,.0f} | {cell['rows_s']:,.0f} |")
    lines += ["", "| keel / baseline | rows per request | clients | throughput | p50 latency |", "|---|---:|---:|---:|---:|"]
    for size in SIZES:
        for clients in CLIENTS:
            ours, theirs = cells[("keel", size, clients)], cells[("torch in FastAPI", size, clients)]
            lines.append(f"| | {size} | {clients} | {ours['requests_s'] / theirs['requests_s']:.1f}x | "
                         f"{ours['p50'] / theirs['p50']:.2f}x |")
    lines += ["", "| | keel | torch in FastAPI | keel / baseline |", "|---|---:|---:|---:|"]
    lines.append(f"| start-up to /ready, median of {arguments.starts} (s) | {startup['keel']:.2f} | "
                 f"{startup['torch in FastAPI']:.2f} | {startup['keel'] / startup['torch in FastAPI']:.2f} |")
    for key, label in (("ready", "RSS when ready (MB)"), ("after", "RSS after the load (MB)"),
                       ("peak", "peak RSS (MB)")):
        ours, theirs = memory["keel"][key], memory["torch in FastAPI"][key]
        lines.append(f"| {label} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |")
    lines += ["", "| target | figure | met |", "|---|---|---|"]
    for target, figure, met in targets(results):
        lines.append(f"| {target} | {figure} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    cells, startup, memory = results["cells"], results["startup"], results["memory"]
    p50 = cells[("keel", 1, 1)]["p50"]
    ratio = cells[("keel", 1, 8)]["requests_s"] / cells[("torch in FastAPI", 1, 8)]["requests_s"]
    errors = cells[("keel", 1, 32)]["errors"] + cells[("keel", 256, 32)]["errors"]
    rss = memory["keel"]["after"] / memory["torch in FastAPI"]["after"]
    return [
        ("single-row p50 at 1 client <= 2 ms", f"{p50:.2f} ms", p50 <= 2),
        ("single-row throughput at 8 clients >= 3x the baseline's", f"{ratio:.1f}x", ratio >= 3),
        ("zero errors at 32 clients (1 and 256 rows)", f"{errors} errors", errors == 0),
        ("start-up <= 1 s", f"{startup['keel']:.2f} s", startup["keel"] <= 1),
        ("resident memory <= 1/3 of the baseline's (after the load)", f"{rss:.2f}", rss <= 1 / 3),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-python", default=sys.executable,
                        help="The Python that runs python -m keel.serve (default: this one).")
    parser.add_argument("--requests", type=int, default=3000, help="Most single-row requests per cell (256-row: 1/8).")
    parser.add_argument("--seconds", type=float, default=6.0, help="Most seconds per cell.")
    parser.add_argument("--starts", type=int, default=3, help="Start-ups per server; the median is reported.")
    parser.add_argument("--baseline", metavar="MODEL", help=argparse.SUPPRESS)  # the baseline server's own process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave bench/RESULTS.md alone.")
    arguments = parser.parse_args()
    if arguments.baseline:
        run_baseline(arguments.baseline, arguments.port)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keel-bench-serve-") as folder:
        directory = train(Path(folder))
        print(f"trained and exported in {time.perf_counter() - began:.1f} s", flush=True)
        results = measure(arguments, directory, Path(folder))
    text = report(results, arguments, load_before)
    print(text)
    print(f"\n(whole run {time.perf_counter() - began:.0f} s)")
    if not arguments.no_write:
        write_section("serve", text)


if __name__ == "__main__":
    main()
