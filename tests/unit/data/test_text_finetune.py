"""Fine-tuned text columns (text.finetune full / lora): token ids into the network's own BERT, its own learning rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import keel
from keel.errors import ConfigError
from keel.nn.network import TabularNetwork, predict_outputs
from keel.runtime import Predictor
from tests.unit.data.test_text import reviews

FAST = {"preset": "fast", "training.epochs": 2, "model.hidden": [16], "text.encoder": "pretrained",
        "training.early_stopping": 0}


def fit(model_dir: Path, **settings: object) -> keel.model.Model:
    return keel.fit(reviews(120), target="label", quiet=True, importance=False,
                    config={**FAST, "text.model_path": str(model_dir), **settings})


def checkpoint(model_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(model_dir / "model.safetensors"))


def bert_state(model: keel.model.Model) -> dict[str, torch.Tensor]:
    network = model.network
    assert isinstance(network, TabularNetwork)
    return network.texts[0].bert.state_dict()


def test_full_finetuning_trains_the_encoder_and_saves_it_in_the_model(tiny_model: Path, tmp_path: Path) -> None:
    model = fit(tiny_model, **{"text.finetune": "full", "text.lr": 1e-2})
    start, trained = checkpoint(tiny_model), bert_state(model)
    changed = [name for name, value in start.items() if not np.allclose(trained[name].numpy(), value)]
    assert len(changed) > len(start) // 2  # the encoder trained
    assert any("fine-tuned (full)" in note for note in model.notes)
    assert model.preprocessor.token_texts[0].width == 64 + 1  # the tiny model's 64 positions and the empty flag
    model.save(tmp_path / "m")
    again = keel.load(tmp_path / "m")
    frame = reviews(40, seed=3)
    np.testing.assert_array_equal(again.predict_proba(frame), model.predict_proba(frame))
    assert model.preprocessor.token_texts[0].backbone is None  # not kept after training


def test_lora_trains_only_the_low_rank_updates(tiny_model: Path) -> None:
    model = fit(tiny_model, **{"text.finetune": "lora", "text.lora_rank": 4, "text.lr": 1e-2})
    start, trained = checkpoint(tiny_model), bert_state(model)
    for name, value in start.items():
        np.testing.assert_array_equal(trained[name].numpy(), value)  # the checkpoint's weights stay as they are
    updates = {name: tensor for name, tensor in trained.items() if "_lora_b" in name}
    assert len(updates) == 2 * 2 and all(tensor.shape == (16, 4) for tensor in updates.values())
    assert all(tensor.abs().max() > 0 for tensor in updates.values())  # started at zero, trained


def test_the_encoder_trains_at_its_own_learning_rate(tiny_model: Path) -> None:
    still = bert_state(fit(tiny_model, **{"text.finetune": "full", "text.lr": 1e-12}))
    moved = bert_state(fit(tiny_model, **{"text.finetune": "full", "text.lr": 1e-2}))
    start = checkpoint(tiny_model)
    drift = max(float(np.abs(still[name].numpy() - value).max()) for name, value in start.items())
    assert drift < 1e-6  # 1e-12 times the scheduled rate: nothing moves, while the head trains at training.lr
    assert max(float(np.abs(moved[name].numpy() - value).max()) for name, value in start.items()) > 1e-3
    # the groups a trainer builds: the encoder's scale is its rate over training.lr
    model = fit(tiny_model, **{"text.finetune": "lora", "training.lr": 0.01})
    assert isinstance(model.network, TabularNetwork)
    groups = model.network.parameter_groups(0.01)
    assert len(groups) == 2 and groups[1]["scale"] == pytest.approx(5e-4 / 0.01)  # lora's default rate
    assert all("_lora_" in name for name, p in model.network.texts[0].bert.named_parameters() if p.requires_grad)


def test_finetuning_needs_a_pretrained_encoder(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="text.encoder: pretrained"):
        fit(tiny_model, **{"text.encoder": "tfidf", "text.finetune": "full"})


def test_keels_float64_prediction_equals_the_float32_network(tiny_model: Path) -> None:
    """Model.predict runs a float64 copy of the network: its attention mask once stayed float32 and was misread."""
    model = fit(tiny_model, **{"text.finetune": "lora", "text.lr": 1e-2})
    frame = reviews(30, seed=4)
    features = model.preprocessor.transform(frame)
    network = model.network
    assert isinstance(network, TabularNetwork)
    outputs = predict_outputs(network, torch.from_numpy(features.numeric), torch.from_numpy(features.categorical))
    np.testing.assert_allclose(model.predict_proba(frame)[:, 1], torch.sigmoid(outputs[:, 0]).numpy(), atol=1e-5)


@pytest.mark.parametrize("finetune", ["none", "full", "lora"])
def test_a_pretrained_text_column_exports_with_its_encoder_and_the_runtime_tokenises(
        tiny_model: Path, tmp_path: Path, finetune: str) -> None:
    model = fit(tiny_model, **{"text.finetune": finetune, "text.lr": 1e-2, "text.max_tokens": 24})
    model.save(tmp_path / "m")
    frame = reviews(60, seed=6)
    frame.loc[2, "review"], frame.loc[3, "review"] = None, "   "
    frame.loc[4, "review"] = " ".join(["word"] * 200)  # cut at the token limit
    report = model.export(data=frame)
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-5
    predictor = Predictor.load(tmp_path / "m")
    np.testing.assert_allclose(predictor.predict_proba(frame), model.predict_proba(frame), atol=1e-5)
    one = frame.iloc[[4]].to_dict("records")[0]
    np.testing.assert_allclose(predictor.predict_proba(one), model.predict_proba(frame.iloc[[4]]), atol=1e-5)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m" / "model.onnx")).metadata_props}
    tokens = json.loads(props["keel.tokens"])["review"]
    assert tokens["max_tokens"] == 24 and "[CLS]" in tokens["tokenizer"] and props["keel.export_format"] == "5"


def test_texts_longer_than_the_token_limit_are_cut_and_counted(tiny_model: Path) -> None:
    model = fit(tiny_model, **{"text.finetune": "full", "text.max_tokens": 8})
    assert model.preprocessor.token_texts[0].width == 9
    assert any("cut at 8 tokens" in note for note in model.notes)
    assert model.network.spec.texts[0].max_tokens == 8  # type: ignore[union-attr]
