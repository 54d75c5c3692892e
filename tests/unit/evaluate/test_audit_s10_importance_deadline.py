"""Audit s10 of ce12ec0 / 805f542: permutation importance under a deadline (a time limit's end).

A fake clock that every predict (and every build of ``around``) advances by a fixed pace a row, as in
tests/unit/evaluate/test_importance_deadline.py, so the cut's arithmetic is checked exactly on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from keel.evaluate.importance import DEADLINE_ROWS, permutation_importance
from tests.unit.evaluate.conftest import Clock

PACE = 1e-4  # fake seconds a predicted row (the whole network and the reuse alike: the reuse is never slower)


def _arrays(n_rows: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n_rows, 3)).astype(np.float32)
    categorical = rng.integers(2, 6, size=(n_rows, 1)).astype(np.int64)
    return numeric, categorical, (numeric[:, 0] > 0).astype(np.int64)


def _probabilities(numbers: np.ndarray) -> np.ndarray:
    positive = 1.0 / (1.0 + np.exp(-(4.0 * numbers[:, 0] + 0.3 * numbers[:, 1])))
    return np.stack([1.0 - positive, positive], axis=1)


def _predict(clock: Clock, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    def predict(numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        clock.now += PACE * len(numbers)
        if calls is not None:
            calls.append(len(numbers))
        return _probabilities(numbers)
    return predict


def _around(clock: Clock, built: list[int]):  # type: ignore[no-untyped-def]
    def around(numbers: np.ndarray, codes: np.ndarray):  # type: ignore[no-untyped-def]
        built.append(len(numbers))
        clock.now += PACE * len(numbers)  # building the reuse is a pass over the stacked rows
        return _predict(clock)
    return around


def _deadline_one_shuffle_just_fits(clock: Clock, n_rows: int, shuffled_features: int) -> float:
    """A deadline by which the unshuffled pass, the reuse's build and one shuffle of every feature fit with 5%
    to spare, all at the unshuffled pass's pace: the case where no rows are cut and repeats are decided later."""
    unshuffled = PACE * n_rows
    return clock.now + unshuffled + (shuffled_features + 1) * PACE * n_rows * 1.05


@pytest.mark.parametrize("groups", [
    {"decides": ([0], []), "nudges": ([1], [])},
    {"decides": ([0], []), "nudges": ([1], []), "noise": ([2], []), "code": ([], [0])},
], ids=["two features", "four features"])
def test_importance_ends_by_a_deadline_that_fits_one_shuffle_of_every_feature(clock: Clock, groups) -> None:
    """BUG (805f542): expected: importance ends by the deadline (README: "Permutation importance finishes by the
    limit's end"). Here one shuffle of every feature fits with 5% to spare, so no rows are cut; but ``around`` is
    then built on all 5 stacked repeats (5 passes, counted as 1 in the up-front check) and the first feature
    takes all 5 shuffles before repeats are reconsidered: about 4 full passes and 4 shuffled passes of the
    sample past the deadline (ce12ec0 cut to 1 repeat up front here and ended in time)."""
    built: list[int] = []
    n_rows = 600
    deadline = _deadline_one_shuffle_just_fits(clock, n_rows, len(groups))
    numeric, categorical, target = _arrays(n_rows)
    result = permutation_importance(_predict(clock), numeric, categorical, target, None, groups, "binary",
                                    deadline=deadline, around=_around(clock, built))
    assert result["rows"] == n_rows  # one shuffle fits: no rows are cut
    assert clock.now <= deadline + 1e-9, (
        f"ended {clock.now - deadline:.3f} fake s after the deadline (the whole budget after the unshuffled pass "
        f"was {deadline - 100.0 - PACE * n_rows:.3f} s); around built on {built} rows, repeats {result['repeats']}")


