"""The terminal face of a run's reporter: rich notes and messages, progress bars and spinners (CLI only).

On a terminal, epochs show as a live bar (loss, validation metric, rows/s, elapsed, ETA) and long
steps as a spinner or bar. Anywhere else (CI, a pipe, a file: ``console.is_terminal`` is False)
nothing is redrawn: one plain line per epoch, and one line for a step that is still running after
:data:`STEP_LINE_AFTER` seconds, so a log stays clean (reading a 10 kB file says nothing).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from keel.train.callbacks import Advance, EpochCallback, EpochClock, Reporter, epoch_line, epoch_share, stop_label

#: Off a terminal, a step gets its line only when it has run this long: quick ones leave no trace.
STEP_LINE_AFTER = 1.0

#: The progress bar's ETA is the pace of the last this many epochs (as the time limit's planner paces them,
#: keel.train.trainer.epoch_pace), and of at least rich's own window of 30 s where epochs are short.
ETA_EPOCHS = 3
ETA_WINDOW = 30.0


def _ignore(done: int) -> None:
    """The advance of a step shown without a live display."""


class RichReporter(Reporter):
    """Notes in yellow and messages as they arise, a progress bar per trained network and a spinner
    per long step, on stderr; plain lines instead of live displays when the console is not a terminal.

    Args:
        console: Where to print (stderr by default).
        quiet: Show nothing at all.
        step_line_after: Off a terminal, seconds a step runs before its one line is printed
            (0: at once).
    """

    def __init__(self, console: Console | None = None, quiet: bool = False,
                 step_line_after: float = STEP_LINE_AFTER) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.step_line_after = step_line_after
        # rich allows one live display per console at a time: a step inside a step (or a progress
        # bar inside a step) shows as a plain line instead.
        self._live = False

    def on_this_terminal(self) -> bool:
        return self.console.file in (sys.stdout, sys.stderr)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def _plain(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[EpochCallback | None]:
        if self.quiet:
            yield None
            return
        if not self.console.is_terminal or self._live:
            yield EpochLines(monitor, rows, self._plain)
            return
        self._live = True
        try:
            with ProgressBar(epochs, monitor, self.console, rows=rows) as bar:
                yield bar
        finally:
            self._live = False

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        if self.quiet:
            yield _ignore
            return
        if not self.console.is_terminal or self._live:
            with self._delayed_line(f"{description} ..."):
                yield _ignore
            return
        self._live = True
        try:
            with _step_display(description, total, self.console) as advance:
                yield advance
        finally:
            self._live = False


    @contextlib.contextmanager
    def _delayed_line(self, text: str) -> Iterator[None]:
        """Print ``text`` once the block has run ``step_line_after`` seconds (at once for 0)."""
        if self.step_line_after <= 0:
            self._plain(text)
            yield
            return
        timer = threading.Timer(self.step_line_after, self._plain, args=(text,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


@contextlib.contextmanager
def _step_display(description: str, total: int | None, console: Console) -> Iterator[Advance]:
    """A spinner (no total) or a bar (a total) with elapsed time; gone when the step ends."""
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    progress = Progress(*columns, console=console, transient=True)
    task = progress.add_task(description, total=total)
    with progress:
        yield lambda done: progress.update(task, completed=done)


class EpochLines:
    """The per-epoch callback off a terminal: one plain line per epoch (:func:`epoch_line`)."""

    def __init__(self, monitor: str, rows: int | None, write: Any) -> None:
        self.monitor = monitor
        self.clock = EpochClock(rows)
        self.write = write

    def __call__(self, epoch: int, epochs: int, record: dict[str, Any]) -> None:
        self.write(epoch_line(epoch, epochs, record, self.monitor, self.clock.tick(epoch_share(record))))


class ProgressBar:
    """A one-line progress bar: epoch, training loss, validation metric, rows/s, elapsed time and ETA.

    Use as a context manager; the instance is the callback the trainer calls after each epoch.

    Args:
        epochs: The most epochs the network may train for.
        monitor: The validation metric watched.
        console: Where to draw (stderr by default).
        rows: Training rows per epoch, for rows/s; None leaves it out.
    """

    def __init__(self, epochs: int, monitor: str, console: Console | None = None, rows: int | None = None) -> None:
        self.monitor = monitor
        self.clock = EpochClock(rows)
        self.progress = Progress(
            TextColumn("epoch {task.completed:>3}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console or Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("train", total=epochs, status="")

    def __enter__(self) -> "ProgressBar":
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def __call__(self, epoch: int, epochs: int, record: dict[str, Any]) -> None:
        previous = self.clock.last
        speed = self.clock.tick(epoch_share(record))
        # rich's ETA is the speed over the updates of its last speed_estimate_period seconds, and needs two of
        # them: with its fixed 30 s, epochs longer than that (a large pass, a fine-tuned text column) left one
        # update in the window and the bar never showed an ETA. The window follows the epochs instead.
        self.progress.speed_estimate_period = max(ETA_WINDOW, (ETA_EPOCHS + 0.5) * (self.clock.last - previous))
        status = f"loss {record['loss']:.4f}"
        if record.get("val_" + self.monitor) is not None:
            status += f"  val_{self.monitor} {record['val_' + self.monitor]:.4f}"
        if speed is not None:
            status += f"  {speed:,.0f} rows/s"
        if record.get("stopped"):
            status += f"  ({stop_label(record)})"
        # The epochs planned now (a time limit's plan, from the first timed epoch on), so the ETA counts them.
        self.progress.update(self.task, total=epoch if record.get("stopped") else epochs)
        self.progress.update(self.task, completed=epoch, status=status)
