from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from keel.config import TrainingConfig
from keel.errors import ConfigError
from keel.nn.network import NetworkSpec, TabularNetwork
from keel.train.trainer import Batch, LearningRate, Trainer, batch_bounds, build_optimizer, resolve_monitor


def _data(n: int = 256, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, 4, generator=generator)
    target = (numeric[:, 0] + numeric[:, 1] > 0).long() + (numeric[:, 2] > 1).long()
    return Batch(numeric, torch.zeros(n, 0, dtype=torch.long), target)


def _trainer(fused: bool = True, **settings) -> Trainer:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    network = TabularNetwork(NetworkSpec(numeric_width=4, cardinalities=[], n_outputs=3, hidden=[16]))
    config = TrainingConfig(**{"epochs": 5, "batch_size": 32, "lr": 0.01, **settings})
    return Trainer(network, config, "multiclass", "cross_entropy", fused=fused)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("settings", [
    {"optimizer": "adam"}, {"optimizer": "adamw"}, {"optimizer": "sgd", "lr": 0.1, "nesterov": True},
    {"schedule": "cosine"}, {"schedule": "plateau"}, {"l1": 1e-4, "l2": 1e-3, "grad_clip": 1.0},
    {"schedule": "multicycle", "warmup": 0.1}, {"label_smoothing": 0.1},
])
def test_training_lowers_the_loss(settings, fused) -> None:
    trainer = _trainer(fused, **settings)
    data = _data()
    before = trainer.validate(data)["val_loss"]
    history = trainer.fit(data)
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert trainer.validate(data)["val_loss"] < before


def test_cosine_schedule_decays_the_learning_rate() -> None:
    trainer = _trainer(schedule="cosine")
    history = trainer.fit(_data())
    rates = [record["lr"] for record in history.epochs]
    assert rates[0] == 0.01 and all(a > b for a, b in zip(rates, rates[1:]))
    steps = 5 * 8
    assert rates[1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 8 / steps)))


