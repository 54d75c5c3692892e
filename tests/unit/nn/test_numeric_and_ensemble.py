"""Number embeddings, residual blocks and the efficient ensemble: shapes, maths and that they learn."""

from __future__ import annotations

import math

import pytest
import torch

from keel.config import load_config
from keel.nn.encoders import embedding_size
from keel.nn.mlp import ResidualBlock
from keel.nn.network import NetworkBag, NetworkSpec, TabularNetwork, combine_members
from keel.nn.numeric import PeriodicEmbedding, PiecewiseLinearEmbedding
from keel.train.fused import fused_step_supported
from keel.train.trainer import Batch, Trainer


def test_periodic_embedding_is_sin_cos_of_learned_frequencies_through_a_per_column_linear() -> None:
    embedding = PeriodicEmbedding(n_columns=3, n_frequencies=4, dim=5)
    x = torch.randn(7, 3)
    out = embedding(x)
    assert out.shape == (7, 15) and (out >= 0).all()  # ReLU output, columns side by side
    angles = 2 * math.pi * x[:, 1:2] * embedding.frequencies[1]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], 1)
    expected = torch.relu(features @ embedding.linear.weight[1] + embedding.linear.bias[1])
    torch.testing.assert_close(out[:, 5:10], expected)


def test_piecewise_linear_bins_come_from_training_quantiles_and_stay_open_at_the_ends() -> None:
    embedding = PiecewiseLinearEmbedding(n_columns=2, n_bins=4, dim=3)
    train = torch.stack([torch.arange(101.0), torch.tensor([0.0, 1.0] * 50 + [1.0])], 1)
    embedding.fit_bins(train)
    torch.testing.assert_close(embedding.left[0], torch.tensor([0.0, 25.0, 50.0, 75.0]))
    position = (torch.tensor([[-10.0], [30.0], [200.0]]) - embedding.left[0]) / embedding.span[0]
    encoded = torch.maximum(torch.minimum(position, embedding.high[0]), embedding.low[0])
    torch.testing.assert_close(encoded[1], torch.tensor([1.0, 0.2, 0.0, 0.0]))
    assert encoded[0, 0] < 0 and encoded[2, 3] > 1  # below the first edge, beyond the last
    # The 0/1 column has a single bin; its unused bins encode as 0 whatever the value.
    assert embedding.high[1, 1:].eq(0).all() and embedding.low[1, 1:].eq(0).all()
    assert embedding(torch.tensor([[5.0, 7.0]])).shape == (1, 6)


def test_piecewise_linear_bins_of_a_sorted_column_longer_than_the_sample_span_its_whole_range() -> None:
    n_rows = 400_000  # more rows than the 262,144 the edges are taken from
    train = torch.arange(float(n_rows)).unsqueeze(1)  # a file sorted by this column
    embedding = PiecewiseLinearEmbedding(n_columns=1, n_bins=4, dim=2)
    embedding.fit_bins(train)
    edges = torch.cat([embedding.left[0], embedding.left[0, -1:] + embedding.span[0, -1:]])
    assert edges[0] < 0.01 * n_rows and edges[-1] > 0.99 * n_rows  # not the first rows' 0..262,143
    expected = torch.linspace(0, n_rows, 5)
    torch.testing.assert_close(edges, expected, atol=0.01 * n_rows, rtol=0)
    again = PiecewiseLinearEmbedding(n_columns=1, n_bins=4, dim=2)
    again.fit_bins(train)
    assert torch.equal(again.left, embedding.left) and torch.equal(again.span, embedding.span)  # seeded


@pytest.mark.parametrize("task,n_outputs", [("binary", 1), ("multiclass", 3), ("regression", 1)])
def test_members_combine_into_the_logits_of_their_mean_probability(task, n_outputs) -> None:
    outputs = torch.randn(6, 4, n_outputs) * 3
    combined = combine_members(outputs, task)
    if task == "binary":
        torch.testing.assert_close(torch.sigmoid(combined), torch.sigmoid(outputs).mean(1))
    elif task == "multiclass":
        torch.testing.assert_close(torch.softmax(combined, 1), torch.softmax(outputs, 2).mean(1))
    else:
        torch.testing.assert_close(combined, outputs.mean(1))


