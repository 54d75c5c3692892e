"""How a training run reports what it does: notes, one-line messages, long steps and per-epoch progress.

The pipeline never prints by itself. It talks to a :class:`Reporter`, and each face renders it its
own way: nothing for a quiet library call (:class:`Reporter` itself), plain lines on stderr for a
library call (:class:`TextReporter`), a rich progress bar in the CLI (``keel.console``), a
plain-text log file (:class:`LogReporter`, ``keel train --log-file``), or several at once
(:class:`Reporters`). Notes are also kept on the model (``model.notes``) and on any error that
stops the run (``error.notes``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import time
from typing import Any, Callable, Iterator, Protocol, TextIO

#: What :meth:`Reporter.step` yields: call it with the number of items done so far.
Advance = Callable[[int], None]


class EpochCallback(Protocol):
    def __call__(self, epoch: int, epochs: int, record: dict[str, Any]) -> None: ...


def _ignore(done: int) -> None:
    """The advance of a step that nobody watches."""


class Reporter:
    """Receives a run's notes, messages, steps and epochs; this base class shows nothing (a quiet run)."""

    def on_this_terminal(self) -> bool:
        """Whether it writes to this process's stdout or stderr, where a rank this process started (``--nproc``)
        writes its own notes too: those reach such a reporter once already (see :meth:`elsewhere`)."""
        return False

    def elsewhere(self) -> "Reporter":
        """What of this reporter does not write to this terminal (a log file, a caller's own): itself, or none."""
        return Reporter() if self.on_this_terminal() else self

    def note(self, text: str) -> None:
        """Something keel decided or worked around that the user should know (kept on the model)."""

    def message(self, text: str) -> None:
        """A line of progress: what is being trained on how many rows."""

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[EpochCallback | None]:
        """Around one network's training: yields the per-epoch callback, or None for none.

        Args:
            epochs: The most epochs the network may train for.
            monitor: The validation metric watched (``record["val_" + monitor]``).
            rows: Training rows per epoch, for a rows/s figure; None when unknown.
        """
        yield None

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        """Around a long step (reading a file, preprocessing, permutation importance).

        Args:
            description: What the step does, as a short phrase ("reading data.csv").
            total: How many items the step has (features, chunks); None when unknown.

        Yields:
            ``advance(done)``: call it with the number of items done so far.
        """
        yield _ignore


class TextReporter(Reporter):
    """Plain lines on a stream (stderr by default): notes, messages and a line per step; no progress bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def on_this_terminal(self) -> bool:
        return self.stream is None or self.stream in (sys.stdout, sys.stderr)

    def _write(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self._write(f"note: {text}")

    def message(self, text: str) -> None:
        self._write(text)

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        self._write(f"{description} ...")
        yield _ignore


def epoch_line(epoch: int, epochs: int, record: dict[str, Any], monitor: str,
               rows_per_second: float | None = None) -> str:
    """One epoch as one plain line: ``epoch 3/100  loss 0.4123  val_loss 0.3991  12,345 rows/s``.

    Args:
        epoch: The epoch just finished (1-based).
        epochs: The most epochs the network may train for.
        record: The trainer's record of the epoch (``loss``, ``val_loss``, ``val_<monitor>``, ``stopped``).
        monitor: The validation metric watched.
        rows_per_second: Training speed over the epoch, when known.

    Returns:
        The line, without a newline.
    """
    parts = [f"epoch {epoch}/{epochs}", f"loss {record['loss']:.4f}"]
    for key in dict.fromkeys(("val_loss", "val_" + monitor)):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]:.4f}")
    if rows_per_second is not None:
        parts.append(f"{rows_per_second:,.0f} rows/s")
    if record.get("stopped"):
        parts.append(f"({stop_label(record)})")
    return "  ".join(parts)


def stop_label(record: dict[str, Any]) -> str:
    """What ended training at this epoch record: early stopping, or the time limit (training.time_limit), which
    may end an epoch part-way."""
    if record.get("stopped_by") != "time limit":
        return "early stop"
    return f"time limit, after {record['steps']} of {record['epoch_steps']} steps" if "steps" in record else "time limit"


def epoch_share(record: dict[str, Any]) -> float:
    """The share of a full epoch's steps this epoch record trained: 1, less where the time limit ended it."""
    return record["steps"] / record["epoch_steps"] if "steps" in record else 1.0


