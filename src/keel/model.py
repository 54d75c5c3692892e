"""Model: what a trained pipeline does: predict, evaluate, save, load, summary.

The pipeline that trains one lives in ``keel.train.pipeline`` (``keel.fit``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import functools
import hashlib
import os
import platform
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Union

import numpy as np
import pandas as pd
import torch
from pydantic import Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from keel import __version__
from keel.artifact import (
    METADATA_FILE,
    WEIGHTS_FILE,
    Manifest,
    attach_file,
    check_safetensors,
    load_artifact,
    read_arrays,
    read_model_file,
    save_artifact,
)
from keel.config import Config
from keel.data.images import ImageTransform
from keel.data.io import TableSource, read_table
from keel.data.preprocess import ARRAY_PREFIX, Features, Preprocessor, TargetEncoder, describe_unseen
from keel.data.pretrained import IDENTITY_FILES, READ_FILES, ModelFiles, model_hash, resolve_model
from keel.data.schema import Schema, require_column, written_columns
from keel.data.text import TextTransform
from keel.data.values import row_weights
from keel.errors import ArtifactError, ConfigError, KeelError, KeelWarning
from keel.evaluate.metrics import classification_metrics, predicted_classes, regression_metrics
from keel.evaluate.predictions import PREDICTIONS_FILE, Predictions
from keel.nn.network import FirstLayerReuse, NetworkBag, NetworkSpec, TabularNetwork, predict_outputs, to_probabilities
from keel.nn.sentence import SentenceEncoder, TextInput

# Where Model.embed_encoders copies frozen pretrained text encoders, one folder per column position.
ENCODERS_FOLDER = "encoders"

if TYPE_CHECKING:
    from keel.export.exporter import ExportReport
    from keel.report.make import ReportResult
    from keel.train.threads import ThreadTuner



def _sentence_encoder(reference: str, max_tokens: int | None) -> SentenceEncoder:
    return SentenceEncoder(ModelFiles(reference, max_tokens))


# Text columns on a pretrained encoder embed through torch, which keel.data does not import: the model,
# which every training and prediction path loads, plugs the encoder in.
TextTransform.loader = _sentence_encoder

class Model:
    """A trained keel model. Create one with :func:`keel.fit` or :func:`keel.load`.

    Attributes:
        config: The validated configuration the model was trained with.
        schema: The features, their types, the target and the task.
        metrics: Metrics on the held-out test rows (None when there were none).
        history: Per-epoch training records.
        notes: What keel decided or worked around while training (dropped columns and rows, ...).
        run: The training run: data shape, rows per part, column statistics, durations (None for
            models trained before keel recorded it).
        calibration: The fitted temperature and the decision threshold (classification).
        importance: Permutation feature importance on validation rows at training time.
    """

    def __init__(self, config: Config, schema: Schema, preprocessor: Preprocessor, target: TargetEncoder,
                 network: TabularNetwork | NetworkBag, history: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, notes: list[str] | None = None,
                 created: str | None = None, run: dict[str, Any] | None = None,
                 calibration: dict[str, Any] | None = None, importance: dict[str, Any] | None = None,
                 predictions: Predictions | None = None, versions: dict[str, str] | None = None) -> None:
        self.config = config
        self.schema = schema
        self.preprocessor = preprocessor
        self.target_encoder = target
        self.network = network
        self.history = history or {}
        self.metrics = metrics
        self.notes = notes or []
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.run = run
        self.versions = versions or current_versions()
        self.calibration = calibration
        self.importance = importance
        self._test_predictions = predictions
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

    @property
    def threshold(self) -> float | None:
        """A binary model's decision threshold: the positive class (``classes[1]``) is predicted where its
        probability is at least this. None (every other model, and a binary one left at 0.5) predicts the
        more probable class."""
        calibration = getattr(self, "calibration", None)  # None on models saved before calibration existed
        if self.task != "binary" or not calibration:
            return None
        threshold = calibration.get("threshold")
        return None if threshold is None else float(threshold)

    def __repr__(self) -> str:
        return f"Model(task={self.task!r}, target={self.target!r}, features={len(self.feature_names)})"

    # ---- using it ----------------------------------------------------------------------
    def read_rows(self, data: TableSource, *, delimiter: str | None = None, encoding: str | None = None) -> pd.DataFrame:
        """``data`` as this model reads it (:func:`keel.data.io.read_table`): a CSV's category, binary, text and
        image columns as written, as training read them (``02134`` is not the number 2134)."""
        return read_table(data, delimiter=delimiter, encoding=encoding, text=written_columns(self.schema))

    def predict(self, data: TableSource) -> np.ndarray:
        """Predicted class labels (classification) or values (regression), one per row, in row order.

        A class is the most probable one, or for a binary model with a decision :attr:`threshold`,
        ``classes[1]`` where its probability is at least the threshold.
        """
        outputs = self._outputs(self.read_rows(data))
        if self.task == "regression":
            return self.target_encoder.decode(outputs[:, 0].numpy())
        probabilities = to_probabilities(outputs, self.task).numpy()
        return self.target_encoder.decode(predicted_classes(probabilities, self.threshold))

    def predict_proba(self, data: TableSource) -> np.ndarray:
        """Class probabilities, shape (n_rows, n_classes), columns in the order of :attr:`classes`."""
        if self.task == "regression":
            raise ConfigError("predict_proba needs a classification model; this one does regression. Use predict.")
        return to_probabilities(self._outputs(self.read_rows(data)), self.task).numpy()

    def predict_frame(self, data: TableSource, proba: bool = False) -> pd.DataFrame:
        """Predictions as a DataFrame: a column named after the target, plus ``proba_<class>`` columns (one
        named like the target, or like another, takes another ``proba_`` in front: the labels are never
        overwritten). A DataFrame's rows keep their index, so that ``pd.concat([df, model.predict_frame(df)],
        axis=1)`` lines each prediction up with its row (``join`` would not, for repeated labels); a file's rows are
        numbered from 0."""
        outputs = self._outputs(self.read_rows(data))
        labelled = data.index if isinstance(data, pd.DataFrame) else None
        if self.task == "regression":
            return pd.DataFrame({self.target: self.target_encoder.decode(outputs[:, 0].numpy())}, index=labelled)
        probabilities = to_probabilities(outputs, self.task).numpy()
        labels = self.target_encoder.decode(predicted_classes(probabilities, self.threshold))
        frame = pd.DataFrame({self.target: labels}, index=labelled)
        if proba:
            for index, label in enumerate(self.classes):
                name = f"proba_{label}"
                while name in frame.columns:  # a target named proba_<class>, or classes "a" and "proba_a"
                    name = f"proba_{name}"
                frame[name] = probabilities[:, index]
        return frame

    def evaluate(self, data: TableSource) -> dict[str, Any]:
        """Metrics on labelled data: classification or regression metrics as in :mod:`keel.evaluate.metrics`.

        Rows with a missing target are left out and counted in ``n_missing_target``.
        """
        frame = self.read_rows(data)
        require_column(frame, self.target, "target")
        labelled = frame[frame[self.target].notna()]
        metrics = self._metrics_of(self._scored(labelled))
        metrics["n_missing_target"] = int(len(frame) - len(labelled))
        return metrics

    #: The model directory this model was last saved to or loaded from; None before either.
    path: Path | None = None
    # Attached files of that directory (name -> sha256) and its weights' sha256, for attach().
    _attached: dict[str, str] = {}  # noqa: RUF012 - read-only default; save and load assign their own
    _weights_sha256: str | None = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model directory atomically: the old model or the new one stays, never neither.

        Files attached to a model already at ``path`` (see :meth:`attach`) are kept when they were
        made from the same weights, so re-saving a loaded model keeps its ONNX export; the others
        are dropped with a :class:`~keel.errors.KeelWarning`. Files keel did not attach there (your
        own) are kept untouched.

        Args:
            path: The directory to write (or replace).

        Returns:
            The directory, also kept as :attr:`path`.

        Raises:
            ArtifactError: ``path`` is a file or a directory that is not a keel model, or it
                cannot be written.
        """
        manifest = Manifest(
            versions=current_versions(),
            created=self.created, config=self.config.model_dump(mode="json"), table_schema=self.schema.to_dict(),
            preprocessing=self.preprocessor.state(), target=self.target_encoder.state(),
            network=self.network.spec.to_dict(),
            bagging=len(self.network.networks) if isinstance(self.network, NetworkBag) else 1,
            metrics=self.metrics, history=self.history, notes=self.notes, run=self.run,
            calibration=self.calibration, importance=self.importance,
        )
        from keel.train.guards import check_finite

        # Parameters, not the state dict: number-embedding bin buffers hold +-inf by design.
        check_finite(self.network.named_parameters(), where=f"saving the model to {path}")
        predictions = self.test_predictions
        extra = {} if predictions is None else {PREDICTIONS_FILE: _safetensors_bytes(predictions.to_tensors())}
        tensors = {**self.network.state_dict(),
                   **{name: torch.from_numpy(array) for name, array in self.preprocessor.arrays().items()}}
        self._remember(Path(path), save_artifact(path, manifest, tensors, extra))
        return Path(path)

    @property
    def test_predictions(self) -> Predictions | None:
        """The held-out test rows' predictions and true targets from training (None without test rows).

        Kept in the model directory (``predictions.safetensors``: targets and predictions, not the
        rows) so that :meth:`report` can draw the report again without the data.
        """
        if self._test_predictions is None and self.path is not None and PREDICTIONS_FILE in self._attached:
            self._test_predictions = self._read_predictions(self.path / PREDICTIONS_FILE)
        return self._test_predictions

    def _read_predictions(self, file: Path) -> Predictions | None:
        """The kept test predictions, if ``file`` still holds the ones this model was loaded with.

        Read on first use, so the directory may have been saved over by another model since: its
        predictions are not this model's, and a report (or a save) must not pass them off as such.

        Raises:
            ArtifactError: The file is the one this model was loaded with (its checksum matches) but
                no set of test predictions for this model, or it became a link or no regular file.
        """
        try:
            data = read_model_file(file.parent, file.name)
        except ArtifactError:
            if os.path.lexists(file):
                raise  # there, but a link, a pipe or unreadable: refused, not mistaken for a re-save
            data = b""
        if hashlib.sha256(data).hexdigest() != self._attached.get(PREDICTIONS_FILE):
            warnings.warn(f"{file} is not the file this model was loaded with (the directory was saved over since, "
                          "or the file is damaged): its test predictions are left out; draw a report with "
                          "labelled data instead (keel report MODEL --data FILE).", KeelWarning, stacklevel=3)
            return None
        arrays = read_arrays(data, file)
        problem = _predictions_problem(arrays, self.task, len(self.classes))
        if problem:
            raise ArtifactError(f"{file} does not hold this model's test predictions ({problem}); restore the model "
                                "directory from a backup, or draw a report with labelled data (keel report MODEL "
                                "--data FILE).")
        return Predictions.from_tensors(arrays, self.task, self.threshold)

    def attach(self, name: str, source: bytes | str | os.PathLike[str]) -> str:
        """Add a file made from this model (an export, a report, a plot) to its directory.

        A thin wrapper of :func:`keel.artifact.attach_file` on :attr:`path`: the file is written
        atomically and listed in ``keel.json`` with its sha256, which loading then checks.

        Args:
            name: The file's path inside the model directory (``"model.onnx"``, ``"plots/roc.png"``).
            source: The file's bytes, or the path of a file to copy.

        Returns:
            The sha256 of the attached file.

        Raises:
            ArtifactError: The model has not been saved or loaded, its directory was saved over by
                another model since, or the name or file is unusable.
        """
        if self.path is None:
            raise ArtifactError(f"cannot attach {name!r}: this model has no directory yet. "
                                "Save it first: model.save('runs/my-model').")
        digest = attach_file(self.path, name, source, weights=self._weights_sha256)
        self._attached = {**self._attached, name: digest}
        return digest

    def embed_encoders(self) -> list[str]:
        """Copy each frozen pretrained text column's encoder into the model directory (``encoders/<position>/``,
        checksummed like every attached file), so that the model predicts where the encoder's own path does not
        exist; loading prefers the copy. Fine-tuned and image encoders are in the weights already.

        Returns:
            The columns whose encoders were embedded.

        Raises:
            ArtifactError: The model is not saved, or the encoder at its path is not the one it was trained with.
        """
        embedded = []
        for position, transform in enumerate(self.preprocessor.transforms):
            if not isinstance(transform, TextTransform) or transform.encoder != "pretrained" or transform.tokens:
                continue
            directory = resolve_model(transform.location or transform.model)
            if model_hash(directory) != transform.model_sha256:
                raise ArtifactError(f"text column {transform.name!r}: {transform.model} no longer holds the encoder the "
                                    "model was trained with (its content hash differs); restore it before embedding.")
            for name in IDENTITY_FILES:
                if (directory / name).is_file():
                    self.attach(f"{ENCODERS_FOLDER}/{position}/{name}", directory / name)
            embedded.append(transform.name)
        return embedded

    def _detach(self, names: list[str]) -> None:
        """Remove attached files (stale figures) from this model's directory."""
        from keel.artifact import detach_files

        if self.path is None:
            return
        detach_files(self.path, names)
        self._attached = {name: digest for name, digest in self._attached.items() if name not in names}

    def export(self, format: str = "onnx", *, quantize: str | None = None, static: bool = False,
               prune: float | str | None = None, prune_method: str = "structured", max_drop: float | None = None,
               finetune_epochs: int = 0, data: TableSource | None = None, output: str | os.PathLike[str] | None = None,
               pruned_output: str | os.PathLike[str] | None = None) -> "ExportReport":
        """Export for ONNX Runtime (or LiteRT) with the preprocessing inside; see :func:`keel.export.exporter.export`.

        The file is parity-checked against this model's own predictions and attached to the model
        directory (``model.onnx``, checksummed in ``keel.json``) unless ``output`` names a file.

        Example:
            >>> report = model.export(data="examples/penguins.csv")
            >>> report.parity["max_difference"] <= 1e-5
            True
        """
        from keel.export.exporter import export

        return export(self, format, quantize=quantize, static=static, prune=prune, prune_method=prune_method,
                      max_drop=max_drop, finetune_epochs=finetune_epochs, data=data, output=output,
                      pruned_output=pruned_output)

    def report(self, data: TableSource | None = None, *,
               output: str | os.PathLike[str] | None = None) -> "ReportResult":
        """Draw the model's one-file HTML report (figures embedded) and attach it to its directory.

        ``report.html`` and the figures as ``plots/*.png`` are attached (checksummed in ``keel.json``);
        see :func:`keel.report.make.make_report`.

        Args:
            data: Labelled rows to draw it on; by default the test rows' predictions kept from training.
            output: Write the page here instead of attaching it.

        Example:
            >>> model.report().html
            PosixPath('runs/penguins/report.html')
        """
        from keel.report.make import make_report

        return make_report(self, data, output=output)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Read a model directory, verifying its format version and checksums; never unpickles.

        A model saved by an older format version is upgraded on the way in. Config settings this
        keel no longer accepts are left at their defaults with a warning (predictions do not
        depend on the config). A directory received from someone else is safe to try: nothing in
        it is executed, nothing outside it is opened (see :func:`keel.artifact.read_model_file`),
        and what its ``keel.json`` declares is checked against its weights before any network
        is built.

        Raises:
            ArtifactError: No model at ``path``, a newer format version, a file that fails its
                checksum or is a link, a ``keel.json`` that is invalid or does not describe its
                weights, or a safetensors file whose header does not describe its bytes.
        """
        manifest, tensors = load_artifact(path)
        arrays = {name: tensors.pop(name).numpy() for name in list(tensors) if name.startswith(ARRAY_PREFIX)}
        preprocessor = _checked_sections(manifest, path, arrays)
        model = cls(
            config=cls._config_as_run(manifest.config, path), schema=Schema.from_dict(manifest.table_schema),
            preprocessor=preprocessor, target=TargetEncoder.from_state(manifest.target),
            network=cls._network(manifest, tensors, path, preprocessor),
            history=manifest.history, metrics=manifest.metrics, notes=manifest.notes, created=manifest.created,
            run=manifest.run, calibration=manifest.calibration, importance=manifest.importance,
            versions=manifest.versions,
        )
        model._remember(Path(path), manifest)
        for position, transform in enumerate(preprocessor.transforms):  # an embedded encoder wins over its path
            folder = f"{ENCODERS_FOLDER}/{position}"
            if isinstance(transform, TextTransform) and f"{folder}/model.safetensors" in model._attached:
                # The encoder is read from this folder by name: every file it would read must be one keel.json lists
                # (and so was checked: inside the directory, no link, a regular file, its sha256), none left out.
                unlisted = [name for name in READ_FILES if f"{folder}/{name}" not in model._attached
                            and os.path.lexists(Path(path, folder, name))]
                if unlisted:
                    raise ArtifactError(f"{Path(path) / folder} holds {', '.join(unlisted)}, which {METADATA_FILE} does "
                                        "not list; an embedded encoder's files are all listed (and checksummed). The "
                                        "directory was changed after saving: restore it from a backup or retrain.")
                transform.location = str(Path(path).absolute() / folder)
        return model

    def _remember(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self._attached = {name: record.sha256 for name, record in manifest.attached.items()}
        self._weights_sha256 = manifest.files[WEIGHTS_FILE].sha256

    @staticmethod
    def _network(manifest: Manifest, tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                 preprocessor: Preprocessor | None = None) -> TabularNetwork | NetworkBag:
        """The network ``manifest`` describes, holding ``tensors``; a mismatch is a corrupt model.

        What ``keel.json`` declares is compared with what the weights hold before anything is
        allocated: a declared 10^9-row embedding is refused, never built to find out.
        """
        def corrupt(problem: str) -> ArtifactError:
            return ArtifactError(f"{path}/keel.json does not describe its weights ({problem}); the model is corrupt. "
                                 "Restore the directory from a backup or retrain the model.")

        unknown = sorted(set(manifest.network) - {field.name for field in dataclasses.fields(NetworkSpec)})
        if unknown:
            raise corrupt(f"unknown network setting(s) {', '.join(unknown)}")
        try:
            spec = _network_spec_adapter().validate_python(manifest.network)
        except ValidationError as error:
            raise corrupt(f"network: {error.errors()[0]['msg']}") from None
        if preprocessor is not None and (spec.numeric_width, spec.cardinalities) != (
                preprocessor.numeric_width, preprocessor.cardinalities):
            raise corrupt(f"the network reads {spec.numeric_width} number column(s) and categories of "
                          f"{_listed(spec.cardinalities)} values, the preprocessing makes {preprocessor.numeric_width} "
                          f"and {_listed(preprocessor.cardinalities)}")
        if preprocessor is not None and spec.plain_width == 0 and preprocessor.text_width:
            raise ArtifactError(f"{path} holds a model with text columns saved by a keel before its text components "
                                "skipped number embeddings (a development version); this keel cannot rebuild its "
                                "network: retrain the model.")
        if preprocessor is not None and spec.plain_width != preprocessor.text_width:
            raise corrupt(f"the network reads {spec.plain_width} text component(s), the preprocessing makes "
                          f"{preprocessor.text_width}")
        if preprocessor is not None and [(text.width, getattr(text, "vocabulary", None)) for text in spec.texts] != [
                (t.width, len(t.vocabulary) if t.encoder == "bag" else None) for t in preprocessor.token_texts]:
            def read(width: int, vocabulary: int | None) -> str:
                return f"{width - 1} tokens" + (f" of {vocabulary:,} terms" if vocabulary is not None else "")

            network_reads = [read(t.width, getattr(t, "vocabulary", None)) for t in spec.texts]
            made = [read(t.width, len(t.vocabulary) if t.encoder == "bag" else None) for t in preprocessor.token_texts]
            raise corrupt(f"the network reads {len(spec.texts)} fine-tuned or bag text column(s) of {network_reads}, "
                          f"the preprocessing makes {made}")
        for transform, text in zip(preprocessor.token_texts if preprocessor is not None else [], spec.texts):
            if transform.encoder == "pretrained" and isinstance(text, TextInput):
                problem = transform.tokenizer_problem(text.shape.vocab_size)
                if problem:
                    raise ArtifactError(f"{path}/{WEIGHTS_FILE} keeps a tokenizer that does not fit the model "
                                        f"({problem}); the model is corrupt. Restore the directory from a backup or "
                                        "retrain the model.")
        if preprocessor is not None and [(image.channels, image.size) for image in spec.images] != [
                (transform.bands, transform.size) for transform in preprocessor.images]:
            raise corrupt(f"the network reads {len(spec.images)} image column(s) of "
                          f"{[(image.channels, image.size) for image in spec.images]} channels and sides, the "
                          f"preprocessing makes {[(t.bands, t.size) for t in preprocessor.images]}")
        # Building takes time per layer and per bagged network: more of either than there are
        # weight tensors cannot match, whatever their sizes.
        if manifest.bagging > len(tensors) or len(spec.hidden) + len(spec.inner) > len(tensors):
            raise corrupt(f"it declares {manifest.bagging:,} network(s) of {len(spec.hidden):,} hidden layer(s), more "
                          f"than the {len(tensors)} weight tensors can hold")

        def build() -> TabularNetwork | NetworkBag:
            return (TabularNetwork(spec) if manifest.bagging == 1
                    else NetworkBag([TabularNetwork(spec) for _ in range(manifest.bagging)]))

        try:
            with torch.device("meta"):  # shapes and dtypes only: nothing is allocated or initialised
                skeleton = build()
        except (KeelError, ValueError, TypeError, RuntimeError, IndexError, OverflowError) as error:
            raise corrupt(f"network: {str(error)[:200]}") from None
        # Compared here rather than left to load_state_dict, whose RuntimeError could as well be a bug.
        expected = {name: value for name, value in skeleton.state_dict().items()}
        shapes = {name: tuple(value.shape) for name, value in expected.items()}
        stored = {name: tuple(value.shape) for name, value in tensors.items()}
        if shapes != stored:
            raise corrupt(_shape_mismatch(shapes, stored))
        retyped = [f"{name} is {value.dtype} in the description but {tensors[name].dtype} in the weights"
                   for name, value in expected.items() if value.dtype != tensors[name].dtype]
        if retyped:
            raise corrupt("; ".join(retyped[:3]) + (f" and {len(retyped) - 3} more" if len(retyped) > 3 else ""))
        with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the caller's state
            network = build()
        network.load_state_dict(tensors, strict=True)
        return network.eval()

    @staticmethod
    def _config_as_run(tree: dict[str, Any], path: str | os.PathLike) -> Config:
        """The stored config; settings this keel does not accept (renamed, removed) fall back to defaults."""
        tree = copy.deepcopy(tree)
        dropped: list[str] = []
        while True:
            try:
                config = Config.model_validate(tree)
                break
            except ValidationError as error:
                where = _drop(tree, error.errors()[0]["loc"])
                if where is None:  # nothing to fall back from: the error is about the config as a whole
                    raise ArtifactError(f"{path}/keel.json holds a config this keel cannot read "
                                        f"({error.errors()[0]['msg']}); retrain the model.") from None
                dropped.append(where)
        if dropped:
            warnings.warn(f"{path}: the saved config has setting(s) this keel does not accept ({', '.join(dropped)}); "
                          "they read as their defaults. Predictions do not depend on them; save the model again to "
                          "store its config as this keel writes it.", KeelWarning, stacklevel=3)
        return config

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description: task, target, classes, features, network size, metrics, and the
        model directory with its attached files (``path`` is None for a model not saved yet). A bag's
        ``epochs_trained`` and ``best_epoch`` are its first network's; ``bagged`` has every network's."""
        bags = self.history.get("bags") or []
        bagged = {"bagged": [{"epochs_trained": len(bag.get("epochs", [])), "best_epoch": bag.get("best_epoch")}
                             for bag in bags]} if bags else {}
        return {**bagged,
            "task": self.task, "target": self.target, "classes": self.classes,
            "features": [{"name": f.name, "type": f.type} for f in self.schema.features],
            "dropped": self.schema.dropped, "created": self.created,
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "network": self.network.spec.to_dict(), "metrics": self.metrics,
            "epochs_trained": len(self.history.get("epochs", [])), "best_epoch": self.history.get("best_epoch"),
            "path": None if self.path is None else str(self.path), "files": sorted(self._attached),
        }

    # ---- internals ---------------------------------------------------------------------
    def _features(self, frame: pd.DataFrame) -> Features:
        features = self.preprocessor.transform(frame)
        for column, count in features.unseen.items():
            kind = features.unseen_kinds.get(column, "category")
            examples = features.unseen_examples.get(column, ())
            warnings.warn(describe_unseen(kind, column, count, examples), KeelWarning, stacklevel=3)
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

    def _predictions(self, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor,
                     weight: torch.Tensor | None, row: np.ndarray) -> Predictions:
        """These rows' predictions next to their true targets (class indices, or values in target units)."""
        return self._predictions_of(self._predict(numeric, categorical), target, weight, row)

    def _predictions_of(self, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                        row: np.ndarray) -> Predictions:
        """Predictions from the network's raw outputs for rows with these targets, weights and row numbers."""
        y = target.numpy()
        rows = np.asarray(row, dtype=np.int64)
        weights = None if weight is None else weight.numpy().astype(np.float64)
        if self.task == "regression":
            return Predictions(self.task, self.target_encoder.decode(y).astype(np.float64), weight=weights, row=rows,
                               values=self.target_encoder.decode(outputs[:, 0].numpy()).astype(np.float64))
        return Predictions(self.task, y.astype(np.int64), weight=weights, row=rows, threshold=self.threshold,
                           probabilities=to_probabilities(outputs, self.task).numpy())

    def _scored(self, frame: pd.DataFrame) -> Predictions:
        """The predictions for labelled rows of ``frame`` (weighted by the weight column when it has one)."""
        source = frame.attrs.get("source")
        y = self.target_encoder.encode(frame[self.target], source)
        features = self._features(frame)
        column = self.config.training.weight_column
        weight = None
        if column is not None and column in frame.columns:
            weight = torch.from_numpy(row_weights(frame[column], column, source))
        elif column is not None:
            warnings.warn(f"the model was trained with rows weighted by {column!r}, which this data lacks: the "
                          "metrics are unweighted. Add the column to weight them.", KeelWarning, stacklevel=3)
        return self._predictions(torch.from_numpy(features.numeric), torch.from_numpy(features.categorical),
                                 torch.from_numpy(y), weight, frame.index.to_numpy() + 1)

    def _importance(self, numeric: np.ndarray, categorical: np.ndarray, target: np.ndarray,
                    weight: np.ndarray | None, source: str, *, seed: int = 0,
                    progress: Callable[[int], None] | None = None, precision: str = "float32",
                    deadline: float | None = None, threads: ThreadTuner | None = None) -> dict[str, Any]:
        """Permutation importance of each feature on (at most 2,000 of) these transformed rows, in float32
        (matmuls in bfloat16 with ``precision="bfloat16"``, as the run trained: a ranking needs no more), with
        fewer repeats or rows where the full count would end after ``deadline`` (a time limit's end), each
        prediction timed as a step of ``threads`` (keel.train.threads.passes_budget) where there is one.

        ``target`` holds class indices or standardized values, as the training rows do.
        """
        from keel.evaluate.importance import Predict, permutation_importance
        from keel.train.threads import timed_passes

        network, task, encoder = self.network, self.task, self.target_encoder

        def predicting(outputs_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Predict:
            def predict(numbers: np.ndarray, codes: np.ndarray) -> np.ndarray:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                    outputs = outputs_of(torch.from_numpy(numbers), torch.from_numpy(codes)).float()
                if task == "regression":
                    return encoder.decode(outputs[:, 0].numpy())
                return to_probabilities(outputs, task).numpy()
            return timed_passes(predict, threads)

        predict = predicting(functools.partial(predict_outputs, network))

        def around(numbers: np.ndarray, codes: np.ndarray) -> Predict:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                reuse = FirstLayerReuse.build(network, torch.from_numpy(numbers), torch.from_numpy(codes))
            return predict if reuse is None else predicting(reuse)

        truth = encoder.decode(target) if task == "regression" else target
        started = time.perf_counter()
        result = permutation_importance(
            predict, numeric, categorical, truth, weight, self.preprocessor.feature_columns(), task,
            seed=seed, threshold=self.threshold, progress=progress, around=around, deadline=deadline)
        return {**result, "source": source, "seconds": round(time.perf_counter() - started, 3)}

    def _importance_on(self, frame: pd.DataFrame) -> dict[str, Any]:
        """Permutation importance on labelled rows of ``frame`` (named after its file)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KeelWarning)
            features = self._features(frame)
        source = frame.attrs.get("source")
        y = self.target_encoder.encode(frame[self.target], source)
        column = self.config.training.weight_column
        weight = row_weights(frame[column], column, source) if column and column in frame.columns else None
        from keel.train.threads import passes_budget

        with passes_budget(self.network) as threads:  # auto: this machine's threads, not the training machine's
            return self._importance(features.numeric, features.categorical, y, weight,
                                    Path(str(source)).name if source else "DataFrame", seed=self.config.training.seed,
                                    threads=threads)

    def _metrics_of(self, predictions: Predictions) -> dict[str, Any]:
        """Metrics of scored rows, as ``evaluate`` reports them."""
        if self.task == "regression":
            assert predictions.values is not None
            return regression_metrics(predictions.target, predictions.values, sample_weight=predictions.weight)
        assert predictions.probabilities is not None
        return classification_metrics(predictions.target, predictions.probabilities.astype(np.float64), self.classes,
                                      sample_weight=predictions.weight, threshold=predictions.threshold)



def current_versions() -> dict[str, str]:
    """The keel, torch and Python versions of this process (what a saved model records)."""
    return {"keel": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _safetensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save(arrays)


def load(path: str | os.PathLike) -> Model:
    """Load a model directory saved by :meth:`Model.save` or ``keel train``."""
    return Model.load(path)


def _checked_sections(manifest: Manifest, path: str | os.PathLike,
                      arrays: dict[str, np.ndarray] | None = None) -> Preprocessor:
    """Check what loading reads from ``manifest`` besides the network; returns the preprocessing.

    Each section is checked against the shape its stage writes before the stage reads it: a
    KeyError or TypeError inside ``from_state`` stays what it is, a bug, never taken for a corrupt
    model. The test predictions are read on first use, but a file that is no safetensors file is
    refused now.

    Raises:
        ArtifactError: A section keel cannot read, a config of thousands of unknown settings, or
            a predictions file whose header does not describe its bytes.
    """
    if PREDICTIONS_FILE in manifest.files:
        check_safetensors(read_model_file(path, PREDICTIONS_FILE), Path(path) / PREDICTIONS_FILE)
    try:
        Config.model_validate(manifest.config)
    except ValidationError as error:
        # _config_as_run drops one unknown setting per validation: a few renamed settings are an
        # older keel's, thousands an attack that would take hours to drop one at a time.
        if error.error_count() > 100:
            raise ArtifactError(f"{path}/keel.json holds a config with {error.error_count():,} settings this keel "
                                "does not accept; keel writes none of them. The directory is not a keel model's: "
                                "retrain the model or restore the directory from a backup.") from None
    for section, adapter, value in (("schema", _SCHEMA_STATE, manifest.table_schema),
                                    ("preprocessing", _PREPROCESSING_STATE, manifest.preprocessing),
                                    ("target", _TARGET_STATE, manifest.target)):
        try:
            adapter.validate_python(value)
        except ValidationError as error:
            raise ArtifactError(f"{path}/keel.json holds a {section} section keel cannot read ({_problems(error)}); "
                                "the model is corrupt. Restore the directory from a backup or retrain the "
                                "model.") from None
    try:
        preprocessor = Preprocessor.from_state(manifest.preprocessing, arrays)
    except (ValidationError, ConfigError) as error:  # a transform setting this keel does not know
        detail = _problems(error) if isinstance(error, ValidationError) else str(error)
        raise ArtifactError(f"{path}/keel.json holds preprocessing settings keel cannot read ({detail}); the model "
                            "is corrupt. Restore the directory from a backup or retrain the model.") from None
    problems = [problem for transform in preprocessor.transforms if isinstance(transform, (TextTransform, ImageTransform))
                for problem in [transform.problem()] if problem]
    if problems:
        raise ArtifactError(f"{path}/keel.json and weights.safetensors disagree on a text or image column's "
                            f"preprocessing ({problems[0]}); the model is corrupt. Restore the directory from a backup or retrain "
                            "the model.")
    return preprocessor


# ---- what loading reads from keel.json's sections, checked before the stages read it ----------
class _FeatureState(TypedDict):
    name: str
    type: Literal["number", "category", "binary", "date", "text", "image"]


class _SchemaState(TypedDict):
    target: str
    task: Literal["binary", "multiclass", "regression"]
    features: list[_FeatureState]
    dropped: NotRequired[dict[str, str]]
    notes: NotRequired[list[str]]
    as_written: NotRequired[bool]
    target_written: NotRequired[bool]


# A fitted constant: keel writes finite numbers only (allow_nan=False), and a scale it divides by is positive
# (fitting turns a zero spread into 1). A hand-edited 0 crashed predict; a NaN made every prediction empty.
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Scale = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _NumberState(TypedDict):
    kind: Literal["number"]
    name: str
    missing: str
    normalize: str
    indicator: bool
    fill: _Finite | None
    center: _Finite | None
    scale: _Scale | None
    knots: NotRequired[list[list[_Finite]] | None]


class _BinaryState(TypedDict):
    kind: Literal["binary"]
    name: str
    values: list[str]
    fill: Annotated[float, Field(ge=0, le=1)] | None


class _CategoryState(TypedDict):
    kind: Literal["category"]
    name: str
    vocabulary: list[str]
    min_count: int
    min_share: NotRequired[float]
    n_rare: int


class _DateState(TypedDict):
    kind: Literal["date"]
    name: str
    origin: _Finite
    fill: _Finite
    center: _Finite
    scale: _Scale
    year_center: _Finite
    year_scale: _Scale
    hour: bool


class _TextState(TypedDict):
    kind: Literal["text"]
    name: str
    encoder: Literal["tfidf", "pretrained", "bag"]
    dim: int
    max_features: int
    model: str
    max_tokens: int | None
    model_sha256: str
    vocabulary: list[str]
    cache_dir: NotRequired[str | None]
    finetune: NotRequired[Literal["none", "full", "lora"]]  # "none": a bag column (its tokens are its terms)
    lora_rank: NotRequired[int]
    lr: NotRequired[float | None]
    linear: NotRequired[int]


class _ImageState(TypedDict):
    kind: Literal["image"]
    name: str
    encoder: Literal["cnn", "resnet"]
    size: int
    channels: Literal["gray", "rgb"]
    strict: bool
    augment: Literal["none", "shift", "flip", "shift_flip"]
    dim: int
    finetune: bool
    model_path: str | None
    native: list[int]
    native_bands: int
    scale: _Scale
    mean: list[_Finite]
    std: list[_Scale]
    depth: int
    model_sha256: str


class _TargetState(TypedDict):
    name: str
    task: Literal["binary", "multiclass", "regression"]
    labels: list[Any]
    mean: _Finite | None
    std: _Scale | None


_SCHEMA_STATE = TypeAdapter(_SchemaState)
_PREPROCESSING_STATE = TypeAdapter(list[Annotated[Union[_NumberState, _BinaryState, _CategoryState, _DateState,
                                                        _TextState, _ImageState],
                                                  Field(discriminator="kind")]])
_TARGET_STATE = TypeAdapter(_TargetState)


def _problems(error: ValidationError) -> str:
    """A pydantic error's first problems, each with where it is."""
    problems = [f"{'.'.join(str(part) for part in item['loc']) or 'the section'}: {item['msg']}"
                for item in error.errors()[:3]]
    return "; ".join(problems) + (f" and {error.error_count() - 3} more" if error.error_count() > 3 else "")


@functools.cache
def _network_spec_adapter() -> TypeAdapter[NetworkSpec]:
    """Built once: building it evaluates NetworkSpec's annotations, which loading need not repeat."""
    return TypeAdapter(NetworkSpec)


def _listed(values: list[int]) -> str:
    """A list of counts, the first few of a long one."""
    return f"{values[:5]}" + (f" and {len(values) - 5:,} more" if len(values) > 5 else "")


def _predictions_problem(arrays: dict[str, np.ndarray], task: str, n_classes: int) -> str | None:
    """What keeps ``arrays`` from being a model's kept test predictions, or None."""
    target = arrays.get("target")
    if target is None or target.ndim != 1:
        return "no one-dimensional target"
    n_rows = len(target)
    wanted = {"probabilities": (n_rows, n_classes)} if task != "regression" else {"values": (n_rows,)}
    for name, shape in wanted.items():
        if name not in arrays or arrays[name].shape != shape:
            found = arrays[name].shape if name in arrays else "none"
            return f"{name} should be {shape}, found {found}"
    extra = sorted(set(arrays) - {"target", "row", "weight", *wanted})
    if extra:
        return f"unexpected arrays {extra}"
    for name in ("row", "weight"):
        if name in arrays and arrays[name].shape != (n_rows,):
            return f"{name} should be ({n_rows},), found {arrays[name].shape}"
    return None


def _shape_mismatch(expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]]) -> str:
    """What differs between the tensors a network needs and those stored, in a few words."""
    problems = [f"the weights lack {name}" for name in sorted(set(expected) - set(stored))]
    problems += [f"the weights hold an unexpected {name}" for name in sorted(set(stored) - set(expected))]
    problems += [f"{name} is {expected[name]} in the description but {stored[name]} in the weights"
                 for name in sorted(set(expected) & set(stored)) if expected[name] != stored[name]]
    return "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")


def _drop(tree: dict[str, Any], location: tuple[int | str, ...]) -> str | None:
    """Remove the deepest mapping key on ``location`` (a pydantic error's loc); returns it dotted."""
    node: Any = tree
    found: tuple[dict[str, Any], str, int] | None = None
    for depth, part in enumerate(location):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            found = (node, part, depth)
        elif not (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            break
        node = node[part]
    if found is None:
        return None
    container, key, depth = found
    del container[key]
    return ".".join(str(part) for part in location[:depth + 1])
