"""Predictions from an exported ONNX file with ONNX Runtime and NumPy: no torch, no pandas.

:class:`Predictor` loads either a model directory holding an attached ``model.onnx`` (its sha256
checked against ``keel.json``) or a bare ``.onnx`` file (everything it needs is in the file's
metadata), and answers ``predict`` and ``predict_proba`` as :class:`keel.model.Model` does: the
same labels in the same Python types, probabilities in ``classes`` order, values as float64.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from keel.data.pixels import PixelSpec, raise_all
from keel.data.words import MAX_CHAR_NGRAM
from keel.errors import ArtifactError, ConfigError, DataError, KeelError, KeelWarning
from keel.evaluate.metrics import predicted_classes
from keel.runtime.inputs import (
    InputColumn,
    image_pixels,
    image_problems,
    load_tokenizer,
    padded,
    term_rows,
    to_feeds,
    token_rows,
    vocabulary_index,
)

ONNX_FILE: Final = "model.onnx"
# The newest graph layout this predictor reads: keel.export.onnx.EXPORT_FORMAT, written out here
# because importing the exporter imports pandas (a test keeps the two equal).
EXPORT_FORMAT: Final = 6
# Rows per ONNX Runtime call on a large batch: a 256-wide ensemble of 8 keeps its activations of
# 256 rows (2 MB) in cache. On the balanced penguins model (one thread) 128-512 rows gave 64-70k
# rows/s, 1,024 rows 58k, 4,096 rows 40k; one 1M-row call would hold gigabytes.
CHUNK_ROWS: Final = 256
# Term slots (rows x longest text's terms) of one text input in one call: 1 M int64 positions, 8 MB.
MAX_TERM_SLOTS: Final = 1 << 20
# The largest token limit and image side keel trains with (text.max_tokens, image.size in keel.config): a file
# declaring more was not written by keel's export, and its pixels or ids would be allocated before any check.
MAX_TOKENS: Final = 100_000
MAX_IMAGE_SIZE: Final = 512
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
        dates = {item["name"] for item in json.loads(metadata.get("keel.features", "[]")) if item["type"] == "date"}
        # An export without keel.dates (keel before s19) refuses years and YYYYMMDD in every date column: the safe
        # reading, as its DataFrame path always did; only a model trained on dates of 1970 takes them as seconds.
        digits = json.loads(metadata.get("keel.dates", "{}"))
        texts = json.loads(metadata.get("keel.text", "{}"))
        images = {name: PixelSpec(item["mode"], int(item["size"]), float(item["scale"]))
                  for name, item in json.loads(metadata.get("keel.images", "{}")).items()}
        tokens = {name: _tokenizer(item, name, path) for name, item in json.loads(metadata.get("keel.tokens", "{}")).items()}
        self._columns = [InputColumn(item.name, item.type == "tensor(double)", item.name in dates,
                                     vocabulary_index(texts[item.name]["vocabulary"]) if item.name in texts else None,
                                     images.get(item.name), tokens.get(item.name),
                                     refuses_digits=digits.get(item.name, {}).get("refuses_digits", True),
                                     char_ngrams=_char_ngrams(texts.get(item.name)))
                         for item in session.get_inputs()]
        self.feature_names = [column.name for column in self._columns]
        outputs = json.loads(metadata["keel.outputs"])
        # The one output each method needs; labels are decided from the probabilities (class_indices).
        self._output = [outputs[0] if self.task == "regression" else outputs[1]]
        schema = json.loads(metadata.get("keel.schema", "{}"))
        # Columns of the training table that are no input: passing them is no mistake, so no warning.
        self._known = {*self.feature_names, self.target, *schema.get("dropped", {}), *known}
        self._reported: set[str] = set()
        # Dynamic int8 quantizes each call's activations with one scale for all its rows: a row's answer would
        # depend on the rows beside it (an outlier moved its neighbours' probabilities by 0.09), so each row is a
        # call of its own. Static int8 (--static) has fixed scales, and float files none.
        self._row_by_row = row_by_row(metadata)

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
        _refuse_external_data(content, location / file if location.is_dir() else location)
        session = _session(content, threads, location)
        return cls(session, _metadata(session, location), location, known)

    def __repr__(self) -> str:
        return f"Predictor(task={self.task!r}, target={self.target!r}, features={len(self.feature_names)})"

    def predict(self, data: Any) -> np.ndarray:
        """Predicted class labels (classification) or values (regression), one per row, in row order.

        Args:
            data: One row (a dict of column -> value), columns (a dict of column -> list or
                array), rows (a list of dicts) or a pandas DataFrame. Columns the model does not
                read are ignored (listed once in a :class:`~keel.errors.KeelWarning`). A date column
                takes ISO 8601 text, datetimes or seconds since 1970-01-01 UTC (numbers that are all
                years or all YYYYMMDD dates are refused, as Model.predict refuses them; see
                :mod:`keel.runtime.inputs`).

        Returns:
            Labels in the types the training target had (ints, bools, strings; an object array of
            the labels themselves when the classes mix types, such as ``[1, "yes"]``), or float64
            values.

        Raises:
            DataError: A missing column, a value that is no number (or no date) where one is needed,
                no single value, columns of different lengths or no rows; the message names column
                and row.
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
        feeds, extra = to_feeds(data, self._columns, positions=False)
        if extra:
            self._report(extra)
        n_rows = len(next(iter(feeds.values())))
        texts = {column.name: term_rows(feeds.pop(column.name), column.vocabulary, column.char_ngrams)
                 if column.vocabulary is not None
                 else token_rows(feeds.pop(column.name), column.tokenizer)
                 for column in self._columns if column.vocabulary is not None or column.tokenizer is not None}
        # Images are decoded a chunk at a time: 100,000 rows of 64 x 64 RGB pixels would be 4.9 GB at once.
        images = {column: feeds.pop(column.name) for column in self._columns if column.image is not None}
        if n_rows <= CHUNK_ROWS and not texts and not images and not self._row_by_row:
            result: np.ndarray = self._call(feeds)
            return result
        parts = []
        chunks = ([(row, row + 1) for row in range(n_rows)] if self._row_by_row else
                  _chunks(n_rows, [[len(row) for row in rows] for rows in texts.values()]))
        for start, stop in chunks:
            chunk = {name: values[start:stop] for name, values in feeds.items()}
            chunk.update({name: padded(rows[start:stop]) for name, rows in texts.items()})
            try:
                chunk.update({column.name: image_pixels(values[start:stop], column, start + 1)
                              for column, values in images.items()})
            except DataError as error:  # a DataFrame read from a file: name the file, as Model.predict does
                source = getattr(data, "attrs", {}).get("source") if not isinstance(data, (dict, list)) else None
                raise _every_bad_image(error, images, start).in_file(source) from None
            parts.append(self._call(chunk))
        return np.concatenate(parts)

    def _call(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One ONNX Runtime call. keel made the inputs from the file's own metadata, so a call the graph refuses
        (a vocabulary longer than its table, a token id beyond its embeddings, an image of another side) is a
        file whose metadata does not fit its graph: an ArtifactError, not ONNX Runtime's own exception."""
        try:
            result: np.ndarray = self._session.run(self._output, feeds)[0]
        except Exception as error:  # noqa: BLE001 - onnxruntime's exceptions have no public base class
            if type(error).__module__.split(".")[0] != "onnxruntime":
                raise
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot run the file on the inputs its own metadata "
                                f"describes ({str(error).splitlines()[0][:200]}); the file was changed after export. "
                                "Export the model again with `keel export MODEL`.") from None
        return result

    def _report(self, extra: list[str]) -> None:
        """Warn about columns the model never saw, each name once in this predictor's life."""
        new = [name for name in extra if name not in self._known and name not in self._reported]
        if new:
            self._reported.update(new)
            warnings.warn(
                f"ignoring column(s) {new}: the model does not read them (its inputs are {self.feature_names}). "
                "Check their spelling if you meant one of those.", KeelWarning, stacklevel=4)


