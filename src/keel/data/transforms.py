"""One transform per feature type: fit on the training split, transform any split, state as JSON.

Each transform is a lookup or an affine map, so the exported ONNX graph can hold it unchanged:
numbers are ``(where(isnan(x), fill, x) - center) / scale`` (plus an optional 0/1 missing flag),
followed for ``robust`` by the smooth clip ``z / sqrt(1 + (z / 3)^2)`` and for ``quantile`` by a
piecewise-linear map through stored knots (both plain element-wise ONNX operators),
binary columns map their two values to 0 and 1, categories map to integer indices where 0 is the
shared bucket for unseen and rare values and 1 is "missing". Dates (seconds since 1970-01-01 UTC)
become elapsed days and year (z-scored) and sin / cos pairs of month, weekday, day of year and hour,
from calendar arithmetic of ``floor`` and ``+ - * /`` that the graph repeats operation for operation.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import pandas as pd

from keel.config import PreprocessingConfig
from keel.data.images import ImageTransform
from keel.data.spelling import boolean_word, lookup_spellings, number_spelling
from keel.data.text import TextTransform
from keel.data.values import MIN_SCALE, category_strings, to_numeric, to_numeric_range, to_seconds
from keel.errors import DataError

UNKNOWN_INDEX = 0
MISSING_INDEX = 1


# Above this many values the fill median is taken from a fixed random sample of this size: exact
# medians of a million-row column cost ~9 ms each, and a 200,000-value sample is within a fraction
# of a percent of the distribution's spread of the true median.
_MEDIAN_SAMPLE = 200_000


def _sample(values: np.ndarray) -> np.ndarray:
    if len(values) <= _MEDIAN_SAMPLE:
        return values
    return values[np.random.default_rng(0).integers(0, len(values), _MEDIAN_SAMPLE)]


# The quantile transform keeps at most this many knots per column: a piecewise-linear map through
# 128 training quantiles is within ~0.01 of the exact empirical normal scores in the body.
_QUANTILE_KNOTS = 128
# RealMLP's smooth clipping: identity near 0, saturating at +-3.
_CLIP = 3.0
# Scaled numbers are clipped to +-1e12: training rows never come near it (z-scores reach
# sqrt(n_rows), min-max values stay in [0, 1]), and it keeps a value far outside the training range
# (1e300 at prediction) from overflowing the network's float32 arithmetic into NaN. An export that
# scales numbers itself should clip at the same bound.
SCALED_LIMIT = 1e12
# Centers and scales below this are safe to apply in float32 after a float64 subtraction.
_FLOAT32_SAFE = 1e30


def smooth_clip(values: np.ndarray) -> np.ndarray:
    """``z / sqrt(1 + (z / 3)^2)``, in place on float32 ``values``: outliers end near +-3, not at 50."""
    scale = np.square(values / _CLIP)
    scale += 1
    np.sqrt(scale, out=scale)
    values /= scale
    return values


def normal_scores(present: np.ndarray) -> tuple[list[float], list[float]]:
    """Knots (x, y) mapping a column's training distribution onto a standard normal one.

    Tied quantiles (a column with few distinct values) become one knot at the mean normal score
    of the levels they span, so every distinct value maps to one place.
    """
    levels = np.linspace(0.0, 1.0, _QUANTILE_KNOTS)
    quantiles = np.quantile(_sample(present), levels)
    # Knots a subnormal apart would overflow np.interp's slope to inf; below float32's smallest
    # normal number the network could not tell the values from 0 anyway.
    quantiles[np.abs(quantiles) < np.finfo(np.float32).tiny] = 0.0
    dist = NormalDist()
    scores = np.array([dist.inv_cdf(float(p)) for p in np.clip(levels, 1e-3, 1 - 1e-3)])
    knots, inverse = np.unique(quantiles, return_inverse=True)
    mean_scores = np.bincount(inverse, weights=scores) / np.bincount(inverse)
    if len(knots) == 1:
        return [float(knots[0])], [0.0]
    return knots.tolist(), mean_scores.tolist()


Knots = tuple[list[float], list[float]]
# A scaler takes a column's present values, its count of missing ones and their fill, and gives
# the statistics of the filled column (without materialising it): (center, scale, quantile knots).
Scaler = Callable[[np.ndarray, int, float], tuple[float, float, Knots]]


def mean_and_std(present: np.ndarray, n_missing: int = 0, fill: float = 0.0,
                 weights: np.ndarray | None = None) -> tuple[float, float]:
    """The mean and (population) standard deviation of ``present`` and ``n_missing`` copies of ``fill``,
    in float64, finite for any finite values; ``weights`` (one per value of ``present``, with no ``n_missing``,
    summing above 0) weight the values.

    Sums of squares overflow float64 beyond about 1e154 (and sums beyond 1e308): a column that
    overflows is divided by its largest magnitude first, which scales both statistics back exactly.
    Ordinary columns pay nothing for it.
    """
    if not len(present) and not n_missing:
        return 0.0, 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        center, std = _moments(present, n_missing, fill, weights)
    if math.isfinite(center) and math.isfinite(std):
        return center, std
    unit = max(float(np.max(np.abs(present))) if len(present) else 0.0, abs(fill))
    center, std = _moments(present / unit, n_missing, fill / unit, weights)
    return center * unit, std * unit


def _moments(present: np.ndarray, n_missing: int, fill: float,
             weights: np.ndarray | None = None) -> tuple[float, float]:
    if weights is not None:
        shares = weights.astype(np.float64) / weights.sum(dtype=np.float64)  # shares, so no product overflows
        center = float((shares * present).sum(dtype=np.float64))
        return center, float(np.sqrt((shares * np.square(present - center, dtype=np.float64)).sum()))
    n_values = len(present) + n_missing
    center = (present.sum(dtype=np.float64) + n_missing * fill) / n_values
    squares = np.square(present - center, dtype=np.float64).sum() + n_missing * (fill - center) ** 2
    return float(center), float(np.sqrt(squares / n_values))


def _zscore(present: np.ndarray, n_missing: int, fill: float) -> tuple[float, float, Knots]:
    center, std = mean_and_std(present, n_missing, fill)
    return center, std, ([], [])


def _minmax(present: np.ndarray, n_missing: int, fill: float) -> tuple[float, float, Knots]:
    low = min(float(present.min()), fill) if len(present) else fill
    high = max(float(present.max()), fill) if len(present) else fill
    return low, high - low, ([], [])


def _robust(present: np.ndarray, n_missing: int, fill: float) -> tuple[float, float, Knots]:
    if not len(present):
        return 0.0, 1.0, ([], [])
    q = np.quantile(_sample(present), [0.0, 0.25, 0.5, 0.75, 1.0])
    # RealMLP's rule: the IQR, or the range when a quarter of the rows share one value.
    spread = q[3] - q[1] if q[3] > q[1] else (q[4] - q[0]) / 2
    return float(q[2]), float(spread / 1.349), ([], [])  # 1.349 IQR is one sd of a normal


def _quantile(present: np.ndarray, n_missing: int, fill: float) -> tuple[float, float, Knots]:
    return 0.0, 1.0, normal_scores(present) if len(present) else ([], [])


def _unscaled(present: np.ndarray, n_missing: int, fill: float) -> tuple[float, float, Knots]:
    return 0.0, 1.0, ([], [])


# preprocessing.normalize -> its scaler; the keys are the config's Literal values.
SCALERS: dict[str, Scaler] = {
    "zscore": _zscore, "minmax": _minmax, "robust": _robust, "quantile": _quantile, "none": _unscaled,
}


# preprocessing.missing: the fill value of a number column from its present values (and the constant).
FILLS: dict[str, Callable[[np.ndarray, float], float]] = {
    "median": lambda present, constant: float(np.median(_sample(present))),
    "mean": lambda present, constant: mean_and_std(present)[0],
    "constant": lambda present, constant: float(constant),
}


class NumberTransform:
    """Fill missing numbers, then scale (z-score, min-max, robust, quantile or none)."""

    kind: ClassVar[str] = "number"

    def __init__(self, name: str, settings: PreprocessingConfig) -> None:
        self.name = name
        self.missing = settings.missing
        self.constant = settings.fill_value
        self.normalize = settings.normalize
        self.indicator = settings.missing_indicator
        self.fill = 0.0
        self.center = 0.0
        self.scale = 1.0
        self.knots: Knots = ([], [])

    @property
    def width(self) -> int:
        """Number of float columns this transform emits."""
        return 2 if self.indicator else 1

    def fit(self, series: pd.Series, source: str | None = None) -> "NumberTransform":
        values = to_numeric(series, column=self.name, source=source)
        missing = np.isnan(values)
        n_missing = int(missing.sum())
        present = values[~missing] if n_missing else values
        # An all-missing column has no statistic to fill with: it takes the constant.
        self.fill = float(self.constant) if len(present) == 0 else FILLS[self.missing](present, self.constant)
        self.center, self.scale, self.knots = SCALERS[self.normalize](present, n_missing, self.fill)
        if not np.isfinite(self.scale) or self.scale < MIN_SCALE:
            self.scale = 1.0  # a constant column (or one float32 cannot scale): centre it, do not divide
        return self

    def transform(self, series: pd.Series, source: str | None = None) -> tuple[np.ndarray, int]:
        """Returns ``(values (n, width) float32, 0)``; numbers have no unseen values to count."""
        values, low, high = to_numeric_range(series, column=self.name, source=source)
        out = np.empty((self.width, len(values)), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # see apply
            self.apply(values, out, self.extent(low, high))
        return out.T, 0

    def extent(self, low: float, high: float) -> float:
        """The largest distance from the center of values in [low, high] and of the fill (for
        :meth:`apply`); NaN bounds (a column of missing values) count for nothing."""
        spans = [abs(bound - self.center) for bound in (low, high, self.fill) if not math.isnan(bound)]
        return max(spans)

    def apply(self, values: np.ndarray, out: np.ndarray, extent: float = math.inf) -> None:
        """Write the transformed ``values`` (from ``to_numeric``) into ``out``, a (width, n) float32
        array: column-major, so each write is contiguous. Results are clipped to +-``SCALED_LIMIT``.

        Args:
            values: The raw numbers, NaN where missing.
            out: Where to write.
            extent: The largest ``|value - center|`` among ``values`` and the fill (:meth:`extent`),
                when known: ordinary columns then take the float32 path and skip the clip (which
                cost ~18% of transforming a 1M x 50 table). Unknown (inf): the safe path.

        Values beyond float32's range may overflow to infinity on the way, which the clip bounds:
        callers wrap their loops in ``np.errstate(over="ignore", invalid="ignore")`` once.
        """
        missing = np.isnan(values)
        if self.knots[0]:
            out[0] = np.interp(np.where(missing, self.fill, values), *self.knots)
        else:
            if extent < _FLOAT32_SAFE and self.scale < _FLOAT32_SAFE:
                # (x - center) in float64, cast as it is written; the division in float32.
                np.subtract(values, self.center, out=out[0], casting="unsafe")
                out[0] /= np.float32(self.scale)
            else:  # a column beyond float32's range scales in float64 before the cast
                np.divide(values - self.center, self.scale, out=out[0], casting="unsafe")
            out[0][missing] = (self.fill - self.center) / self.scale
            if not extent / self.scale <= SCALED_LIMIT:
                np.clip(out[0], -SCALED_LIMIT, SCALED_LIMIT, out=out[0])
            if self.normalize == "robust":
                smooth_clip(out[0])
        if self.indicator:
            out[1] = missing

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "fill": self.fill, "center": self.center,
                "scale": self.scale, "indicator": self.indicator, "normalize": self.normalize,
                "missing": self.missing, "knots": list(self.knots)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "NumberTransform":
        transform = cls(state["name"], PreprocessingConfig(
            missing=state["missing"], normalize=state["normalize"], missing_indicator=state["indicator"]))
        transform.fill, transform.center, transform.scale = state["fill"], state["center"], state["scale"]
        knots: list[list[float]] = state.get("knots") or [[], []]
        transform.knots = (list(knots[0]), list(knots[1]))
        return transform


# How many of a column's unseen values a prediction's note names.
UNSEEN_EXAMPLES = 3


@dataclass(frozen=True)
class Unseen:
    """The values of a binary or category column that training did not have: how many rows hold one, and the
    first few distinct ones (up to :data:`UNSEEN_EXAMPLES`, in row order) for the note that names them."""

    count: int = 0
    examples: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.count

    @classmethod
    def of(cls, strings: np.ndarray, unknown: np.ndarray) -> "Unseen":
        """Those of ``strings`` (canonical spellings) where ``unknown``. The examples come from the first unknown
        rows, in windows that grow until they hold enough distinct values: training transforms every row, and
        hashing all 300,000 rare values of a 1M-row column cost 0.2 s, for examples it never shows."""
        positions = np.flatnonzero(unknown)
        examples: list[str] = []
        start, window = 0, 64
        while start < len(positions) and len(examples) < UNSEEN_EXAMPLES:
            for value in pd.unique(strings[positions[start:start + window]]):
                if str(value) not in examples and len(examples) < UNSEEN_EXAMPLES:
                    examples.append(str(value))
            start, window = start + window, window * 4
        return cls(len(positions), tuple(examples))


class BinaryTransform:
    """Map a two-valued column to 0/1; missing and unseen values get the training share of 1s."""

    kind: ClassVar[str] = "binary"
    width: ClassVar[int] = 1

    def __init__(self, name: str, settings: PreprocessingConfig | None = None) -> None:
        self.name = name
        self.values: list[str] = []
        self.fill = 0.5

    def fit(self, series: pd.Series, source: str | None = None) -> "BinaryTransform":
        """Learn the two values (sorted by spelling: the second one codes as 1) and the share of 1s.

        Raises:
            DataError: The training rows hold more than two distinct values; the message lists them.
        """
        strings = category_strings(series)
        present = strings[strings != None]  # noqa: E711 (elementwise comparison)
        distinct = sorted(set(present.tolist()))
        # TRUE, True and false are two values (True, False); so are 1, 1.0 and 0 (1 and 01 alone stay two: as
        # written, they differ).
        for fold in (boolean_word, lambda value: boolean_word(value) or number_spelling(value)):
            words = sorted({fold(value) or value for value in distinct})
            if len(words) < len(distinct) and (fold is boolean_word or len(distinct) > 2):
                distinct = words
        if len(distinct) > 2:
            raise _too_many_values(self.name, distinct, source)
        self.values = distinct
        if len(self.values) == 2:
            self.fill = float(np.mean(self._codes(present) == 1))
        return self

    def _codes(self, strings: np.ndarray) -> np.ndarray:
        """Each string's code (0 / 1, or NaN for a missing or unseen value), by lookup_spellings."""
        out = np.full(len(strings), np.nan, dtype=np.float32)
        for spelling, code in lookup_spellings(self.values).items():
            out[strings == spelling] = code
        return out

    def transform(self, series: pd.Series, source: str | None = None) -> tuple[np.ndarray, int]:
        """Returns ``(values (n, 1) float32, count of values seen in neither training class)``."""
        values, unseen = self.encode(series)
        return values, len(unseen)

    def encode(self, series: pd.Series) -> tuple[np.ndarray, Unseen]:
        """:meth:`transform`'s values, and the values seen in neither training class (:class:`Unseen`)."""
        strings = category_strings(series)
        codes = self._codes(strings)
        unknown = np.isnan(codes) & (strings != None)  # noqa: E711
        return np.where(np.isnan(codes), np.float32(self.fill), codes)[:, None], Unseen.of(strings, unknown)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "values": self.values, "fill": self.fill}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "BinaryTransform":
        transform = cls(state["name"])
        transform.values, transform.fill = list(state["values"]), state["fill"]
        return transform


