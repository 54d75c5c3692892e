"""training.device and training.precision: resolution, errors, and training across devices.

This machine (and CI) has no GPU: the GPU-only test at the end runs where PyTorch sees one. The
resolution tests stand in the one thing that cannot run here, ``torch.cuda``'s answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import keel
from keel.errors import ConfigError
from keel.train.device import resolve_device, resolve_precision
from keel.train.trainer import Batch
from tests.conftest import FAST, make_classification_frame, settings_note

HAS_GPU = torch.cuda.is_available()


def _pretend_gpus(monkeypatch: pytest.MonkeyPatch, count: int, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)


def test_auto_takes_a_gpu_when_there_is_one(monkeypatch) -> None:
    _pretend_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    _pretend_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_missing_gpu_is_an_error_not_a_fallback(monkeypatch) -> None:
    _pretend_gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match=r"training.device is 'cuda' but PyTorch sees no GPU.*use training.device: cpu"):
        resolve_device("cuda")
    _pretend_gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match=r"'cuda:3' but PyTorch sees 1 GPU\(s\), numbered 0 to 0"):
        resolve_device("cuda:3")


def test_precision_auto_is_float32_on_cpu_and_bfloat16_on_a_gpu_that_has_it(monkeypatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "float32"
    _pretend_gpus(monkeypatch, 1, bf16=True)
    assert resolve_precision("auto", torch.device("cuda")) == "bfloat16"
    _pretend_gpus(monkeypatch, 1, bf16=False)
    assert resolve_precision("auto", torch.device("cuda")) == "float32"
    assert resolve_precision("bfloat16", torch.device("cpu")) == "bfloat16"
    assert resolve_precision("float32", torch.device("cuda")) == "float32"


@pytest.mark.skipif(HAS_GPU, reason="checks the error on a machine without a GPU")
def test_fit_on_a_missing_gpu_fails_before_reading_the_data(tmp_path) -> None:
    # The file does not exist: a ConfigError (not a DataError) shows the device was checked first.
    with pytest.raises(ConfigError, match="sees no GPU"):
        keel.fit(tmp_path / "absent.csv", target="label", config={**FAST, "training.device": "cuda"})


def test_batch_to_its_own_device_is_the_same_object_and_take_gathers_rows() -> None:
    rows = Batch(torch.arange(12.0).reshape(6, 2), torch.zeros(6, 0, dtype=torch.int64), torch.arange(6))
    assert rows.to("cpu") is rows
    picked = rows.take(np.array([4, 1, 5]))
    assert picked.target.tolist() == [4, 1, 5] and picked.numeric[:, 0].tolist() == [8.0, 2.0, 10.0]


def test_the_run_note_names_device_and_precision_only_when_not_the_cpu_default() -> None:
    frame = make_classification_frame()
    plain = keel.fit(frame, target="label", config={**FAST, "training.device": "cpu"}, quiet=True)
    assert "matmuls" not in settings_note(plain) and " on " not in settings_note(plain).split(",")[-1]
    bf16 = keel.fit(frame, target="label", config={**FAST, "training.precision": "bfloat16"}, quiet=True)
    assert settings_note(bf16).endswith("bfloat16 matmuls")
    # the saved config keeps what the user asked for; auto resolves at each run
    assert plain.config.training.device == "cpu" and bf16.config.training.device == "auto"


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU that PyTorch can see")
def test_training_on_a_gpu_matches_the_cpu_and_the_model_comes_back_to_the_cpu(tmp_path) -> None:
    frame = make_classification_frame(600)
    settings = {**FAST, "training.epochs": 20, "training.precision": "float32"}
    cpu = keel.fit(frame, target="label", config={**settings, "training.device": "cpu"}, quiet=True)
    gpu = keel.fit(frame, target="label", config={**settings, "training.device": "cuda"}, quiet=True)
    assert all(p.device.type == "cpu" for p in gpu.network.parameters())
    assert "on cuda" in gpu.notes[-1]
    assert abs(gpu.metrics["accuracy"] - cpu.metrics["accuracy"]) <= 0.05
    np.testing.assert_allclose(gpu.predict_proba(frame), cpu.predict_proba(frame), atol=0.05)
    gpu.save(tmp_path / "gpu_model")
    np.testing.assert_array_equal(keel.load(tmp_path / "gpu_model").predict_proba(frame), gpu.predict_proba(frame))
    for preset in ("balanced", "fast"):  # autograd path with bf16 autocast, and the plain MLP
        model = keel.fit(frame, target="label", config={"preset": preset, "training.epochs": 3,
                                                        "training.device": "cuda"}, quiet=True)
        assert "bfloat16 matmuls" in model.notes[-1] and model.metrics["accuracy"] > 0.5


def test_auto_precision_on_a_cpu_is_bfloat16_only_with_amx_and_large_steps(monkeypatch) -> None:
    from keel.nn.network import NetworkSpec
    from keel.train import device as devices

    balanced = NetworkSpec(numeric_width=7, cardinalities=[], n_outputs=1, hidden=[256, 256],
                           numeric_embedding="piecewise_linear", ensemble=8)
    plain = NetworkSpec(numeric_width=50, cardinalities=[], n_outputs=1, hidden=[256, 256])
    assert devices.step_work(balanced, 256) == 256 * 8 * 256 * 256  # the 256 x 256 layer is the largest
    assert devices.step_work(plain, 32) == 32 * 256 * 256
    cpu = torch.device("cpu")
    for amx in (True, False):
        monkeypatch.setattr(devices, "amx_available", lambda amx=amx: amx)
        assert devices.resolve_precision("auto", cpu, devices.step_work(balanced, 256)) == (
            "bfloat16" if amx else "float32")
        assert devices.resolve_precision("auto", cpu, devices.step_work(balanced, 32)) == "float32"  # 256 rows
        assert devices.resolve_precision("auto", cpu, devices.step_work(plain, 32)) == "float32"
        assert devices.resolve_precision("float32", cpu, 1 << 40) == "float32"  # what is written wins
        assert devices.resolve_precision("bfloat16", cpu, 0) == "bfloat16"


def test_the_run_note_names_the_precision_auto_chose(monkeypatch) -> None:
    import keel
    from keel.train import device as devices
    from tests.conftest import make_classification_frame

    frame = make_classification_frame(600)
    config = {"preset": "balanced", "training.epochs": 1, "training.batch_size": 128}
    notes = {}
    for amx in (True, False):
        monkeypatch.setattr(devices, "amx_available", lambda amx=amx: amx)
        model = keel.fit(frame, target="label", config=config, quiet=True, importance=False)
        notes[amx] = next(note for note in model.notes if note.startswith("preset balanced"))
    assert "bfloat16 matmuls" in notes[True] and "bfloat16" not in notes[False]
