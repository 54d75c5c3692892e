"""Deterministic train / validation / test splits, stratified for classification."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """Row positions of each part; together they partition ``range(n_rows)``."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_rows(
    n_rows: int,
    *,
    validation: float,
    test: float,
    seed: int,
    classes: np.ndarray | None = None,
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

    Returns:
        The split.
    """
    rows = np.arange(n_rows)
    rest, test_rows = _take(rows, test, seed, classes)
    rest_classes = classes[rest] if classes is not None else None
    train_rows, validation_rows = _take(rest, validation, seed + 1, rest_classes)
    return Split(np.sort(train_rows), np.sort(validation_rows), np.sort(test_rows))


def _take(rows: np.ndarray, fraction: float, seed: int, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    n_held = int(round(len(rows) * fraction))
    if fraction <= 0 or n_held == 0 or n_held >= len(rows):
        return rows, rows[:0]
    rng = np.random.default_rng(seed)
    if classes is not None and _can_stratify(classes, n_held, len(rows)):
        held_positions = _stratified(classes, n_held, rng)
    else:
        held_positions = rng.permutation(len(rows))[:n_held]
    mask = np.zeros(len(rows), dtype=bool)
    mask[held_positions] = True
    return rows[~mask], rows[mask]


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
    if classes is None:
        return False
    counts = np.bincount(classes)
    counts = counts[counts > 0]
    # Two rows per class and room for every class on both sides, or proportions mean little.
    return bool(counts.min() >= 2 and n_held >= len(counts) and n_rows - n_held >= len(counts))


def fold_rows(rows: np.ndarray, n_folds: int, *, seed: int, classes: np.ndarray | None = None) -> list[np.ndarray]:
    """Partition ``rows`` into ``n_folds`` sorted, near-equal folds, each class spread evenly.

    Rows are shuffled, ordered by class (stably) and dealt out in turn, so every fold gets each
    class's rows to within one.
    """
    order = np.random.default_rng(seed).permutation(len(rows))
    if classes is not None:
        order = order[np.argsort(classes[rows][order], kind="stable")]
    folds = np.empty(len(rows), dtype=np.int64)
    folds[order] = np.arange(len(rows)) % n_folds
    return [np.sort(rows[folds == fold]) for fold in range(n_folds)]