def test_fused_and_autograd_paths_train_alike() -> None:
    fused, plain = _trainer(True, epochs=10), _trainer(False, epochs=10)
    assert fused.fused is not None and plain.fused is None
    fused_history, plain_history = fused.fit(_data()), plain.fit(_data())
    for a, b in zip(fused_history.epochs, plain_history.epochs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    # Validation labels are noise: the validation loss stops improving quickly.
    trainer = _trainer(epochs=200, early_stopping=3, lr=0.05)
    validation = _data(64, seed=1)
    validation.target = validation.target[torch.randperm(64)]
    history = trainer.fit(_data(), validation)
    assert history.stopped_early and len(history.epochs) < 200
    assert len(history.epochs) == history.best_epoch + 3
    best = history.epochs[history.best_epoch - 1]["val_loss"]
    assert trainer.validate(validation)["val_loss"] == pytest.approx(best, rel=1e-5)


def test_monitor_accuracy_is_reported_and_validated() -> None:
    history = _trainer(monitor="accuracy").fit(_data(), _data(64, seed=1))
    assert 0 <= history.epochs[-1]["val_accuracy"] <= 1 and history.monitor == "accuracy"
    with pytest.raises(ConfigError, match="training.monitor 'rmse' does not fit a multiclass target"):
        resolve_monitor("rmse", "multiclass")


def test_same_seed_same_weights() -> None:
    first, second = _trainer(), _trainer()  # dropout is 0 here; with dropout too, see test_model
    first.fit(_data())
    second.fit(_data())
    for a, b in zip(first.network.parameters(), second.network.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_l1_penalty_shrinks_weights() -> None:
    plain, sparse = _trainer(epochs=20), _trainer(epochs=20, l1=0.01)
    plain.fit(_data())
    sparse.fit(_data())
    assert sparse.network.mlp[0].weight.abs().sum() < plain.network.mlp[0].weight.abs().sum()


def test_batches_never_leave_a_single_row() -> None:
    assert batch_bounds(65, 32) == [(0, 32), (32, 65)]
    assert batch_bounds(64, 32) == [(0, 32), (32, 64)]
    assert batch_bounds(1, 32) == [(0, 1)]


def test_optimizer_settings_reach_the_optimizer() -> None:
    network = TabularNetwork(NetworkSpec(numeric_width=2, cardinalities=[3], n_outputs=1, hidden=[4], onehot=True))
    sgd = build_optimizer(network, TrainingConfig(optimizer="sgd", momentum=0.5, nesterov=True))
    assert sgd.param_groups[0]["momentum"] == 0.5 and sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer(network, TrainingConfig(optimizer="adamw"))
    assert adamw.param_groups[0]["weight_decay"] == 0.01
    frozen = network.categories.tables[0].weight
    assert all(p is not frozen for p in adamw.param_groups[0]["params"])


def test_plateau_halves_the_rate_after_patience_like_torch() -> None:
    from keel.train.trainer import LearningRate

    rate = LearningRate(TrainingConfig(schedule="plateau", early_stopping=6, lr=0.1), 100, "loss")
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(reference_optimizer, factor=0.5, patience=2)
    for metric in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85]:
        rate.after_epoch(metric)
        reference.step(metric)
        assert rate.value == pytest.approx(reference_optimizer.param_groups[0]["lr"])
    assert rate.value == 0.025


def test_without_early_stopping_the_last_weights_are_kept() -> None:
    trainer = _trainer(epochs=6, early_stopping=0)
    validation = _data(64, seed=1)
    history = trainer.fit(_data(), validation)
    assert len(history.epochs) == 6 and not history.stopped_early
    assert trainer.validate(validation)["val_loss"] == pytest.approx(history.epochs[-1]["val_loss"], rel=1e-5)


def test_warmup_rises_linearly_then_hands_over_to_the_schedule() -> None:
    config = TrainingConfig(lr=0.01, schedule="cosine", warmup=0.2)
    rate = LearningRate(config, total_steps=10, monitor="loss")
    values = [rate.value]
    for _ in range(10):
        rate.after_step()
        values.append(rate.value)
    assert values[:2] == pytest.approx([0.01 / 3, 0.02 / 3])
    assert values[2] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert values[-1] == pytest.approx(0.0, abs=1e-12)


def test_multicycle_runs_four_cycles_of_doubling_length() -> None:
    rate = LearningRate(TrainingConfig(lr=1.0, schedule="multicycle"), total_steps=1500, monitor="loss")
    values = [rate.value]
    for _ in range(1500):
        rate.after_step()
        values.append(rate.value)
    # Zeros where log2(1 + 15 t) is a whole number: t = 1/15, 3/15, 7/15 and 1; peaks halfway between.
    for step in (0, 100, 300, 700, 1500):
        assert values[step] == pytest.approx(0.0, abs=1e-9)
    peak = round(1500 * (2**0.5 - 1) / 15)
    assert values[peak] == pytest.approx(1.0, abs=1e-3)


def test_label_smoothing_is_in_the_training_loss_but_not_the_validation_loss() -> None:
    trainer = _trainer(fused=False, label_smoothing=0.2)
    assert trainer.fused is None  # the hand-written step has no smoothing
    outputs, target = torch.tensor([[10.0, -10.0, -10.0]]), torch.tensor([0])
    assert float(trainer.validation_loss(outputs, target)) < 1e-6
    assert float(trainer.loss(outputs, target)) > 1.0


def test_auto_monitor_is_roc_auc_for_binary_targets_and_the_loss_otherwise() -> None:
    assert resolve_monitor("auto", "binary") == "roc_auc"
    assert resolve_monitor("auto", "multiclass") == resolve_monitor("auto", "regression") == "loss"


def test_take_gives_views_for_consecutive_rows_and_copies_otherwise() -> None:
    rows = _data(10)
    middle = rows.take(np.arange(3, 7))
    assert middle.numeric.data_ptr() == rows.numeric[3].data_ptr()  # a view, no copy
    assert torch.equal(middle.target, rows.target[3:7])
    picked = rows.take(np.array([5, 1, 2]))
    assert torch.equal(picked.numeric, rows.numeric[[5, 1, 2]])  # in the given order
    assert rows.take(np.arange(10)) is rows


# ---- training.steps_per_epoch: epochs that end within a pass --------------------------------------------
def _taken(feed, n: int) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """The next ``n`` batches' rows, by the number each row carries in its first column."""
    return [feed.next()[0].numeric[:, 0].long().tolist() for _ in range(n)]


def _numbered(n: int) -> Batch:
    numeric = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 4)
    return Batch(numeric, torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("n_rows", [100, 3_000_000 // 16])  # batches as views of a shuffled copy / gathered
def test_the_feed_visits_every_row_once_a_pass_and_carries_passes_across_epochs(n_rows) -> None:
    from keel.train.trainer import _Feed

    batch_size = max(10, n_rows // 10)
    feed = _Feed(_numbered(n_rows), batch_size, torch.Generator().manual_seed(0))
    per_pass = len(batch_bounds(n_rows, batch_size))
    batches = _taken(feed, 3 * per_pass + 2)  # three passes and two batches of a fourth
    for index in range(3):
        seen = sorted(row for batch in batches[index * per_pass:(index + 1) * per_pass] for row in batch)
        assert seen == list(range(n_rows))
    assert batches[:per_pass] != batches[per_pass:2 * per_pass]  # each pass shuffled anew
    # The passes are those of the whole-pass loop before steps_per_epoch: one randperm each from the generator.
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n_rows, generator=generator).tolist()
    assert batches[0] == order[:batch_size]


@pytest.mark.parametrize("where", [0, 3, 9, 10, 14])  # before any pass, within, at the end of, after one
def test_a_feed_put_back_from_its_place_continues_with_the_same_batches(where) -> None:
    from keel.train.trainer import _Feed

    rows, generator = _numbered(100), torch.Generator().manual_seed(7)
    feed = _Feed(rows, 10, generator)
    _taken(feed, where)
    state, position = feed.place()
    state = state.clone()
    expected = _taken(feed, 25)
    again = _Feed(rows, 10, torch.Generator().manual_seed(123))  # another generator: the state decides
    again.restore(state, position)
    assert _taken(again, 25) == expected


def test_steps_per_epoch_validates_within_a_pass_and_the_schedule_counts_its_steps() -> None:
    from keel.train.trainer import AUTO_STEPS_PER_EPOCH, resolve_steps_per_epoch

    trainer = _trainer(epochs=6, steps_per_epoch=3, schedule="cosine", early_stopping=0)
    history = trainer.fit(_data(), _data(64, seed=1))  # 256 rows, batch 32: 8 steps a pass
    assert len(history.epochs) == 6 and all("val_loss" in record for record in history.epochs)
    rates = [record["lr"] for record in history.epochs]
    assert rates[1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 3 / 18)))  # 3 of 6 x 3 steps
    assert resolve_steps_per_epoch("pass", 10_000, 32) == 313
    assert resolve_steps_per_epoch("auto", 10_000, 32) == AUTO_STEPS_PER_EPOCH
    assert resolve_steps_per_epoch("auto", 1000, 32) == 32
    assert resolve_steps_per_epoch(5, 1000, 32) == 5


def test_an_epoch_of_a_whole_pass_is_the_pass_setting_bit_for_bit() -> None:
    whole, counted = _trainer(epochs=4), _trainer(epochs=4, steps_per_epoch=8)  # 256 rows, batch 32: 8 steps
    first, second = whole.fit(_data(), _data(64, seed=1)), counted.fit(_data(), _data(64, seed=1))
    assert [r["loss"] for r in first.epochs] == [r["loss"] for r in second.epochs]
    for a, b in zip(whole.network.parameters(), counted.network.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_epoch_loss_is_the_mean_over_the_rows_of_its_own_steps() -> None:
    # Every row's loss is 0 but one class's rows: an epoch's mean depends on which rows its steps took.
    trainer = _trainer(epochs=1, steps_per_epoch=1, lr=1e-12, batch_size=64)
    data = _data()
    history = trainer.fit(data)
    torch.manual_seed(0)  # the same network as _trainer builds, untrained
    reference = _trainer(epochs=1, steps_per_epoch=1, lr=1e-12, batch_size=64)
    order = torch.randperm(256, generator=torch.Generator().manual_seed(42))[:64]  # training.seed 42
    first = data._select(order)
    loss = torch.nn.functional.cross_entropy(reference.network(first.numeric, first.categorical), first.target)
    assert history.epochs[0]["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)


def test_early_stopping_steps_shortens_the_wait_of_long_epochs_only() -> None:
    from keel.train.trainer import MIN_PATIENCE, resolve_patience

    def patience(steps_per_epoch: int, **settings) -> int:  # type: ignore[no-untyped-def]
        return resolve_patience(TrainingConfig(**{"early_stopping": 16, **settings}), steps_per_epoch)

    assert patience(256) == 16  # no early_stopping_steps: epochs alone
    assert patience(256, early_stopping_steps=1024) == 4  # 1,024 steps of 256-step epochs
    assert patience(152, early_stopping_steps=1024) == 7  # whole epochs: 6.7 -> 7
    assert patience(29, early_stopping_steps=1024) == 16  # short epochs: early_stopping caps the wait
    assert patience(2000, early_stopping_steps=1024) == MIN_PATIENCE == 4
    assert patience(256, early_stopping_steps=1024, early_stopping=0) == 0  # off stays off


def test_a_wait_counted_in_steps_stops_long_epochs_sooner() -> None:
    # Validation labels are noise: the score stops improving at once, and 8-step epochs wait 4 of them.
    validation = _data(64, seed=1)
    validation.target = validation.target[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    epochs = _trainer(epochs=200, early_stopping=16, lr=0.05).fit(_data(), validation)
    steps = _trainer(epochs=200, early_stopping=16, early_stopping_steps=20, lr=0.05).fit(_data(), validation)
    assert len(epochs.epochs) == epochs.best_epoch + 16
    assert len(steps.epochs) == steps.best_epoch + 4  # ceil(20 / 8) = 3, raised to the least wait of 4
