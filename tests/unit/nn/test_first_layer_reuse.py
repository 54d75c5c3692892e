"""FirstLayerReuse: a shuffled feature's outputs from the reference's first layer plus the changed columns'
share, against a full forward pass of every network shape permutation importance meets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import keel
from keel.nn.network import FirstLayerReuse, NetworkBag, NetworkSpec, TabularNetwork, predict_outputs

ROWS = 700  # more than one batch of an 8-member ensemble (4096 / 8 = 512 rows)


def _network(seed: int, **spec: object) -> TabularNetwork:
    torch.manual_seed(seed)
    settings = {"numeric_width": 4, "cardinalities": [5, 9], "onehot": [True, False], "n_outputs": 3,
                "hidden": [32, 16], "dropout": 0.2, "task": "multiclass", **spec}
    network = TabularNetwork(NetworkSpec(**settings))  # type: ignore[arg-type]
    if network.numbers is not None and hasattr(network.numbers, "fit_bins"):
        network.numbers.fit_bins(torch.randn(500, 4) * 3)
    return network


def _rows(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    numeric = torch.randn(ROWS, 4, generator=generator) * 2
    categorical = torch.stack([torch.randint(0, 5, (ROWS,), generator=generator),
                               torch.randint(0, 9, (ROWS,), generator=generator)], 1)
    return numeric, categorical


def _shuffled(numeric: torch.Tensor, categorical: torch.Tensor, numbers: list[int], codes: list[int]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(7))
    numeric, categorical = numeric.clone(), categorical.clone()
    numeric[:, numbers] = numeric[order][:, numbers]
    categorical[:, codes] = categorical[order][:, codes]
    return numeric, categorical


SHAPES = {
    "plain mlp, one member": {"ensemble": 1},
    "ensemble, piecewise-linear numbers": {"ensemble": 8, "numeric_embedding": "piecewise_linear"},
    "ensemble, periodic numbers, binary": {"ensemble": 4, "numeric_embedding": "periodic", "n_outputs": 1,
                                           "task": "binary"},
    "ensemble, regression": {"ensemble": 8, "numeric_embedding": "piecewise_linear", "n_outputs": 1,
                             "task": "regression"},
    "one member, no hidden layers": {"ensemble": 1, "hidden": []},
}


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
@pytest.mark.parametrize("numbers, codes", [([2], []), ([], [0]), ([], [1]), ([0, 3], [1])])
def test_reuse_matches_a_full_forward_pass_whatever_feature_is_shuffled(shape: str, numbers: list[int],
                                                                        codes: list[int]) -> None:
    network = _network(0, **SHAPES[shape])
    network.train()  # importance may run on a network left in training mode: dropout must stay off
    numeric, categorical = _rows()
    reuse = FirstLayerReuse.build(network, numeric, categorical)
    assert reuse is not None
    changed = _shuffled(numeric, categorical, numbers, codes)
    expected = predict_outputs(network, *changed)
    torch.testing.assert_close(reuse(*changed), expected, rtol=1e-5, atol=1e-5)
    # Nothing changed: the reference's own outputs.
    torch.testing.assert_close(reuse(numeric, categorical), predict_outputs(network, numeric, categorical),
                               rtol=1e-5, atol=1e-5)
    assert network.training  # the mode the caller left it in


def test_a_bag_of_networks_is_reused_network_by_network() -> None:
    bag = NetworkBag([_network(seed, ensemble=4, numeric_embedding="piecewise_linear") for seed in (0, 1, 2)])
    numeric, categorical = _rows()
    reuse = FirstLayerReuse.build(bag, numeric, categorical)
    assert reuse is not None
    changed = _shuffled(numeric, categorical, [1], [0])
    torch.testing.assert_close(reuse(*changed), predict_outputs(bag, *changed), rtol=1e-5, atol=1e-5)


def test_the_changed_columns_alone_go_through_the_first_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    network = _network(0, ensemble=8, numeric_embedding="piecewise_linear")
    numeric, categorical = _rows()
    reuse = FirstLayerReuse.build(network, numeric, categorical)
    assert reuse is not None
    widths: list[int] = []
    original = TabularNetwork.adapted

    def recording(net: TabularNetwork, x: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        widths.append(x.shape[1])
        return original(net, x, columns)

    monkeypatch.setattr(TabularNetwork, "adapted", recording)
    reuse(*_shuffled(numeric, categorical, [2], []))
    # At most one number's embedding (16 dims; fewer where ReLU zeroes a dim for every row) per batch of rows,
    # not the first layer's whole input (4 x 16 + 5 + an embedding).
    assert len(widths) == 2 and all(0 < width <= network.spec.numeric_embedding_dim for width in widths)
    assert network.spec.input_width > 4 * network.spec.numeric_embedding_dim


def test_shapes_without_a_plain_first_layer_or_too_large_to_keep_are_declined(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    numeric, categorical = _rows()
    assert FirstLayerReuse.build(_network(0, architecture="resnet", ensemble=4), numeric, categorical) is None
    assert FirstLayerReuse.build(_network(0, ensemble=4, hidden=[]), numeric, categorical) is None
    monkeypatch.setattr(FirstLayerReuse, "BUDGET_BYTES", 1000)
    assert FirstLayerReuse.build(_network(0, ensemble=4), numeric, categorical) is None
    reuse = FirstLayerReuse.build(_network(0), numeric[:1], categorical[:1])
    assert reuse is not None  # 1 row x (3 x 32 + input) x 4 bytes fits in 1,000
    with pytest.raises(ValueError, match="built on 1 rows"):
        reuse(numeric[:2], categorical[:2])


def test_a_fitted_models_importance_is_the_same_with_and_without_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    frame = __import__("pandas").DataFrame({
        "a": rng.normal(size=600), "b": rng.normal(size=600), "noise": rng.normal(size=600),
        "group": rng.choice(["x", "y", "z"], size=600)})
    frame["y"] = frame["a"] * 2 + frame["b"] + (frame["group"] == "x") + rng.normal(size=600) * 0.1
    model = keel.fit(frame, target="y", config={"training.epochs": 4, "training.bagging": 2}, quiet=True)
    features = model._features(frame)
    target = model.target_encoder.encode(frame["y"], "frame")
    calls: list[bool] = []
    build = FirstLayerReuse.build

    def counted(*args: object) -> FirstLayerReuse | None:
        reuse = build(*args)  # type: ignore[arg-type]
        calls.append(reuse is not None)
        return reuse

    monkeypatch.setattr(FirstLayerReuse, "build", counted)
    reused = model._importance(features.numeric, features.categorical, target, None, "frame")
    monkeypatch.setattr(FirstLayerReuse, "build", lambda *args: None)
    full = model._importance(features.numeric, features.categorical, target, None, "frame")
    assert calls == [True]
    assert [feature["name"] for feature in reused["features"]] == [feature["name"] for feature in full["features"]]
    for mine, theirs in zip(reused["features"], full["features"]):
        assert mine["mean"] == pytest.approx(theirs["mean"], rel=1e-4, abs=1e-6)
        assert mine["std"] == pytest.approx(theirs["std"], rel=1e-3, abs=1e-6)
    assert reused["features"][0]["name"] == "a"  # and the ranking means something
