"""Turn raw column values into numbers or category strings, naming the row of any bad value."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def to_numeric(series: pd.Series, *, column: str, source: str | None = None) -> np.ndarray:
    """Convert a column to floats with NaN for missing values: float32 columns stay float32 (and
    are not copied), everything else becomes float64.

    Raises:
        DataError: A value is not a number, or is infinite; the message names column, row and value.
    """
    if series.dtype in (np.float32, np.float64):
        values = series.to_numpy()
    elif is_numeric(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_bool_dtype(series.dtype):
        values = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        present = series.notna().to_numpy()
        parsed = pd.to_numeric(series.astype(object).where(series.notna(), None).map(_strip), errors="coerce")
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = present & np.isnan(values)
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            value = series.iloc[position]
            raise DataError(
                f"column {column!r} holds numbers, but row {series.index[position] + 1} has the value {value!r} "
                f"({int(bad.sum())} such value(s) in all). Fix or blank out the value, or declare the column "
                f"a category in input_features.",
                file=source, column=column, row=int(series.index[position]) + 1,
            )
    infinite = np.isinf(values)
    if infinite.any():
        position = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"column {column!r} row {series.index[position] + 1} has the value {values[position]}; keel needs "
            f"finite numbers ({int(infinite.sum())} infinite value(s) in all). Replace them, or leave the cells "
            "empty to have them filled as missing values.",
            file=source, column=column, row=int(series.index[position]) + 1,
        )
    return values


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def category_strings(series: pd.Series) -> np.ndarray:
    """Category values as strings (None for missing), with 3.0 written as "3" so files and frames agree."""
    missing = series.isna().to_numpy()
    if pd.api.types.is_string_dtype(series.dtype) and not pd.api.types.is_object_dtype(series.dtype):
        out = series.to_numpy(dtype=object, na_value=None)
    elif is_numeric(series):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = np.isfinite(numbers) & (numbers == np.round(numbers))
        out = numbers.astype(str).astype(object)
        out[integral] = numbers[integral].astype(np.int64).astype(str)
    else:  # object, bool, category dtypes: mixed values, converted one by one
        out = np.array([_category_string(value) for value in series.to_numpy(dtype=object)], dtype=object)
    out[missing] = None
    return out


def _category_string(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
