"""Hostile model directories with text and image columns (a trial of 'Loading a model someone sent you' against the
columns issue 14 added; the corpus of tests/security covers tabular models).

Each case edits a real saved model as an attacker would (checksums rewritten: ``relist``) and checks the reader
refuses it with an ArtifactError at load, or, where the file is read only while predicting, that predicting neither
hangs nor trusts it. Cases that would hang without the fix run in a daemon thread with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

import keel
from keel.errors import ArtifactError, ConfigError, DataError
from keel.runtime import Predictor
from tests.security.corpus import ONNX, WEIGHTS, edit_onnx, read_manifest_dict, relist, write_manifest_dict
from tests.tiny_bert import write_tiny_bert

_WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "red", "blue"]
_QUICK = {"preset": "fast", "training.epochs": 1, "model.hidden": [8], "text.encoder": "pretrained"}


def _frame(folder: Path, n: int = 60, image: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"review": [" ".join(rng.choice(_WORDS, 5)) for _ in range(n)],
                          "x": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    if image:
        (folder / "pics").mkdir(exist_ok=True)
        for index in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / "pics" / f"{index}.png")
        frame["pic"] = [str(folder / "pics" / f"{index % 4}.png") for index in range(n)]
    return frame


def _within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()``'s result, or a test failure if it does not end within ``seconds`` (a hang: the thread is left)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A frozen pretrained text + image model (embedded encoder, exported) and a LoRA one, on the tiny BERT."""
    root = tmp_path_factory.mktemp("hostile-text")
    bert = write_tiny_bert(root / "bert")
    frame = _frame(root, image=True)
    frame.to_csv(root / "table.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = keel.fit(frame, target="y", quiet=True, importance=False, output=root / "frozen", config={
            **_QUICK, "text.model_path": str(bert), "text.cache_dir": str(root / "cache"), "image.dim": 4,
            "input_features": [{"name": "review", "type": "text"}, {"name": "x"}, {"name": "pic"}]})
        assert frozen.embed_encoders() == ["review"]
        frozen.export()
        keel.fit(frame.drop(columns="pic"), target="y", quiet=True, importance=False, output=root / "lora", config={
            **_QUICK, "text.model_path": str(bert), "text.finetune": "lora", "text.max_tokens": 16,
            "input_features": [{"name": "review", "type": "text"}, {"name": "x"}]})
    return {"root": root, "frozen": root / "frozen", "lora": root / "lora", "cache": root / "cache"}


def _copy(saved: dict[str, Path], which: str, tmp_path: Path) -> Path:
    target = tmp_path / which
    shutil.copytree(saved[which], target, symlinks=True)
    return target


def _embedded(model: Path) -> Path:
    return next((model / "encoders").iterdir())


# ---- an embedded encoder: every file it reads is listed ---------------------------------------
def _fifo_pooling(model: Path) -> None:
    (_embedded(model) / "1_Pooling").mkdir()
    os.mkfifo(_embedded(model) / "1_Pooling" / "config.json")


def _zero_settings(model: Path) -> None:
    (_embedded(model) / "sentence_bert_config.json").symlink_to("/dev/zero")


def _config_unlisted_and_linked(model: Path) -> None:
    document = read_manifest_dict(model)
    name = f"encoders/{_embedded(model).name}/config.json"
    del document["files"][name]
    write_manifest_dict(model, document)
    (model / name).unlink()
    (model / name).symlink_to("/etc/passwd")


@pytest.mark.parametrize("attack", [_fifo_pooling, _zero_settings, _config_unlisted_and_linked],
                         ids=["fifo-pooling-config", "settings-linked-to-dev-zero", "config-unlisted-linked-out"])
def test_a_file_an_embedded_encoder_would_read_that_keel_json_does_not_list_is_refused_at_load(
        saved, tmp_path, attack) -> None:
    # Each hung predicting, grew without limit or read /etc/passwd: only listed files were checked.
    model = _copy(saved, "frozen", tmp_path)
    attack(model)
    relist(model)
    with pytest.raises(ArtifactError, match="which keel.json does not list"):
        _within(30, lambda: keel.load(model))


