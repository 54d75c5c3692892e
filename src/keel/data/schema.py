"""Infer what each column is (number, category, binary, date, text, image, or dropped) and what task the target poses."""

from __future__ import annotations

import datetime
import difflib
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Literal, Sequence

import numpy as np
import pandas as pd

from keel.config import Config
from keel.data.images import IMAGE_SUFFIXES
from keel.data.io import ISO_DATE, read_as_written
from keel.data.values import (
    MIN_SCALE,
    TARGET_ADVICE,
    category_strings,
    check_scalars,
    is_numeric,
    map_gathering,
    missing_values,
    numeric_share,
    to_numeric,
    to_seconds,
)
from keel.errors import ConfigError, DataError

ColumnType = Literal["number", "category", "binary", "date", "text", "image"]
ResolvedTask = Literal["binary", "multiclass", "regression"]

# A string column is numeric with typos (an error) rather than a category when at least this
# share of its values parse as numbers.
_NUMERIC_WITH_TYPOS = 0.9
# Integer targets with at most this many distinct values are classes, not quantities.
_MAX_INTEGER_CLASSES = 20
# A string column is free text when at least this share of its values are distinct and they
# average at least this many words.
_TEXT_DISTINCT = 0.5
_TEXT_WORDS = 3
_ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key)$|^id[_\s.-]", re.IGNORECASE)
# The names a row-number column comes with: pandas' unnamed index ("" as keel reads it, "Unnamed: 0" as pandas
# does), R's ("rownames"), or a plain "index" / "row" / "row_number".
_ROW_NAME = re.compile(r"|unnamed: \d+|index|level_0|rownames|row\.?names|row|row[_\s.-]?(number|num|no)", re.IGNORECASE)


@dataclass
class Feature:
    """One input column and the type keel treats it as."""

    name: str
    type: ColumnType


@dataclass
class Schema:
    """The fitted description of a table: features, target and task, and what was dropped and why."""

    target: str
    task: ResolvedTask
    features: list[Feature]
    dropped: dict[str, str] = field(default_factory=dict)
    # How an ambiguous column was read and how to declare it otherwise, one sentence each.
    notes: list[str] = field(default_factory=list)
    # Whether a CSV's category, binary, text and image columns are read as written (written_columns): true for
    # every model trained since; a model saved before read them as pandas parsed them, and still does.
    as_written: bool = True
    # Whether a CSV's target is read as written too: input_features declared it category or binary (declared_target),
    # so its labels are the file's text (01 and 1 two classes) at training, for a --test file and at evaluation.
    target_written: bool = False

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "Schema":
        return cls(
            target=state["target"], task=state["task"],
            features=[Feature(**item) for item in state["features"]], dropped=dict(state.get("dropped", {})),
            notes=list(state.get("notes", [])),  # absent from schemas saved before notes existed
            as_written=bool(state.get("as_written", False)),
            target_written=bool(state.get("target_written", False)),  # absent: its target was read as parsed
        )


# The feature types whose values are words, not quantities: a CSV gives them as written (read_table's text).
WRITTEN_TYPES: tuple[str, ...] = ("category", "binary", "text", "image")


def written_columns(schema: Schema) -> list[str]:
    """The columns a model reads from a CSV as written (``02134`` stays ``02134``): its category, binary, text
    and image features, and its target where input_features declared it, as training read them; none for a model
    saved before that rule."""
    features = [feature.name for feature in schema.features if feature.type in WRITTEN_TYPES] if schema.as_written else []
    return [*features, schema.target] if schema.target_written else features


def declared_written(config: Config) -> list[str]:
    """The columns the config declares of a type read as written, the target included (:func:`declared_target`),
    for the training read (inferred ones of those types come from columns pandas leaves as text anyway; a bool
    column's spellings match either way)."""
    return [item.name for item in config.input_features or [] if item.type in WRITTEN_TYPES]


# The types input_features may declare the target: classes, whose labels a CSV gives as written.
TARGET_TYPES: tuple[str, ...] = ("category", "binary")


