"""Image columns exported, run and served: ONNX parity (gray and RGB, fast and balanced, classification and
regression; missing images, images of other sizes and kinds, paths relative to the CSV), keel.runtime's input
forms, chunks and errors, the metadata another client needs (the pixel rule done by hand, without keel), the
server (base64 only, never a path), TFLite's refusal and the CLI.

Tiny models (2 epochs, hidden [16], image.dim 8) trained once per module, on images written with Pillow.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.data.io import read_table
from keel.errors import DataError, ExportError, KeelWarning
from keel.export.exporter import ExportReport, export
from keel.export.onnx import PIXELS_RULE
from keel.runtime import Predictor
from tests.integration.test_serve import Server, free_port, mapped_libraries, wait_ready
from tests.unit.data.test_images import digits

CONFIG: dict[str, Any] = {"preset": "fast", "training.epochs": 2, "model.hidden": [16], "image.dim": 8}
PROBABILITY_TOLERANCE = 1e-5  # the exporter's own parity tolerance
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- the tables and their models ------------------------------------------------------------------
@dataclass
class Case:
    """A trained, saved and exported image model, and the rows it trained on."""

    model: keel.Model
    directory: Path  # the saved model, model.onnx attached
    table: Path | None  # the CSV of relative image paths it trained on; None for a DataFrame of arrays
    frame: pd.DataFrame  # those rows (read_table's for a CSV: attrs carry the source)
    report: ExportReport  # Model.export(data=the rows)
    column: str  # the image column


def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    """``array`` written as an image file (format from the suffix, converted to ``mode`` first); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return str(path)


def tinted(seed: int, channel: int, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A random RGB uint8 picture in which ``channel`` dominates."""
    image = np.random.default_rng(seed).integers(0, 120, (*shape, 3))
    image[..., channel] += 120
    return image.astype(np.uint8)


def gray_table(folder: Path) -> Path:
    """60 digits as PNGs (pictures/<i>.png, relative to the CSV), labelled even / odd. Row 4 is a 16-bit
    PNG, row 6 a JPEG, row 8 a 10x12 PNG (another size), row 10 empty (a missing image)."""
    images, labels = digits()
    paths = []
    for index in range(60):
        digit = (images[index] * 15).astype(np.uint8)
        name = f"pictures/{index}.{'jpg' if index == 5 else 'png'}"
        if index == 3:
            save_image(folder / name, (images[index] * 4095).astype(np.uint16))  # 16-bit gray: Pillow's I;16
        elif index == 7:
            save_image(folder / name, np.asarray(Image.fromarray(digit).resize((10, 12))))
        elif index != 9:
            save_image(folder / name, digit)
        paths.append("" if index == 9 else name)
    table = folder / "gray.csv"
    pd.DataFrame({"pic": paths, "y": np.where(labels[:60] % 2, "odd", "even")}).to_csv(table, index=False)
    return table


def rgb_table(folder: Path) -> Path:
    """60 colour pictures beside a number and a category, labelled by their dominant colour. Among them
    JPEGs, a gray PNG, an RGBA PNG, a palette PNG, a 12x6 picture and two missing images."""
    rng = np.random.default_rng(1)
    paths, labels = [], []
    for index in range(60):
        channel = index % 3
        labels.append(("red", "green", "blue")[channel])
        if index in (12, 13):
            paths.append("")
            continue
        picture = tinted(index, channel, (6, 12) if index == 10 else (8, 8))
        name = f"photos/{index}.{'jpg' if index % 7 == 3 else 'png'}"
        if index == 6:
            picture = np.concatenate([picture, np.full((8, 8, 1), 200, dtype=np.uint8)], axis=2)  # RGBA
        save_image(folder / name, picture, {4: "L", 8: "P"}.get(index))
        paths.append(name)
    frame = pd.DataFrame({"photo": paths, "size": rng.normal(size=60),
                          "shade": rng.choice(["light", "dark", "mid"], 60), "y": labels})
    frame.loc[15, "size"] = np.nan
    frame.loc[16, "shade"] = None
    table = folder / "rgb.csv"
    frame.to_csv(table, index=False)
    return table


def red_table(folder: Path) -> Path:
    """40 colour pictures and a number to predict from them: how red each is, plus noise."""
    rng = np.random.default_rng(2)
    paths, values = [], []
    for index in range(40):
        picture = tinted(100 + index, index % 3)
        values.append(picture[..., 0].mean() / 25 + rng.normal(0, 0.2))
        if index != 5:  # row 6: a missing image
            save_image(folder / "reds" / f"{index}.png", picture)
        paths.append("" if index == 5 else f"reds/{index}.png")
    frame = pd.DataFrame({"photo": paths, "y": values})
    table = folder / "red.csv"
    frame.to_csv(table, index=False)
    return table


def digit_frame() -> pd.DataFrame:
    """80 digits as arrays (float 0..16, one uint8, one 12x10, one (8, 8, 1), one None) beside a number and a
    category; the target a number from their ink."""
    images, _ = digits()
    rng = np.random.default_rng(3)
    cells: list[Any] = [images[index] for index in range(80)]
    cells[1] = (images[1] * 15).astype(np.uint8)
    cells[3] = rng.uniform(0, 16, (12, 10))
    cells[5] = None
    cells[7] = images[7][..., None]
    frame = pd.DataFrame({"digit": pd.Series(cells, dtype=object), "noise": rng.normal(size=80),
                          "shade": rng.choice(["light", "dark", "mid"], 80)})
    frame["y"] = images[:80].mean(axis=(1, 2)) + 0.5 * frame["noise"] + rng.normal(0, 0.1, 80)
    return frame


def build(name: str, folder: Path) -> Case:
    """Train, save and export (parity checked on the training rows) one case."""
    folder.mkdir(parents=True, exist_ok=True)
    makers: dict[str, tuple[Callable[[Path], Path] | None, str, str]] = {
        "gray-fast-binary": (gray_table, "fast", "pic"),
        "rgb-balanced-multiclass": (rgb_table, "balanced", "photo"),
        "gray-balanced-regression": (None, "balanced", "digit"),
        "rgb-fast-regression": (red_table, "fast", "photo"),
    }
    maker, preset, column = makers[name]
    table = maker(folder) if maker is not None else None
    arrays = digit_frame()  # the gray-balanced-regression table
    data: Path | pd.DataFrame = table if table is not None else arrays
    task = {"task": "regression"} if name.endswith("regression") else {}
    model = keel.fit(data, target="y", config={**CONFIG, "preset": preset, **task}, quiet=True, importance=False)
    assert model.schema.features[0].type == "image"
    model.save(folder / "model")
    report = model.export(data=data)
    frame = read_table(table) if table is not None else arrays.drop(columns="y")
    return Case(model, folder / "model", table, frame, report, column)


CASES = ["gray-fast-binary", "rgb-balanced-multiclass", "gray-balanced-regression", "rgb-fast-regression"]
FILE_CASES = [name for name in CASES if name != "gray-balanced-regression"]


class Cases:
    """The cases, each trained the first time a test asks for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Case] = {}

    def __getitem__(self, name: str) -> Case:
        if name not in self.built:
            self.built[name] = build(name, self.root / name)
        return self.built[name]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Cases:
    return Cases(tmp_path_factory.mktemp("image-export"))


