"""Audit of 061e411 (CSV rows longer than the header refused up front): valid files that read before it
must still read, and the new check must still catch a really ragged row."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from keel.data.io import read_chunks, read_table
from keel.errors import DataError


def _write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.mark.parametrize("name", ["trailing.csv", "trailing.csv.gz"])
def test_a_trailing_delimiter_on_every_data_row_still_reads(tmp_path, name) -> None:
    """Expected: a file whose data rows all end in a delimiter the header does not have ('a,b,c' then '0,0,x0,',
    as several exporters write it) reads as 3 columns, as plain pandas reads it and as keel read it before
    061e411 (pandas' index_col=False drops the trailing empty field). Since 061e411 the layout check counts
    4 fields against the header's 3 and refuses the file ('line 2 has 4 field(s)'): a valid file refused."""
    text = "a,b,c\n" + "".join(f"{i},{i * 2},x{i},\n" for i in range(50))
    path = _write(tmp_path / name, text)
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b", "c"]
    assert frame["c"].tolist()[:3] == ["x0", "x1", "x2"] and frame["b"].tolist()[-1] == 98


def test_a_trailing_tab_on_every_row_of_a_tsv_still_reads(tmp_path) -> None:
    """Expected: the same for a TSV with a trailing tab on each data row (read before 061e411; refused now)."""
    path = _write(tmp_path / "trailing.tsv", "a\tb\tc\n" + "".join(f"{i}\t{i}\tx{i}\t\n" for i in range(50)))
    assert read_table(path).shape == (50, 3)


def test_a_large_file_with_carriage_return_line_ends_still_reads(tmp_path) -> None:
    """Expected: an uncompressed CSV over 64 KB whose lines end in a bare carriage return (classic Mac, some
    Excel exports) reads, as pandas reads it and keel read it before 061e411. Now _last_line reads the last
    4 KB, splits lines on '\\n' only, so every row of the tail is one 'line' of hundreds of fields, which the
    check, now '!=' instead of '<', refuses ('the last line has 483 field(s) where the header has 3')."""
    text = "a,b,c\r" + "".join(f"{i},{i * 2},x{i}\r" for i in range(8000))
    assert len(text) > 1 << 16
    path = _write(tmp_path / "cr.csv", text)
    frame = read_table(path)
    assert frame.shape == (8000, 3) and frame["c"].iloc[-1] == "x7999"


# ---- guards: valid files the new check reads, and the ragged row it exists for ------------------------------

@pytest.mark.parametrize("name", ["quoted.csv", "quoted.csv.gz"])
def test_quoted_delimiters_and_newlines_across_the_sample_end_read(tmp_path, name) -> None:
    """Quoted fields holding the delimiter and line breaks, in a file far larger than the 64 KB sample (so the
    sample is cut inside some row): read whole, no false 'more fields than the header'."""
    text = "a,b,c\n" + "".join(f'{i},"he said, ""hi""\nline two, more",x{i}\n' for i in range(4000))
    path = _write(tmp_path / name, text)
    frame = read_table(path)
    assert frame.shape == (4000, 3) and frame["b"].iloc[0] == 'he said, "hi"\nline two, more'
    assert sum(len(chunk) for chunk in read_chunks(path, rows=700)) == 4000


@pytest.mark.parametrize("delimiter", [None, ";"])
def test_bom_semicolon_blank_lines_and_crlf_read(tmp_path, delimiter) -> None:
    """A UTF-8 BOM, ';' with decimal commas, blank lines between rows and CRLF line ends, with and without
    --delimiter: read as before."""
    text = "\ufeffa;b;c\r\n" + "".join(f"{i};{i},5;x{i}\r\n\r\n" for i in range(6000))
    path = _write(tmp_path / "semi.csv", text)
    frame = read_table(path, delimiter=delimiter)
    assert list(frame.columns) == ["a", "b", "c"] and len(frame) == 6000


def test_a_header_with_the_trailing_delimiter_too_keeps_its_blank_column(tmp_path) -> None:
    """Header and rows both ending in ',': 4 fields each, read as before (a column named '')."""
    path = _write(tmp_path / "both.csv", "a,b,c,\n" + "".join(f"{i},{i},x{i},\n" for i in range(20)))
    assert read_table(path).shape == (20, 4)


def test_a_row_longer_than_the_header_in_the_sample_is_named(tmp_path) -> None:
    """The check's purpose: an unquoted delimiter inside a value, named with its line and text."""
    path = _write(tmp_path / "long.csv", "a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n")
    with pytest.raises(DataError, match=r"line 3 has 4 field\(s\) where the header has 3 \('4,5,6,7'\)"):
        read_table(path)
    assert pd.read_csv(path, on_bad_lines="skip").shape == (2, 3)  # pandas alone would have to be told
