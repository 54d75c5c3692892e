"""Read CSV, Parquet and JSON Lines files, or take a pandas DataFrame, into one DataFrame shape.

Every reader hands back a DataFrame with a fresh 0..n-1 index (so row numbers in errors are the
1-based data rows of the file) and ``attrs["source"]`` naming where it came from.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Union

import pandas as pd
import pyarrow as pa

from keel.errors import DataError

TableSource = Union[str, os.PathLike, pd.DataFrame]

_FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".csv.gz": "csv", ".tsv.gz": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
_SAMPLE_BYTES = 1 << 16

# The cell texts a CSV reader takes as missing values: pandas' default list as of pandas 2-3, written
# out so that it does not move with the pandas version (and so the README can state it exactly).
MISSING_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)


def read_table(source: TableSource, *, delimiter: str | None = None, encoding: str | None = None) -> pd.DataFrame:
    """Read a table from a file or take a DataFrame, checking the things users get wrong.

    Args:
        source: A path to a CSV (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``), Parquet
            (``.parquet``, ``.pq``) or JSON Lines (``.jsonl``, ``.ndjson``, ``.json``) file, or a DataFrame.
        delimiter: CSV delimiter; sniffed from the first lines when None.
        encoding: CSV text encoding; UTF-8 (with or without BOM), else Latin-1, when None.

    Returns:
        The table, with a 0..n-1 index and ``attrs["source"]`` set.

    Raises:
        DataError: The file is missing, unreadable, empty, of an unsupported format, or has
            duplicate column names or no rows.
    """
    if isinstance(source, pd.DataFrame):
        return _from_frame(source)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"expected a file path or a pandas DataFrame; got {type(source).__name__}. "
            "Pass a path to a CSV, Parquet or JSON Lines file, or a DataFrame."
        )
    path = Path(source)
    _check_readable(path)
    kind = _format_of(path)
    if kind == "csv":
        frame = _read_csv(path, delimiter, encoding)
    elif kind == "parquet":
        frame = _read_with(path, _parquet_table)
    else:
        frame = _read_with(path, _jsonl_table)
    _check_columns(list(frame.columns), path)
    if len(frame) == 0:
        raise DataError(f"{path} has a header but no data rows; add rows or check that you passed the right file.", file=path)
    frame.attrs["source"] = str(path)
    return frame


def _from_frame(frame: pd.DataFrame) -> pd.DataFrame:
    names = [str(name) for name in frame.columns]
    _check_columns(names, None)
    if len(frame) == 0:
        raise DataError("the DataFrame has no rows; pass a DataFrame with data in it.")
    # A shallow copy with a clean index: row numbers in messages then count from 1 like a file's.
    out = frame.copy(deep=False)
    out.columns = names
    out.index = pd.RangeIndex(len(out))
    out.attrs = {"source": frame.attrs.get("source", "DataFrame")}
    return out


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return _FORMATS[suffix]
    supported = ", ".join(sorted(_FORMATS))
    raise DataError(
        f"{path} has an unsupported format {path.suffix or '(no extension)'!r}; "
        f"keel reads files ending in {supported}. Convert the file or rename it if its content is one of these.",
        file=path,
    )


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path (working directory: {Path.cwd()}).", file=path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file; pass the file inside it.", file=path)
    if not os.access(path, os.R_OK):
        raise DataError(f"{path} is not readable (permission denied); fix its permissions.", file=path)
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes); it needs a header line and data rows.", file=path)


def _check_columns(names: list[str], path: Path | None) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        where = f"{path} has" if path else "the DataFrame has"
        raise DataError(
            f"{where} duplicate column names {duplicates}; every column needs a unique name. Rename them.",
            file=path,
        )


def _read_with(path: Path, reader: Callable[[Path], pa.Table]) -> pd.DataFrame:
    try:
        table: pa.Table = reader(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}".replace("\n", " "), file=path) from None
    return _to_pandas(table)


def _parquet_table(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _jsonl_table(path: Path) -> pa.Table:
    import pyarrow.json as pj

    return pj.read_json(path)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    _check_columns(table.column_names, None)
    # Release Arrow buffers column by column as pandas takes them: peak memory stays near one copy.
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    frame.index = pd.RangeIndex(len(frame))
    return frame


def _read_csv(path: Path, delimiter: str | None, encoding: str | None) -> pd.DataFrame:
    # pandas' C parser, not pyarrow's: on this project's 2-core machine, reading a 1M x 50 CSV in a
    # fresh process took 1.0-1.2 s with pandas against 2.2-3.9 s with pyarrow, whose parsed chunks
    # must then be concatenated into a second table-sized copy for pandas.
    sample = _sample_text(path, encoding)
    encoding = encoding or sample[1]
    text = sample[0]
    if not text.strip():
        raise DataError(f"{path} holds only blank lines; it needs a header line and data rows.", file=path)
    delimiter = delimiter or _sniff_delimiter(text, path)
    # newline="": a bare carriage return ends a line here as it does in pandas' parser, rather than
    # being a "new-line character seen in unquoted field" error of the csv module.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        numbered = [(reader.line_num, row) for row in reader]  # (last line number of the row, fields)
    except csv.Error as error:
        raise DataError(f"cannot parse {path} as CSV with delimiter {delimiter!r}: line {reader.line_num}: {error}. "
                        "Check the file's quoting (a quote opened and never closed?), or pass the right delimiter.",
                        file=path) from None
    header = numbered[0][1] if numbered else []
    _check_columns(header, path)
    # pandas' parser stops at a row with too many fields but fills a short one with missing values.
    # Short rows are caught where they usually are: in the sample (whose last row may be cut off
    # unless the sample is the whole file) and on a last line cut short by an interrupted write.
    compressed = path.name.lower().endswith(".gz")
    whole = not compressed and path.stat().st_size <= _SAMPLE_BYTES
    numbered = numbered[1:] if whole else numbered[1:-1]
    if not compressed and not whole:
        numbered += _last_line(path, delimiter, encoding)
    for number, row in numbered:
        if row and len(row) < len(header):
            where = f"line {number}" if number else "the last line"
            raise DataError(
                f"cannot parse {path} as CSV: {where} has {len(row)} field(s) where the header has {len(header)} "
                f"({delimiter.join(row)[:80]!r}). Check that every row has as many fields as the header "
                "(the file may be truncated), or pass the right delimiter.", file=path)
    try:
        with warnings.catch_warnings():
            # Columns whose chunks parsed to different types come back as object columns, which
            # the schema reads value by value; the warning would only alarm.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            # Rows longer than the header: an error, not an index column made of their first fields.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig" if encoding == "utf-8" else encoding,
                                # the header was checked above; pandas would rename a duplicate "a" to "a.1"
                                header=0, names=header, index_col=False, skip_blank_lines=True,
                                na_values=list(MISSING_VALUES), keep_default_na=False)
    except pd.errors.ParserWarning:
        raise DataError(
            f"cannot parse {path} as CSV with delimiter {delimiter!r}: the data rows have more fields than the "
            f"header's {len(header)}. Check that every row has as many fields as the header, or pass the right "
            "delimiter.", file=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError, ValueError) as error:
        message = str(error).replace("\n", " ").strip()
        raise DataError(
            f"cannot parse {path} as CSV with delimiter {delimiter!r} and encoding {encoding}: {message}. "
            "Check that every row has as many fields as the header, or pass the right delimiter/encoding.",
            file=path,
        ) from None
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            dates = _iso_dates(column)
            if dates is not column:
                frame[name] = dates
    return frame


# ISO 8601 dates and times, the text forms a CSV writer gives datetimes: 2024-05-01, 2024-05-01 13:45,
# 2024-05-01T13:45:10.5+02:00. Columns holding only these are read as datetimes, as Parquet keeps them.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")


def _iso_dates(column: pd.Series) -> pd.Series:
    first = column.first_valid_index()  # one value decides for most columns, without a copy
    if first is None or not isinstance(column[first], str) or not _ISO_DATE.fullmatch(column[first]):
        return column
    present = column.dropna()
    if not present.astype(str).str.fullmatch(_ISO_DATE.pattern).all():
        return column
    try:
        return pd.to_datetime(column, format="ISO8601")
    except (ValueError, OverflowError):  # 2024-13-45 looks like a date and is not one: keep the text
        return column


def _last_line(path: Path, delimiter: str, encoding: str) -> list[tuple[int, list[str]]]:
    """The last non-blank line of an uncompressed file longer than the sample, as ``[(0, fields)]``,
    when it is plainly a row of its own (no quotes: a quoted field may span lines)."""
    with open(path, "rb") as handle:
        handle.seek(-4096, os.SEEK_END)
        tail = handle.read().decode(encoding, errors="replace").rstrip("\r\n").rsplit("\n", 1)[-1]
    if '"' in tail or not tail.strip():
        return []
    return [(0, tail.rstrip("\r").split(delimiter))]


def _sample_text(path: Path, encoding: str | None) -> tuple[str, str]:
    opener = _gzip_open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(_SAMPLE_BYTES)
    candidates = [encoding] if encoding else ["utf-8", "latin-1"]
    for candidate in candidates:
        try:
            decoder = codecs.getincrementaldecoder(candidate)()
        except LookupError:
            raise DataError(f"unknown encoding {candidate!r}; use a Python codec name such as utf-8 or latin-1.") from None
        try:
            text = decoder.decode(raw, final=len(raw) < _SAMPLE_BYTES)
        except UnicodeDecodeError:
            continue
        # A whole sample may end mid-line; only complete lines are used for sniffing.
        if len(raw) == _SAMPLE_BYTES and "\n" in text:
            text = text[: text.rindex("\n")]
        return text.lstrip("\ufeff"), "utf-8" if candidate == "utf-8" else candidate
    raise DataError(f"{path} is not text in encoding {encoding}; pass the file's encoding.", file=path)


def _gzip_open(path: Path, mode: str) -> Any:
    import gzip

    return gzip.open(path, mode)


def _sniff_delimiter(text: str, path: Path) -> str:
    if path.name.lower().endswith((".tsv", ".tsv.gz")):
        return "\t"
    lines = text.splitlines()[:50]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


_WRITERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV, Parquet or JSON Lines (by extension), atomically (temp file + rename).

    Raises:
        DataError: The extension is not one of .csv, .parquet, .pq, .jsonl, or the file cannot be written.
    """
    target = Path(path)
    kind = _WRITERS.get(target.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot write {target}: unsupported extension {target.suffix or '(none)'!r}; "
            f"use one of {', '.join(_WRITERS)}.", file=target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "csv":
            frame.to_csv(staging, index=False)
        elif kind == "parquet":
            frame.to_parquet(staging, index=False)
        else:
            frame.to_json(staging, orient="records", lines=True)
        os.replace(staging, target)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise DataError(f"cannot write {target}: {error.strerror or error}.", file=target) from None
    return target
