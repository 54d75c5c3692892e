"""The training pipeline: read, split, infer the schema, fit preprocessing, train, evaluate.

Everything the model learns from data comes from the non-test rows: column types from the training
and validation rows; fill values, scales, vocabularies and a regression target's scale from the
training rows (with bagging, from the training and validation pool that the folds share); number
embedding bins from each network's training rows. Only the task and the class labels are read from
every labelled row, since they define the question and stratify the split. The test rows are
touched once, to score the finished model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from keel.artifact import check_destination
from keel.cluster import check_backend, ray_module
from keel.config import (
    AUTO_BAGGING,
    AUTO_BINS,
    AUTO_BINS_ROWS,
    Config,
    ConfigSource,
    TrainingConfig,
    auto_bagging,
    auto_numeric_embedding_size,
    from_preset,
    load_config,
    with_target,
)
from keel.data.images import ImageTransform
from keel.data.io import TableSource, read_as_written, read_table
from keel.data.leaks import leak_notes
from keel.data.preprocess import Preprocessor, TargetEncoder
from keel.data.schema import (
    Schema,
    declared_task,
    declared_written,
    infer_schema,
    infer_target_task,
    integer_classes_note,
    require_column,
    spaced_names,
    written_columns,
)
from keel.data.spelling import label_shown
from keel.data.split import Split, fold_rows, split_rows
from keel.data.text import TextTransform
from keel.data.values import TARGET_ADVICE, missing_values, row_weights, to_numeric
from keel.errors import ConfigError, DataError, KeelError, KeelWarning
from keel.evaluate.importance import IMPORTANCE_REPEATS, IMPORTANCE_ROWS, shuffles_said
from keel.evaluate.predictions import Predictions
from keel.model import Model
from keel.nn.bag import BagInput
from keel.nn.losses import resolve_loss_name
from keel.nn.network import FirstLayerReuse, NetworkBag, NetworkSpec, TabularNetwork, predict_outputs
from keel.nn.numeric import BIN_SAMPLE, PiecewiseLinearEmbedding
from keel.nn.sentence import TextEncoder, TextInput
from keel.nn.vision import ImageEncoder, ImageInput
from keel.registry import lookup
from keel.train import distributed
from keel.train.calibration import calibrate, calibration_notes
from keel.train.callbacks import Notes, Reporter, TextReporter, epoch_share
from keel.train.checkpoint import RunCheckpoints, TrainerState, kill_point, output_lock
from keel.train.device import resolve_device, resolve_precision, step_work
from keel.train.guards import numeric_input_names
from keel.train.prepared import PreparedData
from keel.train.record import run_record
from keel.train.streamed import streaming_plan
from keel.train.threads import ThreadTuner, passes_budget
from keel.train.trainer import (
    AUTO_STEPS_PER_EPOCH,
    MIN_PATIENCE,
    Batch,
    History,
    Rows,
    Trainer,
    epoch_pace,
    numeric_guard,
    resolve_batch_size,
    resolve_patience,
    resolve_steps_per_epoch,
)


def fit(data: TableSource, target: str | int | None = None, config: ConfigSource = None, *,
        test: TableSource | None = None, quiet: bool = False, reporter: Reporter | None = None,
        importance: bool = True, output: str | os.PathLike[str] | None = None, resume: bool = False,
        delimiter: str | None = None, encoding: str | None = None, nproc: int = 1, backend: str = "torch",
        ray_address: str | None = None, ray_storage: str | None = None, leak_check: bool = True) -> Model:
    """Train a model on a table: split, infer the schema, preprocess, train, evaluate on held-out rows.

    Args:
        data: A CSV / Parquet / JSON Lines path or a DataFrame.
        target: The column to predict (or ``target`` in the config); an int names a DataFrame's int-labelled column.
        config: A YAML path, a nested dict, a dict of dotted keys (``{"training.lr": 0.01}``) or a Config.
        test: Rows to evaluate on instead of holding out ``training.test_split`` of ``data``.
        quiet: Report nothing (notes are still kept in ``model.notes``).
        reporter: Where notes, messages and progress go; by default plain lines on stderr.
        importance: Measure permutation feature importance on (up to 2,000) validation rows for
            the report (``model.importance``); about a second on 50 features.
        output: Save the model to this directory (atomically, when training ends). While the run
            trains, a lock keeps other runs out of it and checkpoints go beside it, in
            ``<output>.checkpoint/`` (``training.checkpoint``); they are removed once the model is saved.
        resume: Continue the unfinished run that writes ``output`` from its last checkpoint; the data
            and config must be the same, and the model ends as the run would have without the
            interruption, bit for bit. Without a checkpoint there, training starts from the beginning.
        delimiter, encoding: How to read CSV files (``data`` and ``test``); sniffed when None.
        nproc: Train data-parallel over this many processes (keel.train.distributed): each trains on
            its shard of the rows and the gradients are averaged every step; rank 0 saves the model.
        backend: ``torch`` starts the ``nproc`` processes on this machine; ``ray`` runs them as Ray Train
            workers (keel.train.ray_train; extra ``keel[ray]``), on the cluster at ``ray_address`` or
            a local Ray instance, with ``ray_storage`` (a path or URI every node can write) carrying rank
            0's model back when the workers run on other machines.
        leak_check: Score each column alone for a leak of the target (keel.data.leaks) and note those that
            predict it almost exactly; keel tune's trials (the same data each time) and the scikit-learn
            estimators (columns the caller never named) pass False.

    Returns:
        The trained model; ``model.metrics`` holds the test metrics and ``model.notes`` what keel
        decided (the first note says how many rows went to training, validation and test).

    Raises:
        ConfigError: A setting is invalid; ``output`` has an unfinished run's checkpoint and
            ``resume`` is False; or ``resume`` meets a checkpoint of another config or data (every
            difference is listed).
        DataError: The data cannot be read or learned from. Any KeelError carries the notes made
            before it in ``error.notes``.
        ArtifactError: ``output`` cannot hold a model, or another run is writing it.

    Example:
        >>> model = keel.fit("examples/penguins.csv", target="species", quiet=True)
        >>> model.predict("examples/penguins.csv")[:2]
    """
    settings = with_target(load_config(config), target)
    ranks = distributed.current()
    ray = check_backend(backend) == "ray" and ranks is None
    if nproc < 1:
        raise ConfigError(f"{'nproc (--workers with backend ray)' if ray else 'nproc'} must be at least 1; got {nproc}.")
    if ray:
        ray_module()  # a missing extra is one line, before any work
    if (ray_address is not None or ray_storage is not None) and not ray:
        raise ConfigError("ray_address and ray_storage (--ray-address, --ray-storage) are for backend ray (--backend ray).")
    if (nproc > 1 or ranks is not None or ray) and settings.model.norm == "batch":
        raise ConfigError("model.norm: batch keeps running statistics per process, which data-parallel ranks would "
                          "each learn from their own shard; use model.norm: layer or none with --nproc.")
    if (nproc > 1 or ranks is not None or ray) and settings.training.checkpoint is True:
        raise ConfigError("training.checkpoint is true, but a data-parallel run (--nproc, --backend ray, torchrun) writes no "
                          "checkpoints yet (its ranks do not agree on one); set training.checkpoint: auto or false, "
                          "or train in one process to keep checkpoints.")
    if (nproc > 1 or ray) and ranks is None:
        if not ray and (isinstance(data, pd.DataFrame) or isinstance(test, pd.DataFrame)):
            raise ConfigError("nproc > 1 starts processes that read the data themselves: pass a file path, not a DataFrame.")
        if resume:
            raise ConfigError("--resume with --nproc or --backend ray is not supported yet: checkpoints are not written "
                              "in a data-parallel run. Resume it on one process, or start it again.")
        if output is not None:
            check_destination(output)  # before any worker starts
        # Paths as absolute ones: Ray runs each worker in a directory of its own.
        arguments = {
            "data": data if isinstance(data, pd.DataFrame) else _absolute(data), "target": settings.target,
            "config": settings.model_dump(mode="json"), "quiet": quiet, "importance": importance,
            "test": None if test is None else test if isinstance(test, pd.DataFrame) else _absolute(test),
            "output": None if output is None else str(output), "delimiter": delimiter, "encoding": encoding}
        with output_lock(output) if output is not None else contextlib.nullcontext():  # held for the ranks
            if ray:
                from keel.train import ray_train

                launched = ray_train.launch(nproc, arguments, ray_address, ray_storage)
            else:
                launched = distributed.launch(nproc, {**arguments, "device": settings.training.device})
        if reporter is not None:  # rank 0's notes reach the caller's reporter (and its log) here
            # ... except where rank 0 printed them itself: a reporter on this terminal, which the local ranks share.
            told = reporter.elsewhere() if not quiet and not ray else reporter
            for note in launched.notes:
                told.note(note)
        return launched
    if ranks is not None:
        if resume:
            raise ConfigError("resume is not supported in a data-parallel run yet (no checkpoints are written).")
        # Its tables are large: bagging auto trains one network. (Checkpoints: see _checkpointed.)
        settings = _training_updated(settings,
                                     bagging=1 if settings.training.bagging == "auto" else settings.training.bagging)
        output = output if ranks.rank == 0 else None
    if resume and output is None:
        raise ConfigError("resume=True continues the run that writes an output directory, and none was given; pass "
                          "output=DIR too (keel train: --resume RUN_DIR).")
    device = resolve_device(settings.training.device)  # before the read: a missing GPU fails fast
    if reporter is None:
        reporter = Reporter() if quiet else TextReporter()
    notes = Notes(reporter)
    started = time.perf_counter()
    deadline = None if settings.training.time_limit is None else started + settings.training.time_limit
    if output is not None:
        check_destination(output)  # before the data is read: an unusable output must not cost a training
    # A rank that keel.train.distributed started writes under the lock its launcher holds.
    locked = output is not None and not (ranks is not None and distributed.launched())
    with output_lock(output) if locked and output is not None else contextlib.nullcontext():
        try:
            sharded = ranks is not None and not isinstance(data, pd.DataFrame) and settings.training.order_by is None
            plan = None if sharded else streaming_plan(data, settings, delimiter, encoding)
            if plan is not None and ranks is not None:
                raise ConfigError("a data-parallel run with training.order_by reads the whole file on every rank, and "
                                  f"{data} would take more than data.memory_budget; raise it, or train without --nproc.")
            if sharded:
                assert ranks is not None
                model, checkpoints = _train_sharded(data, test, settings, notes, reporter, device, importance, output,
                                                    deadline, ranks, delimiter, encoding)
            elif plan is not None:
                model, checkpoints = _train_streamed(data, test, settings, plan, notes, reporter, device, importance,
                                                     output, resume, deadline)
            else:
                written = declared_written(settings)
                frame = read_data(data, reporter, delimiter, encoding, written)
                test_frame = read_data(test, reporter, delimiter, encoding, written) if test is not None else None
                checkpoints = (RunCheckpoints.start(output, _checkpointed(settings, ranks), frame, test_frame, resume)
                               if output is not None else None)
                with torch.random.fork_rng():  # the caller's global random state is left as it was
                    torch.manual_seed(settings.training.seed)
                    model = _train(frame, test_frame, settings, notes, reporter, device, importance, checkpoints,
                                   deadline, leak_check)
        except KeelError as error:
            error.notes = list(notes)
            raise
        if model.run is not None:
            model.run["seconds"]["total"] = round(time.perf_counter() - started, 3)
        distributed.barrier()  # every rank finished: only then does rank 0 save
        if output is not None and checkpoints is not None:
            model.save(output)
            kill_point("model-saved")
            checkpoints.remove()
    return model


def _train_streamed(data: TableSource, test: TableSource | None, settings: Config, plan: Any, notes: Notes,
                    reporter: Reporter, device: torch.device, importance: bool,
                    output: str | os.PathLike[str] | None, resume: bool,
                    deadline: float | None = None) -> tuple[Model, RunCheckpoints | None]:
    """Train on a file larger than the memory budget (keel.train.streamed): its rows go through a
    store on disk, removed when the run ends."""
    from keel.train.streamed import prepare_streamed, row_directory

    assert isinstance(data, (str, os.PathLike))
    if output is not None:
        RunCheckpoints.check_resumable(output, resume)  # before the passes over the file, not after
    training = settings.training
    with row_directory(output, settings.data.spill_directory) as directory, torch.random.fork_rng():
        torch.manual_seed(training.seed)
        prepared, fingerprints, sample = prepare_streamed(data, test, settings, training, plan, notes, reporter,
                                                          device, directory)
        # The budget shapes the sample and the training windows, so a checkpoint records it resolved:
        # "auto" on a machine with other memory is another run, and resuming it is refused.
        resolved = settings.model_copy(update={"data": settings.data.model_copy(update={"memory_budget": plan.budget})})
        checkpoints = (RunCheckpoints.start(output, resolved, sample, None, resume, fingerprints=fingerprints)
                       if output is not None else None)
        model = train_networks(prepared, settings, training, notes, reporter, device, importance, checkpoints,
                               deadline)
    return model, checkpoints


def _checkpointed(settings: Config, ranks: Any) -> Config:
    """The settings checkpoints are written by: a data-parallel rank writes none (the ranks do not agree on one
    yet), while the model keeps the config as given (``auto``: a run's saved config said false, a change the user
    never made in ``keel runs``)."""
    return settings if ranks is None else _training_updated(settings, checkpoint=False)


def _training_updated(settings: Config, **values: Any) -> Config:
    return settings.model_copy(update={"training": settings.training.model_copy(update=values)})


def _absolute(path: TableSource) -> str:
    """A local path made absolute (a URI as it is)."""
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


def _train_sharded(data: TableSource, test: TableSource | None, settings: Config, notes: Notes, reporter: Reporter,
                   device: torch.device, importance: bool, output: str | os.PathLike[str] | None,
                   deadline: float | None, ranks: distributed.Ranks, delimiter: str | None,
                   encoding: str | None) -> tuple[Model, RunCheckpoints | None]:
    """Train as one rank of a data-parallel job that reads only its share of the file (keel.train.sharded)."""
    from keel.train.sharded import prepare_sharded, sharding_plan
    from keel.train.streamed import row_directory

    assert isinstance(data, (str, os.PathLike))
    training = settings.training
    plan = sharding_plan(data, settings, ranks, delimiter, encoding)
    with row_directory(None, settings.data.spill_directory) as directory, torch.random.fork_rng():
        torch.manual_seed(training.seed)
        prepared, sample, fingerprint = prepare_sharded(data, test, settings, training, plan, notes, reporter, device,
                                                        directory, ranks)
    checkpoints = (RunCheckpoints.start(output, _checkpointed(settings, ranks), sample, None, False,
                                        fingerprints={"data": fingerprint, "test": None})
                   if output is not None else None)
    with torch.random.fork_rng():
        torch.manual_seed(training.seed)
        model = train_networks(prepared, settings, training, notes, reporter, device, importance, checkpoints,
                               deadline)
    return model, checkpoints


def read_data(source: TableSource, reporter: Reporter, delimiter: str | None = None,
              encoding: str | None = None, text: list[str] | None = None) -> pd.DataFrame:
    """Read a table, as a progress step when it is a file (a DataFrame needs no reading); ``text``: CSV columns
    read as written (:func:`keel.data.io.read_table`)."""
    if isinstance(source, pd.DataFrame):
        return read_table(source)
    with reporter.step(f"reading {source}"):
        return read_table(source, delimiter=delimiter, encoding=encoding, text=text)


@dataclass
class _Rows:
    """The labelled table and what the split needs from it."""

    frame: pd.DataFrame
    target: TargetEncoder
    classes: np.ndarray | None  # class index per row (classification)
    weights: np.ndarray | None  # row weights (``weight_column``)
    n_unlabelled: int


def _train(frame: pd.DataFrame, test_frame: pd.DataFrame | None, settings: Config, notes: Notes,
           reporter: Reporter, device: torch.device, importance: bool,
           checkpoints: RunCheckpoints | None = None, deadline: float | None = None,
           leak_check: bool = True) -> Model:
    training = settings.training
    data = _prepare(frame, test_frame, settings, training, notes, reporter, device, leak_check=leak_check)
    return train_networks(data, settings, training, notes, reporter, device, importance, checkpoints, deadline)


def _prepare(frame: pd.DataFrame, test_frame: pd.DataFrame | None, settings: Config, training: TrainingConfig,
             notes: Notes, reporter: Reporter, device: torch.device, *, leak_check: bool = True) -> PreparedData:
    """Split, infer the schema, fit the preprocessing and transform every row into memory. ``leak_check``: score
    the columns for a leak (keel.data.leaks), as fit's ``leak_check`` says."""
    special = _special_columns(frame, test_frame, training, from_preset(settings, "training", "bagging"))
    data_frame = frame
    rows = _labelled(frame, settings)
    frame = rows.frame
    groups = _groups(frame, training)
    if groups is not None and (unnamed := int(missing_values(frame[training.split_by]).sum())):
        notes.append(f"training.split_by {training.split_by!r} is missing on {unnamed:,} row(s); they count as one "
                     "group, which goes to one part whole.")
    order = _order(frame, training)
    split = split_rows(len(frame), validation=training.validation_split,
                       test=0.0 if test_frame is not None else training.test_split, seed=training.seed,
                       classes=rows.classes, groups=groups, order=order,
                       labels=[label_shown(label) for label in rows.target.labels])
    _check_training_classes(rows, split.train, training)
    trained = np.sort(np.concatenate([split.train, split.validation]))  # what the schema and the leak check read
    schema = infer_schema(frame, settings.model_copy(update={"task": rows.target.task}), rows=trained,
                          exclude=special)
    networks = _networks(settings, split, schema, groups)
    bags = _bags(split, networks, training, rows.classes, groups, from_preset(settings, "training", "bagging"))
    # The test data's rows with a target, found once: the rows note counts them, _checked_test_frame drops the rest.
    test_labelled = None if test_frame is None else _labelled_test_rows(test_frame, rows.target.name)
    notes.append(_describe_rows(split, bags, networks, training, rows.n_unlabelled, test_labelled, rows.target.name))
    if (classes_note := integer_classes_note(rows.target.labels, rows.target.name, declared_task(settings),
                                             rows.target.task, categorical=isinstance(
                                                 frame[rows.target.name].dtype, pd.CategoricalDtype))):
        notes.append(classes_note)
    for name, reason in schema.dropped.items():
        notes.append(f"dropped column {name!r}: {reason}")
    for note in schema.notes:
        notes.append(note)
    for note in _leaks(frame, schema, rows, trained, training.seed, groups, order) if leak_check else ():
        notes.append(note)
    # The test data was read before the schema: the columns the model reads as written are read so now.
    if test_frame is not None and test_labelled is not None:
        test_frame = _checked_test_frame(read_as_written(test_frame, written_columns(schema)), test_labelled,
                                         schema, rows.target, training, notes)
    target = rows.target
    fitted_rows = np.sort(np.concatenate(bags[0])) if len(bags) > 1 else split.train
    if schema.task == "regression":
        # Scaled on the training rows only, as they weigh in the loss.
        target.fit(frame[schema.target].iloc[fitted_rows], None if rows.weights is None else rows.weights[fitted_rows])
    with reporter.step(f"preprocessing {len(frame):,} rows x {len(schema.features)} features"):
        # The target of the fitted rows: a tfidf text column's linear scores (text.linear) are fitted on it.
        fitted_target = (rows.classes[fitted_rows] if rows.classes is not None
                         else target.encode(frame[schema.target].iloc[fitted_rows], frame.attrs.get("source")))
        preprocessor = Preprocessor(schema, settings.preprocessing, settings.text, settings.image).fit(
            frame, rows=fitted_rows, target=fitted_target, task=schema.task,
            groups=None if groups is None else groups[fitted_rows],
            weights=None if rows.weights is None else rows.weights[fitted_rows])
        # Every row is transformed once, laid out as [train | validation | test], so that each part is a
        # view (on 1M x 50 rows a copy of the training part alone was a 180 MB first touch).
        layout = np.concatenate([split.train, split.validation, split.test])
        where = np.empty(len(layout), dtype=np.int64)
        where[layout] = np.arange(len(layout))
        batch = _batch(preprocessor, target, frame, rows.classes, rows.weights, layout)
        # The rows the linear scores were fitted on read out-of-fold scores; the others keep the full model's.
        preprocessor.put_out_of_fold(batch.numeric.numpy(), where[fitted_rows])
        batch = batch.to(device)  # the one copy to a GPU
        preprocessor.finish_training()
    for note in preprocessor.notes:
        notes.append(note)

    def part(positions: np.ndarray) -> Batch:  # rows at these frame positions, in their order
        return batch.take(where[positions])

    def calibration_rows(n_networks: int) -> tuple[Batch, list[np.ndarray] | None]:
        parts = [validation for _, validation in bags[:n_networks]]
        ends = np.cumsum([len(fold) for fold in parts])
        folds = [np.arange(end - len(fold), end) for fold, end in zip(parts, ends)] if len(parts) > 1 else None
        return part(np.concatenate(parts)).to("cpu"), folds

    def test_predictions(model: Model) -> Predictions | None:
        if test_frame is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", KeelWarning)  # unseen test categories are expected here
                return model._scored(test_frame)
        if not len(split.test):
            return None
        test_rows = part(split.test).to("cpu")
        return model._predictions(test_rows.numeric, test_rows.categorical, test_rows.target,
                                  test_rows.weight, frame.index.to_numpy()[split.test] + 1)

    def held_out() -> tuple[Batch, str] | None:
        if len(bags) == 1 and len(split.validation):
            return part(split.validation).to("cpu"), "validation"
        if len(split.test) and test_frame is None:  # bagged networks have trained on every fold
            return part(split.test).to("cpu"), "test"
        if test_frame is not None and len(bags) > 1:  # so a --test file's rows, as keel.fit has no test split
            column = training.weight_column
            weights = None if column is None else row_weights(test_frame[column], column,
                                                              test_frame.attrs.get("source"))
            return _batch(preprocessor, target, test_frame, None, weights, np.arange(len(test_frame))), "test"
        return None

    n_test = len(split.test) if test_frame is None else len(test_frame)
    return PreparedData(
        schema, preprocessor, target,
        bags=[(part(train_part), part(validation_part) if len(validation_part) else None)
              for train_part, validation_part in bags],
        fitted=part(fitted_rows), n_test=n_test, calibration_rows=calibration_rows,
        test_predictions=test_predictions, held_out=held_out,
        record={"frame": data_frame, "schema": schema, "excluded": special, "test_frame": test_frame,
                "rows": {"train": len(split.train), "validation": len(split.validation), "test": n_test,
                         "unlabelled": rows.n_unlabelled},
                "bags": [(len(train_part), len(validation_part)) for train_part, validation_part in bags]})


