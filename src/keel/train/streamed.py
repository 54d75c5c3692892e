"""Training on a file larger than the memory budget (``data.memory_budget``): never the whole table at once.

Two passes over the file, a chunk at a time:

1. The scan: each labelled row is assigned to training, validation (or its bagging fold) or test
   by a seeded draw of its own (a split_by group's hash instead, so a group stays together); a
   uniform sample of the training and validation rows is kept (bottom-k of random keys: the same
   sample whatever the chunk size); category values are counted exactly on the training rows; the
   target's distinct labels are collected; the file's fingerprint is hashed.
2. The write: every labelled row is transformed with the preprocessing fitted on the sample (the
   category vocabularies from the exact counts) and appended to a row store on disk
   (keel.train.store), training and validation rows to one, test rows to another.

Training then reads the store a window at a time (shuffled blocks), and validation, calibration,
the test metrics and permutation importance read it in chunks or samples. What differs from a run
in memory: the split is a draw per row (not stratified, and the part sizes are near the fractions,
not exact); the column types, the number scalers, binary columns and a regression target's scale
come from the sample; ``training.order_by`` needs every row's time at once and is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from keel.config import Config, TrainingConfig, from_preset
from keel.data.io import TableSize, read_chunks, read_table, table_size
from keel.data.preprocess import Preprocessor, TargetEncoder
from keel.data.schema import (
    declared_task,
    declared_written,
    infer_schema,
    infer_task,
    integer_classes_note,
    require_column,
    spaced_names,
    written_columns,
)
from keel.data.values import category_strings, missing_values, row_weights
from keel.errors import ConfigError, DataError
from keel.evaluate.predictions import Predictions
from keel.model import Model
from keel.train.calibration import MAX_ROWS, validation_sample
from keel.train.callbacks import Notes, Reporter
from keel.train.distributed import Ranks, gather
from keel.train.prepared import PreparedData
from keel.train.store import BLOCK_ROWS, DiskRows, RowStore
from keel.train.trainer import Batch

# The rows the preprocessing is fitted on: a uniform sample of at most this many training and
# validation rows (fewer when the budget is small). Quantile knots, medians and scales from
# 500,000 rows are within a fraction of a percent of the whole column's.
SAMPLE_ROWS = 500_000
# A column's category counts stop past this many distinct values; its vocabulary then comes from
# the sample (a column of 100,000 distinct strings is an id or free text, not a category).
MAX_COUNTED_VALUES = 100_000
# A classification target with more labels than this is refused when streamed.
MAX_LABELS = 10_000
# The test rows whose predictions a streamed run keeps (and scores): all of them up to this many,
# else a seeded sample (the report draws from them; 10M rows x 50 classes would be 4 GB).
MAX_TEST_ROWS = 500_000
# Shares of the budget: the chunk of raw rows a pass holds (a sixteenth: parsing a chunk takes about
# four times its DataFrame's size, and the transform makes a float64 and a float32 copy of it), the
# sample, and the training window of store rows.
_CHUNK_SHARE, _SAMPLE_SHARE, _WINDOW_SHARE = 1 / 16, 1 / 8, 1 / 4
# An uncompressed text file's DataFrame is at most this many times the file's size: a one-character
# cell (2 bytes with its delimiter) becomes a Python string of about 58 bytes, a number at most 8.
_MAX_TEXT_GROWTH = 100
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json")
# The draws' seeds: a stream for the parts and one for the sample's keys, from the run's seed.
_PART_STREAM, _KEY_STREAM = 1, 2
_TRAIN, _VALIDATION, _TEST, _UNLABELLED = 0, 1, 255, 254


def streaming_plan(source: Any, settings: Config, delimiter: str | None = None,
                   encoding: str | None = None) -> "Plan | None":
    """How a file would be streamed, or None when it fits the memory budget (or is a DataFrame).

    The table's size in memory is estimated from a sample of its rows (keel.data.io.table_size);
    a run needs about twice that (the table and its transformed copy).
    """
    if isinstance(source, pd.DataFrame) or not isinstance(source, (str, os.PathLike)):
        return None
    budget = settings.data.budget_bytes
    path = Path(source)
    if (path.suffix.lower() in _TEXT_SUFFIXES and path.is_file()
            and 2 * _MAX_TEXT_GROWTH * path.stat().st_size <= budget):
        return None  # fits whatever its cells are: no sample to read before the file is read whole
    size = table_size(source, delimiter=delimiter, encoding=encoding)
    if 2 * size.frame_bytes <= budget:
        return None
    return plan_for(size, budget, delimiter, encoding)


def plan_for(size: TableSize, budget: int, delimiter: str | None, encoding: str | None,
             most_chunk_rows: int | None = None) -> "Plan":
    """Chunks and sample from the budget's shares (chunks of at least 1,024 rows, or of at most
    ``most_chunk_rows`` when given: data-parallel ranks need many small ones)."""
    row_bytes = max(size.row_bytes, 1.0)
    chunk_rows = int(budget * _CHUNK_SHARE / row_bytes)
    chunk_rows = max(1024, chunk_rows) if most_chunk_rows is None else max(1, min(chunk_rows, most_chunk_rows))
    return Plan(budget=budget, size=size, chunk_rows=chunk_rows,
                sample_rows=max(1000, min(SAMPLE_ROWS, int(budget * _SAMPLE_SHARE / row_bytes))),
                delimiter=delimiter, encoding=encoding)


@dataclass(frozen=True)
class Plan:
    """Chunk and sample sizes of a streamed run, from its budget and the file's estimated size."""

    budget: int
    size: TableSize
    chunk_rows: int
    sample_rows: int
    delimiter: str | None = None  # a CSV's, as given (read_chunks sniffs it when None)
    encoding: str | None = None

    def chunks(self, path: str | os.PathLike[str], columns: list[str] | None = None,
               text: list[str] | None = None, shard: tuple[int, int] | None = None) -> Iterator[pd.DataFrame]:
        """The file's rows (of ``columns``, or all; ``text`` columns as written), a chunk at a time
        (``shard``: a data-parallel rank's chunks alone; see read_chunks)."""
        return read_chunks(path, rows=self.chunk_rows, columns=columns, delimiter=self.delimiter,
                           encoding=self.encoding, text=text, shard=shard)

    def window_rows(self, row_bytes: int) -> int:
        """Store rows a training window holds: a share of the budget, a whole number of blocks."""
        rows = int(self.budget * _WINDOW_SHARE / max(row_bytes, 1))
        return max(BLOCK_ROWS, rows - rows % BLOCK_ROWS)

    def describe(self) -> str:
        size = self.size
        return (f"streaming {size.file_bytes / 1e6:,.0f} MB ({'' if size.exact else 'about '}{size.rows:,} rows, about "
                f"{size.frame_bytes / 1e6:,.0f} MB as a table) within data.memory_budget {self.budget / 1e6:,.0f} MB: "
                f"read in chunks of {self.chunk_rows:,} rows, preprocessing fitted on a sample of up to "
                f"{self.sample_rows:,} rows (category vocabularies on exact counts), training from a store on disk")


