from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import keel.artifact as artifact
from keel.artifact import Manifest, attach_file, load_artifact, read_manifest, save_artifact, upgrade
from keel.errors import ArtifactError, KeelWarning
from tests.conftest import ROOT

TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
OTHER_TENSORS = {"w": torch.ones(2, 3)}


def manifest(**fields: object) -> Manifest:
    """A minimal manifest: the stages' sections empty."""
    return Manifest.model_validate({"versions": {"keel": "0.1.0"}, "created": "2025-01-01T00:00:00+00:00",
                                    "config": {}, "schema": {}, "preprocessing": [], "target": {}, "network": {},
                                    **fields})


def test_round_trip_with_checksums_and_versions(tmp_path) -> None:
    written = save_artifact(tmp_path / "model", manifest(metrics={"loss": float("nan"), "n": 3}), TENSORS)
    path = tmp_path / "model"
    assert sorted(p.name for p in path.iterdir()) == ["keel.json", "weights.safetensors"]
    document = json.loads((path / "keel.json").read_text())
    assert document["format_version"] == artifact.PLAIN_FORMAT_VERSION == 3 and document["schema"] == {}
    assert document["metrics"] == {"loss": None, "n": 3}  # strict JSON: NaN is written as null
    assert document["files"] == {"weights.safetensors": {"sha256": written.files["weights.safetensors"].sha256,
                                                         "made_from": None}}
    loaded, tensors = load_artifact(path)
    assert loaded.files == written.files and loaded.metrics == {"loss": None, "n": 3}
    assert loaded == written.model_copy(update={"metrics": {"loss": None, "n": 3}})
    torch.testing.assert_close(tensors["w"], TENSORS["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging directory left
    assert (path.stat().st_mode & 0o777) == 0o777 & ~_umask()  # not mkdtemp's private 0700


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_loading_never_unpickles(tmp_path, monkeypatch) -> None:
    save_artifact(tmp_path / "model", manifest(), TENSORS)
    assert not (tmp_path / "model" / "weights.safetensors").read_bytes().startswith(b"\x80")  # not a pickle stream

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_artifact(tmp_path / "model")


def test_reading_a_manifest_imports_no_torch_or_pandas(tmp_path) -> None:
    save_artifact(tmp_path / "model", manifest(), TENSORS)
    code = textwrap.dedent(f"""
        import sys
        from keel.artifact import read_manifest
        read_manifest({str(tmp_path / "model")!r})
        print(sorted(name for name in ("torch", "pandas", "safetensors") if name in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_exception_while_saving_leaves_the_old_model_untouched(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model"
    save_artifact(path, manifest(notes=["generation 1"]), TENSORS)

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # a Ctrl-C arriving mid-write

    monkeypatch.setattr(artifact, "_write_synced", crash)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(path, manifest(notes=["generation 2"]), TENSORS)
    assert load_artifact(path)[0].notes == ["generation 1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failure_on_first_save_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(artifact, "_write_synced", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(ArtifactError, match="cannot write a model to .*No space left on device"):
        save_artifact(tmp_path / "model", manifest(), TENSORS)
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_model_and_refusing_other_directories(tmp_path) -> None:
    path = tmp_path / "model"
    save_artifact(path, manifest(notes=["generation 1"]), TENSORS)
    save_artifact(path, manifest(notes=["generation 2"]), TENSORS)
    assert load_artifact(path)[0].notes == ["generation 2"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"meow")
    other = tmp_path / "other-tool"  # a folder that merely holds a file named keel.json
    other.mkdir()
    (other / "keel.json").write_text('{"boat": "keel"}')
    for folder in (photos, other):
        with pytest.raises(ArtifactError, match="exists and is not a keel model; refusing to overwrite"):
            save_artifact(folder, manifest(), TENSORS)
        with pytest.raises(ArtifactError, match="exists and is not a keel model"):
            artifact.check_destination(folder)
    assert (photos / "cat.jpg").read_bytes() == b"meow" and (other / "keel.json").read_text() == '{"boat": "keel"}'


def test_not_a_model_newer_version_and_bad_checksum(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="no model at"):
        load_artifact(tmp_path / "missing")
    with pytest.raises(ArtifactError, match=r"is not a keel model \(no keel.json inside\)"):
        load_artifact(tmp_path)
    path = tmp_path / "model"
    save_artifact(path, manifest(versions={"keel": "9.0"}), TENSORS)
    document = json.loads((path / "keel.json").read_text())
    (path / "keel.json").write_text(json.dumps({**document, "format_version": 99}))
    with pytest.raises(ArtifactError, match=r"model format version 99 \(written by keel 9.0\); this keel reads "
                                            r"versions up to 4. Upgrade keel"):
        load_artifact(path)
    (path / "keel.json").write_text(json.dumps({**document, "format_version": "2"}))
    with pytest.raises(ArtifactError, match="has the format version '2'; expected a whole number"):
        load_artifact(path)
    (path / "keel.json").write_text(json.dumps({**document, "bagging": 0, "surprise": 1}))
    with pytest.raises(ArtifactError, match=r"not a valid keel manifest \(bagging: .*surprise: Extra inputs"):
        load_artifact(path)
    (path / "keel.json").write_text(json.dumps({**document, "files": {**document["files"], "../x": document["files"][
        "weights.safetensors"]}}))
    with pytest.raises(ArtifactError, match=r"files lists '../x', which has an empty, '.' or '..' part"):
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


def test_format_1_manifests_are_upgraded_step_by_step() -> None:
    assert sorted(artifact.MIGRATIONS) == list(range(1, artifact.FORMAT_VERSION))  # a step from every version
    old = {"format": "keel-model", "format_version": 1, "files": {"weights.safetensors": "a" * 64},
           "preprocessing": [
               {"kind": "category", "name": "level", "vocabulary": ["0.10000000149011612", "red", "0.50", "3"]},
               {"kind": "binary", "name": "flag", "values": ["0.10000000149011612", "0.699999988079071"]},
               {"kind": "number", "name": "x", "fill": 0.10000000149011612}]}
    new = upgrade(old)
    assert new["format_version"] == 4 and new["files"] == {"weights.safetensors": {"sha256": "a" * 64}}
    assert new["preprocessing"][0]["vocabulary"] == ["0.1", "red", "0.50", "3"]
    assert new["preprocessing"][1]["values"] == ["0.1", "0.7"]
    assert new["preprocessing"][2]["fill"] == 0.10000000149011612  # numbers are not categories
    assert new["bagging"] == 1 and new["notes"] == [] and new["metrics"] is None
    assert new["run"] is None and new["calibration"] is None and new["importance"] is None  # 2 -> 3


def test_attach_file_records_checksums_and_load_verifies_them(tmp_path) -> None:
    path = tmp_path / "model"
    weights = save_artifact(path, manifest(), TENSORS).files["weights.safetensors"].sha256
    onnx = tmp_path / "exported.onnx"
    onnx.write_bytes(b"onnx bytes")
    digest = attach_file(path, "model.onnx", onnx)
    attach_file(path, "plots/roc.png", b"png bytes")
    listed = read_manifest(path).files
    assert listed["model.onnx"].sha256 == digest and listed["model.onnx"].made_from == weights
    assert (path / "plots" / "roc.png").read_bytes() == b"png bytes"
    assert not [p for p in path.rglob("*") if p.name.startswith(".keel-tmp-")]  # no temporary file left
    (path / "plots" / "roc.png").write_bytes(b"edited")
    with pytest.raises(ArtifactError, match=r"roc.png fails its checksum"):
        load_artifact(path)
    attach_file(path, "plots/roc.png", b"png bytes, again")  # a damaged attachment can be replaced
    load_artifact(path)
    for name in ("/etc/passwd", "../outside.txt", "plots/../../x", "keel.json", "weights.safetensors", "", "a//b"):
        with pytest.raises(ArtifactError, match=f"cannot attach {name!r}"):
            attach_file(path, name, b"x")
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(ArtifactError, match="holds other weights than the model the file was made from"):
        attach_file(path, "late.txt", b"x", weights="0" * 64)


def test_resaving_keeps_what_still_fits_and_a_users_own_files(tmp_path) -> None:
    path = tmp_path / "model"
    save_artifact(path, manifest(), TENSORS)
    attach_file(path, "model.onnx", b"onnx of the first weights")
    attach_file(path, "plots/roc.png", b"png of the first weights")
    (path / "mine").mkdir()
    (path / "mine" / "notes.txt").write_text("my own notes")
    (path / "mine" / "keel.json").write_text("a user's file that happens to have this name")
    (path / ".keel-tmp-abc123").write_bytes(b"left by a killed attach")
    inode = (path / "mine" / "notes.txt").stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same weights: nothing is stale
        save_artifact(path, manifest(notes=["saved again"]), TENSORS)
    assert set(read_manifest(path).files) == {"weights.safetensors", "model.onnx", "plots/roc.png"}
    assert (path / "mine" / "notes.txt").stat().st_ino == inode  # carried over untouched
    assert not (path / ".keel-tmp-abc123").exists()
    with pytest.warns(KeelWarning, match=r"model.onnx, plots/roc.png were made from the previous weights and were not "
                                         "carried over"):
        save_artifact(path, manifest(), OTHER_TENSORS)
    assert set(read_manifest(path).files) == {"weights.safetensors"}
    assert not (path / "model.onnx").exists() and not (path / "plots" / "roc.png").exists()
    assert (path / "mine" / "notes.txt").read_text() == "my own notes"
    assert (path / "mine" / "keel.json").exists()
    load_artifact(path)


# The kill test: a process that trains and saves is SIGKILLed at each step of its save (the
# KEEL_TEST_KILL_AT hook). One subprocess trains two models, then forks a saver per step and case,
# so each case costs a fork rather than a Python start; torch runs on one thread, so forking is safe.
KILL_SCRIPT = textwrap.dedent("""
    import json, os, shutil, signal, sys, warnings
    from pathlib import Path
    import numpy as np
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    import keel
    import keel.artifact as artifact
    from keel.errors import ArtifactError
    from tests.conftest import FAST, make_classification_frame

    root = Path(sys.argv[1])
    frame = make_classification_frame(60)
    old = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1}, quiet=True)
    new = keel.fit(frame, target="label", config={**FAST, "training.epochs": 1, "training.seed": 1}, quiet=True)
    expected = {"old": old.predict_proba(frame), "new": new.predict_proba(frame)}
    old.save(root / "pristine")
    (root / "probe-a").mkdir(); (root / "probe-b").mkdir()
    results = {"exchange_supported": artifact._exchange(root / "probe-a", root / "probe-b"), "cases": []}
    for case in ("exchange", "rename", "first"):
        for step in artifact.SAVE_STEPS:
            folder = root / f"{case}-{step}"
            folder.mkdir()
            target = folder / "model"
            if case != "first":
                shutil.copytree(root / "pristine", target)
            pid = os.fork()
            if pid == 0:
                os.environ["KEEL_TEST_KILL_AT"] = step
                if case == "rename":
                    artifact._exchange = lambda first, second: False
                try:
                    new.save(target)
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = keel.load(target).predict_proba(frame)
                loads = [name for name, proba in expected.items() if np.array_equal(found, proba)] or ["other"]
            except ArtifactError as error:
                loads = [f"nothing: {error}"]
            new.save(target)  # leftovers of the killed save must not get in the way
            results["cases"].append({"case": case, "step": step, "killed": killed, "loads": loads[0],
                                     "after": sorted(os.listdir(folder))})
    print(json.dumps(results))
""")


@pytest.mark.slow
def test_a_save_killed_at_any_step_leaves_the_old_model_or_the_new_one(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(ROOT)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    reached = {  # the steps each kind of save passes
        "exchange": set(artifact.SAVE_STEPS) - {"moved-aside", "moved-in"},
        "rename": set(artifact.SAVE_STEPS) - {"exchanged"},
        "first": set(artifact.SAVE_STEPS) - {"exchanged", "moved-aside", "retired-unlisted"},
    }
    if not report["exchange_supported"]:
        reached["exchange"] = reached["rename"]
    outcomes: dict[str, set[str]] = {"exchange": set(), "rename": set(), "first": set()}
    for case in report["cases"]:
        where = f"{case['case']} save killed at {case['step']}"
        assert case["killed"] == (case["step"] in reached[case["case"]]), where
        allowed = {"new", "nothing"} if case["case"] == "first" else {"old", "new"}
        assert case["loads"].split(":")[0] in allowed, f"{where}: loads {case['loads']}"
        assert case["after"] == ["model"], f"{where}: leftovers {case['after']} after the next save"
        outcomes[case["case"]].add(case["loads"].split(":")[0])
    assert outcomes == {"exchange": {"old", "new"}, "rename": {"old", "new"}, "first": {"nothing", "new"}}


def test_a_model_missing_between_two_renames_is_recovered_on_load(tmp_path) -> None:
    """The state a kill between the fallback's two renames leaves: no model, two complete siblings."""
    path = tmp_path / "model"
    save_artifact(path, manifest(notes=["old"]), TENSORS)
    os.rename(path, tmp_path / ".model.old-99999999-abcd")
    save_artifact(tmp_path / "staged", manifest(notes=["new"]), OTHER_TENSORS)
    os.rename(tmp_path / "staged", tmp_path / ".model.tmp-99999999-efgh")
    with pytest.warns(KeelWarning, match=r"model was missing after an interrupted save; recovered it from "
                                         r"\.model\.tmp-99999999-efgh"):
        recovered, tensors = load_artifact(path)
    assert recovered.notes == ["new"] and torch.equal(tensors["w"], OTHER_TENSORS["w"])
    save_artifact(path, manifest(), TENSORS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the dead process's leftover is gone


def test_saving_through_a_symlink_replaces_the_directory_it_points_at(tmp_path) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    save_artifact(real, manifest(notes=["old"]), TENSORS)
    link.symlink_to(real, target_is_directory=True)
    save_artifact(link, manifest(notes=["new"]), TENSORS)
    assert link.is_symlink() and load_artifact(link)[0].notes == ["new"] == load_artifact(real)[0].notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_a_manifest_loading_would_refuse_is_not_saved(tmp_path, monkeypatch) -> None:
    """keel never writes a keel.json it will not read back (the read limits, checked at save)."""
    monkeypatch.setattr(artifact, "MAX_JSON_VALUES", 50)
    with pytest.raises(ArtifactError, match="more than keel reads back"):
        save_artifact(tmp_path / "model", manifest(notes=[f"note {i}" for i in range(100)]), TENSORS)
    assert not (tmp_path / "model").exists()
