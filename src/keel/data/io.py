"""Read CSV, Parquet and JSON Lines files, or take a pandas DataFrame, into one DataFrame shape.

Every reader hands back a DataFrame whose index counts the file's data rows from 0 (so row numbers
in errors, index + 1, are the 1-based data rows of the file) and ``attrs["source"]`` naming where it
came from. ``read_table`` reads a whole table; ``read_chunks`` reads a file a slice of rows at a
time, for files larger than memory, and ``table_size`` says cheaply how large a file's table is.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import pandas as pd
import pyarrow as pa

from keel.data.spelling import column_names
from keel.errors import ConfigError, DataError

TableSource = Union[str, os.PathLike, pd.DataFrame]

_FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".csv.gz": "csv", ".tsv.gz": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
_SAMPLE_BYTES = 1 << 16
# How much of a file's start table_size reads at most (uncompressed) to measure its rows.
_SIZE_SAMPLE_BYTES = 4 << 20

# The cell texts a CSV reader takes as missing values: pandas' default list as of pandas 2-3, written
# out so that it does not move with the pandas version (and so the README can state it exactly).
MISSING_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)


def read_table(source: TableSource, *, delimiter: str | None = None, encoding: str | None = None,
               text: Collection[str] | None = None) -> pd.DataFrame:
    """Read a table from a file or take a DataFrame, checking the things users get wrong.

    Args:
        source: A path to a CSV (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``), Parquet
            (``.parquet``, ``.pq``) or JSON Lines (``.jsonl``, ``.ndjson``, ``.json``) file, or a DataFrame.
        delimiter: CSV delimiter; sniffed from the first lines when None.
        encoding: CSV text encoding; UTF-8 (with or without BOM), else Latin-1, when None.
        text: CSV columns read as written, not parsed as numbers, booleans or dates (``02134`` stays
            ``02134``; ``1`` and ``01`` stay two values; one odd cell cannot retype the rest): the columns a
            model reads as categories, binary values, text or images (:func:`keel.data.schema.written_columns`).
            Other formats keep their own types.

    Returns:
        The table, with a 0..n-1 index and ``attrs["source"]`` set.

    Raises:
        DataError: The file is missing, unreadable, empty, of an unsupported format, or has
            duplicate column names or no rows.
    """
    if isinstance(source, pd.DataFrame):
        return _from_frame(source)
    path = _path_of(source, "a file path or a pandas DataFrame")
    kind = _format_of(path)
    if kind == "csv":
        frame = _read_csv(path, delimiter, encoding, text)
        frame.attrs["csv"] = [delimiter, encoding]  # how to read it again (read_as_written)
    elif kind == "parquet":
        frame = _read_with(path, _parquet_table)
    else:
        frame = _with_dates(_read_with(path, _jsonl_table))  # JSON has no date type: ISO text as in a CSV
    _check_columns(list(frame.columns), path)
    if len(frame) == 0:
        raise _no_rows(path)
    frame.attrs["source"] = str(path)
    return frame


def read_as_written(frame: pd.DataFrame, columns: Collection[str]) -> pd.DataFrame:
    """``frame``, from :func:`read_table`, with the ``columns`` of its CSV as written where pandas parsed them:
    a file read before the schema that says which columns those are (a training run's ``--test`` file, whose
    ``01`` became 1 where the training file's ``x`` had kept its category's text). Other frames as they are."""
    options = frame.attrs.get("csv")
    stale = [name for name in columns if name in frame.columns
             and not (frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name].dtype))]
    if options is None or not stale:
        return frame
    path = Path(frame.attrs["source"])
    layout = _csv_layout(path, *options)
    with _csv_errors(path, layout):
        written = pd.read_csv(path, usecols=stale, dtype={name: str for name in stale}, **layout.options())
    frame = frame.copy()
    for name in stale:
        frame[name] = written[name].to_numpy(dtype=object)[frame.index.to_numpy()]
    return frame


def read_chunks(
    source: str | os.PathLike,
    *,
    rows: int,
    columns: list[str] | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    text: list[str] | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield a file's rows, at most ``rows`` at a time, in file order, parsed as ``read_table`` parses them.

    About one chunk is in memory at a time, so a file larger than memory can be read in one pass.
    Each chunk's index counts the file's data rows from 0 across the whole file (a chunk holds rows
    ``start .. start + n - 1``), so that row numbers in errors name the file's rows, and
    ``attrs["source"]`` is the file's path. Every chunk but the last has exactly ``rows`` rows
    (JSON Lines: fewer where the chunk's lines include blank ones).

    Each chunk's columns are typed on their own, so a column's dtype can differ between chunks where
    the whole table's is one: an integer column with a missing value in one chunk is float64 in that
    chunk only; a CSV column of ISO dates is datetime in a chunk where every value is a date and
    text in one where some are not; a column that is missing throughout a chunk has a missing-value
    dtype there. The values are those of ``read_table``.

    Args:
        source: A path to a CSV (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``), Parquet
            (``.parquet``, ``.pq``) or JSON Lines (``.jsonl``, ``.ndjson``, ``.json``) file.
        rows: The most rows a chunk holds; at least 1.
        columns: Only these columns are read (in the file's order, whatever order they are given
            in); every column when None. Reading fewer columns of a CSV or Parquet file is faster.
        delimiter: CSV delimiter; sniffed from the first lines when None.
        encoding: CSV text encoding; UTF-8 (with or without BOM), else Latin-1, when None.
        text: CSV columns read as text, as written, in every chunk (``00042`` stays ``00042`` even in
            a chunk where every value is digits); other formats keep their file-wide types.
        shard: ``(rank, world)``: only this rank's share of the rows, for data-parallel training.
            A Parquet file gives rank r the rows ``r * n // world`` to ``(r + 1) * n // world`` (only
            the row groups holding them are read; a chunk then never spans two row groups); a CSV or
            JSON Lines file gives rank r chunks r, r + world, ... (the text is still parsed to find
            them, but only those are kept).

    Returns:
        An iterator of DataFrames. The file's path, format, header and the ``columns`` asked for
        (JSON Lines: their presence in the first chunk) are checked when it is called; the rows as
        the chunks are read.

    Raises:
        ConfigError: ``rows`` is not a positive integer.
        DataError: ``source`` is a DataFrame or not a path; the file is missing, unreadable, empty,
            of an unsupported format, has duplicate column names, rows that do not parse, no data
            rows, or lacks a column in ``columns``; a JSON Lines key first appears after the first
            chunk (the columns are fixed by then).

    Example:
        >>> for chunk in read_chunks("big.csv", rows=100_000, columns=["city"]):
        ...     counts.update(chunk["city"].dropna())
    """
    _check_positive(rows, "read_chunks needs rows, the rows per chunk,", "Pass rows=100_000 or so.")
    path = _path_of(source, "a file path")
    kind = _format_of(path)
    sharded = False  # whether the chunks are this rank's alone already
    if kind == "csv":
        layout = _csv_layout(path, delimiter, encoding)
        chunks = _csv_chunks(path, layout, rows, _chosen_columns(columns, layout.header, path), text)
    elif kind == "parquet":
        chunks, sharded = _parquet_chunks(path, rows, columns, shard)
    else:
        chunks = _jsonl_chunks(path, rows, columns)
    return chunks if shard is None or sharded else _every_nth(chunks, *shard)