def declared_target(config: Config) -> str | None:
    """The type input_features declares the target (``category`` or ``binary``: its labels are read from a CSV
    as written, so ``1``, ``01`` and ``1.0`` are three classes), or None where it does not list the target.

    Raises:
        ConfigError: It declares the target another type, or the task is one the type contradicts.
    """
    name = config.target
    kind = next((item.type for item in config.input_features or [] if item.name == name), None)
    if kind is None:
        return None
    if kind not in TARGET_TYPES:
        raise ConfigError(
            f"input_features lists the target {name!r} with type {kind}; a target can be declared category or binary "
            "(classes, whose labels a CSV gives as written). Remove it from input_features to have it inferred"
            + (", and set task: regression for a quantity." if kind == "number" else "."))
    if config.task == "regression" or (kind == "binary" and config.task == "multiclass"):
        raise ConfigError(f"input_features declares the target {name!r} {kind} (classes), but task is {config.task}; "
                          "set task: auto, or " + ("declare the target category." if config.task == "multiclass" else
                                                   "remove the target from input_features for a quantity."))
    return kind


def declared_task(config: Config) -> str:
    """The task :func:`infer_task` starts from: ``config.task``, or for a target declared category (binary) in
    input_features, a classification (binary) however its labels look."""
    kind = declared_target(config)
    if kind is None or config.task != "auto":
        return config.task
    return "binary" if kind == "binary" else "multiclass"  # multiclass: two classes are still binary


def labelled_rows(frame: pd.DataFrame, target: str, purpose: str) -> pd.DataFrame:
    """The rows of ``frame`` whose ``target`` is present, for ``purpose`` (``"to measure on"``, ...).

    Raises:
        DataError: ``frame`` lacks the target column or has no row with a value in it.
    """
    source = frame.attrs.get("source")
    if target not in frame.columns:
        raise DataError(f"the data lacks the target column {target!r}; pass labelled rows {purpose}.",
                        file=source, column=target)
    labelled = frame[~missing_values(frame[target])]
    if not len(labelled):
        raise DataError(f"the data has no row with a {target!r} value; pass labelled rows {purpose}.",
                        file=source, column=target)
    return labelled


def check_drop_columns(frame: pd.DataFrame, config: Config) -> list[str]:
    """The columns ``drop_columns`` names, each once, checked against the data and the target.

    Raises:
        ConfigError: It names the target.
        DataError: It names a column the data lacks (a misspelt name would keep the column it meant to drop).
    """
    dropping = list(dict.fromkeys(config.drop_columns or []))
    if config.target in dropping:
        raise ConfigError(f"drop_columns lists the target {config.target!r}; the target is never a feature. Remove "
                          "it from drop_columns (--drop), or choose another target.")
    for name in dropping:
        require_column(frame, name, "drop_columns")
    return dropping


def require_column(frame: pd.DataFrame, name: str, role: str) -> None:
    """Raise a DataError naming the available columns and the closest match when ``name`` is absent."""
    if name in frame.columns:
        return
    # The hint compares text, whatever reached here: a number (a config's target: 3) or a frame's unread labels.
    wanted, columns = str(name), [str(column) for column in frame.columns]
    close = difflib.get_close_matches(wanted, columns, n=1, cutoff=0.6)
    if not close:
        close = [column for column in columns if column.lower() == wanted.lower()]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
    raise DataError(
        f"{role} column {wanted!r} is not in the data; its columns are: {shown}.{hint}",
        file=frame.attrs.get("source"), column=wanted,
    )


def spaced_names(missing: list[str], columns: Collection[object]) -> str:
    """For a missing-columns error: the table's columns that are missing ones with spaces around them (a CSV
    header written ``a, b``), in a sentence, or ""."""
    spaced = [str(column) for column in columns if str(column) != str(column).strip() and str(column).strip() in missing]
    if not spaced:
        return ""
    return (f" The data has {', '.join(map(repr, spaced[:5]))}: the same name(s) with spaces around them (a CSV "
            "header written 'a, b' keeps the space after each comma); remove the spaces (in a DataFrame: "
            "df.columns = df.columns.str.strip()).")


