"""Pruning: structured pruning really shrinks every network form and the result is a whole keel model;
unstructured pruning zeroes the right weights; auto pruning keeps to its metric budget."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

import keel
from keel.errors import ConfigError
from keel.export.measure import measure
from keel.export.onnx import to_onnx
from keel.export.parity import onnx_feeds
from keel.export.prune import auto_prune, prune
from keel.model import Model
from keel.nn.mlp import ResidualBlock
from keel.nn.network import NetworkBag, TabularNetwork
from tests.conftest import FAST, make_classification_frame, make_regression_frame

VARIANTS = {
    "mlp": {**FAST, "model.hidden": [16, 16]},
    "mlp_batch_norm": {**FAST, "model.hidden": [16, 16], "model.norm": "batch"},
    "mlp_layer_norm": {**FAST, "model.hidden": [16, 16], "model.norm": "layer"},
    "resnet": {**FAST, "model.architecture": "resnet", "model.hidden": [16, 16]},
    "ensemble": {"preset": "balanced", "model.hidden": [16, 16], "training.epochs": 10},
    "bagging": {**FAST, "training.bagging": 2},
    "periodic": {**FAST, "model.numeric_embedding": "periodic"},
    "piecewise_linear": {**FAST, "model.numeric_embedding": "piecewise_linear"},
}
_TRAINED: dict[str, Model] = {}


def trained(variant: str) -> Model:
    """Each variant trained once per session (tests work on copies or leave it alone)."""
    if variant not in _TRAINED:
        _TRAINED[variant] = keel.fit(make_classification_frame(), target="label", config=VARIANTS[variant], quiet=True)
    return _TRAINED[variant]


def members(model: Model) -> list[TabularNetwork]:
    network = model.network
    return list(network.networks) if isinstance(network, NetworkBag) else [network]  # type: ignore[arg-type]


def widths(model: Model) -> list[int]:
    """The widths structured pruning narrows: hidden layers, or residual blocks' inner widths."""
    spec = model.network.spec
    return list(spec.inner or spec.hidden) if spec.architecture == "resnet" else list(spec.hidden)


def n_prunable(state: dict[str, torch.Tensor]) -> int:
    """Numbers in the hidden layers and heads (embeddings and encoders are not pruned)."""
    return sum(value.numel() for name, value in state.items() if "mlp." in name or "head_" in name)


