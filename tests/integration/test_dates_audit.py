"""Regression tests from the audit of date columns as features (issue 14, commit 3f4ca1f).

Some of these fail on purpose until the bug each names is fixed; the report lists them:
tz-aware columns in a CSV across a DST change, Parquet DATE columns, Arrow-backed timestamps,
ISO dates with a typo, streamed CSVs with a blank block, read_chunks' ``text=`` on ISO text, years
declared as dates, blank text in the runtime and JSON Lines dates. The rest guard what holds now:
the ONNX graph's date columns bit for bit, parity with PLE, quantile and bagging, the format gate,
and the V2 protocol's numeric seconds.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.config import load_config
from keel.data.io import read_chunks, read_table
from keel.data.schema import infer_schema
from keel.data.values import to_seconds
from keel.errors import ArtifactError, ConfigError, DataError, KeelWarning
from keel.nn.network import NetworkBag
from tests.conftest import FAST
from tests.integration import test_dates_export as dates_export
from tests.integration.test_dates_export import FEATURES, call, exported_classifier


def dated_table(n_rows: int = 200, seed: int = 0, zone: str = "Europe/Paris") -> pd.DataFrame:
    """A number, a category, a tz-aware datetime spanning DST changes and a plain date (both with
    missing values); the label follows the size, the hour and the month."""
    return dates_export.dated_table(n_rows, seed, start="2023-01-01", zone=zone, missing=10, amount=False)


def types_of(frame: pd.DataFrame, target: str, config: dict[str, Any] | None = None) -> dict[str, str]:
    schema = infer_schema(frame, load_config({"target": target, **(config or {})}))
    return {**{f.name: f.type for f in schema.features}, **{name: "dropped" for name in schema.dropped}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    return exported_classifier(dated_table(), tmp_path_factory.mktemp("dates-audit") / "m")


# ---- reading: columns that are dates and are not typed so ------------------------------------
def test_a_tz_aware_column_written_to_csv_across_a_dst_change_is_a_date(tmp_path) -> None:
    """pandas writes Europe/Paris times as +01:00 in winter and +02:00 in summer; the README says
    times with an offset are converted to UTC. FAILS now: the mixed offsets make
    ``pd.to_datetime(format="ISO8601")`` raise in io._iso_dates, the column stays text and is
    dropped as 'id-like'."""
    dated_table().to_csv(tmp_path / "t.csv", index=False)
    frame = read_table(tmp_path / "t.csv")
    assert types_of(frame, "kind")["stamp"] == "date"
    expected = to_seconds(dated_table()["stamp"], column="stamp")
    np.testing.assert_array_equal(to_seconds(frame["stamp"], column="stamp"), expected)


def test_a_parquet_date_column_is_a_date(tmp_path) -> None:
    """Parquet's DATE type (pyarrow date32, what pandas writes for ``.dt.date``). FAILS now: it
    arrives as an object column of datetime.date and is dropped as 'id-like'."""
    days = pd.date_range("2022-01-01", periods=100, freq="3D")
    table = pa.table({"day": pa.array(days.date, pa.date32()), "y": pa.array(np.arange(100) % 2)})
    pq.write_table(table, tmp_path / "t.parquet")
    assert types_of(read_table(tmp_path / "t.parquet"), "y")["day"] == "date"


def test_arrow_backed_timestamps_convert_or_fail_with_a_data_error() -> None:
    """``pd.read_parquet(..., dtype_backend="pyarrow")`` gives ArrowDtype timestamps, which
    infer_column_type calls dates. FAILS now: to_seconds raises numpy's UFuncTypeError."""
    stamps = pd.Series(pd.to_datetime(["2024-02-29 13:45", "2024-03-31 01:30", None], utc=True))
    arrow = stamps.astype("timestamp[us, tz=UTC][pyarrow]")
    assert types_of(pd.DataFrame({"when": arrow, "y": [0, 1, 0]}), "y")["when"] == "date"
    np.testing.assert_array_equal(to_seconds(arrow, column="when"), to_seconds(stamps, column="when"))