class EpochClock:
    """Rows per second of the latest epoch: the time between two epoch callbacks."""

    def __init__(self, rows: int | None) -> None:
        self.rows = rows
        self.last = time.perf_counter()

    def tick(self, share: float = 1.0) -> float | None:
        """Call once per finished epoch (``share``: of its steps taken, :func:`epoch_share`); returns that epoch's
        rows/s (None without a row count)."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        if not self.rows or seconds <= 0:
            return None
        return self.rows * share / seconds


class LogReporter(Reporter):
    """A plain-text log of a run, written line by line as it goes (``keel train --log-file``).

    Every line starts with the local time. Notes, messages, the start and end of every step with its
    duration, and one line per epoch; :meth:`line` adds anything else (the metrics, where the model
    went, an error). The file is appended to, never truncated, and each line is flushed when written,
    so a run that dies leaves everything up to its last line.

    Args:
        path: The log file; its folder is created when missing.

    Raises:
        OSError: The file cannot be opened for appending.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.path = os.fspath(path)
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()

    def line(self, text: str) -> None:
        """Write one line (several when ``text`` holds newlines), each stamped with the time."""
        if self._file is None:
            return
        stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        for part in str(text).splitlines() or [""]:
            self._file.write(f"{stamp}  {part}\n")

    def close(self) -> None:
        """Close the file; later lines are dropped."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def note(self, text: str) -> None:
        self.line(f"note: {text}")

    def message(self, text: str) -> None:
        self.line(text)

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[EpochCallback | None]:
        clock, started, done = EpochClock(rows), time.perf_counter(), [0]

        def callback(epoch: int, epochs: int, record: dict[str, Any]) -> None:
            done[0] = epoch
            self.line(epoch_line(epoch, epochs, record, monitor, clock.tick(epoch_share(record))))

        yield callback
        self.line(f"trained {done[0]} epoch(s) in {time.perf_counter() - started:.2f} s")

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        self.line(f"start: {description}" + (f" (of {total:,})" if total is not None else ""))
        started = time.perf_counter()
        try:
            yield _ignore
        except BaseException as error:
            self.line(f"failed: {description} after {time.perf_counter() - started:.2f} s "
                      f"({type(error).__name__}: {error})")
            raise
        self.line(f"done: {description} in {time.perf_counter() - started:.2f} s")


class Reporters(Reporter):
    """Several reporters as one: each note, message, step and epoch reaches every one, in order.

    Example:
        >>> import io
        >>> first, second = io.StringIO(), io.StringIO()
        >>> both = Reporters(TextReporter(first), TextReporter(second))
        >>> both.message("training")
        >>> first.getvalue() == second.getvalue() == "training\\n"
        True
    """

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def elsewhere(self) -> Reporter:
        return Reporters(*(reporter.elsewhere() for reporter in self.reporters))

    def note(self, text: str) -> None:
        for reporter in self.reporters:
            reporter.note(text)

    def message(self, text: str) -> None:
        for reporter in self.reporters:
            reporter.message(text)

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str, rows: int | None = None) -> Iterator[EpochCallback | None]:
        with contextlib.ExitStack() as stack:
            callbacks = [stack.enter_context(reporter.progress(epochs, monitor, rows)) for reporter in self.reporters]
            present = [callback for callback in callbacks if callback is not None]
            if not present:
                yield None
                return

            def callback(epoch: int, epochs: int, record: dict[str, Any]) -> None:
                for each in present:
                    each(epoch, epochs, record)

            yield callback

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        with contextlib.ExitStack() as stack:
            advances = [stack.enter_context(reporter.step(description, total)) for reporter in self.reporters]

            def advance(done: int) -> None:
                for each in advances:
                    each(done)

            yield advance


class Notes:
    """The run's notes: each one reaches the reporter the moment it is added.

    Not a list subclass: ``extend`` or ``+=`` on one would add notes that the reporter never sees.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._texts: list[str] = []

    def append(self, text: str) -> None:
        self._texts.append(text)
        self.reporter.note(text)

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)
