"""Permutation importance on arrays, with predict functions whose dependence on each feature is known."""

from __future__ import annotations

import time

import numpy as np
import pytest

from keel.errors import DataError
from keel.evaluate.importance import permutation_importance


def _table(n_rows: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n_rows, 3)).astype(np.float32)
    categorical = rng.integers(2, 6, size=(n_rows, 1)).astype(np.int64)
    return numeric, categorical


def _classifier(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """Class 1 when column 0 is positive; column 1 nudges the probability a little; the rest is ignored."""
    logit = 4.0 * numeric[:, 0] + 0.3 * numeric[:, 1]
    positive = 1.0 / (1.0 + np.exp(-logit))
    return np.stack([1.0 - positive, positive], axis=1)


GROUPS = {"decides": ([0], []), "nudges": ([1], []), "noise": ([2], []), "code": ([], [0])}


def test_the_deciding_feature_ranks_first_and_ignored_ones_score_zero() -> None:
    numeric, categorical = _table()
    target = (numeric[:, 0] > 0).astype(np.int64)
    result = permutation_importance(_classifier, numeric, categorical, target, None, GROUPS, "binary")
    by_name = {feature["name"]: feature for feature in result["features"]}
    assert [feature["name"] for feature in result["features"]][0] == "decides"
    assert by_name["decides"]["mean"] > 0.3  # shuffling it leaves about chance accuracy
    assert by_name["decides"]["std"] > 0
    assert by_name["noise"] == {"name": "noise", "mean": 0.0, "std": 0.0}
    assert by_name["code"]["mean"] == 0.0
    assert 0 < by_name["nudges"]["mean"] < by_name["decides"]["mean"] / 5
    assert result["baseline"] > 0.95
    assert (result["metric"], result["higher_is_better"], result["rows"], result["repeats"]) == ("accuracy", True, 600, 5)


def test_regression_uses_rmse_and_positive_means_needed() -> None:
    numeric, categorical = _table()
    target = 3.0 * numeric[:, 2].astype(np.float64)
    result = permutation_importance(lambda x, c: 3.0 * x[:, 2], numeric, categorical, target, None, GROUPS,
                                    "regression", repeats=3)
    assert result["metric"] == "rmse" and result["higher_is_better"] is False
    assert result["baseline"] == pytest.approx(0.0, abs=1e-5)
    assert result["features"][0]["name"] == "noise"
    assert result["features"][0]["mean"] == pytest.approx(3.0 * np.sqrt(2.0), rel=0.15)  # rmse of x - shuffled x
    assert all(feature["mean"] == 0.0 for feature in result["features"][1:])


def test_the_same_seed_gives_the_same_result_and_another_seed_does_not() -> None:
    numeric, categorical = _table()
    target = (numeric[:, 0] + 0.5 * numeric[:, 1] > 0).astype(np.int64)
    first, again, other = (permutation_importance(_classifier, numeric, categorical, target, None, GROUPS, "binary",
                                                  seed=seed, max_rows=300) for seed in (7, 7, 8))
    assert first["features"] == again["features"] and first["baseline"] == again["baseline"]
    assert first["features"] != other["features"]


def test_a_feature_s_columns_are_shuffled_together_and_the_others_are_left_alone() -> None:
    rng = np.random.default_rng(1)
    n_rows = 50
    base = rng.normal(size=n_rows).astype(np.float32)
    # Feature "pair" spans numeric columns 0 and 1 (1 = 2 x 0) and categorical column 0 (the row's own index);
    # "other" is numeric column 2.
    numeric = np.stack([base, 2 * base, np.arange(n_rows, dtype=np.float32)], axis=1)
    categorical = np.arange(n_rows, dtype=np.int64)[:, None]
    seen = []

    def predict(x: np.ndarray, c: np.ndarray) -> np.ndarray:
        seen.append((x.copy(), c.copy()))
        return np.tile([0.5, 0.5], (len(x), 1))

    progress: list[int] = []
    permutation_importance(predict, numeric, categorical, np.zeros(n_rows, dtype=np.int64), None,
                           {"pair": ([0, 1], [0]), "other": ([2], [])}, "binary", repeats=3, progress=progress.append)
    assert progress == [1, 2]
    baseline, pair, other = seen
    assert np.array_equal(baseline[0], numeric)
    x, c = pair
    assert len(x) == 3 * n_rows
    rows = c[:, 0]  # which original row each shuffled row's values came from
    assert not np.array_equal(rows, np.tile(np.arange(n_rows), 3))
    assert np.array_equal(x[:, 0], base[rows]) and np.array_equal(x[:, 1], 2 * base[rows])
    assert np.array_equal(x[:, 2], np.tile(numeric[:, 2], 3))  # "other" untouched
    for repeat in range(3):  # each repeat is a permutation of all rows
        assert sorted(rows[repeat * n_rows:(repeat + 1) * n_rows]) == list(range(n_rows))
    x, c = other
    assert np.array_equal(x[:, :2], np.tile(numeric[:, :2], (3, 1))) and np.array_equal(c[:, 0], np.tile(np.arange(n_rows), 3))


def test_rows_are_sampled_weights_count_and_the_threshold_applies() -> None:
    numeric, categorical = _table(n_rows=5000)
    target = (numeric[:, 0] > 0).astype(np.int64)
    result = permutation_importance(_classifier, numeric, categorical, target, np.ones(5000), GROUPS, "binary",
                                    max_rows=1000, repeats=2)
    assert result["rows"] == 1000
    # A threshold of 1.0 predicts class 0 everywhere: half right before and after shuffling.
    flat = permutation_importance(_classifier, numeric, categorical, target, None, GROUPS, "binary", threshold=1.0)
    assert flat["baseline"] == pytest.approx(0.5, abs=0.05)
    assert all(feature["mean"] == 0.0 for feature in flat["features"])
    # Weight only the rows of class 1: accuracy counts just those.
    weighted = permutation_importance(lambda x, c: np.tile([0.0, 1.0], (len(x), 1)), numeric, categorical, target,
                                      target.astype(np.float64), GROUPS, "binary")
    assert weighted["baseline"] == 1.0


def test_groups_that_do_not_fit_the_arrays_are_a_data_error() -> None:
    numeric, categorical = _table(n_rows=10)
    with pytest.raises(DataError, match=r"feature 'bad' names numeric column\(s\) \[3\].*3 column\(s\)"):
        permutation_importance(_classifier, numeric, categorical, np.zeros(10), None, {"bad": ([3], [])}, "binary")
    with pytest.raises(DataError, match="one length"):
        permutation_importance(_classifier, numeric, categorical, np.zeros(9), None, GROUPS, "binary")


def test_two_thousand_rows_by_fifty_features_is_cheap() -> None:
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(5000, 100)).astype(np.float32)  # 50 features of 2 columns each
    weights = rng.normal(size=(100, 3)).astype(np.float32)

    def predict(x: np.ndarray, c: np.ndarray) -> np.ndarray:
        logits = x @ weights
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    groups = {f"f{i}": ([2 * i, 2 * i + 1], []) for i in range(50)}
    target = predict(numeric, None).argmax(axis=1)  # type: ignore[arg-type]
    started = time.perf_counter()
    result = permutation_importance(predict, numeric, np.zeros((5000, 0), dtype=np.int64), target, None, groups,
                                    "multiclass")
    assert result["rows"] == 2000 and len(result["features"]) == 50
    assert time.perf_counter() - started < 5.0  # about 0.1 s here; the network's own cost comes on top
