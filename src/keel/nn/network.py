"""The whole network: numbers (optionally embedded) and encoded categories, through an MLP or ResNet.

With ``ensemble = k > 1`` the network holds k members in the way of TabM-mini (Gorishniy et al.,
2025): the members share every weight except a per-member scaling of the input (a rank-1 adapter,
started at random signs so the members differ) and their own output heads. They train together
on the same batches, each on its own loss, for about k times the arithmetic of one network and
one set of shared weights; their predicted probabilities (or values) are averaged.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from keel.nn.bag import BagEncoder, BagInput
from keel.nn.encoders import CategoryEncoder, embedding_size
from keel.nn.mlp import build_mlp
from keel.nn.numeric import build_numeric_embedding
from keel.nn.sentence import TextEncoder, TextInput
from keel.nn.vision import ImageEncoder, ImageInput


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
    onehot: bool | list[bool] = False
    embedding_dims: list[int] = field(default_factory=list)
    architecture: str = "mlp"
    numeric_embedding: str = "none"
    numeric_embedding_size: int = 16
    numeric_embedding_dim: int = 16
    ensemble: int = 1
    task: str = "regression"  # how members' outputs combine: probabilities for classes, else means
    inner: list[int] = field(default_factory=list)  # ResNet blocks' inner widths after pruning; empty: hidden
    # The last plain_width numeric columns (text components) enter the first layer as they are: a number
    # embedding of each SVD / PCA component fits it worse (bench/multimodal.py: ROC-AUC 0.81 -> 0.83 on reviews).
    plain_width: int = 0
    # Image columns, last in the numeric input (after the text components): each its pixels and missing flag,
    # read by its own encoder (keel.nn.vision), whose features join the first layer after the categories.
    images: list[ImageInput] = field(default_factory=list)
    # Fine-tuned and bag text columns, last of all: each its token ids (term positions) and empty flag, read by its
    # own BERT (keel.nn.sentence) or bag of term vectors (keel.nn.bag).
    texts: list[TextInput | BagInput] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = [image if isinstance(image, ImageInput) else ImageInput(**image) for image in self.images]
        self.texts = [text if isinstance(text, (TextInput, BagInput)) else
                      TextInput(**text) if "bert" in text else BagInput(**text) for text in self.texts]
        if not self.embedding_dims:
            self.embedding_dims = [embedding_size(cardinality) for cardinality in self.cardinalities]
        if isinstance(self.onehot, bool):
            self.onehot = [self.onehot] * len(self.cardinalities)

    @property
    def blocks(self) -> list[ImageInput | TextInput | BagInput]:
        """The inputs read by encoders of their own, in their order at the end of the numeric input."""
        return [*self.images, *self.texts]

    @property
    def image_width(self) -> int:
        """How many of the numeric input's last columns the encoders read (image pixels, token ids, their flags)."""
        return sum(block.width for block in self.blocks)

    @property
    def embedded_width(self) -> int:
        """The numeric input's leading columns that a number embedding reads (not text, not images)."""
        return self.numeric_width - self.plain_width - self.image_width

    @property
    def input_width(self) -> int:
        """The width of the first layer's input: numbers (embedded or not), the category vectors and the images'
        features."""
        embedded = self.numeric_embedding != "none" and self.embedded_width > 0
        numbers = self.embedded_width * (self.numeric_embedding_dim if embedded else 1) + self.plain_width
        assert isinstance(self.onehot, list)
        return numbers + sum(cardinality if fixed else dim
                             for cardinality, dim, fixed in zip(self.cardinalities, self.embedding_dims, self.onehot)
                             ) + sum(block.features for block in self.blocks)

    @property
    def plain(self) -> bool:
        """A single MLP over raw numbers and category codes (what the fused training step handles)."""
        return (self.architecture == "mlp" and self.numeric_embedding == "none" and self.ensemble == 1
                and not self.blocks)

    def to_dict(self) -> dict[str, Any]:
        spec = asdict(self)
        if not self.inner:  # only pruning sets it: unpruned models stay readable by keels without the field
            del spec["inner"]
        if not self.plain_width:  # only text columns set it: models without stay readable by older keels
            del spec["plain_width"]
        for name in ("images", "texts"):  # likewise image and fine-tuned text columns
            if not spec[name]:
                del spec[name]
        return spec


