"""TFLite export for real: conversion in the TFLite environment, parity, the README's lookup, the errors.

The conversion needs the environment `make tflite-env` builds (`make test` builds it first). Without
it these tests fail, saying what to run: a TFLite export nobody checked must not pass as tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ExportError, KeelWarning
from keel.export.parity import TOLERANCE
from keel.export.tflite import ENVIRONMENT_VARIABLE, tflite_inputs, tflite_python, to_tflite
from tests.conftest import FAST, PENGUINS, make_classification_frame

# README's TFLite section shows exactly these lines (in a ```py fence, which test_readme's python
# runner skips: they need ai-edge-litert, which only the TFLite environment has); this file runs them.
README_LOOKUP = '''\
import json, math
import numpy as np
from ai_edge_litert.interpreter import Interpreter

spec = json.load(open("runs/penguins/model.tflite.json"))
runner = Interpreter(model_path="runs/penguins/model.tflite").get_signature_runner()

def spelled(value):
    """A category value as keel spells it (keel.data.spelling): "" when missing, True / False, whole numbers
    without .0 (up to 2**53), other floats by their shortest digits (float32 0.1 is "0.1", 1e20 is "1e+20")."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (float, np.floating)):
        number = float(str(value))  # a float32's shortest digits, as the float64 they denote
        if math.isnan(number):
            return ""
        return str(int(number)) if number.is_integer() and abs(number) <= 2**53 else repr(number)
    return str(value)

def encode(row):
    """One row (column -> value, None or "" when missing) as the graph's inputs."""
    inputs = {}
    for group in spec["inputs"]:
        name, values = group["name"], [row.get(column) for column in group["columns"]]
        if name == "numbers":  # minus the column's offset, in float64, before the float32 cast
            encoded = [math.nan if v is None else v - offset for v, offset in zip(values, group["offsets"])]
        elif name == "binaries":  # 0 / 1 for the column's two values, NaN when missing or anything else
            encoded = [spec["binaries"][c].index(spelled(v)) if spelled(v) in spec["binaries"][c] else math.nan
                       for c, v in zip(group["columns"], values)]
        else:  # codes: the vocabulary position + 2, 1 when missing (None or ""), 0 when unseen
            encoded = [spec["codes"][c].index(spelled(v)) + 2 if spelled(v) in spec["codes"][c]
                       else (1 if spelled(v) == "" else 0) for c, v in zip(group["columns"], values)]
        inputs[name] = np.array([encoded], dtype=group["dtype"])
    return inputs

def predict(row):
    """Probabilities in spec["classes"] order, or the value in target units."""
    output = runner(**encode(row))[spec["output"]["name"]][0]
    if spec["task"] == "regression":  # the graph's value is standardized: to target units, in float64
        return float(output) * spec["target_std"] + spec["target_mean"]
    return output

row = {"island": "Biscoe", "bill_length_mm": 50.2, "bill_depth_mm": 18.7, "flipper_length_mm": None,
       "body_mass_g": 3800.0, "sex": "female", "year": 2008}
