"""The report for each task: the right sections, every figure a real picture, nothing external, user strings escaped."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from keel.errors import DataError
from keel.evaluate.predictions import Predictions
from keel.report import Report, ReportInputs, build_report, section_ids
from keel.report.html import external_references
from tests.unit.report import synthetic

COMMON = ["overview", "metrics", "learning-curves"]
CLASSIFICATION = ["confusion-matrix", "per-class", "roc-pr", "calibration", "probabilities"]
REGRESSION = ["predicted-vs-actual", "residuals", "error-by-decile"]
TAIL = ["importance", "worst-rows"]
PLOTS = {"binary": {"learning_curves", "confusion_matrix", "roc_pr", "calibration", "probabilities", "importance"},
         "regression": {"learning_curves", "predicted_vs_actual", "residuals", "error_by_decile", "importance"}}
PLOTS["multiclass"] = PLOTS["binary"]
LONG_NAMES = [f"customer segment {index:02d} of the northern region" for index in range(30)]  # 40 characters
EXPORT = {"format": "onnx", "files": ["/somewhere/model.onnx"], "parity": {"max_difference": 1e-7, "rows": 69, "ok": True},
          "pruning": None, "quantized_parity": None, "notes": [],
          "compression": {"rows": [{"key": "size_bytes", "measure": "file size (bytes)", "original": 46560,
                                    "compressed": 27431, "ratio": 0.589}]}}


def _cases() -> dict[str, ReportInputs]:
    binary = synthetic.classification(n_classes=2, names=["no", "<script>alert(1)</script>"], threshold=0.3)
    binary.exports = [EXPORT]
    binary.notes = ["a note with <b>markup</b> & an ampersand"]
    multiclass = synthetic.classification(n_classes=4, weighted=True)
    multiclass.rows = synthetic.rows_for(multiclass)
    many = synthetic.classification(n_rows=600, names=LONG_NAMES)
    regression = synthetic.regression(bags=3)
    regression.importance = None
    return {"binary": binary, "multiclass": multiclass, "thirty-classes": many, "regression": regression}


CASES = _cases()
_BUILT: dict[str, Report] = {}


def _report(name: str) -> Report:
    """Each case's report, drawn once for the whole module (a second or two each)."""
    if name not in _BUILT:
        _BUILT[name] = build_report(CASES[name])
    return _BUILT[name]


@pytest.fixture(params=list(CASES))
def drawn(request: pytest.FixtureRequest) -> tuple[str, ReportInputs, Report]:
    return request.param, CASES[request.param], _report(request.param)


def _expected_ids(name: str) -> list[str]:
    if name == "regression":
        return COMMON + REGRESSION + ["worst-rows"]  # no importance given
    return COMMON + CLASSIFICATION + TAIL + (["exports"] if name == "binary" else [])


def test_each_task_gets_its_sections_and_no_others(drawn: tuple) -> None:
    name, inputs, report = drawn
    expected = _expected_ids(name)
    assert section_ids(inputs) == expected == report.sections
    assert re.findall(r'<section id="([a-z0-9-]+)">', report.html) == expected
    contents = re.search(r'<nav id="contents">(.*?)</nav>', report.html, re.S)
    assert contents and re.findall(r'href="#([a-z0-9-]+)"', contents.group(1)) == expected


def test_every_figure_decodes_and_is_not_blank(drawn: tuple) -> None:
    name, inputs, report = drawn
    expected = set(PLOTS[inputs.task]) - ({"importance"} if inputs.importance is None else set())
    assert {plot.removesuffix(".png") for plot in report.plots} == expected
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report.html)
    assert len(embedded) == len(report.plots)
    assert sorted(base64.b64decode(data) for data in embedded) == sorted(report.plots.values())
    for plot, png in report.plots.items():
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
        assert pixels.shape[0] > 150 and pixels.shape[1] > 150, plot
        assert pixels.var() > 100, f"{plot} looks blank"
        packed = pixels.astype(np.int64) @ np.array([65536, 256, 1])
        assert len(np.unique(packed)) > 20, f"{plot} has hardly any colours"