# How many of a binary column's extra values an error message lists.
_SHOWN_VALUES = 5


def _too_many_values(name: str, distinct: list[str], source: str | None) -> DataError:
    extra = distinct[2:]
    shown = ", ".join(repr(value) for value in extra[:_SHOWN_VALUES])
    more = f" and {len(extra) - _SHOWN_VALUES} more" if len(extra) > _SHOWN_VALUES else ""
    return DataError(
        f"column {name!r} is binary, but its training rows hold {len(distinct)} distinct values: "
        f"{distinct[0]!r} and {distinct[1]!r}, then {shown}{more} ({len(extra)} extra value(s)), which a binary "
        f"column would fill as missing. Declare it a category (input_features: [{{name: {name}, type: category}}]), "
        "or fix the extra values.",
        file=source, column=name,
    )


class CategoryTransform:
    """Map categories to indices: 0 for unseen or rare, 1 for missing, 2.. by training frequency."""

    kind: ClassVar[str] = "category"

    def __init__(self, name: str, settings: PreprocessingConfig) -> None:
        self.name = name
        self.min_count = settings.rare_category_min_count
        self.min_share = settings.rare_category_min_share
        self.vocabulary: list[str] = []
        self.n_rare = 0
        # The fitting rows of each index (unknown, missing, then the vocabulary's): which embedding rows
        # training updates (keel.nn.encoders.CategoryEncoder.fill_untrained). Not saved: None once loaded.
        self.index_counts: np.ndarray | None = None
        self._cached: tuple[list[str], dict[str, int]] | None = None  # (vocabulary, its lookup): _lookup

    @property
    def cardinality(self) -> int:
        """Number of distinct indices, the unknown and missing buckets included."""
        return len(self.vocabulary) + 2

    def fit(self, series: pd.Series, source: str | None = None) -> "CategoryTransform":
        counts = Counter(value for value in category_strings(series).tolist() if value is not None)
        return self.fit_counts(counts, len(series))

    def fit_counts(self, counts: Mapping[str, int], n_rows: int) -> "CategoryTransform":
        """Fit from each value's count (canonical spellings) over ``n_rows`` training rows, missing ones
        included: what a streamed run counts a chunk at a time."""
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        # A value needs enough rows to learn its embedding from: a fixed count, or a share of the
        # rows on larger tables (a column of thousands of job titles keeps only the common ones).
        threshold = max(self.min_count, math.ceil(self.min_share * n_rows))
        self.vocabulary = [value for value, count in ordered if count >= threshold]
        self.n_rare = len(ordered) - len(self.vocabulary)
        kept = [count for _, count in ordered[:len(self.vocabulary)]]
        rare = sum(count for _, count in ordered[len(self.vocabulary):])
        self.index_counts = np.array([rare, n_rows - rare - sum(kept), *kept], dtype=np.int64)
        return self

    def transform(self, series: pd.Series, source: str | None = None) -> tuple[np.ndarray, int]:
        """Returns ``(indices (n,) int64, count of values not in the vocabulary)``."""
        codes, unseen = self.encode(series)
        return codes, len(unseen)

    def encode(self, series: pd.Series) -> tuple[np.ndarray, Unseen]:
        """:meth:`transform`'s indices, and the values not in the vocabulary (:class:`Unseen`)."""
        strings = category_strings(series)
        lookup = self._lookup()
        codes = pd.Series(strings, dtype=object).map(lookup).to_numpy(dtype=np.float64, na_value=np.nan)
        missing = strings == None  # noqa: E711
        unknown = np.isnan(codes) & ~missing
        codes = np.where(missing, MISSING_INDEX, np.where(unknown, UNKNOWN_INDEX, codes))
        return codes.astype(np.int64), Unseen.of(strings, unknown)

    def _lookup(self) -> dict[str, int]:
        """Spelling -> index (lookup_spellings), made once per vocabulary: a large one costs a regex a value."""
        cached = self._cached
        if cached is None or cached[0] is not self.vocabulary:
            cached = (self.vocabulary, {value: index + 2 for value, index in lookup_spellings(self.vocabulary).items()})
            self._cached = cached
        return cached[1]

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "vocabulary": self.vocabulary,
                "min_count": self.min_count, "min_share": self.min_share, "n_rare": self.n_rare}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CategoryTransform":
        transform = cls(state["name"], PreprocessingConfig(
            rare_category_min_count=state["min_count"], rare_category_min_share=state.get("min_share", 0.0)))
        transform.vocabulary, transform.n_rare = list(state["vocabulary"]), state["n_rare"]
        return transform