def _tokenizer(item: dict[str, Any], column: str, path: Path) -> Any:
    """A pretrained text column's tokenizer from keel.tokens; one that the tokenizers library cannot build is the
    file's fault (an ArtifactError), not a crash."""
    try:
        return load_tokenizer(item["tokenizer"], int(item["max_tokens"]))
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad tokenizer.json
        raise ArtifactError(f"{path}: the tokenizer of text column {column!r} (metadata keel.tokens) cannot be read "
                            f"({str(error)[:200]}); the file was changed after export. Export the model again with "
                            "`keel export MODEL`.") from None


def row_by_row(metadata: dict[str, str]) -> bool:
    """Whether an ONNX file (its metadata) is run one row per call: a dynamic int8 file, whose activations are
    scaled by all the rows of a call (see Predictor)."""
    return metadata.get("keel.quantization") == "int8-dynamic"


def _chunks(n_rows: int, lengths: list[list[int]]) -> list[tuple[int, int]]:
    """Row ranges of at most ``CHUNK_ROWS`` rows whose padded text inputs (rows x longest row, per text
    column) stay within ``MAX_TERM_SLOTS``: one 10,000-word text pads its own chunk, not a whole batch."""
    chunks, start = [], 0
    while start < n_rows:
        stop, longest = start + 1, [column[start] for column in lengths]
        while stop < n_rows and stop - start < CHUNK_ROWS:
            wider = [max(width, column[stop]) for width, column in zip(longest, lengths)]
            if any((stop - start + 1) * width > MAX_TERM_SLOTS for width in wider):
                break
            stop, longest = stop + 1, wider
        chunks.append((start, stop))
        start = stop
    return chunks


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
    from keel.artifact import (  # pydantic, no torch: only directories need it
        WEIGHTS_FILE,
        read_manifest,
        read_model_file,
    )

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
    if not os.path.lexists(directory / name):
        _read_file(directory / name)  # says the export is missing and how to make it
    content = read_model_file(directory, name)  # no link, nothing outside the directory
    if hashlib.sha256(content).hexdigest() != record.sha256:
        raise ArtifactError(f"{directory / name} fails its checksum: it changed or is corrupt since it was "
                            f"exported. Export it again with `keel export {directory}`.")
    training = manifest.config.get("training", {})
    return content, {training[key] for key in _SPECIAL_COLUMNS if isinstance(training.get(key), str)}


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        from keel.artifact import remake_command

        raise ArtifactError(f"{path.parent} is incomplete: {path.name} is missing. Export the model again with "
                            f"`{remake_command(path.parent, path.name)}`.") from None
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
    options.log_severity_level = 4  # fatal only: an error reaches the caller as a KeelError (Predictor._call)
    try:
        return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ONNX Runtime's errors share no base class but Exception
        message = str(error).replace("\n", " ")[:200]
        raise ArtifactError(f"{path} cannot be loaded by ONNX Runtime ({message}); export the model again with "
                            "`keel export MODEL`.") from None


