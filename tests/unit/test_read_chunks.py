"""read_chunks reads what read_table reads, a slice of rows at a time; table_size measures a file cheaply."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from keel.data.io import TableSize, read_chunks, read_table, table_size, write_table
from keel.errors import ConfigError, DataError


def _chunks(path, rows: int, **options) -> list[pd.DataFrame]:
    """read_chunks' chunks, after checking what every chunk promises: at most ``rows`` rows (all but
    the last exactly ``rows``), indices that count the file's rows across chunks, the source."""
    chunks = list(read_chunks(path, rows=rows, **options))
    assert chunks and all(len(chunk) == rows for chunk in chunks[:-1]) and 0 < len(chunks[-1]) <= rows
    start = 0
    for chunk in chunks:
        assert isinstance(chunk.index, pd.RangeIndex)
        assert (chunk.index.start, chunk.index.stop) == (start, start + len(chunk))
        assert chunk.attrs["source"] == str(path)
        start += len(chunk)
    return chunks


def _mixed(n: int, seed: int = 0) -> pd.DataFrame:
    """Numbers with missing values in every stretch of rows, text with commas, quotes, newlines,
    accents and missing values, integers and ISO dates."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x": rng.normal(size=n).round(6),
        "k": rng.integers(0, 1000, n),
        "s": rng.choice(["alpha", "b, with comma", 'say "hi"', "two\nlines", "Málaga"], n),
        "day": pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
    })
    frame.loc[::7, "x"] = np.nan
    frame.loc[3::11, "s"] = None
    return frame


@pytest.mark.parametrize("name, write", [
    ("plain.csv", lambda frame, path: frame.to_csv(path, index=False)),
    ("bom.csv", lambda frame, path: path.write_bytes(frame.to_csv(index=False).encode("utf-8-sig"))),
    ("latin.csv", lambda frame, path: frame.to_csv(path, index=False, encoding="latin-1")),
    ("crlf.csv", lambda frame, path: frame.to_csv(path, index=False, lineterminator="\r\n")),
    ("semicolon.csv", lambda frame, path: frame.to_csv(path, index=False, sep=";")),
    ("tabs.tsv", lambda frame, path: frame.to_csv(path, index=False, sep="\t")),
    ("zipped.csv.gz", lambda frame, path: frame.to_csv(path, index=False, compression="gzip")),
    ("table.parquet", lambda frame, path: frame.to_parquet(path, index=False, row_group_size=30)),
    ("lines.jsonl", lambda frame, path: write_table(frame, path)),
])
def test_chunks_put_together_are_read_table_exactly(tmp_path, name, write) -> None:
    path = tmp_path / name
    write(_mixed(200), path)
    whole = read_table(path)
    # 45 rows a chunk: not a multiple of the Parquet file's 30-row groups
    chunks = _chunks(path, 45)
    assert [len(chunk) for chunk in chunks] == [45, 45, 45, 45, 20]
    together = pd.concat(chunks)
    together.attrs = whole.attrs
    pd.testing.assert_frame_equal(together, whole)
    if name.endswith(("csv", "tsv", "gz")):
        assert pd.api.types.is_datetime64_any_dtype(chunks[-1]["day"])  # ISO dates converted chunk by chunk
        assert whole["s"].iloc[3] is None or pd.isna(whole["s"].iloc[3])
        assert "two\nlines" in set(whole["s"])  # the quoted newline is inside a value, not a row break


def test_a_column_is_typed_chunk_by_chunk_and_its_values_stay_those_of_read_table(tmp_path) -> None:
    path = tmp_path / "late.csv"
    path.write_text("n,day,word\n" + "".join(f"{i},2024-01-{i % 28 + 1:02d},w{i}\n" for i in range(40))
                    + "\n".join(["41,,w41", "42,not a date,w42", ",2024-02-01,w43"]) + "\n")
    whole = read_table(path)
    first, last = _chunks(path, 40)
    # an integer column with a missing value only in the last chunk is float64 there alone;
    # a column of dates with a text in the last chunk is text there and in read_table's frame
    assert first["n"].dtype == np.int64 and last["n"].dtype == np.float64 and whole["n"].dtype == np.float64
    assert pd.api.types.is_datetime64_any_dtype(first["day"]) and not pd.api.types.is_datetime64_any_dtype(last["day"])
    assert pd.concat([first, last])["n"].tolist()[:-1] == whole["n"].tolist()[:-1] and pd.isna(last["n"].iloc[-1])
    assert first["day"].dt.strftime("%Y-%m-%d").tolist() == whole["day"].tolist()[:40]
    assert last["day"].tolist()[1:] == whole["day"].tolist()[41:] and pd.isna(last["day"].iloc[0])


@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "t.jsonl"])
def test_columns_reads_only_those_in_the_files_order(tmp_path, name) -> None:
    path = tmp_path / name
    write_table(_mixed(100), path)
    whole = read_table(path)
    chunks = _chunks(path, 30, columns=["day", "x"])
    assert all(list(chunk.columns) == ["x", "day"] for chunk in chunks)
    together = pd.concat(chunks)
    together.attrs = whole.attrs
    pd.testing.assert_frame_equal(together, whole[["x", "day"]])
    with pytest.raises(DataError, match=r"has no column 'X', 'y'; its columns are 'x', 'k', 's', 'day'") as error:
        list(read_chunks(path, rows=30, columns=["X", "y", "k"]))
    assert error.value.column == "X" and error.value.file == str(path)


def test_a_parquet_files_saved_index_is_dropped_as_read_table_drops_it(tmp_path) -> None:
    path = tmp_path / "indexed.parquet"
    _mixed(50).set_index("s").to_parquet(path, row_group_size=20)
    whole = read_table(path)
    together = pd.concat(_chunks(path, 15))
    together.attrs = whole.attrs
    pd.testing.assert_frame_equal(together, whole)
    assert list(pd.concat(_chunks(path, 15, columns=["k"])).columns) == ["k"]


def test_json_lines_keys_missing_from_a_chunk_and_keys_that_come_late(tmp_path) -> None:
    path = tmp_path / "keys.jsonl"
    rows = [{"a": i, "b": f"t{i}", "c": 0.5} for i in range(6)] + [{"a": 6.5}, {"a": 7, "c": None}]
    path.write_text("\n".join(json.dumps(row) for row in rows[:3]) + "\n\n" + "\n".join(json.dumps(row) for row in rows[3:]))
    whole = read_table(path)
    chunks = list(read_chunks(path, rows=3))
    # the blank line makes the second chunk 2 rows; the third chunk has no "b" at all: missing values
    assert [len(chunk) for chunk in chunks] == [3, 2, 3]
    assert [chunk.index[0] for chunk in chunks] == [0, 3, 5]
    assert all(list(chunk.columns) == ["a", "b", "c"] for chunk in chunks)
    together = pd.concat(chunks)
    assert list(together.columns) == list(whole.columns) == ["a", "b", "c"]
    assert together["a"].tolist() == whole["a"].tolist() == [0, 1, 2, 3, 4, 5, 6.5, 7]
    assert together["b"].tolist()[:6] == whole["b"].tolist()[:6] and together["b"].iloc[6:].isna().all()
    late = tmp_path / "late.jsonl"
    late.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "new": "x"}\n')
    chunks = read_chunks(late, rows=2)
    assert next(chunks)["a"].tolist() == [1, 2]
    with pytest.raises(DataError, match=r"late.jsonl \(lines 3-3\) has key\(s\) 'new' that no row of the first chunk"):
        next(chunks)
    assert [chunk["a"].tolist() for chunk in read_chunks(late, rows=2, columns=["a"])] == [[1, 2], [3]]


def test_bad_rows_in_a_late_chunk_name_the_file_and_the_line(tmp_path) -> None:
    long_row = tmp_path / "long.csv"
    # Past the 64 KB sample that is checked up front (a long row within it is refused before any chunk).
    long_row.write_text("a,b,c\n" + "1,2,3\n" * 20_000 + "4,5,6,7\n" + "1,2,3\n" * 10)
    chunks = read_chunks(long_row, rows=3000)
    assert len(next(chunks)) == 3000  # the rows are read as the chunks are: the first chunks come first
    with pytest.raises(DataError, match=r"long.csv as CSV: line 20002 has 4 field\(s\) where the header has 3") as error:
        list(chunks)
    assert error.value.file == str(long_row)
    early = tmp_path / "early.csv"
    early.write_text("a,b,c\n" + "1,2,3\n" * 100 + "4,5,6,7\n" + "1,2,3\n" * 10)
    with pytest.raises(DataError, match=r"early.csv as CSV: line 102 has 4 field\(s\) where the header has 3 \('4,5,6,7'\)"):
        read_chunks(early, rows=30)
    # a short last row, as an interrupted write leaves, is found before any chunk is read
    short = tmp_path / "short.csv"
    short.write_bytes(b"a,b,c\n" + b"1,2,3\n" * 20_000 + b"4,5")
    with pytest.raises(DataError, match=r"short.csv as CSV: the last line has 2 field\(s\) where the header has 3"):
        read_chunks(short, rows=1000)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\n' * 5 + '{"a": \n')
    with pytest.raises(DataError, match=r"cannot read .*broken.jsonl \(lines 5-6\)"):
        list(read_chunks(broken, rows=4))


@pytest.mark.parametrize("name, content", [
    ("header.csv", b"a,b,c\n"),
    ("blank.jsonl", b"\n\n"),
])
def test_no_data_rows_is_read_tables_error(tmp_path, name, content) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match="has a header but no data rows") as expected:
        read_table(path)
    with pytest.raises(DataError, match="has a header but no data rows") as error:
        list(read_chunks(path, rows=10))
    assert str(error.value) == str(expected.value)


def test_empty_parquet_bad_arguments_and_files_read_table_refuses(tmp_path) -> None:
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(empty)
    with pytest.raises(DataError, match="has a header but no data rows"):
        read_chunks(empty, rows=10)
    with pytest.raises(DataError, match="has a header but no data rows"):
        table_size(empty)
    with pytest.raises(DataError, match="got a DataFrame, which is in memory already. Pass the path"):
        read_chunks(pd.DataFrame({"a": [1]}), rows=10)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rows per chunk, as a positive integer; got 0"):
        read_chunks(empty, rows=0)
    with pytest.raises(DataError, match="columns=\\[\\] selects no column"):
        read_chunks(empty, rows=10, columns=[])
    with pytest.raises(DataError, match="does not exist"):
        read_chunks(tmp_path / "missing.csv", rows=10)
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        read_chunks(duplicated, rows=10)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not parquet at all")
    for call in (lambda: read_chunks(corrupt, rows=10), lambda: table_size(corrupt)):
        with pytest.raises(DataError, match="cannot read .*corrupt.parquet"):
            call()


def _uniform_csv(path, n: int) -> pd.DataFrame:
    """A CSV of ``n`` rows of about the same length, numbers and text mixed."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.uniform(100, 999, n).round(3), "n": rng.integers(1000, 9999, n),
                          "city": rng.choice(["Lisbon", "Oslo", "Vienna"], n), "code": [f"c{i % 1000:04d}" for i in range(n)]})
    frame.to_csv(path, index=False)
    return frame


