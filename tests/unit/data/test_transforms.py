"""Every feature transform honours one contract: fit, transform, state through JSON, same output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.config import PreprocessingConfig
from keel.data.transforms import MISSING_INDEX, TRANSFORMS, UNKNOWN_INDEX, CategoryTransform, NumberTransform
from keel.errors import DataError


def check_transform_contract(kind: str, train: pd.Series, other: pd.Series, **settings) -> np.ndarray:  # type: ignore[no-untyped-def]
    """fit → transform → state → JSON → from_state → identical transform; returns the output on ``other``."""
    transform = TRANSFORMS[kind]("col", PreprocessingConfig(**settings)).fit(train)
    values, unseen = transform.transform(other)
    assert len(values) == len(other)
    restored = TRANSFORMS[kind].from_state(json.loads(json.dumps(transform.state())))
    again, unseen_again = restored.transform(other)
    np.testing.assert_array_equal(values, again)
    assert unseen == unseen_again
    return values


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.none()), min_size=1, max_size=40),
       st.sampled_from(["zscore", "minmax", "robust", "quantile", "none"]),
       st.sampled_from(["median", "mean", "constant"]),
       st.booleans())
@settings(max_examples=60, deadline=None)
def test_number_transform_contract(values, normalize, missing, indicator) -> None:
    series = pd.Series(values, dtype="float64")
    out = check_transform_contract("number", series, series, normalize=normalize, missing=missing,
                                   missing_indicator=indicator)
    assert out.dtype == np.float32 and out.shape == (len(values), 2 if indicator else 1)
    assert np.isfinite(out).all()
    if indicator:
        np.testing.assert_array_equal(out[:, 1], series.isna().to_numpy().astype(np.float32))


def test_number_transform_fills_and_scales() -> None:
    train = pd.Series([1.0, 2.0, None, 10.0])
    transform = NumberTransform("x", PreprocessingConfig(missing="median", normalize="none")).fit(train)
    assert transform.fill == 2.0
    np.testing.assert_allclose(transform.transform(pd.Series([None, 5.0]))[0][:, 0], [2.0, 5.0])
    minmax = NumberTransform("x", PreprocessingConfig(normalize="minmax")).fit(pd.Series([0.0, 4.0]))
    np.testing.assert_allclose(minmax.transform(pd.Series([2.0, 8.0]))[0][:, 0], [0.5, 2.0])
    zscore = NumberTransform("x", PreprocessingConfig()).fit(pd.Series([1.0, 3.0]))
    np.testing.assert_allclose(zscore.transform(pd.Series([1.0, 3.0]))[0][:, 0], [-1.0, 1.0])


def test_number_transform_reports_bad_values_at_transform_time() -> None:
    transform = NumberTransform("x", PreprocessingConfig()).fit(pd.Series([1.0, 2.0]))
    with pytest.raises(DataError, match=r"column 'x' holds numbers, but row 2 has the value 'abc'"):
        transform.transform(pd.Series(["1", "abc"]))


def test_category_transform_buckets_rare_unseen_and_missing() -> None:
    train = pd.Series(["a"] * 6 + ["b"] * 5 + ["rare"] * 2 + [None])
    out = check_transform_contract("category", train, pd.Series(["a", "b", "rare", "new", None]),
                                   rare_category_min_count=3)
    assert out.tolist() == [2, 3, UNKNOWN_INDEX, UNKNOWN_INDEX, MISSING_INDEX]
    transform = CategoryTransform("col", PreprocessingConfig(rare_category_min_count=3)).fit(train)
    assert transform.cardinality == 4 and transform.n_rare == 1
    assert transform.transform(pd.Series(["new", "other", "a"]))[1] == 2


def test_category_numbers_match_between_files_and_frames() -> None:
    transform = CategoryTransform("col", PreprocessingConfig(rare_category_min_count=1)).fit(pd.Series([1, 2, 1]))
    codes, unseen = transform.transform(pd.Series([1.0, 2.0, None]))
    assert codes.tolist() == [2, 3, MISSING_INDEX] and unseen == 0


def test_binary_transform_maps_two_values_and_fills_the_rest() -> None:
    train = pd.Series(["no", "yes", "yes", "yes"])
    out = check_transform_contract("binary", train, pd.Series(["no", "yes", None, "maybe"]))
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 0.75, 0.75])
    transform = TRANSFORMS["binary"]("col").fit(train)
    assert transform.transform(pd.Series(["maybe", None]))[1] == 1


def test_median_of_a_large_column_is_sampled_and_close() -> None:
    values = pd.Series(np.random.default_rng(1).exponential(size=1_000_000))
    transform = NumberTransform("x", PreprocessingConfig()).fit(values)
    assert abs(transform.fill - np.median(values)) < 0.01 * values.std()
    small = NumberTransform("x", PreprocessingConfig()).fit(values[:1001])
    assert small.fill == np.median(values[:1001])  # exact below the sample size


def test_robust_scaling_centres_on_the_median_and_softly_clips_outliers() -> None:
    train = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 1000.0])
    transform = NumberTransform("x", PreprocessingConfig(normalize="robust")).fit(train)
    out = transform.transform(pd.Series([3.5, 4.0, 1000.0, -1e9]))[0][:, 0]
    assert out[0] == pytest.approx(0.0, abs=1e-6)  # the median
    iqr_unit = 1.349 / 2.5  # IQR of the training values is 2.5
    assert out[1] == pytest.approx(0.5 * iqr_unit / np.sqrt(1 + (0.5 * iqr_unit / 3) ** 2), rel=1e-5)
    assert 2.9 < out[2] <= 3.0 and -3.0 <= out[3] < -2.9  # outliers end near +-3, order kept


def test_quantile_scaling_maps_the_training_distribution_onto_a_normal_one() -> None:
    rng = np.random.default_rng(0)
    train = pd.Series(rng.exponential(size=5000))
    transform = NumberTransform("x", PreprocessingConfig(normalize="quantile")).fit(train)
    out = transform.transform(train)[0][:, 0]
    assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.1 and abs(np.median(out)) < 0.05
    assert np.all(np.diff(out[np.argsort(train.to_numpy())]) >= 0)  # monotone
    beyond = transform.transform(pd.Series([-5.0, 1e6]))[0][:, 0]
    assert beyond[0] == out.min() and beyond[1] == out.max()  # clipped at the training range
    few = NumberTransform("x", PreprocessingConfig(normalize="quantile")).fit(pd.Series([0.0] * 90 + [1.0] * 10))
    low, high = few.transform(pd.Series([0.0, 1.0]))[0][:, 0]
    assert low < 0 < high  # tied quantiles merge into one knot per distinct value


def test_rare_share_raises_the_bar_on_larger_tables_only() -> None:
    values = pd.Series(["common"] * 900 + ["usual"] * 60 + ["seldom"] * 8 + [f"title{i}" for i in range(32)])
    by_count = CategoryTransform("job", PreprocessingConfig(rare_category_min_count=5)).fit(values)
    assert by_count.vocabulary == ["common", "usual", "seldom"]
    by_share = CategoryTransform("job", PreprocessingConfig(rare_category_min_share=0.01)).fit(values)
    assert by_share.vocabulary == ["common", "usual"] and by_share.n_rare == 33  # 8 < 1% of 1000 rows
    restored = CategoryTransform.from_state(json.loads(json.dumps(by_share.state())))
    assert restored.transform(pd.Series(["seldom", "usual"]))[0].tolist() == [UNKNOWN_INDEX, 3]
    small = CategoryTransform("job", PreprocessingConfig(rare_category_min_share=0.01)).fit(values[890:])
    assert "seldom" in small.vocabulary  # 1% of 110 rows is under the count of 5


def test_a_binary_column_with_a_third_value_is_an_error_naming_the_values() -> None:
    train = pd.Series(["no", "yes", "maybe", None, "perhaps"] + [f"v{i}" for i in range(6)])
    with pytest.raises(DataError, match=r"column 'smoker' is binary, but its training rows hold 10 distinct values: "
                                        r"'maybe' and 'no', then 'perhaps', 'v0', 'v1', 'v2', 'v3' and 3 more "
                                        r"\(8 extra value\(s\)\).*Declare it a category") as error:
        TRANSFORMS["binary"]("smoker").fit(train, source="data.csv")
    assert (error.value.column, error.value.file) == ("smoker", "data.csv")
    two = TRANSFORMS["binary"]("smoker").fit(pd.Series(["no", "yes", None]))  # missing is not a value
    assert two.values == ["no", "yes"]


def test_scalers_are_keyed_by_the_normalize_options() -> None:
    from typing import get_args

    from keel.data.transforms import SCALERS

    assert set(SCALERS) == set(get_args(PreprocessingConfig.model_fields["normalize"].annotation))
