"""The errors keel raises, in one small hierarchy.

    KeelError                    anything keel reports to a user
    ├── ConfigError              a bad setting (also a ValueError)
    ├── DataError                a bad file, column, row or value (also a ValueError)
    ├── ArtifactError            a model directory that cannot be saved or loaded
    ├── ExportError              a model that cannot be exported
    ├── NumericError             a NaN or infinity in training or in weights about to be saved
    └── NotFittedError           a model used before it was trained (also ValueError, AttributeError)

    KeelWarning                  something keel worked around and the user should know about

Every message says what happened (with the value received), what was expected and how to fix it.
The CLI prints a KeelError as one line and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class KeelError(Exception):
    """Base class of every error keel raises on purpose.

    Attributes:
        notes: What the run had noted before the error stopped it (dropped columns, rows, ...),
            so they reach the user with the error.
    """

    notes: list[str] = []  # noqa: RUF012 - read-only default; a run assigns its own list


class ConfigError(KeelError, ValueError):
    """A configuration value is missing, unknown or invalid."""


class DataError(KeelError, ValueError):
    """The data is unreadable or does not fit what keel expects.

    Args:
        message: What was wrong, why, and how to fix it.
        file: The file the data came from, when there is one.
        column: The column at fault, when there is one.
        row: The 1-based data row at fault (the header is not counted), when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.column = column
        self.row = row
        prefix = f"{self.file}: " if self.file and self.file not in message else ""
        super().__init__(prefix + message)

    def in_file(self, file: str | Path | None) -> "DataError":
        """This error naming ``file``, the file its rows were read from; itself where it names one already or
        ``file`` is None (rows that came from no file)."""
        if file is None or self.file is not None:
            return self
        return DataError(str(self), file=file, column=self.column, row=self.row)


class ArtifactError(KeelError):
    """A model directory is missing, not a keel model, of another format version or corrupt."""


class ExportError(KeelError):
    """A model cannot be exported."""


class NumericError(KeelError):
    """Training met a number that is not finite (NaN or infinity) in a loss, a gradient or the
    weights, or a model about to be saved holds one.

    Neither a bad setting nor bad data for sure: a learning rate too high, inputs left unscaled and
    a column with extreme values all end here, so the message names the likely cause.

    Args:
        message: What went wrong, where, the likely cause and how to fix it.
        epoch: The 1-based epoch training stopped in, when it was training.
        step: The 1-based step (batch) of that epoch, when one is known.
    """

    def __init__(self, message: str, *, epoch: int | None = None, step: int | None = None) -> None:
        self.epoch = epoch
        self.step = step
        super().__init__(message)


class NotFittedError(KeelError, ValueError, AttributeError):
    """A model or estimator was used before it was fitted.

    The scikit-learn estimators raise a subclass that is also scikit-learn's own NotFittedError.
    """


class KeelWarning(UserWarning):
    """Something keel handled on its own that the user should know about."""
