"""Image columns: schema inference, the image transform (size, channels, scale, statistics, missing cells, errors)
and reading a pretrained backbone's file. Real files on disk, written with Pillow; no training here
(tests/integration/test_images_train.py trains)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from safetensors.numpy import save_file
from sklearn.datasets import load_digits

from keel.config import ImageConfig, load_config
from keel.data.images import AUTO_MAX_SIZE, IMAGENET_MEAN, ImageTransform, read_backbone
from keel.data.io import read_table
from keel.data.schema import infer_schema
from keel.errors import ConfigError, DataError


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits: (1797, 8, 8) float64 images of 0..16, and their labels."""
    data = load_digits()
    return data.images, data.target


def write_image(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    """Save ``array`` (uint8) as an image file (the format from the suffix) and return the path as text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return str(path)


def gray(side: int, seed: int = 0, width: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, width or side), dtype=np.uint8)


def colour(side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def fitted(values: list, settings: ImageConfig | None = None, source: str | None = None) -> ImageTransform:
    return ImageTransform("pic", settings).fit(pd.Series(values, dtype=object), source)


def transformed(transform: ImageTransform, values: list, source: str | None = None) -> np.ndarray:
    out, unseen = transform.transform(pd.Series(values, dtype=object), source)
    assert unseen == 0 and out.dtype == np.float32 and out.shape == (len(values), transform.width)
    return out


def raw_pixels(transform: ImageTransform, out: np.ndarray) -> np.ndarray:
    """The transform's output un-standardised: (n, channels, size, size) values in [0, 1]."""
    pixels = out[:, :-1].reshape(len(out), transform.bands, transform.size, transform.size)
    return pixels * np.asarray(transform.std)[:, None, None] + np.asarray(transform.mean)[:, None, None]


def types(frame: pd.DataFrame, **config: object) -> dict[str, str]:
    schema = infer_schema(frame, load_config({"target": "y", **config}))
    return {feature.name: feature.type for feature in schema.features}


# ---- schema ---------------------------------------------------------------------------------------
def test_a_csv_column_of_png_and_jpg_paths_is_inferred_image(tmp_path: Path) -> None:
    for index in range(6):
        suffix = ".jpg" if index % 2 else ".PNG"  # any case
        write_image(tmp_path / "pictures" / f"{index}{suffix}", colour(8, index) if index % 2 else gray(8, index))
    pd.DataFrame({"pic": [f"pictures/{index}{'.jpg' if index % 2 else '.PNG'}" for index in range(6)],
                  "size": np.arange(6.0), "y": [0, 1] * 3}).to_csv(tmp_path / "table.csv", index=False)
    schema = infer_schema(read_table(tmp_path / "table.csv"), load_config({"target": "y"}))
    assert {feature.name: feature.type for feature in schema.features} == {"pic": "image", "size": "number"}
    assert any("'pic' holds image file names; read as images" in note for note in schema.notes)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (8, 8, 3), (8, 8, 4)])
def test_a_dataframe_column_of_arrays_is_inferred_image(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"pic": [rng.random(shape) for _ in range(6)], "y": [0, 1] * 3})
    frame.loc[2, "pic"] = None
    schema = infer_schema(frame, load_config({"target": "y"}))
    assert schema.features[0].type == "image"
    assert any("'pic' holds arrays" in note for note in schema.notes)


def test_a_column_of_image_names_with_a_typo_is_images_and_one_of_mixed_files_is_not() -> None:
    names = [f"scan{index}.png" for index in range(19)] + ["scan19.pn"]  # 95%: a mistyped name
    assert types(pd.DataFrame({"pic": names, "y": [0, 1] * 10}))["pic"] == "image"
    mixed = [f"scan{index}.png" for index in range(9)] + ["notes.txt"]  # 90%: other files beside the images
    assert types(pd.DataFrame({"pic": mixed, "y": [0, 1] * 5}))["pic"] != "image"
    assert types(pd.DataFrame({"pic": mixed[:9] + ["scan9.png"], "y": [0, 1] * 5}))["pic"] == "image"


