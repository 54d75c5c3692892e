"""Audit s10 of 1cf19bf (the first note's "stratified by class"), 089882b (the empty-fold error names the preset)
and f20ad56 (bench/accuracy.py stamps results with their CPU)."""

from __future__ import annotations

import builtins
import io
import json
import sys

import numpy as np
import pandas as pd
import pytest

import keel
from keel.config import PRESETS, from_preset, load_config
from keel.data.split import _take, split_rows
from keel.errors import ConfigError
from tests.conftest import FAST, ROOT, make_classification_frame

ONE_EPOCH = {**FAST, "training.epochs": 1}


# ---------------------------------------------------------------- 1cf19bf: Split.stratified


def test_a_class_stratifiable_on_one_side_only_is_not_called_stratified() -> None:
    """Guard: the test part drawn class by class but the validation part not (a class left with one row after the
    test draw): the split is not "stratified"."""
    found = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        classes = np.concatenate([np.repeat([0, 1], 40), np.full(int(rng.integers(2, 4)), 2)])
        rows = np.arange(len(classes))
        rest, test_rows, test_drawn = _take(rows, 0.3, seed, classes)
        _, _, validation_drawn = _take(rest, 0.2, seed + 1, classes[rest])
        if test_drawn and not validation_drawn and len(test_rows):
            found += 1
            split = split_rows(len(classes), validation=0.2, test=0.3, seed=seed, classes=classes)
            assert not split.stratified
    assert found  # the case was reached


@pytest.mark.parametrize("how", ["split_by", "order_by"])
def test_grouped_and_ordered_classification_runs_never_say_stratified(how: str) -> None:
    """Guard: a grouped or time-ordered split of a classification target is described by how it was drawn."""
    frame = make_classification_frame(300)
    frame["site"] = np.arange(len(frame)) % 10
    config = {**ONE_EPOCH, f"training.{how}": "site"}
    model = keel.fit(frame, target="label", config=config, quiet=True, importance=False)
    assert "stratified" not in model.notes[0]
    assert ("whole groups of 'site'" if how == "split_by" else "the latest rows by 'site'") in model.notes[0]


def test_a_test_file_run_says_stratified_only_from_its_validation_draw() -> None:
    """Guard: with a --test file only the validation rows are drawn: "stratified by class" where they were."""
    model = keel.fit(make_classification_frame(300), target="label", config=ONE_EPOCH, quiet=True, importance=False,
                     test=make_classification_frame(60, seed=1))
    assert "(a random split, stratified by class; test rows from the test data)" in model.notes[0]


# ---------------------------------------------------------------- 089882b: from_preset


def test_the_fast_preset_never_claims_a_value() -> None:
    """Guard: fast is the fields' own defaults (an empty preset): nothing is ever "what preset fast sets"."""
    assert PRESETS["fast"] == {}
    config = load_config({"preset": "fast", "training.bagging": 5})
    assert from_preset(config, "training", "bagging") == ""
    assert from_preset(load_config({"preset": "fast"}), "training", "epochs") == ""


def test_a_value_the_user_wrote_differently_is_not_the_preset_s() -> None:
    """Guard: best sets bagging 5; a user's 4 (or 3) is never attributed to it, nor balanced's auto to a number."""
    assert from_preset(load_config({"preset": "best"}), "training", "bagging") == " (what preset best sets)"
    assert from_preset(load_config({"preset": "best", "training.bagging": 4}), "training", "bagging") == ""
    assert from_preset(load_config({"preset": "balanced", "training.bagging": 5}), "training", "bagging") == ""


def test_a_value_the_user_wrote_equal_to_the_preset_s_reads_as_the_preset_s() -> None:
    """Kept as documented behaviour (the audit's cosmetic finding, not changed): from_preset compares the merged
    value with the preset's, so a best-preset user who writes training.bagging: 5 reads "(what preset best sets)",
    which is true; telling the two apart would need the user's own keys carried on the Config, whose equality
    (dump, load, compare) pydantic extends to private attributes."""
    config = load_config({"preset": "best", "training.bagging": 5})
    assert from_preset(config, "training", "bagging") == " (what preset best sets)"
    assert from_preset(load_config({"preset": "best", "training.bagging": 4}), "training", "bagging") == ""


def _big_grouped_csv(path, n_rows: int = 40_000) -> str:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=n_rows), "y": rng.normal(size=n_rows), "site": np.arange(n_rows) % 3})
    frame["label"] = np.where(frame.x + frame.y > 0, "a", "b")
    frame.to_csv(path, index=False)
    return str(path)


