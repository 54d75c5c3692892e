"""The fitted preprocessing of a whole table: feature transforms plus the target's encoding."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from keel.config import ImageConfig, PreprocessingConfig, TextConfig
from keel.data.images import ImageTransform
from keel.data.parallel import map_columns, workers_for
from keel.data.schema import Schema, spaced_names
from keel.data.spelling import label_shown
from keel.data.text import TextTransform
from keel.data.transforms import (
    TRANSFORMS,
    BinaryTransform,
    CategoryTransform,
    DateTransform,
    NumberTransform,
    Unseen,
    mean_and_std,
)
from keel.data.values import (
    TARGET_ADVICE,
    category_strings,
    is_numeric,
    map_gathering,
    missing_values,
    to_numeric,
    to_numeric_range,
    to_seconds,
)
from keel.errors import DataError, KeelWarning

FeatureTransform = NumberTransform | BinaryTransform | CategoryTransform | DateTransform | TextTransform | ImageTransform
# The transforms that write float columns of the network's numeric input.
NumericTransform = NumberTransform | BinaryTransform | DateTransform | TextTransform | ImageTransform

_FLOAT64_MAX = float(np.finfo(np.float64).max)
# Where the preprocessing's arrays sit among the model's tensors: no network weight's name has a "/".
ARRAY_PREFIX = "text/"
# Rows per chunk when writing the numeric array: 16,384 rows x 50 columns is a 3 MB buffer.
_CHUNK_ROWS = 16_384


@dataclass
class Features:
    """A table turned into arrays for the network."""

    numeric: np.ndarray  # (n_rows, numeric_width) float32
    categorical: np.ndarray  # (n_rows, n_categorical) int64
    unseen: dict[str, int]  # column -> values seen in no training row (or rare there)
    # column -> its transform's kind, for each column in ``unseen``: what happened to those values
    # depends on it (see describe_unseen).
    unseen_kinds: dict[str, str] = field(default_factory=dict)
    # column -> the first few distinct unseen values (Unseen.examples), for each column in ``unseen``.
    unseen_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.numeric)


# The warning for values a column never saw in training, by transform kind: what happened to them.
_UNSEEN_MESSAGES = {
    "category": "column {column!r}: {count} value(s) not seen in training (or rare there){examples} were mapped to "
                "the unknown-category bucket.",
    "binary": "column {column!r}: {count} value(s) that are neither of its two training values{examples} were "
              "filled like missing values, with the training share of the second value.",
}
# An example value in a note is cut to this many characters (a pasted paragraph in a category column).
_EXAMPLE_CHARS = 40


def describe_unseen(transform_kind: str, column: str, count: int, examples: Sequence[str] = ()) -> str:
    """The warning for ``count`` values of ``column`` that its training rows did not have.

    Args:
        transform_kind: The column's transform kind (``Features.unseen_kinds[column]``).
        column: The column's name.
        count: How many values were unseen (``Features.unseen[column]``).
        examples: Some of those values (``Features.unseen_examples[column]``), named in the sentence: each
            quoted by ``repr`` (one line whatever it holds) and cut to 40 characters.

    Returns:
        One sentence saying what happened to those values.

    Raises:
        ValueError: The kind has no unseen values (numbers) or is unknown.

    Example:
        >>> describe_unseen("category", "city", 12, ["Lyon", "Nice", "Brest"])[:84]
        "column 'city': 12 value(s) not seen in training (or rare there), e.g. 'Lyon', 'Nice'"
    """
    if transform_kind not in _UNSEEN_MESSAGES:
        raise ValueError(
            f"transform kind {transform_kind!r} has no unseen values; expected one of {sorted(_UNSEEN_MESSAGES)}.")
    shown = [repr(value if len(value) <= _EXAMPLE_CHARS else value[:_EXAMPLE_CHARS - 1] + "…") for value in examples]
    named = f", e.g. {', '.join(shown)}," if shown else ""
    return _UNSEEN_MESSAGES[transform_kind].format(column=column, count=count, examples=named)


class Preprocessor:
    """All feature transforms, fitted on the training rows only.

    Args:
        schema: Which columns are features, and their types.
        settings: The ``preprocessing`` section of the config.
        text: The ``text`` section of the config (how text columns are encoded).
        image: The ``image`` section of the config (how image columns are read and encoded).
    """

    def __init__(self, schema: Schema, settings: PreprocessingConfig | None = None,
                 text: TextConfig | None = None, image: ImageConfig | None = None) -> None:
        sections: dict[str, Any] = {"text": text, "image": image}
        settings = settings or PreprocessingConfig()
        self.transforms: list[FeatureTransform] = [
            TRANSFORMS[feature.type](feature.name, sections.get(feature.type, settings))
            for feature in schema.features
        ]

    @property
    def numeric(self) -> list[NumericTransform]:
        """The transforms of the numeric input: numbers, binaries and dates in schema order, then text
        columns (whose components the network reads without number embeddings: ``text_width``), then
        image columns (whose pixels the network's image encoders read: ``images``)."""
        columns = [t for t in self.transforms if not isinstance(t, CategoryTransform)]
        return ([t for t in columns if not isinstance(t, (TextTransform, ImageTransform))]
                + [t for t in columns if isinstance(t, TextTransform) and not t.tokens]
                + [t for t in columns if isinstance(t, ImageTransform)]
                + self.token_texts)

    @property
    def images(self) -> list[ImageTransform]:
        """The image columns' transforms, in the order of their pixels in the numeric input (after the text
        components)."""
        return [t for t in self.transforms if isinstance(t, ImageTransform)]

    @property
    def token_texts(self) -> list[TextTransform]:
        """The fine-tuned text columns' transforms, in the order of their token ids at the end of the numeric input."""
        return [t for t in self.transforms if isinstance(t, TextTransform) and t.tokens]

    @property
    def text_width(self) -> int:
        """How many of the numeric input's last columns are text components."""
        return sum(t.width for t in self.transforms if isinstance(t, TextTransform) and not t.tokens)

    @property
    def categorical(self) -> list[CategoryTransform]:
        return [t for t in self.transforms if isinstance(t, CategoryTransform)]

    @property
    def numeric_width(self) -> int:
        return sum(transform.width for transform in self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        return [transform.cardinality for transform in self.categorical]

    def feature_columns(self) -> dict[str, tuple[list[int], list[int]]]:
        """Each feature's columns in the transformed arrays: (numeric column indices, categorical ones).

        A number may span several numeric columns (its value and a missing flag), a date many (elapsed
        days, year, the sin / cos pairs, its missing flag); permuting a feature means permuting all of
        them together.
        """
        columns: dict[str, tuple[list[int], list[int]]] = {}
        offset = 0
        for transform in self.numeric:
            columns[transform.name] = (list(range(offset, offset + transform.width)), [])
            offset += transform.width
        for index, category in enumerate(self.categorical):
            columns[category.name] = ([], [index])
        return {transform.name: columns[transform.name] for transform in self.transforms}

    def fit(self, frame: pd.DataFrame, rows: np.ndarray | None = None, target: np.ndarray | None = None,
            task: str = "regression", groups: np.ndarray | None = None,
            weights: np.ndarray | None = None) -> "Preprocessor":
        """Fit every transform on ``frame`` (only the ``rows`` positions, in their order, when given). ``target``
        (one value per row fitted: class indices, or standardized values for ``task`` regression) lets a tfidf
        text column fit its linear scores (text.linear; see :meth:`put_out_of_fold`), out of fold by text and by
        ``groups`` (training.split_by's id of each row fitted), weighted by ``weights``."""
        source = frame.attrs.get("source")
        subset = rows is not None and not np.array_equal(rows, np.arange(len(frame)))

        def fit(item: tuple[FeatureTransform, pd.Series]) -> Any:
            transform, whole = item
            series = whole.iloc[rows] if subset else whole
            if isinstance(transform, TextTransform):
                return transform.fit(series, source, target, task, groups, weights)
            if isinstance(transform, ImageTransform) and subset:  # a bad image of any split named in one error
                assert rows is not None
                return transform.fit(series, source, others=whole.iloc[np.setdiff1d(np.arange(len(whole)), rows)])
            return transform.fit(series, source)

        columns = [(transform, frame[transform.name]) for transform in self.transforms]
        map_gathering(fit, columns, (len(frame) if rows is None else len(rows)) * len(columns))
        return self

    def put_out_of_fold(self, numeric: np.ndarray, positions: np.ndarray) -> None:
        """Write the text columns' out-of-fold linear scores (text.linear) of the rows ``fit`` saw into their rows
        of a transformed ``numeric`` array: ``positions`` are where those rows are, in fit's order. Training calls
        it on the rows it trains on, once, before ``finish_training``; every other row keeps the full model's
        scores, which is what a prediction computes."""
        offset = 0
        for transform in self.numeric:
            if isinstance(transform, TextTransform) and transform.out_of_fold() is not None:
                scores = transform.out_of_fold()
                assert scores is not None and len(scores) == len(positions)
                end = offset + transform.width - 1  # the scores are the last columns before the empty flag
                numeric[positions[:, None], np.arange(end - transform.linear, end)[None, :]] = scores
            offset += transform.width

    def transform(self, frame: pd.DataFrame, order: np.ndarray | None = None) -> Features:
        """Turn a table into arrays; extra columns are ignored, missing ones are an error.

        ``order`` (a permutation of the row positions) lays the rows out in that order: training
        puts its train, validation and test rows each in one consecutive run, so that each part is
        a view of one array rather than a copy.
        """
        source = frame.attrs.get("source")
        missing = [t.name for t in self.transforms if t.name not in frame.columns]
        if missing:
            raise DataError(
                f"the data lacks the input column(s) {missing} that the model was trained on; "
                f"add them (empty values are allowed and filled as missing).{spaced_names(missing, frame.columns)}",
                file=source, column=missing[0],
            )
        if frame.attrs:  # pandas deep-copies attrs into every column it hands out: ~4 µs a column
            frame = frame.copy(deep=False)
            frame.attrs = {}
        n_rows = len(frame)
        cells = n_rows * len(self.transforms)

        def convert(item: tuple[FeatureTransform, pd.Series]) -> tuple[np.ndarray, Unseen, float]:
            """Numbers as raw floats and dates as seconds (both transformed chunk by chunk below), with
            a number's extent; the others transformed whole, binary and category columns with their unseen values."""
            transform, series = item
            if isinstance(transform, NumberTransform):
                values, low, high = to_numeric_range(series, column=transform.name, source=source)
                return values, Unseen(), transform.extent(low, high)
            if isinstance(transform, DateTransform):
                return (to_seconds(series, column=transform.name, source=source, digits=transform.refuses_digits),
                        Unseen(), math.inf)
            if isinstance(transform, (BinaryTransform, CategoryTransform)):
                return *transform.encode(series), math.inf
            values, count = transform.transform(series, source)
            return values, Unseen(count), math.inf

        # Every column is converted before any error is raised: one DataError then lists each bad column.
        converted = map_gathering(convert, [(t, frame[t.name]) for t in self.transforms], cells)
        found = {t.name: unseen for t, (_, unseen, _) in zip(self.transforms, converted) if unseen.count}
        unseen = {name: found[name].count for name in found}
        unseen_kinds = {t.name: t.kind for t in self.transforms if t.name in unseen}
        unseen_examples = {name: found[name].examples for name in found}
        by_name = {t.name: (values, extent) for t, (values, _, extent) in zip(self.transforms, converted)}
        columns = [by_name[transform.name] for transform in self.numeric]
        # Rows are written a chunk at a time into a small column-major buffer (each column write
        # contiguous) and transposed into the row-major array that batches are sliced from. A
        # whole-table column-major array transposed at the end costs a second table-sized
        # allocation, whose first touch alone took ~0.5 s on a 1M x 50 table here.
        numeric = np.empty((n_rows, self.numeric_width), dtype=np.float32)
        starts = range(0, n_rows, _CHUNK_ROWS)
        workers = workers_for(cells, len(starts))

        def write(share: range) -> None:  # each worker writes its own rows through its own buffer
            buffer = np.empty((self.numeric_width, min(n_rows, _CHUNK_ROWS)), dtype=np.float32)
            with np.errstate(over="ignore", invalid="ignore"):  # NumberTransform.apply clips what overflows
                for start in share:
                    stop = min(start + _CHUNK_ROWS, n_rows)
                    block = buffer[:, :stop - start]
                    offset = 0
                    take = slice(start, stop) if order is None else order[start:stop]
                    for transform, (values, extent) in zip(self.numeric, columns):
                        target = block[offset:offset + transform.width]
                        if isinstance(transform, (NumberTransform, DateTransform)):
                            transform.apply(values[take], target, extent)
                        else:
                            target[:] = values[take].T
                        offset += transform.width
                    numeric[start:stop] = block.T

        map_columns(write, [starts[i::workers] for i in range(workers)], cells)
        codes = [by_name[category.name][0] for category in self.categorical]
        categorical = np.empty((n_rows, len(codes)), dtype=np.int64)
        for index, values in enumerate(codes):
            categorical[:, index] = values if order is None else values[order]
        return Features(numeric, categorical, unseen, unseen_kinds, unseen_examples)

    def state(self) -> list[dict[str, Any]]:
        return [transform.state() for transform in self.transforms]

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays too large for JSON (text projections), keyed ``text/<position>/<name>``
        by the transform's position in :attr:`transforms`."""
        return {f"{ARRAY_PREFIX}{position}/{key}": value for position, transform in enumerate(self.transforms)
                if isinstance(transform, TextTransform) for key, value in transform.arrays().items()}

    def finish_training(self) -> None:
        """The training rows are transformed: text transforms stop writing the embedding cache (prediction
        only reads it) and drop the training embeddings they kept; image transforms note what they resized."""
        for transform in self.transforms:
            if isinstance(transform, (TextTransform, ImageTransform)):
                transform.finish_training()

    @property
    def notes(self) -> list[str]:
        """What fitting did that a run note should say (texts embedded, cut at the token limit)."""
        return [note for transform in self.transforms for note in getattr(transform, "notes", [])]

    @classmethod
    def from_state(cls, state: list[dict[str, Any]], arrays: dict[str, np.ndarray] | None = None) -> "Preprocessor":
        preprocessor = cls.__new__(cls)
        arrays = arrays or {}

        def build(position: int, item: dict[str, Any]) -> FeatureTransform:
            if item["kind"] == "text":
                prefix = f"{ARRAY_PREFIX}{position}/"
                return TextTransform.from_state(item, {key[len(prefix):]: value for key, value in arrays.items()
                                                       if key.startswith(prefix)})
            return TRANSFORMS[item["kind"]].from_state(item)

        preprocessor.transforms = [build(position, item) for position, item in enumerate(state)]
        learned_blank = [t.name for t in preprocessor.transforms
                         if "" in (t.vocabulary if isinstance(t, CategoryTransform) else getattr(t, "values", []))]
        if learned_blank:
            warnings.warn(
                f"column(s) {learned_blank}: this model learned the empty string as a value of its own; keel now "
                "reads an empty string as missing (as a CSV's empty cell), so such rows take the missing-value "
                "treatment instead. Retrain the model to learn them that way.", KeelWarning, stacklevel=4)
        return preprocessor


class TargetEncoder:
    """Class labels to indices for classification; standardized values for regression.

    Labels keep their original Python type (int, float, bool or str), so predictions come back in
    the same type as the training target; whole-number floats become ints (see ``_integral_labels``).
    """

    def __init__(self, name: str, task: str) -> None:
        self.name = name
        self.task = task
        self.labels: list[Any] = []
        self.mean = 0.0
        self.std = 1.0

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def fit(self, target: pd.Series, weights: np.ndarray | None = None) -> "TargetEncoder":
        """Learn the classes, or a regression target's mean and standard deviation (weighted by ``weights``, one
        per row of ``target``, where given: a row of weight 0 does not move the scale the loss is measured in)."""
        known = ~missing_values(target)
        present = target[known]  # a blank label is missing, as in any category column
        if self.task == "regression":
            values = to_numeric(present, column=self.name, source=target.attrs.get("source"), advice=TARGET_ADVICE)
            counted = None if weights is None else weights[np.asarray(known)]
            if counted is not None and not counted.sum(dtype=np.float64) > 0:
                counted = None  # no labelled row weighs anything here: every row counts alike
            self.mean, self.std = mean_and_std(values, weights=counted)  # finite even for targets near 1e308
            if not np.isfinite(self.std) or self.std == 0.0:
                self.std = 1.0
            return self
        if is_numeric(present):
            self.labels = _integral_labels([_plain(value) for value in np.unique(present.to_numpy())])
            return self
        firsts = pd.Series(category_strings(present)).drop_duplicates()  # first row of each class
        by_string = {string: _plain(present.iloc[position]) for position, string in firsts.items()}
        self.labels = _integral_labels([by_string[key] for key in sorted(by_string, key=_natural_key(by_string))])
        return self

    def encode(self, target: pd.Series, source: str | None = None) -> np.ndarray:
        """Indices (int64) for classification, standardized float32 values for regression."""
        if self.task == "regression":
            values = to_numeric(target, column=self.name, source=source, advice=TARGET_ADVICE)
            return ((values - self.mean) / self.std).astype(np.float32)
        codes = self._class_indices(target)
        unknown = np.flatnonzero(codes < 0)
        if len(unknown):
            position = int(unknown[0])
            if missing_values(target.iloc[[position]])[0]:
                raise DataError(
                    f"target column {self.name!r} row {target.index[position] + 1} has no class (it is blank); "
                    "give it one of the classes, or drop the row.",
                    file=source, column=self.name, row=int(target.index[position]) + 1)
            value = target.iloc[position]
            # 5, not np.float64(5.0): a label column with blanks is read as floats, its classes as integers.
            shown = label_shown(value)
            raise DataError(
                f"target column {self.name!r} row {target.index[position] + 1} has the class "
                f"{shown}, which the model never saw; it knows {', '.join(map(label_shown, self.labels))}. Evaluating, keep to "
                "rows of those classes; training with a test file, every test class must occur in the training data.",
                file=source, column=self.name, row=int(target.index[position]) + 1,
            )
        return codes

    def _class_indices(self, target: pd.Series) -> np.ndarray:
        """Index of each row's class in ``labels``, -1 where it is none of them."""
        numeric_labels = all(isinstance(label, (int, float)) and not isinstance(label, bool) for label in self.labels)
        if numeric_labels and is_numeric(target):
            labels = np.asarray(self.labels, dtype=np.float64)  # sorted, as fit leaves them
            values = target.to_numpy(dtype=np.float64, na_value=np.nan)
            index = np.searchsorted(labels, values).clip(0, len(labels) - 1)
            return np.where(labels[index] == values, index, -1).astype(np.int64)
        lookup = {string: index for index, string in enumerate(category_strings(pd.Series(self.labels, dtype=object)))}
        strings = pd.Series(category_strings(target), dtype=object)
        return strings.map(lookup).fillna(-1).to_numpy(dtype=np.int64, copy=True)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Class labels (in their original type) or de-standardized values.

        Labels of one type come back as that type's array (int64, bool, float64, str); labels of
        mixed types (``[1, "yes"]``) as an object array of the labels themselves, since
        ``np.asarray`` would turn them all into strings (``"1"``).
        """
        if self.task == "regression":
            with np.errstate(over="ignore"):
                values = codes.astype(np.float64) * self.std + self.mean
            # A target whose scale nears 1e300 times an output far outside the training range
            # overflows float64: such a prediction is the largest float of its sign, not infinity.
            return np.clip(values, -_FLOAT64_MAX, _FLOAT64_MAX, out=values)
        if len({type(label) for label in self.labels}) <= 1:
            return np.asarray(self.labels)[codes]
        labels = np.empty(len(self.labels), dtype=object)
        labels[:] = self.labels
        return labels[codes]

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "labels": self.labels, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TargetEncoder":
        encoder = cls(state["name"], state["task"])
        encoder.labels, encoder.mean, encoder.std = list(state["labels"]), state["mean"], state["std"]
        return encoder


def _integral_labels(labels: list[Any]) -> list[Any]:
    """Whole-number float labels as ints: a missing cell turns an integer column into floats in
    pandas, and the classes should read 0 and 1 (``proba_0``), as the data spells them, not 0.0."""
    numbers = all(isinstance(label, (int, float)) and not isinstance(label, bool) for label in labels)
    if numbers and all(float(label).is_integer() and abs(label) <= 2**53 for label in labels):
        return [int(label) for label in labels]
    return labels


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar from a numpy one."""
    return value.item() if isinstance(value, np.generic) else value


def _natural_key(by_string: dict[str, Any]) -> Callable[[str], tuple[int, float, str]]:
    """Sort numbers numerically and strings alphabetically, numbers first."""
    def key(string: str) -> tuple[int, float, str]:
        value = by_string[string]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1, 0.0, string)
    return key