def _every_nth(chunks: Iterator[pd.DataFrame], rank: int, world: int) -> Iterator[pd.DataFrame]:
    """Chunks rank, rank + world, ...; every chunk is still read (its rows end where the next begins)."""
    for index, chunk in enumerate(chunks):
        if index % world == rank:
            yield chunk


def _check_positive(value: object, what: str, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} as a positive integer; got {value!r}. {hint}")


@dataclass(frozen=True)
class TableSize:
    """How large a file's table is, on disk and as the DataFrame ``read_table`` would make of it.

    Attributes:
        file_bytes: The file's size on disk.
        rows: The number of data rows: exact for Parquet (from its metadata) and for files no larger
            than the sample; otherwise estimated as the (uncompressed) bytes after the header divided
            by the bytes per row of a sample from the file's start.
        exact: Whether ``rows`` is exact.
        row_bytes: The pandas memory one row takes (``memory_usage(deep=True)`` of a sample of rows,
            divided by their number).
    """

    file_bytes: int
    rows: int
    exact: bool
    row_bytes: float

    @property
    def frame_bytes(self) -> float:
        """About the memory ``read_table``'s DataFrame of the whole file takes: rows x row_bytes."""
        return self.rows * self.row_bytes


def table_size(
    source: str | os.PathLike,
    *,
    sample_rows: int = 10_000,
    delimiter: str | None = None,
    encoding: str | None = None,
) -> TableSize:
    """Measure a file's table cheaply: its rows and the memory its DataFrame would take.

    Reads at most the first ``sample_rows`` rows or the first 4 MB (uncompressed), whichever is
    less, and for Parquet the footer's metadata; never the whole file. A gzipped CSV's uncompressed
    size is the gzip trailer's ISIZE (the size modulo 4 GiB) plus the multiple of 4 GiB that brings
    it nearest the compressed size times the sample's compression ratio; where that is less than the
    text read already or than the compressed size, ISIZE was only the last of several gzip members'
    (a concatenated or bgzip file) and the ratio's estimate is taken.

    Args:
        source: A path to a file ``read_table`` reads.
        sample_rows: The most rows to parse for the estimate; at least 1.
        delimiter: CSV delimiter; sniffed from the first lines when None.
        encoding: CSV text encoding; UTF-8 (with or without BOM), else Latin-1, when None.

    Returns:
        The file's size, rows and memory per row.

    Raises:
        ConfigError: ``sample_rows`` is not a positive integer.
        DataError: The file is one ``read_table`` refuses before reading rows (missing, unreadable,
            empty, of an unsupported format, a bad header), its sample does not parse, or it has
            no data rows.
    """
    _check_positive(sample_rows, "table_size needs sample_rows", "Leave it at its default of 10,000.")
    path = _path_of(source, "a file path")
    kind = _format_of(path)
    if kind == "csv":
        return _csv_size(path, _csv_layout(path, delimiter, encoding), sample_rows)
    if kind == "parquet":
        return _parquet_size(path, sample_rows)
    return _jsonl_size(path, sample_rows)


