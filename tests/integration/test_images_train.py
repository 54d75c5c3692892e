"""Image columns end to end: keel.fit on a CSV of image paths and on DataFrames of arrays, the errors a
user meets (naming column and row), a pretrained ResNet frozen or fine-tuned, save / load, mixed tables,
the estimators and the CLI. Tiny models (2 epochs, hidden [16], image.dim 8) on sklearn's digits."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.data.io import read_table
from keel.errors import ArtifactError, ConfigError, DataError
from keel.nn.network import TabularNetwork
from keel.nn.vision import ImageEncoder, ImageInput, ResNet
from keel.sklearn import KeelClassifier
from tests.unit.data.test_images import colour, digits, gray, write_image

CONFIG: dict[str, Any] = {"preset": "fast", "training.epochs": 2, "model.hidden": [16], "image.dim": 8}


def digit_table(folder: Path, n_rows: int = 60, name: str = "table.csv") -> Path:
    """A CSV of relative paths to PNGs of the first ``n_rows`` digits (``pictures/<i>.png``), labelled odd / even."""
    images, labels = digits()
    for index in range(n_rows):
        write_image(folder / "pictures" / f"{index}.png", (images[index] * 15).astype(np.uint8))
    table = folder / name
    pd.DataFrame({"pic": [f"pictures/{index}.png" for index in range(n_rows)],
                  "y": np.where(labels[:n_rows] % 2, "odd", "even")}).to_csv(table, index=False)
    return table


def digit_frame(n_rows: int = 80) -> pd.DataFrame:
    """sklearn's digits as a DataFrame column of (8, 8) float arrays, with a number and a category beside them."""
    images, labels = digits()
    rng = np.random.default_rng(0)
    return pd.DataFrame({"digit": list(images[:n_rows]), "noise": rng.normal(size=n_rows),
                         "shade": rng.choice(["light", "dark", "mid"], n_rows), "y": labels[:n_rows] % 3})


def edited(table: Path, row: int, value: str, name: str) -> Path:
    """A copy of ``table`` beside it with data row ``row`` (1-based) of pic set to ``value``."""
    frame = pd.read_csv(table)
    frame.loc[row - 1, "pic"] = value
    frame.to_csv(table.parent / name, index=False)
    return table.parent / name


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[keel.Model, Path, Path]:
    """A model trained on a CSV of image paths, saved; the CSV and the model directory."""
    folder = tmp_path_factory.mktemp("digits")
    table = digit_table(folder)
    model = keel.fit(table, target="y", config=CONFIG, quiet=True, importance=False)
    model.save(folder / "model")
    return model, table, folder / "model"


