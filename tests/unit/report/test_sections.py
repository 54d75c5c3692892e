"""The report's sections on run records made in code (tests/unit/report/synthetic.py)."""

from __future__ import annotations

import dataclasses
import html

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