def test_a_declared_image_column_reads_files_whatever_their_names(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"scan-{index}.dat") for index in range(4)]
    for index, path in enumerate(paths):  # PNG bytes under another name: Pillow reads the format from the bytes
        Image.fromarray(gray(8, index)).save(path, format="PNG")
    frame = pd.DataFrame({"pic": paths, "y": [0, 1, 0, 1]})
    assert types(frame).get("pic") != "image"
    assert types(frame, input_features=[{"name": "pic", "type": "image"}]) == {"pic": "image"}
    transform = fitted(paths)
    assert transform.native == (8, 8)
    assert np.allclose(raw_pixels(transform, transformed(transform, paths))[1, 0], gray(8, 1) / 255, atol=1e-6)


def test_an_empty_string_among_paths_is_a_missing_image_not_a_category() -> None:
    names = [f"scan{index}.png" for index in range(9)] + [""]
    assert types(pd.DataFrame({"pic": names, "y": [0, 1] * 5}))["pic"] == "image"


def test_a_column_of_flat_arrays_is_a_data_error_not_a_crash() -> None:
    frame = pd.DataFrame({"pic": list(digits()[0][:6].reshape(6, 64)), "y": [0, 1] * 3})
    try:
        kind = types(frame).get("pic")
    except DataError as error:
        assert error.column == "pic"
    else:
        assert kind != "image"


# ---- size, channels, scale, statistics ---------------------------------------------------------------
@pytest.mark.parametrize("sides, expected", [
    ([(16, 16)] * 3 + [(20, 20)] * 2, 16),  # the most common size, square and small: kept
    ([(8, 8)] * 2 + [(12, 12)] * 3, 12),
    ([(64, 64)] * 2, 64),
    ([(100, 100)] * 2, AUTO_MAX_SIZE),  # square but larger than 64
    ([(30, 20)] * 3 + [(16, 16)], AUTO_MAX_SIZE),  # most are not square
])
def test_size_auto_is_the_most_common_square_side_up_to_64(sides: list[tuple[int, int]], expected: int) -> None:
    images = [gray(height, index, width) for index, (height, width) in enumerate(sides)]
    transform = fitted(images)
    assert transform.size == expected and transform.width == expected * expected + 1
    height, width = max(sides, key=sides.count)
    assert transform.native == (width, height)
    assert raw_pixels(transform, transformed(transform, images)).shape == (len(images), 1, expected, expected)


def test_a_set_size_wins_and_every_image_is_resized_to_it() -> None:
    images = [gray(16, index) for index in range(3)] + [gray(10, 9)]
    transform = fitted(images, ImageConfig(size=6))
    assert transform.size == 6 and transform.native == (16, 16)
    assert transformed(transform, images).shape == (4, 6 * 6 + 1)


@pytest.mark.parametrize("modes, expected", [
    (["L", "L", "L"], "gray"),
    (["L", "LA", "1"], "gray"),  # alpha is not colour, nor is black and white
    (["L", "L", "RGB"], "rgb"),  # one colour image makes the column rgb
    (["L", "RGBA"], "rgb"),
])
def test_channels_auto_is_rgb_when_any_training_image_has_colour(tmp_path: Path, modes: list[str],
                                                                 expected: str) -> None:
    paths = [write_image(tmp_path / f"{index}.png", colour(8, index), mode) for index, mode in enumerate(modes)]
    transform = fitted(paths)
    assert transform.channels == expected
    assert transform.bands == (3 if expected == "rgb" else 1) and len(transform.mean) == transform.bands
    assert transformed(transform, paths).shape == (len(paths), transform.bands * 64 + 1)
    assert fitted(paths, ImageConfig(channels="gray")).bands == 1  # a set value wins


def test_pixels_are_standardised_per_channel_with_the_training_images_statistics() -> None:
    rng = np.random.default_rng(0)
    images = [np.stack([rng.integers(150, 256, (8, 8)), rng.integers(0, 50, (8, 8)), rng.integers(0, 256, (8, 8))],
                       axis=2).astype(np.uint8) for _ in range(40)]
    transform = fitted(images)
    assert transform.channels == "rgb"
    red, green, _ = transform.mean
    assert red > 0.5 > green  # each channel its own statistics
    pixels = transformed(transform, images)[:, :-1].reshape(40, 3, 64)
    assert np.allclose(pixels.mean(axis=(0, 2)), 0, atol=1e-4)
    assert np.allclose(pixels.std(axis=(0, 2)), 1, atol=1e-3)
    # Rows transformed later are scaled with the training statistics, not their own.
    brighter = transformed(transform, [np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8) for image in images])
    assert brighter[:, :-1].reshape(40, 3, 64)[:, 1].mean() > 0.5


