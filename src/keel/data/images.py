"""Image columns as pixels: each image read (Pillow, lazily, one at a time), resized and scaled.

An image column holds file paths (relative to the data file's folder, or to the working directory
for a DataFrame) or arrays (``(height, width)`` or ``(height, width, channels)``, as a DataFrame
built from ``sklearn.datasets.load_digits().images`` holds them). Every image becomes a square of
``size`` pixels in ``gray`` (1 channel) or ``rgb`` (3), scaled to [0, 1] and standardised per
channel (the training images' mean and spread for the CNN trained from scratch, ImageNet's for a
pretrained ResNet, whose weights expect them), plus a missing-image flag: ``channels x size x size
+ 1`` numbers per row, which the network's image encoder (:mod:`keel.nn.vision`) reads as a picture.

Data knows no torch: a pretrained backbone's file is read here (safetensors, as numpy arrays) and
the training pipeline copies it into the network.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import pandas as pd

from keel.config import ImageConfig
from keel.data.pixels import (
    GRAY_MODES,
    PixelSpec,
    array_pixels,
    base_folder,
    file_pixels,
    file_source,
    image_array,
    is_pillow_image,
    open_image,
    raise_all,
)
from keel.errors import ConfigError, DataError

# Images the column's size and channels are decided from (their headers only) and, for the CNN, its
# per-channel mean and spread (decoded): enough for stable figures, cheap on a 100k-image column.
_PROBE = 1000
_STATISTICS = 2000
# The largest side picked for a column (image.size unset): a 64 x 64 RGB image is 12,288 numbers a row.
AUTO_MAX_SIZE = 64
# ImageNet's per-channel mean and standard deviation, which torchvision's and timm's ResNets were trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# image.channels -> (Pillow mode, channels); auto is decided from the training images in fit.
CHANNEL_MODES: dict[str, tuple[str, int]] = {"gray": ("L", 1), "rgb": ("RGB", 3)}
# File names a column of paths is recognised by (schema inference).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA and an empty (or blank) string are a missing image."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, str) and not value.strip()):
        return True
    return isinstance(value, float) and np.isnan(value)


class _Image:
    """One cell's image: its size and colour known (a file's header read), its pixels decoded by ``pixels``."""

    def __init__(self, value: Any, base: Path, column: str, row: int, source: str | None) -> None:
        from PIL.Image import DecompressionBombError, UnidentifiedImageError

        self.array: np.ndarray | None = None
        self.image: Any = None
        self.column, self.row, self.source = column, row, source
        if isinstance(value, np.ndarray):
            array = image_array(value)
            if array is None:
                raise DataError(f"image column {column!r} row {row} holds an array of shape {value.shape} "
                                f"({value.dtype}); an image is numbers of shape (height, width) or (height, width, "
                                "channels) with 1, 3 or 4 channels.", file=source, column=column, row=row)
            self.array, self.size = array, (array.shape[1], array.shape[0])
            self.bands = 1 if array.shape[2] == 1 else 3
            return
        if is_pillow_image(value):
            self.image = value
            self.size, self.bands = value.size, 1 if value.mode in GRAY_MODES else 3
            return
        found = file_source(value)
        if found is None:
            raise DataError(f"image column {column!r} row {row} holds {type(value).__name__} {str(value)[:60]!r}; an "
                            "image cell is a file path, a file's bytes, an array or a Pillow image.", file=source,
                            column=column, row=row)
        # A file's bytes are read as the file would be; named in messages by their length.
        self.path: Any = found if isinstance(found, bytes) or found.is_absolute() else base / found
        try:
            with open_image(self.path) as file:  # the header only; pixels() opens it again to decode
                self.size, mode = file.size, file.mode
        except FileNotFoundError:
            raise DataError(f"image column {column!r} row {row}: the file {value!r} does not exist (looked for "
                            f"{self.shown}; relative paths are read from the data file's folder); fix the path, or "
                            "leave the cell empty for a missing image.", file=source, column=column, row=row) from None
        except (UnidentifiedImageError, OSError, DecompressionBombError) as error:
            why = ("is not an image Pillow can read" if isinstance(error, UnidentifiedImageError) else
                   f"is too large: {error}" if isinstance(error, DecompressionBombError)
                   else f"cannot be read ({error.__class__.__name__})")
            raise DataError(f"image column {column!r} row {row}: {self.shown} {why}; replace it with a PNG or JPEG, "
                            "or leave the cell empty for a missing image.", file=source, column=column,
                            row=row) from None
        self.bands = 1 if mode in GRAY_MODES else 3

    @property
    def shown(self) -> str:
        """The image as messages name it: its path, or its bytes' length."""
        return f"an image of {len(self.path):,} bytes" if isinstance(self.path, bytes) else str(self.path)

    def pixels(self, mode: str, size: int, scale: float) -> np.ndarray:
        """(channels, size, size) float32 in [0, 1] (arrays: divided by ``scale``)."""
        from PIL.Image import DecompressionBombError

        if self.array is not None:
            return array_pixels(self.array, mode, size, scale)
        if self.image is not None:
            return file_pixels(self.image, mode, size)
        try:
            with open_image(self.path) as file:
                return file_pixels(file, mode, size)
        except (OSError, ValueError, SyntaxError, DecompressionBombError) as error:  # a damaged file decodes here
            raise DataError(f"image column {self.column!r} row {self.row}: {self.shown} is damaged and cannot be "
                            f"decoded ({str(error)[:80]}); replace it, or leave the cell empty for a missing image.",
                            file=self.source, column=self.column, row=self.row) from None


