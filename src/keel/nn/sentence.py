"""A frozen pretrained sentence encoder (BERT family, sentence-transformers layout) as a torch module.

The architecture is written here rather than taken from ``transformers``: the weights' names match
the checkpoints (``encoder.layer.0.attention.self.query.weight``, ...), so :mod:`keel.data.pretrained`
(which reads and checks the files) hands over arrays that load strictly, and nothing shipped with a
model is ever run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    def __init__(self, shape: BertShape, lora: int = 0) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(shape.hidden_size, shape.hidden_size) for _ in range(3))
        self.heads = shape.num_attention_heads
        if lora:  # LoRA (Hu et al., 2021) on the query and value projections: W x + B A x, B starting at zero
            width = shape.hidden_size
            bound = 1 / math.sqrt(width)
            self.query_lora_a = nn.Parameter(torch.empty(lora, width).uniform_(-bound, bound))
            self.query_lora_b = nn.Parameter(torch.zeros(width, lora))
            self.value_lora_a = nn.Parameter(torch.empty(lora, width).uniform_(-bound, bound))
            self.value_lora_b = nn.Parameter(torch.zeros(width, lora))
        self.lora = lora

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``query`` / ``key`` / ``value`` of ``x``, with the low-rank update where there is one."""
        out: torch.Tensor = getattr(self, name)(x)
        if self.lora and name != "key":
            out = out + (x @ getattr(self, f"{name}_lora_a").T) @ getattr(self, f"{name}_lora_b").T
        return out


