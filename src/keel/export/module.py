"""A trained model as one torch module from column values to predictions: what ONNX and TFLite export.

The module holds everything after the string lookups: number columns are filled, scaled
(z-score, min-max, robust with smooth clipping, quantile knots) and flagged; binary columns
arrive as 0 / 1 (NaN for missing or unseen values, filled with the training share); category
columns arrive as indices (0 unknown or rare, 1 missing, 2.. the vocabulary in order); date
columns arrive as seconds since 1970-01-01 UTC (NaN for missing) and are taken apart into elapsed
days, year, month, weekday, day of year and hour by the calendar arithmetic keel's own transform
runs (``keel.data.transforms.calendar``, float64 floor and division); image columns arrive as
``(channels, size, size)`` pixels in [0, 1] (NaN for a missing image: :mod:`keel.data.pixels` reads
and resizes them outside the graph) and are standardised as ``ImageTransform`` does. The network
follows in every form keel trains (MLP, ResNet, the efficient ensemble, bagged networks), and
the outputs are probabilities (columns in ``model.classes`` order) or values in target units.

Members' probabilities are averaged directly, which equals the softmax of ``combine_members``'s
logits: the graph stays free of log-space reductions that some runtimes lack.

The string lookups themselves (category and binary values to indices) cannot be torch code; the
ONNX export puts them in front of this module as ``ai.onnx.ml`` LabelEncoder nodes, and a TFLite
caller does them with the vocabularies shipped beside the file (see ``lookup_tables``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from keel.data.images import ImageTransform
from keel.data.text import TextTransform
from keel.data.transforms import (
    CYCLES,
    DATE_LIMIT,
    MISSING_INDEX,
    SCALED_LIMIT,
    SECONDS_PER_DAY,
    UNKNOWN_INDEX,
    BinaryTransform,
    CategoryTransform,
    DateTransform,
    NumberTransform,
    calendar,
    cycle_index,
    cycle_table,
)
from keel.errors import ExportError
from keel.nn.network import NetworkBag, TabularNetwork
from keel.nn.sentence import BertEncoder, pool

if TYPE_CHECKING:
    from keel.model import Model

_CLIP = 3.0  # the smooth clip's saturation, as data/transforms.py applies it


@dataclass(frozen=True)
class InputGroup:
    """One of the module's inputs: a block of columns of one kind, in schema order."""

    name: str  # "numbers", "dates", "binaries", "codes", "text<i>" or "image<i>"
    columns: list[str]
    dtype: torch.dtype


