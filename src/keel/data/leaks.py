"""Columns that give the target away on their own (a leak): a note before training, not an error.

A column computed from the target (birthwt's ``bwt`` beside ``low = bwt < 2500``, Wage's ``logwage`` beside
``wage``) or known only after it trains a model that scores nearly perfectly and then fails on new rows, where the
column is not there yet. Only permutation importance showed such a column before, after the whole training run.

Each number, binary and category column is scored alone on a sample of the training rows: a number by how well
its order alone ranks the target (ROC-AUC, or Spearman's correlation for a regression), and every column by a
lookup of the target per value (numbers in quantile bins) learned on one half of the sample and scored on the
other, so that an identifier, unique per row, scores nothing. A column at or above ``THRESHOLD`` gets a note.
"""

from __future__ import annotations

import json
import shlex
from typing import Sequence

import numpy as np
import pandas as pd

from keel.data.values import category_strings, to_numeric
from keel.evaluate.metrics import average_ranks, ranked_roc_auc

# The score at or above which a column alone "predicts the target almost exactly", from FULL_BAR_ROWS scored rows
# on. Chosen on data (bench/leaks.py): on 30 real tables the highest honest column scored 0.979; the four leaks,
# 0.996 to 1.000. Fewer rows score noisily, so the bar rises towards 1 below that (threshold()): at 0.99 flat, an
# honest column of ROC-AUC 0.97 was named in 9 of 300 tables of 120 rows (iris' Petal.Width at 0.997), at the
# risen bar in 1.
THRESHOLD = 0.99
FULL_BAR_ROWS = 1000
# Rows scored: enough for a stable score, few enough that a wide table pays well under a second.
SAMPLE = 10_000
# Fewer labelled rows (or rows where the column is present) than this score too noisily to say anything.
MIN_ROWS = 100
# Quantile bins of a number column in the lookup; a column with at most DISTINCT values has one bin per value.
BINS = 32
DISTINCT = 256
# The classes scored in the lookup at most (the most frequent): each costs a pass over the sampled rows.
CLASSES = 20


def leak_notes(frame: pd.DataFrame, rows: np.ndarray, columns: Sequence[tuple[str, str]], target_name: str,
               target: np.ndarray, task: str, *, seed: int, groups: np.ndarray | None = None,
               order: np.ndarray | None = None) -> list[str]:
    """A note for each column whose values alone predict the target almost exactly.

    Args:
        frame: The table.
        rows: The positions in ``frame`` of the rows to score (training and validation ones, never test rows).
        columns: (name, type) of the features: number, binary and category columns are checked.
        target_name: The target column's name, for the notes.
        target: Class indices (classification) or numbers (regression), one per position in ``rows``.
        task: binary, multiclass or regression.
        seed: Seed of the sample and of its halves.
        groups: A group code per position in ``rows`` (``training.split_by``): the lookup's halves keep each
            group whole, as the split does, so a column naming the group is no leak.
        order: A sortable key per position in ``rows`` (``training.order_by``): the lookup learns on the
            earlier half and is scored on the later one, as the split holds out the latest rows.

    Returns:
        One note per such column, the strongest first.
    """
    target = np.asarray(target)
    if len(target) < MIN_ROWS:
        return []
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(target))[:SAMPLE])
    y = target[sample]
    regression = task == "regression"
    halves = _halves(len(sample), rng, None if groups is None else groups[sample],
                     None if order is None else order[sample])
    found: list[tuple[float, str]] = []
    for name, kind in columns:
        if kind not in ("number", "binary", "category"):
            continue
        series = frame[name].iloc[rows[sample]]  # only the sampled rows are copied
        if kind == "number":
            score, how, n_scored = _number_score(to_numeric(series, column=name).astype(np.float64), y, halves, task)
        else:
            score, how, n_scored = _lookup_score(_codes(series), y, halves, regression), _LOOKUP[regression], len(y)
        # The bar and the count are those of the rows the score was taken on (a sparse number's present ones).
        if score is not None and score >= threshold(n_scored):
            found.append((score, _note(name, target_name, score, how, n_scored, len(sample) < len(target))))
    return [note for _, note in sorted(found, key=lambda item: -item[0])]


def threshold(n_rows: int) -> float:
    """The score that names a column, scored on ``n_rows`` rows: THRESHOLD from FULL_BAR_ROWS on, nearer 1 below
    (0.9988 on 120 rows, 0.9985 on 150)."""
    return 1.0 - (1.0 - THRESHOLD) * min(1.0, n_rows / FULL_BAR_ROWS)


def _halves(n_rows: int, rng: np.random.Generator, groups: np.ndarray | None,
            order: np.ndarray | None) -> np.ndarray:
    """True where a row is in the half the lookup learns on: at random, whole groups, or the earlier rows."""
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
        return (rng.permutation(int(inverse.max()) + 1) % 2 == 0)[inverse]
    if order is not None:
        return pd.Series(order).rank(method="first").to_numpy() <= n_rows / 2
    return rng.permutation(n_rows) % 2 == 0


# How a score was reached -> the words for it in a note.
_LOOKUP = {True: "R² of its per-value mean on held-out rows", False: "ROC-AUC of its per-value class shares on "
           "held-out rows"}
_RANK = {True: "Spearman's rank correlation", False: "ROC-AUC of its values"}