@dataclass
class Scan:
    """What the first pass learns about the file."""

    source: str
    columns: list[str]
    n_rows: int = 0
    n_unlabelled: int = 0
    parts: dict[int, int] = field(default_factory=dict)  # rows per part code
    sample: pd.DataFrame | None = None  # training and validation rows, by file row
    sample_keys: np.ndarray | None = None
    sample_parts: np.ndarray | None = None  # the part code of each sample row
    labels: dict[str, Any] | None = field(default_factory=dict)  # canonical spelling -> first value; None: too many
    counts: dict[str, dict[str, int] | None] = field(default_factory=dict)  # column -> value -> training rows
    partial: set[str] = field(default_factory=set)  # columns left uncounted in a chunk where they read as numbers
    text: set[str] = field(default_factory=set)  # columns some chunk typed as text
    typed: set[str] = field(default_factory=set)  # columns some chunk typed otherwise (numbers, booleans, dates)
    n_fitted: int = 0  # the rows the counts are over
    fingerprint: str = ""


class Streamer:
    """The two passes of a streamed run over one file, with the part each row belongs to."""

    def __init__(self, path: str | os.PathLike[str], settings: Config, plan: Plan, test_file: bool,
                 ranks: Ranks | None = None) -> None:
        self.path, self.settings, self.plan = Path(path), settings, plan
        # In a data-parallel run each rank reads its own chunks; the scan's findings are merged
        # across the ranks, so every rank fits the same preprocessing (keel.train.sharded).
        self.ranks = ranks
        self.training: TrainingConfig = settings.training
        training = self.training
        if training.order_by is not None:
            raise ConfigError(
                f"training.order_by holds out the latest rows, which needs every row's time at once, and {path} is "
                f"streamed (its table would take more than data.memory_budget, {plan.budget / 1e6:,.0f} MB). Raise "
                "data.memory_budget, or split the file by time yourself and pass the latest rows with --test.")
        # bagging auto trains one network here: a file larger than memory is no small table.
        self.networks = 1 if training.bagging == "auto" else training.bagging
        self.bagged = self.networks > 1 and training.validation_split > 0
        self.target = str(settings.target)
        self.test_share = 0.0 if test_file else training.test_split  # test rows from their own file
        # CSV columns read as written in every chunk: pandas types each chunk on its own, so an id
        # column holds 42 in a chunk of digits and "00042" elsewhere, and its hash (its part) would
        # move. The split_by column from the first pass; columns typed both ways once the scan has
        # seen them (mixed()).
        self.text = [training.split_by] if training.split_by is not None else []
        self.text += [name for name in declared_written(settings) if name not in self.text]  # as in read_table

    def chunks(self, columns: list[str] | None = None) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
        """Each chunk (of ``columns``, or all), with its rows' part codes and sample keys: the same
        draws on every pass."""
        if self.ranks is not None:  # this rank's chunks; each one's draws seeded by its first row
            seed = self.training.seed
            for chunk in self.plan.chunks(self.path, columns, self.text, (self.ranks.rank, self.ranks.world)):
                first = int(chunk.index[0])
                draws = np.random.default_rng([seed, _PART_STREAM, first]).random(len(chunk))
                keys = np.random.default_rng([seed, _KEY_STREAM, first]).random(len(chunk))
                yield chunk, self._parts(chunk, draws), keys
            return
        parts_rng = np.random.default_rng([self.training.seed, _PART_STREAM])
        keys_rng = np.random.default_rng([self.training.seed, _KEY_STREAM])
        for chunk in self.plan.chunks(self.path, columns, self.text):
            draws, keys = parts_rng.random(len(chunk)), keys_rng.random(len(chunk))
            yield chunk, self._parts(chunk, draws), keys

    def _parts(self, chunk: pd.DataFrame, draws: np.ndarray) -> np.ndarray:
        training = self.training
        require_column(chunk, self.target, "target")
        if training.split_by is not None:  # a group's rows all go where its id's hash says
            require_column(chunk, training.split_by, "training.split_by")
            spelled = category_strings(chunk[training.split_by])
            spelled[spelled == None] = "\0missing"  # noqa: E711  (not the id "None")
            ids = spelled.astype(str)
            key = f"keel{training.seed % 10**12:012d}"
            draws = pd.util.hash_array(ids, hash_key=key).astype(np.float64) / 2.0**64
        parts = np.full(len(chunk), _TRAIN, dtype=np.uint8)
        test = self.test_share
        pool = draws >= test
        parts[~pool] = _TEST
        within = (draws[pool] - test) / max(1.0 - test, 1e-12)  # uniform on [0, 1) again
        if self.bagged:
            parts[pool] = np.minimum((within * self.networks).astype(np.int64), self.networks - 1)
        else:
            parts[pool] = np.where(within < training.validation_split, _VALIDATION, _TRAIN)
        parts[missing_values(chunk[self.target])] = _UNLABELLED
        return parts

    def fitted(self, parts: np.ndarray) -> np.ndarray:
        """Rows the preprocessing learns from: the training rows; with bagging, every fold's."""
        return parts < _UNLABELLED - 1 if self.bagged else parts == _TRAIN

    def scan(self, reporter: Reporter) -> Scan:
        """The first pass."""
        scan: Scan | None = None
        digest = hashlib.sha256()
        special = {self.target, self.training.weight_column, self.training.split_by}
        with reporter.step(f"scanning {self.path}") as advance:
            for chunk, parts, keys in self.chunks():
                if scan is None:
                    scan = Scan(str(self.path), [str(name) for name in chunk.columns])
                    digest.update(json.dumps([[str(n), str(t)] for n, t in chunk.dtypes.items()]).encode())
                _hash_rows(digest, chunk)
                scan.n_rows += len(chunk)
                for code, count in zip(*np.unique(parts, return_counts=True)):
                    scan.parts[int(code)] = scan.parts.get(int(code), 0) + int(count)
                self._collect_labels(scan, chunk[self.target][parts != _UNLABELLED])
                fitted = self.fitted(parts)
                scan.n_fitted += int(fitted.sum())
                for name in chunk.columns:
                    series = chunk[name]
                    textual = pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)
                    if textual:
                        scan.text.add(name)
                    elif series.notna().any():  # a chunk where a column is all missing says nothing of its type
                        scan.typed.add(name)
                    if name in special or name in scan.counts and scan.counts[name] is None:
                        continue
                    if not textual and not isinstance(series.dtype, pd.CategoricalDtype):
                        # Counting every number column would hold 100,000 spellings each; a text column
                        # whose chunk holds only digits and blanks reads as numbers here, so it is
                        # recounted, as text, if it turns out to be a category (recount()).
                        scan.partial.add(name)
                        continue
                    _count(scan.counts, name, series[fitted])
                pool = (parts != _TEST) & (parts != _UNLABELLED)
                _keep_sample(scan, chunk[pool], keys[pool], parts[pool], self.plan.sample_rows)
                advance(1)
        if scan is not None:
            scan.fingerprint = digest.hexdigest()
        if self.ranks is not None:  # a rank may hold no chunk at all (more ranks than chunks)
            scan = merged_scans(gather(scan), self.plan.sample_rows)
        assert scan is not None  # read_chunks yields at least one chunk or raises
        scan.n_unlabelled = scan.parts.get(_UNLABELLED, 0)
        return scan

    def mixed(self, scan: Scan) -> list[str]:
        """Columns some chunks typed as text and others not: read as text from now on (``self.text``)."""
        mixed = sorted((scan.text & scan.typed) - set(self.text))
        self.text += mixed
        return mixed

    def recount(self, scan: Scan, names: list[str], reporter: Reporter, labels: bool = False) -> None:
        """Count these columns' values on the training rows again (``labels``: collect the target's
        labels again), every chunk read with the final text columns: a pass over them alone (and
        what the part draws need)."""
        needed = [self.target, *(name for name in (self.training.split_by,) if name is not None)]
        columns = [name for name in scan.columns if name in set(names) | set(needed)]
        for name in names:
            scan.counts.pop(name, None)
        if labels:
            scan.labels = {}
        what = [*names, *([self.target] if labels else [])]
        with reporter.step(f"counting the values of {what} in {self.path}"):
            for chunk, parts, _ in self.chunks(columns):
                fitted = self.fitted(parts)
                for name in names:
                    _count(scan.counts, name, chunk[name][fitted])
                if labels:
                    self._collect_labels(scan, chunk[self.target][parts != _UNLABELLED])
        if self.ranks is not None:  # every rank counted its own chunks: the sums, on every rank
            shares = gather(({name: scan.counts.get(name) for name in names}, scan.labels if labels else None))
            for name in names:
                scan.counts[name] = _summed([share[0].get(name) for share in shares])
            if labels:
                scan.labels = _merged_labels([share[1] for share in shares])

    def _collect_labels(self, scan: Scan, target: pd.Series) -> None:
        if scan.labels is None:
            return
        values = target.drop_duplicates()
        for spelled, value in zip(category_strings(values), values.tolist()):
            if spelled is not None and spelled not in scan.labels:
                scan.labels[spelled] = value
        if len(scan.labels) > MAX_LABELS:
            scan.labels = None


