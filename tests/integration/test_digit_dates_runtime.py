"""Dates written as digits (2023, 20231106) in the torch-free runtime and the server: one rule, the model's own.

``Model.predict`` refuses a date column whose numbers are all years or all YYYYMMDD dates (as seconds they would all
be moments of 1970), unless the model's training dates began in 1970. Before s19 the runtime's DataFrame path refused
them even for such a model, and its records, lists, arrays, the server's JSON and the V2 protocol took them as
seconds without a word. Every path now follows the model (keel.dates in the ONNX metadata).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ArtifactError, DataError
from keel.export.onnx import to_onnx
from keel.runtime import Predictor
from keel.serve import ServeSettings, create_app
from tests.conftest import FAST
from tests.integration.test_dates_export import call

SIZES = [0.3, -1.0]
# One call's data in each form the runtime takes, from the date column's values (one per row).
FORMS: dict[str, Callable[[list[Any]], Any]] = {
    "frame": lambda dates: pd.DataFrame({"size": SIZES[:len(dates)], "signup": dates}),
    "record": lambda dates: {"size": SIZES[0], "signup": dates[0]},
    "rows": lambda dates: [{"size": size, "signup": date} for size, date in zip(SIZES, dates)],
    "columns": lambda dates: {"size": SIZES[:len(dates)], "signup": list(dates)},
    "arrays": lambda dates: {"size": np.array(SIZES[:len(dates)]), "signup": np.array(dates)},
}
DIGITS = [([20231106], "dates written without dashes"), ([2023, 2021], "years")]


def exported(frame: pd.DataFrame, directory: Path, config: dict[str, Any]) -> tuple[keel.Model, Path]:
    model = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1, **config}, quiet=True)
    model.save(directory)
    model.attach("model.onnx", to_onnx(model).SerializeToString())
    return model, directory


def table(dates: Any) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    size = rng.normal(0, 1, 120)
    return pd.DataFrame({"size": size, "signup": dates, "label": np.where(size > 0, "big", "small")})


@pytest.fixture(scope="module")
def in_2023(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    """Trained on ISO dates of 2023: numbers that look like years or YYYYMMDD are refused."""
    days = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.random.default_rng(1).integers(0, 365, 120), unit="D")
    return exported(table(days.strftime("%Y-%m-%d")), tmp_path_factory.mktemp("digits") / "in_2023", {})


@pytest.fixture(scope="module")
def in_1970(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    """Trained on seconds of 1970 (a declared date column): any number is seconds, as Model.predict has it."""
    declared = {"input_features": [{"name": "size", "type": "number"}, {"name": "signup", "type": "date"}]}
    return exported(table(np.linspace(0, 31_000_000, 120).round()), tmp_path_factory.mktemp("digits") / "in_1970",
                    declared)


def test_the_export_says_whether_a_date_column_refuses_digits(in_2023, in_1970) -> None:
    import onnx

    for (model, directory), refuses in ((in_2023, True), (in_1970, False)):
        assert {t.name: t.refuses_digits for t in model.preprocessor.transforms if t.kind == "date"} == {
            "signup": refuses}
        metadata = {item.key: item.value for item in onnx.load(str(directory / "model.onnx")).metadata_props}
        dates = json.loads(metadata["keel.dates"])
        assert dates["signup"]["refuses_digits"] is refuses and "YYYYMMDD" in dates["signup"]["digits"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dates, kind", DIGITS)
def test_the_runtime_refuses_digits_on_every_path_as_model_predict_does(in_2023, form, dates, kind) -> None:
    model, directory = in_2023
    dates = dates[:1] if form == "record" else dates
    with pytest.raises(DataError) as own:
        model.predict(FORMS["frame"](dates))
    with pytest.raises(DataError) as runtime:
        Predictor.load(directory).predict(FORMS[form](dates))
    # Model.predict's message starts "DataFrame: " (where the rows came from); the rest is one sentence.
    assert str(own.value).endswith(str(runtime.value)) and kind in str(own.value)
    assert runtime.value.column == "signup" and runtime.value.row in (None if form == "frame" else 1,)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dates", [[20231106], [2023, 2021], [1_700_000_000, 1_699_228_800]])
def test_the_runtime_takes_digits_for_a_model_trained_on_1970(in_1970, form, dates) -> None:
    model, directory = in_1970
    dates = dates[:1] if form == "record" else dates
    expected = model.predict_proba(FORMS["frame"](dates))
    np.testing.assert_allclose(Predictor.load(directory).predict_proba(FORMS[form](dates)), expected, atol=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_real_seconds_and_digits_as_text_are_taken(in_2023, form) -> None:
    model, directory = in_2023
    predictor = Predictor.load(directory)
    for dates in ([1_700_000_000], [1_700_000_000, 1_699_228_800], ["20231106", "2023-11-06"]):
        dates = dates[:1] if form == "record" else dates
        expected = model.predict_proba(FORMS["frame"](dates))
        np.testing.assert_allclose(predictor.predict_proba(FORMS[form](dates)), expected, atol=1e-6)


def test_an_export_without_keel_dates_refuses_digits(in_1970, tmp_path) -> None:
    """An export from before keel.dates: the safe reading, the refusal, even for a model trained on 1970."""
    import onnx

    proto = onnx.load(str(in_1970[1] / "model.onnx"))
    kept = [item for item in proto.metadata_props if item.key != "keel.dates"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    predictor = Predictor.load(tmp_path / "old.onnx")
    with pytest.raises(DataError, match="column 'signup' holds dates, but as whole numbers from 20231106"):
        predictor.predict({"size": 0.3, "signup": 20231106})
    assert predictor.predict({"size": 0.3, "signup": 1_700_000_000}).shape == (1,)


def test_an_export_whose_keel_dates_is_no_keel_export_s_is_refused_at_load(in_1970, tmp_path) -> None:
    import onnx

    proto = onnx.load(str(in_1970[1] / "model.onnx"))
    next(item for item in proto.metadata_props if item.key == "keel.dates").value = '{"signup": {"refuses_digits": 0}}'
    onnx.save(proto, str(tmp_path / "changed.onnx"))
    with pytest.raises(ArtifactError, match="keel.dates is not an object of {refuses_digits: true or false} objects"):
        Predictor.load(tmp_path / "changed.onnx")


def bodies(dates: list[Any]) -> dict[str, Any]:
    """One /predict body per form, and a V2 one (integers as INT64)."""
    rows = [{"size": size, "signup": date} for size, date in zip(SIZES, dates)]
    return {"record": rows[0] if len(rows) == 1 else None, "rows": rows,
            "columns": {"columns": {"size": SIZES[:len(dates)], "signup": dates}},
            "v2": {"inputs": [{"name": "size", "shape": [len(dates)], "datatype": "FP64", "data": SIZES[:len(dates)]},
                              {"name": "signup", "shape": [len(dates)], "datatype": "INT64", "data": dates}]}}


@pytest.mark.parametrize("dates", [[20231106], [2023, 2021]])
def test_the_server_refuses_digits_with_a_422_naming_column_and_row(in_2023, dates) -> None:
    directory = in_2023[1]
    app = create_app(ServeSettings(str(directory), max_batch=10))
    for form, body in bodies(dates).items():
        if body is None:
            continue
        path = "/v2/models/in_2023/infer" if form == "v2" else "/predict"
        answer = call(app, "POST", path, json=body)
        assert answer.status_code == 422, (form, answer.json())
        error = answer.json()["errors"][0]
        assert (error["field"], error["row"]) == ("signup", 1), form
        assert "column 'signup' holds dates, but as whole numbers" in answer.json()["detail"], form
        assert "would all fall in 1970" in answer.json()["detail"], form


@pytest.mark.parametrize("model", ["in_2023", "in_1970"])
def test_the_server_takes_real_seconds_and_a_1970_model_takes_digits(model, request) -> None:
    directory = request.getfixturevalue(model)[1]
    app = create_app(ServeSettings(str(directory), max_batch=10))
    cases = [[1_700_000_000], [1_700_000_000, 1_699_228_800]] + ([[20231106], [2023, 2021]] if model == "in_1970"
                                                                    else [])
    for dates in cases:
        for form, body in bodies(dates).items():
            if body is None:
                continue
            path = f"/v2/models/{model}/infer" if form == "v2" else "/predict"
            answer = call(app, "POST", path, json=body)
            assert answer.status_code == 200, (dates, form, answer.json())