def infer_schema(frame: pd.DataFrame, config: Config, *, rows: np.ndarray | None = None,
                 exclude: Collection[str] = ()) -> Schema:
    """Decide each feature's type and the task, honouring whatever the config declares.

    Args:
        frame: The training table, target included.
        config: The run's config; ``target`` must be set.
        rows: The row positions that column types are inferred from (the training rows; the test
            rows must not shape the model); None for all rows.
        exclude: Columns that are not features unless ``input_features`` lists them (the
            ``split_by`` and ``order_by`` columns).

    Returns:
        The schema; columns that cannot help (constant, all missing, id-like) are listed in
        ``dropped`` with the reason; free text (mostly distinct values of several words) is ``text``.
        datetime64 columns (tz-aware ones too) are dates.

    Raises:
        ConfigError: No target is set.
        DataError: The target or a declared feature is missing, or the target cannot be learned.
    """
    if not config.target:
        raise ConfigError("no target column; pass --target COLUMN (or target=... in Python, target: in YAML).")
    source = frame.attrs.get("source")
    require_column(frame, config.target, "target")
    task = infer_task(frame[config.target], config.target, declared_task(config), source)
    features: list[Feature] = []
    dropped: dict[str, str] = {name: "drop_columns lists it" for name in config.drop_columns or []
                               if name in frame.columns and name not in exclude}
    # The target's entry declares how its labels are read, not a feature: the other entries are the features,
    # or every column when there are none.
    declared = {item.name: item.type for item in config.input_features or [] if item.name != config.target}
    dropping = check_drop_columns(frame, config)
    names = list(declared) if declared else [c for c in frame.columns
                                             if c != config.target and c not in exclude and c not in dropping]
    for name in names:
        require_column(frame, name, "input feature")

    def decide(column: tuple[str, pd.Series]) -> tuple[ColumnType | None, str]:
        name, series = column
        try:
            return decide_on(name, series)
        except DataError:
            if subset:  # the error names every bad row of the column, the test rows' too, where they are bad alike
                decide_on(name, frame[name])
            raise

    def decide_on(name: str, series: pd.Series) -> tuple[ColumnType | None, str]:
        kind = declared.get(name, "auto")
        if kind == "auto":
            return infer_column_type(series, name, source)
        if kind == "number":
            to_numeric(series, column=name, source=source)  # fail now, naming the bad row
        elif kind == "date":  # fail now, naming the bad rows, or the years (2010) that would be seconds of 1970
            to_seconds(series, column=name, source=source, declared=True)
        return kind, ""

    subset = rows is not None and len(rows) != len(frame)
    columns = [(name, frame[name].iloc[rows] if subset else frame[name]) for name in names]
    n_rows = len(frame) if rows is None else len(rows)
    notes: list[str] = []
    # Every column is decided before any error is raised: one DataError then lists each bad column.
    for (name, series), (kind, reason) in zip(columns, map_gathering(decide, columns, n_rows * len(names))):
        if kind is None:
            if declared.get(name, "auto") == "auto" and (example := _other_date(series)) is not None:
                reason += f"; it looks like dates not written as ISO 8601 (e.g. {example!r}), {_OTHER_DATE_ADVICE}"
            dropped[name] = reason
        else:
            features.append(Feature(name, kind))
            if kind == "number" and declared.get(name, "auto") == "auto" and _is_numeric_text(series):
                notes.append(_numeric_text_note(name))
            if kind == "number" and (tiny := _too_small_note(series, name)) is not None:
                notes.append(tiny)
            if kind == "image" and declared.get(name, "auto") == "auto":
                notes.append(f"column {name!r} holds {'arrays' if isinstance(series.dropna().iloc[0], np.ndarray) else 'image file names'}; "
                             "read as images (image.encoder decides how: a CNN trained from scratch by default).")
            if kind == "category" and declared.get(name, "auto") == "auto" and (
                    disguised := _numbers_in_disguise(series, name)) is not None:
                notes.append(disguised)
            if kind in ("category", "text") and declared.get(name, "auto") == "auto" and (
                    example := _other_date(series)) is not None:
                notes.append(f"column {name!r} looks like dates not written as ISO 8601 (e.g. {example!r}), so it "
                             f"is read as a {kind}: {_OTHER_DATE_ADVICE}")
            if kind == "text" and declared.get(name, "auto") == "auto":
                notes.append(f"column {name!r} is free text (mostly distinct values of several words); read as text "
                             f"(text.encoder decides how). Declare it a category with input_features: [{{name: {name}, "
                             "type: category}] if its values are labels.")
    if not features:
        raise DataError(
            f"no usable input columns: {dropped or 'the table has only the target'}. "
            "Add feature columns or declare their types in input_features.",
            file=source,
        )
    return Schema(target=config.target, task=task, features=features, dropped=dropped, notes=notes,
                  target_written=declared_target(config) is not None)