def _path_of(source: object, expected: str) -> Path:
    if isinstance(source, pd.DataFrame):  # read_table takes DataFrames before it gets here
        raise DataError("expected a file path; got a DataFrame, which is in memory already. Pass the path of a "
                        "CSV, Parquet or JSON Lines file (read_table takes a DataFrame).")
    if not isinstance(source, (str, os.PathLike)):
        also = ", or a DataFrame" if "DataFrame" in expected else ""
        raise DataError(f"expected {expected}; got {type(source).__name__}. "
                        f"Pass a path to a CSV, Parquet or JSON Lines file{also}.")
    path = Path(source)
    _check_readable(path)
    return path


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path} has a header but no data rows; add rows or check that you passed the right file.", file=path)


def _chosen_columns(columns: Iterable[str] | None, names: list[str], path: Path) -> list[str] | None:
    """``columns`` checked against the file's ``names`` and put in the file's order; None for every column."""
    if columns is None:
        return None
    if isinstance(columns, str):
        raise DataError(f"columns must be a list of column names; got the string {columns!r}. Pass [{columns!r}].")
    wanted = set(columns)
    if not wanted:
        raise DataError("columns=[] selects no column; name at least one, or pass None to read every column.")
    missing = sorted(wanted.difference(names))
    if missing:
        shown = ", ".join(map(repr, names[:30])) + (", ..." if len(names) > 30 else "")
        raise DataError(f"{path} has no column {', '.join(map(repr, missing))}; its columns are {shown}. "
                        "Check the spelling (names are case-sensitive).", file=path, column=missing[0])
    return [name for name in names if name in wanted]


def _from_frame(frame: pd.DataFrame) -> pd.DataFrame:
    names = column_names(frame.columns)  # 3 is the column "3": keel names columns by text
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
    with _arrow_errors(path):
        table: pa.Table = reader(path)
    return _to_pandas(table, path)


