"""keel.serve in process (httpx over ASGI): readiness, request forms, messages, the OpenAPI document.

The model has feature names that are no Python identifiers, clash with pydantic's own names, or
with the columnar form's key ("columns"), to show that the request types are built from any name.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ConfigError
from keel.export.onnx import to_onnx
from keel.runtime import Predictor
from keel.serve import ServeSettings, create_app
from keel.serve.errors import MAX_ERRORS, JsonConstant, RequestError, describe, problem
from keel.serve.logs import AccessLog, JsonFormatter
from keel.serve.payload import Payload
from keel.serve.spec import read_spec
from keel.serve.v2 import label_datatype
from tests.conftest import FAST

ODD = ["bill length (mm)", "model_config", "class", "flag", "columns"]
ROW = {"bill length (mm)": 1.5, "model_config": "b", "class": 2, "flag": True, "columns": "x"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n_rows = 80
    frame = pd.DataFrame({
        "bill length (mm)": rng.normal(0, 1, n_rows),
        "model_config": rng.choice(["a", "b", "c"], n_rows),
        "class": rng.integers(1, 4, n_rows),  # declared a category below
        "flag": rng.choice([True, False], n_rows),
        "columns": rng.choice(["x", "y"], n_rows),
    })
    frame["target"] = (frame["bill length (mm)"] + (frame["model_config"] == "a") > 0.5).astype(int)
    config = {**FAST, "training.epochs": 2, "input_features": [
        {"name": "bill length (mm)"}, {"name": "model_config"}, {"name": "class", "type": "category"},
        {"name": "flag"}, {"name": "columns"}]}
    model = keel.fit(frame, target="target", config=config, quiet=True)
    directory = tmp_path_factory.mktemp("serve-unit") / "odd-names"
    model.save(directory)
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    return directory


def call(app: Any, method: str, path: str, *, lifespan: bool = True, **options: Any) -> httpx.Response:
    """One request to the app in process; with ``lifespan`` the app's start-up (the warm-up) runs first."""
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if not lifespan:
                return await client.request(method, path, **options)
            async with app.router.lifespan_context(app):
                return await client.request(method, path, **options)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def app(model_dir: Path) -> Any:
    return create_app(ServeSettings(str(model_dir), max_batch=5))


def test_ready_is_503_until_the_warm_up_prediction_passed(app) -> None:
    before = call(app, "GET", "/ready", lifespan=False)
    assert before.status_code == 503 and before.headers["retry-after"] == "1"
    assert "warm-up" in before.json()["detail"]
    assert call(app, "POST", "/predict", json=ROW, lifespan=False).status_code == 503
    assert call(app, "GET", "/health", lifespan=False).status_code == 200  # alive all along
    assert call(app, "GET", "/ready").json() == {"status": "ready"}


def test_any_feature_name_works_in_every_form(app, model_dir: Path) -> None:
    expected = Predictor.load(model_dir).predict_proba(ROW).tolist()
    one = call(app, "POST", "/predict", json=ROW).json()
    rows = call(app, "POST", "/predict", json=[ROW, ROW]).json()
    columns = call(app, "POST", "/predict", json={"columns": {name: [value] for name, value in ROW.items()}}).json()
    assert one["probabilities"] == expected and rows["probabilities"] == expected * 2
    assert columns["probabilities"] == expected  # {"columns": {...}} alone is the columnar form, feature or not
    assert one["predictions"][0] in (0, 1) and type(one["predictions"][0]) is int
    beside = call(app, "POST", "/predict", json={"columns": {name: [value] for name, value in ROW.items()}, "id": 1})
    assert beside.status_code == 422 and "only the key 'columns'" in beside.json()["detail"]


def test_rows_wrapped_in_an_object_are_told_what_to_send(app) -> None:
    """{"rows": [...]} (another server's shape): the answer says no key is a feature and to send the list itself
    (before: it listed every feature as missing from "the record")."""
    answer = call(app, "POST", "/predict", json={"rows": [ROW]})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("the body is an object whose keys ('rows') name no feature of this "
                                              "model;") and "send the list itself" in answer.json()["detail"]
    partial = call(app, "POST", "/predict", json={"flag": ROW["flag"]})  # a feature named: the missing ones are listed
    assert partial.status_code == 422 and "name no feature" not in partial.json()["detail"]


def test_category_values_are_spelled_as_keel_spells_them(app) -> None:
    """2, 2.0 and "2" are one category; True is the binary value "True"; none of them is unseen."""
    answers = [call(app, "POST", "/predict", json={**ROW, "class": value}).json() for value in (2, 2.0, "2")]
    assert answers[0]["probabilities"] == answers[1]["probabilities"] == answers[2]["probabilities"]
    assert all(answer["unseen"] == {} for answer in answers)
    unseen = call(app, "POST", "/predict", json=[{**ROW, "class": 9}, {**ROW, "flag": "maybe", "class": "x"}]).json()
    assert unseen["unseen"] == {"class": 2, "flag": 1}


