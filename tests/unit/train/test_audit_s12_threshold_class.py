"""Audit s12: threshold auto with f1 maximises the rarer class's F1 (commit 06d4d0d, calibration.threshold_class)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from keel.config import TrainingConfig
from keel.evaluate.metrics import classification_metrics
from keel.report.sections import _decision_text
from keel.train.calibration import calibrate, calibration_notes, rarer_class
from tests.unit.train.test_calibration import network, rows

AUTO_F1 = TrainingConfig(threshold="auto", threshold_metric="f1", calibrate=False)


def probabilities(net, numeric, categorical) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return torch.sigmoid(net(numeric, categorical)[:, 0].double()).numpy()


def test_the_rarer_class_is_by_weight_and_a_tie_is_the_second() -> None:
    labels = np.array([0] * 60 + [1] * 40)
    assert rarer_class(labels) == 1
    assert rarer_class(labels, np.r_[np.ones(60), np.full(40, 4.0)]) == 0  # 60 against 160: under a third
    assert rarer_class(labels, np.r_[np.ones(60), np.full(40, 3.0)]) == 1  # 60 against 120: a third, not rare
    assert rarer_class(np.array([0] * 30 + [1] * 70)) == 0 and rarer_class(np.array([0] * 40 + [1] * 60)) == 1
    assert rarer_class(np.array([0, 1] * 50)) == 1  # equal: the usual layout


def test_weighted_rows_choose_the_weighted_rarer_class_and_its_weighted_f1() -> None:
    net = network()
    numeric, categorical = rows(1200)
    p = probabilities(net, numeric, categorical)
    generator = torch.Generator().manual_seed(2)
    y = torch.bernoulli(torch.as_tensor(p), generator=generator).long()
    # Class 1 has more rows here; weights of 0.2 on them make class 1 the lighter one.
    weights = torch.where(y == 1, 0.2, 1.0).double()
    record = calibrate(net, numeric, categorical, y, weights, "binary", AUTO_F1)
    heavier = 0 if float(weights[y == 0].sum()) > float(weights[y == 1].sum()) else 1
    assert record is not None and record["threshold_class"] == 1 - heavier
    scored = record["threshold_class"]
    metrics = classification_metrics(y.numpy(), np.stack([1 - p, p], 1), [0, 1], threshold=record["threshold"],
                                     sample_weight=weights.numpy())
    assert math.isclose(record["threshold_score"], metrics["per_class"][scored]["f1"], rel_tol=1e-9)


def test_bagged_folds_choose_the_class_on_all_the_folds_rows() -> None:
    from keel.nn.network import NetworkBag

    bag = NetworkBag([network(seed=0), network(seed=1)]).eval()
    numeric, categorical = rows(800)
    folds = [np.arange(0, 400), np.arange(400, 800)]
    with torch.no_grad():
        logits = bag(numeric, categorical)[:, 0].double()
    y = (logits < logits.quantile(0.1)).long() ^ 1  # class 0: the lowest 10 %
    record = calibrate(bag, numeric, categorical, y, None, "binary", AUTO_F1, folds=folds)
    assert record is not None and record["threshold_class"] == 0 and record["threshold_score"] > 0.2


def test_a_one_row_change_in_the_validation_balance_does_not_turn_the_threshold_around() -> None:
    """Bug (design, new in 06d4d0d): which class's F1 is maximised is decided by a strict majority of the validation
    rows. Near an even split one row turns the choice over, and F1-maximising cuts lie on opposite sides for the two
    classes (each class's F1 is helped by predicting it more). Here, 600 validation rows of a weak model: with 300
    positives the threshold is 0.159 and 86% of the rows are predicted positive; with 301 (one label changed) it is
    0.462 and 22% are.
    Before 06d4d0d class 1's F1 was maximised on both. A margin (switch only where the first class is clearly the
    rarer, say under 40%), or the training rows' counts, would keep near-even tables stable."""
    net = network()
    net.scale_outputs(0.5)
    numeric, categorical = rows(600)
    with torch.no_grad():
        logits = net(numeric, categorical)[:, 0].double()
    p = torch.sigmoid(logits).numpy()
    generator = torch.Generator().manual_seed(3)
    y = torch.bernoulli(torch.sigmoid(logits - logits.median()), generator=generator).long()

    def with_positives(count: int) -> torch.Tensor:
        labels, now = y.clone(), int(y.sum())
        for index in np.random.default_rng(0).permutation(len(labels)):
            if now == count:
                break
            if now < count and labels[index] == 0:
                labels[index], now = 1, now + 1
            elif now > count and labels[index] == 1:
                labels[index], now = 0, now - 1
        return labels

    even, one_more = with_positives(300), with_positives(301)
    assert int((even != one_more).sum()) == 1  # one row's label differs
    rates, thresholds = [], []
    for labels in (even, one_more):
        record = calibrate(net, numeric, categorical, labels, None, "binary", AUTO_F1)
        assert record is not None
        rates.append(float(np.mean(p >= record["threshold"])))
        thresholds.append((record["threshold_class"], record["threshold"]))
    assert abs(rates[0] - rates[1]) < 0.15, (thresholds, rates)


RECORD = {"temperature": None, "kept": False, "rows": 100, "threshold": 0.8, "threshold_auto": True,
          "threshold_metric": "f1", "threshold_score": 0.42}


def test_a_record_from_before_threshold_class_reads_as_before() -> None:
    old = dict(RECORD)  # no threshold_class key: a model saved before 06d4d0d
    assert _decision_text(old, "binary", ["F", "ok"]) == ("ok where its probability is at least 0.8 (chosen on the "
                                                         "validation rows for f1: 0.42)")
    assert calibration_notes({**old, "log_loss_before": None, "log_loss_after": None}, ["F", "ok"])[-1].endswith(
        "(f1 0.42 there)")
    new = {**RECORD, "threshold_class": 0}
    assert _decision_text(new, "binary", ["F", "ok"]) == ("ok where its probability is at least 0.8 (chosen on the "
                                                         "validation rows for the F1 of F, the rarer class: 0.42)")
    assert "balanced accuracy" in _decision_text({**new, "threshold_metric": "balanced_accuracy"}, "binary", ["F", "ok"])


@pytest.mark.parametrize("value", [2, -1, "0", True])
def test_a_hostile_threshold_class_is_not_trusted_by_the_report(value) -> None:  # type: ignore[no-untyped-def]
    """Bug (low, hostile or hand-edited keel.json): calibration is a free dict in the manifest, and the report indexes
    the labels with threshold_class as it finds it: 2 raises IndexError ('keel report' ends in 'internal error'),
    "0" raises TypeError, and -1 / True silently name the second class as the one whose F1 was maximised.
    Expected: a value that is not 0 or 1 is ignored (or the model refused at load)."""
    record = {**RECORD, "threshold_class": value}
    text = _decision_text(record, "binary", ["F", "ok"])
    assert "the F1 of ok" not in text