def _a(number: int) -> str:
    """The article before a number said aloud: an 8x8, an 11x11, an 80x80, a 64x64."""
    return "an" if str(number).startswith("8") or str(number) in ("11", "18") else "a"


class ImageTransform:
    """An image column -> ``channels x size x size`` standardised pixels and a missing-image flag.

    Args:
        name: The column.
        settings: The config's ``image`` section.
    """

    kind: ClassVar[str] = "image"

    def __init__(self, name: str, settings: ImageConfig | None = None) -> None:
        settings = settings or ImageConfig()
        self.name = name
        self.encoder = settings.encoder
        self.size = settings.size or 0  # 0 until fit picks it
        self.channels = settings.channels
        self.strict = settings.strict
        self.augment = settings.augment
        self.dim = settings.dim
        self.finetune = settings.finetune
        self.model_path = str(Path(settings.model_path).expanduser().absolute()) if settings.model_path else None
        self.native = (0, 0)  # the training images' most common (width, height)
        self.native_bands = 1  # ... and number of colour channels (what image.strict compares with)
        self.scale = 255.0  # arrays: the value of full intensity
        self.mean: list[float] = []
        self.std: list[float] = []
        self.depth = 0  # resnet: 18 or 34, from the weights' names
        self.model_sha256 = ""
        self.notes: list[str] = []
        self.backbone: dict[str, np.ndarray] | None = None  # resnet: the pretrained weights, read in fit
        self._counts: Counter[str] = Counter()  # images resized / converted while training transforms its rows
        self._training = False

    @property
    def mode(self) -> str:
        """The Pillow mode images are read in: a ResNet reads RGB whatever the column holds."""
        return "RGB" if self.encoder == "resnet" else CHANNEL_MODES[self.channels][0]

    @property
    def pixel_spec(self) -> PixelSpec:
        """How this column's values become pixels, for the exported graph's callers."""
        return PixelSpec(self.mode, self.size, self.scale)

    @property
    def bands(self) -> int:
        return 3 if self.mode == "RGB" else 1

    @property
    def width(self) -> int:
        """Number of float columns this transform emits: the pixels and the missing flag."""
        return self.bands * self.size * self.size + 1

    @property
    def parts(self) -> list[str]:
        """The name of each column this transform emits (for messages)."""
        return [*(f"pixel {index + 1}" for index in range(self.width - 1)), "missing"]

    def _images(self, series: pd.Series, source: str | None,
                problems: list[DataError]) -> Iterator[tuple[int, _Image | None]]:
        """Each cell's position and image, one at a time (a file's header read, its pixels not yet), None where it
        is empty; a cell that is no image is left out and its error added to ``problems`` (see :func:`_raise_all`)."""
        base = base_folder(source)
        for position, (index, value) in enumerate(zip(series.index, series.tolist())):
            if _missing(value):
                yield position, None
                continue
            try:
                image = _Image(value, base, self.name, int(index) + 1, source)
            except DataError as error:
                problems.append(error)
                continue
            yield position, image

    def fit(self, series: pd.Series, source: str | None = None,
            others: pd.Series | None = None) -> "ImageTransform":
        """Decide the size and channels (when unset), the scale of arrays and the per-channel statistics.
        ``others``: the table's other rows (validation, test), read later; where a training image cannot be read,
        their files are checked too, so that one error names every bad row of the column.

        Raises:
            DataError: Every training image is missing, or one cannot be read.
            ConfigError: image.encoder resnet without a usable image.model_path; image.finetune without resnet.
        """
        if self.finetune and self.encoder != "resnet":  # the cnn trains with the rest anyway: it was ignored silently
            raise ConfigError("image.finetune trains a pretrained backbone; set image.encoder: resnet (with "
                              "image.model_path), or leave image.finetune out: the cnn always trains with the network.")
        present = series[[not _missing(value) for value in series.tolist()]]
        if not len(present):
            raise DataError(f"image column {self.name!r} is empty in every training row; fill it, or leave the "
                            "column out of input_features.", file=source, column=self.name)
        # Every training image's header is read (a file that is no image is named with all the others, first row
        # first); the size, colours and scale are decided on a sample of them.
        problems: list[DataError] = []
        read = [image for _, image in self._images(present, source, problems) if image is not None]
        if problems and others is not None:
            for _ in self._images(others, source, problems):  # their errors only: the images are not kept
                pass
        raise_all(problems, self.name, source)
        images = ([read[position] for position in sorted(np.random.default_rng(0).choice(len(read), _PROBE,
                                                                                          replace=False))]
                  if len(read) > _PROBE else read)
        sizes = Counter(image.size for image in images)
        self.native = sizes.most_common(1)[0][0]
        if not self.size:
            width, height = self.native
            self.size = width if width == height and width <= AUTO_MAX_SIZE else AUTO_MAX_SIZE
        self.native_bands = Counter(image.bands for image in images).most_common(1)[0][0]
        if self.channels == "auto":
            self.channels = "rgb" if any(image.bands == 3 for image in images) else "gray"
        arrays = [image.array for image in images if image.array is not None and image.array.dtype != np.uint8]
        if arrays:  # uint8 arrays are divided by 255 whatever the column's scale (keel.data.pixels)
            finite = [array[np.isfinite(array)] for array in arrays]
            top = max((float(values.max()) for values in finite if values.size), default=1.0)
            self.scale = top if top > 1.0 else 1.0
        if self.encoder == "resnet":
            self._read_backbone()
            self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        else:
            sample = images[:_STATISTICS]
            pixels = np.stack([image.pixels(self.mode, self.size, self.scale) for image in sample])
            self.mean = pixels.mean(axis=(0, 2, 3)).astype(float).tolist()
            spread = pixels.std(axis=(0, 2, 3))
            self.std = np.where(spread > 1e-6, spread, 1.0).astype(float).tolist()
        self.notes, self._counts, self._training = [], Counter(), True
        return self

    def _read_backbone(self) -> None:
        if not self.model_path:
            raise ConfigError("image.encoder resnet needs image.model_path: a .safetensors file of a ResNet-18 or -34 "
                              "(torchvision / timm weight names); keel downloads nothing. Or use image.encoder cnn.")
        try:
            self.backbone, self.depth, self.model_sha256 = read_backbone(self.model_path)
        except ConfigError as error:  # say which column the file failed for
            raise ConfigError(f"image column {self.name!r}: {error}") from None

    def transform(self, series: pd.Series, source: str | None = None) -> tuple[np.ndarray, int]:
        """Returns ``(values (n, width) float32, 0)``: each image's standardised pixels and its missing flag.

        Raises:
            DataError: A file is missing or not an image; with image.strict, an image of another size or
                channel count than the column's.
        """
        out = np.zeros((len(series), self.width), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        problems: list[DataError] = []
        for position, image in self._images(series, source, problems):
            if image is None:
                out[position, -1] = 1.0
                continue
            resized, converted = image.size != self.native, image.bands != self.native_bands
            if (resized or converted) and self.strict:
                problems.append(DataError(
                    f"image column {self.name!r} row {series.index[position] + 1} is {_a(image.size[0])} {image.size[0]}x{image.size[1]} "
                    f"{'gray' if image.bands == 1 else 'colour'} image; most of the column's are {self.native[0]}x"
                    f"{self.native[1]} {'gray' if self.native_bands == 1 else 'colour'} (image.strict is on). Make the images alike, or turn "
                    "image.strict off to resize and convert them.", file=source, column=self.name,
                    row=int(series.index[position]) + 1))
                continue
            try:
                pixels = image.pixels(self.mode, self.size, self.scale)
            except DataError as error:  # a damaged file decodes here
                problems.append(error)
                continue
            if self._training:
                self._counts["resized"] += resized
                self._counts["converted"] += converted
            out[position, :-1] = ((pixels - mean) / std).ravel()
        raise_all(problems, self.name, source)
        return out, 0

    def finish_training(self) -> None:
        """The training rows are transformed: say how many images were resized or converted, stop counting."""
        if self._training:
            native = f"{self.native[0]}x{self.native[1]}"
            for what, count in sorted(self._counts.items()):
                if count:
                    target = (f"{native} images" if what == "resized" else
                              f"{'gray' if self.native_bands == 1 else 'colour'} images")
                    self.notes.append(f"image column {self.name!r}: {count:,} image(s) {what} to match the column's "
                                      f"{target} (set image.strict to refuse them instead)")
            self.notes.append(f"image column {self.name!r}: read as {self.size}x{self.size} "
                              f"{'rgb' if self.bands == 3 else 'gray'} pixels"
                              + (f" (most images are {native})" if self.native != (self.size, self.size) else ""))
        self._training = False

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "encoder": self.encoder, "size": self.size,
                "channels": self.channels, "strict": self.strict, "augment": self.augment, "dim": self.dim,
                "finetune": self.finetune, "model_path": self.model_path, "native": list(self.native),
                "native_bands": self.native_bands,
                "scale": self.scale, "mean": self.mean, "std": self.std, "depth": self.depth,
                "model_sha256": self.model_sha256}

    def problem(self) -> str | None:
        """What is inconsistent in a loaded transform's state, or None."""
        if self.channels not in CHANNEL_MODES or not 1 <= self.size <= 512:
            return f"column {self.name!r}: channels {self.channels!r} and size {self.size} are not an image's"
        if len(self.mean) != self.bands or len(self.std) != self.bands or not all(value > 0 for value in self.std):
            return f"column {self.name!r}: {len(self.mean)} means and {len(self.std)} spreads for {self.bands} channel(s)"
        return None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ImageTransform":
        transform = cls(state["name"], ImageConfig(
            encoder=state["encoder"], size=state["size"], channels=state["channels"], strict=state["strict"],
            augment=state["augment"], dim=state["dim"], finetune=state["finetune"], model_path=state["model_path"]))
        transform.native = (int(state["native"][0]), int(state["native"][1]))
        transform.native_bands = int(state["native_bands"])
        transform.scale, transform.depth, transform.model_sha256 = float(state["scale"]), state["depth"], state["model_sha256"]
        transform.mean, transform.std = [float(v) for v in state["mean"]], [float(v) for v in state["std"]]
        return transform


