"""The terminal face of a run's reporter: rich notes, messages and a one-line progress bar (CLI only)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from keel.train.callbacks import EpochCallback, Reporter


class RichReporter(Reporter):
    """Notes in yellow and messages as they arise, and a progress bar per trained network, on stderr."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]note:[/yellow] {text}", highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str) -> Iterator[EpochCallback | None]:
        if self.quiet:
            yield None
            return
        with ProgressBar(epochs, monitor, self.console) as bar:
            yield bar


class ProgressBar:
    """A one-line progress bar: epoch, training loss, validation metric, elapsed time and ETA.

    Use as a context manager; the instance is the callback the trainer calls after each epoch.
    """

    def __init__(self, epochs: int, monitor: str, console: Console | None = None) -> None:
        self.monitor = monitor
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
        status = f"loss {record['loss']:.4f}"
        if record.get("val_" + self.monitor) is not None:
            status += f"  val_{self.monitor} {record['val_' + self.monitor]:.4f}"
        if record.get("stopped"):
            status += "  (early stop)"
            self.progress.update(self.task, total=epoch)
        self.progress.update(self.task, completed=epoch, status=status)
