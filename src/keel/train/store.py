"""Transformed rows on disk, for tables larger than the memory budget: written once, read in blocks.

A streamed run (keel.train.streamed) writes every transformed row here, a column group per file
(numbers float32, categories int32, target, weight, the row's fold, its row number in the file),
and trains from it: each epoch visits the store's blocks in a shuffled order, a window of blocks at
a time, and shuffles the rows within each window. Files are read with ``pread``-style reads into
fresh arrays, not memory-mapped: mapped pages count in the process's resident memory, and a
mapping of the whole store would grow to the store's size; read pages stay in the kernel's page
cache, which it gives back under pressure.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from keel.train.trainer import Batch, batch_bounds

# Rows per block: each epoch shuffles the order of blocks, then rows within a window of blocks.
# 4,096 rows of 50 numbers are 800 KB, one read each; a window of many blocks drawn from all over
# the file mixes rows from everywhere into every batch even when the file is sorted.
BLOCK_ROWS = 4096

# The fold code of test rows (validation and training rows have their fold's number, 0.. k-1).
TEST_FOLD = 255

_COLUMNS = ("numeric", "categorical", "target", "weight", "fold", "row")


class RowStore:
    """Rows appended to files in a directory, then read back by position.

    Args:
        directory: Where the files go (created; :meth:`remove` deletes it).
        width: Numbers per row.
        n_categories: Category codes per row.
        regression: Targets are float32 values (else int64 class indices).
        weighted: Rows carry a weight.
    """

    def __init__(self, directory: Path, width: int, n_categories: int, regression: bool, weighted: bool) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.shapes: dict[str, tuple[np.dtype, int]] = {
            "numeric": (np.dtype(np.float32), width), "categorical": (np.dtype(np.int32), n_categories),
            "target": (np.dtype(np.float32 if regression else np.int64), 1), "fold": (np.dtype(np.uint8), 1),
            "row": (np.dtype(np.int64), 1)}
        if weighted:
            self.shapes["weight"] = (np.dtype(np.float32), 1)
        self._files = {name: open(directory / name, "wb") for name in self.shapes}  # noqa: SIM115
        self.n_rows = 0
        self.fold_counts: dict[int, int] = {}
        self.class_counts: dict[int, np.ndarray] = {}  # per fold, classification only
        self.weight_sums: dict[int, float] = {}

    @property
    def width(self) -> int:
        return self.shapes["numeric"][1]

    @property
    def weighted(self) -> bool:
        return "weight" in self.shapes

    def append(self, numeric: np.ndarray, categorical: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
               fold: np.ndarray, row: np.ndarray) -> None:
        """Write rows at the end of the store."""
        arrays = {"numeric": numeric, "categorical": categorical, "target": target, "fold": fold, "row": row}
        if self.weighted:
            assert weight is not None
            arrays["weight"] = weight
        for name, values in arrays.items():
            dtype, _ = self.shapes[name]
            self._files[name].write(np.ascontiguousarray(values, dtype=dtype).tobytes())
        self.n_rows += len(fold)
        for code, count in zip(*np.unique(fold, return_counts=True)):
            code = int(code)
            self.fold_counts[code] = self.fold_counts.get(code, 0) + int(count)
            if weight is not None:
                self.weight_sums[code] = self.weight_sums.get(code, 0.0) + float(weight[fold == code].sum(dtype=np.float64))
            if target.dtype.kind in "iu":
                counts = np.bincount(target[fold == code])
                known = self.class_counts.setdefault(code, np.zeros(0, dtype=np.int64))
                size = max(len(known), len(counts))
                merged = np.zeros(size, dtype=np.int64)
                merged[:len(known)] += known
                merged[:len(counts)] += counts
                self.class_counts[code] = merged

    def finish(self) -> None:
        """Close the files for writing; the store is read from now on."""
        for file in self._files.values():
            file.close()
        self._files = {}

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of every file, as fresh arrays."""
        out = {}
        for name, (dtype, width) in self.shapes.items():
            count = (stop - start) * width
            with open(self.directory / name, "rb") as file:
                values = np.fromfile(file, dtype=dtype, count=count, offset=start * width * dtype.itemsize)
            out[name] = values.reshape(stop - start, width) if name in ("numeric", "categorical") else values
        return out

    def folds(self) -> np.ndarray:
        """Every row's fold code (one byte a row)."""
        return np.fromfile(self.directory / "fold", dtype=np.uint8)

    def remove(self) -> None:
        self.finish()
        shutil.rmtree(self.directory, ignore_errors=True)


