"""The serving-only install, for real: a virtual environment without PyTorch serves a model exported here.

The environment gets exactly what the Dockerfile installs: the serving requirements
(serve-requirements.txt, pinned by constraints.txt), then keel itself with ``--no-deps``. It is
built once per requirement set under ~/.cache/keel/ (about 15 s with a warm pip cache) and reused
afterwards; keel is reinstalled into it (about 3 s) only when keel's sources change.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from keel.export.exporter import export
from tests.conftest import FAST, PENGUINS, ROOT
from tests.integration.test_serve import Server, free_port, start, wait_ready

pytestmark = pytest.mark.slow

REQUIREMENTS = ROOT / "serve-requirements.txt"
CONSTRAINTS = ROOT / "constraints.txt"
DOCKERFILE = ROOT / "Dockerfile"
# The two pip installs of the serving-only image, as the Dockerfile runs them (from its WORKDIR).
PIP_REQUIREMENTS = ["install", "-c", "constraints.txt", "-r", "serve-requirements.txt"]
PIP_KEEL = ["install", "--no-deps", "."]
# pip options that change how it installs, not what: the Dockerfile may add them.
PIP_QUIET = {"--no-cache-dir", "--disable-pip-version-check", "-q", "--quiet", "--root-user-action=ignore"}
# Installed in the main environment, absent from the serving one.
TRAINING_ONLY = ("torch", "pandas", "sklearn", "typer", "rich", "safetensors", "pyarrow", "onnx")
TARGET = "species"


# ---- the environment -----------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keel"


def environment_key() -> str:
    """What decides the third-party packages: the requirement list, their pins, this Python (and where it lives)."""
    digest = hashlib.sha256()
    for part in (REQUIREMENTS.read_bytes(), CONSTRAINTS.read_bytes(), sys.version.encode(), sys.base_prefix.encode()):
        digest.update(part)
    return digest.hexdigest()[:16]


def source_key() -> str:
    """keel's own files as installed: a change to any of them reinstalls keel (with --no-deps)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    for path in sorted((ROOT / "src").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".egg-info"):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def pip(python: Path, arguments: list[str], cwd: Path) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *arguments]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stdout}\n{result.stderr}"


def build_environment(venv: Path) -> None:
    """A fresh venv with the serving requirements only, installed as the Dockerfile installs them."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip(venv / "bin" / "python", PIP_REQUIREMENTS, cwd=ROOT)
    (venv / "keel-environment.done").write_text(environment_key())  # written last: a half-built venv is rebuilt


def install_keel(venv: Path) -> None:
    """keel itself, --no-deps, from a copy of its sources (the build writes no build/ or egg-info here)."""
    key = source_key()
    marker = venv / "keel-source.sha256"
    if marker.exists() and marker.read_text() == key:
        return
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder)
        shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, tree / name)
        pip(venv / "bin" / "python", [*PIP_KEEL[:-1], "--force-reinstall", "."], cwd=tree)
    marker.write_text(key)


@pytest.fixture(scope="module")
def serving_python() -> Path:
    """The Python of the serving-only environment, built on first use and reused afterwards."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"serve-venv-{environment_key()}"
    with (root / "serve-venv.lock").open("w") as lock:  # one builder at a time (xdist workers, parallel runs)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "keel-environment.done").exists():
            build_environment(venv)
        install_keel(venv)
    return venv / "bin" / "python"


# ---- the model -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS)


@pytest.fixture(scope="module")
def trained(penguins: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path, Path]:
    """A penguins model trained here (with torch), saved twice: exported, and not exported."""
    model = keel.fit(penguins, target=TARGET, config={**FAST, "training.epochs": 3}, quiet=True)
    exported = tmp_path_factory.mktemp("served") / "penguins"
    model.save(exported)
    export(model)
    bare = tmp_path_factory.mktemp("bare") / "penguins"
    model.save(bare)
    return model, exported, bare


