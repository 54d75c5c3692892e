"""One image as the pixels keel's networks read: the one rule for training, keel.runtime and keel serve.

An image (a Pillow image, or an array of ``(height, width)`` or ``(height, width, channels)``) is
converted to the column's mode (``L``: 1 channel, ``RGB``: 3), resized to a ``size`` x ``size``
square (bilinear) and scaled to [0, 1]: file pixels divided by 255, arrays by the column's
``scale`` (255 for uint8 arrays; the training arrays' largest value otherwise, 16 for
scikit-learn's digits). Imports only NumPy, and Pillow when an image is read: the torch-free
predictor uses it as it is.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keel.errors import DataError

_LISTED = 10  # rows named in an error about several bad images
# Pillow modes without colour (the alpha band is not a colour).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Gray modes of more than 8 bits, read as numbers (divided by 65535; F as it is) rather than converted.
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# ITU-R 601-2 luma, as Pillow's convert("L") weighs red, green and blue.
_LUMA = np.array([[0.299], [0.587], [0.114]], dtype=np.float32)


@dataclass(frozen=True)
class PixelSpec:
    """How an image column's values become pixels (keel.images in the ONNX metadata says the same)."""

    mode: str  # Pillow's: "L" (1 channel) or "RGB" (3)
    size: int  # the side of the square each image is resized to
    scale: float  # what an array's values are divided by (files: 255)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


# The most pixels an image may have (8192 x 8192): a 100 kB PNG can declare 10,000 x 10,000 pixels, 300 MB
# and a second to decode for an 8 x 8 model. Pillow's own limit is 179M.
MAX_PIXELS = 1 << 26


def open_image(source: str | Path | bytes) -> Any:
    """A Pillow image of a file path or of a file's bytes (its header read; decoded when its pixels are read).

    Raises:
        FileNotFoundError, PIL.UnidentifiedImageError, OSError: as ``PIL.Image.open`` does.
        PIL.Image.DecompressionBombError: The image declares more than :data:`MAX_PIXELS` pixels.
    """
    from PIL import Image

    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    if image.size[0] * image.size[1] > MAX_PIXELS:
        width, height = image.size
        image.close()
        raise Image.DecompressionBombError(f"it declares {width}x{height} pixels, more than keel reads "
                                           f"({MAX_PIXELS:,}); shrink it first")
    return image


def image_array(value: np.ndarray) -> np.ndarray | None:
    """An array cell as ``(height, width, 1 or 3)`` (an alpha band dropped), or None when it is no image."""
    array = value[..., None] if value.ndim == 2 else value
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1 or array.dtype.kind not in "biuf":
        return None
    return array[..., :3] if array.shape[2] == 4 else array


def file_pixels(image: Any, mode: str, size: int) -> np.ndarray:
    """A Pillow image as ``(channels, size, size)`` float32 in [0, 1]; decodes it (OSError if damaged)."""
    from PIL import Image

    if image.mode in _WIDE_MODES:  # 16- and 32-bit gray: Pillow's convert("L") would clip at 255
        values = np.asarray(image, dtype=np.float32)
        return array_pixels(values[..., None], mode, size, 1.0 if image.mode == "F" else 65535.0)
    converted = image.convert(mode)
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    values = np.asarray(converted, dtype=np.float32) / 255.0
    return values[None] if values.ndim == 2 else values.transpose(2, 0, 1)


def array_pixels(array: np.ndarray, mode: str, size: int, scale: float) -> np.ndarray:
    """An :func:`image_array` as ``(channels, size, size)`` float32, divided by ``scale``."""
    from PIL import Image

    # uint8 arrays hold 0-255 whatever the column's scale; NaN (and infinite) pixels read as 0.
    values = np.nan_to_num(array.astype(np.float32) / np.float32(255.0 if array.dtype == np.uint8 else scale),
                           nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "L" and values.shape[2] == 3:
        values = values @ _LUMA
    elif mode == "RGB" and values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    if values.shape[:2] != (size, size):
        values = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(values[..., band])).resize(
            (size, size), Image.Resampling.BILINEAR)) for band in range(values.shape[2])], axis=2)
    return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)


def base_folder(source: str | None) -> Path:
    """The folder relative image paths are read from: the data file's (or folder's, for Parquet parts), or the
    working directory for data that came from no file (a DataFrame's source is the label "DataFrame")."""
    path = Path(source) if source else None
    if path is not None and path.is_dir():
        return path
    if path is not None and path.is_file():
        return path.parent
    return Path.cwd()


def resolved(values: list[Any], source: str | None) -> list[Any]:
    """Relative path strings among ``values`` made absolute against ``source``'s folder (the rest as they are)."""
    base = base_folder(source)
    return [str(base / path) if path is not None and not path.is_absolute() else value
            for value in values for path in [as_path(value)]]


def is_pillow_image(value: Any) -> bool:
    """True for a Pillow image (told by what is used of it, so Pillow need not be imported to ask)."""
    return hasattr(value, "convert") and hasattr(value, "mode") and hasattr(value, "size")


def file_source(value: Any) -> bytes | Path | None:
    """An image cell that names a file: its bytes (bytes, bytearray, memoryview), or its path (:func:`as_path`);
    None for anything else."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return as_path(value)


def as_path(value: Any) -> Path | None:
    """A path cell (text or a PathLike) as a Path, ``~`` expanded; None for anything else or blank text."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
        return Path(str(value).strip()).expanduser()
    return None


def raise_all(problems: list[DataError], column: str, source: str | None) -> None:
    """One error for every cell of a column that is no usable image: the first row's message in full, then the
    rows of the others (a user fixes them all at once, not one run at a time). Training, keel.runtime and an
    export's --data rows all say it so."""
    if not problems:
        return
    problems = sorted(problems, key=lambda error: error.row or 0)
    first = problems[0]
    if len(problems) == 1:
        raise first
    rows = [str(error.row) for error in problems[1:]]
    listed = ", ".join(rows[:_LISTED]) + (f" and {len(rows) - _LISTED:,} more" if len(rows) > _LISTED else "")
    raise DataError(f"{first} {len(rows):,} more row(s) of image column {column!r} cannot be used either: row(s) "
                    f"{listed}.", file=source, column=column, row=first.row)
