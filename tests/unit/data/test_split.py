from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.data.split import fold_rows, split_rows


@given(st.integers(1, 400), st.floats(0, 0.9), st.floats(0, 0.9), st.integers(0, 10_000), st.booleans())
@settings(max_examples=80, deadline=None)
def test_splits_partition_the_rows_deterministically(n_rows, validation, test, seed, stratified) -> None:
    classes = np.random.default_rng(seed).integers(0, 3, n_rows) if stratified else None
    split = split_rows(n_rows, validation=validation, test=test, seed=seed, classes=classes)
    together = np.concatenate([split.train, split.validation, split.test])
    assert sorted(together.tolist()) == list(range(n_rows))
    assert len(split.train) >= 1
    again = split_rows(n_rows, validation=validation, test=test, seed=seed, classes=classes)
    assert all(np.array_equal(a, b) for a, b in zip(
        (split.train, split.validation, split.test), (again.train, again.validation, again.test)))


def test_sizes_follow_keras_semantics_and_stratify() -> None:
    classes = np.array([0] * 900 + [1] * 100)
    split = split_rows(1000, validation=0.1, test=0.2, seed=0, classes=classes)
    assert (len(split.test), len(split.validation), len(split.train)) == (200, 80, 720)
    assert classes[split.test].mean() == 0.1 and classes[split.validation].mean() == 0.1


def test_different_seeds_give_different_splits() -> None:
    first = split_rows(100, validation=0.1, test=0.2, seed=1)
    second = split_rows(100, validation=0.1, test=0.2, seed=2)
    assert not np.array_equal(first.test, second.test)


def test_folds_partition_the_rows_and_spread_each_class() -> None:
    classes = np.array([0] * 50 + [1] * 10 + [2] * 5)
    rows = np.arange(3, 65)  # positions into ``classes``, as the non-test rows are
    folds = fold_rows(rows, 5, seed=0, classes=classes)
    assert sorted(np.concatenate(folds).tolist()) == rows.tolist()
    assert all(np.all(np.diff(fold) > 0) for fold in folds)
    for label in (0, 1, 2):
        counts = [int((classes[fold] == label).sum()) for fold in folds]
        assert max(counts) - min(counts) <= 1
    assert [f.tolist() for f in fold_rows(rows, 5, seed=0, classes=classes)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in fold_rows(rows, 5, seed=1)] != [f.tolist() for f in folds]


def test_split_says_whether_it_drew_class_by_class() -> None:
    """The run's first note calls a split "stratified by class" from this flag: a regression target (no classes)
    or a class of one row (too few to spread) is split at random, and says so."""
    classes = np.repeat([0, 1], 50)
    assert split_rows(100, validation=0.1, test=0.2, seed=0, classes=classes).stratified
    assert not split_rows(100, validation=0.1, test=0.2, seed=0).stratified  # regression
    lonely = classes.copy()
    lonely[0] = 2  # one row of class 2: cannot be on both sides
    assert not split_rows(100, validation=0.1, test=0.2, seed=0, classes=lonely).stratified
    assert not split_rows(100, validation=0.0, test=0.0, seed=0, classes=classes).stratified  # nothing held out


def test_first_note_says_stratified_only_for_a_stratified_split() -> None:
    import pandas as pd

    import keel

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.normal(size=120)})
    config = {"preset": "fast", "training.epochs": 1}
    regression = keel.fit(frame, target="y", config=config, quiet=True)
    assert regression.notes[0] == "rows: 86 for training, 10 for validation, 24 for test (a random split)"
    frame["y"] = np.where(frame["x"] > 0, "up", "down")
    classified = keel.fit(frame, target="y", config=config, quiet=True)
    assert classified.notes[0].endswith("(a random split, stratified by class)")
    # Bagged: the test rows drawn class by class, and the folds dealt out class by class (fold_rows).
    bagged = keel.fit(frame, target="y", config={**config, "training.bagging": 3}, quiet=True, importance=False)
    assert "(a random split, stratified by class); 3 bagged networks" in bagged.notes[0]


def test_an_unstratified_split_says_why_naming_the_class() -> None:
    """One class of a single row turned stratification off for every class, and the note said only "(a random
    split)": the split now says which class, or that there are more classes than held-out rows."""
    classes = np.repeat([0, 1], 50)
    lonely = classes.copy()
    lonely[0] = 2
    split = split_rows(100, validation=0.1, test=0.2, seed=0, classes=lonely, labels=["'a'", "'b'", "'x'"])
    assert not split.stratified
    assert split.unstratified == "not stratified: class 'x' has a single labelled row"
    assert split_rows(100, validation=0.1, test=0.2, seed=0, classes=lonely).unstratified == (
        "not stratified: class 2 has a single labelled row")  # no labels: the class index
    two = np.r_[lonely[:-1], 3]
    assert split_rows(100, validation=0.1, test=0.2, seed=0, classes=two, labels=["0", "1", "7", "9"]).unstratified == (
        "not stratified: classes 7 and 9 have a single labelled row each")
    many = np.repeat(np.arange(20), 2)  # 20 classes of 2 rows, 8 held out for test
    assert split_rows(40, validation=0.1, test=0.2, seed=0, classes=many).unstratified == (
        "not stratified: 20 classes, more than the 8 test rows")
    wide = np.repeat(np.arange(5), 4)  # 5 classes, 20 rows, 16 held out: 4 left for training and validation
    assert split_rows(20, validation=0.0, test=0.8, seed=0, classes=wide).unstratified == (
        "not stratified: 5 classes, more than the 4 training and validation rows")


def test_a_validation_part_drawn_at_random_after_a_stratified_test_part_says_so() -> None:
    """The test rows drawn class by class, then a class left with one row: only the validation rows were random."""
    found = 0
    for seed in range(200):
        classes = np.concatenate([np.repeat([0, 1], 40), np.full(2 + seed % 2, 2)])
        split = split_rows(len(classes), validation=0.2, test=0.3, seed=seed, classes=classes, labels=["0", "1", "'c'"])
        if not split.stratified and len(split.validation):
            found += 1
            assert split.unstratified == ("the validation rows not stratified: class 'c' has a single row outside "
                                          "the test rows")
    assert found


def test_a_stratified_or_regression_split_gives_no_reason() -> None:
    classes = np.repeat([0, 1], 50)
    assert split_rows(100, validation=0.1, test=0.2, seed=0, classes=classes).unstratified is None
    assert split_rows(100, validation=0.1, test=0.2, seed=0).unstratified is None  # regression: never stratified
    assert split_rows(100, validation=0.0, test=0.0, seed=0, classes=classes).unstratified is None  # nothing held out
    lonely = np.r_[classes[:-1], 2]
    assert split_rows(100, validation=0.1, test=0.2, seed=0, classes=lonely, groups=np.arange(100) % 10).unstratified is None


def test_one_held_out_row_is_said_in_the_singular() -> None:
    assert split_rows(5, validation=0.0, test=0.2, seed=0, classes=np.array([0, 0, 1, 1, 1])).unstratified == (
        "not stratified: 2 classes, more than the 1 test row")