@pytest.fixture(scope="module")
def server(serving_python: Path, trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "server.log"
    running = start([str(serving_python), "-m", "keel.serve", str(trained[1]), "--port", str(port)], log, port,
                    ready=False)
    try:
        wait_ready(running, timeout=120)
        yield running
    finally:
        running.stop()


def records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as JSON objects: NaN becomes null, as a client sends a missing value."""
    return json.loads(frame.to_json(orient="records"))


# ---- tests ---------------------------------------------------------------------------------
def test_the_serving_environment_has_no_torch(serving_python: Path) -> None:
    result = subprocess.run([str(serving_python), "-c", "import torch"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr
    probe = ("import importlib.util, json, sys, keel; "
             f"print(json.dumps([keel.__file__, [m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)]]))")
    where, present = json.loads(subprocess.run([str(serving_python), "-c", probe], capture_output=True, text=True,
                                               check=True, timeout=60).stdout)
    assert present == []
    assert Path(where).is_relative_to(serving_python.parent.parent)  # keel installed there, not this checkout


def test_the_serving_environment_serves_what_the_model_predicts(server: Server, trained, penguins) -> None:
    model, _, _ = trained
    rows = penguins.sample(60, random_state=0).drop(columns=[TARGET])
    answer = httpx.post(server.url + "/predict", json=records(rows), timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = model.predict_proba(rows)
    assert np.abs(np.array(body["probabilities"]) - expected).max() <= 1e-5
    ordered = np.sort(expected, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 1e-5  # rows where keel itself does not sit on a tie
    assert np.array_equal(np.array(body["predictions"])[clear], model.predict(rows)[clear])
    assert body["classes"] == list(model.classes)


def test_a_model_without_onnx_is_refused_in_one_line(serving_python: Path, trained) -> None:
    bare = trained[2]
    result = subprocess.run([str(serving_python), "-m", "keel.serve", str(bare), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "keel export" in lines[0] and str(bare) in lines[0], result.stderr


def test_the_dockerfile_installs_what_this_test_installs() -> None:
    """One source of truth: the image runs the same two pip installs, and serves the copied model."""
    installs = []
    for line in logical_lines(DOCKERFILE.read_text()):
        words = shlex.split(line)
        if words[:1] == ["RUN"] and "pip" in words and "install" in words:
            command = words[words.index("install"):]
            command = command[:command.index("&&")] if "&&" in command else command
            installs.append([word for word in command if word not in PIP_QUIET])
    assert installs == [PIP_REQUIREMENTS, PIP_KEEL]
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in text
    assert 'CMD ["python", "-m", "keel.serve", "/model", "--host", "0.0.0.0"]' in text


def logical_lines(text: str) -> list[str]:
    """Dockerfile instructions, with continued lines joined and comments dropped."""
    joined = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return joined


def docker_engine() -> str | None:
    """Why the image cannot be built here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker client on this machine"
    result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return f"`docker info` failed, so there is no Docker engine to build with: {result.stderr.strip()[-200:]}"
    return None


def test_the_docker_image_serves_the_model(trained, penguins, tmp_path: Path) -> None:
    reason = docker_engine()
    if reason is not None:
        pytest.skip(reason)
    model, exported, _ = trained
    context = tmp_path / "context"  # what the Dockerfile copies, and a model at the default MODEL path
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt",
                 "serve-requirements.txt"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(exported, context / "runs" / "model")
    tag = f"keel-serving-test:{os.getpid()}"
    subprocess.run(["docker", "build", "-q", "--build-arg", "MODEL=runs/model", "-t", tag, str(context)], check=True,
                   timeout=900)
    port = free_port()
    container = subprocess.run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", tag], check=True,
                               capture_output=True, text=True, timeout=120).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        rows = penguins.head(20).drop(columns=[TARGET])
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=records(rows), timeout=30).json()
        assert np.abs(np.array(answer["probabilities"]) - model.predict_proba(rows)).max() <= 1e-5
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True, timeout=120)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