def test_table_size_estimates_rows_and_memory_from_a_sample(tmp_path) -> None:
    path = tmp_path / "uniform.csv"
    _uniform_csv(path, 20_000)
    size = table_size(path, sample_rows=500)
    whole = read_table(path)
    assert not size.exact and size.file_bytes == path.stat().st_size
    assert abs(size.rows - 20_000) / 20_000 < 0.2
    assert 1 / 1.5 < size.frame_bytes / whole.memory_usage(deep=True).sum() < 1.5
    # rows of quoted text over many lines: the 4 MB sample ends inside one, which is left out
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("id,text\n" + "".join(f'{i},"' + "many words\n" * 90 + 'end"\n' for i in range(5000)))
    size = table_size(quoted)
    assert not size.exact and abs(size.rows / 5000 - 1) < 0.2
    # a file no larger than the sample is counted, not estimated
    small = table_size(path, sample_rows=50_000)
    assert small.exact and small.rows == 20_000 == len(whole)


@pytest.mark.parametrize("name", ["t.parquet", "t.jsonl", "t.csv.gz"])
def test_table_size_of_every_format(tmp_path, name) -> None:
    path = tmp_path / name
    frame = _mixed(3000)
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False, row_group_size=700)
    elif name.endswith(".gz"):
        frame.to_csv(path, index=False, compression="gzip")
    else:
        write_table(frame, path)
    size = table_size(path, sample_rows=300)
    whole = read_table(path)
    assert isinstance(size, TableSize) and size.file_bytes == path.stat().st_size
    assert size.exact == name.endswith(".parquet") and (size.rows == 3000 if size.exact else abs(size.rows / 3000 - 1) < 0.2)
    assert 1 / 1.5 < size.frame_bytes / whole.memory_usage(deep=True).sum() < 1.5


