"""Audit (s14b) of the category / binary spelling lookups (keel.data.spelling.lookup_spellings, binary_spellings,
transforms._by_number, the ONNX LabelEncoder and keel serve's unseen counts).

Each test was a strict xfail documenting a silent wrong code, a keel-versus-graph difference or a wrong count that
the code at 91ea706 had; all pass since the fix (number spellings only where they name the very number, keel's own
fallback dropped so that keel and the graph agree, booleans in category columns, spaces around numbers, ASCII
digits, keel serve counting the graph's keys). The audit's timing test (unseen values cost a Python pass per row:
1M rows 5.8x slower) was dropped with the fallback it measured: tests check correctness, not wall-clock time.
Fast and self-contained: no training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.config import PreprocessingConfig
from keel.data.spelling import lookup_spellings, number_spelling
from keel.data.transforms import UNKNOWN_INDEX, BinaryTransform, CategoryTransform


def _category(vocabulary: list[str]) -> CategoryTransform:
    transform = CategoryTransform("c", PreprocessingConfig())
    transform.vocabulary = list(vocabulary)
    return transform


# ---- 1. distinct numbers that share a float64 take each other's codes ------------------------------------------
# number_spelling goes through float(): digits beyond float64's precision are dropped, so a learnt id
# 1234567890123456789 gets the alias "1.2345678901234568e+18", and keel's _by_number spells every unseen id of the
# same float (...788, ...800: any of the 256 around it) so, and gives it the learnt id's code, counted as seen.
# Around 2**53 the alias is a plain integer string ("9007199254740992" for a learnt "9007199254740993"), so the
# exported LabelEncoder holds it too and the graph, keel.runtime, keel serve and TFLite all give the wrong code.
@pytest.mark.parametrize(("learnt", "incoming"), [
    ("1234567890123456789", 1234567890123456788),        # 19-digit ids: keel only (_by_number)
    ("1234567890123456789", "1234567890123456800"),      # the same id written in a CSV
    ("12345678901234567", np.int64(12345678901234568)),  # 17 digits, from Parquet / a DataFrame
    ("9007199254740993", 9007199254740992),              # 2**53 + 1 beside 2**53: the graph's alias too
    ("1e-400", 0),                                       # underflows to 0.0: the alias "0"
])
def test_an_unseen_number_does_not_take_the_code_of_a_learnt_number_it_only_rounds_to(learnt: str,
                                                                                     incoming: object) -> None:
    codes, unseen = _category([learnt, "other"]).transform(pd.Series([incoming], dtype=object))
    assert codes.tolist() == [UNKNOWN_INDEX] and unseen == 1


def test_the_exported_lookup_holds_no_alias_that_is_another_integer() -> None:
    # "9007199254740992" is an integer id of its own, not a spelling of 9007199254740993.
    assert "9007199254740992" not in lookup_spellings(["9007199254740993"])


# ---- 2. keel serve counts values matched by alias as unseen ------------------------------------------------------
def _payload(features: list[tuple[str, str, tuple[str, ...]]]):  # type: ignore[no-untyped-def]
    from keel.serve.payload import Payload
    from keel.serve.spec import FeatureSpec, ModelSpec

    spec = ModelSpec(name="m", task="regression", target="y", classes=[],
                     features=[FeatureSpec(name, kind, values) for name, kind, values in features], outputs=["value"])
    return Payload(spec, 100)


def test_keel_serve_does_not_count_a_category_value_matched_by_its_number_as_unseen() -> None:
    """A CSV's 3.0 / 4.0 (pandas writes an int column with a blank so) learnt as written; JSON sends 3. The graph
    gives 3 the code of '3.0' (lookup_spellings), keel.predict counts nothing, but the answer says unseen 2."""
    payload = _payload([("store", "category", ("3.0", "4.0"))])
    batch = payload.parse([{"store": 3}, {"store": 4.0}, {"store": "3.0"}])
    assert batch.unseen == {}
    assert _category(["3.0", "4.0"]).transform(pd.Series([3, 4.0, "3.0"], dtype=object))[1] == 0  # keel agrees


def test_keel_serve_does_not_count_another_boolean_spelling_of_a_binary_value_as_unseen() -> None:
    """A binary column learnt as TRUE / FALSE; JSON's true and "true" are matched by the graph (binary_spellings)
    and by keel (0 unseen), but keel serve's answer reports them as unseen."""
    payload = _payload([("flag", "binary", ("FALSE", "TRUE"))])
    batch = payload.parse([{"flag": True}, {"flag": "true"}, {"flag": False}])
    assert batch.unseen == {}
    transform = BinaryTransform("flag")
    transform.values, transform.fill = ["FALSE", "TRUE"], 0.5
    assert transform.transform(pd.Series([True, "true", False], dtype=object))[1] == 0  # keel agrees