def test_a_relative_encoder_path_in_keel_json_is_refused_at_load(saved, tmp_path) -> None:
    # It was resolved against the working directory of whoever loads the model: it could point into the model.
    model = _copy(saved, "frozen", tmp_path)
    document = read_manifest_dict(model)
    text = next(state for state in document["preprocessing"] if state["kind"] == "text")
    text["model"] = "frozen/enc"
    write_manifest_dict(model, document)
    relist(model)
    with pytest.raises(ArtifactError, match="'frozen/enc' is relative"):
        keel.load(model)


def test_an_encoder_path_that_is_no_model_names_the_saved_path_when_predicting(saved, tmp_path) -> None:
    model = _copy(saved, "frozen", tmp_path)
    shutil.rmtree(model / "encoders")
    document = read_manifest_dict(model)
    document["files"] = {name: record for name, record in document["files"].items() if not name.startswith("encoders/")}
    text = next(state for state in document["preprocessing"] if state["kind"] == "text")
    os.mkfifo(tmp_path / "config.json")  # a pipe where the encoder's config is: refused, not read
    text["model"] = str(tmp_path)
    write_manifest_dict(model, document)
    relist(model)
    loaded = keel.load(model)
    with pytest.raises(ConfigError, match=rf"trained with, at {tmp_path}, which cannot be used here: .*not a regular file"):
        _within(30, lambda: loaded.predict(_frame(saved["root"], 4, image=True)))