def test_a_constant_channel_gets_a_spread_of_one_not_a_division_by_zero() -> None:
    transform = fitted([np.full((8, 8), 7, np.uint8)] * 3)
    assert transform.std == [1.0] and np.isfinite(transformed(transform, [np.zeros((8, 8), np.uint8)])).all()


@pytest.mark.parametrize("missing", [None, "", "   ", np.nan, float("nan")])
def test_a_missing_cell_is_zeros_and_a_flag(tmp_path: Path, missing: object) -> None:
    paths = [write_image(tmp_path / f"{index}.png", gray(8, index)) for index in range(3)]
    transform = fitted([*paths, missing])
    assert transform.native == (8, 8)  # the missing cell took no part in the statistics
    out = transformed(transform, [paths[0], missing, paths[1]])
    assert out[:, -1].tolist() == [0.0, 1.0, 0.0]
    assert (out[1, :-1] == 0).all()
    assert out[0, :-1].any()


@pytest.mark.parametrize("dtype", ["string", "object"])
def test_pandas_na_is_a_missing_image(tmp_path: Path, dtype: str) -> None:
    paths = [write_image(tmp_path / f"{index}.png", gray(8, index)) for index in range(3)]
    series = pd.Series([*paths, pd.NA], dtype=dtype)
    out, _ = ImageTransform("pic").fit(series).transform(series)
    assert out[:, -1].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_relative_paths_are_read_from_the_data_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    for index in range(3):
        write_image(folder / "pictures" / f"{index}.png", gray(8, index))
    (folder / "table.csv").write_text("pic\n")  # the source of a table is a file that exists
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "other.csv").write_text("pic\n")
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    relative = [f"pictures/{index}.png" for index in range(3)]
    transform = fitted(relative, source=str(folder / "table.csv"))
    absolute = [str(folder / name) for name in relative]
    assert np.array_equal(transformed(transform, relative, str(folder / "table.csv")), transformed(transform, absolute))
    assert np.allclose(raw_pixels(transform, transformed(transform, absolute))[2, 0], gray(8, 2) / 255, atol=1e-6)
    with pytest.raises(DataError, match="does not exist"):
        transformed(transform, relative, str(tmp_path / "other.csv"))


def test_relative_paths_in_a_dataframe_are_read_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(3):
        write_image(tmp_path / "pictures" / f"{index}.png", gray(8, index))
    monkeypatch.chdir(tmp_path)
    relative = [f"pictures/{index}.png" for index in range(3)]
    source = read_table(pd.DataFrame({"pic": relative})).attrs["source"]  # what a DataFrame's rows carry
    transform = fitted(relative, source=source)
    assert np.allclose(raw_pixels(transform, transformed(transform, relative, source))[0, 0], gray(8, 0) / 255,
                       atol=1e-6)


@pytest.mark.parametrize("images, scale", [
    (list(digits()[0][:20]), 16.0),  # floats of 0..16: the largest value is full intensity
    ([(image * 15).astype(np.uint8) for image in digits()[0][:20]], 255.0),  # uint8: 255 is, whatever they hold
    ([image / 16 for image in digits()[0][:20]], 1.0),  # floats in [0, 1]
])
def test_arrays_are_scaled_by_their_type(images: list[np.ndarray], scale: float) -> None:
    transform = fitted(images)
    assert transform.scale == scale and transform.size == 8 and transform.channels == "gray"
    pixels = raw_pixels(transform, transformed(transform, images))
    assert np.allclose(pixels[:, 0], np.stack(images) / scale, atol=1e-5)
    assert pixels.max() <= 1 + 1e-5


