"""Numeric guards: a non-finite loss or gradient stops training at its step (or is skipped), weights
are checked after every epoch and before a save, and hard tables train without NaNs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import keel
from keel.config import PreprocessingConfig, TrainingConfig
from keel.data.preprocess import Preprocessor
from keel.data.schema import Feature, Schema
from keel.data.transforms import SCALED_LIMIT, NumberTransform, mean_and_std
from keel.errors import DataError, KeelError, NumericError
from keel.nn.network import NetworkSpec, TabularNetwork
from keel.train import trainer as trainer_module
from keel.train.guards import BatchView, check_finite, likely_cause, numeric_input_names
from keel.train.trainer import Batch, Trainer, batch_bounds, numeric_guard
from tests.conftest import FAST

N_ROWS, BATCH = 256, 32


def _trainer(fused: bool = True, cardinalities: tuple[int, ...] = (), **settings) -> Trainer:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    network = TabularNetwork(NetworkSpec(numeric_width=4, cardinalities=list(cardinalities), n_outputs=3,
                                         hidden=[16], init="xavier_uniform"))
    config = TrainingConfig(**{"epochs": 3, "batch_size": BATCH, "lr": 0.01, **settings})
    trainer = Trainer(network, config, "multiclass", "cross_entropy", fused=fused)
    assert (trainer.fused is not None) == fused
    return trainer


def _rows(bad_rows: list[int] = (), categorical: torch.Tensor | None = None) -> Batch:  # type: ignore[assignment]
    generator = torch.Generator().manual_seed(0)
    numeric = torch.randn(N_ROWS, 4, generator=generator)
    target = (numeric[:, 0] > 0).long() + (numeric[:, 1] > 1).long()
    numeric[list(bad_rows), 2] = float("nan")
    if categorical is None:
        categorical = torch.zeros(N_ROWS, 0, dtype=torch.long)
    return Batch(numeric, categorical, target)


def _steps_holding(rows: list[int], epochs: int, seed: int = 42) -> list[list[int]]:
    """For each epoch, the 1-based steps whose batch holds any of ``rows``: the trainer's own shuffle,
    replayed (one CPU generator seeded with training.seed, one permutation an epoch)."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(epochs):
        order = torch.randperm(N_ROWS, generator=generator)
        bounds = batch_bounds(N_ROWS, BATCH)
        steps.append([step for step, (start, stop) in enumerate(bounds, start=1)
                      if set(order[start:stop].tolist()) & set(rows)])
    return steps


def _all_finite(network: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in network.parameters())


@pytest.mark.parametrize("fused", [True, False])
def test_a_nan_stops_training_at_the_step_whose_batch_holds_it(fused: bool) -> None:
    trainer = _trainer(fused)
    numeric_guard(trainer).input_names = ["'a'", "'b'", "'c'", "'d'"]
    with pytest.raises(NumericError) as error:
        trainer.fit(_rows([200]))
    first = _steps_holding([200], epochs=1)[0][0]
    assert (error.value.epoch, error.value.step) == (1, first)
    message = str(error.value)
    assert message.startswith(f"training stopped at epoch 1, step {first} of {N_ROWS // BATCH}: the loss is nan and so "
                              "are the gradients, and its update was not applied. Likely cause: ")
    assert "Likely cause: inputs that are NaN ('c'); fill missing values before training" in message
    assert "extreme values" not in message and "training.lr is 0.01" in message
    assert "set training.nonfinite: skip_batch" in message
    assert _all_finite(trainer.network)  # the bad step never reached the weights


@pytest.mark.parametrize("fused", [True, False])
def test_skip_batch_leaves_the_weights_alone_and_counts_each_skipped_batch(fused: bool) -> None:
    trainer = _trainer(fused, nonfinite="skip_batch")
    history = trainer.fit(_rows([3, 150]))
    expected = {epoch: len(steps) for epoch, steps in enumerate(_steps_holding([3, 150], epochs=3), start=1)}
    assert numeric_guard(trainer).skipped == expected
    assert numeric_guard(trainer).total_skipped == sum(expected.values()) >= 3
    assert _all_finite(trainer.network)
    assert all(np.isfinite(record["loss"]) for record in history.epochs)
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]  # it still trained on the good batches


