"""The report's sections on run records made in code (tests/unit/report/synthetic.py)."""

from __future__ import annotations

import dataclasses
import html

import numpy as np
import pytest

from keel.report.sections import make_context, overview
from tests.unit.report import synthetic


def _bagging_fact(bagging: dict) -> str:  # type: ignore[type-arg]
    inputs = synthetic.regression()
    inputs = dataclasses.replace(inputs, run={**(inputs.run or {}), "bagging": bagging})
    return html.unescape(overview(inputs, make_context(inputs)))


@pytest.mark.parametrize(("bagging", "said"), [
    # A time limit let one of five networks train: it said "training.bagging 5" beside the pool's rows only.
    ({"networks": 1, "planned": 5, "train_each": [38_400], "validation_each": [9_600]},
     "1 of the 5 networks of training.bagging (training.time_limit allowed no more), trained on 38,400 of the "
     "48,000 training and validation rows and validated on the other 9,600 (its fold)"),
    ({"networks": 2, "planned": 5, "train_each": [38_400, 38_400], "validation_each": [9_600, 9_600]},
     "2 of the 5 networks of training.bagging (training.time_limit allowed no more), each trained on about 38,400 "
     "of the 48,000 training and validation rows"),
    ({"networks": 5, "planned": 5, "train_each": [38_400] * 5, "validation_each": [9_600] * 5},
     "5 networks, each trained on about 38,400 of the 48,000 training and validation rows"),
    # A record written before "planned" existed lists the networks trained (and only several of them).
    ({"networks": 3, "train_each": [400] * 3, "validation_each": [200] * 3},
     "3 networks, each trained on about 400 of the 600 training and validation rows"),
])
def test_the_overview_says_how_many_bagged_networks_trained_and_on_which_rows(bagging: dict, said: str) -> None:  # type: ignore[type-arg]
    assert said in _bagging_fact(bagging)


def test_distinct_values_counted_on_a_sample_are_shown_as_at_least_that_many() -> None:
    # A 250,000-row table's ids were counted on 200,000 sampled rows: the page said 200,000 as if exact.
    inputs = synthetic.regression()
    run = inputs.run or {}
    columns = [{**column, "unique_sampled": column["name"] == "id"} for column in run["columns"]]
    page = html.unescape(overview(dataclasses.replace(inputs, run={**run, "columns": columns}),
                                  make_context(inputs)))
    ids = next(column["unique"] for column in columns if column["name"] == "id")
    assert f"\u2265 {ids:,}" in page and "were counted on a sample of the rows (at most 200,000" in page
    assert page.count("\u2265") == 2  # the id's cell and the note's
    exact = html.unescape(overview(inputs, make_context(inputs)))
    assert "\u2265" not in exact and "sample of the rows" not in exact


def test_worst_rows_show_whole_numbers_as_written() -> None:
    from keel.report.html import number
    from keel.report.sections import _plain

    # A year column's 2007 read "2,007" in the worst rows' feature values.
    assert number(_plain(np.int64(2007)), 4) == "2007" and number(_plain(12345), 4) == "12345"
    assert number(_plain(np.float64(2007.0)), 4) == "2007"  # an integer column with a blank cell
    assert _plain(np.True_) is True and _plain(2.5) == 2.5 and _plain(float("nan")) is None


def test_the_metrics_section_says_why_roc_auc_is_undefined() -> None:
    """A multiclass test part without a row of one class: the page's ROC AUC reads n/a with the class, and the
    reason is not a row of its own."""
    from keel.report.sections import metrics

    inputs = synthetic.classification(n_classes=3)
    predictions = inputs.predictions
    kept = predictions.target != 2
    assert predictions.probabilities is not None
    inputs = dataclasses.replace(inputs, predictions=dataclasses.replace(
        predictions, target=predictions.target[kept], probabilities=predictions.probabilities[kept],
        row=predictions.row[kept]))
    page = html.unescape(metrics(inputs, make_context(inputs)))
    assert "n/a (class 'class 2' has no row here)" in page and "roc auc note" not in page.lower()
