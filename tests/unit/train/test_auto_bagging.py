"""training.bagging auto (the balanced preset): five bagged networks on a small table, one otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import (
    AUTO_BAGGING,
    AUTO_BAGGING_CELLS,
    AUTO_BAGGING_FOLD_ROWS,
    AUTO_BAGGING_ROWS,
    auto_bagging,
    load_config,
)
from keel.data.schema import Feature, Schema
from keel.data.split import Split
from keel.errors import ConfigError
from keel.nn.network import NetworkBag
from keel.train.pipeline import _networks as networks_for
from tests.conftest import FAST, make_classification_frame

AUTO = {**FAST, "training.bagging": "auto"}


def _networks(model: keel.model.Model) -> int:
    return len(model.network.networks) if isinstance(model.network, NetworkBag) else 1


def _rows_note(model: keel.model.Model) -> str:
    return next(note for note in model.notes if note.startswith("rows: "))


@pytest.mark.parametrize(("rows", "columns", "networks"), [
    (100, 4, AUTO_BAGGING),
    (AUTO_BAGGING_ROWS, AUTO_BAGGING_CELLS // AUTO_BAGGING_ROWS, AUTO_BAGGING),  # both bounds exactly
    (AUTO_BAGGING_ROWS + 1, 2, 1),  # too many rows, however narrow
    (AUTO_BAGGING_ROWS, AUTO_BAGGING_CELLS // AUTO_BAGGING_ROWS + 1, 1),  # too many cells
    (1000, AUTO_BAGGING_CELLS // 1000 + 1, 1),
])
def test_the_rule_counts_rows_and_cells(rows: int, columns: int, networks: int) -> None:
    assert auto_bagging(rows, columns) == networks


def test_the_presets_bagging() -> None:
    assert load_config().training.bagging == "auto"  # balanced, the default
    assert load_config({"preset": "best"}).training.bagging == AUTO_BAGGING
    assert load_config({"preset": "fast"}).training.bagging == 1
    assert load_config({"training.bagging": "auto", "preset": "fast"}).training.bagging == "auto"
    with pytest.raises(ConfigError, match="bagging"):
        load_config({"training.bagging": "many"})


def test_a_small_table_trains_five_bagged_networks_and_says_why() -> None:
    model = keel.fit(make_classification_frame(200), target="label", config=AUTO, quiet=True, importance=False)
    assert _networks(model) == AUTO_BAGGING
    assert "5 bagged networks (training.bagging auto: a small table)" in _rows_note(model)
    assert model.run is not None and model.run["bagging"]["networks"] == AUTO_BAGGING


def test_a_table_over_the_row_bound_trains_one_network() -> None:
    rng = np.random.default_rng(0)
    n = AUTO_BAGGING_ROWS + 700  # the 10% validation share leaves more than the bound for training + validation
    x = rng.normal(size=n)
    frame = pd.DataFrame({"x": x, "y": np.where(x + rng.normal(0, 0.5, n) > 0, "yes", "no")})
    model = keel.fit(frame, target="y", config={**AUTO, "training.test_split": 0.1}, quiet=True, importance=False)
    assert _networks(model) == 1 and "bagged" not in _rows_note(model)


def test_a_wide_small_table_trains_one_network() -> None:
    rng = np.random.default_rng(0)
    columns = 70  # the 1,600 rows left after the 20% test split x 70 columns are over the cells bound
    frame = pd.DataFrame(rng.normal(size=(2000, columns)), columns=[f"x{i}" for i in range(columns)])
    frame["y"] = np.where(frame["x0"] > 0, "yes", "no")
    assert 1600 * columns > AUTO_BAGGING_CELLS > 1600 * (columns - 10)
    model = keel.fit(frame, target="y", config=AUTO, quiet=True, importance=False)
    assert _networks(model) == 1
    narrower = keel.fit(frame.drop(columns=[f"x{i}" for i in range(60, 70)]), target="y", config=AUTO, quiet=True,
                        importance=False)
    assert _networks(narrower) == AUTO_BAGGING


def test_a_time_ordered_split_trains_one_network_where_an_explicit_bagging_is_refused() -> None:
    frame = make_classification_frame(200)
    frame["when"] = pd.date_range("2024-01-01", periods=len(frame), freq="D")
    model = keel.fit(frame, target="label", config={**AUTO, "training.order_by": "when"}, quiet=True,
                     importance=False)
    assert _networks(model) == 1 and "latest rows" in _rows_note(model)
    with pytest.raises(ConfigError, match=r"^training.bagging 2 validates .* time-ordered .*bagging: 1\.$"):
        keel.fit(frame, target="label", config={**FAST, "training.bagging": 2, "training.order_by": "when"},
                 quiet=True)
    # Preset best bags five: the user never wrote bagging, so the message says where it came from.
    with pytest.raises(ConfigError, match=r"training.bagging 5 \(what preset best sets\) validates .*bagging: 1 "
                                          r"\(or use preset balanced"):
        keel.fit(frame, target="label", config={"preset": "best", "training.order_by": "when"}, quiet=True)


def test_no_validation_rows_train_one_network_without_a_complaint() -> None:
    model = keel.fit(make_classification_frame(200), target="label",
                     config={**AUTO, "training.validation_split": 0.0, "training.early_stopping": 0}, quiet=True,
                     importance=False)
    assert _networks(model) == 1
    assert "no validation rows to make folds of" not in _rows_note(model)


def test_the_estimators_take_auto() -> None:
    from keel.sklearn import KeelClassifier

    frame = make_classification_frame(200)
    estimator = KeelClassifier(preset="fast", hidden=[16], epochs=3, bagging="auto")
    estimator.fit(frame.drop(columns="label"), frame["label"])
    assert _networks(estimator.model_) == AUTO_BAGGING
    assert estimator.predict(frame.drop(columns="label")).shape == (200,)


def _split(pool: int) -> Split:
    validation = pool // 10
    return Split(train=np.arange(validation, pool), validation=np.arange(validation), test=np.arange(pool, pool + 10))


@pytest.mark.parametrize(("kinds", "text", "networks"), [
    (["number", "category"], {}, AUTO_BAGGING),
    (["number", "text"], {}, AUTO_BAGGING),  # tfidf: no encoder to train five times
    (["number", "text"], {"text.encoder": "pretrained"}, AUTO_BAGGING),  # frozen: embedded once, cached
    (["number", "text"], {"text.encoder": "pretrained", "text.finetune": "lora"}, 1),
    (["number", "image"], {}, 1),
])
def test_image_and_fine_tuned_text_columns_train_one_network(kinds: list[str], text: dict[str, str],
                                                              networks: int) -> None:
    settings = load_config({"training.bagging": "auto", **text})
    schema = Schema("y", "binary", [Feature(f"c{i}", kind) for i, kind in enumerate(kinds)])  # type: ignore[arg-type]
    assert networks_for(settings, _split(1000), schema, None) == networks


def test_fewer_groups_than_folds_or_rows_than_folds_need_train_one_network() -> None:
    settings = load_config({"training.bagging": "auto"})
    schema = Schema("y", "binary", [Feature("x", "number")])
    split = _split(1000)
    assert networks_for(settings, split, schema, np.arange(1010) % AUTO_BAGGING) == AUTO_BAGGING
    assert networks_for(settings, split, schema, np.arange(1010) % (AUTO_BAGGING - 1)) == 1
    assert auto_bagging(AUTO_BAGGING * AUTO_BAGGING_FOLD_ROWS, 1) == AUTO_BAGGING
    assert auto_bagging(AUTO_BAGGING * AUTO_BAGGING_FOLD_ROWS - 1, 1) == 1
    assert networks_for(settings, _split(40), schema, None) == 1
    explicit = load_config({"training.bagging": 3})
    assert networks_for(explicit, _split(40), Schema("y", "binary", [Feature("i", "image")]), None) == 3
