"""The one canonical spelling of a category value, whatever container or dtype it came in.

A category is looked up by its string, so the string must not depend on how the value was read:
``0.1`` from a CSV (float64), from a float32 frame column or from a JSON request must all be
``"0.1"``, and ``3`` must be ``"3"`` whether it arrived as an int, a float or an ``Int64`` cell.

The rule, for one value:

- missing (``None``, NaN, ``pd.NA``, ``NaT``) -> ``None``
- ``bool`` and NumPy / pandas booleans -> ``"True"`` / ``"False"``
- integers of any width -> their decimal digits (``"3"``, ``"-12"``)
- floats: integral values within +-2**53 -> the integer (``3.0`` -> ``"3"``); infinities ->
  ``"inf"`` / ``"-inf"``; anything else -> the shortest decimal that round-trips in the value's
  own precision (float32 ``0.1`` -> ``"0.1"``, not float64's ``"0.10000000149011612"``), laid
  out as Python's ``repr`` lays out a float (``"0.0001"``, ``"1e+20"``).
  A float32 or float16 value is first replaced by the float64 its shortest digits denote, then
  spelled by the float64 rule: that float64 is what a CSV holding the value reads back, so a
  float32 frame and its CSV export spell alike (NumPy writes float32 ``1e-4`` as ``"1e-04"``,
  and float32 57936448 as ``"5.793645e+07"``: they spell ``"0.0001"`` and ``"57936450"``).
- strings -> unchanged, except the empty string -> ``None``: a blank cell is missing, as a CSV
  reads it, and the ONNX export passes missing category values as ``""``
- anything else -> ``str(value)``

This module imports neither NumPy, pandas nor torch: the server and ONNX clients apply the same
rule to request values. A NumPy scalar is recognised by its ``dtype`` attribute; NumPy is then
already loaded, and its ``str`` gives the shortest round-trip digits in the scalar's own precision.

The messages both sides give about a value (:func:`quoted`, :func:`wrong_type`) live here too, for the same reason:
keel.data and the torch- and pandas-free keel.runtime both import this module, and word them alike. So do the
names a DataFrame's column labels are read as (:func:`column_names`: ``3`` is the column ``"3"``).
"""

from __future__ import annotations

import datetime
import math
import numbers
import re
import struct
from decimal import Decimal
from typing import Iterable

from keel.errors import DataError

# Integral floats up to this magnitude are spelled as integers: every integer in this range is
# exactly a float64, so "3" and 3.0 name one value. Beyond it the float's repr is used ("1e+20").
_INTEGRAL_LIMIT = 2.0**53
# Missing-value singletons of pandas, recognised by type name so pandas need not be imported.
_MISSING_TYPES = frozenset({"NAType", "NaTType"})


# The spellings pandas' CSV reader reads as booleans (keel then spells them "True" / "False"); Parquet, JSON and a
# DataFrame keep them as text. A category or binary column matches every spelling of its true or false value
# (lookup_spellings), so a model trained on one form predicts the other alike.
BOOLEAN_SPELLINGS: dict[str, tuple[str, ...]] = {"True": ("True", "TRUE", "true"), "False": ("False", "FALSE", "false")}
_BOOLEAN_OF = {spelling: word for word, spellings in BOOLEAN_SPELLINGS.items() for spelling in spellings}


def boolean_word(spelling: str | None) -> str | None:
    """``"True"`` / ``"False"`` for a spelling pandas reads as that boolean, else None."""
    return _BOOLEAN_OF.get(spelling) if spelling is not None else None


# A string that writes a plain number: ASCII digits, one point, an exponent (no inf or nan; spaces around it are
# allowed, as keel's number columns allow them).
_NUMBER_TEXT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def number_spelling(text: str) -> str | None:
    """The canonical spelling of the number ``text`` writes (``3.0``, `` 3`` and ``3`` are ``"3"``, ``02`` is
    ``"2"``), or None where it writes no plain number, or one that spelling would not name exactly: digits beyond
    float64's precision (``1234567890123456789``, whose float is another id's) or below its range (``1e-400``)."""
    stripped = text.strip()
    if not _NUMBER_TEXT.match(stripped):
        return None
    value = float(stripped)
    if not math.isfinite(value):
        return None
    spelled = canonical_category(value)
    return spelled if spelled is not None and Decimal(spelled) == Decimal(stripped) else None


