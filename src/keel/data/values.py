"""Turn raw column values into numbers or category strings, naming the row of any bad value.

The pandas side of the canonical spellings: the scalar rule itself lives in
:mod:`keel.data.spelling`, which imports no pandas, NumPy or torch.
"""

from __future__ import annotations

import datetime
import math
from typing import Callable, Iterable, TypeVar, cast

import numpy as np
import pandas as pd

from keel.data.digits import written_dates, written_dates_error
from keel.data.parallel import map_columns
from keel.data.spelling import ONE_VALUE, canonical_category, lone_surrogate_at, wrong_type
from keel.errors import DataError


def is_numeric(series: pd.Series) -> bool:
    """True for int/float columns (bool columns are not numeric here)."""
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def numeric_share(series: pd.Series) -> float:
    """The fraction of non-missing values that parse as numbers."""
    present = series.dropna()
    if len(present) == 0:
        return 0.0
    if is_numeric(series):
        return 1.0
    parsed = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    return float(parsed.notna().mean())


# A spread (a column's scale) below this is none: the column is centred, not divided; float32, which the network
# reads, cannot tell values that close apart anyway.
MIN_SCALE = 1e-30
# What a number column's bad value can be fixed by, besides fixing or blanking it: a feature can be a category.
FEATURE_ADVICE = "or declare the column a category in input_features"
# A weight column is no feature: it is fixed in the file, or another column is named.
WEIGHT_ADVICE = "or name another column in training.weight_column (row weights are non-negative numbers)"
# A regression target cannot: its rows are dropped, or the task is a classification.
TARGET_ADVICE = "or drop those rows (a regression target is a number on every labelled row), or set task to binary " \
                "or multiclass if its values are classes"


def to_numeric(series: pd.Series, *, column: str, source: str | None = None,
               advice: str = FEATURE_ADVICE) -> np.ndarray:
    """Convert a column to floats with NaN for missing values: float32 columns stay float32 (and
    are not copied), everything else becomes float64.

    Raises:
        DataError: Values are not numbers, or are infinite; the message names the column, how many
            there are, and the rows and values of up to five of them.
    """
    values = _parsed(series, column, source, advice)
    is_infinite = np.isinf(values)
    if is_infinite.any():  # any() first: flatnonzero over a clean column costs ~10x more
        raise _infinite(series, values, np.flatnonzero(is_infinite), column, source, filled=advice == FEATURE_ADVICE)
    return values


def to_numeric_range(series: pd.Series, *, column: str,
                     source: str | None = None) -> tuple[np.ndarray, float, float]:
    """:func:`to_numeric`, with the smallest and largest value (NaN for a column with none).

    The range costs what to_numeric's check for infinities costs (two reductions in place of it),
    and lets a transform skip work that only extreme values need.

    Raises:
        DataError: As :func:`to_numeric`.
    """
    values = _parsed(series, column, source)
    if not len(values):
        return values, math.nan, math.nan
    low, high = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))  # NaN only when all are
    if math.isinf(low) or math.isinf(high):
        raise _infinite(series, values, np.flatnonzero(np.isinf(values)), column, source)
    return values, low, high


# The epoch that date columns count seconds from, and one second, as NumPy datetime scalars.
_EPOCH = np.datetime64(0, "s")
_ONE_SECOND = np.timedelta64(1, "s")