# ---- a CSV of paths ---------------------------------------------------------------------------------
def test_a_csv_of_image_paths_trains_and_predicts_from_any_working_directory(
        digit_model: tuple[keel.Model, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, table, _ = digit_model
    assert [(feature.name, feature.type) for feature in model.schema.features] == [("pic", "image")]
    assert "image column 'pic': read as 8x8 gray pixels" in model.notes
    assert model.network.spec.images == [ImageInput(channels=1, size=8, dim=8)]
    expected = model.predict_proba(table)
    monkeypatch.chdir(tmp_path)  # relative paths are the CSV's folder's, wherever keel runs
    assert np.array_equal(model.predict_proba(table), expected)
    absolute = pd.read_csv(table).assign(pic=lambda frame: [str(table.parent / path) for path in frame.pic])
    assert np.array_equal(model.predict_proba(absolute), expected)
    monkeypatch.chdir(table.parent)  # a DataFrame's relative paths are the working directory's
    assert np.array_equal(model.predict_proba(pd.read_csv(table)), expected)


def test_a_missing_image_predicts_and_differs_from_a_present_one(digit_model: tuple[keel.Model, Path, Path]) -> None:
    model, table, _ = digit_model
    rows = pd.DataFrame({"pic": [str(table.parent / "pictures" / "0.png"), None, ""]})
    probabilities = model.predict_proba(rows)
    assert np.isfinite(probabilities).all() and np.array_equal(probabilities[1], probabilities[2])
    assert not np.allclose(probabilities[0], probabilities[1])  # the missing flag and zeros are not the image
    features = model.preprocessor.transform(rows).numeric
    assert features[0, -1] == 0 and features[1, -1] == 1 and (features[1, -65:-1] == 0).all()


@pytest.mark.parametrize("problem", ["missing", "text", "truncated"])
def test_a_bad_image_file_is_a_data_error_naming_column_and_row_in_fit_and_predict(
        digit_model: tuple[keel.Model, Path, Path], problem: str) -> None:
    model, table, _ = digit_model
    pictures = table.parent / "pictures"
    if problem == "text":
        (pictures / "text.png").write_text("not an image, only text")
    elif problem == "truncated":
        whole = (pictures / "1.png").read_bytes()
        (pictures / "truncated.png").write_bytes(whole[:len(whole) // 2])
    bad = edited(table, 5, f"pictures/{problem}.png", f"{problem}.csv")
    message = {"missing": "does not exist", "text": "is not an image Pillow can read",
               "truncated": "is damaged and cannot be decoded"}[problem]
    for run in (lambda: keel.fit(bad, target="y", config=CONFIG, quiet=True), lambda: model.predict(bad)):
        with pytest.raises(DataError, match=message) as caught:
            run()
        assert (caught.value.column, caught.value.row, caught.value.file) == ("pic", 5, str(bad))
        assert "image column 'pic' row 5" in str(caught.value) and f"{problem}.png" in str(caught.value)


def test_prediction_refuses_a_cell_that_is_no_image_naming_the_row(
        digit_model: tuple[keel.Model, Path, Path]) -> None:
    model, table, _ = digit_model
    good = str(table.parent / "pictures" / "0.png")
    for cell, message in [(7, "holds int '7'; an image cell is a file path, a file's bytes, an array or a Pillow image"),
                          (np.zeros((2, 2, 5)), r"holds an array of shape \(2, 2, 5\)")]:
        with pytest.raises(DataError, match=message) as caught:
            model.predict(pd.DataFrame({"pic": [good, good, cell]}, dtype=object))
        assert (caught.value.column, caught.value.row) == ("pic", 3)


def test_training_refuses_an_array_of_no_image_shape_naming_the_row() -> None:
    frame = digit_frame(40)
    frame.at[6, "digit"] = np.zeros((2, 2, 5))
    with pytest.raises(DataError, match=r"'digit' row 7 holds an array of shape \(2, 2, 5\)") as caught:
        keel.fit(frame, target="y", config=CONFIG, quiet=True)
    assert (caught.value.column, caught.value.row) == ("digit", 7)


def test_a_declared_image_column_empty_in_every_training_row_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"pic": [None] * 30, "x": np.arange(30.0), "y": [0, 1] * 15})
    with pytest.raises(DataError, match="image column 'pic' is empty in every training row") as caught:
        keel.fit(frame, target="y", config={**CONFIG, "input_features": [{"name": "pic", "type": "image"},
                                                                         {"name": "x", "type": "number"}]}, quiet=True)
    assert caught.value.column == "pic"


def test_strict_refuses_another_size_and_another_channel_count_and_otherwise_the_note_counts_them(
        tmp_path: Path) -> None:
    table = digit_table(tmp_path, 40)
    write_image(tmp_path / "pictures" / "big.png", gray(10))
    write_image(tmp_path / "pictures" / "colour.png", colour(8))
    sized = edited(table, 4, "pictures/big.png", "sized.csv")
    coloured = edited(table, 9, "pictures/colour.png", "coloured.csv")
    strict = {**CONFIG, "image.strict": True, "image.channels": "gray"}
    with pytest.raises(DataError, match=r"row 4 is a 10x10 gray image; most of the column's are 8x8 gray") as caught:
        keel.fit(sized, target="y", config=strict, quiet=True)
    assert (caught.value.column, caught.value.row, caught.value.file) == ("pic", 4, str(sized))
    with pytest.raises(DataError, match=r"row 9 is an 8x8 colour image; most of the column's are 8x8 gray") as caught:
        keel.fit(coloured, target="y", config=strict, quiet=True)
    assert caught.value.row == 9

    both = pd.read_csv(sized)
    both.loc[8, "pic"] = "pictures/colour.png"
    both.loc[20, "pic"] = "pictures/big.png"
    both.loc[30, "pic"] = None  # a blank cell in a CSV is a missing image
    both.to_csv(tmp_path / "both.csv", index=False)
    model = keel.fit(tmp_path / "both.csv", target="y", config={**CONFIG, "image.channels": "gray"}, quiet=True,
                     importance=False)
    notes = " | ".join(model.notes)
    assert "image column 'pic': 2 image(s) resized to match the column's 8x8 images" in notes
    assert "image column 'pic': 1 image(s) converted to match the column's gray images" in notes
    flags = model.preprocessor.transform(read_table(tmp_path / "both.csv")).numeric[:, -1]
    assert np.flatnonzero(flags).tolist() == [30]


# ---- save / load ------------------------------------------------------------------------------------
def largest_list(value: Any) -> int:
    if isinstance(value, dict):
        return max((largest_list(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return max([len(value), *(largest_list(item) for item in value)])
    return 0


def test_a_saved_image_model_loads_and_predicts_the_same_and_its_json_holds_no_pixels(
        digit_model: tuple[keel.Model, Path, Path]) -> None:
    model, table, directory = digit_model
    loaded = keel.load(directory)
    assert np.array_equal(loaded.predict_proba(table), model.predict_proba(table))
    assert loaded.network.spec.images == model.network.spec.images
    document = json.loads((directory / "keel.json").read_text())
    assert document["network"]["images"] == [{"channels": 1, "size": 8, "encoder": "cnn", "dim": 8, "depth": 0,
                                              "augment": "none", "finetune": False}]
    state = next(item for item in document["preprocessing"] if item["kind"] == "image")
    assert (state["size"], state["channels"], state["native"], state["scale"]) == (8, "gray", [8, 8], 255.0)
    assert largest_list(document) < 64  # not one image's 8 x 8 pixels, let alone the training set's


@pytest.mark.parametrize("where, key, value", [
    ("preprocessing", "size", 6), ("network", "size", 6), ("preprocessing", "size", 0),
    ("network", "size", 100_000), ("network", "channels", 3), ("preprocessing", "mean", []),
])
def test_a_tampered_image_description_is_an_artifact_error(
        digit_model: tuple[keel.Model, Path, Path], tmp_path: Path, where: str, key: str, value: Any) -> None:
    _, _, directory = digit_model
    copy = tmp_path / "model"
    shutil.copytree(directory, copy)
    document = json.loads((copy / "keel.json").read_text())
    section = (document["network"]["images"][0] if where == "network"
               else next(item for item in document["preprocessing"] if item["kind"] == "image"))
    section[key] = value
    (copy / "keel.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="the model is corrupt"):
        keel.load(copy)


def test_a_tampered_image_state_is_described_as_the_image_columns(
        digit_model: tuple[keel.Model, Path, Path], tmp_path: Path) -> None:
    _, _, directory = digit_model
    copy = tmp_path / "model"
    shutil.copytree(directory, copy)
    document = json.loads((copy / "keel.json").read_text())
    next(item for item in document["preprocessing"] if item["kind"] == "image")["channels"] = "rgb"
    (copy / "keel.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError) as caught:
        keel.load(copy)
    assert "text projections" not in str(caught.value) and "'pic'" in str(caught.value)


# ---- a pretrained ResNet ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A randomly initialised ResNet-18 with batch norm statistics of its own and a 1000-class fc, as torchvision
    saves one, in a safetensors file."""
    torch.manual_seed(0)
    state = {name: value.clone() for name, value in
             ResNet(ImageInput(channels=3, size=16, encoder="resnet", depth=18)).state_dict().items()}
    for name in state:
        if name.endswith("running_mean"):
            state[name] = torch.randn_like(state[name]) * 0.1
        elif name.endswith("running_var"):
            state[name] = torch.rand_like(state[name]) + 0.5
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
    path = tmp_path_factory.mktemp("resnet") / "resnet18.safetensors"
    save_file({**state, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}, str(path))
    return path, state


@pytest.mark.parametrize("finetune", [False, True])
def test_a_resnet_backbone_is_frozen_or_finetuned_and_the_model_needs_no_file_to_load(
        resnet_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path, finetune: bool) -> None:
    source, state = resnet_file
    path = tmp_path / source.name
    shutil.copy(source, path)
    frame = digit_frame(72)
    model = keel.fit(frame, target="y", quiet=True, importance=False, config={
        **CONFIG, "image.encoder": "resnet", "image.model_path": str(path), "image.size": 16,
        "image.finetune": finetune})
    assert model.network.spec.images == [ImageInput(channels=3, size=16, encoder="resnet", dim=8, depth=18,
                                                    finetune=finetune)]
    assert isinstance(model.network, TabularNetwork) and isinstance(model.network.images[0], ImageEncoder)
    backbone = model.network.images[0].backbone.state_dict()
    assert "fc.weight" not in backbone and set(backbone) == set(state)
    unchanged = {name for name in backbone if torch.equal(backbone[name], state[name])}
    if finetune:
        assert not {"conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean", "bn1.running_var"} & unchanged
    else:  # every weight and every batch norm statistic as the file holds it
        assert unchanged == set(backbone)
    directory = tmp_path / "model"
    model.save(directory)
    path.unlink()  # the weights travel in the model directory
    loaded = keel.load(directory)
    assert np.array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test_weights_of_other_shapes_are_a_config_error_naming_the_file(tmp_path: Path) -> None:
    names = ResNet(ImageInput(channels=3, size=16, encoder="resnet", depth=18)).state_dict()
    path = tmp_path / "small.safetensors"
    save_numpy({name: np.zeros(2, np.float32) for name in names}, str(path))
    with pytest.raises(ConfigError, match=r"image.model_path .*small.safetensors: the file's weights do not fit a "
                       r"ResNet-18: shapes conv1.weight \(2,\) \(expected \(64, 3, 7, 7\)\)"):
        keel.fit(digit_frame(40), target="y", quiet=True,
                 config={**CONFIG, "image.encoder": "resnet", "image.model_path": str(path), "image.size": 16})


@pytest.mark.parametrize("model_path, message", [
    ("missing.safetensors", "image.model_path .*missing.safetensors does not exist"),
    ("weights.pt", "image.model_path .*weights.pt is a PyTorch pickle file"),
])
def test_the_cli_reports_a_bad_backbone_file_in_one_line(digit_model: tuple[keel.Model, Path, Path],
                                                         tmp_path: Path, model_path: str, message: str) -> None:
    (tmp_path / "weights.pt").write_bytes(b"\x80\x04not really a pickle")
    _, table, _ = digit_model
    result = CliRunner().invoke(app, ["train", str(table), "--target", "y", "--output", str(tmp_path / "out"),
                                      "--preset", "fast", "--set", "training.epochs=2", "--set", "image.encoder=resnet",
                                      "--set", f"image.model_path={tmp_path / model_path}", "--quiet"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # notes may come first
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert re.search(message, errors[0]), result.stderr
    assert not (tmp_path / "out" / "keel.json").exists()


# ---- mixed tables, the estimators -------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["fast", "balanced"])
def test_an_image_column_trains_beside_numbers_and_categories(preset: str) -> None:
    frame = digit_frame(90)
    model = keel.fit(frame, target="y", quiet=True, importance=preset == "fast",
                     config={**CONFIG, "preset": preset, "image.augment": "shift_flip"})
    assert {feature.name: feature.type for feature in model.schema.features} == {
        "digit": "image", "noise": "number", "shade": "category"}
    spec = model.network.spec
    assert spec.images == [ImageInput(channels=1, size=8, dim=8, augment="shift_flip")]
    assert spec.numeric_width == model.preprocessor.numeric_width and spec.image_width == 65
    assert spec.embedded_width == spec.numeric_width - 65  # number embeddings (balanced) never see pixels
    if preset == "balanced":
        assert spec.ensemble == 8 and spec.numeric_embedding == "piecewise_linear"
    probabilities = model.predict_proba(frame)
    assert probabilities.shape == (90, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(model.predict_proba(frame), probabilities)  # augmentation is for training only
    if preset == "fast":
        assert model.importance is not None
        names = [feature["name"] for feature in model.importance["features"]]
        assert sorted(names) == ["digit", "noise", "shade"]  # the image column once, not a pixel per entry


def test_the_estimators_take_image_parameters_and_fit_a_dataframe_of_arrays() -> None:
    estimator = KeelClassifier(preset="fast", epochs=2, hidden=(16,), image_size=8, image_dim=8, quiet=True)
    parameters = estimator.get_params()
    assert {"image_encoder", "image_size", "image_channels", "image_strict", "image_augment", "image_dim",
            "image_model_path", "image_finetune"} <= set(parameters)
    assert (parameters["image_size"], parameters["image_dim"]) == (8, 8)
    estimator.set_params(image_size=6, image_augment="flip")
    assert estimator.get_params()["image_size"] == 6
    frame = digit_frame(60)
    X, y = frame.drop(columns=["y"]), frame["y"]
    estimator.fit(X, y)
    transform = estimator.model_.preprocessor.images[0]
    assert (transform.size, transform.augment, transform.dim) == (6, "flip", 8)
    assert estimator.model_.network.spec.images == [ImageInput(channels=1, size=6, dim=8, augment="flip")]
    assert estimator.predict(X).shape == (60,) and set(estimator.classes_) == {0, 1, 2}


@pytest.mark.parametrize("finetune", [False, True])
def test_a_resnet_image_column_exports_with_its_backbone(tmp_path: Path, finetune: bool) -> None:
    """The ResNet (frozen or fine-tuned) is in the ONNX graph, which predicts what keel predicts."""
    torch.manual_seed(0)
    save_file(ResNet(ImageInput(channels=3, size=16, encoder="resnet", depth=18)).state_dict(),
              str(tmp_path / "resnet18.safetensors"))
    images = load_digits().images[:120]
    frame = pd.DataFrame({"pic": list(images), "y": load_digits().target[:120] % 2})
    model = keel.fit(frame, target="y", quiet=True, importance=False, config={
        "preset": "fast", "training.epochs": 1, "model.hidden": [8], "image.encoder": "resnet",
        "image.model_path": str(tmp_path / "resnet18.safetensors"), "image.size": 16, "image.finetune": finetune})
    report = model.export(output=tmp_path / "m.onnx", data=frame.head(40))
    assert report.parity["ok"] and report.parity["max_difference"] < 1e-5


def test_info_describes_a_frozen_resnet_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_file(ResNet(ImageInput(channels=3, size=16, encoder="resnet", depth=18)).state_dict(),
              str(tmp_path / "resnet18.safetensors"))
    frame = pd.DataFrame({"pic": list(load_digits().images[:60]), "y": load_digits().target[:60] % 2})
    model = keel.fit(frame, target="y", quiet=True, importance=False, config={
        "preset": "fast", "training.epochs": 1, "model.hidden": [8], "image.encoder": "resnet",
        "image.model_path": str(tmp_path / "resnet18.safetensors"), "image.size": 16})
    from keel.describe import describe_network

    encoders = describe_network(model)["encoders"]
    assert encoders == [{"column": "pic", "encoder": "ResNet-18 (frozen), 16x16 rgb", "parameters": 11_176_512,
                         "trainable_parameters": 0}]
