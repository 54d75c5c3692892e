"""export(): the combinations of pruning, quantization, output and data, and what each writes."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import keel
from keel.errors import ConfigError
from keel.runtime import Predictor
from tests.conftest import FAST, make_classification_frame, make_regression_frame

SMALL = {**FAST, "model.hidden": [16, 16], "training.epochs": 10}


@pytest.fixture
def saved(tmp_path: Path) -> keel.model.Model:
    model = keel.fit(make_classification_frame(), target="label", config=SMALL, quiet=True)
    model.save(tmp_path / "m")
    return model


def names(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def widths(model: keel.model.Model) -> list[int]:
    return list(model.network.spec.hidden)


def test_prune_saves_a_smaller_model_beside_the_original_and_measures_both(saved, tmp_path) -> None:
    before = names(tmp_path / "m")
    report = saved.export(prune=0.5, data=make_classification_frame(seed=1))
    assert names(tmp_path / "m") == before  # the original is untouched
    pruned = keel.load(tmp_path / "m-pruned")
    assert widths(pruned) == [8, 8] and widths(saved) == [16, 16]
    assert report.files == [tmp_path / "m-pruned" / "model.onnx"] and report.model.path == tmp_path / "m-pruned"
    rows = {row["key"]: row for row in report.compression["rows"]}
    assert rows["parameters"]["ratio"] < 0.6 and rows["metric_value"]["measure"] == "accuracy"
    stored = json.loads((tmp_path / "m-pruned" / "reports" / "model.onnx.json").read_text())
    assert stored["pruning"]["amount"] == 0.5 and stored["compression"]["rows"] == report.compression["rows"]


def test_prune_and_int8_attach_both_files_and_compare_the_unpruned_float_with_the_pruned_int8(saved, tmp_path) -> None:
    report = saved.export(prune=0.5, quantize="int8", data=make_classification_frame(seed=1))
    assert names(tmp_path / "m-pruned") >= ["keel.json", "model.int8.onnx", "model.onnx"]
    assert report.files == [tmp_path / "m-pruned" / "model.onnx", tmp_path / "m-pruned" / "model.int8.onnx"]
    compression = report.compression
    unpruned_parameters = sum(p.numel() for p in saved.network.parameters())
    assert compression["original"]["parameters"] >= unpruned_parameters  # the unpruned float file
    assert compression["compressed"]["parameters"] < unpruned_parameters * 0.6
    assert "ok" not in report.quantized_parity  # int8 is reported, not held to the tolerance
    stored = {name: json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "m-pruned" / name)).metadata_props}
                               ["keel.parity"]) for name in ("model.onnx", "model.int8.onnx")}
    assert stored["model.onnx"] == report.parity and stored["model.onnx"]["ok"]
    assert stored["model.int8.onnx"] == report.quantized_parity  # its own difference, not the float file's
    assert report.quantized_parity["max_difference"] > report.parity["max_difference"]
    Predictor.load(tmp_path / "m-pruned")  # the float export is there for the predictor too
    Predictor.load(tmp_path / "m-pruned", file="model.int8.onnx")


def test_unstructured_pruning_says_the_file_is_no_smaller_and_structured_does_not(saved, tmp_path) -> None:
    rows = make_classification_frame(seed=1)
    report = saved.export(prune=0.5, prune_method="unstructured", output=tmp_path / "u.onnx", data=rows)
    sizes = {row["key"]: row["ratio"] for row in report.compression["rows"]}
    note = next(note for note in report.notes if note.startswith("unstructured pruning zeroes weights"))
    assert f"{sizes['size_bytes']:.2f}x the unpruned one's size and {sizes['compressed_bytes']:.2f}x zipped" in note
    assert sizes["compressed_bytes"] < sizes["size_bytes"] - 0.05  # the zeros zip away; the matrices stay
    structured = saved.export(prune=0.5, output=tmp_path / "s.onnx", data=rows)
    assert not any("unstructured" in note for note in structured.notes)


def test_prune_with_output_writes_only_the_file(saved, tmp_path) -> None:
    report = saved.export(prune=0.5, output=tmp_path / "out" / "small.onnx")
    assert report.files == [tmp_path / "out" / "small.onnx"] and not (tmp_path / "m-pruned").exists()
    assert report.model.path is None and widths(report.model) == [8, 8]


def test_static_int8_calibrates_on_the_rows(saved, tmp_path) -> None:
    saved.export(quantize="int8", static=True, data=make_classification_frame(seed=1))
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m" / "model.int8.onnx")).metadata_props}
    assert props["keel.quantization"] == "int8-static"
    assert "model.onnx" in names(tmp_path / "m")


def test_fine_tuning_reaches_the_pruned_model_fixed_or_auto(saved, tmp_path) -> None:
    rows = make_classification_frame(seed=1)
    report = saved.export(prune=0.5, finetune_epochs=2, data=rows)
    assert report.pruning["finetune_epochs"] == 2
    assert "fine-tuned 2 epoch(s)" in keel.load(tmp_path / "m-pruned").notes[-1]
    report = saved.export(prune="auto", max_drop=0.05, finetune_epochs=2, data=rows,
                          pruned_output=tmp_path / "auto")
    assert report.pruning["auto"] and report.pruning["amount"] > 0 and report.pruning["finetune_epochs"] == 2
    assert "fine-tuned 2 epoch(s)" in keel.load(tmp_path / "auto").notes[-1]


def test_auto_with_nothing_in_budget_exports_the_original_and_says_so(tmp_path) -> None:
    # A regressor's RMSE rises with every neuron taken (measured: +8% at 0.1), so no share fits 1e-9.
    model = keel.fit(make_regression_frame(), target="price", config={**FAST, "model.hidden": [16, 16],
                                                                      "training.epochs": 30}, quiet=True)
    model.save(tmp_path / "r")
    report = model.export(prune="auto", max_drop=1e-9, data=make_regression_frame(seed=1))
    assert report.pruning is None and not (tmp_path / "r-pruned").exists()
    assert report.model is model and model.path == tmp_path / "r"
    assert report.files == [tmp_path / "r" / "model.onnx"]
    assert any("no pruning kept the metric" in note for note in report.notes)


def test_an_unknown_class_or_no_target_in_the_rows_only_skips_the_metric(saved) -> None:
    rows = make_classification_frame(seed=1)
    rows.loc[0, "label"] = "omega"
    report = saved.export(quantize="int8", data=rows)
    assert "metric" not in report.compression and any("omega" in note for note in report.notes)
    report = saved.export(quantize="int8", data=rows.drop(columns="label"))
    assert any("pass labelled rows" in note for note in report.notes)


@pytest.mark.parametrize("options, match", [
    ({"output": "m/model.onnx"}, "inside the model directory"),
    ({"output": "m"}, "is a directory"),
    ({"prune": 0.5, "pruned_output": "m"}, "the model's own directory"),
    ({"finetune_epochs": 2, "data": "rows"}, "^--finetune-epochs only applies with --prune; .* leave it out"),
    ({"max_drop": 0.01}, "only applies with --prune"),
    ({"pruned_output": "elsewhere"}, "only applies with --prune"),
    ({"prune_method": "unstructured"}, "--prune-method unstructured only applies with --prune"),
    ({"max_drop": 0.01, "prune_method": "unstructured"}, "--max-drop and --prune-method unstructured only apply with "
                                                          "--prune; .* leave them out"),
    ({"prune": 0.5, "max_drop": 0.01}, "budget of --prune auto"),
    ({"prune": 0.5, "pruned_output": "p", "output": "f.onnx"}, "exclude each other"),
    ({"prune": 0.5, "finetune_epochs": 1.5}, "whole number"),
    ({"prune": "auto", "data": "rows", "max_drop": "0.01"}, "relative metric drop"),
])
def test_combinations_that_cannot_work_are_refused_before_any_work(saved, tmp_path, monkeypatch, options, match) -> None:
    monkeypatch.chdir(tmp_path)
    options = {key: (make_classification_frame() if value == "rows" else value) for key, value in options.items()}
    before = names(tmp_path)
    with pytest.raises(ConfigError, match=match):
        saved.export(**options)
    assert names(tmp_path) == before


def test_int8_and_prune_reports_give_the_same_file_the_same_original_size(saved) -> None:
    """Both reports' "original" is the float export as it ships, its parity metadata included: the prune report
    measured the unpruned file without it (1,412,026 bytes against int8's 1,412,240 for one model)."""
    frame = make_classification_frame(seed=1)
    int8 = saved.export(quantize="int8", data=frame).compression["original"]["size_bytes"]
    pruned = saved.export(prune=0.5, data=frame).compression["original"]["size_bytes"]
    assert abs(int8 - pruned) <= 16, (int8, pruned)  # the parity figures' digits may differ by a few bytes


def test_a_deleted_export_is_detached_at_load_and_made_again(saved, tmp_path) -> None:
    # Deleting model.onnx (or leaving it out of a copy) made the model unloadable, and every message said to run
    # `keel export`, which refused the directory as incomplete too.
    from keel.artifact import read_manifest
    from keel.errors import ArtifactError, KeelWarning

    saved.export(quantize="int8", data=make_classification_frame(seed=1))
    directory = tmp_path / "m"
    for name in ("model.onnx", "model.int8.onnx", "reports/model.int8.onnx.json"):
        (directory / name).unlink()
    with pytest.warns(KeelWarning, match=r"model.int8.onnx, model.onnx, reports/model.int8.onnx.json listed in "
                                         r"keel.json but missing; read without them \(to make them again: `keel export "
                                         rf"{directory}`; `keel export {directory} --quantize int8`\)"):
        loaded = keel.load(directory)
    frame = make_classification_frame(seed=2)
    assert (loaded.predict(frame) == saved.predict(frame)).all()
    loaded.export()  # attaches model.onnx again, and no longer lists what is gone
    listed = set(read_manifest(directory).files)  # verified: every listed file is there
    assert {"model.onnx", "reports/model.onnx.json"} <= listed and "model.int8.onnx" not in listed
    assert (Predictor.load(directory).predict(frame) == saved.predict(frame)).all()
    with pytest.raises(ArtifactError, match=rf"holds no ONNX export named 'model.int8.onnx'.*`keel export {directory}` "
                                            r"--quantize int8"):
        Predictor.load(directory, file="model.int8.onnx")
    # A file keel cannot make again stays the model's own: missing, the model is refused as before.
    (directory / "predictions.safetensors").unlink()
    with pytest.raises(ArtifactError, match="is incomplete: predictions.safetensors is missing"):
        keel.load(directory)
