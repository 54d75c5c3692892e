"""The prediction server run for real: `python -m keel.serve` (and `keel serve`) on a loopback port, over HTTP.

One server per model (binary, multiclass, regression) for the module; the tests that stop a server
(SIGTERM, workers, the CLI) start their own.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import KeelWarning
from keel.export.exporter import export
from keel.runtime import Predictor
from tests.conftest import FAST

FEATURES = ["size", "count", "member", "color", "grade"]
# grade holds the integers 1-3 declared a category: 3, 3.0 and "3" are one value.
DECLARED = {"input_features": [{"name": name} for name in FEATURES[:-1]] + [{"name": "grade", "type": "category"}]}
TARGETS = {"binary": "flag", "multiclass": "kind", "regression": "amount"}
ROW = {"size": 0.5, "count": 7, "member": "no", "color": "blue", "grade": 2}
# Modules the server process must never load: the training stack and the CLI's libraries.
HEAVY = ("torch", "pandas", "keel.model", "keel.config", "keel.nn", "keel.train", "keel.export", "keel.data.io",
         "typer", "rich")
KEEL_CLI = Path(sys.executable).parent / "keel"


def table(n_rows: int = 120, seed: int = 0) -> pd.DataFrame:
    """Every feature type, missing values, and one target per task driven by the features."""
    rng = np.random.default_rng(seed)
    size = rng.normal(0, 1, n_rows)
    grade = rng.integers(1, 4, n_rows)
    frame = pd.DataFrame({
        "size": size, "count": rng.integers(0, 50, n_rows),
        "member": rng.choice(["yes", "no"], n_rows).astype(object),
        "color": rng.choice(["red", "green", "blue"], n_rows).astype(object), "grade": grade,
    })
    score = size + (frame["member"] == "yes") + 0.5 * grade
    frame["flag"] = (score > 1.5).astype(int)  # int labels: they must come back as JSON integers
    frame["kind"] = np.where(score > 2.5, "high", np.where(score < 1.0, "low", "mid"))
    frame["amount"] = 3 * size + grade + rng.normal(0, 0.1, n_rows)
    frame.loc[rng.choice(n_rows, 10, replace=False), "size"] = np.nan
    frame.loc[rng.choice(n_rows, 8, replace=False), "member"] = None
    frame.loc[rng.choice(n_rows, 8, replace=False), "color"] = None
    return frame


def request_rows() -> list[dict[str, Any]]:
    """Rows the models never saw, with None for missing values, then odd values one at a time."""
    frame = table(40, seed=1)[FEATURES]
    rows = [{name: (None if pd.isna(value) else value) for name, value in record.items()}
            for record in frame.astype(object).to_dict("records")]
    odd = [("size", None), ("size", 40.0), ("count", None), ("member", "maybe"), ("member", None),
           ("color", "purple"), ("color", None), ("grade", 4), ("grade", None), ("grade", 2.0), ("grade", "3"),
           ("member", True), ("color", 7)]
    return rows + [{**rows[index], column: value} for index, (column, value) in enumerate(odd)]


ROWS = request_rows()


def keel_says(model: keel.Model, rows: list[dict[str, Any]], proba: bool = False) -> np.ndarray:
    frame = pd.DataFrame(rows, columns=FEATURES).astype(object)
    with warnings.catch_warnings():  # Model notes the unseen values on purpose
        warnings.simplefilter("ignore", KeelWarning)
        return model.predict_proba(frame) if proba else model.predict(frame)


# ---- servers -------------------------------------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], log: Path, port: int, ready: bool = True) -> Server:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", port, log)
    if ready:
        wait_ready(server)
    return server


def serve(directory: Path, log_dir: Path, *options: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "keel.serve", str(directory), "--port", str(port), *options]
    return start(command, log_dir / f"server-{port}.log", port)


def wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"the server was not ready within {timeout} s:\n{server.log.read_text()}")


def mapped_libraries(pid: int) -> str:
    """The shared libraries a process has loaded (Linux): libtorch or pandas' extensions would show here."""
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[keel.Model, Path]]:
    """One tiny model per task, saved and exported by keel's own exporter (parity-checked)."""
    frame = table()
    trained = {}
    for kind, target in TARGETS.items():
        others = [t for t in TARGETS.values() if t != target]
        model = keel.fit(frame.drop(columns=others), target=target, config={**FAST, "training.epochs": 3, **DECLARED},
                         quiet=True)
        directory = tmp_path_factory.mktemp("serve") / kind
        model.save(directory)
        export(model)
        trained[kind] = (model, directory)
    return trained


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A running server per model (the regression one with small limits, to test them)."""
    logs = tmp_path_factory.mktemp("logs")
    running = {}
    try:
        for kind, (_, directory) in models.items():
            limits = ["--max-batch", "64", "--max-body", "65536"] if kind == "regression" else []
            running[kind] = serve(directory, logs, *limits)
        yield running
    finally:
        for server in running.values():
            server.stop()


def post(server: Server, body: Any, path: str = "/predict", **options: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30, **options)


# ---- predictions ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TARGETS))
def test_predictions_equal_the_models_for_the_test_rows(models, servers, kind: str) -> None:
    model, directory = models[kind]
    answer = post(servers[kind], ROWS[:60]).json()  # the regression server takes 64 rows at most
    rows = ROWS[:60]
    if kind == "regression":
        expected = keel_says(model, rows)
        assert np.abs(np.array(answer["predictions"]) - expected).max() <= 1e-5 * model.target_encoder.std
        assert answer["predictions"] == Predictor.load(directory).predict(rows).tolist()  # bit for bit
        assert "probabilities" not in answer and "classes" not in answer
        return
    probabilities = keel_says(model, rows, proba=True)
    assert np.abs(np.array(answer["probabilities"]) - probabilities).max() <= 1e-5
    assert answer["probabilities"] == Predictor.load(directory).predict_proba(rows).tolist()
    assert answer["classes"] == list(model.classes)
    labels = keel_says(model, rows).tolist()
    ordered = np.sort(probabilities, axis=1)
    near_ties = ordered[:, -1] - ordered[:, -2] <= 1e-5  # where keel itself cannot tell two classes apart
    assert all(got == want for got, want, tie in zip(answer["predictions"], labels, near_ties) if not tie)
    assert {type(label) for label in answer["predictions"]} == {type(label) for label in labels}  # ints stay ints


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_one_record_a_list_and_columns_give_one_answer(servers, kind: str) -> None:
    rows = ROWS[40:50]
    listed = post(servers[kind], rows).json()
    columns = post(servers[kind], {"columns": {name: [row[name] for row in rows] for name in FEATURES}}).json()
    single = [post(servers[kind], row).json() for row in rows]
    assert listed == columns
    assert listed["predictions"] == [answer["predictions"][0] for answer in single]
    assert listed["probabilities"] == [answer["probabilities"][0] for answer in single]


def test_unseen_values_are_counted_and_other_keys_ignored(servers) -> None:
    rows = [{**ROW, "id": 1, "kind": "mid"}, {**ROW, "color": "purple", "member": "maybe", "grade": 7, "note": "x"},
            {**ROW, "color": None, "grade": "2", "member": None}, {**ROW, "grade": 2.0, "color": 3}]
    answer = post(servers["multiclass"], rows).json()
    assert answer["unseen"] == {"color": 2, "member": 1, "grade": 1}
    assert answer["ignored_columns"] == ["id", "kind", "note"]
    assert post(servers["multiclass"], ROW).json()["unseen"] == {}


def v2_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows as V2 input tensors, one per feature."""
    numbers = ("size", "count")
    return {"inputs": [{"name": name, "shape": [len(rows)], "datatype": "FP64" if name in numbers else "BYTES",
                        "data": [row[name] for row in rows]} for name in FEATURES]}