def lookup_spellings(values: list[str]) -> dict[str, int]:
    """Each of a column's learnt ``values`` (as spelled) to its position (a binary column's code: its second value
    is 1), and to the same position the other
    spellings of the same value, where no learnt value is spelled so and no other one claims it:

    - a true or false value: ``True``, ``TRUE`` and ``true`` (and the falses), as pandas reads a CSV's booleans;
    - a value that writes a number: that number's spelling (``3`` for ``3.0`` or `` 3``, ``2`` for ``02``), and
      for a whole number also ``3.0``, as pandas writes an integer column that has a blank cell.

    A CSV's category and binary columns are learnt as written, and the same rows reach a model from JSON, Parquet
    or a DataFrame as booleans and numbers (spelled ``True``, ``3``); the exported graph holds the same keys.
    ``1``, ``01`` and ``001`` keep their own: a number 1 is the value ``1`` alone.

    Example:
        >>> lookup_spellings(["3.0", "4.0"])["3"], lookup_spellings(["1", "01"]), lookup_spellings(["7"])["7.0"]
        (0, {'1': 0, '01': 1}, 0)
    """
    exact = {value: position for position, value in enumerate(values)}
    claims: dict[str, set[int]] = {}
    for position, value in enumerate(values):
        if not value:
            continue
        word = boolean_word(value)
        others = list(BOOLEAN_SPELLINGS[word]) if word else []
        spelled = number_spelling(value)
        if spelled is not None:
            others += [spelled] + ([f"{spelled}.0"] if re.fullmatch(r"-?[0-9]+", spelled) else [])
        for other in others:
            if other not in exact:
                claims.setdefault(other, set()).add(position)
    return {**{other: next(iter(owners)) for other, owners in claims.items() if len(owners) == 1}, **exact}


# Lone UTF-16 surrogates: a Python string may hold them (JSON's "\\ud800" makes one); UTF-8 text, and so
# ONNX Runtime and pyarrow, cannot.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(strings: Iterable[str]) -> int | None:
    """The 0-based position of the first string holding a lone UTF-16 surrogate, or None.

    One pass in C over the joined strings settles the usual case (ASCII, or no surrogate at all).

    Example:
        >>> lone_surrogate_at(["a", "b\ud800"]), lone_surrogate_at(["a", "b"])
        (1, None)
    """
    strings = list(strings)
    joined = "".join(strings)
    if joined.isascii() or not LONE_SURROGATE.search(joined):
        return None
    return next(index for index, value in enumerate(strings) if LONE_SURROGATE.search(value))


# A value whose repr is longer than this is cut in a message (a list of a thousand values is not quoted whole).
_SHOWN = 60


def quoted(value: object) -> str:
    """A value as a message quotes it: its repr, cut to 60 characters and ``...`` where longer.

    Example:
        >>> quoted("red")
        "'red'"
        >>> quoted(list(range(30)))
        '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 1...'
    """
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


# What a category, binary or text cell takes, as wrong_type says it.
ONE_VALUE = "a string, a number, a bool or None"


def wrong_type(value: object, column: str, row: int, expected: str) -> DataError:
    """The error for a cell of a type the column cannot hold (a list where one value is expected), worded alike by
    keel.data (a DataFrame's cell) and keel.runtime (a record's value).

    Args:
        value: The cell.
        column: The column's name.
        row: The 1-based row.
        expected: What the column takes, as a phrase (:data:`ONE_VALUE`, for a category).
    """
    return DataError(
        f"column {column!r} row {row} holds a value of type {type(value).__name__} ({quoted(value)}) where one value "
        f"is expected: {expected}.", column=column, row=row)


def label_shown(value: object) -> str:
    """A class as a message shows it: numbers as the class they name (5, not np.float64(5.0)), text quoted (its
    spaces and commas visible: ' 1' and 'Austin, TX').

    Example:
        >>> label_shown(5.0), label_shown(" 1"), label_shown(True)
        ('5', "' 1'", 'True')
    """
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # type: ignore[attr-defined]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(canonical_category(value))
    return repr(value)


def canonical_category(value: object) -> str | None:
    """The canonical string of one category value, or None when the value is missing.

    Args:
        value: A Python, NumPy or pandas scalar.

    Returns:
        The spelling described in the module docstring; None for a missing value.

    Example:
        >>> canonical_category(3.0), canonical_category(float("nan")), canonical_category(True)
        ('3', None, 'True')
    """
    if value is None:
        return None
    if isinstance(value, str):  # NumPy's str_ included
        return str(value) or None
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and getattr(value, "ndim", None) == 0:  # a NumPy scalar
        kind = dtype.kind
        if kind == "b":
            return "True" if value else "False"
        if kind in "iu":
            return str(int(value))  # type: ignore[call-overload]
        if kind == "f":
            # The shortest digits in the value's own precision, as the float64 they denote.
            return _float_spelling(float(str(value)) if dtype.itemsize < 8 else float(value))  # type: ignore[arg-type]
    elif isinstance(value, float):
        return _float_spelling(value)
    if type(value).__name__ in _MISSING_TYPES:
        return None
    try:
        if value != value:  # NaT of NumPy, Decimal("NaN") and other self-unequal missing markers
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _float_spelling(number: float) -> str | None:
    if math.isnan(number):
        return None
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if number.is_integer() and abs(number) <= _INTEGRAL_LIMIT:
        return str(int(number))
    return repr(number)


