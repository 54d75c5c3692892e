"""Request data to the exported graph's inputs: one NumPy array per feature column.

The ONNX file takes number columns as float64 (NaN for a missing value), date columns as float64
seconds since 1970-01-01 UTC (NaN for a missing value) and binary and category columns as strings
in keel's canonical spelling (the empty string for a missing value). This
module converts the forms a caller has at hand, without pandas unless the caller passes pandas:

- one row: ``{"island": "Biscoe", "bill_length_mm": 39.1, ...}``
- columns: ``{"island": ["Biscoe", "Dream"], "bill_length_mm": [39.1, None], ...}``
- rows: ``[{"island": "Biscoe", ...}, {"island": "Dream", ...}]``
- a pandas DataFrame, converted by keel's own :func:`keel.data.values.to_numeric` and
  :func:`keel.data.values.category_strings`, exactly as ``Model.predict`` converts it.

Numbers follow ``to_numeric``: ints, floats and bools become float64, a numeric string such as
``" 3.5 "`` is parsed, None / NaN / ``pd.NA`` are missing, and anything else (``"abc"``, ``"nan"``,
an infinity) is a :class:`~keel.errors.DataError` naming the column and the row. So is a string that
is not valid Unicode text (a lone UTF-16 surrogate, which a JSON escape such as ``"\\ud800"`` can
make): no UTF-8 text can hold it, and ONNX Runtime takes UTF-8.

Dates follow :func:`keel.data.values.to_seconds`: ISO 8601 text (``"2024-02-29"``,
``"2024-02-29T13:45:00+01:00"``; :meth:`datetime.datetime.fromisoformat`, plus pandas' ``"2024-02"``,
``"2024"`` and ``"2024-2-9"``), ``datetime``, ``date`` and NumPy datetime values, and numbers, which are seconds since
1970-01-01 UTC already. A time without an offset is taken as UTC; one with an offset is converted to
UTC. None, NaN, NaT and ``""`` are missing; anything else is a DataError naming column and row. One
call's numbers for a date column that are all years or all YYYYMMDD dates (``2023``, ``20231106``;
:func:`keel.data.digits.written_dates`) are a DataError too, as ``Model.predict`` has it, unless the
model's training dates began in 1970 (:attr:`InputColumn.refuses_digits`): as seconds they would all
be moments of 1970.
"""

from __future__ import annotations

import datetime
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from keel.data.digits import written_dates, written_dates_error
from keel.data.pixels import PixelSpec, raise_all, resolved
from keel.data.spelling import (
    LONE_SURROGATE,
    ONE_VALUE,
    canonical_category,
    column_names,
    lone_surrogate_at,
    quoted,
    wrong_type,
)
from keel.data.words import term_ids
from keel.errors import ConfigError, DataError

# What pandas' to_numeric parses (after keel strips the text): checked on edge cases and 42,001
# random spellings, bit for bit. Python's float() alone also takes "nan", "inf", "1_000" and
# non-ASCII digits, which keel rejects.
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# pandas' missing-value singletons, recognised by type name so pandas need not be imported.
_MISSING_TYPES = frozenset({"NAType", "NaTType"})
# Element types a list converts with one np.array call, exactly as value-by-value conversion would.
_PLAIN_NUMBERS = frozenset({float, int, bool, type(None)})
# Values that hold several values: never one cell.
_CONTAINERS = (Mapping, list, tuple, set, frozenset)
# The date forms pandas' ISO 8601 parser takes and datetime.fromisoformat does not: a year, a year
# and month, and months and days of one digit (2024-2-9).
_SHORT_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
_UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Date values that are their own dates, never digits mistaken for seconds (datetime.datetime is a date).
_NOT_DIGITS = (str, bytes, datetime.date, np.datetime64)
_EPOCH64 = np.datetime64(0, "s")
_ONE_SECOND = np.timedelta64(1, "s")