def test_parallel_requests_small_and_large_are_answered_in_order(models, servers) -> None:
    """Bodies up to 32 KiB are predicted on the event loop, larger ones on worker threads (through the
    prediction slots): 40 requests of 1 to 1,500 rows, as records, columns and V2 tensors, sent 16 at a
    time, each answered bit for bit as the predictor answers its rows, in their order."""
    _, directory = models["multiclass"]
    predictor = Predictor.load(directory)
    pool = [{name: (None if pd.isna(value) else value) for name, value in record.items()}
            for record in table(1500, seed=5)[FEATURES].astype(object).to_dict("records")]
    starts = np.random.default_rng(0).integers(0, 1500, 40)
    requests = []
    for index, start in enumerate(starts):
        size = (1, 1000, 3, 1500)[index % 4]
        rows = pool[min(start, 1500 - size):][:size]
        form = ("records", "columns", "v2")[index % 3]
        body = {"records": rows, "columns": {"columns": {name: [row[name] for row in rows] for name in FEATURES}},
                "v2": v2_body(rows)}[form]
        requests.append((rows, form, body))
    sizes = [len(json.dumps(body, separators=(",", ":"))) for *_, body in requests]  # as httpx sends them
    assert sum(size > 32 * 1024 for size in sizes) == 20  # half of them through the thread pool
    url = servers["multiclass"].url

    def send(request: tuple[Any, str, Any]) -> httpx.Response:
        path = f"/v2/models/{directory.name}/infer" if request[1] == "v2" else "/predict"
        return client.post(url + path, json=request[2])

    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=16)) as client, ThreadPoolExecutor(16) as threads:
        answers = list(threads.map(send, requests))
    for (rows, form, _), answer in zip(requests, answers):
        assert answer.status_code == 200, answer.text
        probabilities, labels = predictor.predict_proba(rows), predictor.predict(rows).tolist()
        if form == "v2":
            label, flat = answer.json()["outputs"]
            assert (label["data"], flat["data"]) == (labels, probabilities.ravel().tolist()), (form, len(rows))
        else:
            got = answer.json()
            assert (got["predictions"], got["probabilities"]) == (labels, probabilities.tolist()), (form, len(rows))