class InferenceModule(nn.Module):
    """``(numbers, dates, binaries, codes)`` -> probabilities (batch, n_classes) or values (batch,).

    Only the groups the model has are arguments, in that order (see :attr:`groups`).

    Args:
        model: The trained model.
        number_dtype: The dtype numbers and dates arrive and are scaled in (float64 for ONNX, so large
            values such as timestamps keep their precision; float32 where a runtime lacks float64,
            for models without date columns).
        standardized: Regression only: return the network's own standardized value (float32),
            leaving ``value * target_std + target_mean`` to the caller. For a runtime without
            float64 (TFLite), where target units would round: float32 holds 1e9 to the nearest 64.

    Raises:
        ExportError: The model has date columns and ``number_dtype`` is not float64: float32 holds
            seconds since 1970 only to the nearest 128 s, which moves hour and day boundaries.
    """

    binary_fill: torch.Tensor
    order: torch.Tensor
    date_fill: torch.Tensor
    date_origin: torch.Tensor
    date_center: torch.Tensor
    date_scale: torch.Tensor
    year_center: torch.Tensor
    year_scale: torch.Tensor
    fill: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    robust: torch.Tensor
    flagged: torch.Tensor
    quantile: torch.Tensor
    segment_inner: torch.Tensor
    segment_low: torch.Tensor
    segment_slope: torch.Tensor
    segment_base: torch.Tensor
    segment_ends: torch.Tensor
    segment_index: torch.Tensor

    def __init__(self, model: "Model", number_dtype: torch.dtype = torch.float64, standardized: bool = False) -> None:
        super().__init__()
        transforms = model.preprocessor.transforms
        numbers = [t for t in transforms if isinstance(t, NumberTransform)]
        binaries = [t for t in transforms if isinstance(t, BinaryTransform)]
        categories = [t for t in transforms if isinstance(t, CategoryTransform)]
        dates = [t for t in transforms if isinstance(t, DateTransform)]
        # In network order: text components (tfidf or a frozen encoder's), images, then fine-tuned texts' tokens.
        plain = [t for t in model.preprocessor.numeric if isinstance(t, TextTransform) and not t.tokens]
        images = model.preprocessor.images
        texts = [*plain, *model.preprocessor.token_texts]
        if dates and number_dtype != torch.float64:
            raise ExportError(
                f"date column(s) {[t.name for t in dates]} need float64 inputs (seconds since 1970-01-01 UTC), and "
                f"this export computes in {number_dtype}, which holds them only to the nearest 128 s and so moves the "
                "hour and day boundaries. Export to ONNX (keel export MODEL), or drop the date columns from "
                "input_features and derive numbers from them.")
        self.groups = [group for group in (
            InputGroup("numbers", [t.name for t in numbers], number_dtype),
            InputGroup("dates", [t.name for t in dates], number_dtype),
            InputGroup("binaries", [t.name for t in binaries], torch.float32),
            InputGroup("codes", [t.name for t in categories], torch.int64),
            *(InputGroup(f"text{index}", [t.name], torch.int64) for index, t in enumerate(texts)),
            *(InputGroup(f"image{index}", [t.name], torch.float32) for index, t in enumerate(images)),
        ) if group.columns]
        self.task = model.task
        self.number_dtype = number_dtype
        self._add_number_state(numbers, number_dtype)
        self._add_date_state(dates, number_dtype)
        self.register_buffer("binary_fill", torch.tensor([t.fill for t in binaries], dtype=torch.float32))
        self.register_buffer("order", torch.tensor(
            _network_order([t for t in model.preprocessor.numeric if not isinstance(t, (TextTransform, ImageTransform))],
                           numbers, binaries, dates)))
        self._add_text_state(texts)
        self.n_plain = len(plain)
        self._add_image_state(images)
        network = model.network
        self.networks: list[TabularNetwork] = nn.ModuleList(  # type: ignore[assignment]
            network.networks if isinstance(network, NetworkBag) else [network])
        self.target_mean = float(model.target_encoder.mean)
        self.target_std = float(model.target_encoder.std)
        self.standardized = standardized

    def _add_number_state(self, numbers: list[NumberTransform], dtype: torch.dtype) -> None:
        def vector(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype)

        self.register_buffer("fill", vector([t.fill for t in numbers]))
        # Quantile columns go through their knots; the others through (x - center) / scale.
        self.register_buffer("center", vector([0.0 if t.knots[0] else t.center for t in numbers]))
        self.register_buffer("scale", vector([1.0 if t.knots[0] else t.scale for t in numbers]))
        self.register_buffer("robust", torch.tensor([t.normalize == "robust" and not t.knots[0] for t in numbers]))
        self.register_buffer("flagged", torch.tensor([i for i, t in enumerate(numbers) if t.indicator],
                                                     dtype=torch.int64))
        quantile = [i for i, t in enumerate(numbers) if t.knots[0]]
        self.register_buffer("quantile", torch.tensor(quantile, dtype=torch.int64))
        tables = _segment_tables([numbers[i].knots for i in quantile])
        for name, table in tables.items():
            self.register_buffer(f"segment_{name}", table if name == "index" else table.to(dtype))
        self.any_robust = bool(self.robust.any())

    def _add_date_state(self, dates: list[DateTransform], dtype: torch.dtype) -> None:
        def vector(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype)

        self.register_buffer("date_fill", vector([t.fill_seconds for t in dates]))
        self.register_buffer("date_origin", vector([t.origin for t in dates]))
        self.register_buffer("date_center", vector([t.center for t in dates]))
        self.register_buffer("date_scale", vector([t.scale for t in dates]))
        self.register_buffer("year_center", vector([t.year_center for t in dates]))
        self.register_buffer("year_scale", vector([t.year_scale for t in dates]))
        self.date_hours = [t.hour for t in dates]
        for name, first, count, period in CYCLES if dates else ():
            self.register_buffer(f"{name}_table", torch.tensor(cycle_table(first, count, period), dtype=dtype))

    def _add_text_state(self, texts: list[TextTransform]) -> None:
        self.n_texts = len(texts)
        self.text_encoders = [text.encoder for text in texts]
        # How each text column arrives: "terms" (tfidf and bag: term positions) or "tokens" (a pretrained encoder's).
        self.text_inputs = ["tokens" if encoder == "pretrained" else "terms" for encoder in self.text_encoders]
        self.vocabulary_sizes = [len(text.vocabulary) for text in texts]
        # text.char_ngrams: where a column's character n-grams start (words and grams are each of unit length); None
        # without them, for the one length of every model before them.
        self.word_terms = [text.word_terms if text.char_ngrams else None for text in texts]
        self.token_widths = [text.width - 1 for text in texts]  # a fine-tuned column's token limit
        self.frozen = nn.ModuleDict()  # a frozen pretrained column's encoder, by its index
        self.frozen_pooling: dict[str, tuple[str, bool]] = {}
        for index, text in enumerate(texts):
            for name, array in text.arrays().items():
                if name != "tokenizer":  # a fine-tuned column's tokenizer.json: metadata (keel.tokens), not the graph's
                    self.register_buffer(f"text{index}_{name}", torch.from_numpy(array.astype("float32")))
            if text.encoder != "tfidf" and not text.tokens:  # the checkpoint's weights go into the graph
                self.frozen[str(index)], self.frozen_pooling[str(index)] = _frozen_encoder(text)

    def _bag(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """(batch, terms) vocabulary positions (-1 padding, one past the vocabulary for an empty text) -> a bag
        column's block: its first ``max_terms`` positions (-1 padding) and the empty flag; the network embeds them."""
        size, width = self.vocabulary_sizes[index], self.token_widths[index]
        empty = (ids == size).any(dim=1, keepdim=True).float()
        positions = torch.where(ids == size, torch.full_like(ids, -1), ids)
        positions = torch.cat([positions, torch.full((ids.shape[0], width), -1, dtype=ids.dtype)], dim=1)
        return torch.cat([positions[:, :width].float(), empty], dim=1)

    def _tokens(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """(batch, 1 + tokens) int64: the empty flag, then the text's token ids padded with -1 -> what the network
        reads: a frozen encoder's projected components and flag (TextTransform._embed's arithmetic), or a
        fine-tuned column's block of token ids and flag (its encoder is the network's)."""
        flag, tokens = ids[:, :1].float(), ids[:, 1:]
        key = str(index)
        if key not in self.frozen:  # the network slices its input by widths: padded to the column's token limit
            width = self.token_widths[index]
            tokens = torch.cat([tokens, torch.full((tokens.shape[0], width), -1, dtype=tokens.dtype)], dim=1)
            return torch.cat([tokens[:, :width].float(), flag], dim=1)
        present = tokens >= 0
        attention = present.long()
        vectors = self.frozen[key](tokens.clamp(min=0), attention)
        pooled = pool(vectors, attention, *self.frozen_pooling[key])
        projected = (pooled @ getattr(self, f"text{index}_components").T - getattr(self, f"text{index}_center")) / (
            getattr(self, f"text{index}_scale"))
        return torch.cat([projected, flag], dim=1)

    def _add_image_state(self, images: list[ImageTransform]) -> None:
        # (channels, size, size) of each image input: what example_inputs traces with
        self.image_shapes = [(t.bands, t.size, t.size) for t in images]
        for index, image in enumerate(images):
            for name in ("mean", "std"):
                self.register_buffer(f"image{index}_{name}", torch.tensor(getattr(image, name)).float()[:, None, None])

    def _image(self, index: int, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, channels, size, size) pixels in [0, 1], NaN for a missing image -> (batch, pixels + 1)
        float32: ImageTransform's standardised pixels and missing flag."""
        missing = torch.isnan(pixels[:, :1, :1, 0]).flatten(1)  # (batch, 1)
        scaled = (pixels - getattr(self, f"image{index}_mean")) / getattr(self, f"image{index}_std")
        scaled = torch.where(torch.isnan(scaled), torch.zeros_like(scaled), scaled)
        return torch.cat([scaled.flatten(1), missing.float()], dim=1)

    def _text(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """(batch, terms) vocabulary positions (-1 padding, one past the vocabulary for an empty text) ->
        (batch, width) float32: TextTransform's TF-IDF, projection and empty flag, operation for operation."""
        idf, components = getattr(self, f"text{index}_idf"), getattr(self, f"text{index}_components")
        size = idf.shape[0]
        slots = torch.where(ids < 0, torch.full_like(ids, size + 1), ids)
        counts = torch.zeros(ids.shape[0], size + 2).scatter_add(1, slots, torch.ones(slots.shape))
        frequency = counts[:, :size]
        weights = torch.where(frequency > 0, 1 + torch.log(frequency.clamp(min=1)), torch.zeros_like(frequency)) * idf
        split = self.word_terms[index]
        unit = _unit(weights) if split is None else torch.cat([_unit(weights[:, :split]), _unit(weights[:, split:])], dim=1)
        projected = (unit @ components.T - getattr(self, f"text{index}_center")) / getattr(self, f"text{index}_scale")
        return torch.cat([projected, (counts[:, size:size + 1] > 0).float()], dim=1)

    # The traced graph is unrolled per group present: arguments arrive in ``groups`` order.
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        given = {group.name: tensor for group, tensor in zip(self.groups, inputs)}
        parts: list[torch.Tensor] = []
        if "numbers" in given:
            parts += self._numbers(given["numbers"])
        if "dates" in given:
            parts.append(self._dates(given["dates"]))
        if "binaries" in given:
            binaries = given["binaries"]
            parts.append(torch.where(torch.isnan(binaries), self.binary_fill, binaries))
        batch = inputs[0].shape[0]
        numeric = torch.cat(parts, dim=1)[:, self.order] if parts else torch.zeros(batch, 0)
        # The network's order: text components, images, fine-tuned texts' tokens.
        read = {"tfidf": self._text, "bag": self._bag, "pretrained": self._tokens}
        texts = [read[encoder](index, given[f"text{index}"]) for index, encoder in enumerate(self.text_encoders)]
        images = [self._image(index, given[f"image{index}"]) for index in range(len(self.image_shapes))]
        blocks = [*texts[:self.n_plain], *images, *texts[self.n_plain:]]
        if blocks:
            numeric = torch.cat([numeric, *blocks], dim=1)
        codes = given.get("codes", torch.zeros(batch, 0, dtype=torch.int64))
        return self._outputs(numeric, codes)

    def _numbers(self, numbers: torch.Tensor) -> list[torch.Tensor]:
        missing = torch.isnan(numbers)
        filled = torch.where(missing, self.fill, numbers)
        # Clipped as keel's own transform clips (SCALED_LIMIT): a value far outside the training range
        # (1e300) gives the prediction keel gives, not an overflow to NaN in the network.
        scaled = ((filled - self.center) / self.scale).clamp(-SCALED_LIMIT, SCALED_LIMIT)
        if self.any_robust:
            clipped = scaled / torch.sqrt(1 + (scaled / _CLIP) ** 2)
            scaled = torch.where(self.robust, clipped, scaled)
        if len(self.quantile):
            # np.interp through each column's knots: the segment a value falls in (counting the inner
            # knots at or below it), then base + (x - low) * slope, rounded once as np.interp rounds.
            # A sum over all ~127 clamped segments rounds every term: in float32 (TFLite) that moved
            # probabilities by 1.1e-5 on penguins, against 6.9e-7 this way. The segment's numbers are
            # picked by a one-hot select (adding zeros is exact), which needs no gather.
            x = torch.minimum(torch.maximum(filled[:, self.quantile], self.segment_ends[0]), self.segment_ends[1])
            segment = (x.unsqueeze(-1) >= self.segment_inner).sum(dim=-1, keepdim=True)  # (batch, n_quantile, 1)
            chosen = segment == self.segment_index  # (batch, n_quantile, n_segments): one True per column

            def pick(table: torch.Tensor) -> torch.Tensor:
                return torch.where(chosen, table, torch.zeros_like(table)).sum(dim=-1)

            mapped = pick(self.segment_base) + (x - pick(self.segment_low)) * pick(self.segment_slope)
            columns = torch.arange(numbers.shape[1])
            is_quantile = (columns.unsqueeze(1) == self.quantile).any(dim=1)
            position = torch.cumsum(is_quantile.long(), 0) - 1
            scaled = torch.where(is_quantile, mapped[:, position.clamp(min=0)], scaled)
        parts = [scaled.float()]
        if len(self.flagged):
            parts.append(missing[:, self.flagged].float())
        return parts

    def _dates(self, seconds: torch.Tensor) -> torch.Tensor:
        """(batch, n_dates) seconds -> (batch, sum of widths) float32: DateTransform.features, op for op."""
        missing = torch.isnan(seconds)
        filled = torch.where(missing, self.date_fill, seconds).clamp(-DATE_LIMIT, DATE_LIMIT)
        parts = calendar(filled, torch.floor, lambda flags: flags.to(filled.dtype))
        elapsed = ((filled / SECONDS_PER_DAY - self.date_origin - self.date_center) / self.date_scale).clamp(
            -SCALED_LIMIT, SCALED_LIMIT)
        year = ((parts["year"] - self.year_center) / self.year_scale).clamp(-SCALED_LIMIT, SCALED_LIMIT)
        cycles = {}
        for name, first, count, _ in CYCLES:  # looked up from constant tables: see cycle_table
            if name != "hour" or any(self.date_hours):
                index = cycle_index(parts[name], first, count, torch.clamp).long()  # (batch, n_dates)
                table = getattr(self, f"{name}_table")
                cycles[name] = (table[0][index], table[1][index])
        blocks = []
        for column, hour in enumerate(self.date_hours):  # each date's columns together, in parts order
            columns = [elapsed[:, column], year[:, column]]
            for name, _, _, _ in CYCLES:
                if name != "hour" or hour:
                    columns += [cycles[name][0][:, column], cycles[name][1][:, column]]
            columns.append(missing[:, column].to(filled.dtype))
            blocks.append(torch.stack(columns, dim=1))
        return torch.cat(blocks, dim=1).float()

    def _outputs(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        probabilities = [self._member_mean(network, numeric, codes) for network in self.networks]
        mean = probabilities[0] if len(probabilities) == 1 else torch.stack(probabilities, dim=0).mean(dim=0)
        if self.task == "regression" and self.standardized:
            return mean[:, 0]
        if self.task == "regression":
            return mean[:, 0].to(self.number_dtype) * self.target_std + self.target_mean
        return mean

    def _member_mean(self, network: TabularNetwork, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        outputs = network.members(numeric, codes)  # (batch, k, n_outputs)
        if self.task == "binary":
            positive = torch.sigmoid(outputs[:, :, 0])
            outputs = torch.stack([1 - positive, positive], dim=2)
        elif self.task == "multiclass":
            outputs = torch.softmax(outputs, dim=2)
        return outputs.mean(dim=1) if outputs.shape[1] > 1 else outputs[:, 0]


def _unit(weights: torch.Tensor) -> torch.Tensor:
    """(batch, terms) TF-IDF weights scaled to unit length in each row (a row of zeros stays zero)."""
    norms = torch.sqrt((weights * weights).sum(dim=1, keepdim=True))
    return weights / torch.where(norms > 0, norms, torch.ones_like(norms))


def _frozen_encoder(text: TextTransform) -> tuple[nn.Module, tuple[str, bool]]:
    """A frozen pretrained column's BERT, the checkpoint's weights loaded (its content hash checked against the
    model's: another model at that path is an error), and its pooling."""
    shape, pooling, normalize = text.encoder_shape()
    with torch.random.fork_rng(devices=[]):
        encoder = BertEncoder(shape)
    encoder.load_state_dict({name: torch.from_numpy(array) for name, array in text.encoder_weights().items()})
    return encoder.eval(), (pooling, normalize)


def _network_order(numeric: list[NumberTransform | BinaryTransform | DateTransform], numbers: list[NumberTransform],
                   binaries: list[BinaryTransform], dates: list[DateTransform] | None = None) -> list[int]:
    """Where each of the network's numeric columns sits in ``cat([scaled numbers, flags, date
    columns, binaries])``.

    The network takes numbers, dates and binaries interleaved in schema order, each number followed
    by its missing flag when it has one, each date as its ``width`` columns (``Preprocessor.numeric``).
    """
    dates = dates or []
    n_numbers = len(numbers)
    flagged = [i for i, t in enumerate(numbers) if t.indicator]
    flag_at = {index: n_numbers + position for position, index in enumerate(flagged)}
    date_at, start = {}, n_numbers + len(flagged)
    for date in dates:
        date_at[date.name], start = start, start + date.width
    binary_start = start
    number_at = {t.name: i for i, t in enumerate(numbers)}
    binary_at = {t.name: i for i, t in enumerate(binaries)}
    order: list[int] = []
    for transform in numeric:
        if isinstance(transform, NumberTransform):
            index = number_at[transform.name]
            order.append(index)
            if transform.indicator:
                order.append(flag_at[index])
        elif isinstance(transform, DateTransform):
            order += range(date_at[transform.name], date_at[transform.name] + transform.width)
        else:
            order.append(binary_start + binary_at[transform.name])
    return order


def _segment_tables(knots: list[tuple[list[float], list[float]]]) -> dict[str, torch.Tensor]:
    """Per quantile column, in float64: the inner knots (+inf padding), each segment's first knot,
    slope and score there, the end knots, and the segment numbers."""
    segments = max((len(x) - 1 for x, _ in knots), default=0) or 1
    inner = torch.full((len(knots), max(segments - 1, 1)), float("inf"), dtype=torch.float64)
    low, slope, base = (torch.zeros(len(knots), segments, dtype=torch.float64) for _ in range(3))
    ends = torch.zeros(2, len(knots), dtype=torch.float64)
    for column, (x, y) in enumerate(knots):
        if not x:  # a quantile column with no present training values maps everything to 0
            continue
        ends[:, column] = torch.tensor([x[0], x[-1]], dtype=torch.float64)
        inner[column, :max(len(x) - 2, 0)] = torch.tensor(x[1:-1], dtype=torch.float64)
        low[column], base[column] = x[-1], y[-1]  # padding segments: never selected
        for segment in range(len(x) - 1):
            low[column, segment], base[column, segment] = x[segment], y[segment]
            slope[column, segment] = (y[segment + 1] - y[segment]) / (x[segment + 1] - x[segment])
    return {"inner": inner, "low": low, "slope": slope, "base": base, "ends": ends,
            "index": torch.arange(segments)}


def lookup_tables(model: "Model") -> dict[str, Any]:
    """The string-to-index maps the module expects applied before it, as JSON-ready data.

    ``binaries``: column -> its two values (the first is 0, the second 1; anything else NaN).
    ``codes``: column -> its vocabulary (value i is index i + 2); a missing value is index 1
    and any other value index 0.
    """
    transforms = model.preprocessor.transforms
    return {
        "binaries": {t.name: list(t.values) for t in transforms if isinstance(t, BinaryTransform)},
        "codes": {t.name: list(t.vocabulary) for t in transforms if isinstance(t, CategoryTransform)},
        "missing_index": MISSING_INDEX, "unknown_index": UNKNOWN_INDEX,
    }


def example_inputs(module: InferenceModule, batch: int = 3) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shapes and dtypes for tracing ``module`` (valid indices, finite numbers)."""
    tensors: list[torch.Tensor] = []
    for group in module.groups:
        if group.name.startswith("text"):  # term positions or (flag, tokens): one of each and a padding slot a row
            tokens = module.text_inputs[int(group.name[len("text"):])] == "tokens"
            tensors.append(torch.tensor([[0, 0, 0, -1] if tokens else [0, -1]] * batch, dtype=torch.int64))
        elif group.name.startswith("image"):
            tensors.append(torch.zeros(batch, *module.image_shapes[int(group.name[len("image"):])]))
        elif group.dtype == torch.int64:
            tensors.append(torch.full((batch, len(group.columns)), MISSING_INDEX, dtype=torch.int64))
        else:
            tensors.append(torch.zeros(batch, len(group.columns), dtype=group.dtype))
    return tuple(tensors)