def store_directory(parent: str | os.PathLike[str] | None) -> Path:
    """A fresh directory for a run's stores: under ``parent`` (``data.spill_directory``) or the system's temp directory."""
    return Path(tempfile.mkdtemp(prefix="keel-rows-", dir=parent))


class DiskRows:
    """The rows of a :class:`RowStore` whose fold is one of ``folds``, as training reads them.

    Offers what the trainer and the pipeline need of in-memory rows (:class:`Batch`): their number,
    shuffled batches for an epoch, sequential chunks for scoring, and a few rows by position.

    Args:
        store: The rows.
        folds: The fold codes that belong here.
        window_rows: Rows read into memory at once (a whole number of blocks).
        device: Where the batches go.
    """

    def __init__(self, store: RowStore, folds: set[int], window_rows: int, device: torch.device | None = None) -> None:
        self.store, self.folds = store, frozenset(folds)
        self.window_blocks = max(1, window_rows // BLOCK_ROWS)
        self.device = device or torch.device("cpu")
        self.n_rows = sum(store.fold_counts.get(code, 0) for code in self.folds)

    def __len__(self) -> int:
        return self.n_rows

    def to(self, device: torch.device | str) -> "DiskRows":
        return DiskRows(self.store, set(self.folds), self.window_blocks * BLOCK_ROWS, torch.device(device))

    @property
    def weighted(self) -> bool:
        return self.store.weighted

    def weight_total(self) -> float:
        """The rows' number, or the sum of their weights."""
        if not self.store.weighted:
            return float(self.n_rows)
        return sum(self.store.weight_sums.get(code, 0.0) for code in self.folds)

    def class_counts(self, n_classes: int) -> torch.Tensor:
        counts = np.zeros(n_classes, dtype=np.int64)
        for code in self.folds:
            known = self.store.class_counts.get(code, np.zeros(0, dtype=np.int64))[:n_classes]
            counts[:len(known)] += known
        return torch.from_numpy(counts)

    def _batch(self, arrays: dict[str, np.ndarray], keep: np.ndarray | None) -> Batch:
        if keep is not None:
            arrays = {name: values[keep] for name, values in arrays.items()}
        weight = torch.from_numpy(arrays["weight"]) if "weight" in arrays else None
        batch = Batch(torch.from_numpy(arrays["numeric"]), torch.from_numpy(arrays["categorical"].astype(np.int64)),
                      torch.from_numpy(arrays["target"]), weight)
        return batch.to(self.device)

    def _read(self, start: int, stop: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Rows ``start:stop`` of the store, and which of them are here (None: all)."""
        arrays = self.store.read(start, stop)
        fold = arrays["fold"]
        keep = np.isin(fold, list(self.folds))
        return arrays, None if keep.all() else keep

    def chunks(self) -> Iterator[tuple[Batch, np.ndarray]]:
        """These rows in store order, a window at a time, with their row numbers in the file."""
        step = self.window_blocks * BLOCK_ROWS
        for start in range(0, self.store.n_rows, step):
            arrays, keep = self._read(start, min(start + step, self.store.n_rows))
            rows = arrays["row"] if keep is None else arrays["row"][keep]
            if len(rows):
                yield self._batch(arrays, keep), rows

    def map(self, function: Callable[[Batch], torch.Tensor]) -> tuple[torch.Tensor, Batch, np.ndarray]:
        """``function`` over every chunk, concatenated; with every row's target and weight (a Batch with
        no features) and row number. What validation and test scoring need, without all rows at once."""
        outputs, targets, weights, rows = [], [], [], []
        for batch, numbers in self.chunks():
            outputs.append(function(batch))
            targets.append(batch.target)
            if batch.weight is not None:
                weights.append(batch.weight)
            rows.append(numbers)
        empty = torch.zeros((0, 0))
        labels = Batch(empty, empty.long(), torch.cat(targets), torch.cat(weights) if weights else None)
        return torch.cat(outputs), labels, np.concatenate(rows)

    def take(self, positions: np.ndarray) -> Batch:
        """The rows at these positions among this part's rows (0 .. len-1), in the order given."""
        return self.take_numbered(positions)[0]

    def take_numbered(self, positions: np.ndarray) -> tuple[Batch, np.ndarray]:
        """:meth:`take`, with the rows' numbers in the file (0-based)."""
        positions = np.asarray(positions, dtype=np.int64)
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        store_rows = np.empty(len(wanted), dtype=np.int64)
        # Walk the fold codes once, mapping each wanted position to its row in the store.
        seen, found, step = 0, 0, 1 << 20
        for start in range(0, self.store.n_rows, step):
            if found == len(wanted):
                break
            fold = np.fromfile(self.store.directory / "fold", dtype=np.uint8, count=step, offset=start)
            here = np.flatnonzero(np.isin(fold, list(self.folds)))
            stop = int(np.searchsorted(wanted, seen + len(here)))
            store_rows[found:stop] = start + here[wanted[found:stop] - seen]
            found, seen = stop, seen + len(here)
        # One read per block that holds any of them (a random 100,000 of 10M rows touch most blocks).
        blocks = store_rows // BLOCK_ROWS
        parts = []
        for block in np.unique(blocks):
            start = int(block) * BLOCK_ROWS
            arrays = self.store.read(start, min(start + BLOCK_ROWS, self.store.n_rows))
            offsets = store_rows[blocks == block] - start
            parts.append({name: values[offsets] for name, values in arrays.items()})
        arrays = ({name: np.concatenate([part[name] for part in parts]) for name in self.store.shapes} if parts
                  else self.store.read(0, 0))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return self._batch(arrays, inverse), arrays["row"][inverse]

    def sample(self, n_rows: int, seed: int) -> Batch:
        """At most ``n_rows`` of these rows drawn at random (a fixed seed: the same rows each time), in store order."""
        return self.sample_numbered(n_rows, seed)[0]

    def sample_numbered(self, n_rows: int, seed: int) -> tuple[Batch, np.ndarray]:
        """:meth:`sample`, with the rows' numbers in the file (0-based)."""
        if n_rows >= self.n_rows:
            chosen = np.arange(self.n_rows)
        else:
            chosen = np.sort(np.random.default_rng(seed).choice(self.n_rows, n_rows, replace=False))
        return self.take_numbered(chosen)

    def epoch_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch's batches: blocks in a shuffled order, a window of them read at a time, its rows
        drawn in a shuffled order; batches have the sizes :func:`batch_bounds` gives, so steps per
        epoch are as in memory.

        A window is read into one array per column and each batch gathered from it by index: no
        shuffled copy of the window (the rows left over at its end, fewer than a batch, are carried
        into the next batch).
        """
        n_blocks = math.ceil(self.store.n_rows / BLOCK_ROWS)
        blocks = torch.randperm(n_blocks, generator=generator).tolist()
        sizes = [stop - start for start, stop in batch_bounds(self.n_rows, batch_size)]
        carry: dict[str, np.ndarray] | None = None  # rows of earlier windows not batched yet
        next_size = 0
        for first in range(0, n_blocks, self.window_blocks):
            arrays = self._read_blocks(blocks[first:first + self.window_blocks])
            here = np.flatnonzero(np.isin(arrays["fold"], list(self.folds)))
            order = here[torch.randperm(len(here), generator=generator).numpy()]
            position = 0
            while next_size < len(sizes):
                carried = 0 if carry is None else len(carry["fold"])
                need = sizes[next_size] - carried
                if len(order) - position < need:
                    break
                rows = {name: values[order[position:position + need]] for name, values in arrays.items()}
                position += need
                if carry is not None:
                    rows = {name: np.concatenate([carry[name], values]) for name, values in rows.items()}
                    carry = None
                next_size += 1
                yield self._batch(rows, None)
            if position < len(order):
                rest = {name: values[order[position:]] for name, values in arrays.items()}
                carry = rest if carry is None else {name: np.concatenate([carry[name], rest[name]]) for name in rest}
        assert next_size == len(sizes), "the store's rows did not fill the epoch's batches"

    def _read_blocks(self, blocks: list[int]) -> dict[str, np.ndarray]:
        """Every row of these blocks, in this order, one array per column (each file opened once)."""
        spans = [(block * BLOCK_ROWS, min((block + 1) * BLOCK_ROWS, self.store.n_rows)) for block in blocks]
        total = sum(stop - start for start, stop in spans)
        out = {}
        for name, (dtype, width) in self.store.shapes.items():
            values = np.empty((total, width) if name in ("numeric", "categorical") else total, dtype=dtype)
            flat = values.reshape(-1).view(np.uint8)
            row_bytes = width * dtype.itemsize
            with open(self.store.directory / name, "rb") as file:
                offset = 0
                for start, stop in spans:
                    file.seek(start * row_bytes)
                    wanted = (stop - start) * row_bytes
                    if file.readinto(flat[offset:offset + wanted].data) != wanted:
                        raise OSError(f"the row store file {file.name} is shorter than the rows written to it")
                    offset += wanted
            out[name] = values
        return out
