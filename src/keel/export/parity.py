"""Does the exported file predict what keel predicts? Rows to check on, and the comparison.

Without user rows the check runs on rows synthesised from the stored preprocessing: numbers
across and well beyond the training range, missing values, every known category, unseen and
missing categories. The tolerance is the issue's: the largest absolute difference of
probabilities (or, for regression values, the difference in standard deviations of the target)
at most 1e-5, and identical
labels except on rows whose top two probabilities keel itself puts within the tolerance (for a
binary model with a decision threshold: whose positive probability is within it of the threshold).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from keel.data.images import ImageTransform
from keel.data.text import TextTransform
from keel.data.transforms import SECONDS_PER_DAY, BinaryTransform, DateTransform, NumberTransform
from keel.data.words import CHAR_MARK
from keel.errors import DataError, KeelWarning
from keel.evaluate.metrics import predicted_classes

if TYPE_CHECKING:
    from keel.model import Model

TOLERANCE = 1e-5
# Values no training row had: one spelling no real column is likely to hold.
UNSEEN = "<keel: a value unseen in training>"


@dataclass
class Parity:
    """How far an exported file's predictions are from keel's own on the same rows."""

    max_difference: float
    rows: int
    source: str  # "data" (the user's rows) or "synthetic"
    label_mismatches: int  # rows whose labels differ although keel's top two are clearly apart
    near_ties: int  # rows whose labels may differ because keel's top two are within the tolerance
    tolerance: float = TOLERANCE
    measure: str = "absolute difference of probabilities"

    @property
    def ok(self) -> bool:
        return self.max_difference <= self.tolerance and self.label_mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# Words of the synthetic texts of a pretrained column (which keeps no vocabulary): common ones, punctuation, unicode.
_WORDS = ("the", "order", "arrived", "late", "great", "product", "never", "again", "5/5", "déjà", "vu", "naïve", "!",
          "don't", "東京", "emoji🙂", "x" * 40)


def synthetic_rows(model: "Model", n_rows: int = 256, seed: int = 0) -> pd.DataFrame:
    """Rows that exercise every preprocessing path of ``model``, drawn from its stored state.

    Numbers: mostly within the training distribution, a tenth far outside it (20 spreads away),
    a tenth missing. Dates likewise, as seconds since 1970-01-01 UTC (at any time of day, so hour
    and day boundaries are crossed). Binary and category columns: known values, a value never
    seen, missing.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for transform in model.preprocessor.transforms:
        kind = rng.random(n_rows)
        if isinstance(transform, NumberTransform):
            center, spread = _location(transform)
            values = rng.normal(center, spread, n_rows)
            far = kind < 0.1
            values[far] = center + rng.choice([-20.0, 20.0], int(far.sum())) * spread
            values[(kind >= 0.1) & (kind < 0.2)] = np.nan
            columns[transform.name] = values
        elif isinstance(transform, DateTransform):
            center, spread = transform.origin + transform.center, max(transform.scale, 1.0)  # in days
            days = rng.normal(center, spread, n_rows)
            far = kind < 0.1
            days[far] = center + rng.choice([-20.0, 20.0], int(far.sum())) * spread
            days[(kind >= 0.1) & (kind < 0.2)] = np.nan
            columns[transform.name] = days * SECONDS_PER_DAY
        elif isinstance(transform, TextTransform):  # a few known terms, a word never seen, empty and missing
            words = [term for term in transform.vocabulary if " " not in term and not term.startswith(CHAR_MARK)] or list(_WORDS)
            lengths = np.where(kind > 0.95, 400, rng.integers(1, 12, n_rows))  # some beyond a token limit
            texts = np.array([" ".join(words[i] for i in rng.integers(0, len(words), length)) for length in lengths],
                             dtype=object)
            texts[kind < 0.1] = UNSEEN
            texts[(kind >= 0.1) & (kind < 0.15)] = None
            texts[(kind >= 0.15) & (kind < 0.2)] = ""
            columns[transform.name] = texts
        elif isinstance(transform, ImageTransform):  # random pixels at the column's own size and another; missing
            width, height = transform.native
            # image.strict refuses another size or channel count than the column's (Model.predict too): none then.
            other = (height, width) if transform.strict else (height + 3, width + 5)
            bands = transform.native_bands if transform.strict else 3 if transform.channels == "rgb" else 1
            images = np.empty(n_rows, dtype=object)
            for row in range(n_rows):
                shape = (height, width) if kind[row] >= 0.3 else other
                images[row] = None if kind[row] < 0.1 else rng.uniform(0, transform.scale, (*shape, bands))
            columns[transform.name] = images
        else:
            known = list(transform.values if isinstance(transform, BinaryTransform) else transform.vocabulary)
            values = np.array([known[i] for i in rng.integers(0, len(known), n_rows)] if known else [UNSEEN] * n_rows,
                              dtype=object)
            values[kind < 0.1] = UNSEEN
            values[(kind >= 0.1) & (kind < 0.2)] = None
            columns[transform.name] = values
    return pd.DataFrame(columns)