def _category_counts(rows: Any, preprocessor: Preprocessor, exact: bool) -> list[np.ndarray | None]:
    """Each category column's rows per index: counted on the rows a network trained on where they are in memory
    (its bag's, exactly), else the preprocessor's fitting counts (streamed rows; data-parallel ranks, whose
    shards differ, so that every rank fills its copy alike)."""
    if exact and isinstance(rows, Batch) and rows.categorical.shape[1] == len(preprocessor.categorical):
        codes = rows.categorical.cpu()
        return [torch.bincount(codes[:, column], minlength=transform.cardinality).numpy()
                for column, transform in enumerate(preprocessor.categorical)]
    return [transform.index_counts for transform in preprocessor.categorical]


def train_networks(data: PreparedData, settings: Config, training: TrainingConfig, notes: Notes,
                   reporter: Reporter, device: torch.device, importance: bool,
                   checkpoints: RunCheckpoints | None = None, deadline: float | None = None) -> Model:
    """Train the network (or each bagged one), calibrate, score the test rows and measure importance.

    ``deadline`` (a ``time.perf_counter()`` value, from ``training.time_limit``) is shared out: each
    network gets an equal part of the time left, and no further bagged network starts when the time
    left would not fit as many epochs as the previous one ran.
    """
    schema, preprocessor, target = data.schema, data.preprocessor, data.target
    if checkpoints is not None:
        checkpoints.check_preprocessing(schema, preprocessor, target)
        checkpoints.begin(len(data.bags), device)
        if checkpoints.resumed is not None:
            notes.append(f"resumed from the checkpoint in {checkpoints.directory} ({checkpoints.resumed.describe()})")
        elif checkpoints.resume:
            notes.append(f"nothing to resume: no checkpoint in {checkpoints.directory} (a run stopped before its "
                         "first checkpoint leaves none); training starts from the first epoch")
    rows = data.record["rows"]
    spec = network_spec(settings, preprocessor, schema.task, target.n_classes, rows["train"] + rows["validation"])
    ranks = distributed.current()
    world = 1 if ranks is None else ranks.world
    # Each process steps its share of the batch: that is the step whose size decides the arithmetic.
    step_rows = max(1, resolve_batch_size(training.batch_size, len(data.bags[0][0]) * world) // world)
    precision = resolve_precision(training.precision, device, step_work(spec, step_rows))
    if checkpoints is not None:
        precision = checkpoints.trained_precision(precision)
    training = training.model_copy(update={"precision": precision})
    loss = resolve_loss_name(training.loss, schema.task)
    class_weights = class_weights_for(training.class_weights, data.fitted, target)
    notes.append(describe_settings(settings, class_weights is not None, device, training.precision, len(data.bags),
                                   spec.numeric_embedding_size if spec.embedded_width else None,
                                   rows=len(data.bags[0][0]) if world == 1 else None))
    limit_end = deadline  # what follows training finishes by it; training by ``deadline``, earlier
    if deadline is not None:  # what follows training counts against the limit too: keep its time aside
        after = after_training_seconds(spec, training.precision, data, importance)
        # Never more than half of what is left: training comes first, and importance shrinks to end by the
        # limit (a busy moment while timing once had the estimate above the whole limit: 1 epoch was trained).
        capped = min(after, MAX_KEPT * max(0.0, deadline - time.perf_counter()))
        deadline -= capped
        notes.append(f"training.time_limit: about {capped:.3g} s of it kept for calibration, scoring the test rows "
                     "and permutation importance after training"
                     + (f" (estimated {after:.3g} s; at most half of the time left is kept, and importance "
                        "shrinks to end by the limit)" if capped < after else ""))
    networks: list[TabularNetwork] = []
    histories: list[dict[str, Any]] = []
    planned_networks = len(data.bags)
    settled: int | None = None  # the thread count the last tuned training ended on
    for index, (train_rows, validation_rows) in enumerate(data.bags):
        # A network the checkpoint holds finished is kept whatever the time left: it costs nothing to restore.
        if deadline is not None and histories and not (checkpoints is not None and checkpoints.finished(index)):
            each = _epochs_each(histories[0], training)
            planned_networks = distributed.agree_min(
                min(planned_networks, index + _networks_that_fit(histories[-1], deadline, each)))
            if index >= planned_networks:
                notes.append(f"training.time_limit {training.time_limit:g} s allowed {len(networks)} of the "
                             f"{len(data.bags)} bagged networks (the time left did not fit another {each} "
                             "epochs); "
                             + ("the model averages those" if len(networks) > 1 else "the model is that one network"))
                break
        if validation_rows is None and training.early_stopping and index == 0:
            notes.append("no validation rows (validation_split is 0 or the data is tiny): early stopping is off")
        if ranks is not None:  # every rank's network starts alike (the last one drew per-rank masks)
            torch.manual_seed(training.seed + index)
        network = TabularNetwork(spec)
        load_backbones(network, preprocessor)
        network = network.to(device)
        if ranks is not None:  # the same initial weights on every rank, but each its own dropout masks
            torch.manual_seed(training.seed + 7919 * ranks.rank + index)
        restored = checkpoints.restore_network(index, network) if checkpoints is not None else None
        if restored is not None:  # finished before the run was interrupted
            networks.append(network)
            histories.append(restored)
            continue
        n_bags = len(data.bags)
        rank_share = f" (this rank's share; {ranks.world} ranks)" if ranks is not None and data.sharded else ""
        reporter.message(
            f"training a {schema.task} model{f' ({index + 1} of {n_bags})' if n_bags > 1 else ''} on "
            f"{len(train_rows)} rows{rank_share} ({0 if validation_rows is None else len(validation_rows)} validation, "
            f"{data.n_test} test): {len(schema.features)} features, "
            f"{sum(p.numel() for p in network.parameters())} parameters")
        all_rows = train_rows  # number-embedding bins come from all of them: the same on every rank
        if ranks is not None and data.sharded:  # this rank's own rows, cut to the smallest rank's count
            from keel.train.sharded import equal_share

            assert isinstance(train_rows, Batch)
            all_rows = data.fitted  # a sample of every rank's rows
            train_rows, left_out, total = equal_share(train_rows, training.seed + index, ranks)
            if left_out and index == 0:
                notes.append(f"each of the {ranks.world} ranks trains on {len(train_rows):,} rows, the smallest "
                             f"rank's share, so that their steps match: {left_out:,} of the {total:,} training rows "
                             "are left out (a seeded random choice)")
        elif ranks is not None:  # this rank's share of the rows; the autograd path, whose gradients it averages
            if not isinstance(train_rows, Batch):
                raise ConfigError("a data-parallel run (nproc > 1) cannot stream its data yet; raise data.memory_budget "
                                  "so that the table is read into memory, or train without --nproc.")
            train_rows = train_rows.take(distributed.shard(np.arange(len(train_rows)), ranks))
        trainer = Trainer(network, training, schema.task, loss, class_weights, target_scale=target.std,
                          checkpoint=checkpoints, fused=False if ranks is not None else None,
                          world=1 if ranks is None else ranks.world)
        numeric_guard(trainer).input_names = numeric_input_names(preprocessor)  # messages name columns
        if deadline is not None:  # an equal share of the time left for each network still to train; but
            # bagging auto's first network takes the time one network would have: under a 30 s limit, fifths of it
            # trained five networks that scored below one (hpc_data accuracy 0.773 against 0.827)
            share = 1 if training.bagging == "auto" and index == 0 else planned_networks - index
            if index == 0 and share > 1 and ranks is None:
                # An explicit bagging's first network: its share is of the networks that fit, which its pace
                # tells. A fifth set up front cut a 210,000-row table's only network after 5 of 256 steps (the
                # rest fitted no further network of 10 epochs and went unused): ROC-AUC 0.555, every row "no".
                trainer.deadline = deadline
                trainer.replan = functools.partial(_first_share, end=deadline, networks=planned_networks,
                                                   epochs=min(training.epochs, MIN_TIMED_EPOCHS))
            else:
                trainer.deadline = time.perf_counter() + (deadline - time.perf_counter()) / share
        resumed = checkpoints.trainer_state(index) if checkpoints is not None else None
        if checkpoints is not None:
            checkpoints.begin_network(index, trainer.network, resumed.epoch if resumed is not None else 0)
        history = _fit_network(trainer, train_rows, validation_rows, reporter, resumed, bin_rows=all_rows)
        trainer.network.categories.fill_untrained(_category_counts(train_rows, preprocessor, exact=ranks is None))
        skipped = numeric_guard(trainer).total_skipped
        if skipped:
            notes.append(f"{skipped} batch(es) with a non-finite loss or gradient were skipped "
                         "(training.nonfinite: skip_batch); the epochs' skipped_batches in the history say where")
        if trainer.threads is not None:
            settled = trainer.threads.current  # where the passes after training start
            if trainer.threads.switches:
                notes.append(trainer.threads.describe(index + 1 if len(data.bags) > 1 else None))
        networks.append(trainer.network)
        histories.append(history.to_dict())
        if history.planned_epochs is not None or _cut(history.epochs):  # (a cut of the config's last epoch too)
            allowed = history.planned_epochs or len(history.epochs)
            notes.append(f"training.time_limit {training.time_limit:g} s allowed {allowed} of "
                         f"{training.epochs} epochs{f' for network {index + 1}' if len(data.bags) > 1 else ''} "
                         f"({_pace_said(history.seconds, history.epochs)}{_cut(history.epochs)}); the learning-rate "
                         "schedule was fitted to them")
        if checkpoints is not None:
            checkpoints.network_done(trainer.network, histories[-1])
    for image in preprocessor.images:  # every network has its copy: the file's arrays are not needed again
        image.backbone = None
    for text in preprocessor.token_texts:
        text.backbone = None
    combined: TabularNetwork | NetworkBag = networks[0] if len(networks) == 1 else NetworkBag(networks)
    history_record = histories[0] if len(histories) == 1 else {**histories[0], "bags": histories}
    # Under a time limit importance paces its cuts on its passes, and a trial's slow ones would cut it: not tuned.
    with passes_budget(combined, training.threads, start=settled,
                       tune=device.type == "cpu" and ranks is None and limit_end is None) as threads:
        calibration = _calibrate(combined, lambda: data.calibration_rows(len(networks)), schema.task, training,
                                 notes, target.labels)
        model = Model(settings, schema, preprocessor, target, combined, history=history_record, notes=list(notes),
                      calibration=calibration)
        predictions = data.test_predictions(model)
        if predictions is not None:
            model.metrics = model._metrics_of(predictions)
            model._test_predictions = predictions.as_stored()
        held_out = data.held_out() if importance else None
        if held_out is not None:
            model.importance = _importance(model, held_out[0], held_out[1], training, reporter, limit_end, threads)
    if held_out is not None and model.importance is not None:
        full = (min(IMPORTANCE_ROWS, len(held_out[0].target)), IMPORTANCE_REPEATS)
        if (model.importance["rows"], model.importance["repeats"]) != full:
            shrunk = (f"training.time_limit: permutation importance took {shuffles_said(model.importance)} shuffle(s) of "
                    f"{model.importance['rows']} rows a feature (not {full[1]} of {full[0]}) to end within the limit; "
                    "its figures are rougher for it")
            notes.append(shrunk)  # the reporter's copy
            model.notes.append(shrunk)
    model.run = run_record(**data.record, trained=len(networks),
                           seconds={"training": sum(history["seconds"] for history in histories)})
    return model


def after_training_seconds(spec: NetworkSpec, precision: str, data: PreparedData, importance: bool) -> float:
    """Seconds that calibration, the test rows' scores and permutation importance will take once training
    ends: the rows each predicts (:func:`rows_predicted_after_training`) at the pace of a timed prediction
    through a throwaway network of the trained one's shape (its cost does not depend on its weights), on
    the CPU where they run and in the arithmetic each uses; importance's shuffled rows at the pace of a
    prediction that reuses the first layer (:class:`FirstLayerReuse`), as importance predicts them. Each pace
    is the faster of two timed calls: a moment of other work on the machine must not inflate it.

    The throwaway is built under a forked random state, so a time limit leaves the trained networks'
    initial weights as they are.
    """
    rows = data.fitted if isinstance(data.fitted, Batch) else data.fitted.sample(2048, 0)
    if not len(rows):
        return 0.0
    sample = rows.take(np.arange(min(len(rows), 2048))).to("cpu")  # importance predicts thousands of rows a call
    with torch.random.fork_rng(devices=[]):
        network = TabularNetwork(spec)
    counts = rows_predicted_after_training(data, importance, precision)
    # Importance's shuffled rows go through the reuse; its unshuffled sample and the reuse's reference (the
    # stacked repeats) through the whole network.
    sampled = importance_sample(data, importance)
    shuffled = sampled * IMPORTANCE_REPEATS * len(data.schema.features)
    counts[precision] = counts.get(precision, 0) - shuffled + sampled * IMPORTANCE_REPEATS
    seconds = 0.0
    for arithmetic, count in counts.items():
        if not count:
            continue
        wide = arithmetic == "float64"  # Model._predict's float64 copy
        timed, numeric = (copy.deepcopy(network).double(), sample.numeric.double()) if wide else (network, sample.numeric)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=arithmetic == "bfloat16"):
            seconds += _fastest(functools.partial(predict_outputs, timed, numeric, sample.categorical)) / len(sample) * count
    if shuffled:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            reuse = FirstLayerReuse.build(network, sample.numeric, sample.categorical)
            if reuse is None:
                pace = _fastest(functools.partial(predict_outputs, network, sample.numeric, sample.categorical))
            else:  # one feature's columns changed, as a shuffle changes them
                numbers, codes = sample.numeric.clone(), sample.categorical.clone()
                if numbers.shape[1]:
                    numbers[:, 0] = numbers[:, 0].roll(1)
                elif codes.shape[1]:
                    codes[:, 0] = codes[:, 0].roll(1)
                pace = _fastest(functools.partial(reuse, numbers, codes))
        seconds += pace / len(sample) * shuffled
    return seconds


