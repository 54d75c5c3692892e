"""The fused step computes what autograd computes, for every network and loss it accepts."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from keel.config import ModelConfig, TrainingConfig
from keel.nn.losses import build_loss
from keel.nn.mlp import ACTIVATIONS
from keel.nn.network import NetworkSpec, TabularNetwork
from keel.train.fused import FusedStep, fused_step_supported

LOSSES = {"cross_entropy": ("multiclass", 3), "bce": ("binary", 1), "mse": ("regression", 1),
          "mae": ("regression", 1), "huber": ("regression", 1)}


def _case(loss: str, activation: str = "relu", onehot: bool = False, cardinalities=(4, 7)):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    task, n_outputs = LOSSES[loss]
    spec = NetworkSpec(numeric_width=5, cardinalities=list(cardinalities), n_outputs=n_outputs, hidden=[16, 8],
                       activation=activation, onehot=onehot, init="xavier_uniform")
    network = TabularNetwork(spec)
    for module in network.mlp:  # non-zero biases, so bias gradients are tested too
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.bias, std=0.3)
    numeric = torch.randn(24, 5) * 2
    categorical = torch.stack([torch.randint(0, c, (24,)) for c in cardinalities], 1) if cardinalities else torch.zeros(24, 0, dtype=torch.long)
    if task == "regression":
        target = torch.randn(24) * 2
    else:
        target = torch.randint(0, 3 if task == "multiclass" else 2, (24,))
    return network, numeric, categorical, target


def _autograd_grads(network, loss, numeric, categorical, target, settings, weights=None):  # type: ignore[no-untyped-def]
    objective = build_loss(loss, weights)(network(numeric, categorical), target)
    linear = network.linear_weights()
    if settings.l1:
        objective = objective + settings.l1 * sum(w.abs().sum() for w in linear)
    if settings.l2:
        objective = objective + settings.l2 * sum(w.pow(2).sum() for w in linear)
    objective.backward()
    if settings.grad_clip:
        nn.utils.clip_grad_norm_(network.parameters(), settings.grad_clip)
    return objective


def _compare(network, fused_network, step, loss_value, expected_loss):  # type: ignore[no-untyped-def]
    torch.testing.assert_close(loss_value, expected_loss.detach(), rtol=1e-5, atol=1e-6)
    reference = {id(p_fused): p for p, p_fused in zip(network.parameters(), fused_network.parameters())}
    assert len(step.parameters) == sum(p.requires_grad for p in network.parameters())
    for parameter, grad in zip(step.parameters, step.grads):
        torch.testing.assert_close(grad, reference[id(parameter)].grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradients_match_autograd(loss, activation) -> None:
    network, numeric, categorical, target = _case(loss, activation)
    fused_network = copy.deepcopy(network)
    settings = TrainingConfig()
    step = FusedStep(fused_network, settings, loss)
    loss_value = step.gradients(numeric, categorical, target)
    expected = _autograd_grads(network, loss, numeric, categorical, target, settings)
    _compare(network, fused_network, step, loss_value, expected)


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
def test_class_weights_penalties_clipping_and_onehot_match_autograd(loss) -> None:
    network, numeric, categorical, target = _case(loss, onehot=True)
    fused_network = copy.deepcopy(network)
    settings = TrainingConfig(l1=0.01, l2=0.02, grad_clip=0.5)
    weights = torch.tensor([0.5, 2.0, 1.5]) if loss == "cross_entropy" else torch.tensor([0.7, 2.1])
    step = FusedStep(fused_network, settings, loss, weights)
    loss_value = step.gradients(numeric, categorical, target)
    expected = _autograd_grads(network, loss, numeric, categorical, target, settings, weights)
    penalties = sum(settings.l1 * w.abs().sum() + settings.l2 * w.pow(2).sum() for w in network.linear_weights())
    _compare(network, fused_network, step, loss_value, expected - penalties)


# (loss, class weights): every loss, and weighted where the loss takes class weights.
WEIGHTED_LOSSES = [("cross_entropy", None), ("cross_entropy", (0.5, 2.0, 1.5)), ("bce", None), ("bce", (0.7, 2.1)),
                   ("mse", None), ("mae", None), ("huber", None)]


@st.composite
def _layouts(draw):  # type: ignore[no-untyped-def]
    """A plain network's shape: 1-4 category columns, each one-hot or embedded, in any order."""
    n_columns = draw(st.integers(1, 4))
    return {
        "numeric_width": draw(st.sampled_from([0, 3])),
        "cardinalities": draw(st.lists(st.integers(2, 6), min_size=n_columns, max_size=n_columns)),
        "onehot": draw(st.lists(st.booleans(), min_size=n_columns, max_size=n_columns)),
        "hidden": draw(st.sampled_from([[], [6], [6, 4]])),
    }


@pytest.mark.parametrize(("loss", "class_weights"), WEIGHTED_LOSSES,
                         ids=[f"{loss}-{'weighted' if weights else 'plain'}" for loss, weights in WEIGHTED_LOSSES])
@pytest.mark.parametrize("activation", get_args(ModelConfig.model_fields["activation"].annotation))
@given(layout=_layouts(), clip=st.booleans(), seed=st.integers(0, 2**16))
@example(layout={"numeric_width": 0, "cardinalities": [2, 3], "onehot": [True, False], "hidden": []}, clip=False,
         seed=0)  # the reported case: a one-hot column before an embedded one
