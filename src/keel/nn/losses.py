"""Losses per task, resolved from the config's ``training.loss`` name."""

from __future__ import annotations

import torch
from torch import nn

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


def build_loss(name: str, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> nn.Module:
    """The loss module; outputs are logits for classification and standardized values for regression.

    For ``bce`` the class weights (negative, positive) become ``pos_weight`` = w1 / w0, which is
    the same weighting up to a constant factor, and label smoothing moves the 0/1 targets to
    ``smoothing / 2`` and ``1 - smoothing / 2`` (cross-entropy's rule for two classes).
    """
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
    if name == "bce":
        pos_weight = None if class_weights is None else (class_weights[1] / class_weights[0]).reshape(1)
        return _OneOutput(nn.BCEWithLogitsLoss(pos_weight=pos_weight), label_smoothing)
    return _OneOutput({"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}[name]())


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
