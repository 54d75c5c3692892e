"""Temperature scaling and the decision threshold: folded into the weights, fitted right, chosen right."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import pytest
import torch

from keel.config import TrainingConfig
from keel.evaluate.metrics import classification_metrics, predicted_classes
from keel.nn.network import NetworkBag, NetworkSpec, TabularNetwork, combine_members
from keel.train import calibration
from keel.train.calibration import (
    calibrate,
    calibration_notes,
    choose_threshold,
    fit_temperature,
    member_outputs,
    search_temperature,
)

SHAPES = {
    "mlp": {},
    "resnet": {"architecture": "resnet", "hidden": [16, 16]},
    "ensemble": {"ensemble": 4},
    "resnet_ensemble": {"architecture": "resnet", "ensemble": 3, "numeric_embedding": "periodic"},
}


def network(task: str = "binary", n_outputs: int = 1, seed: int = 0, **settings: object) -> TabularNetwork:
    torch.manual_seed(seed)
    spec = NetworkSpec(**{"numeric_width": 4, "cardinalities": [5], "n_outputs": n_outputs, "hidden": [16],
                          "task": task, **settings})  # type: ignore[arg-type]
    net = TabularNetwork(spec).eval()
    net.scale_outputs(10.0)  # a fresh network's logits are about 0.2: too unsure for labels drawn from it to tell much
    return net


def rows(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=generator) * 2, torch.randint(0, 5, (n, 1), generator=generator)


def own_labels(net: TabularNetwork | NetworkBag, numeric: torch.Tensor, categorical: torch.Tensor,
               seed: int = 1) -> torch.Tensor:
    """Labels drawn from the network's own probabilities: on them it is calibrated by construction."""
    with torch.no_grad():
        logits = net(numeric, categorical).double()
    generator = torch.Generator().manual_seed(seed)
    if net.spec.task == "binary":
        return torch.bernoulli(torch.sigmoid(logits[:, 0]), generator=generator).long()
    return torch.multinomial(torch.softmax(logits, 1), 1, generator=generator)[:, 0]


# ---- the temperature folded into the weights --------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_scale_outputs_divides_every_members_logits(shape: str) -> None:
    net = network(**SHAPES[shape])  # type: ignore[arg-type]
    numeric, categorical = rows(32)
    with torch.no_grad():
        before = net.members(numeric, categorical)
        net.scale_outputs(1 / 2.5)
        after = net.members(numeric, categorical)
    assert before.abs().min() > 0  # a zero logit would pass any scaling
    torch.testing.assert_close(after, before / 2.5)


def test_a_bags_members_are_its_networks_members_and_scale_together() -> None:
    bag = NetworkBag([network(ensemble=2, seed=seed) for seed in (0, 1, 2)]).eval()
    numeric, categorical = rows(16)
    with torch.no_grad():
        members = bag.members(numeric, categorical)
        assert members.shape == (16, 6, 1)
        torch.testing.assert_close(combine_members(members, "binary"), bag(numeric, categorical))
        bag.scale_outputs(0.5)
        torch.testing.assert_close(bag.members(numeric, categorical), members * 0.5)


def test_scale_outputs_refuses_a_scale_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive finite"):
        network().scale_outputs(0.0)


# ---- fitting the temperature ------------------------------------------------------------------
def test_an_overconfident_network_gets_its_temperature_back() -> None:
    net = network()
    numeric, categorical = rows(4000)
    target = own_labels(net, numeric, categorical)
    net.scale_outputs(3.0)  # three times too sure of itself
    result = fit_temperature(net, numeric, categorical, target, None, "binary")
    assert result["kept"] and result["rows"] == 4000
    assert 2.7 < result["temperature"] < 3.3
    assert result["log_loss_after"] < result["log_loss_before"] - 0.01
    # Kept means applied: the network now predicts with the fitted temperature folded in.
    refit = fit_temperature(net, numeric, categorical, target, None, "binary")
    assert abs(refit["temperature"] - 1) < 0.01 and not refit["kept"]