def respell_vocabulary(values: list[str]) -> list[str]:
    """Re-spell a vocabulary saved before the canonical spelling, for models whose float32 columns
    were spelled through float64 (``"0.10000000149011612"`` for float32 ``0.1``).

    A string is re-spelled when it is exactly what the old rule wrote for a float32 value: the
    float64 repr of a number that float32 represents exactly, whose float32 spelling differs. Any
    other string, a category that merely looks like a number (``"0.50"``) included, is unchanged.

    Args:
        values: The saved vocabulary, in index order.

    Returns:
        The vocabulary in the same order, with old float32 spellings replaced.

    Example:
        >>> respell_vocabulary(["0.10000000149011612", "0.1", "red", "0.50"])
        ['0.1', '0.1', 'red', '0.50']
    """
    return [_respelled(value) for value in values]


def _respelled(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number) or repr(number) != value:  # not a string the old float64 rule wrote
        return value
    try:
        single = struct.unpack("<f", struct.pack("<f", number))[0]
    except OverflowError:  # beyond float32's range
        return value
    if single != number:
        return value
    import numpy as np  # only migrations need it, and they run where NumPy is installed

    return canonical_category(np.float32(number)) or value


# ---- column names ----------------------------------------------------------------------------
def column_name(label: object) -> str | None:
    """The name keel reads a DataFrame column label as, or None where no name would be both readable and
    unambiguous.

    keel names columns by text (a config's ``target``, a saved schema, a JSON request), so a label is read as its
    ``str()`` where that is the name a reader would type: a string as it is; an integer (``pd.DataFrame(array)``
    numbers its columns 0, 1, ...), a bool, a finite float or a date as ``str()`` writes it (``3`` -> ``"3"``,
    ``1.5`` -> ``"1.5"``). A missing label (None, NaN, NaT), a tuple (a MultiIndex's columns) or any other object
    (whose ``str()`` may be a repr or an address) has no such name.

    Example:
        >>> column_name(3), column_name("a"), column_name(1.5), column_name(("a", "b")), column_name(None)
        ('3', 'a', '1.5', None, None)
    """
    if isinstance(label, str):  # NumPy's str_ included
        return str(label)
    if isinstance(label, numbers.Integral) or type(label).__name__ in ("bool", "bool_"):  # NumPy's too
        return str(label)
    if isinstance(label, numbers.Real):  # NumPy floats included; str() is their shortest round-trip digits
        return str(label) if math.isfinite(label) else None
    if isinstance(label, datetime.date) and canonical_category(label) is not None:  # pandas' NaT is a datetime
        return str(label)
    return None


def column_names(labels: Iterable[object], where: str = "the DataFrame") -> list[str]:
    """A DataFrame's column labels as the names keel reads them as (:func:`column_name`): the one place a
    frame's columns are named, for every entry that takes a frame (read_table, the estimators, keel.runtime).

    Args:
        labels: The labels, ``frame.columns``.
        where: What holds them, as a message names it (``"the DataFrame"``, ``"X"``).

    Returns:
        The names, in the labels' order.

    Raises:
        DataError: A label has no readable name, a label repeats, or two labels read as the same name (the int
            ``1`` and the string ``"1"``).
    """
    seen: dict[str, object] = {}
    names = []
    for label in labels:
        name = column_name(label)
        if name is None:
            raise _unnamed_column(label, where)
        if name in seen:
            raise _same_name(seen[name], label, name, where)
        seen[name] = label
        names.append(name)
    return names


def _unnamed_column(label: object, where: str) -> DataError:
    if isinstance(label, tuple):
        return DataError(
            f"{where} has a column labelled by the tuple {quoted(label)} (a MultiIndex's columns are tuples); keel "
            "names columns by text. Join the levels into one name each, e.g. "
            "df.columns = ['_'.join(map(str, c)) for c in df.columns].")
    if canonical_category(label) is None:
        return DataError(f"{where} has a column without a name ({quoted(label)}); keel names columns by text. "
                         "Give it one, e.g. df.columns = ['x' if pd.isna(c) else c for c in df.columns].")
    return DataError(
        f"{where} has a column labelled by a {type(label).__name__} ({quoted(label)}); keel names columns by text "
        "and reads only strings, numbers and dates as names. Rename it to a string, e.g. df.columns = "
        "[str(c) for c in df.columns] if those strings are the names you want.")


def _same_name(first: object, second: object, name: str, where: str) -> DataError:
    if type(first) is type(second) and first == second:
        return DataError(f"{where} has duplicate column names [{name!r}]; every column needs a unique name. "
                         "Rename them.", column=name)
    return DataError(
        f"{where} has columns {quoted(first)} ({type(first).__name__}) and {quoted(second)} "
        f"({type(second).__name__}), which keel would both name {name!r} (it names columns by text); rename one "
        f"of them, e.g. df = df.rename(columns={{{quoted(second)}: '{name}_2'}}).", column=name)
