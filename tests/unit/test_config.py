from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.config import PRESETS, Config, load_config
from keel.errors import ConfigError


def test_defaults_are_valid_and_every_field_is_described() -> None:
    config = load_config({"preset": "fast"})
    assert config.training.epochs == 100 and config.model.hidden == [128, 64]
    for section in (Config, type(config.model), type(config.training), type(config.preprocessing)):
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no description"


def test_yaml_nested_and_dotted_sources_agree(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model: {hidden: [32, 16], activation: gelu}\ntraining:\n  lr: 0.01\n")
    nested = {"model": {"hidden": [32, 16], "activation": "gelu"}, "training": {"lr": 0.01}}
    dotted = {"model.hidden": [32, 16], "model.activation": "gelu", "training.lr": 0.01}
    assert load_config(path) == load_config(nested) == load_config(dotted)


def test_set_overrides_parse_values_as_yaml(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("training: {lr: 0.5, epochs: 3}\n")
    config = load_config(path, ["training.lr=0.01", "model.hidden=[8, 4]", "training.nesterov=true"])
    assert config.training.lr == 0.01 and config.training.epochs == 3
    assert config.model.hidden == [8, 4] and config.training.nesterov is True


def test_unknown_key_names_the_path_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'training.lrr' \(did you mean 'lr'\?\).*valid keys here: .*batch_size"):
        load_config({"training.lrr": 0.1})


def test_bad_choice_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, ["model.activation=swish"])
    message = str(error.value)
    assert "model.activation" in message and "'swish'" in message
    for allowed in ("relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu"):
        assert allowed in message
    assert "--set model.activation=" in message


def test_bad_number_names_key_value_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"training.batch_size: Input should be greater than or equal to 1 or .auto.; got 0. Fix .*--set training.batch_size=VALUE"):
        load_config({"training.batch_size": 0})
    with pytest.raises(ConfigError, match=r"model.hidden.1: .*got -3.*--set model.hidden=VALUE"):
        load_config({"model.hidden": [8, -3]})


def test_missing_and_invalid_yaml_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listing)


def test_set_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["training.lr"])


settings_strategy = st.fixed_dictionaries({
    "model.hidden": st.lists(st.integers(1, 512), max_size=4),
    "model.activation": st.sampled_from(["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu"]),
    "model.dropout": st.floats(0, 0.9),
    "training.lr": st.floats(1e-6, 1.0),
    "training.batch_size": st.integers(1, 4096),
    "training.optimizer": st.sampled_from(["adam", "adamw", "sgd"]),
    "preprocessing.normalize": st.sampled_from(["zscore", "minmax", "none"]),
})


@given(settings_strategy)
@settings(max_examples=50, deadline=None)
def test_dump_then_load_is_identity(values: dict) -> None:
    config = load_config(values)
    assert load_config(config.model_dump()) == config
    assert load_config(config.model_dump(mode="json")) == config


def test_the_default_preset_is_balanced_and_what_the_user_writes_wins() -> None:
    config = load_config({"training.batch_size": 32, "model.hidden": [64, 32]})
    assert config.preset == "balanced"
    assert config.training.batch_size == 32 and config.model.hidden == [64, 32]  # written: kept
    assert config.model.ensemble == PRESETS["balanced"]["model"]["ensemble"] > 1  # unwritten: the preset's
    assert config.preprocessing.normalize == "quantile"


def test_fast_is_the_fields_own_defaults_and_best_adds_bagging_and_epochs() -> None:
    fast = load_config({"preset": "fast"})
    assert fast.model_dump(exclude={"preset"}) == Config().model_dump(exclude={"preset"})
    best = load_config(None, ["preset=best"])
    assert best.training.bagging > 1 and best.training.epochs > load_config().training.epochs


def test_a_preset_is_applied_once_so_a_loaded_config_keeps_its_values() -> None:
    config = load_config({"preset": "balanced", "training.lr": 0.5})
    assert load_config(config) == config
    assert load_config(config.model_dump(mode="json")) == config
    assert load_config(Config(preset="fast")).model.ensemble == 1  # a Config object's set fields count


def test_an_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'quick'; use one of fast, balanced, best"):
        load_config({"preset": "quick"})


