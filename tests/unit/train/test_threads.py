"""The thread tuner: steps timed by a fake clock, so each test decides what every thread count costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from keel.train import threads
from keel.train.threads import ThreadTuner, candidate_counts, thread_budget


class Machine:
    """A fake machine: a step costs ``cost(threads, step)`` seconds on the clock the tuner reads."""

    def __init__(self, cost, most: int = 2) -> None:  # type: ignore[no-untyped-def]
        self.cost, self.now, self.threads = cost, 0.0, most
        self.tuner = ThreadTuner(most, clock=lambda: self.now, set_threads=self._set)
        self.counts: list[int] = []  # the thread count each step ran on
        self.settings: list[int] = []

    def _set(self, count: int) -> None:
        self.threads = count
        self.settings.append(count)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.tuner.step_started()
            self.now += self.cost(self.threads, len(self.counts))
            self.counts.append(self.threads)
            self.tuner.step_ended()


def test_candidates_halve_down_to_one() -> None:
    assert candidate_counts(1) == [1]
    assert candidate_counts(2) == [2, 1]
    assert candidate_counts(16) == [16, 8, 4, 2, 1]
    assert candidate_counts(6) == [6, 3, 1]


def test_an_idle_machine_keeps_every_thread_and_tries_one_ever_more_rarely() -> None:
    machine = Machine(lambda count, step: {2: 0.010, 1: 0.017}[count])
    machine.run(1000)
    assert machine.tuner.current == 2 and machine.tuner.switches == []
    one = [step for step, count in enumerate(machine.counts) if count == 1]
    # Each trial is the PROBE steps of one thread (0.017 is under CLEARLY_WORSE x 0.010), its gaps doubling.
    trials = [step for step in one if step - 1 not in one]
    assert all(machine.counts[step:step + threads.PROBE] == [1] * threads.PROBE for step in trials)
    gaps = [later - earlier for earlier, later in zip(trials, trials[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= threads.LONGEST_GAP
    assert len(one) <= 8 * threads.PROBE  # about 1.5% of the steps on the slower count
    assert machine.threads == 2


def test_contention_moves_to_one_thread_within_a_window_and_back_when_it_ends() -> None:
    # Idle until step 200, then another process takes a core (two threads collapse to 6x their time,
    # one thread 1.3x), then idle again from step 700.
    def cost(count: int, step: int) -> float:
        busy = 200 <= step < 700
        return {2: 0.010, 1: 0.017}[count] * ({2: 6.0, 1: 1.3}[count] if busy else 1.0)

    machine = Machine(cost)
    machine.run(1200)
    switches = machine.tuner.switches
    assert switches[0][1] == 1 and 200 < switches[0][0] <= 200 + threads.WINDOW + 2
    assert machine.counts[switches[0][0]:700].count(2) <= 12  # back on 2 only for trials cut at their first step
    assert switches[1][1] == 2 and 700 < switches[1][0] <= 700 + threads.LONGEST_GAP + threads.WINDOW + 2
    assert machine.counts[-100:] == [2] * 100
    note = machine.tuner.describe()
    assert note.startswith(f"training's steps ran on 2 threads, on 1 from step {switches[0][0] + 1} and on 2 from "
                           f"step {switches[1][0] + 1} (of 1,200), where timed steps showed that count faster")
    assert machine.tuner.describe(3).startswith("network 3's training steps ran on 2 threads, on 1 from step ")


def test_a_trial_on_a_collapsed_count_ends_after_one_step() -> None:
    # Busy from the start: two threads take 10x one thread's time; after the move to one thread, every
    # later trial of two threads must stop at its first step.
    machine = Machine(lambda count, step: {2: 0.100, 1: 0.010}[count] if step else 1.0)
    machine.run(400)
    assert machine.tuner.current == 1
    switched = machine.tuner.switches[0][0]
    later = machine.counts[switched:]
    runs = [later[i] for i in range(1, len(later)) if later[i] == 2 and later[i - 1] == 1]
    assert runs and all(later[i:i + 2] != [2, 2] for i in range(len(later) - 1))


def test_noise_does_not_switch() -> None:
    # One thread 5% faster than two (within GAIN), with single slow steps now and then: no switch.
    machine = Machine(lambda count, step: ({2: 0.0100, 1: 0.0096}[count]) * (3.0 if step % 37 == 0 else 1.0))
    machine.run(600)
    assert machine.tuner.switches == []


def test_more_threads_are_tried_one_neighbour_at_a_time() -> None:
    # 8 threads: contention makes 8 and 4 slow, 2 the fastest; the tuner walks 8 -> 4 -> 2 and never tries 1
    # twice in a row, nor more than 8.
    machine = Machine(lambda count, step: {8: 0.05, 4: 0.03, 2: 0.010, 1: 0.016}[count], most=8)
    machine.run(300)
    assert [count for _, count in machine.tuner.switches][:2] == [4, 2]
    assert machine.tuner.current == 2
    assert max(machine.settings) <= 8


def _network(width: int, norm: type[nn.Module] | None = None) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(width, width)]
    if norm is not None:
        layers.append(norm(width))
    return nn.Sequential(*layers)


@pytest.fixture
def two_threads():  # type: ignore[no-untyped-def]
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("two_threads")
def test_thread_budget_tunes_only_large_cpu_steps_and_restores_the_count() -> None:
    with thread_budget(_network(256), 1024) as tuner:
        assert isinstance(tuner, ThreadTuner) and tuner.counts == [2, 1]
    with thread_budget(_network(8), 32) as tuner:  # small: one thread, untuned
        assert tuner is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with thread_budget(_network(256), 1024, tune=False) as tuner:  # a GPU's or a rank's steps
        assert tuner is None and torch.get_num_threads() == 2
    for norm in (nn.BatchNorm1d, nn.LayerNorm):  # their kernels sum per thread: other weights on other counts
        with thread_budget(_network(256, norm=norm), 1024) as tuner:
            assert tuner is None and torch.get_num_threads() == 2
    with thread_budget(_network(8), 32, setting=2) as tuner:  # a number is obeyed, small or not
        assert tuner is None and torch.get_num_threads() == 2
    with thread_budget(_network(256), 1024, setting=1) as tuner:
        assert tuner is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_training_threads_is_auto_or_a_positive_number() -> None:
    from keel.config import load_config
    from keel.errors import ConfigError

    assert load_config(None).training.threads == "auto"
    assert load_config({"training.threads": 3}).training.threads == 3
    for bad in (0, -1, "many"):
        with pytest.raises(ConfigError, match="training.threads"):
            load_config({"training.threads": bad})


@pytest.mark.usefixtures("two_threads")
def test_a_fit_whose_steps_run_faster_on_one_thread_moves_there_and_says_so(monkeypatch) -> None:
    import keel
    from tests.conftest import make_classification_frame

    frame = make_classification_frame(1200)  # 17 steps of 64 rows an epoch: the first trial comes in epoch 2

    class OneIsFaster(ThreadTuner):  # a machine where two threads take ten times one thread's step
        def __init__(self, most: int, **options) -> None:  # type: ignore[no-untyped-def]
            self.clock_now = 0.0
            self.threads_seen: list[int] = []  # the count each timed call ran on
            super().__init__(most, clock=self._clock, **options)

        def _clock(self) -> float:
            self.threads_seen.append(torch.get_num_threads())
            self.clock_now += 0.5 if torch.get_num_threads() == 2 else 0.05
            return self.clock_now

    made: list[OneIsFaster] = []
    monkeypatch.setattr(threads, "ThreadTuner", lambda most, **start: made.append(OneIsFaster(most, **start)) or made[-1])
    # Calibration and the test rows' scores are single passes, untuned: they run on the count training ended on.
    from keel.model import Model
    from keel.train import pipeline

    seen: dict[str, int] = {}

    def recorded(name, function):  # type: ignore[no-untyped-def]
        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen[name] = torch.get_num_threads()
            return function(*args, **kwargs)
        return run

    monkeypatch.setattr(pipeline, "_calibrate", recorded("calibration", pipeline._calibrate))
    monkeypatch.setattr(Model, "_predict", recorded("test", Model._predict))  # the test rows' scores
    config = {"preset": "fast", "model.hidden": [256, 256], "training.batch_size": 64, "training.epochs": 3}
    model = keel.fit(frame, target="label", config=config, quiet=True)
    assert len(made) == 2 and made[0].current == 1 and made[0].switches
    assert seen == {"calibration": 1, "test": 1}
    note = next(note for note in model.notes if "steps ran on 2 threads" in note)
    assert f"on 1 from step {made[0].switches[0][0] + 1}" in note
    # The passes after training (importance's predictions, timed as steps) start on the count training ended on.
    after = made[1]
    assert after.counts == [2, 1] and after.steps == 1 + len(model.feature_names)  # unshuffled, then one a feature
    assert after.threads_seen[0] == 1 and after.current == 1
    assert torch.get_num_threads() == 2  # the caller's count, back
    fixed = keel.fit(frame, target="label", config={**config, "training.threads": 2}, quiet=True)
    assert len(made) == 2 and not any("steps ran on" in note for note in fixed.notes)
    assert model.metrics == fixed.metrics  # the same run, whatever the threads
    assert model.importance["features"] == fixed.importance["features"]
    # Under a time limit importance's cuts are paced on its passes: they start on training's count, untuned.
    seen.clear()
    keel.fit(frame, target="label", config={**config, "training.time_limit": 600}, quiet=True)
    assert len(made) == 3 and made[2].current == 1 and seen == {"calibration": 1, "test": 1}


def test_networks_with_a_norm_layer_are_thread_dependent_and_plain_ones_are_not() -> None:
    from keel.nn.network import NetworkSpec, TabularNetwork
    from keel.train.threads import thread_dependent

    def network(**spec) -> TabularNetwork:  # type: ignore[no-untyped-def]
        return TabularNetwork(NetworkSpec(numeric_width=4, cardinalities=[3], n_outputs=2, hidden=[32, 32], **spec))

    assert not thread_dependent(network())
    assert not thread_dependent(network(ensemble=4, numeric_embedding="piecewise_linear"))  # the balanced preset's
    assert thread_dependent(network(norm="layer"))
    assert thread_dependent(network(norm="batch"))
    assert thread_dependent(network(architecture="resnet", norm="layer"))


def test_a_tuner_can_start_below_the_most_threads_and_tries_more_first() -> None:
    settings: list[int] = []
    tuner = ThreadTuner(2, set_threads=settings.append, start=1)
    assert tuner.current == 1 and settings == [1]  # set at once: the caller's count is the most
    assert ThreadTuner(2, set_threads=settings.append, start=3).current == 2  # not a count it may use: the most
    assert ThreadTuner(4, set_threads=settings.append, start=4).current == 4 and settings == [1]

    now = [0.0]
    tuner = ThreadTuner(2, clock=lambda: now[0], set_threads=settings.append, start=1)
    for _ in range(1 + threads.FIRST_GAP):  # one untimed step, then the first gap
        tuner.step_started()
        now[0] += 0.01
        tuner.step_ended()
    assert tuner.trial == 2 and settings[-1] == 2  # from one thread, the only neighbour is above


@pytest.mark.usefixtures("two_threads")
def test_passes_after_training_start_where_training_ended_and_restore_the_count() -> None:
    from keel.train.threads import passes_budget, timed_passes

    with passes_budget(_network(8), start=1) as tuner:  # small or not: a loop of whole-table passes is tuned
        assert isinstance(tuner, ThreadTuner) and tuner.current == 1 and torch.get_num_threads() == 1
        predict = timed_passes(lambda rows: rows * 2, tuner)
        assert predict(3) == 6 and predict(4) == 8 and tuner.steps == 2
        for rows in range(threads.WINDOW):  # one untimed, then a window: the other count is tried at once
            predict(rows)
        assert tuner.trial == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2
    with passes_budget(_network(256), start=1, tune=False) as tuner:  # a time limit's: on training's count, untuned
        assert tuner is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with passes_budget(_network(8)) as tuner:  # no start: the caller's count
        assert tuner is not None and tuner.current == 2 and torch.get_num_threads() == 2
    with passes_budget(_network(8), setting=1, start=2) as tuner:  # a number fixes them, as it fixed the steps
        assert tuner is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with passes_budget(_network(256, norm=nn.LayerNorm), start=1) as tuner:
        assert tuner is None and torch.get_num_threads() == 2
    with passes_budget(_network(256), tune=False) as tuner:  # a GPU's passes, a rank's (no start: nothing tuned)
        assert tuner is None and torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), passes_budget(_network(8), setting=1):
        raise RuntimeError("an error inside")
    assert torch.get_num_threads() == 2
    double = lambda rows: rows * 2  # noqa: E731
    assert timed_passes(double, None) is double


@pytest.mark.usefixtures("two_threads")
def test_a_reports_importance_runs_on_this_machines_threads_tuned(monkeypatch) -> None:
    # keel report --data ran importance on the training config's number (4 threads on a 2-core machine).
    import keel
    from tests.conftest import make_classification_frame

    frame = make_classification_frame(300)
    model = keel.fit(frame, target="label", quiet=True, importance=False,
                     config={"preset": "fast", "model.hidden": [256, 256], "training.epochs": 1, "training.threads": 4})
    made: list[ThreadTuner] = []
    counts: list[int] = []
    original = threads.ThreadTuner

    def tuner(most: int, **options) -> ThreadTuner:  # type: ignore[no-untyped-def]
        made.append(original(most, **options))
        return made[-1]

    monkeypatch.setattr(threads, "ThreadTuner", tuner)
    started = original.step_started
    monkeypatch.setattr(original, "step_started", lambda self: (counts.append(torch.get_num_threads()), started(self)))
    result = model._importance_on(frame)
    assert len(made) == 1 and made[0].counts == [2, 1] and made[0].steps == 1 + len(model.feature_names)
    assert counts[0] == 2 and max(counts) == 2 and result["features"] and torch.get_num_threads() == 2  # never 4
