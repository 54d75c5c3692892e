"""A text encoder trained from scratch: an embedding of each word and word pair, averaged over the text.

The column arrives as the positions of its terms in its vocabulary (``keel.data.words``; -1 padding)
and an empty flag; each term has a learned vector of ``dim`` numbers, and a text is the mean of its
terms' vectors (fastText's sentence vector, Joulin et al., 2017), layer-normalised. It trains with the
network from its first step, so what it learns is what the target needs, where TF-IDF's SVD keeps
what varies most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BagInput:
    """The shape of one bag-of-terms text column's encoder (part of :class:`keel.nn.network.NetworkSpec`)."""

    vocabulary: int  # terms in the column's vocabulary
    max_terms: int  # term slots per text
    dim: int = 128  # numbers each term's vector holds

    def __post_init__(self) -> None:
        if not 0 <= self.vocabulary <= 10_000_000 or not 1 <= self.max_terms <= 100_000 or not 1 <= self.dim <= 4096:
            raise ValueError(f"a bag of {self.vocabulary} terms, {self.max_terms} a text, in {self.dim} numbers is "
                             "not one keel builds")

    @property
    def width(self) -> int:
        """Numbers the column takes in the network's input: its term positions and the empty flag."""
        return self.max_terms + 1

    @property
    def features(self) -> int:
        """Numbers the encoder hands the first layer: the text's vector and the empty flag."""
        return self.dim + 1


class BagEncoder(nn.Module):
    """``(batch, max_terms + 1)`` term positions (-1 padding) and the empty flag -> ``(batch, dim + 1)``."""

    def __init__(self, bag: BagInput) -> None:
        super().__init__()
        self.bag = bag
        # One row past the vocabulary is padding: its vector stays zero and untrained.
        self.embedding = nn.Embedding(bag.vocabulary + 1, bag.dim, padding_idx=bag.vocabulary)
        nn.init.normal_(self.embedding.weight, std=bag.dim ** -0.5)
        with torch.no_grad():
            self.embedding.weight[bag.vocabulary].zero_()
        self.norm = nn.LayerNorm(bag.dim)

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        positions = block[:, :-1]
        present = positions >= 0
        ids = torch.where(present, positions, torch.full_like(positions, self.bag.vocabulary)).long()
        total = self.embedding(ids).sum(dim=1)
        count = present.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)
        return torch.cat([self.norm(total / count), block[:, -1:]], dim=1)