# Dates are clamped to +-1e13 seconds (about 317,000 years either side of 1970) before any calendar
# arithmetic: every intermediate value then stays a whole number far below 2**53, exact in float64,
# and a value such as 1e300 still gives finite features. The export clamps at the same bound.
DATE_LIMIT = 1e13
SECONDS_PER_DAY = 86400.0
# The cyclical parts of a date: (name, first value, number of values, period). Each becomes sin
# and cos of 2 pi (value - first) / period, so December sits beside January and 23:00 beside midnight.
CYCLES: tuple[tuple[str, int, int, float], ...] = (
    ("month", 1, 12, 12.0), ("weekday", 0, 7, 7.0), ("day_of_year", 1, 366, 365.25), ("hour", 0, 24, 24.0))


def cycle_table(first: int, count: int, period: float) -> np.ndarray:
    """sin (row 0) and cos (row 1) of ``2 pi (value - first) / period`` for each of the ``count``
    values, float64 ``(2, count)``; exact zeros where the angle is a multiple of pi / 2.

    Looked up, not computed per row: ONNX Runtime's sin and NumPy's differ in the last bit, and
    sin(pi) is 1.2e-16, not 0. A network's piecewise-linear encoding puts a bin edge between two
    such training values, so the last bit would move a value across it; a table of constants
    gives the graph and keel the same numbers.
    """
    angles = 2.0 * math.pi * np.arange(count) / period
    table = np.stack([np.sin(angles), np.cos(angles)])
    table[np.abs(table) < 1e-12] = 0.0
    return table