@dataclass(frozen=True)
class InputColumn:
    """One input of the exported graph.

    Attributes:
        name: The feature column it is fed from (the input's name).
        number: True for a float64 input (number and date columns), False for a string one (binary,
            category).
        date: True for a date column: its values are converted to seconds since 1970-01-01 UTC.
        vocabulary: For a text column, term -> position: its texts (strings, as a category's values)
            become an int64 ``(rows, terms)`` array of term positions (:func:`text_positions`).
        refuses_digits: For a date column: whether numbers that are all years or all YYYYMMDD dates are refused
            (``DateTransform.refuses_digits``: unless the training dates began in 1970; keel.dates in the ONNX
            metadata, and True for an export without it).
        char_ngrams: For a text column with character n-grams (keel.text's char_ngrams), their
            shortest and longest length; None for words and word pairs only.
    """

    name: str
    number: bool
    date: bool = False
    vocabulary: Mapping[str, int] | None = None  # a text column: its terms' positions (see text_positions)
    image: PixelSpec | None = None  # an image column: how its images become pixels (see image_pixels)
    tokenizer: Any = None  # a text column on a pretrained encoder: its tokenizers.Tokenizer (see token_rows)
    refuses_digits: bool = True  # a date column: numbers that are all years or YYYYMMDD are refused
    char_ngrams: tuple[int, int] | None = None  # a text column's character n-grams (see term_rows)


def to_feeds(data: object, columns: Sequence[InputColumn], *,
             positions: bool = True) -> tuple[dict[str, np.ndarray], list[str]]:
    """The graph's inputs for ``data``, and the column names in ``data`` that are no input.

    Args:
        data: One row (a dict of column -> value), columns (a dict of column -> list or array),
            rows (a list of dicts) or a pandas DataFrame.
        columns: The graph's inputs.
        positions: Turn text columns into term positions (:func:`text_positions`); False leaves
            them strings, for a caller that pads them a chunk at a time (the predictor).

    Returns:
        ``(feeds, extra)``: one 1-D array per input, all of one length; ``extra`` in ``data``'s order.

    Raises:
        DataError: ``data`` is of none of these forms, has no rows, lacks an input column, holds
            columns of different lengths, or a value that is no number where one is needed or no
            single value at all; the message names the column and, where one is at fault, the row.
    """
    feeds, extra = _feeds(data, columns)
    for column in columns:
        if positions and column.vocabulary is not None:
            feeds[column.name] = text_positions(feeds[column.name], column.vocabulary, column.char_ngrams)
        if positions and column.tokenizer is not None:
            feeds[column.name] = padded(token_rows(feeds[column.name], column.tokenizer))
        if positions and column.image is not None:
            feeds[column.name] = image_pixels(feeds[column.name], column)
    return feeds, extra


def image_pixels(values: np.ndarray, column: InputColumn, first_row: int = 1) -> np.ndarray:
    """An image column's values as the graph's input: float32 ``(rows, channels, size, size)``.

    Each value is a file's bytes, a file path (read from the working directory when relative), an
    array of ``(height, width)`` or ``(height, width, channels)`` numbers, or a Pillow image; None,
    NaN and ``""`` are a missing image (all NaN). :mod:`keel.data.pixels` converts and resizes each,
    as training did.

    Args:
        values: The column's values (an object array, as ``to_feeds(positions=False)`` leaves them).
        column: The column; ``column.image`` says the mode, size and scale.
        first_row: The 1-based row of ``values[0]``, for messages.

    Raises:
        DataError: A value is no image, a file is missing or damaged; names the column and the first such row in
            full, then every other (keel.data.pixels.raise_all, as training does).
    """
    spec = column.image
    assert spec is not None
    out = np.full((len(values), spec.channels, spec.size, spec.size), np.nan, dtype=np.float32)
    raise_all(_decoded(values, column, first_row, out), column.name, None)
    return out


