"""Predictions from an exported ONNX file with ONNX Runtime and NumPy: no torch, no pandas.

:class:`Predictor` loads either a model directory holding an attached ``model.onnx`` (its sha256
checked against ``keel.json``) or a bare ``.onnx`` file (everything it needs is in the file's
metadata), and answers ``predict`` and ``predict_proba`` as :class:`keel.model.Model` does: the
same labels in the same Python types, probabilities in ``classes`` order, values as float64.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np

from keel.errors import ArtifactError, ConfigError, KeelError, KeelWarning
from keel.evaluate.metrics import predicted_classes
from keel.runtime.inputs import InputColumn, to_feeds

ONNX_FILE: Final = "model.onnx"
# The newest graph layout this predictor reads: keel.export.onnx.EXPORT_FORMAT, written out here
# because importing the exporter imports pandas (a test keeps the two equal).
EXPORT_FORMAT: Final = 2
# Rows per ONNX Runtime call on a large batch: a 256-wide ensemble of 8 keeps its activations of
# 256 rows (2 MB) in cache. On the balanced penguins model (one thread) 128-512 rows gave 64-70k
# rows/s, 1,024 rows 58k, 4,096 rows 40k; one 1M-row call would hold gigabytes.
CHUNK_ROWS: Final = 256
# The training table's columns a model reads from the config rather than as features.
_SPECIAL_COLUMNS = ("split_by", "order_by", "weight_column")


class Predictor:
    """A keel model exported to ONNX, run by ONNX Runtime. Create one with :meth:`load`.

    Attributes:
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        target: The target column's name.
        classes: Class labels in probability-column order, in their training types (empty for regression).
        threshold: A binary model's decision threshold: ``classes[1]`` is predicted where its
            probability is at least this; None predicts the most probable class.
        feature_names: The input columns, in the graph's order.
        path: The directory or file it was loaded from.

    Example:
        >>> from keel.runtime import Predictor
        >>> predictor = Predictor.load("runs/penguins")
        >>> predictor.predict({"island": "Biscoe", "bill_length_mm": 45.1, "bill_depth_mm": 14.5,
        ...                    "flipper_length_mm": 215, "body_mass_g": 5000, "sex": "female", "year": 2008})
        array(['Gentoo'], dtype='<U9')
    """

    def __init__(self, session: Any, metadata: dict[str, str], path: Path, known: set[str]) -> None:
        self._session = session
        self.path = path
        self.task: str = metadata["keel.task"]
        self.target: str = metadata["keel.target"]
        self.classes: list[Any] = json.loads(metadata.get("keel.classes", "[]"))
        self._labels = _label_array(self.classes)
        self.threshold = _threshold(metadata, path)
        self._columns = [InputColumn(item.name, item.type == "tensor(double)") for item in session.get_inputs()]
        self.feature_names = [column.name for column in self._columns]
        outputs = json.loads(metadata["keel.outputs"])
        # The one output each method needs; labels are decided from the probabilities (class_indices).
        self._output = [outputs[0] if self.task == "regression" else outputs[1]]
        schema = json.loads(metadata.get("keel.schema", "{}"))
        # Columns of the training table that are no input: passing them is no mistake, so no warning.
        self._known = {*self.feature_names, self.target, *schema.get("dropped", {}), *known}
        self._reported: set[str] = set()

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, threads: int = 1, file: str = ONNX_FILE) -> "Predictor":
        """Load a model directory with an attached ``model.onnx``, or a bare ``.onnx`` file.

        Args:
            path: The model directory (its ``model.onnx`` is checked against the sha256 in
                ``keel.json``) or an ``.onnx`` file written by keel's export.
            threads: ONNX Runtime's threads per call. 1 (the default) gives the lowest one-row
                latency and suits a server with a process per core; more speed up large batches;
                0 lets ONNX Runtime pick (one per physical core).
            file: Which attached export of a directory to load: ``model.onnx``, or
                ``model.int8.onnx`` for the int8 one (``keel export --quantize int8``).

        Returns:
            The predictor.

        Raises:
            ArtifactError: Nothing at ``path``, no ONNX export in the directory, a file that fails
                its checksum or is no keel export, or an export newer than this keel reads.
            ConfigError: ``threads`` is negative.
            KeelError: onnxruntime is not installed.
        """
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ConfigError(f"threads must be a whole number >= 0; got {threads!r}. Pass 1 for one-row requests, "
                              "more for large batches, 0 to let ONNX Runtime choose.")
        location = Path(path)
        if location.is_dir():
            content, known = _read_directory(location, file)
        elif location.is_file() and location.suffix.lower() == ".onnx":
            content, known = _read_file(location), set()
        elif location.is_file():
            raise ArtifactError(f"{location} is neither a model directory nor an .onnx file; pass the directory "
                                f"written by 'keel train --output' (with {ONNX_FILE} attached) or the .onnx file.")
        else:
            raise ArtifactError(f"no model at {location}; pass a model directory or an .onnx file "
                                f"(working directory: {Path.cwd()}).")
        session = _session(content, threads, location)
        return cls(session, _metadata(session, location), location, known)

    def __repr__(self) -> str:
        return f"Predictor(task={self.task!r}, target={self.target!r}, features={len(self.feature_names)})"

    def predict(self, data: Any) -> np.ndarray:
        """Predicted class labels (classification) or values (regression), one per row, in row order.

        Args:
            data: One row (a dict of column -> value), columns (a dict of column -> list or
                array), rows (a list of dicts) or a pandas DataFrame. Columns the model does not
                read are ignored (listed once in a :class:`~keel.errors.KeelWarning`).

        Returns:
            Labels in the types the training target had (ints, bools, strings; an object array of
            the labels themselves when the classes mix types, such as ``[1, "yes"]``), or float64
            values.

        Raises:
            DataError: A missing column, a value that is no number where one is needed, no single
                value, columns of different lengths or no rows; the message names column and row.
        """
        outputs = self._run(data)
        if self.task == "regression":
            return outputs.astype(np.float64, copy=False)
        return self._labels[self.class_indices(outputs)]

    def class_indices(self, probabilities: np.ndarray) -> np.ndarray:
        """The predicted class of each row of ``probabilities``, as indices into :attr:`classes`.

        The decision rule of keel itself (:func:`keel.evaluate.metrics.predicted_classes`): the most
        probable class, or for a binary model with a :attr:`threshold`, ``classes[1]`` where its
        probability is at least the threshold, compared in float32 as the graph's ``label`` output
        compares them; so :meth:`predict_proba`'s probabilities give :meth:`predict`'s labels.

        Args:
            probabilities: (n_rows, n_classes) probabilities, as :meth:`predict_proba` returns them
                (float64) or the graph gives them (float32).

        Returns:
            int64 class indices, (n_rows,).
        """
        # The graph's probabilities are float32: predict_proba's float64 copies cast back exactly.
        return predicted_classes(np.asarray(probabilities, dtype=np.float32), self.threshold)

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities, shape (n_rows, n_classes), columns in the order of :attr:`classes`.

        Args:
            data: As for :meth:`predict`.

        Returns:
            float64 probabilities; each row sums to 1.

        Raises:
            ConfigError: The model does regression.
            DataError: As for :meth:`predict`.
        """
        if self.task == "regression":
            raise ConfigError("predict_proba needs a classification model; this one does regression. Use predict.")
        return self._run(data).astype(np.float64)

    def _run(self, data: Any) -> np.ndarray:
        feeds, extra = to_feeds(data, self._columns)
        if extra:
            self._report(extra)
        n_rows = len(next(iter(feeds.values())))
        if n_rows <= CHUNK_ROWS:
            result: np.ndarray = self._session.run(self._output, feeds)[0]
            return result
        parts = [self._session.run(self._output, {name: values[start:start + CHUNK_ROWS]
                                                  for name, values in feeds.items()})[0]
                 for start in range(0, n_rows, CHUNK_ROWS)]
        return np.concatenate(parts)

    def _report(self, extra: list[str]) -> None:
        """Warn about columns the model never saw, each name once in this predictor's life."""
        new = [name for name in extra if name not in self._known and name not in self._reported]
        if new:
            self._reported.update(new)
            warnings.warn(
                f"ignoring column(s) {new}: the model does not read them (its inputs are {self.feature_names}). "
                "Check their spelling if you meant one of those.", KeelWarning, stacklevel=4)


