"""Permutation feature importance: how much the model's score drops when one feature's values are shuffled.

Works on the encoded arrays a network takes (numeric float32, categorical int64 codes) and a
``predict`` closure over them, so it needs neither torch nor pandas. A raw feature may span several
encoded columns (value and missing flag, quantile knots, a category code); they are shuffled
together, with one row permutation, so the feature stays internally consistent and only its link to
the target is broken.

Cost: one batched prediction per feature on ``rows × repeats`` rows (the repeats are stacked), so
50 features on 2,000 rows make 50 calls of 10,000 rows.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from keel.errors import DataError

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]

# The defaults of permutation_importance: rows sampled, shuffles per feature (a time limit's planning counts them).
IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 5
# The fewest rows a deadline cuts the sample to (all of them when there are fewer): one shuffle of 200 rows still
# ranks the features that matter most.
DEADLINE_ROWS = 200


def permutation_importance(
    predict: Predict,
    numeric: np.ndarray,
    categorical: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    groups: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    task: str,
    *,
    max_rows: int = IMPORTANCE_ROWS,
    repeats: int = IMPORTANCE_REPEATS,
    seed: int = 0,
    threshold: float | None = None,
    progress: Callable[[int], None] | None = None,
    source: str = "validation",
    around: Callable[[np.ndarray, np.ndarray], Predict] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Permutation importance of each raw feature, with its spread over repeats.

    Importance is the score lost when the feature is shuffled: accuracy for classification
    (baseline − shuffled), RMSE for regression (shuffled − baseline), so a positive value always
    means the model needs the feature and about 0 means it ignores it.

    Args:
        predict: ``predict(numeric, categorical)`` -> probabilities (n, n_classes) for
            classification (or (n,) positive-class probabilities for binary) or values (n,).
        numeric: (n, w) float32 encoded number columns.
        categorical: (n, c) int64 category codes.
        target: (n,) true class indices (classification) or true values (regression, in the
            units ``predict`` returns).
        weight: (n,) row weights, or None.
        groups: Raw feature name -> (its numeric column indices, its categorical column indices).
        task: ``binary``, ``multiclass`` or ``regression``.
        max_rows: At most this many rows are used, sampled with ``seed`` when there are more.
        repeats: Shuffles per feature; the result gives their mean and standard deviation.
        seed: Seeds the row sample and the shuffles: the same seed gives the same result.
        threshold: A binary model's decision threshold on the positive class's probability;
            None means the most probable class wins.
        progress: Called after each feature with the number of features done.
        source: Which rows these are (stored in the result: ``validation``, ``test``, ...).
        around: Given the repeats' stacked rows, a predict for rows that differ from them in one feature's
            columns, used for every shuffled prediction (keel's reuses the network's first layer); None:
            ``predict``. Either way the results are the same up to float rounding.
        deadline: A ``time.perf_counter()`` value to finish by (a time limit's end). At the unshuffled
            prediction's pace (an upper bound), the repeats are cut so that building ``around`` on them, the
            first feature's shuffles and one shuffle of every other feature fit, and where even one repeat does
            not, the rows too (at least ``DEADLINE_ROWS``); then, after each shuffled feature, where the pace of
            the last (up to three) says the rest would end later, fewer repeats for the rest (the first feature
            keeps its first ones, as a run of fewer repeats draws them; a later one keeps all it took). The
            result's ``repeats`` (the fewest) and ``rows`` say what was used; where features differ, each one's
            ``repeats`` its own.

    Returns:
        ``{"metric", "higher_is_better", "baseline", "rows", "repeats", "source", "seconds",
        "features": [{"name", "mean", "std"}, ...]}``, features sorted most important first (each with its
        ``repeats`` too where a deadline's cut left them unequal).

    Raises:
        DataError: The arrays disagree in length, there are no rows, or a group names a column
            the arrays do not have.
    """
    started = time.perf_counter()
    numeric = np.asarray(numeric, dtype=np.float32).reshape(len(numeric), -1)
    categorical = np.asarray(categorical, dtype=np.int64).reshape(len(categorical), -1)
    _check(numeric, categorical, target, weight, groups, task, repeats)
    rng = np.random.default_rng(seed)
    n_rows = len(target)
    if n_rows > max_rows:
        keep = np.sort(rng.choice(n_rows, size=max_rows, replace=False))
        numeric, categorical, target = numeric[keep], categorical[keep], target[keep]
        weight = None if weight is None else weight[keep]
        n_rows = max_rows
    timed = time.perf_counter()
    unshuffled = predict(numeric, categorical)
    pace = (time.perf_counter() - timed) / n_rows  # a row through the whole network
    shuffled_features = sum(1 for numbers, codes in groups.values() if len(numbers) or len(codes))
    if deadline is not None:
        # At the whole network's pace (an upper bound: ``around`` is faster), what must fit before the first
        # feature's pace is known: building ``around`` on the stacked repeats, the first feature's shuffles, and
        # one shuffle of every other feature (fewer repeats are decided after the first, at its pace).
        left = (deadline - time.perf_counter()) / max(pace, 1e-9)  # rows the time left can predict
        build, rest = (around is not None), max(shuffled_features - 1, 0)
        repeats = max(1, min(repeats, int((left / n_rows - rest) // (build + 1)))) if shuffled_features else repeats
        fit = left / max(build + shuffled_features, 1)  # rows a pass can take with one repeat
        if fit < n_rows:
            repeats = 1
            if n_rows > DEADLINE_ROWS:
                keep = np.sort(rng.choice(n_rows, size=max(DEADLINE_ROWS, int(fit)), replace=False))
                numeric, categorical, target = numeric[keep], categorical[keep], target[keep]
                weight = None if weight is None else weight[keep]
                unshuffled, n_rows = np.asarray(unshuffled)[keep], len(keep)
    score = _scorer(task, target, weight, threshold)
    baseline = float(score(unshuffled)[0])
    # The repeats are stacked into one batch: (repeats * n_rows, width).
    stacked = (np.tile(numeric, (repeats, 1)), np.tile(categorical, (repeats, 1)))
    shuffled_predict = predict if around is None else around(*stacked)
    sign = 1.0 if task != "regression" else -1.0
    features: list[dict[str, Any]] = []
    shuffled, paces = 0, []  # the shuffled features done; their seconds a repeat since the repeats last changed
    for done, (name, (numeric_group, categorical_group)) in enumerate(groups.items(), start=1):
        columns = (np.asarray(numeric_group, dtype=np.int64), np.asarray(categorical_group, dtype=np.int64))
        if len(columns[0]) or len(columns[1]):
            timed = time.perf_counter()
            order = np.concatenate([rng.permutation(n_rows) for _ in range(repeats)])  # one shuffle per repeat
            scores = score(_shuffled_predict(shuffled_predict, stacked, columns, order, n_rows))
            shuffled += 1
            rest = shuffled_features - shuffled  # (a lone or last feature keeps the shuffles it took)
            if deadline is not None and rest and repeats > 1:
                # Would the rest, at the pace of the last features (the first one's is the first measure of the
                # shuffled rows; a machine busy with other work can slow any later one), end after the deadline?
                paces.append((time.perf_counter() - timed) / repeats)
                per_repeat, left = statistics.fmean(paces[-3:]), deadline - time.perf_counter()
                if per_repeat * repeats * rest > left:
                    # Each repeat kept costs a shuffle of every remaining feature and a row's pass in rebuilding.
                    fewer = max(1, min(repeats - 1, int(left // (per_repeat * rest + pace * n_rows))))
                    if shuffled == 1:  # the first feature's first shuffles are the ones fewer repeats draw
                        scores = scores[:fewer]
                    repeats, paces = fewer, []
                    stacked = (stacked[0][:repeats * n_rows], stacked[1][:repeats * n_rows])
                    shuffled_predict = predict if around is None else around(*stacked)
        else:
            scores = np.full(repeats, baseline)
        drops = sign * (baseline - scores)
        features.append({"name": name, "mean": float(drops.mean()), "std": float(drops.std())})
        if len(columns[0]) or len(columns[1]):  # (a group without columns reads 0 however many)
            features[-1]["repeats"] = len(drops)
        if progress is not None:
            progress(done)
    if len({feature.get("repeats") for feature in features} - {None}) <= 1:  # all alike: the result's say it
        for feature in features:
            feature.pop("repeats", None)
    features.sort(key=lambda feature: -float(feature["mean"]))  # stable: ties keep the groups' order
    return {"metric": "rmse" if task == "regression" else "accuracy", "higher_is_better": task != "regression",
            "baseline": baseline, "rows": int(n_rows), "repeats": int(repeats), "source": source,
            "seconds": time.perf_counter() - started, "features": features}


def shuffles_said(result: Mapping[str, Any]) -> str:
    """How many times each feature was shuffled, in words: ``5``, or ``2 to 5`` where a deadline cut the repeats
    part-way (each feature's own ``repeats``)."""
    counts = {int(feature["repeats"]) for feature in result.get("features", []) if "repeats" in feature}
    if len(counts) > 1:
        return f"{min(counts)} to {max(counts)}"
    return str(result.get("repeats", "?"))


def _shuffled_predict(predict: Predict, stacked: tuple[np.ndarray, np.ndarray],
                      columns: tuple[np.ndarray, np.ndarray], order: np.ndarray, n_rows: int) -> np.ndarray:
    """Predict with one feature's columns shuffled in each repeat's block, then put them back.

    ``order`` holds one permutation of the rows per repeat; the same permutation moves all of the
    feature's numeric and categorical columns, so the feature stays whole.
    """
    source_rows = order + np.repeat(np.arange(len(order) // n_rows) * n_rows, n_rows)  # (repeats * n_rows,)
    saved = [array[:, index].copy() for array, index in zip(stacked, columns)]
    for array, index in zip(stacked, columns):
        if len(index):
            array[:, index] = array[np.ix_(source_rows, index)]
    try:
        return predict(*stacked)
    finally:
        for array, index, original in zip(stacked, columns, saved):
            array[:, index] = original


def _scorer(task: str, target: np.ndarray, weight: np.ndarray | None,
            threshold: float | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from stacked predictions (repeats * n, ...) to one score per repeat."""
    n_rows = len(target)
    w = np.ones(n_rows) if weight is None else np.asarray(weight, dtype=np.float64)
    total = w.sum()

    def score(output: np.ndarray) -> np.ndarray:
        output = np.asarray(output)
        repeats = len(output) // n_rows
        if task == "regression":
            error = output.reshape(repeats, n_rows).astype(np.float64) - target
            return np.sqrt((error ** 2 * w).sum(axis=1) / total)
        if output.ndim == 1:  # a binary model's positive-class probability
            output = np.stack([1.0 - output, output], axis=1)
        if task == "binary" and threshold is not None:
            predicted = (output[:, 1] >= threshold).astype(np.int64)
        else:
            predicted = output.argmax(axis=1)
        correct = predicted.reshape(repeats, n_rows) == target
        return (correct * w).sum(axis=1) / total

    return score


def _check(numeric: np.ndarray, categorical: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
           groups: Mapping[str, tuple[Sequence[int], Sequence[int]]], task: str, repeats: int) -> None:
    lengths = {"numeric": len(numeric), "categorical": len(categorical), "target": len(target)}
    if weight is not None:
        lengths["weight"] = len(weight)
    if len(set(lengths.values())) != 1:
        raise DataError(f"permutation importance needs arrays of one length; got {lengths}. "
                        "Pass the same rows' encoded features, targets and weights.")
    if not len(target):
        raise DataError("permutation importance got no rows; pass at least one labelled row "
                        "(the validation rows are empty: lower training.validation_split's floor or add rows).")
    if task not in ("binary", "multiclass", "regression"):
        raise DataError(f"permutation importance got task {task!r}; expected binary, multiclass or regression.")
    if repeats < 1:
        raise DataError(f"permutation importance needs at least one repeat; got {repeats}. Pass repeats=5.")
    for name, (numeric_columns, categorical_columns) in groups.items():
        for kind, columns, width in (("numeric", numeric_columns, numeric.shape[1]),
                                     ("categorical", categorical_columns, categorical.shape[1])):
            outside = [index for index in columns if not 0 <= index < width]
            if outside:
                raise DataError(f"feature {name!r} names {kind} column(s) {outside}, but the {kind} array has "
                                f"{width} column(s); build the groups from the same preprocessor as the arrays.",
                                column=name)
