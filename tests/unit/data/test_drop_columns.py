"""drop_columns (--drop): columns never used as features, checked against the data and the config."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import load_config
from keel.data.schema import infer_schema
from keel.errors import ConfigError, DataError
from tests.conftest import FAST, ROOT, make_classification_frame

KEEL = ROOT / ".venv" / "bin" / "keel"


def test_a_dropped_column_is_no_feature_and_the_note_says_why() -> None:
    frame = make_classification_frame()
    schema = infer_schema(frame, load_config({"target": "label", "drop_columns": ["color", "weight"]}))
    assert [feature.name for feature in schema.features] == ["size", "member"]
    assert schema.dropped == {"color": "drop_columns lists it", "weight": "drop_columns lists it"}


def test_a_model_without_the_column_predicts_without_it() -> None:
    frame = make_classification_frame()
    model = keel.fit(frame, target="label", config={**FAST, "drop_columns": ["color"]}, quiet=True)
    assert "dropped column 'color': drop_columns lists it" in model.notes
    assert model.predict(frame.drop(columns=["color", "label"])).shape == (len(frame),)


def test_a_misspelt_column_is_an_error_that_names_the_close_one() -> None:
    with pytest.raises(DataError, match=r"drop_columns column 'colour' is not in the data.*Did you mean 'color'\?"):
        infer_schema(make_classification_frame(), load_config({"target": "label", "drop_columns": ["colour"]}))


def test_the_target_or_a_listed_feature_cannot_be_dropped() -> None:
    with pytest.raises(ConfigError, match="drop_columns lists the target 'label'"):
        infer_schema(make_classification_frame(), load_config({"target": "label", "drop_columns": ["label"]}))
    with pytest.raises(ConfigError, match=r"drop_columns lists \['size'\] that input_features also lists"):
        load_config({"input_features": [{"name": "size", "type": "number"}], "drop_columns": ["size", "x"]})


def test_the_cli_adds_each_drop_to_the_configs_and_refuses_the_target(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80), "c": rng.normal(size=80),
                          "y": rng.choice(["p", "q"], 80)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "c.yaml").write_text("drop_columns: [a]\n")
    run = subprocess.run([str(KEEL), "train", str(tmp_path / "t.csv"), "--target", "y", "--preset", "fast",
                          "--set", "training.epochs=1", "--no-report", "-o", str(tmp_path / "m"), "-c",
                          str(tmp_path / "c.yaml"), "--drop", "b"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert keel.load(tmp_path / "m").schema.feature_names == ["c"]
    run = subprocess.run([str(KEEL), "train", str(tmp_path / "t.csv"), "--target", "y", "--drop", "y", "-o",
                          str(tmp_path / "n")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "drop_columns lists the target 'y'" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "n").exists()


@pytest.mark.parametrize("key", ["weight_column", "split_by", "order_by"])
def test_a_column_a_training_key_uses_cannot_be_dropped(key: str) -> None:
    # It is no feature already: dropping it would not stop it weighting, grouping or ordering the rows.
    with pytest.raises(ConfigError, match=f"drop_columns lists 'w', the training.{key} column"):
        load_config({f"training.{key}": "w", "drop_columns": ["w"]})


def test_tune_refuses_a_misspelt_drop_before_any_trial(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from keel.search import tune

    frame = make_classification_frame()
    with pytest.raises(DataError, match=r"drop_columns column 'colour' is not in the data.*Did you mean 'color'\?") as caught:
        tune(frame, target="label", config={**FAST, "drop_columns": ["colour"]}, trials=2, output=tmp_path / "m")
    assert "trial" not in str(caught.value)  # once every trial had failed on it, the error said "no trial finished"
    assert not (tmp_path / "m").exists()