def test_iso_dates_with_one_typo_are_not_silently_a_category() -> None:
    """A text column of ISO dates with one bad value. FAILS now: it is typed a category (thousands
    of values) or dropped as 'id-like', with no word of the typo; numbers with typos raise a
    DataError naming the row, and dates should too (or at least be dropped with a reason that
    names the bad value)."""
    stamps = pd.Timestamp("2022-01-01") + pd.to_timedelta(np.arange(3000) % 700, unit="h")
    text = pd.Series([f"{t:%Y-%m-%d %H:%M:%S}" for t in stamps], dtype=object)
    text[4] = "2022-13-01 00:00:00"
    frame = pd.DataFrame({"when": text, "y": np.arange(3000) % 2})
    try:
        kind = types_of(frame, "y")["when"]
    except DataError as error:
        assert error.column == "when" and error.row == 5
    else:
        assert kind not in ("category", "dropped")


def test_json_lines_iso_dates_are_dates(tmp_path) -> None:
    """JSON has no date type, so JSON Lines dates are always text. FAILS now: only CSV text is
    read as datetimes (io._with_dates), so here the plain date is a 900-value category and the
    timestamp is dropped as 'id-like'."""
    dated_table(zone="UTC").to_json(tmp_path / "t.jsonl", orient="records", lines=True, date_format="iso")
    types = types_of(read_table(tmp_path / "t.jsonl"), "kind")
    assert (types["stamp"], types["day"]) == ("date", "date")


def test_read_chunks_keeps_text_columns_as_written(tmp_path) -> None:
    """``text=`` promises a column read as written in every chunk. FAILS now: _with_dates parses a
    chunk whose values are all ISO, so the same value is '2022-01-01T10:00' in one chunk and
    '2022-01-01 10:00:00' (a Timestamp) in the next; a streamed category then counts each day under
    two spellings (a vocabulary of 120 for 60 days) and split_by hashes one group two ways."""
    lines = "".join(f"2022-01-0{i % 9 + 1}T10:00,{i % 2}\n" for i in range(10))
    (tmp_path / "t.csv").write_text("when,y\n" + lines + "oops,1\n")
    for chunk in read_chunks(tmp_path / "t.csv", rows=5, text=["when"]):
        assert not pd.api.types.is_datetime64_any_dtype(chunk["when"].dtype)
        assert chunk["when"].iloc[0] in {"oops", *(f"2022-01-0{i}T10:00" for i in range(1, 10))}


def test_a_streamed_csv_with_a_blank_block_of_dates_keeps_the_date(tmp_path) -> None:
    """Chunks where the date column is wholly blank read as float NaN; the sample concatenates
    them with datetime chunks into an object column. FAILS now: the date is dropped as 'id-like'
    in a streamed run, while the same file in memory has it as a date."""
    rng = np.random.default_rng(0)
    n_rows = 30_000
    when = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700 * 24, n_rows), unit="h")
    text = np.array([f"{t:%Y-%m-%d %H:%M:%S}" for t in when], dtype=object)
    text[10_000:20_000] = ""
    size = rng.normal(0, 1, n_rows)
    pd.DataFrame({"size": size, "when": text, "label": np.where(size + (when.month > 6) > 0.8, "a", "b")}).to_csv(
        tmp_path / "t.csv", index=False)
    assert types_of(read_table(tmp_path / "t.csv"), "label")["when"] == "date"
    model = keel.fit(tmp_path / "t.csv", target="label",
                     config={**FAST, "training.epochs": 1, "data.memory_budget": "1MiB"}, quiet=True)
    assert any("streaming" in note for note in model.notes)
    assert {f.name: f.type for f in model.schema.features}.get("when") == "date", model.schema.dropped