def to_seconds(series: pd.Series, *, column: str, source: str | None = None, digits: bool = True,
               declared: bool = False) -> np.ndarray:
    """Convert a date column to float64 seconds since 1970-01-01 UTC, NaN for missing values.

    Naive datetimes and ISO 8601 text without an offset are taken as UTC; tz-aware ones (and text
    with ``Z`` or ``+02:00``) are converted to it. Text is parsed by ``pd.to_datetime(format="ISO8601")``
    (years beyond pandas' range by :meth:`datetime.datetime.fromisoformat`); numbers are seconds since
    1970-01-01 UTC already, as the exported graph takes them; Python ``datetime`` and ``date`` objects
    and NumPy datetimes are read as their own dates.

    ``digits``: refuse a column of whole numbers that are all years or all YYYYMMDD (:func:`written_dates`), which
    as seconds would all fall in 1970; a model whose training dates reach into 1970 passes False. ``declared``: the
    column is one the training config declares a date (:func:`keel.data.schema.infer_schema`), which the refusal
    says, offering to declare it a number instead.

    Raises:
        DataError: Values that are no date (text that is not ISO 8601, a bool, an infinity); the
            message names the column, how many there are, and the rows and values of up to five.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype) and not is_numeric(series):
        # Arrow timestamps and dates (dtype_backend="pyarrow") have no NumPy datetime view: as Python
        # datetimes and dates, which the object path reads (tz-aware ones converted to UTC).
        series, dtype = series.astype(object), np.dtype(object)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        values = series.to_numpy()
        return (values - _EPOCH) / _ONE_SECOND  # NaT -> NaN
    if is_numeric(series):
        seconds = to_numeric(series, column=column, source=source).astype(np.float64, copy=False)
        kind = written_dates(seconds) if digits else None
        if kind:
            raise written_dates_error(seconds, kind, column, source, declared)
        return seconds
    if pd.api.types.is_bool_dtype(dtype):
        present = np.flatnonzero(series.notna().to_numpy())
        if len(present):
            raise _not_dates(series, present, column, source)
        return np.full(len(series), np.nan)
    seconds = _object_seconds(series, column, source)
    # An object column of numbers alone (astype(object), or ints beside None) is judged as a numeric one is: its
    # 2023s as seconds would be moments of 1970 just the same. Text or datetimes among them are their own dates.
    if digits and _numbers_only(series):
        kind = written_dates(seconds)
        if kind:
            raise written_dates_error(seconds, kind, column, source, declared)
    return seconds


def _numbers_only(series: pd.Series) -> bool:
    return not any(isinstance(value, (str, bytes, datetime.date, np.datetime64)) for value in series.to_numpy(object))


def _object_seconds(series: pd.Series, column: str, source: str | None) -> np.ndarray:
    """Seconds of a text or mixed column: text through pandas' ISO 8601 parser, the rest one by one."""
    values = series.to_numpy(dtype=object, na_value=None)
    out = np.full(len(values), np.nan)
    missing = missing_values(series)
    texts = np.flatnonzero(~missing & np.fromiter((isinstance(v, str) for v in values), bool, len(values)))
    if len(texts):
        stripped = pd.Series(values[texts], dtype=object).str.strip()
        parsed = pd.to_datetime(stripped, format="ISO8601", utc=True, errors="coerce")
        out[texts] = (parsed.dt.tz_localize(None).to_numpy() - _EPOCH) / _ONE_SECOND
        for position in texts[np.isnan(out[texts])]:  # beyond pandas' years, or no date at all
            out[position] = _iso_seconds(str(values[position]).strip())
    others = np.flatnonzero(~missing)
    for position in others[~np.isin(others, texts)]:
        out[position] = _value_seconds(values[position])
    bad = np.flatnonzero(~missing & ~np.isfinite(out))
    if len(bad):
        raise _not_dates(series, bad, column, source)
    return out


