"""Model: the trained pipeline (schema, preprocessing, network, target encoding) and its verbs."""

from __future__ import annotations

import copy
import datetime as _dt
import os
import platform
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from keel import __version__
from keel.artifact import load_artifact, save_artifact
from keel.config import Config, ConfigSource, TrainingConfig, load_config, validate_config
from keel.data.io import TableSource, read_table
from keel.data.preprocess import Features, Preprocessor, TargetEncoder
from keel.data.schema import Schema, infer_schema, require_column
from keel.data.split import fold_rows, split_rows
from keel.errors import ArtifactError, ConfigError, KeelWarning
from keel.evaluate.metrics import classification_metrics, regression_metrics
from keel.nn.losses import resolve_loss_name
from keel.nn.network import NetworkBag, NetworkSpec, TabularNetwork, predict_outputs, to_probabilities
from keel.nn.numeric import PiecewiseLinearEmbedding
from keel.train.callbacks import ProgressBar
from keel.train.device import resolve_device, resolve_precision
from keel.train.trainer import Batch, History, Trainer


class Model:
    """A trained keel model. Create one with :func:`keel.fit` or :func:`keel.load`.

    Attributes:
        config: The validated configuration the model was trained with.
        schema: The features, their types, the target and the task.
        metrics: Metrics on the held-out test rows (None when there were none).
        history: Per-epoch training records.
        notes: What keel decided or worked around while training (dropped columns and rows, ...).
    """

    def __init__(self, config: Config, schema: Schema, preprocessor: Preprocessor, target: TargetEncoder,
                 network: TabularNetwork | NetworkBag, history: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, notes: list[str] | None = None,
                 created: str | None = None) -> None:
        self.config = config
        self.schema = schema
        self.preprocessor = preprocessor
        self.target_encoder = target
        self.network = network
        self.history = history or {}
        self.metrics = metrics
        self.notes = notes or []
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._predictor: TabularNetwork | NetworkBag | None = None

    # ---- what the model is -------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def target(self) -> str:
        return self.schema.target

    @property
    def classes(self) -> list[Any]:
        """Class labels in probability-column order (empty for regression)."""
        return list(self.target_encoder.labels)

    @property
    def feature_names(self) -> list[str]:
        return self.schema.feature_names

    def __repr__(self) -> str:
        return f"Model(task={self.task!r}, target={self.target!r}, features={len(self.feature_names)})"

    # ---- using it ----------------------------------------------------------------------
    def predict(self, data: TableSource) -> np.ndarray:
        """Predicted class labels (classification) or values (regression), one per row, in row order."""
        outputs = self._outputs(read_table(data))
        if self.task == "regression":
            return self.target_encoder.decode(outputs[:, 0].numpy())
        return self.target_encoder.decode(to_probabilities(outputs, self.task).argmax(1).numpy())

    def predict_proba(self, data: TableSource) -> np.ndarray:
        """Class probabilities, shape (n_rows, n_classes), columns in the order of :attr:`classes`."""
        if self.task == "regression":
            raise ConfigError("predict_proba needs a classification model; this one does regression. Use predict.")
        return to_probabilities(self._outputs(read_table(data)), self.task).numpy()

    def predict_frame(self, data: TableSource, proba: bool = False) -> pd.DataFrame:
        """Predictions as a DataFrame: a column named after the target, plus ``proba_<class>`` columns."""
        outputs = self._outputs(read_table(data))
        if self.task == "regression":
            return pd.DataFrame({self.target: self.target_encoder.decode(outputs[:, 0].numpy())})
        probabilities = to_probabilities(outputs, self.task).numpy()
        frame = pd.DataFrame({self.target: self.target_encoder.decode(probabilities.argmax(1))})
        if proba:
            for index, label in enumerate(self.classes):
                frame[f"proba_{label}"] = probabilities[:, index]
        return frame

    def evaluate(self, data: TableSource) -> dict[str, Any]:
        """Metrics on labelled data: classification or regression metrics as in :mod:`keel.evaluate.metrics`.

        Rows with a missing target are left out and counted in ``n_missing_target``.
        """
        frame = read_table(data)
        require_column(frame, self.target, "target")
        labelled = frame[frame[self.target].notna()]
        metrics = self._score(labelled)
        metrics["n_missing_target"] = int(len(frame) - len(labelled))
        return metrics

    def save(self, path: str | os.PathLike) -> os.PathLike:
        """Write the model directory (``keel.json`` + ``weights.safetensors``) atomically."""
        metadata = {
            "versions": {"keel": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "created": self.created,
            "config": self.config.model_dump(mode="json"),
            "schema": self.schema.to_dict(),
            "preprocessing": self.preprocessor.state(),
            "target": self.target_encoder.state(),
            "network": self.network.spec.to_dict(),
            "bagging": len(self.network.networks) if isinstance(self.network, NetworkBag) else 1,
            "metrics": self.metrics,
            "history": self.history,
            "notes": self.notes,
        }
        return save_artifact(path, metadata, self.network.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Read a model directory, verifying its format version and checksums; never unpickles."""
        metadata, tensors = load_artifact(path)
        try:
            spec = NetworkSpec(**metadata["network"])
            bagging = int(metadata.get("bagging", 1))
            network: TabularNetwork | NetworkBag = (
                TabularNetwork(spec) if bagging == 1 else NetworkBag([TabularNetwork(spec) for _ in range(bagging)]))
            network.load_state_dict(tensors, strict=True)
            network.eval()
            return cls(
                config=validate_config(metadata["config"]), schema=Schema.from_dict(metadata["schema"]),
                preprocessor=Preprocessor.from_state(metadata["preprocessing"]),
                target=TargetEncoder.from_state(metadata["target"]), network=network,
                history=metadata.get("history"), metrics=metadata.get("metrics"),
                notes=metadata.get("notes"), created=metadata.get("created"),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            if isinstance(error, ConfigError):
                raise ArtifactError(f"{path}/keel.json holds an invalid config: {error}") from None
            raise ArtifactError(f"{path}/keel.json does not describe its weights ({error}); the model is corrupt.") from None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description: task, target, classes, features, network size, metrics."""
        return {
            "task": self.task, "target": self.target, "classes": self.classes,
            "features": [{"name": f.name, "type": f.type} for f in self.schema.features],
            "dropped": self.schema.dropped, "created": self.created,
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "network": self.network.spec.to_dict(), "metrics": self.metrics,
            "epochs_trained": len(self.history.get("epochs", [])), "best_epoch": self.history.get("best_epoch"),
        }

    # ---- internals ---------------------------------------------------------------------
    def _features(self, frame: pd.DataFrame) -> Features:
        features = self.preprocessor.transform(frame)
        for column, count in features.unseen.items():
            warnings.warn(
                f"column {column!r}: {count} value(s) not seen in training (or rare there) "
                "were mapped to the unknown-category bucket.", KeelWarning, stacklevel=3)
        return features

    def _outputs(self, frame: pd.DataFrame) -> torch.Tensor:
        features = self._features(frame)
        return self._predict(torch.from_numpy(features.numeric), torch.from_numpy(features.categorical))

    def _predict(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        # Predictions run in float64: float32 matmul kernels round differently for different
        # batch sizes, and a row's prediction should not depend on which rows came with it.
        if self._predictor is None:
            self._predictor = copy.deepcopy(self.network).double().eval()
        return predict_outputs(self._predictor, numeric.double(), categorical)

    def _score(self, frame: pd.DataFrame) -> dict[str, Any]:
        y = self.target_encoder.encode(frame[self.target], frame.attrs.get("source"))
        features = self._features(frame)
        return self._metrics(Batch(torch.from_numpy(features.numeric), torch.from_numpy(features.categorical),
                                   torch.from_numpy(y)))

    def _metrics(self, rows: Batch) -> dict[str, Any]:
        outputs = self._predict(rows.numeric, rows.categorical)
        y = rows.target.numpy()
        if self.task == "regression":
            return regression_metrics(self.target_encoder.decode(y), self.target_encoder.decode(outputs[:, 0].numpy()))
        return classification_metrics(y, to_probabilities(outputs, self.task).numpy(), self.classes)


def fit(data: TableSource, target: str | None = None, config: ConfigSource = None, *,
        test: TableSource | None = None, quiet: bool = False) -> Model:
    """Train a model on a table: infer the schema, split, preprocess, train, evaluate on held-out rows.

    Args:
        data: A CSV / Parquet / JSON Lines path or a DataFrame.
        target: The column to predict (or ``target`` in the config).
        config: A YAML path, a nested dict, a dict of dotted keys (``{"training.lr": 0.01}``) or a Config.
        test: Rows to evaluate on instead of holding out ``training.test_split`` of ``data``.
        quiet: No notes and no progress bar.

    Returns:
        The trained model; ``model.metrics`` holds the test metrics.

    Raises:
        ConfigError: A setting is invalid.
        DataError: The data cannot be read or learned from.

    Example:
        >>> model = keel.fit("examples/penguins.csv", target="species", quiet=True)
        >>> model.predict("examples/penguins.csv")[:2]
    """
    settings = load_config(config)
    if target is not None:
        if settings.target not in (None, target):
            raise ConfigError(f"target is {target!r} but the config says {settings.target!r}; pass one of them.")
        settings = settings.model_copy(update={"target": target})
    device = resolve_device(settings.training.device)  # before the read: a missing GPU fails fast
    console = Console(stderr=True, quiet=quiet)
    frame = read_table(data)
    schema = infer_schema(frame, settings)
    notes = [f"dropped column {name!r}: {reason}" for name, reason in schema.dropped.items()]
    frame = _labelled(frame, schema.target, notes, "training data")
    test_frame = _labelled(read_table(test), schema.target, notes, "test data") if test is not None else None
    if test_frame is not None:
        require_column(test_frame, schema.target, "target")
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    with torch.random.fork_rng():
        torch.manual_seed(settings.training.seed)
        return _train(frame, test_frame, settings, schema, notes, console, device)


def _labelled(frame: pd.DataFrame, target: str, notes: list[str], what: str) -> pd.DataFrame:
    require_column(frame, target, "target")
    keep = frame[target].notna()
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} row(s) of the {what} with a missing {target!r}")
        frame = frame[keep]
    return frame


def _train(frame: pd.DataFrame, test_frame: pd.DataFrame | None, settings: Config, schema: Schema,
           notes: list[str], console: Console, device: torch.device) -> Model:
    training = settings.training.model_copy(
        update={"precision": resolve_precision(settings.training.precision, device)})
    target = TargetEncoder(schema.target, schema.task)
    classes = None
    if schema.task != "regression":  # class labels come from every row; they stratify the split
        classes = target.fit(frame[schema.target]).encode(frame[schema.target])
    split = split_rows(len(frame), validation=training.validation_split,
                       test=0.0 if test_frame is not None else training.test_split,
                       seed=training.seed, classes=classes)
    bags = _bags(split.train, split.validation, training, classes)
    fitted_rows = np.sort(np.concatenate(bags[0])) if len(bags) > 1 else split.train
    if schema.task == "regression":
        target.fit(frame[schema.target].iloc[fitted_rows])  # scale the target on training rows only
    preprocessor = Preprocessor(schema, settings.preprocessing).fit(frame, rows=fitted_rows)
    spec = network_spec(settings, preprocessor, schema.task, target.n_classes)
    # Every row is transformed once, laid out as [train | validation | test], so that each part is a
    # view (on 1M x 50 rows a copy of the training part alone was a 180 MB first touch).
    layout = np.concatenate([split.train, split.validation, split.test])
    rows = _batch(preprocessor, target, frame, classes, layout).to(device)  # the one copy to a GPU
    where = np.empty(len(layout), dtype=np.int64)
    where[layout] = np.arange(len(layout))

    def part(positions: np.ndarray) -> Batch:  # rows at these frame positions, in their order
        return rows.take(where[positions])

    loss = resolve_loss_name(training.loss, schema.task)
    class_weights = _class_weights(training.class_weights, part(fitted_rows), target)
    preset = describe_settings(settings, class_weights is not None, device, training.precision)
    notes.append(preset)
    console.print(f"[cyan]{preset}[/cyan]", highlight=False)
    networks, histories = [], []
    for index, (train_part, validation_part) in enumerate(bags):
        if not len(validation_part) and training.early_stopping and index == 0:
            notes.append("no validation rows (validation_split is 0 or the data is tiny): early stopping is off")
        network = TabularNetwork(spec).to(device)
        console.print(
            f"training a {schema.task} model{f' ({index + 1} of {len(bags)})' if len(bags) > 1 else ''} on "
            f"{len(train_part)} rows ({len(validation_part)} validation, "
            f"{len(split.test) if test_frame is None else len(test_frame)} test): "
            f"{len(schema.features)} features, {sum(p.numel() for p in network.parameters())} parameters"
        )
        trainer = Trainer(network, training, schema.task, loss, class_weights, target_scale=target.std)
        history = _fit_network(trainer, part(train_part), part(validation_part) if len(validation_part) else None,
                               console)
        networks.append(trainer.network)
        histories.append(history.to_dict())
    combined: TabularNetwork | NetworkBag = networks[0] if len(networks) == 1 else NetworkBag(networks)
    history_record = histories[0] if len(histories) == 1 else {**histories[0], "bags": histories}
    model = Model(settings, schema, preprocessor, target, combined, history=history_record, notes=notes)
    if test_frame is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KeelWarning)  # unseen test categories are expected here
            model.metrics = model._score(test_frame)
    elif len(split.test):
        model.metrics = model._metrics(part(split.test).to("cpu"))
    return model


def _fit_network(trainer: Trainer, train_rows: Batch, validation_rows: Batch | None, console: Console) -> History:
    """Train one network (bins, progress bar, prior correction) and leave it in eval mode on the CPU."""
    network, settings = trainer.network, trainer.settings
    if isinstance(network.numbers, PiecewiseLinearEmbedding):
        network.numbers.fit_bins(train_rows.numeric)
    if console.quiet:
        history = trainer.fit(train_rows, validation_rows)
    else:
        with ProgressBar(settings.epochs, trainer.monitor, console) as bar:
            trainer.callback = bar
            history = trainer.fit(train_rows, validation_rows)
    if trainer.class_weights is not None and settings.class_weights == "auto":
        # Weighted training shifts each logit by log(weight); undo it so the probabilities
        # (and accuracy) reflect the true class shares while the ranking keeps the benefit.
        network.shift_outputs(_prior_correction(trainer.class_weights, trainer.task))
    network.eval().to("cpu")
    return history


def network_spec(settings: Config, preprocessor: Preprocessor, task: str, n_classes: int) -> NetworkSpec:
    """The network's shape from the config and the fitted preprocessing."""
    model, encoding = settings.model, settings.preprocessing.categorical_encoding
    limit = settings.preprocessing.onehot_max_categories
    return NetworkSpec(
        numeric_width=preprocessor.numeric_width, cardinalities=preprocessor.cardinalities,
        n_outputs=n_classes if task == "multiclass" else 1,
        hidden=list(model.hidden), activation=model.activation, dropout=model.dropout,
        norm=model.norm, init=model.init,
        # the two extra buckets (unknown, missing) do not count towards the one-hot limit
        onehot=[encoding == "onehot" or (encoding == "auto" and cardinality - 2 <= limit)
                for cardinality in preprocessor.cardinalities],
        embedding_dims=[model.embedding_dim] * len(preprocessor.cardinalities) if model.embedding_dim else [],
        architecture=model.architecture, numeric_embedding=model.numeric_embedding,
        numeric_embedding_size=model.numeric_embedding_size, numeric_embedding_dim=model.numeric_embedding_dim,
        ensemble=model.ensemble, task=task,
    )


def describe_settings(settings: Config, weighted: bool, device: torch.device | None = None,
                      precision: str = "float32") -> str:
    """One line naming the preset and the settings that shape the run most."""
    training, model = settings.training, settings.model
    network = f"{model.architecture.upper()} {'-'.join(map(str, model.hidden)) or 'linear'}"
    if model.ensemble > 1:
        network += f" x{model.ensemble} ensemble"
    if model.numeric_embedding != "none":
        network += f", {model.numeric_embedding} number embeddings"
    parts = [
        f"{settings.preprocessing.normalize} scaling", network,
        f"{training.optimizer} lr {training.lr:g} ({training.schedule})", f"batch {training.batch_size}",
        f"up to {training.epochs} epochs" + (f", early stopping {training.early_stopping}" if training.early_stopping else ""),
    ]
    if training.bagging > 1:
        parts.append(f"{training.bagging} bagged networks")
    if weighted:
        parts.append("balanced class weights")
    if device is not None and device.type != "cpu":
        parts.append(f"on {device}")
    if precision != "float32":
        parts.append(f"{precision} matmuls")
    return f"preset {settings.preset}: " + ", ".join(parts)


def _bags(train: np.ndarray, validation: np.ndarray, training: TrainingConfig,
          classes: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row positions for each network: one split, or ``bagging`` folds of both."""
    if training.bagging == 1 or not len(validation):
        return [(train, validation)]
    pool = np.sort(np.concatenate([train, validation]))
    folds = fold_rows(pool, training.bagging, seed=training.seed, classes=classes)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), fold) for i, fold in enumerate(folds)]


def _prior_correction(weights: torch.Tensor, task: str) -> torch.Tensor:
    log_weights = weights.log()
    if task == "binary":
        return (log_weights[0] - log_weights[1]).reshape(1)
    return -log_weights


def _batch(preprocessor: Preprocessor, target: TargetEncoder, frame: pd.DataFrame, codes: np.ndarray | None,
           order: np.ndarray | None = None) -> Batch:
    """All rows as tensors (laid out in ``order`` when given); ``codes`` are the class indices when known."""
    features = preprocessor.transform(frame, order)
    y = codes if codes is not None else target.encode(frame[target.name], frame.attrs.get("source"))
    if order is not None:
        y = y[order]
    return Batch(torch.from_numpy(features.numeric), torch.from_numpy(features.categorical), torch.from_numpy(y))


# Under class_weights "auto", a rarest class below this share of the training rows gets weights.
RARE_CLASS_SHARE = 0.1


def _class_weights(mode: str, rows: Batch, target: TargetEncoder) -> torch.Tensor | None:
    if mode == "none" or target.task == "regression":
        return None
    counts = torch.bincount(rows.target, minlength=target.n_classes).float().clamp(min=1)
    if mode == "auto" and counts.min() >= RARE_CLASS_SHARE * counts.sum():
        return None
    return counts.sum() / (len(counts) * counts)  # scikit-learn's "balanced"


def load(path: str | os.PathLike) -> Model:
    """Load a model directory saved by :meth:`Model.save` or ``keel train``."""
    return Model.load(path)
