"""The training loop: batches by index over in-memory tensors, early stopping with best-weight restore.

Data stays in tensors and each batch is a slice of a shuffled index (no DataLoader, no per-step
host sync): on tables, the per-step overhead, not the arithmetic, bounds small networks.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Union

import numpy as np
import torch
from torch import nn

from keel.config import TrainingConfig
from keel.errors import ConfigError
from keel.evaluate.metrics import roc_auc
from keel.nn.losses import build_loss
from keel.nn.network import TabularNetwork, predict_outputs, to_probabilities
from keel.registry import lookup
from keel.train.callbacks import EpochCallback
from keel.train.checkpoint import RandomState, TrainerState, kill_point
from keel.train.fused import FusedStep, StepCheck, fused_step_supported
from keel.train.guards import BatchView, NumericGuard, describe_problem, nonfinite_tensors
from keel.train.threads import ThreadTuner, thread_budget

# Below this many bytes of training data, each epoch shuffles the tensors once and batches are
# views (fewer ops per step); above it, batches are gathered by index (no second copy in memory).
_PRESHUFFLE_BYTES = 64 << 20

# Metrics a run can monitor, and whether larger is better.
MONITORS = {"loss": False, "accuracy": True, "roc_auc": True, "rmse": False}
_MONITOR_TASKS = {"accuracy": ("binary", "multiclass"), "roc_auc": ("binary", "multiclass"), "rmse": ("regression",)}


@dataclass
class Batch:
    """Rows as tensors: numbers (n, width) float32, categories (n, k) int64, target (n,), and
    optionally row weights (n,) float32."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.target)

    def _select(self, index: slice | torch.Tensor) -> "Batch":
        weight = None if self.weight is None else self.weight[index]
        return Batch(self.numeric[index], self.categorical[index], self.target[index], weight)

    def take(self, rows: np.ndarray) -> "Batch":
        """The given rows, in the given order; a run of consecutive positions is a view, not a copy."""
        if len(rows) and bool(np.all(np.diff(rows) == 1)):
            start, stop = int(rows[0]), int(rows[-1]) + 1
            if start == 0 and stop == len(self):
                return self
            return self._select(slice(start, stop))
        return self._select(torch.from_numpy(rows).to(self.numeric.device))

    @property
    def device(self) -> torch.device:
        return self.numeric.device

    def weight_total(self) -> float:
        """The rows' number, or the sum of their weights."""
        return float(len(self)) if self.weight is None else float(self.weight.sum())

    def to(self, device: torch.device | str) -> "Batch":
        """The rows on ``device`` (the same object when they are there already)."""
        if self.numeric.device == torch.device(device):
            return self
        weight = None if self.weight is None else self.weight.to(device)
        return Batch(self.numeric.to(device), self.categorical.to(device), self.target.to(device), weight)


class StreamedRows(Protocol):
    """Rows that do not fit in memory (keel.train.store.DiskRows), as the trainer reads them."""

    device: torch.device

    def __len__(self) -> int: ...

    def weight_total(self) -> float: ...

    def epoch_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]: ...

    def map(self, function: Callable[[Batch], torch.Tensor]) -> tuple[torch.Tensor, Batch, np.ndarray]: ...

    def sample(self, n_rows: int, seed: int) -> Batch: ...

    def class_counts(self, n_classes: int) -> torch.Tensor: ...


#: Training or validation rows: in memory, or streamed from disk a window at a time.
Rows = Union[Batch, StreamedRows]