# Dates in the common non-ISO numeric forms (10/31/1996, 31.10.1996, 31-10-96, 1996/10/31), with a time or not.
# Dots take four-digit years only: 1.4.15 and 2.10.22 are version or section numbers far more often than dates.
_OTHER_DATE = re.compile(r"(\d{1,2}([/-])\d{1,2}\2(\d{4}|\d{2})|\d{1,2}\.\d{1,2}\.\d{4}|\d{4}([/.])\d{1,2}\4\d{1,2})"
                         r"(,?[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?( ?[AaPp]\.?[Mm]\.?)?)?")


_OTHER_DATE_ADVICE = ("keel reads only ISO dates as dates (in other forms day and month may be either way round); "
                      "convert the column (pd.to_datetime(..., format=...), or write 1996-10-31) for its date "
                      "features.")


def _other_date(series: pd.Series) -> str | None:
    """The first value of a text column whose values are at least 90% dates in a non-ISO numeric form (that
    pandas can read as dates in some order of day and month), else None."""
    present = series.dropna()
    if not len(present) or not (series.dtype == object or pd.api.types.is_string_dtype(series.dtype)
                                 or isinstance(series.dtype, pd.CategoricalDtype)):
        return None
    sample = present.astype(str).str.strip()
    sample = sample if len(sample) <= 1_000 else sample.sample(1_000, random_state=0)
    dated = sample[sample.str.fullmatch(_OTHER_DATE.pattern)]
    if len(dated) < _NUMERIC_WITH_TYPOS * len(sample):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when it guesses a format value by value
        read = pd.concat([pd.to_datetime(dated, errors="coerce", format="mixed", dayfirst=first).notna()
                          for first in (False, True)], axis=1).any(axis=1)
    return str(dated.iloc[0]) if read.sum() >= _NUMERIC_WITH_TYPOS * len(sample) else None


def _is_numeric_text(series: pd.Series) -> bool:
    """True for a text column (not numbers held in an object column) that was read as numbers."""
    return not is_numeric(series) and pd.api.types.infer_dtype(series, skipna=True) in (
        "string", "mixed", "mixed-integer")


def _numeric_text_note(name: str) -> str:
    # Not "all parse": a few typos still make a number column, and a streamed run infers from its first rows.
    return (f"column {name!r} holds numbers written as text; read as a number (a value that does not parse is an "
            "error naming it). Declare it a category with "
            f"input_features: [{{name: {name}, type: category}}] if the numbers are codes (input_features lists "
            "every feature to use; give the others type auto).")


def infer_column_type(series: pd.Series, name: str, source: str | None) -> tuple[ColumnType | None, str]:
    """The type of one feature column, or None and the reason it is dropped."""
    present = series.dropna()
    if len(present) == 0:
        return None, "all values are missing"
    if (series.dtype == object or pd.api.types.is_string_dtype(series.dtype)) and _holds_images(present, name, source):
        return "image", ""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if present.nunique() == 1:
            return None, f"constant (every value is {str(present.iloc[0])!r})"
        return "date", ""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _declared_category_type(present)
    if series.dtype == object and _all_dates(present):  # Python dates (a Parquet DATE, .dt.date) and Timestamps
        return ("date", "") if present.nunique() > 1 else (None, f"constant (every value is {str(present.iloc[0])!r})")
    try:
        n_unique = _count_distinct(present, limit=1) if is_numeric(series) else present.nunique()
    except TypeError:  # a list or dict in a cell (unhashable): the message records and predictions give
        check_scalars(present.to_numpy(dtype=object), present)
        raise
    if n_unique == 1:
        return None, f"constant (every value is {_shown(present.iloc[0])})"
    # Two-valued numbers stay numbers: a third value at prediction is then a number like any
    # other, not an unseen category. Only the config makes a number column binary.
    if pd.api.types.is_bool_dtype(series.dtype) or (n_unique == 2 and not is_numeric(series)):
        return "binary", ""
    if is_numeric(series):
        if _looks_like_row_id(present, name):
            return None, ("id-like (a unique integer per row); to keep it, declare it in input_features as "
                          f"{{name: {name!r}, type: number}}")
        if pd.api.types.is_float_dtype(series.dtype):  # an infinity: named now, with the other columns' problems
            to_numeric(present, column=name, source=source)
        return "number", ""
    share = numeric_share(series)
    if share == 1.0:
        return "number", ""
    if share >= _NUMERIC_WITH_TYPOS:
        to_numeric(series, column=name, source=source)  # raises, naming the first bad value
    if _iso_share(present) >= _NUMERIC_WITH_TYPOS:  # dates with a typo (2022-13-01): say so, not a category
        to_seconds(series, column=name, source=source)  # raises, naming the bad rows, unless every one parses
        return "date", ""
    if n_unique == len(present) >= 20 and _ROW_NAME.fullmatch(name.strip()):
        # R's rownames (a car's or a passenger's name) and a saved pandas index of labels: one per row, so they
        # name rows rather than describe them, and would train as an id or as free text. (Number and date text
        # above stays a feature: a daily table saved with its index keeps its dates.)
        return None, ("row names (a unique label per row, in a column named as R and pandas name row labels); to "
                      f"keep it, declare it in input_features as {{name: {name!r}, type: category}}")
    return _text_type(present, present.nunique())