def image_problems(values: np.ndarray, column: InputColumn, first_row: int = 1) -> list[DataError]:
    """The error of every value of an image column that is no usable image, each decoded and kept nowhere: where
    one chunk of a column failed, the rest of it is checked so that one error names every bad row."""
    return _decoded(values, column, first_row, None)


def _decoded(values: np.ndarray, column: InputColumn, first_row: int, out: np.ndarray | None) -> list[DataError]:
    """Decode each present image into ``out`` (when given); returns the errors of those that cannot be."""
    spec = column.image
    assert spec is not None
    problems: list[DataError] = []
    for position, value in enumerate(values):
        if _missing_image(value):
            continue
        try:
            pixels = _one_image(value, column.name, first_row + position, spec)
        except DataError as error:
            problems.append(error)
            continue
        if out is not None:
            out[position] = pixels
    return problems


def _missing_image(value: Any) -> bool:
    if value is None or type(value).__name__ in _MISSING_TYPES:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _one_image(value: Any, column: str, row: int, spec: PixelSpec) -> np.ndarray:
    try:
        from PIL.Image import DecompressionBombError, UnidentifiedImageError
    except ImportError:
        raise ConfigError(f"this model has the image column {column!r}, which the predictor reads with Pillow; pip "
                          "install pillow.") from None

    from keel.data.pixels import array_pixels, file_pixels, file_source, image_array, is_pillow_image, open_image

    if isinstance(value, np.ndarray):
        array = image_array(value)
        if array is None:
            raise DataError(f"image column {column!r} row {row} holds an array of shape {value.shape} ({value.dtype}); "
                            "an image is numbers of shape (height, width) or (height, width, channels) with 1, 3 or "
                            "4 channels.", column=column, row=row)
        return array_pixels(array, spec.mode, spec.size, spec.scale)
    if is_pillow_image(value):
        return file_pixels(value, spec.mode, spec.size)
    found = file_source(value)
    if found is None:
        raise DataError(f"image column {column!r} row {row} holds a value of type {type(value).__name__} "
                        f"({quoted(value)}); an image is a file's bytes, a file path, an array of pixels, a Pillow "
                        "image, or None (null in JSON) when missing.", column=column, row=row)
    shown = f"{len(found):,} bytes" if isinstance(found, bytes) else repr(str(value))
    try:
        with open_image(found) as image:
            return file_pixels(image, spec.mode, spec.size)
    except FileNotFoundError:
        where = found.absolute() if isinstance(found, Path) else shown
        raise DataError(f"image column {column!r} row {row}: the file {shown} does not exist (looked for {where}); "
                        "fix the path, or pass None (null in JSON) for a missing image.", column=column, row=row) from None
    except UnidentifiedImageError:
        raise DataError(f"image column {column!r} row {row}: {shown} is not an image Pillow can read; pass a PNG or "
                        "JPEG file (or its bytes), or None (null in JSON) for a missing image.", column=column, row=row) from None
    except DecompressionBombError as error:
        raise DataError(f"image column {column!r} row {row}: {shown} is too large: {error}.", column=column,
                        row=row) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"image column {column!r} row {row}: {shown} cannot be read or decoded "
                        f"({str(error)[:80]}); pass an undamaged image, or None (null in JSON) for a missing image.",
                        column=column, row=row) from None


def vocabulary_index(vocabulary: Sequence[str]) -> dict[str, int]:
    """A text column's vocabulary (keel.text in the ONNX metadata) as term -> position."""
    return {term: position for position, term in enumerate(vocabulary)}