@dataclass
class History:
    """Per-epoch records and which epoch's weights were kept."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    monitor: str = "loss"
    seconds: float = 0.0
    planned_epochs: int | None = None  # under training.time_limit: the epochs the time allowed, when fewer
    batch_size: int = 0  # rows a step (a rank's share of them under data-parallel training)
    steps_per_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        record = {"epochs": self.epochs, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                  "monitor": self.monitor, "seconds": self.seconds, "batch_size": self.batch_size,
                  "steps_per_epoch": self.steps_per_epoch}
        if self.planned_epochs is not None:
            record["planned_epochs"] = self.planned_epochs
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "History":
        """The history :meth:`to_dict` described (a checkpoint's)."""
        planned = record.get("planned_epochs")
        return cls([dict(epoch) for epoch in record["epochs"]], record["best_epoch"], bool(record["stopped_early"]),
                   str(record["monitor"]), float(record["seconds"]), None if planned is None else int(planned),
                   int(record.get("batch_size", 0)), int(record.get("steps_per_epoch", 0)))


class EpochCheckpoint(Protocol):
    """Where the trainer hands its state at the end of an epoch (``keel.train.checkpoint.RunCheckpoints``)."""

    def due(self, epoch: int) -> bool:
        """Whether a checkpoint should be written after ``epoch``."""

    def save(self, state: TrainerState) -> None:
        """Write one."""


def resolve_monitor(name: str, task: str) -> str:
    """The validation metric to watch; an error if it does not fit the task.

    ``auto`` is ROC-AUC for binary targets (it ranks, so it stays informative when one class
    dominates and accuracy would barely move) and the loss otherwise.
    """
    if name == "auto":
        return "roc_auc" if task == "binary" else "loss"
    if name in _MONITOR_TASKS and task not in _MONITOR_TASKS[name]:
        raise ConfigError(f"training.monitor {name!r} does not fit a {task} target; use loss or auto.")
    return name


@dataclass
class _Progress:
    """Trainer.fit's running state besides the network, the optimizer and the schedule."""

    history: History
    best_score: tuple[float, float] = (math.inf, math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0  # epochs since the best one
    epoch: int = 0  # epochs finished


# The fused step's optimizer moments, by attribute (those its optimizer does not keep are absent).
_FUSED_MOMENTS = ("momentum", "exp_avg", "exp_avg_sq")


class Trainer:
    """Trains a TabularNetwork in place.

    Args:
        network: The network to train.
        settings: The ``training`` section of the config.
        task: binary, multiclass or regression.
        loss: The loss name (see ``keel.nn.losses``), resolved for the task.
        class_weights: Per-class loss weights, or None.
        target_scale: Standard deviation of a regression target, to report RMSE in its units.
        callback: Called after every epoch with the epoch's record.
        fused: Use the fused step (``keel.train.fused``); None picks it whenever the network allows.
        checkpoint: Asked after every epoch but the last whether to checkpoint, and handed the
            trainer's state when so; None writes none.
    """

    def __init__(self, network: TabularNetwork, settings: TrainingConfig, task: str, loss: str,
                 class_weights: torch.Tensor | None = None, target_scale: float = 1.0,
                 callback: EpochCallback | None = None, fused: bool | None = None,
                 checkpoint: EpochCheckpoint | None = None, world: int = 1) -> None:
        self.network = network
        # Processes training data-parallel (keel.train.distributed): each step's gradients are averaged
        # over them, and each takes 1/world of the batch, so the global batch is the configured one.
        self.world = world
        self.settings = settings
        self.task = task
        self.class_weights = class_weights
        self.loss = build_loss(loss, class_weights, settings.label_smoothing)
        self.validation_loss = build_loss(loss, class_weights)  # unsmoothed: it measures, not regularizes
        # Row-weighted runs (training.weight_column) take per-row losses and weight them here.
        self.row_loss = build_loss(loss, class_weights, settings.label_smoothing, reduction="none")
        self.validation_row_loss = build_loss(loss, class_weights, reduction="none")
        self.loss_name = loss
        self.target_scale = target_scale
        self.callback = callback
        self.checkpoint = checkpoint
        # The time (time.perf_counter()) by which fit must end (training.time_limit, set by the pipeline).
        self.deadline: float | None = None
        # Moves ``deadline`` after each epoch from the epochs' seconds so far (the pipeline's share for the first
        # of several bagged networks, which only the pace tells); None keeps it.
        self.replan: Callable[[list[float]], float] | None = None
        self.monitor = resolve_monitor(settings.monitor, task)
        self.batch_size = 0  # resolved in fit, from the number of training rows
        self.threads: ThreadTuner | None = None  # times the steps and picks their threads (keel.train.threads)
        # The fused step has no per-row weights: a row-weighted run trains on the autograd path.
        use_fused = (fused_step_supported(network, settings) and settings.weight_column is None
                     if fused is None else fused)
        self.fused = FusedStep(network, settings, loss, class_weights) if use_fused else None

    def fit(self, train: Rows, validation: Rows | None = None, resume: TrainerState | None = None) -> History:
        """Train for up to ``epochs`` epochs.

        With validation rows and early stopping on, training stops after ``early_stopping`` epochs
        without improvement and the best epoch's weights are restored (Keras' ``EarlyStopping`` with
        ``restore_best_weights``); with early stopping off, the last epoch's weights are kept.

        Args:
            train: The training rows.
            validation: The rows early stopping watches, or None.
            resume: A checkpoint's state: training continues after its epoch, exactly as it would
                have gone on had it not been interrupted (the same weights, bit for bit).
        """
        settings = self.settings
        generator = torch.Generator().manual_seed(settings.seed)
        # The fused step has its own optimizer state; torch.optim is built only for the autograd
        # path (its first construction imports torch._dynamo, ~0.9 s of a small run).
        optimizer = None if self.fused is not None else build_optimizer(self.network, settings)
        self.batch_size = max(1, resolve_batch_size(settings.batch_size, len(train) * self.world) // self.world)
        self.steps_per_epoch = resolve_steps_per_epoch(settings.steps_per_epoch, len(train), self.batch_size)
        feed = _Feed(train, self.batch_size, generator)
        wait = resolve_patience(settings, self.steps_per_epoch)
        patience = wait if validation is not None and len(validation) else 0
        rate = LearningRate(settings, settings.epochs * self.steps_per_epoch, self.monitor, patience=wait)
        progress = _Progress(History(monitor=self.monitor))
        if resume is not None:
            progress = self._restore(resume, optimizer, rate, feed)
            # The skips before the checkpoint are in its history; the note counts the whole run's.
            numeric_guard(self).skipped.update({record["epoch"]: record["skipped_batches"]
                                                for record in progress.history.epochs if "skipped_batches" in record})
        history = progress.history
        history.batch_size, history.steps_per_epoch = self.batch_size, self.steps_per_epoch
        started = time.perf_counter() - history.seconds
        planned = settings.epochs if history.planned_epochs is None else history.planned_epochs
        epoch_seconds: list[float] = []
        tune = feed.rows.device.type == "cpu" and self.world == 1
        with thread_budget(self.network, self.batch_size * self.network.spec.ensemble, settings.threads,
                           tune=tune) as self.threads:
            for epoch in range(progress.epoch + 1, settings.epochs + 1):
                epoch_started = time.perf_counter()
                record: dict[str, Any] = {"epoch": epoch, "lr": rate.value}
                record["loss"], steps = self._train_epoch(feed, epoch, optimizer, rate)
                cut = steps < self.steps_per_epoch  # the time limit's end came within the pass
                if cut:  # the epoch line, the rows/s and the run's note say so
                    record["steps"], record["epoch_steps"] = steps, self.steps_per_epoch
                skipped = numeric_guard(self).skipped.get(epoch)
                if skipped:
                    record["skipped_batches"] = skipped
                if validation is not None and len(validation):
                    record.update(self.validate(validation))
                    self._track_best(progress, record, epoch, keep_weights=bool(patience))
                    rate.after_epoch(record["val_" + self.monitor])
                else:
                    rate.after_epoch(record["loss"])
                history.epochs.append(record)
                progress.epoch = epoch
                if self.deadline is not None:
                    epoch_seconds.append(time.perf_counter() - epoch_started)
                    if self.replan is not None and not cut:
                        self.deadline = self.replan(epoch_seconds)
                    planned = epoch if cut else self._plan(epoch, planned, epoch_seconds, rate)
                    history.planned_epochs = planned if planned < settings.epochs else None
                # Early stopping, or the time limit's last epoch (never the config's own last epoch).
                waited = bool(patience) and progress.waited >= patience
                stop = waited or cut or epoch >= planned < settings.epochs
                record["stopped"] = stop
                if stop and (cut or not waited):  # what the epoch line and the report say ended it
                    record["stopped_by"] = "time limit"
                if self.callback:
                    self.callback(epoch, planned, record)
                kill_point("epoch-ended")
                if stop:
                    history.stopped_early = True
                    break
                if self.checkpoint is not None and epoch < settings.epochs and self.checkpoint.due(epoch):
                    history.seconds = time.perf_counter() - started
                    self.checkpoint.save(self._state(progress, optimizer, rate, feed))
        if progress.best_state is not None:
            self.network.load_state_dict(progress.best_state)
        history.seconds = time.perf_counter() - started
        return history

    def _plan(self, epoch: int, planned: int, epoch_seconds: list[float], rate: "LearningRate") -> int:
        """The epochs the time left allows (``deadline``, training.time_limit): as many more as fit at the
        median pace of the last three epochs, never more than planned before. The learning-rate
        schedule is stretched or squeezed to end with them, so a cosine still anneals.

        The first epoch counts only until a second is timed: it carries one-time costs (lazy imports, the
        first allocations; 2.9 s against 0.1-0.2 s for the next ones on a 824-row table), and one slow epoch
        (another process taking the CPU) must not cap the plan for good: the median, not the slowest. So the plan
        waits for PACED_EPOCHS epochs after the first, while the time left holds two more at the pace so far: a
        median of one epoch is that epoch, and a slow second one (the thread tuner's trial beside another
        process: 1.5 s against 0.4 s) once capped a 20 s run at 8 epochs, which ended at 13 s."""
        assert self.deadline is not None
        left = self.deadline - time.perf_counter()
        if len(epoch_seconds) <= PACED_EPOCHS and left > 2 * epoch_pace(epoch_seconds):
            allowed = planned  # time for more epochs: plan from a steadier pace (every rank still agrees below)
        else:
            allowed = epoch + max(0, int(left // epoch_pace(epoch_seconds)))
        if self.world > 1:  # every rank must stop at the same epoch: the most cautious plan wins
            from keel.train.distributed import agree_min

            allowed = agree_min(allowed)
        if allowed >= planned:
            return planned
        rate.fit_to(allowed * self.steps_per_epoch)
        return allowed

    def _track_best(self, progress: "_Progress", record: dict[str, Any], epoch: int, keep_weights: bool) -> None:
        """Early stopping's bookkeeping after a validated epoch: the best score, its weights, the wait."""
        metric = record["val_" + self.monitor]
        # Scores compare as (monitored metric, loss): a metric that saturates (ROC-AUC of 1.0 on a
        # small validation set) still prefers the epoch with the lower loss among equals.
        score = (-metric if MONITORS[self.monitor] else metric, record["val_loss"])
        if score < progress.best_score:
            progress.best_score, progress.waited, progress.history.best_epoch = score, 0, epoch
            if keep_weights:  # with early stopping off, the last epoch's weights are kept
                progress.best_state = {name: value.clone() for name, value in self.network.state_dict().items()}
        else:
            progress.waited += 1

    def _state(self, progress: "_Progress", optimizer: torch.optim.Optimizer | None, rate: "LearningRate",
               feed: "_Feed") -> TrainerState:
        """Everything the loop needs to go on after ``progress.epoch`` (the tensors are not copied:
        the checkpoint is written before training moves on)."""
        tensors, values = self._optimizer_state(optimizer)
        shuffle, position = feed.place()
        best = None if progress.best_score == (math.inf, math.inf) else list(progress.best_score)
        on_gpu = any(parameter.is_cuda for parameter in self.network.parameters())
        return TrainerState(
            epoch=progress.epoch, network=self.network.state_dict(), optimizer=tensors, optimizer_values=values,
            shuffle=shuffle, pass_position=position, rate=rate.state(), history=progress.history.to_dict(),
            best_score=best, waited=progress.waited, best_weights=progress.best_state, random=RandomState.capture(cuda=on_gpu),
            seconds=progress.history.seconds)

    def _restore(self, state: TrainerState, optimizer: torch.optim.Optimizer | None, rate: "LearningRate",
                 feed: "_Feed") -> "_Progress":
        """Put the network, the optimizer, the schedule and every random generator back as ``state`` had them."""
        self.network.load_state_dict(state.network)
        self._load_optimizer_state(optimizer, state.optimizer, state.optimizer_values)
        rate.load_state(state.rate)
        feed.restore(state.shuffle, state.pass_position)
        state.random.restore()
        best = (math.inf, math.inf) if state.best_score is None else (state.best_score[0], state.best_score[1])
        return _Progress(History.from_dict(state.history), best, state.best_weights, state.waited, state.epoch)

    def _optimizer_state(self, optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, torch.Tensor],
                                                                                 dict[str, Any]]:
        """The optimizer's state as named tensors and JSON values (the fused step's, or torch.optim's)."""
        if self.fused is not None:
            fused = self.fused
            tensors = {"step_count": fused.step_count}
            for name in _FUSED_MOMENTS:
                tensors.update({f"{name}.{index}": tensor for index, tensor in enumerate(getattr(fused, name, []))})
            return tensors, {"first": fused.first}
        tensors, values = {}, {}
        for index, entry in (optimizer.state_dict()["state"] if optimizer is not None else {}).items():
            for name, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{index}.{name}"] = value
                else:  # SGD without momentum keeps a None buffer
                    values[f"{index}.{name}"] = value
        return tensors, values

    def _load_optimizer_state(self, optimizer: torch.optim.Optimizer | None, tensors: dict[str, torch.Tensor],
                              values: dict[str, Any]) -> None:
        if self.fused is not None:
            fused = self.fused
            fused.step_count.copy_(tensors["step_count"])
            for name in _FUSED_MOMENTS:
                for index, tensor in enumerate(getattr(fused, name, [])):
                    tensor.copy_(tensors[f"{name}.{index}"])
            fused.first = bool(values["first"])
            return
        if optimizer is None:
            return
        state: dict[int, dict[str, Any]] = {}
        for key, value in [*tensors.items(), *values.items()]:
            position, name = key.split(".", 1)
            state.setdefault(int(position), {})[name] = value
        # The groups' settings come from the config, as they did when the checkpoint was written.
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})

    def _train_epoch(self, feed: "_Feed", epoch: int, optimizer: torch.optim.Optimizer | None,
                     rate: "LearningRate") -> tuple[float, int]:
        """``steps_per_epoch`` steps from ``feed``, fewer where the time limit's end (``deadline``) comes first;
        returns their mean training loss per row and the steps taken.

        The plan between epochs (``_plan``) assumes the pace of the last ones; an epoch slowed by other work on
        the machine (loans: 13 s against 4.6 s) would run past the end, so the end is checked before each step
        too (a clock read, ~0.1 µs), but not before an epoch's first: an epoch started (planned between epochs)
        takes a step, and the run's first one gives it a model (and carries the one-time costs: lazy imports, the
        first allocations). Not for ranks, which must all take the same steps."""
        self.network.train()
        device = feed.rows.device
        total = torch.zeros((), device=device)
        rows_taken = 0  # rows of the steps taken; weighted rows count their weight instead:
        weight_taken = torch.zeros((), dtype=torch.float64, device=device)  # a tensor, no host sync per step
        guard = numeric_guard(self)
        n_steps = self.steps_per_epoch
        # Streamed rows are not kept, so a late check could not find the bad batch again: check each step.
        check = step_check(device, guard) if isinstance(feed.rows, Batch) else ("all" if guard.skips else "loss")
        losses = torch.zeros(n_steps, device=device) if check == "none" else None
        stepped: list[torch.Tensor] = []  # each step's row indices, for the late check of a bad loss
        skipped = 0.0  # rows (or row weight) of the skipped batches
        previous = None  # the batch before, whose update a non-finite loss may reveal as the culprit
        cut = self.deadline if self.world == 1 else None
        taken_steps = n_steps
        for step in range(1, n_steps + 1):
            if cut is not None and step > 1 and time.perf_counter() >= cut:
                taken_steps = step - 1
                break
            if self.threads is not None:
                self.threads.step_started()
            rows, indices = feed.next()
            if self.fused is not None:
                loss, finite = self.fused.step(rows.numeric, rows.categorical, rows.target, rate.value, check=check)
            else:
                assert optimizer is not None
                for group in optimizer.param_groups:  # a fine-tuned encoder's group keeps its ratio to the rate
                    group["lr"] = rate.value * group.get("scale", 1.0)
                loss, finite = self._autograd_step(rows, optimizer, check=check)
            if not finite:  # raises under "stop"; under "skip_batch" the weights were left as they were
                _bad_step(self, guard, (epoch, step, n_steps), loss, rows, previous, rate.value)
                skipped += len(rows) if rows.weight is None else float(rows.weight.sum())
            elif rows.weight is None:
                total.add_(loss.detach(), alpha=len(rows))
            else:
                total.add_(loss.detach() * rows.weight.sum())
            if rows.weight is None:
                rows_taken += len(rows)
            else:
                weight_taken.add_(rows.weight.sum())
            if losses is not None:
                losses[step - 1] = loss.detach()
                assert indices is not None
                stepped.append(indices)
            previous = rows
            rate.after_step()
            if self.threads is not None:
                self.threads.step_ended()
        if losses is not None:
            assert isinstance(feed.rows, Batch)
            _check_recorded_losses(self, guard, losses[:taken_steps], feed.rows, stepped, epoch)
        assert previous is not None
        _check_weights(self, guard, epoch, previous, rate.value)
        if guard.skipped.get(epoch, 0) == taken_steps:
            guard.all_skipped(epoch, taken_steps, _batch_view(self, previous, rate.value))
        taken = rows_taken if rows_taken else float(weight_taken)
        return float(total) / (taken - skipped), taken_steps  # one host sync (two with weights)

    def _autograd_step(self, rows: Batch, optimizer: torch.optim.Optimizer,
                       check: StepCheck = "all") -> tuple[torch.Tensor, bool]:
        """One step; returns the loss and whether the optimizer stepped. ``check`` is what must be
        finite for it to step (as :meth:`FusedStep.step` has it); else the weights stay as they were."""
        settings = self.settings
        with torch.autocast(rows.numeric.device.type, dtype=torch.bfloat16, enabled=settings.precision == "bfloat16"):
            outputs = self.network.members(rows.numeric, rows.categorical)  # (batch, k, n_outputs)
        k = outputs.shape[1]
        target = rows.target if k == 1 else rows.target.repeat_interleave(k)
        if rows.weight is None:
            loss = self.loss(outputs.float().flatten(0, 1), target)  # the mean of the members' losses
        else:
            weight = rows.weight if k == 1 else rows.weight.repeat_interleave(k)
            loss = self.weighted_loss(self.row_loss, outputs.float().flatten(0, 1), target, weight)
        objective = loss
        weights = self.network.linear_weights()
        if settings.l1:
            objective = objective + settings.l1 * sum(w.abs().sum() for w in weights)
        if settings.l2:
            objective = objective + settings.l2 * sum(w.pow(2).sum() for w in weights)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if self.world > 1:
            from keel.train.distributed import average_gradients

            average_gradients(list(self.network.parameters()), self.world)
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(self.network.parameters(), settings.grad_clip)
        if check != "none" and not (math.isfinite(loss.item()) and (check == "loss" or _gradients_finite(self.network))):
            return loss, False
        optimizer.step()
        return loss, True

    def weighted_loss(self, row_loss: nn.Module, outputs: torch.Tensor, target: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
        """The row-weighted mean loss: sum(w * loss) / sum(w), as scikit-learn's sample_weight.

        With class weights, cross-entropy's per-row losses already carry their class's weight, and
        its mean divides by the rows' class weights too; so does this one.
        """
        per_row = row_loss(outputs, target)
        total = weight
        if self.loss_name == "cross_entropy" and self.class_weights is not None:
            total = weight * self.class_weights[target]
        return (per_row * weight).sum() / total.sum().clamp(min=1e-12)

    def validate(self, rows: Rows) -> dict[str, float]:
        """Validation loss and the monitored metric, in one pass under inference mode."""
        if isinstance(rows, Batch):
            outputs, labels = predict_outputs(self.network, rows.numeric, rows.categorical), rows
        else:  # a window at a time; the outputs, targets and weights of every row are small
            outputs, labels, _ = rows.map(lambda batch: predict_outputs(self.network, batch.numeric, batch.categorical))
        with torch.inference_mode():
            # Per-row losses summed by _mean, not the loss's own mean: see _stable_sum.
            per_row = self.validation_row_loss(outputs, labels.target)  # (n,), class weights applied
            divisor = None  # cross-entropy's mean divides by the rows' class weights too
            if self.loss_name == "cross_entropy" and self.class_weights is not None:
                divisor = self.class_weights[labels.target]
            record = {"val_loss": _mean(per_row, labels.weight, divisor)}
            if self.monitor == "accuracy":
                predicted = outputs.argmax(1) if self.task == "multiclass" else (outputs[:, 0] > 0).long()
                record["val_accuracy"] = _mean((predicted == labels.target).float(), labels.weight)
            elif self.monitor == "rmse":
                error = (outputs[:, 0] - labels.target) * self.target_scale
                record["val_rmse"] = _mean(error.pow(2), labels.weight) ** 0.5
            elif self.monitor == "roc_auc":
                auc = roc_auc(labels.target.cpu().numpy(), to_probabilities(outputs, self.task).cpu().numpy(),
                              sample_weight=None if labels.weight is None else labels.weight.cpu().numpy())
                record["val_roc_auc"] = 0.5 if auc is None else auc  # undefined: neutral, so stopping still works
        return record


def _mean(values: torch.Tensor, weight: torch.Tensor | None, divisor: torch.Tensor | None = None) -> float:
    """The mean of ``values``, weighted by ``weight`` when there is one; ``divisor`` holds per-row
    factors that ``values`` already carry and the total must count (cross-entropy's class weights)."""
    total = weight if divisor is None else divisor if weight is None else weight * divisor
    numerator = _stable_sum(values if weight is None else values * weight)
    return numerator / (len(values) if total is None else max(_stable_sum(total), 1e-12))


def _stable_sum(values: torch.Tensor) -> float:
    """The sum of a tensor, rounded alike whatever the number of threads: NumPy's pairwise sum in float64.

    torch splits a sum over more than 32,768 values across threads, and 1 and 2 threads then round
    its last bits differently (measured: the validation loss on 40,000 rows), which could tip an
    early-stopping decision and did change the history.
    """
    return float(values.detach().to("cpu", torch.float64).numpy().sum())


def resolve_batch_size(setting: int | str, n_rows: int) -> int:
    """``training.batch_size``, with ``auto`` as 256 rows, or a power of two giving at least 8 steps an
    epoch on small tables, but never under 32 (tiny batches make steps noisy and slow)."""
    if setting != "auto":
        return int(setting)
    return int(min(256, max(32, 2 ** math.floor(math.log2(max(n_rows, 1) / 8)))))


def resolve_steps_per_epoch(setting: int | str, n_rows: int, batch_size: int) -> int:
    """``training.steps_per_epoch`` as a number of steps (``n_rows`` and ``batch_size`` are a rank's own)."""
    per_pass = len(batch_bounds(n_rows, batch_size))
    if setting == "pass":
        return per_pass
    if setting == "auto":
        return min(per_pass, AUTO_STEPS_PER_EPOCH)
    return int(setting)


def resolve_patience(settings: TrainingConfig, steps_per_epoch: int) -> int:
    """The epochs early stopping waits: ``early_stopping``, or fewer when ``early_stopping_steps`` is set and
    the epochs are long (whole epochs, at least ``MIN_PATIENCE``); 0 when early stopping is off."""
    patience = settings.early_stopping
    if patience and settings.early_stopping_steps is not None:
        patience = min(patience, max(MIN_PATIENCE, math.ceil(settings.early_stopping_steps / steps_per_epoch)))
    return patience


def epoch_pace(epoch_seconds: list[float]) -> float:
    """Seconds an epoch, from the epochs timed so far: the median of the last three, the first left out once
    another is timed (it carries one-time costs: lazy imports, the first allocations)."""
    timed = epoch_seconds[1:] or epoch_seconds
    return statistics.median(timed[-3:])


# Under a time limit, the epochs after the first whose median pace the plan waits for (Trainer._plan).
PACED_EPOCHS = 3


# The shortest wait early_stopping_steps leaves: single validations are noisy (on the 204k-row table of
# bench/accuracy.py the validation ROC-AUC wanders by +-0.001 between epochs once it has converged).
MIN_PATIENCE = 4


# training.steps_per_epoch auto: a pass, or this many steps when a pass is longer (bench/accuracy.py measured
# it on the 43k- and 204k-row tables; see the README's "Large tables").
AUTO_STEPS_PER_EPOCH = 256


class _Feed:
    """Training batches, epoch after epoch: the rows in a shuffled order, a pass at a time, an epoch taking
    the next ``steps_per_epoch`` batches wherever the pass stands (a new pass shuffled when one ends).

    Its place is the generator's state at the start of the current pass and the batches taken since, so a
    checkpoint can put it back: the pass is shuffled again from that state and its first batches skipped.
    """

    def __init__(self, rows: Rows, batch_size: int, generator: torch.Generator) -> None:
        self.rows = rows
        self.batch_size = batch_size
        self.generator = generator
        self.bounds = batch_bounds(len(rows), batch_size)
        self.started = generator.get_state()  # the generator at the current pass's start
        self.position = len(self.bounds)  # batches taken from the current pass; at its end, the next starts one
        self._order: torch.Tensor | None = None
        self._shuffled: Batch | None = None
        self._stream: Iterator[Batch] | None = None

    def place(self) -> tuple[torch.Tensor, int]:
        """Where the feed stands, for a checkpoint: the generator at the current pass's start and the batches
        taken from it, or (between passes) the generator as it is and 0."""
        if self.position < len(self.bounds):
            return self.started, self.position
        return self.generator.get_state(), 0

    def restore(self, state: torch.Tensor, position: int) -> None:
        """Continue from a :meth:`place`."""
        self.generator.set_state(state)
        self.position = len(self.bounds)
        if position:
            self._start_pass()
            for _ in range(position):
                self.next()

    def _start_pass(self) -> None:
        self.started = self.generator.get_state()
        self.position = 0
        rows = self.rows
        if isinstance(rows, Batch):
            # The order comes from a CPU generator, so a seed shuffles alike on every device.
            self._order = torch.randperm(len(rows), generator=self.generator).to(rows.device)
            small = rows.numeric.element_size() * rows.numeric.numel() < _PRESHUFFLE_BYTES
            self._shuffled = rows._select(self._order) if small else None  # batches as views of one copy
        else:
            self._stream = rows.epoch_batches(self.batch_size, self.generator)

    def next(self) -> tuple[Batch, torch.Tensor | None]:
        """The next batch, and its row indices when the rows are in memory."""
        if self.position == len(self.bounds):
            self._start_pass()
        start, stop = self.bounds[self.position]
        self.position += 1
        if not isinstance(self.rows, Batch):
            assert self._stream is not None
            return next(self._stream), None
        assert self._order is not None
        indices = self._order[start:stop]
        if self._shuffled is not None:
            return self._shuffled._select(slice(start, stop)), indices
        return self.rows._select(indices), indices


def batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch (start, stop) pairs; a last batch of a single row joins the one before it."""
    bounds = [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:  # batch norm cannot train on one row
        bounds[-2:] = [(bounds[-2][0], n_rows)]
    return bounds


# An optimizer builder takes the trainable parameters and the training settings.
# Builders take the parameters, or optimizer groups of them (a fine-tuned encoder's at its own rate).
OptimizerBuilder = Callable[[list[Any], TrainingConfig], torch.optim.Optimizer]


def _sgd(parameters: list[Any], settings: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           nesterov=settings.nesterov and settings.momentum > 0, weight_decay=settings.decay)


# Adam and AdamW run torch's fused kernel (one pass over each tensor): on the balanced preset's ~20
# parameter tensors it steps in 0.32 ms against the default multi-tensor kernel's 0.96 ms here, and it
# spares the default's dozens of scalar copies a step.
def _adam(parameters: list[Any], settings: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.decay, fused=_fusable(parameters))


def _adamw(parameters: list[Any], settings: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.decay, fused=_fusable(parameters))


def _fusable(parameters: list[Any]) -> bool | None:
    """True where torch has the fused Adam kernel for every parameter's device and dtype; None (torch's
    default kernel) elsewhere. ``parameters``: tensors, or optimizer groups of them."""
    tensors = [p for item in parameters for p in (item["params"] if isinstance(item, dict) else [item])]
    return True if all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in tensors) else None


# training.optimizer -> its builder (the fused step in train/fused.py has its own kernels per name).
OPTIMIZERS: dict[str, OptimizerBuilder] = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}


def build_optimizer(network: nn.Module, settings: TrainingConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable parameters.

    Raises:
        ConfigError: ``settings.optimizer`` is not a key of ``OPTIMIZERS``.
    """
    groups = network.parameter_groups(settings.lr) if isinstance(network, TabularNetwork) else None
    if groups is not None and len(groups) > 1:  # a fine-tuned encoder trains at its own rate
        return lookup(OPTIMIZERS, "training.optimizer", settings.optimizer)(groups, settings)
    parameters = [p for p in network.parameters() if p.requires_grad]
    return lookup(OPTIMIZERS, "training.optimizer", settings.optimizer)(parameters, settings)


def _cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t))