def _holds_images(present: pd.Series, name: str, source: str | None) -> bool:
    """Arrays of two or three dimensions (pixels), or file names that end as images do (.png, .jpg...), all but a
    few (a mistyped name among them is then refused where the images are read, naming its row, as a number
    column's typo is; at a file name or two in ten the column is not images); empty strings are missing cells.

    Raises:
        DataError: The column holds arrays that are no images (flat ones, as ``load_digits().data`` rows).
    """
    sample = present if len(present) <= 1000 else present.sample(1000, random_state=0)
    values = [value for value in sample.tolist() if not (isinstance(value, str) and not value.strip())]
    if not values:
        return False
    arrays = [value for value in values if isinstance(value, np.ndarray)]
    if arrays and all(array.ndim in (2, 3) for array in arrays) and len(arrays) == len(values):
        return True
    if arrays:
        odd = next(array for array in arrays if array.ndim not in (2, 3)) if any(
            array.ndim not in (2, 3) for array in arrays) else arrays[0]
        raise DataError(f"column {name!r} holds arrays (one of shape {odd.shape}); keel reads an array cell as an "
                        "image, of shape (height, width) or (height, width, channels), in a column of nothing else. "
                        "Reshape flat pixel rows into images, or spread the values into number columns.",
                        file=source, column=name)
    images = sum(isinstance(value, (str, os.PathLike)) and os.path.splitext(str(value).strip())[1].lower()
                 in IMAGE_SUFFIXES for value in values)
    # Not all: the sample above reads at most 1,000 values, so a typo was seen in a small table (which then lost
    # its images as an id-like column, with a note only) and missed in a large one.
    return images > _NUMERIC_WITH_TYPOS * len(values)


def _all_dates(present: pd.Series) -> bool:
    return bool(len(present)) and all(isinstance(value, (datetime.date, pd.Timestamp)) for value in present)


def _iso_share(present: pd.Series) -> float:
    """The share of values that are ISO 8601 dates (as text), on at most 10,000 of them."""
    sample = present if len(present) <= 10_000 else present.sample(10_000, random_state=0)
    return float(sample.astype(str).str.fullmatch(ISO_DATE.pattern).mean())


def _declared_category_type(present: pd.Series) -> tuple[ColumnType | None, str]:
    """A pandas ``category`` column (Parquet dictionary columns read as one) is a category even when
    its values look like numbers ('2742'): the dtype says so. The drop rules of categories apply."""
    strings = category_strings(present)
    n_unique = len(set(strings.tolist()))
    if n_unique == 1:
        return None, f"constant (every value is {strings[0]!r})"
    if n_unique == 2:
        return "binary", ""
    return _text_type(present, n_unique)


def _text_type(present: pd.Series, n_unique: int) -> tuple[ColumnType | None, str]:
    """Free text (mostly distinct values of several words), an id (nearly every value unique: dropped), or a category.

    A course title or a bird-strike remark repeats now and then (80% distinct) yet is text: as a
    category most of its values would be rare and share one bucket. Two-word values (job titles,
    names) stay categories or ids, as before text columns existed.
    """
    if n_unique > 50 and n_unique >= _TEXT_DISTINCT * len(present):
        sample = present if len(present) <= 10_000 else present.sample(10_000, random_state=0)
        texts = sample.astype(str)
        if texts.str.contains(" ").mean() > 0.5 and texts.str.split().str.len().mean() >= _TEXT_WORDS:
            return "text", ""
    if n_unique > 50 and n_unique >= 0.9 * len(present):
        return None, "id-like (nearly every value is unique)"
    return "category", ""


