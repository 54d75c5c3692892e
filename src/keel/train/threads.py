"""How many CPU threads a training step runs on, chosen by measuring steps rather than by counting cores.

PyTorch's CPU kernels run on OpenMP threads that meet at a barrier after every operation, so a step
waits for its slowest thread. When another process keeps a core busy (another job, a second training,
a browser), one of the threads is often not running when the others reach the barrier, and every
operation waits for the scheduler: measured on a 2-core machine with two busy processes beside it
(even at `nice 19`), a matmul loop ran 11x slower on 2 threads than idle and 1.8x slower on 1 thread;
the balanced preset's fit of bench/accuracy.py's default table took 75 s on 2 threads against 7.9 s
on 1 (3.9 s idle on 2). So the trainer times its steps and now and then tries a few on the other
thread counts, keeping whichever is faster. Thread counts change no result (keel trains the same
weights on any number of threads; see the README's "What is reproducible"), only the time.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

T = TypeVar("T")

# Steps timed at the current count before it is judged: a median of five is robust to one slow step.
WINDOW = 5
# Steps tried at another count; the first ends the trial at once when it is clearly worse.
PROBE = 3
# Steps between trials: the first soon after the start, then twice as long after each trial that
# did not switch (so an idle machine pays for about one trial in LONGEST_GAP steps), back to the first
# after a switch. A window that runs SLOWER times its count's best median is tried against the
# others at once: contention shows up as a sudden slowdown of the current count.
FIRST_GAP = 16
LONGEST_GAP = 256
SLOWER = 1.5
# Another count is adopted when its median step is under this share of the current one's: the
# two medians come from different moments, so a few percent either way is noise.
GAIN = 0.9
# A first trial step this many times the current median ends the trial (it costs the most when the
# other count is the collapsed one).
CLEARLY_WORSE = 2.0


def candidate_counts(most: int) -> list[int]:
    """The thread counts tried: ``most``, then halving down to 1 (``[2, 1]``, ``[16, 8, 4, 2, 1]``)."""
    counts = [most]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


class ThreadTuner:
    """Times each step (``step_started`` / ``step_ended``) and sets the intra-op thread count the next
    steps run on: the current count's last ``WINDOW`` steps against ``PROBE`` steps at a neighbouring
    count (half or twice as many, alternately), now and then and whenever the current count slows down.

    ``clock`` and ``set_threads`` are for tests: a fake clock gives the steps the times a test wants.
    """

    def __init__(self, most: int, clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = torch.set_num_threads, start: int | None = None,
                 first_gap: int = FIRST_GAP) -> None:
        self.counts = candidate_counts(most)
        self.first_gap = first_gap
        self.current = start if start in self.counts else most
        self.clock = clock
        self.set_threads = set_threads
        if self.current != most:  # (the caller's threads are ``most``)
            set_threads(self.current)
        self.window: list[float] = []  # the current count's latest step times
        self.best: dict[int, float] = {}  # each count's best window median so far
        self.trial: int | None = None  # the count being tried, while a trial runs
        self.trial_times: list[float] = []
        self.gap = first_gap
        self.since_trial = 0
        self.upward = False  # which neighbour the next trial takes, where there are two
        self.untimed = 1  # steps not timed: the run's first carries its one-time costs, and the first after a return
        self.switches: list[tuple[int, int]] = []  # (step, count) of every change of the current count
        self.steps = 0
        self._started = 0.0

    def describe(self, network: int | None = None) -> str:
        """The run's note on the thread counts its steps ran on (when they changed); ``network``: which
        bagged network's (1-based), when there are several."""
        spans = " and ".join(f"on {count} from step {step + 1:,}" for step, count in self.switches)
        whose = "training's steps" if network is None else f"network {network}'s training steps"
        return (f"{whose} ran on {self.counts[0]} threads, {spans} (of {self.steps:,}), where timed "
                "steps showed that count faster (another busy process slows multi-threaded steps several times over, "
                "and some networks' steps are too small to share well); training.threads fixes the count")

    def step_started(self) -> None:
        self._started = self.clock()

    def step_ended(self) -> None:
        seconds = self.clock() - self._started
        self.steps += 1
        if self.untimed:
            self.untimed -= 1
            return
        if self.trial is not None:
            self._trial_step(seconds)
            return
        self.window = [*self.window, seconds][-WINDOW:]
        self.since_trial += 1
        if len(self.window) < WINDOW or len(self.counts) == 1:
            return
        median = statistics.median(self.window)
        best = self.best.get(self.current)
        self.best[self.current] = median if best is None else min(best, median)
        slowed = best is not None and median > SLOWER * best and self.since_trial >= WINDOW
        if self.since_trial >= self.gap or slowed:
            self._start_trial()

    def _start_trial(self) -> None:
        index = self.counts.index(self.current)
        below = self.counts[index + 1] if index + 1 < len(self.counts) else None
        above = self.counts[index - 1] if index > 0 else None
        neighbours = [count for count in ((above, below) if self.upward else (below, above)) if count is not None]
        trial = neighbours[0]
        self.upward = not self.upward
        self.trial, self.trial_times = trial, []
        self.set_threads(trial)

    def _trial_step(self, seconds: float) -> None:
        assert self.trial is not None
        self.trial_times.append(seconds)
        current = statistics.median(self.window)
        if seconds > CLEARLY_WORSE * current or len(self.trial_times) == PROBE:
            faster = len(self.trial_times) == PROBE and statistics.median(self.trial_times) < GAIN * current
            self._end_trial(switch=faster)

    def _end_trial(self, switch: bool) -> None:
        assert self.trial is not None
        self.since_trial = 0
        if switch:
            self.current, self.window = self.trial, self.trial_times[-WINDOW:]
            self.best[self.current] = statistics.median(self.window)
            self.switches.append((self.steps - len(self.trial_times), self.current))  # the trial's first step on
            self.gap = self.first_gap
        else:
            self.set_threads(self.current)
            self.gap = min(2 * self.gap, LONGEST_GAP)
            self.untimed = 1
        self.trial, self.trial_times = None, []