def cycle_index(part: Any, first: int, count: int, clip: Callable[[Any, float, float], Any]) -> Any:
    """The row of ``cycle_table`` for a calendar part (a float array or tensor), clipped into the
    table: a time a fraction of a microsecond before midnight can round to hour -1 of the next day."""
    return clip(part - float(first), 0.0, float(count - 1))


def calendar(seconds: Any, floor: Callable[[Any], Any], flag: Callable[[Any], Any]) -> dict[str, Any]:
    """The civil date and time of ``seconds`` since 1970-01-01 UTC, in proleptic Gregorian UTC.

    Howard Hinnant's ``civil_from_days`` in floating point: only ``+ - * /``, comparisons and
    ``floor``, each applied to whole numbers (exact in float64 for ``|seconds| <= DATE_LIMIT``), so
    NumPy here and the ONNX graph of the export (``Floor``, ``Div``, ``Mul``) give identical results.

    Args:
        seconds: float64 seconds (a NumPy array or a torch tensor), finite and within ``DATE_LIMIT``.
        floor: The array library's floor (``np.floor``, ``torch.floor``).
        flag: A boolean array as 0.0 / 1.0 of ``seconds``' dtype.

    Returns:
        float arrays ``days`` (whole days since 1970-01-01), ``year``, ``month`` (1-12), ``weekday``
        (0 Monday - 6 Sunday), ``day_of_year`` (1-366) and ``hour`` (0-23).

    Example:
        >>> parts = calendar(np.array([1709214300.0]), np.floor, lambda b: b.astype(float))  # 2024-02-29 13:45
        >>> [float(parts[key][0]) for key in ("year", "month", "weekday", "day_of_year", "hour")]
        [2024.0, 2.0, 3.0, 60.0, 13.0]
    """
    days = floor(seconds / SECONDS_PER_DAY)
    hour = floor((seconds - days * SECONDS_PER_DAY) / 3600.0)
    shifted = days + 719468.0  # days since 0000-03-01: years start in March, leap days fall last
    era = floor(shifted / 146097.0)  # 400-year eras
    day_of_era = shifted - era * 146097.0
    year_of_era = floor((day_of_era - floor(day_of_era / 1460.0) + floor(day_of_era / 36524.0)
                         - floor(day_of_era / 146096.0)) / 365.0)
    march_day = day_of_era - (365.0 * year_of_era + floor(year_of_era / 4.0) - floor(year_of_era / 100.0))
    march_month = floor((5.0 * march_day + 2.0) / 153.0)  # 0 = March ... 11 = February
    early = flag(march_month >= 10.0)  # January or February: the next civil year
    year = year_of_era + era * 400.0 + early
    leap = (flag(year - 4.0 * floor(year / 4.0) == 0.0) - flag(year - 100.0 * floor(year / 100.0) == 0.0)
            + flag(year - 400.0 * floor(year / 400.0) == 0.0))
    return {
        "days": days, "year": year, "month": march_month + 3.0 - 12.0 * early,
        "weekday": (days + 3.0) - 7.0 * floor((days + 3.0) / 7.0),  # 1970-01-01 was a Thursday (3)
        # From March 1 (day 60, or 61 in a leap year); January and February count from 306 days before.
        "day_of_year": march_day + 60.0 + leap - early * (365.0 + leap),
        "hour": hour,
    }