def test_the_fitted_temperature_matches_a_brute_force_grid() -> None:
    net = network("multiclass", n_outputs=3, ensemble=4)  # the members' probabilities are averaged
    numeric, categorical = rows(3000)
    target = own_labels(net, numeric, categorical)
    net.scale_outputs(0.6)  # under-confident: T < 1
    weight = torch.rand(3000, generator=torch.Generator().manual_seed(2)) + 0.5
    result = fit_temperature(copy.deepcopy(net), numeric, categorical, target, weight, "multiclass")
    with torch.no_grad():
        members = net.members(numeric, categorical).double().numpy()  # (n, 4, 3)
    y, w = target.numpy(), weight.double().numpy()
    w = w / w.sum()
    effective = 1 / (w**2).sum()

    def objective(log_t: float) -> float:  # computed here without keel's code: mean of member softmaxes
        scaled = members / math.exp(log_t)
        p = np.exp(scaled - scaled.max(2, keepdims=True))
        p = (p / p.sum(2, keepdims=True)).mean(1)
        prior = log_t**2 / (2 * calibration.PRIOR_SD**2 * effective)
        return float(-(w * np.log(p[np.arange(len(y)), y])).sum()) + prior

    grid = np.linspace(math.log(0.3), math.log(1.2), 301)  # a coarse grid, then a fine one around its best
    coarse = grid[np.argmin([objective(x) for x in grid])]
    grid = np.linspace(coarse - 0.01, coarse + 0.01, 201)
    best = math.exp(grid[np.argmin([objective(x) for x in grid])])
    assert result["kept"] and result["temperature"] < 0.75
    assert abs(result["temperature"] - best) < 1e-3 * best


def test_a_calibrated_network_keeps_a_temperature_of_about_one_and_is_left_untouched() -> None:
    net = network(ensemble=2)
    numeric, categorical = rows(20000, seed=3)
    target = own_labels(net, numeric, categorical, seed=4)
    state = copy.deepcopy(net.state_dict())
    result = fit_temperature(net, numeric, categorical, target, None, "binary")
    assert abs(result["temperature"] - 1) < 0.05 and not result["kept"]
    for name, value in net.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_a_small_perfectly_separated_set_does_not_drive_the_temperature_to_its_bound() -> None:
    # 30 rows that the network gets right with room to spare: the plain log-loss minimum is the
    # smallest T searched; the prior and the significance test leave the network alone.
    net = network()
    numeric, categorical = rows(30)
    with torch.no_grad():
        target = (net(numeric, categorical)[:, 0] > 0).long()
    net.scale_outputs(20.0)
    result = fit_temperature(net, numeric, categorical, target, None, "binary")
    assert result["temperature"] > 0.5 and not result["kept"]


def test_no_rows_or_one_class_fits_nothing() -> None:
    net = network()
    numeric, categorical = rows(50)
    state = copy.deepcopy(net.state_dict())
    for target in (torch.zeros(50, dtype=torch.long), torch.zeros(0, dtype=torch.long)):
        n = len(target)
        result = fit_temperature(net, numeric[:n], categorical[:n], target, None, "binary")
        assert result == {"temperature": 1.0, "kept": False, "log_loss_before": None, "log_loss_after": None,
                          "rows": n}
    assert all(torch.equal(value, state[name]) for name, value in net.state_dict().items())
    with pytest.raises(ValueError, match="regression"):
        search_temperature(torch.zeros(3, 1, 1), torch.zeros(3), None, "regression")


def test_a_bag_with_folds_scores_each_row_by_the_network_that_held_it_out() -> None:
    bag = NetworkBag([network(seed=seed) for seed in (0, 1)]).eval()
    numeric, categorical = rows(10)
    folds = [np.array([0, 2, 4, 6, 8]), np.array([1, 3, 5, 7, 9])]
    outputs = member_outputs(bag, numeric, categorical, folds)
    assert outputs.shape == (10, 1, 1) and outputs.dtype == torch.float64
    with torch.no_grad():
        for net, fold in zip(bag.networks, folds):
            torch.testing.assert_close(outputs[fold], net.members(numeric[fold], categorical[fold]).double())
    with pytest.raises(ValueError, match="one array of rows per network"):
        member_outputs(bag, numeric, categorical, folds[:1])
    with pytest.raises(ValueError, match="every validation row"):
        member_outputs(bag, numeric, categorical, [folds[0], folds[1][:2]])


