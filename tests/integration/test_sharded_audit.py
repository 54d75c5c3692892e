"""Audit of rank-sharded reading (keel.train.sharded): regressions for what the audit found.

Each test names what it guards. At the time of writing the first five FAIL on main (38e44a9); they
pass once the fixes in the audit report land. The last one passes already and keeps the equal-weights
promise checked on the sharded path, which no test did with bagging.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.errors import DataError

CONFIG = {"preset": "fast", "training.epochs": 2, "model.hidden": [16]}
PENGUINS = Path(__file__).resolve().parents[2] / "examples" / "penguins.csv"


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "w": rng.uniform(0.5, 2.0, n)})
    frame["label"] = np.where(frame.x0 - frame.x1 + 0.5 * rng.logistic(size=n) > 0, "yes", "no")
    return frame


def _trained_rows(model: keel.model.Model) -> tuple[int, int]:
    """(training rows in the split, rows each rank really trained on), from rank 0's notes."""
    rows = next(note for note in model.notes if note.startswith("rows:"))
    total = int(rows.split("rows: ")[1].split(" ")[0])
    share = next((note for note in model.notes if note.startswith("each rank trains on")), None)
    if share is None:
        return total, int(rows.split("this rank holds ")[1].split(" ")[0])
    return total, int(re.search(r"trains on ([\d,]+) rows", share).group(1).replace(",", ""))  # type: ignore[union-attr]


def test_more_ranks_than_chunks_still_trains() -> None:
    """344 rows, chunks of at least 256: rank 2 of 3 reads no chunk; equal_share then cut every rank to
    0 rows and the trainer died with 'UnboundLocalError: ... rows' (FAILS on 38e44a9)."""
    model = keel.fit(PENGUINS, target="species", config=CONFIG, quiet=True, importance=False, nproc=3)
    total, each = _trained_rows(model)
    assert each * 3 >= 0.8 * total


def test_two_ranks_on_a_small_csv_train_on_most_rows() -> None:
    """penguins with nproc=2: chunks of 256 rows give rank 0 256 rows and rank 1 88; each rank trained on
    56 of 244 training rows (132 of rank 0's 'a seeded random few' left out) (FAILS on 38e44a9)."""
    model = keel.fit(PENGUINS, target="species", config=CONFIG, quiet=True, importance=False, nproc=2)
    total, each = _trained_rows(model)
    assert each * 2 >= 0.8 * total


def test_uneven_parquet_row_groups_do_not_drop_most_rows(tmp_path) -> None:
    """Row groups of 3,000 / 500 / 500 rows: rank 0 reads 3,500 rows, rank 1 500; 75% of the training rows
    were dropped (FAILS on 38e44a9)."""
    frame = _frame(4_000)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    path = tmp_path / "uneven.parquet"
    with pq.ParquetWriter(path, table.schema) as writer:
        for start, end in [(0, 3_000), (3_000, 3_500), (3_500, 4_000)]:
            writer.write_table(table.slice(start, end - start))
    model = keel.fit(path, target="label", config=CONFIG, quiet=True, importance=False, nproc=2)
    total, each = _trained_rows(model)
    assert each * 2 >= 0.8 * total


def test_bagged_networks_end_with_the_same_weights_on_every_rank(tmp_path, monkeypatch) -> None:
    """training.bagging 2 with nproc 2: the second network's initial weights come from each rank's RNG
    after the first network trained with rank-seeded dropout, so the ranks' weights differ (FAILS)."""
    path = tmp_path / "table.csv"
    _frame(3_000).to_csv(path, index=False)
    digests = tmp_path / "digests"
    digests.mkdir()
    monkeypatch.setenv("KEEL_TEST_RANK_DIGESTS", str(digests))
    keel.fit(path, target="label", config={**CONFIG, "training.bagging": 2, "training.epochs": 1}, quiet=True,
             importance=False, nproc=2)
    assert (digests / "rank-0.txt").read_text() == (digests / "rank-1.txt").read_text()


def test_a_data_error_in_another_ranks_chunk_is_raised_as_itself(tmp_path) -> None:
    """A negative weight in file row 3,501 (rank 1's chunk): one process raises a DataError naming the row;
    two processes raised 'rank 0 failed: RuntimeError: ... Connection closed by peer' (FAILS)."""
    frame = _frame(4_000)
    frame.loc[3_500, "w"] = -1.0
    path = tmp_path / "weights.csv"
    frame.to_csv(path, index=False)
    config = {**CONFIG, "training.weight_column": "w"}
    with pytest.raises(DataError, match="row 3501"):
        keel.fit(path, target="label", config=config, quiet=True, importance=False, nproc=2)


def test_sharded_ranks_end_with_the_same_weights_with_weights_and_groups(tmp_path, monkeypatch) -> None:
    """Regression target, row weights, split_by and a --test file on the sharded path: equal weights."""
    rng = np.random.default_rng(1)
    n = 3_000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "group": rng.integers(0, 200, n),
                          "w": rng.uniform(0.5, 2.0, n)})
    frame["y"] = 1_000 + 300 * frame.a - 200 * frame.b + rng.normal(size=n) * 10
    frame.iloc[:2_500].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[2_500:].to_csv(tmp_path / "test.csv", index=False)
    digests = tmp_path / "digests"
    digests.mkdir()
    monkeypatch.setenv("KEEL_TEST_RANK_DIGESTS", str(digests))
    model = keel.fit(tmp_path / "train.csv", target="y", test=tmp_path / "test.csv", quiet=True, importance=False,
                     nproc=2, config={**CONFIG, "training.weight_column": "w", "training.split_by": "group"})
    assert (digests / "rank-0.txt").read_text() == (digests / "rank-1.txt").read_text()
    assert model.metrics is not None
    assert model.metrics["n_rows"] == 500 and model.metrics["r2"] > 0.5
