"""Image encoders: a small CNN trained from scratch, or a ResNet-18 / -34 with torchvision's weight names.

An image column reaches the network as ``channels x size x size`` standardised pixels and a
missing flag (:mod:`keel.data.images`); :class:`ImageEncoder` turns them into ``features + 1``
numbers that join the first layer beside the other columns. The ResNet is keel's own code (no
torchvision, whose wheels do not import beside every torch build), with the names torchvision and
timm checkpoints use (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``...), so
their weights load as they are; their ``fc`` classifier is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

# ResNet depth -> BasicBlocks per stage (as torchvision's resnet18 / resnet34).
RESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# The small CNN's stages: each two 3x3 convolutions (batch norm, ReLU), then a 2x2 max pool while the
# picture is at least 4 pixels wide.
_CNN_WIDTHS = (32, 64, 128)


@dataclass
class ImageInput:
    """The shape of one image column's encoder (part of :class:`keel.nn.network.NetworkSpec`)."""

    channels: int
    size: int
    encoder: str = "cnn"  # an IMAGE_ENCODERS key
    dim: int = 64  # cnn: its output features
    depth: int = 0  # resnet: 18 or 34
    augment: str = "none"  # an AUGMENTATIONS key
    finetune: bool = False  # resnet: train the backbone too

    def __post_init__(self) -> None:
        if self.channels not in (1, 3) or not 1 <= self.size <= 512 or not 1 <= self.dim <= 2048:
            raise ValueError(f"an image input of {self.channels} channel(s), side {self.size} and {self.dim} features "
                             "is not one keel builds")
        if self.encoder not in IMAGE_ENCODERS or self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown image encoder {self.encoder!r} or augmentation {self.augment!r}")
        if self.encoder == "resnet" and self.depth not in RESNET_LAYERS:
            raise ValueError(f"a ResNet of depth {self.depth} is not one keel builds (18 or 34)")

    @property
    def pixels(self) -> int:
        return self.channels * self.size * self.size

    @property
    def width(self) -> int:
        """Numbers the column takes in the network's input: its pixels and the missing flag."""
        return self.pixels + 1

    @property
    def features(self) -> int:
        """Numbers the encoder hands the first layer: its features and the missing flag."""
        return (512 if self.encoder == "resnet" else self.dim) + 1


class SmallCNN(nn.Module):
    """Three stages of two 3x3 convolutions (32, 64, 128 channels), global average pooling, a linear layer."""

    def __init__(self, image: ImageInput) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = image.channels, image.size
        for width in _CNN_WIDTHS:
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            if side >= 4:
                layers.append(nn.MaxPool2d(2))
                side //= 2
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels, image.dim), nn.ReLU())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(pixels))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (names included): two 3x3 convolutions and a shortcut."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = (nn.Sequential(nn.Conv2d(inputs, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                           if stride != 1 or inputs != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet(nn.Module):
    """A ResNet-18 or -34 without its classifier: (batch, 3, h, w) -> (batch, 512)."""

    def __init__(self, image: ImageInput) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inputs = 64
        stages: list[nn.Sequential] = []
        for stage, (blocks, width) in enumerate(zip(RESNET_LAYERS[image.depth], (64, 128, 256, 512))):
            stride = 1 if stage == 0 else 2
            layer = []
            for block in range(blocks):
                layer.append(BasicBlock(inputs, width, stride if block == 0 else 1))
                inputs = width
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages  # torchvision's names
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _shift(pixels: torch.Tensor) -> torch.Tensor:
    """Each image moved by up to an eighth of its side in each direction (the edge filled with zeros, the
    column's mean after standardising)."""
    batch, _, side, _ = pixels.shape
    reach = max(1, side // 8)
    padded = nn.functional.pad(pixels, (reach, reach, reach, reach))
    offsets = torch.randint(0, 2 * reach + 1, (2, batch), device=pixels.device)
    steps = torch.arange(side, device=pixels.device)
    rows = (offsets[0, :, None] + steps)[:, None, :, None]  # (batch, 1, side, 1)
    cols = (offsets[1, :, None] + steps)[:, None, None, :]  # (batch, 1, 1, side)
    index = torch.arange(batch, device=pixels.device)[:, None, None, None]
    channel = torch.arange(pixels.shape[1], device=pixels.device)[None, :, None, None]
    return padded[index, channel, rows, cols]


def _flip(pixels: torch.Tensor) -> torch.Tensor:
    """Half the images mirrored left to right."""
    flipped = torch.rand(len(pixels), device=pixels.device) < 0.5
    return torch.where(flipped[:, None, None, None], pixels.flip(3), pixels)


# image.augment -> what it does to a training batch's pixels.
AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda pixels: pixels,
    "shift": _shift,
    "flip": _flip,
    "shift_flip": lambda pixels: _flip(_shift(pixels)),
}
# image.encoder -> the backbone it builds.
IMAGE_ENCODERS: dict[str, Callable[[ImageInput], nn.Module]] = {"cnn": SmallCNN, "resnet": ResNet}


class ImageEncoder(nn.Module):
    """One image column's block of the input, ``(batch, pixels + 1)`` -> ``(batch, features + 1)``.

    A frozen backbone (a ResNet without ``finetune``) has no trainable weights and stays in eval mode
    (its batch norms keep the checkpoint's statistics) even while the network trains.
    """

    def __init__(self, image: ImageInput) -> None:
        super().__init__()
        self.image = image
        self.backbone = IMAGE_ENCODERS[image.encoder](image)
        self.frozen = image.encoder == "resnet" and not image.finetune
        if self.frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        image = self.image
        pixels = block[:, :-1].reshape(-1, image.channels, image.size, image.size)
        if self.training and image.augment != "none":
            pixels = AUGMENTATIONS[image.augment](pixels)
        return torch.cat([self.backbone(pixels), block[:, -1:]], dim=1)

    @torch.no_grad()
    def load_backbone(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy pretrained weights (torchvision / timm names; ``fc`` and unknown extras ignored) into the backbone.

        Raises:
            ValueError: A weight the backbone needs is missing or has another shape (names them).
        """
        state = self.backbone.state_dict()
        missing = [name for name in state if name not in arrays and not name.endswith("num_batches_tracked")]
        wrong = [f"{name} {tuple(arrays[name].shape)} (expected {tuple(state[name].shape)})" for name in state
                 if name in arrays and tuple(arrays[name].shape) != tuple(state[name].shape)]
        if missing or wrong:
            raise ValueError(f"the file's weights do not fit a ResNet-{self.image.depth}: "
                             + (f"missing {', '.join(missing[:3])}" if missing else f"shapes {', '.join(wrong[:3])}"))
        for name, tensor in state.items():
            if name in arrays:
                tensor.copy_(torch.from_numpy(np.array(arrays[name])).to(tensor.dtype))