def keel_says(model: keel.Model, rows: pd.DataFrame) -> np.ndarray:
    """keel's own probabilities (values for regression) for ``rows``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)
        return model.predict(rows) if model.task == "regression" else model.predict_proba(rows)


def runtime_says(predictor: Predictor, rows: Any) -> np.ndarray:
    return predictor.predict(rows) if predictor.task == "regression" else predictor.predict_proba(rows)


def assert_close(model: keel.Model, got: np.ndarray, expected: np.ndarray) -> None:
    """Within the export's tolerance: probabilities absolutely, values in standard deviations of the target."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    scale = model.target_encoder.std if model.task == "regression" else 1.0
    assert np.abs(got - expected).max() / scale <= PROBABILITY_TOLERANCE, np.abs(got - expected).max()


def absolute(case: Case) -> pd.DataFrame:
    """The case's rows with absolute image paths (the forms that are no file-read DataFrame use the
    working directory)."""
    assert case.table is not None
    return case.frame.assign(**{case.column: [str(case.table.parent / path) if path else None
                                              for path in case.frame[case.column].fillna("")]})


# ---- 1. parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_the_exported_file_predicts_what_keel_predicts(cases: Cases, name: str) -> None:
    """Model.export's parity on the training rows (missing images, other sizes, JPEG, 16-bit, palette,
    arrays) and, separately, keel.runtime's Predictor against Model on the same rows."""
    case = cases[name]
    parity = case.report.parity
    assert parity["ok"] and parity["source"] == "data" and parity["rows"] == len(case.frame)
    assert parity["max_difference"] <= PROBABILITY_TOLERANCE
    predictor = Predictor.load(case.directory)
    assert sorted(predictor.feature_names) == sorted(feature.name for feature in case.model.schema.features)
    expected = keel_says(case.model, case.frame)
    assert_close(case.model, runtime_says(predictor, case.frame), expected)
    if case.model.task != "regression":
        labels, own = predictor.predict(case.frame), case.model.predict(case.frame)
        ordered = np.sort(expected, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > PROBABILITY_TOLERANCE
        assert (labels[clear] == own[clear]).all()
    missing = np.flatnonzero(case.frame[case.column].isna().to_numpy())
    assert len(missing) and np.isfinite(runtime_says(predictor, case.frame.iloc[missing])).all()


@pytest.mark.parametrize("name", CASES)
def test_synthetic_rows_check_parity_without_data(cases: Cases, name: str, tmp_path: Path) -> None:
    case = cases[name]
    report = export(case.model, output=tmp_path / "model.onnx")
    assert report.parity["ok"] and report.parity["source"] == "synthetic"
    assert report.parity["max_difference"] <= PROBABILITY_TOLERANCE


@pytest.mark.parametrize("name", FILE_CASES)
def test_relative_paths_are_read_from_the_csvs_folder(cases: Cases, name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    case = cases[name]
    assert case.table is not None
    predictor = Predictor.load(case.directory)
    expected = keel_says(case.model, case.frame)
    monkeypatch.chdir(tmp_path)  # nothing here: the paths must be the CSV folder's
    assert_close(case.model, runtime_says(predictor, read_table(case.table)), expected)
    with pytest.raises(DataError, match="does not exist") as caught:  # no source: the working directory's
        runtime_says(predictor, pd.read_csv(case.table))
    assert caught.value.column == case.column and caught.value.row == 1
    monkeypatch.chdir(case.table.parent)
    assert_close(case.model, runtime_says(predictor, pd.read_csv(case.table)), expected)
    records = case.frame.astype(object).where(case.frame.notna(), None).to_dict("records")
    assert_close(case.model, runtime_says(predictor, records), expected)


def test_export_data_with_a_missing_image_names_the_file(cases: Cases, tmp_path: Path) -> None:
    # The error named neither the --data file nor where it looked from (a user's trial).
    case = cases["gray-fast-binary"]
    assert case.table is not None
    rows = pd.read_csv(case.table)
    rows.loc[1, case.column] = "nope.png"
    bad = case.table.parent / "bad.csv"
    rows.to_csv(bad, index=False)
    with pytest.raises(DataError, match="does not exist") as caught:
        case.model.export(data=bad, output=tmp_path / "m.onnx")
    assert caught.value.file == str(bad) and caught.value.row == 2 and str(bad) in str(caught.value)


@pytest.mark.parametrize("name", CASES)
def test_an_int8_export_still_predicts_sensibly(cases: Cases, name: str, tmp_path: Path) -> None:
    case = cases[name]
    data = case.table if case.table is not None else digit_frame()
    report = export(case.model, quantize="int8", data=data, output=tmp_path / "model.int8.onnx")
    assert report.parity["ok"] and report.quantized_parity is not None
    quantized = runtime_says(Predictor.load(tmp_path / "model.int8.onnx"), case.frame)
    expected = keel_says(case.model, case.frame)
    assert np.isfinite(quantized).all()
    if case.model.task == "regression":
        assert np.abs(quantized - expected).max() / case.model.target_encoder.std <= 0.05
    else:
        assert np.abs(quantized - expected).max() <= 0.02
        assert (quantized.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.9
    assert report.quantized_parity["max_difference"] == pytest.approx(
        np.abs(quantized - expected).max() / (case.model.target_encoder.std if case.model.task == "regression" else 1),
        rel=1e-3, abs=1e-6)


# ---- 2. the runtime's inputs ----------------------------------------------------------------------
def test_every_input_form_predicts_the_same(cases: Cases) -> None:
    """One row dict (row by row), rows, columns and a DataFrame, on the mixed table (image, number, category)."""
    case = cases["rgb-balanced-multiclass"]
    predictor = Predictor.load(case.directory)
    frame = absolute(case).iloc[:16].reset_index(drop=True)  # a gray, an RGBA, a palette, a 12x6, missing ones
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    expected = keel_says(case.model, frame)
    forms = {
        "frame": predictor.predict_proba(frame),
        "rows": predictor.predict_proba(records),
        "columns": predictor.predict_proba({name: [row[name] for row in records] for name in frame.columns}),
        "row": np.concatenate([predictor.predict_proba(row) for row in records]),
    }
    for form, probabilities in forms.items():
        assert np.abs(probabilities - forms["frame"]).max() <= 1e-6, form
        assert_close(case.model, probabilities, expected)


def test_images_of_other_sizes_and_kinds_than_trained_on_predict_as_keel_does(cases: Cases, tmp_path: Path) -> None:
    """The RGB model given a 64x48 PNG, a 5x5 gray JPEG, a 16-bit gray PNG, an LA PNG and arrays."""
    case = cases["rgb-balanced-multiclass"]
    picture = tinted(7, 1, (48, 64))
    images, _ = digits()
    cells: list[Any] = [
        save_image(tmp_path / "large.png", picture),
        save_image(tmp_path / "small.jpg", picture[:5, :5], "L"),
        save_image(tmp_path / "wide.png", (images[0] * 4095).astype(np.uint16)),
        save_image(tmp_path / "shade.png", np.stack([picture[..., 0], picture[..., 2]], axis=2), "LA"),
        picture[:20, :20],  # uint8: divided by 255
        images[1],  # float: divided by the column's scale (255 here, as it trained on files)
        images[2][..., None].repeat(4, axis=2),  # an alpha band, dropped
    ]
    frame = pd.DataFrame({"photo": pd.Series(cells, dtype=object), "size": 0.0, "shade": "mid"})
    predictor = Predictor.load(case.directory)
    got = predictor.predict_proba(frame)
    assert_close(case.model, got, keel_says(case.model, frame))
    assert len({tuple(row) for row in got.round(7)}) == len(cells)  # each image read as itself


@pytest.fixture(scope="module")
def gray(cases: Cases) -> tuple[Case, Predictor, Path]:
    """The gray model, its predictor and the first picture's file."""
    case = cases["gray-fast-binary"]
    assert case.table is not None
    return case, Predictor.load(case.directory), case.table.parent / "pictures" / "0.png"


def test_an_image_as_bytes_a_path_an_array_or_a_pillow_image_predicts_the_same(
        gray: tuple[Case, Predictor, Path]) -> None:
    case, predictor, file = gray
    expected = keel_says(case.model, pd.DataFrame({"pic": [str(file)]}))
    content = file.read_bytes()
    with Image.open(file) as opened:
        pixels = np.asarray(opened)  # uint8 (8, 8): divided by 255 as the file is
        opened.load()
        values = {"path": str(file), "padded path": f"  {file}  ", "bytes": content, "bytearray": bytearray(content),
                  "array": pixels, "array with a channel": pixels[..., None], "pillow": opened}
        for kind, value in values.items():
            for form in ({"pic": value}, [{"pic": value}], {"pic": [value]}):
                assert np.array_equal(predictor.predict_proba(form), predictor.predict_proba({"pic": str(file)})), kind
            assert_close(case.model, predictor.predict_proba({"pic": value}), expected)
    assert_close(case.model, predictor.predict_proba({"pic": pixels}),
                 keel_says(case.model, pd.DataFrame({"pic": pd.Series([pixels], dtype=object)})))


def test_none_nan_na_and_empty_text_are_a_missing_image(gray: tuple[Case, Predictor, Path]) -> None:
    case, predictor, file = gray
    expected = keel_says(case.model, pd.DataFrame({"pic": [None]}))
    answers = [predictor.predict_proba({"pic": value}) for value in (None, float("nan"), np.nan, pd.NA, "", "  ")]
    answers.append(predictor.predict_proba(pd.DataFrame({"pic": [None, np.nan, ""]})))
    for answer in answers:
        assert np.array_equal(answer, np.repeat(answers[0], len(answer), axis=0))
    assert_close(case.model, answers[0], expected)
    assert not np.array_equal(answers[0], predictor.predict_proba({"pic": str(file)}))


def test_a_pathlib_path_is_read_as_a_path(gray: tuple[Case, Predictor, Path]) -> None:
    case, predictor, file = gray
    expected = predictor.predict_proba({"pic": str(file)})
    assert_close(case.model, keel_says(case.model, pd.DataFrame({"pic": pd.Series([file], dtype=object)})), expected)
    assert np.array_equal(predictor.predict_proba({"pic": file}), expected)
    assert np.array_equal(predictor.predict_proba(pd.DataFrame({"pic": [file]})), expected)


def test_a_path_under_the_home_directory_is_expanded(gray: tuple[Case, Predictor, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    case, predictor, file = gray
    monkeypatch.setenv("HOME", str(file.parent))
    expected = predictor.predict_proba({"pic": str(file)})
    assert_close(case.model, keel_says(case.model, pd.DataFrame({"pic": [f"~/{file.name}"]})), expected)
    assert np.array_equal(predictor.predict_proba({"pic": f"~/{file.name}"}), expected)


def test_a_memoryview_is_an_images_bytes_in_one_row(gray: tuple[Case, Predictor, Path]) -> None:
    _, predictor, file = gray
    expected = predictor.predict_proba({"pic": str(file)})
    assert np.array_equal(predictor.predict_proba({"pic": [memoryview(file.read_bytes())]}), expected)  # passes
    assert np.array_equal(predictor.predict_proba({"pic": memoryview(file.read_bytes())}), expected)


def test_images_are_decoded_a_chunk_at_a_time_as_if_predicted_in_pieces(gray: tuple[Case, Predictor, Path]) -> None:
    """700 rows (three chunks of at most 256): equal to predicting them in pieces, and to keel."""
    case, predictor, _ = gray
    base = case.table.parent if case.table is not None else Path()
    paths = [str(base / path) if isinstance(path, str) else None for path in case.frame["pic"]]
    cells: list[Any] = [paths[index % len(paths)] for index in range(700)]
    images, _ = digits()
    for index in range(3, 700, 9):
        cells[index] = images[index]  # arrays beside paths
    frame = pd.DataFrame({"pic": pd.Series(cells, dtype=object)})
    whole = predictor.predict_proba(frame)
    pieces = np.concatenate([predictor.predict_proba(frame.iloc[start:stop])
                             for start, stop in [(0, 1), (1, 255), (255, 257), (257, 600), (600, 700)]])
    assert whole.shape == (700, 2) and np.abs(whole - pieces).max() <= 1e-6
    assert_close(case.model, whole, keel_says(case.model, frame))
    as_bytes = [Path(cell).read_bytes() if isinstance(cell, str) else cell for cell in cells]
    assert np.abs(predictor.predict_proba({"pic": as_bytes}) - whole).max() <= 1e-6


@pytest.fixture(scope="module")
def damaged(gray: tuple[Case, Predictor, Path]) -> dict[str, tuple[Any, str]]:
    """Values that are no image, each with what its message says."""
    _, _, file = gray
    folder = file.parent.parent / "damaged"
    folder.mkdir(exist_ok=True)
    content = file.read_bytes()
    (folder / "truncated.png").write_bytes(content[:len(content) // 2])
    return {
        "bytes of text": (b"only some text, no image", "is not an image Pillow can read"),
        "a missing file": (str(folder / "nowhere.png"), "does not exist"),
        "a truncated file": (str(folder / "truncated.png"), "cannot be read or decoded"),
        "truncated bytes": (content[:len(content) // 2], "cannot be read or decoded"),
        "an array of 5 channels": (np.zeros((8, 8, 5)), r"array of shape \(8, 8, 5\)"),
        "a flat array": (np.zeros(64), r"array of shape \(64,\)"),
        "an int": (7, "type int"),
        "a dict": ({"pixels": 1}, "type dict"),
    }


@pytest.mark.parametrize("kind", ["bytes of text", "a missing file", "a truncated file", "truncated bytes",
                                  "an array of 5 channels", "a flat array", "an int", "a dict"])
def test_a_value_that_is_no_image_is_a_data_error_naming_column_and_row(
        gray: tuple[Case, Predictor, Path], damaged: dict[str, tuple[Any, str]], kind: str) -> None:
    _, predictor, file = gray
    value, message = damaged[kind]
    for data in ({"pic": [str(file), None, value]}, [{"pic": str(file)}, {"pic": None}, {"pic": value}],
                 pd.DataFrame({"pic": pd.Series([str(file), None, value], dtype=object)})):
        with pytest.raises(DataError, match=message) as caught:
            predictor.predict(data)
        assert (caught.value.column, caught.value.row) == ("pic", 3)
        assert "'pic' row 3" in str(caught.value)


def test_an_error_in_a_later_chunk_names_the_absolute_row(gray: tuple[Case, Predictor, Path],
                                                           damaged: dict[str, tuple[Any, str]]) -> None:
    _, predictor, file = gray
    for row in (257, 517):
        cells: list[Any] = [str(file)] * 600
        cells[row - 1] = damaged["a missing file"][0]
        for data in ({"pic": cells}, pd.DataFrame({"pic": cells})):
            with pytest.raises(DataError, match=f"'pic' row {row}:") as caught:
                predictor.predict(data)
            assert caught.value.row == row


def test_every_bad_image_across_chunks_is_named_in_one_error_as_keel_names_them(
        gray: tuple[Case, Predictor, Path], damaged: dict[str, tuple[Any, str]]) -> None:
    """The runtime (keel serve's too) and an export's --data rows name every bad image of a column at once, as
    Model.predict does: rows 3 (chunk 1), 300 (chunk 2) and 590 (chunk 3), of two kinds. It stopped at the first."""
    case, predictor, file = gray
    cells: list[Any] = [str(file)] * 600
    for row in (3, 590):
        cells[row - 1] = damaged["a missing file"][0]
    cells[299] = damaged["an int"][0]
    frame = pd.DataFrame({"pic": pd.Series(cells, dtype=object)})
    for run in (lambda: predictor.predict({"pic": cells}), lambda: predictor.predict(frame),
                lambda: case.model.predict(frame),
                lambda: case.model.export(data=frame)):
        with pytest.raises(DataError) as caught:
            run()
        assert (caught.value.column, caught.value.row) == ("pic", 3)
        assert "2 more row(s) of image column 'pic' cannot be used either: row(s) 300, 590." in str(caught.value)


def with_a_missing_file(case: Case, name: str) -> Path:
    """The case's table written beside it as ``name``, its row 4 naming a file that does not exist."""
    assert case.table is not None
    frame = pd.read_csv(case.table)
    frame.loc[3, "pic"] = "pictures/nowhere.png"  # row 4
    bad = case.table.parent / name
    frame.to_csv(bad, index=False)
    return bad


def test_a_missing_file_in_a_csv_is_reported_as_the_csvs(gray: tuple[Case, Predictor, Path]) -> None:
    case, predictor, _ = gray
    bad = with_a_missing_file(case, "missing-file.csv")
    with pytest.raises(DataError, match="'pic' row 4") as caught:
        predictor.predict(read_table(bad))
    assert "working directory" not in str(caught.value) and caught.value.file == str(bad)


def bomb_png(side: int = 20_000) -> bytes:
    """A 60-byte PNG whose header claims ``side`` x ``side`` pixels (400 M by default; Pillow refuses
    over 179 M when the file is opened)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_a_data_error_naming_column_and_row(gray: tuple[Case, Predictor, Path],
                                                                     tmp_path: Path) -> None:
    case, predictor, file = gray
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    for run in (lambda: predictor.predict({"pic": [str(file), bomb_png()]}),
                lambda: case.model.predict(pd.DataFrame({"pic": [str(file), str(tmp_path / "bomb.png")]}))):
        with pytest.raises(DataError) as caught:
            run()
        assert (caught.value.column, caught.value.row) == ("pic", 2)


def test_the_runtime_still_loads_neither_torch_nor_pandas_after_predicting_images(
        gray: tuple[Case, Predictor, Path]) -> None:
    case, _, file = gray
    script = f"""
import json, sys
import keel.runtime
heavy = lambda: sorted(m for m in ("torch", "pandas", "keel.model", "keel.data.images", "keel.export")
                       if m in sys.modules)
after_import = heavy()
import numpy as np
from PIL import Image
predictor = keel.runtime.Predictor.load({str(case.directory)!r})
path = {str(file)!r}
with Image.open(path) as image:
    image.load()
    values = [path, open(path, "rb").read(), np.asarray(image), image, None]
    probabilities = predictor.predict_proba({{"pic": values}}).tolist()
print(json.dumps({{"after_import": after_import, "after_predict": heavy(), "probabilities": probabilities}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after_import"] == [] and report["after_predict"] == []
    probabilities = np.array(report["probabilities"])
    assert probabilities.shape == (5, 2) and np.allclose(probabilities[:4], probabilities[0], atol=1e-6)


# ---- 3. the metadata, and a client without keel ---------------------------------------------------
def metadata_of(path: Path) -> dict[str, str]:
    return {prop.key: prop.value for prop in onnx.load(path).metadata_props}


@pytest.mark.parametrize("name", CASES)
def test_the_metadata_says_how_each_image_becomes_its_input(cases: Cases, name: str) -> None:
    case = cases[name]
    proto = onnx.load(case.directory / "model.onnx")
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    rgb = name.startswith("rgb")
    assert metadata["keel.export_format"] == "5"
    scale = 16.0 if case.table is None else 255.0  # the digits arrays' largest value; files: 255
    assert json.loads(metadata["keel.images"]) == {case.column: {
        "mode": "RGB" if rgb else "L", "size": 8, "scale": scale, "channels": 3 if rgb else 1, "pixels": PIXELS_RULE}}
    features = {item["name"]: item for item in json.loads(metadata["keel.features"])}
    assert features[case.column] == {"name": case.column, "type": "image",
                                     "input": "float pixels [channels, size, size]"}
    assert all(item["input"] in ("double", "string") for column, item in features.items() if column != case.column)
    assert "image columns: NaN in every pixel" in metadata["keel.missing"]
    (graph_input,) = [item for item in proto.graph.input if item.name == case.column]
    tensor = graph_input.type.tensor_type
    assert tensor.elem_type == onnx.TensorProto.FLOAT
    assert [dim.dim_param or dim.dim_value for dim in tensor.shape.dim] == ["batch", 3 if rgb else 1, 8, 8]


def test_a_model_without_images_keeps_its_export_format(tmp_path: Path) -> None:
    frame = pd.DataFrame({"size": np.arange(40.0), "shade": ["a", "b"] * 20, "y": ["p", "q", "q", "p"] * 10})
    model = keel.fit(frame, target="y", config=CONFIG, quiet=True, importance=False)
    export(model, output=tmp_path / "plain.onnx")
    metadata = metadata_of(tmp_path / "plain.onnx")
    assert metadata["keel.export_format"] == "1" and "keel.images" not in metadata
    assert "image" not in metadata["keel.missing"]


# A client that reads the pixel rule from keel.images and does it with Pillow, NumPy and ONNX Runtime.
HAND_CLIENT = r"""
import csv, json, sys
from pathlib import Path
import numpy as np
import onnxruntime
from PIL import Image

model, table = Path(sys.argv[1]), Path(sys.argv[2])
session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
metadata = session.get_modelmeta().custom_metadata_map
images = json.loads(metadata["keel.images"])
rows = list(csv.DictReader(table.open()))

def pixels(text, spec):
    if not text:
        return np.full((spec["channels"], spec["size"], spec["size"]), np.nan, dtype=np.float32)
    with Image.open(table.parent / text) as image:
        if image.mode in ("I;16", "I;16B", "I"):  # 16-bit gray: divided by 65535, no 8-bit convert
            values = np.asarray(image, dtype=np.float32) / 65535
            resized = Image.fromarray(values).resize((spec["size"],) * 2, Image.Resampling.BILINEAR)
            values = np.asarray(resized, dtype=np.float32)[None]
            return np.repeat(values, spec["channels"], axis=0)
        converted = image.convert(spec["mode"]).resize((spec["size"],) * 2, Image.Resampling.BILINEAR)
        values = np.asarray(converted, dtype=np.float32) / 255
        return values[None] if values.ndim == 2 else values.transpose(2, 0, 1)

feeds = {}
for item in session.get_inputs():
    values = [row[item.name] for row in rows]
    if item.name in images:
        feeds[item.name] = np.stack([pixels(value, images[item.name]) for value in values])
    elif item.type == "tensor(double)":
        feeds[item.name] = np.array([float(value) if value else np.nan for value in values])
    else:
        feeds[item.name] = np.array(values, dtype=object)
outputs = json.loads(metadata["keel.outputs"])
answer = session.run([outputs[-1]], feeds)[0]
print(json.dumps({"answer": answer.tolist(), "keel": "keel" in sys.modules}))
"""


@pytest.mark.parametrize("name", ["gray-fast-binary", "rgb-balanced-multiclass", "rgb-fast-regression"])
def test_a_client_doing_the_pixel_rule_by_hand_gets_keels_predictions(cases: Cases, name: str,
                                                                       tmp_path: Path) -> None:
    """Gray with a 16-bit PNG, a JPEG, another size and a missing image; RGB with gray, RGBA, palette and
    JPEG files beside a number and a category."""
    case = cases[name]
    assert case.table is not None
    script = tmp_path / "client.py"
    script.write_text(HAND_CLIENT)
    result = subprocess.run([sys.executable, "-I", str(script), str(case.directory / "model.onnx"), str(case.table)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["keel"] is False
    assert_close(case.model, np.array(report["answer"]), keel_says(case.model, case.frame))


# ---- 4. the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(cases: Cases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Case, Server, Path]]:
    """`python -m keel.serve` on the mixed RGB model, run from a folder that holds real images: one of them
    at a relative path that is valid base64 (pic/imag), which the server must never read."""
    case = cases["rgb-balanced-multiclass"]
    assert case.table is not None
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(case.table.parent / "photos" / "0.png", folder / "real.png")
    (folder / "pic").mkdir()
    shutil.copy(case.table.parent / "photos" / "0.png", folder / "pic" / "imag")
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "keel.serve", str(case.directory), "--port", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT, cwd=folder,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    running = Server(process, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_ready(running)
        yield case, running, folder
    finally:
        running.stop()


def post(server: Server, body: Any, path: str = "/predict") -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def photo(case: Case, index: int) -> Path:
    assert case.table is not None
    return case.table.parent / "photos" / f"{index}.png"


def test_the_server_predicts_images_sent_as_base64_a_data_url_or_null(
        server: tuple[Case, Server, Path]) -> None:
    case, running, _ = server
    files = [photo(case, index) for index in (0, 2, 4, 6, 8)]  # RGB, RGB, gray, RGBA, palette
    rows: list[dict[str, Any]] = [
        {"photo": ("data:image/png;base64," if index == 1 else "") + encoded(file), "size": 0.5 * index,
         "shade": ("light", "dark", None)[index % 3]} for index, file in enumerate(files)]
    rows.append({"photo": None, "size": None, "shade": "mid"})
    answer = post(running, rows)
    assert answer.status_code == 200, answer.text
    paths = [{**row, "photo": str(file)} for row, file in zip(rows, files)] + [rows[-1]]
    predictor = Predictor.load(case.directory)
    assert answer.json()["probabilities"] == predictor.predict_proba(paths).tolist()  # bit for bit
    assert_close(case.model, np.array(answer.json()["probabilities"]), keel_says(case.model, pd.DataFrame(paths)))
    one = post(running, rows[0])  # a batch of one: ONNX Runtime may round the last digit otherwise
    assert one.status_code == 200
    assert np.abs(np.array(one.json()["probabilities"]) - answer.json()["probabilities"][:1]).max() <= 1e-6
    columns = post(running, {"columns": {name: [row[name] for row in rows] for name in rows[0]}})
    assert columns.json()["probabilities"] == answer.json()["probabilities"]


@pytest.mark.parametrize("value, message", [
    ("/etc/passwd", "not base64"),
    ("real.png", "not base64"),
    ("pic/imag", "not an image"),  # valid base64: decoded to 6 bytes, never opened as the file beside the server
    (base64.b64encode(b"some text, no image").decode(), "not an image"),
    ("data:image/png;base64,%%%", "not base64"),
])
def test_the_server_refuses_what_is_no_images_bytes_and_never_reads_a_path(
        server: tuple[Case, Server, Path], value: str, message: str) -> None:
    case, running, folder = server
    assert (folder / "real.png").is_file() and (folder / "pic" / "imag").is_file()
    good = {"photo": encoded(photo(case, 0)), "size": 1.0, "shade": "light"}
    for sent in (value, str(folder / value)) if value == "real.png" else (value,):
        answer = post(running, [good, {**good, "photo": sent}])
        assert answer.status_code == 422, answer.text
        error = answer.json()["errors"][0]
        assert (error["field"], error["row"]) == ("photo", 2) and message in error["message"], error
        assert "photo" in answer.json()["detail"] and "row 2" in answer.json()["detail"]


def test_the_server_answers_a_decompression_bomb_with_a_422(server: tuple[Case, Server, Path]) -> None:
    case, running, _ = server
    good = {"photo": encoded(photo(case, 0)), "size": 1.0, "shade": "light"}
    answer = post(running, [good, {**good, "photo": base64.b64encode(bomb_png()).decode()}])
    assert answer.status_code == 422 and answer.json()["errors"][0]["row"] == 2, answer.text


def test_the_v2_protocol_takes_images_as_bytes_tensors_of_base64(server: tuple[Case, Server, Path]) -> None:
    case, running, _ = server
    rows: list[dict[str, Any]] = [{"photo": encoded(photo(case, 0)), "size": 1.0, "shade": "light"},
                                  {"photo": None, "size": -1.0, "shade": "dark"}]
    inputs = [{"name": "photo", "shape": [2], "datatype": "BYTES", "data": [row["photo"] for row in rows]},
              {"name": "size", "shape": [2], "datatype": "FP64", "data": [row["size"] for row in rows]},
              {"name": "shade", "shape": [2], "datatype": "BYTES", "data": [row["shade"] for row in rows]}]
    path = f"/v2/models/{case.directory.name}/infer"
    answer = post(running, {"inputs": inputs}, path)
    assert answer.status_code == 200, answer.text
    probabilities = answer.json()["outputs"][1]
    assert probabilities["shape"] == [2, 3]
    assert probabilities["data"] == sum(post(running, rows).json()["probabilities"], [])
    wrong = post(running, {"inputs": [{**inputs[0], "datatype": "FP64", "data": [1.0, 2.0]}, *inputs[1:]]}, path)
    assert wrong.status_code == 422 and "datatype must be BYTES" in wrong.json()["detail"]
    assert wrong.json()["errors"][0]["field"] == "photo"
    not_base64 = post(running, {"inputs": [{**inputs[0], "data": ["/etc/passwd", None]}, *inputs[1:]]}, path)
    assert not_base64.status_code == 422 and not_base64.json()["errors"][0]["row"] == 1


def test_metadata_and_openapi_describe_the_image_feature_and_its_example_predicts(
        server: tuple[Case, Server, Path]) -> None:
    case, running, _ = server
    features = {item["name"]: item for item in httpx.get(running.url + "/metadata").json()["features"]}
    assert features["photo"]["type"] == "image"
    v2 = httpx.get(f"{running.url}/v2/models/{case.directory.name}").json()
    assert {item["name"]: item["datatype"] for item in v2["inputs"]}["photo"] == "BYTES"
    document = httpx.get(running.url + "/openapi.json").json()
    properties = document["components"]["schemas"]["Record"]["properties"]
    example = properties["photo"]["examples"][0]
    content = base64.b64decode(example, validate=True)
    assert content.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG" and image.size == (8, 8)
    record = {name: (spec.get("examples") or [0.0])[0] for name, spec in properties.items()}
    assert post(running, record).status_code == 200
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]["application/json"]["example"]
    assert post(running, body, f"/v2/models/{case.directory.name}/infer").status_code == 200


def test_the_server_that_decoded_images_never_loaded_torch(server: tuple[Case, Server, Path]) -> None:
    case, running, _ = server
    assert post(running, {"photo": encoded(photo(case, 2)), "size": 0.0, "shade": "mid"}).status_code == 200
    libraries = mapped_libraries(running.process.pid)
    assert "libtorch" not in libraries and "PIL" in libraries  # Pillow decoded it, in this process


# ---- 5. TFLite ------------------------------------------------------------------------------------
def test_tflite_export_refuses_image_columns_by_name_before_looking_for_its_environment(
        gray: tuple[Case, Predictor, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no TFLite environment (KEEL_TFLITE_PYTHON names nothing) the refusal is still about the column."""
    case, _, _ = gray
    monkeypatch.setenv("KEEL_TFLITE_PYTHON", str(tmp_path / "no-python"))
    from keel.export.tflite import to_tflite

    for run in (lambda: export(case.model, "tflite"), lambda: to_tflite(case.model),
                lambda: export(case.model, "tflite", output=tmp_path / "model.tflite")):
        with pytest.raises(ExportError, match=r"image column\(s\) \['pic'\]") as caught:
            run()
        assert "ONNX" in str(caught.value) and "no-python" not in str(caught.value)
    assert not (tmp_path / "model.tflite").exists() and not (case.directory / "model.tflite").exists()


# ---- 6. the CLI -----------------------------------------------------------------------------------
def test_the_cli_exports_and_predicts_a_csv_of_image_paths(gray: tuple[Case, Predictor, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    case, _, _ = gray
    assert case.table is not None
    copy = tmp_path / "model"
    shutil.copytree(case.directory, copy)
    assert json.loads(metadata_of(copy / "model.onnx")["keel.parity"])["source"] == "data"  # the fixture's export
    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(copy)])
    assert exported.exit_code == 0, exported.output
    metadata = metadata_of(copy / "model.onnx")  # written again: checked on synthetic rows this time
    assert metadata["keel.export_format"] == "5" and json.loads(metadata["keel.parity"])["source"] == "synthetic"
    monkeypatch.chdir(tmp_path)  # the CSV's paths are its folder's, not the working directory's
    predicted = runner.invoke(app, ["predict", str(copy), str(case.table), "-o", "out.csv", "--proba"])
    assert predicted.exit_code == 0, predicted.output
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 60
    probabilities = out[[f"proba_{label}" for label in case.model.classes]].to_numpy()
    assert np.abs(probabilities - keel_says(case.model, case.frame)).max() <= 1e-6
    assert_close(case.model, probabilities, Predictor.load(copy).predict_proba(read_table(case.table)))


def test_the_cli_reports_a_bad_image_path_in_one_line(gray: tuple[Case, Predictor, Path], tmp_path: Path) -> None:
    case, _, _ = gray
    bad = with_a_missing_file(case, "bad.csv")
    result = CliRunner().invoke(app, ["predict", str(case.directory), str(bad), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert "'pic' row 4" in errors[0] and "nowhere.png" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out.csv").exists()
    refused = CliRunner().invoke(app, ["export", str(case.directory), "--format", "tflite"])
    assert refused.exit_code != 0 and "['pic']" in refused.stderr and "Traceback" not in refused.stderr
