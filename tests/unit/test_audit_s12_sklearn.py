"""Audit s12: KeelClassifier keeps y's labels and dtype (commit 28d5e50, ``_labels_as_given`` and ``predict``)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from keel.errors import KeelWarning
from keel.sklearn import KeelClassifier, _labels_as_given

RNG = np.random.default_rng(0)
X = RNG.normal(size=(90, 3))
CLASS = np.digitize(X[:, 0], [-0.4, 0.4])  # 0 / 1 / 2, about a third each


def fitted(y, X_=X):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)
        return KeelClassifier(preset="fast", epochs=3, hidden=(16,)).fit(X_, y)


def agrees_with_the_model(clf: KeelClassifier, X_) -> np.ndarray:  # type: ignore[no-untyped-def]
    """predict's labels, checked against the model's own, class by class (as text: the model's may be ints)."""
    predicted = clf.predict(X_)
    model = clf.model_.predict(clf._predict_frame(X_))
    kept = [str(label) for label in clf.model_.classes]
    assert [str(clf.classes_[kept.index(str(label))]) for label in model.tolist()] == [str(p) for p in predicted]
    return predicted


@pytest.mark.parametrize("y", [
    np.array(["lo", "mid", "hi"])[CLASS],  # numpy str_ (<U3)
    pd.Series(pd.Categorical(np.array(["lo", "mid", "hi"])[CLASS], categories=["mid", "hi", "lo"])),
    pd.Series(np.array(["lo", "mid", "hi"])[CLASS], dtype="string"),
    np.array([10, 20, 30], dtype=np.uint8)[CLASS],
    np.array([-1.0, 0.0, 2.0])[CLASS],
    np.array(["01", "1", "1.0"])[CLASS],  # distinct strings that read as the same number
])
def test_classes_and_predictions_are_y_s_own_labels(y) -> None:  # type: ignore[no-untyped-def]
    clf = fitted(y)
    given = np.unique(np.asarray(y))
    assert sorted(map(str, clf.classes_.tolist())) == sorted(map(str, given.tolist()))
    predicted = agrees_with_the_model(clf, X)
    assert set(predicted.tolist()) <= set(np.asarray(y).tolist())
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(given))
    assert (clf.classes_[proba.argmax(axis=1)] == predicted).mean() > 0.9  # columns in classes_ order


def test_mixed_label_types_are_refused_with_a_value_error() -> None:
    """Older than 28d5e50: y of ints and strings reaches np.unique (check_classification_targets lets an object
    array whose first label is a string through) and fails with numpy's TypeError "'<' not supported between
    instances of 'int' and 'str'" instead of scikit-learn's ValueError; unchanged here, so not marked a failure."""
    y = np.array(["yes", 1, 2], dtype=object)[CLASS]
    with pytest.raises((TypeError, ValueError)):
        fitted(y)


def test_labels_as_given_keeps_the_model_s_order_and_falls_back_when_ambiguous() -> None:
    assert _labels_as_given(np.array([0, 1]), np.array([0.0, 1.0])).dtype == np.float64
    assert _labels_as_given(np.array([False, True]), np.array([False, True])).tolist() == [False, True]
    # Every class found once in y: y's values, in the model's order; a class found nowhere: the model's labels.
    assert _labels_as_given(np.array([1, 2]), np.array([1.0, 2.0, 3.0])).tolist() == [1.0, 2.0]
    assert _labels_as_given(np.array(["a", "b"]), np.array([0, 1])).tolist() == ["a", "b"]


def test_clone_cross_val_score_and_pickle_keep_float_labels() -> None:
    y = np.where(X[:, 0] > 0, 1.0, 0.0)
    clf = KeelClassifier(preset="fast", epochs=3, hidden=(16,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)
        scores = cross_val_score(clone(clf), X, y, cv=3)
        assert np.all(scores > 0.4)
        fit = clf.fit(X, y)
    back = pickle.loads(pickle.dumps(fit))
    assert back.classes_.dtype == np.float64 and back.predict(X).dtype == np.float64
    np.testing.assert_array_equal(back.predict(X), fit.predict(X))


def test_a_model_saved_and_loaded_into_model_predicts_y_s_labels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import keel

    y = np.array([0.5, 1.5])[(X[:, 0] > 0).astype(int)] * 2  # 1.0 / 3.0: whole floats
    clf = fitted(y)
    clf.model_.save(tmp_path / "m")
    before = clf.predict(X)
    clf.model_ = keel.load(tmp_path / "m")
    after = clf.predict(X)
    assert after.dtype == np.float64
    np.testing.assert_array_equal(after, before)