def test_a_lone_surrogate_is_a_422_and_the_connection_lives_on(servers) -> None:
    """A lone surrogate (the JSON escape \\ud800) is valid JSON but no UTF-8 text: it was a 500, after which
    uvicorn closed the connection."""
    url = servers["multiclass"].url
    with httpx.Client(timeout=30) as client:
        bad = client.post(url + "/predict", content=json.dumps([ROW, {**ROW, "color": "\ud800"}]).encode(),
                          headers={"content-type": "application/json"})
        assert bad.status_code == 422 and (bad.json()["errors"][0]["field"], bad.json()["errors"][0]["row"]) == (
            "color", 2)
        assert client.post(url + "/predict", json=ROW).status_code == 200  # the same keep-alive connection


# ---- the other routes ----------------------------------------------------------------------
def test_health_ready_and_metadata(models, servers) -> None:
    model, directory = models["multiclass"]
    server = servers["multiclass"]
    assert httpx.get(server.url + "/health").json() == {"status": "alive"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready"}
    metadata = httpx.get(server.url + "/metadata").json()
    assert (metadata["task"], metadata["target"], metadata["classes"]) == ("multiclass", "kind", list(model.classes))
    vocabularies = {t.name: getattr(t, "vocabulary", getattr(t, "values", None)) for t in model.preprocessor.transforms}
    assert metadata["features"] == [
        {"name": f.name, "type": f.type, **({} if f.type == "number" else {"values": vocabularies[f.name]})}
        for f in model.schema.features]
    assert metadata["metrics"] == json.loads(json.dumps(model.metrics))
    assert metadata["parity"]["ok"] and metadata["parity"]["max_difference"] <= 1e-5
    assert metadata["versions"]["served_with"]["keel"] == keel.__version__
    assert metadata["limits"] == {"max_batch": 10_000, "max_body": 16 * 1024 * 1024}
    assert metadata["model"] == directory.name


def test_head_probes_are_answered_like_get_without_a_body(servers) -> None:
    """Load balancers probe with HEAD."""
    for path in ("/health", "/ready", "/v2/health/ready"):
        answer = httpx.head(servers["binary"].url + path)
        assert (answer.status_code, answer.content, answer.headers["content-type"]) == (200, b"", "application/json")


def test_the_openapi_document_is_built_from_the_models_features(servers) -> None:
    server = servers["multiclass"]
    document = httpx.get(server.url + "/openapi.json").json()
    record = document["components"]["schemas"]["Record"]
    assert record["required"] == FEATURES
    assert record["properties"]["size"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert set(record["properties"]["color"]["examples"]) == {"red", "green", "blue"}
    assert sorted(record["properties"]["grade"]["examples"]) == ["1", "2", "3"]  # spelled, in training frequency order
    assert document["components"]["schemas"]["PredictResponse"]["properties"]["predictions"]["items"]["enum"] == [
        "high", "low", "mid"]
    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_v2_inference_protocol(models, servers) -> None:
    model, directory = models["binary"]
    server = servers["binary"]
    rows = ROWS[:5]
    inputs = [{"name": name, "shape": [5], "datatype": "FP64" if name in ("size", "count") else "BYTES",
               "data": [row[name] for row in rows]} for name in FEATURES]
    answer = post(server, {"id": "r1", "inputs": inputs}, f"/v2/models/{directory.name}/infer").json()
    label, probabilities = answer["outputs"]
    assert answer["id"] == "r1" and answer["model_name"] == directory.name
    assert label == {"name": "label", "datatype": "INT64", "shape": [5],
                     "data": post(server, rows).json()["predictions"]}
    assert probabilities["shape"] == [5, 2] and probabilities["datatype"] == "FP32"
    assert np.abs(np.array(probabilities["data"]).reshape(5, 2) - keel_says(model, rows, proba=True)).max() <= 1e-5
    metadata = httpx.get(f"{server.url}/v2/models/{directory.name}").json()
    assert [item["name"] for item in metadata["inputs"]] == FEATURES
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    only_label = post(server, {"inputs": inputs, "outputs": [{"name": "label"}]}, f"/v2/models/{directory.name}/infer")
    assert [output["name"] for output in only_label.json()["outputs"]] == ["label"]


def test_access_log_lines_are_json_on_stderr(servers) -> None:
    server = servers["binary"]

    def access_lines() -> tuple[list[dict], list[dict]]:  # whole lines only: one may be half written
        text = server.log.read_text()
        lines = [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]  # every one JSON, uvicorn's too
        return lines, [line for line in lines if line["logger"] == "keel.serve.access"]

    before = len(access_lines()[1])  # the module's server: earlier tests' requests are logged too
    httpx.get(server.url + "/health")
    post(server, {"nope": 1})
    # The server writes a request's line after sending its response: wait for both (a fixed 0.1 s could miss it on
    # a loaded machine, the flaky-test audit found, s17).
    deadline = time.monotonic() + 10
    lines, access = access_lines()
    while (len(access) < before + 2 or [line["path"] for line in access[-2:]] != ["/health", "/predict"]) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
        lines, access = access_lines()
    assert {"method", "path", "status", "latency_ms"} <= set(access[-1])
    assert (access[-2]["method"], access[-2]["path"], access[-2]["status"]) == ("GET", "/health", 200)
    assert (access[-1]["method"], access[-1]["path"], access[-1]["status"]) == ("POST", "/predict", 422)
    assert access[-1]["latency_ms"] > 0
    assert any("http://127.0.0.1:" in line.get("message", "") for line in lines)  # loopback unless --host says


# ---- bad requests --------------------------------------------------------------------------
def raw(server: Server, content: bytes, content_type: str | None = "application/json", path: str = "/predict",
        method: str = "POST") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.request(method, server.url + path, content=content, headers=headers, timeout=30)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


BAD_REQUESTS = [  # (name, content, content type, status, field named, words in the detail)
    ("invalid JSON", b'{"size": 1,', "application/json", 400, None, "not valid JSON"),
    ("empty body", b"", "application/json", 400, None, "no body"),
    ("wrong content type", body(ROW), "text/plain", 415, "content-type", "Content-Type"),
    ("form content type", b"size=1", "application/x-www-form-urlencoded", 415, "content-type", "application/json"),
    ("missing feature", body({k: v for k, v in ROW.items() if k != "color"}), "application/json", 422, "color",
     "lacks the feature 'color'"),
    ("missing feature in a row", body([ROW, {k: v for k, v in ROW.items() if k != "size"}]), "application/json", 422,
     "size", "row 2 lacks"),
    ("mistyped number", body({**ROW, "size": "abc"}), "application/json", 422, "size", "takes a number"),
    ("bool as number", body([ROW, {**ROW, "count": True}]), "application/json", 422, "count", "row 2"),
    ("object as category", body({**ROW, "color": {"a": 1}}), "application/json", 422, "color", "takes one value"),
    ("list as category", body({**ROW, "color": ["red"]}), "application/json", 422, "color", "a list"),
    ("NaN", b'{"size": NaN, "count": 1, "member": "no", "color": "red", "grade": 1}', "application/json", 422, "size",
     "NaN"),
    ("Infinity", b'[{"size": 1, "count": -Infinity, "member": "no", "color": "red", "grade": 1}]', "application/json",
     422, "count", "Infinity"),
    ("NaN as category", b'{"size": 1, "count": 1, "member": "no", "color": NaN, "grade": 1}', "application/json", 422,
     "color", "NaN"),
    ("huge integer", b'{"size": 1' + b"0" * 400 + b', "count": 1, "member": "no", "color": "red", "grade": 1}',
     "application/json", 422, "size", "float64"),
    ("integer of 5,000 digits", b'[{"size": 1' + b"0" * 4999 + b', "count": 1, "member": "no", "color": "red", '
     b'"grade": 1}]', "application/json", 422, "size", "row 1: feature 'size' takes a number, or null when missing; "
     "got an integer of 5000 digits. Numbers must fit a float64"),
    ("number beyond float64", b'{"size": 1e400, "count": 1, "member": "no", "color": "red", "grade": 1}',
     "application/json", 422, "size", "got a number above 1.8e308, beyond float64's range"),
    ("lone surrogate", b'{"size": 1, "count": 1, "member": "no", "color": "\\udfff", "grade": 1}', "application/json",
     422, "color", "not valid Unicode text"),
    ("empty batch", body([]), "application/json", 422, None, "the batch has 0 rows; send at least one row"),
    ("empty columns", body({"columns": {name: [] for name in FEATURES}}), "application/json", 422, "size",
     "column 'size' has 0 value(s)"),
    ("batch over --max-batch", body([ROW] * 65), "application/json", 422, None, "at most 64"),
    ("columns over --max-batch", body({"columns": {name: [ROW[name]] * 65 for name in FEATURES}}), "application/json",
     422, "size", "at most 64"),
    ("ragged columns", body({"columns": {**{name: [ROW[name]] * 3 for name in FEATURES}, "grade": [1, 2]}}),
     "application/json", 422, "grade", "has 2 value(s)"),
    ("a column that is no list", body({"columns": {**{name: [ROW[name]] for name in FEATURES}, "size": 3}}),
     "application/json", 422, "size", "list"),
    ("a key beside columns", body({"columns": {name: [ROW[name]] for name in FEATURES}, "extra": 1}),
     "application/json", 422, "extra", "only the key 'columns'"),
    ("a string body", body("hello"), "application/json", 422, None, "one record"),
    ("a row that is no object", body([ROW, 5]), "application/json", 422, None, "row 2"),
    ("body over --max-body", body([{**ROW, "pad": "x" * 70_000}]), "application/json", 413, None, "--max-body"),
    ("deep nesting", b"[" * 20_000 + b"]" * 20_000, "application/json", 400, None, "nested too deeply"),
    ("not UTF-8", b'{"size": "\xff"}', "application/json", 400, None, "not UTF-8"),
    # UTF-16 with its byte-order mark: Python's reader of bytes guessed it and answered 200 (a user's trial).
    ("UTF-16", json.dumps(ROW).encode("utf-16"), "application/json", 400, None, "not UTF-8"),
    ("UTF-16 without its mark", json.dumps(ROW).encode("utf-16-le"), "application/json", 400, None, "UTF-16"),
]


def test_numbers_far_beyond_the_training_range_get_keels_finite_answer(servers) -> None:
    # Scaled numbers are clipped to +-1e12 in keel and in the export alike (they overflowed the network
    # to NaN, a 422, before): the server answers what keel answers.
    answer = raw(servers["regression"], body({**ROW, "size": 1e308, "count": -1e308}), "application/json")
    assert answer.status_code == 200, answer.text
    assert all(math.isfinite(value) for value in answer.json()["predictions"])


@pytest.mark.parametrize("name, content, content_type, status, field, words", BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_naming_the_field(servers, name: str, content: bytes, content_type: str, status: int,
                                                 field: str | None, words: str) -> None:
    answer = raw(servers["regression"], content, content_type)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert words in error["detail"], error["detail"]
    assert error["errors"][0]["field"] == field
    if field is not None:
        assert field.lower() in error["detail"].lower()


def test_a_chunked_body_is_cut_off_at_max_body(servers) -> None:
    """Without a Content-Length the server counts while reading, and stops at --max-body."""
    chunks = iter([b"[" + b" " * 16_384] * 8)  # 128 KiB against a limit of 64 KiB
    answer = httpx.post(servers["regression"].url + "/predict", content=chunks,
                        headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and "more than 65536 bytes" in answer.json()["detail"]


def test_unknown_routes_and_methods_and_v2_mistakes_are_4xx(models, servers) -> None:
    server, name = servers["binary"], models["binary"][1].name
    assert raw(server, b"", None, "/nope", "GET").status_code == 404
    assert raw(server, b"", None, "/predict", "GET").status_code == 405
    tensor = {"name": "size", "shape": [1], "datatype": "FP64", "data": [1.0]}
    tensors = [{"name": n, "shape": [1], "datatype": "BYTES", "data": [str(ROW[n])]} for n in FEATURES[2:]]
    complete = [tensor, {"name": "count", "shape": [1], "datatype": "INT64", "data": [3]}, *tensors]
    cases = [
        ("/v2/models/other/infer", {"inputs": complete}, 404, "name"),
        (f"/v2/models/{name}/infer", {"inputs": [*complete, {**tensor, "name": "zzz"}]}, 422, "zzz"),
        (f"/v2/models/{name}/infer", {"inputs": complete[1:]}, 422, "size"),
        (f"/v2/models/{name}/infer", {"inputs": [{**tensor, "shape": [2]}, *complete[1:]]}, 422, "size"),
        (f"/v2/models/{name}/infer", {"inputs": [{**tensor, "datatype": "BYTES"}, *complete[1:]]}, 422, "size"),
        (f"/v2/models/{name}/infer", {"inputs": [{**tensor, "data": ["x"]}, *complete[1:]]}, 422, "size"),
        (f"/v2/models/{name}/infer", {"inputs": [{**tensor, "data": [{}]}, *complete[1:]]}, 422, "size"),
        (f"/v2/models/{name}/infer", {"inputs": complete, "outputs": [{"name": "value"}]}, 422, "value"),
    ]
    assert post(server, {"inputs": complete}, f"/v2/models/{name}/infer").status_code == 200
    for path, request, status, field in cases:
        answer = post(server, request, path)
        assert (answer.status_code, answer.json()["errors"][0]["field"]) == (status, field), answer.text


# ---- processes: no torch, SIGTERM, workers, the CLI ----------------------------------------
def test_the_server_process_loads_neither_torch_nor_pandas(servers) -> None:
    for server in servers.values():
        libraries = mapped_libraries(server.process.pid)
        assert "libtorch" not in libraries and "/pandas/" not in libraries
        assert "onnxruntime" in libraries  # the check sees what a process loads


WRAPPER = """
import atexit, json, runpy, sys
report = sys.argv.pop(1)
atexit.register(lambda: open(report, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "keel.serve"
runpy.run_module("keel.serve", run_name="__main__", alter_sys=True)
"""


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(models, tmp_path) -> None:
    """Run through a wrapper that writes sys.modules at exit: the process that served never imported torch."""
    model, directory = models["multiclass"]
    port, modules = free_port(), tmp_path / "modules.json"
    server = start([sys.executable, "-c", WRAPPER, str(modules), str(directory), "--port", str(port)],
                   tmp_path / "server.log", port)
    content = json.dumps(ROWS[:5]).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head + content[:10])  # the request is in flight: its body is still coming
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None, "the server quit with a request in flight"
        with pytest.raises(OSError):  # but it takes no new connections
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        connection.sendall(content[10:])
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    status, _, rest = response.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK", response[:300]
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert np.abs(np.array(answer["probabilities"]) - keel_says(model, ROWS[:5], proba=True)).max() <= 1e-5
    assert server.process.wait(20) == 0
    loaded = json.loads(modules.read_text())
    assert "keel.serve.app" in loaded and "onnxruntime" in loaded and "fastapi" in loaded
    assert [name for name in loaded if name.split(".")[0] in HEAVY or name.startswith(HEAVY)] == []


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_workers_run_as_processes_without_torch(models, tmp_path) -> None:
    directory = models["binary"][1]
    server = serve(directory, tmp_path, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = [child for child in children(server.process.pid)
                       if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text()]
            ready = [line for line in server.lines() if '"message": "ready"' in line]
            if len(workers) == 2 and len(ready) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2 and len(ready) == 2, server.log.read_text()
        for worker in workers:
            assert "libtorch" not in mapped_libraries(worker) and "/pandas/" not in mapped_libraries(worker)
        answers = [post(server, ROWS[:3]).json()["predictions"] for _ in range(6)]
        assert all(answer == answers[0] for answer in answers)
    finally:
        assert server.stop() == 0


def test_keel_serve_exports_a_model_without_onnx_then_serves_it_without_torch(models, tmp_path) -> None:
    model, _ = models["binary"]
    directory = tmp_path / "unexported"
    model.save(directory)
    assert not (directory / "model.onnx").exists()
    port = free_port()
    server = start([str(KEEL_CLI), "serve", str(directory), "--port", str(port), "--max-batch", "100"],
                   tmp_path / "cli.log", port)
    try:
        assert (directory / "model.onnx").is_file()
        assert "exported" in server.log.read_text()
        libraries = mapped_libraries(server.process.pid)  # the CLI's own process, after exec
        assert "libtorch" not in libraries and "/pandas/" not in libraries
        assert post(server, ROWS[:4]).json()["predictions"] == keel_says(model, ROWS[:4]).tolist()
        assert httpx.get(server.url + "/metadata").json()["limits"]["max_batch"] == 100
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("command, words", [
    (["-m", "keel.serve", "{unexported}"], "keel export"),
    (["-m", "keel.serve", "{exported}", "--workers", "0"], "--workers must be a whole number from 1"),
    (["-m", "keel.serve", "{exported}", "--max-body", "10"], "--max-body"),
    (["-m", "keel.serve", "{missing}"], "no model at"),
    (["-m", "keel.serve", "{exported}/model.onnx"], "pass the model directory"),
    (["-m", "keel.serve", "{exported}", "--workers", "two"], "argument --workers: invalid int value: 'two'; run "),
    (["-m", "keel.serve", "{exported}", "--bogus"], "unrecognized arguments: --bogus"),
    (["-m", "keel.serve", "{exported}", "--host", "192.0.2.1"], "--host '192.0.2.1' is no address of this machine"),
])
def test_a_model_or_option_the_server_cannot_use_is_one_line_and_exit_2(models, tmp_path, command: list[str],
                                                                        words: str) -> None:
    model, exported = models["binary"]
    unexported = tmp_path / "unexported"
    model.save(unexported)
    paths = {"unexported": unexported, "exported": exported, "missing": tmp_path / "nothing"}
    arguments = [part.format(**paths) for part in command]
    result = subprocess.run([sys.executable, *arguments, "--port", str(free_port())], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr
    assert not (unexported / "model.onnx").exists()


def test_a_port_in_use_is_one_line_and_exit_2_before_the_server_says_ready(models) -> None:
    """uvicorn binds only after the start-up (which logs "ready"), then exits 3 with a bare errno."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "keel.serve", str(models["binary"][1]), "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use by another process; pick another --port."


def test_keel_serve_checks_its_options_before_exporting(models, tmp_path) -> None:
    directory = tmp_path / "unexported"
    models["binary"][0].save(directory)
    result = subprocess.run([str(KEEL_CLI), "serve", str(directory), "--port", "70000"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "--port must be a whole number from 0 to 65535" in result.stderr
    assert not (directory / "model.onnx").exists()
    # A port in use (and a host that is no address here) too: the model folder is left as it was (found by a
    # user's trial: model.onnx was written, then the port refused).
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        busy = subprocess.run([str(KEEL_CLI), "serve", str(directory), "--port", str(port)], capture_output=True,
                              text=True, timeout=120)
    assert busy.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in busy.stderr
    foreign = subprocess.run([str(KEEL_CLI), "serve", str(directory), "--host", "10.99.99.99", "--port", "8123"],
                             capture_output=True, text=True, timeout=120)
    assert foreign.returncode == 2 and "--host '10.99.99.99' is no address" in foreign.stderr
    # An int8 file that was never exported: refused before model.onnx is written (a trial saw the export first).
    int8 = subprocess.run([str(KEEL_CLI), "serve", str(directory), "--file", "model.int8.onnx", "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert int8.returncode == 2 and "has no export named model.int8.onnx" in int8.stderr
    assert "exporting it first" not in int8.stderr
    assert not (directory / "model.onnx").exists() and not (directory / "reports").exists()


# ---- fuzzing -------------------------------------------------------------------------------
# Generated cases per operation and mode; the GET routes without parameters have a single case.
FUZZ_CASES = {"POST /predict": 350, "POST /v2/models/{name}/infer": 120}
# A schema cannot say that columns have one length, nor that a number overflows the network: a
# schema-valid /predict body may get a 422 for these reasons only.
SCHEMA_BLIND = {"column", "overflow"}


def fuzz(operation: Any, mode: Any, url: str, session: Any, statuses: dict[tuple[str, str, int], int]) -> None:
    """Run ``operation``'s generated cases of ``mode`` against the server, counting answers by status."""
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi import checks

    run_checks = [not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                  checks.response_headers_conformance, checks.response_schema_conformance,
                  checks.negative_data_rejection]

    @settings(max_examples=FUZZ_CASES.get(operation.label, 100), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=30)
        key = (operation.label, mode.value, response.status_code)
        statuses[key] = statuses.get(key, 0) + 1
        case.validate_response(response, checks=run_checks)
        if mode.is_positive and operation.label == "POST /predict" and response.status_code != 200:
            assert response.json()["errors"][0]["type"] in SCHEMA_BLIND, response.text

    check()


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_answer_off_the_schema(servers) -> None:
    """Positive and negative cases for every operation of the served /openapi.json: no 5xx; every status,
    content type, header and body as documented; schema-invalid bodies rejected; schema-valid /predict
    bodies accepted unless rejected for a reason the schema cannot express."""
    import requests
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    url = servers["multiclass"].url
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    statuses: dict[tuple[str, str, int], int] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz(result.ok(), mode, url, session, statuses)
                except Unsatisfiable:  # no parameters and no body: nothing to make invalid
                    assert mode == GenerationMode.NEGATIVE
    assert sum(statuses.values()) >= 1000, statuses
    assert not [key for key in statuses if key[2] >= 500]
    assert statuses.get(("POST /predict", "positive", 200), 0) >= 50, statuses  # most valid bodies are answered
    # V2 bodies are answered only with every feature's tensor, which the document's example has
    assert statuses.get(("POST /v2/models/{name}/infer", "positive", 200), 0) >= 1, statuses
