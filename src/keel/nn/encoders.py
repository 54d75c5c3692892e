"""Category encoders: learned embeddings or fixed one-hot vectors, one per category column."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn


def embedding_size(cardinality: int, requested: int | None = None) -> int:
    """An embedding width that grows slowly with the number of categories (fast.ai's rule), capped at 50."""
    if requested is not None:
        return requested
    return int(min(50, max(2, round(1.6 * cardinality**0.56))))


class CategoryEncoder(nn.Module):
    """Encode each category column into a vector and concatenate them.

    Args:
        cardinalities: Number of indices per column (unknown and missing buckets included).
        dims: Width of each column's vector.
        onehot: Fixed identity vectors (width = cardinality) instead of learned embeddings, for all
            columns (a bool) or per column (a list).
    """

    def __init__(self, cardinalities: list[int], dims: list[int], onehot: bool | list[bool] = False) -> None:
        super().__init__()
        self.tables = nn.ModuleList()
        self.width = 0
        flags = [onehot] * len(cardinalities) if isinstance(onehot, bool) else onehot
        for cardinality, dim, fixed in zip(cardinalities, dims, flags):
            table = nn.Embedding(cardinality, cardinality if fixed else dim)
            if fixed:
                # Gather on a frozen identity is one-hot encoding, and exports as a plain Gather.
                table.weight.data.copy_(torch.eye(cardinality))
                table.weight.requires_grad_(False)
            self.tables.append(table)
            self.width += table.embedding_dim

    @torch.no_grad()
    def fill_untrained(self, counts: list[np.ndarray | None]) -> None:
        """Give each learned table's rows that no training row used (``counts[column][index] == 0``: the
        unknown bucket of a column with no rare values, the missing one of a column with no missing values)
        the training rows' mean vector, each value weighted by its count.

        Training never updates those rows: they keep their random start (N(0, 1) per component), so an unseen
        or missing value at prediction would push the network somewhere arbitrary (the parity audit saw a
        missing colour predict 243 where every real colour gave 89-182). The mean vector is the category
        counterpart of a number's median fill and a binary column's training share.
        """
        for table, column in zip(self.tables, counts):
            weight = cast(nn.Embedding, table).weight
            if column is None or not weight.requires_grad or len(column) != len(weight):
                continue
            used = torch.from_numpy(column > 0).to(weight.device)
            if bool(used.all()) or not bool(used.any()):
                continue
            weights = torch.from_numpy(column[column > 0].astype(np.float64)).to(weight.device)
            mean = (weight[used].double() * weights[:, None]).sum(0) / weights.sum()
            weight[~used] = mean.to(weight.dtype)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: (batch, n_columns) int64 -> (batch, width)
        return torch.cat([table(codes[:, index]) for index, table in enumerate(self.tables)], dim=1)