def test_a_colour_array_read_as_gray_matches_pillows_conversion() -> None:
    images = [colour(8, index) for index in range(3)]
    transform = fitted(images, ImageConfig(channels="gray"))
    pillow = np.stack([np.asarray(Image.fromarray(image).convert("L"), np.float32) / 255 for image in images])
    assert np.allclose(raw_pixels(transform, transformed(transform, images))[:, 0], pillow, atol=1.5 / 255)


def test_a_fitted_transform_round_trips_through_its_state(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{index}.png", colour(8, index)) for index in range(3)] + [None]
    transform = fitted(paths, ImageConfig(augment="flip", dim=12))
    again = ImageTransform.from_state(transform.state())
    assert again.state() == transform.state() and again.problem() is None
    assert np.array_equal(transformed(again, paths), transformed(transform, paths))


def test_a_nan_pixel_is_refused_or_kept_from_spoiling_the_other_images() -> None:
    images = [image.copy() for image in digits()[0][:5]]
    images[0][3, 3] = np.nan
    try:
        transform = fitted(images)
        out = transformed(transform, images)
    except DataError as error:
        assert error.column == "pic" and error.row == 1
    else:
        assert np.isfinite(out[1:]).all()


def test_a_16_bit_png_keeps_its_intensities(tmp_path: Path) -> None:
    values = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63,000 of 65,535
    paths = [write_image(tmp_path / f"{index}.png", values) for index in range(2)]
    transform = fitted(paths)
    assert np.allclose(raw_pixels(transform, transformed(transform, paths))[0, 0], values / 65535, atol=0.01)


# ---- errors -----------------------------------------------------------------------------------------
def error_of(values: list, settings: ImageConfig | None = None, train: list | None = None) -> DataError:
    """The DataError transforming ``values`` raises (fitted on ``train``, else on ``values``)."""
    with pytest.raises(DataError) as caught:
        transform = fitted(train if train is not None else values, settings)
        transformed(transform, values)
    return caught.value


def test_a_missing_file_names_the_column_row_and_the_path_looked_for(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{index}.png", gray(8)) for index in range(3)]
    error = error_of([paths[0], None, str(tmp_path / "gone.png")], train=paths)
    assert (error.column, error.row) == ("pic", 3)
    assert "does not exist" in str(error) and "gone.png" in str(error) and "leave the cell empty" in str(error)


def test_a_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{index}.png", gray(8)) for index in range(3)]
    (tmp_path / "fake.png").write_text("id,name\n1,not a picture\n")
    error = error_of([*paths, str(tmp_path / "fake.png")])
    assert (error.column, error.row) == ("pic", 4)
    assert "fake.png is not an image Pillow can read" in str(error)


def test_a_truncated_png_is_damaged(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{index}.png", gray(32, index)) for index in range(3)]
    whole = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(whole[:len(whole) // 2])  # the header reads, the pixels do not
    error = error_of(paths)
    assert (error.column, error.row) == ("pic", 2)
    assert "is damaged and cannot be decoded" in str(error) and "truncated" in str(error)


def test_a_folder_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    error = error_of([write_image(tmp_path / "a.png", gray(8)), str(tmp_path / "folder.png")])
    assert (error.column, error.row) == ("pic", 2) and "cannot be read" in str(error)


@pytest.mark.parametrize("array", [np.zeros((2, 2, 5)), np.zeros((2, 2, 2)), np.zeros(4), np.zeros((0, 3)),
                                   np.zeros((2, 2, 2, 3))])
def test_an_array_that_is_no_image_names_its_shape(array: np.ndarray) -> None:
    error = error_of([np.zeros((2, 2)), array])
    assert (error.column, error.row) == ("pic", 2)
    assert f"shape {array.shape}" in str(error) and "(height, width, channels)" in str(error)


@pytest.mark.parametrize("cell", [5, 2.5, ["a.png"]])
def test_a_cell_that_is_neither_a_path_nor_an_array_is_refused(cell: object) -> None:
    error = error_of([np.zeros((4, 4)), cell], train=[np.zeros((4, 4))])
    assert (error.column, error.row) == ("pic", 2)
    assert f"holds {type(cell).__name__}" in str(error) and "a file path, a file's bytes, an array" in str(error)


def test_a_files_bytes_and_a_pillow_image_are_read_as_the_file_is(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", gray(8, 3))
    transform = fitted([path, write_image(tmp_path / "b.png", gray(8, 1))])
    from PIL import Image

    with Image.open(path) as image:
        out = transformed(transform, [path, Path(path).read_bytes(), image])
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    error = error_of([b"a.png"], train=[path])  # bytes that are no image: named by their length, not printed
    assert error.row == 1 and "an image of 5 bytes is not an image" in str(error)


def test_a_column_missing_in_every_training_row_is_refused() -> None:
    with pytest.raises(DataError, match="'pic' is empty in every training row") as caught:
        fitted([None, "", np.nan])
    assert caught.value.column == "pic"


def test_strict_refuses_an_image_of_another_size_naming_the_row() -> None:
    images = [gray(8, index) for index in range(4)]
    transform = fitted(images, ImageConfig(strict=True))
    with pytest.raises(DataError, match=r"row 3 is a 10x10 gray image; most of the column's are 8x8 gray \(image.strict"
                       ) as caught:
        transformed(transform, [images[0], None, gray(10)])
    assert (caught.value.column, caught.value.row) == ("pic", 3)


def test_strict_refuses_an_image_of_another_channel_count_naming_the_row() -> None:
    images = [colour(8, index) for index in range(4)]
    transform = fitted(images, ImageConfig(strict=True))
    assert transform.channels == "rgb"
    with pytest.raises(DataError, match=r"row 2 is an 8x8 gray image; most of the column's are 8x8 colour") as caught:
        transformed(transform, [images[0], gray(8)])
    assert caught.value.row == 2
    transform = fitted([gray(8, index) for index in range(4)], ImageConfig(strict=True, channels="gray"))
    with pytest.raises(DataError, match=r"row 1 is an 8x8 colour image"):
        transformed(transform, [colour(8)])


def test_without_strict_the_note_counts_the_resized_and_converted_training_images() -> None:
    images = [gray(8, index) for index in range(6)] + [gray(10), gray(12), colour(8)]
    transform = fitted(images, ImageConfig(channels="gray"))
    transformed(transform, images)  # the training rows
    transform.finish_training()
    transformed(transform, [gray(10)] * 5)  # prediction: not counted
    transform.finish_training()
    assert transform.notes == [
        "image column 'pic': 1 image(s) converted to match the column's gray images (set image.strict to refuse them "
        "instead)",
        "image column 'pic': 2 image(s) resized to match the column's 8x8 images (set image.strict to refuse them "
        "instead)",
        "image column 'pic': read as 8x8 gray pixels"]


# ---- a pretrained backbone's file -------------------------------------------------------------------
def resnet_names(blocks: tuple[int, int, int, int] = (2, 2, 2, 2)) -> list[str]:
    names = ["conv1.weight", "bn1.weight"]
    for stage, count in enumerate(blocks, start=1):
        names += [f"layer{stage}.{block}.conv{index}.weight" for block in range(count) for index in (1, 2)]
    return names


def weights_file(path: Path, names: list[str]) -> str:
    save_file({name: np.zeros(2, np.float32) for name in names}, str(path))  # read_backbone checks names only
    return str(path)


def test_read_backbone_reads_a_resnet_18_and_34_and_drops_timm_prefixes(tmp_path: Path) -> None:
    arrays, depth, digest = read_backbone(weights_file(tmp_path / "r18.safetensors", [*resnet_names(), "fc.weight"]))
    assert depth == 18 and "layer4.1.conv2.weight" in arrays and len(digest) == 64
    assert read_backbone(weights_file(tmp_path / "r34.safetensors", resnet_names((3, 4, 6, 3))))[1] == 34
    prefixed, _, _ = read_backbone(weights_file(tmp_path / "timm.safetensors",
                                                [f"model.{name}" for name in resnet_names()]))
    assert set(prefixed) == set(resnet_names())


@pytest.mark.parametrize("name, content, message", [
    ("missing.safetensors", None, "does not exist"),
    ("weights.bin", b"anything", "is a PyTorch pickle file, which could run code"),
    ("weights.pt", b"anything", "keel reads .safetensors only"),
    ("weights.safetensors", b"\x00" * 64, "is not a safetensors file"),
    ("weights.safetensors", b"this is text, not weights", "is not a safetensors file"),
    ("bottleneck.safetensors", [*resnet_names(), "layer1.0.conv3.weight"], "is a bottleneck ResNet .50 or deeper."),
    ("other.safetensors", ["encoder.weight", "decoder.weight"], r"holds no ResNet weights .*'decoder.weight'"),
])
def test_read_backbone_refuses_what_is_not_a_resnet_18_or_34(tmp_path: Path, name: str, content: object,
                                                             message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, list):
        weights_file(path, content)
    with pytest.raises(ConfigError, match=message) as caught:
        read_backbone(str(path))
    assert str(path) in str(caught.value)


def test_a_folder_is_no_backbone_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist .or is a folder."):
        read_backbone(str(tmp_path))


def test_the_resnet_encoder_needs_a_model_path_and_uses_imagenet_statistics(tmp_path: Path) -> None:
    images = [gray(8, index) for index in range(3)]
    with pytest.raises(ConfigError, match="image.encoder resnet needs image.model_path.*keel downloads nothing"):
        fitted(images, ImageConfig(encoder="resnet"))
    path = weights_file(tmp_path / "r18.safetensors", resnet_names())
    transform = fitted(images, ImageConfig(encoder="resnet", model_path=path))
    assert transform.depth == 18 and transform.backbone is not None
    assert transform.mean == list(IMAGENET_MEAN) and transform.channels == "gray" and transform.bands == 3
    assert transformed(transform, images).shape == (3, 3 * 64 + 1)  # a gray column read as RGB for the ResNet


def test_strict_compares_with_the_columns_most_common_channels_not_the_chosen_ones() -> None:
    """channels auto reads a mostly gray column with one colour image as rgb (no colour lost), but strict refuses
    the colour image, not the gray ones."""
    images = [gray(8, index) for index in range(5)] + [colour(8)]
    transform = fitted(images, ImageConfig(strict=True))
    assert transform.channels == "rgb" and transform.native_bands == 1
    transformed(transform, images[:5])  # the gray ones pass
    with pytest.raises(DataError, match=r"row 2 is an 8x8 colour image") as caught:
        transformed(transform, [images[0], colour(8)])
    assert caught.value.row == 2


def test_every_unusable_image_of_a_column_is_named_in_one_error_first_row_first(tmp_path: Path) -> None:
    # A user's trial: training named row 21 (a text file) and, once it was fixed, row 11 (a missing file).
    paths = [write_image(tmp_path / f"{index}.png", gray(8, index)) for index in range(30)]
    (tmp_path / "text.png").write_text("not an image")
    paths[10], paths[20], paths[25] = str(tmp_path / "gone.png"), str(tmp_path / "text.png"), str(tmp_path / "nope.png")
    for stage in ("fit", "transform"):
        with pytest.raises(DataError) as caught:
            if stage == "fit":
                fitted(paths)
            else:
                transformed(fitted(paths[:10]), paths)
        message = str(caught.value)
        assert caught.value.row == 11 and message.startswith("image column 'pic' row 11: the file")
        assert "gone.png" in message and "2 more row(s) of image column 'pic' cannot be used either: row(s) 21, 26." in message
    # Strict size checks and damaged files join the same list.
    strict = fitted(paths[:10], ImageConfig(strict=True))
    (tmp_path / "damaged.png").write_bytes((tmp_path / "0.png").read_bytes()[:60])
    odd = [*paths[:3], write_image(tmp_path / "big.png", gray(16)), str(tmp_path / "damaged.png")]
    with pytest.raises(DataError, match=r"row 4 is a 16x16 gray image.* 1 more row\(s\) .* row\(s\) 5\.") as caught:
        transformed(strict, odd)
    assert caught.value.row == 4


def test_finetune_without_a_pretrained_backbone_is_refused() -> None:
    # The cnn trains with the network whatever image.finetune says: true was accepted and did nothing.
    arrays = [np.zeros((8, 8), dtype=np.uint8) + i for i in range(4)]
    with pytest.raises(ConfigError, match="image.finetune trains a pretrained backbone; set image.encoder: resnet"):
        fitted(arrays, ImageConfig(finetune=True))
    assert fitted(arrays, ImageConfig(finetune=False)).encoder == "cnn"
