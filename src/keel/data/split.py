"""Deterministic train / validation / test splits: random (stratified for classes), grouped, or by time.

A grouped split (``training.split_by``) keeps every row of a group in one part, so a customer seen in
training does not inflate the test score; a time-ordered split (``training.order_by``) holds out the
latest rows, as a model deployed today predicts tomorrow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Split:
    """Row positions of each part; together they partition ``range(n_rows)``."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    # Every held-out part was drawn class by class (a random split of a classification target whose classes
    # each have rows enough): what the run's first note may call "stratified by class".
    stratified: bool = False
    # Why a random split of a classification target was not drawn class by class (a phrase for the first note,
    # e.g. "not stratified: class 'x' has a single labelled row"); None where it was, or nothing was held out.
    unstratified: str | None = None
    # The part that phrase is about: "test", or "validation" (which bagging's folds, dealt class by class, replace).
    unstratified_part: str | None = None


def split_rows(
    n_rows: int,
    *,
    validation: float,
    test: float,
    seed: int,
    classes: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    order: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
) -> Split:
    """Split row positions into train, validation and test parts.

    The test part is taken first, then ``validation`` is a fraction of what remains (as Keras'
    ``validation_split`` is a fraction of the training data). A part that would get no row, or
    leave training without one, is empty instead.

    Args:
        n_rows: Number of rows.
        validation: Fraction of the non-test rows held out for validation.
        test: Fraction of all rows held out for testing.
        seed: Seed; the same inputs give the same split.
        classes: Class index per row, to stratify on; None for regression.
        groups: Group code per row (``split_by``): each group lands whole in one part.
        order: A sortable key per row (``order_by``): the latest rows are held out, test first.
        labels: Each class as a message shows it, in index order, for ``Split.unstratified``; None: the indices.

    Returns:
        The split.
    """
    rows = np.arange(n_rows)
    if order is not None:
        rest, test_rows = _take_latest(rows, test, order)
        train_rows, validation_rows = _take_latest(rest, validation, order)
    elif groups is not None:
        rest, test_rows = _take_groups(rows, test, seed, groups)
        train_rows, validation_rows = _take_groups(rest, validation, seed + 1, groups)
    else:
        rest, test_rows, test_stratified = _take(rows, test, seed, classes)
        rest_classes = classes[rest] if classes is not None else None
        train_rows, validation_rows, validation_stratified = _take(rest, validation, seed + 1, rest_classes)
        held = [drawn for drawn, part in ((test_stratified, test_rows), (validation_stratified, validation_rows))
                if len(part)]
        why = part = None  # a held-out part of rows drawn at random though there are classes: the first one's reason
        if classes is not None and len(test_rows) and not test_stratified:
            why, part = f"not stratified: {_refusal(classes, len(test_rows), n_rows, 'test', labels)}", "test"
        elif rest_classes is not None and len(validation_rows) and not validation_stratified:
            reason = _refusal(rest_classes, len(validation_rows), len(rest), "validation", labels,
                              after_test=bool(len(test_rows)))
            why, part = f"{'the validation rows ' if len(test_rows) else ''}not stratified: {reason}", "validation"
        return Split(np.sort(train_rows), np.sort(validation_rows), np.sort(test_rows),
                     stratified=bool(held) and all(held), unstratified=why, unstratified_part=part)
    return Split(np.sort(train_rows), np.sort(validation_rows), np.sort(test_rows))