def _label_array(classes: list[Any]) -> np.ndarray:
    """The classes as an array that indexing decodes, as TargetEncoder.decode does: of their own
    type when all are of one, else an object array (``np.asarray([1, "yes"])`` would make 1 "1")."""
    if len({type(label) for label in classes}) <= 1:
        return np.asarray(classes)
    labels = np.empty(len(classes), dtype=object)
    labels[:] = classes
    return labels


def _threshold(metadata: dict[str, str], path: Path) -> float | None:
    """The decision threshold in the file's metadata (``keel.threshold``), checked; None without one."""
    text = metadata.get("keel.threshold")
    if text is None:
        return None
    try:
        threshold = float(text)
    except ValueError:
        threshold = float("nan")
    if metadata.get("keel.task") != "binary" or not 0.0 < threshold < 1.0:
        raise ArtifactError(f"{path} has the decision threshold {text!r} for a {metadata.get('keel.task')} model; "
                            "a threshold is a number strictly between 0 and 1, for binary models only. The file was "
                            "changed after export: export the model again with `keel export MODEL`.")
    return threshold


def _read_directory(directory: Path, name: str) -> tuple[bytes, set[str]]:
    """The verified ONNX bytes of a model directory, and its config's special column names."""
    from keel.artifact import WEIGHTS_FILE, read_manifest  # pydantic, no torch: only directories need it

    # Only the ONNX file is read, so only its checksum is checked: a serving copy may leave the
    # weights out.
    manifest = read_manifest(directory, verify=False)
    record = manifest.files.get(name)
    if record is None:
        raise ArtifactError(f"{directory} holds no ONNX export named {name!r} (keel.json lists "
                            f"{sorted(n for n in manifest.attached if n.endswith('.onnx')) or 'none'}); make one with "
                            f"`keel export {directory}`{' --quantize int8' if 'int8' in name else ''}, then load it again.")
    if record.made_from is not None and record.made_from != manifest.files[WEIGHTS_FILE].sha256:
        raise ArtifactError(f"{directory / name} was exported from other weights than the model's; export it "
                            f"again with `keel export {directory}`.")
    content = _read_file(directory / name)
    if hashlib.sha256(content).hexdigest() != record.sha256:
        raise ArtifactError(f"{directory / name} fails its checksum: it changed or is corrupt since it was "
                            f"exported. Export it again with `keel export {directory}`.")
    training = manifest.config.get("training", {})
    return content, {training[key] for key in _SPECIAL_COLUMNS if isinstance(training.get(key), str)}


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path.parent} is incomplete: {path.name} is missing. Export the model again with "
                            f"`keel export {path.parent}`.") from None
    except OSError as error:
        raise ArtifactError(f"{path} cannot be read: {error.strerror or error}.") from None