def test_a_lone_feature_keeps_the_shuffles_it_already_took(clock: Clock) -> None:
    """With one shuffled feature, nothing is left to save once it is done: (a) where the up-front check fits only
    one repeat, the reuse is built once, on it, and the run ends by the deadline; (b) where the shuffles turn out
    slower than the unshuffled pass said (here 3x) and the deadline passes during the lone feature, its 5
    shuffles are kept and the reuse is not rebuilt (805f542 cut them to 1 and rebuilt after the deadline)."""
    built: list[int] = []
    groups = {"decides": ([0], [])}
    deadline = _deadline_one_shuffle_just_fits(clock, 600, 1)
    numeric, categorical, target = _arrays()
    result = permutation_importance(_predict(clock), numeric, categorical, target, None, groups, "binary",
                                    deadline=deadline, around=_around(clock, built))
    assert result["repeats"] == 1 and built == [600] and clock.now <= deadline + 1e-9

    slow: list[int] = []

    def around(numbers: np.ndarray, codes: np.ndarray):  # type: ignore[no-untyped-def]
        slow.append(len(numbers))
        clock.now += PACE * len(numbers)
        fast = _predict(clock)

        def shuffled(numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
            clock.now += 2 * PACE * len(numbers)  # with fast's own: 3x the unshuffled pace
            return fast(numbers, codes)
        return shuffled

    # Room for the build and the feature's 5 shuffles at the unshuffled pace (1 + 5 + 5 passes), not at 3x.
    deadline = clock.now + PACE * 600 * 11.5
    result = permutation_importance(_predict(clock), numeric, categorical, target, None, groups, "binary",
                                    deadline=deadline, around=around)
    assert result["repeats"] == 5 and slow == [3000] and clock.now > deadline


def test_a_first_group_without_columns_does_not_upset_the_repeat_cut(clock: Clock) -> None:
    """Guard: groups with no columns (before and after the first shuffled one) read 0 and do not count as a
    shuffled feature; the first shuffled feature keeps its first k shuffles, the ones a k-repeat run draws."""
    groups = {"empty": ([], []), "decides": ([0], []), "nudges": ([1], []), "noise": ([2], []),
              "also empty": ([], []), "code": ([], [0])}
    numeric, categorical, target = _arrays()
    deadline = clock.now + 0.9  # the existing test's case (no reuse): 2 repeats fit after the first feature's 5
    result = permutation_importance(_predict(clock), numeric, categorical, target, None, groups, "binary",
                                    deadline=deadline)
    assert (result["rows"], result["repeats"]) == (600, 2) and clock.now <= deadline
    empty = [feature for feature in result["features"] if feature["name"] in ("empty", "also empty")]
    assert all(feature["mean"] == 0.0 and feature["std"] == 0.0 for feature in empty)
    two = permutation_importance(_predict(clock), numeric, categorical, target, None, groups, "binary", repeats=2)
    first = next(feature for feature in result["features"] if feature["name"] == "decides")
    assert first == next(feature for feature in two["features"] if feature["name"] == "decides")


def _expected_rows(n_rows: int, fit: float, seed: int = 0) -> np.ndarray:
    """The rows a deadline's cut keeps, drawn as permutation_importance draws them (its first rng call when
    ``n_rows`` is at most max_rows)."""
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=max(DEADLINE_ROWS, int(fit)), replace=False))