def _take_latest(rows: np.ndarray, fraction: float, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the latest ``fraction`` of ``rows``; rows with equal keys stay on one side."""
    n_held = int(round(len(rows) * fraction))
    if fraction <= 0 or n_held == 0 or n_held >= len(rows):
        return rows, rows[:0]
    keys = order[rows]
    cut = np.sort(keys, kind="stable")[len(rows) - n_held]
    held = keys >= cut
    if held.all():  # the boundary's key is the earliest: hold out only what is strictly later
        held = keys > cut
    return rows[~held], rows[held]


def _take_groups(rows: np.ndarray, fraction: float, seed: int,
                 groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole groups, drawn at random, until about ``fraction`` of the rows are held out."""
    n_held = int(round(len(rows) * fraction))
    names, inverse, counts = np.unique(groups[rows], return_inverse=True, return_counts=True)
    if fraction <= 0 or n_held == 0 or len(names) < 2:
        return rows, rows[:0]
    drawn = np.random.default_rng(seed).permutation(len(names))
    reached = np.cumsum(counts[drawn])
    # Stop at the group count whose total is closest to the target, holding at least one group
    # and leaving at least one for training.
    n_groups = int(np.clip(np.argmin(np.abs(reached - n_held)) + 1, 1, len(names) - 1))
    held = np.isin(inverse, drawn[:n_groups])
    return rows[~held], rows[held]


def _take(rows: np.ndarray, fraction: float, seed: int,
          classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """The rows kept and those held out, and whether the held-out ones were drawn class by class."""
    n_held = int(round(len(rows) * fraction))
    if fraction <= 0 or n_held == 0 or n_held >= len(rows):
        return rows, rows[:0], False
    rng = np.random.default_rng(seed)
    stratified = _can_stratify(classes, n_held, len(rows))
    if stratified:
        assert classes is not None
        held_positions = _stratified(classes, n_held, rng)
    else:
        held_positions = rng.permutation(len(rows))[:n_held]
    mask = np.zeros(len(rows), dtype=bool)
    mask[held_positions] = True
    return rows[~mask], rows[mask], stratified


def _stratified(classes: np.ndarray, n_held: int, rng: np.random.Generator) -> np.ndarray:
    """Positions to hold out, each class in proportion to its count (largest remainders round up)."""
    values, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    ideal = counts * n_held / counts.sum()
    take = np.floor(ideal).astype(np.int64)
    shortfall = n_held - int(take.sum())
    # Ties between equal remainders are broken at random, so no class is favoured by its index.
    order = np.lexsort((rng.random(len(values)), -(ideal - take)))
    take[order[:shortfall]] += 1
    return np.concatenate([rng.permutation(np.flatnonzero(inverse == k))[:take[k]] for k in range(len(values))])


def _can_stratify(classes: np.ndarray | None, n_held: int, n_rows: int) -> bool:
    return classes is not None and _refusal(classes, n_held, n_rows, "test", None) is None


def _refusal(classes: np.ndarray, n_held: int, n_rows: int, part: str, labels: Sequence[str] | None, *,
             after_test: bool = False) -> str | None:
    """Why ``n_held`` of these ``n_rows`` rows cannot be drawn class by class for ``part`` (a phrase naming the
    classes by ``labels``), or None where they can. ``after_test``: the rows are those the test draw left."""
    counts = np.bincount(classes)
    present = np.flatnonzero(counts)
    # Two rows per class and room for every class on both sides, or proportions mean little.
    lone = present[counts[present] < 2]
    if len(lone):
        shown = [labels[k] if labels is not None else str(k) for k in lone[:3]]
        more = f" and {len(lone) - 3} more" if len(lone) > 3 else ""
        names = (f"class {shown[0]}" if len(lone) == 1 else
                 f"classes {', '.join(shown)}{more}" if more else f"classes {', '.join(shown[:-1])} and {shown[-1]}")
        where = "row outside the test rows" if after_test else "labelled row"
        return f"{names} {'has' if len(lone) == 1 else 'have'} a single {where}{'' if len(lone) == 1 else ' each'}"
    if n_held < len(present):
        return f"{len(present)} classes, more than the {_rows(n_held, part)}"
    if n_rows - n_held < len(present):
        return f"{len(present)} classes, more than the {_rows(n_rows - n_held, 'training and validation' if part == 'test' else 'training')}"
    return None


def _rows(count: int, part: str) -> str:
    return f"{count} {part} row{'' if count == 1 else 's'}"


def fold_rows(rows: np.ndarray, n_folds: int, *, seed: int, classes: np.ndarray | None = None,
              groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Partition ``rows`` into ``n_folds`` sorted, near-equal folds, each class spread evenly.

    Rows are shuffled, ordered by class (stably) and dealt out in turn, so every fold gets each
    class's rows to within one. With ``groups``, whole groups are dealt out instead: the largest
    first, each to the fold with the fewest rows so far.
    """
    if groups is not None:
        return _group_folds(rows, n_folds, seed, groups)
    order = np.random.default_rng(seed).permutation(len(rows))
    if classes is not None:
        order = order[np.argsort(classes[rows][order], kind="stable")]
    folds = np.empty(len(rows), dtype=np.int64)
    folds[order] = np.arange(len(rows)) % n_folds
    return [np.sort(rows[folds == fold]) for fold in range(n_folds)]


def _group_folds(rows: np.ndarray, n_folds: int, seed: int, groups: np.ndarray) -> list[np.ndarray]:
    names, inverse, counts = np.unique(groups[rows], return_inverse=True, return_counts=True)
    shuffled = np.random.default_rng(seed).permutation(len(names))
    sizes = np.zeros(n_folds, dtype=np.int64)
    fold_of = np.empty(len(names), dtype=np.int64)
    for group in shuffled[np.argsort(-counts[shuffled], kind="stable")]:
        fold_of[group] = int(np.argmin(sizes))
        sizes[fold_of[group]] += counts[group]
    assignment = fold_of[inverse]
    return [np.sort(rows[assignment == fold]) for fold in range(n_folds)]