def _count_distinct(present: pd.Series, limit: int) -> int:
    """The number of distinct values, or ``limit + 1`` when there are more than ``limit``.

    Numeric columns only need to know "constant or not": hashing a million floats to count
    them exactly would cost more than the rest of the schema inference.
    """
    values = present.to_numpy()
    seen = 0
    while len(values) and seen <= limit:
        values = values[values != values[0]]
        seen += 1
    return seen


def _looks_like_row_id(present: pd.Series, name: str) -> bool:
    if not pd.api.types.is_integer_dtype(present.dtype) or present.nunique() != len(present) or len(present) < 20:
        return False
    values = np.sort(present.to_numpy())
    consecutive = bool(np.all(np.diff(values) == 1))
    # Row numbers are told by their name too: types are inferred on the training rows (or a streamed sample), where
    # a split leaves gaps, and pandas' unnamed index column (read as "") was kept as a feature so. Not by density:
    # a year or a time step fills its range as a numbering does (the audit's yearly table lost its only feature).
    return consecutive or bool(_ID_NAME.search(name)) or bool(_ROW_NAME.fullmatch(name.strip()))


def infer_target_task(frame: pd.DataFrame, config: Config) -> ResolvedTask:
    """The task ``frame``'s target poses (:func:`infer_task` from :func:`declared_task`), its labels checked by
    :func:`check_label_spellings` when they are classes.

    Raises:
        ConfigError: The config declares the target a type it cannot be, or a task its labels contradict.
        DataError: As :func:`infer_task` and :func:`check_label_spellings` raise.
    """
    name = str(config.target)
    try:
        task = infer_task(frame[name], name, declared_task(config), frame.attrs.get("source"))
    except DataError:
        # Two spellings of one code as the only labels (1 / 01) read as one class: say why, not "one class".
        if declared_task(config) != "regression":
            check_label_spellings(frame, name)
        raise
    if task != "regression":
        check_label_spellings(frame, name)
    return task


def check_label_spellings(frame: pd.DataFrame, name: str) -> None:
    """Refuse class labels that pandas read from a CSV as numbers where the file writes one number two ways
    (``1`` and ``01``, ``1`` and ``1.0``): they would become one class without a word. Labels read as written
    (a declared target), or from another format, have nothing to check.

    Raises:
        DataError: Two spellings of one number, with their rows, and how to keep them apart.
    """
    series = frame[name]
    if "csv" not in frame.attrs or not is_numeric(series):
        return
    # One more read of the target column alone (about 40% of the table's read time), for classes only.
    # pandas reads " 1" as 1 too; a stray space is not a second spelling (the audit's exported CSV refused).
    written = read_as_written(frame[[name]], [name])[name].str.strip()
    spellings = pd.DataFrame({"value": series, "spelling": written}).dropna().drop_duplicates()  # first rows
    collided = spellings[spellings.duplicated("value", keep=False)]
    if not len(collided):
        return
    first = collided[collided["value"] == collided["value"].iloc[0]]
    (row_a, a), (row_b, b) = first["spelling"].iloc[:2].items()
    value = first["value"].iloc[0]
    others = collided["value"].nunique() - 1
    raise DataError(
        f"target column {name!r} writes the number {_plain_number(value)} two ways, {a!r} (row {row_a + 1}) "
        f"and {b!r} (row {row_b + 1}), and pandas reads both as that number: they would be one class"
        + (f" ({others} more number(s) are written more than one way)" if others else "")
        + ". If they are different classes, declare the target a category to keep its labels as written: "
        f"input_features: [{{name: {name}, type: category}}] (listed alone there, every other column is still "
        "inferred); if they are one class, write it one way in the file.",
        file=frame.attrs.get("source"), column=name, row=int(row_b) + 1)


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def infer_task(target: pd.Series, name: str, declared: str, source: str | None, *,
               distinct: bool = False) -> ResolvedTask:
    """Binary, multiclass or regression, from the declared task or the target's values (``distinct``: each
    distinct value once, as a streamed scan counts them, so one of them is no lone row).

    Raises:
        DataError: The target is all missing, has a single class, or does not fit the declared task.
    """
    present = target[~missing_values(target)]  # a blank label is missing, as in any category column
    if len(present) == 0:
        raise DataError(
            f"target column {name!r} has no values (all {len(target)} are missing); choose another target.",
            file=source, column=name,
        )
    if declared == "auto" and not is_numeric(present):
        _decimal_comma_target(present, name, source)
    regression = declared == "regression" or (declared == "auto" and _is_quantity(present))
    if regression:
        values = to_numeric(target, column=name, source=source, advice=TARGET_ADVICE)
        n_values = int(pd.Series(values).dropna().nunique())
    else:
        n_values = present.nunique() if is_numeric(present) else len(set(category_strings(present)))
    if len(present) == 1 and not distinct:
        raise DataError(f"target column {name!r} has one labelled row (one sample): there is nothing to learn from; "
                        "a model needs at least two rows with a target.", file=source, column=name)
    if n_values < 2:  # a regression on one value has nothing to learn either (R^2 is 0 whatever it predicts)
        raise DataError(
            f"target column {name!r} holds one {'value' if regression else 'class'} ({_shown(present.iloc[0])}) "
            "on every labelled row: there is "
            "nothing to learn. Check the target column, or filter fewer rows.",
            file=source, column=name,
        )
    if regression:
        return "regression"
    n_classes = n_values
    if declared == "binary" and n_classes != 2:
        raise ConfigError(f"task is binary but target {name!r} has {n_classes} classes; set task: multiclass or auto "
                          "(a target that input_features declares binary: declare it category).")
    return "binary" if n_classes == 2 else "multiclass"