class _Attention(nn.Module):
    def __init__(self, shape: BertShape, lora: int = 0) -> None:
        super().__init__()
        self.self = _SelfAttention(shape, lora)
        self.output = _Dense(shape.hidden_size, shape.hidden_size, shape.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.self.heads

        def split(name: str) -> torch.Tensor:  # (batch, heads, length, width / heads)
            return self.self.project(name, x).view(batch, length, heads, width // heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(split("query"), split("key"), split("value"), attn_mask=mask)
        context = context.transpose(1, 2).reshape(batch, length, width)
        return self.output.LayerNorm(self.output.dense(context) + x)


class _Layer(nn.Module):
    def __init__(self, shape: BertShape, lora: int = 0) -> None:
        super().__init__()
        self.attention = _Attention(shape, lora)
        self.intermediate = _Dense(shape.hidden_size, shape.intermediate_size, None)
        self.output = _Dense(shape.intermediate_size, shape.hidden_size, shape.layer_norm_eps)
        self.activation = _ACTIVATIONS[shape.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        inner = self.activation(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(inner) + x)


class _Encoder(nn.Module):
    def __init__(self, shape: BertShape, lora: int = 0) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(shape, lora) for _ in range(shape.num_hidden_layers))


class BertEncoder(nn.Module):
    """Token ids and their attention mask -> the last layer's token vectors (batch, length, hidden).

    ``lora`` > 0 adds rank-``lora`` updates to every layer's query and value projections (``*_lora_a``,
    ``*_lora_b``; the update starts at zero, so the encoder starts as the checkpoint).
    """

    def __init__(self, shape: BertShape, lora: int = 0) -> None:
        super().__init__()
        self.embeddings = _Embeddings(shape)
        self.encoder = _Encoder(shape, lora)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        # A row with no token to attend to (a tokenizer that adds no [CLS] / [SEP], an empty text) attends to its
        # first slot: with every key masked its softmax would be NaN.
        first = torch.where(attention.sum(dim=1) == 0, torch.ones_like(attention[:, 0]), attention[:, 0])
        attention = torch.cat([first[:, None], attention[:, 1:]], dim=1)
        x = self.embeddings(ids)
        # Padding is masked out of every query's softmax: an additive -inf bias, (batch, 1, 1, length), in the
        # vectors' own dtype (a float32 mask beside float64 vectors, a network's float64 copy, was misread).
        mask = torch.zeros(attention.shape, dtype=x.dtype, device=ids.device)
        mask = mask.masked_fill(attention == 0, -math.inf)[:, None, None, :]
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
        return pool(tokens, attention, self.pooling, self.normalize)

    def tokenizer_json(self) -> str:
        """The model's tokenizer.json (what keel.runtime tokenises an exported column with)."""
        return self.files.tokenizer_json()

    def weights(self) -> dict[str, np.ndarray]:
        """The checkpoint's arrays (checked against config.json's shapes), for a fine-tuned copy in a network."""
        _check_shapes(self.files)  # from the header: no frozen network is built only to read its weights
        return self.files.arrays()


def pool(tokens: torch.Tensor, attention: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """(batch, length, hidden) token vectors -> (batch, hidden): the mean over the attended tokens or the first
    (CLS) token's vector, scaled to unit length when ``normalize``."""
    if pooling == "cls":
        pooled = tokens[:, 0]
    else:
        weights = attention.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1) if normalize else pooled


@dataclass
class TextInput:
    """The shape of one fine-tuned text column's encoder (part of :class:`keel.nn.network.NetworkSpec`)."""

    bert: dict[str, Any]  # BertShape's fields
    max_tokens: int
    pooling: str = "mean"
    normalize: bool = True
    finetune: str = "full"  # a FINETUNES key other than none
    lora_rank: int = 8
    lr: float = 5e-5  # the encoder's own learning rate (the rest of the network trains at training.lr)

    def __post_init__(self) -> None:
        from keel.data.pretrained import BertShape

        self.shape = BertShape(**self.bert)
        if not 1 <= self.max_tokens <= self.shape.max_position_embeddings or self.finetune not in FINETUNES:
            raise ValueError(f"a fine-tuned text input of {self.max_tokens} tokens ({self.finetune}) is not one keel "
                             "builds")

    @property
    def width(self) -> int:
        """Numbers the column takes in the network's input: its token ids and the empty flag."""
        return self.max_tokens + 1

    @property
    def features(self) -> int:
        """Numbers the encoder hands the first layer: the pooled vector and the empty flag."""
        return self.shape.hidden_size + 1


def _train_everything(encoder: BertEncoder) -> None:
    encoder.requires_grad_(True)


def _train_lora(encoder: BertEncoder) -> None:
    for name, parameter in encoder.named_parameters():
        parameter.requires_grad_("_lora_" in name)


# text.finetune -> which of the encoder's weights train ("none" never builds one: the frozen encoder embeds
# the texts once, in the preprocessing).
FINETUNES: dict[str, Callable[[BertEncoder], None] | None] = {"none": None, "full": _train_everything,
                                                              "lora": _train_lora}


class TextEncoder(nn.Module):
    """One fine-tuned text column's block of the input, ``(batch, max_tokens + 1)`` token ids (-1 padding) and the
    empty flag -> ``(batch, hidden + 1)``: the pretrained BERT, pooled as the checkpoint pools, layer-normalised
    (a unit-length sentence vector's entries are ~0.05: too small for the first layer's initial weights)."""

    def __init__(self, text: TextInput) -> None:
        super().__init__()
        self.text = text
        self.bert = BertEncoder(text.shape, text.lora_rank if text.finetune == "lora" else 0)
        self.norm = nn.LayerNorm(text.shape.hidden_size)
        trainable = FINETUNES[text.finetune]
        assert trainable is not None
        trainable(self.bert)

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        ids = block[:, :-1]
        present = ids >= 0
        if not torch.jit.is_tracing():  # only the batch's longest text's tokens (an export's caller pads so)
            length = max(int(present.sum(dim=1).max()) if len(ids) else 1, 1)
            ids, present = ids[:, :length], present[:, :length]
        ids, attention = ids.clamp(min=0).long(), present.long()
        tokens = self.bert(ids, attention)
        pooled = pool(tokens, attention, self.text.pooling, self.text.normalize)
        return torch.cat([self.norm(pooled), block[:, -1:]], dim=1)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The encoder's trainable weights, which train at ``text.lr`` rather than the network's rate."""
        return [parameter for parameter in self.bert.parameters() if parameter.requires_grad]

    @torch.no_grad()
    def load_backbone(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy the checkpoint's weights into the encoder (its LoRA updates stay at their start).

        Raises:
            ValueError: A weight is missing or of another shape.
        """
        state = self.bert.state_dict()
        needed = [name for name in state if "_lora_" not in name]
        wrong = [name for name in needed if name not in arrays or tuple(arrays[name].shape) != tuple(state[name].shape)]
        if wrong:
            raise ValueError(f"the checkpoint does not fit the encoder: {', '.join(wrong[:3])}")
        for name in needed:
            state[name].copy_(torch.from_numpy(np.array(arrays[name])))


def _check_shapes(files: "ModelFiles") -> None:
    """Compare the weights' header shapes with the BERT config.json declares, before anything is allocated.

    Raises:
        ConfigError: They differ (names a few).
    """
    with torch.device("meta"):  # shapes only
        expected = {name: tuple(value.shape) for name, value in BertEncoder(files.shape).state_dict().items()}
    stored = files.shapes()
    if stored != expected:
        wrong = sorted(name for name in set(stored) | set(expected) if stored.get(name) != expected.get(name))
        raise ConfigError(f"{files.weights} does not hold a BERT of the shape config.json declares ({len(wrong)} "
                          f"tensor(s) differ, e.g. {wrong[:3]}).")


def _network(files: "ModelFiles") -> BertEncoder:
    """The frozen BERT of ``files``; their header's shapes are compared before anything is allocated."""
    _check_shapes(files)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the caller's state
        network = BertEncoder(files.shape)
    network.load_state_dict({name: torch.from_numpy(value) for name, value in files.arrays().items()}, strict=True)
    return network.eval()