def _gzip_rows(rows: list[bytes]) -> bytes:
    return gzip.compress(b"".join(rows), compresslevel=1)


def test_a_gzipped_csvs_size_comes_from_its_trailer_and_its_start_only(tmp_path) -> None:
    # 5 MB of the same row, then 5 MB of random ones of the same length: the start's compression
    # ratio (about 100:1) says nothing of the rest; the gzip trailer's ISIZE says how long it is.
    rng = np.random.default_rng(2)
    same = [b"x,word\n"] + [b"123456789,aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"] * 130_000
    text = rng.bytes(130_000 * 14).hex().encode()
    mixed = [b"%09d,%s\n" % (value, text[28 * i: 28 * i + 28]) for i, value in enumerate(rng.integers(0, 10**9, 130_000))]
    path = tmp_path / "skewed.csv.gz"
    path.write_bytes(_gzip_rows(same + mixed))
    size = table_size(path)
    assert abs(size.rows / 260_000 - 1) < 0.01 and not size.exact
    # a file of two gzip members: the trailer has the last member's size only; the ratio is used
    members = tmp_path / "members.csv.gz"
    members.write_bytes(_gzip_rows(same) + _gzip_rows(same[1:1000]))
    assert abs(table_size(members).rows / 130_999 - 1) < 0.2
    assert len(pd.concat(read_chunks(members, rows=50_000))) == 130_999
    # never more than the file's start is read: a broken end does not trouble table_size
    data = path.read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2] + b"\0" * 1000)
    assert table_size(cut).rows > 100_000
    with pytest.raises(DataError, match=r"cut.csv.gz: .*The gzip file is cut short or damaged"):
        read_table(cut)
