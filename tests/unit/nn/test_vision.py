"""Image encoders: the ResNet's torchvision weight names, loading a backbone, the augmentations, frozen backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from keel.nn.vision import AUGMENTATIONS, IMAGE_ENCODERS, RESNET_LAYERS, ImageEncoder, ImageInput, ResNet, SmallCNN


def batch_norm(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def torchvision_names(blocks: tuple[int, int, int, int]) -> list[str]:
    """torchvision.models.resnet18 / resnet34's state_dict keys, in order, without fc.weight and fc.bias.

    Written from torchvision's ResNet (BasicBlock: conv1, bn1, conv2, bn2, then a downsample of a 1x1
    convolution and a batch norm in the first block of stages 2-4), since torchvision is not installed here.
    """
    names = ["conv1.weight", *batch_norm("bn1")]
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            names += [f"{prefix}.conv1.weight", *batch_norm(f"{prefix}.bn1"),
                      f"{prefix}.conv2.weight", *batch_norm(f"{prefix}.bn2")]
            if block == 0 and stage > 1:
                names += [f"{prefix}.downsample.0.weight", *batch_norm(f"{prefix}.downsample.1")]
    return names


def weight(module: nn.Module, name: str) -> torch.Tensor:
    """A parameter or buffer of ``module`` by its state_dict name (sharing its storage)."""
    return module.state_dict()[name]


def resnet(depth: int = 18, size: int = 16) -> ResNet:
    return ResNet(ImageInput(channels=3, size=size, encoder="resnet", depth=depth))


@pytest.mark.parametrize("depth, blocks, parameters", [
    # torchvision's resnet18 / resnet34 hold 11,689,512 / 21,797,672 parameters, 513,000 of them in fc.
    (18, (2, 2, 2, 2), 11_689_512 - 513_000),
    (34, (3, 4, 6, 3), 21_797_672 - 513_000),
])
def test_resnet_state_dict_has_torchvisions_names_and_shapes(depth: int, blocks: tuple[int, int, int, int],
                                                             parameters: int) -> None:
    network = resnet(depth)
    state = network.state_dict()
    assert list(state) == torchvision_names(blocks)
    assert RESNET_LAYERS[depth] == blocks
    assert sum(parameter.numel() for parameter in network.parameters()) == parameters
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert network(torch.rand(2, 3, 16, 16)).shape == (2, 512)


def test_load_backbone_copies_every_weight_and_ignores_fc() -> None:
    torch.manual_seed(0)
    source = {name: value.numpy().copy() for name, value in resnet().state_dict().items()}
    source["fc.weight"], source["fc.bias"] = np.ones((1000, 512), np.float32), np.ones(1000, np.float32)
    encoder = ImageEncoder(ImageInput(channels=3, size=16, encoder="resnet", depth=18))
    encoder.load_backbone(source)
    loaded = encoder.backbone.state_dict()
    assert "fc.weight" not in loaded
    assert all(np.array_equal(loaded[name].numpy(), source[name]) for name in loaded)


def test_load_backbone_refuses_missing_weights_and_wrong_shapes_naming_them() -> None:
    encoder = ImageEncoder(ImageInput(channels=3, size=16, encoder="resnet", depth=18))
    state = {name: value.numpy() for name, value in encoder.backbone.state_dict().items()}
    before = weight(encoder.backbone, "conv1.weight").clone()
    with pytest.raises(ValueError, match=r"do not fit a ResNet-18: shapes conv1.weight \(64, 1, 7, 7\) \(expected "
                                         r"\(64, 3, 7, 7\)\)"):
        encoder.load_backbone({**state, "conv1.weight": np.zeros((64, 1, 7, 7), np.float32)})
    with pytest.raises(ValueError, match="missing layer4.1.bn2.weight"):
        encoder.load_backbone({name: value for name, value in state.items() if name != "layer4.1.bn2.weight"})
    assert torch.equal(weight(encoder.backbone, "conv1.weight"), before)  # a refused file changes nothing


def test_a_resnet_34_file_does_not_fit_a_resnet_18() -> None:
    state = {name: value.numpy() for name, value in resnet(34).state_dict().items()}
    encoder = ImageEncoder(ImageInput(channels=3, size=16, encoder="resnet", depth=18))
    encoder.load_backbone(state)  # a 34's extra blocks are extras: its first two blocks per stage fit an 18
    assert torch.equal(weight(encoder.backbone, "layer3.1.conv1.weight"), torch.from_numpy(state["layer3.1.conv1.weight"]))
    with pytest.raises(ValueError, match="missing layer1.2.conv1.weight"):
        ImageEncoder(ImageInput(channels=3, size=16, encoder="resnet", depth=34)).load_backbone(
            {name: value.numpy() for name, value in resnet(18).state_dict().items()})


@pytest.mark.parametrize("channels, size", [(1, 8), (3, 8), (1, 4), (3, 28)])
def test_small_cnn_maps_any_side_to_dim_features(channels: int, size: int) -> None:
    image = ImageInput(channels=channels, size=size, dim=5)
    network = SmallCNN(image).eval()
    assert network(torch.rand(3, channels, size, size)).shape == (3, 5)
    assert image.width == channels * size * size + 1 and image.features == 6
    assert ImageInput(channels=3, size=size, encoder="resnet", depth=18).features == 513  # dim is the CNN's only


@pytest.mark.parametrize("settings", [
    {"channels": 2, "size": 8}, {"channels": 1, "size": 0}, {"channels": 1, "size": 8, "dim": 0},
    {"channels": 1, "size": 8, "encoder": "vit"}, {"channels": 1, "size": 8, "augment": "rotate"},
    {"channels": 3, "size": 8, "encoder": "resnet", "depth": 50},
])
def test_image_input_refuses_what_keel_does_not_build(settings: dict) -> None:
    with pytest.raises(ValueError, match="not one keel builds|unknown image"):
        ImageInput(**settings)


def test_registries_hold_the_config_choices() -> None:
    assert set(IMAGE_ENCODERS) == {"cnn", "resnet"}
    assert set(AUGMENTATIONS) == {"none", "shift", "flip", "shift_flip"}


def dot(batch: int, side: int, row: int, column: int, channels: int = 1) -> torch.Tensor:
    """(batch, channels, side, side) zeros with one bright pixel (the same in every channel)."""
    pixels = torch.zeros(batch, channels, side, side)
    pixels[:, :, row, column] = 1.0
    return pixels


@pytest.mark.parametrize("side", [8, 16, 32])
def test_shift_moves_content_by_at_most_an_eighth_of_the_side(side: int) -> None:
    torch.manual_seed(0)
    centre = side // 2
    pixels = dot(1024, side, centre, centre, channels=3)
    shifted = AUGMENTATIONS["shift"](pixels)
    assert shifted.shape == pixels.shape
    assert torch.equal(shifted[:, 0], shifted[:, 1]) and torch.equal(shifted[:, 0], shifted[:, 2])  # moved together
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), torch.full((1024,), 3.0))  # nothing lost or smeared
    where = shifted[:, 0].flatten(1).argmax(dim=1)
    rows, columns = where // side - centre, where % side - centre
    reach = side // 8
    assert int(rows.abs().max()) == reach and int(columns.abs().max()) == reach
    assert len(set(zip(rows.tolist(), columns.tolist()))) == (2 * reach + 1) ** 2  # every offset within reach


def test_shift_fills_the_uncovered_edge_with_zeros() -> None:
    torch.manual_seed(1)
    shifted = AUGMENTATIONS["shift"](torch.ones(64, 1, 16, 16))
    assert shifted.min() == 0 and shifted.max() == 1
    assert (shifted == 0).sum(dim=(1, 2, 3)).max() <= 16 * 16 - 14 * 14  # at most two pixels off each way


def test_flip_mirrors_exactly_the_images_it_chooses() -> None:
    torch.manual_seed(0)
    pixels = torch.rand(64, 3, 8, 8)  # no image is its own mirror
    flipped = AUGMENTATIONS["flip"](pixels)
    mirrored = torch.tensor([torch.equal(out, image.flip(2)) for out, image in zip(flipped, pixels)])
    kept = torch.tensor([torch.equal(out, image) for out, image in zip(flipped, pixels)])
    assert bool((mirrored ^ kept).all())  # each image is exactly itself or its mirror, all channels alike
    assert 10 < int(mirrored.sum()) < 54  # about half


def test_none_is_the_identity() -> None:
    pixels = torch.rand(4, 1, 8, 8)
    assert AUGMENTATIONS["none"](pixels) is pixels


def test_augmentation_happens_in_training_only_and_a_frozen_backbone_stays_in_eval_mode() -> None:
    torch.manual_seed(0)
    encoder = ImageEncoder(ImageInput(channels=3, size=8, encoder="resnet", depth=18, augment="flip"))
    assert not any(parameter.requires_grad for parameter in encoder.backbone.parameters())
    block = torch.cat([torch.rand(32, 3 * 8 * 8), torch.zeros(32, 1)], dim=1)
    running = weight(encoder.backbone, "bn1.running_mean").clone()

    encoder.eval()
    first, second = encoder(block), encoder(block)
    assert torch.equal(first, second)  # eval: deterministic, no augmentation
    pixels = block[:, :-1].reshape(-1, 3, 8, 8)
    assert torch.allclose(first[:, :-1], encoder.backbone(pixels))

    encoder.train()
    assert encoder.training and not encoder.backbone.training  # a frozen backbone keeps its batch norm statistics
    trained = encoder(block)
    mirrored = torch.tensor([torch.allclose(out, flipped, atol=1e-6) and not torch.allclose(out, plain, atol=1e-6)
                            for out, plain, flipped in zip(trained[:, :-1], first[:, :-1],
                                                           encoder.backbone(pixels.flip(3)))])
    assert 0 < int(mirrored.sum()) < 32  # some rows flipped, some not
    assert torch.equal(weight(encoder.backbone, "bn1.running_mean"), running)


def test_a_finetuned_backbone_trains_and_updates_its_batch_norms() -> None:
    encoder = ImageEncoder(ImageInput(channels=3, size=8, encoder="resnet", depth=18, finetune=True)).train()
    assert encoder.backbone.training and all(parameter.requires_grad for parameter in encoder.backbone.parameters())
    running = weight(encoder.backbone, "bn1.running_mean").clone()
    encoder(torch.cat([torch.rand(4, 3 * 8 * 8) + 1, torch.zeros(4, 1)], dim=1))
    assert not torch.equal(weight(encoder.backbone, "bn1.running_mean"), running)


def test_the_missing_flag_passes_through_the_encoder() -> None:
    encoder = ImageEncoder(ImageInput(channels=1, size=8, dim=4)).eval()
    block = torch.cat([torch.zeros(3, 64), torch.tensor([[0.0], [1.0], [0.0]])], dim=1)
    out = encoder(block)
    assert out.shape == (3, 5) and out[:, -1].tolist() == [0.0, 1.0, 0.0]