print(predict(row))
'''

# Runs README_LOOKUP in the TFLite environment, then every row of ROWS.json through its encode() and predict().
_RUN_ROWS = '''\
import json, sys
exec(compile(open(sys.argv[1]).read(), "README TFLite lookup", "exec"))
rows = json.load(open(sys.argv[2]))
encoded = [encode(row) for row in rows]
inputs = {name: np.concatenate([one[name] for one in encoded]).tolist() for name in (encoded[0] if rows else {})}
outputs = [np.asarray(predict(row), dtype=np.float64).tolist() for row in rows]
json.dump({"inputs": inputs, "outputs": outputs}, open(sys.argv[3], "w"))
'''


@pytest.fixture(scope="module")
def python() -> Path:
    try:
        return tflite_python()
    except ExportError as error:
        pytest.fail(f"{error}. `make test` builds it first; by hand: make tflite-env")


def _penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS)


def _large_offset_frame(n_rows: int = 200) -> pd.DataFrame:
    """A target of about 1e9 plus a few units of spread (std 2.7): float32's spacing there is 64, so
    a graph giving values in target units predicts 1e9 for every row, 2.85 standard deviations off."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, n_rows)
    frame = pd.DataFrame({"x": x, "z": rng.normal(0, 1, n_rows), "c": rng.choice(["a", "b", "c"], n_rows)})
    return frame.assign(y=1e9 + 3 * x + rng.normal(0, 0.1, n_rows))


def _typed_frame(n_rows: int = 200) -> pd.DataFrame:
    """A bool column and whole-number category codes, which a Python caller passes as True / 3, not as text:
    README's encode() once took them as missing (a bool) and unseen (a code)."""
    rng = np.random.default_rng(3)
    flag, code, x = rng.random(n_rows) < 0.5, rng.choice([3, 7, 11], n_rows), rng.normal(size=n_rows)
    return pd.DataFrame({"flag": flag, "code": code, "x": x,
                         "y": np.where(x + 1.5 * flag + (code == 7) > 0.7, "yes", "no")})


CASES = {
    # name: (frame, target, config): each task, both fast and balanced (quantile scaling, piecewise
    # linear number embeddings, an ensemble of 8) preprocessing and networks.
    "binary-balanced": (_penguins, "sex", {**FAST, "preset": "balanced"}),
    "multiclass-fast": (make_classification_frame, "label", FAST),
    "regression-balanced": (_penguins, "body_mass_g", {**FAST, "preset": "balanced"}),
    "regression-large-offset": (_large_offset_frame, "y", FAST),
    "typed-values-fast": (_typed_frame, "y", {**FAST, "input_features": [
        {"name": "flag", "type": "binary"}, {"name": "code", "type": "category"}, {"name": "x", "type": "number"}]}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_export_predicts_what_keel_predicts(case: str, python: Path, tmp_path: Path) -> None:
    make_frame, target, config = CASES[case]
    frame = make_frame()
    model = keel.fit(frame, target=target, config=config, quiet=True)
    model.save(tmp_path / "model")
    features = frame.drop(columns=[target])
    rows = features if case == "multiclass-fast" else None  # the user's rows once, synthetic ones otherwise
    export = to_tflite(model, rows)

    assert model.path == tmp_path / "model"  # converting saved a copy elsewhere, not this model
    assert set(export.files) == {"model.tflite", "model.tflite.json"}
    assert export.files["model.tflite"][4:8] == b"TFL3"  # the flatbuffer's file identifier
    assert export.parity["max_difference"] <= TOLERANCE and export.parity["label_mismatches"] == 0
    assert export.parity["source"] == ("data" if rows is not None else "synthetic")
    assert export.parity["rows"] == (len(frame) if rows is not None else 256)

    spec = json.loads(export.files["model.tflite.json"])
    assert spec["task"] == model.task and spec["classes"] == (None if model.task == "regression" else model.classes)
    regression = model.task == "regression"
    assert spec["output"]["name"] == ("standardized_value" if regression else "probabilities")
    assert (spec["target_mean"], spec["target_std"]) == (
        (model.target_encoder.mean, model.target_encoder.std) if regression else (None, None))
    assert sorted(c for group in spec["inputs"] for c in group["columns"]) == sorted(model.feature_names)
    dtypes = {group["name"]: group["dtype"] for group in spec["inputs"]}
    assert dtypes.get("codes", "int32") == "int32" and dtypes.get("numbers", "float32") == "float32"
    assert all(group["shape"][0] == 1 for group in spec["inputs"])  # one row per invoke (see the worker)

    _check_with_readme_lookup(python, model, export.files, features, tmp_path)


def _check_with_readme_lookup(python: Path, model: keel.Model, files: dict[str, bytes], features: pd.DataFrame,
                              tmp_path: Path) -> None:
    """The test's own parity check: README's lookup and the interpreter against keel, on real rows.

    README's encode() must give the graph what keel's own lookup (tflite_inputs) gives it, row by
    row: a missing value is None, or "" in a text column, as keel reads a blank cell.
    """
    rows = features.head(120).copy()
    for column in rows.columns:  # a few values no training row had, and some missing ones
        if pd.api.types.is_bool_dtype(rows[column]):  # True / False stay Python bools, beside None
            rows[column] = rows[column].astype(object)
        elif not pd.api.types.is_numeric_dtype(rows[column]):  # text: pandas 3 reads it as str, not object
            rows.loc[rows.index[:3], column] = "never seen in training"
            rows.loc[rows.index[6:9], column] = ""
        rows.loc[rows.index[3:6], column] = None
    directory = tmp_path / "run" / "runs" / "penguins"
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (tmp_path / "lookup.py").write_text(README_LOOKUP)
    (tmp_path / "run_rows.py").write_text(_RUN_ROWS)
    records = [{column: (None if pd.isna(value) else value) for column, value in row.items()}
               for row in rows.astype(object).to_dict("records")]
    (tmp_path / "rows.json").write_text(json.dumps(records))
    completed = subprocess.run([str(python), str(tmp_path / "run_rows.py"), str(tmp_path / "lookup.py"),
                                str(tmp_path / "rows.json"), str(tmp_path / "outputs.json")],
                               cwd=tmp_path / "run", capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "outputs.json").read_text())
    spec = json.loads(files["model.tflite.json"])
    own_inputs = tflite_inputs(spec, rows)
    dtypes = {group["name"]: group["dtype"] for group in spec["inputs"]}
    assert set(result["inputs"]) == set(own_inputs)
    for name, encoded in result["inputs"].items():
        np.testing.assert_array_equal(np.array(encoded, dtype=dtypes[name]), own_inputs[name].astype(dtypes[name]),
                                      err_msg=f"README's encode() and keel disagree on the {name} input")
    exported = np.array(result["outputs"], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)  # the unseen values are the point
        if model.task == "regression":  # in standard deviations of the target, as the export's parity
            own = model.predict(rows)
            assert np.max(np.abs(exported - own)) / model.target_encoder.std <= TOLERANCE
            return
        own = model.predict_proba(rows)
    assert exported.shape == own.shape
    assert np.max(np.abs(exported - own)) <= TOLERANCE
    ordered = np.sort(own, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] >= TOLERANCE
    assert (exported.argmax(1) == own.argmax(1))[clear].all()


def test_float32_numbers_are_as_precise_as_keels_features() -> None:
    """The graph's number preprocessing in float32 (offsets, one quantile segment) against keel's own.

    Raw float32 inputs put the scaled features up to 2e-4 off keel's; offsets alone, with
    InferenceModule's sum of segments, 9e-6 on these rows (probabilities then moved by 1.1e-5);
    offsets and one segment per value stay within float32's resolution of the inputs (~1e-6).
    Runs in keel's environment: the worker's module needs torch only.
    """
    import torch

    from keel.export.module import InferenceModule, lookup_tables
    from keel.export.parity import synthetic_rows
    from keel.export.tflite import input_layout, number_offsets, shift_numbers, tflite_inputs

    model = keel.fit(_penguins(), target="species", quiet=True,
                     config={**FAST, "preset": "balanced", "training.epochs": 1, "training.seed": 1})
    rows = synthetic_rows(model, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)
        expected = model.preprocessor.transform(rows).numeric  # (n_rows, numeric_width) float32
    inputs = tflite_inputs({"inputs": input_layout(model), **lookup_tables(model)}, rows)
    module = InferenceModule(shift_numbers(model, number_offsets(model)), number_dtype=torch.float32)
    with torch.no_grad():  # the module's own steps up to the network: numbers, binaries, network order
        parts = module._numbers(torch.from_numpy(inputs["numbers"]))
        binaries = torch.from_numpy(inputs["binaries"])
        parts.append(torch.where(torch.isnan(binaries), module.binary_fill, binaries))
        numeric = torch.cat(parts, dim=1)[:, module.order].numpy()
    assert np.max(np.abs(numeric - expected)) <= 3e-6


def test_readme_shows_the_tested_lookup() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"```py\n{README_LOOKUP}```" in readme, "README's TFLite lookup must be README_LOOKUP, verbatim"


def test_missing_environment_says_how_to_make_it(trained_classifier, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = trained_classifier
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(ExportError, match=r"make tflite-env.*KEEL_TFLITE_PYTHON.*nowhere"):
        to_tflite(model)


def test_environment_without_litert_quotes_the_converters_error(trained_classifier,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = trained_classifier
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, sys.executable)  # keel's own environment: no litert-torch
    with pytest.raises(ExportError, match=r"No module named 'litert_torch'.*make tflite-env"):
        to_tflite(model)


def test_model_export_tflite_attaches_the_graph_and_its_lookups(tmp_path: Path) -> None:
    model = keel.fit(make_classification_frame(), target="label", config=FAST, quiet=True)
    model.save(tmp_path / "m")
    report = model.export("tflite")
    assert report.format == "tflite" and report.parity["ok"]
    assert report.files == [tmp_path / "m" / "model.tflite", tmp_path / "m" / "model.tflite.json"]
    assert {"model.tflite", "model.tflite.json", "reports/model.tflite.json"} <= set(keel.load(tmp_path / "m").summary()["files"])
    report = model.export("tflite", output=tmp_path / "out" / "labels.tflite")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.tflite", "labels.tflite.json"]
    assert json.loads((tmp_path / "out" / "labels.tflite.json").read_text())["classes"] == model.classes


def test_readme_spelled_is_keels_own_spelling() -> None:
    # The README's client spelled np.float32(2.0) as "2.0" and 1e20 as "100000000000000000000" (the audit's).
    import math

    from keel.data.spelling import canonical_category

    namespace = {"math": math, "np": np}
    exec("def spelled" + README_LOOKUP.split("def spelled", 1)[1].split("\ndef encode", 1)[0], namespace)
    values = [None, "", True, False, np.bool_(True), 3, np.int64(-12), 3.0, np.float32(2.0), np.float32(0.1), 0.1,
              1e20, float("nan"), float("inf"), 2.0**53, 2.0**53 + 2, "abc", "3.0", np.float64(1e-4)]
    for value in values:
        assert namespace["spelled"](value) == (canonical_category(value) or ""), value