def term_rows(texts: np.ndarray, vocabulary: Mapping[str, int],
              char_ngrams: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Each text ("" for missing) as an int64 array of its terms' positions (:func:`keel.data.words.term_ids`;
    ``char_ngrams``: the column's character n-grams' lengths, if it counts them)."""
    return [np.array(row, dtype=np.int64) for row in term_ids([str(text) for text in texts], vocabulary, char_ngrams)]


def load_tokenizer(tokenizer_json: str, max_tokens: int) -> Any:
    """A pretrained text column's tokenizer (keel.tokens in the ONNX metadata): truncating at ``max_tokens``,
    not padding (:func:`padded` pads a chunk of rows at a time).

    Raises:
        ConfigError: The tokenizers library is not installed.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("this model has a text column on a pretrained encoder, which the predictor tokenises with "
                          "the tokenizers library; pip install tokenizers (or 'keel[text]').") from None
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return tokenizer


def token_rows(texts: np.ndarray, tokenizer: Any) -> list[np.ndarray]:
    """Each text ("" for missing) as the graph's row for a pretrained text column: its empty flag (1 for an empty
    or blank text), then its token ids (int64), as keel's TextTransform tokenises it."""
    strings = [str(text) for text in texts]
    return [np.array([0 if text.strip() else 1, *encoding.ids], dtype=np.int64)
            for text, encoding in zip(strings, tokenizer.encode_batch(strings))]