def read_backbone(path: str) -> tuple[dict[str, np.ndarray], int, str]:
    """A pretrained ResNet's weights from a safetensors file: ``(arrays, depth, sha256)``.

    Only safetensors is read (a pickle file could run code); the depth comes from the weight names
    (``layer3.5.conv1.weight`` exists in a ResNet-34, not in an 18); a ResNet-50 or deeper (bottleneck
    blocks, ``conv3``) is refused. Shapes are checked when the network takes the weights.

    Raises:
        ConfigError: The path is missing, not a safetensors file, or not a ResNet-18 / -34.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"image.model_path {path} does not exist (or is a folder); point it at a ResNet's "
                          ".safetensors file. keel downloads nothing.")
    if file.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"):
        raise ConfigError(f"image.model_path {path} is a PyTorch pickle file, which could run code when read; keel "
                          "reads .safetensors only (convert it once with safetensors.torch.save_file).")
    content = file.read_bytes()
    try:
        arrays = load(content)
    except (SafetensorError, ValueError, OSError) as error:
        raise ConfigError(f"image.model_path {path} is not a safetensors file ({str(error)[:100]}); keel reads "
                          "ResNet weights as .safetensors only.") from None
    arrays = {key.removeprefix("model.").removeprefix("backbone."): value for key, value in arrays.items()}
    if any(key.endswith("conv3.weight") for key in arrays):
        raise ConfigError(f"image.model_path {path} is a bottleneck ResNet (50 or deeper); keel builds ResNet-18 and "
                          "-34. Use one of those.")
    if "conv1.weight" not in arrays or "layer4.0.conv1.weight" not in arrays:
        raise ConfigError(f"image.model_path {path} holds no ResNet weights (no conv1.weight / layer4.0.conv1.weight; "
                          f"its first names: {sorted(arrays)[:4]}); keel reads torchvision / timm ResNet-18 and -34 "
                          "names.")
    depth = 34 if "layer3.5.conv1.weight" in arrays else 18
    return arrays, depth, hashlib.sha256(content).hexdigest()