# Numbers written with a decimal comma (7,18; -0,5; 1.234,5), a % sign (12%, 12.5 %), which keel does not parse;
# a comma before exactly three digits (3,338; 12,500) may as well be a thousands separator.
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+$")
_THOUSANDS = re.compile(r"^[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?$")
_PERCENT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)\s*%$")
# A category column of which at least this share is numbers (plain or in those forms) gets a note.
_MOSTLY_NUMBERS = 0.5


def _numbers_in_disguise(series: pd.Series, name: str) -> str | None:
    """A note for a text column read as a category whose values are mostly numbers: plain ones beside a few
    markers (``?``, ``-``: a number column then reads them as values, not missing), or numbers written with a
    decimal comma or a % sign, which keel does not parse. A silent category of them taught the model nothing."""
    if isinstance(series.dtype, pd.CategoricalDtype):  # a pandas category is the user's own declaration
        return None
    present = series.dropna().astype(str).str.strip()
    present = present[present != ""]
    if not len(present):
        return None
    plain = pd.to_numeric(present, errors="coerce").notna()
    thousands = present.str.match(_THOUSANDS)
    comma, percent = present.str.match(_DECIMAL_COMMA) | thousands, present.str.match(_PERCENT)
    if (plain | comma | percent).mean() < _MOSTLY_NUMBERS:
        return None
    if comma.mean() >= _MOSTLY_NUMBERS / 2 or percent.mean() >= _MOSTLY_NUMBERS / 2:
        form, example, how = (
            ("a comma", present[comma].iloc[0], _COMMA_ADVICE[_comma_kind(present[comma])])
            if comma.mean() >= percent.mean() else
            ("a % sign", present[percent].iloc[0], "strip the % signs"))
        return (f"column {name!r} is read as a category, though {(plain | comma | percent).mean():.0%} of its values are "
                f"numbers written with {form} (e.g. {example!r}), which keel does not parse: if they are quantities, "
                f"write them as plain numbers in the file ({how}).")
    others = present[~plain].value_counts()
    if not len(others):  # all plain numbers, read as a category for another reason (a declaration elsewhere)
        return None
    shown = ", ".join(repr(value) for value in others.index[:3])
    return (f"column {name!r} is read as a category, though {plain.mean():.0%} of its values are numbers; the others "
            f"({shown}) are not. If those mark missing values, empty those cells (keel reads an empty cell, NA or "
            "null as missing) and the column is read as a number.")


