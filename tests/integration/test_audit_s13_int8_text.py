"""Audit s13: a dynamic int8 file with text columns answers a row the same alone and in a batch (keel.runtime),
the export's measured int8 parity / metric is what keel.runtime gives, and a Hugging Face cache layout of links
still trains, predicts and embeds."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest

import keel
from keel.export.measure import run_as_keel
from keel.export.parity import onnx_feeds
from keel.runtime import Predictor
from tests.tiny_bert import write_tiny_bert

_WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "red", "blue", "good", "bad"]


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(_WORDS, rng.integers(1, 9))) for _ in range(n)]
    x = rng.normal(size=n)
    y = ((np.array(["good" in t for t in texts]) ^ (x > 0.5))).astype(int)
    return pd.DataFrame({"review": texts, "x": x, "y": y})


def _odd_rows() -> pd.DataFrame:
    rows = _frame(12, seed=7).drop(columns="y")
    rows.loc[0, "review"] = ""                      # empty: [len(vocabulary)] / flag 1
    rows.loc[1, "review"] = "   "                   # blank
    rows.loc[2, "review"] = None                    # missing
    rows.loc[3, "review"] = "zzz qqq unknownword"   # no known term: a row of -1 only
    rows.loc[4, "review"] = "the cat " * 40         # the longest row: everyone else is padded
    rows.loc[5, "review"] = "dog"                   # one term
    rows.loc[6, "x"] = 1e4                          # an outlier beside them
    return rows


def _alone(predictor: Predictor, rows: pd.DataFrame) -> np.ndarray:
    return np.concatenate([predictor.predict_proba(rows.iloc[[index]].reset_index(drop=True))
                           for index in range(len(rows))])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[keel.Model, Path]]:
    root = tmp_path_factory.mktemp("audit13")
    bert = write_tiny_bert(root / "bert")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, extra in [("tfidf", {}), ("bag", {"text.encoder": "bag"}),
                            ("pretrained", {"text.encoder": "pretrained", "text.model_path": str(bert),
                                            "text.cache_dir": str(root / "cache"), "text.dim": 4})]:
            model = keel.fit(_frame(200), target="y", quiet=True, importance=False, output=root / name, config={
                "preset": "fast", "training.epochs": 1, "model.hidden": [8],
                "input_features": [{"name": "review", "type": "text"}, {"name": "x"}], **extra})
            out[name] = (model, root / name)
    return out


@pytest.mark.parametrize("name", ["tfidf", "bag", "pretrained"])
def test_dynamic_int8_answers_a_row_alike_alone_and_in_a_batch_and_the_reported_parity_is_the_runtimes(
        models, name) -> None:
    model, directory = models[name]
    rows = _odd_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = model.export(quantize="int8", data=rows.assign(y=0))
    predictor = Predictor.load(directory, file="model.int8.onnx")
    batch = predictor.predict_proba(rows)
    alone = _alone(predictor, rows)
    assert np.array_equal(batch, alone), np.abs(batch - alone).max()
    # The export's row-by-row run (_trimmed on the batch's padded feeds) is what keel.runtime computes.
    session = onnxruntime.InferenceSession(str(directory / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    measured = run_as_keel(lambda feeds: session.run(None, feeds), onnx_feeds(model, rows), by_row=True)[1]
    np.testing.assert_array_equal(measured.astype(np.float64), batch)
    own = model.predict_proba(rows)
    assert report.quantized_parity["max_difference"] == pytest.approx(float(np.abs(own - batch).max()), abs=1e-6)


@pytest.mark.parametrize("name", ["tfidf", "pretrained"])
def test_static_int8_is_still_run_in_batches_and_answers_rows_alike(models, name) -> None:
    model, directory = models[name]
    rows = _odd_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(quantize="int8", static=True, data=_frame(40, seed=3))
    predictor = Predictor.load(directory, file="model.int8.onnx")
    assert not predictor._row_by_row  # noqa: SLF001
    np.testing.assert_allclose(predictor.predict_proba(rows), _alone(predictor, rows), atol=1e-6)


def _hf_cache_layout(source: Path, root: Path) -> Path:
    """``source``'s files as the Hugging Face cache keeps them: a snapshot folder of links into ../../blobs."""
    blobs, snapshot = root / "blobs", root / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    for path in sorted(source.rglob("*")):
        if path.is_file():
            blob = blobs / f"blob{len(list(blobs.iterdir()))}"
            shutil.copy(path, blob)
            link = snapshot / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_a_sentence_transformers_directory_of_links_trains_predicts_and_embeds(tmp_path) -> None:
    bert = write_tiny_bert(tmp_path / "bert")
    (bert / "1_Pooling").mkdir()
    (bert / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    snapshot = _hf_cache_layout(bert, tmp_path / "hf")
    assert (snapshot / "config.json").is_symlink()
    frame = _frame(80)
    config = {"preset": "fast", "training.epochs": 1, "model.hidden": [8], "text.encoder": "pretrained",
              "text.model_path": str(snapshot), "text.cache_dir": str(tmp_path / "cache"), "text.dim": 4,
              "input_features": [{"name": "review", "type": "text"}, {"name": "x"}]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keel.fit(frame, target="y", quiet=True, importance=False, output=tmp_path / "m", config=config)
        expected = model.predict_proba(frame)
        assert model.embed_encoders() == ["review"]
        embedded = keel.load(tmp_path / "m")
        assert not any(path.is_symlink() for path in (tmp_path / "m" / "encoders").rglob("*"))
        shutil.rmtree(tmp_path / "hf")
        np.testing.assert_allclose(embedded.predict_proba(frame), expected, atol=1e-6)
        # The embedding cache still hits on a second fit with the same texts.
        again = keel.fit(frame, target="y", quiet=True, importance=False, config={**config, "text.model_path": str(
            tmp_path / "m" / "encoders" / "0")})
    assert any("read from the cache" in note for note in again.notes), again.notes


def test_the_server_answers_a_dynamic_int8_row_alike_alone_and_in_a_batch(models) -> None:
    # create_app also takes a predictor made in Python.
    from keel.serve import ServeSettings, create_app
    from tests.integration.test_dates_export import call

    model, directory = models["tfidf"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(quantize="int8")
    predictor = Predictor.load(directory, file="model.int8.onnx")
    app = create_app(ServeSettings(str(directory)), predictor=predictor)
    rows = _odd_rows().astype(object).where(_odd_rows().notna(), None)
    records = rows.to_dict(orient="records")
    batch = call(app, "POST", "/predict", json=records).json()["probabilities"]
    columns = call(app, "POST", "/predict", json={"columns": {name: list(values) for name, values in rows.items()}}).json()
    assert columns["probabilities"] == batch, columns
    for index, record in enumerate(records):
        assert call(app, "POST", "/predict", json=[record]).json()["probabilities"][0] == batch[index]
    v2 = call(app, "POST", f"/v2/models/{directory.name}/infer", json={"inputs": [
        {"name": "review", "shape": [len(rows)], "datatype": "BYTES", "data": list(rows["review"])},
        {"name": "x", "shape": [len(rows)], "datatype": "FP64", "data": list(rows["x"])}]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][1]["data"] == pytest.approx(np.ravel(batch).tolist(), abs=1e-7)


def test_keel_serve_serves_the_int8_file_with_file_and_answers_its_rows_as_the_predictor_does(models, tmp_path) -> None:
    # The audit found keel serve could serve only model.onnx (the README said it ran the int8 file a row at a time):
    # --file names the export, in keel serve, python -m keel.serve and the settings worker processes read.
    from keel.errors import ArtifactError, ConfigError
    from keel.serve import ServeSettings, create_app
    from keel.serve.__main__ import check_export, parse_arguments
    from tests.integration.test_dates_export import call

    model, directory = models["tfidf"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(quantize="int8")
    settings = parse_arguments([str(directory), "--file", "model.int8.onnx"])
    assert settings.file == "model.int8.onnx"
    assert ServeSettings(**{**settings.__dict__}).to_environment() == settings.to_environment()
    check_export(directory, settings.file)
    app = create_app(settings)  # loads the int8 file itself
    rows = _odd_rows().astype(object).where(_odd_rows().notna(), None)
    served = call(app, "POST", "/predict", json=rows.to_dict(orient="records")).json()["probabilities"]
    int8 = Predictor.load(directory, file="model.int8.onnx").predict_proba(_odd_rows())
    assert np.array_equal(np.array(served), int8)
    assert not np.array_equal(int8, Predictor.load(directory).predict_proba(_odd_rows()))  # not the float file
    with pytest.raises(ConfigError, match="--file must name an ONNX export"):
        ServeSettings(str(directory), file="../model.onnx")
    from typer.testing import CliRunner

    from keel.cli import app as cli

    refused = CliRunner().invoke(cli, ["serve", str(directory), "--file", "model.txt", "--port", "0"])
    assert refused.exit_code == 2 and "--file must name an ONNX export" in refused.output, refused.output
    bare = tmp_path / "bare"
    shutil.copytree(directory, bare)
    document = (bare / "keel.json").read_text()
    import json

    manifest = json.loads(document)
    manifest["files"].pop("model.int8.onnx")
    (bare / "keel.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"has no export named model.int8.onnx .*--quantize int8"):
        check_export(bare, "model.int8.onnx")


def test_the_reported_int8_metric_is_the_one_keel_runtime_gives(models) -> None:
    from sklearn.metrics import roc_auc_score

    model, directory = models["tfidf"]
    rows = _odd_rows().assign(y=np.arange(len(_odd_rows())) % 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = model.export(quantize="int8", data=rows)
    probabilities = Predictor.load(directory, file="model.int8.onnx").predict_proba(rows.drop(columns="y"))
    assert report.compression["compressed"]["metric"] == "roc_auc"
    assert report.compression["compressed"]["metric_value"] == pytest.approx(
        roc_auc_score(rows["y"], probabilities[:, 1]), abs=1e-9)


def test_trimmed_keeps_a_rows_own_length() -> None:
    from keel.export.measure import _trimmed
    from keel.runtime.inputs import padded

    for row in ([3, 1, 4], [], [7], [0, 5], [1, 101, 2023, 102]):  # term positions; a token row [flag, ids]
        batch = padded([np.array(row, dtype=np.int64), np.arange(9, dtype=np.int64)])
        np.testing.assert_array_equal(_trimmed(batch[:1]), padded([np.array(row, dtype=np.int64)]))
    floats = np.full((1, 4), -1.0, dtype=np.float32)
    assert _trimmed(floats) is floats