def test_a_streamed_run_names_the_preset_only_for_the_preset_s_value(tmp_path) -> None:
    """Guard: streamed, preset best's 5 bagged networks over 3 split_by groups: the error says the 5 came from the
    preset; a 4 the user wrote is named alone."""
    path = _big_grouped_csv(tmp_path / "big.csv")
    config = {"preset": "best", "training.split_by": "site", "data.memory_budget": "1MiB", "training.epochs": 1}
    with pytest.raises(ConfigError, match=r"training.bagging is 5 \(what preset best sets\), but [1-4] of its folds"):
        keel.fit(path, target="label", quiet=True, importance=False, config=config)
    with pytest.raises(ConfigError, match=r"training.bagging is 4, but [1-3] of its folds"):
        keel.fit(path, target="label", quiet=True, importance=False, config={**config, "training.bagging": 4})


# ---------------------------------------------------------------- f20ad56: bench/accuracy.py's CPU stamps


sys.path.insert(0, str(ROOT / "bench"))
import accuracy  # noqa: E402
import results  # noqa: E402

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f amx_tile
processor\t: 1
model name\t: Some Other Name
flags\t\t: fpu sse2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def _with_cpuinfo(monkeypatch: pytest.MonkeyPatch, text: str | None) -> None:
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == "/proc/cpuinfo":
            if text is None:
                raise FileNotFoundError(file)
            return io.StringIO(text)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("text, expected", [
    (X86, "Intel(R) Xeon(R) Platinum 8480+, {cores} cores, AMX"),
    (ARM, "aarch64, {cores} cores"),
    (None, "arm, {cores} cores"),  # macOS: no /proc; platform.processor() says "arm"
])
def test_machine_reads_the_first_processor_and_survives_other_cpuinfos(monkeypatch, text, expected) -> None:
    """Guard: the first processor's model name and flags (AMX before AVX-512); an ARM cpuinfo (no "model name",
    "Features" not "flags") or none at all gives the platform's name alone, without error."""
    import os
    import platform

    monkeypatch.setattr(platform, "processor", lambda: "arm" if text is None else "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64" if text == ARM else "x86_64")
    _with_cpuinfo(monkeypatch, text)
    cores = len(os.sched_getaffinity(0))
    assert results.machine() == expected.format(cores=cores)


def test_the_reference_reruns_only_when_cached_from_another_cpu(monkeypatch, tmp_path) -> None:
    """Guard of main()'s condition: with --reference, the first seed's reference is rerun where the cache holds
    none, one without a CPU stamp or one from another CPU, and kept where it is stamped with this CPU; later seeds
    never run it. Every result written is stamped."""
    here, there = "CPU A, 2 cores, AVX2", "CPU B, 2 cores, AMX"
    cache_path = tmp_path / "accuracy.json"
    ran: list[tuple[str, int]] = []

    def fake_tool(name):  # type: ignore[no-untyped-def]
        def tool(train, test, target, task, seed):  # type: ignore[no-untyped-def]
            ran.append((name, seed))
            return np.zeros(len(test)), 1.0
        return tool

    class Stop(Exception):
        pass

    frame = pd.DataFrame({"x": np.arange(50.0), "y": np.arange(50.0)})
    monkeypatch.setattr(accuracy, "CACHE", cache_path)
    monkeypatch.setattr(accuracy, "MACHINE", here)
    monkeypatch.setattr(accuracy, "load_dataset", lambda name: (frame, "y", "regression"))
    monkeypatch.setattr(accuracy, "score", lambda test, target, task, predictions: {"r2": 0.5})
    monkeypatch.setattr(accuracy, "reference_tool", lambda revision: fake_tool(accuracy.REFERENCE))
    monkeypatch.setattr(accuracy, "summarize", lambda *args: (_ for _ in ()).throw(Stop()))
    monkeypatch.setitem(accuracy.TOOLS, "lightgbm", fake_tool("lightgbm"))
    names = list(accuracy.DATASETS)[:4]
    cached = {names[0]: None, names[1]: {"r2": 0.4, "seconds": 9.0}, names[2]: {"r2": 0.4, "seconds": 9.0, "cpu": there},
              names[3]: {"r2": 0.4, "seconds": 9.0, "cpu": here}}
    cache_path.write_text(json.dumps({f"{accuracy.REFERENCE}/{name}/0": result
                                      for name, result in cached.items() if result is not None}))
    monkeypatch.setattr(sys, "argv", ["accuracy.py", "--datasets", ",".join(names), "--tools", "lightgbm",
                                      "--seeds", "0,1", "--reference", "HEAD"])
    with pytest.raises(Stop):
        accuracy.main()
    reference_runs = sorted(name for name, seed in ran if name == accuracy.REFERENCE and seed == 0)
    assert not any(name == accuracy.REFERENCE and seed != 0 for name, seed in ran)
    assert len(reference_runs) == 3  # names[0..2], not names[3]
    cache = json.loads(cache_path.read_text())
    assert all(result["cpu"] == here for key, result in cache.items())
    assert cache[f"{accuracy.REFERENCE}/{names[3]}/0"]["seconds"] == 9.0  # kept as it was
