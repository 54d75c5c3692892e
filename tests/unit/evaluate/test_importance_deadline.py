"""Permutation importance under a deadline (a time limit's end): fewer repeats, then fewer rows, never later.

The clock is a fake one that the predict function advances by a fixed pace a row, so the arithmetic of the
cut is checked exactly, on any machine, however busy.
"""

from __future__ import annotations

import numpy as np
import pytest

from keel.evaluate.importance import DEADLINE_ROWS, permutation_importance
from tests.unit.evaluate.conftest import Clock

PACE = 1e-4  # fake seconds a predicted row
GROUPS = {"decides": ([0], []), "nudges": ([1], []), "noise": ([2], []), "code": ([], [0])}  # 4 passes a repeat set


def _arrays(n_rows: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(n_rows, 3)).astype(np.float32)
    categorical = rng.integers(2, 6, size=(n_rows, 1)).astype(np.int64)
    return numeric, categorical, (numeric[:, 0] > 0).astype(np.int64), None


def _predict(clock: Clock):  # type: ignore[no-untyped-def]
    def predict(numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        clock.now += PACE * len(numbers)
        positive = 1.0 / (1.0 + np.exp(-(4.0 * numbers[:, 0] + 0.3 * numbers[:, 1])))
        return np.stack([1.0 - positive, positive], axis=1)
    return predict


def _run(clock: Clock, deadline_after: float | None, n_rows: int = 600) -> dict:
    deadline = None if deadline_after is None else clock.now + deadline_after
    result = permutation_importance(_predict(clock), *_arrays(n_rows), GROUPS, "binary", deadline=deadline)
    result["ended"] = clock.now
    result["deadline"] = deadline
    return result


def test_a_deadline_far_enough_changes_nothing(clock: Clock) -> None:
    free, timed = _run(clock, None), _run(clock, 1000.0)
    assert (timed["rows"], timed["repeats"]) == (600, 5)
    assert timed["features"] == free["features"]


def test_fewer_repeats_where_the_first_feature_s_pace_says_five_would_end_late(clock: Clock) -> None:
    # The unshuffled pass: 600 rows, 0.06 s; the first feature with 5 repeats: 3,000 rows, 0.3 s (0.36 s in).
    # Each repeat kept then costs 3 features x 0.06 s and a 0.06 s pass: 0.54 s left fits two (0.48 s).
    result = _run(clock, 0.9)
    assert (result["rows"], result["repeats"]) == (600, 2)
    assert result["ended"] <= result["deadline"]
    # The first feature keeps its first two shuffles: what a run of two repeats draws for it.
    two = permutation_importance(_predict(clock), *_arrays(), GROUPS, "binary", repeats=2)
    first = next(feature for feature in result["features"] if feature["name"] == "decides")
    assert first == next(feature for feature in two["features"] if feature["name"] == "decides")


def test_the_reuse_is_rebuilt_on_the_repeats_kept(clock: Clock) -> None:
    built: list[int] = []

    def around(numbers: np.ndarray, codes: np.ndarray):  # type: ignore[no-untyped-def]
        built.append(len(numbers))
        clock.now += PACE * len(numbers)  # building it is a pass over its rows
        return _predict(clock)

    deadline = clock.now + 0.9
    result = permutation_importance(_predict(clock), *_arrays(), GROUPS, "binary", deadline=deadline, around=around)
    assert built[0] == 5 * 600 and built[-1] == result["repeats"] * 600 and len(built) == 2
    assert result["repeats"] < 5 and clock.now <= deadline


def test_fewer_rows_where_one_repeat_would_end_late(clock: Clock) -> None:
    # After the unshuffled pass 0.12 s is left: 0.03 s a feature, 300 rows at 1e-4 s.
    result = _run(clock, 0.18)
    assert (result["rows"], result["repeats"]) == (300, 1)
    assert result["ended"] <= result["deadline"] + 1e-9


def test_a_deadline_already_past_still_ranks_on_the_fewest_rows(clock: Clock) -> None:
    result = _run(clock, -1.0)
    assert (result["rows"], result["repeats"]) == (DEADLINE_ROWS, 1)
    assert result["features"][0]["name"] == "decides"
    small = _run(clock, -1.0, n_rows=150)  # fewer rows than the floor: all of them, once
    assert (small["rows"], small["repeats"]) == (150, 1)


def test_a_machine_slowed_part_way_cuts_the_repeats_of_the_features_left(clock: Clock) -> None:
    """The first feature's pace promised that all 5 shuffles fit; then other work slowed every prediction 4x (a
    real run: loans under --time-limit 15 beside another training, importance 10.2 s where 5.45 s was kept).
    The pace is checked after every feature: the features left take fewer shuffles, the ones done keep theirs."""
    from keel.evaluate.importance import shuffles_said

    groups = {f"f{index}": ([index % 3], []) for index in range(6)}
    calls = [0]

    def slowing(numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
        calls[0] += 1  # the unshuffled pass, then a call a feature
        clock.now += PACE * len(numbers) * (4 if calls[0] >= 4 else 1)  # slowed from the third feature on
        return _predict(Clock())(numbers, codes)

    numeric, categorical, target, _ = _arrays()
    deadline = clock.now + 2.0  # 0.06 s unshuffled + 6 features x 0.3 s fit at the first pace
    result = permutation_importance(slowing, numeric, categorical, target, None, groups, "binary", deadline=deadline)
    repeats = {feature["name"]: feature["repeats"] for feature in result["features"]}
    assert repeats == {"f0": 5, "f1": 5, "f2": 5, "f3": 1, "f4": 1, "f5": 1}
    assert result["repeats"] == 1 and shuffles_said(result) == "1 to 5"
    # Without the check: 0.66 s, then 4 features at 1.2 s, ending 4.86 s past the start; with it 2.58 s.
    assert clock.now - (deadline - 2.0) == pytest.approx(0.06 + 0.6 + 1.2 + 3 * 0.24)
    # Never slowed: the same features, all 5 shuffles, no per-feature count.
    calls[0] = -10**6
    steady = permutation_importance(slowing, numeric, categorical, target, None, groups, "binary",
                                    deadline=clock.now + 2.0)
    assert steady["repeats"] == 5 and all("repeats" not in feature for feature in steady["features"])
    assert shuffles_said(steady) == "5"
