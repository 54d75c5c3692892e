"""A frozen pretrained sentence encoder (BERT family, sentence-transformers layout) as a torch module.

The architecture is written here rather than taken from ``transformers``: the weights' names match
the checkpoints (``encoder.layer.0.attention.self.query.weight``, ...), so :mod:`keel.data.pretrained`
(which reads and checks the files) hands over arrays that load strictly, and nothing shipped with a
model is ever run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.data.pretrained import BertShape, ModelFiles

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}
# Texts a forward pass encodes at once; sorted by length first, so little of each batch is padding.
_BATCH = 64


class _Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _Dense(nn.Module):
    """``dense`` then (for the output sublayers) a residual ``LayerNorm``, as the checkpoints name them."""

    def __init__(self, inner: int, outer: int, eps: float | None) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, outer)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(outer, eps=eps)


class _SelfAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(shape.hidden_size, shape.hidden_size) for _ in range(3))
        self.heads = shape.num_attention_heads


class _Attention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.self = _SelfAttention(shape)
        self.output = _Dense(shape.hidden_size, shape.hidden_size, shape.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.self.heads

        def split(linear: nn.Linear) -> torch.Tensor:  # (batch, heads, length, width / heads)
            return linear(x).view(batch, length, heads, width // heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(split(self.self.query), split(self.self.key),
                                                 split(self.self.value), attn_mask=mask)
        context = context.transpose(1, 2).reshape(batch, length, width)
        return self.output.LayerNorm(self.output.dense(context) + x)


class _Layer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.attention = _Attention(shape)
        self.intermediate = _Dense(shape.hidden_size, shape.intermediate_size, None)
        self.output = _Dense(shape.intermediate_size, shape.hidden_size, shape.layer_norm_eps)
        self.activation = _ACTIVATIONS[shape.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        inner = self.activation(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(inner) + x)


class _Encoder(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(shape) for _ in range(shape.num_hidden_layers))


class BertEncoder(nn.Module):
    """Token ids and their attention mask -> the last layer's token vectors (batch, length, hidden)."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.embeddings = _Embeddings(shape)
        self.encoder = _Encoder(shape)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        # Padding is masked out of every query's softmax: an additive -inf bias, (batch, 1, 1, length).
        mask = torch.zeros(attention.shape, dtype=torch.float32, device=ids.device)
        mask = mask.masked_fill(attention == 0, -math.inf)[:, None, None, :]
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


class SentenceEncoder:
    """A sentence encoder over checked files: tokenizer, frozen BERT, pooling and normalisation.

    Args:
        files: The model's files (:class:`keel.data.pretrained.ModelFiles`); the network and the
            tokenizer are built on the first :meth:`encode`.
    """

    def __init__(self, files: "ModelFiles") -> None:
        self.files = files
        self.shape = files.shape
        self.pooling, self.normalize = files.pooling, files.normalize
        self.max_tokens, self.sha256 = files.max_tokens, files.sha256
        self._network: BertEncoder | None = None
        self._tokenizer: Any = None

    @property
    def width(self) -> int:
        """Numbers per embedding."""
        return self.shape.hidden_size

    def _load(self) -> tuple[BertEncoder, Any]:
        if self._network is None:
            self._tokenizer = self.files.tokenizer()
            self._network = _network(self.files)
        return self._network, self._tokenizer

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The embeddings of ``texts`` (n, width) float32, and which texts were cut at ``max_tokens`` (n,) bool."""
        network, tokenizer = self._load()
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        truncated = np.zeros(len(texts), dtype=bool)
        for start in range(0, len(order), _BATCH):
            rows = order[start:start + _BATCH]
            encodings = tokenizer.encode_batch([texts[row] for row in rows])
            truncated[rows] = [bool(encoding.overflowing) for encoding in encodings]
            ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.int64)
            attention = torch.tensor([encoding.attention_mask for encoding in encodings], dtype=torch.int64)
            out[rows] = self.pool(network(ids, attention), attention).numpy()
        return out, truncated

    def pool(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(batch, length, hidden) token vectors -> (batch, hidden) sentence vectors."""
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = attention.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


def _network(files: "ModelFiles") -> BertEncoder:
    """The frozen BERT of ``files``; their header's shapes are compared before anything is allocated."""
    with torch.device("meta"):  # shapes only
        expected = {name: tuple(value.shape) for name, value in BertEncoder(files.shape).state_dict().items()}
    stored = files.shapes()
    if stored != expected:
        wrong = sorted(name for name in set(stored) | set(expected) if stored.get(name) != expected.get(name))
        raise ConfigError(f"{files.weights} does not hold a BERT of the shape config.json declares ({len(wrong)} "
                          f"tensor(s) differ, e.g. {wrong[:3]}).")
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the caller's state
        network = BertEncoder(files.shape)
    network.load_state_dict({name: torch.from_numpy(value) for name, value in files.arrays().items()}, strict=True)
    return network.eval()