def _metadata(session: Any, path: Path) -> dict[str, str]:
    """The keel metadata of the loaded file, checked for what a predictor and the server read.

    The file may come from anyone: every JSON value is parsed with a depth limit and checked for
    the type its readers expect, so that a hostile one is a clear ArtifactError here rather than a
    RecursionError or TypeError later.
    """
    from keel.artifact import parse_json

    metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    if "keel.task" not in metadata or "keel.outputs" not in metadata:
        raise ArtifactError(f"{path} is an ONNX file without keel's metadata (keel.task, keel.outputs); load a file "
                            "written by `keel export`.")
    version = metadata.get("keel.export_format", "?")
    if not version.isdigit() or int(version) > EXPORT_FORMAT:
        writer = metadata.get("keel.version", "?")
        raise ArtifactError(f"{path} has export format {version} (written by keel {writer}); "
                            f"this keel reads formats up to {EXPORT_FORMAT}. Upgrade keel (pip install -U keel).")
    values = {key: parse_json(metadata[key].encode("utf-8", "surrogatepass"), f"{path} (metadata {key})")
              for key in _JSON_METADATA if key in metadata}
    problems = _metadata_problems(metadata, values, [item.name for item in session.get_outputs()])
    if problems:
        raise ArtifactError(f"{path} has metadata no keel export writes ({'; '.join(problems)[:300]}); the file was "
                            "changed after export. Export the model again with `keel export MODEL`.")
    return metadata