def _numpy_flag(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float64)


class DateTransform:
    """A date or datetime as numbers: elapsed days and year (z-scored), month, weekday, day of year
    and hour (where the training rows have a time of day) as sin / cos pairs, and a missing flag.

    Values arrive as seconds since 1970-01-01 UTC (:func:`keel.data.values.to_seconds`). A missing
    date takes the training rows' median date, and its flag is 1. Elapsed days count from the
    ``origin``, the earliest training date, so a date after all training rows is an elapsed time
    beyond the training range like any large number: finite, clipped at +-``SCALED_LIMIT``.
    """

    kind: ClassVar[str] = "date"

    def __init__(self, name: str, settings: PreprocessingConfig | None = None) -> None:
        self.name = name
        self.origin = 0.0  # days since 1970-01-01 UTC of the earliest training date
        self.fill = 0.0  # elapsed days a missing date takes: the training median
        self.center, self.scale = 0.0, 1.0  # of elapsed days
        self.year_center, self.year_scale = 0.0, 1.0
        self.hour = False  # whether any training date has a time of day
        self.notes: list[str] = []  # what fit made of the column, for the run note

    @property
    def parts(self) -> list[str]:
        """The name of each column this transform emits, in order."""
        cycles = [name for name, _, _, _ in CYCLES if name != "hour" or self.hour]
        return ["elapsed_days", "year", *(f"{name}_{f}" for name in cycles for f in ("sin", "cos")), "missing"]

    @property
    def width(self) -> int:
        """Number of float columns this transform emits."""
        return len(self.parts)

    @property
    def refuses_digits(self) -> bool:
        """Whether a column of years or YYYYMMDD numbers is refused at prediction (they would be seconds of 1970):
        unless the training dates themselves began in 1970 (a column trained on small numbers of seconds)."""
        # Not "began after 1970": birth dates from 1940 would take 2023 as 33 minutes past 1970, silently.
        return not 0.0 <= self.origin < 365.0

    @property
    def fill_seconds(self) -> float:
        """The seconds a missing date is filled with (what the export fills with too)."""
        return (self.origin + self.fill) * SECONDS_PER_DAY

    def fit(self, series: pd.Series, source: str | None = None) -> "DateTransform":
        """Learn the origin, the fill, the scales of elapsed days and year, and whether to keep the hour.

        Raises:
            DataError: A value is no date (see :func:`keel.data.values.to_seconds`).
        """
        seconds = np.clip(to_seconds(series, column=self.name, source=source, digits=False), -DATE_LIMIT, DATE_LIMIT)
        present = seconds[~np.isnan(seconds)]
        n_missing = len(seconds) - len(present)
        if not len(present):  # nothing to learn: every date will be 1970-01-01, flagged missing
            self.notes = [f"date column {self.name!r}: no training row has a date, so it is read as missing in "
                          "every row (only its missing flag can inform the model)."]
            return self
        days = present / SECONDS_PER_DAY
        self.origin = float(days.min())
        elapsed = days - self.origin
        self.fill = float(np.median(_sample(elapsed)))
        # One training date gives no spread: a year's days, so a date a year on is 1 apart, not 365.
        self.center, self.scale = _usable(*mean_and_std(elapsed, n_missing, self.fill), fallback=365.0)
        year = calendar(np.append(present, self.fill_seconds), np.floor, _numpy_flag)["year"]
        self.year_center, self.year_scale = _usable(*mean_and_std(year[:-1], n_missing, float(year[-1])))
        self.hour = bool(np.any(present % SECONDS_PER_DAY != 0))
        first = pd.Timestamp(self.origin * SECONDS_PER_DAY, unit="s").strftime("%Y-%m-%d")
        cycles = [{"weekday": "day of week"}.get(name, name.replace("_", " "))
                  for name, _, _, _ in CYCLES if name != "hour" or self.hour]
        self.notes = [f"date column {self.name!r}: {self.width} numbers: days since {first} (its earliest training "
                      f"date), the year, the {', '.join(cycles[:-1])} and {cycles[-1]} as sine / cosine pairs, and a "
                      "missing flag (a missing date reads as the median training date)."]
        return self

    def transform(self, series: pd.Series, source: str | None = None) -> tuple[np.ndarray, int]:
        """Returns ``(values (n, width) float32, 0)``; dates have no unseen values to count."""
        seconds = to_seconds(series, column=self.name, source=source, digits=self.refuses_digits)
        out = np.empty((self.width, len(seconds)), dtype=np.float32)
        self.apply(seconds, out)
        return out.T, 0

    def apply(self, seconds: np.ndarray, out: np.ndarray, extent: float = math.inf) -> None:
        """Write the features of ``seconds`` (from ``to_seconds``, NaN where missing) into ``out``, a
        (width, n) float32 array, as :meth:`NumberTransform.apply` does (``extent`` is not needed)."""
        missing = np.isnan(seconds)
        filled = np.clip(np.where(missing, self.fill_seconds, seconds), -DATE_LIMIT, DATE_LIMIT)
        for row, values in enumerate(self.features(filled, missing)):
            out[row] = values

    def features(self, seconds: np.ndarray, missing: np.ndarray) -> list[np.ndarray]:
        """The float64 columns of filled, clamped ``seconds`` before the float32 cast, in ``parts`` order."""
        parts = calendar(seconds, np.floor, _numpy_flag)
        columns = [
            np.clip((seconds / SECONDS_PER_DAY - self.origin - self.center) / self.scale, -SCALED_LIMIT, SCALED_LIMIT),
            np.clip((parts["year"] - self.year_center) / self.year_scale, -SCALED_LIMIT, SCALED_LIMIT),
        ]
        for name, first, count, period in CYCLES:
            if name != "hour" or self.hour:
                table = cycle_table(first, count, period)
                index = cycle_index(parts[name], first, count, np.clip).astype(np.int64)
                columns += [table[0][index], table[1][index]]
        return [*columns, missing.astype(np.float64)]

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "origin": self.origin, "fill": self.fill,
                "center": self.center, "scale": self.scale, "year_center": self.year_center,
                "year_scale": self.year_scale, "hour": self.hour}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "DateTransform":
        transform = cls(state["name"])
        transform.origin, transform.fill = float(state["origin"]), float(state["fill"])
        transform.center, transform.scale = float(state["center"]), float(state["scale"])
        transform.year_center, transform.year_scale = float(state["year_center"]), float(state["year_scale"])
        transform.hour = bool(state["hour"])
        return transform


def _usable(center: float, scale: float, fallback: float = 1.0) -> tuple[float, float]:
    """A z-score's center and scale, ``fallback`` where the scale is 0 (one date, one year)."""
    return center, scale if math.isfinite(scale) and scale >= MIN_SCALE else fallback


TRANSFORMS: dict[str, type[NumberTransform] | type[BinaryTransform] | type[CategoryTransform] | type[DateTransform]
                 | type[TextTransform] | type[ImageTransform]] = {
    "number": NumberTransform, "binary": BinaryTransform, "category": CategoryTransform, "date": DateTransform,
    "text": TextTransform, "image": ImageTransform,
}