def _session(content: bytes, threads: int, path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise KeelError("keel.runtime needs the 'onnxruntime' package, which is not installed; install keel's "
                        "export extra (pip install 'keel[export]') or just pip install onnxruntime.") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is one chain: parallel branches would only add threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the rest is ONNX Runtime's business, not the caller's
    try:
        return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ONNX Runtime's errors share no base class but Exception
        message = str(error).replace("\n", " ")[:200]
        raise ArtifactError(f"{path} cannot be loaded by ONNX Runtime ({message}); export the model again with "
                            "`keel export MODEL`.") from None


def _metadata(session: Any, path: Path) -> dict[str, str]:
    """The keel metadata of the loaded file, checked for what a predictor needs."""
    metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    if "keel.task" not in metadata or "keel.outputs" not in metadata:
        raise ArtifactError(f"{path} is an ONNX file without keel's metadata (keel.task, keel.outputs); load a file "
                            "written by `keel export`.")
    version = metadata.get("keel.export_format", "?")
    if not version.isdigit() or int(version) > EXPORT_FORMAT:
        writer = metadata.get("keel.version", "?")
        raise ArtifactError(f"{path} has export format {version} (written by keel {writer}); "
                            f"this keel reads formats up to {EXPORT_FORMAT}. Upgrade keel (pip install -U keel).")
    return metadata