@contextmanager
def _arrow_errors(path: Path, where: str = "") -> Iterator[None]:
    """Arrow's errors reading ``path`` as one-line DataErrors; ``where`` says which part of the file."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError) as error:
        changed = _TYPE_CHANGE.search(str(error))
        if changed:
            raise _type_change(path, changed.group(1)) from None
        raise DataError(f"cannot read {path}{where}: {error}".replace("\n", " "), file=path) from None


# pyarrow.json's "Column(/grade) changed from number to string in row 1" (a row of its block, not of the file).
_TYPE_CHANGE = re.compile(r"Column\(/(.+?)\) changed from \w+ to \w+")


def _type_change(path: Path, column: str) -> DataError:
    """The first line of a JSON Lines file where ``column``'s JSON type differs from its first line's."""
    import json

    def kind(value: Any) -> str:
        return {bool: "true/false", str: "a string", int: "a number", float: "a number", list: "an array",
                dict: "an object"}.get(type(value), type(value).__name__)

    keys = column.split("/")  # pyarrow's path to a key inside objects: "a/b" is b inside a (or a key "a/b")
    name = repr(keys[-1]) + "".join(f" inside {key!r}" for key in reversed(keys[:-1]))
    literal = False  # a key with a "/" in its name, not a path

    def at(document: Any) -> Any:
        nonlocal literal, keys, name
        if isinstance(document, dict) and column in document and len(keys) > 1:
            literal, keys, name = True, [column], repr(column)
        if literal:
            return document.get(column) if isinstance(document, dict) else None
        for key in keys:
            document = document.get(key) if isinstance(document, dict) else None
        return document

    first: tuple[int, str] | None = None
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                value = at(json.loads(line)) if line.strip() else None
            except ValueError:
                continue
            if value is None:
                continue
            if first is None:
                first = (number, kind(value))
            elif kind(value) != first[1]:
                return DataError(
                    f"{path}: key {name} is {kind(value)} on line {number} ({json.dumps(value)[:40]}) but "
                    f"{first[1]} on line {first[0]}; keel reads JSON Lines with each key's own JSON type, one type "
                    f"a key. Write every {keys[-1]!r} value the same way (all strings, or all numbers), or convert "
                    "the file to CSV.", file=path, column=keys[0], row=number)
    return DataError(f"{path}: key {name} changes its JSON type from one line to another; write every value of "
                     "it the same way (all strings, or all numbers), or convert the file to CSV.", file=path,
                     column=keys[0])


def _parquet_table(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _jsonl_table(path: Path) -> pa.Table:
    import pyarrow.json as pj

    return pj.read_json(path)


def _to_pandas(table: pa.Table, path: Path | None, start: int = 0) -> pd.DataFrame:
    """``table`` as a DataFrame indexed ``start .. start + n - 1``: rows numbered as in the file."""
    _check_columns(table.column_names, path)
    # Release Arrow buffers column by column as pandas takes them: peak memory stays near one copy.
    # date_as_object=False: a Parquet DATE column becomes datetime64, a date keel reads, not Python objects.
    frame = table.to_pandas(split_blocks=True, self_destruct=True, date_as_object=False)
    del table
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame


def _parquet_chunks(path: Path, rows: int, columns: list[str] | None,
                    shard: tuple[int, int] | None = None) -> tuple[Iterator[pd.DataFrame], bool]:
    """The chunks, and whether they are ``shard``'s row groups alone (a file with enough row groups)."""
    with _arrow_errors(path):
        parquet = _parquet_file(path)
    try:
        schema = parquet.schema_arrow
        _check_columns(schema.names, path)
        # A DataFrame's index saved by pandas is a column of the file that read_table's frame does not have.
        index = {name for name in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(name, str)}
        chosen = _chosen_columns(columns, [name for name in schema.names if name not in index], path)
        if parquet.metadata.num_rows == 0:
            raise _no_rows(path)
    except DataError:
        parquet.close()
        raise
    if shard is not None:
        return _parquet_range(path, parquet, rows, chosen, *shard), True
    return _parquet_frames(path, parquet, rows, chosen), False