def _iso_seconds(text: str) -> float:
    """Seconds of an ISO 8601 date that pandas cannot hold (year 10000 needs no more), NaN if none."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return math.nan
    return _datetime_seconds(moment)


def _value_seconds(value: object) -> float:
    """Seconds of one non-text value of a date column; NaN when it is no date."""
    if isinstance(value, datetime.datetime):
        return _datetime_seconds(value)
    if isinstance(value, datetime.date):
        return float((value - datetime.date(1970, 1, 1)).days * 86400)
    if isinstance(value, np.datetime64):
        return float((value - _EPOCH) / _ONE_SECOND)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    return math.nan


def _datetime_seconds(moment: datetime.datetime) -> float:
    if moment.tzinfo is None:  # naive: UTC, as a naive datetime64 column is read
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - _UNIX_EPOCH).total_seconds()


_UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _not_dates(series: pd.Series, positions: np.ndarray, column: str, source: str | None) -> DataError:
    row, value = _row_value(series, int(positions[0]))
    return DataError(
        f"column {column!r} holds dates, but row {row} has the value {value!r}, which is no date "
        f"({len(positions)} such value(s) in all{_more_samples(series, positions)}). Write dates in ISO 8601 "
        "(2024-02-29, or 2024-02-29T13:45:00 with Z or +01:00 for a time zone) or as seconds since "
        "1970-01-01 UTC, blank out the values, or declare the column a category in input_features.",
        file=source, column=column, row=row,
    )


def _parsed(series: pd.Series, column: str, source: str | None, advice: str = FEATURE_ADVICE) -> np.ndarray:
    """The column as floats, NaN where missing; a DataError for values that are not numbers."""
    if series.dtype in (np.float32, np.float64):
        return series.to_numpy()
    if is_numeric(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    present = series.notna().to_numpy()
    parsed = pd.to_numeric(series.astype(object).where(series.notna(), None).map(_strip), errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    unparsed = present & np.isnan(values)
    if unparsed.any():
        bad = np.flatnonzero(unparsed)
        row, value = _row_value(series, bad[0])
        # A blank string is already blank: in a DataFrame a missing number is None or NaN, not "".
        if advice == WEIGHT_ADVICE:  # a weight's blank cell is refused too: it needs a number (0 leaves the row out)
            fix = f"Give {'them numbers' if len(bad) > 1 else 'it a number'} (0 to leave a row out)"
        elif isinstance(value, str) and not value.strip():
            fix = ("A missing number is an empty cell in a file (no spaces) and None or NaN in a DataFrame, not blank "
                   "text: write it so")
        else:
            fix = f"Fix or blank out the value{'s' if len(bad) > 1 else ''}"
        raise DataError(
            f"column {column!r} holds numbers, but row {row} has the value {value!r} "
            f"({len(bad)} such value(s) in all{_more_samples(series, bad)}). {fix}, {advice}.",
            file=source, column=column, row=row,
        )
    return values


def _infinite(series: pd.Series, values: np.ndarray, positions: np.ndarray, column: str,
              source: str | None, filled: bool = True) -> DataError:
    """``filled``: a feature's empty cells are filled as missing; a weight's or a target's are not."""
    row = int(series.index[positions[0]]) + 1
    return DataError(
        f"column {column!r} row {row} has the value {values[positions[0]]}; keel needs finite numbers "
        f"({len(positions)} infinite value(s) in all{_more_samples(series, positions, values)}). Replace them"
        + (", or leave the cells empty to have them filled as missing values." if filled else " with finite numbers."),
        file=source, column=column, row=row,
    )


# How many bad values of one column an error names (rows and values).
_SAMPLES = 5
# How many column names the first sentence of a combined error lists (its parts name them all).
_LISTED = 10


def _row_value(series: pd.Series, position: int) -> tuple[int, object]:
    """The 1-based row number (the frame's index counts data rows from 0) and plain value at ``position``."""
    value = series.iloc[position]
    return int(series.index[position]) + 1, value.item() if isinstance(value, np.generic) else value


def _more_samples(series: pd.Series, positions: np.ndarray, values: np.ndarray | None = None) -> str:
    """``"; also row 9 'x', row 12 'y'"``: the bad values after the first, up to ``_SAMPLES`` in all."""
    shown = []
    for position in positions[1:_SAMPLES]:
        row, value = _row_value(series, int(position))
        shown.append(f"row {row} {values[position] if values is not None else repr(value)}")
    if not shown:
        return ""
    more = f" and {len(positions) - _SAMPLES} more" if len(positions) > _SAMPLES else ""
    return "; also " + ", ".join(shown) + more


Item = TypeVar("Item")
Result = TypeVar("Result")


