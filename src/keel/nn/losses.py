"""Losses per task, resolved from the config's ``training.loss`` name."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from keel.registry import lookup

LOSSES_BY_TASK = {
    "binary": ("bce",),
    "multiclass": ("cross_entropy",),
    "regression": ("mse", "mae", "huber"),
}


def resolve_loss_name(name: str, task: str) -> str:
    """The loss for ``task``: the task's default for ``auto``, else ``name`` if it fits the task."""
    from keel.errors import ConfigError

    allowed = LOSSES_BY_TASK[task]
    if name == "auto":
        return allowed[0]
    if name not in allowed:
        raise ConfigError(
            f"training.loss {name!r} does not fit a {task} target; use one of {list(allowed)} or auto."
        )
    return name


# A loss builder takes (class_weights, label_smoothing, reduction); regression losses ignore the first two.
LossBuilder = Callable[[torch.Tensor | None, float, str], nn.Module]


def _cross_entropy(class_weights: torch.Tensor | None, label_smoothing: float, reduction: str) -> nn.Module:
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing, reduction=reduction)


def _bce(class_weights: torch.Tensor | None, label_smoothing: float, reduction: str) -> nn.Module:
    pos_weight = None if class_weights is None else (class_weights[1] / class_weights[0]).reshape(1)
    return _OneOutput(nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction=reduction), label_smoothing)


def _regression(loss: Callable[..., nn.Module]) -> LossBuilder:
    return lambda class_weights, label_smoothing, reduction: _OneOutput(loss(reduction=reduction))


# training.loss -> its builder; "auto" is resolved per task by resolve_loss_name.
LOSSES: dict[str, LossBuilder] = {
    "cross_entropy": _cross_entropy, "bce": _bce,
    "mse": _regression(nn.MSELoss), "mae": _regression(nn.L1Loss), "huber": _regression(nn.HuberLoss),
}


def build_loss(name: str, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
               reduction: str = "mean") -> nn.Module:
    """The loss module; outputs are logits for classification and standardized values for regression.

    For ``bce`` the class weights (negative, positive) become ``pos_weight`` = w1 / w0, which is
    the same weighting up to a constant factor, and label smoothing moves the 0/1 targets to
    ``smoothing / 2`` and ``1 - smoothing / 2`` (cross-entropy's rule for two classes).

    Raises:
        ConfigError: ``name`` is not a key of ``LOSSES`` (``auto`` must be resolved first).
    """
    return lookup(LOSSES, "training.loss", name)(class_weights, label_smoothing, reduction)


class _OneOutput(nn.Module):
    """Apply a loss to a network with one output column, against a (batch,) target."""

    def __init__(self, inner: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.inner = inner
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
        return self.inner(logits.squeeze(1), target)