# ---- the embedding cache: read, never trusted -------------------------------------------------
def _cache_folder(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the frozen model without its embedded encoder (so the cache is read) and of its cache folder."""
    model = _copy(saved, "frozen", tmp_path)
    shutil.rmtree(model / "encoders")
    cache = tmp_path / "cache"
    shutil.copytree(saved["cache"], cache)
    document = read_manifest_dict(model)
    document["files"] = {name: record for name, record in document["files"].items() if not name.startswith("encoders/")}
    for state in document["preprocessing"]:
        if state["kind"] == "text":
            state["cache_dir"] = str(cache)
    write_manifest_dict(model, document)
    relist(model)
    return model, next(cache.iterdir())


def test_a_named_pipe_in_the_embedding_cache_is_skipped_not_opened(saved, tmp_path) -> None:
    model, folder = _cache_folder(saved, tmp_path)
    rows = _frame(saved["root"], image=True)
    expected = keel.load(saved["frozen"]).predict_proba(rows)
    os.mkfifo(folder / "0000.safetensors")  # sorts first: the reader meets it before the real shard
    predicted = _within(60, lambda: keel.load(model).predict_proba(rows))
    np.testing.assert_allclose(predicted, expected, atol=1e-6)


def test_a_cache_shard_of_nan_vectors_is_ignored(saved, tmp_path) -> None:
    # Anyone who can write the shared cache could turn every prediction on that encoder into NaN.
    model, folder = _cache_folder(saved, tmp_path)
    rows = _frame(saved["root"], image=True)
    expected = keel.load(saved["frozen"]).predict_proba(rows)
    real = load_file(str(next(folder.glob("*.safetensors"))))
    save_file({**real, "vectors": np.full_like(real["vectors"], np.nan)}, str(folder / "0000.safetensors"))
    predicted = keel.load(model).predict_proba(rows)
    assert np.isfinite(predicted).all()
    np.testing.assert_allclose(predicted, expected, atol=1e-6)


# ---- a fine-tuned column's tokenizer (kept in the weights) -------------------------------------
def _with_tokenizer(model: Path, change: Callable[[bytes], bytes]) -> None:
    arrays = load_file(str(model / WEIGHTS))
    key = next(name for name in arrays if name.endswith("tokenizer"))
    arrays[key] = np.frombuffer(change(arrays[key].tobytes()), dtype=np.uint8).copy()
    document = read_manifest_dict(model)
    save_file(arrays, str(model / WEIGHTS), metadata=None)
    write_manifest_dict(model, document)
    relist(model)


def _more_tokens(text: bytes) -> bytes:
    tokenizer = json.loads(text)
    tokenizer["model"]["vocab"]["zzzqqq"] = len(tokenizer["model"]["vocab"])
    return json.dumps(tokenizer).encode()


@pytest.mark.parametrize(("change", "problem"), [
    (lambda text: b"\xff\xfe" + text, "its tokenizer cannot be read"),
    (lambda text: b'{"version": [1, 2]}', "its tokenizer cannot be read"),
    (_more_tokens, "its tokenizer has 30,523 tokens, its encoder embeds 30,522"),
], ids=["not-utf8", "not-a-tokenizer", "more-tokens-than-embeddings"])
def test_a_fine_tuned_columns_damaged_tokenizer_is_refused_at_load(saved, tmp_path, change, problem) -> None:
    # Each loaded, then crashed the first prediction as an "internal error" (UnicodeDecodeError, a tokenizers
    # Exception, torch's IndexError) that named no file.
    model = _copy(saved, "lora", tmp_path)
    _with_tokenizer(model, change)
    with pytest.raises(ArtifactError, match=rf"weights.safetensors keeps a tokenizer that does not fit .*{problem}"):
        keel.load(model)


def test_a_token_id_beyond_the_encoders_table_is_an_error_not_a_crash(saved, tmp_path) -> None:
    def far_id(text: bytes) -> bytes:
        tokenizer = json.loads(text)
        tokenizer["model"]["vocab"]["cat"] = 999_999  # as many tokens as before, one id far beyond the table
        return json.dumps(tokenizer).encode()

    model = _copy(saved, "lora", tmp_path)
    _with_tokenizer(model, far_id)
    loaded = keel.load(model)
    with pytest.raises(DataError, match="made token id 999,999, beyond the 30,522 its encoder embeds"):
        loaded.predict(pd.DataFrame({"review": ["the cat sat"], "x": [0.0]}))


# ---- the ONNX file's metadata of text and image columns --------------------------------------
def _tokens(value: Any) -> str:
    return json.dumps({"review": value})


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("keel.images", json.dumps({"pic": {"mode": "L", "size": 30000, "scale": 255.0}}), "keel.images is not"),
    ("keel.images", json.dumps({"pic": {"mode": "CMYK", "size": 8, "scale": 255.0}}), "keel.images is not"),
    ("keel.tokens", _tokens({"tokenizer": "{}", "max_tokens": "16"}), "keel.tokens is not"),
    ("keel.tokens", _tokens({"tokenizer": "not json", "max_tokens": 16}), "the tokenizer of text column 'review'"),
    ("keel.tokens", _tokens({"tokenizer": "{}", "max_tokens": 10**9}), "keel.tokens is not"),
    ("keel.tokens", "[" * 100 + "]" * 100, "nests more than 64 levels"),
], ids=["image-side-30000", "image-mode", "max-tokens-a-string", "tokenizer-not-json", "max-tokens-huge",
        "deep-json"])
def test_text_and_image_metadata_in_the_onnx_file_is_checked_before_anything_is_allocated(
        saved, tmp_path, key, value, problem) -> None:
    # The side 30,000 took 2.7 GB for the server's one-row warm-up and then a traceback; the others crashed
    # Predictor.load and the server's start with a TypeError, RecursionError or tokenizers' bare Exception.
    model = _copy(saved, "frozen", tmp_path)

    def change(proto: Any, case_dir: Path) -> None:
        next(item for item in proto.metadata_props if item.key == key).value = value

    edit_onnx(change)(model, tmp_path)
    with pytest.raises(ArtifactError, match=problem):
        _within(30, lambda: Predictor.load(model))
    assert (model / ONNX).is_file()


def test_keel_info_names_the_paths_a_frozen_column_reads_outside_the_directory(saved, tmp_path) -> None:
    # The README's advice for a model from someone else: check these paths before predicting.
    from keel.describe import describe_network

    model = _copy(saved, "frozen", tmp_path)
    shutil.rmtree(model / "encoders")
    document = read_manifest_dict(model)
    document["files"] = {name: record for name, record in document["files"].items() if not name.startswith("encoders/")}
    write_manifest_dict(model, document)
    relist(model)
    text = next(item for item in describe_network(keel.load(model))["encoders"] if item["column"] == "review")
    assert f"read from {saved['root'] / 'bert'}, cache {saved['cache']}" in text["encoder"]
    embedded = next(item for item in describe_network(keel.load(saved["frozen"]))["encoders"]
                    if item["column"] == "review")
    assert f"read from {saved['frozen'].absolute() / 'encoders'}" in embedded["encoder"]