def _metadata_problems(metadata: dict[str, str], values: dict[str, Any], outputs: list[str]) -> list[str]:
    """What keeps the metadata (``values``: its JSON parsed) from being a keel export's."""
    problems = [f"{key} is not {what}" for key, (fits, what) in _METADATA_SHAPES.items()
                if key in values and not fits(values[key])]
    task = metadata["keel.task"]
    if task not in ("binary", "multiclass", "regression"):
        problems.append(f"keel.task is {task!r}, not binary, multiclass or regression")
    elif not problems and len(values["keel.outputs"]) < (1 if task == "regression" else 2):
        problems.append(f"keel.outputs lists {values['keel.outputs']} for a {task} model")
    elif not problems and not set(values["keel.outputs"]) <= set(outputs):
        problems.append(f"keel.outputs lists {values['keel.outputs']}, but the graph's outputs are {outputs}")
    return problems


# The metadata keys that hold JSON, what the predictor and the server need each to be, and how to
# tell; keel.metrics and keel.parity are only shown, so any JSON does.
_METADATA_SHAPES: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "keel.outputs": (lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
                     "a list of output names"),
    "keel.classes": (lambda value: isinstance(value, list), "a list of labels"),
    "keel.features": (lambda value: isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("type"), str)
        for item in value), "a list of {name, type} objects"),
    "keel.vocabularies": (lambda value: isinstance(value, dict) and all(isinstance(item, list)
                                                                        for item in value.values()),
                          "an object of lists"),
    "keel.schema": (lambda value: isinstance(value, dict) and isinstance(value.get("dropped", {}), dict),
                    "an object with a 'dropped' object"),
    "keel.text": (lambda value: _columns_of(value, lambda item: isinstance(item.get("vocabulary"), list) and all(
        isinstance(term, str) for term in item["vocabulary"]) and _lengths(item.get("char_ngrams", [1, 1]))),
        f"an object of {{vocabulary: [terms], char_ngrams: [low, high] (optional; 1 <= low <= high <= {MAX_CHAR_NGRAM})}} objects"),
    "keel.tokens": (lambda value: _columns_of(value, lambda item: isinstance(item.get("tokenizer"), str) and _whole(
        item.get("max_tokens"), MAX_TOKENS)), f"an object of {{tokenizer, max_tokens 1 to {MAX_TOKENS:,}}} objects"),
    "keel.dates": (lambda value: _columns_of(value, lambda item: isinstance(item.get("refuses_digits"), bool)),
                   "an object of {refuses_digits: true or false} objects"),
    "keel.images": (lambda value: _columns_of(value, lambda item: item.get("mode") in ("L", "RGB") and _whole(
        item.get("size"), MAX_IMAGE_SIZE) and isinstance(item.get("scale"), (int, float))
        and not isinstance(item.get("scale"), bool) and 0 < item["scale"] < math.inf),
        f"an object of {{mode L or RGB, size 1 to {MAX_IMAGE_SIZE}, scale > 0}} objects"),
}
_JSON_METADATA: Final = (*_METADATA_SHAPES, "keel.metrics", "keel.parity")