def _multicycle(t: float) -> float:
    return 0.5 * (1 - math.cos(2 * math.pi * math.log2(1 + 15 * t)))


@dataclass(frozen=True)
class Schedule:
    """How one ``training.schedule`` moves the rate after any warmup.

    Attributes:
        factor: The share of ``lr`` at training progress t in [0, 1], recomputed after every step;
            None keeps the rate where it is (``lr``, or wherever plateau halving left it).
        halve_on_plateau: Halve the rate when the monitored metric stops improving.
    """

    factor: Callable[[float], float] | None = None
    halve_on_plateau: bool = False


# training.schedule -> how it moves the rate.
SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(),
    "cosine": Schedule(factor=_cosine),
    "multicycle": Schedule(factor=_multicycle),
    "plateau": Schedule(halve_on_plateau=True),
}


class LearningRate:
    """The learning rate under ``training.schedule``, independent of any optimizer object.

    constant: ``lr`` throughout. cosine: decays per step from ``lr`` to 0 over all steps (as
    ``CosineAnnealingLR``). multicycle: RealMLP's coslog4, ``lr (1 - cos(2 pi log2(1 + 15 t))) / 2``
    for t from 0 to 1: four cosine cycles, each twice as long as the one before. plateau: halves
    when the monitored metric has not improved (by 1e-4 relative) for more than a third of the
    early-stopping patience (at least 2 epochs), as ``ReduceLROnPlateau`` does with those settings.
    ``warmup``: the rate rises linearly from 0 over that share of the steps, then follows the schedule.

    Raises:
        ConfigError: ``settings.schedule`` is not a key of ``SCHEDULES``.
    """

    def __init__(self, settings: TrainingConfig, total_steps: int, monitor: str, patience: int | None = None) -> None:
        self.schedule = lookup(SCHEDULES, "training.schedule", settings.schedule)
        self.base = settings.lr
        self.total_steps = max(1, total_steps)
        self.warmup = settings.warmup
        self.warmup_steps = int(settings.warmup * self.total_steps)
        self.steps = 0
        self.value = self._scheduled()
        self.larger_is_better = lookup(MONITORS, "training.monitor", monitor)
        # A third of early stopping's wait (resolve_patience: shorter with early_stopping_steps), so that the rate
        # halves before training stops.
        self.patience = max(2, (settings.early_stopping if patience is None else patience) // 3)
        self.best: float | None = None
        self.bad_epochs = 0

    def fit_to(self, total_steps: int) -> None:
        """End the schedule (and scale its warm-up) at ``total_steps`` instead: the steps a time limit allows."""
        self.total_steps = max(self.steps, total_steps, 1)
        self.warmup_steps = int(self.warmup * self.total_steps)
        if self.schedule.factor is not None or self.steps <= self.warmup_steps:
            self.value = self._scheduled()

    def state(self) -> dict[str, Any]:
        """Where the schedule stands (JSON values), for a checkpoint."""
        return {"steps": self.steps, "value": self.value, "best": self.best, "bad_epochs": self.bad_epochs,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}  # a time limit changes them

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        self.steps, self.value = int(state["steps"]), float(state["value"])
        self.total_steps = int(state.get("total_steps", self.total_steps))
        self.warmup_steps = int(state.get("warmup_steps", self.warmup_steps))
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])

    def after_step(self) -> None:
        self.steps = min(self.steps + 1, self.total_steps)
        if self.schedule.factor is not None or self.steps <= self.warmup_steps:
            self.value = self._scheduled()

    def _scheduled(self) -> float:
        """The rate at the current step, before any plateau halving."""
        if self.steps < self.warmup_steps:
            return self.base * (self.steps + 1) / (self.warmup_steps + 1)
        if self.schedule.factor is None:
            return self.base
        return self.base * self.schedule.factor(self.steps / self.total_steps)

    def after_epoch(self, metric: float) -> None:
        if not self.schedule.halve_on_plateau:
            return
        score = -metric if self.larger_is_better else metric
        if self.best is None or score < self.best - abs(self.best) * 1e-4:
            self.best, self.bad_epochs = score, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.value *= 0.5
            self.bad_epochs = 0