def _too_small_note(series: pd.Series, name: str) -> str | None:
    """A note for a number column whose values are all nonzero-and-tiny or zero (under MIN_SCALE in size, e.g. k *
    1e-300: their spread is no larger): read as one constant, so the model cannot use it (a trial's such column scored r2 0)."""
    if not is_numeric(series) or pd.api.types.is_bool_dtype(series.dtype):
        return None
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[np.isfinite(values)]
    if not len(values) or np.abs(values).max() >= MIN_SCALE or values.min() == values.max():
        return None
    example = values[np.abs(values).argmax()]
    return (f"column {name!r} holds only numbers smaller than {MIN_SCALE:g} in size (e.g. {example:.3g}); keel scales "
            "it as a constant, as float32, which the network reads, cannot tell them apart: multiply the column by a "
            "power of ten (or take its logarithm) for the model to use it.")


# What a comma in numbers is (_comma_kind) -> how to read them as numbers.
_COMMA_ADVICE = {
    "decimal": "a decimal comma: pandas.read_csv(..., decimal=',') reads them",
    "thousands": "thousands separators: pandas.read_csv(..., thousands=',') reads them",
    "either": "a decimal comma or thousands separators: pandas.read_csv(..., decimal=',') or (..., thousands=',') "
              "reads them, whichever the file means",
}


def _comma_kind(values: pd.Series) -> str:
    """Whether commas in these number-like strings are decimal commas, thousands separators, or could be either
    (1,500 is fifteen hundred in one country and one and a half in another)."""
    thousands = values.str.match(_THOUSANDS)
    if thousands.all():
        return "either" if values.str.match(_DECIMAL_COMMA).all() else "thousands"
    return "decimal"


def _decimal_comma_target(present: pd.Series, name: str, source: str | None) -> None:
    """Refuse a text target of many values that are numbers written with commas: a regression read as hundreds
    of classes (a trial's European CSV trained a 585-class model and scored 0)."""
    strings = present.astype(str).str.strip()
    commas = strings.str.match(_DECIMAL_COMMA) | strings.str.match(_THOUSANDS)
    if strings.nunique() > _MAX_INTEGER_CLASSES and commas.mean() >= _NUMERIC_WITH_TYPOS:
        example = strings[commas].iloc[0]
        raise DataError(f"target column {name!r} holds numbers written with a comma (e.g. {example!r}), which keel "
                        "reads as text: a model of hundreds of classes. Write them as plain numbers "
                        f"({_COMMA_ADVICE[_comma_kind(strings[commas])]}; e.g. pandas.read_csv(path, sep=';', "
                        "decimal=',').to_csv(new_path, index=False)), or set task: multiclass if the values are "
                        "classes.", file=source, column=name)


def _shown(value: object) -> str:
    """A value as a message shows it: Python's repr of the plain value (100.0, not np.float64(100.0))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def integer_classes_note(labels: Sequence[Any], name: str, declared: str, task: str, *,
                         categorical: bool = False) -> str | None:
    """A note for a target of whole numbers that the task inference read as three or more classes (counts such
    as hospital stays, 0 to 8, became a 9-class problem without a word); None where the task was declared
    (``declared``: :func:`declared_task`), the labels are text, or there are two classes (0/1 is plainly classes).

    Args:
        labels: The target's classes, each once (``TargetEncoder.labels``, in memory and streamed alike).
        name: The target column.
        declared: The task the inference started from.
        task: The task it resolved.
        categorical: The target is a pandas category column: the user's own declaration of classes.
    """
    values = pd.Series(list(labels))
    if declared != "auto" or task != "multiclass" or categorical or not is_numeric(values):
        return None
    if not np.all(np.mod(values.to_numpy(dtype=np.float64), 1) == 0):  # 0.5, 1.5 read as classes are no counts
        return None
    return (f"target {name!r} holds {len(values)} whole numbers ({_plain_number(values.min())} to "
            f"{_plain_number(values.max())}), read as {len(values)} classes (multiclass); if they are counts or "
            "amounts, train a regression with --set task=regression (task: regression in YAML, "
            "config={'task': 'regression'} in Python).")


def _is_quantity(present: pd.Series) -> bool:
    if not is_numeric(present):
        return False
    values = present.to_numpy(dtype=np.float64)
    if not np.all(values == np.round(values)):
        return True
    return present.nunique() > _MAX_INTEGER_CLASSES