def test_the_page_references_nothing_outside_itself(drawn: tuple) -> None:
    _, _, report = drawn
    assert external_references(report.html) == []
    lowered = report.html.lower()
    for forbidden in ("http://", "https://", "<script", "<link", "@import", "url(", "src=\"//", "src='//"):
        assert forbidden not in lowered


def test_user_strings_are_escaped() -> None:
    report = _report("binary")
    assert "<script>alert(1)</script>" not in report.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report.html
    assert "a note with &lt;b&gt;markup&lt;/b&gt; &amp; an ampersand" in report.html
    assert "<b>markup</b>" not in report.html


def test_binary_report_shows_the_threshold_the_calibration_and_the_export() -> None:
    report = _report("binary")
    assert "at least 0.3" in report.html  # the confusion matrix is the thresholded one
    calibration = report.html.split('<section id="calibration">')[1]
    assert "1.31, kept: every logit is divided by it (validation log loss 0.41 at T = 1, 0.38 at T = 1.31" in calibration
    assert "where its probability is at least 0.3 (chosen on the validation rows for f1)" in calibration
    exports = report.html.split('<section id="exports">')[1]
    assert "model.onnx" in exports and "/somewhere" not in exports
    assert "46,560" in exports and "27,431" in exports


def test_thirty_classes_draw_ten_curves_and_list_every_class() -> None:
    report = _report("thirty-classes")
    roc = report.html.split('<section id="roc-pr">')[1].split("</section>")[0]
    assert "the 10 largest of 30 classes" in roc
    assert all(name in roc for name in LONG_NAMES)  # the area table has every class, untruncated
    image = Image.open(io.BytesIO(report.plots["confusion_matrix.png"]))
    assert image.height > 1500  # grown with the classes, so 30 labels do not overlap


def test_worst_rows_are_the_worst_with_feature_values_only_when_rows_are_given() -> None:
    multiclass = CASES["multiclass"]
    report = _report("multiclass")
    worst = report.html.split('<section id="worst-rows">')[1].split("</section>")[0]
    probabilities, target = multiclass.predictions.probabilities, multiclass.predictions.target
    assert probabilities is not None and multiclass.predictions.row is not None
    first = int(np.argmin(probabilities[np.arange(len(target)), target]))
    first_row = re.search(r"<tbody>\s*<tr><td class=\"number\">([\d,]+)</td>", worst)
    assert first_row and int(first_row.group(1).replace(",", "")) == multiclass.predictions.row[first]
    assert "<th>colour</th>" in worst and "&lt;b&gt;bold&lt;/b&gt;" in worst
    assert "<th>colour</th>" not in _report("binary").html.split('<section id="worst-rows">')[1]
    regression = _report("regression").html.split('<section id="worst-rows">')[1]
    assert "largest absolute error" in regression


def test_a_model_without_history_or_extras_still_gets_a_report() -> None:
    bare = ReportInputs(title="bare", task="regression", target="y $5-$10", classes=[],
                        predictions=Predictions(task="regression", target=np.arange(50.0), values=np.arange(50.0) + 1),
                        source="data.csv (50 labelled rows)")
    report = build_report(bare)
    assert report.sections == COMMON + REGRESSION + ["worst-rows"]
    assert "No training history was stored" in report.html
    assert "RMSE" in report.html and external_references(report.html) == []


def test_inputs_that_do_not_fit_together_are_refused() -> None:
    predictions = Predictions(task="multiclass", target=np.array([0, 1, 2]), probabilities=np.full((3, 3), 1 / 3))
    with pytest.raises(DataError, match=r"shape \(3, 2\).*got \(3, 3\)"):
        ReportInputs(title="t", task="multiclass", target="y", classes=["a", "b"], predictions=predictions, source="s")
    with pytest.raises(DataError, match="for task 'multiclass' but the report is for 'binary'"):
        ReportInputs(title="t", task="binary", target="y", classes=["a", "b", "c"], predictions=predictions, source="s")
