"""The training loop: batches by index over in-memory tensors, early stopping with best-weight restore.

Data stays in tensors and each batch is a slice of a shuffled index (no DataLoader, no per-step
host sync): on tables, the per-step overhead, not the arithmetic, bounds small networks.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

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
from keel.train.fused import FusedStep, fused_step_supported

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

    def to(self, device: torch.device | str) -> "Batch":
        """The rows on ``device`` (the same object when they are there already)."""
        if self.numeric.device == torch.device(device):
            return self
        weight = None if self.weight is None else self.weight.to(device)
        return Batch(self.numeric.to(device), self.categorical.to(device), self.target.to(device), weight)


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
    """The validation metric to watch; an error if it does not fit the task.

    ``auto`` is ROC-AUC for binary targets (it ranks, so it stays informative when one class
    dominates and accuracy would barely move) and the loss otherwise.
    """
    if name == "auto":
        return "roc_auc" if task == "binary" else "loss"
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
        self.class_weights = class_weights
        self.loss = build_loss(loss, class_weights, settings.label_smoothing)
        self.validation_loss = build_loss(loss, class_weights)  # unsmoothed: it measures, not regularizes
        # Row-weighted runs (training.weight_column) take per-row losses and weight them here.
        self.row_loss = build_loss(loss, class_weights, settings.label_smoothing, reduction="none")
        self.validation_row_loss = build_loss(loss, class_weights, reduction="none")
        self.loss_name = loss
        self.target_scale = target_scale
        self.callback = callback
        self.monitor = resolve_monitor(settings.monitor, task)
        self.batch_size = 0  # resolved in fit, from the number of training rows
        # The fused step has no per-row weights: a row-weighted run trains on the autograd path.
        use_fused = (fused_step_supported(network, settings) and settings.weight_column is None
                     if fused is None else fused)
        self.fused = FusedStep(network, settings, loss, class_weights) if use_fused else None

    def fit(self, train: Batch, validation: Batch | None = None) -> History:
        """Train for up to ``epochs`` epochs.

        With validation rows and early stopping on, training stops after ``early_stopping`` epochs
        without improvement and the best epoch's weights are restored (Keras' ``EarlyStopping`` with
        ``restore_best_weights``); with early stopping off, the last epoch's weights are kept.
        """
        settings = self.settings
        history = History(monitor=self.monitor)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(settings.seed)
        # The fused step has its own optimizer state; torch.optim is built only for the autograd
        # path (its first construction imports torch._dynamo, ~0.9 s of a small run).
        optimizer = None if self.fused is not None else build_optimizer(self.network, settings)
        self.batch_size = resolve_batch_size(settings.batch_size, len(train))
        rate = LearningRate(settings, settings.epochs * len(_batch_bounds(len(train), self.batch_size)),
                            self.monitor)
        patience = settings.early_stopping if validation is not None and len(validation) else 0
        # Scores compare as (monitored metric, loss): a metric that saturates (ROC-AUC of 1.0 on a
        # small validation set) still prefers the epoch with the lower loss among equals.
        best_score: tuple[float, float] = (math.inf, math.inf)
        best_state, waited = None, 0
        with thread_budget(self.network, self.batch_size * self.network.spec.ensemble):
            for epoch in range(1, settings.epochs + 1):
                record = {"epoch": epoch, "lr": rate.value}
                record["loss"] = self._train_epoch(train, optimizer, rate, generator)
                if validation is not None and len(validation):
                    record.update(self.validate(validation))
                    metric = record["val_" + self.monitor]
                    score = (-metric if MONITORS[self.monitor] else metric, record["val_loss"])
                    if score < best_score:
                        best_score, waited, history.best_epoch = score, 0, epoch
                        if patience:  # with early stopping off, the last epoch's weights are kept
                            best_state = {name: value.clone() for name, value in self.network.state_dict().items()}
                    else:
                        waited += 1
                    rate.after_epoch(record["val_" + self.monitor])
                else:
                    rate.after_epoch(record["loss"])
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

    def _train_epoch(self, train: Batch, optimizer: torch.optim.Optimizer | None, rate: "LearningRate",
                     generator: torch.Generator) -> float:
        self.network.train()
        # The order comes from a CPU generator, so a seed shuffles alike on every device.
        order = torch.randperm(len(train), generator=generator).to(train.numeric.device)
        total = torch.zeros((), device=train.numeric.device)
        for rows in _batches(train, order, self.batch_size):
            if self.fused is not None:
                loss = self.fused(rows.numeric, rows.categorical, rows.target, rate.value)
            else:
                assert optimizer is not None
                for group in optimizer.param_groups:
                    group["lr"] = rate.value
                loss = self._autograd_step(rows, optimizer)
            rate.after_step()
            if rows.weight is None:
                total.add_(loss.detach(), alpha=len(rows))
            else:  # a tensor product, not float(): no host sync per step
                total.add_(loss.detach() * rows.weight.sum())
        return float(total) / (len(train) if train.weight is None else float(train.weight.sum()))  # one host sync

    def _autograd_step(self, rows: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
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
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(self.network.parameters(), settings.grad_clip)
        optimizer.step()
        return loss

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

    def validate(self, rows: Batch) -> dict[str, float]:
        """Validation loss and the monitored metric, in one pass under inference mode."""
        outputs = predict_outputs(self.network, rows.numeric, rows.categorical)
        with torch.inference_mode():
            if rows.weight is None:
                record = {"val_loss": float(self.validation_loss(outputs, rows.target))}
            else:
                record = {"val_loss": float(self.weighted_loss(self.validation_row_loss, outputs, rows.target,
                                                               rows.weight))}
            if self.monitor == "accuracy":
                predicted = outputs.argmax(1) if self.task == "multiclass" else (outputs[:, 0] > 0).long()
                record["val_accuracy"] = _mean((predicted == rows.target).float(), rows.weight)
            elif self.monitor == "rmse":
                error = (outputs[:, 0] - rows.target) * self.target_scale
                record["val_rmse"] = _mean(error.pow(2), rows.weight) ** 0.5
            elif self.monitor == "roc_auc":
                auc = roc_auc(rows.target.cpu().numpy(), to_probabilities(outputs, self.task).cpu().numpy(),
                              sample_weight=None if rows.weight is None else rows.weight.cpu().numpy())
                record["val_roc_auc"] = 0.5 if auc is None else auc  # undefined: neutral, so stopping still works
        return record


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> float:
    """The mean of ``values``, weighted by ``weight`` when there is one."""
    if weight is None:
        return float(values.mean())
    return float((values * weight).sum() / weight.sum().clamp(min=1e-12))


def resolve_batch_size(setting: int | str, n_rows: int) -> int:
    """``training.batch_size``, with ``auto`` as 256 rows, or a power of two giving at least 8 steps an
    epoch on small tables, but never under 32 (tiny batches make steps noisy and slow)."""
    if setting != "auto":
        return int(setting)
    return int(min(256, max(32, 2 ** math.floor(math.log2(max(n_rows, 1) / 8)))))


def _batches(rows: Batch, order: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """The rows in ``order``, a batch at a time (see ``_PRESHUFFLE_BYTES``)."""
    bounds = _batch_bounds(len(rows), batch_size)
    if rows.numeric.element_size() * rows.numeric.numel() < _PRESHUFFLE_BYTES:
        shuffled = rows._select(order)
        for start, stop in bounds:
            yield shuffled._select(slice(start, stop))
    else:
        for start, stop in bounds:
            yield rows._select(order[start:stop])


def _batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch (start, stop) pairs; a last batch of a single row joins the one before it."""
    bounds = [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:  # batch norm cannot train on one row
        bounds[-2:] = [(bounds[-2][0], n_rows)]
    return bounds


# An optimizer builder takes the trainable parameters and the training settings.
OptimizerBuilder = Callable[[list[nn.Parameter], TrainingConfig], torch.optim.Optimizer]


def _sgd(parameters: list[nn.Parameter], settings: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           nesterov=settings.nesterov and settings.momentum > 0, weight_decay=settings.decay)


def _adam(parameters: list[nn.Parameter], settings: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.decay)


def _adamw(parameters: list[nn.Parameter], settings: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.decay)


# training.optimizer -> its builder (the fused step in train/fused.py has its own kernels per name).
OPTIMIZERS: dict[str, OptimizerBuilder] = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}