def test_more_rows_than_the_cap_are_sampled_with_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "MAX_ROWS", 500)
    net = network()
    numeric, categorical = rows(2000)
    target = own_labels(net, numeric, categorical)
    training = TrainingConfig(threshold="auto")
    first = calibrate(copy.deepcopy(net), numeric, categorical, target, None, "binary", training)
    again = calibrate(copy.deepcopy(net), numeric, categorical, target, None, "binary", training)
    assert first is not None and first["rows"] == 500 and first == again


# ---- choosing the threshold -------------------------------------------------------------------
def rare_positives(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3%-positive problem and a model's probabilities for it: informative, but rarely above 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.03).astype(np.int64)
    score = rng.normal(0, 1, n) + 2.2 * y
    return 1 / (1 + np.exp(-(score - 3.8))), y


def brute_force(p: np.ndarray, y: np.ndarray, w: np.ndarray, metric: str) -> tuple[float, float]:
    """Every threshold between distinct probabilities, scored one at a time."""
    values = np.unique(p)
    candidates = np.r_[(values[:-1] + values[1:]) / 2, values[0] / 2, (values[-1] + 1) / 2]
    best, best_score = 0.5, -1.0
    for t in sorted(candidates, key=lambda t: abs(t - 0.5)):  # the first of equal scores is nearest 0.5
        predicted = p >= t
        tp, fp = w[predicted & (y == 1)].sum(), w[predicted & (y == 0)].sum()
        fn, tn = w[~predicted & (y == 1)].sum(), w[~predicted & (y == 0)].sum()
        score = 2 * tp / (2 * tp + fp + fn) if metric == "f1" else (tp / (tp + fn) + tn / (tn + fp)) / 2
        if score > best_score + 1e-12:
            best, best_score = t, score
    return best, best_score


@pytest.mark.parametrize("metric", ["f1", "balanced_accuracy"])
def test_the_threshold_on_rare_positives_is_far_below_a_half_and_scores_better(metric: str) -> None:
    p, y = rare_positives()
    threshold, score = choose_threshold(p, y, None, metric)
    assert 0.0 < threshold < 0.2
    at_half = classification_metrics(y, np.stack([1 - p, p], 1), [0, 1])
    chosen = classification_metrics(y, np.stack([1 - p, p], 1), [0, 1], threshold=threshold)
    if metric == "f1":
        assert math.isclose(score, chosen["per_class"][1]["f1"])
        assert score > at_half["per_class"][1]["f1"] + 0.1
    else:
        balanced = chosen["recall_macro"]  # the mean recall of the two classes
        assert math.isclose(score, balanced) and balanced > at_half["recall_macro"] + 0.1


@pytest.mark.parametrize("metric", ["f1", "balanced_accuracy"])
def test_the_threshold_matches_a_brute_force_loop(metric: str) -> None:
    p, y = rare_positives(3000, seed=1)
    p = np.round(p, 3)  # ties among the probabilities
    w = np.random.default_rng(2).uniform(0.2, 3.0, len(p))
    threshold, score = choose_threshold(p, y, w, metric)
    expected, expected_score = brute_force(p, y, w, metric)
    assert math.isclose(score, expected_score, rel_tol=1e-9) and math.isclose(threshold, expected, rel_tol=1e-12)


def test_equal_scores_take_the_threshold_nearest_a_half_and_it_stays_inside() -> None:
    p = np.array([0.1, 0.15, 0.2, 0.8, 0.85, 0.9])  # any cut between 0.2 and 0.8 is perfect
    y = np.array([0, 0, 0, 1, 1, 1])
    assert choose_threshold(p, y) == (0.5, 1.0)
    # Balanced accuracy 0.5 at cuts 0.95 (nothing positive), 0.75 and 0.3 (everything positive).
    scores = choose_threshold(np.array([0.6, 0.7, 0.8, 0.9]), np.array([1, 0, 1, 0]), None, "balanced_accuracy")
    assert scores == (pytest.approx(0.3), 0.5)
    threshold, _ = choose_threshold(np.array([1.0, 1.0, 0.0]), np.array([1, 1, 0]))
    assert 0.0 < threshold < 1.0 and threshold == 0.5
    threshold, _ = choose_threshold(np.array([1.0, 1.0, 1.0]), np.array([1, 0, 1]))
    assert 0.0 < threshold < 1.0
    assert choose_threshold(p, np.zeros(6, dtype=np.int64))[0] == 0.5  # one class: nothing to choose by


def test_the_decision_rule_and_the_metrics_use_the_threshold() -> None:
    probabilities = np.array([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7], [0.7, 0.3]])
    assert predicted_classes(probabilities).tolist() == [0, 0, 1, 0]
    assert predicted_classes(probabilities, 0.3).tolist() == [0, 1, 1, 1]  # >=: 0.3 itself is positive
    assert predicted_classes(probabilities.astype(np.float32), 0.3).tolist() == [0, 1, 1, 1]
    metrics = classification_metrics(np.array([0, 1, 1, 0]), probabilities, ["no", "yes"], threshold=0.3)
    assert metrics["confusion_matrix"] == [[1, 1], [0, 2]] and metrics["accuracy"] == 0.75
    plain = classification_metrics(np.array([0, 1, 1, 0]), probabilities, ["no", "yes"])
    assert plain["confusion_matrix"] == [[2, 0], [1, 1]] and plain["roc_auc"] == metrics["roc_auc"]
    with pytest.raises(ValueError, match="two classes"):
        predicted_classes(np.full((2, 3), 1 / 3), 0.3)


