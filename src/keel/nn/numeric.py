"""Learned embeddings of number columns: periodic and piecewise-linear (Gorishniy et al., 2022).

An MLP fed raw scaled numbers fits smooth functions of each column well and sharp ones poorly;
turning each number into a vector of its own (sin/cos of learned frequencies, or its position
within training-quantile bins) and through a small per-column linear layer lets the network fit
thresholds and bumps the way trees do. Both are element-wise maps, clamps and one batched matmul,
so they export as standard ONNX operators.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from keel.registry import lookup

# Initial spread of the periodic frequencies on quantile- or z-scaled inputs (RealMLP's default).
_FREQUENCY_SCALE = 0.1


# Bin edges come from at most this many rows: torch.quantile refuses inputs over 16M values, and
# quantiles of a 262,144-row sample are within a fraction of a percentile of the exact ones.
BIN_SAMPLE = 1 << 18


def _bin_sample(numeric: torch.Tensor) -> torch.Tensor:
    """At most ``BIN_SAMPLE`` rows of ``(n_rows, n_columns)`` drawn at random with a fixed seed.

    A random draw, not the first rows: a file sorted by some column would otherwise bin only the
    low end of it. The row indices come from a seeded CPU generator (the same rows on any device,
    as data/transforms.py draws its sample); the rows are gathered on the tensor's own device.
    """
    n_rows = numeric.shape[0]
    if n_rows <= BIN_SAMPLE:
        return numeric
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, n_rows, (BIN_SAMPLE,), generator=generator)
    return numeric[rows.to(numeric.device)]


class _PerColumnLinear(nn.Module):
    """A separate linear map ``size -> dim`` for each of ``n_columns`` columns, then ReLU."""

    def __init__(self, n_columns: int, size: int, dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(size)
        self.weight = nn.Parameter(torch.empty(n_columns, size, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_columns, dim).uniform_(-bound, bound))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: (batch, n_columns, size) -> (batch, n_columns * dim)
        out = torch.einsum("bcs,csd->bcd", features, self.weight) + self.bias
        return torch.relu(out).flatten(1)


class PeriodicEmbedding(nn.Module):
    """``x -> relu(W_c [cos(2 pi f_c x), sin(2 pi f_c x)] + b_c)`` per column c (PLR)."""

    def __init__(self, n_columns: int, n_frequencies: int, dim: int) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_columns, n_frequencies) * _FREQUENCY_SCALE)
        self.linear = _PerColumnLinear(n_columns, 2 * n_frequencies, dim)
        self.width = n_columns * dim

    def forward(self, numeric: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * numeric.unsqueeze(-1) * self.frequencies
        return self.linear(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))


class PiecewiseLinearEmbedding(nn.Module):
    """Each number as its fill level in each of up to ``n_bins`` quantile bins (PLE), then linear + ReLU.

    For bin t with edges [a, b): ``clamp((x - a) / (b - a), 0, 1)``; the first bin is open below
    and the last one above, so values beyond the training range still move the encoding. Columns
    with fewer distinct values get fewer bins; the unused ones encode as a constant 0. The bins
    live in buffers, so they are saved and loaded with the weights.
    """

    left: torch.Tensor
    span: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, n_columns: int, n_bins: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("left", torch.zeros(n_columns, n_bins))
        self.register_buffer("span", torch.ones(n_columns, n_bins))
        self.register_buffer("low", torch.zeros(n_columns, n_bins))
        self.register_buffer("high", torch.zeros(n_columns, n_bins))
        self.linear = _PerColumnLinear(n_columns, n_bins, dim)
        self.width = n_columns * dim

    @torch.no_grad()
    def fit_bins(self, numeric: torch.Tensor) -> None:
        """Set the bin edges from training rows ``(n_rows, n_columns)``: quantiles, ties merged."""
        n_bins = self.left.shape[1]
        levels = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=numeric.device)
        sample = _bin_sample(numeric).double()
        for column in range(numeric.shape[1]):
            edges = torch.unique(torch.quantile(sample[:, column], levels))
            used = max(1, len(edges) - 1)
            if len(edges) == 1:  # a constant column: one bin of width 1 around it
                edges = torch.cat([edges, edges + 1])
            left, span = edges[:-1], (edges[1:] - edges[:-1])
            self.left[column].zero_()
            self.span[column].fill_(1.0)
            self.low[column].zero_()
            self.high[column].zero_()
            self.left[column, :used] = left.float()
            self.span[column, :used] = span.float()
            self.high[column, :used] = 1.0
            self.low[column, 0] = -math.inf
            self.high[column, used - 1] = math.inf

    def forward(self, numeric: torch.Tensor) -> torch.Tensor:
        position = (numeric.unsqueeze(-1) - self.left) / self.span
        return self.linear(torch.maximum(torch.minimum(position, self.high), self.low))


# model.numeric_embedding -> its module class, built as (n_columns, size, dim); None: numbers go in as they are.
NUMERIC_EMBEDDINGS: dict[str, type[PeriodicEmbedding] | type[PiecewiseLinearEmbedding] | None] = {
    "none": None, "periodic": PeriodicEmbedding, "piecewise_linear": PiecewiseLinearEmbedding,
}


def build_numeric_embedding(kind: str, n_columns: int, size: int, dim: int) -> PeriodicEmbedding | PiecewiseLinearEmbedding | None:
    """The embedding for ``model.numeric_embedding``, or None for ``none`` (or no number columns).

    Raises:
        ConfigError: ``kind`` is not a key of ``NUMERIC_EMBEDDINGS``.
    """
    embedding = lookup(NUMERIC_EMBEDDINGS, "model.numeric_embedding", kind)
    if embedding is None or n_columns == 0:
        return None
    return embedding(n_columns, size, dim)