def _location(transform: NumberTransform) -> tuple[float, float]:
    """A center and spread of the column's training values, from whichever statistics it kept."""
    if transform.knots[0]:
        knots = transform.knots[0]
        spread = (knots[-1] - knots[0]) / 4 or 1.0
        return (knots[0] + knots[-1]) / 2, spread
    if transform.normalize == "minmax":
        return transform.center + transform.scale / 2, transform.scale / 2 or 1.0
    if transform.normalize == "none":
        return transform.fill, max(abs(transform.fill), 1.0)
    return transform.center, transform.scale


def onnx_feeds(model: "Model", frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ONNX inputs for ``frame``: keel.runtime's conversion of a DataFrame, which is keel's own
    (``to_numeric``, ``category_strings``, ``""`` for missing)."""
    from keel.runtime.inputs import InputColumn, load_tokenizer, to_feeds, vocabulary_index

    def tokenizer(t: Any) -> Any:
        return (load_tokenizer(t.tokenizer_json(), t.width_tokens())
                if isinstance(t, TextTransform) and t.encoder == "pretrained" else None)

    columns = [InputColumn(t.name, isinstance(t, (NumberTransform, DateTransform)), isinstance(t, DateTransform),
                           vocabulary_index(t.vocabulary) if isinstance(t, TextTransform) and t.encoder != "pretrained"
                           else None, t.pixel_spec if isinstance(t, ImageTransform) else None, tokenizer(t),
                           refuses_digits=not isinstance(t, DateTransform) or t.refuses_digits,
                           char_ngrams=t.char_ngrams if isinstance(t, TextTransform) else None)
               for t in model.preprocessor.transforms]
    try:
        return to_feeds(frame, columns)[0]
    except DataError as error:  # rows read from a file (--data): name the file, as keel predict does
        raise error.in_file(frame.attrs.get("source")) from None


def compare(model: "Model", frame: pd.DataFrame, predict: Callable[[pd.DataFrame], np.ndarray],
            source: str) -> Parity:
    """Compare ``predict(frame)`` (probabilities, or values for regression) with keel's own on ``frame``.

    Args:
        model: The keel model the file was exported from.
        frame: The rows (feature columns; others are ignored).
        predict: The exported file's prediction for the rows: (n, n_classes) probabilities in
            ``model.classes`` order, or (n,) values.
        source: ``"data"`` or ``"synthetic"``, recorded with the figures.
    """
    exported = np.asarray(predict(frame), dtype=np.float64)
    with warnings.catch_warnings():  # unseen values are the point of synthetic rows, not news to the user
        warnings.simplefilter("ignore", KeelWarning)
        own = np.asarray(model.predict(frame) if model.task == "regression" else model.predict_proba(frame),
                         dtype=np.float64)
    if model.task == "regression":
        # In units of the target's spread, not relative to the value: a target of 1e9 plus noise of a
        # few units would hide an error of several standard deviations behind a relative 1e-8.
        difference = float(np.max(np.abs(exported - own)) / model.target_encoder.std) if len(own) else 0.0
        return Parity(difference, len(own), source, 0, 0,
                      measure="difference in standard deviations of the target")
    difference = float(np.max(np.abs(exported - own))) if len(own) else 0.0
    threshold = model.threshold
    if threshold is not None:  # the label flips where the positive class's probability crosses the threshold
        tied = np.abs(own[:, 1] - threshold) < TOLERANCE
    elif own.shape[1] > 1:
        ordered = np.sort(own, axis=1)
        tied = ordered[:, -1] - ordered[:, -2] < TOLERANCE
    else:
        tied = np.zeros(len(own), dtype=bool)
    differ = predicted_classes(exported, threshold) != predicted_classes(own, threshold)
    return Parity(difference, len(own), source, int((differ & ~tied).sum()), int((differ & tied).sum()))