def test_messages_name_the_field_and_the_row(app) -> None:
    answer = call(app, "POST", "/predict", json=[ROW, {**ROW, "bill length (mm)": "long", "flag": [1]}])
    assert answer.status_code == 422
    problems = answer.json()["errors"]
    assert [(p["field"], p["row"], p["type"]) for p in problems] == [
        ("bill length (mm)", 2, "number"), ("flag", 2, "category")]
    assert problems[0]["message"] == ("row 2: feature 'bill length (mm)' takes a number, or null when missing; got the "
                                      'string "long".')
    assert answer.json()["detail"].startswith(problems[0]["message"])
    over = call(app, "POST", "/predict", json=[ROW] * 6).json()
    assert over["detail"] == ("the batch has 6 rows; this server takes at most 5 rows per request (its --max-batch). "
                              "Split them into smaller requests.")


def test_the_openapi_document_names_the_real_features(app) -> None:
    document = call(app, "GET", "/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert list(schemas["Record"]["properties"]) == ODD and schemas["Record"]["required"] == ODD
    assert sorted(schemas["Record"]["properties"]["model_config"]["examples"]) == ["a", "b", "c"]
    assert schemas["Columns"]["properties"]["class"]["maxItems"] == 5
    predict = document["paths"]["/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"}
    assert set(predict["responses"]) == {"200", "400", "413", "415", "422", "503"}
    name = document["paths"]["/v2/models/{name}/infer"]["post"]["parameters"][0]
    assert name["schema"]["enum"] == ["odd-names"]


def test_v2_datatypes_follow_the_classes() -> None:
    assert [label_datatype(classes) for classes in ([0, 1], [True, False], [0.5, 1], ["a", "b"], [1, "a"])] == [
        "INT64", "BOOL", "FP64", "BYTES", "BYTES"]


def test_payload_tells_the_forms_apart(app, model_dir: Path) -> None:
    predictor = Predictor.load(model_dir)
    payload = Payload(read_spec(predictor, model_dir), max_batch=10)
    record = payload.parse({**ROW, "id": 3})
    assert (record.n_rows, record.ignored) == (1, ["id"])
    assert record.columns["class"] == ["2"] and record.columns["flag"] == ["True"]
    columns = payload.parse({"columns": {**{name: [value, None] for name, value in ROW.items()}, "id": [1, 2]}})
    assert columns.n_rows == 2 and columns.columns["model_config"] == ["b", ""] and columns.ignored == ["id"]
    assert columns.columns["bill length (mm)"] == [1.5, None] and columns.columns["columns"] == ["x", ""]
    assert payload.parse(ROW).columns["columns"] == ["x"]  # the feature named "columns", in a record


def test_describe_quotes_values_briefly() -> None:
    assert describe("x" * 100).endswith('..."') and len(describe("x" * 100)) < 60
    assert describe(float("nan")) == "NaN (not a JSON number)"
    assert describe(10**400) == "an integer of about 401 digits"
    assert "about 5001 digits" in describe(10**5000)  # beyond what str() of an int allows
    assert describe(float("inf")) == "a number above 1.8e308, beyond float64's range"  # 1e400 in a body
    assert describe(JsonConstant("-Infinity")) == "-Infinity (not a JSON number)"  # the literal
    assert (describe(None), describe(True), describe({"a": 1}), describe([1, 2])) == (
        "null", "true", "an object with 1 key(s)", "a list of 2 value(s)")


@pytest.mark.parametrize("options, words", [
    ({"port": 70000}, "--port must be a whole number from 0 to 65535; got 70000"),
    ({"workers": 0}, "--workers"),
    ({"max_batch": 0}, "--max-batch"),
    ({"max_body": True}, "--max-body"),
    ({"host": ""}, "--host"),
])
def test_settings_are_checked_at_the_edge(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        ServeSettings("model", **options)


def test_settings_travel_to_worker_processes_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServeSettings("runs/m", host="0.0.0.0", port=9000, workers=3, max_batch=7, max_body=4096)
    monkeypatch.setenv("KEEL_SERVE_SETTINGS", settings.to_environment())
    assert ServeSettings.from_environment() == settings
    monkeypatch.setenv("KEEL_SERVE_SETTINGS", "{}")
    with pytest.raises(ConfigError, match="holds no server settings"):
        ServeSettings.from_environment()


def test_log_lines_are_json_with_the_records_extras() -> None:
    record = logging.LogRecord("keel.serve.access", logging.INFO, __file__, 1, "", None, None)
    record.method, record.status = "GET", 200
    line = json.loads(JsonFormatter().format(record))
    assert line["method"] == "GET" and line["status"] == 200 and line["level"] == "info" and "message" not in line
    assert line["time"].endswith("Z")


def test_the_access_log_notes_status_and_latency(caplog: pytest.LogCaptureFixture) -> None:
    async def teapot(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def go() -> None:
        transport = httpx.ASGITransport(app=AccessLog(teapot))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/brew")

    with caplog.at_level(logging.INFO, logger="keel.serve.access"):
        asyncio.run(go())
    (record,) = caplog.records
    assert (record.method, record.path, record.status) == ("GET", "/brew", 418)  # type: ignore[attr-defined]
    assert record.latency_ms >= 0  # type: ignore[attr-defined]


def test_a_bug_is_a_500_in_the_same_json_shape(model_dir: Path) -> None:
    app = create_app(ServeSettings(str(model_dir)))

    async def broken() -> None:
        raise ZeroDivisionError("a bug")

    app.add_api_route("/broken", broken)  # only on this test's own app
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/broken")

    answer = asyncio.run(go())
    assert answer.status_code == 500
    assert answer.json()["detail"].startswith("internal error (ZeroDivisionError) while answering GET /broken")


# ---- odd text and numbers -----------------------------------------------------------------
def v2_inputs(rows: list[dict[str, Any]], shape: list[int] | None = None) -> list[dict[str, Any]]:
    """One V2 tensor per feature of ``rows``."""
    return [{"name": name, "shape": shape or [len(rows)], "datatype": "FP64" if name == "bill length (mm)" else "BYTES",
             "data": [row[name] for row in rows]} for name in ODD]


def raw_post(app: Any, path: str, body: Any) -> httpx.Response:
    """A POST of ``body`` as json.dumps writes it: lone surrogates become \\ud800 escapes (valid JSON)."""
    return call(app, "POST", path, content=json.dumps(body).encode(), headers=JSON)


@pytest.mark.parametrize("form, field, row", [
    ("record", "model_config", 1), ("rows", "flag", 2), ("columns", "class", 2), ("v2", "columns", 2)])
def test_a_lone_surrogate_in_a_value_is_a_422_naming_field_and_row(app, model_dir: Path, form: str, field: str,
                                                                  row: int) -> None:
    """ONNX Runtime cannot encode "\\ud800" (a 500 once, which also closed the connection)."""
    bad = [ROW] * (row - 1) + [{**ROW, field: "x\ud800" if row == 2 else "\ud800"}]
    body: Any = {"record": bad[0], "rows": bad, "columns": {"columns": {n: [r[n] for r in bad] for n in ODD}},
                 "v2": {"inputs": v2_inputs(bad)}}[form]
    answer = raw_post(app, f"/v2/models/{model_dir.name}/infer" if form == "v2" else "/predict", body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert (error["field"], error["row"]) == (field, row)
    assert "not valid Unicode text" in error["message"] and "send UTF-8" in error["message"]
    assert raw_post(app, "/predict", {**ROW, "model_config": "\U0001F600 \u00e9"}).status_code == 200  # real text


@pytest.mark.parametrize("body, words", [
    ({**ROW, "\udfff": 1}, "the record has the key"), ([ROW, {**ROW, "\udfff": 1}], "row 2 has the key"),
    ({"columns": {**{name: [value] for name, value in ROW.items()}, "\udfff": [1]}}, "'columns' has the key")])
def test_a_lone_surrogate_in_an_ignored_key_is_named_as_such(app, body: Any, words: str) -> None:
    answer = raw_post(app, "/predict", body)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert words in detail and "not valid Unicode text" in detail and "must be an object" not in detail, detail


@pytest.mark.parametrize("number, words", [
    ("1" * 5000, "got an integer of 5000 digits. Numbers must fit a float64"),
    ("-1e400", "got a number below -1.8e308, beyond float64's range"),
    ("Infinity", "got Infinity (not a JSON number). Send null for a missing value."),
])
def test_numbers_beyond_float64_say_so(app, number: str, words: str) -> None:
    content = json.dumps([ROW, ROW]).replace('"bill length (mm)": 1.5', f'"bill length (mm)": {number}', 1)
    answer = call(app, "POST", "/predict", content=content.encode(), headers=JSON)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "bill length (mm)" and answer.json()["errors"][0]["row"] == 1
    assert words in answer.json()["detail"], answer.json()["detail"]


def test_the_detail_counts_the_problems_errors_lists() -> None:
    many = json.loads(RequestError(422, [problem(f"p{index}", "number") for index in range(30)]).body())
    assert len(many["errors"]) == MAX_ERRORS
    assert many["detail"] == "p0 (29 more problem(s); 'errors' lists the first 20.)"
    few = json.loads(RequestError(422, [problem(f"p{index}", "number") for index in range(3)]).body())
    assert len(few["errors"]) == 3 and few["detail"] == "p0 (2 more problem(s) listed in 'errors'.)"


def test_head_probes_answer_like_get(app) -> None:
    """Load balancers probe with HEAD."""
    assert call(app, "HEAD", "/ready", lifespan=False).status_code == 503
    for path in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):
        assert call(app, "HEAD", path).status_code == 200, path
    assert "head" not in call(app, "GET", "/openapi.json").json()["paths"]["/health"]  # the GET documents it


# ---- the V2 protocol ----------------------------------------------------------------------
def test_v2_answers_follow_the_documented_schema(app, model_dir: Path) -> None:
    """The document's own example is answered, and every answer validates against InferResponse."""
    import jsonschema_rs  # the validator Schemathesis itself runs

    path = f"/v2/models/{model_dir.name}/infer"
    document = call(app, "GET", "/openapi.json").json()
    validator = jsonschema_rs.validator_for(document["components"]["schemas"]["InferResponse"])
    example = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"][
        "example"]
    rows = [ROW, {**ROW, "model_config": "zzz", "class": 9}, {**ROW, "bill length (mm)": None}]
    expected = Predictor.load(model_dir).predict_proba(rows)
    answers = {"example": raw_post(app, path, example), "[n]": raw_post(app, path, {"inputs": v2_inputs(rows)}),
               "[n, 1]": raw_post(app, path, {"inputs": v2_inputs(rows, [3, 1]), "id": "7"})}
    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.text)
        validator.validate(answer.json())
    for name in ("[n]", "[n, 1]"):
        label, probabilities = answers[name].json()["outputs"]
        assert probabilities["shape"] == [3, 2] and probabilities["data"] == expected.ravel().tolist()  # row order
        assert label["data"] == expected.argmax(axis=1).tolist()  # classes [0, 1]
        assert answers[name].json()["parameters"] == {"unseen": {"model_config": 1, "class": 1}}
    assert answers["[n, 1]"].json()["id"] == "7"
    assert "parameters" not in answers["example"].json()  # no unseen value, no parameters


def test_v2_takes_at_most_max_batch_rows(app, model_dir: Path) -> None:
    answer = raw_post(app, f"/v2/models/{model_dir.name}/infer", {"inputs": v2_inputs([ROW] * 6)})
    assert answer.status_code == 422 and "at most 5" in answer.json()["detail"]


@pytest.mark.parametrize("name, value, words", [
    ("bill length (mm)", [1.5], "input 'bill length (mm)' takes numbers"),
    ("model_config", {"a": 1}, "input 'model_config' takes strings"),
    ("bill length (mm)", "1" * 5000, "an integer of 5000 digits"),
])
def test_v2_element_errors_name_what_the_input_takes(app, model_dir: Path, name: str, value: Any,
                                                     words: str) -> None:
    inputs = v2_inputs([ROW])
    tensor = next(tensor for tensor in inputs if tensor["name"] == name)
    tensor["data"] = ["HUGE"] if isinstance(value, str) else [value]
    content = json.dumps({"inputs": inputs}).replace('"HUGE"', value if isinstance(value, str) else '"HUGE"')
    answer = call(app, "POST", f"/v2/models/{model_dir.name}/infer", content=content.encode(), headers=JSON)
    assert answer.status_code == 422
    error = answer.json()["errors"][0]
    assert (error["field"], error["row"]) == (name, 1) and words in error["message"], error["message"]
    assert "valid string" not in answer.json()["detail"]  # no pydantic union member's text


def test_classes_of_mixed_types_are_answered_as_model_and_predictor_give_them(tmp_path: Path) -> None:
    """[1, "yes"]: the labels in their own JSON types, as Model.predict and Predictor.predict give them."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 80), "y": rng.choice(["a", "b"], 80)})
    frame["label"] = pd.Series(np.where(frame["x"] > 0, "yes", "1"), dtype=object).map(lambda v: 1 if v == "1" else v)
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 2}, quiet=True)
    model.save(tmp_path / "mixed")
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    rows = frame[["x", "y"]].iloc[:30].to_dict("records")
    answer = call(create_app(ServeSettings(str(tmp_path / "mixed"))), "POST", "/predict", json=rows).json()
    assert answer["classes"] == [1, "yes"]
    assert set(answer["predictions"]) == {1, "yes"}  # both classes, so both types are checked
    assert answer["predictions"] == model.predict(pd.DataFrame(rows)).tolist()
    assert answer["predictions"] == Predictor.load(tmp_path / "mixed").predict(rows).tolist()


def test_a_utf8_body_with_a_byte_order_mark_is_still_read(app) -> None:
    """UTF-8 is what the API takes, a byte-order mark included (as before); UTF-16 is refused (test_serve)."""
    answer = call(app, "POST", "/predict", content=b"\xef\xbb\xbf" + json.dumps(ROW).encode(),
                  headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
