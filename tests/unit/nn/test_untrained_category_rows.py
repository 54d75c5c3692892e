"""Embedding rows that no training row uses (the unknown bucket of a column without rare values, the missing one
of a column without missing values) take the training rows' count-weighted mean vector, not their random start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import keel
from keel.nn.encoders import CategoryEncoder
from tests.conftest import FAST


def test_unused_rows_take_the_count_weighted_mean_and_trained_rows_stay() -> None:
    torch.manual_seed(0)
    encoder = CategoryEncoder([5, 4, 3], [3, 2, 3], onehot=[False, False, True])
    before = [table.weight.detach().clone() for table in encoder.tables]
    encoder.fill_untrained([np.array([0, 0, 1, 3, 6]), np.array([2, 5, 1, 1]), np.array([0, 0, 4])])
    first = encoder.tables[0].weight.detach()
    mean = (before[0][2] * 1 + before[0][3] * 3 + before[0][4] * 6) / 10
    assert torch.allclose(first[0], mean) and torch.allclose(first[1], mean)
    assert torch.equal(first[2:], before[0][2:])
    assert torch.equal(encoder.tables[1].weight, before[1])  # every row used: unchanged
    assert torch.equal(encoder.tables[2].weight, before[2])  # one-hot: fixed identity, never filled


def test_a_missing_or_unseen_colour_predicts_among_the_colours_seen() -> None:
    # The parity audit (s17): a colour missing at prediction gave 243 where the real colours gave 89-182, and an
    # unseen one 55, from rows that kept their N(0, 1) start.
    rng = np.random.default_rng(3)
    n = 600
    colour = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    frame = pd.DataFrame({"colour": colour, "x": rng.normal(0, 1, n)})
    frame["y"] = pd.Series(colour).map({"red": 100.0, "green": 150.0, "blue": 180.0}) + 10 * frame["x"]
    config = {**FAST, "model.hidden": [32], "training.epochs": 30, "preprocessing.categorical_encoding": "embedding"}
    model = keel.fit(frame, target="y", config=config, quiet=True, importance=False)
    table = model.network.categories.tables[0].weight.detach()
    assert torch.equal(table[0], table[1])  # neither bucket was used in training: both hold the mean
    rows = frame.drop(columns="y").head(200)
    seen = [float(model.predict(rows.assign(colour=value)).mean()) for value in ("red", "green", "blue")]
    for value in (None, "purple"):
        predicted = float(model.predict(rows.assign(colour=value)).mean())
        assert min(seen) <= predicted <= max(seen), (value, predicted, seen)


def test_a_category_transform_counts_the_fitting_rows_of_each_index() -> None:
    # What a streamed run fills from (its rows are on disk): unknown (rare values), missing, then the vocabulary's.
    from keel.config import PreprocessingConfig
    from keel.data.transforms import CategoryTransform

    transform = CategoryTransform("c", PreprocessingConfig(rare_category_min_count=3))
    transform.fit(pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + [None] * 4))
    assert transform.vocabulary == ["a", "b"] and transform.index_counts.tolist() == [2, 4, 5, 3]
    transform.fit(pd.Series(["a"] * 5 + ["b"] * 3))
    assert transform.index_counts.tolist() == [0, 0, 5, 3]