@pytest.mark.parametrize("task", ["binary", "binary+threshold", "multiclass", "regression"])
def test_the_row_cut_keeps_predictions_targets_and_weights_aligned(clock: Clock, task: str) -> None:
    """Guard: after the row cut the baseline is the (weighted) score of exactly the kept rows' unshuffled
    predictions against their own targets: nothing is shifted by the second sample."""
    n_rows = 900
    rng = np.random.default_rng(3)
    numeric, categorical, _ = _arrays(n_rows, seed=3)
    weight = rng.uniform(0.1, 5.0, n_rows)
    threshold = 0.8 if task == "binary+threshold" else None
    kind = "binary" if task.startswith("binary") else task
    if kind == "regression":
        target = 3.0 * numeric[:, 0] + rng.normal(0, 0.5, n_rows)

        def values(numbers: np.ndarray) -> np.ndarray:
            return 3.0 * numbers[:, 0]
        output = values
    elif kind == "multiclass":
        target = np.digitize(numeric[:, 0], [-0.5, 0.5]).astype(np.int64)
        target[rng.choice(n_rows, 200, replace=False)] = 1  # some rows wrong, so the rows kept matter

        def softmax(numbers: np.ndarray) -> np.ndarray:
            logits = np.stack([-3 * numbers[:, 0], np.zeros(len(numbers)), 3 * numbers[:, 0]], axis=1)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        output = softmax
    else:
        target = (numeric[:, 0] + rng.normal(0, 0.7, n_rows) > 0).astype(np.int64)

        def positive(numbers: np.ndarray) -> np.ndarray:
            return _probabilities(numbers)[:, 1]  # (n,): the binary shape
        output = positive

    def predict(numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        clock.now += PACE * len(numbers)
        return output(numbers)

    groups = {"a": ([0], []), "b": ([1], []), "c": ([2], []), "code": ([], [0])}
    # After the unshuffled pass (0.09 s) 0.15 s is left: 4 passes (one a feature) of about 375 rows.
    deadline = clock.now + PACE * n_rows + 0.15
    result = permutation_importance(predict, numeric, categorical, target, weight, groups, kind,
                                    threshold=threshold, deadline=deadline)
    assert 370 <= result["rows"] <= 380 and result["repeats"] == 1
    keep = _expected_rows(n_rows, result["rows"])
    kept = output(numeric[keep])
    w = weight[keep]
    if kind == "regression":
        expected = float(np.sqrt(((kept - target[keep]) ** 2 * w).sum() / w.sum()))
    else:
        if kept.ndim == 1:
            kept = np.stack([1 - kept, kept], axis=1)
        predicted = (kept[:, 1] >= threshold).astype(np.int64) if threshold is not None else kept.argmax(axis=1)
        expected = float(((predicted == target[keep]) * w).sum() / w.sum())
    assert result["baseline"] == pytest.approx(expected, rel=1e-12)


def test_without_a_deadline_importance_draws_what_it_drew_before_the_deadline_existed(clock: Clock) -> None:
    """Guard: without a deadline (and with one far enough) the result is the pre-ce12ec0 algorithm's, bit for bit:
    the same sampled rows (2,000 of 2,500), the same shuffles, the same figures."""
    n_rows = 2500
    numeric, categorical, target = _arrays(n_rows, seed=5)
    weight = np.random.default_rng(5).uniform(0.5, 2.0, n_rows)
    groups = {"decides": ([0], []), "empty": ([], []), "nudges": ([1], []), "noise": ([2], []), "code": ([], [0])}
    expected = _before(numeric, categorical, target, weight, groups)
    for deadline in (None, clock.now + 1e6):
        result = permutation_importance(_predict(clock), numeric, categorical, target, weight, groups, "binary",
                                        deadline=deadline, around=_around(clock, []))
        assert (result["rows"], result["repeats"]) == (2000, 5)
        assert result["baseline"] == expected["baseline"] and result["features"] == expected["features"]


def _before(numeric: np.ndarray, categorical: np.ndarray, target: np.ndarray, weight: np.ndarray,
            groups: dict) -> dict:
    """permutation_importance as of 214f9cd (before the deadline), with the defaults (2,000 rows, 5 repeats)."""
    max_rows, repeats = 2000, 5
    rng = np.random.default_rng(0)
    n_rows = len(target)
    if n_rows > max_rows:
        keep = np.sort(rng.choice(n_rows, size=max_rows, replace=False))
        numeric, categorical, target, weight = numeric[keep], categorical[keep], target[keep], weight[keep]
        n_rows = max_rows

    def score(output: np.ndarray) -> np.ndarray:
        k = len(output) // n_rows
        correct = output.argmax(axis=1).reshape(k, n_rows) == target
        return (correct * weight).sum(axis=1) / weight.sum()

    baseline = float(score(_probabilities(numeric))[0])
    features = []
    for name, (numbers, codes) in groups.items():
        if len(numbers) or len(codes):
            order = np.concatenate([rng.permutation(n_rows) for _ in range(repeats)])
            stacked = np.tile(numeric, (repeats, 1))
            source = order + np.repeat(np.arange(repeats) * n_rows, n_rows)
            if len(numbers):
                stacked[:, numbers] = stacked[np.ix_(source, numbers)]
            scores = score(_probabilities(stacked))
        else:
            scores = np.full(repeats, baseline)
        drops = baseline - scores
        features.append({"name": name, "mean": float(drops.mean()), "std": float(drops.std())})
    features.sort(key=lambda feature: -float(feature["mean"]))
    return {"baseline": baseline, "features": features}
