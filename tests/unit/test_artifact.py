from __future__ import annotations

import json
import pickle

import pytest
import torch

import keel.artifact as artifact
from keel.artifact import load_artifact, save_artifact
from keel.errors import ArtifactError

TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def test_round_trip_with_checksums_and_versions(tmp_path) -> None:
    path = save_artifact(tmp_path / "model", {"hello": [1, 2.5, float("nan")]}, TENSORS)
    assert sorted(p.name for p in path.iterdir()) == ["keel.json", "weights.safetensors"]
    metadata, tensors = load_artifact(path)
    assert metadata["format_version"] == artifact.FORMAT_VERSION and metadata["hello"] == [1, 2.5, None]
    assert len(metadata["files"]["weights.safetensors"]) == 64
    torch.testing.assert_close(tensors["w"], TENSORS["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging directory left


def test_loading_never_unpickles(tmp_path, monkeypatch) -> None:
    path = save_artifact(tmp_path / "model", {}, TENSORS)
    assert not (path / "weights.safetensors").read_bytes().startswith(b"\x80")  # not a pickle stream

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_artifact(path)


def test_a_crash_while_saving_leaves_the_old_model_untouched(tmp_path, monkeypatch) -> None:
    path = save_artifact(tmp_path / "model", {"generation": 1}, TENSORS)

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # a kill arriving mid-write

    monkeypatch.setattr(artifact, "_write_synced", crash)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(path, {"generation": 2}, TENSORS)
    assert load_artifact(path)[0]["generation"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_crash_on_first_save_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(artifact, "_write_synced", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(ArtifactError, match="cannot write a model to .*No space left on device"):
        save_artifact(tmp_path / "model", {}, TENSORS)
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_model_and_refusing_other_directories(tmp_path) -> None:
    path = save_artifact(tmp_path / "model", {"generation": 1}, TENSORS)
    save_artifact(path, {"generation": 2}, TENSORS)
    assert load_artifact(path)[0]["generation"] == 2
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(ArtifactError, match="exists and is not a keel model; refusing to overwrite"):
        save_artifact(other, {}, TENSORS)
    assert (other / "cat.jpg").exists()


def test_not_a_model_wrong_version_and_bad_checksum(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="no model at"):
        load_artifact(tmp_path / "missing")
    with pytest.raises(ArtifactError, match=r"is not a keel model \(no keel.json inside\)"):
        load_artifact(tmp_path)
    path = save_artifact(tmp_path / "model", {"versions": {"keel": "9.0"}}, TENSORS)
    document = json.loads((path / "keel.json").read_text())
    (path / "keel.json").write_text(json.dumps({**document, "format_version": 99}))
    with pytest.raises(ArtifactError, match=r"model format version 99 \(written by keel 9.0\); this keel reads version 1"):
        load_artifact(path)
    (path / "keel.json").write_text(json.dumps(document))
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(ArtifactError, match="weights.safetensors fails its checksum"):
        load_artifact(path)
    (path / "keel.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        load_artifact(path)
    (path / "keel.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="is not a keel model description"):
        load_artifact(path)
