"""How a training run reports what it does: notes, one-line messages and per-epoch progress.

The pipeline never prints by itself. It talks to a :class:`Reporter`, and each face renders it its
own way: nothing for a quiet library call (:class:`Reporter` itself), plain lines on stderr for a
library call (:class:`TextReporter`), a rich progress bar in the CLI (``keel.console``), and later
a log in a server or a section of the HTML report. Notes are also kept on the model
(``model.notes``) and on any error that stops the run (``error.notes``).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Protocol, TextIO


class EpochCallback(Protocol):
    def __call__(self, epoch: int, epochs: int, record: dict[str, Any]) -> None: ...


class Reporter:
    """Receives a run's notes, messages and epochs; this base class shows nothing (a quiet run)."""

    def note(self, text: str) -> None:
        """Something keel decided or worked around that the user should know (kept on the model)."""

    def message(self, text: str) -> None:
        """A line of progress: what is being trained on how many rows."""

    @contextlib.contextmanager
    def progress(self, epochs: int, monitor: str) -> Iterator[EpochCallback | None]:
        """Around one network's training: yields the per-epoch callback, or None for none."""
        yield None


class TextReporter(Reporter):
    """Plain lines on a stream (stderr by default): notes and messages, no progress bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _write(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self._write(f"note: {text}")

    def message(self, text: str) -> None:
        self._write(text)


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
