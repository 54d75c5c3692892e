"""The report's curves against scikit-learn's definitions, weighted and not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from keel.report import curves
from keel.report.style import truncate, truncate_labels


@pytest.mark.parametrize("weighted", [False, True])
def test_class_curves_match_scikit_learn(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(500) < 0.3
    score = np.round(np.clip(positive * 0.3 + rng.random(500) * 0.7, 0, 1), 2)  # rounded: ties on purpose
    weight = rng.uniform(0.5, 2, 500) if weighted else None
    result = curves.class_curves("yes", positive, score, weight)
    fpr, tpr, _ = roc_curve(positive, score, sample_weight=weight, drop_intermediate=False)
    np.testing.assert_allclose(result.fpr, fpr)
    np.testing.assert_allclose(result.tpr, tpr)
    assert result.roc_auc == pytest.approx(roc_auc_score(positive, score, sample_weight=weight))
    assert result.average_precision == pytest.approx(average_precision_score(positive, score, sample_weight=weight))
    assert result.prevalence == pytest.approx(np.average(positive, weights=weight))


def test_macro_average_areas_are_the_mean_of_the_classes() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, 400)
    probabilities = rng.dirichlet(np.ones(3), 400) + np.eye(3)[target]
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    every = [curves.class_curves(str(k), target == k, probabilities[:, k]) for k in range(3)]
    macro = curves.macro_average(every)
    assert macro.roc_auc == pytest.approx(roc_auc_score(target, probabilities, multi_class="ovr", average="macro"))
    assert macro.tpr[0] >= 0 and macro.tpr[-1] == pytest.approx(1.0)
    assert np.all(np.diff(macro.precision) <= 1e-12)  # interpolated precision falls with recall


def test_reliability_bins_and_expected_calibration_error() -> None:
    # Two bins used: 0.95 (4 rows, 3 right) and 0.65 (4 rows, 2 right), two classes.
    probabilities = np.array([[0.95, 0.05]] * 4 + [[0.35, 0.65]] * 4)
    target = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    result = curves.reliability(probabilities, target)
    assert result.count.tolist() == [0, 0, 0, 0, 0, 0, 4, 0, 0, 4]
    assert result.accuracy[9] == 0.75 and result.accuracy[6] == 0.5
    assert result.ece == pytest.approx(0.5 * abs(0.75 - 0.95) + 0.5 * abs(0.5 - 0.65))


def test_deciles_partition_the_rows_and_worst_rows_are_sorted() -> None:
    rng = np.random.default_rng(2)
    actual = rng.normal(size=1000)
    predicted = actual + rng.normal(size=1000) * (actual > 1)  # errors only in the top values
    groups = curves.deciles(actual, predicted)
    assert len(groups) == 10 and sum(group.rows for group in groups) == 1000
    assert groups[0].mae == 0 and groups[-1].mae > 0.3
    worst = curves.worst_rows("regression", actual, None, predicted, 5)
    errors = np.abs(predicted - actual)
    assert worst.tolist() == np.argsort(-errors)[:5].tolist()
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert curves.worst_rows("binary", np.array([1, 1, 0]), probabilities, None, 2).tolist() == [0, 2]


def test_thin_and_sample_keep_the_ends_and_are_seeded() -> None:
    x = np.arange(100_000.0)
    thin_x, thin_y = curves.thin(x, x * 2)
    assert len(thin_x) <= curves.CURVE_POINTS and thin_x[0] == 0 and thin_x[-1] == 99_999 and np.all(thin_y == 2 * thin_x)
    assert curves.sample(100) is None
    assert np.array_equal(curves.sample(100_000), curves.sample(100_000)) and len(curves.sample(100_000)) == 5000


def test_truncate_keeps_both_ends_of_long_labels() -> None:
    assert truncate("short") == "short"
    assert truncate("customer segment 01 of the northern region") == "customer s…rn region"
    assert len(truncate("x" * 100)) == 20 and truncate("x" * 100).endswith("…" + "x" * 9)


def test_truncated_labels_stay_apart_when_they_differ_in_the_middle() -> None:
    names = [f"customer segment {index:02d} of the northern region" for index in range(30)]
    shown = truncate_labels(names)
    assert len(set(shown)) == 30 and all(len(text) <= 20 for text in shown)
    assert all(f"{index:02d}" in text for index, text in enumerate(shown))
    assert truncate_labels(["a", "b" * 30]) == ["a", truncate("b" * 30)]
