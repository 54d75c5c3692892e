from __future__ import annotations

import pytest
import torch

from keel.errors import ConfigError
from keel.nn.encoders import embedding_size
from keel.nn.losses import build_loss, resolve_loss_name
from keel.nn.mlp import ACTIVATIONS, INITIALIZERS, NORMS, build_mlp
from keel.nn.network import NetworkSpec, TabularNetwork, predict_outputs, to_probabilities


def _inputs(batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3), torch.stack([torch.randint(0, 5, (batch,)), torch.randint(0, 12, (batch,))], 1)


@pytest.mark.parametrize("onehot", [False, True])
def test_network_shapes_with_embeddings_or_onehot(onehot) -> None:
    spec = NetworkSpec(numeric_width=3, cardinalities=[5, 12], n_outputs=4, hidden=[16, 8], onehot=onehot)
    network = TabularNetwork(spec)
    assert network(*_inputs()).shape == (8, 4)
    expected = 5 + 12 if onehot else embedding_size(5) + embedding_size(12)
    assert network.mlp[0].in_features == 3 + expected
    if onehot:
        assert all(not table.weight.requires_grad for table in network.categories.tables)
        assert torch.equal(network.categories.tables[0].weight, torch.eye(5))


def test_network_without_categories_or_hidden_layers_is_linear() -> None:
    network = TabularNetwork(NetworkSpec(numeric_width=3, cardinalities=[], n_outputs=1, hidden=[]))
    assert len(network.mlp) == 1 and network(torch.randn(4, 3), torch.zeros(4, 0, dtype=torch.long)).shape == (4, 1)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_every_activation_and_norm_builds_and_runs(activation, norm) -> None:
    mlp = build_mlp(3, [8, 8], 2, activation=activation, norm=norm, dropout=0.2)
    assert mlp(torch.randn(5, 3)).shape == (5, 2)
    kinds = {type(module).__name__ for module in mlp}
    assert type(ACTIVATIONS[activation]()).__name__ in kinds and "LaneDropout" in kinds


@pytest.mark.parametrize("init", sorted(INITIALIZERS))
def test_every_initializer(init) -> None:
    torch.manual_seed(0)
    mlp = build_mlp(64, [64], 1, init=init)
    weight = mlp[0].weight
    if init == "zeros":
        assert torch.count_nonzero(weight) == 0
    elif init == "normal":
        assert abs(weight.std().item() - 0.02) < 0.005
    elif init == "xavier_uniform":
        assert weight.abs().max() <= (6 / 128) ** 0.5 + 1e-6
    else:
        assert weight.std() > 0
    if init != "default":
        assert torch.count_nonzero(mlp[0].bias) == 0


def test_embedding_size_grows_slowly_and_is_capped() -> None:
    assert embedding_size(3) < embedding_size(100) < embedding_size(100_000) == 50
    assert embedding_size(10, requested=7) == 7


def test_probabilities_sum_to_one_and_outputs_are_batched() -> None:
    network = TabularNetwork(NetworkSpec(numeric_width=3, cardinalities=[5, 12], n_outputs=3, hidden=[4]))
    outputs = predict_outputs(network, *_inputs(20), batch_size=7)
    assert outputs.shape == (20, 3) and network.training
    torch.testing.assert_close(to_probabilities(outputs, "multiclass").sum(1), torch.ones(20))
    binary = to_probabilities(torch.tensor([[0.0], [2.0]]), "binary")
    torch.testing.assert_close(binary[:, 1], torch.sigmoid(torch.tensor([0.0, 2.0])))


def test_losses_per_task() -> None:
    assert resolve_loss_name("auto", "binary") == "bce"
    assert resolve_loss_name("auto", "multiclass") == "cross_entropy"
    assert resolve_loss_name("huber", "regression") == "huber"
    with pytest.raises(ConfigError, match=r"training.loss 'mse' does not fit a binary target; use one of \['bce'\]"):
        resolve_loss_name("mse", "binary")
    logits, target = torch.tensor([[2.0], [-2.0]]), torch.tensor([1, 0])
    plain = build_loss("bce")(logits, target)
    weighted = build_loss("bce", torch.tensor([1.0, 3.0]))(torch.tensor([[-2.0], [-2.0]]), target)
    assert plain < 0.2 and weighted > build_loss("bce")(torch.tensor([[-2.0], [-2.0]]), target)
    for name in ("mse", "mae", "huber"):
        assert build_loss(name)(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 2.0])) == 0


def test_lane_dropout_keeps_the_share_asked_scales_kept_units_and_masks_the_gradient_alike() -> None:
    from keel.nn.dropout import LANE, LaneDropout

    torch.manual_seed(0)
    layer = LaneDropout(0.1)
    x = torch.ones(1024, 257, requires_grad=True)  # an odd width: the draws' lanes do not divide evenly
    out = layer(x)
    kept = out != 0
    scale = LANE / layer.threshold
    assert torch.all(out[kept] == scale)  # kept units are scaled by 1 / keep: the expectation is unchanged
    assert abs(kept.float().mean().item() - 0.9) < 0.003  # 263k units: the share is 0.9 within 3 sd
    assert abs(out.mean().item() - 1.0) < 0.004
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.all(x.grad[kept] == scale)
    assert not torch.equal(layer(x), out)  # a new mask every call
    layer.eval()
    assert layer(x) is x  # the identity in eval mode (and so in exports)
    assert LaneDropout(0.0).train()(x) is x
