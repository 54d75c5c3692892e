"""The training loop: batches by index over in-memory tensors, early stopping with best-weight restore.

Data stays in tensors and each batch is a slice of a shuffled index (no DataLoader, no per-step
host sync): on tables, the per-step overhead, not the arithmetic, bounds small networks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from keel.config import TrainingConfig
from keel.errors import ConfigError
from keel.nn.losses import build_loss
from keel.nn.network import TabularNetwork, predict_outputs, to_probabilities
from keel.train.callbacks import EpochCallback
from keel.train.fused import FusedStep, fused_step_supported

# Below this many bytes of training data, each epoch shuffles the tensors once and batches are
# views (fewer ops per step); above it, batches are gathered by index (no second copy in memory).
_PRESHUFFLE_BYTES = 64 << 20

# Metrics a run can monitor, and whether larger is better.
MONITORS = {"loss": False, "accuracy": True, "roc_auc": True, "rmse": False}
_MONITOR_TASKS = {"accuracy": ("binary", "multiclass"), "roc_auc": ("binary", "multiclass"), "rmse": ("regression",)}


@dataclass
class Batch:
    """Rows as tensors: numbers (n, width) float32, categories (n, k) int64, target (n,)."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class History:
    """Per-epoch records and which epoch's weights were kept."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    monitor: str = "loss"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "monitor": self.monitor, "seconds": self.seconds}


def resolve_monitor(name: str, task: str) -> str:
    """The validation metric to watch: ``loss`` for ``auto``; an error if it does not fit the task."""
    if name == "auto":
        return "loss"
    if name in _MONITOR_TASKS and task not in _MONITOR_TASKS[name]:
        raise ConfigError(f"training.monitor {name!r} does not fit a {task} target; use loss or auto.")
    return name


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
    """

    def __init__(self, network: TabularNetwork, settings: TrainingConfig, task: str, loss: str,
                 class_weights: torch.Tensor | None = None, target_scale: float = 1.0,
                 callback: EpochCallback | None = None, fused: bool | None = None) -> None:
        self.network = network
        self.settings = settings
        self.task = task
        self.loss = build_loss(loss, class_weights)
        self.target_scale = target_scale
        self.callback = callback
        self.monitor = resolve_monitor(settings.monitor, task)
        use_fused = fused_step_supported(network) if fused is None else fused
        self.fused = FusedStep(network, settings, loss, class_weights) if use_fused else None

    def fit(self, train: Batch, validation: Batch | None = None) -> History:
        """Train for up to ``epochs`` epochs; with validation rows, keep the best epoch's weights."""
        settings = self.settings
        history = History(monitor=self.monitor)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(settings.seed)
        optimizer = build_optimizer(self.network, settings)
        steps_per_epoch = len(_batch_bounds(len(train), settings.batch_size))
        step_schedule = _cosine(optimizer, settings.epochs * steps_per_epoch) if settings.schedule == "cosine" else None
        epoch_schedule = build_plateau(optimizer, settings, self.monitor) if settings.schedule == "plateau" else None
        patience = settings.early_stopping if validation is not None and len(validation) else 0
        best_score, best_state, waited = math.inf, None, 0
        with thread_budget(self.network, settings.batch_size):
            for epoch in range(1, settings.epochs + 1):
                record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
                record["loss"] = self._train_epoch(train, optimizer, step_schedule, generator)
                if validation is not None and len(validation):
                    record.update(self.validate(validation))
                    score = record["val_" + self.monitor]
                    score = -score if MONITORS[self.monitor] else score
                    if score < best_score:
                        best_score, waited, history.best_epoch = score, 0, epoch
                        best_state = copy.deepcopy(self.network.state_dict())
                    else:
                        waited += 1
                    if epoch_schedule is not None:
                        epoch_schedule.step(record["val_" + self.monitor])
                elif epoch_schedule is not None:
                    epoch_schedule.step(record["loss"])
                history.epochs.append(record)
                stop = bool(patience) and waited >= patience
                record["stopped"] = stop
                if self.callback:
                    self.callback(epoch, settings.epochs, record)
                if stop:
                    history.stopped_early = True
                    break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        history.seconds = time.perf_counter() - started
        return history

    def _train_epoch(self, train: Batch, optimizer: torch.optim.Optimizer,
                     step_schedule: Callable[[], None] | None, generator: torch.Generator) -> float:
        self.network.train()
        order = torch.randperm(len(train), generator=generator)
        total = torch.zeros(())
        group = optimizer.param_groups[0]
        for rows in _batches(train, order, self.settings.batch_size):
            if self.fused is not None:
                loss = self.fused(rows.numeric, rows.categorical, rows.target, group["lr"])
            else:
                loss = self._autograd_step(rows, optimizer)
            if step_schedule is not None:
                step_schedule()
            total.add_(loss.detach(), alpha=len(rows))
        return float(total) / len(train)  # one host sync per epoch

    def _autograd_step(self, rows: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        settings = self.settings
        loss = self.loss(self.network(rows.numeric, rows.categorical), rows.target)
        objective = loss
        weights = self.network.linear_weights()
        if settings.l1:
            objective = objective + settings.l1 * sum(w.abs().sum() for w in weights)
        if settings.l2:
            objective = objective + settings.l2 * sum(w.pow(2).sum() for w in weights)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(self.network.parameters(), settings.grad_clip)
        optimizer.step()
        return loss

    def validate(self, rows: Batch) -> dict[str, float]:
        """Validation loss and the monitored metric, in one pass under inference mode."""
        outputs = predict_outputs(self.network, rows.numeric, rows.categorical)
        with torch.inference_mode():
            record = {"val_loss": float(self.loss(outputs, rows.target))}
            if self.monitor == "accuracy":
                predicted = outputs.argmax(1) if self.task == "multiclass" else (outputs[:, 0] > 0).long()
                record["val_accuracy"] = float((predicted == rows.target).float().mean())
            elif self.monitor == "rmse":
                error = (outputs[:, 0] - rows.target) * self.target_scale
                record["val_rmse"] = float(error.pow(2).mean().sqrt())
            elif self.monitor == "roc_auc":
                record["val_roc_auc"] = _roc_auc(to_probabilities(outputs, self.task).numpy(), rows.target.numpy())
        return record


def _roc_auc(probabilities: np.ndarray, target: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(target)) < 2:
        return 0.5  # undefined with one class present; neutral so early stopping still works
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(target, probabilities[:, 1]))
    present = np.unique(target)
    scores = probabilities[:, present] / probabilities[:, present].sum(1, keepdims=True)
    return float(roc_auc_score(target, scores, multi_class="ovr", labels=present))


