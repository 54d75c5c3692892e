"""scikit-learn estimators over keel: ``KeelClassifier`` and ``KeelRegressor``.

Their parameters are ``preset`` and the fields of the config's ``preprocessing``, ``model`` and
``training`` sections under the same names (``hidden``, ``lr``, ``epochs``, ...), so a pipeline
tuned with ``GridSearchCV`` writes down a config that ``keel train`` understands. A parameter left
at None takes the preset's value, as an unwritten key does in a config file. Both pass
scikit-learn's ``check_estimator`` suite, but for the checks :func:`expected_failed_checks` names.

    >>> from keel.sklearn import KeelClassifier
    >>> KeelClassifier(preset="fast", hidden=(64, 32), epochs=30).fit(X, y).predict(X)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_consistent_length,
    column_or_1d,
    validate_data,
)

from keel.config import Config
from keel.data.spelling import column_names
from keel.errors import DataError, KeelWarning, NotFittedError
from keel.train.pipeline import fit

# Config keys that are not estimator parameters: an estimator trains on all it is given (the split and
# scoring are the caller's: cross-validation), keys that name a column of X have no column to name in an
# array, row weights come as fit's sample_weight (as in scikit-learn), an estimator has no output directory
# to checkpoint into, and a time limit would make a fit's result depend on the machine's speed.
NOT_PARAMETERS = frozenset({"test_split", "split_by", "order_by", "weight_column", "checkpoint", "checkpoint_every",
                            "checkpoint_minutes", "time_limit"})

# Each estimator parameter's dotted config key. The text and image sections' keys take a ``text_`` /
# ``image_`` prefix (``text_encoder``, ``image_size``): a bare ``dim`` or ``encoder`` would say nothing of
# what it sets.
SECTIONS = {
    (f"{section}_{name}" if section in ("text", "image") else name): f"{section}.{name}"
    for section in ("preprocessing", "model", "training", "text", "image")
    for name in Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr, unused-ignore]
    if name not in NOT_PARAMETERS
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
        numeric_embedding_size: int | str | None = None,
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
        steps_per_epoch: int | str | None = None,
        validation_split: float | None = None,
        early_stopping: int | None = None,
        early_stopping_steps: int | None = None,
        monitor: str | None = None,
        loss: str | None = None,
        class_weights: str | None = None,
        label_smoothing: float | None = None,
        bagging: int | str | None = None,
        l1: float | None = None,
        l2: float | None = None,
        grad_clip: float | None = None,
        nonfinite: str | None = None,
        precision: str | None = None,
        threads: int | str | None = None,
        text_encoder: str | None = None,
        text_dim: int | None = None,
        text_max_features: int | None = None,
        text_char_ngrams: tuple[int, int] | None = None,
        text_model_path: str | None = None,
        text_max_tokens: int | None = None,
        text_cache_dir: str | None = None,
        text_finetune: str | None = None,
        text_lora_rank: int | None = None,
        text_linear: bool | None = None,
        text_lr: float | None = None,
        image_encoder: str | None = None,
        image_size: int | None = None,
        image_channels: str | None = None,
        image_strict: bool | None = None,
        image_augment: str | None = None,
        image_dim: int | None = None,
        image_model_path: str | None = None,
        image_finetune: bool | None = None,
        device: str | None = None,
        calibrate: bool | None = None,
        threshold: float | str | None = None,
        threshold_metric: str | None = None,
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
        self.steps_per_epoch = steps_per_epoch
        self.validation_split = validation_split
        self.early_stopping = early_stopping
        self.early_stopping_steps = early_stopping_steps
        self.monitor = monitor
        self.loss = loss
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.bagging = bagging
        self.l1 = l1
        self.l2 = l2
        self.grad_clip = grad_clip
        self.nonfinite = nonfinite
        self.precision = precision
        self.threads = threads
        self.text_encoder = text_encoder
        self.text_dim = text_dim
        self.text_max_features = text_max_features
        self.text_char_ngrams = text_char_ngrams
        self.text_model_path = text_model_path
        self.text_max_tokens = text_max_tokens
        self.text_cache_dir = text_cache_dir
        self.text_finetune = text_finetune
        self.text_lora_rank = text_lora_rank
        self.text_linear = text_linear
        self.text_lr = text_lr
        self.image_encoder = image_encoder
        self.image_size = image_size
        self.image_channels = image_channels
        self.image_strict = image_strict
        self.image_augment = image_augment
        self.image_dim = image_dim
        self.image_model_path = image_model_path
        self.image_finetune = image_finetune
        self.calibrate = calibrate
        self.threshold = threshold
        self.threshold_metric = threshold_metric
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
        for name, key in SECTIONS.items():
            value = getattr(self, name)
            if value is not None:
                values[key] = list(value) if name == "hidden" else value
        return values

    def _fit(self, X: Any, y: Any, task: str, sample_weight: Any) -> "_KeelEstimator":
        frame, y = self._frame(X, y, reset=True)
        self.columns_ = list(frame.columns)  # what X's columns are called in the model, in X's order
        config = {**self.config(), "training.test_split": 0.0, "task": task}
        # A plain array holds numbers only. (Not "no feature_names_in_": a frame with int names sets none either.)
        if not isinstance(X, pd.DataFrame):
            config["input_features"] = [{"name": name, "type": "number"} for name in frame.columns]
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, frame, dtype=np.float64, ensure_non_negative=True)
            config["training.weight_column"] = weight_column = _free_name("sample_weight", frame.columns)
            frame[weight_column] = weights
        target = _free_name("target", frame.columns)
        frame[target] = y
        # No permutation importance: it feeds the report, which an estimator in a grid search never draws.
        self.model_ = fit(frame, target=target, config=config, quiet=self.quiet, importance=False,
                          leak_check=False)
        self.history_ = self.model_.history
        self._warn_unused_columns()
        return self

    def _warn_unused_columns(self) -> None:
        """One warning per fit naming the columns of X the model ignores, as scikit-learn warns."""
        dropped = self.model_.schema.dropped
        if dropped:
            reasons = "; ".join(f"{name!r}: {reason}" for name, reason in dropped.items())
            warnings.warn(
                f"{type(self).__name__} does not use {len(dropped)} column(s) of X ({reasons}). They are "
                "listed in model_.schema.dropped; drop them from X to silence this warning.",
                KeelWarning, stacklevel=4)  # points at the caller of fit

    def _frame(self, X: Any, y: Any = None, *, reset: bool) -> tuple[pd.DataFrame, Any]:
        """Validate X (and y) the scikit-learn way and give keel a DataFrame."""
        numeric_y = isinstance(self, RegressorMixin)
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, skip_check_array=True, reset=reset)
            if y is not None:
                y = column_or_1d(y, warn=True)
                if numeric_y:  # as validate_data checks an array's y: numbers, no infinities
                    y = check_array(y, ensure_2d=False, dtype="numeric", input_name="y", estimator=self)
                check_consistent_length(X, y)
            frame = X.copy()
            if reset or hasattr(self, "feature_names_in_"):
                frame.columns = column_names(X.columns, "X")  # as fit reads them: 3 is the column "3"
            else:  # fitted without names (an array, int labels): read by position, as scikit-learn does
                frame.columns = self.columns_
            return frame, y
        if reset:
            X, y = validate_data(self, X, y, reset=True, ensure_all_finite="allow-nan", y_numeric=numeric_y)
            return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=[f"x{i}" for i in range(X.shape[1])]), y
        if self.model_.config.input_features is None:
            # Fitted on a frame, whose columns may hold text: an array of the same columns, read by position
            # (scikit-learn warns above that it has no names), keeps its values as they are.
            X = validate_data(self, X, reset=False, dtype=None, ensure_all_finite=False)
            return pd.DataFrame(np.asarray(X), columns=self.columns_), y
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=self.columns_), y

    def _check_y(self, X: Any, y: Any) -> None:
        """scikit-learn's "requires y" error for a missing y, keel's DataError for a missing value in it."""
        if y is None:
            validate_data(self, X, y)
        _check_target_present(y)

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

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "KeelClassifier":
        """Train on X (array or DataFrame) and class labels y.

        Args:
            X: The features, shape (n_samples, n_features); a DataFrame may hold categories and text.
                Columns keel cannot use (constant, id-like, all missing) are left out
                with a ``KeelWarning`` and listed in ``model_.schema.dropped``.
            y: The class of each row; none may be missing.
            sample_weight: Non-negative weight of each row in the loss, the validation score and
                early stopping; None weighs every row 1.

        Returns:
            The fitted estimator.

        Raises:
            ValueError: y is missing on some row (a ``DataError`` naming how many and the first),
                or sample_weight is negative, all zero or of the wrong length.
        """
        self._check_y(X, y)
        check_classification_targets(y)
        classes = np.unique(column_or_1d(y, warn=True))
        task = "binary" if len(classes) == 2 else "multiclass" if len(classes) > 2 else "auto"
        self._fit(X, y, task, sample_weight)
        self.classes_ = _labels_as_given(np.asarray(self.model_.classes), classes)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each row of X, as ``y`` gave it (its dtype: 1.0 stays 1.0)."""
        predicted = super().predict(X)
        positions = pd.Index(np.asarray(self.model_.classes)).get_indexer(predicted)
        return self.classes_[positions]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_rows, n_classes), columns in ``classes_`` order."""
        frame = self._predict_frame(X)
        return self.model_.predict_proba(frame)


def _labels_as_given(kept: np.ndarray, given: np.ndarray) -> np.ndarray:
    """The model's classes (``kept``, in its order) as the values ``y`` held (``given``, np.unique of y): a model
    keeps labels as JSON does (1.0 becomes 1), and scikit-learn expects ``classes_`` and predictions in y's own
    dtype. Where a class matches no value of y (cannot happen for labels keel read from y), the model's."""
    found = []
    for label in kept.tolist():
        matches = [index for index, value in enumerate(given.tolist()) if value == label]
        if len(matches) != 1:
            return kept
        found.append(matches[0])
    return given[np.array(found, dtype=np.int64)]


