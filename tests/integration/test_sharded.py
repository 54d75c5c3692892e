"""Data-parallel training in which each rank reads only its share of the file (keel.train.sharded):
the shards partition the file, the merged scan is the one-process scan, and two real processes train a
model as good as one process's with the same vocabularies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.data.io import read_chunks
from keel.train.streamed import Scan, merged_scans

CONFIG = {"preset": "fast", "training.epochs": 6, "model.dropout": 0.0}


def _frame(n: int = 12_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    codes = np.array([f"{value:03d}" for value in rng.integers(0, 40, n)])  # zero-padded: text, never numbers
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(4)})
    frame["code"] = codes
    frame["city"] = rng.choice(["oslo", "lima", "pune", "kyiv"], n)
    signal = x[:, 0] - x[:, 1] + (frame["code"].astype(int) % 3 == 0) + 0.5 * rng.logistic(size=n)
    frame["label"] = np.where(signal > 0.3, "yes", "no")
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("sharded")
    frame = _frame()
    csv = directory / "table.csv"
    frame.to_csv(csv, index=False)
    parquet = directory / "table.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet, row_group_size=1_000)  # 12 groups
    return {"csv": csv, "parquet": parquet, "frame": frame}


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_chunks_partition_the_file_with_file_row_numbers(files, kind, world) -> None:
    frame = files["frame"]
    assert isinstance(frame, pd.DataFrame)
    shares = [list(read_chunks(files[kind], rows=700, shard=(rank, world))) for rank in range(world)]
    rows = np.concatenate([chunk.index.to_numpy() for share in shares for chunk in share])
    assert sorted(rows.tolist()) == list(range(len(frame)))  # every row once, numbered as in the file
    for share in shares:
        assert len(share) >= 2
        for chunk in share:  # each chunk holds the file's rows at its numbers
            expected = frame.iloc[chunk.index.to_numpy()].reset_index(drop=True)
            pd.testing.assert_frame_equal(chunk.reset_index(drop=True)[["x0", "city"]], expected[["x0", "city"]])
    if kind == "parquet":  # rank r reads rows r * n // world to (r + 1) * n // world, and no others
        for rank, share in enumerate(shares):
            held = np.concatenate([chunk.index.to_numpy() for chunk in share])
            assert held.tolist() == list(range(rank * 12_000 // world, (rank + 1) * 12_000 // world))


@pytest.mark.parametrize("sizes", [[3_000], [2_000, 500, 500], [1_000] * 3])
def test_parquet_row_groups_of_any_size_are_shared_by_rows(tmp_path, sizes) -> None:
    frame = _frame(sum(sizes))
    path = tmp_path / "groups.parquet"
    with pq.ParquetWriter(path, pa.Table.from_pandas(frame.head(1), preserve_index=False).schema) as writer:
        start = 0
        for size in sizes:  # uneven row groups: whole groups would give one rank most of the rows
            writer.write_table(pa.Table.from_pandas(frame.iloc[start:start + size], preserve_index=False))
            start += size
    assert pq.ParquetFile(path).num_row_groups == len(sizes)
    shares = [list(read_chunks(path, rows=400, shard=(rank, 2))) for rank in range(2)]
    held = [np.concatenate([chunk.index.to_numpy() for chunk in share]) for share in shares]
    assert [len(rows) for rows in held] == [1_500, 1_500]
    assert held[0].tolist() + held[1].tolist() == list(range(3_000))
    pd.testing.assert_series_equal(pd.concat(shares[1])["x0"], frame["x0"].iloc[1_500:], check_names=False)


def test_merged_scans_add_up_and_keep_the_smallest_keys_of_all() -> None:
    def scan(rows: list[int], keys: list[float], counts: dict[str, int] | None, labels: dict[str, object]) -> Scan:
        part = Scan("f.csv", ["a"], n_rows=len(rows), n_fitted=len(rows), parts={0: len(rows)})
        part.sample = pd.DataFrame({"a": rows}, index=rows)
        part.sample_keys, part.sample_parts = np.array(keys), np.zeros(len(rows), np.uint8)
        part.counts = {"a": counts}
        part.labels = labels
        return part

    merged = merged_scans([scan([0, 1, 2], [0.9, 0.1, 0.5], {"x": 2, "y": 1}, {"1": 1}),
                           None,  # a rank without a chunk
                           scan([3, 4], [0.2, 0.05], {"x": 1}, {"1": "1", "2": 2})], sample_rows=3)
    assert merged.n_rows == 5 and merged.parts == {0: 5}
    assert merged.sample is not None and merged.sample.index.tolist() == [1, 3, 4]  # keys 0.1, 0.2, 0.05, in file order
    assert merged.counts == {"a": {"x": 3, "y": 1}}
    assert merged.labels == {"1": 1, "2": 2}  # the first rank's spelling of "1" wins
    gave_up = merged_scans([scan([0], [0.1], None, {}), scan([1], [0.2], {"x": 1}, {})], sample_rows=3)
    assert gave_up.counts == {"a": None}  # a rank that stopped counting: no exact vocabulary


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_two_ranks_each_reading_their_share_train_the_one_process_model(files, kind) -> None:
    single = keel.fit(files[kind], target="label", config=CONFIG, quiet=True, importance=False)
    double = keel.fit(files[kind], target="label", config=CONFIG, quiet=True, importance=False, nproc=2)
    assert abs(double.metrics["accuracy"] - single.metrics["accuracy"]) <= 0.02
    assert double.metrics["accuracy"] > 0.75
    note = next(note for note in double.notes if note.startswith("rows:"))
    assert "data-parallel over 2 ranks, each reading its share" in note
    held = int(note.split("this rank holds ")[1].split(" ")[0])
    total = int(note.split("rows: ")[1].split(" ")[0])
    assert 0.4 * total <= held <= 0.6 * total  # rank 0 holds about half of the training rows, not all
    tested = int(note.split("for validation, ")[1].split(" ")[0])
    assert 0.15 * 12_000 <= tested <= 0.25 * 12_000  # every rank's test rows, scored on rank 0
    # The vocabularies come from exact counts over every rank's rows: the one-process vocabularies.
    vocabularies = {t.name: sorted(t.vocabulary) for t in single.preprocessor.categorical}
    assert {t.name: sorted(t.vocabulary) for t in double.preprocessor.categorical} == vocabularies
    assert vocabularies["city"] == ["kyiv", "lima", "oslo", "pune"]
    assert [(f.name, f.type) for f in double.schema.features] == [(f.name, f.type) for f in single.schema.features]


def test_a_column_some_ranks_read_as_numbers_gets_the_one_process_vocabulary(tmp_path) -> None:
    """"00042"-style codes: a rank whose chunks hold only digits types them as numbers, another as text;
    the merged scan sees both and every rank rereads the column as written, as one process reads it."""
    frame = _frame(6_000, seed=3)
    rng = np.random.default_rng(3)
    frame["zip"] = [f"{value:05d}" for value in rng.integers(0, 30, len(frame))]
    frame.loc[4_500:, "zip"] = [f"A{value:02d}" for value in rng.integers(0, 5, len(frame) - 4_500)]
    path = tmp_path / "mixed.csv"
    frame.drop(columns=["code"]).to_csv(path, index=False)
    single = keel.fit(path, target="label", config=CONFIG, quiet=True, importance=False)
    double = keel.fit(path, target="label", config=CONFIG, quiet=True, importance=False, nproc=2)
    vocabularies = [{t.name: sorted(t.vocabulary) for t in model.preprocessor.categorical} for model in (single, double)]
    assert "00007" in vocabularies[0]["zip"] and "A01" in vocabularies[0]["zip"]  # as written, not 7
    assert vocabularies[1] == vocabularies[0]


def test_a_file_larger_than_the_memory_budget_is_read_in_shares_too(files) -> None:
    """A single process would stream this file (its table exceeds data.memory_budget); the ranks read their
    shares of it instead of refusing, as they did before rank-sharded reading."""
    config = {**CONFIG, "data.memory_budget": "1MiB"}
    streamed = keel.fit(files["csv"], target="label", config=config, quiet=True, importance=False)
    assert any(note.startswith("streaming") for note in streamed.notes)
    double = keel.fit(files["csv"], target="label", config=config, quiet=True, importance=False, nproc=2)
    assert any("each reading its share" in note for note in double.notes)
    assert double.metrics["accuracy"] > 0.75 and streamed.metrics["accuracy"] > 0.75  # different test rows each