def _batches(rows: Batch, order: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """The rows in ``order``, a batch at a time (see ``_PRESHUFFLE_BYTES``)."""
    bounds = _batch_bounds(len(rows), batch_size)
    if rows.numeric.element_size() * rows.numeric.numel() < _PRESHUFFLE_BYTES:
        shuffled = Batch(rows.numeric[order], rows.categorical[order], rows.target[order])
        for start, stop in bounds:
            yield Batch(shuffled.numeric[start:stop], shuffled.categorical[start:stop], shuffled.target[start:stop])
    else:
        for start, stop in bounds:
            index = order[start:stop]
            yield Batch(rows.numeric[index], rows.categorical[index], rows.target[index])


def _batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch (start, stop) pairs; a last batch of a single row joins the one before it."""
    bounds = [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:  # batch norm cannot train on one row
        bounds[-2:] = [(bounds[-2][0], n_rows)]
    return bounds


def build_optimizer(network: nn.Module, settings: TrainingConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable parameters."""
    parameters = [p for p in network.parameters() if p.requires_grad]
    decay = settings.weight_decay
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                               nesterov=settings.nesterov and settings.momentum > 0, weight_decay=decay or 0.0)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.01 if decay is None else decay)
    return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=decay or 0.0)


def _cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> Callable[[], None]:
    """A per-step cosine decay from the initial rate to 0 over all steps, written into the optimizer.

    Written here rather than with ``CosineAnnealingLR`` because the fused step never calls
    ``optimizer.step()``, which that scheduler insists on; the learning rate is the same.
    """
    group = optimizer.param_groups[0]
    base, step = group["lr"], 0

    def advance() -> None:
        nonlocal step
        step += 1
        group["lr"] = base * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

    return advance


def build_plateau(optimizer: torch.optim.Optimizer, settings: TrainingConfig,
                  monitor: str) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Halve the learning rate when the monitored metric stalls for a third of the early-stopping patience."""
    patience = max(2, settings.early_stopping // 3)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if MONITORS[monitor] else "min", factor=0.5, patience=patience)


@contextlib.contextmanager
def thread_budget(network: nn.Module, batch_size: int) -> Iterator[None]:
    """Use one intra-op thread when a step's matrices are small.

    Small matmuls finish faster than threads can be woken and synchronised, and under CPU
    contention multi-threaded OpenMP on tiny ops collapses; large steps keep every thread.
    """
    widest = max((m.weight.shape[0] * m.weight.shape[1] for m in network.modules() if isinstance(m, nn.Linear)),
                 default=0)
    small = widest * batch_size < 4_000_000
    previous = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