def map_gathering(function: Callable[[Item], Result], items: Iterable[Item], cells: int) -> list[Result]:
    """:func:`~keel.data.parallel.map_columns`, except that a DataError in one column does not hide
    the others': every column's error is raised at once, as one DataError (pandera's lazy validation).

    Args:
        function: Applied to each item (a column, usually); may raise DataError.
        items: The items, in order.
        cells: Rows x columns of the work, to decide on threads.

    Returns:
        The results, in the items' order.

    Raises:
        DataError: One or more items failed; see :func:`combine_errors`.
    """
    def guarded(item: Item) -> tuple[Result | None, DataError | None]:
        try:
            return function(item), None
        except DataError as error:
            return None, error

    outcomes = map_columns(guarded, items, cells)
    errors = [error for _, error in outcomes if error is not None]
    if errors:
        raise combine_errors(errors)
    return [cast(Result, result) for result, _ in outcomes]


def combine_errors(errors: list[DataError]) -> DataError:
    """One DataError that lists ``errors`` (one per column): the first error itself when it is alone.

    The combined error's ``file``, ``column`` and ``row`` are the first error's.
    """
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    parts = []
    for number, error in enumerate(errors, start=1):
        text = str(error)
        if error.file and text.startswith(f"{error.file}: "):
            text = text[len(error.file) + 2:]
        parts.append(f"({number}) {text}")
    named = [repr(error.column) for error in errors if error.column is not None]
    columns = ", ".join(named[:_LISTED]) + (f" and {len(named) - _LISTED} more" if len(named) > _LISTED else "")
    return DataError(f"{len(errors)} columns have problems ({columns}); each is listed: " + " ".join(parts),
                     file=first.file, column=first.column, row=first.row)


def missing_values(series: pd.Series) -> np.ndarray:
    """True where a value is missing: None, NaN, ``pd.NA``, or an empty string (a blank cell, as
    :func:`~keel.data.spelling.canonical_category` has it). A (n,) bool array."""
    missing = series.isna().to_numpy()
    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype) or isinstance(
            dtype, pd.CategoricalDtype):
        missing = missing | (series.to_numpy(dtype=object, na_value=None) == "")
    return missing


def _strip(value: object) -> object:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:  # 10**400: beyond float64, an infinity (refused as one) rather than pandas' crash
            return math.inf if value > 0 else -math.inf
    return value


