"""A configurable multilayer perceptron: sizes, activation, normalization, dropout, initialization."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from keel.nn.dropout import LaneDropout
from keel.registry import lookup

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.01), "silu": nn.SiLU,
}

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda width: nn.Identity(), "batch": nn.BatchNorm1d, "layer": nn.LayerNorm,
}


def _kaiming(weight: torch.Tensor, activation: str, normal: bool) -> torch.Tensor:
    leaky = activation == "leaky_relu"
    init = nn.init.kaiming_normal_ if normal else nn.init.kaiming_uniform_
    return init(weight, a=0.01 if leaky else 0.0, nonlinearity="leaky_relu" if leaky else "relu")


INITIALIZERS: dict[str, Callable[[torch.Tensor, str], torch.Tensor | None]] = {
    "default": lambda weight, activation: None,  # PyTorch's own initialization
    "xavier_uniform": lambda weight, activation: nn.init.xavier_uniform_(weight),
    "xavier_normal": lambda weight, activation: nn.init.xavier_normal_(weight),
    "kaiming": lambda weight, activation: _kaiming(weight, activation, normal=False),
    "kaiming_normal": lambda weight, activation: _kaiming(weight, activation, normal=True),
    "normal": lambda weight, activation: nn.init.normal_(weight, std=0.02),
    "zeros": lambda weight, activation: nn.init.zeros_(weight),
}


# One hidden-layer stack per ``model.architecture``: (in_features, hidden, activation, dropout, norm,
# inner) -> layers; the names are already checked against their registries by ``build_body``.
# ``inner`` is each residual block's inner width (empty: the block's own width), narrowed by pruning.
BodyBuilder = Callable[[int, list[int], str, float, str, list[int]], list[nn.Module]]


def _plain_body(in_features: int, hidden: list[int], activation: str, dropout: float, norm: str,
                inner: list[int]) -> list[nn.Module]:
    """Linear, norm, activation and dropout per hidden layer (a plain layer has no inner width)."""
    layers: list[nn.Module] = []
    for width, size in zip([in_features, *hidden], hidden):
        layers += [nn.Linear(width, size), NORMS[norm](size), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(LaneDropout(dropout))
    return layers


def _residual_body(in_features: int, hidden: list[int], activation: str, dropout: float, norm: str,
                   inner: list[int]) -> list[nn.Module]:
    """A residual block per hidden layer, then norm and activation."""
    layers: list[nn.Module] = [
        ResidualBlock(width, size, activation=activation, dropout=dropout, norm=norm,
                      inner_features=inner[index] if inner else None)
        for index, (width, size) in enumerate(zip([in_features, *hidden], hidden))
    ]
    if hidden:  # blocks end on the sum; the head sees it normalized
        layers += [NORMS[norm](hidden[-1]), ACTIVATIONS[activation]()]
    return layers


class ResidualBlock(nn.Module):
    """``skip(x) + linear(dropout(activation(linear(norm(x)))))``; skip is the identity at equal widths.

    ``inner_features`` is the width between the two linear layers (``out_features`` when None);
    structured pruning narrows it, since the skip fixes the block's output width.
    """

    def __init__(self, in_features: int, out_features: int, *, activation: str, dropout: float, norm: str,
                 inner_features: int | None = None) -> None:
        super().__init__()
        inner = out_features if inner_features is None else inner_features
        self.main = nn.Sequential(
            lookup(NORMS, "model.norm", norm)(in_features), nn.Linear(in_features, inner),
            lookup(ACTIVATIONS, "model.activation", activation)(), LaneDropout(dropout),
            nn.Linear(inner, out_features),
        )
        self.skip = nn.Identity() if in_features == out_features else nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.main(x)


ARCHITECTURES: dict[str, BodyBuilder] = {"mlp": _plain_body, "resnet": _residual_body}


def build_body(
    in_features: int,
    hidden: list[int],
    *,
    architecture: str = "mlp",
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str = "none",
    inner: list[int] | None = None,
) -> list[nn.Module]:
    """The hidden layers: plain (linear, norm, activation, dropout) or residual blocks.

    Raises:
        ConfigError: ``architecture``, ``activation`` or ``norm`` is not a registered name.
    """
    lookup(ACTIVATIONS, "model.activation", activation)
    lookup(NORMS, "model.norm", norm)
    return lookup(ARCHITECTURES, "model.architecture", architecture)(in_features, hidden, activation, dropout, norm,
                                                                    inner or [])


def initialize(module: nn.Module, init: str, activation: str) -> None:
    """Apply ``init`` to every linear layer's weight in ``module`` (biases to zero); ``default`` keeps PyTorch's."""
    initializer = lookup(INITIALIZERS, "model.init", init)
    if init == "default":  # PyTorch's own initialization, biases included
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            initializer(layer.weight, activation)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def build_mlp(
    in_features: int,
    hidden: list[int],
    out_features: int | None,
    *,
    architecture: str = "mlp",
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str = "none",
    init: str = "default",
    inner: list[int] | None = None,
) -> nn.Sequential:
    """The hidden layers (see ``build_body``), then a linear output layer.

    Args:
        in_features: Width of the input.
        hidden: Hidden layer sizes; empty gives a linear model.
        out_features: Width of the output (logits or values); None leaves the output layer out
            (an ensemble puts its members' own heads there).
        architecture: One of ``ARCHITECTURES``.
        activation: One of ``ACTIVATIONS``.
        dropout: Dropout rate after each hidden layer.
        norm: One of ``NORMS``.
        init: One of ``INITIALIZERS``; biases start at zero unless ``default``.
        inner: ResNet only: each block's inner width (None or empty: the block's own width).

    Returns:
        The network as an ``nn.Sequential``.
    """
    layers = build_body(in_features, hidden, architecture=architecture, activation=activation,
                        dropout=dropout, norm=norm, inner=inner)
    if out_features is not None:
        layers.append(nn.Linear(hidden[-1] if hidden else in_features, out_features))
    mlp = nn.Sequential(*layers)
    initialize(mlp, init, activation)
    return mlp
