"""Each string option of the config is resolved by one registry whose keys are the option's Literal values.

A value added to a ``Literal`` without its registry entry (or the reverse) fails here, not in a
user's run. ``auto`` is left out only where another function resolves it, named below.
"""

from __future__ import annotations

import typing
from typing import Any, Callable, Literal, Mapping

import pytest
import torch
from pydantic import BaseModel

from keel.config import PRESETS, Config, TrainingConfig
from keel.data import images, text, transforms
from keel.errors import ConfigError
from keel.nn import losses, mlp, numeric, sentence, vision
from keel.nn.network import NetworkSpec, TabularNetwork
from keel.registry import lookup
from keel.train import calibration, fused, guards, pipeline, trainer

# option -> (its registry, the Literal values resolved elsewhere before the registry is asked).
REGISTRIES: dict[str, tuple[Callable[[], Mapping[str, Any]], frozenset[str]]] = {
    "model.activation": (lambda: mlp.ACTIVATIONS, frozenset()),
    "model.init": (lambda: mlp.INITIALIZERS, frozenset()),
    "model.norm": (lambda: mlp.NORMS, frozenset()),
    "model.architecture": (lambda: mlp.ARCHITECTURES, frozenset()),
    "model.numeric_embedding": (lambda: numeric.NUMERIC_EMBEDDINGS, frozenset()),
    "training.optimizer": (lambda: trainer.OPTIMIZERS, frozenset()),
    "training.schedule": (lambda: trainer.SCHEDULES, frozenset()),
    "training.loss": (lambda: losses.LOSSES, frozenset({"auto"})),  # losses.resolve_loss_name, per task
    "training.monitor": (lambda: trainer.MONITORS, frozenset({"auto"})),  # trainer.resolve_monitor, per task
    "preprocessing.normalize": (lambda: transforms.SCALERS, frozenset()),
    "input_features[].type": (lambda: transforms.TRANSFORMS, frozenset({"auto"})),  # inferred by data/schema
    "preset": (lambda: PRESETS, frozenset()),
    "preprocessing.missing": (lambda: transforms.FILLS, frozenset()),
    "preprocessing.categorical_encoding": (lambda: pipeline.CATEGORY_ENCODINGS, frozenset()),
    "training.threshold_metric": (lambda: calibration.THRESHOLD_METRICS, frozenset()),
    "training.nonfinite": (lambda: guards.NONFINITE_POLICIES, frozenset()),
    "text.encoder": (lambda: text.TEXT_ENCODERS, frozenset()),
    "image.encoder": (lambda: vision.IMAGE_ENCODERS, frozenset()),
    "text.finetune": (lambda: sentence.FINETUNES, frozenset()),
    "image.augment": (lambda: vision.AUGMENTATIONS, frozenset()),
    "image.channels": (lambda: images.CHANNEL_MODES, frozenset({"auto"})),  # ImageTransform.fit, from the images
}

# Literal fields that are not a choice among implementations, so have no registry.
NOT_OPTIONS: dict[str, str] = {
    "task": "a property of the target, inferred by data/schema and validated there",
    "training.class_weights": "a switch (off, on, on-when-imbalanced) read by the training pipeline",
    "training.precision": "resolved with the device by train/device.resolve_precision",
}


def _literal_fields(model: type[BaseModel], prefix: str = "") -> dict[str, set[str]]:
    """Every field of ``model`` (recursively) whose type is a Literal of strings -> its values."""
    found: dict[str, set[str]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if typing.get_origin(annotation) is Literal:
            found[prefix + name] = set(typing.get_args(annotation))
            continue
        stack: list[tuple[Any, bool]] = [(annotation, False)]
        while stack:  # find sections nested in lists and optionals: list[InputFeature] | None
            kind, in_list = stack.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found.update(_literal_fields(kind, prefix + name + ("[]." if in_list else ".")))
            else:
                inner_list = in_list or typing.get_origin(kind) is list
                stack.extend((arg, inner_list) for arg in typing.get_args(kind))
    return found


LITERALS = _literal_fields(Config)


def test_every_literal_option_is_accounted_for() -> None:
    listed = set(REGISTRIES) | set(NOT_OPTIONS)
    assert set(LITERALS) - listed == set(), "a new Literal option: add its registry to REGISTRIES"
    assert listed - set(LITERALS) == set(), "a listed option is no longer a Literal field of the config"


@pytest.mark.parametrize("option", sorted(REGISTRIES))
def test_registry_keys_are_the_literal_values(option: str) -> None:
    registry, resolved_elsewhere = REGISTRIES[option]
    assert resolved_elsewhere <= LITERALS[option]
    assert set(registry()) == LITERALS[option] - resolved_elsewhere


def test_fused_step_covers_every_activation() -> None:
    assert LITERALS["model.activation"] <= set(fused._ACTIVATIONS)


def test_losses_by_task_name_only_registered_losses() -> None:
    assert set().union(*losses.LOSSES_BY_TASK.values()) == set(losses.LOSSES)


def test_lookup_names_the_option_and_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"^model.activation must be one of gelu, leaky_relu, relu, sigmoid, "
                                          r"silu, tanh; got 'swish'\. .*--set model.activation="):
        mlp.build_mlp(3, [4], 1, activation="swish")
    with pytest.raises(ConfigError, match=r"training.optimizer must be one of adam, adamw, sgd; got 'lbfgs'"):
        network = TabularNetwork(NetworkSpec(numeric_width=2, cardinalities=[], n_outputs=1, hidden=[4]))
        trainer.build_optimizer(network, TrainingConfig.model_construct(optimizer="lbfgs"))
    with pytest.raises(ConfigError, match=r"training.schedule must be one of constant, cosine, multicycle, plateau"):
        trainer.LearningRate(TrainingConfig.model_construct(schedule="step"), 10, "loss")
    with pytest.raises(ConfigError, match="training.loss must be one of bce, cross_entropy, huber, mae, mse"):
        losses.build_loss("auto", torch.ones(2))
    with pytest.raises(ConfigError, match="model.numeric_embedding must be one of none, periodic, piecewise_linear"):
        numeric.build_numeric_embedding("fourier", 3, 4, 4)
    assert lookup({"a": 1}, "x.y", "a") == 1