def test_residual_block_adds_its_input_and_projects_when_widths_differ() -> None:
    same = ResidualBlock(8, 8, activation="relu", dropout=0.0, norm="layer")
    x = torch.randn(4, 8)
    torch.testing.assert_close(same(x), x + same.main(x))
    wider = ResidualBlock(8, 12, activation="relu", dropout=0.0, norm="none")
    assert wider(x).shape == (4, 12) and isinstance(wider.skip, torch.nn.Linear)


def _spec(**options) -> NetworkSpec:
    return NetworkSpec(numeric_width=3, cardinalities=[5], n_outputs=3, hidden=[16, 16], task="multiclass", **options)


VARIANTS = {
    "ensemble": {"ensemble": 4},
    "periodic": {"numeric_embedding": "periodic", "numeric_embedding_size": 4, "numeric_embedding_dim": 4},
    "piecewise": {"numeric_embedding": "piecewise_linear", "numeric_embedding_size": 4, "numeric_embedding_dim": 4},
    "resnet": {"architecture": "resnet", "norm": "batch"},
    "everything": {"ensemble": 3, "architecture": "resnet", "numeric_embedding": "periodic"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_network_variant_has_member_outputs_and_a_training_step_lowers_its_loss(variant) -> None:
    torch.manual_seed(0)
    network = TabularNetwork(_spec(**VARIANTS[variant]))
    assert not fused_step_supported(network)  # only plain MLPs take the hand-written step
    numeric = torch.randn(64, 3)
    categorical = torch.randint(0, 5, (64, 1))
    target = (numeric[:, 0] > 0).long() + (categorical[:, 0] > 2).long()
    if isinstance(network.numbers, PiecewiseLinearEmbedding):
        network.numbers.fit_bins(numeric)
    k = VARIANTS[variant].get("ensemble", 1)
    assert network.members(numeric, categorical).shape == (64, k, 3)
    assert network(numeric, categorical).shape == (64, 3)
    settings = load_config({"preset": "fast", "training.epochs": 1, "training.batch_size": 64,
                            "training.lr": 0.01, "training.early_stopping": 0}).training
    trainer = Trainer(network, settings, "multiclass", "cross_entropy")
    rows = Batch(numeric, categorical, target)
    before = trainer.validate(rows)["val_loss"]
    for _ in range(20):
        trainer.fit(rows)
    assert trainer.validate(rows)["val_loss"] < before * 0.8


def test_ensemble_members_start_different_and_share_their_hidden_weights() -> None:
    network = TabularNetwork(_spec(ensemble=4))
    assert set(network.adapter.unique().tolist()) <= {-1.0, 1.0}
    outputs = network.members(torch.randn(5, 3), torch.zeros(5, 1, dtype=torch.long))
    assert not torch.allclose(outputs[:, 0], outputs[:, 1])
    hidden = [m for m in network.mlp if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in hidden] == [(16, 3 + embedding_size(5)), (16, 16)]  # shared by all
    assert network.head_weight.shape == (4, 16, 3)


def test_shift_outputs_moves_every_members_logits() -> None:
    for options in ({}, {"ensemble": 3}):
        network = TabularNetwork(_spec(**options)).eval()
        x = (torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long))
        before = network.members(*x)
        network.shift_outputs(torch.tensor([1.0, 0.0, -1.0]))
        torch.testing.assert_close(network.members(*x) - before, torch.tensor([1.0, 0.0, -1.0]).expand_as(before))


def test_a_bag_averages_its_networks_probabilities() -> None:
    networks = [TabularNetwork(_spec()).eval() for _ in range(3)]
    bag = NetworkBag(networks)
    x = (torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long))
    expected = torch.stack([torch.softmax(network(*x), 1) for network in networks]).mean(0)
    torch.testing.assert_close(torch.softmax(bag(*x), 1), expected)