def numeric_guard(trainer: Trainer) -> NumericGuard:
    """The trainer's numeric guard (``trainer.guard``), made from ``training.nonfinite`` on first use.

    It lives on the trainer so that its count of skipped batches outlasts each epoch; the pipeline
    may set its ``input_names`` (:func:`keel.train.guards.numeric_input_names`) so that messages name
    columns rather than positions.
    """
    guard = trainer.__dict__.get("guard")
    if not isinstance(guard, NumericGuard):
        guard = trainer.__dict__["guard"] = NumericGuard(trainer.settings.nonfinite)
    return guard


def step_check(device: torch.device, guard: NumericGuard) -> StepCheck:
    """What each step checks before its update (see keel.train.guards): the loss and every gradient
    under ``skip_batch``, which must not let a bad batch through; under ``stop`` the loss alone on the
    CPU, and nothing on a GPU, which keeps each step's loss and reads them once an epoch."""
    if guard.skips:
        return "all"
    return "loss" if device.type == "cpu" else "none"


def _bad_step(trainer: Trainer, guard: NumericGuard, where: tuple[int, int, int], loss: torch.Tensor, rows: Batch,
              previous: Batch | None, lr: float) -> None:
    """A step whose loss or gradient is not finite: stop (or skip it), naming it, or the update
    before it when the weights it ran on were no longer finite."""
    epoch, step, n_steps = where
    broken = nonfinite_tensors(trainer.network.named_parameters())
    if broken:  # a finite loss whose gradient was not (or an update that overflowed) shows only now
        guard.weights_failed(epoch, broken, _batch_view(trainer, previous or rows, lr), step=step)
    guard.bad_step(epoch, step, n_steps, _step_problem(trainer, loss), _batch_view(trainer, rows, lr))