def merged_scans(scans: list[Scan | None], sample_rows: int) -> Scan:
    """The scan of the whole file from the ranks' scans of their chunks (in rank order): sums, unions,
    and the ``sample_rows`` rows with the smallest keys of all (the sample one scan would keep)."""
    present = [scan for scan in scans if scan is not None]
    merged = Scan(present[0].source, present[0].columns)
    digest = hashlib.sha256()
    for scan in present:
        merged.n_rows += scan.n_rows
        merged.n_fitted += scan.n_fitted
        for code, count in scan.parts.items():
            merged.parts[code] = merged.parts.get(code, 0) + count
        merged.partial |= scan.partial
        merged.text |= scan.text
        merged.typed |= scan.typed
        digest.update(scan.fingerprint.encode())
    merged.fingerprint = digest.hexdigest()
    merged.labels = _merged_labels([scan.labels for scan in present])
    for name in {name for scan in present for name in scan.counts}:
        merged.counts[name] = _summed([scan.counts[name] for scan in present if name in scan.counts])
    samples = [scan for scan in present if scan.sample is not None and len(scan.sample)]
    if samples:
        rows = pd.concat([scan.sample for scan in samples if scan.sample is not None])
        keys = np.concatenate([scan.sample_keys for scan in samples if scan.sample_keys is not None])
        parts = np.concatenate([scan.sample_parts for scan in samples if scan.sample_parts is not None])
        keep = np.argpartition(keys, sample_rows)[:sample_rows] if len(keys) > sample_rows else np.arange(len(keys))
        keep = keep[np.argsort(rows.index.to_numpy()[keep], kind="stable")]  # in file order, as one scan keeps them
        merged.sample, merged.sample_keys, merged.sample_parts = rows.iloc[keep], keys[keep], parts[keep]
    else:
        merged.sample = present[0].sample
        merged.sample_keys, merged.sample_parts = present[0].sample_keys, present[0].sample_parts
    return merged