def build_optimizer(network: nn.Module, settings: TrainingConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable parameters.

    Raises:
        ConfigError: ``settings.optimizer`` is not a key of ``OPTIMIZERS``.
    """
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

    def __init__(self, settings: TrainingConfig, total_steps: int, monitor: str) -> None:
        self.schedule = lookup(SCHEDULES, "training.schedule", settings.schedule)
        self.base = settings.lr
        self.total_steps = max(1, total_steps)
        self.warmup_steps = int(settings.warmup * self.total_steps)
        self.steps = 0
        self.value = self._scheduled()
        self.larger_is_better = lookup(MONITORS, "training.monitor", monitor)
        self.patience = max(2, settings.early_stopping // 3)
        self.best: float | None = None
        self.bad_epochs = 0

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


@contextlib.contextmanager
def thread_budget(network: nn.Module, batch_size: int) -> Iterator[None]:
    """Use one intra-op thread when a step's matrices are small.

    Small matmuls finish faster than threads can be woken and synchronised, and under CPU
    contention multi-threaded OpenMP on tiny ops collapses; large steps keep every thread.
    """
    widest = max((m.weight.shape[0] * m.weight.shape[1] for m in network.modules() if isinstance(m, nn.Linear)),
                 default=0)
    small = widest * batch_size < 1_000_000
    previous = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