def _gradients_finite(network: nn.Module) -> bool:
    """True when every gradient is finite: one foreach kernel (the one AMP's gradient scaler uses to
    find overflow; multiplying by 1 leaves the gradients as they are) and one host read."""
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    if not grads:
        return True
    found = torch.zeros((), device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=grads[0].device))
    return not bool(found)


def _step_problem(trainer: Trainer, loss: torch.Tensor) -> str:
    """What was not finite at the step that just failed (read again: only failures pay for it)."""
    if trainer.fused is not None:
        gradients_finite = trainer.fused.gradients_finite()
    else:
        gradients_finite = _gradients_finite(trainer.network)
    return describe_problem(float(loss.detach()), gradients_finite)


def _batch_view(trainer: Trainer, rows: Batch, lr: float) -> BatchView:
    """What the guard reads from a bad batch to name the likely cause."""
    largest = max((float(p.detach().abs().max()) for p in trainer.network.parameters() if p.numel()), default=0.0)
    return BatchView(rows.numeric, rows.target, trainer.task, lr, largest)


def _check_recorded_losses(trainer: Trainer, guard: NumericGuard, losses: torch.Tensor, train: Batch,
                           stepped: list[torch.Tensor], epoch: int) -> None:
    """The end-of-epoch check of a GPU run under "stop": the first step whose loss is not finite
    (``stepped``: each step's row indices)."""
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()  # one host read an epoch
    if not bad:
        return
    rows = train._select(stepped[bad[0]])  # the batch of that step
    guard.bad_step(epoch, bad[0] + 1, len(stepped), describe_problem(float(losses[bad[0]]), True),
                   _batch_view(trainer, rows, trainer.settings.lr), checked_late=True)


def _check_weights(trainer: Trainer, guard: NumericGuard, epoch: int, rows: Batch, lr: float) -> None:
    """Once an epoch (~10 µs): an update can overflow from finite gradients into weights that no
    loss of this epoch has used yet (an embedding row, the last step's update)."""
    # The fused step trains only its own list (frozen one-hot tables cannot change).
    parameters = trainer.fused.parameters if trainer.fused is not None else list(trainer.network.parameters())
    if not parameters:
        return
    if parameters[0].device.type == "cpu":  # a host read per tensor is cheaper here than stacking them
        finite = all(math.isfinite(p.detach().sum().item()) for p in parameters)
    else:  # one host read: on a GPU each one waits for the queue
        finite = math.isfinite(torch.stack([p.detach().sum() for p in parameters]).sum().item())
    if finite:
        return
    names = nonfinite_tensors(trainer.network.named_parameters())
    if names:  # else only a float32 sum of huge (finite) weights overflowed
        guard.weights_failed(epoch, names, _batch_view(trainer, rows, lr))
