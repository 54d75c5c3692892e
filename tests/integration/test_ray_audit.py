"""Regression tests from the audit of the Ray backend (keel train/tune --backend ray).

Each test states a contract the README gives and the code at c2a2d4f breaks; they FAIL on that commit
(see the audit report) and pass once the fix proposed there lands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.errors import ConfigError

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'keel[ray]')")
pytestmark = pytest.mark.xdist_group("ray")

ROOT = Path(__file__).resolve().parents[2]
FAST = {"preset": "fast", "training.epochs": 3, "model.hidden": [16]}


@pytest.fixture(scope="module")
def cluster():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as error:
        pytest.skip(f"Ray cannot start here: {error}")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_a_relative_data_path_trains_on_ray(cluster, monkeypatch) -> None:
    """`keel train examples/penguins.csv --backend ray` passes a relative path; Ray Train runs each worker
    in its own artifacts directory, so the worker must get a path that does not depend on its cwd."""
    monkeypatch.chdir(ROOT)
    model = keel.fit("examples/penguins.csv", target="species", config=FAST, backend="ray", quiet=True,
                     importance=False, test="examples/penguins.csv")
    assert model.metrics


def test_ray_tune_keeps_one_intermediate_value_per_epoch(cluster) -> None:
    """The final score report is not an epoch: a 3-epoch trial has steps 1..3 in the study, as with --backend torch."""
    config = {**FAST, "tune.space": {"training.lr": {"low": 1e-3, "high": 1e-2, "log": True}}}
    _, result = keel.tune(ROOT / "examples" / "penguins.csv", target="species", config=config, trials=2,
                          backend="ray", quiet=True)
    for trial in result.study.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3], trial.intermediate_values


def test_ray_tune_time_budget_leaves_no_running_trial(cluster) -> None:
    """README: at --time-limit S running trials are stopped and stored as pruned (not left 'running')."""
    config = {"preset": "fast", "training.epochs": 40, "model.hidden": [16],
              "tune.space": {"training.lr": {"low": 1e-3, "high": 1e-2, "log": True}}}
    try:
        _, result = keel.tune(ROOT / "examples" / "penguins.csv", target="species", config=config, trials=6,
                              time_limit=4, backend="ray", quiet=True)
    except ConfigError as error:  # every trial stopped: acceptable, as long as none is left running
        assert "running" not in str(error), str(error)
        return
    assert "running" not in result.summary["states"], result.summary["states"]


def test_ray_not_installed_is_one_config_error() -> None:
    """Without keel[ray], --backend ray names the extra to install (a ConfigError), for fit and for tune."""
    script = (
        "import sys; sys.modules['ray'] = None\n"
        "import keel\nfrom keel.errors import ConfigError\n"
        "for call in (lambda: keel.fit('examples/penguins.csv', target='species', config={'preset': 'fast'}, backend='ray'),\n"
        "             lambda: keel.tune('examples/penguins.csv', target='species', config={'preset': 'fast'}, trials=1, backend='ray')):\n"
        "    try:\n        call()\n    except ConfigError as error:\n        assert 'keel[ray]' in str(error), error\n"
        "    else:\n        raise SystemExit('no error')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_unreachable_ray_address_is_one_line_soon(tmp_path) -> None:
    """README: a cluster that cannot be reached is one line, exit 2, nothing saved; Ray's own client retries
    for minutes (observed: still retrying after 300 s), so keel must bound the wait."""
    done = subprocess.run([sys.executable, "-m", "keel", "train", "examples/penguins.csv", "--target", "species",
                           "--preset", "fast", "--backend", "ray", "--ray-address", "127.0.0.1:6399", "--no-report",
                           "-o", str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    assert "cannot connect to the Ray cluster at '127.0.0.1:6399'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("peer", ["a web server", "a silent listener"])
def test_a_ray_address_that_accepts_connections_but_is_not_ray_is_refused_soon(peer: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's trial: --ray-address at a port serving HTTP passed the connect check, and ray.init retried for
    minutes with C++ warnings and no keel line. keel now asks for gRPC's answer to HTTP/2's preface first
    (cluster._reachable, which ray_session calls before ray.init; called here directly, as a Ray instance that
    other tests of this process joined would be used as it is). The CLI's one line: test_a_web_server_..."""
    import http.server
    import socket
    import threading
    import time

    import keel.cluster as cluster

    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1.0)
    if peer == "a web server":
        server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, said = server.server_address[1], "but it is not Ray (no gRPC answer; it sent '"
    else:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port, said = silent.getsockname()[1], "but said nothing within 1 s"
    started = time.perf_counter()
    try:
        problem = cluster._reachable(f"127.0.0.1:{port}")
    finally:
        server.shutdown() if peer == "a web server" else silent.close()
    assert problem is not None and problem.startswith(f"something listens at 127.0.0.1:{port}, {said}"), problem
    assert time.perf_counter() - started < 5


def test_a_web_server_at_the_ray_address_is_one_line_from_the_cli(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run([sys.executable, "-m", "keel", "train", "examples/penguins.csv", "--target", "species",
                               "--preset", "fast", "--backend", "ray", "--ray-address",
                               f"127.0.0.1:{server.server_address[1]}", "--no-report", "-o", str(tmp_path / "m")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "but it is not Ray (no gRPC answer" in lines[0]
    assert not (tmp_path / "m").exists()


def test_a_tls_cluster_is_not_asked_for_plain_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """With RAY_USE_TLS a cluster would answer the plain-text preface with a TLS alert: keel then trusts the
    connection alone, as it did before the gRPC check (the audit's point)."""
    import http.server
    import threading

    import keel.cluster as cluster

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        assert cluster._reachable(address) is not None
        monkeypatch.setenv("RAY_USE_TLS", "1")
        assert cluster._reachable(address) is None
    finally:
        server.shutdown()