def test_skip_batch_stops_when_an_epoch_has_no_good_batch() -> None:
    trainer = _trainer(nonfinite="skip_batch")
    with pytest.raises(NumericError, match=r"^training stopped at epoch 1: all 8 of its batches had a loss or "
                                           r"gradient that is not finite"):
        trainer.fit(_rows(list(range(N_ROWS))))


def _nan_gradient_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A real loss whose value is finite (0) and whose gradient is not: d sqrt(u)/du is infinite at 0."""
    return torch.sqrt((outputs * 0).sum())


def test_a_finite_loss_with_a_nan_gradient_is_caught_at_the_next_step() -> None:
    # Under "stop" a step reads only its loss; the update of a NaN gradient breaks the weights, the
    # next loss shows it, and the message blames the update before.
    trainer = _trainer(fused=False)
    trainer.loss = _nan_gradient_loss
    with pytest.raises(NumericError, match=r"^training stopped at epoch 1, step 2: the weights this step ran on "
                                           r"\('mlp.0.weight', 'mlp.0.bias', 'mlp.3.weight' and 1 more\) hold NaN or "
                                           r"infinite values, though every loss before was finite: an update \(most "
                                           r"likely step 1's\) had a gradient that was not finite") as error:
        trainer.fit(_rows())
    assert (error.value.epoch, error.value.step) == (1, 2)


def test_skip_batch_checks_every_gradient_before_the_update() -> None:
    trainer = _trainer(fused=False, nonfinite="skip_batch")
    trainer.loss = _nan_gradient_loss
    before = [p.detach().clone() for p in trainer.network.parameters()]
    with pytest.raises(NumericError, match=r"all 8 of its batches had a loss or gradient that is not finite \(the "
                                           r"first, step 1: the loss is finite \(0\) but a gradient is not"):
        trainer.fit(_rows())
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))  # no update got through


@pytest.mark.parametrize("check", ["all", "loss"])
def test_the_fused_step_checks_before_it_updates(check: str) -> None:
    trainer = _trainer()
    step = trainer.fused
    assert step is not None
    rows = _rows([5])
    before = [p.clone() for p in step.parameters]
    loss, updated = step.step(rows.numeric[:32], rows.categorical[:32], rows.target[:32], 0.01, check=check)
    assert not updated and not np.isfinite(float(loss))
    assert all(torch.equal(a, b) for a, b in zip(before, step.parameters))
    loss, updated = step.step(rows.numeric[32:64], rows.categorical[32:64], rows.target[32:64], 0.01, check=check)
    assert updated and np.isfinite(float(loss))
    assert not all(torch.equal(a, b) for a, b in zip(before, step.parameters))


def test_the_fused_step_sees_a_non_finite_value_anywhere_in_its_gradients() -> None:
    trainer = _trainer()
    step = trainer.fused
    assert step is not None
    rows = _rows()
    step.gradients(rows.numeric, rows.categorical, rows.target)
    assert step.gradients_finite()
    for index in (0, step.flat_grad.numel() // 2, step.flat_grad.numel() - 1):  # first layer .. last bias
        saved = float(step.flat_grad[index])
        for value in (float("inf"), float("-inf"), float("nan")):
            step.flat_grad[index] = value
            assert not step.gradients_finite()
        step.flat_grad[index] = saved
    assert step.gradients_finite()
    # The buffer is the gradients' own memory: each parameter's gradient is a view of it.
    step.grads[-1].fill_(float("nan"))
    assert not step.gradients_finite()


def test_a_weight_no_loss_uses_is_caught_after_its_epoch() -> None:
    # Category code 3 never occurs, so an infinite embedding row for it never shows in a loss; the
    # end-of-epoch check is what finds it.
    trainer = _trainer(cardinalities=(4,))
    poison = lambda epoch, epochs, record: trainer.network.categories.tables[0].weight.data[3].fill_(float("inf"))  # noqa: E731
    trainer.callback = poison
    with pytest.raises(NumericError, match=r"^training stopped after epoch 2: the weights \('categories.tables.0.weight'\) "
                                           r"hold NaN or infinite values, though every loss before was finite") as error:
        trainer.fit(_rows(categorical=torch.randint(0, 3, (N_ROWS, 1), generator=torch.Generator().manual_seed(1))))
    assert error.value.epoch == 2


def test_a_gpu_style_run_checks_once_an_epoch_and_names_the_same_step(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # On a GPU, "stop" reads each step's loss once an epoch (no host sync a step); this machine has
    # none, so the CPU takes that path here.
    monkeypatch.setattr(trainer_module, "step_check", lambda device, guard: "none")
    trainer = _trainer(fused=False)
    with pytest.raises(NumericError, match="found at the end of the epoch") as error:
        trainer.fit(_rows([77]))
    assert (error.value.epoch, error.value.step) == (1, _steps_holding([77], epochs=1)[0][0])


def test_a_learning_rate_too_high_is_named_by_keel_fit(classification_frame) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NumericError) as error:
        keel.fit(classification_frame, target="label", config={**FAST, "training.lr": 1e6}, quiet=True)
    message = str(error.value)
    assert message.startswith(f"training stopped at epoch {error.value.epoch}, step {error.value.step} of ")
    assert "a learning rate too high (training.lr is 1e+06 and the largest weight had grown to" in message
    assert "extreme values" not in message  # the inputs are ordinary: the rate is the only cause named
    assert any(note.startswith("rows: ") for note in error.value.notes)  # the run's notes reach the user


@pytest.mark.parametrize("fused", [True, False])
def test_extreme_inputs_are_named_as_the_likely_cause(fused: bool) -> None:
    # A Trainer fed a raw column near float32's largest value (keel's preprocessing would scale and
    # clip it) overflows in its first forward pass.
    trainer = _trainer(fused)
    numeric_guard(trainer).input_names = ["'a'", "'income'", "'c'", "'d'"]
    rows = _rows()
    rows.numeric[:, 1] = 3e38
    with pytest.raises(NumericError, match=r"epoch 1, step 1 of 8.*Likely cause: unscaled inputs or a column with "
                                           r"extreme values \('income' reaches 3e\+38, after preprocessing\)"):
        trainer.fit(rows)


def test_likely_cause_names_a_regression_target_outlier_and_unnamed_inputs() -> None:
    batch = BatchView(numeric=torch.tensor([[0.5, 2e4], [1.0, -3.0]]), target=torch.tensor([0.1, 5e4]),
                      task="regression", lr=0.001, largest_weight=0.8)
    cause = likely_cause(batch)
    assert "numeric input 1 reaches 2e+04" in cause and "numeric input 0" not in cause
    assert "a regression target with an extreme value (5e+04 standard deviations from its mean" in cause
    assert cause.endswith("set training.grad_clip (1.0, say)") and "largest weight" not in cause


def test_numeric_input_names_follow_the_network_columns(classification_frame) -> None:  # type: ignore[no-untyped-def]
    schema = Schema("label", "multiclass", [Feature("size", "number"), Feature("color", "category"),
                                            Feature("member", "binary"), Feature("weight", "number")])
    preprocessor = Preprocessor(schema, PreprocessingConfig(missing_indicator=True)).fit(classification_frame)
    names = numeric_input_names(preprocessor)
    assert names == ["'size'", "'size' (missing flag)", "'member'", "'weight'", "'weight' (missing flag)"]
    assert len(names) == preprocessor.numeric_width


def test_check_finite_refuses_nan_and_infinite_weights_and_names_them() -> None:
    network = TabularNetwork(NetworkSpec(numeric_width=3, cardinalities=[5], n_outputs=2, hidden=[4],
                                         numeric_embedding="piecewise_linear"))
    network.numbers.fit_bins(torch.randn(50, 3))
    # Parameters, not the state dict: the bins' open outer edges are infinite buffers by design.
    assert any(not bool(torch.isfinite(value).all()) for value in network.state_dict().values())
    check_finite(network.named_parameters(), where="saving the model to m")  # finite: nothing happens
    state = dict(network.named_parameters())
    with torch.no_grad():
        state["mlp.0.bias"][1] = float("nan")
        state["categories.tables.0.weight"][2, 0] = float("-inf")
    state["counts"] = torch.tensor([1, 2, 3])  # integers cannot be NaN and are skipped
    with pytest.raises(NumericError, match=r"^saving the model to m: the weights 'categories.tables.0.weight', "
                                           r"'mlp.0.bias' hold NaN or infinite values.*Nothing was written") as error:
        check_finite(dict(sorted(state.items())), where="saving the model to m")
    assert isinstance(error.value, KeelError) and error.value.epoch is None


# --- hard tables: each trains without NaNs or gives a clear error --------------------------------------


def _assert_finite_model(model: keel.Model, frame: pd.DataFrame) -> None:
    assert _all_finite(model.network)
    outputs = model.predict(frame) if model.task == "regression" else model.predict_proba(frame)
    assert np.isfinite(np.asarray(outputs, dtype=np.float64)).all()
    assert all(np.isfinite(value) for value in (model.metrics or {}).values() if isinstance(value, float))


def _frame(n_rows: int = 160, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n_rows)
    return pd.DataFrame({"a": rng.normal(size=n_rows) + label, "b": rng.normal(size=n_rows),
                         "label": np.array(["no", "yes"])[label]})


@pytest.mark.parametrize("normalize", ["zscore", "minmax", "robust", "quantile"])
@pytest.mark.parametrize("magnitude", [1e30, 1e300])
def test_inputs_with_huge_magnitudes_train_and_predict_finite_values(normalize: str, magnitude: float) -> None:
    frame = _frame()
    frame.loc[::7, "a"] = magnitude  # a column of ordinary values with huge outliers
    frame["c"] = frame["b"] * magnitude  # a column that is huge throughout
    model = keel.fit(frame, target="label", config={**FAST, "preprocessing.normalize": normalize,
                                                    "preprocessing.missing": "mean"}, quiet=True)
    _assert_finite_model(model, frame)
    # At prediction, a value far beyond anything seen in training is clipped, not turned into NaN.
    extreme = frame.head(3).assign(a=[1.7e308, -1.7e308, 1e30], c=[-1e308, 1e308, 0.0])
    assert np.isfinite(model.predict_proba(extreme)).all()


def test_unscaled_huge_inputs_train_without_nans() -> None:
    frame = _frame()
    frame["c"] = frame["b"] * 1e30
    model = keel.fit(frame, target="label", config={**FAST, "preprocessing.normalize": "none"}, quiet=True)
    _assert_finite_model(model, frame)


def test_a_constant_column_trains() -> None:
    frame = _frame().assign(c=7.5, d="same")
    model = keel.fit(frame, target="label", config={
        **FAST, "input_features": [{"name": "a"}, {"name": "c", "type": "number"}, {"name": "d", "type": "category"}]},
        quiet=True)
    _assert_finite_model(model, frame)
    assert [t.scale for t in model.preprocessor.numeric if t.name == "c"] == [1.0]  # centred, not divided by 0


@pytest.mark.parametrize("kind", ["number", "category", "binary"])
def test_a_column_that_is_all_missing_trains(kind: str) -> None:
    frame = _frame().assign(c=None)
    model = keel.fit(frame, target="label", config={
        **FAST, "input_features": [{"name": "a"}, {"name": "c", "type": kind}]}, quiet=True)
    _assert_finite_model(model, frame)
    auto = keel.fit(frame, target="label", config=FAST, quiet=True)  # inferred: dropped, with the reason
    assert any("dropped column 'c': all values are missing" in note for note in auto.notes)


def test_a_class_with_a_single_row_trains() -> None:
    frame = _frame()
    frame.loc[5, "label"] = "lonely"
    model = keel.fit(frame, target="label", config=FAST, quiet=True)
    assert list(model.classes) == ["lonely", "no", "yes"]
    _assert_finite_model(model, frame)
    assert np.allclose(model.predict_proba(frame).sum(axis=1), 1.0)


@pytest.mark.parametrize("outlier", [1e12, 1e300])
def test_a_regression_target_with_one_extreme_outlier_trains(outlier: float) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "z": rng.normal(size=200)})
    frame["y"] = 3 * frame["x"] + frame["z"]
    frame.loc[17, "y"] = outlier
    # Every row trains (no validation or test rows), so the outlier is surely among the training rows.
    model = keel.fit(frame, target="y", config={**FAST, "training.test_split": 0.0, "training.validation_split": 0.0},
                     quiet=True)
    assert np.isfinite(model.target_encoder.mean) and np.isfinite(model.target_encoder.std)
    _assert_finite_model(model, frame)


def test_mean_and_std_stay_finite_where_float64_sums_overflow() -> None:
    values = np.array([1e300, -1e300, 1e300, 3e299])
    center, std = mean_and_std(values)
    assert center == pytest.approx(np.mean(values / 1e300) * 1e300) and np.isfinite(std)
    assert std == pytest.approx(np.std(values / 1e300) * 1e300)
    assert mean_and_std(np.array([1.0, 2.0, 3.0]), n_missing=1, fill=2.0) == pytest.approx((2.0, np.sqrt(0.5)))


def test_scaled_numbers_are_clipped_to_the_limit() -> None:
    transform = NumberTransform("x", PreprocessingConfig()).fit(pd.Series([0.0, 1.0, 2.0]))
    out, _ = transform.transform(pd.Series([1e300, -1e300, 1e20, 1.0, None]))
    assert out[:, 0].tolist() == pytest.approx([SCALED_LIMIT, -SCALED_LIMIT, SCALED_LIMIT, 0.0, 0.0])
    with pytest.raises(DataError, match="keel needs finite numbers"):
        transform.transform(pd.Series([1.0, float("inf")]))


def test_a_resumed_skip_batch_run_counts_the_batches_skipped_before_its_checkpoint() -> None:
    import copy

    class KeepSecondEpoch:
        state = None

        def due(self, epoch: int) -> bool:
            return epoch == 2

        def save(self, state) -> None:  # type: ignore[no-untyped-def]
            self.state = copy.deepcopy(state)  # the trainer's tensors move on after this call

    keeper = KeepSecondEpoch()
    whole = _trainer(nonfinite="skip_batch")
    whole.checkpoint = keeper  # type: ignore[assignment]
    whole.fit(_rows([3, 150]))
    resumed = _trainer(nonfinite="skip_batch")
    resumed.fit(_rows([3, 150]), resume=keeper.state)
    assert numeric_guard(resumed).skipped == numeric_guard(whole).skipped
    assert numeric_guard(resumed).total_skipped == numeric_guard(whole).total_skipped >= 3


def test_numeric_input_names_spell_out_a_dates_columns() -> None:
    import pandas as pd

    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0, 4.0], "when": pd.to_datetime(["2024-01-01 10:00", "2024-02-01 00:00",
                                                                                 None, "2024-03-05 00:00"]),
                          "label": ["a", "b", "a", "b"]})
    schema = Schema("label", "binary", [Feature("size", "number"), Feature("when", "date")])
    preprocessor = Preprocessor(schema, PreprocessingConfig()).fit(frame)
    names = numeric_input_names(preprocessor)
    assert len(names) == preprocessor.numeric_width
    assert names[1:4] == ["'when' (elapsed_days)", "'when' (year)", "'when' (month_sin)"]
    assert names[-1] == "'when' (missing)"