@settings(max_examples=12, deadline=None)
def test_gradients_match_autograd_for_any_mix_of_onehot_and_embedded_columns(
        loss, class_weights, activation, layout, clip, seed) -> None:
    # One-hot tables are frozen, so each trainable table's column and input slice must be counted
    # over all tables: a mix in any order catches a table fed another column's codes or gradients.
    torch.manual_seed(seed)
    task, n_outputs = LOSSES[loss]
    spec = NetworkSpec(n_outputs=n_outputs, activation=activation, **layout)
    network = TabularNetwork(spec)
    for module in network.mlp:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.bias, std=0.3)
    n_rows = 8
    numeric = torch.randn(n_rows, spec.numeric_width)
    categorical = torch.stack([torch.randint(0, c, (n_rows,)) for c in spec.cardinalities], 1)
    target = torch.randn(n_rows) if task == "regression" else torch.randint(0, 3 if task == "multiclass" else 2, (n_rows,))
    weights = None if class_weights is None else torch.tensor(class_weights)
    training = TrainingConfig(grad_clip=0.05 if clip else 0.0)
    fused_network = copy.deepcopy(network)
    step = FusedStep(fused_network, training, loss, weights)
    loss_value = step.gradients(numeric, categorical, target)
    expected = _autograd_grads(network, loss, numeric, categorical, target, training, weights)
    _compare(network, fused_network, step, loss_value, expected)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizer_updates_match_torch_optimizers(optimizer) -> None:
    from keel.train.trainer import build_optimizer

    network, numeric, categorical, target = _case("cross_entropy", cardinalities=())
    fused_network = copy.deepcopy(network)
    settings = TrainingConfig(optimizer=optimizer, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.05)
    step = FusedStep(fused_network, settings, "cross_entropy")
    reference = build_optimizer(network, settings)
    loss = build_loss("cross_entropy")
    for _ in range(3):
        step(numeric, categorical, target, lr=0.01)
        reference.zero_grad()
        loss(network(numeric, categorical), target).backward()
        reference.step()
    for a, b in zip(network.parameters(), fused_network.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dropout_masks_scale_and_differ_per_step() -> None:
    network, numeric, categorical, target = _case("mse", cardinalities=())
    network.spec.dropout = 0.5
    step = FusedStep(TabularNetwork(network.spec), TrainingConfig(), "mse")
    first = step.gradients(numeric, categorical, target)
    second = step.gradients(numeric, categorical, target)
    assert not torch.equal(first, second)  # a new mask each step


@pytest.mark.parametrize("dropout", [0.1, 0.5])
def test_dropout_masks_keep_their_share_in_every_lane_and_scale_to_the_undropped_mean(dropout) -> None:
    spec = NetworkSpec(numeric_width=3, cardinalities=[], n_outputs=1, hidden=[512], dropout=dropout)
    step = FusedStep(TabularNetwork(spec), TrainingConfig(), "mse")
    assert step.keep == pytest.approx(1 - dropout, abs=2**-16)
    torch.manual_seed(0)
    mask = step._dropout_mask(step._layer_buffers(4096)[0]).clone()  # 2M units, four per 64-bit draw
    values = torch.unique(mask).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / step.keep)]
    kept = (mask > 0).float().reshape(-1, 4)  # one column per 16-bit lane of a draw
    for lane in range(4):  # the top lane's sign bit is always 0: a lane read as 16 bits would keep far more
        assert kept[:, lane].mean().item() == pytest.approx(step.keep, abs=0.003)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.003)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gradients_with_dropout_match_autograd_through_the_same_masks(loss) -> None:
    network, numeric, categorical, target = _case(loss, cardinalities=())
    network.spec.dropout = 0.3
    fused_network = copy.deepcopy(network)
    step = FusedStep(fused_network, TrainingConfig(), loss)
    masks: list[torch.Tensor] = []
    draw = step._dropout_mask
    step._dropout_mask = lambda buffer: masks.append(draw(buffer).clone()) or masks[-1]  # type: ignore[method-assign]
    fused_loss = step.gradients(numeric, categorical, target)
    assert len(masks) == 2 and all((mask == 0).any() for mask in masks)
    hidden = numeric
    linears = [module for module in network.mlp if isinstance(module, nn.Linear)]
    activation = ACTIVATIONS[network.spec.activation]()
    for linear, mask in zip(linears[:-1], masks):  # autograd through the fused step's own masks
        hidden = activation(linear(hidden)) * mask
    expected = build_loss(loss)(linears[-1](hidden), target)
    expected.backward()
    _compare(network, fused_network, step, fused_loss, expected)


def test_networks_with_norms_use_autograd() -> None:
    spec = NetworkSpec(numeric_width=2, cardinalities=[], n_outputs=1, hidden=[4], norm="batch")
    assert not fused_step_supported(TabularNetwork(spec))
    spec.norm = "none"
    assert fused_step_supported(TabularNetwork(spec))


@pytest.mark.parametrize("fused", [True, False])
def test_bfloat16_training_tracks_float32(fused) -> None:
    from keel.train.trainer import Batch, Trainer

    torch.manual_seed(0)
    numeric = torch.randn(512, 5)
    rows = Batch(numeric, torch.zeros(512, 0, dtype=torch.long), (numeric[:, 0] + numeric[:, 1] > 0).long())
    losses = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        network = TabularNetwork(NetworkSpec(numeric_width=5, cardinalities=[], n_outputs=1, hidden=[32, 32]))
        trainer = Trainer(network, TrainingConfig(epochs=8, lr=0.01, precision=precision), "binary", "bce", fused=fused)
        history = trainer.fit(rows)
        assert all(p.dtype == torch.float32 for p in network.parameters())
        losses[precision] = history.epochs[-1]["loss"]
    assert losses["float32"] < 0.2 and losses["bfloat16"] == pytest.approx(losses["float32"], abs=0.03)