# ---- values: what a date means ------------------------------------------------------------------
def test_years_declared_as_a_date_are_not_silently_seconds_after_1970() -> None:
    """A column of years (2010) declared a date is read as 2010 seconds after 1970-01-01 (00:33:30
    on the first day): the model trains on elapsed seconds, and the text '2010' (2010-01-01) then
    predicts 1.5e7 spreads away (a price of 9e8 against 60). FAILS now: no warning or error."""
    rng = np.random.default_rng(0)
    built = rng.integers(1990, 2024, 120)
    frame = pd.DataFrame({"built": built, "size": rng.normal(0, 1, 120)})
    frame["price"] = (built - 1990) * 3.0 + frame["size"]
    config = {**FAST, "training.epochs": 2,
              "input_features": [{"name": "built", "type": "date"}, {"name": "size", "type": "number"}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            keel.fit(frame, target="price", config=config, quiet=True)
        except (DataError, ConfigError) as error:
            assert "seconds since 1970" in str(error)
            return
    said = [str(w.message) for w in caught if issubclass(w.category, KeelWarning) and "built" in str(w.message)]
    assert said and "seconds since 1970" in said[0]


def test_dates_a_csv_writes_as_digits_are_refused_not_read_as_seconds_of_1970(tmp_path) -> None:
    """A CSV of 20231106 (or 2023) reaches pandas as integers, which a date column takes as seconds: the
    parity audit (s17) saw it predict as 1970-08-23, silently, where a DataFrame of the same text reads
    2023-11-06. Such columns are refused, naming the column; real seconds and text pass."""
    rng = np.random.default_rng(0)
    days = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 365, 120), unit="D")
    frame = pd.DataFrame({"signup": days.strftime("%Y-%m-%d"), "size": rng.normal(0, 1, 120)})
    frame["label"] = np.where(frame["size"] > 0, "big", "small")
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1}, quiet=True)
    assert {f.name: f.type for f in model.schema.features}["signup"] == "date"
    for cell, kind in (("20231106", "without dashes"), ("2023", "years")):
        path = tmp_path / f"{cell}.csv"
        frame.head(3).assign(signup=cell).to_csv(path, index=False)
        with pytest.raises(DataError, match=f"column 'signup' holds dates.*{kind}.*would all fall in 1970"):
            model.predict(path)
    text = model.predict_proba(frame.head(3).assign(signup="20231106"))
    assert np.allclose(text, model.predict_proba(frame.head(3).assign(signup="2023-11-06")))
    seconds = frame.head(3).assign(signup=1699228800)  # 2023-11-06 as seconds: a number a date column takes
    assert np.allclose(model.predict_proba(seconds), text)
    # A model trained on seconds of 1970 itself takes any such number (the audit: 27171011 is a valid YYYYMMDD).
    early = frame.assign(signup=np.linspace(0, 31_000_000, 120).round())
    declared = {**FAST, "training.epochs": 1, "input_features": [{"name": "signup", "type": "date"}]}
    in_1970 = keel.fit(early, target="label", config=declared, quiet=True)
    assert in_1970.predict(early.head(1).assign(signup=27171011)).shape == (1,)
    with pytest.raises(DataError, match="declared a date but holds whole numbers from 20100101.*without dashes"):
        keel.fit(frame.assign(signup=20100101 + rng.integers(0, 28, 120)), target="label",
                 config={**FAST, "training.epochs": 1, "input_features": [{"name": "signup", "type": "date"}]},
                 quiet=True)


def test_blank_text_in_a_date_column_means_the_same_to_keel_and_the_runtime(exported) -> None:
    """' ' is a DataError to keel.predict and to the runtime given a DataFrame, but missing to the
    runtime given a dict or a list (and to the server). FAILS now: the runtime's scalar to_seconds
    strips before testing for missing. Numbers are a DataError in all four."""
    from keel.runtime import Predictor

    model, directory = exported
    predictor = Predictor.load(directory)
    row = {"size": 0.1, "color": "red", "stamp": " ", "day": "2021-01-01"}

    def outcome(call: Any) -> str:
        try:
            call()
        except DataError:
            return "error"
        return "missing"

    outcomes = {outcome(lambda: model.predict(pd.DataFrame([row]))), outcome(lambda: predictor.predict(row)),
                outcome(lambda: predictor.predict(pd.DataFrame([row]))), outcome(lambda: predictor.predict([row]))}
    assert len(outcomes) == 1, outcomes


