"""`keel export` run for real: the file lands in the model directory; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pandas as pd
import pytest

from keel.model import load
from tests.conftest import PENGUINS
from tests.integration.test_cli import FAST_SET, keel


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("export") / "model"
    result = keel("train", str(PENGUINS), "--target", "species", "--output", str(output), "--quiet", *FAST_SET)
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture
def model_dir(trained, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained, copy)
    return copy


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_export_attaches_model_onnx_and_prints_the_parity_figure(model_dir) -> None:
    before = files(model_dir)
    result = keel("export", str(model_dir), "--data", str(PENGUINS))
    assert result.returncode == 0, result.stderr
    assert "parity with keel on 344 data rows" in result.stdout
    assert sorted(set(files(model_dir)) - set(before)) == ["model.onnx", "reports", "reports/model.onnx.json"]
    manifest = json.loads((model_dir / "keel.json").read_text())
    assert set(manifest["files"]) >= {"model.onnx", "reports/model.onnx.json"}
    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    frame = pd.read_csv(PENGUINS)
    feeds = {i.name: (frame[i.name].to_numpy(dtype="float64") if i.type == "tensor(double)"
                      else frame[i.name].fillna("").astype(str).to_numpy(dtype=object)) for i in session.get_inputs()}
    labels, probabilities = session.run(["label", "probabilities"], feeds)
    model = load(model_dir)
    assert labels.tolist() == model.predict(frame).tolist()
    assert abs(probabilities - model.predict_proba(frame)).max() <= 1e-5
    info = keel("info", str(model_dir), "--json")
    assert "model.onnx" in json.loads(info.stdout)["files"]


def test_json_report_and_output_file(model_dir, tmp_path) -> None:
    result = keel("export", str(model_dir), "--output", str(tmp_path / "penguins.onnx"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["parity"]["ok"] and report["parity"]["source"] == "synthetic"
    assert (tmp_path / "penguins.onnx").is_file() and "model.onnx" not in files(model_dir)


@pytest.mark.parametrize("args, says", [
    (["--format", "coreml"], "unknown export format 'coreml'"),
    (["--prune", "0"], "strictly between 0 and 1; got '0'"),
    (["--prune", "1.2"], "strictly between 0 and 1; got '1.2'"),
    (["--format", "tflite", "--quantize", "int8"], "needs --format onnx"),
    (["--quantize", "int8", "--static"], "--data"),
])
def test_bad_options_are_one_line_exit_2_nothing_written(model_dir, args, says) -> None:
    before = files(model_dir)
    result = keel("export", str(model_dir), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.stderr
    assert files(model_dir) == before


def test_data_missing_a_column_names_it(model_dir, tmp_path) -> None:
    rows = pd.read_csv(PENGUINS).drop(columns="island")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    before = files(model_dir)
    result = keel("export", str(model_dir), "--data", str(tmp_path / "rows.csv"))
    assert result.returncode == 2 and "'island'" in result.stderr and "Traceback" not in result.stderr
    assert files(model_dir) == before


def test_a_directory_without_weights_or_with_a_bad_checksum_is_refused(model_dir) -> None:
    (model_dir / "weights.safetensors").write_bytes((model_dir / "weights.safetensors").read_bytes()[:-1] + b"\x01")
    result = keel("export", str(model_dir))
    assert result.returncode == 2 and "weights.safetensors" in result.stderr and "model.onnx" not in files(model_dir)
    (model_dir / "weights.safetensors").unlink()
    result = keel("export", str(model_dir))
    assert result.returncode == 2 and "weights.safetensors" in result.stderr and len(result.stderr.strip().splitlines()) == 1
