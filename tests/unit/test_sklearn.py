"""scikit-learn's own estimator checks are our contract; plus DataFrames, pipelines and the config link."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import keel
from keel.config import load_config
from keel.errors import NotFittedError
from keel.sklearn import SECTIONS, KeelClassifier, KeelRegressor
from tests.conftest import make_classification_frame

# No check is skipped: both estimators pass the whole suite of scikit-learn 1.9.
# (check_array_api_input reports itself as skipped unless SCIPY_ARRAY_API is set; that is scikit-learn's doing.)


@parametrize_with_checks([KeelClassifier(preset="fast", epochs=30), KeelRegressor(preset="fast", epochs=30)])
def test_scikit_learn_estimator_checks(estimator, check) -> None:
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
