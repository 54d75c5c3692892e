"""The whole network: numbers and encoded categories, concatenated, through an MLP to the output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from keel.nn.encoders import CategoryEncoder, embedding_size
from keel.nn.mlp import build_mlp


@dataclass
class NetworkSpec:
    """Everything needed to rebuild the network's shape (weights are stored separately)."""

    numeric_width: int
    cardinalities: list[int]
    n_outputs: int
    hidden: list[int]
    activation: str = "relu"
    dropout: float = 0.0
    norm: str = "none"
    init: str = "default"
    onehot: bool = False
    embedding_dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.embedding_dims:
            self.embedding_dims = [embedding_size(cardinality) for cardinality in self.cardinalities]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TabularNetwork(nn.Module):
    """Maps ``(numeric (batch, numeric_width) float32, categorical (batch, n_cat) int64)`` to outputs."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.categories = CategoryEncoder(spec.cardinalities, spec.embedding_dims, onehot=spec.onehot)
        self.mlp = build_mlp(
            spec.numeric_width + self.categories.width, spec.hidden, spec.n_outputs,
            activation=spec.activation, dropout=spec.dropout, norm=spec.norm, init=spec.init,
        )

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        if self.spec.cardinalities:
            numeric = torch.cat([numeric, self.categories(categorical)], dim=1)
        return self.mlp(numeric)  # (batch, n_outputs)

    def linear_weights(self) -> list[torch.Tensor]:
        """Weights that L1/L2 penalties apply to (not biases, norms or embeddings)."""
        return [module.weight for module in self.mlp if isinstance(module, nn.Linear)]


def predict_outputs(network: TabularNetwork, numeric: torch.Tensor, categorical: torch.Tensor,
                    batch_size: int = 4096) -> torch.Tensor:
    """Raw outputs (logits or standardized values) for all rows, in eval mode, a batch at a time.

    4096-row batches keep each layer's activations in cache: on 1M rows through a 256-256 MLP this
    was 1.5x (float64) and 1.4x (float32) faster here than 65536-row batches.
    """
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        parts = [
            network(numeric[start:start + batch_size], categorical[start:start + batch_size])
            for start in range(0, len(numeric), batch_size)
        ]
    network.train(was_training)
    return torch.cat(parts) if parts else torch.zeros((0, network.spec.n_outputs))


def to_probabilities(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """Class probabilities (rows sum to 1) from logits: softmax, or sigmoid as (1 - p, p) for binary."""
    if task == "binary":
        positive = torch.sigmoid(outputs[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(outputs, dim=1)