# ---- calibrate: the pipeline's one call -------------------------------------------------------
def test_calibrate_fits_the_temperature_then_chooses_the_threshold_on_calibrated_probabilities() -> None:
    net = network()
    numeric, categorical = rows(4000)
    with torch.no_grad():
        logits = net(numeric, categorical)[:, 0].double()
    # Rare positives, more likely where the network's logit is high.
    generator = torch.Generator().manual_seed(5)
    target = torch.bernoulli(torch.sigmoid(logits - logits.quantile(0.97)), generator=generator).long()
    net.scale_outputs(4.0)
    training = TrainingConfig(threshold="auto", threshold_metric="f1")
    record = calibrate(net, numeric, categorical, target, None, "binary", training)
    assert record is not None and record["kept"] and record["temperature"] > 2
    assert record["threshold_auto"] and record["threshold_metric"] == "f1" and 0 < record["threshold"] < 1
    with torch.no_grad():  # chosen on the probabilities of the network as it now is
        p = torch.sigmoid(net(numeric, categorical)[:, 0].double()).numpy()
    assert choose_threshold(p, target.numpy(), None, "f1") == pytest.approx(
        (record["threshold"], record["threshold_score"]), rel=1e-6)
    notes = calibration_notes(record)
    assert len(notes) == 2 and "kept" in notes[0] and f"{record['threshold']:.4g}" in notes[1]


def test_calibrate_records_only_what_the_settings_ask_for() -> None:
    net = network()
    numeric, categorical = rows(200)
    target = own_labels(net, numeric, categorical)
    args = (net, numeric, categorical, target, None)
    assert calibrate(*args, "regression", TrainingConfig()) is None
    assert calibrate(*args, "binary", TrainingConfig(calibrate=False)) is None
    fixed = calibrate(*args, "binary", TrainingConfig(calibrate=False, threshold=0.3))
    assert fixed is not None and fixed["threshold"] == 0.3 and fixed["temperature"] is None
    assert not fixed["threshold_auto"] and calibration_notes(fixed) == []
    multiclass = calibrate(network("multiclass", 3), numeric, categorical, target, None, "multiclass",
                           TrainingConfig(threshold=0.3))
    assert multiclass is not None and multiclass["threshold"] is None  # a threshold is for binary targets
    empty = calibrate(net, numeric[:0], categorical[:0], target[:0], None, "binary", TrainingConfig(threshold="auto"))
    assert empty is not None and empty["threshold"] is None and empty["rows"] == 0
    assert [note.split(":")[0] for note in calibration_notes(empty)] == [
        "no temperature fitted", "training.threshold is auto but the validation rows do not hold both classes (or "
        "there are none)"]