def _summed(counts: list[dict[str, int] | None]) -> dict[str, int] | None:
    """Value counts added up, or None when any rank gave up counting or the sum holds too many values."""
    total: dict[str, int] = {}
    for count in counts:
        if count is None:
            return None
        for value, n in count.items():
            total[value] = total.get(value, 0) + n
    return None if len(total) > MAX_COUNTED_VALUES else total


def _merged_labels(labels: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The ranks' labels (each spelling's first value, in rank order), or None past MAX_LABELS."""
    merged: dict[str, Any] = {}
    for each in labels:
        if each is None:
            return None
        for spelled, value in each.items():
            merged.setdefault(spelled, value)
    return None if len(merged) > MAX_LABELS else merged


def release_memory() -> None:
    """Give the memory a pass freed back to the system: pyarrow's pool keeps what it freed, and glibc's
    heap keeps freed small blocks until trimmed; otherwise each pass's peak stays in the process's
    resident memory and the next one's adds to it."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim this way
        pass


def _hash_rows(digest: Any, chunk: pd.DataFrame) -> None:
    try:
        hashes = pd.util.hash_pandas_object(chunk, index=True)
    except (TypeError, ValueError):  # cells pandas cannot hash (lists, dicts): hash their text
        hashes = pd.util.hash_pandas_object(chunk.astype(str), index=True)
    digest.update(np.ascontiguousarray(hashes.to_numpy()).tobytes())