def onnx_probabilities(model: Model, frame: pd.DataFrame) -> np.ndarray:
    session = ort.InferenceSession(to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, onnx_feeds(model, frame))[1]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_structured_pruning_shrinks_and_round_trips(variant: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, frame = trained(variant), make_classification_frame()
    before = {name: value.clone() for name, value in model.network.state_dict().items()}
    before_widths = widths(model)

    pruned = prune(model, 0.5)

    assert widths(pruned) == [width // 2 for width in before_widths]
    # Halving every width halves the first layer and quarters the next; ResNet skips and heads stay.
    assert n_prunable(pruned.network.state_dict()) < 0.65 * n_prunable(before)
    after = model.network.state_dict()  # the original is untouched
    assert widths(model) == before_widths and all(torch.equal(after[name], before[name]) for name in before)
    assert pruned.metrics is None and "pruned (structured, amount 0.5)" in pruned.notes[-1]
    probabilities = pruned.predict_proba(frame)
    assert probabilities.shape == (len(frame), 3)
    pruned.save(tmp_path / "pruned")
    loaded = keel.load(tmp_path / "pruned")
    assert widths(loaded) == widths(pruned)
    # Only a pruned ResNet writes the inner widths (so older keels still read every other model).
    assert ("inner" in loaded.network.spec.to_dict()) == (variant == "resnet")
    assert "inner" not in model.network.spec.to_dict()
    np.testing.assert_allclose(loaded.predict_proba(frame), probabilities, rtol=0, atol=1e-12)
    np.testing.assert_allclose(onnx_probabilities(loaded, frame), probabilities, rtol=0, atol=1e-5)


def _silence(model: Model, generator: torch.Generator) -> None:
    """Zero the outgoing weights of a random half of every prunable neuron, in place: those neurons
    then contribute nothing, so pruning exactly them must leave every prediction as it was."""
    with torch.no_grad():
        for network in members(model):
            blocks = [block for block in network.mlp if isinstance(block, ResidualBlock)]
            if blocks:
                for block in blocks:
                    second = block.main[4]
                    second.weight[:, torch.randperm(second.in_features, generator=generator)[:second.in_features // 2]] = 0
                continue
            linears = [layer for layer in network.mlp if isinstance(layer, torch.nn.Linear)]
            for number, width in enumerate(network.spec.hidden):
                dead = torch.randperm(width, generator=generator)[:width // 2]
                if number + 1 < len(linears):
                    linears[number + 1].weight[:, dead] = 0
                else:
                    network.head_weight[:, dead, :] = 0


# Layer norm is left out: it normalizes over all of a layer's neurons, so removing silent ones
# changes the others' scale (which the round trip above still covers).
@pytest.mark.parametrize("variant", [name for name in VARIANTS if name != "mlp_layer_norm"])
def test_structured_pruning_removes_exactly_the_silent_neurons(variant: str) -> None:
    model, frame = copy.deepcopy(trained(variant)), make_classification_frame()
    model._predictor = None
    _silence(model, torch.Generator().manual_seed(0))
    expected = model.predict_proba(frame)

    pruned = prune(model, 0.5)

    np.testing.assert_allclose(pruned.predict_proba(frame), expected, rtol=0, atol=1e-6)


def linear_weights(model: Model) -> list[torch.Tensor]:
    return [weight.detach() for network in members(model) for weight in network.linear_weights()]


@pytest.mark.parametrize("variant", ["mlp", "ensemble", "bagging"])
def test_unstructured_pruning_zeroes_the_smallest_share(variant: str) -> None:
    model = trained(variant)
    original = torch.cat([weight.flatten() for weight in linear_weights(model)])

    pruned = prune(model, 0.3, method="unstructured")

    values = torch.cat([weight.flatten() for weight in linear_weights(pruned)])
    zeroed = values == 0
    assert int(zeroed.sum()) == round(0.3 * values.numel())
    assert pruned.network.spec.hidden == model.network.spec.hidden  # shapes unchanged
    assert original[zeroed].abs().max() <= original[~zeroed].abs().min()  # the smallest magnitudes went
    assert torch.equal(values[~zeroed], original[~zeroed])
    assert int((torch.cat([w.flatten() for w in linear_weights(model)]) == 0).sum()) == 0  # original untouched


def test_unstructured_pruning_shrinks_only_the_zipped_file() -> None:
    model, frame = trained("mlp"), make_classification_frame()
    feeds = onnx_feeds(model, frame)
    one = {name: values[:1] for name, values in feeds.items()}
    pruned = prune(model, 0.8, method="unstructured")
    pruned.metrics = model.metrics  # the file's metadata carries them: make it the same
    figures = [measure(to_onnx(m).SerializeToString(), one, feeds, repeats=5, batch_repeats=2) for m in (model, pruned)]
    assert figures[1]["parameters"] == figures[0]["parameters"]
    assert figures[1]["nonzero_parameters"] < 0.4 * figures[0]["nonzero_parameters"]
    assert abs(figures[1]["size_bytes"] - figures[0]["size_bytes"]) < 0.01 * figures[0]["size_bytes"]
    assert figures[1]["compressed_bytes"] < 0.8 * figures[0]["compressed_bytes"]


# The plain MLP would train on the fused step, which bypasses autograd hooks; the ensemble trains
# with AdamW and weight decay.
@pytest.mark.parametrize("variant", ["mlp", "ensemble"])
def test_unstructured_finetuning_keeps_the_zeros(variant: str) -> None:
    model, frame = trained(variant), make_classification_frame(seed=1)
    plain = prune(model, 0.5, method="unstructured")

    tuned = prune(model, 0.5, method="unstructured", finetune=frame, finetune_epochs=3)

    before, after = linear_weights(plain), linear_weights(tuned)
    assert all(torch.equal(a == 0, b == 0) for a, b in zip(before, after))
    assert not all(torch.equal(a, b) for a, b in zip(before, after))  # it did train
    assert "fine-tuned 3 epoch(s) on 150 rows" in tuned.notes[-1]


@pytest.mark.parametrize("variant", ["mlp", "ensemble", "bagging"])
def test_structured_finetuning_trains_the_smaller_network(variant: str) -> None:
    model, frame = trained(variant), make_classification_frame(seed=1)
    plain = prune(model, 0.5)

    tuned = prune(model, 0.5, finetune=frame, finetune_epochs=2)

    assert widths(tuned) == widths(plain)
    assert tuned.evaluate(frame)["log_loss"] < plain.evaluate(frame)["log_loss"]


@pytest.mark.parametrize("amount", [0, 1, 0.0, 1.0, -0.2, 1.5, math.nan, "half", True, None])
def test_an_amount_outside_zero_one_is_one_clear_error(amount: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"strictly between 0 and 1; got {amount!r}.")):
        prune(trained("mlp"), amount)  # type: ignore[arg-type]


def test_other_bad_options_are_config_errors() -> None:
    model = trained("mlp")
    with pytest.raises(ConfigError, match="prune method"):
        prune(model, 0.5, method="random")
    with pytest.raises(ConfigError, match="no rows were given"):
        prune(model, 0.5, finetune_epochs=2)
    with pytest.raises(ConfigError, match="max_drop"):
        auto_prune(model, make_classification_frame(), max_drop=-0.1)
    linear = keel.fit(make_classification_frame(), target="label", config={**FAST, "model.hidden": []}, quiet=True)
    with pytest.raises(ConfigError, match="no hidden layer"):
        prune(linear, 0.5)


def test_auto_pruning_stays_within_its_budget() -> None:
    # Two 16-wide layers on three classes: keeping 10% (one or two neurons a layer) breaks it,
    # half of them does not, so the search must stop strictly between.
    model = keel.fit(make_classification_frame(), target="label",
                     config={**FAST, "model.hidden": [16, 16], "training.epochs": 20}, quiet=True)
    frame = make_classification_frame(seed=2)
    baseline = model.evaluate(frame)["accuracy"]

    chosen, amount, trials = auto_prune(model, frame, max_drop=0.005)

    assert 0 < amount < 0.9
    by_amount = {trial["amount"]: trial for trial in trials}
    assert not by_amount[0.9]["within_budget"]
    assert by_amount[amount]["within_budget"]
    assert all(not trial["within_budget"] for trial in trials if trial["amount"] > amount)
    assert chosen.evaluate(frame)["accuracy"] >= baseline * (1 - 0.005)
    assert widths(chosen) == widths(prune(model, amount))
    assert trials[0] == {**trials[0], "amount": 0.0, "metric": "accuracy", "value": baseline, "drop": 0.0}


def test_auto_pruning_of_a_regressor_watches_rmse() -> None:
    frame = make_regression_frame()
    model = keel.fit(frame, target="price", config={**FAST, "model.hidden": [16, 16], "training.epochs": 20},
                     quiet=True)
    baseline = model.evaluate(frame)["rmse"]

    chosen, amount, trials = auto_prune(model, frame, max_drop=0.05)

    assert {trial["metric"] for trial in trials} == {"rmse"}
    if amount > 0:
        assert chosen.evaluate(frame)["rmse"] <= baseline * 1.05
    else:
        assert chosen is model
    assert all(trial["within_budget"] == (trial["value"] <= baseline * 1.05 + 1e-12) for trial in trials)


def test_pruning_a_binary_model_is_judged_by_roc_auc_as_its_training_was() -> None:
    # Accuracy barely moves on rare positives while their ranking falls apart; keel's own early
    # stopping watches ROC-AUC on binary targets, and so do auto pruning and the compression table.
    from keel.export.measure import main_metric
    from keel.export.onnx import to_onnx
    from keel.export.parity import onnx_feeds

    frame = make_classification_frame()
    frame["label"] = (frame["label"] == "alpha").astype(int)
    model = keel.fit(frame, target="label", config={**FAST, "model.hidden": [16, 16], "training.epochs": 10},
                     quiet=True)
    _, _, trials = auto_prune(model, frame, max_drop=0.005)
    assert {trial["metric"] for trial in trials} == {"roc_auc"}
    assert trials[0]["value"] == pytest.approx(model.evaluate(frame)["roc_auc"])
    import onnxruntime as ort

    session = ort.InferenceSession(to_onnx(model).SerializeToString())
    name, value = main_metric(model, frame)(lambda feeds: session.run(None, feeds))
    assert name == "roc_auc" and value == pytest.approx(model.evaluate(frame)["roc_auc"], abs=1e-6)
    assert onnx_feeds(model, frame)  # the same conversion the metric used
