"""The whole-table preprocessing: class labels as the data spells them, unseen values reported by kind."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from keel.config import PreprocessingConfig
from keel.data.io import read_table
from keel.data.preprocess import Preprocessor, TargetEncoder, describe_unseen
from keel.data.schema import Feature, Schema


def test_an_integer_target_with_a_blank_cell_keeps_int_classes(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x,y\n1,0\n2,1\n3,\n4,1\n5,0\n")
    target = read_table(path)["y"]
    assert target.dtype == np.float64  # what pandas makes of the blank cell
    encoder = TargetEncoder("y", "binary").fit(target)
    assert encoder.labels == [0, 1] and all(type(label) is int for label in encoder.labels)
    assert [f"proba_{label}" for label in encoder.labels] == ["proba_0", "proba_1"]  # as Model names them
    labelled = target.dropna()
    codes = encoder.encode(labelled)
    assert codes.tolist() == [0, 1, 1, 0]
    decoded = encoder.decode(codes)
    assert decoded.tolist() == [0, 1, 1, 0] and all(type(value) is int for value in decoded.tolist())
    restored = TargetEncoder.from_state(json.loads(json.dumps(encoder.state())))
    assert restored.labels == [0, 1] and json.dumps(encoder.state()["labels"]) == "[0, 1]"
    assert restored.encode(labelled).tolist() == codes.tolist()
    assert restored.decode(codes).tolist() == decoded.tolist()
    assert restored.encode(pd.Series([1, 0])).tolist() == [1, 0]  # ints at prediction time find their class


@pytest.mark.parametrize("values, labels", [
    ([2.0, 0.0, 1.0, None], [0, 1, 2]),
    ([0.5, 1.0, 0.5], [0.5, 1.0]),  # not all integral: floats they are
    (pd.Series([1.0, 3.0, None], dtype=object), [1, 3]),
    (["b", "a"], ["a", "b"]),
])
def test_whole_number_float_labels_become_ints_and_others_keep_their_type(values, labels) -> None:
    encoder = TargetEncoder("y", "multiclass").fit(pd.Series(values))
    assert encoder.labels == labels and [type(label) for label in encoder.labels] == [type(label) for label in labels]


def test_unseen_values_are_reported_by_what_happened_to_them() -> None:
    schema = Schema("y", "binary", [Feature("smoker", "binary"), Feature("city", "category"), Feature("age", "number")])
    train = pd.DataFrame({"smoker": ["no", "yes", "yes", "no"], "city": ["oslo"] * 4, "age": [1.0, 2.0, 3.0, 4.0]})
    preprocessor = Preprocessor(schema, PreprocessingConfig(rare_category_min_count=1)).fit(train)
    new = pd.DataFrame({"smoker": ["maybe", "no", "unsure"], "city": ["rome", "oslo", "oslo"], "age": [99.0, 1.0, 2.0]})
    features = preprocessor.transform(new)
    assert features.unseen == {"smoker": 2, "city": 1}
    assert features.unseen_kinds == {"smoker": "binary", "city": "category"}
    np.testing.assert_allclose(features.numeric[:, 0], [0.5, 0.0, 0.5])  # unseen binary values: the share of "yes"
    messages = {column: describe_unseen(features.unseen_kinds[column], column, count)
                for column, count in features.unseen.items()}
    assert messages["smoker"] == ("column 'smoker': 2 value(s) that are neither of its two training values were "
                                  "filled like missing values, with the training share of the second value.")
    assert "unknown-category" not in messages["smoker"]
    assert messages["city"] == ("column 'city': 1 value(s) not seen in training (or rare there) were mapped to the "
                                "unknown-category bucket.")
    with pytest.raises(ValueError, match="transform kind 'number' has no unseen values"):
        describe_unseen("number", "age", 1)


def test_unseen_values_are_named_by_up_to_three_examples_on_one_line() -> None:
    """A note that 12 rows hold unseen values gave the user nothing to look for: it names up to three of them, as
    written, quoted (a newline stays on the line) and cut when long."""
    schema = Schema("y", "binary", [Feature("smoker", "binary"), Feature("city", "category")])
    train = pd.DataFrame({"smoker": ["no", "yes", "yes", "no"], "city": ["oslo"] * 4})
    preprocessor = Preprocessor(schema, PreprocessingConfig(rare_category_min_count=1)).fit(train)
    long = "a pasted paragraph\nthat runs on well past forty characters"
    new = pd.DataFrame({"smoker": ["maybe", "no", "maybe", None, "unsure"],
                        "city": ["Lyon", "oslo", "Nice", "Lyon", long]})
    features = preprocessor.transform(new)
    assert features.unseen == {"smoker": 3, "city": 4}
    assert features.unseen_examples == {"smoker": ("maybe", "unsure"), "city": ("Lyon", "Nice", long)}
    message = describe_unseen("category", "city", 4, features.unseen_examples["city"])
    assert message == ("column 'city': 4 value(s) not seen in training (or rare there), e.g. 'Lyon', 'Nice', "
                       "'a pasted paragraph\\nthat runs on well pa…', were mapped to the unknown-category bucket.")
    assert "\n" not in message
    assert describe_unseen("binary", "smoker", 3, features.unseen_examples["smoker"]).startswith(
        "column 'smoker': 3 value(s) that are neither of its two training values, e.g. 'maybe', 'unsure', were filled")
    # Only the first unknown rows are looked at for the examples, however many there are.
    from keel.data.transforms import Unseen

    many = np.array(["same"] * 100_000 + ["late"], dtype=object)
    assert Unseen.of(many, np.ones(len(many), dtype=bool)) == Unseen(100_001, ("same", "late"))
    assert Unseen.of(many, np.zeros(len(many), dtype=bool)) == Unseen()