def _fastest(call: Callable[[], object]) -> float:
    """Seconds of the faster of two timed calls, after one untimed (the first call allocates)."""
    call()
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def importance_sample(data: PreparedData, importance: bool) -> int:
    """Rows of permutation importance's sample (at most IMPORTANCE_ROWS of the held-out rows) times the bagged
    networks each goes through; 0 without importance or held-out rows."""
    validation = [0 if rows is None else len(rows) for _, rows in data.bags]
    # held_out(): the validation rows of a single network, else the test split, else (bagged) the --test file's
    test_file = data.record.get("test_frame") is not None or data.record.get("test_source") is not None  # streamed
    if len(data.bags) == 1 and validation[0]:
        held = validation[0]
    else:
        held = data.n_test if not test_file or len(data.bags) > 1 else 0
    return min(IMPORTANCE_ROWS, held) * len(data.bags) if importance else 0


def rows_predicted_after_training(data: PreparedData, importance: bool, precision: str = "float32") -> dict[str, int]:
    """Rows predicted after training, by arithmetic: calibration's in float32 (each validation row through
    the network that held it out), the test rows' scores in float64 and permutation importance's in the
    run's ``precision`` (its sample, once unshuffled and once per feature and repeat), the last two through
    every bagged network."""
    validation = [0 if rows is None else len(rows) for _, rows in data.bags]
    counts = {"float32": sum(validation), "float64": data.n_test * len(data.bags)}
    sampled = importance_sample(data, importance)
    if sampled:
        shuffled = sampled * (1 + IMPORTANCE_REPEATS * len(data.schema.features))
        counts[precision] = counts.get(precision, 0) + shuffled
    return counts