def small_step(network: nn.Module, batch_rows: int) -> bool:
    """Whether a step's matrices are small enough that one thread is fastest: waking and synchronising
    threads costs more than it saves on them (and multi-threaded OpenMP on tiny ops collapses under
    contention), so such steps are not tuned."""
    widest = max((m.weight.shape[0] * m.weight.shape[1] for m in network.modules() if isinstance(m, nn.Linear)),
                 default=0)
    return widest * batch_rows < 1_000_000


# Normalisation layers whose CPU kernels split their sums across threads: the same run on 1 and 2 threads trains
# other weights (batch norm's statistics; layer norm's backward, measured by the audit: model.norm layer gave two
# weight hashes on 1 and 2 threads), so moving such a run between counts would make it depend on the machine's load.
THREAD_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def thread_dependent(network: nn.Module) -> bool:
    """Whether ``network`` holds a layer whose results depend on the thread count (:data:`THREAD_DEPENDENT`): the
    model.norm options batch and layer, image encoders' batch norms, bag and fine-tuned text encoders' layer norms."""
    return any(isinstance(module, THREAD_DEPENDENT) for module in network.modules())


@contextlib.contextmanager
def thread_budget(network: nn.Module, batch_rows: int, setting: int | str = "auto", tune: bool = True
                  ) -> Iterator[ThreadTuner | None]:
    """The threads training runs on, restored afterwards; yields the tuner the steps report to, if any.

    ``setting`` is ``training.threads``: a number runs every step on that many threads; ``auto`` runs
    small steps on one thread and tunes larger ones between the threads PyTorch was given and one
    (never more than it was given), unless ``tune`` is false (a GPU's steps, a data-parallel rank's, which
    wait for the others) or the network normalises (:func:`thread_dependent`).
    """
    previous = torch.get_num_threads()
    tuner = None
    if isinstance(setting, int):
        torch.set_num_threads(setting)
    elif small_step(network, batch_rows):
        torch.set_num_threads(1)
    elif previous > 1 and tune and not thread_dependent(network):
        tuner = ThreadTuner(previous)
    try:
        yield tuner
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def passes_budget(network: nn.Module, setting: int | str = "auto", start: int | None = None, tune: bool = True
                  ) -> Iterator[ThreadTuner | None]:
    """The threads of the prediction passes after training (calibration, the test rows' scores, permutation
    importance), restored afterwards; yields a tuner for a loop of alike passes (importance's) to report to.

    They collapse under another busy process as training's steps do, so with ``setting`` ``auto`` they start on
    ``start``, the count training's tuner ended on (a machine busy at the end of training is likely busy still;
    None: the caller's count), and the tuner tries the other count after one window of passes (importance's
    predictions are thousands of rows, not a step's hundreds: what suited the steps may not suit them). A number
    runs them on that many threads, as it ran the steps. Not tuned where ``tune`` is false (a GPU, a data-parallel
    rank, importance under a time limit, whose cuts are paced on the passes and would count a trial's slow ones)
    or the network normalises (:func:`thread_dependent`).
    """
    previous = torch.get_num_threads()
    tuner = None
    if isinstance(setting, int):
        torch.set_num_threads(setting)
    elif previous > 1 and not thread_dependent(network):
        if tune:
            tuner = ThreadTuner(previous, start=start, first_gap=WINDOW)
        elif start is not None:
            torch.set_num_threads(start)
    try:
        yield tuner
    finally:
        torch.set_num_threads(previous)


# Element-wise work below this many elements runs on one thread: waking a second costs more than it saves, and
# beside a busy process each wake-up waits for a core (a temperature search over 640 x 8 logits took 1.8 s on 2
# threads and 34 ms on 1 under a load of 5; over 5,000 x 8 x 5, 0.90 s against 0.60 s).
SMALL_ELEMENTWISE = 1 << 18


@contextlib.contextmanager
def one_thread_if_small(elements: int) -> Iterator[None]:
    """One thread for a loop of element-wise passes over ``elements`` values at most :data:`SMALL_ELEMENTWISE`
    (restored afterwards); the caller's count otherwise. Only for work whose result does not depend on the count."""
    previous = torch.get_num_threads()
    if elements <= SMALL_ELEMENTWISE and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def timed_passes(predict: Callable[..., T], tuner: ThreadTuner | None) -> Callable[..., T]:
    """``predict`` with each call timed as one of ``tuner``'s steps (``predict`` itself without a tuner)."""
    if tuner is None:
        return predict

    def timed(*args: Any) -> T:
        tuner.step_started()
        try:
            return predict(*args)
        finally:
            tuner.step_ended()
    return timed
