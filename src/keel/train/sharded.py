"""Data-parallel training from a file in which each rank reads only its share of the rows.

The file is cut into chunks: a Parquet file's row groups (rank r reads groups r, r + N, ...; only
those are read), or runs of rows (CSV, JSON Lines, a Parquet file with fewer row groups than ranks:
rank r keeps chunks r, r + N, ..., though the text is still parsed to find them). Each row's part
(training, validation, test) is a seeded draw of its own, as in a streamed run (keel.train.streamed).

The preprocessing is fitted once on what all ranks saw: every rank scans its chunks (a uniform sample
by the smallest random keys, exact counts of category values, the target's labels), the scans are
gathered and merged on every rank, and every rank fits the same preprocessing on the same merged sample
(the same computation on the same rows: the same fitted state, with nothing else to send). Each rank
then keeps in memory its own training rows, and every rank all the validation rows (so that each
epoch's score, and early stopping, are the same everywhere); the test rows are gathered on rank 0,
which scores them. Number-embedding bins and class weights come from a sample of the training rows
gathered from every rank. The ranks train on the same number of rows (the smallest share; a rank with
more leaves a seeded random few out), so their steps match.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from keel.config import Config, TrainingConfig
from keel.data.io import table_size
from keel.errors import ConfigError
from keel.evaluate.predictions import Predictions
from keel.model import Model
from keel.nn.numeric import BIN_SAMPLE
from keel.train.callbacks import Notes, Reporter
from keel.train.distributed import Ranks, gather, gather_to
from keel.train.prepared import PreparedData
from keel.train.store import BLOCK_ROWS, DiskRows, RowStore
from keel.train.streamed import (
    _TEST,
    _TRAIN,
    _VALIDATION,
    MAX_TEST_ROWS,
    Plan,
    Streamer,
    _check_room,
    _concatenate,
    _source_name,
    _write,
    _write_test,
    fit_on_scan,
    plan_for,
    stacked,
)
from keel.train.trainer import Batch, Rows

# Chunks per rank, at least, so that the ranks' shares of a file cut in runs of rows stay close.
_CHUNKS_PER_RANK = 16


def sharding_plan(path: str | os.PathLike[str], settings: Config, ranks: Ranks, delimiter: str | None,
                  encoding: str | None) -> Plan:
    """How the ranks read ``path``: chunks small enough that each rank gets many, and the sample."""
    size = table_size(path, delimiter=delimiter, encoding=encoding)
    # No 1,024-row floor: a small file's chunks are small, so that every N-th one still shares it evenly.
    most = math.ceil(size.rows / (_CHUNKS_PER_RANK * ranks.world))
    return plan_for(size, settings.data.budget_bytes, delimiter, encoding, most_chunk_rows=most)


def prepare_sharded(path: str | os.PathLike[str], test: Any, settings: Config, training: TrainingConfig,
                    plan: Plan, notes: Notes, reporter: Reporter, device: torch.device, directory: Path,
                    ranks: Ranks) -> tuple[PreparedData, pd.DataFrame, str]:
    """This rank's rows of ``path`` and the merged fit, for :func:`keel.train.pipeline.train_networks`;
    returns the data, the merged sample (the run record describes its columns) and the data's
    fingerprint. ``directory`` holds this rank's rows on their way into memory; the caller removes it."""
    streamer = Streamer(path, settings, plan, test_file=test is not None, ranks=ranks)
    fit = fit_on_scan(streamer, settings, notes, reporter)
    preprocessor, target, schema, scan = fit.preprocessor, fit.target, fit.schema, fit.scan
    regression, weighted = schema.task == "regression", training.weight_column is not None
    width, n_categories = preprocessor.numeric_width, len(preprocessor.categorical)
    pool = RowStore(directory / "train", width, n_categories, regression, weighted)
    tests = RowStore(directory / "test", width, n_categories, regression, weighted)
    _check_room(directory, scan.n_rows // ranks.world * (width * 4 + n_categories * 4 + 32))
    with reporter.step(f"preprocessing this rank's rows of {path}"):
        for chunk, parts, _ in streamer.chunks():
            _write(chunk, parts, preprocessor, target, training, pool, tests)
    pool.finish()
    if test is not None and ranks.rank == 0:  # a test file: rank 0 alone reads and scores it
        _write_test(test, plan, streamer.text, preprocessor, target, schema.feature_names, training, tests, notes)
    tests.finish()
    cpu = torch.device("cpu")

    def rows(store: RowStore, folds: set[int]) -> tuple[Batch, np.ndarray]:
        held = DiskRows(store, folds, BLOCK_ROWS, cpu)
        return held.take_numbered(np.arange(len(held)))

    folds = list(range(streamer.networks)) if streamer.bagged else [_TRAIN]
    bags: list[tuple[Batch, Batch | None]]
    if streamer.bagged:
        bags = [(rows(pool, set(folds) - {fold})[0].to(device), _everyone(rows(pool, {fold})[0]).to(device))
                for fold in folds]
    else:
        validation = _everyone(rows(pool, {_VALIDATION})[0])
        bags = [(rows(pool, {_TRAIN})[0].to(device), validation.to(device) if len(validation) else None)]
    if min(gather(len(bags[0][0]))) == 0:
        raise ConfigError(f"{path} has too few training rows for {ranks.world} data-parallel ranks: one of them holds "
                          f"none ({fit.n_train} in all). Train with fewer --nproc / --workers, or without.")
    own_fitted = DiskRows(pool, set(folds), BLOCK_ROWS, cpu)
    share = max(1, BIN_SAMPLE // ranks.world)  # bins and class weights: a sample of every rank's rows
    picked = np.sort(np.random.default_rng([training.seed, ranks.rank]).permutation(len(own_fitted))[:share])
    fitted = _everyone(own_fitted.take(picked))
    own_test, numbers = rows(tests, {_TEST})
    if test is None:  # held-out test rows: each rank drew its own; rank 0 scores them all, in file order
        gathered = gather_to((own_test, numbers), 0)
        if gathered:
            numbers = np.concatenate([rows_ for _, rows_ in gathered])
            order = np.argsort(numbers, kind="stable")
            own_test, numbers = _concatenate([batch for batch, _ in gathered]).take(order), numbers[order]
    test_rows, test_numbers = (own_test, numbers) if ranks.rank == 0 else (own_test.take(np.zeros(0, np.int64)),
                                                                            numbers[:0])
    n_test = len(test_rows) if ranks.rank == 0 else fit.n_test
    notes.append(f"rows: {fit.n_train} for training, {fit.n_validation} for validation, {n_test} for test (a random "
                 f"draw per row, not stratified); data-parallel over {ranks.world} ranks, each reading its share of "
                 f"{path}: this rank holds {len(bags[0][0])} training rows, and every rank all "
                 f"{0 if bags[0][1] is None else len(bags[0][1])} validation rows"
                 + (f"; dropped {scan.n_unlabelled} row(s) with a missing {streamer.target!r}" if scan.n_unlabelled else ""))

    def calibration_rows(n_networks: int) -> tuple[Batch, list[np.ndarray] | None]:
        held = [validation.to(cpu) for _, validation in bags[:n_networks] if validation is not None]
        if not held:
            return fitted.take(np.zeros(0, dtype=np.int64)), None
        return stacked(held)

    def test_predictions(model: Model) -> Predictions | None:
        if not len(test_rows):
            return None
        rows_, numbers_ = test_rows, test_numbers
        if len(rows_) > MAX_TEST_ROWS:  # the predictions are kept for the report: a seeded sample of them
            picked = np.sort(np.random.default_rng(training.seed).permutation(len(rows_))[:MAX_TEST_ROWS])
            rows_, numbers_ = rows_.take(picked), numbers_[picked]
        return model._predictions(rows_.numeric, rows_.categorical, rows_.target, rows_.weight, numbers_ + 1)

    def held_out() -> tuple[Batch, str] | None:
        validation = bags[0][1]
        if len(bags) == 1 and validation is not None:
            return validation.to(cpu), "validation"
        if len(test_rows) and (test is None or len(bags) > 1):  # bagged: a test file's rows, too
            return test_rows, "test"
        return None

    record = {"frame": fit.sample, "schema": schema, "excluded": fit.special, "test_frame": None,
              "rows": {"train": fit.n_train, "validation": fit.n_validation, "test": n_test,
                       "unlabelled": scan.n_unlabelled},
              "bags": [(len(train), 0 if validation is None else len(validation)) for train, validation in bags],
              "data_rows": scan.n_rows, "test_source": None if test is None else str(_source_name(test))}
    prepared = PreparedData(schema, preprocessor, target, bags=list[tuple[Rows, Rows | None]](bags), fitted=fitted, n_test=n_test,
                            calibration_rows=calibration_rows, test_predictions=test_predictions,
                            held_out=held_out, record=record, sharded=True)
    return prepared, fit.sample, scan.fingerprint


def equal_share(rows: Batch, seed: int, ranks: Ranks) -> tuple[Batch, int, int]:
    """This rank's training rows cut to the smallest rank's count (a seeded random few left out), so that
    every rank runs the same steps; returns them, how many all ranks left out, and all ranks' rows."""
    counts = [int(count) for count in gather(len(rows))]
    least = min(counts)
    left_out = sum(counts) - least * ranks.world
    if len(rows) == least:
        return rows, left_out, sum(counts)
    kept = np.sort(np.random.default_rng([seed, ranks.rank, 1]).permutation(len(rows))[:least])
    return rows.take(kept), left_out, sum(counts)


def _everyone(rows: Batch) -> Batch:
    """Every rank's ``rows`` in rank order, on every rank."""
    return _concatenate(gather(rows))