def padded(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of term positions as the graph's ``(rows, terms)`` input, padded with -1."""
    out = np.full((len(rows), max((len(row) for row in rows), default=1) or 1), -1, dtype=np.int64)
    for position, row in enumerate(rows):
        out[position, :len(row)] = row
    return out


def text_positions(texts: np.ndarray, vocabulary: Mapping[str, int],
                   char_ngrams: tuple[int, int] | None = None) -> np.ndarray:
    """Texts ("" for missing) as the exported graph's input for a text column: int64 ``(rows, terms)``,
    each row its terms' positions padded with -1 to the longest row (all rows in one array: for a
    batch of any size, the predictor pads a chunk at a time instead)."""
    return padded(term_rows(texts, vocabulary, char_ngrams))


def _feeds(data: object, columns: Sequence[InputColumn]) -> tuple[dict[str, np.ndarray], list[str]]:
    if isinstance(data, Mapping):
        first = next((data[column.name] for column in columns if column.name in data), None)
        if _is_sequence(first):
            return _column_feeds(data, columns), _extra(data, columns)
        return _row_feeds(data, columns), _extra(data, columns)
    if isinstance(data, (list, tuple)):
        return _rows_feeds(data, columns)
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is loaded; never load it here
    if pandas is not None and isinstance(data, pandas.DataFrame):
        return _frame_feeds(data, columns)
    raise DataError(
        f"cannot predict from data of type {type(data).__name__}; pass one row as a dict of column -> value, "
        "columns as a dict of column -> list, rows as a list of dicts, or a pandas DataFrame.")


# ---- the four forms ------------------------------------------------------------------------
def _row_feeds(row: Mapping[Any, Any], columns: Sequence[InputColumn]) -> dict[str, np.ndarray]:
    """One row: the hot path of a one-row request, so one small array per column and nothing else."""
    feeds = {}
    for column in columns:
        try:
            value = row[column.name]
        except KeyError:
            raise _missing_column(column.name, row=1, keys=row) from None
        if column.image is not None:
            feeds[column.name] = _object_array([value])
        elif column.date:
            feeds[column.name] = _date_seconds([value], column)
        elif column.number:
            feeds[column.name] = np.array([to_number(value, column.name, 1)], dtype=np.float64)
        else:
            feeds[column.name] = np.array([to_string(value, column.name, 1)], dtype=object)
    return feeds


def _column_feeds(data: Mapping[Any, Any], columns: Sequence[InputColumn]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    length, first = -1, ""
    for column in columns:
        if column.name not in data:
            raise _missing_column(column.name, row=None, keys=data)
        values = data[column.name]
        if not _is_sequence(values):
            raise DataError(
                f"column {column.name!r} holds the single value {quoted(values)} where column {first!r} holds a "
                f"list; pass every column as a list (one value per row), or every column as one value (one row).",
                column=column.name)
        if length < 0:
            length, first = len(values), column.name
            if length == 0:
                raise _empty()
        elif len(values) != length:
            raise DataError(
                f"column {column.name!r} has {len(values)} value(s) where column {first!r} has {length}; every "
                "column needs one value per row (None for a missing one).", column=column.name)
        feeds[column.name] = _convert_column(values, column)
    return feeds


def _rows_feeds(rows: Sequence[Any], columns: Sequence[InputColumn]) -> tuple[dict[str, np.ndarray], list[str]]:
    if len(rows) == 0:
        raise _empty()
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(
                f"row {position + 1} is of type {type(row).__name__} ({quoted(row)}); a list of rows needs one dict of "
                "column -> value per row.", row=position + 1)
    feeds = {}
    for column in columns:
        name = column.name
        try:
            values = [row[name] for row in rows]
        except KeyError:
            position = next(index for index, row in enumerate(rows) if name not in row)
            raise _missing_column(name, row=position + 1, keys=rows[position]) from None
        feeds[name] = _convert_column(values, column)
    keys: dict[Any, None] = {}
    for row in rows:  # every row's names, in first-seen order
        keys.update(dict.fromkeys(row))
    return feeds, _extra(keys, columns)


def _frame_feeds(frame: Any, columns: Sequence[InputColumn]) -> tuple[dict[str, np.ndarray], list[str]]:
    """A DataFrame, converted by the functions Model.predict uses (pandas is loaded already)."""
    import pandas as pd

    from keel.data.values import category_strings, to_numeric
    from keel.data.values import to_seconds as column_seconds

    if len(frame) == 0:
        raise _empty()
    names = column_names(frame.columns)  # as read_table names them: 3 is the column "3"
    source = frame.attrs.get("source")  # relative image paths are read from the data file's folder
    # A shallow copy with a 0..n-1 index, as read_table makes: rows in messages count from 1.
    frame = frame.copy(deep=False)
    frame.columns, frame.index, frame.attrs = names, pd.RangeIndex(len(frame)), {}
    feeds = {}
    for column in columns:
        if column.name not in frame.columns:
            raise _missing_column(column.name, row=None)
        series = frame[column.name]
        if column.image is not None:
            feeds[column.name] = _object_array(resolved(series.tolist(), source) if source else series.tolist())
        elif column.date:
            feeds[column.name] = column_seconds(series, column=column.name, digits=column.refuses_digits)
        elif column.number:
            feeds[column.name] = to_numeric(series, column=column.name).astype(np.float64, copy=False)
        else:
            strings = category_strings(series)
            strings[strings == None] = ""  # noqa: E711 (elementwise)
            check_text(strings, column.name)
            feeds[column.name] = strings
    return feeds, _extra(dict.fromkeys(names), columns)


# ---- one column, one value -----------------------------------------------------------------
def _convert_column(values: Any, column: InputColumn) -> np.ndarray:
    """A list, tuple, NumPy array or pandas Series of one column's values as the input's array."""
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(values, pandas.Series):
        return _frame_feeds(pandas.DataFrame({column.name: values.reset_index(drop=True)}), [column])[0][column.name]
    if column.image is not None:  # decoded by image_pixels (the predictor: a chunk at a time)
        return _object_array(list(values))
    if isinstance(values, np.ndarray):
        return _convert_array(values, column)
    if column.date:
        return _date_seconds(values, column)
    if column.number:
        if set(map(type, values)) <= _PLAIN_NUMBERS:
            try:
                numbers = np.array(values, dtype=np.float64)  # None -> NaN, as to_number has it
            except OverflowError:  # an int beyond float64: the value-by-value path names it
                numbers = _numbers_one_by_one(values, column.name)
        else:
            numbers = _numbers_one_by_one(values, column.name)
        _check_finite(numbers, column.name)
        return numbers
    if all(type(value) is str for value in values):
        check_text(values, column.name)
        return np.array(values, dtype=object)
    return np.array([to_string(value, column.name, row) for row, value in enumerate(values, 1)], dtype=object)


def _convert_array(values: np.ndarray, column: InputColumn) -> np.ndarray:
    if values.ndim != 1:
        raise DataError(f"column {column.name!r} is an array of shape {values.shape}; pass one value per row "
                        "(a 1-D list or array).", column=column.name)
    kind = values.dtype.kind
    if column.date and kind == "M":  # NumPy datetimes are naive: UTC
        return (values - _EPOCH64) / _ONE_SECOND  # NaT -> NaN
    if column.date and kind in "iuf":  # seconds, unless they are years or YYYYMMDD dates
        numbers = values.astype(np.float64, copy=False)
        _check_finite(numbers, column.name)
        _refuse_digits(numbers, column)
        return numbers
    if column.date:
        return _convert_column(list(values), column)
    if column.number and kind in "biuf":
        numbers = values.astype(np.float64, copy=False)
        _check_finite(numbers, column.name)
        return numbers
    if kind in "Mm" or (kind == "f" and values.dtype.itemsize < 8):
        # Value by value as NumPy scalars: float32 and float16 values keep their own shortest digits
        # ("0.1"), which tolist() would lose by widening them to float64, and dates stay dates
        # (tolist() makes nanosecond dates plain ints).
        convert = to_number if column.number else to_string
        converted = [convert(value, column.name, row) for row, value in enumerate(values, 1)]
        return np.array(converted, dtype=np.float64 if column.number else object)
    return _convert_column(values.tolist(), column)


def _date_seconds(values: Sequence[Any], column: InputColumn) -> np.ndarray:
    """A date column's values (a list, or one row's value as a list of one) as seconds since 1970-01-01 UTC."""
    seconds = np.array([to_seconds(value, column.name, row) for row, value in enumerate(values, 1)], dtype=np.float64)
    # Only numbers can be digits: "1970-01-01T00:33:00" is 1980 seconds, and meant as such. Model.predict judges a
    # column of numbers (and missing values), not one that mixes them with text or datetimes; so does this.
    if not any(isinstance(value, _NOT_DIGITS) for value in values):
        _refuse_digits(seconds, column)
    return seconds


def _refuse_digits(seconds: np.ndarray, column: InputColumn) -> None:
    """Raise where a date column's numbers (this call's, all of them) are years or YYYYMMDD dates, as
    ``Model.predict`` does (:func:`keel.data.values.to_seconds`): as seconds they would all be moments of 1970."""
    kind = written_dates(seconds) if column.refuses_digits else None
    if kind:
        first = int(np.flatnonzero(~np.isnan(seconds))[0]) + 1
        raise written_dates_error(seconds, kind, column.name, None, False, row=first)


def _numbers_one_by_one(values: Sequence[Any], name: str) -> np.ndarray:
    return np.array([to_number(value, name, row) for row, value in enumerate(values, 1)], dtype=np.float64)


def to_number(value: Any, column: str, row: int) -> float:
    """One value of a number column as a float, NaN when missing, as keel's to_numeric reads it.

    Args:
        value: A Python, NumPy or pandas scalar, or a numeric string.
        column: The column's name, for messages.
        row: The 1-based row, for messages.

    Returns:
        The number (NaN for None, NaN, ``pd.NA``).

    Raises:
        DataError: The value is not a number, is infinite, or is no single value.
    """
    kind = type(value)
    if kind is float:
        number = value
    elif kind is int or kind is bool:
        try:
            number = float(value)
        except OverflowError:
            raise _not_a_number(value, column, row) from None
    elif value is None:
        return math.nan
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMBER_TEXT.fullmatch(text):
            raise _not_a_number(value, column, row)
        number = float(text)
    elif isinstance(value, (int, float, Decimal)) or (
            getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", "") in "biuf"):
        number = float(value)  # NumPy scalars and 0-d arrays, Decimal, subclasses of int and float
    elif kind.__name__ in _MISSING_TYPES:
        return math.nan
    elif isinstance(value, bytes):
        return to_number(value.decode("utf-8", errors="replace"), column, row)
    else:
        raise wrong_type(value, column, row, "a number, a numeric string or None (null in JSON)")
    if math.isinf(number):
        raise DataError(
            f"column {column!r} row {row} has the value {number}; keel needs finite numbers. Replace it, or pass None "
            "to have it filled as a missing value.", column=column, row=row)
    return number


def to_seconds(value: Any, column: str, row: int) -> float:
    """One value of a date column as seconds since 1970-01-01 UTC, NaN when missing.

    Args:
        value: ISO 8601 text, a ``datetime`` (naive: UTC), ``date`` or NumPy datetime, a number
            (seconds since 1970-01-01 UTC already), or a missing value.
        column: The column's name, for messages.
        row: The 1-based row, for messages.

    Returns:
        The seconds (NaN for None, NaN, NaT, ``pd.NA`` and ``""``).

    Raises:
        DataError: Text that is no ISO 8601 date, a bool, an infinity, or no single value.
    """
    if isinstance(value, str):  # "" is missing; blank text is no date, as keel's own reading has it
        return _iso_seconds(value.strip(), value, column, row) if value else math.nan
    if value is None or type(value).__name__ in _MISSING_TYPES:
        return math.nan
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return (value - _UNIX_EPOCH).total_seconds()
    if isinstance(value, datetime.date):
        return float((value - datetime.date(1970, 1, 1)).days * 86400)
    if isinstance(value, np.datetime64):
        return math.nan if np.isnat(value) else float((value - _EPOCH64) / _ONE_SECOND)
    if isinstance(value, (bool, np.bool_)):
        raise wrong_type(value, column, row, _DATE_EXPECTED)
    if isinstance(value, bytes):
        return to_seconds(value.decode("utf-8", errors="replace"), column, row)
    if isinstance(value, (int, float, Decimal)) or (
            getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", "") in "iuf"):
        return to_number(value, column, row)
    raise wrong_type(value, column, row, _DATE_EXPECTED)


_DATE_EXPECTED = "a date (ISO 8601 text, a datetime, or seconds since 1970-01-01 UTC), or None (null in JSON)"


def _iso_seconds(text: str, value: str, column: str, row: int) -> float:
    """Seconds of ISO 8601 ``text`` (``value`` stripped), as pandas' ISO 8601 parser reads it."""
    moment: datetime.datetime | None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        moment = _short_date(text)
        if moment is None:
            raise DataError(
                f"column {column!r} holds dates, but row {row} has the value {quoted(value)}, which is no ISO 8601 "
                "date. Pass ISO 8601 text (2024-02-29, or 2024-02-29T13:45:00 with Z or +01:00 for a time zone), a "
                "datetime, seconds since 1970-01-01 UTC, or None (null in JSON) for a missing value.", column=column, row=row) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - _UNIX_EPOCH).total_seconds()


def _short_date(text: str) -> datetime.datetime | None:
    """``2024``, ``2024-02`` or ``2024-2-9`` as midnight of that day; None for anything else."""
    match = _SHORT_DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day = (int(part or 1) for part in match.groups())
    try:
        return datetime.datetime(year, month, day)
    except ValueError:  # month 13, February 30
        return None


def to_string(value: Any, column: str, row: int) -> str:
    """One value of a binary or category column in keel's canonical spelling, ``""`` when missing.

    Args:
        value: A Python, NumPy or pandas scalar.
        column: The column's name, for messages.
        row: The 1-based row, for messages.

    Returns:
        :func:`keel.data.spelling.canonical_category` of the value (``3``, ``3.0`` and ``"3"`` are
        ``"3"``), or the empty string for a missing value.

    Raises:
        DataError: The value is no single value (a dict, list, set or array), or a string that is not
            valid Unicode text (it holds a lone UTF-16 surrogate).
    """
    if type(value) is str:
        spelled = value
    elif isinstance(value, _CONTAINERS) or getattr(value, "ndim", 0) != 0:
        raise wrong_type(value, column, row, ONE_VALUE)
    else:
        spelled = canonical_category(value) or ""
    if not spelled.isascii() and LONE_SURROGATE.search(spelled):  # isascii() is O(1): the common case costs nothing
        raise _not_unicode(spelled, column, row)
    return spelled


def check_text(strings: Sequence[str] | np.ndarray, column: str) -> None:
    """Raise for the first string that is not valid Unicode text (a lone UTF-16 surrogate).

    Args:
        strings: One column's strings (a list, or an object array of them).
        column: The column's name, for the message.

    Raises:
        DataError: A string holds a lone surrogate; the message names the column and the 1-based row.
    """
    position = lone_surrogate_at(strings)
    if position is not None:
        raise _not_unicode(strings[position], column, position + 1)


# ---- helpers -------------------------------------------------------------------------------
def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (np.array would stack arrays of one shape into one array)."""
    out = np.empty(len(values), dtype=object)
    for position, value in enumerate(values):  # out[:] = values would broadcast arrays of one shape
        out[position] = value
    return out


def _is_sequence(value: object) -> bool:
    """True for a column's worth of values: a list, tuple, 1-D array or pandas Series (not an image's bytes)."""
    if isinstance(value, (list, tuple)):
        return True
    if isinstance(value, (bytes, bytearray, memoryview)):
        return False
    return getattr(value, "ndim", 0) == 1 and hasattr(value, "__len__")


def _check_finite(numbers: np.ndarray, name: str) -> None:
    infinite = np.isinf(numbers)
    if infinite.any():
        position = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"column {name!r} row {position + 1} has the value {numbers[position]}; keel needs finite numbers "
            f"({int(infinite.sum())} infinite value(s) in all). Replace them, or pass None to have them filled as "
            "missing values.", column=name, row=position + 1)


def _extra(names: Mapping[Any, Any], columns: Sequence[InputColumn]) -> list[str]:
    if len(names) <= len(columns) and all(column.name in names for column in columns):
        return []  # the common case: exactly the inputs
    inputs = {column.name for column in columns}
    return [str(name) for name in names if name not in inputs]


def _missing_column(name: str, row: int | None, keys: Mapping[Any, Any] | None = None) -> DataError:
    where = f"row {row} lacks" if row is not None else "the data lacks"
    # A dict from an int-labelled DataFrame (df.to_dict("records")) has the key 0 where the model reads "0".
    unread = next((key for key in keys or () if not isinstance(key, str) and str(key) == name), None)
    fix = (f"its key {quoted(unread)} is of type {type(unread).__name__}, and keel names columns by text: use the key "
           f"{name!r} (str() of each key, as a DataFrame's labels are read)" if unread is not None else
           "add it (None is allowed for a missing value and is filled)")
    return DataError(f"{where} the input column {name!r} that the model was trained on; {fix}.", column=name, row=row)


def _empty() -> DataError:
    return DataError("the data has no rows; pass at least one row to predict.")


def _not_a_number(value: Any, column: str, row: int) -> DataError:
    return DataError(
        f"column {column!r} holds numbers, but row {row} has the value {quoted(value)}. Pass a number or a numeric "
        "string, or None for a missing value.", column=column, row=row)


def _not_unicode(value: str, column: str, row: int) -> DataError:
    match = LONE_SURROGATE.search(value)
    where = f" ({match.group()!r} at position {match.start()})" if match else ""
    return DataError(
        f"column {column!r} row {row} holds {quoted(value)}, which is not valid Unicode text: it has a lone UTF-16 "
        f"surrogate{where}, which no UTF-8 text can hold; send UTF-8 (in JSON, an escape such as \\ud83d must be "
        "followed by its low half, such as \\ude00).", column=column, row=row)