def category_strings(series: pd.Series) -> np.ndarray:
    """Category values as their canonical strings (:func:`keel.data.spelling.canonical_category`),
    None for missing: an object array that agrees with the scalar rule on every dtype, so a value
    is spelled the same from a CSV, a float32 frame, a nullable ``Int64`` column or a request."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):  # spell each category once, then look up the codes
        spelled = np.empty(len(dtype.categories) + 1, dtype=object)  # the last slot stays None
        spelled[:-1] = category_strings(pd.Series(dtype.categories))
        return spelled[series.cat.codes.to_numpy()]  # code -1 (missing) picks the None at the end
    missing = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(dtype):
        flags = series.to_numpy(dtype=bool, na_value=False)
        out = np.where(flags, "True", "False").astype(object)
    elif pd.api.types.is_integer_dtype(dtype):
        numpy_dtype = getattr(dtype, "numpy_dtype", dtype)  # nullable Int64 & co. hold numpy ints
        out = series.to_numpy(dtype=numpy_dtype, na_value=0).astype(str).astype(object)
    elif pd.api.types.is_float_dtype(dtype):
        out = _float_strings(series.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype), na_value=np.nan))
    elif pd.api.types.is_string_dtype(dtype) and (
            not pd.api.types.is_object_dtype(dtype) or pd.api.types.infer_dtype(series, skipna=True) == "string"):
        out = series.to_numpy(dtype=object, na_value=None, copy=True)  # strings are their own spelling
        missing = missing | (out == "")  # a blank cell, as canonical_category has it
        if pd.api.types.is_object_dtype(dtype):  # pandas' own string dtypes refuse lone surrogates already
            _check_text(out, missing, series)
    else:  # mixed objects, dates: one by one
        values = series.to_numpy(dtype=object)
        check_scalars(values, series)
        out = np.array([canonical_category(value) for value in values], dtype=object)
        _check_text(out, missing | (out == None), series)  # noqa: E711 (elementwise comparison)
    out[missing] = None
    return out


# The cell types check_scalars passes at once (most cells of a mixed column).
_SCALARS = frozenset({str, int, float, bool, type(None), np.str_, np.int64, np.float64, np.bool_})


def check_scalars(values: np.ndarray, series: pd.Series) -> None:
    """A list, dict, set or array in a cell is no category: a DataError naming the column and row, as the runtime
    gives for one in a record, not its text ("['red']") sent to the unknown bucket. Tuples pass: hashable, they
    were categories of models saved before this check (a column of zip(a, b) pairs)."""
    for position, value in enumerate(values):
        if type(value) in _SCALARS:
            continue
        if isinstance(value, (list, dict, set, frozenset)) or bool(getattr(value, "ndim", 0)):
            row, _ = _row_value(series, position)
            raise wrong_type(value, str(series.name), row, ONE_VALUE)


def _check_text(spelled: np.ndarray, missing: np.ndarray, series: pd.Series) -> None:
    """A lone UTF-16 surrogate (a DataFrame built from JSON's "\\ud800") is no text pyarrow or ONNX
    Runtime can hold: a DataError naming the column and row, not their UnicodeEncodeError."""
    present = np.flatnonzero(~missing)
    position = lone_surrogate_at(spelled[present].tolist())
    if position is None:
        return
    row, value = int(present[position]), spelled[present[position]]
    raise DataError(
        f"column {series.name!r} row {row + 1} holds {value!r}, which is not valid Unicode text: it has a lone "
        "UTF-16 surrogate, which no UTF-8 text can hold. Fix the text and send UTF-8 (in JSON, an escape such as \\ud83d must be "
        "followed by its low half, such as \\ude00).", column=str(series.name), row=row + 1)


def _float_strings(numbers: np.ndarray) -> np.ndarray:
    """Float spellings as canonical_category writes them: integral values within +-2**53 as
    integers, the rest in repr's layout; float32 and float16 values first become the float64 their
    shortest digits denote (NumPy's str of them)."""
    with np.errstate(invalid="ignore"):  # NaNs of any bit pattern
        if numbers.dtype.itemsize < 8:
            # Integers up to 2**11 (float16) or 2**24 (float32) are their own shortest digits; the
            # rest take the slower trip through strings (~2 s a million values).
            exact = (np.abs(numbers) <= 2.0 ** (np.finfo(numbers.dtype).nmant + 1)) & (numbers == np.round(numbers))
            wide = numbers.astype(np.float64)
            wide[~exact] = numbers[~exact].astype(str).astype(np.float64)
            numbers = wide
        integral = (np.abs(numbers) <= 2.0**53) & (numbers == np.round(numbers))
    out = np.empty(len(numbers), dtype=object)
    # Only the integral values go through int64: 1e20 would overflow it.
    out[integral] = numbers[integral].astype(np.int64).astype(str)
    # repr also writes "inf", "-inf" and "nan" (the caller blanks NaN out as missing).
    out[~integral] = [repr(number) for number in numbers[~integral].tolist()]
    return out


def row_weights(series: pd.Series, column: str, source: str | None = None) -> np.ndarray:
    """Row weights (``training.weight_column``) as float32: finite, non-negative, not all zero.

    Raises:
        DataError: A weight is missing, negative or not a number (naming the row), or all are 0.
    """
    values = to_numeric(series, column=column, source=source, advice=WEIGHT_ADVICE)
    bad = np.flatnonzero(np.isnan(values) | (values < 0))
    if len(bad):
        row = int(series.index[bad[0]]) + 1
        value = series.iloc[bad[0]]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(
            f"weight column {column!r} row {row} has the value {value!r}; row weights must be non-negative "
            f"numbers ({len(bad)} such value(s) in all). Fix them, or give those rows weight 0.",
            file=source, column=column, row=row)
    if not values.sum() > 0:
        raise DataError(f"weight column {column!r} is 0 on every row; give the rows positive weights.",
                        file=source, column=column)
    return values.astype(np.float32)