def _note(name: str, target_name: str, score: float, how: str, n_rows: int, sampled: bool) -> str:
    return (f"column {name!r} alone predicts the target {target_name!r} almost exactly ({how} {score:.3f}, on "
            f"{n_rows:,} {'sampled ' if sampled else ''}training and validation rows): if it is computed from the "
            "target or known only after it (a leak), the model will score well here and fail on new rows; drop it "
            f"(--drop {shlex.quote(name)}, or drop_columns: [{json.dumps(name)}] in the config). If it is a genuine input, ignore this note.")


def _number_score(values: np.ndarray, y: np.ndarray, halves: np.ndarray,
                  task: str) -> tuple[float | None, str, int]:
    """The better of the rank score (present rows) and the binned lookup's, with the words for it and the number
    of rows it was taken on."""
    regression = task == "regression"
    present = ~np.isnan(values)
    # A multiclass target's middle classes sit mid-order whatever the column: only its lookup can name it.
    rank = (_rank_score(values[present], y[present], regression)
            if task != "multiclass" and present.sum() >= MIN_ROWS else None)
    lookup = _lookup_score(_bins(values, halves), y, halves, regression)
    if rank is not None and (lookup is None or rank >= lookup):
        return rank, _RANK[regression], int(present.sum())
    return lookup, _LOOKUP[regression], len(values)


def _rank_score(values: np.ndarray, y: np.ndarray, regression: bool) -> float | None:
    """|Spearman| for a regression; for two classes, the ROC-AUC of the values (either direction)."""
    ranks = average_ranks(values)
    if regression:
        if np.ptp(values) == 0 or np.ptp(y) == 0:
            return None
        correlation = float(np.corrcoef(ranks, average_ranks(y))[0, 1])
        return abs(correlation) if np.isfinite(correlation) else None
    area = _auc(y == y.max(), ranks)
    return None if area is None else max(area, 1.0 - area)


def _lookup_score(codes: np.ndarray, y: np.ndarray, halves: np.ndarray, regression: bool) -> float | None:
    """The target per code, learned on one half and scored on the other (codes unseen there get the overall mean)."""
    learn, score = halves, ~halves
    if score.sum() < MIN_ROWS // 2 or learn.sum() < MIN_ROWS // 2:
        return None
    n_codes = int(codes.max()) + 1
    seen = np.bincount(codes[learn], minlength=n_codes)
    if regression:
        y = y.astype(np.float64)
        mean = float(y[learn].mean())
        sums = np.bincount(codes[learn], weights=y[learn], minlength=n_codes)
        predicted = np.where(seen > 0, sums / np.maximum(seen, 1), mean)[codes[score]]
        with np.errstate(over="ignore", invalid="ignore"):
            spread = float(((y[score] - y[score].mean()) ** 2).sum())
            r2 = 1.0 - float(((y[score] - predicted) ** 2).sum()) / spread if spread else None
        return r2 if r2 is not None and np.isfinite(r2) else None  # huge targets overflow: the ranks still speak
    # The classes in both halves (a rare class may miss one), the most frequent CLASSES of them: a leak tells
    # each class apart, so a few of them say so, and each costs a pass over the rows.
    in_both = np.intersect1d(np.unique(y[learn]), np.unique(y[score]))
    if len(in_both) < 2:
        return None
    counts = np.bincount(y[score].astype(np.int64))[in_both]
    scored = in_both[np.argsort(-counts, kind="stable")[:CLASSES]]
    areas: list[float] = []
    for k in (scored[:1] if len(np.unique(y)) == 2 else scored):  # binary: one class's area is the other's
        positive = (y == k).astype(np.float64)
        prior = float(positive[learn].mean())
        hits = np.bincount(codes[learn], weights=positive[learn], minlength=n_codes)
        share = (hits + prior) / (seen + 1.0)  # one pseudo-row at the prior: a value seen once is no certainty
        areas.append(ranked_roc_auc(y[score] == k, _code_ranks(codes[score], share)))
    return float(np.mean(areas))


def _codes(series: pd.Series) -> np.ndarray:
    """One integer per distinct canonical value, missing values one more."""
    codes, _ = pd.factorize(pd.Series(category_strings(series), dtype=object), use_na_sentinel=False)
    return codes.astype(np.int64)


def _bins(values: np.ndarray, halves: np.ndarray) -> np.ndarray:
    """Quantile bins of the learning half's values (missing values one more bin); each value its own bin where
    they are few (a number that codes a class)."""
    present = values[halves & ~np.isnan(values)]
    if not len(present):
        return np.zeros(len(values), dtype=np.int64)
    distinct = np.unique(present)
    edges = (distinct[1:] if len(distinct) <= DISTINCT else
             np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])))
    codes = np.searchsorted(edges, values, side="right")
    codes[np.isnan(values)] = len(edges) + 1
    return codes.astype(np.int64)


def _code_ranks(codes: np.ndarray, per_code: np.ndarray) -> np.ndarray:
    """The average ranks of ``per_code[codes]``, from the few distinct codes rather than a sort of every row."""
    distinct, group = np.unique(per_code, return_inverse=True)
    sizes = np.bincount(group, weights=np.bincount(codes, minlength=len(per_code)), minlength=len(distinct))
    average = np.cumsum(sizes) - (sizes - 1) / 2  # a group of c ties ending at rank e shares e - (c - 1) / 2
    return average[group][codes]


def _auc(positive: np.ndarray, ranks: np.ndarray) -> float | None:
    """ROC-AUC from average ranks, None without both positives and negatives."""
    return ranked_roc_auc(positive, ranks) if 0 < positive.sum() < len(positive) else None