# ---- 3. keel and the exported graph disagree on a written number ------------------------------------------------
def _graph_codes(transform: CategoryTransform, values: list[str]) -> list[int]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from keel.export.onnx import _label_encoder

    node = _label_encoder(transform, "c", "code")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.STRING, [None])],
                              [helper.make_tensor_value_info("code", TensorProto.INT64, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)],
                              ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"c": np.array(values, dtype=object)})[0].tolist()


def test_the_exported_lookup_codes_a_written_number_as_keel_does() -> None:
    """A model learnt 3 / 4 from numbers (a DataFrame, Parquet); a CSV to predict writes 3.0 (an int column with a
    blank) or 03, read as written. keel gives them 3's code; the graph (keel.runtime fed model.read_rows, keel serve
    given the text, export --data's parity) gives the unknown bucket. The synthetic parity rows hold only learnt
    values as spelled, UNSEEN and missing, so keel export's own check cannot see it."""
    transform = _category(["3", "4"])
    values = ["3.0", "03", "4e0", "3"]
    keel_codes = transform.transform(pd.Series(values, dtype=object))[0].tolist()
    # Fixed by dropping keel's own fallback: both take 3.0 (the spelling pandas writes for an integer column with a
    # blank: an alias key the graph holds too) and leave 03 and 4e0 to the unknown bucket, alike.
    assert keel_codes == [2, 0, 0, 2]
    assert _graph_codes(transform, values) == keel_codes


# ---- 4. the as-written rule: booleans and padded numbers in a category column -----------------------------------
def test_a_declared_category_of_csv_booleans_matches_python_and_json_booleans(tmp_path: Path) -> None:
    """A declared category of TRUE / FALSE cells is learnt as written ('TRUE'); Python's and JSON's true is spelled
    'True' and now lands in the unknown bucket (keel, graph and runtime alike). Before b7717e3 pandas read the CSV
    cells as booleans and the vocabulary was 'True' / 'False', which JSON matched. Binary columns got
    binary_spellings; category columns got nothing."""
    from keel.data.io import read_table

    (tmp_path / "t.csv").write_text("kind,y\nTRUE,1\nFALSE,2\nTRUE,3\n,4\n")
    learnt = CategoryTransform("kind", PreprocessingConfig(rare_category_min_count=1)).fit(
        read_table(str(tmp_path / "t.csv"), text=["kind"])["kind"])
    assert sorted(learnt.vocabulary) == ["FALSE", "TRUE"]
    _, unseen = learnt.transform(pd.Series([True, False, "true"], dtype=object))
    assert unseen == 0


def test_a_csvs_padded_number_matches_the_same_number(tmp_path: Path) -> None:
    """'y, code' files (a space after the delimiter): pandas parsed ' 3' as 3 before b7717e3; as written it is
    ' 3', and the number 3 from JSON / Parquet / a DataFrame is unseen, as is a CSV's ' 3' for a model that learnt
    3 from numbers. keel's own to_numeric reads ' 3.5 ' as 3.5."""
    from keel.data.io import read_table

    (tmp_path / "t.csv").write_text("y,code\n1, 3\n2, 4\n3, 3\n")
    learnt = CategoryTransform("code", PreprocessingConfig(rare_category_min_count=1)).fit(
        read_table(str(tmp_path / "t.csv"), text=["code"])["code"])
    assert sorted(learnt.vocabulary) == [" 3", " 4"]  # pandas would have read 3 and 4
    assert learnt.transform(pd.Series([3, 4], dtype=object))[1] == 0
    # The other way (a model learnt 3 from numbers, a CSV to predict writes " 3") the value is unseen and counted,
    # in keel and the graph alike (the graph cannot strip strings; keel no longer matches what the graph does not).
    assert _category(["3", "4"]).transform(pd.Series([" 3", "4 "], dtype=object))[1] == 2


# ---- 5. number_spelling reads non-ASCII digits as numbers ----------------------------------------------------------
def test_non_ascii_digits_are_no_number_spelling() -> None:
    """keel.runtime's number rule (and to_numeric) refuses non-ASCII digits; number_spelling's ``\\d`` takes them,
    so a learnt fullwidth '３' gets the alias '3' (in the graph too) and keel gives an incoming '３' the code of a
    learnt 3, which the graph does not."""
    assert number_spelling("３") is None and number_spelling("٣") is None
    assert lookup_spellings(["３"]) == {"３": 0}
