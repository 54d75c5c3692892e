"""Audit (helper-46's issue-14 pass) of image columns, fine-tuned text columns and the export of pretrained text.

Two kinds of tests. Combinations no other test trains (an image, a fine-tuned text, a date, a category and a
number in one bagged model: keel, its float32 network, the ONNX file, keel.runtime and the server agree; a
checkpointed run of such a model resumes to the same model; keel.runtime without tokenizers says what to
install) pass. What the audit found wrong was fixed in the same session and its tests pass, but one known limit
(data.memory_budget does not weigh an image column's pixels) stays ``xfail(strict=True)``: a fix turns the mark
into an error that asks for its removal.

Tiny models throughout: a 2-layer BERT of width 16 (MiniLM's tokenizer), 8 x 8 images written or built here,
2-3 epochs, hidden [16].
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import keel
from keel.config import load_config
from keel.errors import ConfigError
from keel.nn.network import predict_outputs, to_probabilities
from keel.runtime import Predictor
from keel.serve.app import create_app
from keel.serve.settings import ServeSettings
from keel.train.streamed import streaming_plan
from tests.reliability.test_resume import _Interrupted, _StopAt
from tests.tiny_bert import write_tiny_bert
from tests.unit.serve.test_app import call

GOOD = ["great", "lovely", "superb", "excellent", "perfect"]
BAD = ["awful", "broken", "terrible", "late", "poor"]
TOLERANCE = 1e-5  # the exporter's own parity tolerance


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT in the sentence-transformers layout, with MiniLM's tokenizer (as
    tests/unit/data/conftest.py builds it)."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def mixed_frame(n_rows: int = 80, seed: int = 0) -> pd.DataFrame:
    """Every kind of column at once: free text whose words tell the label, 8 x 8 uint8 images brighter for one
    class, a number, a category and a date."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n_rows)
    texts = [" ".join(rng.choice(GOOD if y else BAD, 2)) + f" order {i} arrived" for i, y in enumerate(label)]
    images = [rng.integers(0, 120, (8, 8)).astype(np.uint8) + np.uint8(100 * y) for y in label]
    return pd.DataFrame({
        "review": texts, "pic": images, "x": rng.normal(size=n_rows) + label,
        "city": rng.choice(["oslo", "rome", "lima"], n_rows),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n_rows), unit="D"),
        "label": label})


def finetuned_config(model_dir: Path, settings: dict[str, Any] | None = None,
                     columns: tuple[str, ...] = ("review", "pic", "x", "city", "when")) -> dict[str, Any]:
    """Fast settings, the review column a LoRA-tuned text (declared: a small table may infer it a category)."""
    return {"preset": "fast", "training.epochs": 2, "model.hidden": [16], "image.dim": 8,
            "text.encoder": "pretrained", "text.model_path": str(model_dir), "text.finetune": "lora",
            "text.max_tokens": 16, "text.lr": 1e-2,
            "input_features": [{"name": name, "type": "text" if name == "review" else "auto"} for name in columns],
            **(settings or {})}


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def everything(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path]:
    """Two bagged networks, each with a LoRA-tuned BERT and a CNN beside a number, a category and a date; saved
    and exported (parity checked on the training rows)."""
    frame = mixed_frame()
    model = keel.fit(frame, target="label", quiet=True, config=finetuned_config(tiny_bert, {"training.bagging": 2}))
    directory = tmp_path_factory.mktemp("everything") / "model"
    model.save(directory)
    report = model.export(data=frame)
    assert report.parity["ok"] and report.parity["max_difference"] <= TOLERANCE
    return model, directory