class TabularNetwork(nn.Module):
    """Maps ``(numeric (batch, numeric_width) float32, categorical (batch, n_cat) int64)`` to outputs."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.categories = CategoryEncoder(spec.cardinalities, spec.embedding_dims, onehot=spec.onehot)
        embedded = spec.embedded_width
        self.numbers = build_numeric_embedding(
            spec.numeric_embedding, embedded, spec.numeric_embedding_size, spec.numeric_embedding_dim)
        self.images = nn.ModuleList([ImageEncoder(image) for image in spec.images])
        self.texts = nn.ModuleList([TextEncoder(text) if isinstance(text, TextInput) else BagEncoder(text)
                                    for text in spec.texts])
        width = ((self.numbers.width if self.numbers is not None else embedded) + spec.plain_width
                 + self.categories.width + sum(block.features for block in spec.blocks))
        k = spec.ensemble
        self.mlp = build_mlp(width, spec.hidden, spec.n_outputs if k == 1 else None,
                             architecture=spec.architecture, activation=spec.activation, dropout=spec.dropout,
                             norm=spec.norm, init=spec.init, inner=spec.inner)
        if k > 1:
            last = spec.hidden[-1] if spec.hidden else width
            signs = torch.randint(0, 2, (k, width)).float() * 2 - 1
            self.adapter = nn.Parameter(signs)
            bound = 1 / last**0.5
            self.head_weight = nn.Parameter(torch.empty(k, last, spec.n_outputs).uniform_(-bound, bound))
            self.head_bias = nn.Parameter(torch.empty(k, spec.n_outputs).uniform_(-bound, bound))

    def inputs(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """The first layer's input: numbers (embedded or not) next to the category vectors and the images'
        features."""
        images: list[torch.Tensor] = []
        if self.spec.blocks:
            start = numeric.shape[1] - self.spec.image_width
            for encoder, block in zip([*self.images, *self.texts], self.spec.blocks):
                images.append(encoder(numeric[:, start:start + block.width]))
                start += block.width
            numeric = numeric[:, :numeric.shape[1] - self.spec.image_width]
        if self.numbers is not None:
            plain = self.spec.plain_width
            embedded = self.numbers(numeric[:, :numeric.shape[1] - plain] if plain else numeric)
            numeric = torch.cat([embedded, numeric[:, numeric.shape[1] - plain:]], dim=1) if plain else embedded
        if self.spec.cardinalities:
            numeric = torch.cat([numeric, self.categories(categorical)], dim=1)
        return torch.cat([numeric, *images], dim=1) if images else numeric

    def members(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Every member's raw outputs, (batch, ensemble, n_outputs); what training puts the loss on."""
        x = self.first_input(numeric, categorical)
        if self.spec.ensemble == 1:
            return self.mlp(x).unsqueeze(1)
        return self.heads(self.mlp(self.adapted(x).flatten(0, 1)))  # members as extra rows

    def first_input(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """The first layer's input rows (batch, width), before an ensemble's adapters."""
        x = self.inputs(numeric, categorical)
        if self.spec.ensemble > 1 and torch.is_autocast_enabled(x.device.type):
            # The first matmul would cast the k-times-larger product; cast its factors instead.
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return x

    def adapted(self, x: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Input rows (batch, width) through the adapters (of ``columns`` only, when given): (batch, ensemble,
        width) for an ensemble, ``x`` itself for one network."""
        if self.spec.ensemble == 1:
            return x
        adapter: torch.Tensor = self.adapter if columns is None else self.adapter[:, columns]
        if adapter.dtype != x.dtype:
            adapter = adapter.to(x.dtype)
        return x.unsqueeze(1) * adapter

    def heads(self, hidden: torch.Tensor) -> torch.Tensor:
        """The members' outputs (batch, ensemble, n_outputs) from the last hidden layer's (batch * ensemble, h)."""
        hidden = hidden.unflatten(0, (-1, self.spec.ensemble))  # -1, not len(x): an export traces the batch as a variable
        return torch.einsum("bkh,kho->bko", hidden, self.head_weight) + self.head_bias

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Outputs (batch, n_outputs): logits for classes, standardized values for regression.

        An ensemble's logits are those of its members' mean probabilities, so softmax / sigmoid
        of them gives the averaged prediction.
        """
        if self.spec.ensemble == 1:
            return self.mlp(self.inputs(numeric, categorical))
        return combine_members(self.members(numeric, categorical), self.spec.task)

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The trainable parameters as optimizer groups: fine-tuned text encoders at their own learning rate
        (``scale``: its ratio to ``lr``, which the trainer applies to the scheduled rate), the rest at ``lr``."""
        pretrained = [(encoder, text) for encoder, text in zip(self.texts, self.spec.texts)
                      if isinstance(encoder, TextEncoder) and isinstance(text, TextInput)]
        own = {id(parameter) for encoder, _ in pretrained for parameter in encoder.backbone_parameters()}
        groups = [{"params": [p for p in self.parameters() if p.requires_grad and id(p) not in own], "scale": 1.0}]
        for encoder, text in pretrained:
            groups.append({"params": encoder.backbone_parameters(), "scale": text.lr / lr})
        return [group for group in groups if group["params"]]

    def linear_weights(self) -> list[torch.Tensor]:
        """Weights that L1/L2 penalties apply to (not biases, norms or embeddings)."""
        weights = [module.weight for module in self.mlp.modules() if isinstance(module, nn.Linear)]
        return weights + ([self.head_weight] if self.spec.ensemble > 1 else [])

    @torch.no_grad()
    def shift_outputs(self, shift: torch.Tensor) -> None:
        """Add ``shift`` (n_outputs,) to every member's output bias (a prior correction of the logits)."""
        if self.spec.ensemble > 1:
            self.head_bias.add_(shift)
        else:
            self._output_layer().bias.add_(shift)

    @torch.no_grad()
    def scale_outputs(self, factor: float) -> None:
        """Multiply every member's outputs by ``factor`` (1 / temperature), folded into the output layer.

        The output layer is affine, so scaling its weight and bias scales the logits exactly; an
        ensemble's members are scaled before they are combined, as temperature scaling needs, and
        every export of the weights inherits it with no change.

        Args:
            factor: A positive number; ``1 / T`` divides the logits by the temperature ``T``.

        Raises:
            ValueError: ``factor`` is not a positive finite number.
        """
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"the output scale must be a positive finite number; got {factor!r}.")
        if self.spec.ensemble > 1:
            self.head_weight.mul_(factor)
            self.head_bias.mul_(factor)
        else:
            last = self._output_layer()
            last.weight.mul_(factor)
            last.bias.mul_(factor)

    def _output_layer(self) -> nn.Linear:
        # The output layer is the last Linear directly in the Sequential: a ResNet's blocks hold
        # their Linears one level down, and a norm and activation sit between them and the head.
        return [module for module in self.mlp if isinstance(module, nn.Linear)][-1]


class NetworkBag(nn.Module):
    """Networks of one shape trained on different validation folds; their probabilities are averaged."""

    def __init__(self, networks: list[TabularNetwork]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.spec = networks[0].spec

    def members(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Every network's members' raw outputs, (batch, n_networks * ensemble, n_outputs).

        Each network has as many members, so combining them all (:func:`combine_members`) gives
        the bag's prediction.
        """
        networks: list[TabularNetwork] = list(self.networks)  # type: ignore[arg-type]  # ModuleList types as Module
        return torch.cat([network.members(numeric, categorical) for network in networks], dim=1)

    @torch.no_grad()
    def scale_outputs(self, factor: float) -> None:
        """Multiply every network's members' outputs by ``factor`` (see :meth:`TabularNetwork.scale_outputs`)."""
        networks: list[TabularNetwork] = list(self.networks)  # type: ignore[arg-type]  # ModuleList types as Module
        for network in networks:
            network.scale_outputs(factor)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([network(numeric, categorical) for network in self.networks], dim=1)
        return combine_members(outputs, self.spec.task)


def combine_members(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """(batch, k, n_outputs) member outputs -> (batch, n_outputs): the logits of the mean probability.

    In log space throughout (logsumexp), so confident members neither overflow nor round to 0 or 1.
    """
    k = outputs.shape[1]
    if task == "binary":
        log_p = torch.logsumexp(nn.functional.logsigmoid(outputs), dim=1)
        log_q = torch.logsumexp(nn.functional.logsigmoid(-outputs), dim=1)
        return log_p - log_q
    if task == "multiclass":
        return torch.logsumexp(torch.log_softmax(outputs, dim=2), dim=1) - math.log(k)
    return outputs.mean(dim=1)


def predict_outputs(network: TabularNetwork | NetworkBag, numeric: torch.Tensor, categorical: torch.Tensor,
                    batch_size: int = 4096) -> torch.Tensor:
    """Raw outputs (logits or standardized values) for all rows, in eval mode, a batch at a time.

    4096-row batches keep each layer's activations in cache: on 1M rows through a 256-256 MLP this
    was 1.5x (float64) and 1.4x (float32) faster here than 65536-row batches. An ensemble's members are
    extra rows through the MLP, so it takes ``batch_size / ensemble`` rows at a time: the balanced
    preset's 8 members on bench/accuracy.py's loans table predicted 2.0x (float32) and 2.8x (bfloat16)
    faster in 512-row batches than in 4096-row ones.
    """
    batch_size = max(1, batch_size // network.spec.ensemble)
    with _evaluating(network):
        parts = [
            network(numeric[start:start + batch_size], categorical[start:start + batch_size])
            for start in range(0, len(numeric), batch_size)
        ]
    return torch.cat(parts) if parts else numeric.new_zeros((0, network.spec.n_outputs))


@contextlib.contextmanager
def _evaluating(network: nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for the duration, the network's mode restored after."""
    was_training = network.training
    if was_training:  # switching modes walks every submodule: ~0.2 ms, a fifth of a one-row prediction
        network.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            network.train()


class FirstLayerReuse:
    """Raw outputs, as :func:`predict_outputs` gives them, of batches that differ from one reference batch
    in a few input columns: what permutation importance predicts, one shuffled feature at a time.

    The first layer is most of a wide table's arithmetic (bench/accuracy.py's loans: 644 x 256 multiply-adds a
    member-row of its 644 x 256 + 256 x 256 + 256), and it is linear: the reference's pre-activations are
    kept, and a batch adds ``W[:, changed] @ (x - x_ref)[changed]`` over the first-layer input columns that
    differ (a shuffled feature's embedding or one-hot block), member by member through the adapters. The
    layers after it run as usual. The sums differ from a full forward pass only by float rounding.
    """

    # The reference's kept activations (pre-activations and first-layer inputs of every network): beyond this,
    # build() declines and the caller predicts in full.
    BUDGET_BYTES = 1 << 30

    def __init__(self, network: TabularNetwork | NetworkBag, numeric: torch.Tensor, categorical: torch.Tensor,
                 batch_size: int = 4096) -> None:
        self.network = network
        self.networks: list[TabularNetwork] = list(getattr(network, "networks", [network]))
        self.step = max(1, batch_size // network.spec.ensemble)
        self.rows = len(numeric)
        # Per batch of rows, per network: (first-layer input, first-layer output) of the reference rows.
        self.reference: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        with _evaluating(network):
            for start in range(0, len(numeric), self.step):
                rows = (numeric[start:start + self.step], categorical[start:start + self.step])
                parts = []
                for net in self.networks:
                    # A copy: inputs() may return the caller's own array (numbers alone, not embedded), which
                    # permutation importance then shuffles in place: the reference would change with it.
                    x = net.first_input(*rows).clone()
                    parts.append((x, _first_layer(net, x)))
                self.reference.append(parts)

    @classmethod
    def build(cls, network: TabularNetwork | NetworkBag, numeric: torch.Tensor,
              categorical: torch.Tensor) -> "FirstLayerReuse | None":
        """The reuse for these reference rows, or None where it does not apply: a ResNet or an ensemble without
        hidden layers (no plain first Linear), or a reference too large to keep (``BUDGET_BYTES``)."""
        networks = list(getattr(network, "networks", [network]))
        spec = network.spec
        if any(not len(net.mlp) or not isinstance(net.mlp[0], nn.Linear) for net in networks):
            return None
        first: nn.Linear = networks[0].mlp[0]
        kept = len(numeric) * (spec.ensemble * first.out_features + first.in_features) * 4 * len(networks)
        return cls(network, numeric, categorical) if kept <= cls.BUDGET_BYTES else None

    def __call__(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Raw outputs of ``numeric`` / ``categorical``: the reference's shapes, a few columns changed."""
        if len(numeric) != self.rows:
            raise ValueError(f"FirstLayerReuse was built on {self.rows} rows; got {len(numeric)}.")
        parts = []
        with _evaluating(self.network):
            for index, start in enumerate(range(0, len(numeric), self.step)):
                rows = (numeric[start:start + self.step], categorical[start:start + self.step])
                outputs = [_after_first(net, _shifted(net, net.first_input(*rows), *reference))
                           for net, reference in zip(self.networks, self.reference[index])]
                if isinstance(self.network, NetworkBag):
                    parts.append(combine_members(torch.stack(outputs, dim=1), self.network.spec.task))
                else:
                    parts.append(outputs[0])
        return torch.cat(parts) if parts else numeric.new_zeros((0, self.network.spec.n_outputs))


def _first_layer(network: TabularNetwork, x: torch.Tensor) -> torch.Tensor:
    return network.mlp[0](network.adapted(x)).float()


def _shifted(network: TabularNetwork, x: torch.Tensor, reference_x: torch.Tensor,
             reference: torch.Tensor) -> torch.Tensor:
    """The first layer's output for ``x``: the reference's, plus the changed input columns' share."""
    changed = (x != reference_x).any(dim=0).nonzero().squeeze(1)
    if not len(changed):
        return reference
    difference = network.adapted(x[:, changed] - reference_x[:, changed], changed)
    first: nn.Linear = network.mlp[0]  # type: ignore[assignment]  # build() checked it is one
    return reference + difference @ first.weight[:, changed].to(x.dtype).t()


def _after_first(network: TabularNetwork, first: torch.Tensor) -> torch.Tensor:
    """The network's outputs (batch, n_outputs) from its first layer's output, as forward() ends."""
    rest = network.mlp[1:]
    if network.spec.ensemble == 1:
        return rest(first)
    return combine_members(network.heads(rest(first.flatten(0, 1))), network.spec.task)


def to_probabilities(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """Class probabilities (rows sum to 1) from logits: softmax, or sigmoid as (1 - p, p) for binary."""
    if task == "binary":
        positive = torch.sigmoid(outputs[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(outputs, dim=1)
