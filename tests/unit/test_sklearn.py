"""scikit-learn's own estimator checks are our contract; plus DataFrames, pipelines and the config link."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import keel
from keel.config import load_config
from keel.errors import DataError, KeelWarning, NotFittedError
from keel.sklearn import SECTIONS, KeelClassifier, KeelRegressor, expected_failed_checks
from tests.conftest import make_classification_frame

# No check is skipped: both estimators pass the whole suite of scikit-learn 1.9 but for the one
# expected_failed_checks names (sample weights equal repeated rows only in expectation), which must
# fail (xfail_strict) so that the declaration cannot go stale.
# (check_array_api_input reports itself as skipped unless SCIPY_ARRAY_API is set; that is scikit-learn's doing.)


@parametrize_with_checks([KeelClassifier(preset="fast", epochs=30), KeelRegressor(preset="fast", epochs=30)],
                         expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([KeelClassifier(), KeelRegressor()],
                         expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_estimator_checks_on_the_default_estimators(estimator, check) -> None:
    check(estimator)


def test_parameters_are_the_config_fields_and_unset_ones_come_from_the_preset() -> None:
    parameters = inspect.signature(KeelClassifier.__init__).parameters
    names = set(parameters) - {"self", "quiet", "preset"}
    assert names == set(SECTIONS) and parameters["preset"].default == "balanced"
    assert all(parameters[name].default is None for name in names)
    assert load_config(KeelClassifier().config()) == load_config()  # nothing set: the balanced preset
    written = load_config(KeelClassifier(preset="best", lr=0.5, hidden=(8,)).config())
    assert written.training.lr == 0.5 and written.model.hidden == [8] and written.training.bagging > 1


def test_dataframes_with_categories_and_pipelines() -> None:
    frame = make_classification_frame()
    X, y = frame.drop(columns="label"), frame["label"]
    classifier = KeelClassifier(preset="fast", hidden=(16,), epochs=20, lr=0.01).fit(X, y)
    assert list(classifier.classes_) == ["alpha", "beta", "gamma"]
    assert list(classifier.feature_names_in_) == list(X.columns)
    assert classifier.score(X, y) > 0.8 and classifier.predict_proba(X).shape == (150, 3)
    scores = cross_val_score(make_pipeline(FunctionTransformer(), KeelClassifier(preset="fast", hidden=(16,), epochs=10, lr=0.01)), X, y, cv=3)
    assert scores.mean() > 0.6


def test_estimator_config_matches_keel_fit_and_model_is_saveable(tmp_path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3
    regressor = KeelRegressor(preset="fast", hidden=(8,), epochs=40, lr=0.01, seed=3).fit(X, y)
    assert regressor.score(X, y) > 0.8
    assert regressor.model_.config.training.seed == 3 and regressor.model_.config.model.hidden == [8]
    loaded = keel.load(regressor.model_.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict(regressor._predict_frame(X)), regressor.predict(X))


def test_unfitted_estimator_says_so() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        KeelClassifier().predict(np.zeros((2, 2)))


def test_columns_the_estimator_does_not_use_are_named_in_one_warning_per_fit() -> None:
    rng = np.random.default_rng(0)
    n = 60
    X = pd.DataFrame({
        "x": rng.normal(size=n),
        "customer_id": np.arange(n),  # a unique integer per row
        "country": "NZ",  # constant
        "comment": [f"customer {i} wrote a long comment about the service" for i in range(n)],  # free text: used
    })
    y = (X["x"] > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = KeelClassifier(preset="fast", hidden=(8,), epochs=2).fit(X, y)
    ours = [warning for warning in caught if issubclass(warning.category, KeelWarning)]
    assert len(ours) == 1 and ours[0].filename == __file__  # one warning, pointing at the fit call
    message = str(ours[0].message)
    assert "does not use 2 column(s) of X" in message
    assert "'customer_id': id-like" in message and "'country': constant" in message and "comment" not in message
    assert set(classifier.model_.schema.dropped) == {"customer_id", "country"}
    assert {"name": "comment", "type": "text"} in classifier.model_.schema.to_dict()["features"]
    assert classifier.n_features_in_ == 4 and list(classifier.feature_names_in_) == list(X.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeelWarning)  # nothing dropped: no warning
        KeelClassifier(preset="fast", hidden=(8,), epochs=2).fit(X[["x"]], y)


@pytest.mark.parametrize("kind", ["frame", "array"])
@pytest.mark.parametrize("estimator", [KeelRegressor, KeelClassifier])
def test_a_missing_target_is_an_error_naming_how_many_and_the_first_row(estimator, kind) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    if estimator is KeelRegressor:
        y = pd.Series(X[:, 0] * 2.0, name="price")
        y[[3, 7]] = np.nan
    else:
        y = pd.Series(np.where(X[:, 0] > 0, "yes", "no").astype(object), name="price")
        y[[3, 7]] = None
    X = pd.DataFrame(X, columns=["a", "b"]) if kind == "frame" else X
    y = y if kind == "frame" else y.to_numpy()
    with pytest.raises(DataError, match=r"y is missing \(NaN or None\) on 2 of 40 rows, the first at position 3") as caught:
        estimator(preset="fast", epochs=2).fit(X, y)
    assert caught.value.row == 4 and caught.value.column == ("price" if kind == "frame" else None)


def test_a_regressor_checks_y_of_a_dataframe_as_it_does_y_of_an_array() -> None:
    X = pd.DataFrame({"a": np.arange(30.0) % 7, "b": np.arange(30.0) % 5})
    y = np.arange(30.0)
    y[4] = np.inf  # before: keel's message about an internal column named 'target'
    with pytest.raises(ValueError, match="Input y contains infinity"):
        KeelRegressor(preset="fast", epochs=2).fit(X, y)


def test_zero_sample_weights_equal_dropping_the_rows() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 0.5, 120) > 0).astype(int)
    weight = np.where(rng.random(120) < 0.3, 0.0, 1.0)
    kept = weight > 0
    # Full-batch, no dropout, no validation split: the only randomness left is the initialisation,
    # which the seed fixes. Scaling is off because its statistics come from every row, weighted or not.
    settings = dict(preset="fast", hidden=(16,), dropout=0.0, epochs=30, batch_size=1000, validation_split=0.0,
                    lr=0.01, normalize="none")
    weighted = KeelClassifier(**settings).fit(X, y, sample_weight=weight)
    dropped = KeelClassifier(**settings).fit(X[kept], y[kept])
    unweighted = KeelClassifier(**settings).fit(X, y)
    np.testing.assert_allclose(weighted.predict_proba(X), dropped.predict_proba(X), atol=1e-5)
    assert np.abs(weighted.predict_proba(X) - unweighted.predict_proba(X)).max() > 0.01  # the weights mattered
    assert weighted.model_.config.training.weight_column == "sample_weight"


def test_heavy_sample_weights_pull_a_regressor_towards_their_rows() -> None:
    rng = np.random.default_rng(0)
    n = 200
    # The features say nothing about y: the best prediction is the weighted mean of y, 1.0 here
    # (weights 9 on y = 0, 1 on y = 10) against 5.0 unweighted. A feature named like fit's argument
    # stays a feature.
    X = pd.DataFrame({"x": rng.normal(size=n), "sample_weight": rng.normal(size=n)})
    heavy = np.arange(n) % 2 == 0
    y, weight = np.where(heavy, 0.0, 10.0), np.where(heavy, 9.0, 1.0)
    settings = dict(preset="fast", hidden=(8,), epochs=30, lr=0.01, seed=0)
    weighted = KeelRegressor(**settings).fit(X, y, sample_weight=pd.Series(weight))
    unweighted = KeelRegressor(**settings).fit(X, y)
    new = pd.DataFrame({"x": rng.normal(size=500), "sample_weight": rng.normal(size=500)})
    assert weighted.predict(new).mean() < 2.5 and 3.5 < unweighted.predict(new).mean() < 6.5  # 1.0 and 5.0 ideally
    assert weighted.model_.config.training.weight_column == "_sample_weight"
    assert weighted.model_.schema.feature_names == ["x", "sample_weight"]


@pytest.mark.parametrize(("weight", "message"), [
    ([1.0, -1.0] * 10, "Negative values in data passed to `sample_weight`"),
    ([1.0] * 19, r"sample_weight.shape == \(19,\), expected \(20,\)"),
    ([0.0] * 20, "at least one non-zero"),
    ([1.0, np.nan] * 10, "Input sample_weight contains NaN"),
])
def test_invalid_sample_weights_are_rejected(weight, message) -> None:
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20.0)
    with pytest.raises(ValueError, match=message):
        KeelRegressor(preset="fast", epochs=2).fit(X, y, sample_weight=np.array(weight))


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0]), np.array([-1.0, 2.0, 7.0]), np.array([False, True]),
                                    np.array(["no", "yes"], dtype=object)])
def test_classes_and_predictions_keep_the_labels_dtype(labels) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = labels[np.digitize(X[:, 0], np.quantile(X[:, 0], np.linspace(0, 1, len(labels) + 1)[1:-1]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)
        clf = KeelClassifier(preset="fast", epochs=3).fit(X, y)
    predicted = clf.predict(X)
    assert clf.classes_.dtype == labels.dtype and list(clf.classes_) == sorted(labels.tolist())
    assert predicted.dtype == labels.dtype and set(predicted.tolist()) <= set(labels.tolist())
    # The labels are those of the model's own predictions, class by class.
    model_labels = clf.model_.predict(clf._predict_frame(X))
    assert [clf.classes_[list(clf.model_.classes).index(m)] for m in model_labels] == predicted.tolist()
