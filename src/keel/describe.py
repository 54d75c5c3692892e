"""What network a model trained, in words a user can check against the config.

``Model.summary()["network"]`` is the raw shape the weights are rebuilt from (per-column one-hot
flags, cardinalities, ...); :func:`describe_network` names the same facts per column and adds what
the shape alone does not say: how many networks were bagged and how many weights were learned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.data.text import TextTransform
from keel.nn.network import NetworkBag

if TYPE_CHECKING:
    from keel.model import Model


def describe_network(model: Model) -> dict[str, Any]:
    """The trained network of ``model`` as a JSON-friendly dict.

    Args:
        model: A fitted or loaded model.

    Returns:
        ``architecture``, ``hidden``, ``activation``, ``dropout``, ``norm``, ``init``;
        ``numeric_embedding`` (its kind, or ``"none"``) with ``numeric_embedding_size`` and
        ``numeric_embedding_dim`` (None without one); ``categories``: per category column its
        ``column``, ``encoding`` (``onehot`` or ``embedding``), ``cardinality`` (the unknown and
        missing buckets included) and ``width``; ``ensemble`` (members per network), ``bagging``
        (networks averaged), ``encoders``: per image or fine-tuned / bag text column its ``column``,
        ``encoder`` (in words), ``parameters`` and ``trainable_parameters``, then per tfidf or frozen-encoder
        text column the same keys (no parameters: its numbers are made in the preprocessing) with
        ``components`` and ``linear_scores`` (text.linear); ``parameters`` (every
        stored weight) and ``trainable_parameters`` (those training changed: one-hot tables are fixed
        identity matrices, a frozen ResNet's weights and a LoRA-tuned BERT's own are kept).

    Example:
        >>> describe_network(keel.load("runs/penguins"))["categories"]
        [{'column': 'island', 'encoding': 'onehot', 'cardinality': 5, 'width': 5}]
    """
    spec = model.network.spec
    onehot = spec.onehot if isinstance(spec.onehot, list) else [spec.onehot] * len(spec.cardinalities)
    names = [transform.name for transform in model.preprocessor.categorical]
    categories = [
        {"column": name, "encoding": "onehot" if fixed else "embedding", "cardinality": cardinality,
         "width": cardinality if fixed else dim}
        for name, cardinality, dim, fixed in zip(names, spec.cardinalities, spec.embedding_dims, onehot)
    ]
    embedded = spec.numeric_embedding != "none"
    parameters = list(model.network.parameters())
    network: Any = model.network.networks[0] if isinstance(model.network, NetworkBag) else model.network
    encoders = []
    blocks: list[tuple[Any, Any]] = [*zip(model.preprocessor.images, network.images),
                                     *zip(model.preprocessor.token_texts, network.texts)]
    for transform, module in blocks:
        weights = list(module.parameters())
        encoders.append({"column": transform.name, "encoder": _encoder_kind(module.__class__.__name__, transform),
                         "parameters": sum(p.numel() for p in weights),  # in each network of a bag
                         "trainable_parameters": sum(p.numel() for p in weights if p.requires_grad)})
    # tfidf and frozen-encoder columns become numbers in the preprocessing: no weights in the network.
    for transform in model.preprocessor.transforms:
        if isinstance(transform, TextTransform) and not transform.tokens:
            encoders.append({"column": transform.name, "encoder": _text_numbers(transform), "parameters": 0,
                             "trainable_parameters": 0, "components": len(transform.components) - transform.linear,
                             "linear_scores": transform.linear})
    return {
        "architecture": spec.architecture, "hidden": list(spec.hidden), "activation": spec.activation,
        "dropout": spec.dropout, "norm": spec.norm, "init": spec.init,
        "numeric_embedding": spec.numeric_embedding,
        "numeric_embedding_size": spec.numeric_embedding_size if embedded else None,
        "numeric_embedding_dim": spec.numeric_embedding_dim if embedded else None,
        "categories": categories, "encoders": encoders, "ensemble": spec.ensemble,
        "bagging": len(model.network.networks) if isinstance(model.network, NetworkBag) else 1,
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
    }


def _text_numbers(transform: TextTransform) -> str:
    """What a tfidf or frozen-encoder text column becomes, in a few words."""
    projected = len(transform.components) - transform.linear
    if transform.encoder == "tfidf":
        made = f"TF-IDF of {len(transform.vocabulary):,} terms -> {projected} components"
    else:
        # Where the encoder is read from (and the embedding cache): a model from someone else names these paths.
        where = transform.location or transform.model
        cache = transform.cache_dir or "the default cache"
        made = f"{transform.model_name()} embeddings (frozen; read from {where}, cache {cache}) -> {projected} components"
    if transform.linear:
        made += f" + {transform.linear} linear score{'s' if transform.linear > 1 else ''} (text.linear)"
    return made + " + an empty-text flag"


def _encoder_kind(module: str, transform: Any) -> str:
    """What an image or text column's encoder is, in a few words."""
    if transform.kind == "image":
        side = f"{transform.size}x{transform.size} {'rgb' if transform.bands == 3 else 'gray'}"
        if transform.encoder == "resnet":
            return f"ResNet-{transform.depth} ({'fine-tuned' if transform.finetune else 'frozen'}), {side}"
        return f"CNN from scratch to {transform.dim} features, {side}"
    if transform.encoder == "bag":
        return f"bag of {len(transform.vocabulary):,} terms, {transform.dim} numbers each, up to {transform.width - 1} a text"
    return f"{transform.model_name()} fine-tuned ({transform.finetune}), up to {transform.width - 1} tokens"


def network_lines(description: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` rows for a terminal table, from :func:`describe_network`'s dict."""
    d = description
    hidden = "-".join(map(str, d["hidden"])) or "none (a linear model)"
    rows = [("network", f"{d['architecture']}, hidden {hidden}, {d['activation']}, dropout {d['dropout']}, "
                        f"norm {d['norm']}, init {d['init']}")]
    if d["numeric_embedding"] == "none":
        rows.append(("number embedding", "none (scaled numbers go in as they are)"))
    else:
        unit = "bins" if d["numeric_embedding"] == "piecewise_linear" else "frequencies"
        rows.append(("number embedding", f"{d['numeric_embedding']}, {d['numeric_embedding_size']} {unit}, "
                                         f"dim {d['numeric_embedding_dim']} per column"))
    encoded = [f"{c['column']} one-hot ({c['width']} wide)" if c["encoding"] == "onehot"
               else f"{c['column']} embedded (dim {c['width']})" for c in d["categories"]]
    rows.append(("categories", ", ".join(encoded) or "none"))
    for encoder in d.get("encoders", []):
        if "components" in encoder:  # made in the preprocessing: no weights in the network
            rows.append((f"text {encoder['column']}", encoder["encoder"]))
            continue
        trained = encoder["trainable_parameters"]
        per = " in each network" if d["bagging"] > 1 else ""
        rows.append((f"encoder {encoder['column']}", f"{encoder['encoder']}, {encoder['parameters']:,} parameters{per}"
                     + ("" if trained == encoder["parameters"] else f" ({trained:,} trained)")))
    rows.append(("ensemble", f"{d['ensemble']} members" if d["ensemble"] > 1 else "1 (a single network)"))
    rows.append(("bagging", f"{d['bagging']} networks averaged" if d["bagging"] > 1 else "1 network"))
    fixed = d["parameters"] - d["trainable_parameters"]
    rows.append(("parameters", f"{d['parameters']:,}" + (f" ({d['trainable_parameters']:,} trained, {fixed:,} "
                                                         "fixed: one-hot tables, frozen encoders)" if fixed else "")))
    return rows
