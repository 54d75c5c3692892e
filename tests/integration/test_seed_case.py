"""The seed case of the core issue: keel learns it at least about as well as scikit-learn's MLP.

bench/seed_case.py makes the full comparison (30 paired seeds, and times both). Over 30 seeds keel
with PyTorch's initialization trailed by 0.0077 (SE 0.0036); with Glorot's, the `fast` default now,
it leads by 0.0020 (SE 0.0036). Five seeds cannot resolve a gap that size (their SE is about 0.01),
so the exact guard is that the case's config resolves to Glorot's init; the five-seed run guards
against a larger regression.
"""

from __future__ import annotations

import sys

import pytest

from keel.config import load_config
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from seed_case import compare, keel_config, run_keel, run_sklearn, seed_case_data  # noqa: E402

SEEDS = range(5)
# On the reference CPU the five seeds give keel - scikit-learn = +0.004 (PyTorch's init: -0.007);
# 0.005 is one test row in a thousand predictions, slack for another CPU's float rounding.
MARGIN = 0.005


def test_the_case_as_written_gets_glorot_initialization() -> None:
    config = load_config(keel_config(seed=0))
    assert config.model.init == "xavier_uniform"
    assert config.training.l2 == 0.0 and config.training.decay == 0.0  # Adam, no penalty: as measured


def test_keel_matches_scikit_learn_over_paired_seeds() -> None:
    train, test = seed_case_data()
    assert (len(train), len(test)) == (800, 200)
    assert test["label"].value_counts().sort_index().tolist() == [66, 67, 67]  # stratified: a fifth of 330/335/335
    keel_accuracies = [run_keel(train, test, seed)[0] for seed in SEEDS]
    sklearn_accuracies = [run_sklearn(train, test, seed)[0] for seed in SEEDS]
    paired = compare(keel_accuracies, sklearn_accuracies)
    assert min(keel_accuracies) > 0.75
    assert paired.difference >= -MARGIN, paired


def test_compare_pairs_by_seed() -> None:
    paired = compare([0.8, 0.9, 0.7], [0.7, 0.9, 0.8])
    assert (paired.wins, paired.ties, paired.losses) == (1, 1, 1)
    assert paired.difference == pytest.approx(0.0) and paired.standard_error == pytest.approx(0.1 / 3**0.5)