def test_f1_is_the_rarer_class_s_even_where_it_sorts_first() -> None:
    # A user's trial: labels 'F' (fraud, 4%) and 'ok': the positive class is 'ok' (the second), whose F1 is near 1 at
    # any cut; maximising it caught no fraud at all. The rarer class's F1 is maximised, whichever it is.
    net = network()
    numeric, categorical = rows(4000)
    with torch.no_grad():
        logits = net(numeric, categorical)[:, 0].double()
    generator = torch.Generator().manual_seed(5)
    rare_first = 1 - torch.bernoulli(torch.sigmoid(-logits + logits.quantile(0.04)), generator=generator).long()
    assert 0.01 < 1 - rare_first.double().mean() < 0.1  # class 0 is the rare one
    training = TrainingConfig(threshold="auto", threshold_metric="f1", calibrate=False)
    record = calibrate(net, numeric, categorical, rare_first, None, "binary", training)
    assert record is not None and record["threshold_class"] == 0
    with torch.no_grad():
        p = torch.sigmoid(net(numeric, categorical)[:, 0].double()).numpy()
    y = rare_first.numpy()
    metrics = classification_metrics(y, np.stack([1 - p, p], 1), [0, 1], threshold=record["threshold"])
    assert math.isclose(record["threshold_score"], metrics["per_class"][0]["f1"], rel_tol=1e-9)
    # The best cut for class 0's F1, by brute force over cuts on P(class 1).
    best = max(classification_metrics(y, np.stack([1 - p, p], 1), [0, 1], threshold=t)["per_class"][0]["f1"]
               for t in np.linspace(0.01, 0.99, 197))
    assert record["threshold_score"] >= best - 1e-9
    at_half = classification_metrics(y, np.stack([1 - p, p], 1), [0, 1])["per_class"][0]["f1"]
    assert record["threshold_score"] > at_half + 0.2
    assert calibration_notes(record, ["F", "ok"]) == [
        f"decision threshold {record['threshold']:.4g} on the probability of 'ok' chosen on 4000 validation rows "
        f"(f1 of 'F', the rarer class, {record['threshold_score']:.4g} there)"]
    # Rare positives (the usual layout) keep the second class's F1; balanced accuracy names no class.
    usual = calibrate(net, numeric, categorical, 1 - rare_first, None, "binary", training)
    assert usual is not None and usual["threshold_class"] == 1
    balanced = calibrate(net, numeric, categorical, rare_first, None, "binary",
                         TrainingConfig(threshold="auto", threshold_metric="balanced_accuracy", calibrate=False))
    assert balanced is not None and balanced["threshold_class"] == 1
    assert "(balanced accuracy" in calibration_notes(balanced, ["F", "ok"])[0]


def test_a_small_temperature_search_runs_on_one_thread_and_restores_the_count(monkeypatch) -> None:
    """Waking a second thread for each of the search's ~40 small losses cost 1.8 s beside a busy process (34 ms on
    one thread): a time limit's reserve for calibration was overrun (combination sweep, helper-92)."""
    seen: list[int] = []
    real = calibration._log_loss_of

    def recording(*args: Any, **kwargs: Any) -> Callable[[float], float]:
        loss = real(*args, **kwargs)
        return lambda temperature: seen.append(torch.get_num_threads()) or loss(temperature)

    monkeypatch.setattr(calibration, "_log_loss_of", recording)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(0)
        outputs, target = torch.randn(640, 8, 1, generator=generator) * 3, torch.randint(0, 2, (640,), generator=generator)
        small = search_temperature(outputs, target, None, "binary")
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        large = torch.randn(40_000, 8, 1, generator=generator)
        search_temperature(large, torch.randint(0, 2, (40_000,), generator=generator), None, "binary")
        assert set(seen) == {2}  # above SMALL_ELEMENTWISE the caller's count
    finally:
        torch.set_num_threads(previous)
    assert small["temperature"] > 1  # logits three times too sure: the search ran and cooled them