def _count(counts: dict[str, dict[str, int] | None], name: str, series: pd.Series) -> None:
    """Add a chunk's training values of a column to its counts (none past MAX_COUNTED_VALUES)."""
    known = counts.setdefault(name, {})
    if known is None:
        return
    spelled = pd.Series(category_strings(series), dtype=object).value_counts(dropna=True)
    for value, count in spelled.items():
        known[value] = known.get(value, 0) + int(count)
    if len(known) > MAX_COUNTED_VALUES:
        counts[name] = None


def _keep_sample(scan: Scan, rows: pd.DataFrame, keys: np.ndarray, parts: np.ndarray, size: int) -> None:
    """Keep the ``size`` rows with the smallest keys seen so far: a uniform sample of every row."""
    if scan.sample_keys is not None and len(scan.sample_keys) >= size:
        # Only rows under the largest kept key can enter: few of a chunk once the sample is full.
        entering = keys < scan.sample_keys.max()
        rows, keys, parts = rows[entering], keys[entering], parts[entering]
    if scan.sample is not None:
        assert scan.sample_keys is not None and scan.sample_parts is not None
        rows = pd.concat([scan.sample, rows])
        keys = np.concatenate([scan.sample_keys, keys])
        parts = np.concatenate([scan.sample_parts, parts])
    if len(keys) > size:
        keep = np.sort(np.argpartition(keys, size)[:size])
        rows, keys, parts = rows.iloc[keep], keys[keep], parts[keep]
    scan.sample, scan.sample_keys, scan.sample_parts = rows, keys, parts


@dataclass
class Fitted:
    """What the scan and the fitting give: the preprocessing, and the part counts of the file."""

    scan: Scan
    sample: pd.DataFrame
    schema: Any
    preprocessor: Preprocessor
    target: TargetEncoder
    special: set[str]
    n_train: int
    n_validation: int
    n_test: int


def fit_on_scan(streamer: Streamer, settings: Config, notes: Notes, reporter: Reporter) -> Fitted:
    """Scan the file (each rank its chunks, merged, in a data-parallel run) and fit the schema, the
    target and the preprocessing on the scan's sample, with category vocabularies from exact counts."""
    path, training = streamer.path, streamer.training
    scan = streamer.scan(reporter)
    release_memory()
    mixed = streamer.mixed(scan)
    if streamer.target in mixed:  # its labels were spelled chunk by chunk ("01" as 1): collect them as written
        streamer.recount(scan, [], reporter, labels=True)
    sample = scan.sample
    assert sample is not None
    sample = sample.copy()
    sample.attrs["source"] = scan.source
    if not len(sample):
        raise DataError(f"{path} has no labelled rows for training: every row's {streamer.target!r} is missing.",
                        file=str(path), column=streamer.target)
    target = _target_encoder(scan, settings)
    special = {name for name in (training.split_by, training.weight_column) if name is not None}
    if training.weight_column is not None:
        require_column(sample, training.weight_column, "training.weight_column")
    parts = scan.parts
    empty = [fold for fold in range(streamer.networks) if streamer.bagged and not parts.get(fold, 0)]
    if empty:  # as pipeline._bags refuses in memory: those networks would train without validation rows
        hashed = (f" (each training.split_by {training.split_by!r} group goes to the fold its id's hash names, so "
                  "a smaller number may still leave one empty)" if training.split_by is not None else "")
        raise ConfigError(f"training.bagging is {streamer.networks}{from_preset(settings, 'training', 'bagging')}, "
                          f"but {len(empty)} of its folds hold no rows of "
                          f"{path}{hashed}: those networks would have no validation rows. Set training.bagging "
                          "lower, or to auto (a streamed file trains one network).")
    n_train = parts.get(_TRAIN, 0) if not streamer.bagged else sum(parts.get(i, 0) for i in range(streamer.networks))
    n_validation = 0 if streamer.bagged else parts.get(_VALIDATION, 0)
    n_test = parts.get(_TEST, 0)
    schema = infer_schema(sample, settings.model_copy(update={"task": target.task}), exclude=special)
    if (classes_note := integer_classes_note(target.labels, target.name, declared_task(settings), target.task,
                                             categorical=isinstance(sample[target.name].dtype, pd.CategoricalDtype))):
        notes.append(classes_note)
    for name, reason in schema.dropped.items():
        judged = "" if name in (settings.drop_columns or []) else f" (judged on a sample of {len(sample):,} rows)"
        notes.append(f"dropped column {name!r}: {reason}{judged}")
    for note in schema.notes:
        notes.append(note)
    assert scan.sample_parts is not None
    fitted_rows = np.flatnonzero(streamer.fitted(scan.sample_parts))
    if schema.task == "regression":
        target.fit(sample[schema.target].iloc[fitted_rows], _sample_weights(sample, training.weight_column, fitted_rows))
    with reporter.step(f"preprocessing: fitting on {len(fitted_rows):,} sampled rows x {len(schema.features)} features"):
        preprocessor = Preprocessor(schema, settings.preprocessing, settings.text, settings.image).fit(sample, rows=fitted_rows)
    for note in preprocessor.notes:
        notes.append(note)
    partial = [transform.name for transform in preprocessor.categorical if transform.name in scan.partial | set(mixed)]
    if partial:
        streamer.recount(scan, partial, reporter)
    from_sample = _exact_vocabularies(preprocessor, scan)
    if from_sample:
        notes.append(f"category column(s) {from_sample} hold more than {MAX_COUNTED_VALUES:,} distinct values: their "
                     "vocabularies come from the sample, not exact counts")
    return Fitted(scan, sample, schema, preprocessor, target, special, n_train, n_validation, n_test)