class KeelRegressor(RegressorMixin, _KeelEstimator):
    """A keel network as a scikit-learn regressor.

    Attributes:
        model_: The fitted :class:`keel.Model`.
        history_: Per-epoch training records.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "KeelRegressor":
        """Train on X (array or DataFrame) and numeric targets y.

        Args:
            X: The features, shape (n_samples, n_features); a DataFrame may hold categories and text.
                Columns keel cannot use (constant, id-like, all missing) are left out
                with a ``KeelWarning`` and listed in ``model_.schema.dropped``.
            y: The target value of each row; none may be missing.
            sample_weight: Non-negative weight of each row in the loss, the validation score and
                early stopping; None weighs every row 1.

        Returns:
            The fitted estimator.

        Raises:
            ValueError: y is missing on some row (a ``DataError`` naming how many and the first),
                or sample_weight is negative, all zero or of the wrong length.
        """
        self._check_y(X, y)
        return self._fit(X, y, "regression", sample_weight)


def _check_target_present(y: Any) -> None:
    """Raise a DataError when y is missing (NaN or None) on some row: which row first, and how many.

    keel's own ``fit`` drops such rows with a note; an estimator raises instead, as scikit-learn's
    do, so that X, y and sample_weight keep meaning the same rows.
    """
    values = np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        return  # not a target column at all; the shape checks that follow say so
    missing = np.flatnonzero(pd.isna(values))
    if len(missing):
        first = int(missing[0])
        name = getattr(y, "name", None)
        raise DataError(
            f"y is missing (NaN or None) on {len(missing)} of {len(values)} rows, the first at position {first}; "
            "an estimator learns only from rows with a target. Drop those rows from X and y "
            "(keep = pd.notna(y); fit(X[keep], y[keep])) or fill them in.",
            column=None if name is None else str(name), row=first + 1)


def _free_name(name: str, taken: Any) -> str:
    while name in set(taken):
        name = f"_{name}"
    return name


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    """The scikit-learn estimator checks that keel's estimators fail by design, each with the reason.

    Args:
        estimator: A ``KeelClassifier`` or ``KeelRegressor`` (the answer is the same for both).

    Returns:
        ``{check name: reason}``, as scikit-learn's ``expected_failed_checks`` arguments take it.

    Example:
        >>> from sklearn.utils.estimator_checks import check_estimator
        >>> estimator = KeelRegressor(preset="fast")
        >>> check_estimator(estimator, expected_failed_checks=expected_failed_checks(estimator))
    """
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "a network trained by minibatch gradient descent on a random validation split sees a row of weight "
            "k once per epoch and its k copies k times, in other batches and splits: the two fits agree in "
            "expectation, not to the 1e-7 the check asks (scikit-learn marks its SGD, forest and boosting "
            "estimators the same way)"),
    }


class EstimatorNotFittedError(NotFittedError, SklearnNotFittedError):
    """keel's NotFittedError that scikit-learn also recognises as its own."""


def _check_fitted(estimator: _KeelEstimator) -> None:
    if not hasattr(estimator, "model_"):
        raise EstimatorNotFittedError(
            f"this {type(estimator).__name__} is not fitted yet; call fit(X, y) before predicting.")
