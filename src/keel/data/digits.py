"""Dates written as digits (``2023``, ``20231106``) where a date column takes seconds since 1970-01-01 UTC.

A CSV's date column of digits reaches keel as whole numbers, and as seconds they would all be moments of 1970: a
silent wrong answer. Training (a declared date column), ``Model.predict`` and the torch-free runtime and server refuse
them with one judgement and one message, so this module imports only NumPy (``keel.runtime`` may not load pandas).
"""

from __future__ import annotations

import numpy as np

from keel.errors import DataError

# Above 2**24 (up to 2**25, past every YYYYMMDD) a float32 holds only even whole numbers.
_FLOAT32_EXACT = 2**24


def written_dates(values: np.ndarray) -> str | None:
    """What a date column of whole numbers holds when the numbers are dates written as digits rather than
    seconds: ``"years"`` (all from 1000 to 9999), ``"dates written without dashes (20231106)"`` (all valid
    YYYYMMDD from 1000 to 2999, or a float32's rounding of one), or None (seconds, as numbers in a date column are)."""
    present = values[~np.isnan(values)]
    if not len(present) or not np.all(present == np.round(present)):
        return None
    low, high = present.min(), present.max()
    if 1000 <= low and high <= 9999:
        return "years"
    if 10000100 <= low and high <= 29991232:
        month, day = (present // 100) % 100, present % 100
        # A float32 (a float32 array or DataFrame column) holds no odd whole number above 2**24: 20230131 arrives as
        # 20230132 and 20230101 may as 20230100, and one such day let the whole column through as seconds of 1970.
        rounded = (present > _FLOAT32_EXACT) & ((day == 0) | (day == 32))
        if np.all((month >= 1) & (month <= 12) & (((day >= 1) & (day <= 31)) | rounded)):
            return "dates written without dashes (20231106)"
    return None


def written_dates_error(seconds: np.ndarray, kind: str, column: str, source: str | None, declared: bool,
                        row: int | None = None) -> DataError:
    """The refusal of a date column of numbers that are dates written as digits (``kind``, from written_dates), at
    training (``declared``: the config declares the column a date, and could declare it a number) and at prediction.
    ``row``: the 1-based row of the first of them, for the runtime and the server, which name a row in every error
    (the whole batch is at fault, so the message itself gives the numbers' range).
    """
    # A CSV's 2023 or 20231106 comes as a number (pandas reads digits so), and as seconds it would be a moment of
    # 1970: the same text a DataFrame, Parquet or JSON gives as a string is its own date.
    given = seconds[~np.isnan(seconds)]
    holds = "is declared a date but holds" if declared else "holds dates, but as"
    # Declared: the numbers may be no dates at all. At prediction they are the model's date column, which a
    # DataFrame, a record or a JSON body can give as strings (the runtime reads '20231106' as ISO 8601 too).
    fix = ("Declare the column a number, or write the dates out (2023-11-06)." if declared else
           "Write the dates out (2023-11-06); strings like '20231106' are read as dates too.")
    return DataError(
        f"column {column!r} {holds} whole numbers from {given.min():.0f} to {given.max():.0f}, {kind} by the look of "
        f"them; numbers in a date column are seconds since 1970-01-01 UTC, and these would all fall in 1970. {fix}",
        file=source, column=column, row=row)