def prepare_streamed(path: str | os.PathLike[str], test: Any, settings: Config, training: TrainingConfig,
                     plan: Plan, notes: Notes, reporter: Reporter, device: torch.device,
                     directory: Path) -> tuple[PreparedData, dict[str, str | None], pd.DataFrame]:
    """The scan, the fitting and the write; returns the data for :func:`train_networks`, the
    fingerprints of the data and test data, and the sample (the run record describes its columns).

    The row stores go in ``directory``, which the caller removes when the run ends.
    """
    streamer = Streamer(path, settings, plan, test_file=test is not None)
    notes.append(plan.describe())
    fit = fit_on_scan(streamer, settings, notes, reporter)
    scan, sample, preprocessor, target, schema = fit.scan, fit.sample, fit.preprocessor, fit.target, fit.schema
    special, n_train, n_validation, n_test = fit.special, fit.n_train, fit.n_validation, fit.n_test
    regression = schema.task == "regression"
    weighted = training.weight_column is not None
    width, n_categories = preprocessor.numeric_width, len(preprocessor.categorical)
    store_row_bytes = width * 4 + n_categories * 4 + 8 + 8 + 1 + (4 if weighted else 0)
    _check_room(directory, (scan.n_rows - scan.n_unlabelled) * store_row_bytes)
    pool = RowStore(directory / "train", width, n_categories, regression, weighted)
    tests = RowStore(directory / "test", width, n_categories, regression, weighted)
    test_fingerprint = None
    try:
        with reporter.step(f"preprocessing {scan.n_rows - scan.n_unlabelled:,} rows into {directory}") as advance:
            for chunk, chunk_parts, _ in streamer.chunks():
                _write(chunk, chunk_parts, preprocessor, target, training, pool, tests)
                advance(1)
        pool.finish()
        release_memory()
        if test is not None:
            test_fingerprint = _write_test(test, plan, sorted({*streamer.text, *written_columns(schema)}), preprocessor,
                                           target, schema.feature_names, training, tests, notes)
            n_test = tests.n_rows
        tests.finish()
        preprocessor.finish_training()
        for note in preprocessor.notes:  # image columns say how they were read once every row is
            if note not in notes:
                notes.append(note)
    except OSError as error:  # a full disk, most often
        raise ConfigError(f"cannot write the rows of {path} to {directory}: {error.strerror or error}. The store needs "
                          f"about {(scan.n_rows - scan.n_unlabelled) * store_row_bytes / 1e9:,.2f} GB; free space there "
                          "or set data.spill_directory to a disk with room.") from None
    notes.append(_describe_parts(n_train, n_validation, n_test, scan, streamer, test is not None))
    window = plan.window_rows(store_row_bytes)

    def rows(store: RowStore, folds: set[int], on: torch.device = device) -> DiskRows:
        return DiskRows(store, folds, window, on)

    if streamer.bagged:
        folds = list(range(streamer.networks))
        bags: list[tuple[Any, Any]] = [(rows(pool, set(folds) - {i}), rows(pool, {i})) for i in folds]
        fitted_store = rows(pool, set(folds))
    else:
        validation = rows(pool, {_VALIDATION})
        bags = [(rows(pool, {_TRAIN}), validation if len(validation) else None)]
        fitted_store = bags[0][0]
    cpu = torch.device("cpu")  # what is read after training meets the trained network there
    test_rows = rows(tests, {_TEST}, cpu)

    def calibration_rows(n_networks: int) -> tuple[Batch, list[np.ndarray] | None]:
        held = [validation.to(cpu) for _, validation in bags[:n_networks] if validation is not None]
        if not held:
            return rows(pool, set(), cpu).take(np.zeros(0, dtype=np.int64)), None
        share = max(1, MAX_ROWS // len(held))
        return stacked([part.take(validation_sample(len(part), share, training.seed)) for part in held])

    def test_predictions(model: Model) -> Predictions | None:
        if not len(test_rows):
            return None
        if len(test_rows) > MAX_TEST_ROWS:  # the predictions are kept for the report: a sample of them
            batch, numbers = test_rows.sample_numbered(MAX_TEST_ROWS, training.seed)
            return model._predictions(batch.numeric, batch.categorical, batch.target, batch.weight, numbers + 1)
        outputs, labels, numbers = test_rows.map(lambda batch: model._predict(batch.numeric, batch.categorical))
        return model._predictions_of(outputs, labels.target, labels.weight, numbers + 1)

    def held_out() -> tuple[Batch, str] | None:
        validation = bags[0][1]
        if len(bags) == 1 and validation is not None:
            return validation.to(cpu).sample(2000, training.seed), "validation"
        if len(test_rows) and (test is None or len(bags) > 1):  # bagged: a test file's rows, too
            return test_rows.sample(2000, training.seed), "test"
        return None

    record = {"frame": sample, "schema": schema, "excluded": special, "test_frame": None,
              "rows": {"train": n_train, "validation": n_validation, "test": n_test, "unlabelled": scan.n_unlabelled},
              "bags": [(len(train), 0 if validation is None else len(validation)) for train, validation in bags],
              "data_rows": scan.n_rows, "test_source": None if test is None else str(_source_name(test))}
    prepared = PreparedData(schema, preprocessor, target, bags=bags, fitted=fitted_store, n_test=n_test,
                            calibration_rows=calibration_rows, test_predictions=test_predictions,
                            held_out=held_out, record=record)
    return prepared, {"data": scan.fingerprint, "test": test_fingerprint}, sample


def _check_room(directory: Path, needed: int) -> None:
    """Refuse before the write pass when the store cannot fit where it goes (with 5% to spare)."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed * 1.05 > free:
        raise ConfigError(f"the rows to train on need about {needed / 1e9:,.2f} GB on disk in {directory}, which has "
                          f"{free / 1e9:,.2f} GB free; free space there or set data.spill_directory to a disk with room.")


def _source_name(test: Any) -> str:
    return test.attrs.get("source", "DataFrame") if isinstance(test, pd.DataFrame) else str(test)


def _sample_weights(sample: pd.DataFrame, column: str | None, rows: np.ndarray) -> np.ndarray | None:
    """The sampled rows' weights, for the target's scale: a weight that is no non-negative number counts 0 here
    (the chunk that holds it is refused with its file row when training reads it)."""
    if column is None:
        return None
    values = pd.to_numeric(sample[column].iloc[rows], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(values) & (values > 0), values, 0.0)


def _target_encoder(scan: Scan, settings: Config) -> TargetEncoder:
    """The task and labels from every labelled row's distinct target values (not the sample's)."""
    name = str(settings.target)
    if scan.labels is None:  # more distinct values than any classifier here: a quantity, or refused
        values = scan.sample[name] if scan.sample is not None else pd.Series(dtype=float)
        task = infer_task(values, name, declared_task(settings), scan.source)
        if task != "regression":
            raise DataError(f"target column {name!r} has more than {MAX_LABELS:,} distinct labels, too many classes "
                            "for a streamed run; declare task: regression if it is a quantity, or group the labels.",
                            file=scan.source, column=name)
    else:
        values = pd.Series(list(scan.labels.values()))
        task = infer_task(values, name, declared_task(settings), scan.source, distinct=True)
    encoder = TargetEncoder(name, task)
    if task != "regression":
        encoder.fit(values)
    return encoder


def _exact_vocabularies(preprocessor: Preprocessor, scan: Scan) -> list[str]:
    """Give each category column the vocabulary of its exact training counts; returns those without counts."""
    from_sample = []
    for transform in preprocessor.categorical:
        counts = scan.counts.get(transform.name)
        if counts is None:
            from_sample.append(transform.name)
            continue
        transform.fit_counts(counts, scan.n_fitted)
    return from_sample


def _write(chunk: pd.DataFrame, parts: np.ndarray, preprocessor: Preprocessor, target: TargetEncoder,
           training: TrainingConfig, pool: RowStore, tests: RowStore) -> None:
    labelled = parts != _UNLABELLED
    if not labelled.all():
        chunk, parts = chunk[labelled], parts[labelled]
    if not len(chunk):
        return
    features = preprocessor.transform(chunk)
    source = chunk.attrs.get("source")
    y = target.encode(chunk[target.name], source)
    weight = (row_weights(chunk[training.weight_column], training.weight_column, source)
              if training.weight_column is not None else None)
    rows = chunk.index.to_numpy()
    for store, keep in ((pool, parts != _TEST), (tests, parts == _TEST)):
        if keep.any():
            store.append(features.numeric[keep], features.categorical[keep], y[keep],
                         None if weight is None else weight[keep], parts[keep], rows[keep])


def _write_test(test: Any, plan: Plan, text: list[str], preprocessor: Preprocessor, target: TargetEncoder,
                features: list[str], training: TrainingConfig, tests: RowStore, notes: Notes) -> str:
    """Write the ``--test`` rows into the test store a chunk at a time; returns their fingerprint."""
    digest = hashlib.sha256()
    chunks: Iterator[pd.DataFrame]
    if isinstance(test, pd.DataFrame):
        test = read_table(test)  # names as strings, rows numbered 1..n, as every reader hands them over
        chunks = (test.iloc[start:start + plan.chunk_rows] for start in range(0, len(test), plan.chunk_rows))
    else:
        chunks = plan.chunks(test, text=text)
    dropped = 0
    for index, chunk in enumerate(chunks):
        if index == 0:
            digest.update(json.dumps([[str(n), str(t)] for n, t in chunk.dtypes.items()]).encode())
            source = chunk.attrs.get("source")
            require_column(chunk, target.name, "target")
            missing = [name for name in features if name not in chunk.columns]
            if missing:
                raise DataError(
                    f"the test data lacks the input column(s) {missing} that the model is trained on; add them "
                    f"(empty values are allowed) or drop them from the training data."
                    f"{spaced_names(missing, chunk.columns)}", file=source, column=missing[0])
            if training.weight_column is not None:
                require_column(chunk, training.weight_column, "training.weight_column")
        _hash_rows(digest, chunk)
        parts = np.full(len(chunk), _TEST, dtype=np.uint8)
        parts[missing_values(chunk[target.name])] = _UNLABELLED
        dropped += int((parts == _UNLABELLED).sum())
        _write(chunk, parts, preprocessor, target, training, tests, tests)
    if dropped:
        notes.append(f"dropped {dropped} row(s) of the test data with a missing {target.name!r}")
    return digest.hexdigest()


def _describe_parts(n_train: int, n_validation: int, n_test: int, scan: Scan, streamer: Streamer,
                    test_file: bool) -> str:
    training, bagged = streamer.training, streamer.bagged
    how = f"whole groups of {training.split_by!r} in each part" if training.split_by else "a random draw per row"
    pool = (f"{n_train} in {streamer.networks} folds for bagged networks, each trained on the other folds and "
            "validated on its own" if bagged else f"{n_train} for training, {n_validation} for validation")
    text = (f"rows: {pool}, {n_test} for test ({how}, not stratified: the data is streamed"
            f"{'; test rows from the test data' if test_file else ''})")
    if scan.n_unlabelled:
        text += f"; dropped {scan.n_unlabelled} row(s) of the training data with a missing {streamer.target!r}"
    return text


def stacked(batches: list[Batch]) -> tuple[Batch, list[np.ndarray] | None]:
    """Networks' validation rows one after another, and (with several) each network's positions there."""
    ends = np.cumsum([len(batch) for batch in batches])
    positions = [np.arange(end - len(batch), end) for batch, end in zip(batches, ends)] if len(batches) > 1 else None
    return _concatenate(batches), positions


def _concatenate(batches: list[Batch]) -> Batch:
    weight = None if batches[0].weight is None else torch.cat([batch.weight for batch in batches])  # type: ignore[misc]
    return Batch(torch.cat([batch.numeric for batch in batches]), torch.cat([batch.categorical for batch in batches]),
                 torch.cat([batch.target for batch in batches]), weight)


@contextlib.contextmanager
def row_directory(output: str | os.PathLike[str] | None, spill: str | None) -> Iterator[Path]:
    """The directory a streamed run's row stores live in, removed when the run ends (however it ends).

    With an output directory: ``.<name>.rows`` beside it, or ``.<name>-<hash of its path>.rows`` in
    ``data.spill_directory``; a stale one from a killed run is removed first (the output's lock
    guarantees no other run is using it). Without one: a fresh directory in ``data.spill_directory``
    or the system's temporary directory.

    Raises:
        ConfigError: The directory cannot be made (the spill directory is a file, is not writable, ...).
    """
    import tempfile

    try:
        if output is not None:
            out = Path(output).resolve()
            if spill is None:
                directory = out.parent / f".{out.name}.rows"
            else:
                tag = hashlib.sha256(str(out).encode()).hexdigest()[:12]
                directory = Path(spill) / f".{out.name}-{tag}.rows"
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        else:
            if spill is not None:
                Path(spill).mkdir(parents=True, exist_ok=True)
            directory = Path(tempfile.mkdtemp(prefix="keel-rows-", dir=spill))
    except OSError as error:
        where = f"data.spill_directory {spill!r}" if spill is not None else "beside the output directory"
        raise ConfigError(f"cannot make the directory a streamed run keeps its rows in ({where}): "
                          f"{error.strerror or error}; set data.spill_directory to a writable directory with room.") from None
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
