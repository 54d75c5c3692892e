"""Audit s12: a column of dates in a non-ISO form is noted (commit 93db71c, ``schema._other_date``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.config import load_config
from keel.data.schema import _other_date, infer_schema

N = 200
RNG = np.random.default_rng(0)


def draw(template, n: int = N) -> list[str]:  # type: ignore[no-untyped-def]
    return [template(RNG) for _ in range(n)]


def schema_of(frame: pd.DataFrame, **config: object):  # type: ignore[no-untyped-def]
    return infer_schema(frame, load_config({"target": "y", **config}))


@pytest.mark.parametrize("name, values", [
    ("codes 12/34/5678", draw(lambda r: f"{r.integers(13, 99)}/{r.integers(32, 99)}/{r.integers(1000, 9999)}")),
    ("versions x.y.z", draw(lambda r: f"{r.integers(1, 4)}.{r.integers(0, 12)}.{r.integers(0, 9)}")),
    ("IP addresses", draw(lambda r: f"10.{r.integers(0, 255)}.{r.integers(0, 255)}.{r.integers(0, 255)}")),
    ("fractions", draw(lambda r: f"{r.integers(1, 9)}/{r.integers(2, 9)}")),
    ("decimals", draw(lambda r: f"{r.random():.2f}")),
    ("phone-like 12-34-56", draw(lambda r: f"{r.integers(13, 99)}-{r.integers(32, 99)}-{r.integers(10, 99)}")),
    ("ISO", draw(lambda r: f"2020-{r.integers(1, 12):02d}-{r.integers(1, 28):02d}")),
])
def test_things_that_are_not_other_dates_are_not_called_dates(name: str, values: list[str]) -> None:
    assert _other_date(pd.Series(values, dtype=object)) is None


@pytest.mark.parametrize("name, values", [
    ("versions with two-digit patches", draw(lambda r: f"{r.integers(1, 4)}.{r.integers(1, 12)}.{r.integers(10, 30)}")),
    ("section numbers 3.12.25", draw(lambda r: f"{r.integers(1, 9)}.{r.integers(1, 13)}.{r.integers(10, 40)}")),
])
def test_version_numbers_are_not_called_dates(name: str, values: list[str]) -> None:
    """Bug (low): the pattern takes d.d.dd as a date with a two-digit year, and pandas reads '2.10.22' as
    2022-02-10, so a column of software versions such as 1.4.15, 2.10.22 gets the note 'looks like dates not
    written as ISO 8601 ... convert the column (pd.to_datetime(...))'. The shipped test only tried versions whose
    last part has one digit (1.{i % 13}.{i % 7}), which the pattern never matches. Dotted dates with a two-digit
    year are rare next to version numbers; requiring a four-digit year for '.' (31.10.1996) would avoid it."""
    series = pd.Series(values, dtype=object)
    assert _other_date(series) is None
    frame = pd.DataFrame({"version": series, "x": np.arange(N) % 7, "y": [0, 1] * (N // 2)})
    schema = schema_of(frame)
    assert not any("ISO 8601" in note for note in schema.notes)
    assert "ISO 8601" not in schema.dropped.get("version", "")


def test_a_column_mostly_missing_and_declared_columns() -> None:
    dates = pd.Series([None] * 150 + [f"{m}/{d}/2020" for m, d in zip(RNG.integers(1, 12, 50), RNG.integers(1, 28, 50))])
    assert _other_date(dates) is not None  # the present values decide
    assert _other_date(pd.Series([None, np.nan], dtype=object)) is None
    assert _other_date(pd.Series([1.0, 2.0])) is None
    frame = pd.DataFrame({"when": np.tile(["03/01/2020", "04/01/2020", "05/02/2020"], 40), "y": [0, 1] * 60})
    declared = schema_of(frame, input_features=[{"name": "when", "type": "category"}])
    assert not any("ISO 8601" in note for note in declared.notes)
    assert any("ISO 8601" in note for note in schema_of(frame).notes)


def test_a_pandas_categorical_column_of_such_dates_is_noted_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Bug (low): _other_date looks only at object and string dtypes, so the same dates held as a pandas
    categorical (a DataFrame passed to keel.fit, or a Parquet file written from one) become a category without the
    note the README promises ('such a column stays a category ... with a note saying it looks like dates')."""
    frame = pd.DataFrame({"when": np.tile(["03/01/2020", "04/01/2020", "05/02/2020"], 40), "y": [0, 1] * 60})
    categorical = frame.assign(when=frame["when"].astype("category"))
    assert any("ISO 8601" in note for note in schema_of(categorical).notes)