def test_a_learning_rate_that_overflows_float32_and_bad_memory_budgets_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"training.lr: Input should be less than or equal to 1000000"):
        load_config({"training.lr": 1e40})  # torch raised a RuntimeError at the first SGD step
    assert load_config({"training.lr": 1e6}).training.lr == 1e6
    assert load_config({"data.memory_budget": "512MB"}).data.budget_bytes == 512 * 10**6
    assert load_config({"data.memory_budget": "1.5GiB"}).data.budget_bytes == int(1.5 * 2**30)
    assert load_config({"data.memory_budget": 2**21}).data.budget_bytes == 2**21
    assert 0 < load_config(None).data.budget_bytes
    for bad, reason in [("12 bananas", "is not a size"), ("10KB", "under the smallest budget"), (-5, "smallest")]:
        with pytest.raises(ConfigError, match=reason):
            load_config({"data.memory_budget": bad})


@pytest.mark.parametrize("key, value", [
    ("training.batch_size", True), ("training.lr", True), ("training.epochs", True), ("training.seed", True),
    ("training.validation_split", False), ("training.early_stopping", False), ("model.hidden", [True, 64]),
    ("training.batch_size", np.True_), ("model.hidden", [np.False_, 64]),  # numpy's, from a parameter grid
])
def test_true_or_false_for_a_number_is_an_error(key, value) -> None:
    """YAML reads yes / no / on / off as true / false, and pydantic would take them as 1 / 0: batch_size: yes
    trained on one-row batches, silently (found by a user's trial)."""
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: takes a number, not true / false"):
        load_config({"preset": "fast", key: value})


def test_true_or_false_stays_valid_where_a_setting_is_a_switch() -> None:
    config = load_config({"training.checkpoint": True, "preprocessing.missing_indicator": True,
                          "training.calibrate": False, "image.strict": True})
    assert config.training.checkpoint is True and config.training.calibrate is False
    with pytest.raises(ConfigError, match="takes a number"):
        load_config(None, ["training.batch_size=yes"])  # --set reads YAML too


@pytest.mark.parametrize(("key", "hint"), [
    ("training.learning_rate", "did you mean 'lr'?"),  # other tools' names: spelling alone does not lead there
    ("training.Patience", "did you mean 'early_stopping'?"),
    ("model.hidden_layer_sizes", "did you mean 'hidden'?"),
    ("preprocessing.scaler", "did you mean 'normalize'?"),
    ("lr", "did you mean 'training.lr'?"),  # a section's key without its section
    ("learning_rate", "did you mean 'training.lr'?"),
    ("hidden", "did you mean 'model.hidden'?"),
    ("model.epochs", "did you mean 'training.epochs'?"),  # a key of another section
    ("training.dropout", "did you mean 'model.dropout'?"),
    ("targt", "did you mean 'target'?"),  # spelling, as before
])
def test_an_unknown_key_names_the_setting_meant(key: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"unknown key {key!r} ({hint})")):
        load_config({key: 1})


def test_an_unknown_key_like_nothing_gets_no_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"training.zzz": 1})
    assert "did you mean" not in str(caught.value) and "valid keys here: bagging" in str(caught.value)


def test_a_weight_column_listed_as_a_feature_is_refused() -> None:
    # It trained as a number feature without a word, where the README says a weight is never a feature.
    with pytest.raises(ConfigError, match="training.weight_column 'w' is also listed in input_features"):
        load_config({"training.weight_column": "w", "input_features": [{"name": "x"}, {"name": "w"}]})
    config = load_config({"training.weight_column": "w", "input_features": [{"name": "x"}]})
    assert config.training.weight_column == "w"


def test_a_column_named_by_a_whole_number_is_the_column_of_that_text(tmp_path) -> None:
    # The s19 audit: a CSV's header "2023" is text, but YAML and --set read target: 2023 as an int, and the
    # ConfigError's advice (pass --set target=VALUE) failed the same way; fit(df, 2023) already took it.
    path = tmp_path / "config.yaml"
    path.write_text("target: 2023\ndrop_columns: [7, id]\ntraining:\n  weight_column: 5\n  split_by: 1\n"
                    "  order_by: 2\ninput_features:\n  - {name: 3, type: date}\n", encoding="utf-8")
    config = load_config(path)
    assert (config.target, config.drop_columns) == ("2023", ["7", "id"])
    assert (config.training.weight_column, config.training.split_by, config.training.order_by) == ("5", "1", "2")
    assert config.input_features is not None and config.input_features[0].name == "3"
    assert load_config(None, ["target=2023"]).target == "2023"
    with pytest.raises(ConfigError, match="target: Input should be a valid string; got True"):
        load_config({"target": True})  # YAML's yes: no column is named so