# ---- export: what holds now --------------------------------------------------------------------
def test_the_onnx_graph_computes_keels_date_columns_bit_for_bit(exported) -> None:
    """The existing test compares the torch module; this runs the ONNX graph itself (through ONNX
    Runtime) on seconds at and a hair either side of midnight, far into the past and future."""
    import onnx
    import onnxruntime as ort

    model, directory = exported
    proto = onnx.load(str(directory / "model.onnx"))
    inferred = {info.name: info for info in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    for node in proto.graph.node:
        if node.op_type == "Concat" and node.output[0] in inferred:
            proto.graph.output.append(inferred[node.output[0]])
    session = ort.InferenceSession(proto.SerializeToString())
    rng = np.random.default_rng(3)
    n_rows = 4000
    stamp = rng.integers(-40_000, 40_000, n_rows) * 86400.0 + rng.choice([0.0, -1e-3, -1e-6, 1e-6, 86399.999], n_rows)
    day = rng.uniform(-3e9, 5e9, n_rows)
    day[::50] = np.nan
    outputs = session.run(None, {"size": np.zeros(n_rows), "color": np.array(["red"] * n_rows, dtype=object),
                                 "stamp": stamp, "day": day})
    columns = model.preprocessor.feature_columns()
    rows = pd.DataFrame({"size": 0.0, "color": "red", "stamp": stamp, "day": day})
    want = model.preprocessor.transform(rows).numeric[:, columns["stamp"][0] + columns["day"][0]]
    blocks = [output for output in outputs if output.ndim == 2 and output.shape == want.shape]
    assert blocks, [output.shape for output in outputs]
    assert any(np.array_equal(block.astype(np.float32), want) for block in blocks)


@pytest.mark.parametrize("preset", ["balanced", "best"])
def test_parity_with_dates_under_quantile_ple_ensembles_and_bagging(preset, tmp_path) -> None:
    """The README measures parity with dates for every preset; the tests ran only fast."""
    from keel.runtime import Predictor

    config = {"preset": preset, "model.hidden": [16], "model.ensemble": 2, "training.epochs": 2,
              "training.batch_size": 32, **({"training.bagging": 2} if preset == "best" else {})}
    model = keel.fit(dated_table(240)[[*FEATURES, "kind"]], target="kind", config=config, quiet=True)
    assert model.config.model.numeric_embedding == "piecewise_linear"
    assert model.config.preprocessing.normalize == "quantile"
    assert isinstance(model.network, NetworkBag) == (preset != "fast")  # balanced: bagging auto, a small table
    model.save(tmp_path / "m")
    report = model.export()
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-6
    rows = dated_table(60, seed=7)[FEATURES]
    rows.loc[0, "stamp"] = pd.Timestamp("1969-07-20 20:17", tz="UTC")
    rows.loc[1, "day"] = pd.Timestamp("1900-03-01")
    difference = np.abs(Predictor.load(tmp_path / "m").predict_proba(rows) - model.predict_proba(rows))
    assert difference.max() < 1e-5


def test_a_format_2_reader_refuses_a_date_graph(exported, monkeypatch) -> None:
    from keel.runtime import Predictor, predictor

    monkeypatch.setattr(predictor, "EXPORT_FORMAT", 2)
    with pytest.raises(ArtifactError, match=r"export format 3 .*reads formats up to 2\. Upgrade keel"):
        Predictor.load(exported[1])


def test_v2_takes_a_date_as_iso_bytes_or_numeric_seconds_alike(exported) -> None:
    from keel.serve import ServeSettings, create_app

    model, directory = exported
    app = create_app(ServeSettings(str(directory), max_batch=10))
    moment = dt.datetime(2024, 3, 31, 3, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 01:30 UTC, DST day

    def infer(datatype: str, value: Any) -> list[float]:
        answer = call(app, "POST", "/v2/models/m/infer", json={"inputs": [
            {"name": "size", "shape": [1], "datatype": "FP64", "data": [0.3]},
            {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["blue"]},
            {"name": "stamp", "shape": [1], "datatype": datatype, "data": [value]},
            {"name": "day", "shape": [1], "datatype": "BYTES", "data": [None]}]})
        assert answer.status_code == 200, answer.json()
        return answer.json()["outputs"][1]["data"]

    expected = model.predict_proba(pd.DataFrame({"size": [0.3], "color": ["blue"], "stamp": [moment.isoformat()],
                                                 "day": [None]}))[0]
    for datatype, value in (("BYTES", moment.isoformat()), ("FP64", moment.timestamp()),
                            ("INT64", int(moment.timestamp()))):
        np.testing.assert_allclose(infer(datatype, value), expected, rtol=0, atol=1e-6)
