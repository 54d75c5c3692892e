from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from keel.evaluate.metrics import classification_metrics, regression_metrics
from keel.evaluate.summary import metrics_tables


def test_classification_metrics_match_scikit_learn() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.3, .6, .1], [.1, .1, .8], [.6, .2, .2]])
    out = classification_metrics(y, proba, ["a", "b", "c"])
    predicted = proba.argmax(1)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))
    assert out["f1_weighted"] == pytest.approx(skm.f1_score(y, predicted, average="weighted"))
    assert out["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert out["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert out["per_class"][1] == {"class": "b", "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}


def test_auc_is_none_when_undefined() -> None:
    assert classification_metrics(np.array([1, 1]), np.array([[.2, .8], [.4, .6]]), [0, 1])["roc_auc"] is None
    three = classification_metrics(np.array([0, 1]), np.array([[.5, .3, .2], [.2, .7, .1]]), [0, 1, 2])
    assert three["roc_auc"] is None and three["accuracy"] == 1.0


def test_regression_metrics() -> None:
    out = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert out["rmse"] == pytest.approx((4 / 3) ** 0.5) and out["mae"] == pytest.approx(2 / 3)
    assert out["r2"] == pytest.approx(skm.r2_score([1, 2, 3], [1, 2, 5]))


def test_tables_render_every_headline_metric() -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(metrics_tables(classification_metrics(np.array([0, 1]), np.array([[.9, .1], [.2, .8]]), ["no", "yes"])))
    text = console.export_text()
    for word in ("accuracy", "f1_macro", "roc_auc", "log_loss", "per class", "confusion matrix", "yes"):
        assert word in text


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_every_value_matches_scikit_learn_on_random_data(seed, n_classes) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, 200)
    y[:n_classes] = np.arange(n_classes)  # every class present
    logits = rng.normal(size=(200, n_classes)) + np.eye(n_classes)[y] * rng.uniform(0, 2)
    logits = np.round(logits, 1)  # ties in the scores, as real models produce
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = classification_metrics(y, proba, list(range(n_classes)))
    predicted = proba.argmax(1)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, predicted, average=average, zero_division=0)
        assert (out[f"precision_{average}"], out[f"recall_{average}"], out[f"f1_{average}"]) == pytest.approx((p, r, f))
    assert out["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    expected_auc = skm.roc_auc_score(y, proba[:, 1]) if n_classes == 2 else skm.roc_auc_score(y, proba, multi_class="ovr")
    assert out["roc_auc"] == pytest.approx(expected_auc)
    assert out["confusion_matrix"] == skm.confusion_matrix(y, predicted).tolist()


def test_regression_matches_scikit_learn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y, predicted = rng.normal(size=100), rng.normal(size=100)
    out = regression_metrics(y, predicted)
    assert out["rmse"] == pytest.approx(skm.root_mean_squared_error(y, predicted))
    assert out["mae"] == pytest.approx(skm.mean_absolute_error(y, predicted))
    assert out["r2"] == pytest.approx(skm.r2_score(y, predicted))
    assert regression_metrics(np.array([1.0]), np.array([2.0]))["r2"] is None


@pytest.mark.parametrize("weighted", [False, True])
def test_averages_skip_classes_absent_from_the_rows_as_scikit_learn_does(weighted) -> None:
    # Four model classes; this subset has no row of class 3 and no prediction of it either.
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    proba = rng.dirichlet(np.ones(4), size=len(y)) * [1, 1, 1, 0]
    proba /= proba.sum(1, keepdims=True)
    weight = rng.uniform(0.5, 2.0, len(y)) if weighted else None
    out = classification_metrics(y, proba, ["a", "b", "c", "d"], sample_weight=weight)
    predicted = proba.argmax(1)
    assert 3 not in set(y) | set(predicted)
    for average in ("macro", "weighted"):
        kwargs = {"average": average, "zero_division": 0, "sample_weight": weight}
        assert out[f"precision_{average}"] == pytest.approx(skm.precision_score(y, predicted, **kwargs))
        assert out[f"recall_{average}"] == pytest.approx(skm.recall_score(y, predicted, **kwargs))
        assert out[f"f1_{average}"] == pytest.approx(skm.f1_score(y, predicted, **kwargs))
    assert [row["class"] for row in out["per_class"]] == ["a", "b", "c", "d"]
    assert out["per_class"][3]["support"] == 0 and out["per_class"][3]["f1"] == 0.0


def _shown_auc(metrics: dict) -> str:
    """The terminal table's roc_auc row, as the user reads it."""
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(metrics_tables(metrics))
    return next(line for line in console.export_text().splitlines() if "roc_auc" in line)


def test_an_undefined_auc_says_why_naming_the_class() -> None:
    """ROC-AUC is None where the scored rows make it undefined; roc_auc_note and the table say which class
    (a trial's "n/a" came with no reason). A multiclass score stays None, not an AUC over the classes present."""
    absent = classification_metrics(np.array([0, 1, 1, 0]), np.full((4, 3), 1 / 3), ["a", "b", "c"])
    assert absent["roc_auc"] is None
    assert absent["roc_auc_note"] == "class 'c' has no row here"
    assert "n/a (class 'c' has no row here)" in _shown_auc(absent)
    several = classification_metrics(np.array([0, 1, 0, 1]), np.full((4, 6), 1 / 6), [0, 1, 2, 3, 4, 5])
    assert several["roc_auc_note"] == "classes 2, 3, 4 and 1 more have no row here"
    one = classification_metrics(np.array([1, 1]), np.array([[.2, .8], [.4, .6]]), ["no", "yes"])
    assert one["roc_auc_note"] == "every row here is of class 'yes'"
    assert "n/a (every row here is of class 'yes')" in _shown_auc(one)
    weightless = classification_metrics(np.array([0, 1, 1]), np.full((3, 2), .5), [0, 1],
                                        sample_weight=np.array([0.0, 1.0, 2.0]))
    assert weightless["roc_auc"] is None
    assert weightless["roc_auc_note"] == "every row of weight above 0 here is of class 1"


def test_a_defined_auc_has_no_note() -> None:
    """Guard: the note exists only where the score does not (a script reading roc_auc_note finds a reason)."""
    defined = classification_metrics(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"])
    assert defined["roc_auc"] == 1.0 and "roc_auc_note" not in defined
    assert "n/a" not in _shown_auc(defined)
    assert "roc_auc_note" not in regression_metrics(np.array([1.0, 2.0]), np.array([1.0, 3.0]))
