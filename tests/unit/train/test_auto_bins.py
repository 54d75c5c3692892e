"""model.numeric_embedding_size auto (the balanced preset): 48 piecewise-linear bins on tables of 10,000 rows or
more for training and validation, 16 below and for every other embedding."""

from __future__ import annotations

import pytest

import keel
from keel.config import AUTO_BINS, AUTO_BINS_LARGE, AUTO_BINS_ROWS, auto_numeric_embedding_size, load_config
from keel.errors import ConfigError
from keel.nn.network import NetworkBag
from tests.conftest import FAST, make_classification_frame

AUTO = {**FAST, "model.numeric_embedding": "piecewise_linear", "model.numeric_embedding_size": "auto",
        "training.epochs": 1, "training.validation_split": 0.1, "training.test_split": 0.0}


@pytest.mark.parametrize(("kind", "rows", "size"), [
    ("piecewise_linear", AUTO_BINS_ROWS - 1, AUTO_BINS),
    ("piecewise_linear", AUTO_BINS_ROWS, AUTO_BINS_LARGE),  # the bound itself
    ("periodic", 10 * AUTO_BINS_ROWS, AUTO_BINS),  # frequencies were only measured at 16
    ("none", 10 * AUTO_BINS_ROWS, AUTO_BINS),
])
def test_auto_gives_48_bins_from_10000_rows(kind: str, rows: int, size: int) -> None:
    assert auto_numeric_embedding_size(kind, rows) == size


def _bins(model: keel.model.Model) -> int:
    network = model.network.networks[0] if isinstance(model.network, NetworkBag) else model.network
    assert network.numbers is not None
    return int(network.numbers.left.shape[1])  # the bins the embedding was built with


def test_a_large_table_trains_48_bins_and_says_so_and_a_small_one_16() -> None:
    large = keel.fit(make_classification_frame(AUTO_BINS_ROWS), target="label", config=AUTO, quiet=True,
                     importance=False)
    # The pool is training plus validation: the 10% validation rows count.
    assert large.run["rows"]["train"] < AUTO_BINS_ROWS <= large.run["rows"]["train"] + large.run["rows"]["validation"]
    assert large.network.spec.numeric_embedding_size == AUTO_BINS_LARGE == _bins(large)
    assert any("48 bins: numeric_embedding_size auto, 10,000 rows or more" in note for note in large.notes)
    small = keel.fit(make_classification_frame(2000), target="label", config=AUTO, quiet=True, importance=False)
    assert small.network.spec.numeric_embedding_size == AUTO_BINS == _bins(small)
    assert not any("numeric_embedding_size auto" in note for note in small.notes)


def test_test_rows_do_not_count_and_an_explicit_size_is_kept() -> None:
    frame = make_classification_frame(AUTO_BINS_ROWS + 500)
    held = keel.fit(frame, target="label", config={**AUTO, "training.test_split": 0.2}, quiet=True, importance=False)
    assert held.network.spec.numeric_embedding_size == AUTO_BINS  # 8,400 rows for training and validation
    fixed = keel.fit(frame, target="label", config={**AUTO, "model.numeric_embedding_size": 24}, quiet=True,
                     importance=False)
    assert fixed.network.spec.numeric_embedding_size == 24


def test_the_saved_model_keeps_the_resolved_size(tmp_path) -> None:
    model = keel.fit(make_classification_frame(AUTO_BINS_ROWS), target="label", config=AUTO, quiet=True,
                     importance=False)
    model.save(tmp_path / "model")
    loaded = keel.load(tmp_path / "model")
    assert loaded.network.spec.numeric_embedding_size == AUTO_BINS_LARGE
    frame = make_classification_frame(300, seed=3)
    assert (loaded.predict_proba(frame) == pytest.approx(model.predict_proba(frame), abs=1e-6))


def test_the_balanced_preset_uses_auto_and_other_words_are_refused() -> None:
    assert load_config({"preset": "balanced"}).model.numeric_embedding_size == "auto"
    assert load_config({"preset": "best"}).model.numeric_embedding_size == "auto"
    assert load_config({}).model.numeric_embedding_size == "auto"  # balanced is the default preset
    assert load_config({"preset": "fast"}).model.numeric_embedding_size == AUTO_BINS
    with pytest.raises(ConfigError, match="numeric_embedding_size"):
        load_config({"model.numeric_embedding_size": "many"})
    with pytest.raises(ConfigError, match="numeric_embedding_size"):
        load_config({"model.numeric_embedding_size": 0})