# ---- combinations no other test trains (these pass) -------------------------------------------------
def test_a_bagged_model_with_every_kind_of_column_predicts_alike_everywhere(
        everything: tuple[keel.Model, Path]) -> None:
    """keel's float64 prediction, its float32 network, keel.runtime and the server (images as base64 PNGs) agree
    on new rows, a missing image and a missing text among them."""
    model, directory = everything
    assert [type(t).__name__ for t in model.preprocessor.numeric] == [
        "NumberTransform", "DateTransform", "ImageTransform", "TextTransform"]  # tokens last, after the pixels
    frame = mixed_frame(12, seed=5).drop(columns="label")
    frame.loc[2, "pic"], frame.loc[3, "review"] = None, None
    expected = model.predict_proba(frame)
    features = model.preprocessor.transform(frame)
    outputs = predict_outputs(model.network, torch.from_numpy(features.numeric), torch.from_numpy(features.categorical))
    np.testing.assert_allclose(to_probabilities(outputs, model.task).numpy(), expected, atol=TOLERANCE)
    np.testing.assert_allclose(Predictor.load(directory).predict_proba(frame), expected, atol=TOLERANCE)
    rows = [{"review": row.review if isinstance(row.review, str) else None,
             "pic": png_base64(row.pic) if isinstance(row.pic, np.ndarray) else None, "x": row.x, "city": row.city,
             "when": row.when.isoformat()} for row in frame.itertuples()]
    answer = call(create_app(ServeSettings(str(directory), max_batch=20)), "POST", "/predict", json=rows)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["probabilities"], expected, atol=TOLERANCE)


