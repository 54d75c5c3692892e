"""The row store of streamed training: rows written once, read back as epochs, chunks, samples and by position.

Every row carries its own number as its first feature (and values derived from it in every other
column), so a test can say which rows a batch holds and that their columns stayed together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from keel.train.store import BLOCK_ROWS, TEST_FOLD, DiskRows, RowStore
from keel.train.trainer import Batch, batch_bounds

# Rows are appended in uneven pieces, as the chunks of a file arrive.
_PIECES = (1000, 1, 2999, 4096, 777)


def _store(directory: Path, folds: np.ndarray, weighted: bool = False) -> RowStore:
    """A store of ``len(folds)`` rows: number ``i`` has features (i, -i), category i % 7, class i % 3,
    weight 1 + i % 4 and row number i + 1 (as a file's rows are numbered)."""
    n_rows = len(folds)
    store = RowStore(directory, width=2, n_categories=1, regression=False, weighted=weighted)
    start = 0
    while start < n_rows:
        for piece in _PIECES:
            stop = min(start + piece, n_rows)
            index = np.arange(start, stop)
            store.append(np.stack([index, -index], axis=1).astype(np.float32), (index % 7).reshape(-1, 1),
                         index % 3, (1 + index % 4).astype(np.float32) if weighted else None,
                         folds[start:stop], index + 1)
            start = stop
    store.finish()
    return store


def _numbers(batch: Batch) -> np.ndarray:
    """The row numbers a batch holds, checking that each row's columns belong to the same row."""
    index = batch.numeric[:, 0].numpy().astype(np.int64)
    assert np.array_equal(batch.numeric[:, 1].numpy(), -index.astype(np.float32))
    assert np.array_equal(batch.categorical[:, 0].numpy(), index % 7)
    assert batch.categorical.dtype == torch.int64
    assert np.array_equal(batch.target.numpy(), index % 3)
    if batch.weight is not None:
        assert np.array_equal(batch.weight.numpy(), (1 + index % 4).astype(np.float32))
    return index


def _epoch(rows: DiskRows, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    return [_numbers(batch) for batch in rows.epoch_batches(batch_size, generator)]


def _layout(name: str) -> tuple[np.ndarray, set[int]]:
    """Each row's fold and the folds read, for a named layout of 10,000-odd rows (three blocks or so)."""
    n_rows = 10_003
    index = np.arange(n_rows)
    if name == "interleaved":  # every block holds rows of every fold, test rows among them
        folds = np.where(index % 5 == 4, TEST_FOLD, index % 3).astype(np.uint8)
        return folds, {0, 2}
    if name == "contiguous":  # the chosen fold starts inside the second block
        return (index >= 6000).astype(np.uint8), {1}
    if name == "lone-last-row":  # 90 x 100 + 1 rows: the last batch of one row joins the one before
        return np.zeros(9001, dtype=np.uint8), {0}
    raise AssertionError(name)


@pytest.mark.parametrize("layout", ["interleaved", "contiguous", "lone-last-row"])
@pytest.mark.parametrize("window_blocks", [1, 2, 10])
def test_an_epoch_yields_every_row_of_its_folds_once_in_the_trainers_batch_sizes(tmp_path, layout,
                                                                                   window_blocks) -> None:
    folds, chosen = _layout(layout)
    rows = DiskRows(_store(tmp_path / "rows", folds, weighted=True), chosen, window_rows=window_blocks * BLOCK_ROWS)
    expected = np.flatnonzero(np.isin(folds, list(chosen)))
    assert len(rows) == len(expected)
    sizes = [stop - start for start, stop in batch_bounds(len(expected), 100)]
    generator = torch.Generator().manual_seed(7)
    epochs = [_epoch(rows, 100, generator) for _ in range(2)]
    for batches in epochs:
        assert [len(batch) for batch in batches] == sizes
        seen = np.concatenate(batches)
        assert np.array_equal(np.sort(seen), expected)  # each once, and no row of another fold
    first, second = (np.concatenate(batches) for batches in epochs)
    assert not np.array_equal(first, second)  # a new order each epoch
    assert not np.array_equal(first, np.sort(first))  # shuffled, not store order
    again = torch.Generator().manual_seed(7)
    assert all(np.array_equal(np.concatenate(_epoch(rows, 100, again)), np.concatenate(batches))
               for batches in epochs)  # the same seed gives the same epochs


def test_blocks_are_visited_in_a_new_order_each_epoch_and_a_wide_window_mixes_them(tmp_path) -> None:
    store = _store(tmp_path / "rows", np.zeros(3 * BLOCK_ROWS, dtype=np.uint8))
    # A window of one block: each epoch starts in a block of its own drawing, not always the first.
    narrow, generator = DiskRows(store, {0}, BLOCK_ROWS), torch.Generator().manual_seed(0)
    starts = [set(_numbers(next(narrow.epoch_batches(256, generator))) // BLOCK_ROWS) for _ in range(8)]
    assert all(len(blocks) == 1 for blocks in starts) and len(set.union(*starts)) > 1
    # A whole-store window shuffles all rows together: the first batch draws from every block.
    wide = DiskRows(store, {0}, 3 * BLOCK_ROWS)
    first = _numbers(next(wide.epoch_batches(256, torch.Generator().manual_seed(0))))
    assert set(first // BLOCK_ROWS) == {0, 1, 2}


def test_take_returns_the_rows_at_the_given_positions_in_the_given_order(tmp_path) -> None:
    folds, chosen = _layout("interleaved")
    rows = DiskRows(_store(tmp_path / "rows", folds), chosen, window_rows=BLOCK_ROWS)
    members = np.flatnonzero(np.isin(folds, list(chosen)))  # position i among the part's rows is row members[i]
    positions = np.array([len(members) - 1, 0, 4000, 17, 17, 2, len(members) - 1, 3000, 0])
    taken = rows.take(positions)
    assert np.array_equal(_numbers(taken), members[positions])
    assert taken.weight is None
    everything = rows.take(np.arange(len(members)))
    assert np.array_equal(_numbers(everything), members)
    assert len(rows.take(np.zeros(0, dtype=np.int64))) == 0


def test_a_sample_is_the_same_rows_for_the_same_seed_in_store_order(tmp_path) -> None:
    folds, chosen = _layout("interleaved")
    rows = DiskRows(_store(tmp_path / "rows", folds), chosen, window_rows=BLOCK_ROWS)
    members = np.flatnonzero(np.isin(folds, list(chosen)))
    first, again, other = (_numbers(rows.sample(500, seed)) for seed in (3, 3, 4))
    assert len(first) == 500 and len(set(first.tolist())) == 500
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.array_equal(first, np.sort(first)) and np.isin(first, members).all()
    assert np.array_equal(_numbers(rows.sample(len(members) + 10, 3)), members)  # asking for more: all of them


def test_counts_and_weight_totals_are_those_of_the_chosen_folds(tmp_path) -> None:
    folds, chosen = _layout("interleaved")
    store = _store(tmp_path / "rows", folds, weighted=True)
    members = np.flatnonzero(np.isin(folds, list(chosen)))
    rows = DiskRows(store, chosen, window_rows=BLOCK_ROWS)
    assert store.n_rows == len(folds)
    assert store.fold_counts == {int(code): int((folds == code).sum()) for code in np.unique(folds)}
    assert rows.class_counts(3).tolist() == np.bincount(members % 3, minlength=3).tolist()
    assert rows.class_counts(5).tolist() == np.bincount(members % 3, minlength=5).tolist()  # classes with no rows
    assert rows.weight_total() == pytest.approx(float((1 + members % 4).sum()))
    assert rows.weighted
    unweighted = DiskRows(_store(tmp_path / "plain", folds), chosen, window_rows=BLOCK_ROWS)
    assert unweighted.weight_total() == len(members) and not unweighted.weighted


def test_chunks_and_map_read_the_chosen_rows_in_store_order_with_their_row_numbers(tmp_path) -> None:
    folds, chosen = _layout("interleaved")
    rows = DiskRows(_store(tmp_path / "rows", folds, weighted=True), chosen, window_rows=BLOCK_ROWS)
    members = np.flatnonzero(np.isin(folds, list(chosen)))
    chunks = list(rows.chunks())
    assert len(chunks) == 3  # a window at a time
    assert np.array_equal(np.concatenate([_numbers(batch) for batch, _ in chunks]), members)
    assert np.array_equal(np.concatenate([numbers for _, numbers in chunks]), members + 1)
    outputs, labels, numbers = rows.map(lambda batch: batch.numeric[:, 0] * 2)
    assert np.array_equal(outputs.numpy(), members * 2.0)
    assert np.array_equal(labels.target.numpy(), members % 3)
    assert labels.weight is not None and np.array_equal(labels.weight.numpy(), 1 + members % 4)
    assert np.array_equal(numbers, members + 1)


def test_a_store_reads_back_what_was_written_and_remove_deletes_it(tmp_path) -> None:
    folds = np.zeros(5000, dtype=np.uint8)
    store = _store(tmp_path / "rows", folds)
    part = store.read(4090, 4100)  # across a block boundary
    assert np.array_equal(part["numeric"][:, 0], np.arange(4090, 4100, dtype=np.float32))
    assert np.array_equal(part["row"], np.arange(4091, 4101)) and part["categorical"].shape == (10, 1)
    assert np.array_equal(store.folds(), folds)
    store.remove()
    assert not (tmp_path / "rows").exists()


def test_a_streamed_feed_put_back_within_a_pass_continues_with_the_same_batches(tmp_path) -> None:
    # training.steps_per_epoch ends epochs within a pass; a checkpoint there holds the pass's start and position.
    from keel.train.trainer import _Feed

    rows = DiskRows(_store(tmp_path / "rows", np.zeros(10_003, dtype=np.uint8)), {0}, window_rows=BLOCK_ROWS)
    feed = _Feed(rows, 1000, torch.Generator().manual_seed(3))
    first = [_numbers(feed.next()[0]) for _ in range(14)]  # a pass of 11 batches (the last of 3), 3 of the next
    assert sorted(np.concatenate(first[:11]).tolist()) == list(range(10_003))
    state, position = feed.place()
    assert position == 3
    expected = [_numbers(feed.next()[0]) for _ in range(12)]
    again = _Feed(rows, 1000, torch.Generator())
    again.restore(state.clone(), position)
    for a, b in zip(expected, [_numbers(again.next()[0]) for _ in range(12)]):
        assert np.array_equal(a, b)