# Under a time limit, the most of the time left when training starts kept for what follows it.
MAX_KEPT = 0.5
# Under a time limit, a bagged network is worth training only with at least this many epochs (or
# the config's epochs, when fewer): fewer networks that learn beat many that barely start.
MIN_TIMED_EPOCHS = 10


def _epochs_each(first: dict[str, Any], training: TrainingConfig) -> int:
    """The epochs a further bagged network needs under a time limit: MIN_TIMED_EPOCHS (or the config's epochs,
    when fewer); with bagging auto as many as the first network trained, for auto bags only to beat one network
    and a network cut short drags the average below it (bench/accuracy.py's hpc_data under --time-limit 30
    scored 0.811 with further networks of 10 epochs or more, against 0.827 for one network)."""
    epochs = min(training.epochs, MIN_TIMED_EPOCHS)
    return max(epochs, len(first["epochs"])) if training.bagging == "auto" else epochs


def _cut(epochs: list[dict[str, Any]]) -> str:
    """', the last one cut after k of n steps' where the time limit's end came within the last epoch."""
    last = epochs[-1] if epochs else {}
    return f", the last one cut after {last['steps']} of {last['epoch_steps']} steps" if "steps" in last else ""


def _pace_said(seconds: float, epochs: list[dict[str, Any]]) -> str:
    """'about 1.20 s each' of the epochs trained, or the seconds in all where they make less than one whole epoch: a
    first epoch cut after 1 of 15 steps (its one-time costs and its validation in 0.72 s) once read 'about 10.78 s
    each', the whole pass extrapolated from that one step."""
    trained = _epochs_trained(epochs)
    return f"about {seconds / trained:.2f} s each" if trained >= 1 else f"{seconds:.2f} s in all"


