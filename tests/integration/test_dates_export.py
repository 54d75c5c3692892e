"""A model with date columns exported to ONNX: the graph takes the dates apart as keel does, and the
runtime and the server take ISO 8601 text, datetimes and seconds for them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

import keel
from keel.data.values import to_seconds
from keel.errors import DataError, ExportError
from keel.export.module import InferenceModule
from keel.export.onnx import to_onnx
from keel.export.tflite import to_tflite
from keel.runtime import Predictor
from keel.serve import ServeSettings, create_app
from tests.conftest import FAST


def dated_table(n_rows: int = 200, seed: int = 0, *, start: str = "2023-03-01", zone: str = "America/New_York",
                missing: int = 12, amount: bool = True) -> pd.DataFrame:
    """A datetime in a time zone (hours matter; from ``start``, over 500 days, so across DST changes) and
    a plain date, each with ``missing`` missing values; the label depends on the hour and the month, the
    ``amount`` (when asked for) on the elapsed time."""
    rng = np.random.default_rng(seed)
    stamp = pd.Timestamp(start, tz=zone) + pd.to_timedelta(rng.integers(0, 500 * 24 * 60, n_rows), unit="min")
    day = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n_rows), unit="D")
    size = rng.normal(0, 1, n_rows)
    frame = pd.DataFrame({"size": size, "color": rng.choice(["red", "blue", "green"], n_rows),
                          "stamp": stamp, "day": day})
    score = size + (stamp.hour >= 12) + (day.month.to_numpy() > 6)
    frame["kind"] = np.where(score > 1.5, "high", np.where(score < 0.5, "low", "mid"))
    if amount:
        frame["amount"] = 2 * size + (day - day.min()).days.to_numpy() / 300 + rng.normal(0, 0.1, n_rows)
    frame.loc[rng.choice(n_rows, missing, replace=False), "stamp"] = pd.NaT
    frame.loc[rng.choice(n_rows, missing, replace=False), "day"] = pd.NaT
    return frame


FEATURES = ["size", "color", "stamp", "day"]


def check_rows() -> pd.DataFrame:
    """Unseen rows: other dates, missing ones, and dates far outside the training years."""
    frame = dated_table(60, seed=1)[FEATURES].copy()
    frame["stamp"] = frame["stamp"].astype(object)
    frame.loc[0, "stamp"] = pd.Timestamp("2999-12-31 23:59", tz="UTC")
    frame.loc[1, "stamp"] = pd.Timestamp("1901-01-01 00:30", tz="UTC")
    frame.loc[2, "day"] = pd.Timestamp("2200-06-15")
    frame["stamp"] = pd.to_datetime(frame["stamp"], utc=True)
    return frame


def exported_classifier(frame: pd.DataFrame, directory: Path) -> tuple[keel.Model, Path]:
    """A fast classifier of ``kind`` from FEATURES, saved to ``directory`` with its ONNX export."""
    model = keel.fit(frame[[*FEATURES, "kind"]], target="kind", config={**FAST, "training.epochs": 3}, quiet=True)
    model.save(directory)
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    return model, directory


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    return exported_classifier(dated_table(), tmp_path_factory.mktemp("dates") / "classifier")


def test_the_graph_takes_dates_as_double_seconds_and_says_so(classifier) -> None:
    import onnx
    import onnxruntime as ort

    model, directory = classifier
    proto = onnx.load(str(directory / "model.onnx"))
    session = ort.InferenceSession(proto.SerializeToString())
    inputs = {item.name: item.type for item in session.get_inputs()}
    assert inputs == {"size": "tensor(double)", "stamp": "tensor(double)", "day": "tensor(double)",
                      "color": "tensor(string)"}
    metadata = {item.key: item.value for item in proto.metadata_props}
    features = {item["name"]: (item["type"], item["input"]) for item in json.loads(metadata["keel.features"])}
    assert features["stamp"] == features["day"] == ("date", "double")
    assert metadata["keel.export_format"] == "3" and "seconds since 1970-01-01 UTC" in metadata["keel.missing"]
    hours = {t.name: t.hour for t in model.preprocessor.transforms if t.kind == "date"}
    assert hours == {"stamp": True, "day": False}


def test_onnx_matches_keel_on_dates_missing_far_and_in_time_zones(classifier) -> None:
    model, directory = classifier
    predictor = Predictor.load(directory)
    rows = check_rows()
    own = model.predict_proba(rows)
    exported = predictor.predict_proba(rows)
    assert np.abs(exported - own)[3:].max() < 1e-6
    # Dates centuries away are thousands of spreads out: the float32 network's rounding grows with them.
    assert np.abs(exported - own)[:3].max() < 1e-5 and np.isfinite(exported).all()
    # The same instants written in another zone, as ISO text, as datetimes and as seconds.
    shifted = rows.assign(stamp=rows["stamp"].dt.tz_convert("Asia/Kolkata"))
    iso = {name: [None if pd.isna(v) else v.isoformat() if isinstance(v, pd.Timestamp) else v for v in shifted[name]]
           for name in FEATURES}
    seconds = {**iso, "stamp": [None if pd.isna(v) else v.timestamp() for v in rows["stamp"]]}
    python = [{name: (None if pd.isna(v) else v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
               for name, v in record.items()} for record in shifted.astype(object).to_dict("records")]
    for form in (shifted, iso, seconds, python):
        np.testing.assert_allclose(predictor.predict_proba(form), exported, rtol=0, atol=1e-7)
    np.testing.assert_allclose(model.predict_proba(pd.DataFrame(iso)), own, rtol=0, atol=1e-12)


def test_the_module_computes_the_date_columns_keel_computes_bit_for_bit(classifier) -> None:
    model = classifier[0]
    rows = check_rows()
    module = InferenceModule(model)
    seconds = np.stack([to_seconds(rows[name], column=name) for name in ("stamp", "day")], axis=1)
    with torch.no_grad():
        graph = module._dates(torch.from_numpy(seconds)).numpy()
    columns = model.preprocessor.feature_columns()
    own = model.preprocessor.transform(rows).numeric
    np.testing.assert_array_equal(graph, own[:, columns["stamp"][0] + columns["day"][0]])


def test_regression_values_match_in_target_units(tmp_path) -> None:
    model = keel.fit(dated_table()[[*FEATURES, "amount"]], target="amount", config={**FAST, "training.epochs": 3},
                     quiet=True)
    (tmp_path / "r.onnx").write_bytes(to_onnx(model).SerializeToString())
    rows = check_rows()
    exported, own = Predictor.load(tmp_path / "r.onnx").predict(rows), model.predict(rows)
    assert np.abs(exported - own)[3:].max() / model.target_encoder.std < 1e-5
    # The far dates (rows 0-2) predict values hundreds of spreads out: equal to float32's precision.
    np.testing.assert_allclose(exported[:3], own[:3], rtol=2e-6)


def test_keel_export_checks_parity_on_synthetic_dates(tmp_path) -> None:
    model = keel.fit(dated_table()[[*FEATURES, "kind"]], target="kind", config={**FAST, "training.epochs": 3},
                     quiet=True)
    model.save(tmp_path / "m")
    report = model.export()
    assert report.parity["ok"] and report.parity["source"] == "synthetic" and report.parity["max_difference"] < 1e-6
    rows = check_rows()
    assert np.abs(Predictor.load(tmp_path / "m").predict_proba(rows) - model.predict_proba(rows))[3:].max() < 1e-6


def test_the_runtime_names_the_row_of_a_date_it_cannot_read(classifier) -> None:
    predictor = Predictor.load(classifier[1])
    row = {"size": 0.1, "color": "red", "stamp": "2024-02-29T13:45:00Z", "day": dt.date(2024, 2, 29)}
    assert predictor.predict_proba(row).shape == (1, 3)
    with pytest.raises(DataError, match=r"column 'day' holds dates, but row 2 has the value 'next week'"):
        predictor.predict([row, {**row, "day": "next week"}])
    with pytest.raises(DataError, match="column 'stamp' row 1 holds a value of type bool"):
        predictor.predict({**row, "stamp": True})


def test_tflite_refuses_date_columns_by_name(classifier) -> None:
    with pytest.raises(ExportError, match=r"date column\(s\) \['stamp', 'day'\].*Export to ONNX"):
        to_tflite(classifier[0])
    with pytest.raises(ExportError, match="need float64 inputs"):
        InferenceModule(classifier[0], number_dtype=torch.float32)


def call(app: Any, method: str, path: str, **options: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, **options)

    return asyncio.run(go())


def test_the_server_takes_iso_text_and_seconds_and_names_a_bad_date(classifier) -> None:
    model, directory = classifier
    app = create_app(ServeSettings(str(directory), max_batch=10))
    rows = [{"size": 0.3, "color": "blue", "stamp": "2024-02-29T13:45:00-05:00", "day": "2021-07-04"},
            {"size": -1.0, "color": "green", "stamp": 1709232300, "day": None}]
    answer = call(app, "POST", "/predict", json=rows)
    assert answer.status_code == 200 and answer.json()["unseen"] == {}
    frame = pd.DataFrame({**{k: [r[k] for r in rows] for k in ("size", "color", "day")},
                          "stamp": pd.to_datetime(["2024-02-29T18:45:00Z"] * 2, utc=True)})
    np.testing.assert_allclose(answer.json()["probabilities"], model.predict_proba(frame), rtol=0, atol=1e-6)
    v2 = call(app, "POST", "/v2/models/classifier/infer", json={"inputs": [
        {"name": "size", "shape": [1], "datatype": "FP64", "data": [0.3]},
        {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["blue"]},
        {"name": "stamp", "shape": [1], "datatype": "BYTES", "data": ["2024-02-29T13:45:00-05:00"]},
        {"name": "day", "shape": [1], "datatype": "BYTES", "data": ["2021-07-04"]}]})
    assert v2.status_code == 200
    assert v2.json()["outputs"][1]["data"] == pytest.approx(answer.json()["probabilities"][0], abs=1e-7)
    bad = call(app, "POST", "/predict", json=[rows[0], {**rows[1], "day": "31/12/2021"}])
    assert bad.status_code == 422
    assert "column 'day' holds dates, but row 2 has the value '31/12/2021'" in bad.json()["detail"]
    wrong = call(app, "POST", "/predict", json={**rows[0], "stamp": [2024]})
    assert wrong.status_code == 422 and "takes a date: ISO 8601 text" in wrong.json()["detail"]
    described = call(app, "GET", "/metadata").json()["features"]
    assert {f["name"]: f["type"] for f in described}["stamp"] == "date"
