"""scikit-learn estimators over keel: ``KeelClassifier`` and ``KeelRegressor``.

Their parameters are ``preset`` and the fields of the config's ``preprocessing``, ``model`` and
``training`` sections under the same names (``hidden``, ``lr``, ``epochs``, ...), so a pipeline
tuned with ``GridSearchCV`` writes down a config that ``keel train`` understands. A parameter left
at None takes the preset's value, as an unwritten key does in a config file. Both pass
scikit-learn's ``check_estimator`` suite.

    >>> from keel.sklearn import KeelClassifier
    >>> KeelClassifier(preset="fast", hidden=(64, 32), epochs=30).fit(X, y).predict(X)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d, validate_data

from keel.config import Config
from keel.errors import NotFittedError
from keel.model import fit

# Which config section each estimator parameter belongs to.
SECTIONS = {
    name: section
    for section in ("preprocessing", "model", "training")
    for name in Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr, unused-ignore]
    if name != "test_split"  # an estimator trains on all it is given; scoring is the caller's job
}


class _KeelEstimator(BaseEstimator):
    """Shared parameters and fitting; see the config reference in the README for each one."""

    _task: str = "auto"

    def __init__(
        self,
        *,
        preset: str = "balanced",
        hidden: tuple[int, ...] | None = None,
        activation: str | None = None,
        dropout: float | None = None,
        norm: str | None = None,
        init: str | None = None,
        embedding_dim: int | None = None,
        architecture: str | None = None,
        numeric_embedding: str | None = None,
        numeric_embedding_dim: int | None = None,
        numeric_embedding_size: int | None = None,
        ensemble: int | None = None,
        missing: str | None = None,
        fill_value: float | None = None,
        missing_indicator: bool | None = None,
        normalize: str | None = None,
        categorical_encoding: str | None = None,
        onehot_max_categories: int | None = None,
        rare_category_min_count: int | None = None,
        rare_category_min_share: float | None = None,
        optimizer: str | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        nesterov: bool | None = None,
        weight_decay: float | None = None,
        schedule: str | None = None,
        warmup: float | None = None,
        epochs: int | None = None,
        batch_size: int | str | None = None,
        validation_split: float | None = None,
        early_stopping: int | None = None,
        monitor: str | None = None,
        loss: str | None = None,
        class_weights: str | None = None,
        label_smoothing: float | None = None,
        bagging: int | None = None,
        l1: float | None = None,
        l2: float | None = None,
        grad_clip: float | None = None,
        precision: str | None = None,
        device: str | None = None,
        seed: int | None = None,
        quiet: bool = True,
    ) -> None:
        self.preset = preset
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.init = init
        self.embedding_dim = embedding_dim
        self.architecture = architecture
        self.numeric_embedding = numeric_embedding
        self.numeric_embedding_dim = numeric_embedding_dim
        self.numeric_embedding_size = numeric_embedding_size
        self.ensemble = ensemble
        self.missing = missing
        self.fill_value = fill_value
        self.missing_indicator = missing_indicator
        self.normalize = normalize
        self.categorical_encoding = categorical_encoding
        self.onehot_max_categories = onehot_max_categories
        self.rare_category_min_count = rare_category_min_count
        self.rare_category_min_share = rare_category_min_share
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.warmup = warmup
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.early_stopping = early_stopping
        self.monitor = monitor
        self.loss = loss
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.bagging = bagging
        self.l1 = l1
        self.l2 = l2
        self.grad_clip = grad_clip
        self.precision = precision
        self.device = device
        self.seed = seed
        self.quiet = quiet

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed
        return tags

    def config(self) -> dict[str, Any]:
        """The dotted config these parameters stand for (``{"preset": ..., "model.hidden": [...], ...}``).

        Parameters left at None are not written, so the preset decides them.
        """
        values: dict[str, Any] = {"preset": self.preset}
        for name, section in SECTIONS.items():
            value = getattr(self, name)
            if value is not None:
                values[f"{section}.{name}"] = list(value) if name == "hidden" else value
        return values

    def _fit(self, X: Any, y: Any, task: str) -> "_KeelEstimator":
        frame, y = self._frame(X, y, reset=True)
        target = _free_name("target", frame.columns)
        frame[target] = y
        config = {**self.config(), "training.test_split": 0.0, "task": task}
        if not hasattr(self, "feature_names_in_"):  # a plain array holds numbers only
            config["input_features"] = [{"name": name, "type": "number"} for name in frame.columns[:-1]]
        self.model_ = fit(frame, target=target, config=config, quiet=self.quiet)
        self.history_ = self.model_.history
        return self

    def _frame(self, X: Any, y: Any = None, *, reset: bool) -> tuple[pd.DataFrame, Any]:
        """Validate X (and y) the scikit-learn way and give keel a DataFrame."""
        numeric_y = isinstance(self, RegressorMixin)
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, skip_check_array=True, reset=reset)
            if y is not None:
                y = column_or_1d(y, warn=True)
                check_consistent_length(X, y)
            frame = X.copy()
            frame.columns = [str(name) for name in frame.columns]
            return frame, y
        if reset:
            X, y = validate_data(self, X, y, reset=True, ensure_all_finite="allow-nan", y_numeric=numeric_y)
        else:
            X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=[f"x{i}" for i in range(X.shape[1])]), y

    def _predict_frame(self, X: Any) -> pd.DataFrame:
        _check_fitted(self)
        return self._frame(X, reset=False)[0]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (classifier) or values (regressor) for each row of X."""
        frame = self._predict_frame(X)
        return self.model_.predict(frame)


class KeelClassifier(ClassifierMixin, _KeelEstimator):
    """A keel network as a scikit-learn classifier.

    Attributes:
        model_: The fitted :class:`keel.Model`; ``model_.save(path)`` writes it as keel does.
        classes_: The class labels, in the order of ``predict_proba``'s columns.
        history_: Per-epoch training records.
    """

    def fit(self, X: Any, y: Any) -> "KeelClassifier":
        """Train on X (array or DataFrame) and class labels y."""
        if y is None:
            validate_data(self, X, y)  # raises scikit-learn's "requires y" error
        check_classification_targets(y)
        classes = np.unique(column_or_1d(y, warn=True))
        task = "binary" if len(classes) == 2 else "multiclass" if len(classes) > 2 else "auto"
        self._fit(X, y, task)
        self.classes_ = np.asarray(self.model_.classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_rows, n_classes), columns in ``classes_`` order."""
        frame = self._predict_frame(X)
        return self.model_.predict_proba(frame)


class KeelRegressor(RegressorMixin, _KeelEstimator):
    """A keel network as a scikit-learn regressor.

    Attributes:
        model_: The fitted :class:`keel.Model`.
        history_: Per-epoch training records.
    """

    def fit(self, X: Any, y: Any) -> "KeelRegressor":
        """Train on X (array or DataFrame) and numeric targets y."""
        return self._fit(X, y, "regression")


def _free_name(name: str, taken: Any) -> str:
    while name in set(taken):
        name = f"_{name}"
    return name


class EstimatorNotFittedError(NotFittedError, SklearnNotFittedError):
    """keel's NotFittedError that scikit-learn also recognises as its own."""


def _check_fitted(estimator: _KeelEstimator) -> None:
    if not hasattr(estimator, "model_"):
        raise EstimatorNotFittedError(
            f"this {type(estimator).__name__} is not fitted yet; call fit(X, y) before predicting.")