def _parquet_range(path: Path, parquet: Any, rows: int, columns: list[str] | None, rank: int,
                   world: int) -> Iterator[pd.DataFrame]:
    """Rows ``rank * n // world`` to ``(rank + 1) * n // world`` in chunks of at most ``rows`` rows,
    numbered as in the file; only the row groups that hold them are read."""
    total = parquet.metadata.num_rows
    first, last = rank * total // world, (rank + 1) * total // world
    sizes = [parquet.metadata.row_group(index).num_rows for index in range(parquet.num_row_groups)]
    starts = [0, *itertools.accumulate(sizes)]
    with parquet:
        for group, size in enumerate(sizes):
            begin, end = max(first, starts[group]), min(last, starts[group] + size)
            if begin >= end:
                continue
            position = starts[group]
            batches = _guarded(parquet.iter_batches(batch_size=rows, row_groups=[group], columns=columns), path)
            for batch in batches:
                low, high = max(begin - position, 0), min(end - position, batch.num_rows)
                if high > low:
                    frame = _to_pandas(pa.Table.from_batches([batch.slice(low, high - low)]), path, position + low)
                    frame.attrs["source"] = str(path)
                    yield frame
                position += batch.num_rows
                if position >= end:
                    break


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    # Read as the batches need, not pre-buffered: pre-buffering iter_batches read every row group's
    # column chunks ahead, 146 MB of Arrow memory for a 123 MB file, against 29 MB without (speed the same).
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def _parquet_frames(path: Path, parquet: Any, rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    start = 0
    with parquet:
        # iter_batches ends a batch at each row group's end; the batches are cut and joined again
        # so that every chunk but the last has ``rows`` rows, whatever the row groups' size.
        batches = _guarded(parquet.iter_batches(batch_size=rows, columns=columns), path)
        for group in _rebatch(batches, rows):
            frame = _to_pandas(pa.Table.from_batches(group), path, start)
            frame.attrs["source"] = str(path)
            start += len(frame)
            yield frame


def _guarded(items: Iterator[Any], path: Path) -> Iterator[Any]:
    """``items`` with Arrow's errors in reading each one as DataErrors."""
    while True:
        with _arrow_errors(path):
            item = next(items, None)
        if item is None:
            return
        yield item


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[list[pa.RecordBatch]]:
    """``batches`` regrouped into lists of ``rows`` rows (the last may have fewer); slices copy nothing."""
    group: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            group.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield group
                group, count = [], 0
    if count:
        yield group


def _jsonl_chunks(path: Path, rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    import pyarrow.json as pj

    # Lines parsed ``rows`` at a time by the parser read_table uses, rather than by pyarrow's
    # streaming open_json: that one fixes every column's type from its first block and fails on a
    # later row whose type differs (a key null so far then text), where read_json takes both.
    names: list[str] = []  # the columns, as the first chunk has them
    dtypes: dict[str, Any] = {}
    start, line = 0, 1
    with open(path, "rb") as handle:
        while lines := list(itertools.islice(handle, rows)):
            where = f" (lines {line}-{line + len(lines) - 1})"
            line += len(lines)
            with _arrow_errors(path, where):
                table = pj.read_json(io.BytesIO(b"".join(lines)))
            del lines
            if table.num_rows == 0:  # blank lines only
                continue
            _check_columns(table.column_names, path)
            if not names:
                names = _chosen_columns(columns, table.column_names, path) or table.column_names
            elif columns is None and not set(table.column_names) <= set(names):
                raise _late_keys([name for name in table.column_names if name not in names], path, where)
            frame = _with_dates(_to_pandas(table.select([name for name in names if name in table.column_names]),
                                           path, start))
            dtypes = dtypes or dict(frame.dtypes)
            frame = _with_columns(frame, names, dtypes)
            frame.attrs["source"] = str(path)
            start += len(frame)
            yield frame
    if not names:
        raise _no_rows(path)


def _late_keys(keys: list[str], path: Path, where: str) -> DataError:
    return DataError(
        f"{path}{where} has key(s) {', '.join(map(repr, keys[:10]))} that no row of the first chunk has; a file "
        "read in chunks has its columns fixed by its first chunk. Give the first row every key (null where it has "
        "no value), or convert the file to Parquet or CSV.", file=path, column=keys[0])


def _with_columns(frame: pd.DataFrame, names: list[str], dtypes: dict[str, Any]) -> pd.DataFrame:
    """``frame`` with every one of ``names``, in that order: a key no row of the chunk has is a
    column of missing values (float64 where the first chunk's column was numeric or boolean)."""
    if list(frame.columns) == names:
        return frame
    for name in names:
        if name not in frame.columns:
            dtype = dtypes.get(name, "object")
            dtype = "float64" if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype) else dtype
            frame[name] = pd.Series(index=frame.index, dtype=dtype)
    return frame[names]


@dataclass(frozen=True)
class _CsvLayout:
    """What a CSV file's first lines say about it: how to split it, decode it, and its columns."""

    delimiter: str
    encoding: str  # as the user would write it: "utf-8" reads a file with or without a BOM
    header: list[str]

    def options(self) -> dict[str, Any]:
        """The ``pd.read_csv`` arguments every read of the file uses."""
        return dict(sep=self.delimiter, encoding="utf-8-sig" if self.encoding == "utf-8" else self.encoding,
                    # the header was checked already; pandas would rename a duplicate "a" to "a.1"
                    header=0, names=self.header, index_col=False, skip_blank_lines=True,
                    na_values=list(MISSING_VALUES), keep_default_na=False)


# pandas' C parser, not pyarrow's: on this project's 2-core machine, reading a 1M x 50 CSV in a
# fresh process took 1.0-1.2 s with pandas against 2.2-3.9 s with pyarrow, whose parsed chunks
# must then be concatenated into a second table-sized copy for pandas.
def _read_csv(path: Path, delimiter: str | None, encoding: str | None,
              text: Collection[str] | None = None) -> pd.DataFrame:
    layout = _csv_layout(path, delimiter, encoding)
    written = [name for name in text or () if name in layout.header]
    with _csv_errors(path, layout):
        frame = pd.read_csv(path, dtype={name: str for name in written} or None, **layout.options())
    return _with_dates(frame, keep=written)


def _csv_chunks(path: Path, layout: _CsvLayout, rows: int, columns: list[str] | None,
                text: list[str] | None = None) -> Iterator[pd.DataFrame]:
    dtype = {name: str for name in text or [] if name in layout.header}
    with _csv_errors(path, layout):
        reader = pd.read_csv(path, chunksize=rows, usecols=columns, dtype=dtype or None, **layout.options())
    start = 0
    with reader:
        while True:
            # Errors are translated around each read only: a generator must not hold the warning
            # filters of _csv_errors while it is suspended in its caller's code.
            with _csv_errors(path, layout):
                frame = next(reader, None)
            if frame is None or len(frame) == 0:
                break
            frame.index = pd.RangeIndex(start, start + len(frame))
            frame.attrs["source"] = str(path)
            start += len(frame)
            yield _with_dates(frame, keep=text)
    if start == 0:
        raise _no_rows(path)


def _csv_layout(path: Path, delimiter: str | None, encoding: str | None) -> _CsvLayout:
    """The file's delimiter, encoding and header, from its first 64 KB, after checking the header
    and the rows that are cheap to check (those of the sample and the last line)."""
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
    for position, (number, row) in enumerate(numbered, start=1):
        # Longer: pandas' own message names no content. One empty field more is a trailing delimiter, which
        # pandas drops (index_col=False): read as before.
        trailing = len(row) == len(header) + 1 and row[-1] == ""
        if row and len(row) != len(header) and not trailing:
            where = f"line {number}" if number else "the last line"
            last = not number or (whole and position == len(numbered))  # only a last line is cut off by a write
            short = "(the file may be truncated)" if last else "(a value missing, or a delimiter too few?)"
            raise DataError(
                f"cannot parse {path} as CSV: {where} has {len(row)} field(s) where the header has {len(header)} "
                f"({delimiter.join(row)[:80]!r}). Check that every row has as many fields as the header "
                + (short if len(row) < len(header) else f"(a value with an unquoted {delimiter!r} in it?)")
                + _not_a_table(header, delimiter) + ", or pass the right delimiter.",
                file=path)
    return _CsvLayout(delimiter, encoding, header)


def _not_a_table(header: list[str], delimiter: str) -> str:
    """A hint for a header of one field: the file may not be a table at all (prose, a binary file)."""
    return (f"; its header has one field, so it may not be a table separated by {delimiter!r} at all"
            if len(header) == 1 else "")


@contextmanager
def _csv_errors(path: Path, layout: _CsvLayout) -> Iterator[None]:
    """pandas' errors and warnings parsing ``path`` as one-line DataErrors that say how to fix them."""
    delimiter, header = layout.delimiter, layout.header
    try:
        with warnings.catch_warnings():
            # Columns whose chunks parsed to different types come back as object columns, which
            # the schema reads value by value; the warning would only alarm.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            # Rows longer than the header: an error, not an index column made of their first fields.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            yield
    except pd.errors.ParserWarning:
        raise DataError(
            f"cannot parse {path} as CSV with delimiter {delimiter!r}: the data rows have more fields than the "
            f"header's {len(header)}. Check that every row has as many fields as the header"
            + _not_a_table(header, delimiter) + ", or pass the right delimiter.", file=path) from None
    except (EOFError, zlib.error) as error:  # a .gz file cut short or damaged past the sample
        raise DataError(f"cannot read {path}: {error}. The gzip file is cut short or damaged; copy or download "
                        "it again.", file=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError, ValueError) as error:
        message = str(error).replace("\n", " ").strip()
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
        if fields:  # a long row past the sample that the layout checked: said as the layout's check says it
            expected, line, saw = fields.groups()
            raise DataError(
                f"cannot parse {path} as CSV: line {line} has {saw} field(s) where the header has {expected}. Check "
                f"that every row has as many fields as the header (a value with an unquoted {delimiter!r} in it?)"
                + _not_a_table(header, delimiter) + ", or pass the right delimiter.", file=path) from None
        raise DataError(
            f"cannot parse {path} as CSV with delimiter {delimiter!r} and encoding {layout.encoding}: {message}. "
            "Check that every row has as many fields as the header, or pass the right delimiter/encoding.",
            file=path,
        ) from None


def _with_dates(frame: pd.DataFrame, keep: list[str] | None = None) -> pd.DataFrame:
    """ISO 8601 text columns as datetimes, but for the ``keep`` columns (read as written on purpose)."""
    for name in frame.columns:
        if keep and name in keep:
            continue
        column = frame[name]
        if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            dates = _iso_dates(column)
            if dates is not column:
                frame[name] = dates
    return frame


def _parquet_size(path: Path, sample_rows: int) -> TableSize:
    with _arrow_errors(path), _parquet_file(path) as parquet:
        total = parquet.metadata.num_rows
        batches = parquet.iter_batches(batch_size=min(sample_rows, total)) if total else iter(())
        batch = next(batches, None)
    if batch is None:
        raise _no_rows(path)
    frame = _to_pandas(pa.Table.from_batches([batch]), path)
    return TableSize(path.stat().st_size, total, True, _row_bytes(frame))


def _csv_size(path: Path, layout: _CsvLayout, sample_rows: int) -> TableSize:
    head, ends, text_bytes = _sample(path, lambda head: _csv_row_ends(head, layout, sample_rows))
    with _csv_errors(path, layout):
        frame = _with_dates(pd.read_csv(io.BytesIO(head[: ends[-1]]), **layout.options()))
    return _estimate(path, frame, head, ends, text_bytes)


def _csv_row_ends(head: bytes, layout: _CsvLayout, sample_rows: int) -> list[int]:
    """The byte offsets in ``head`` where the header and each of its first ``sample_rows`` rows end."""
    used = 0

    def lines() -> Iterator[str]:
        nonlocal used
        # The csv module reads exactly the lines of the row it returns: ``used`` is then where the row ends.
        for line in io.BytesIO(head):
            used += len(line)
            yield line.decode(layout.encoding, errors="replace")

    ends: list[int] = []
    try:
        for row in csv.reader(lines(), delimiter=layout.delimiter):
            if row:  # blank lines are no rows, as in pandas
                ends.append(used)
            if len(ends) > sample_rows:
                break
    except csv.Error:  # e.g. a bare carriage return: the rows read so far are the sample
        pass
    return ends


def _jsonl_size(path: Path, sample_rows: int) -> TableSize:
    import pyarrow.json as pj

    def line_ends(head: bytes) -> list[int]:
        ends = [0]  # no header: the "header" ends where the file starts
        for line in itertools.islice(io.BytesIO(head), sample_rows):
            ends.append(ends[-1] + len(line))
        return ends

    head, ends, text_bytes = _sample(path, line_ends)
    with _arrow_errors(path):
        table = pj.read_json(io.BytesIO(head[: ends[-1]]))
    return _estimate(path, _to_pandas(table, path), head, ends, text_bytes)


def _sample(path: Path, row_ends: Callable[[bytes], list[int]]) -> tuple[bytes, list[int], int]:
    """The file's first bytes of text, where its header and the sample's rows end in them (by
    ``row_ends``), and the size of the file's text in bytes."""
    limit = _SIZE_SAMPLE_BYTES
    while True:
        head, whole, text_bytes = _head(path, limit)
        ends = row_ends(head)
        if not whole and len(ends) > 1 and ends[-1] == len(head):
            ends.pop()  # the last row runs to where the sample stops: it may go on after it
        if len(ends) > 1 or whole:
            return head, ends or [0], text_bytes
        if limit >= _SIZE_SAMPLE_BYTES * 16:  # 64 MB and not one row: not a sample of rows
            raise DataError(f"cannot measure {path}: no row ends in its first {limit >> 20} MB. Check the file's "
                            "quoting (a quote opened and never closed?) or its delimiter.", file=path)
        limit *= 4  # a row longer than the sample: a rare file, read more of it


def _estimate(path: Path, frame: pd.DataFrame, head: bytes, ends: list[int], text_bytes: int) -> TableSize:
    """The size of a table whose text is ``text_bytes`` long, from ``frame``, parsed from the rows
    of ``head`` between the header's end ``ends[0]`` and ``ends[-1]``."""
    if len(frame) == 0:
        raise _no_rows(path)
    header, sample = ends[0], ends[-1]
    exact = len(head) == text_bytes and not head[sample:].strip()  # the sample is every row of the file
    rows = len(frame) if exact else max(len(frame), round((text_bytes - header) * len(frame) / (sample - header)))
    return TableSize(path.stat().st_size, rows, exact, _row_bytes(frame))


def _row_bytes(frame: pd.DataFrame) -> float:
    return float(frame.memory_usage(index=False, deep=True).sum()) / len(frame)


def _head(path: Path, limit: int) -> tuple[bytes, bool, int]:
    """The file's first ``limit`` bytes of text at least (uncompressed), whether they are the whole
    text, and the text's size in bytes (estimated for a gzipped file that is not whole)."""
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            head = handle.read(limit)
        size = path.stat().st_size
        return head, len(head) == size, size
    head, used, whole = _gzip_head(path, limit)
    if whole:
        return head, True, len(head)
    compressed = path.stat().st_size
    by_ratio = compressed * len(head) / used
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        isize = int.from_bytes(handle.read(4), "little")  # the last member's size modulo 2**32
    candidate = isize + max(0, round((by_ratio - isize) / 2**32)) * 2**32
    # Less than what was read already, or than the compressed size (text does not grow in gzip):
    # ISIZE is a last gzip member's (concatenated or bgzip files), and the ratio is the better guess.
    plausible = candidate >= max(len(head), compressed)
    return head, False, round(candidate if plausible else by_ratio)


def _gzip_head(path: Path, limit: int) -> tuple[bytes, int, bool]:
    """At least ``limit`` uncompressed bytes from the start of a gzip file (all of it if smaller), the
    compressed bytes they came from, and whether they are the whole file."""
    out = bytearray()
    used = 0
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    fed = False  # whether the current gzip member has had any bytes
    with open(path, "rb") as handle:
        while len(out) < limit and (block := handle.read(1 << 14)):
            used += len(block)
            # Every block is decompressed whole, so ``out`` is exactly what ``used`` bytes hold.
            while block:
                if not fed:  # zeros may pad a file after a gzip member, as Python's gzip module allows
                    block = block.lstrip(b"\0")
                    if not block:
                        break
                fed = True
                try:
                    out += decompressor.decompress(block)
                except zlib.error as error:
                    raise DataError(f"cannot read {path}: it is not a valid gzip file ({error}).", file=path) from None
                block = decompressor.unused_data if decompressor.eof else b""
                if decompressor.eof:  # a file of several gzip members: the next one starts here
                    decompressor, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
        whole = not handle.read(1)
    if whole and fed:
        raise DataError(f"cannot read {path}: the gzip file ends in the middle of its data. It is cut short; copy or "
                        "download it again.", file=path)
    return bytes(out), used, whole


# ISO 8601 dates and times, the text forms a CSV writer gives datetimes: 2024-05-01, 2024-05-01 13:45,
# 2024-05-01T13:45:10.5+02:00. Columns holding only these are read as datetimes, as Parquet keeps them.
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")


def _iso_dates(column: pd.Series) -> pd.Series:
    first = column.first_valid_index()  # one value decides for most columns, without a copy
    if first is None or not isinstance(column[first], str) or not ISO_DATE.fullmatch(column[first]):
        return column
    present = column.dropna()
    if not present.astype(str).str.fullmatch(ISO_DATE.pattern).all():
        return column
    try:
        return pd.to_datetime(column, format="ISO8601")
    except (ValueError, OverflowError):
        pass
    try:  # offsets that differ (+01:00 in winter, +02:00 in summer): one instant each, in UTC
        return pd.to_datetime(column, format="ISO8601", utc=True)
    except (ValueError, OverflowError):  # 2024-13-45 looks like a date and is not one: keep the text
        return column


def _last_line(path: Path, delimiter: str, encoding: str) -> list[tuple[int, list[str]]]:
    """The last non-blank line of an uncompressed file longer than the sample, as ``[(0, fields)]``,
    when it is plainly a row of its own (no quotes: a quoted field may span lines)."""
    with open(path, "rb") as handle:
        handle.seek(-4096, os.SEEK_END)
        text = handle.read().decode(encoding, errors="replace").rstrip("\r\n")
    lines = re.split(r"\r\n|\r|\n", text)  # a bare carriage return ends a line too, as in pandas' parser
    tail = lines[-1]
    # One line filling the whole window may have begun before it (a row of over 4 KB): not checkable here.
    if len(lines) == 1 or '"' in tail or not tail.strip():
        return []
    return [(0, tail.split(delimiter))]


def _sample_text(path: Path, encoding: str | None) -> tuple[str, str]:
    opener = _gzip_open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read(_SAMPLE_BYTES)
    except (OSError, EOFError, zlib.error) as error:  # gzip's errors: not gzip, or cut short
        raise DataError(f"cannot read {path}: {error}. Check that the file is whole (a .gz name needs gzip content).",
                        file=path) from None
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


def writable(path: str | os.PathLike) -> str:
    """The format ``write_table`` writes ``path`` in (by its extension): check it before the work that fills it.

    Raises:
        DataError: The extension is not one of .csv, .parquet, .pq, .jsonl.
    """
    target = Path(path)
    kind = _WRITERS.get(target.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot write {target}: unsupported extension {target.suffix or '(none)'!r}; "
            f"use one of {', '.join(_WRITERS)}.", file=target)
    return kind


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV, Parquet or JSON Lines (by extension), atomically (temp file + rename).

    Raises:
        DataError: The extension is not one of .csv, .parquet, .pq, .jsonl, or the file cannot be written.
    """
    target = Path(path)
    kind = writable(target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "csv":
            frame.to_csv(staging, index=False)
        elif kind == "parquet":
            frame.to_parquet(staging, index=False)
        else:
            # pandas rounds to 10 decimals by default (a probability of 0.0042559257): 15 is the most it writes.
            frame.to_json(staging, orient="records", lines=True, double_precision=15)
        os.replace(staging, target)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise DataError(f"cannot write {target}: {error.strerror or error}.", file=target) from None
    return target