def _epochs_trained(epochs: list[dict[str, Any]]) -> float:
    """The epochs of these records, a cut one counted by the share of its steps taken."""
    return sum(epoch_share(record) for record in epochs)


def _first_share(epoch_seconds: list[float], *, end: float, networks: int, epochs: int) -> float:
    """The first bagged network's deadline under a time limit, after each of its epochs: an equal share of the
    time left to ``end`` among the networks (``networks`` at most, this one included) that fit ``epochs`` epochs
    each at its pace (trainer.epoch_pace); all of it when no second network fits."""
    left = end - time.perf_counter()
    fit = max(1, min(networks, int(left // max(epoch_pace(epoch_seconds) * epochs, 1e-9))))
    return end if fit == 1 else time.perf_counter() + left / fit


def _networks_that_fit(history: dict[str, Any], deadline: float, epochs: int) -> int:
    """How many more networks of ``epochs`` epochs the time left fits, at the pace of the one just trained."""
    pace = history["seconds"] / max(_epochs_trained(history["epochs"]), 1e-9) if history["epochs"] else history["seconds"]
    return max(0, int((deadline - time.perf_counter()) // (pace * epochs)))


def _calibrate(network: TabularNetwork | NetworkBag, validation: Callable[[], tuple[Batch, list[np.ndarray] | None]],
               task: str, training: TrainingConfig, notes: Notes, labels: list[Any]) -> dict[str, Any] | None:
    """Fit the temperature (folded into ``network``) and choose the threshold on the validation rows.

    With bagging every network's validation fold is used, each row scored by the network that held
    it out (the others trained on it).
    """
    if training.threshold != 0.5 and task != "binary":
        notes.append(f"training.threshold is {training.threshold} but the target is {task}: a threshold decides "
                     "between two classes only, so the most probable class is predicted")
    rows, folds = validation()
    record = calibrate(network, rows.numeric, rows.categorical, rows.target, rows.weight, task, training, folds=folds)
    for note in calibration_notes(record, labels):
        notes.append(note)
    return record


def _importance(model: Model, rows: Batch, source: str, training: TrainingConfig, reporter: Reporter,
                deadline: float | None = None, threads: ThreadTuner | None = None) -> dict[str, Any]:
    """Permutation importance on (at most 2,000 of) ``rows``, with a progress step per feature, in the
    arithmetic the network trained in, finished by ``deadline`` (the time limit's end) where there is one,
    its predictions timed by ``threads`` where there is a tuner."""
    with reporter.step("permutation importance", total=len(model.feature_names)) as advance:
        return model._importance(rows.numeric.numpy(), rows.categorical.numpy(), rows.target.numpy(),
                                 None if rows.weight is None else rows.weight.numpy(), source, seed=training.seed,
                                 progress=advance, precision=training.precision, deadline=deadline, threads=threads)


def _special_columns(frame: pd.DataFrame, test_frame: pd.DataFrame | None, training: TrainingConfig,
                     bagging_from: str = "") -> set[str]:
    """The split_by / order_by / weight_column columns: checked present, and not features by default.
    ``bagging_from``: where training.bagging came from, when a preset set it (:func:`from_preset`)."""
    special = {}
    for key in ("split_by", "order_by", "weight_column"):
        name = getattr(training, key)
        if name is not None:
            require_column(frame, name, f"training.{key}")
            special[key] = name
    if test_frame is not None and training.weight_column is not None:
        require_column(test_frame, training.weight_column, "training.weight_column")
    if special.get("split_by") and special.get("order_by"):
        raise ConfigError("training.split_by and training.order_by are both set; a split is either grouped or "
                          "time-ordered. Unset one of them.")
    if special.get("order_by") and training.bagging != "auto" and training.bagging > 1:
        raise ConfigError(f"training.bagging {training.bagging}{bagging_from} validates each network on a different "
                          "fold, which a time-ordered split (training.order_by) cannot do without training on the "
                          "future. Set training.bagging: 1" + (" (or use preset balanced, which bags only small "
                                                                "tables, and not time-ordered ones)" if bagging_from
                                                               else "") + ".")
    return set(special.values())


def _leaks(frame: pd.DataFrame, schema: Schema, rows: _Rows, fitted: np.ndarray, seed: int,
           groups: np.ndarray | None, order: np.ndarray | None) -> list[str]:
    """Notes on columns that alone predict the target almost exactly, scored on the training and validation rows
    (halved as the split was made: by group, by time or at random)."""
    target = (rows.classes[fitted] if rows.classes is not None else
              to_numeric(frame[schema.target].iloc[fitted], column=schema.target, advice=TARGET_ADVICE))
    return leak_notes(frame, fitted, [(feature.name, feature.type) for feature in schema.features], schema.target,
                      target, schema.task, seed=seed, groups=None if groups is None else groups[fitted],
                      order=None if order is None else order[fitted])


def _check_training_classes(rows: _Rows, train: np.ndarray, training: TrainingConfig) -> None:
    """Refuse a split whose training rows hold one class: a grouped or time-ordered split can put all of the
    others in the validation and test parts (a trial's run then trained on one class, scored 0 and saved)."""
    if rows.classes is None or len(np.unique(rows.classes[train])) >= 2:
        return
    only = rows.target.labels[int(rows.classes[train][0])] if len(train) else None
    how = (f"training.split_by {training.split_by!r} put the rows of every other class in the validation and test "
           "parts (whole groups go to one part)" if training.split_by is not None else
           f"training.order_by {training.order_by!r} held out the rows of every other class as the latest"
           if training.order_by is not None else "the split left the other classes out")
    raise DataError(f"the training rows hold only the class {only!r} of target {rows.target.name!r}: {how}, so there "
                    "is nothing to tell apart. Choose a split_by column with many groups of mixed classes, or "
                    "another split.", file=rows.frame.attrs.get("source"), column=rows.target.name)


def _labelled(frame: pd.DataFrame, settings: Config) -> _Rows:
    """The rows with a target (and a usable weight), the task's labels and each row's class."""
    name = str(settings.target)
    require_column(frame, name, "target")
    keep = ~missing_values(frame[name])  # a blank label is missing, in every format (as TargetEncoder has it)
    n_unlabelled = int((~keep).sum())
    source = frame.attrs.get("source")
    if n_unlabelled == len(frame):  # said here: with the rows dropped, the count would be "all 0"
        raise DataError(f"target column {name!r} has no values (all {len(frame):,} are missing); choose another "
                        "target.", file=source, column=name)
    if n_unlabelled:
        frame = frame[keep]  # the index keeps each row's number in the file, for messages
    task = infer_target_task(frame, settings)
    target = TargetEncoder(name, task)
    classes = None
    if task != "regression":  # class labels come from every labelled row; they stratify the split
        classes = target.fit(frame[name]).encode(frame[name])
    weight_column = settings.training.weight_column
    weights = row_weights(frame[weight_column], weight_column, source) if weight_column else None
    return _Rows(frame, target, classes, weights, n_unlabelled)


def _groups(frame: pd.DataFrame, training: TrainingConfig) -> np.ndarray | None:
    if training.split_by is None:
        return None
    return pd.factorize(frame[training.split_by], use_na_sentinel=False)[0]  # a missing id is one group


def _order(frame: pd.DataFrame, training: TrainingConfig) -> np.ndarray | None:
    """Sortable keys of the ``order_by`` column: numbers, or dates (parsed from text when needed)."""
    if training.order_by is None:
        return None
    name, series = training.order_by, frame[training.order_by]
    source = frame.attrs.get("source")
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        keys = to_numeric(series, column=name, source=source)
    else:
        try:
            # One format inferred for the whole column: per-cell parsing would read 05/01 and 13/01 of a
            # day-first file in different orders and put the future in training.
            with warnings.catch_warnings():  # pandas' "could not infer format" lines: the error below says it
                warnings.simplefilter("ignore", UserWarning)
                try:
                    dates = pd.to_datetime(series, errors="raise")
                except ValueError:  # one consistent day-first format (13/01/2020) is the other common case
                    dates = pd.to_datetime(series, errors="raise", dayfirst=True)
        except (ValueError, TypeError) as error:
            raise DataError(
                f"training.order_by column {name!r} holds neither numbers nor dates in one format ({error}); order "
                "the rows by a number column or by dates written one way (ISO 8601, 2024-05-01, is safest; mixed "
                "time zones: convert to UTC).", file=source, column=name) from None
        keys = dates.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        keys[dates.isna().to_numpy()] = np.nan
    missing = np.flatnonzero(np.isnan(keys))
    if len(missing):
        row = int(series.index[missing[0]]) + 1
        raise DataError(
            f"training.order_by column {name!r} is empty on row {row} ({len(missing)} such row(s)); every row needs "
            "its time to be placed. Fill or drop those rows.", file=source, column=name, row=row)
    return keys


def _describe_rows(split: Split, bags: list[tuple[np.ndarray, np.ndarray]], networks: int, training: TrainingConfig,
                   n_unlabelled: int, test_labelled: np.ndarray | None, training_target: str) -> str:
    """The run's first note: how many rows went where, and how they were split; ``test_labelled`` marks the test
    data's rows with a target (:func:`_labelled_test_rows`), None without test data."""
    # The test data's labelled rows are those scored (a note says the rest are dropped).
    n_test = len(split.test) if test_labelled is None else int(test_labelled.sum())
    if training.order_by:
        how = f"the latest rows by {training.order_by!r} held out"
    elif training.split_by:
        how = f"whole groups of {training.split_by!r} in each part"
    else:
        # Bagged networks' folds are dealt class by class (fold_rows) and replace the validation draw: its
        # reason is no reason then.
        replaced = len(bags) > 1 and split.unstratified_part == "validation"
        how = "a random split" + (", stratified by class" if split.stratified or replaced else
                                  f", {split.unstratified}" if split.unstratified else "")
    text = (f"rows: {len(split.train)} for training, {len(split.validation)} for validation, {n_test} for test "
            f"({how}{'; test rows from the test data' if test_labelled is not None else ''})")
    if len(bags) > 1:
        pool = len(split.train) + len(split.validation)
        limited = training.time_limit is not None  # the limit may allow fewer: a note after training says
        text += (f"; {'up to ' if limited else ''}{len(bags)} bagged networks"
                 + (" (training.bagging auto: a small table)" if training.bagging == "auto" else "")
                 + f", each trained on about {len(bags[0][0])} of the {pool} training and validation rows and "
                 "validated on the rest")
    elif networks > 1:
        text += (f"; training.bagging is {networks} but there are no validation rows to make folds of "
                 "(validation_split is 0 or the table is tiny): one network is trained")
    if n_unlabelled:
        text += f"; dropped {n_unlabelled} row(s) of the training data with a missing {training_target!r}"
    return text


def _labelled_test_rows(test_frame: pd.DataFrame, target: str) -> np.ndarray:
    """True on the test data's rows with a target, blank as the training data's targets are (_labelled); every row
    where it lacks the target column, which _checked_test_frame refuses."""
    if target not in test_frame.columns:
        return np.ones(len(test_frame), dtype=bool)
    return ~missing_values(test_frame[target])


def _checked_test_frame(test_frame: pd.DataFrame, labelled: np.ndarray, schema: Schema, target: TargetEncoder,
                        training: TrainingConfig, notes: Notes) -> pd.DataFrame:
    """The test rows, checked before any training: columns present, classes known, target present (``labelled``,
    from :func:`_labelled_test_rows`: the others are dropped)."""
    source = test_frame.attrs.get("source")
    require_column(test_frame, schema.target, "target")
    missing = [name for name in schema.feature_names if name not in test_frame.columns]
    if missing:
        raise DataError(
            f"the test data lacks the input column(s) {missing} that the model will be trained on; add them "
            f"(empty values are allowed) or drop them from the training data.{spaced_names(missing, test_frame.columns)}",
            file=source, column=missing[0])
    if not labelled.all():
        notes.append(f"dropped {int((~labelled).sum())} row(s) of the test data with a missing {schema.target!r}")
        test_frame = test_frame[labelled]
    if not len(test_frame):
        raise DataError(f"the test data has no row with a {schema.target!r}: every value of the target is missing, "
                        "so there is nothing to score. Pass labelled rows as the test data, or leave it out and "
                        "predict unlabelled rows with keel predict.", file=source, column=schema.target)
    if schema.task != "regression":
        target.encode(test_frame[schema.target], source)  # a class the training data lacks is an error
    if training.weight_column:
        row_weights(test_frame[training.weight_column], training.weight_column, source)
    return test_frame


def _fit_network(trainer: Trainer, train_rows: Rows, validation_rows: Rows | None, reporter: Reporter,
                 resume: TrainerState | None = None, bin_rows: Rows | None = None) -> History:
    """Train one network (bins, progress, prior correction) and leave it in eval mode on the CPU;
    ``resume`` continues it from a checkpoint's state; ``bin_rows`` (default: the training rows) are
    what number-embedding bins are fitted on (all training rows, when a rank trains on a shard)."""
    network, settings = trainer.network, trainer.settings
    if isinstance(network.numbers, PiecewiseLinearEmbedding):
        rows = train_rows if bin_rows is None else bin_rows
        numeric = rows.numeric if isinstance(rows, Batch) else rows.sample(BIN_SAMPLE, trainer.settings.seed).numeric
        network.numbers.fit_bins(numeric[:, :network.spec.embedded_width])
    with reporter.progress(settings.epochs, trainer.monitor, rows=len(train_rows)) as callback:
        trainer.callback = callback
        history = trainer.fit(train_rows, validation_rows, resume)
    if trainer.class_weights is not None and settings.class_weights == "auto":
        # Weighted training shifts each logit by log(weight); undo it so the probabilities
        # (and accuracy) reflect the true class shares while the ranking keeps the benefit.
        network.shift_outputs(prior_correction(trainer.class_weights, trainer.task))
    network.eval().to("cpu")
    return history


# preprocessing.categorical_encoding: whether a column of this cardinality (its unknown and missing
# buckets included) is one-hot encoded, given onehot_max_categories; the two extra buckets do not
# count towards that limit.
CATEGORY_ENCODINGS: dict[str, Callable[[int, int], bool]] = {
    "embedding": lambda cardinality, limit: False,
    "onehot": lambda cardinality, limit: True,
    "auto": lambda cardinality, limit: cardinality - 2 <= limit,
}


def network_spec(settings: Config, preprocessor: Preprocessor, task: str, n_classes: int, rows: int) -> NetworkSpec:
    """The network's shape from the config and the fitted preprocessing (``rows``: for training and validation,
    which ``numeric_embedding_size: auto`` reads)."""
    model, encoding = settings.model, settings.preprocessing.categorical_encoding
    size = model.numeric_embedding_size
    if size == "auto":
        size = auto_numeric_embedding_size(model.numeric_embedding, rows)
    limit = settings.preprocessing.onehot_max_categories
    return NetworkSpec(
        numeric_width=preprocessor.numeric_width, cardinalities=preprocessor.cardinalities,
        n_outputs=n_classes if task == "multiclass" else 1,
        hidden=list(model.hidden), activation=model.activation, dropout=model.dropout,
        norm=model.norm, init=model.init,
        onehot=[lookup(CATEGORY_ENCODINGS, "preprocessing.categorical_encoding", encoding)(cardinality, limit)
                for cardinality in preprocessor.cardinalities],
        embedding_dims=[model.embedding_dim] * len(preprocessor.cardinalities) if model.embedding_dim else [],
        architecture=model.architecture, numeric_embedding=model.numeric_embedding,
        numeric_embedding_size=size, numeric_embedding_dim=model.numeric_embedding_dim,
        ensemble=model.ensemble, task=task, plain_width=preprocessor.text_width,
        images=[image_input(transform) for transform in preprocessor.images],
        texts=[text_input(transform) for transform in preprocessor.token_texts],
    )


def text_input(transform: TextTransform) -> TextInput | BagInput:
    """The network's encoder of one fine-tuned or bag text column."""
    if transform.encoder == "bag":
        return BagInput(vocabulary=len(transform.vocabulary), max_terms=transform.width - 1, dim=transform.dim)
    shape, pooling, normalize = transform.encoder_shape()
    lr = transform.lr or (5e-4 if transform.finetune == "lora" else 5e-5)
    return TextInput(bert=dataclasses.asdict(shape), max_tokens=transform.width - 1, pooling=pooling,
                     normalize=normalize, finetune=transform.finetune, lora_rank=transform.lora_rank, lr=lr)


def image_input(transform: ImageTransform) -> ImageInput:
    """The network's encoder of one fitted image column."""
    return ImageInput(channels=transform.bands, size=transform.size, encoder=transform.encoder, dim=transform.dim,
                      depth=transform.depth, augment=transform.augment, finetune=transform.finetune)


def load_backbones(network: TabularNetwork, preprocessor: Preprocessor) -> None:
    """Copy each pretrained image column's backbone and each fine-tuned text column's encoder (read in the
    preprocessing's fit) into ``network``.

    Raises:
        ConfigError: The file's weights do not fit the ResNet its names describe.
    """
    encoders: list[ImageEncoder] = list(network.images)  # type: ignore[arg-type]  # ModuleList types as Module
    for encoder, transform in zip(encoders, preprocessor.images):
        if transform.backbone is not None:
            try:
                encoder.load_backbone(transform.backbone)
            except ValueError as error:
                raise ConfigError(f"image.model_path {transform.model_path}: {error}.") from None
    for text, column in zip(network.texts, preprocessor.token_texts):
        if isinstance(text, TextEncoder) and column.backbone is not None:
            try:
                text.load_backbone(column.backbone)
            except ValueError as error:
                raise ConfigError(f"text.model_path {column.model}: {error}.") from None


def describe_settings(settings: Config, weighted: bool, device: torch.device | None = None,
                      precision: str = "float32", n_networks: int = 1, embedding_size: int | None = None,
                      rows: int | None = None) -> str:
    """One line naming the preset and the settings that shape the run most, as they were trained
    (``embedding_size``: the number embedding's bins or frequencies, as ``auto`` resolved them; ``rows``: a
    network's training rows, which resolve batch auto and early stopping's wait in epochs)."""
    training, model = settings.training, settings.model
    network = f"{model.architecture.upper()} {'-'.join(map(str, model.hidden)) or 'linear'}"
    if model.ensemble > 1:
        network += f" x{model.ensemble} ensemble"
    if model.numeric_embedding != "none":
        network += f", {model.numeric_embedding} number embeddings"
        if model.numeric_embedding_size == "auto" and embedding_size not in (None, AUTO_BINS):
            network += f" ({embedding_size} bins: numeric_embedding_size auto, {AUTO_BINS_ROWS:,} rows or more)"
    parts = [
        f"{settings.preprocessing.normalize} scaling", network,
        f"{training.optimizer} lr {training.lr:g} ({training.schedule})", f"batch {training.batch_size}",
        f"up to {training.epochs} epoch{'s' if training.epochs != 1 else ''}" + (f", early stopping {training.early_stopping}" if training.early_stopping else ""),
    ]
    if rows is not None:  # what auto and early_stopping_steps came to (a trial read "16" where 4 epochs ruled)
        batch = resolve_batch_size(training.batch_size, rows)
        if training.batch_size == "auto":
            parts[3] = f"batch auto ({batch})"
        patience = resolve_patience(training, resolve_steps_per_epoch(training.steps_per_epoch, rows, batch))
        if training.early_stopping and patience != training.early_stopping:
            parts[4] += (f" epochs, here {patience} (early_stopping_steps {training.early_stopping_steps}, at least "
                         f"{MIN_PATIENCE} epochs)")
    if training.steps_per_epoch != "pass":
        parts.append("epochs of " + (f"a pass or {AUTO_STEPS_PER_EPOCH} steps" if training.steps_per_epoch == "auto"
                                     else f"{training.steps_per_epoch} steps"))
    if n_networks > 1:
        parts.append(f"{n_networks} bagged networks")
    if weighted:
        parts.append("balanced class weights")
    if training.weight_column:
        parts.append(f"rows weighted by {training.weight_column!r}")
    if device is not None and device.type != "cpu":
        parts.append(f"on {device}")
    if precision != "float32":
        parts.append(f"{precision} matmuls")
    return f"preset {settings.preset}: " + ", ".join(parts)


def _networks(settings: Config, split: Split, schema: Schema, groups: np.ndarray | None) -> int:
    """How many networks ``training.bagging`` asks for. auto decides from the rows for training and validation
    and the features the schema kept (config.auto_bagging), and trains one network where bagging would be
    wrong (a time-ordered split, no validation rows, fewer groups than folds: a fold without validation rows)
    or costly beyond its premise (an image column or a fine-tuned text column: five encoders to train)."""
    training = settings.training
    if training.bagging != "auto":
        return training.bagging
    kinds = {feature.type for feature in schema.features}
    pool = np.concatenate([split.train, split.validation])
    if (training.order_by is not None or not len(split.validation) or "image" in kinds
            or ("text" in kinds and settings.text.finetune != "none")
            or (groups is not None and len(np.unique(groups[pool])) < AUTO_BAGGING)):
        return 1
    return auto_bagging(len(pool), len(schema.features))


def _bags(split: Split, networks: int, training: TrainingConfig, classes: np.ndarray | None,
          groups: np.ndarray | None, source: str = "") -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row positions for each network: one split, or ``networks`` folds of both."""
    if networks == 1 or not len(split.validation):
        return [(split.train, split.validation)]
    pool = np.sort(np.concatenate([split.train, split.validation]))
    folds = fold_rows(pool, networks, seed=training.seed, classes=classes, groups=groups)
    empty = sum(not len(fold) for fold in folds)
    if empty:  # a network without validation rows would train without early stopping, silently
        parts = (f"{len(np.unique(groups[pool]))} groups of training.split_by {training.split_by!r}"
                 if groups is not None else f"{len(pool)} rows")
        raise ConfigError(f"training.bagging is {networks}{source}, but the rows for training and validation hold only "
                          f"{parts}: {empty} of the {networks} folds would be empty, leaving those networks no "
                          f"validation rows. Set training.bagging to {networks - empty} or fewer (auto decides for you).")
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), fold) for i, fold in enumerate(folds)]


def prior_correction(weights: torch.Tensor, task: str) -> torch.Tensor:
    log_weights = weights.log()
    if task == "binary":
        return (log_weights[0] - log_weights[1]).reshape(1)
    return -log_weights


def _batch(preprocessor: Preprocessor, target: TargetEncoder, frame: pd.DataFrame, codes: np.ndarray | None,
           weights: np.ndarray | None, order: np.ndarray) -> Batch:
    """All rows as tensors, laid out in ``order``; ``codes`` are the class indices when known."""
    features = preprocessor.transform(frame, order)
    y = codes if codes is not None else target.encode(frame[target.name], frame.attrs.get("source"))
    return Batch(torch.from_numpy(features.numeric), torch.from_numpy(features.categorical),
                 torch.from_numpy(y[order]), None if weights is None else torch.from_numpy(weights[order]))


# Under class_weights "auto", a rarest class below this share of the training rows gets weights.
RARE_CLASS_SHARE = 0.1


def class_weights_for(mode: str, rows: Rows, target: TargetEncoder) -> torch.Tensor | None:
    if mode == "none" or target.task == "regression":
        return None
    counts = (torch.bincount(rows.target, minlength=target.n_classes) if isinstance(rows, Batch)
              else rows.class_counts(target.n_classes)).float().clamp(min=1)
    if mode == "auto" and counts.min() >= RARE_CLASS_SHARE * counts.sum():
        return None
    return counts.sum() / (len(counts) * counts)  # scikit-learn's "balanced"