def test_a_checkpointed_run_with_lora_and_an_image_resumes_to_the_uninterrupted_model(
        tiny_bert: Path, tmp_path: Path) -> None:
    """Stopped inside the second of two bagged networks: resumed, the model is the uninterrupted run's, bit for
    bit (the optimizer's two groups, the encoder's own rate, the CNN's batch norms)."""
    frame = mixed_frame(60)
    config = finetuned_config(tiny_bert, {"training.bagging": 2, "training.epochs": 3, "training.checkpoint": True,
                                          "training.checkpoint_every": 1})
    keel.fit(frame, target="label", config=config, output=tmp_path / "whole", quiet=True, importance=False)
    with pytest.raises(_Interrupted):
        keel.fit(frame, target="label", config=config, output=tmp_path / "cut", reporter=_StopAt(5),
                 importance=False)
    resumed = keel.fit(frame, target="label", config=config, output=tmp_path / "cut", resume=True, quiet=True,
                       importance=False)
    assert [t.name for t in resumed.preprocessor.token_texts] == ["review"] and resumed.preprocessor.images
    assert any(note.startswith("resumed from the checkpoint") for note in resumed.notes)
    for name in ("weights.safetensors", "predictions.safetensors"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes(), name


def runtime_without(module: str, directory: Path) -> dict[str, Any]:
    """Predict one row of the ``everything`` model with keel.runtime in a process where ``module`` cannot be
    imported: what was raised (its type, whether a KeelError, its message), or ok."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules[{module!r}] = None  # as if not installed: importing it raises ImportError
        import numpy as np
        from keel.errors import KeelError
        from keel.runtime import Predictor
        row = {{"review": "great order", "pic": np.zeros((8, 8), dtype=np.uint8), "x": 0.5, "city": "oslo",
               "when": "2024-03-01"}}
        try:
            Predictor.load({str(directory)!r}).predict_proba(row)
            print(json.dumps({{"ok": True}}))
        except Exception as error:
            print(json.dumps({{"ok": False, "type": type(error).__name__, "keel": isinstance(error, KeelError),
                              "message": str(error)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_runtime_without_tokenizers_says_what_to_install(everything: tuple[keel.Model, Path]) -> None:
    result = runtime_without("tokenizers", everything[1])
    assert result["keel"] and result["type"] == "ConfigError", result
    assert "pip install tokenizers" in result["message"]


# ---- what the audit found (xfail, strict) -------------------------------------------------------------
def test_the_runtime_without_pillow_says_what_to_install(everything: tuple[keel.Model, Path]) -> None:
    result = runtime_without("PIL", everything[1])
    assert result["keel"], result
    assert "pip install pillow" in result["message"].lower()


def test_a_finetuned_model_predicts_without_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = write_tiny_bert(tmp_path / "bert")
    frame = mixed_frame(60)[["review", "x", "label"]]
    model = keel.fit(frame, target="label", config=finetuned_config(checkpoint, columns=("review", "x")), quiet=True,
                     importance=False)
    assert model.preprocessor.token_texts[0].name == "review"  # the premise: a fine-tuned column
    model.save(tmp_path / "model")
    expected = model.predict_proba(frame)
    shutil.rmtree(checkpoint)
    np.testing.assert_array_equal(keel.load(tmp_path / "model").predict_proba(frame), expected)


def test_the_openapi_document_does_not_describe_a_pretrained_text_as_counted_words(
        everything: tuple[keel.Model, Path]) -> None:
    document = call(create_app(ServeSettings(str(everything[1]))), "GET", "/openapi.json").json()
    description = document["components"]["schemas"]["Record"]["properties"]["review"]["description"]
    assert "vocabulary" not in description, description


def test_a_streamed_run_notes_how_its_image_column_was_read_and_what_it_resized(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "pics").mkdir()
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "pics" / f"{index}.png")
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(tmp_path / "pics" / "big.png")
    n_rows = 1500
    pictures = [f"pics/{index}.png" for index in rng.integers(0, 6, n_rows)]
    pictures[7] = "pics/big.png"
    table = tmp_path / "table.csv"
    pd.DataFrame({"pic": pictures, "x": rng.normal(size=n_rows), "y": rng.integers(0, 2, n_rows),
                  "comment": ["unused " * 80] * n_rows}).to_csv(table, index=False)  # makes the file stream
    model = keel.fit(table, target="y", quiet=True, importance=False, config={
        "preset": "fast", "training.epochs": 1, "training.steps_per_epoch": 2, "model.hidden": [16], "image.dim": 4,
        "data.memory_budget": "1MiB", "input_features": [{"name": "pic"}, {"name": "x"}]})
    assert any(note.startswith("streaming") for note in model.notes), model.notes  # the premise
    assert "image column 'pic': read as 8x8 gray pixels" in model.notes
    assert any("image(s) resized" in note for note in model.notes), model.notes


@pytest.mark.xfail(strict=True, reason="a known limitation (README, Image columns): data.memory_budget ignores what an "
                   "image column becomes: streaming_plan "
                   "compares twice the table's estimated size (a path is ~40 bytes a row) with the budget, while the "
                   "run then holds channels x size x size float32 pixels a row (49 KB at 64 x 64 RGB), so a table of "
                   "image paths is read whole and its pixels held far beyond the budget; the streamed sample, "
                   "calibration and number-embedding bins (up to 262,144 rows) read full-width rows too")
def test_a_table_of_image_paths_streams_when_its_pixels_exceed_the_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "pics").mkdir()
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "pics" / f"{index}.png")
    n_rows = 2000  # 2,000 x (3 x 64 x 64 + 1) float32 pixels: 98 MB
    table = tmp_path / "table.csv"
    pd.DataFrame({"pic": [f"pics/{index % 4}.png" for index in range(n_rows)],
                  "y": np.arange(n_rows) % 2}).to_csv(table, index=False)
    settings = load_config({"target": "y", "image.size": 64, "image.channels": "rgb", "data.memory_budget": "64MB"})
    assert streaming_plan(str(table), settings) is not None


def test_finetuning_a_bag_column_is_refused_as_it_is_for_tfidf() -> None:
    frame = mixed_frame(60)[["review", "x", "label"]]
    config = {"preset": "fast", "training.epochs": 1, "model.hidden": [16], "text.encoder": "bag",
              "text.finetune": "full", "input_features": [{"name": "review", "type": "text"}, {"name": "x"}]}
    with pytest.raises(ConfigError, match="text.encoder: pretrained"):
        keel.fit(frame, target="label", config=config, quiet=True, importance=False)