def _columns_of(value: Any, fits: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether ``value`` is an object of column name -> an object that ``fits``."""
    return isinstance(value, dict) and all(isinstance(item, dict) and fits(item) for item in value.values())


def _lengths(value: Any) -> bool:
    """Whether ``value`` is keel.text's char_ngrams: [low, high], whole numbers, 1 <= low <= high <= MAX_CHAR_NGRAM
    (as text.char_ngrams: a file claiming [1, 1000000] would take minutes a request, making grams of every length)."""
    return isinstance(value, list) and len(value) == 2 and all(_whole(item, MAX_CHAR_NGRAM) for item in value) \
        and value[0] <= value[1]


def _char_ngrams(item: dict[str, Any] | None) -> tuple[int, int] | None:
    """A text column's character n-gram lengths from its keel.text entry (checked by _METADATA_SHAPES), or None."""
    lengths = (item or {}).get("char_ngrams")
    return None if lengths is None else (int(lengths[0]), int(lengths[1]))


def _whole(value: Any, most: int) -> bool:
    """Whether ``value`` is an int from 1 to ``most`` (not a bool): a size the predictor allocates by."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


# ---- external data ---------------------------------------------------------------------------
# Where an ONNX file can hold a tensor (onnx.proto's field numbers): message kind -> field -> the
# kind of the message in it. A tensor whose data lives in another file (external data) is found
# wherever it hides, in a subgraph's constant or a function's attribute too.
_CHILDREN: Final[dict[str, dict[int, str]]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_EXTERNAL_DATA: Final = 13  # TensorProto.external_data: where the bytes are
_DATA_LOCATION: Final = 14  # TensorProto.data_location: 1 is EXTERNAL
_MAX_NESTING: Final = 64


def _refuse_external_data(content: bytes, path: Path) -> None:
    """Refuse an ONNX file with tensors stored in other files, before ONNX Runtime sees it.

    ONNX Runtime would open such a file by the name the model gives (``../secret.bin``, an
    absolute path); recent versions refuse names outside the model's folder, older ones do not,
    and none knows which files of a keel model directory are the model's. keel's exports hold all
    their data inline, so any external reference is refused; a file that is not well-formed
    protobuf is refused too. Reads the protobuf wire format directly: the serving install has no
    ``onnx`` package.

    Raises:
        ArtifactError: A tensor keeps its data outside the file, or the file is no protobuf.
    """
    try:
        external = _external_tensors(memoryview(content))
    except ValueError as error:
        raise ArtifactError(f"{path} cannot be loaded: it is not an ONNX file ({error}); export the model again "
                            "with `keel export MODEL`.") from None
    if external:
        raise ArtifactError(f"{path} keeps the data of {external} tensor(s) in other files (ONNX external data), "
                            "which keel never writes and does not read: they could name any file on this machine. "
                            "Export the model again with `keel export MODEL`.")


def _external_tensors(view: memoryview) -> int:
    """How many tensors of the ONNX protobuf ``view`` hold external data; ValueError if malformed."""
    external = 0
    pending = [("model", 0, len(view), 0)]
    while pending:
        kind, position, end, depth = pending.pop()
        if depth > _MAX_NESTING:
            raise ValueError(f"its messages nest deeper than {_MAX_NESTING} levels")
        outside = False
        while position < end:
            key, position = _varint(view, position, end)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, position = _varint(view, position, end)
                outside |= kind == "tensor" and number == _DATA_LOCATION and value == 1
            elif wire == 2:
                length, position = _varint(view, position, end)
                if length > end - position:
                    raise ValueError("a field runs past the end of its message")
                outside |= kind == "tensor" and number == _EXTERNAL_DATA
                if number in _CHILDREN[kind]:
                    pending.append((_CHILDREN[kind][number], position, position + length, depth + 1))
                position += length
            elif wire in (1, 5):
                position += 8 if wire == 1 else 4
            else:
                raise ValueError(f"its protobuf has the field type {wire}, which ONNX does not use")
            if position > end:
                raise ValueError("a field runs past the end of its message")
        external += outside
    return external


def _varint(view: memoryview, position: int, end: int) -> tuple[int, int]:
    """The protobuf varint at ``position`` and the position after it."""
    value = shift = 0
    while position < end and shift < 70:
        byte = view[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ValueError("a number runs past the end of its message")


def _every_bad_image(error: DataError, images: dict[InputColumn, np.ndarray], start: int) -> DataError:
    """``error``, a chunk's bad images from row ``start`` (0-based) on, widened to every bad image of that column
    in the rows from there to the end (the later chunks decoded only to be checked), as training names them all."""
    column = next((column for column in images if column.name == error.column), None)
    if column is None:
        return error
    try:
        raise_all(image_problems(images[column][start:], column, start + 1), column.name, None)
    except DataError as every:
        return every
    return error
